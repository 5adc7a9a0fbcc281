//! Saliency maps (Simonyan, Vedaldi, Zisserman 2014, "Deep Inside Convolutional Networks"):
//! the gradient of the target class's pre-softmax score w.r.t. the input image, reduced to one
//! value per pixel by the maximum of its absolute value over the colour channels.
//! The gradient is taken w.r.t. the *preprocessed* (normalised) input, as captum's `Saliency`
//! does.

use super::{download_map, forward_with_targets};
use crate::backend::Backend;
use crate::engine::{Engine, Rule};
use crate::error::Result;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, Default)]
pub struct Saliency;

impl Saliency {
    /// Returns the maps `[n, h, w]` and the target class of each item (`targets`, or the top
    /// class when `None`).
    pub fn attribute<B: Backend>(&self, eng: &Engine<B>, x: &Tensor, targets: Option<&[usize]>) -> Result<(Tensor, Vec<usize>)> {
        let (map, targets) = self.attribute_on_device(eng, x, targets)?;
        Ok((download_map(eng, &map)?, targets))
    }

    /// As [`Saliency::attribute`], but the maps stay on the backend as `[n, 1, h, w]` (to render
    /// them there with [`Backend::render`]).
    pub fn attribute_on_device<B: Backend>(&self, eng: &Engine<B>, x: &Tensor, targets: Option<&[usize]>) -> Result<(B::T, Vec<usize>)> {
        let (acts, targets) = forward_with_targets(eng, x, targets, &[])?;
        let out = eng.model().output();
        let seed = eng.be.one_hot(acts.shape(out), &targets)?;
        let gx = eng.backward(&acts, vec![(out, seed)], &[eng.model().input()], Rule::Gradient)?.remove(0);
        Ok((eng.be.max_abs_channels(&gx)?, targets))
    }
}
