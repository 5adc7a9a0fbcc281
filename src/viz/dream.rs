//! DeepDream (Mordvintsev, Olah, Tyka 2015): gradient ascent on the image to amplify what a layer
//! already sees, maximising ½‖A_l(x)‖², over several octaves (scales), with random jitter (a
//! circular shift before each step, undone after), gradient normalisation by its mean absolute
//! value (per image), and clipping to the valid pixel range.
//!
//! The objective is a value ([`Objective`]): a weighted sum of terms over layers, composable as
//! `Objective::layer(a) + Objective::layer(b) * 0.5`; a term is ½‖A‖² or the notebook's guided
//! objective ([`Term::Guide`]: dream towards what a guide image shows at that layer).
//! Randomness comes from an explicit seed.

use std::ops::{Add, Mul};
use std::sync::Arc;

use super::ops::{self, POINTWISE};
use crate::backend::{Backend, Binary, Reduce, Role, Unary};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::engine::{Activations, Rule};
use crate::model::Layer;
use crate::imageio::Preprocess;
use crate::tensor::Tensor;

/// Gradient seeds: d objective / d A at each objective layer.
type Seeds<B> = Vec<(Layer, <B as Backend>::T)>;

/// What an objective term computes from a layer's output A `[n, c, h, w]` (per batch item).
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    /// ½‖A‖²: amplify whatever the layer sees (d/dA = A)
    L2,
    /// Σ over positions p of max_j ⟨A_p, G_j⟩, G the guide image's features `[c, m]` at the
    /// same layer (its m positions): each position is pulled towards the guide's feature vector
    /// it already resembles most (d/dA_p = G_j*(p)), the classic notebook's `objective_guide`
    Guide(Arc<Tensor>),
}

/// Σ weight · term(A_layer), summed over each batch item.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    /// (layer, term, weight) triples
    pub terms: Vec<(Layer, Term, f32)>,
}

/// A term with what it needs on the backend (the guide's two 1x1 convolutions: G's columns
/// as filters for the dot products, G for the seeds).
enum Prepared<B: Backend> {
    L2,
    Guide { dots: B::W, pick: B::W, m: usize },
}

impl Objective {
    /// ½‖A‖² at `layer`.
    pub fn layer(layer: Layer) -> Self {
        Objective { terms: vec![(layer, Term::L2, 1.0)] }
    }
    /// The guided objective at `layer` towards `features` `[c, m]` (or `[1, c, h, w]`, as the
    /// guide image's forward pass gives them).
    pub fn guide(layer: Layer, features: &Tensor) -> Result<Self> {
        let g = match features.shape[..] {
            [c, m] => features.clone().reshape(&[c, m])?,
            [1, c, h, w] => features.clone().reshape(&[c, h * w])?,
            _ => return Err(Error::shape("the guide's features", "[c, m] or [1, c, h, w]", &features.shape)),
        };
        if let Some(i) = g.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!("the guide's features hold {} at index {i}", g.data[i])));
        }
        Ok(Objective { terms: vec![(layer, Term::Guide(Arc::new(g)), 1.0)] })
    }
    /// The deepest layer of the objective (where the forward pass can stop).
    fn deepest(&self) -> Option<Layer> {
        self.terms.iter().map(|t| t.0).max_by_key(|l| l.node())
    }
    fn layers(&self) -> Vec<Layer> {
        self.terms.iter().map(|t| t.0).collect()
    }
    /// The terms made ready on `be` (once per run).
    fn prepare<B: Backend>(&self, be: &B) -> Result<Vec<Prepared<B>>> {
        self.terms
            .iter()
            .map(|(_, term, _)| {
                Ok(match term {
                    Term::L2 => Prepared::L2,
                    Term::Guide(g) => {
                        let (c, m) = (g.shape[0], g.shape[1]);
                        let gt: Vec<f32> = (0..m).flat_map(|j| (0..c).map(move |k| g.data[k * m + j])).collect();
                        let dots = be.weight(&Arc::new(Tensor::new(vec![m, c, 1, 1], gt)?), Role::ConvWeight)?;
                        let pick = be.weight(&Arc::new(g.as_ref().clone().reshape(&[c, m, 1, 1])?), Role::ConvWeight)?;
                        Prepared::Guide { dots, pick, m }
                    }
                })
            })
            .collect()
    }
    /// ⟨A_p, G_j⟩ for every position p and guide position j: `[n, m, h, w]`.
    fn guide_dots<B: Backend>(&self, be: &B, a: &B::T, dots: &B::W, id: Layer) -> Result<B::T> {
        let (s, c) = (be.shape(a), self.guide_channels(id));
        if s.len() != 4 || Some(s[1]) != c {
            return Err(Error::shape("the guided layer's output", format!("[n, {}, h, w] (the guide's features)", c.unwrap_or(0)), s));
        }
        be.conv2d(a, dots, None, &POINTWISE)
    }
    fn guide_channels(&self, id: Layer) -> Option<usize> {
        self.terms.iter().find_map(|(l, t, _)| match t {
            Term::Guide(g) if *l == id => Some(g.shape[0]),
            _ => None,
        })
    }
    /// The objective per batch item.
    fn value<B: Backend>(&self, be: &B, acts: &Activations<B>, prepared: &[Prepared<B>]) -> Result<Vec<f32>> {
        let mut value = vec![0.0f32; acts.shapes[0][0]];
        for ((id, _, wt), p) in self.terms.iter().zip(prepared) {
            let (id, wt) = (*id, *wt);
            let a = acts.get(id).expect("forward reached the layer");
            let per_item = match p {
                Prepared::L2 => be.unary(&ops::per_item(be, a, Some(Unary::Square), Reduce::Sum)?, Unary::Affine(0.5, 0.0))?,
                Prepared::Guide { dots, .. } => ops::per_item(be, &be.reduce(&self.guide_dots(be, a, dots, id)?, Reduce::Max, &[1])?, None, Reduce::Sum)?,
            };
            for (v, h) in value.iter_mut().zip(ops::per_item_values(be, &per_item)?) {
                *v += wt * h;
            }
        }
        Ok(value)
    }
    /// The gradient seeds: d objective / d A (weight · A; guided: weight · G_j*(p) at p).
    fn seeds<B: Backend>(&self, be: &B, acts: &Activations<B>, prepared: &[Prepared<B>]) -> Result<Seeds<B>> {
        self.terms
            .iter()
            .zip(prepared)
            .map(|(&(id, _, wt), p)| {
                let a = acts.get(id).expect("forward reached the layer");
                let d = match p {
                    Prepared::L2 => a.clone(),
                    Prepared::Guide { dots, pick, m } => {
                        let best = be.reduce(&self.guide_dots(be, a, dots, id)?, Reduce::ArgMax, &[1])?;
                        let one_hot = ops::indicator(be, &best, 1, *m)?;
                        be.conv2d(&one_hot, pick, None, &POINTWISE)?
                    }
                };
                Ok((id, if wt == 1.0 { d } else { be.unary(&d, Unary::Affine(wt, 0.0))? }))
            })
            .collect()
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
        self.terms.iter_mut().for_each(|t| t.2 *= k);
        self
    }
}

#[derive(Clone, Debug)]
/// DeepDream (Mordvintsev, Olah, Tyka 2015, "Inceptionism: Going Deeper into Neural
/// Networks"): gradient ascent on the image to amplify what `objective` already sees, over
/// `octaves` scales, with random jitter, the gradient normalised by its mean absolute value per
/// image, and the pixels clipped to their valid range. Randomness from `seed`.
pub struct DeepDream {
    /// what the gradient ascent maximises
    pub objective: Objective,
    /// number of scales, smallest first; each is `octave_scale` times larger than the previous
    pub octaves: usize,
    /// the ratio between neighbouring octaves' sizes (> 1)
    pub octave_scale: f32,
    /// gradient-ascent steps per octave
    pub steps: usize,
    /// step size, in units of the normalised input, applied to g / mean|g|
    pub lr: f32,
    /// maximum circular shift in pixels, drawn uniformly in [-jitter, jitter] per step and axis
    pub jitter: usize,
    /// the jitter's seed (a run is deterministic)
    pub seed: u64,
    /// 0: each octave's picture through the network whole; N (>= 32): pictures larger than N
    /// pixels a side go through in tiles of at most N (the notebook's `calc_grad_tiled`, so
    /// memory follows the tile, not the picture), the shift per step then up to N (none with
    /// jitter 0)
    pub tile: usize,
}

impl DeepDream {
    /// The defaults of the classic notebook: 4 octaves ×1.4, 10 steps, jitter 32.
    pub fn new(objective: Objective) -> Self {
        DeepDream { objective, octaves: 4, octave_scale: 1.4, steps: 10, lr: 0.02, jitter: 32, seed: 0, tile: 0 }
    }

    /// One gradient-ascent step on `img` (normalised NCHW, on the backend). Returns the
    /// objective per item before the step.
    pub fn step<B: Backend>(&self, eng: &Engine<B>, img: &mut B::T, pre: &Preprocess, rng: &mut u64) -> Result<Vec<f32>> {
        let range = pixel_range(&eng.be, pre, eng.be.shape(img)[1])?;
        let prepared = self.objective.prepare(&eng.be)?;
        Ok(self.ascend(eng, img, &range, &prepared, rng, true)?.unwrap_or_default())
    }

    /// One step as [`DeepDream::run`] makes it (no objective value computed), with the pixel
    /// range made once by [`pixel_range`].
    pub fn advance<B: Backend>(&self, eng: &Engine<B>, img: &mut B::T, range: &(B::T, B::T), rng: &mut u64) -> Result<()> {
        let prepared = self.objective.prepare(&eng.be)?;
        self.ascend(eng, img, range, &prepared, rng, false).map(|_| ())
    }

    /// The step itself; the objective's value (a reduction and a host round trip per term) only
    /// when asked for — `run` does not need it.
    fn ascend<B: Backend>(&self, eng: &Engine<B>, img: &mut B::T, range: &(B::T, B::T), prepared: &[Prepared<B>], rng: &mut u64, value: bool) -> Result<Option<Vec<f32>>> {
        let be = &eng.be;
        let (h, w) = (be.shape(img)[2], be.shape(img)[3]);
        if self.tile != 0 && self.tile < 32 {
            return Err(Error::InvalidArgument(format!("DeepDream's tiles must be at least 32 pixels a side (or 0: no tiles), not {}", self.tile)));
        }
        let tiled = self.tile > 0 && (h > self.tile || w > self.tile);
        // tiled: the notebook's random shift of up to a tile, so the seams move every step (no
        // shift at all with jitter 0)
        let j = if tiled && self.jitter > 0 { self.jitter.max(self.tile) } else { self.jitter };
        let (dy, dx) = (jitter(rng, j, h), jitter(rng, j, w));
        let shifted = be.roll(img, dy, dx)?;
        let (value, g) = if tiled { self.tiled_gradient(eng, &shifted, prepared, value)? } else { self.gradient(eng, shifted, prepared, value)? };
        let g = be.roll(&g, -dy, -dx)?;
        // img += lr · g / (mean |g| + 1e-8), per item, then clamp to the valid pixel range
        let moved = ops::normalized_step(be, img, &g, self.lr)?;
        *img = be.binary(&be.binary(&moved, &range.0, Binary::Max)?, &range.1, Binary::Min)?;
        Ok(value)
    }

    /// The objective's gradient at the pixels of `x` (and its value per item when asked).
    fn gradient<B: Backend>(&self, eng: &Engine<B>, x: B::T, prepared: &[Prepared<B>], value: bool) -> Result<(Option<Vec<f32>>, B::T)> {
        let be = &eng.be;
        let deepest = self.objective.deepest().ok_or_else(|| Error::InvalidArgument("DeepDream needs an objective with at least one layer".into()))?;
        let acts = eng.forward(x, deepest, &self.objective.layers())?;
        let value = if value { Some(self.objective.value(be, &acts, prepared)?) } else { None };
        let seeds = self.objective.seeds(be, &acts, prepared)?;
        Ok((value, eng.backward(&acts, seeds, &[eng.model().input()], Rule::Gradient)?.remove(0)))
    }

    /// [`DeepDream::gradient`] tile by tile (the objective of each tile on its own, as the
    /// notebook's `calc_grad_tiled`): the picture cut into the fewest equal tiles of at most
    /// `tile` pixels a side, each tile's gradient pasted into place; the values summed.
    fn tiled_gradient<B: Backend>(&self, eng: &Engine<B>, x: &B::T, prepared: &[Prepared<B>], value: bool) -> Result<(Option<Vec<f32>>, B::T)> {
        let be = &eng.be;
        let s = be.shape(x).to_vec();
        let mut g = be.zeros(&s)?;
        let mut total = value.then(|| vec![0f32; s[0]]);
        for (y0, th) in tiles(s[2], self.tile) {
            for (x0, tw) in tiles(s[3], self.tile) {
                let (v, gt) = self.gradient(eng, be.crop(x, y0, x0, th, tw)?, prepared, value)?;
                be.paste(&mut g, &gt, y0, x0)?;
                if let (Some(t), Some(v)) = (&mut total, v) {
                    t.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                }
            }
        }
        Ok((total, g))
    }

    /// Dream on a preprocessed batch; returns the dreamed batch (same shape, normalised).
    /// `progress` is called after every step.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, x: &Tensor, pre: &Preprocess, progress: &mut dyn FnMut()) -> Result<Tensor> {
        // written so that NaN fails too
        if self.octaves == 0 || self.steps == 0 || !(self.octave_scale >= 1.0 && self.octave_scale.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "DeepDream needs octaves >= 1, steps >= 1 and a finite octave scale >= 1 (got {}, {}, {})",
                self.octaves, self.steps, self.octave_scale
            )));
        }
        if !self.lr.is_finite() {
            return Err(Error::InvalidArgument(format!("the DeepDream step size {} is not a finite number", self.lr)));
        }
        let be = &eng.be;
        let [_, c, h, w] = x.shape[..] else {
            return Err(Error::shape("DeepDream input", "[n, c, h, w]", &x.shape));
        };
        let mut rng = self.seed ^ 0x9E37_79B9_7F4A_7C15;
        let range = pixel_range(be, pre, c)?;
        let prepared = self.objective.prepare(be)?;
        let x = eng.upload(x)?;
        // octave bases, largest (the input) first
        let bases: Vec<B::T> =
            self.octave_sizes(h, w).into_iter().map(|(a, b)| be.resize(&x, a, b)).collect::<Result<_>>()?;
        let mut detail = be.zeros(be.shape(&bases[bases.len() - 1]))?;
        let mut img = x.clone();
        for base in bases.iter().rev() {
            let (bh, bw) = (be.shape(base)[2], be.shape(base)[3]);
            img = be.add(base, &be.resize(&detail, bh, bw)?)?;
            for _ in 0..self.steps {
                self.ascend(eng, &mut img, &range, &prepared, &mut rng, false)?;
                progress();
            }
            detail = be.binary(&img, base, Binary::Sub)?;
        }
        eng.download(&img)
    }

    /// The sizes of the octaves, largest (the input) first; octaves smaller than 32 pixels on a
    /// side are skipped, since the network sees nothing there.
    fn octave_sizes(&self, h: usize, w: usize) -> Vec<(usize, usize)> {
        (0..self.octaves)
            .map(|i| {
                let s = self.octave_scale.powi(i as i32);
                (((h as f32) / s).round() as usize, ((w as f32) / s).round() as usize)
            })
            .enumerate()
            .filter(|&(i, (a, b))| i == 0 || a.min(b) >= 32)
            .map(|(_, s)| s)
            .collect()
    }

    /// Total number of steps `run` makes (for progress bars).
    pub fn total_steps(&self, h: usize, w: usize) -> usize {
        self.octave_sizes(h, w).len() * self.steps
    }
}

pub(super) fn next(rng: &mut u64) -> u64 {
    *rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in [0, 1) from the SplitMix64 stream `rng` (53 bits).
pub(super) fn unit(rng: &mut u64) -> f64 {
    (next(rng) >> 11) as f64 / (1u64 << 53) as f64
}

/// A shift in [-j, j] (at most size − 1) from the SplitMix64 stream `rng`.
pub(super) fn jitter(rng: &mut u64, j: usize, size: usize) -> isize {
    let j = j.min(size.saturating_sub(1));
    (next(rng) % (2 * j as u64 + 1)) as isize - j as isize
}

/// The normalised values that pixels 0 and 1 map to, per channel, as `[1, c, 1, 1]` tensors
/// (the clamp of every step).
pub fn pixel_range<B: Backend>(be: &B, pre: &Preprocess, c: usize) -> Result<(B::T, B::T)> {
    let (lo, hi): (Vec<f32>, Vec<f32>) =
        (0..c).map(|ch| ((0.0 - pre.mean[ch.min(2)]) / pre.std[ch.min(2)], (1.0 - pre.mean[ch.min(2)]) / pre.std[ch.min(2)])).unzip();
    Ok((be.upload(&Tensor::new(vec![1, c, 1, 1], lo)?)?, be.upload(&Tensor::new(vec![1, c, 1, 1], hi)?)?))
}

/// One step of the DeepDream notebook's zoom loop: each plane of `x` `[n, c, h, w]` zoomed into
/// its centre by 1 / (1 − s), bilinearly, as `scipy.ndimage.affine_transform(frame, [1−s, 1−s, 1],
/// [h·s/2, w·s/2, 0], order=1)`: output pixel (i, j) samples the input at ((1−s)·i + h·s/2,
/// (1−s)·j + w·s/2). `s` in [0, 0.5).
pub fn zoom(x: &Tensor, s: f32) -> Result<Tensor> {
    if !(0.0..0.5).contains(&s) {
        return Err(Error::InvalidArgument(format!("the zoom per frame must be in [0, 0.5), not {s}")));
    }
    let [n, c, h, w] = x.shape[..] else {
        return Err(Error::shape("the zoomed frame", "[n, c, h, w]", &x.shape));
    };
    let s = s as f64;
    // (index, weight of the next index) along one axis; the samples stay inside the plane
    let axis = |len: usize| -> Vec<(usize, f32)> {
        (0..len)
            .map(|i| {
                let p = (1.0 - s) * i as f64 + len as f64 * s / 2.0;
                let i0 = (p.floor() as usize).min(len - 1);
                (i0, if i0 + 1 < len { (p - i0 as f64) as f32 } else { 0.0 })
            })
            .collect()
    };
    let (ys, xs) = (axis(h), axis(w));
    let mut data = Vec::with_capacity(x.data.len());
    for plane in x.data.chunks_exact(h * w).take(n * c) {
        for &(y0, fy) in &ys {
            let y1 = (y0 + 1).min(h - 1);
            for &(x0, fx) in &xs {
                let x1 = (x0 + 1).min(w - 1);
                let at = |y: usize, x: usize| plane[y * w + x];
                let top = at(y0, x0) + fx * (at(y0, x1) - at(y0, x0));
                let bottom = at(y1, x0) + fx * (at(y1, x1) - at(y1, x0));
                data.push(top + fy * (bottom - top));
            }
        }
    }
    Tensor::new(x.shape.clone(), data)
}

/// The fewest equal tiles of at most `tile` covering `len`: (start, length) each, the first
/// `len % k` one longer.
pub(crate) fn tiles(len: usize, tile: usize) -> Vec<(usize, usize)> {
    let k = len.div_ceil(tile.max(1)).max(1);
    let (base, extra) = (len / k, len % k);
    let mut at = 0;
    (0..k)
        .map(|i| {
            let l = base + usize::from(i < extra);
            at += l;
            (at - l, l)
        })
        .collect()
}
