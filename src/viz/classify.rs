//! Top-k classification.

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::Result;
use crate::tensor::Tensor;

#[derive(Clone, Debug, PartialEq)]
/// One of the top classes of an input.
pub struct Prediction {
    /// the class index
    pub class: usize,
    /// the class's name
    pub name: String,
    /// the pre-softmax score
    pub logit: f32,
    /// the softmax probability
    pub prob: f32,
}

/// The top `k` classes of each item with their logits and softmax probabilities.
pub fn classify<B: Backend>(eng: &Engine<B>, x: &Tensor, k: usize) -> Result<Vec<Vec<Prediction>>> {
    let out = eng.model().output();
    let acts = eng.forward(eng.upload(x)?, out, &[])?;
    let logits = eng.download(acts.get(out).expect("forward ran to the output"))?;
    if let Some(i) = logits.data.iter().position(|v| !v.is_finite()) {
        return Err(crate::Error::InvalidArgument(format!(
            "the logits of item {} are not finite ({}): the network overflowed on this input or these weights",
            i / (logits.numel() / logits.shape[0].max(1)).max(1),
            logits.data[i]
        )));
    }
    Ok((0..logits.shape[0])
        .map(|i| {
            let l = logits.item(i);
            let max = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = l.iter().map(|&v| ((v - max) as f64).exp()).sum();
            let mut idx: Vec<usize> = (0..l.len()).collect();
            idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
            idx.iter()
                .take(k)
                .map(|&c| Prediction {
                    class: c,
                    name: eng.model().class_name(c),
                    logit: l[c],
                    prob: (((l[c] - max) as f64).exp() / z) as f32,
                })
                .collect()
        })
        .collect())
}
