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
//! - `dream.rs`: [`DeepDream`] — Mordvintsev et al. 2015, with [`Objective`] values.
//! - `classify.rs`: top-k classes with probabilities.
//! - `render.rs`: heat-map pictures (upsample, normalise, clip on the backend; colour and blend
//!   on the host).
//!
//! A method is made from an [`Engine`] (the model given once) and runs on its backend: the input
//! goes up once, the forward and backward passes and the map's reduction happen there, and only
//! the map comes back. Maps are `[n, 1, h, w]` at their native resolution (saliency: the input's;
//! CAM / Grad-CAM: the layer's), raw — not normalised, not upsampled.

mod cam;
mod classify;
mod dream;
pub mod ops;
pub mod render;
mod saliency;
mod target;

pub use cam::{Cam, GradCam};
pub use classify::{classify, Prediction};
pub use dream::{pixel_range, DeepDream, Objective};
pub use saliency::Saliency;
pub use target::{Target, Targets};

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::Colormap;
use crate::tensor::Tensor;

/// Whether a method works at a layer the user names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerUse {
    /// no layer (it is taken w.r.t. the input, or the layer is fixed by the architecture)
    None,
    /// one layer, by default the architecture's last feature layer
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
    pub layer: LayerUse,
    /// the colormap of its pictures
    pub colormap: Colormap,
    /// the percentile at which its pictures are clipped by default (100: not at all)
    pub clip_percentile: f32,
}

/// Every attribution method, in the order the CLI lists them.
pub const METHODS: &[MethodInfo] = &[saliency::INFO, cam::CAM_INFO, cam::GRADCAM_INFO];

/// The method called `name`, if there is one.
pub fn method_info(name: &str) -> Option<&'static MethodInfo> {
    METHODS.iter().find(|m| m.name == name)
}

/// Options a method may take (those it does not use must be absent).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MethodOptions {
    /// the layer, as a PyTorch module path
    pub layer: Option<String>,
}

/// The method `name` on `eng`, with `opts`: the one place that knows every method's type.
pub fn attribution<'e, B: Backend>(eng: &'e Engine<B>, name: &str, opts: &MethodOptions) -> Result<Box<dyn Attribution<B> + 'e>> {
    let info = method_info(name).ok_or_else(|| {
        Error::InvalidArgument(format!("unknown method `{name}`; known: {}", METHODS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")))
    })?;
    if info.layer == LayerUse::None && opts.layer.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{} takes no layer ({}); --layer is for {}",
            info.name,
            info.about,
            METHODS.iter().filter(|m| m.layer != LayerUse::None).map(|m| m.name).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(match name {
        "saliency" => Box::new(Saliency::new(eng)),
        "cam" => Box::new(Cam::new(eng)?),
        "gradcam" => Box::new(GradCam::new(eng, opts.layer.as_deref())?),
        _ => unreachable!("every entry of METHODS is built here"),
    })
}

/// An attribution method on one engine: maps for a batch and its targets.
pub trait Attribution<B: Backend> {
    fn info(&self) -> &'static MethodInfo;

    fn engine(&self) -> &Engine<B>;

    /// The maps `[n, 1, h, w]` of a preprocessed batch `x` (`[n, 3, H, W]` on the backend), for
    /// one target per item (`None`: each item's top class), and the targets (resolve them once
    /// the work that does not need them is launched).
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)>;

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
}

/// The class each target names, for the methods that need classes (`None` for other targets).
pub fn classes(targets: &[Target]) -> Vec<Option<usize>> {
    targets.iter().map(|t| if let Target::Class(c) = t { Some(*c) } else { None }).collect()
}
