//! Launches for `kernels/image.cu`: NHWC image batches `[n, h, w, c]`.

use super::{grid_stride, launch, len, ptr};
use crate::device::{Arg, Device, DevicePtr};
use crate::error::Result;

pub const KERNELS: &[(&str, &str)] = &[("resize_bilinear", "fwd"), ("normalize", "fwd"), ("normalize", "bwd"), ("roll", "fwd"), ("clamp", "fwd")];

/// y `[n, oh, ow, c]`: PyTorch's bilinear interpolation, align_corners=False, no antialias.
#[allow(clippy::too_many_arguments)]
pub fn resize_bilinear(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<()> {
    // SAFETY: `resize_bilinear_fwd_f32(const float* x, float* y, n, c, h, w, oh, ow)`; the
    // grid-stride loop writes every y element (h, w > 0: every read is inside x).
    launch(dev, "resize_bilinear", "fwd", grid_stride(n * oh * ow * c), &[ptr(x), ptr(y), len(n), len(c), len(h), len(w), len(oh), len(ow)])
}

/// y = (x - mean[c]) / std[c] over `n` elements with `c` channels innermost.
pub fn normalize(dev: &dyn Device, x: DevicePtr, mean: DevicePtr, std: DevicePtr, y: DevicePtr, n: usize, c: usize) -> Result<()> {
    // SAFETY: `normalize_fwd_f32(const float* x, const float* mean, const float* std, float* y,
    // long long n, long long c)`; writes y[i] for every i < n.
    launch(dev, "normalize", "fwd", grid_stride(n), &[ptr(x), ptr(mean), ptr(std), ptr(y), len(n), len(c)])
}

/// y = x * std[c] + mean[c], the inverse of [`normalize`].
pub fn denormalize(dev: &dyn Device, x: DevicePtr, mean: DevicePtr, std: DevicePtr, y: DevicePtr, n: usize, c: usize) -> Result<()> {
    // SAFETY: `normalize_bwd_f32(same signature as normalize_fwd_f32)`; writes y[i], i < n.
    launch(dev, "normalize", "bwd", grid_stride(n), &[ptr(x), ptr(mean), ptr(std), ptr(y), len(n), len(c)])
}

/// torch.roll(x, (dy, dx), dims=(h, w)) (y must not alias x).
#[allow(clippy::too_many_arguments)]
pub fn roll(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, c: usize, h: usize, w: usize, dy: i64, dx: i64) -> Result<()> {
    // SAFETY: `roll_fwd_f32(const float* x, float* y, n, c, h, w, long long dy, long long dx)`;
    // writes every y element.
    let args = [ptr(x), ptr(y), len(n), len(c), len(h), len(w), Arg::I64(dy), Arg::I64(dx)];
    launch(dev, "roll", "fwd", grid_stride(n * h * w * c), &args)
}

/// y = min(max(x, lo[c]), hi[c]) over `n` elements with `c` channels innermost (y may be x).
pub fn clamp(dev: &dyn Device, x: DevicePtr, lo: DevicePtr, hi: DevicePtr, y: DevicePtr, n: usize, c: usize) -> Result<()> {
    // SAFETY: `clamp_fwd_f32(const float* x, const float* lo, const float* hi, float* y,
    // long long n, long long c)`; writes y[i] for every i < n.
    launch(dev, "clamp", "fwd", grid_stride(n), &[ptr(x), ptr(lo), ptr(hi), ptr(y), len(n), len(c)])
}
