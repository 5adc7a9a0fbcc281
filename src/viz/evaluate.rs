//! Judging a map by what the network does without the pixels it ranks first: the deletion and
//! insertion curves of RISE (Petsiuk, Das, Saenko 2018, *RISE: Randomized Input Sampling for
//! Explanation of Black-box Models*, §4 "causal metrics").
//!
//! The map is upsampled to the input as the pictures are (bilinear, `align_corners=False`) and
//! its pixels ranked, largest first, ties to the lower pixel index (row-major), so the order is
//! the same on every backend. For fractions k/S (k = 0…S, S = [`DeletionInsertion::steps`]) the
//! first ⌊k·HW/S⌉ ranked pixels are
//! - **deleted**: replaced by [`Fill`] (default: 0 of the network's normalised input, the mean
//!   colour, as RISE's `torch.zeros_like` substrate; or black);
//! - **inserted**: copied from the image into a blurred copy of it (a Gaussian of σ = 5 pixels,
//!   ⌈σ⌉ taps each side: RISE's 11-tap `gkern(11, 5)`; our blur renormalises at the borders where
//!   RISE's zero-pads).
//!
//! The curve is the softmax probability of the target class on each changed image; its area is
//! the trapezoid rule over the exact fractions (pixels changed / HW), from 0 to 1. A good map
//! has a small deletion area (the class goes when its pixels go) and a large insertion area.
//! Deviations from RISE: RISE steps by whole rows of pixels (224 steps at 224²); we take S
//! evenly spaced fractions (default 50), whose area differs from RISE's by the trapezoid rule's
//! error only.
//!
//! Every curve image is made on the backend from the generic primitives (the rank tensor, a
//! threshold per step, `Step`, broadcast multiply-adds) and goes through the network in batches
//! of [`DeletionInsertion::batch_size`]; only the probabilities come back.

use crate::backend::{Backend, Binary, Random, Reduce, Unary};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::Preprocess;
use crate::tensor::Tensor;

use super::ops::{indicator, GaussianBlur};

/// What deleted pixels become.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fill {
    /// 0 in the network's normalised input space: the dataset's mean colour (RISE)
    #[default]
    Zero,
    /// black (0 in [0, 1] pixel space, normalised by the model's mean and std)
    Black,
}

impl std::str::FromStr for Fill {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zero" | "mean" => Ok(Fill::Zero),
            "black" => Ok(Fill::Black),
            _ => Err(Error::InvalidArgument(format!("unknown deletion fill `{s}`; known: zero (the mean colour), black"))),
        }
    }
}

impl Fill {
    /// The CLI's name of the fill (`zero`, `black`).
    pub fn name(self) -> &'static str {
        match self {
            Fill::Zero => "zero",
            Fill::Black => "black",
        }
    }
}

/// The deletion and insertion curves' settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeletionInsertion {
    /// S: the curves have S + 1 points, at fractions 0, 1/S, …, 1
    pub steps: usize,
    /// what a deleted pixel becomes
    pub fill: Fill,
    /// σ in pixels of insertion's blurred start
    pub blur_sigma: f32,
    /// changed images per forward pass
    pub batch_size: usize,
}

impl Default for DeletionInsertion {
    fn default() -> Self {
        DeletionInsertion { steps: 50, fill: Fill::Zero, blur_sigma: 5.0, batch_size: 16 }
    }
}

/// Both curves of one map.
#[derive(Clone, Debug, PartialEq)]
pub struct Curves {
    /// the fraction of pixels changed at each point (exactly 0 first, 1 last)
    pub fractions: Vec<f64>,
    /// the target class's probability with the top-ranked pixels deleted
    pub deletion: Vec<f64>,
    /// … with only the top-ranked pixels kept over the blurred image
    pub insertion: Vec<f64>,
    /// the area under the deletion curve (lower: a better map)
    pub deletion_auc: f64,
    /// the area under the insertion curve (higher: a better map)
    pub insertion_auc: f64,
}

/// The area under the polyline through (xs, ys) by the trapezoid rule.
pub fn trapezoid(xs: &[f64], ys: &[f64]) -> f64 {
    xs.windows(2).zip(ys.windows(2)).map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0).sum()
}

/// Each value's position when the values are sorted largest first, ties to the lower index;
/// an error for NaN.
pub fn ranks(values: &[f32]) -> Result<Vec<usize>> {
    if let Some(i) = values.iter().position(|v| v.is_nan()) {
        return Err(Error::InvalidArgument(format!("the map holds NaN at pixel {i}: it cannot rank pixels")));
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let mut rank = vec![0; values.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    Ok(rank)
}

/// How many pixels of `total` each of the `steps + 1` points changes: round(k · total / steps).
pub fn pixel_counts(steps: usize, total: usize) -> Vec<usize> {
    (0..=steps).map(|k| (k * total + steps / 2) / steps.max(1)).collect()
}

/// Uniform noise maps `[n, 1, h, w]` from `seed`: the random-ranking baseline a map should beat.
pub fn random_maps<B: Backend>(be: &B, n: usize, h: usize, w: usize, seed: u64) -> Result<B::T> {
    be.random(&[n, 1, h, w], seed, Random::Uniform)
}

/// The softmax probability of `class` for every item of a batch of inputs `[m, 3, H, W]`: `[m]`
/// on the host (the softmax on the backend, max-shifted).
pub fn class_probabilities<B: Backend>(eng: &Engine<B>, x: B::T, class: usize) -> Result<Vec<f64>> {
    let be = &eng.be;
    let out = eng.model().output();
    let acts = eng.forward(x, out, &[])?;
    let logits = acts.get(out).expect("the output is kept");
    let s = be.shape(logits).to_vec();
    let (m, k) = (s[0], s[1..].iter().product::<usize>());
    if class >= k {
        return Err(Error::InvalidArgument(format!("class {class} is out of range: the model has {k} classes")));
    }
    let l = be.reshape(logits.clone(), &[m, k])?;
    let shifted = be.binary(&l, &be.reduce(&l, Reduce::Max, &[1])?, Binary::Sub)?;
    let e = be.unary(&shifted, Unary::Exp)?;
    let onehot = indicator(be, &eng.constant(Tensor::new(vec![1, 1], vec![class as f32])?)?, 1, k)?;
    let p = be.binary(&be.reduce(&be.binary(&e, &onehot, Binary::Mul)?, Reduce::Sum, &[1])?, &be.reduce(&e, Reduce::Sum, &[1])?, Binary::Div)?;
    let p = eng.download(&p)?.data;
    if let Some(i) = p.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!("the logits of changed image {i} are not finite: the network overflowed")));
    }
    Ok(p.into_iter().map(f64::from).collect())
}

impl DeletionInsertion {
    /// An error for settings that make no curve (0 steps, a batch of 0, a blur that is not a
    /// positive number of pixels).
    pub fn check(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::InvalidArgument("deletion / insertion needs at least 1 step (--steps)".into()));
        }
        if self.batch_size == 0 {
            return Err(Error::InvalidArgument("the batch size must be at least 1".into()));
        }
        if !(self.blur_sigma > 0.0 && self.blur_sigma.is_finite()) {
            return Err(Error::InvalidArgument(format!("the blur's sigma must be a positive number of pixels, not {}", self.blur_sigma)));
        }
        Ok(())
    }

    /// The curves of one preprocessed image `x` `[1, 3, H, W]` ranked by `map` `[1, 1, h, w]`
    /// (larger first; give |map| for a signed method, as its pictures show), for `class`.
    pub fn curves<B: Backend>(&self, eng: &Engine<B>, x: &B::T, map: &B::T, class: usize, pre: &Preprocess) -> Result<Curves> {
        self.check()?;
        let be = &eng.be;
        let xs = be.shape(x).to_vec();
        let ms = be.shape(map).to_vec();
        let [1, c, h, w] = xs[..] else { return Err(Error::shape("deletion / insertion image", "[1, 3, H, W]", &xs)) };
        if ms.len() != 4 || ms[0] != 1 || ms[1] != 1 || ms[2] == 0 || ms[3] == 0 {
            return Err(Error::shape("deletion / insertion map", "[1, 1, h, w]", &ms));
        }
        let up = if ms[2..] == [h, w] { map.clone() } else { be.resize(map, h, w)? };
        let rank: Vec<f32> = ranks(&eng.download(&up)?.data)?.into_iter().map(|r| r as f32).collect();
        let rank = be.upload(&Tensor::new(vec![1, 1, h, w], rank)?)?;
        let counts = pixel_counts(self.steps, h * w);
        let fill = match self.fill {
            Fill::Zero => vec![0.0; c],
            Fill::Black => (0..c).map(|i| pre.normalize(i, 0.0)).collect(),
        };
        // [1, c, 1, 1]: the blend below broadcasts it over the pixels
        let fill = be.upload(&Tensor::new(vec![1, c, 1, 1], fill)?)?;
        let r = (self.blur_sigma.ceil() as usize).clamp(1, 64);
        let blurred = GaussianBlur::new(be, c, h, w, self.blur_sigma, r)?.apply(be, x)?;
        // each point's image: `from` where the pixel's rank is past the count, `to` before it;
        // (1 − mask)·from + mask·to, exact at both ends
        let curve = |from: &B::T, to: &B::T| -> Result<Vec<f64>> {
            let mut probs = Vec::with_capacity(counts.len());
            for chunk in counts.chunks(self.batch_size) {
                let thr = be.upload(&Tensor::new(vec![chunk.len(), 1, 1, 1], chunk.iter().map(|&n| n as f32).collect())?)?;
                let mask = be.unary(&be.binary(&thr, &rank, Binary::Sub)?, Unary::Step)?;
                let keep = be.unary(&mask, Unary::Affine(-1.0, 1.0))?;
                let imgs = be.binary(&be.binary(&keep, from, Binary::Mul)?, &be.binary(&mask, to, Binary::Mul)?, Binary::Add)?;
                probs.extend(class_probabilities(eng, imgs, class)?);
            }
            Ok(probs)
        };
        let deletion = curve(x, &fill)?;
        let insertion = curve(&blurred, x)?;
        let fractions: Vec<f64> = counts.iter().map(|&n| n as f64 / (h * w) as f64).collect();
        Ok(Curves { deletion_auc: trapezoid(&fractions, &deletion), insertion_auc: trapezoid(&fractions, &insertion), fractions, deletion, insertion })
    }
}
