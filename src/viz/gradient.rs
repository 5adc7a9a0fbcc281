//! Maps made from the gradient at the input under a backward [`Rule`]:
//!
//! - guided backpropagation (Springenberg, Dosovitskiy, Brox, Riedmiller 2015) and the
//!   deconvnet (Zeiler & Fergus 2014): the gradient passed by their rule, reduced like a
//!   saliency map (max |·| over colour channels);
//! - Gradient × Input (Shrikumar et al. 2016): Σ_c x_c · ∂score/∂x_c, signed (captum's
//!   `InputXGradient` summed over channels, as captum's `visualize_image_attr` does);
//! - guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the Grad-CAM map
//!   upsampled to the input, reduced by max |·| over colour channels (pytorch-grad-cam multiplies
//!   the same two before its `deprocess_image`). The upsampling is bilinear: captum's
//!   `GuidedGradCam` with `interpolate_mode="bilinear"` (its default is nearest neighbour).
//!
//! `tests/libs.rs` checks each against captum 0.9.0.
//!
//! As everywhere in deepviz, x is the *preprocessed* (normalised) input the network sees.

use super::cam::GradCam;
use super::{ops, target, Attribution, LayerUse, MethodInfo, Target, Targets};
use crate::backend::{Backend, Binary, Precision, Reduce};
use crate::engine::{Engine, Rule};
use crate::error::Result;
use crate::imageio::Colormap;

/// The gradient of each item's target score at the input, passed by `rule`, and the targets.
pub(crate) fn input_gradient<B: Backend>(eng: &Engine<B>, x: &B::T, targets: Option<&[Target]>, rule: Rule) -> Result<(B::T, Targets<B>)> {
    let t = target::forward(eng, x, targets, &[])?;
    let gx = eng.backward(&t.acts, t.seeds.clone(), &[eng.model().input()], rule)?.remove(0);
    Ok((gx, t.targets))
}

pub(super) const GUIDED_INFO: MethodInfo = MethodInfo {
    name: "guided",
    title: "Guided backpropagation",
    about: "max over colour channels of |the gradient|, passed through rectifiers only where input and gradient are positive",
    paper: "Springenberg, Dosovitskiy, Brox, Riedmiller 2015, Striving for Simplicity: The All Convolutional Net",
    layer: LayerUse::None,
    colormap: Colormap::Inferno,
    clip_percentile: 99.5,
    signed: false,
    options: &[],
    gpu_precision: Precision::F32,
};

pub(super) const DECONVNET_INFO: MethodInfo = MethodInfo {
    name: "deconvnet",
    title: "Deconvnet",
    about: "max over colour channels of |the gradient|, rectifiers passing the positive part of the gradient",
    paper: "Zeiler, Fergus 2014, Visualizing and Understanding Convolutional Networks",
    layer: LayerUse::None,
    colormap: Colormap::Inferno,
    clip_percentile: 99.5,
    signed: false,
    options: &[],
    gpu_precision: Precision::F32,
};

pub(super) const GRADXINPUT_INFO: MethodInfo = MethodInfo {
    name: "gradxinput",
    title: "Gradient × Input",
    about: "Σ over colour channels of input × d score / d input (signed; pictures show |·|)",
    paper: "Shrikumar, Greenside, Shcherbina, Kundaje 2016, Not Just a Black Box: Learning Important Features Through Propagating Activation Differences",
    layer: LayerUse::None,
    colormap: Colormap::Inferno,
    clip_percentile: 99.5,
    signed: true,
    options: &[],
    gpu_precision: Precision::F32,
};

pub(super) const GUIDED_GRADCAM_INFO: MethodInfo = MethodInfo {
    name: "guided-gradcam",
    title: "Guided Grad-CAM",
    about: "max over colour channels of |guided backpropagation × Grad-CAM upsampled to the input|, Grad-CAM at --layer",
    paper: "Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
    layer: LayerUse::One,
    colormap: Colormap::Inferno,
    clip_percentile: 99.5,
    signed: false,
    options: &[],
    gpu_precision: Precision::F32,
};

/// A map from the input gradient under a rule: guided backpropagation (Springenberg et al. 2015),
/// the deconvnet (Zeiler & Fergus 2014), or Gradient × Input (Shrikumar et al. 2016); the
/// constructors say how each is reduced to one value per pixel.
pub struct Gradients<'e, B: Backend> {
    eng: &'e Engine<B>,
    info: &'static MethodInfo,
    rule: Rule,
    times_input: bool,
}

impl<'e, B: Backend> Gradients<'e, B> {
    /// Guided backpropagation (Springenberg, Dosovitskiy, Brox, Riedmiller 2015, "Striving for
    /// Simplicity: The All Convolutional Net"): the gradient with negative values stopped at every
    /// ReLU on the way back as well as where the forward input was negative; max |·| over colour
    /// channels.
    pub fn guided_backprop(eng: &'e Engine<B>) -> Self {
        Gradients { eng, info: &GUIDED_INFO, rule: Rule::GuidedBackprop, times_input: false }
    }
    /// The deconvnet (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
    /// Networks"): the gradient with every ReLU on the way back applied to the gradient alone; max
    /// |·| over colour channels.
    pub fn deconvnet(eng: &'e Engine<B>) -> Self {
        Gradients { eng, info: &DECONVNET_INFO, rule: Rule::Deconvnet, times_input: false }
    }
    /// Gradient × Input (Shrikumar et al. 2016, "Not Just a Black Box"): Σ_c x_c · ∂score/∂x_c,
    /// signed (captum's `InputXGradient` summed over channels).
    pub fn input_x_gradient(eng: &'e Engine<B>) -> Self {
        Gradients { eng, info: &GRADXINPUT_INFO, rule: Rule::Gradient, times_input: true }
    }
}

impl<B: Backend> Attribution<B> for Gradients<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        self.info
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let be = &self.eng.be;
        let (gx, targets) = input_gradient(self.eng, x, targets, self.rule)?;
        let map = if self.times_input { be.reduce(&be.binary(&gx, x, Binary::Mul)?, Reduce::Sum, &[1])? } else { ops::abs_max_channels(be, &gx)? };
        Ok((map, targets))
    }
}

/// Guided Grad-CAM (Selvaraju et al. 2017, "Grad-CAM", §3): guided backpropagation times the
/// Grad-CAM map at a layer upsampled to the input (bilinear; captum's default is nearest
/// neighbour), reduced by max |·| over colour channels (pytorch-grad-cam multiplies the same two
/// before its `deprocess_image`).
pub struct GuidedGradCam<'e, B: Backend> {
    /// the Grad-CAM whose map gates the guided gradient
    pub gradcam: GradCam<'e, B>,
}

impl<'e, B: Backend> GuidedGradCam<'e, B> {
    /// Guided Grad-CAM at `layer` (default: the architecture's last feature layer).
    pub fn new(eng: &'e Engine<B>, layer: Option<&str>) -> Result<Self> {
        Ok(GuidedGradCam { gradcam: GradCam::new(eng, layer)? })
    }
}

impl<B: Backend> Attribution<B> for GuidedGradCam<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &GUIDED_GRADCAM_INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.gradcam.engine()
    }
    fn layer_name(&self) -> Option<String> {
        self.gradcam.layer_name()
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let eng = self.engine();
        let be = &eng.be;
        // one forward pass serves both backward passes
        let t = target::forward(eng, x, targets, &[self.gradcam.layer])?;
        let cam = self.gradcam.map_of(&t)?;
        let gb = eng.backward(&t.acts, t.seeds.clone(), &[eng.model().input()], Rule::GuidedBackprop)?.remove(0);
        let s = be.shape(x);
        let cam = be.resize(&cam, s[2], s[3])?;
        let map = ops::abs_max_channels(be, &be.binary(&gb, &cam, Binary::Mul)?)?;
        Ok((map, t.targets))
    }
}
