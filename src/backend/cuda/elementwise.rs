//! Launches for `kernels/elementwise.cu`. Shapes: `n` is the element count of the flat tensor;
//! per-channel ops take NHWC `[batch, hw, c]`. Besides the activations and per-channel ops, the
//! small vector ops of the visualisation loops: scale, sub, per-item axpy, channel copy (concat
//! and split), one-hot targets, fill.

use super::{grid_stride, launch, len, ptr};
use crate::device::Arg;
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
    ("scale", "fwd"),
    ("sub", "fwd"),
    ("axpy_items", "fwd"),
    ("channel_copy", "fwd"),
    ("one_hot", "fwd"),
    ("fill", "fwd"),
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

/// y = k * x, `n` elements (y may be x).
pub fn scale(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, k: f32) -> Result<()> {
    // SAFETY: `scale_fwd_f32(const float* x, float* y, long long n, float k)`; writes y[i] for
    // every i < n, each after reading x[i] in the same thread (so y may alias x).
    launch(dev, "scale", "fwd", grid_stride(n), &[ptr(x), ptr(y), len(n), Arg::F32(k)])
}

/// y = a - b, `n` elements (y may be a or b).
pub fn sub(dev: &dyn Device, a: DevicePtr, b: DevicePtr, y: DevicePtr, n: usize) -> Result<()> {
    // SAFETY: `sub_fwd_f32(const float* a, const float* b, float* y, long long n)`; writes y[i]
    // for every i < n, each after reading a[i] and b[i] in the same thread.
    launch(dev, "sub", "fwd", grid_stride(n), &[ptr(a), ptr(b), ptr(y), len(n)])
}

/// In place, x[i, j] += alpha[i] * g[i, j] for x, g `[batch, per_item]` and device `alpha`
/// `[batch]` (a per-item step size, e.g. normalised gradient ascent).
pub fn axpy_items(dev: &dyn Device, x: DevicePtr, g: DevicePtr, alpha: DevicePtr, batch: usize, per_item: usize) -> Result<()> {
    // SAFETY: `axpy_items_fwd_f32(float* x, const float* g, const float* alpha, long long batch,
    // long long per_item)`; updates x[i] for every i < batch*per_item, reading only x[i] of x.
    launch(dev, "axpy_items", "fwd", grid_stride(batch * per_item), &[ptr(x), ptr(g), ptr(alpha), len(batch), len(per_item)])
}

/// For p < pixels, k < c: dst[p*dst_stride + dst_off + k] = src[p*src_stride + src_off + k]:
/// NHWC channel concatenation (write a part into its channel range of the output) and its
/// inverse, split (read a part's range out of the gradient). src and dst must not overlap.
#[allow(clippy::too_many_arguments)]
pub fn channel_copy(
    dev: &dyn Device,
    src: DevicePtr,
    dst: DevicePtr,
    pixels: usize,
    c: usize,
    src_stride: usize,
    src_off: usize,
    dst_stride: usize,
    dst_off: usize,
) -> Result<()> {
    let args = [ptr(src), ptr(dst), len(pixels), len(c), len(src_stride), len(src_off), len(dst_stride), len(dst_off)];
    // SAFETY: `channel_copy_fwd_f32(const float* src, float* dst, long long pixels, long long c,
    // long long src_stride, long long src_off, long long dst_stride, long long dst_off)`; writes
    // the c channels at dst_off of each of the pixels rows and nothing else of dst.
    launch(dev, "channel_copy", "fwd", grid_stride(pixels * c), &args)
}

/// y `[n, k]` = 0 except y[i, targets[i]] = 1, for device i32 `targets` `[n]` (a target outside
/// `[0, k)` gives a row of zeros).
pub fn one_hot(dev: &dyn Device, y: DevicePtr, n: usize, k: usize, targets: DevicePtr) -> Result<()> {
    // SAFETY: `one_hot_fwd_f32(const int* targets, float* y, long long n, long long k)`; writes
    // y[i] for every i < n*k.
    launch(dev, "one_hot", "fwd", grid_stride(n * k), &[ptr(targets), ptr(y), len(n), len(k)])
}

/// y = value, `n` elements.
pub fn fill(dev: &dyn Device, y: DevicePtr, n: usize, value: f32) -> Result<()> {
    // SAFETY: `fill_fwd_f32(float* y, long long n, float value)`; writes y[i] for every i < n.
    launch(dev, "fill", "fwd", grid_stride(n), &[ptr(y), len(n), Arg::F32(value)])
}
