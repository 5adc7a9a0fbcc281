//! Launches for `kernels/elementwise.cu`. Shapes: `n` is the element count of the flat tensor;
//! per-channel ops take NHWC `[batch, hw, c]`.

use super::{grid_stride, launch, len, ptr};
use crate::backend::Act;
use crate::device::{Device, DevicePtr, LaunchConfig};
use crate::error::Result;

/// (op, variant) of every kernel launched here.
pub const KERNELS: &[(&str, &str)] = &[
    ("relu", "fwd"),
    ("relu", "bwd"),
    ("relu6", "fwd"),
    ("relu6", "bwd"),
    ("silu", "fwd"),
    ("silu", "bwd"),
    ("sigmoid", "fwd"),
    ("sigmoid", "bwd"),
    ("hardswish", "fwd"),
    ("hardswish", "bwd"),
    ("add", "fwd"),
    ("channel_scale", "fwd"),
    ("channel_scale", "bwd_scale"),
    ("affine", "fwd"),
    ("affine", "bwd"),
    ("layout", "nchw_to_nhwc"),
    ("layout", "nhwc_to_nchw"),
];

/// Channels per block and rows of threads of the per-channel reductions (`CS_CHANNELS`,
/// `CS_ROWS` in elementwise.cu).
const CS_CHANNELS: u32 = 32;
const CS_ROWS: u32 = 8;

/// The kernel op name of an activation.
pub fn act_op(a: Act) -> &'static str {
    match a {
        Act::Relu => "relu",
        Act::Relu6 => "relu6",
        Act::Silu => "silu",
        Act::Sigmoid => "sigmoid",
        Act::HardSwish => "hardswish",
    }
}

/// y = act(x), `n` elements (y may be x).
pub fn act(dev: &dyn Device, a: Act, x: DevicePtr, y: DevicePtr, n: usize) -> Result<()> {
    // SAFETY: `{act}_fwd_f32(const float* x, float* y, long long n)`; the grid-stride loop
    // writes y[i] for every i < n.
    launch(dev, act_op(a), "fwd", grid_stride(n), &[ptr(x), ptr(y), len(n)])
}

/// gx = gy * act'(x), x the forward input.
pub fn act_backward(dev: &dyn Device, a: Act, x: DevicePtr, gy: DevicePtr, gx: DevicePtr, n: usize) -> Result<()> {
    // SAFETY: `{act}_bwd_f32(const float* x, const float* gy, float* gx, long long n)`; the
    // grid-stride loop writes gx[i] for every i < n.
    launch(dev, act_op(a), "bwd", grid_stride(n), &[ptr(x), ptr(gy), ptr(gx), len(n)])
}

/// y = a + b
pub fn add(dev: &dyn Device, a: DevicePtr, b: DevicePtr, y: DevicePtr, n: usize) -> Result<()> {
    // SAFETY: `add_fwd_f32(const float* a, const float* b, float* y, long long n)`; writes y[i]
    // for every i < n.
    launch(dev, "add", "fwd", grid_stride(n), &[ptr(a), ptr(b), ptr(y), len(n)])
}

/// y[b, p, c] = x[b, p, c] * s[b, c] for x `[batch, hw, c]`; also the input gradient (x = gy).
pub fn channel_scale(dev: &dyn Device, x: DevicePtr, s: DevicePtr, y: DevicePtr, batch: usize, hw: usize, c: usize) -> Result<()> {
    let n = batch * hw * c;
    // SAFETY: `channel_scale_fwd_f32(const float* x, const float* s, float* y, long long n,
    // long long hw, long long c)`; writes y[i] for every i < n = batch*hw*c.
    launch(dev, "channel_scale", "fwd", grid_stride(n), &[ptr(x), ptr(s), ptr(y), len(n), len(hw), len(c)])
}

/// gs[b, c] = Σ_p gy[b, p, c] * x[b, p, c]
pub fn channel_scale_backward_scale(dev: &dyn Device, x: DevicePtr, gy: DevicePtr, gs: DevicePtr, batch: usize, hw: usize, c: usize) -> Result<()> {
    let tiles = c.div_ceil(CS_CHANNELS as usize);
    let cfg = LaunchConfig { grid: [(batch * tiles).max(1) as u32, 1, 1], block: [CS_CHANNELS, CS_ROWS, 1], shared_bytes: 0 };
    // SAFETY: `channel_scale_bwd_scale_f32(const float* x, const float* gy, float* gs,
    // long long batch, long long hw, long long c)`; one block per (image, 32-channel tile), so
    // every gs[b, c] is written by the tile holding c (a sum of zero terms when hw = 0).
    launch(dev, "channel_scale", "bwd_scale", cfg, &[ptr(x), ptr(gy), ptr(gs), len(batch), len(hw), len(c)])
}

/// y = x * scale[c] + shift[c] over NHWC (`n` elements, `c` channels, innermost).
pub fn affine(dev: &dyn Device, x: DevicePtr, scale: DevicePtr, shift: DevicePtr, y: DevicePtr, n: usize, c: usize) -> Result<()> {
    // SAFETY: `affine_fwd_f32(const float* x, const float* scale, const float* shift, float* y,
    // long long n, long long c)`; writes y[i] for every i < n.
    launch(dev, "affine", "fwd", grid_stride(n), &[ptr(x), ptr(scale), ptr(shift), ptr(y), len(n), len(c)])
}

/// gx = gy * scale[c]
pub fn affine_backward(dev: &dyn Device, gy: DevicePtr, scale: DevicePtr, gx: DevicePtr, n: usize, c: usize) -> Result<()> {
    // SAFETY: `affine_bwd_f32(const float* gy, const float* scale, float* gx, long long n,
    // long long c)`; writes gx[i] for every i < n.
    launch(dev, "affine", "bwd", grid_stride(n), &[ptr(gy), ptr(scale), ptr(gx), len(n), len(c)])
}

/// `[n, c, hw]` -> `[n, hw, c]` (y must not alias x).
pub fn nchw_to_nhwc(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, c: usize, hw: usize) -> Result<()> {
    // SAFETY: `layout_nchw_to_nhwc_f32(const float* x, float* y, long long n, long long c,
    // long long hw)`; the loop runs over all n*c*hw destination elements.
    launch(dev, "layout", "nchw_to_nhwc", grid_stride(n * c * hw), &[ptr(x), ptr(y), len(n), len(c), len(hw)])
}

/// `[n, hw, c]` -> `[n, c, hw]` (y must not alias x).
pub fn nhwc_to_nchw(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, c: usize, hw: usize) -> Result<()> {
    // SAFETY: `layout_nhwc_to_nchw_f32(const float* x, float* y, long long n, long long c,
    // long long hw)`; the loop runs over all n*c*hw destination elements.
    launch(dev, "layout", "nhwc_to_nchw", grid_stride(n * c * hw), &[ptr(x), ptr(y), len(n), len(c), len(hw)])
}
