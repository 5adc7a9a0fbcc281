//! The gradient-free CAMs, whose channel weights come from many extra forward passes, batched:
//!
//! - [`ScoreCam`] (Wang et al. 2020): each channel k of layer A, upsampled to the input and
//!   scaled to [0, 1], masks the input; w = softmax over k of the target's pre-softmax score on
//!   the masked inputs; map = ReLU(Σ_k w_k A_k). As pytorch-grad-cam's `ScoreCAM`, with one
//!   deviation: the upsampling is `interpolate(align_corners=False)` (deepviz's one resize),
//!   where pytorch-grad-cam uses `UpsamplingBilinear2d` (align_corners=True).
//! - [`AblationCam`] (Desai & Ramaswamy 2020): channel k of A set to zero, the rest of the
//!   network rerun from A; w_k = (y − y_k) / y, y the target's score; map = ReLU(Σ_k w_k A_k). As
//!   pytorch-grad-cam's `AblationCAM`, except that the ablated channel is always zeroed (the
//!   paper); pytorch-grad-cam sets it to min(A) − 1e7 when A has negative values.
//!
//! Both take class targets (the scores are logits). Masked inputs and ablated copies go
//! through the network `masks` at a time ([`MethodOptions::masks`](super::MethodOptions)): more
//! is faster until the device's memory is full.

use super::cam::{cam_layer, feature_map};
use super::{ops, target, Attribution, LayerUse, MethodInfo, Opt, Target, Targets};
use crate::backend::{Backend, Binary, Precision, Reduce, Unary};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::Colormap;
use crate::model::Layer;

pub(super) const SCORECAM_INFO: MethodInfo = MethodInfo {
    name: "scorecam",
    title: "Score-CAM",
    about: "ReLU(Σ_k w_k A_k), w = softmax over k of the score of the input masked by each upsampled channel A_k, at --layer",
    paper: "Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu 2020, Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
    layer: LayerUse::One,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
    signed: false,
    options: &[Opt::Masks, Opt::AugSmooth],
    gpu_precision: Precision::Tf32,
};

pub(super) const ABLATIONCAM_INFO: MethodInfo = MethodInfo {
    name: "ablationcam",
    title: "Ablation-CAM",
    about: "ReLU(Σ_k w_k A_k), w_k = the relative drop of the score when channel k of --layer is zeroed",
    paper: "Desai, Ramaswamy 2020, Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free Localization",
    layer: LayerUse::One,
    colormap: Colormap::Turbo,
    clip_percentile: 100.0,
    signed: false,
    options: &[Opt::Masks, Opt::AugSmooth],
    gpu_precision: Precision::Tf32,
};

/// Masked inputs or ablated copies per forward pass, by default.
pub const DEFAULT_MASKS: usize = 32;

fn class_targets_only(targets: Option<&[Target]>, title: &str) -> Result<()> {
    if targets.is_some_and(|t| t.iter().any(|t| t.class().is_none())) {
        return Err(Error::InvalidArgument(format!("{title} explains classes: every target must be a class (use gradcam for channels and neurons)")));
    }
    Ok(())
}

/// The layer of a gradient-free CAM: a CAM layer, and not the output (the passes rerun what
/// follows it).
fn rerun_layer<B: Backend>(eng: &Engine<B>, layer: Option<&str>, title: &str) -> Result<Layer> {
    let layer = cam_layer(eng, layer, title)?;
    if layer == eng.model().output() {
        return Err(Error::InvalidArgument(format!("{title} needs a layer inside the network, not its output")));
    }
    Ok(layer)
}

/// The scores of `k` channels, `per_pass` at a time: `chunk(k0, kc)` gives `[n, kc, 1, 1]` for
/// channels [k0, k0 + kc); the result is `[n, k, 1, 1]`.
fn channel_scores<B: Backend>(be: &B, k: usize, per_pass: usize, mut chunk: impl FnMut(usize, usize) -> Result<B::T>) -> Result<B::T> {
    let mut parts = (0..k).step_by(per_pass).map(|k0| chunk(k0, per_pass.min(k - k0))).collect::<Result<Vec<_>>>()?;
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    be.concat(&parts.iter().collect::<Vec<_>>())
}

/// Channels [k0, k0 + kc) of `a` `[n, k, h, w]`.
fn channels<B: Backend>(be: &B, a: &B::T, k0: usize, kc: usize) -> Result<B::T> {
    let k = be.shape(a)[1];
    if (k0, kc) == (0, k) {
        return Ok(a.clone());
    }
    let sizes: Vec<usize> = [k0, kc, k - k0 - kc].into_iter().filter(|&s| s > 0).collect();
    let mut parts = be.split(a, &sizes)?;
    Ok(parts.remove(if k0 > 0 { 1 } else { 0 }))
}

/// Each item's target score in `logits` `[n·r, classes]` (r copies per item, in a row), by the
/// one-hot rows `onehot` `[n, classes]`: `[n, r, 1, 1]`.
fn scores<B: Backend>(be: &B, logits: B::T, onehot: &B::T, n: usize, r: usize) -> Result<B::T> {
    let classes = be.shape(onehot)[1];
    let l = be.reshape(logits, &[n, r, classes])?;
    let oh = be.reshape(onehot.clone(), &[n, 1, classes])?;
    be.reshape(be.reduce(&be.binary(&l, &oh, Binary::Mul)?, Reduce::Sum, &[2])?, &[n, r, 1, 1])
}

/// Score-CAM (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for
/// Convolutional Neural Networks"): each channel of the layer, upsampled to the input and scaled
/// to [0, 1], masks the input; the weights are the softmax over channels of the target's score
/// on the masked inputs; map = ReLU(Σ_k w_k A_k). As pytorch-grad-cam's `ScoreCAM`, except the
/// upsampling (`align_corners=False` here, `True` there).
pub struct ScoreCam<'e, B: Backend> {
    eng: &'e Engine<B>,
    /// the layer whose channels mask the input
    pub layer: Layer,
    /// masked inputs per forward pass
    pub masks: usize,
}

impl<'e, B: Backend> ScoreCam<'e, B> {
    /// Score-CAM at `layer` (default: the architecture's last feature layer), `masks` masked
    /// inputs per forward pass.
    pub fn new(eng: &'e Engine<B>, layer: Option<&str>, masks: usize) -> Result<Self> {
        Ok(ScoreCam { eng, layer: rerun_layer(eng, layer, "Score-CAM")?, masks: masks.max(1) })
    }
}

impl<B: Backend> Attribution<B> for ScoreCam<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &SCORECAM_INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn layer_name(&self) -> Option<String> {
        Some(self.eng.model().name(self.layer).to_string())
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let (eng, be) = (self.eng, &self.eng.be);
        class_targets_only(targets, "Score-CAM")?;
        let t = target::forward(eng, x, targets, &[self.layer])?;
        let a = t.acts.get(self.layer).expect("kept by the forward pass");
        feature_map(eng, a, "Score-CAM", self.layer)?;
        let (_, onehot) = &t.seeds[0];
        let [n, k, ..] = be.shape(a)[..] else { unreachable!("a feature map") };
        let xs = be.shape(x).to_vec();
        let (c, hh, ww) = (xs[1], xs[2], xs[3]);
        let x_items = be.reshape(x.clone(), &[n, 1, c, hh * ww])?;
        let out = eng.model().output();
        let s = channel_scores(be, k, (self.masks / n).max(1), |k0, kc| {
            let up = be.resize(&channels(be, a, k0, kc)?, hh, ww)?;
            // (u − min) / (max − min + 1e-8) per channel, as pytorch-grad-cam
            let lo = be.reduce(&up, Reduce::Min, &[2, 3])?;
            let span = be.unary(&be.binary(&be.reduce(&up, Reduce::Max, &[2, 3])?, &lo, Binary::Sub)?, Unary::Affine(1.0, 1e-8))?;
            let mask = be.binary(&be.binary(&up, &lo, Binary::Sub)?, &span, Binary::Div)?;
            let masked = be.binary(&x_items, &be.reshape(mask, &[n, kc, 1, hh * ww])?, Binary::Mul)?;
            let masked = be.reshape(masked, &[n * kc, c, hh, ww])?;
            let logits = eng.forward(masked, out, &[])?.get(out).expect("the output is kept").clone();
            scores(be, logits, onehot, n, kc)
        })?;
        // softmax over the channels
        let e = be.unary(&be.binary(&s, &be.reduce(&s, Reduce::Max, &[1])?, Binary::Sub)?, Unary::Exp)?;
        let w = be.binary(&e, &be.reduce(&e, Reduce::Sum, &[1])?, Binary::Div)?;
        let map = ops::weighted_channel_sum(be, a, &w, true)?;
        Ok((map, t.targets))
    }
}

/// Ablation-CAM (Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep
/// Convolutional Network via Gradient-free Localization"): each channel of the layer zeroed and
/// the network rerun from it; w_k = (y − y_k) / y; map = ReLU(Σ_k w_k A_k). As
/// pytorch-grad-cam's `AblationCAM`, except that the channel is always zeroed (the paper).
pub struct AblationCam<'e, B: Backend> {
    eng: &'e Engine<B>,
    /// the layer whose channels are ablated
    pub layer: Layer,
    /// ablated copies per forward pass
    pub masks: usize,
}

impl<'e, B: Backend> AblationCam<'e, B> {
    /// Ablation-CAM at `layer` (default: the architecture's last feature layer), `masks`
    /// ablated copies per forward pass.
    pub fn new(eng: &'e Engine<B>, layer: Option<&str>, masks: usize) -> Result<Self> {
        Ok(AblationCam { eng, layer: rerun_layer(eng, layer, "Ablation-CAM")?, masks: masks.max(1) })
    }
}

impl<B: Backend> Attribution<B> for AblationCam<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &ABLATIONCAM_INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn layer_name(&self) -> Option<String> {
        Some(self.eng.model().name(self.layer).to_string())
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let (eng, be) = (self.eng, &self.eng.be);
        class_targets_only(targets, "Ablation-CAM")?;
        let out = eng.model().output();
        let mut keep = eng.boundary(self.layer, out)?;
        keep.push(self.layer);
        let t = target::forward(eng, x, targets, &keep)?;
        let a = t.acts.get(self.layer).expect("kept by the forward pass");
        feature_map(eng, a, "Ablation-CAM", self.layer)?;
        let (_, onehot) = &t.seeds[0];
        let s = be.shape(a).to_vec();
        let (n, k, m) = (s[0], s[1], s[2] * s[3]);
        let a_items = be.reshape(a.clone(), &[n, 1, k, m])?;
        let y = be.reshape(target::score(eng, &t.acts, &t.seeds)?, &[n, 1, 1, 1])?;
        let yk = channel_scores(be, k, (self.masks / n).max(1), |k0, kc| {
            // copy j of an item has channel k0 + j zeroed: keep = 1 − [channel == k0 + j]
            let which = be.unary(&be.reshape(be.iota(kc)?, &[1, kc, 1, 1])?, Unary::Affine(1.0, k0 as f32))?;
            let hit = ops::indicator(be, &which, 2, k)?;
            let keep_mask = be.unary(&hit, Unary::Affine(-1.0, 1.0))?;
            let ablated = be.reshape(be.binary(&a_items, &keep_mask, Binary::Mul)?, &[n * kc, k, s[2], s[3]])?;
            let logits = eng.forward_from(&t.acts, self.layer, ablated, out, kc)?;
            scores(be, logits, onehot, n, kc)
        })?;
        // (y − y_k) / y
        let w = be.binary(&be.binary(&y, &yk, Binary::Sub)?, &y, Binary::Div)?;
        let map = ops::weighted_channel_sum(be, a, &w, true)?;
        Ok((map, t.targets))
    }
}
