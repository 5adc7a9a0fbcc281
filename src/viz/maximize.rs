//! Activation maximisation: the picture that most excites a target, found by gradient ascent on
//! the picture itself. For a class this is Simonyan, Vedaldi, Zisserman 2014 (§2, "class model
//! visualisation": argmax_I S_c(I) − λ‖I‖², S_c the class's pre-softmax score, started from the
//! zero — mean — image); for a channel or one activation of a layer it is Erhan et al. 2009's
//! activation maximisation, as lucid / lucent's `channel` and `neuron` objectives. The
//! regularisers are those of Yosinski et al. 2015 ("Understanding Neural Networks Through Deep
//! Visualization"): L2 decay, a Gaussian blur every few steps, random jitter (a circular shift
//! before each step, undone after), clipping of pixels with a small norm or a small
//! contribution (below a percentile of the picture's, set to 0 — the mean colour — every step),
//! and clipping to the valid pixel range every step.
//!
//! The step is DeepDream's: x += lr · g / mean|g| per item, with g the gradient of the target's
//! score minus 2λx (the L2 term's), so `lr` is in units of the normalised input whatever the
//! scale of the score. Everything runs on the backend: one forward and one backward pass per
//! step, the seeds built on the device ([`super::target`]), no host round trip until the end.
//! A batch optimises one picture per target at once.

use super::dream::{jitter, pixel_range};
use super::ops::{self, GaussianBlur};
use super::target::{self, Target};
use crate::backend::{Backend, Binary, Random, Reduce, Unary};
use crate::engine::{Engine, Rule};
use crate::error::{Error, Result};
use crate::imageio::Preprocess;
use crate::tensor::Tensor;

/// The schedule and regularisers of [`Maximize::run`]: activation maximisation (Simonyan,
/// Vedaldi, Zisserman 2014 §2 for a class; Erhan et al. 2009 for a unit) with the regularisers
/// of Yosinski et al. 2015, "Understanding Neural Networks Through Deep Visualization" (module
/// documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Maximize {
    /// gradient-ascent steps
    pub steps: usize,
    /// step size, in units of the normalised input, applied to g / mean|g|
    pub lr: f32,
    /// λ of the −λ‖x‖² term (on the normalised input)
    pub l2: f32,
    /// blur the picture with a Gaussian of σ = `blur_sigma` pixels every `blur_every` steps
    /// (0: never)
    pub blur_every: usize,
    /// the blur's standard deviation in pixels
    pub blur_sigma: f32,
    /// maximum circular shift in pixels, drawn per step and axis in [-jitter, jitter]
    pub jitter: usize,
    /// standard deviation of the starting noise around the mean image (normalised units; 0:
    /// Simonyan et al.'s zero image)
    pub init_noise: f32,
    /// Yosinski et al.'s clipping of pixels with a small norm: every step, the pixels whose
    /// norm over the channels is below this percentile of the picture's are set to 0
    /// (the mean colour); 0: never
    pub norm_pct: f32,
    /// Yosinski et al.'s clipping of pixels with a small contribution: every step, the pixels
    /// whose |Σ_c x·∂S/∂x| (the first-order change of the score were the pixel set to 0) is
    /// below this percentile of the picture's are set to 0; 0: never
    pub contribution_pct: f32,
    /// the random start's and the jitter's seed
    pub seed: u64,
}

impl Default for Maximize {
    /// 200 steps of 0.05 with λ = 1e-4, a σ = 0.5 px blur every 4 steps, jitter 8, from the mean
    /// image with noise of σ = 0.1: a recognisable class picture on an ImageNet CNN.
    fn default() -> Self {
        Maximize { steps: 200, lr: 0.05, l2: 1e-4, blur_every: 4, blur_sigma: 0.5, jitter: 8, init_noise: 0.1, seed: 0, norm_pct: 0.0, contribution_pct: 0.0 }
    }
}

impl Maximize {
    fn check(&self) -> Result<()> {
        // written so that NaN fails too
        let ok = |v: f32| v >= 0.0 && v.is_finite();
        let pct = |v: f32| (0.0..100.0).contains(&v);
        if !pct(self.norm_pct) || !pct(self.contribution_pct) {
            return Err(Error::InvalidArgument(format!(
                "the clipping percentiles must be in [0, 100) (got {} and {})",
                self.norm_pct, self.contribution_pct
            )));
        }
        if self.steps == 0 || !(self.lr > 0.0 && self.lr.is_finite()) || !ok(self.l2) || !ok(self.init_noise) || !ok(self.blur_sigma) {
            return Err(Error::InvalidArgument(format!(
                "activation maximisation needs steps >= 1, a finite step size > 0 and finite, non-negative l2, noise and blur (got {}, {}, {}, {}, {})",
                self.steps, self.lr, self.l2, self.init_noise, self.blur_sigma
            )));
        }
        Ok(())
    }

    /// One picture `[n, c, h, w]` (normalised, as the model's input) per target, each
    /// maximising its target's score; `progress` is called after every step.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, targets: &[Target], size: [usize; 2], pre: &Preprocess, progress: &mut dyn FnMut()) -> Result<Tensor> {
        self.check()?;
        if targets.is_empty() {
            return Err(Error::InvalidArgument("activation maximisation needs at least one target".into()));
        }
        let be = &eng.be;
        let model = eng.model();
        let c = 3;
        let [h, w] = size;
        if h < 8 || w < 8 {
            return Err(Error::InvalidArgument(format!("activation maximisation needs a picture of at least 8x8 pixels, not {h}x{w}")));
        }
        let shape = [targets.len(), c, h, w];
        let range = pixel_range(be, pre, c)?;
        let mut img = be.unary(&be.random(&shape, self.seed, Random::Normal)?, Unary::Affine(self.init_noise, 0.0))?;
        img = be.binary(&be.binary(&img, &range.0, Binary::Max)?, &range.1, Binary::Min)?;
        let blur = if self.blur_every > 0 && self.blur_sigma > 0.0 { Some(GaussianBlur::<B>::new(be, c, h, w, self.blur_sigma, ((3.0 * self.blur_sigma).ceil() as usize).clamp(1, h.min(w) / 2))?) } else { None };
        let mut rng = self.seed ^ 0xD1B5_4A32_D192_ED03;
        for step in 0..self.steps {
            let (dy, dx) = (jitter(&mut rng, self.jitter, h), jitter(&mut rng, self.jitter, w));
            let shifted = be.roll(&img, dy, dx)?;
            let t = target::forward(eng, &shifted, Some(targets), &[])?;
            let g = eng.backward(&t.acts, t.seeds, &[model.input()], Rule::Gradient)?.remove(0);
            let g = be.roll(&g, -dy, -dx)?;
            // the score's own gradient, for the contribution of each pixel after the step
            let score_gradient = (self.contribution_pct > 0.0).then(|| g.clone());
            // d/dx (S − λ‖x‖²) = g − 2λx
            let g = if self.l2 > 0.0 { be.binary(&g, &be.unary(&img, Unary::Affine(-2.0 * self.l2, 0.0))?, Binary::Add)? } else { g };
            let m = ops::per_item(be, &g, Some(Unary::Abs), Reduce::Mean)?;
            let inv = be.unary(&be.unary(&m, Unary::Affine(1.0, 1e-8))?, Unary::Recip)?;
            let moved = be.binary(&img, &be.binary(&be.unary(&g, Unary::Affine(self.lr, 0.0))?, &inv, Binary::Mul)?, Binary::Add)?;
            img = match &blur {
                Some(b) if (step + 1) % self.blur_every == 0 => b.apply(be, &moved)?,
                _ => moved,
            };
            if self.norm_pct > 0.0 {
                let norm = be.unary(&be.reduce(&be.unary(&img, Unary::Square)?, Reduce::Sum, &[1])?, Unary::Sqrt)?;
                img = keep_above(be, &img, &norm, self.norm_pct)?;
            }
            if let Some(gs) = &score_gradient {
                // as the deep-visualization toolbox does it: of the updated picture, with the
                // gradient of this step, so a pixel clipped before can come back
                let c = be.unary(&be.reduce(&be.binary(&img, gs, Binary::Mul)?, Reduce::Sum, &[1])?, Unary::Abs)?;
                img = keep_above(be, &img, &c, self.contribution_pct)?;
            }
            img = be.binary(&be.binary(&img, &range.0, Binary::Max)?, &range.1, Binary::Min)?;
            progress();
        }
        let y = eng.download(&img)?;
        if let Some(i) = y.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!("activation maximisation diverged: value {} at index {i} (try a smaller --lr)", y.data[i])));
        }
        Ok(y)
    }

    /// Each picture's target score (the pre-softmax class score, or the channel's mean /
    /// neuron's value), as the optimisation sees it.
    pub fn scores<B: Backend>(eng: &Engine<B>, x: &Tensor, targets: &[Target]) -> Result<Vec<f32>> {
        let t = target::forward(eng, &eng.upload(x)?, Some(targets), &[])?;
        Ok(eng.download(&target::score(eng, &t.acts, &t.seeds)?)?.data)
    }
}

/// `x` `[n, c, h, w]` with the pixels whose `v` (`[n, 1, h, w]`) is below the `pct`-th
/// percentile of its item's set to 0, as the deep-visualization toolbox does it (`v <
/// np.percentile(v, pct)`: exact, linear interpolation; on the host, one small download a
/// step).
fn keep_above<B: Backend>(be: &B, x: &B::T, v: &B::T, pct: f32) -> Result<B::T> {
    let host = be.download(v)?;
    let n = host.shape[0];
    let thresholds: Vec<f32> = (0..n)
        .map(|i| {
            let mut s: Vec<f32> = host.item(i).to_vec();
            s.sort_by(f32::total_cmp);
            let at = pct as f64 / 100.0 * (s.len() - 1) as f64;
            let (lo, f) = (at.floor() as usize, at - at.floor());
            (s[lo] as f64 + f * (s[(lo + 1).min(s.len() - 1)] as f64 - s[lo] as f64)) as f32
        })
        .collect();
    let t = be.upload(&Tensor::new(vec![n, 1, 1, 1], thresholds)?)?;
    // 1 − step(t − v): 0 where v < t
    let clipped = be.unary(&be.binary(&t, v, Binary::Sub)?, Unary::Step)?;
    be.binary(x, &be.unary(&clipped, Unary::Affine(-1.0, 1.0))?, Binary::Mul)
}
