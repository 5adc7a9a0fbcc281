//! Saliency maps (Simonyan, Vedaldi, Zisserman 2014, "Deep Inside Convolutional Networks"):
//! the gradient of the target class's pre-softmax score w.r.t. the input image, reduced to one
//! value per pixel by the maximum of its absolute value over the colour channels.
//! Deviation: none; the gradient is taken w.r.t. the *preprocessed* (normalised) input, as
//! captum's `Saliency` does.

use super::{class_seed, forward_with_targets};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::Model;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, Default)]
pub struct Saliency;

impl Saliency {
    /// Returns the maps `[n, h, w]` and the target class of each item (`targets`, or the top
    /// class when `None`).
    pub fn attribute(&self, model: &Model, be: &dyn Backend, x: &Tensor, targets: Option<&[usize]>) -> Result<(Tensor, Vec<usize>)> {
        let (acts, targets) = forward_with_targets(model, be, x, targets)?;
        let out = model.output();
        let seed = class_seed(&acts.shapes[out], &targets);
        let gx = model.backward(be, &acts, vec![(out, seed)], &[0])?.remove(0);
        Ok((max_abs_over_channels(&gx), targets))
    }
}

/// [n, c, h, w] -> [n, h, w], max over c of |x|.
pub fn max_abs_over_channels(g: &Tensor) -> Tensor {
    let (n, c, h, w) = g.nchw();
    let hw = h * w;
    let mut out = Tensor::zeros(&[n, h, w]);
    for b in 0..n {
        let src = g.item(b);
        let dst = &mut out.data[b * hw..(b + 1) * hw];
        for ch in 0..c {
            for (d, s) in dst.iter_mut().zip(&src[ch * hw..(ch + 1) * hw]) {
                *d = d.max(s.abs());
            }
        }
    }
    out
}
