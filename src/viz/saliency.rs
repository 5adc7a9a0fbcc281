//! Saliency maps (Simonyan, Vedaldi, Zisserman 2014, "Deep Inside Convolutional Networks"):
//! the gradient of the target's pre-softmax score w.r.t. the input image, reduced to one value
//! per pixel by the maximum of its absolute value over the colour channels. The gradient is
//! taken w.r.t. the *preprocessed* (normalised) input, as captum's `Saliency` does.

use super::gradient::input_gradient;
use super::{ops, Attribution, LayerUse, MethodInfo, Target, Targets};
use crate::backend::{Backend, Precision};
use crate::engine::{Engine, Rule};
use crate::error::Result;
use crate::imageio::Colormap;

pub(super) const INFO: MethodInfo = MethodInfo {
    name: "saliency",
    title: "Saliency",
    about: "max over colour channels of |d score / d image|",
    paper: "Simonyan, Vedaldi, Zisserman 2014, Deep Inside Convolutional Networks",
    layer: LayerUse::None,
    colormap: Colormap::Inferno,
    // a few extreme gradients would leave the rest of the picture black
    clip_percentile: 99.5,
    signed: false,
    options: &[],
    gpu_precision: Precision::F32,
};

/// Saliency (Simonyan, Vedaldi, Zisserman 2014, "Deep Inside Convolutional Networks:
/// Visualising Image Classification Models and Saliency Maps", §3): the gradient of the target's
/// pre-softmax score with respect to the (preprocessed) input, reduced to one value per pixel by
/// the maximum of its absolute value over the colour channels, as captum's `Saliency`.
pub struct Saliency<'e, B: Backend> {
    eng: &'e Engine<B>,
}

impl<'e, B: Backend> Saliency<'e, B> {
    /// Saliency on `eng`.
    pub fn new(eng: &'e Engine<B>) -> Self {
        Saliency { eng }
    }
}

impl<B: Backend> Attribution<B> for Saliency<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let (gx, targets) = input_gradient(self.eng, x, targets, Rule::Gradient)?;
        Ok((ops::abs_max_channels(&self.eng.be, &gx)?, targets))
    }
}
