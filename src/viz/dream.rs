//! DeepDream (Mordvintsev, Olah, Tyka 2015): gradient ascent on the image to amplify what a layer
//! already sees, maximising ½‖A_l(x)‖², over several octaves (scales), with random jitter (a
//! circular shift before each step, undone after), gradient normalisation by its mean absolute
//! value (per image), and clipping to the valid pixel range.
//!
//! The objective is a value ([`Objective`]): a weighted sum of ½‖A‖² terms over layers,
//! composable as `Objective::layer(a) + Objective::layer(b) * 0.5`, so activation maximisation
//! can grow from it. Randomness comes from an explicit seed.

use std::ops::{Add, Mul};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::graph::NodeId;
use crate::imageio::{upsample_bilinear, Preprocess};
use crate::model::Model;
use crate::tensor::Tensor;

/// Σ weight · ½‖A_layer‖² (summed over the batch item).
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    pub terms: Vec<(NodeId, f32)>,
}

impl Objective {
    pub fn layer(layer: NodeId) -> Self {
        Objective { terms: vec![(layer, 1.0)] }
    }
    fn deepest(&self) -> NodeId {
        self.terms.iter().map(|t| t.0).max().unwrap_or(0)
    }
    /// Value per batch item and the gradient seeds (d objective / d A = weight · A).
    fn seeds(&self, acts: &crate::graph::exec::Activations) -> (Vec<f32>, Vec<(NodeId, Tensor)>) {
        let mut value = vec![0.0f32; acts.shapes[0][0]];
        let mut seeds = vec![];
        for &(id, wt) in &self.terms {
            let a = acts.get(id).expect("forward reached the layer");
            for (i, v) in value.iter_mut().enumerate() {
                *v += wt * 0.5 * a.item(i).iter().map(|x| x * x).sum::<f32>();
            }
            let mut s = a.clone();
            s.data.iter_mut().for_each(|x| *x *= wt);
            seeds.push((id, s));
        }
        (value, seeds)
    }
}

impl Add for Objective {
    type Output = Objective;
    fn add(mut self, rhs: Objective) -> Objective {
        self.terms.extend(rhs.terms);
        self
    }
}

impl Mul<f32> for Objective {
    type Output = Objective;
    fn mul(mut self, k: f32) -> Objective {
        self.terms.iter_mut().for_each(|t| t.1 *= k);
        self
    }
}

#[derive(Clone, Debug)]
pub struct DeepDream {
    pub objective: Objective,
    /// number of scales, smallest first; each is `octave_scale` times larger than the previous
    pub octaves: usize,
    pub octave_scale: f32,
    /// gradient-ascent steps per octave
    pub steps: usize,
    /// step size, in units of the normalised input, applied to g / mean|g|
    pub lr: f32,
    /// maximum circular shift in pixels, drawn uniformly in [-jitter, jitter] per step and axis
    pub jitter: usize,
    pub seed: u64,
}

impl DeepDream {
    /// The defaults of the classic notebook: 4 octaves ×1.4, 10 steps, jitter 32.
    pub fn new(objective: Objective) -> Self {
        DeepDream { objective, octaves: 4, octave_scale: 1.4, steps: 10, lr: 0.02, jitter: 32, seed: 0 }
    }

    /// One gradient-ascent step on `img` (normalised NCHW). Returns the objective per item
    /// before the step.
    pub fn step(&self, model: &Model, be: &dyn Backend, img: &mut Tensor, pre: &Preprocess, rng: &mut u64) -> Result<Vec<f32>> {
        let (_, _, h, w) = img.nchw();
        let (dy, dx) = (jitter(rng, self.jitter, h), jitter(rng, self.jitter, w));
        let shifted = roll(img, dy as isize, dx as isize);
        let acts = model.forward(be, shifted, self.objective.deepest())?;
        let (value, seeds) = self.objective.seeds(&acts);
        let g = model.backward(be, &acts, seeds, &[0])?.remove(0);
        let g = roll(&g, -(dy as isize), -(dx as isize));
        let n = img.shape[0];
        let per = img.numel() / n;
        for b in 0..n {
            let gb = &g.data[b * per..(b + 1) * per];
            let scale = self.lr / (gb.iter().map(|v| v.abs()).sum::<f32>() / per as f32 + 1e-8);
            let xb = img.item_mut(b);
            for (x, gv) in xb.iter_mut().zip(gb) {
                *x += scale * gv;
            }
        }
        clip(img, pre);
        Ok(value)
    }

    /// Dream on a preprocessed batch; returns the dreamed batch (same shape, normalised).
    /// `progress` is called after every step.
    pub fn run(&self, model: &Model, be: &dyn Backend, x: &Tensor, pre: &Preprocess, progress: &mut dyn FnMut()) -> Result<Tensor> {
        if self.octaves == 0 || self.steps == 0 || self.octave_scale < 1.0 {
            return Err(Error::InvalidArgument("DeepDream needs octaves >= 1, steps >= 1 and an octave scale >= 1".into()));
        }
        let (_, _, h, w) = x.nchw();
        let mut rng = self.seed ^ 0x9E37_79B9_7F4A_7C15;
        // octave sizes, largest (the input) first; skip octaves too small for the network
        let sizes: Vec<(usize, usize)> = (0..self.octaves)
            .map(|i| {
                let s = self.octave_scale.powi(i as i32);
                (((h as f32) / s).round() as usize, ((w as f32) / s).round() as usize)
            })
            .filter(|&(a, b)| a.min(b) >= 32 || (a, b) == (h, w))
            .collect();
        let bases: Vec<Tensor> = sizes.iter().map(|&(a, b)| resize(x, a, b)).collect();
        let mut detail = Tensor::zeros(&bases[bases.len() - 1].shape);
        let mut img = x.clone();
        for base in bases.iter().rev() {
            let (_, _, bh, bw) = base.nchw();
            let d = resize(&detail, bh, bw);
            img = base.clone();
            img.add_assign(&d);
            for _ in 0..self.steps {
                self.step(model, be, &mut img, pre, &mut rng)?;
                progress();
            }
            detail = img.clone();
            for (v, b) in detail.data.iter_mut().zip(&base.data) {
                *v -= b;
            }
        }
        Ok(img)
    }

    /// Total number of steps `run` makes (for progress bars).
    pub fn total_steps(&self, h: usize, w: usize) -> usize {
        let oct = (0..self.octaves)
            .filter(|&i| {
                let s = self.octave_scale.powi(i as i32);
                i == 0 || ((h as f32 / s).round() as usize).min((w as f32 / s).round() as usize) >= 32
            })
            .count();
        oct * self.steps
    }
}

fn next(rng: &mut u64) -> u64 {
    *rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn jitter(rng: &mut u64, j: usize, size: usize) -> isize {
    let j = j.min(size.saturating_sub(1));
    (next(rng) % (2 * j as u64 + 1)) as isize - j as isize
}

/// Circular shift of every plane by (dy, dx).
fn roll(x: &Tensor, dy: isize, dx: isize) -> Tensor {
    let (n, c, h, w) = x.nchw();
    let mut out = Tensor::zeros(&x.shape);
    for p in 0..n * c {
        let src = &x.data[p * h * w..(p + 1) * h * w];
        let dst = &mut out.data[p * h * w..(p + 1) * h * w];
        for i in 0..h {
            let si = (i as isize - dy).rem_euclid(h as isize) as usize;
            for j in 0..w {
                let sj = (j as isize - dx).rem_euclid(w as isize) as usize;
                dst[i * w + j] = src[si * w + sj];
            }
        }
    }
    out
}

fn resize(x: &Tensor, oh: usize, ow: usize) -> Tensor {
    let (n, c, h, w) = x.nchw();
    if (h, w) == (oh, ow) {
        return x.clone();
    }
    let mut data = Vec::with_capacity(n * c * oh * ow);
    for p in 0..n * c {
        data.extend(upsample_bilinear(&x.data[p * h * w..(p + 1) * h * w], h, w, oh, ow));
    }
    Tensor { shape: vec![n, c, oh, ow], data }
}

/// Keep every pixel inside the range that a [0, 1] image maps to.
fn clip(x: &mut Tensor, pre: &Preprocess) {
    let (n, c, h, w) = x.nchw();
    for b in 0..n {
        for ch in 0..c {
            let (m, s) = (pre.mean[ch.min(2)], pre.std[ch.min(2)]);
            let (lo, hi) = ((0.0 - m) / s, (1.0 - m) / s);
            let off = (b * c + ch) * h * w;
            x.data[off..off + h * w].iter_mut().for_each(|v| *v = v.clamp(lo, hi));
        }
    }
}
