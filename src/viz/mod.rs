//! The visualisations, one type per method, each with an `attribute`-style call on a batch.
//!
//! - `classify.rs`: top-k classes with probabilities.
//! - `saliency.rs`: [`Saliency`] — Simonyan et al. 2014.
//! - `cam.rs`: [`Cam`] — Zhou et al. 2016; [`GradCam`] — Selvaraju et al. 2017.
//! - `dream.rs`: [`DeepDream`] — Mordvintsev et al. 2015, with [`Objective`] values.
//!
//! Every method takes the backend explicitly and a preprocessed NCHW batch; maps come back at
//! their native resolution (saliency: input H×W; CAM / Grad-CAM: the layer's h×w), raw — not
//! normalised, not upsampled. Turning them into pictures is the caller's business
//! (`imageio::normalize_map`, `upsample_bilinear`, `colorize`).

mod cam;
mod classify;
mod dream;
mod saliency;

pub use cam::{Cam, GradCam};
pub use classify::{classify, Prediction};
pub use dream::{DeepDream, Objective};
pub use saliency::Saliency;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::graph::exec::Activations;
use crate::model::Model;
use crate::tensor::Tensor;

/// Forward the batch through the whole network and pick each item's target class: the given
/// one, or the top class when `targets` is `None`.
pub(crate) fn forward_with_targets(
    model: &Model,
    be: &dyn Backend,
    x: &Tensor,
    targets: Option<&[usize]>,
) -> Result<(Activations, Vec<usize>)> {
    let acts = model.forward(be, x.clone(), model.output())?;
    let logits = acts.get(model.output()).expect("forward ran to the output");
    let (n, ncls) = (logits.shape[0], logits.numel() / logits.shape[0]);
    let targets = match targets {
        Some(t) => {
            if t.len() != n {
                return Err(Error::InvalidArgument(format!("{} targets given for a batch of {n}", t.len())));
            }
            if let Some(&bad) = t.iter().find(|&&c| c >= ncls) {
                return Err(Error::InvalidArgument(format!("class {bad} is out of range: the model has {ncls} classes")));
            }
            t.to_vec()
        }
        None => (0..n).map(|i| argmax(logits.item(i))).collect(),
    };
    Ok((acts, targets))
}

/// The gradient seed d(score)/d(logits) for "the pre-softmax score of each item's target".
pub(crate) fn class_seed(shape: &[usize], targets: &[usize]) -> Tensor {
    let mut seed = Tensor::zeros(shape);
    let per = seed.numel() / shape[0];
    for (i, &c) in targets.iter().enumerate() {
        seed.data[i * per + c] = 1.0;
    }
    seed
}

pub(crate) fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
