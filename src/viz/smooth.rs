//! Methods that run another computation many times on changed inputs:
//!
//! - [`NoiseTunnel`] — SmoothGrad (Smilkov et al. 2017) around any attribution method, as
//!   captum's `NoiseTunnel`: the base method's maps of `samples` noisy copies of the input
//!   (Gaussian noise of standard deviation `noise` × (max − min) of the item, the paper's noise
//!   level), combined as their mean (`smoothgrad`), the mean of their squares (`smoothgrad_sq`)
//!   or their variance (`vargrad`). deepviz combines the base method's *maps* (for saliency:
//!   max over channels of |g|, then the mean), where captum combines its per-channel
//!   attributions; with zero noise every kind returns the base map (`vargrad`: zeros).
//! - [`IntegratedGradients`] (Sundararajan et al. 2017): (x − x′) ⊙ ∫₀¹ ∂F/∂x(x′ + α(x − x′)) dα,
//!   the integral by `steps`-point Gauss–Legendre quadrature on [0, 1] (captum's default rule,
//!   exact for polynomials of degree < 2·steps), summed over colour channels (signed; pictures
//!   show |·|). The completeness error Σ attributions − (F(x) − F(x′)) of every item is
//!   reported with the map. Baselines x′: `zero` (0 of the network input, i.e. the dataset
//!   mean colour: captum's default), `black` (a black picture), `blur` (the input under a
//!   Gaussian blur of σ = 5% of its size), `noise` (uniform noise pictures, seeded).
//!
//! Targets are fixed on the clean input before any change (each item's top class by default);
//! SmoothGrad hands them to its base method, which costs one download of the top classes.

use std::str::FromStr;

use super::{attribution, ops, target, Attributed, Attribution, LayerUse, MethodInfo, MethodOptions, Opt, Target, Targets};
use crate::backend::{Backend, Binary, Precision, Random, Reduce, Unary};
use crate::engine::{Engine, Rule};
use crate::error::{Error, Result};
use crate::imageio::Colormap;
use crate::tensor::Tensor;

pub(super) const SMOOTHGRAD_INFO: MethodInfo = MethodInfo {
    name: "smoothgrad",
    title: "SmoothGrad",
    about: "the mean (or mean square, or variance) of --base's maps over --samples noisy copies of the input",
    paper: "Smilkov, Thorat, Kim, Viégas, Wattenberg 2017, SmoothGrad: removing noise by adding noise",
    layer: LayerUse::One,
    colormap: Colormap::Inferno,
    clip_percentile: 99.5,
    signed: false,
    options: &[Opt::Base, Opt::Samples, Opt::Noise, Opt::Smooth, Opt::Seed],
    gpu_precision: Precision::F32,
};

pub(super) const IG_INFO: MethodInfo = MethodInfo {
    name: "ig",
    title: "Integrated Gradients",
    about: "Σ over colour channels of (x − baseline) × the path integral of the gradient (signed; pictures show |·|)",
    paper: "Sundararajan, Taly, Yan 2017, Axiomatic Attribution for Deep Networks",
    layer: LayerUse::None,
    colormap: Colormap::Inferno,
    clip_percentile: 99.5,
    signed: true,
    options: &[Opt::Samples, Opt::Baseline, Opt::Seed],
    gpu_precision: Precision::F32,
};

/// How SmoothGrad combines the noisy maps (captum's `nt_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Smooth {
    #[default]
    /// the mean of the maps (SmoothGrad)
    Mean,
    /// the mean of their squares (SmoothGrad²)
    MeanSquare,
    /// their variance (VarGrad)
    Variance,
}

impl FromStr for Smooth {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "smoothgrad" | "mean" => Ok(Smooth::Mean),
            "smoothgrad_sq" | "square" => Ok(Smooth::MeanSquare),
            "vargrad" | "variance" => Ok(Smooth::Variance),
            _ => Err(Error::InvalidArgument(format!("unknown SmoothGrad kind `{s}`; known: smoothgrad, smoothgrad_sq, vargrad"))),
        }
    }
}

/// Integrated Gradients' baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Baseline {
    #[default]
    /// all zeros in the model's input space (the mean colour)
    Zero,
    /// black (0 in pixel space, normalised)
    Black,
    /// the input blurred (Gaussian, σ = 5% of the smaller side)
    Blur,
    /// uniform noise in pixel space, from the seed
    Noise,
}

impl FromStr for Baseline {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zero" => Ok(Baseline::Zero),
            "black" => Ok(Baseline::Black),
            "blur" => Ok(Baseline::Blur),
            "noise" => Ok(Baseline::Noise),
            _ => Err(Error::InvalidArgument(format!("unknown baseline `{s}`; known: zero, black, blur, noise"))),
        }
    }
}

/// The targets of a batch fixed on the clean input: as given, or each item's top class.
fn fixed_targets<B: Backend>(eng: &Engine<B>, x: &B::T, targets: Option<&[Target]>) -> Result<Vec<Target>> {
    match targets {
        Some(t) => Ok(t.to_vec()),
        None => target::forward(eng, x, None, &[])?.targets.resolve(eng),
    }
}

/// SmoothGrad (Smilkov, Thorat, Kim, Viégas, Wattenberg 2017, "SmoothGrad: removing noise by
/// adding noise") around any base method, as captum's `NoiseTunnel`: the base method's maps of
/// `samples` noisy copies of the input (Gaussian noise of standard deviation `noise` × (max −
/// min) of the item), combined by [`Smooth`]. Deviation: deepviz combines the base method's
/// *maps* (for saliency, max over channels of |g| first), where captum combines its per-channel
/// attributions.
pub struct NoiseTunnel<'e, B: Backend> {
    /// the method whose maps are combined
    pub base: Box<dyn Attribution<B> + 'e>,
    /// noisy copies per input
    pub samples: usize,
    /// noise standard deviation as a fraction of each item's value range
    pub noise: f32,
    /// how the copies' maps are combined
    pub kind: Smooth,
    /// the noise's seed (a run is deterministic)
    pub seed: u64,
}

impl<'e, B: Backend> NoiseTunnel<'e, B> {
    /// The paper's defaults: 50 samples at 15% noise, the mean.
    pub fn new(base: Box<dyn Attribution<B> + 'e>) -> Self {
        NoiseTunnel { base, samples: 50, noise: 0.15, kind: Smooth::Mean, seed: 0 }
    }

    /// From the registry's options: the base method by name (default: saliency) with the layer.
    pub fn from_options(eng: &'e Engine<B>, opts: &MethodOptions) -> Result<Self> {
        let base = opts.base.as_deref().unwrap_or("saliency");
        if base == SMOOTHGRAD_INFO.name {
            return Err(Error::InvalidArgument("SmoothGrad cannot smooth itself".into()));
        }
        let base = attribution(eng, base, &MethodOptions { layers: opts.layers.clone(), ..Default::default() })?;
        let mut nt = NoiseTunnel::new(base);
        if let Some(s) = opts.samples {
            nt.samples = s;
        }
        if let Some(v) = opts.noise {
            nt.noise = v;
        }
        nt.kind = opts.smooth.unwrap_or_default();
        nt.seed = opts.seed.unwrap_or(0);
        nt.check()?;
        Ok(nt)
    }

    fn check(&self) -> Result<()> {
        if self.samples == 0 {
            return Err(Error::InvalidArgument("SmoothGrad needs at least one sample".into()));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(Error::InvalidArgument(format!("the noise level must be a finite number >= 0, not {}", self.noise)));
        }
        Ok(())
    }
}

impl<B: Backend> Attribution<B> for NoiseTunnel<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &SMOOTHGRAD_INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.base.engine()
    }
    fn layer_name(&self) -> Option<String> {
        self.base.layer_name()
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        self.check()?;
        let eng = self.engine();
        let be = &eng.be;
        let fixed = fixed_targets(eng, x, targets)?;
        let shape = be.shape(x).to_vec();
        let axes: Vec<usize> = (1..shape.len()).collect();
        // σ per item = noise × (max − min)
        let sigma = be.binary(&be.reduce(x, Reduce::Max, &axes)?, &be.reduce(x, Reduce::Min, &axes)?, Binary::Sub)?;
        let sigma = be.unary(&sigma, Unary::Affine(self.noise, 0.0))?;
        let (mut sum, mut sum_sq) = (None::<B::T>, None::<B::T>);
        for s in 0..self.samples {
            // drawn on the device: no upload, no wait (the same numbers on every backend)
            let eps = be.random(&shape, self.seed.wrapping_add(s as u64).wrapping_mul(0x2545_F491_4F6C_DD1D), Random::Normal)?;
            let noisy = be.binary(x, &be.binary(&eps, &sigma, Binary::Mul)?, Binary::Add)?;
            let (m, _) = self.base.attribute_on_device(&noisy, Some(&fixed))?;
            let add = |acc: Option<B::T>, v: B::T| -> Result<B::T> { acc.map_or(Ok(v.clone()), |a| be.binary(&a, &v, Binary::Add)) };
            if self.kind != Smooth::Mean {
                sum_sq = Some(add(sum_sq, be.binary(&m, &m, Binary::Mul)?)?);
            }
            if self.kind != Smooth::MeanSquare {
                sum = Some(add(sum, m)?);
            }
        }
        let inv = 1.0 / self.samples as f32;
        let mean = |t: Option<B::T>| be.unary(&t.expect("accumulated"), Unary::Affine(inv, 0.0));
        let map = match self.kind {
            Smooth::Mean => mean(sum)?,
            Smooth::MeanSquare => mean(sum_sq)?,
            // E[m²] − E[m]², clamped at 0 against rounding
            Smooth::Variance => {
                let m = mean(sum)?;
                let d = be.binary(&mean(sum_sq)?, &be.binary(&m, &m, Binary::Mul)?, Binary::Sub)?;
                be.unary(&d, Unary::Relu)?
            }
        };
        Ok((map, Targets::given(fixed)))
    }
}

/// Gauss–Legendre nodes and weights on [0, 1] (`n` points), by Newton's method on the Legendre
/// polynomial (f64, to 1e-15).
pub fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Chebyshev-like first guess of the i-th root of P_n on [−1, 1]
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * z * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 0 { 1.0 } else if n == 1 { z } else { p1 };
            let pn1 = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (z * pn - pn1) / (z * z - 1.0);
            let dz = pn / dp;
            z -= dz;
            if dz.abs() < 1e-15 {
                break;
            }
        }
        let w = 2.0 / ((1.0 - z * z) * dp * dp);
        // [−1, 1] → [0, 1]
        out.push(((1.0 - z) / 2.0, w / 2.0));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Integrated Gradients (Sundararajan, Taly, Yan 2017, "Axiomatic Attribution for Deep
/// Networks"): (x − x′) ⊙ ∫₀¹ ∂F/∂x(x′ + α(x − x′)) dα, the integral by `steps`-point
/// Gauss–Legendre quadrature (captum's default rule), summed over colour channels; the
/// completeness error Σ attributions − (F(x) − F(x′)) is reported with each map.
pub struct IntegratedGradients<'e, B: Backend> {
    eng: &'e Engine<B>,
    /// quadrature points on the path
    pub steps: usize,
    /// the path's start x′
    pub baseline: Baseline,
    /// the seed of the `noise` baseline
    pub seed: u64,
}

impl<'e, B: Backend> IntegratedGradients<'e, B> {
    /// captum's defaults: 50 steps, the zero baseline.
    pub fn new(eng: &'e Engine<B>) -> Self {
        IntegratedGradients { eng, steps: 50, baseline: Baseline::Zero, seed: 0 }
    }

    /// Integrated gradients with `opts`' `samples` (steps) and `baseline`, else the defaults.
    pub fn from_options(eng: &'e Engine<B>, opts: &MethodOptions) -> Result<Self> {
        let mut ig = IntegratedGradients::new(eng);
        if let Some(s) = opts.samples {
            ig.steps = s;
        }
        ig.baseline = opts.baseline.unwrap_or_default();
        ig.seed = opts.seed.unwrap_or(0);
        if ig.steps == 0 {
            return Err(Error::InvalidArgument("Integrated Gradients needs at least one step".into()));
        }
        Ok(ig)
    }

    /// The baseline x′ for the batch `x` (in the network's input space).
    pub fn baseline_of(&self, x: &B::T) -> Result<B::T> {
        let (eng, be) = (self.eng, &self.eng.be);
        let s = be.shape(x).to_vec();
        let pre = eng.model().preprocess;
        // a picture p in [0, 1] per channel is (p − mean) / std in the input space
        let picture = |p: Vec<f32>| -> Result<B::T> {
            let per = s[2] * s[3];
            let data = p.iter().enumerate().map(|(i, &v)| pre.normalize((i / per) % s[1], v));
            eng.upload(&Tensor::new(s.clone(), data.collect())?)
        };
        let numel: usize = s.iter().product();
        match self.baseline {
            Baseline::Zero => be.full(&s, 0.0),
            Baseline::Black => picture(vec![0.0; numel]),
            Baseline::Noise => picture(crate::backend::cpu::Cpu.random(&s, self.seed, Random::Uniform)?.data),
            Baseline::Blur => {
                // separable Gaussian, σ = 5% of the smaller side, as one depthwise conv per axis
                let sigma = 0.05 * s[2].min(s[3]) as f32;
                let r = (3.0 * sigma).ceil().max(1.0) as usize;
                super::ops::GaussianBlur::new(be, s[1], s[2], s[3], sigma, r)?.apply(be, x)
            }
        }
    }
}

impl<B: Backend> Attribution<B> for IntegratedGradients<'_, B> {
    fn info(&self) -> &'static MethodInfo {
        &IG_INFO
    }
    fn engine(&self) -> &Engine<B> {
        self.eng
    }
    fn attribute_on_device(&self, x: &B::T, targets: Option<&[Target]>) -> Result<(B::T, Targets<B>)> {
        let a = self.attribute_with_extras(x, targets)?;
        Ok((a.map, a.targets))
    }
    fn attribute_with_extras(&self, x: &B::T, targets: Option<&[Target]>) -> Result<Attributed<B>> {
        let (eng, be) = (self.eng, &self.eng.be);
        // the pass at x fixes the targets (each item's top class stays on the device) and seeds
        let at_x = target::forward(eng, x, targets, &[])?;
        let seeds = at_x.seeds.clone();
        let keep: Vec<_> = seeds.iter().map(|s| s.0).collect();
        let out = eng.model().output();
        let f_x = target::score(eng, &at_x.acts, &seeds)?;
        let targets = at_x.targets;
        let base = self.baseline_of(x)?;
        let f_base = target::score(eng, &eng.forward(base.clone(), out, &keep)?, &seeds)?;
        let delta = be.binary(x, &base, Binary::Sub)?;
        let input = eng.model().input();
        let mut avg: Option<B::T> = None;
        for (alpha, w) in gauss_legendre(self.steps) {
            let xk = be.binary(&base, &be.unary(&delta, Unary::Affine(alpha as f32, 0.0))?, Binary::Add)?;
            let acts = eng.forward(xk, out, &keep)?;
            let g = eng.backward(&acts, seeds.clone(), &[input], Rule::Gradient)?.remove(0);
            let g = be.unary(&g, Unary::Affine(w as f32, 0.0))?;
            avg = Some(match avg {
                None => g,
                Some(a) => be.binary(&a, &g, Binary::Add)?,
            });
        }
        let attr = be.binary(&delta, &avg.expect("steps > 0"), Binary::Mul)?;
        let map = be.reduce(&attr, Reduce::Sum, &[1])?;
        // completeness: Σ attributions − (F(x) − F(x′)), per item
        let n = be.shape(&map)[0];
        let total = be.reshape(ops::per_item(be, &map, None, Reduce::Sum)?, &[n, 1])?;
        let err = be.binary(&total, &be.binary(&f_x, &f_base, Binary::Sub)?, Binary::Sub)?;
        Ok(Attributed { map, targets, extras: vec![("completeness_error", err)] })
    }
}
