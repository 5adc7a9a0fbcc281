//! The math of the methods, built from the backend's generic primitives ([`Unary`], [`Binary`],
//! [`Reduce`]), so a new method adds no backend op.

use crate::backend::{Backend, Binary, Conv2dGeom, Reduce, Role, Unary};
use crate::tensor::Tensor;
use crate::error::Result;

/// A 1x1 convolution's geometry: a matrix applied to the channels of every pixel (the guided
/// dream's dot products, the Fourier parameterisation's column transform and colour matrix).
pub(crate) const POINTWISE: Conv2dGeom = Conv2dGeom { stride: [1, 1], pad: [0; 4], dilation: [1, 1], groups: 1 };

/// The axes of `x` after the batch axis (every axis of an item).
fn item_axes(rank: usize) -> Vec<usize> {
    (1..rank).collect()
}

/// 1 where position `i` along `axis` equals `idx` (broadcast over the other axes), else 0:
/// `idx` has length 1 along `axis`; the result has length `len` there. An index of −1 matches
/// nothing. (One-hot targets, channel and neuron masks.)
pub fn indicator<B: Backend>(be: &B, idx: &B::T, axis: usize, len: usize) -> Result<B::T> {
    let rank = be.shape(idx).len();
    let mut shape = vec![1; rank];
    shape[axis] = len;
    let positions = be.reshape(be.iota(len)?, &shape)?;
    be.binary(&positions, idx, Binary::Eq)
}

/// max over channels of |x|: `[n, c, h, w]` → `[n, 1, h, w]` (saliency).
pub fn abs_max_channels<B: Backend>(be: &B, x: &B::T) -> Result<B::T> {
    be.reduce(&be.unary(x, Unary::Abs)?, Reduce::Max, &[1])
}

/// Σ_c w[n, c] · a[n, c, h, w] → `[n, 1, h, w]` (CAM, Grad-CAM), then ReLU if `relu`.
pub fn weighted_channel_sum<B: Backend>(be: &B, a: &B::T, w: &B::T, relu: bool) -> Result<B::T> {
    let m = be.reduce(&be.binary(a, w, Binary::Mul)?, Reduce::Sum, &[1])?;
    if relu {
        be.unary(&m, Unary::Relu)
    } else {
        Ok(m)
    }
}

/// The spatial mean of each channel: `[n, c, h, w]` → `[n, c, 1, 1]` (Grad-CAM's α).
pub fn spatial_mean<B: Backend>(be: &B, x: &B::T) -> Result<B::T> {
    be.reduce(x, Reduce::Mean, &[2, 3])
}

/// A per-item reduction of `f(x)` over all of each item: `[n, …]` → `[n, 1, …]`.
pub fn per_item<B: Backend>(be: &B, x: &B::T, f: Option<Unary>, op: Reduce) -> Result<B::T> {
    let axes = item_axes(be.shape(x).len());
    match f {
        Some(u) => be.reduce(&be.unary(x, u)?, op, &axes),
        None => be.reduce(x, op, &axes),
    }
}

/// DeepDream's normalised step, shared by activation maximisation: `x + lr · g / (mean |g| +
/// 1e-8)`, the mean per item, so `lr` is in units of `x` whatever the scale of the gradient.
pub fn normalized_step<B: Backend>(be: &B, x: &B::T, g: &B::T, lr: f32) -> Result<B::T> {
    let m = per_item(be, g, Some(Unary::Abs), Reduce::Mean)?;
    let inv = be.unary(&be.unary(&m, Unary::Affine(1.0, 1e-8))?, Unary::Recip)?;
    be.binary(x, &be.binary(&be.unary(g, Unary::Affine(lr, 0.0))?, &inv, Binary::Mul)?, Binary::Add)
}

/// The values of a per-item tensor `[n, 1, …]` on the host.
pub fn per_item_values<B: Backend>(be: &B, x: &B::T) -> Result<Vec<f32>> {
    Ok(be.download(x)?.data)
}

/// A separable Gaussian blur as two depthwise convolutions, normalised at the borders (zero
/// padding would darken them), prepared once.
pub(crate) struct GaussianBlur<B: Backend> {
    v: B::W,
    h: B::W,
    gv: Conv2dGeom,
    gh: Conv2dGeom,
    norm: B::T,
}

impl<B: Backend> GaussianBlur<B> {
    /// σ in pixels, `r` taps each side, for `[_, c, h, w]` tensors.
    pub(crate) fn new(be: &B, c: usize, h: usize, w: usize, sigma: f32, r: usize) -> Result<Self> {
        let taps: Vec<f32> = (0..2 * r + 1).map(|i| (-((i as f32 - r as f32).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
        let total: f32 = taps.iter().sum();
        let kernel = |shape: Vec<usize>| -> Result<B::W> { be.weight(&std::sync::Arc::new(Tensor::new(shape, (0..c).flat_map(|_| taps.iter().map(|t| t / total)).collect())?), Role::ConvWeight) };
        let gv = Conv2dGeom { stride: [1, 1], pad: [r, r, 0, 0], dilation: [1, 1], groups: c };
        let gh = Conv2dGeom { stride: [1, 1], pad: [0, 0, r, r], dilation: [1, 1], groups: c };
        let (v, hk) = (kernel(vec![c, 1, 2 * r + 1, 1])?, kernel(vec![c, 1, 1, 2 * r + 1])?);
        let ones = be.full(&[1, c, h, w], 1.0)?;
        let norm = be.conv2d(&be.conv2d(&ones, &v, None, &gv)?, &hk, None, &gh)?;
        Ok(GaussianBlur { v, h: hk, gv, gh, norm })
    }
    pub(crate) fn apply(&self, be: &B, x: &B::T) -> Result<B::T> {
        be.binary(&be.conv2d(&be.conv2d(x, &self.v, None, &self.gv)?, &self.h, None, &self.gh)?, &self.norm, Binary::Div)
    }
}
