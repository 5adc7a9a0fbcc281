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
//!   target works (a class, a channel or a neuron of a later layer).

use super::{ops, target, Attribution, LayerUse, MethodInfo, Target, Targets};
use crate::backend::Backend;
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
};

pub(super) const GRADCAM_INFO: MethodInfo = MethodInfo {
    name: "gradcam",
    title: "Grad-CAM",
    about: "ReLU(Σ_k α_k A_k), α_k the spatial mean of d score / d A_k, at --layer (default: the last feature layer)",
    paper: "Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
    layer: LayerUse::One,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
};

/// A layer's output must be a feature map `[n, c, h, w]` for a CAM.
fn feature_map<B: Backend>(eng: &Engine<B>, a: &B::T, what: &str, layer: Layer) -> Result<()> {
    let s = eng.be.shape(a);
    if s.len() != 4 {
        return Err(Error::shape(format!("{what} layer `{}`", eng.model().name(layer)), "a 4-d [n, c, h, w] feature map", s));
    }
    Ok(())
}

pub struct GradCam<'e, B: Backend> {
    eng: &'e Engine<B>,
    pub layer: Layer,
}

impl<'e, B: Backend> GradCam<'e, B> {
    /// At the named layer, or the architecture's default when `None`.
    pub fn new(eng: &'e Engine<B>, layer: Option<&str>) -> Result<Self> {
        let model = eng.model();
        let layer = model.resolve(layer.unwrap_or(&model.graph.heads.gradcam_layer))?;
        if layer == model.input() {
            return Err(Error::InvalidArgument("Grad-CAM needs a layer inside the network, not its input".into()));
        }
        Ok(GradCam { eng, layer })
    }
}

impl<B: Backend> Attribution<B> for GradCam<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &GRADCAM_INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn layer_name(&self) -> Option<String> {
        Some(self.eng.model().name(self.layer).to_string())
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let (eng, be) = (self.eng, &self.eng.be);
        let out = eng.model().output();
        if let Some(t) = targets.into_iter().flatten().find(|t| t.layer(out).node() <= self.layer.node()) {
            return Err(Error::InvalidArgument(format!(
                "the target's layer `{}` does not come after the Grad-CAM layer `{}`: its gradient there would be zero",
                eng.model().name(t.layer(out)),
                eng.model().name(self.layer)
            )));
        }
        let t = target::forward(eng, x, targets, &[self.layer])?;
        let a = t.acts.get(self.layer).expect("kept by the forward pass");
        feature_map(eng, a, "Grad-CAM", self.layer)?;
        let ga = eng.backward(&t.acts, t.seeds.clone(), &[self.layer], Rule::Gradient)?.remove(0);
        let alpha = ops::spatial_mean(be, &ga)?;
        let map = ops::weighted_channel_sum(be, a, &alpha, true)?;
        Ok((map, t.targets))
    }
}

pub struct Cam<'e, B: Backend> {
    eng: &'e Engine<B>,
    pub feature: Layer,
    /// the linear classifier
    pub classifier: Layer,
}

impl<'e, B: Backend> Cam<'e, B> {
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
