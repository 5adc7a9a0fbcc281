//! Launches for `kernels/lrn.cu`: local response normalisation across channels (PyTorch's
//! `nn.LocalResponseNorm`, as `backend::cpu::elementwise::{lrn, lrn_backward}`), on NHWC rows
//! `[pixels, c]` (pixels = n·h·w).

use super::{grid_stride, launch, len, ptr};
use crate::backend::LrnGeom;
use crate::device::{Arg, Device, DevicePtr};
use crate::error::Result;

/// The kernels this file launches, as `(op, variant)` of [`crate::device::kernel_name`].
pub const KERNELS: &[(&str, &str)] = &[("lrn", "fwd"), ("lrn", "bwd")];

/// The geometry arguments every LRN kernel ends with: size, alpha, beta, k.
fn geom_args(g: &LrnGeom) -> [Arg; 4] {
    [len(g.size), Arg::F32(g.alpha), Arg::F32(g.beta), Arg::F32(g.k)]
}

/// y = x / (k + alpha/size · Σ_window x²)^beta for x `[pixels, c]` (y must not alias x).
pub fn forward(dev: &dyn Device, x: DevicePtr, y: DevicePtr, pixels: usize, c: usize, g: &LrnGeom) -> Result<()> {
    let [size, alpha, beta, k] = geom_args(g);
    // SAFETY: `lrn_fwd_f32(const float* x, float* y, long long pixels, long long c,
    // long long size, float alpha, float beta, float k)`; writes y[i] for every
    // i < pixels*c, reading only x.
    launch(dev, "lrn", "fwd", grid_stride(pixels * c), &[ptr(x), ptr(y), len(pixels), len(c), size, alpha, beta, k])
}

/// gx from the forward input x and the output gradient gy, all `[pixels, c]` (gx must not
/// alias x or gy).
#[allow(clippy::too_many_arguments)]
pub fn backward(dev: &dyn Device, x: DevicePtr, gy: DevicePtr, gx: DevicePtr, pixels: usize, c: usize, g: &LrnGeom) -> Result<()> {
    let [size, alpha, beta, k] = geom_args(g);
    // SAFETY: `lrn_bwd_f32(const float* x, const float* gy, float* gx, long long pixels,
    // long long c, long long size, float alpha, float beta, float k)`; writes gx[i] for every
    // i < pixels*c, reading only x and gy.
    launch(dev, "lrn", "bwd", grid_stride(pixels * c), &[ptr(x), ptr(gy), ptr(gx), len(pixels), len(c), size, alpha, beta, k])
}
