//! Activation maximisation: the picture that most excites a target, found by gradient ascent on
//! the picture itself. For a class this is Simonyan, Vedaldi, Zisserman 2014 (§2, "class model
//! visualisation": argmax_I S_c(I) − λ‖I‖², S_c the class's pre-softmax score, started from the
//! zero — mean — image); for a channel or one activation of a layer it is Erhan et al. 2009's
//! activation maximisation, as lucid / lucent's `channel` and `neuron` objectives. The
//! regularisers are those of Yosinski et al. 2015 ("Understanding Neural Networks Through Deep
//! Visualization"): L2 decay, a Gaussian blur every few steps, random jitter (a circular shift
//! before each step, undone after), clipping of pixels with a small norm or a small
//! contribution (below a percentile of the picture's, set to 0 — the mean colour — every step),
//! and clipping to the valid pixel range every step. The transforms are lucid / lucent's
//! (Olah et al. 2017, "Feature Visualization", transformation robustness): jitter, then a random
//! scale and a random rotation about the picture's centre, then a second, smaller jitter — one
//! bilinear warp per step ([`Backend::warp`], zeros outside: the mean colour, what lucid's
//! constant padding provides), its gradient taken back through the exact adjoint
//! ([`Backend::warp_backward`]).
//!
//! The step is DeepDream's: x += lr · g / mean|g| per item, with g the gradient of the target's
//! score minus 2λx (the L2 term's), so `lr` is in units of the normalised input whatever the
//! scale of the score. Everything runs on the backend: one forward and one backward pass per
//! step, the seeds built on the device ([`super::target`]), the random maps of every step
//! uploaded once before the first, the clipping percentiles reduced on the device
//! ([`Reduce::Percentile`]): no host round trip until the end.
//! A batch optimises one picture per target at once.
//!
//! What the step moves is a [`Param`]: the picture's pixels (the papers above), or lucid /
//! lucent's default, a spectrum that a fixed chain turns into the picture — inverse real 2-D
//! DFT with 1/f scaling, colour decorrelation, sigmoid, the model's normalisation
//! ([`super::fourier`]; Olah et al. 2017). With a spectrum, the regularisers that act on pixels
//! (blur, Yosinski's clippings, the clamp) have no pixels to act on and the sigmoid keeps the
//! picture valid; the L2 term, the jitter and the warps act on the picture the chain makes, and
//! the step's gradient goes back through the chain to the spectrum.

use super::dream::{jitter, next, pixel_range, unit};
use super::fourier::{Fourier, FourierImage};
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
    /// step size applied to g / mean|g|, in units of the normalised input (pixels) or of the
    /// spectrum ([`Param::Fourier`])
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
    /// lucid / lucent's `random_scale`: every step, each picture is zoomed about its centre by a
    /// factor drawn from this list (> 1 magnifies; the picture keeps its size, and what comes
    /// in at the borders is the mean colour); `[1]`: never
    pub scales: Vec<f32>,
    /// lucid / lucent's `random_rotate`: every step, each picture is turned about its centre by
    /// an angle drawn uniformly from [-rotate, rotate] degrees; 0: never. With a scale or a
    /// rotation, a second jitter of up to `jitter / 2` pixels follows them, as lucid's
    /// `standard_transforms` ends.
    pub rotate: f32,
    /// the random start's and the jitter's seed
    pub seed: u64,
    /// what the step moves: the pixels (default) or lucid's decorrelated Fourier spectrum
    pub param: Param,
}

/// What activation maximisation optimises ([`Maximize::param`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Param {
    /// the picture's pixels, in normalised units (Simonyan et al. 2014, Yosinski et al. 2015)
    Pixels,
    /// lucid / lucent's `to_valid_rgb(fft_image(shape, sd, decay_power), decorrelate)`: a
    /// spectrum per picture and channel, drawn from N(0, sd²), whose amplitudes are scaled by
    /// 1 / max(f, 1/max(h, w))^decay_power, transformed back to pixels, colour-decorrelated (or
    /// not), squashed by a sigmoid into the pixel range ([`super::fourier`]);
    /// `Fourier::default()` is lucid's
    Fourier(Fourier),
}

impl Default for Maximize {
    /// 200 steps of 0.05 with λ = 1e-4, a σ = 0.5 px blur every 4 steps, jitter 8, scales
    /// 0.95–1.05 and rotations up to 5°, from the mean image with noise of σ = 0.1: a
    /// recognisable class picture on an ImageNet CNN.
    fn default() -> Self {
        Maximize {
            steps: 200,
            lr: 0.05,
            l2: 1e-4,
            blur_every: 4,
            blur_sigma: 0.5,
            jitter: 8,
            init_noise: 0.1,
            seed: 0,
            norm_pct: 0.0,
            contribution_pct: 0.0,
            scales: DEFAULT_SCALES.to_vec(),
            rotate: 5.0,
            param: Param::Pixels,
        }
    }
}

/// The step size of [`Maximize::fourier`] (x += lr · g / mean|g| on the spectrum). The
/// 1/f scale (56 at the lowest frequencies, 0.89 on average at 224x224, lucid's magic 1/4
/// included) makes the low frequencies' gradients tens of times the mean |g|, so the step is
/// far smaller than lucent's Adam lr of 0.05 (Adam normalises each coordinate on its own):
/// on the default model's class 285 (200 steps, 224 px) 0.05 and above saturate the sigmoid
/// into flat black, white and primary colours, 0.02 is harsh, 0.01 gives lucid-like pictures
/// (score 53 against the pixel path's 24), 0.005 and 0.0025 are ever paler.
pub const FOURIER_LR: f32 = 0.01;

/// The zoom factors a step draws from by default: lucid's `random_scale` list in the
/// "Feature Visualization" article's range (lucent's `standard_transforms` uses 0.90–1.10 in
/// steps of 0.02).
pub const DEFAULT_SCALES: [f32; 5] = [1.0, 0.975, 1.025, 0.95, 1.05];

impl Maximize {
    /// The schedule for lucid's decorrelated Fourier parameterisation with lucid's settings
    /// (`Param::Fourier(Fourier::default())`): the default transforms and steps, a step of
    /// [`FOURIER_LR`] on the spectrum, no blur, no clipping, no L2 (lucent has none) and no
    /// pixel noise (the spectrum's `sd` is the start).
    pub fn fourier() -> Self {
        Maximize { param: Param::Fourier(Fourier::default()), lr: FOURIER_LR, l2: 0.0, blur_every: 0, init_noise: 0.0, ..Maximize::default() }
    }

    /// The default schedule of the parameterisation called `name`: `pixels`
    /// ([`Maximize::default`]) or `fourier` ([`Maximize::fourier`], with `decay_power` and `sd`
    /// where given, else lucid's, and decorrelated colours or not). The Fourier settings with
    /// `pixels`, or another name, are errors.
    pub fn named(name: &str, decay_power: Option<f32>, sd: Option<f32>, decorrelate: bool) -> Result<Maximize> {
        match name {
            "fourier" => {
                let lucid = Fourier::default();
                let p = Fourier { decay_power: decay_power.unwrap_or(lucid.decay_power), sd: sd.unwrap_or(lucid.sd), decorrelate };
                Ok(Maximize { param: Param::Fourier(p), ..Maximize::fourier() })
            }
            "pixels" if decay_power.is_none() && sd.is_none() && decorrelate => Ok(Maximize::default()),
            "pixels" => Err(Error::InvalidArgument("a decay power, an sd or plain RGB colours (--decay-power, --sd, --no-decorrelate) set the Fourier parameterisation: ask for it (--param fourier)".into())),
            _ => Err(Error::InvalidArgument(format!("unknown parameterisation `{name}`; known: pixels, fourier"))),
        }
    }

    /// Whether a step warps the picture (a scale other than 1, or a rotation).
    fn warps(&self) -> bool {
        self.rotate != 0.0 || self.scales.iter().any(|&s| s != 1.0)
    }

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
        if self.scales.is_empty() || self.scales.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(Error::InvalidArgument(format!("the scales must be finite and > 0, at least one (got {:?}; [1]: no scaling)", self.scales)));
        }
        if !(0.0..=180.0).contains(&self.rotate) {
            return Err(Error::InvalidArgument(format!("the rotation must be an angle in [0, 180] degrees (got {}; 0: no rotation)", self.rotate)));
        }
        if self.steps == 0 || !(self.lr > 0.0 && self.lr.is_finite()) || !ok(self.l2) || !ok(self.init_noise) || !ok(self.blur_sigma) {
            return Err(Error::InvalidArgument(format!(
                "activation maximisation needs steps >= 1, a finite step size > 0 and finite, non-negative l2, noise and blur (got {}, {}, {}, {}, {})",
                self.steps, self.lr, self.l2, self.init_noise, self.blur_sigma
            )));
        }
        if let Param::Fourier(Fourier { decay_power, sd, .. }) = self.param {
            if !ok(decay_power) || !ok(sd) {
                return Err(Error::InvalidArgument(format!("the Fourier parameterisation needs a finite decay power >= 0 and a finite sd >= 0 (got {decay_power} and {sd})")));
            }
            if (self.blur_every > 0 && self.blur_sigma > 0.0) || self.norm_pct > 0.0 || self.contribution_pct > 0.0 || self.init_noise > 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "the Fourier parameterisation has no pixels to blur, clip or start from noise: set blur-every, norm-pct, contribution-pct and noise to 0 (got {}, {}, {}, {}); its start is the spectrum's sd",
                    self.blur_every, self.norm_pct, self.contribution_pct, self.init_noise
                )));
            }
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
        let [h, w] = size;
        if h < 8 || w < 8 {
            return Err(Error::InvalidArgument(format!("activation maximisation needs a picture of at least 8x8 pixels, not {h}x{w}")));
        }
        let shape = [targets.len(), 3, h, w];
        // every step's maps, uploaded once before anything runs: `[1, 1, steps, n·6]`, a row a step
        let maps = match self.warps() {
            true => Some(be.upload(&self.maps(targets.len(), h, w)?)?),
            false => None,
        };
        let mut rng = self.seed ^ 0xD1B5_4A32_D192_ED03;
        let maps = maps.as_ref();
        let img = match self.param {
            Param::Pixels => self.ascend_pixels(eng, targets, &shape, pre, maps, &mut rng, progress)?,
            Param::Fourier(p) => {
                let f = FourierImage::new(be, h, w, &p, pre)?;
                self.ascend_spectrum(eng, targets, &f, p.sd, maps, &mut rng, progress)?
            }
        };
        let y = eng.download(&img)?;
        if let Some(i) = y.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!("activation maximisation diverged: value {} at index {i} (try a smaller --lr)", y.data[i])));
        }
        Ok(y)
    }

    /// Gradient ascent on the pixels of pictures `shape` (Simonyan et al.'s class model
    /// visualisation with Yosinski et al.'s regularisers): the start, the steps, the blur, the
    /// clippings and the clamp to `range`.
    #[allow(clippy::too_many_arguments)]
    fn ascend_pixels<B: Backend>(&self, eng: &Engine<B>, targets: &[Target], shape: &[usize; 4], pre: &Preprocess, maps: Option<&B::T>, rng: &mut u64, progress: &mut dyn FnMut()) -> Result<B::T> {
        let be = &eng.be;
        let [_, c, h, w] = *shape;
        let range = pixel_range(be, pre, c)?;
        let mut img = be.unary(&be.random(shape, self.seed, Random::Normal)?, Unary::Affine(self.init_noise, 0.0))?;
        img = be.binary(&be.binary(&img, &range.0, Binary::Max)?, &range.1, Binary::Min)?;
        let blur = if self.blur_every > 0 && self.blur_sigma > 0.0 { Some(GaussianBlur::<B>::new(be, c, h, w, self.blur_sigma, ((3.0 * self.blur_sigma).ceil() as usize).clamp(1, h.min(w) / 2))?) } else { None };
        for step in 0..self.steps {
            let g = self.score_gradient(eng, targets, &img, step, maps, rng)?;
            // the score's own gradient, for the contribution of each pixel after the step
            let score_gradient = (self.contribution_pct > 0.0).then(|| g.clone());
            let g = self.with_l2(be, g, &img)?;
            let moved = ops::normalized_step(be, &img, &g, self.lr)?;
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
        Ok(img)
    }

    /// Gradient ascent on the spectra of lucid's Fourier parameterisation `f` ([`Param::Fourier`]),
    /// started from N(0, sd²): each step makes the pictures from the spectra, takes the score's
    /// gradient (and the L2 term's) at them back through the chain, and moves the spectra.
    #[allow(clippy::too_many_arguments)]
    fn ascend_spectrum<B: Backend>(&self, eng: &Engine<B>, targets: &[Target], f: &FourierImage<B>, sd: f32, maps: Option<&B::T>, rng: &mut u64, progress: &mut dyn FnMut()) -> Result<B::T> {
        let be = &eng.be;
        let mut spectrum = be.unary(&be.random(&f.spectrum_shape(targets.len()), self.seed, Random::Normal)?, Unary::Affine(sd, 0.0))?;
        for step in 0..self.steps {
            let (img, t) = f.image(be, &spectrum)?;
            let g = self.with_l2(be, self.score_gradient(eng, targets, &img, step, maps, rng)?, &img)?;
            spectrum = ops::normalized_step(be, &spectrum, &f.backward(be, &t, &g)?, self.lr)?;
            progress();
        }
        Ok(f.image(be, &spectrum)?.0)
    }

    /// The gradient of each target's score at the pictures `img` as step `step` shows them to
    /// the network: shifted by a jitter drawn from `rng`, then warped by the step's map (if
    /// any), the gradient taken back through both.
    fn score_gradient<B: Backend>(&self, eng: &Engine<B>, targets: &[Target], img: &B::T, step: usize, maps: Option<&B::T>, rng: &mut u64) -> Result<B::T> {
        let be = &eng.be;
        let [_, _, h, w] = be.shape(img)[..] else { return Err(Error::shape("the maximised pictures", "[n, c, h, w]", be.shape(img))) };
        let (dy, dx) = (jitter(rng, self.jitter, h), jitter(rng, self.jitter, w));
        let theta = match maps {
            Some(m) => Some(be.reshape(be.crop(m, step, 0, 1, targets.len() * 6)?, &[targets.len(), 2, 3])?),
            None => None,
        };
        let mut seen = be.roll(img, dy, dx)?;
        if let Some(th) = &theta {
            seen = be.warp(&seen, th)?;
        }
        let t = target::forward(eng, &seen, Some(targets), &[])?;
        let mut g = eng.backward(&t.acts, t.seeds, &[eng.model().input()], Rule::Gradient)?.remove(0);
        if let Some(th) = &theta {
            g = be.warp_backward(&g, th)?;
        }
        be.roll(&g, -dy, -dx)
    }

    /// d/dx (S − λ‖x‖²) = g − 2λx, from the score's gradient `g` at `x`.
    fn with_l2<B: Backend>(&self, be: &B, g: B::T, x: &B::T) -> Result<B::T> {
        match self.l2 > 0.0 {
            true => be.binary(&g, &be.unary(x, Unary::Affine(-2.0 * self.l2, 0.0))?, Binary::Add),
            false => Ok(g),
        }
    }

    /// The affine maps of every step, `[1, 1, steps, n·6]` (one `[n, 2, 3]` theta of
    /// [`Backend::warp`] per step): per item, a zoom s from `scales` and an angle φ in
    /// [-rotate, rotate] about the centre, then a shift of up to `jitter / 2` pixels: output
    /// offset p from the centre samples the input at R(φ)·p / s − shift. Drawn from their own
    /// SplitMix64 stream, so the first jitter's shifts are those of a run without transforms.
    fn maps(&self, n: usize, h: usize, w: usize) -> Result<Tensor> {
        let mut rng = self.seed ^ 0x6A09_E667_F3BC_C908;
        let mut data = Vec::with_capacity(self.steps * n * 6);
        for _ in 0..self.steps * n {
            let s = self.scales[(next(&mut rng) % self.scales.len() as u64) as usize] as f64;
            let phi = (self.rotate as f64 * (2.0 * unit(&mut rng) - 1.0)).to_radians();
            let (ty, tx) = (jitter(&mut rng, self.jitter / 2, h) as f64, jitter(&mut rng, self.jitter / 2, w) as f64);
            let (c, sn) = (phi.cos() / s, phi.sin() / s);
            let (hf, wf) = (h as f64, w as f64);
            // the pixel map [[c, -sn, -tx], [sn, c, -ty]] in normalised coordinates
            data.extend([c, -sn * hf / wf, -2.0 * tx / wf, sn * wf / hf, c, -2.0 * ty / hf].map(|v| v as f32));
        }
        Tensor::new(vec![1, 1, self.steps, n * 6], data)
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
/// np.percentile(v, pct)`: exact, linear interpolation, [`Reduce::Percentile`], on the device).
fn keep_above<B: Backend>(be: &B, x: &B::T, v: &B::T, pct: f32) -> Result<B::T> {
    let t = be.reduce(v, Reduce::Percentile(pct), &[1, 2, 3])?;
    // 1 − step(t − v): 0 where v < t
    let clipped = be.unary(&be.binary(&t, v, Binary::Sub)?, Unary::Step)?;
    be.binary(x, &be.unary(&clipped, Unary::Affine(-1.0, 1.0))?, Binary::Mul)
}
