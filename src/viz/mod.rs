//! The visualisations, one type per method, each with an `attribute`-style call on a batch.
//!
//! - `classify.rs`: top-k classes with probabilities.
//! - `saliency.rs`: [`Saliency`] — Simonyan et al. 2014.
//! - `cam.rs`: [`Cam`] — Zhou et al. 2016; [`GradCam`] — Selvaraju et al. 2017.
//! - `dream.rs`: [`DeepDream`] — Mordvintsev et al. 2015, with [`Objective`] values.
//!
//! Every method runs on an [`Engine`] (a model on a backend) and takes a preprocessed NCHW batch.
//! The whole job runs on the engine's backend: the input goes up once, the forward, backward and
//! the map's reduction happen there, and only the map (and the logits, to pick targets) come
//! back. Maps are returned at their native resolution (saliency: input H×W; CAM / Grad-CAM: the
//! layer's h×w) as `[n, h, w]`, raw — not normalised, not upsampled.

mod cam;
mod classify;
mod dream;
mod saliency;

pub use cam::{Cam, GradCam};
pub use classify::{classify, Prediction};
pub use dream::{DeepDream, Objective};
pub use saliency::Saliency;

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::engine::Activations;
use crate::model::Layer;
use crate::tensor::Tensor;

/// Forward the batch through the whole network, keeping `keep`, and pick each item's target
/// class: the given one, or the top class when `targets` is `None`.
pub(crate) fn forward_with_targets<B: Backend>(
    eng: &Engine<B>,
    x: &Tensor,
    targets: Option<&[usize]>,
    keep: &[Layer],
) -> Result<(Activations<B>, Vec<usize>)> {
    let out = eng.model().output();
    let acts = eng.forward(eng.upload(x)?, out, keep)?;
    let shape = acts.shape(out);
    let (n, ncls) = (shape[0], shape[1..].iter().product::<usize>());
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
        None => {
            let logits = eng.download(acts.get(out).expect("forward ran to the output"))?;
            (0..n).map(|i| argmax(logits.item(i))).collect()
        }
    };
    Ok((acts, targets))
}

/// A map `[n, 1, h, w]` on the backend, brought back as `[n, h, w]`.
pub(crate) fn download_map<B: Backend>(eng: &Engine<B>, m: &B::T) -> Result<Tensor> {
    let t = eng.download(m)?;
    let (n, _, h, w) = t.nchw();
    t.reshape(&[n, h, w])
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
