//! Class activation maps.
//!
//! - [`Cam`]: Zhou et al. 2016, "Learning Deep Features for Discriminative Localization". For a
//!   network whose classifier is one linear layer right after global average pooling, the map of
//!   class c is Σ_k W[c,k]·A_k at the last feature layer. Returned raw: no bias, no ReLU, no
//!   normalisation (the paper's definition). Any other classifier is an error.
//! - [`GradCam`]: Selvaraju et al. 2017. At any named layer A, α_k = spatial mean of
//!   d score_c / d A_k, map = ReLU(Σ_k α_k A_k) — with the paper's ReLU. Default layer: the last
//!   feature layer before the classifier's pooling (the zoo names it per architecture).

use super::{class_seed, forward_with_targets};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::graph::{NodeId, Op};
use crate::model::Model;
use crate::tensor::Tensor;

/// Σ_k weights[i][k] · A[i, k] for each item i: [n, k, h, w] -> [n, h, w].
fn weighted_sum(a: &Tensor, weights: &[Vec<f32>], relu: bool) -> Tensor {
    let (n, k, h, w) = a.nchw();
    let hw = h * w;
    let mut out = Tensor::zeros(&[n, h, w]);
    for b in 0..n {
        let src = a.item(b);
        let dst = &mut out.data[b * hw..(b + 1) * hw];
        for ch in 0..k {
            let wk = weights[b][ch];
            for (d, s) in dst.iter_mut().zip(&src[ch * hw..(ch + 1) * hw]) {
                *d += wk * s;
            }
        }
        if relu {
            dst.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    out
}

#[derive(Clone, Debug)]
pub struct GradCam {
    pub layer: NodeId,
}

impl GradCam {
    /// At the named layer, or the architecture's default when `None`.
    pub fn new(model: &Model, layer: Option<&str>) -> Result<Self> {
        let name = layer.unwrap_or(&model.graph.heads.gradcam_layer);
        let layer = model.resolve(name)?;
        if layer == 0 {
            return Err(Error::InvalidArgument("Grad-CAM needs a layer inside the network, not its input".into()));
        }
        Ok(GradCam { layer })
    }

    /// Maps `[n, h, w]` at the layer's resolution, and the target classes.
    pub fn attribute(&self, model: &Model, be: &dyn Backend, x: &Tensor, targets: Option<&[usize]>) -> Result<(Tensor, Vec<usize>)> {
        let (acts, targets) = forward_with_targets(model, be, x, targets)?;
        let a = acts.get(self.layer).expect("forward ran past the layer");
        if a.rank() != 4 {
            return Err(Error::shape(
                format!("Grad-CAM layer `{}`", model.name(self.layer)),
                "a 4-d [n, c, h, w] feature map",
                &a.shape,
            ));
        }
        let out = model.output();
        let seed = class_seed(&acts.shapes[out], &targets);
        let ga = model.backward(be, &acts, vec![(out, seed)], &[self.layer])?.remove(0);
        let (n, k, h, w) = ga.nchw();
        let hw = (h * w) as f32;
        let alphas: Vec<Vec<f32>> = (0..n)
            .map(|b| ga.item(b).chunks(h * w).map(|c| c.iter().sum::<f32>() / hw).take(k).collect())
            .collect();
        Ok((weighted_sum(a, &alphas, true), targets))
    }
}

#[derive(Clone, Debug)]
pub struct Cam {
    pub feature: NodeId,
    /// the classifier's weight parameter [classes, k]
    pub weight: usize,
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
        let Op::Linear { weight, .. } = model.graph.nodes[lin].op else {
            return Err(Error::Unsupported(format!("CAM: `{linear}` is not a linear layer")));
        };
        Ok(Cam { feature, weight })
    }

    pub fn attribute(&self, model: &Model, be: &dyn Backend, x: &Tensor, targets: Option<&[usize]>) -> Result<(Tensor, Vec<usize>)> {
        let (acts, targets) = forward_with_targets(model, be, x, targets)?;
        let a = acts.get(self.feature).expect("forward ran past the layer");
        let w = &model.params[self.weight];
        if a.rank() != 4 || a.shape[1] != w.shape[1] {
            return Err(Error::shape("CAM feature layer", format!("[n, {}, h, w]", w.shape[1]), &a.shape));
        }
        let k = w.shape[1];
        let weights: Vec<Vec<f32>> = targets.iter().map(|&c| w.data[c * k..(c + 1) * k].to_vec()).collect();
        Ok((weighted_sum(a, &weights, false), targets))
    }
}
