//! Class activation maps.
//!
//! - [`Cam`]: Zhou et al. 2016, "Learning Deep Features for Discriminative Localization". For a
//!   network whose classifier is one linear layer right after global average pooling, the map of
//!   class c is Σ_k W[c,k]·A_k at the last feature layer. Returned raw: no bias, no ReLU, no
//!   normalisation (the paper's definition). Any other classifier is an error, and so is a
//!   target that is not a class.
//! - [`GradCam`]: Selvaraju et al. 2017. At any named layer A, α_k = spatial mean of
//!   d score / d A_k, map = ReLU(Σ_k α_k A_k) — with the paper's ReLU. Default layer: the last
//!   feature layer before the classifier's pooling (the zoo names it per architecture). Any
//!   target works (a class, a channel or a neuron of a later layer). captum's `LayerGradCam`
//!   leaves the ReLU out by default (`relu_attributions=False`); pytorch-grad-cam keeps it.
//!
//! `tests/libs.rs` checks these and the variants against captum 0.9.0 and pytorch-grad-cam
//! 1.5.7.

use super::target::Targeted;
use super::{ops, target, Attribution, LayerUse, MethodInfo, Opt, Target, Targets};
use crate::backend::{Backend, Binary, Precision, Reduce, Unary};
use crate::engine::{Engine, Rule};
use crate::error::{Error, Result};
use crate::imageio::Colormap;
use crate::model::Layer;

pub(super) const CAM_INFO: MethodInfo = MethodInfo {
    name: "cam",
    title: "CAM",
    about: "class activation map Σ_k W[c,k]·A_k; needs a linear classifier after global average pooling",
    paper: "Zhou, Khosla, Lapedriza, Oliva, Torralba 2016, Learning Deep Features for Discriminative Localization",
    layer: LayerUse::None,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
    signed: false,
    options: &[],
    gpu_precision: Precision::Tf32,
};

pub(super) const GRADCAM_INFO: MethodInfo = MethodInfo {
    name: "gradcam",
    title: "Grad-CAM",
    about: "ReLU(Σ_k α_k A_k), α_k the spatial mean of d score / d A_k, at --layer (default: the last feature layer)",
    paper: "Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
    layer: LayerUse::One,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
    signed: false,
    options: &[Opt::EigenSmooth, Opt::AugSmooth],
    gpu_precision: Precision::Tf32,
};

/// The layer a CAM is taken at: the named one, or the architecture's default; not the input.
pub(super) fn cam_layer<B: Backend>(eng: &Engine<B>, layer: Option<&str>, title: &str) -> Result<Layer> {
    let model = eng.model();
    let layer = model.resolve(layer.unwrap_or(&model.graph.heads.gradcam_layer))?;
    if layer == model.input() {
        return Err(Error::InvalidArgument(format!("{title} needs a layer inside the network, not its input")));
    }
    Ok(layer)
}

/// A layer's output must be a feature map `[n, c, h, w]` for a CAM.
pub(super) fn feature_map<B: Backend>(eng: &Engine<B>, a: &B::T, what: &str, layer: Layer) -> Result<()> {
    let s = eng.be.shape(a);
    if s.len() != 4 {
        return Err(Error::shape(format!("{what} layer `{}`", eng.model().name(layer)), "a 4-d [n, c, h, w] feature map", s));
    }
    Ok(())
}

pub(super) const GRADCAMPP_INFO: MethodInfo = MethodInfo {
    name: "gradcampp",
    title: "Grad-CAM++",
    about: "ReLU(Σ_k w_k A_k), w_k = Σ_ij ReLU(g)·g²/(2g² + Σ_ij A_k·g³), g = d score / d A, at --layer",
    paper: "Chattopadhyay, Sarkar, Howlader, Balasubramanian 2018, Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks",
    layer: LayerUse::One,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
    signed: false,
    options: &[Opt::EigenSmooth, Opt::AugSmooth],
    gpu_precision: Precision::Tf32,
};

pub(super) const XGRADCAM_INFO: MethodInfo = MethodInfo {
    name: "xgradcam",
    title: "XGrad-CAM",
    about: "ReLU(Σ_k w_k A_k), w_k = Σ_ij g·A_k / Σ_ij A_k, g = d score / d A, at --layer",
    paper: "Fu, Hu, Dong, Guo, Gao, Li 2020, Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
    layer: LayerUse::One,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
    signed: false,
    options: &[Opt::EigenSmooth, Opt::AugSmooth],
    gpu_precision: Precision::Tf32,
};

pub(super) const LAYERCAM_INFO: MethodInfo = MethodInfo {
    name: "layercam",
    title: "LayerCAM",
    about: "ReLU(Σ_k ReLU(d score / d A_k)·A_k), position by position, at --layer",
    paper: "Jiang, Zhang, Hou, Cheng, Wei 2021, LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    layer: LayerUse::One,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
    signed: false,
    options: &[Opt::EigenSmooth, Opt::AugSmooth],
    gpu_precision: Precision::Tf32,
};

/// How a gradient-weighted CAM combines a layer's activations A and their gradient g (the
/// definitions as pytorch-grad-cam computes them, its epsilons included; every map ends in a
/// ReLU, as its `BaseCAM` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CamWeighting {
    /// w_k = mean_ij g
    GradCam,
    /// w_k = Σ_ij ReLU(g)·a_ij, a_ij = g² / (2g² + (Σ_ij A_k)·g³ + 1e-6) (0 where g = 0):
    /// Grad-CAM++ (Chattopadhyay, Sarkar, Howlader, Balasubramanian 2018)
    GradCamPlusPlus,
    /// w_k = Σ_ij g·A / (Σ_ij A_k + 1e-7): XGrad-CAM (Fu, Hu, Dong, Guo, Gao, Li 2020,
    /// "Axiom-based Grad-CAM")
    XGradCam,
    /// no channel weight: Σ_k ReLU(g)·A_k at every position: LayerCAM (Jiang, Zhang, Hou,
    /// Cheng, Wei 2021)
    LayerCam,
}

impl CamWeighting {
    fn info(self) -> &'static MethodInfo {
        match self {
            CamWeighting::GradCam => &GRADCAM_INFO,
            CamWeighting::GradCamPlusPlus => &GRADCAMPP_INFO,
            CamWeighting::XGradCam => &XGRADCAM_INFO,
            CamWeighting::LayerCam => &LAYERCAM_INFO,
        }
    }

    /// The map `[n, 1, h, w]` of activations `a` and their gradient `g` (`[n, k, h, w]`).
    pub fn map<B: Backend>(self, be: &B, a: &B::T, g: &B::T) -> Result<B::T> {
        match self.weights(be, a, g)? {
            Some(w) => ops::weighted_channel_sum(be, a, &w, true),
            None => {
                let m = be.reduce(&self.weighted(be, a, g, None)?, Reduce::Sum, &[1])?;
                be.unary(&m, Unary::Relu)
            }
        }
    }

    /// pytorch-grad-cam's `eigen_smooth`: the first principal component of the weighted
    /// activations (w_k·A_k; LayerCAM: ReLU(g)·A) over the positions ([`eigen_projection`],
    /// as Eigen-CAM takes it of A) instead of their sum over the channels, then ReLU.
    pub fn map_eigen_smooth<B: Backend>(self, eng: &Engine<B>, a: &B::T, g: &B::T) -> Result<B::T> {
        let w = self.weights(&eng.be, a, g)?;
        eigen_maps(eng, &self.weighted(&eng.be, a, g, w.as_ref())?)
    }

    /// The activations weighted per channel (`w` `[n, k, 1, 1]`), or LayerCAM's per position.
    fn weighted<B: Backend>(self, be: &B, a: &B::T, g: &B::T, w: Option<&B::T>) -> Result<B::T> {
        match w {
            Some(w) => be.binary(a, w, Binary::Mul),
            None => be.binary(&be.unary(g, Unary::Relu)?, a, Binary::Mul),
        }
    }

    /// The channel weights `[n, k, 1, 1]` (`None` for LayerCAM, which weighs each position).
    fn weights<B: Backend>(self, be: &B, a: &B::T, g: &B::T) -> Result<Option<B::T>> {
        let mul = |x: &B::T, y: &B::T| be.binary(x, y, Binary::Mul);
        Ok(Some(match self {
            CamWeighting::GradCam => ops::spatial_mean(be, g)?,
            CamWeighting::GradCamPlusPlus => {
                let g2 = be.unary(g, Unary::Square)?;
                let g3 = mul(&g2, g)?;
                let sum_a = be.reduce(a, Reduce::Sum, &[2, 3])?;
                let den = be.binary(&be.unary(&g2, Unary::Affine(2.0, 1e-6))?, &mul(&sum_a, &g3)?, Binary::Add)?;
                // g² / den is 0 where g = 0 (den is then 1e-6), as pytorch-grad-cam's `where`
                let aij = be.binary(&g2, &den, Binary::Div)?;
                be.reduce(&mul(&be.unary(g, Unary::Relu)?, &aij)?, Reduce::Sum, &[2, 3])?
            }
            CamWeighting::XGradCam => {
                let sum_a = be.unary(&be.reduce(a, Reduce::Sum, &[2, 3])?, Unary::Affine(1.0, 1e-7))?;
                be.reduce(&be.binary(&mul(g, a)?, &sum_a, Binary::Div)?, Reduce::Sum, &[2, 3])?
            }
            CamWeighting::LayerCam => return Ok(None),
        }))
    }
}

/// [`eigen_projection`] of each item of `t` (`[n, k, h, w]`), as maps `[n, 1, h, w]` (on the
/// host: a `k x k`-free power iteration on the positions' Gram matrix).
fn eigen_maps<B: Backend>(eng: &Engine<B>, t: &B::T) -> Result<B::T> {
    let s = eng.be.shape(t).to_vec();
    let (n, k, h, w) = (s[0], s[1], s[2], s[3]);
    let host = eng.download(t)?;
    let maps: Vec<f32> = (0..n).flat_map(|i| eigen_projection(host.item(i), k, h * w)).collect();
    eng.upload(&crate::tensor::Tensor::new(vec![n, 1, h, w], maps)?)
}

/// A gradient-weighted class activation map at one layer: Grad-CAM (Selvaraju, Cogswell, Das,
/// Vedantam, Parikh, Batra 2017, "Grad-CAM: Visual Explanations from Deep Networks via
/// Gradient-based Localization"): α_k = spatial mean of d score / d A_k, map = ReLU(Σ_k α_k A_k),
/// with the paper's ReLU, at any named layer (default: the last feature layer before the
/// classifier's pooling) and for any target; and its variants ([`CamWeighting`]).
pub struct GradCam<'e, B: Backend> {
    eng: &'e Engine<B>,
    /// the layer A of the map
    pub layer: Layer,
    /// how the channels are weighted (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM)
    pub weighting: CamWeighting,
    /// pytorch-grad-cam's `eigen_smooth` ([`CamWeighting::map_eigen_smooth`])
    pub eigen_smooth: bool,
}

impl<'e, B: Backend> GradCam<'e, B> {
    /// Grad-CAM at the named layer, or the architecture's default when `None`.
    pub fn new(eng: &'e Engine<B>, layer: Option<&str>) -> Result<Self> {
        Self::with(eng, layer, CamWeighting::GradCam)
    }

    /// The CAM of `weighting` at the named layer, or the architecture's default when `None`.
    pub fn with(eng: &'e Engine<B>, layer: Option<&str>, weighting: CamWeighting) -> Result<Self> {
        Ok(GradCam { eng, layer: cam_layer(eng, layer, weighting.info().title)?, weighting, eigen_smooth: false })
    }

    /// With pytorch-grad-cam's `eigen_smooth` on or off ([`CamWeighting::map_eigen_smooth`]).
    pub fn with_eigen_smooth(self, on: bool) -> Self {
        GradCam { eigen_smooth: on, ..self }
    }

    /// The map from a forward pass that kept the layer.
    pub(crate) fn map_of(&self, t: &Targeted<B>) -> Result<B::T> {
        let eng = self.eng;
        if let Some(l) = t.seeds.iter().map(|s| s.0).find(|l| l.node() <= self.layer.node()) {
            return Err(Error::InvalidArgument(format!(
                "the target's layer `{}` does not come after the {} layer `{}`: its gradient there would be zero",
                eng.model().name(l),
                self.weighting.info().title,
                eng.model().name(self.layer)
            )));
        }
        let a = t.acts.get(self.layer).expect("kept by the forward pass");
        feature_map(eng, a, self.weighting.info().title, self.layer)?;
        let ga = eng.backward(&t.acts, t.seeds.clone(), &[self.layer], Rule::Gradient)?.remove(0);
        if self.eigen_smooth {
            self.weighting.map_eigen_smooth(eng, a, &ga)
        } else {
            self.weighting.map(&eng.be, a, &ga)
        }
    }
}

impl<B: Backend> Attribution<B> for GradCam<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        self.weighting.info()
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn layer_name(&self) -> Option<String> {
        Some(self.eng.model().name(self.layer).to_string())
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let t = target::forward(self.eng, x, targets, &[self.layer])?;
        let map = self.map_of(&t)?;
        Ok((map, t.targets))
    }
}

/// CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization"): for a
/// network whose classifier is one linear layer right after global average pooling, the map of
/// class c is `Σ_k W[c,k]·A_k` at the last feature layer, raw (no bias, no ReLU, no
/// normalisation). Any other classifier is an error, and so is a target that is not a class.
pub struct Cam<'e, B: Backend> {
    eng: &'e Engine<B>,
    /// the last feature layer, before the pooling
    pub feature: Layer,
    /// the linear classifier
    pub classifier: Layer,
}

impl<'e, B: Backend> Cam<'e, B> {
    /// CAM on `eng`'s model, or why its classifier does not allow it.
    pub fn new(eng: &'e Engine<B>) -> Result<Self> {
        let model = eng.model();
        let Some((feature, linear)) = model.graph.heads.cam.clone() else {
            return Err(Error::Unsupported(format!(
                "CAM needs a classifier that is one linear layer after global average pooling; `{}` has another head (use gradcam)",
                model.graph.arch
            )));
        };
        let (feature, classifier) = (model.resolve(&feature)?, model.resolve(&linear)?);
        eng.linear_weight(classifier)?;
        Ok(Cam { eng, feature, classifier })
    }
}

impl<B: Backend> Attribution<B> for Cam<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &CAM_INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn layer_name(&self) -> Option<String> {
        Some(self.eng.model().name(self.feature).to_string())
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let (eng, be) = (self.eng, &self.eng.be);
        if targets.is_some_and(|t| t.iter().any(|t| t.class().is_none())) {
            return Err(Error::InvalidArgument("CAM explains classes: every target must be a class (use gradcam for channels and neurons)".into()));
        }
        let t = target::forward(eng, x, targets, &[self.feature])?;
        let a = t.acts.get(self.feature).expect("kept by the forward pass");
        feature_map(eng, a, "CAM", self.feature)?;
        let (n, k) = (be.shape(a)[0], be.shape(a)[1]);
        // the classifier rows of the targets: one-hot [n, classes] · W [classes, k]
        let (_, onehot) = &t.seeds[0];
        let rows = be.linear_backward_data(onehot, eng.linear_weight(self.classifier)?)?;
        if be.shape(&rows)[1] != k {
            return Err(Error::shape("CAM feature layer", format!("[n, {}, h, w]", be.shape(&rows)[1]), be.shape(a)));
        }
        let rows = be.reshape(rows, &[n, k, 1, 1])?;
        let map = ops::weighted_channel_sum(be, a, &rows, false)?;
        Ok((map, t.targets))
    }
}

pub(super) const EIGENCAM_INFO: MethodInfo = MethodInfo {
    name: "eigencam",
    title: "Eigen-CAM",
    about: "ReLU of the activations at --layer projected on their first principal component (class-agnostic: no gradient, no target)",
    paper: "Bany Muhammad, Yeasin 2020, Eigen-CAM: Class Activation Map using Principal Components",
    layer: LayerUse::One,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
    signed: false,
    options: &[Opt::AugSmooth],
    gpu_precision: Precision::Tf32,
};

/// Eigen-CAM (Bany Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal
/// Components"), as pytorch-grad-cam's `get_2d_projection`: each item's activations as a
/// (positions × channels) matrix, centred per channel, projected on its first right singular
/// vector; then a ReLU. One deviation: an SVD's sign is arbitrary (numpy's LAPACK picks one), so
/// here the projection is oriented to correlate positively with the sum of the activations over
/// channels — the map shows where the layer is active, not its negative. The decomposition runs
/// on the host (the Gram matrix of the positions, ≤ a few hundred square, by power iteration);
/// the forward pass stays on the device.
pub struct EigenCam<'e, B: Backend> {
    eng: &'e Engine<B>,
    /// the layer whose first principal component is the map
    pub layer: Layer,
}

impl<'e, B: Backend> EigenCam<'e, B> {
    /// Eigen-CAM at `layer` (default: the architecture's last feature layer).
    pub fn new(eng: &'e Engine<B>, layer: Option<&str>) -> Result<Self> {
        Ok(EigenCam { eng, layer: cam_layer(eng, layer, "Eigen-CAM")? })
    }
}

/// The first principal component projection of `a` (`k` channels × `p` positions, row-major by
/// channel), oriented as [`EigenCam`] says, then ReLU'd.
pub fn eigen_projection(a: &[f32], k: usize, p: usize) -> Vec<f32> {
    // centre each channel over the positions
    let mut c = vec![0f64; k * p];
    for ch in 0..k {
        let row = &a[ch * p..(ch + 1) * p];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / p as f64;
        for (d, &v) in c[ch * p..(ch + 1) * p].iter_mut().zip(row) {
            *d = v as f64 - mean;
        }
    }
    // G = Cᵀ C (positions × positions); its top eigenvector u with eigenvalue σ² gives the
    // projection C·v₁ = σ·u
    let mut g = vec![0f64; p * p];
    for ch in 0..k {
        let row = &c[ch * p..(ch + 1) * p];
        for i in 0..p {
            let ri = row[i];
            if ri != 0.0 {
                for (gij, &rj) in g[i * p..(i + 1) * p].iter_mut().zip(row) {
                    *gij += ri * rj;
                }
            }
        }
    }
    let (lambda, mut u) = super::linalg::top_eigenvector(&g, p);
    let sigma = lambda.max(0.0).sqrt();
    let total: Vec<f64> = (0..p).map(|i| (0..k).map(|ch| a[ch * p + i] as f64).sum()).collect();
    if u.iter().zip(&total).map(|(x, t)| x * t).sum::<f64>() < 0.0 {
        u.iter_mut().for_each(|x| *x = -*x);
    }
    u.iter().map(|&x| (sigma * x).max(0.0) as f32).collect()
}

impl<B: Backend> Attribution<B> for EigenCam<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &EIGENCAM_INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn layer_name(&self) -> Option<String> {
        Some(self.eng.model().name(self.layer).to_string())
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let eng = self.eng;
        let t = target::forward(eng, x, targets, &[self.layer])?;
        let a = t.acts.get(self.layer).expect("kept by the forward pass");
        feature_map(eng, a, "Eigen-CAM", self.layer)?;
        Ok((eigen_maps(eng, a)?, t.targets))
    }
}
