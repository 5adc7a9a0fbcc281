//! Class activation maps.
//!
//! - [`Cam`]: Zhou et al. 2016, "Learning Deep Features for Discriminative Localization". For a
//!   network whose classifier is one linear layer right after global average pooling, the map of
//!   class c is Σ_k W[c,k]·A_k at the last feature layer. Returned raw: no bias, no ReLU, no
//!   normalisation (the paper's definition). Any other classifier is an error.
//! - [`GradCam`]: Selvaraju et al. 2017. At any named layer A, α_k = spatial mean of
//!   d score_c / d A_k, map = ReLU(Σ_k α_k A_k) — with the paper's ReLU. Default layer: the last
//!   feature layer before the classifier's pooling (the zoo names it per architecture).

use super::{download_map, forward_with_targets};
use crate::backend::Backend;
use crate::engine::{Engine, Rule};
use crate::error::{Error, Result};
use crate::graph::{Op, ParamId};
use crate::model::{Layer, Model};
use crate::tensor::Tensor;

fn feature_map<B: Backend>(eng: &Engine<B>, a: &B::T, what: &str, layer: Layer) -> Result<()> {
    let s = eng.be.shape(a);
    if s.len() != 4 {
        return Err(Error::shape(format!("{what} layer `{}`", eng.model().name(layer)), "a 4-d [n, c, h, w] feature map", s));
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct GradCam {
    pub layer: Layer,
}

impl GradCam {
    /// At the named layer, or the architecture's default when `None`.
    pub fn new(model: &Model, layer: Option<&str>) -> Result<Self> {
        let name = layer.unwrap_or(&model.graph.heads.gradcam_layer);
        let layer = model.resolve(name)?;
        if layer == model.input() {
            return Err(Error::InvalidArgument("Grad-CAM needs a layer inside the network, not its input".into()));
        }
        Ok(GradCam { layer })
    }

    /// Maps `[n, h, w]` at the layer's resolution, and the target classes.
    pub fn attribute<B: Backend>(&self, eng: &Engine<B>, x: &Tensor, targets: Option<&[usize]>) -> Result<(Tensor, Vec<usize>)> {
        let (map, targets) = self.attribute_on_device(eng, x, targets)?;
        Ok((download_map(eng, &map)?, targets))
    }

    /// As [`GradCam::attribute`], but the maps stay on the backend as `[n, 1, h, w]`.
    pub fn attribute_on_device<B: Backend>(&self, eng: &Engine<B>, x: &Tensor, targets: Option<&[usize]>) -> Result<(B::T, Vec<usize>)> {
        let (acts, targets) = forward_with_targets(eng, x, targets, &[self.layer])?;
        let a = acts.get(self.layer).expect("kept by the forward pass");
        feature_map(eng, a, "Grad-CAM", self.layer)?;
        let out = eng.model().output();
        let seed = eng.be.one_hot(acts.shape(out), &targets)?;
        let ga = eng.backward(&acts, vec![(out, seed)], &[self.layer], Rule::Gradient)?.remove(0);
        let alpha = eng.be.spatial_mean(&ga)?;
        let map = eng.be.weighted_channel_sum(a, &alpha, true)?;
        Ok((map, targets))
    }
}

#[derive(Clone, Debug)]
pub struct Cam {
    pub feature: Layer,
    /// the classifier's weight parameter [classes, k]
    pub weight: ParamId,
}

impl Cam {
    pub fn new(model: &Model) -> Result<Self> {
        let Some((feature, linear)) = model.graph.heads.cam.clone() else {
            return Err(Error::Unsupported(format!(
                "CAM needs a classifier that is one linear layer after global average pooling; `{}` has another head (use gradcam)",
                model.graph.arch
            )));
        };
        let feature = model.resolve(&feature)?;
        let lin = model.resolve(&linear)?;
        let Op::Linear { weight, .. } = model.graph.nodes[lin.node()].op else {
            return Err(Error::Unsupported(format!("CAM: `{linear}` is not a linear layer")));
        };
        Ok(Cam { feature, weight })
    }

    /// Maps `[n, h, w]` at the feature layer's resolution, and the target classes.
    pub fn attribute<B: Backend>(&self, eng: &Engine<B>, x: &Tensor, targets: Option<&[usize]>) -> Result<(Tensor, Vec<usize>)> {
        let (map, targets) = self.attribute_on_device(eng, x, targets)?;
        Ok((download_map(eng, &map)?, targets))
    }

    /// As [`Cam::attribute`], but the maps stay on the backend as `[n, 1, h, w]`.
    pub fn attribute_on_device<B: Backend>(&self, eng: &Engine<B>, x: &Tensor, targets: Option<&[usize]>) -> Result<(B::T, Vec<usize>)> {
        let (acts, targets) = forward_with_targets(eng, x, targets, &[self.feature])?;
        let a = acts.get(self.feature).expect("kept by the forward pass");
        feature_map(eng, a, "CAM", self.feature)?;
        let w = &eng.model().params[self.weight];
        let k = w.shape[1];
        if eng.be.shape(a)[1] != k {
            return Err(Error::shape("CAM feature layer", format!("[n, {k}, h, w]"), eng.be.shape(a)));
        }
        // the classifier rows of the targets, [n, k, 1, 1]: small, built on the host
        let rows: Vec<f32> = targets.iter().flat_map(|&c| w.data[c * k..(c + 1) * k].iter().copied()).collect();
        let rows = eng.upload(&Tensor::new(vec![targets.len(), k, 1, 1], rows)?)?;
        let map = eng.be.weighted_channel_sum(a, &rows, false)?;
        Ok((map, targets))
    }
}
