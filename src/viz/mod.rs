//! The visualisations: attribution methods behind one trait, synthesis, classification, and the
//! pictures they make.
//!
//! - this file: the [`Attribution`] trait (captum's `attribute(inputs, target)`, on a batch),
//!   [`MethodInfo`] and the registry ([`METHODS`], [`attribution`]), [`Target`]s.
//! - `target.rs`: resolving targets (each item's top class by default) into gradient seeds,
//!   on the backend.
//! - `ops.rs`: the method math built from the backend's generic primitives.
//! - `saliency.rs`: [`Saliency`] — Simonyan et al. 2014.
//! - `cam.rs`: [`Cam`] — Zhou et al. 2016; [`GradCam`] — Selvaraju et al. 2017.
//! - `combine.rs`: [`Combined`] — a CAM method at several layers and / or with pytorch-grad-cam's
//!   `aug_smooth`.
//! - `dream.rs`: [`DeepDream`] — Mordvintsev et al. 2015, with [`Objective`] values.
//! - `maximize.rs`: [`Maximize`] — class model visualisation (Simonyan et al. 2014) and
//!   activation maximisation of a channel or neuron, with Yosinski et al. 2015's regularisers,
//!   in pixels or in lucid's decorrelated Fourier parameterisation ([`Param`]).
//! - `fourier.rs`: [`fourier::FourierImage`] — that parameterisation (Olah et al. 2017): the
//!   inverse real 2-D DFT as two GEMMs ([`fourier::Irfft2`]), colour decorrelation, sigmoid.
//! - `classify.rs`: top-k classes with probabilities.
//! - `evaluate.rs`: judging a map: deletion and insertion curves and their areas (Petsiuk et
//!   al. 2018, RISE).
//! - `plot.rs`: line plots and labelled picture grids, drawn without a plotting crate.
//! - `sanity.rs`: the model-randomisation sanity check (Adebayo et al. 2018): the cascade of
//!   re-initialised layers, Spearman rank correlation and SSIM of maps.
//! - `segment.rs`: [`segment::GrabCut`] — weakly supervised segmentation from a map (Simonyan
//!   et al. 2014, §3.1): seeds from its quantiles, GrabCut (Rother et al. 2004) with our own
//!   Gaussian mixtures and min-cut; host code.
//! - `render.rs`: heat-map pictures (upsample, normalise, clip on the backend; colour and blend
//!   on the host).
//!
//! A method is made from an [`Engine`] (the model given once) and runs on its backend: the input
//! goes up once, the forward and backward passes and the map's reduction happen there, and only
//! the map comes back. Maps are `[n, 1, h, w]` at their native resolution (saliency: the input's;
//! CAM / Grad-CAM: the layer's), raw — not normalised, not upsampled.

mod cam;
mod classify;
mod combine;
mod dream;
pub mod evaluate;
pub mod fourier;
mod gradient;
pub mod linalg;
mod maximize;
pub mod ops;
pub mod plot;
pub mod render;
mod saliency;
pub mod sanity;
mod scorecam;
pub mod segment;
mod smooth;
mod target;

pub use cam::{eigen_projection, Cam, CamWeighting, EigenCam, GradCam};
pub use gradient::{Gradients, GuidedGradCam};
pub use scorecam::{AblationCam, ScoreCam, DEFAULT_MASKS};
pub use smooth::{gauss_legendre, Baseline, IntegratedGradients, NoiseTunnel, Smooth};
pub use classify::{classify, Prediction};
pub use combine::{Combined, AUGMENTATIONS};
pub use dream::{pixel_range, zoom, DeepDream, Objective, Term};
pub use maximize::{Maximize, Param, FOURIER_LR};
pub use saliency::Saliency;
pub use target::{Target, Targets};

use crate::backend::{Backend, Precision};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::Colormap;
use crate::tensor::Tensor;

/// Whether a method works at a layer the user names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerUse {
    /// no layer (it is taken w.r.t. the input, or the layer is fixed by the architecture)
    None,
    /// one layer, by default the architecture's last feature layer (the CAM methods, those
    /// that take [`Opt::AugSmooth`], also several: [`Combined`])
    One,
}

/// What the CLI, the docs and the pictures need to know about a method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MethodInfo {
    /// the CLI subcommand and the suffix of its files (`{stem}_{name}.png`)
    pub name: &'static str,
    /// its usual name
    pub title: &'static str,
    /// what it computes, in one line
    pub about: &'static str,
    /// the paper it follows
    pub paper: &'static str,
    /// whether it takes `--layer`, and how
    pub layer: LayerUse,
    /// the colormap of its pictures
    pub colormap: Colormap,
    /// the percentile at which its pictures are clipped by default (100: not at all)
    pub clip_percentile: f32,
    /// its maps have a sign (the raw arrays keep it; pictures show the absolute value, as
    /// captum's `visualize_image_attr` does by default)
    pub signed: bool,
    /// the options of [`MethodOptions`] it takes besides the layer
    pub options: &'static [Opt],
    /// the arithmetic of the GPU's convolutions when none is asked for: TF32 (PyTorch's default
    /// on Ampere and newer) for maps read at a layer, where it changes a map by under 1e-3
    /// (relative RMS); fp32 for gradients at the pixels, which pass every ReLU's mask and are
    /// ill-conditioned in the forward's rounding (saliency on EfficientNet-Lite0: 9e-2 with
    /// TF32, a different picture; see the README's precision table)
    pub gpu_precision: Precision,
}

/// An option some methods take ([`MethodInfo::options`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    /// [`MethodOptions::samples`]
    Samples,
    /// [`MethodOptions::noise`]
    Noise,
    /// [`MethodOptions::smooth`]
    Smooth,
    /// [`MethodOptions::base`]
    Base,
    /// [`MethodOptions::baseline`]
    Baseline,
    /// [`MethodOptions::seed`]
    Seed,
    /// [`MethodOptions::masks`]
    Masks,
    /// [`MethodOptions::eigen_smooth`]
    EigenSmooth,
    /// [`MethodOptions::aug_smooth`] (the methods that take it also take several layers)
    AugSmooth,
}

impl Opt {
    /// Every option.
    pub const ALL: [Opt; 9] = [Opt::Samples, Opt::Noise, Opt::Smooth, Opt::Base, Opt::Baseline, Opt::Seed, Opt::Masks, Opt::EigenSmooth, Opt::AugSmooth];

    /// Its CLI flag (without `--`).
    pub fn flag(self) -> &'static str {
        match self {
            Opt::Samples => "samples",
            Opt::Noise => "noise",
            Opt::Smooth => "smooth",
            Opt::Base => "base",
            Opt::Baseline => "baseline",
            Opt::Seed => "seed",
            Opt::Masks => "masks",
            Opt::EigenSmooth => "eigen-smooth",
            Opt::AugSmooth => "aug-smooth",
        }
    }
}

/// Every attribution method, in the order the CLI lists them.
pub const METHODS: &[MethodInfo] = &[
    saliency::INFO,
    gradient::GRADXINPUT_INFO,
    gradient::GUIDED_INFO,
    gradient::DECONVNET_INFO,
    smooth::SMOOTHGRAD_INFO,
    smooth::IG_INFO,
    cam::CAM_INFO,
    cam::GRADCAM_INFO,
    gradient::GUIDED_GRADCAM_INFO,
    cam::GRADCAMPP_INFO,
    cam::XGRADCAM_INFO,
    cam::LAYERCAM_INFO,
    cam::EIGENCAM_INFO,
    scorecam::SCORECAM_INFO,
    scorecam::ABLATIONCAM_INFO,
];

/// The method called `name`, if there is one.
pub fn method_info(name: &str) -> Option<&'static MethodInfo> {
    METHODS.iter().find(|m| m.name == name)
}

/// Options a method may take (those it does not use must be absent).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MethodOptions {
    /// the layer, as a PyTorch module path; none: the method's default; several (the CAM
    /// methods, those that take [`Opt::AugSmooth`]): their maps combined as pytorch-grad-cam's
    /// `target_layers` ([`Combined`])
    pub layers: Vec<String>,
    /// SmoothGrad: noisy samples (default 50); Integrated Gradients: quadrature points (50)
    pub samples: Option<usize>,
    /// SmoothGrad: noise standard deviation as a fraction of each input's value range (0.15)
    pub noise: Option<f32>,
    /// SmoothGrad: how the noisy maps combine
    pub smooth: Option<Smooth>,
    /// SmoothGrad: the method it smooths (default saliency)
    pub base: Option<String>,
    /// Integrated Gradients: the baseline
    pub baseline: Option<Baseline>,
    /// the seed of random noise (SmoothGrad, the noise baseline)
    pub seed: Option<u64>,
    /// Score-CAM, Ablation-CAM: changed inputs per forward pass (default [`DEFAULT_MASKS`])
    pub masks: Option<usize>,
    /// Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM: pytorch-grad-cam's `eigen_smooth`, the first
    /// principal component of the weighted activations instead of their channel sum
    pub eigen_smooth: bool,
    /// the CAM methods: pytorch-grad-cam's `aug_smooth`, the mean map over six flipped and
    /// scaled copies of the input ([`Combined`])
    pub aug_smooth: bool,
}

impl MethodOptions {
    /// The options that are set, besides the layer.
    fn set(&self) -> Vec<Opt> {
        [
            (self.samples.is_some(), Opt::Samples),
            (self.noise.is_some(), Opt::Noise),
            (self.smooth.is_some(), Opt::Smooth),
            (self.base.is_some(), Opt::Base),
            (self.baseline.is_some(), Opt::Baseline),
            (self.seed.is_some(), Opt::Seed),
            (self.masks.is_some(), Opt::Masks),
            (self.eigen_smooth, Opt::EigenSmooth),
            (self.aug_smooth, Opt::AugSmooth),
        ]
        .into_iter()
        .filter_map(|(on, o)| on.then_some(o))
        .collect()
    }
}

/// The method `name` on `eng`, with `opts`: the one place that knows every method's type.
pub fn attribution<'e, B: Backend>(eng: &'e Engine<B>, name: &str, opts: &MethodOptions) -> Result<Box<dyn Attribution<B> + 'e>> {
    let info = method_info(name).ok_or_else(|| {
        Error::InvalidArgument(format!("unknown method `{name}`; known: {}", METHODS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")))
    })?;
    if info.layer == LayerUse::None && !opts.layers.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} takes no layer ({}); --layer is for {}",
            info.name,
            info.about,
            METHODS.iter().filter(|m| m.layer != LayerUse::None).map(|m| m.name).collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some(o) = opts.set().into_iter().find(|o| !info.options.contains(o)) {
        return Err(Error::InvalidArgument(format!("{} takes no --{} option", info.name, o.flag())));
    }
    if opts.layers.len() > 1 && !info.options.contains(&Opt::AugSmooth) && info.name != smooth::SMOOTHGRAD_INFO.name {
        return Err(Error::InvalidArgument(format!(
            "{} takes one layer, not {}; several layers are for {}",
            info.name,
            opts.layers.len(),
            METHODS.iter().filter(|m| m.options.contains(&Opt::AugSmooth)).map(|m| m.name).collect::<Vec<_>>().join(", ")
        )));
    }
    if info.options.contains(&Opt::AugSmooth) && (opts.layers.len() > 1 || opts.aug_smooth) {
        let one = |l: &String| attribution(eng, name, &MethodOptions { layers: vec![l.clone()], aug_smooth: false, ..opts.clone() });
        let layers = if opts.layers.is_empty() { vec![attribution(eng, name, &MethodOptions { aug_smooth: false, ..opts.clone() })?] } else { opts.layers.iter().map(one).collect::<Result<_>>()? };
        return Ok(Box::new(Combined::new(layers, opts.aug_smooth)?));
    }
    let layer = opts.layers.first().map(String::as_str);
    let masks = opts.masks.unwrap_or(DEFAULT_MASKS);
    Ok(match name {
        "saliency" => Box::new(Saliency::new(eng)),
        "gradxinput" => Box::new(Gradients::input_x_gradient(eng)),
        "guided" => Box::new(Gradients::guided_backprop(eng)),
        "deconvnet" => Box::new(Gradients::deconvnet(eng)),
        "smoothgrad" => Box::new(NoiseTunnel::from_options(eng, opts)?),
        "ig" => Box::new(IntegratedGradients::from_options(eng, opts)?),
        "cam" => Box::new(Cam::new(eng)?),
        "gradcam" => Box::new(GradCam::new(eng, layer)?.with_eigen_smooth(opts.eigen_smooth)),
        "guided-gradcam" => Box::new(GuidedGradCam::new(eng, layer)?),
        "gradcampp" => Box::new(GradCam::with(eng, layer, CamWeighting::GradCamPlusPlus)?.with_eigen_smooth(opts.eigen_smooth)),
        "xgradcam" => Box::new(GradCam::with(eng, layer, CamWeighting::XGradCam)?.with_eigen_smooth(opts.eigen_smooth)),
        "layercam" => Box::new(GradCam::with(eng, layer, CamWeighting::LayerCam)?.with_eigen_smooth(opts.eigen_smooth)),
        "eigencam" => Box::new(EigenCam::new(eng, layer)?),
        "scorecam" => Box::new(ScoreCam::new(eng, layer, masks)?),
        "ablationcam" => Box::new(AblationCam::new(eng, layer, masks)?),
        _ => unreachable!("every entry of METHODS is built here"),
    })
}

/// An attribution method on one engine: maps for a batch and its targets.
pub trait Attribution<B: Backend> {
    /// Its name, paper and defaults.
    fn info(&self) -> &'static MethodInfo;

    /// The engine it runs on.
    fn engine(&self) -> &Engine<B>;

    /// The maps `[n, 1, h, w]` of a preprocessed batch `x` (`[n, 3, H, W]` on the backend), for
    /// one target per item (`None`: each item's top class), and the targets (resolve them once
    /// the work that does not need them is launched).
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)>;

    /// As [`Attribution::attribute_on_device`], with the per-item figures a method reports
    /// besides its maps (Integrated Gradients: its completeness error).
    fn attribute_with_extras(&self, x: &B::T, targets: Option<&[Target]>) -> Result<Attributed<B>> {
        let (map, targets) = self.attribute_on_device(x, targets)?;
        Ok(Attributed { map, targets, extras: vec![] })
    }

    /// As [`Attribution::attribute_on_device`], from and to the host: maps `[n, h, w]` and the
    /// targets.
    fn attribute(&self, x: &Tensor, targets: Option<&[Target]>) -> Result<(Tensor, Vec<Target>)> {
        let eng = self.engine();
        let (map, targets) = self.attribute_on_device(&eng.upload(x)?, targets)?;
        let t = eng.download(&map)?;
        let (n, h, w) = (t.shape[0], t.shape[2], t.shape[3]);
        Ok((t.reshape(&[n, h, w])?, targets.resolve(eng)?))
    }

    /// The layer the maps are taken at (module path), when there is one.
    fn layer_name(&self) -> Option<String> {
        None
    }

    /// Its maps are already at the input's size and scaled to [0, 1] (a combined CAM:
    /// [`Combined`]), so a caller that wants pytorch-grad-cam's output takes them as they are
    /// instead of upsampling and scaling them ([`render::normalized`]).
    fn scaled(&self) -> bool {
        false
    }
}

/// Maps of a batch with their targets and any per-item figures (`[n, 1]` each, on the backend).
pub struct Attributed<B: Backend> {
    /// the maps `[n, 1, h, w]`
    pub map: B::T,
    /// the target each map explains
    pub targets: Targets<B>,
    /// per-item figures `[n, 1]` by name (for example SmoothGrad's noise level)
    pub extras: Vec<(&'static str, B::T)>,
}

/// The class each target names, for the methods that need classes (`None` for other targets).
pub fn classes(targets: &[Target]) -> Vec<Option<usize>> {
    targets.iter().map(|t| if let Target::Class(c) = t { Some(*c) } else { None }).collect()
}
