//! Launches for `kernels/elementwise.cu`. Shapes: `n` is the element count of the flat tensor;
//! per-channel ops take NHWC `[batch, hw, c]`. Besides the activations and per-channel ops:
//! channel copy (concat and split), fill, and the generic unary / broadcast binary ops and iota
//! the visualisations build on.

use super::{grid_stride, launch, len, ptr};
use crate::device::Arg;
use crate::backend::{Act, Binary, Random, Unary};
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
    ("channel_copy", "fwd"),
    ("fill", "fwd"),
    ("unary", "fwd"),
    ("binary", "fwd"),
    ("iota", "fwd"),
    ("random", "fwd"),
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

/// `y = x * scale[c] + shift[c]` over NHWC (`n` elements, `c` channels, innermost).
pub fn affine(dev: &dyn Device, x: DevicePtr, scale: DevicePtr, shift: DevicePtr, y: DevicePtr, n: usize, c: usize) -> Result<()> {
    // SAFETY: `affine_fwd_f32(const float* x, const float* scale, const float* shift, float* y,
    // long long n, long long c)`; writes y[i] for every i < n.
    launch(dev, "affine", "fwd", grid_stride(n), &[ptr(x), ptr(scale), ptr(shift), ptr(y), len(n), len(c)])
}

/// `gx = gy * scale[c]`
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

/// y = value, `n` elements.
pub fn fill(dev: &dyn Device, y: DevicePtr, n: usize, value: f32) -> Result<()> {
    // SAFETY: `fill_fwd_f32(float* y, long long n, float value)`; writes y[i] for every i < n.
    launch(dev, "fill", "fwd", grid_stride(n), &[ptr(y), len(n), Arg::F32(value)])
}

/// The kernel-side code and parameters of a unary op (`DvUnary` in elementwise.cu).
fn unary_code(op: Unary) -> (i32, f32, f32) {
    match op {
        Unary::Neg => (0, 0.0, 0.0),
        Unary::Abs => (1, 0.0, 0.0),
        Unary::Relu => (2, 0.0, 0.0),
        Unary::Square => (3, 0.0, 0.0),
        Unary::Sqrt => (4, 0.0, 0.0),
        Unary::Exp => (5, 0.0, 0.0),
        Unary::Log => (6, 0.0, 0.0),
        Unary::Step => (7, 0.0, 0.0),
        Unary::Affine(a, b) => (8, a, b),
        Unary::Clamp(lo, hi) => (9, lo, hi),
        Unary::Recip => (10, 0.0, 0.0),
    }
}

/// The kernel-side code of a binary op (`DvBinary` in elementwise.cu).
fn binary_code(op: Binary) -> i32 {
    match op {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::Max => 4,
        Binary::Min => 5,
        Binary::Eq => 6,
    }
}

/// y = op(x), `n` elements in any layout (y may be x).
pub fn unary(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, op: Unary) -> Result<()> {
    let (code, a, b) = unary_code(op);
    // SAFETY: `unary_fwd_f32(const float* x, float* y, long long n, int op, float a, float b)`;
    // writes y[i] for every i < n after reading x[i] in the same thread.
    launch(dev, "unary", "fwd", grid_stride(n), &[ptr(x), ptr(y), len(n), Arg::I32(code), Arg::F32(a), Arg::F32(b)])
}

/// y = op(a, b) over `dims` (y dense in that order, the last fastest), a and b addressed by
/// strides `sa`, `sb` per dim (0 along a broadcast dim). y must not overlap a or b unless it
/// is laid out exactly like it.
#[allow(clippy::too_many_arguments)]
pub fn binary(dev: &dyn Device, a: DevicePtr, b: DevicePtr, y: DevicePtr, dims: [usize; 4], sa: [usize; 4], sb: [usize; 4], op: Binary) -> Result<()> {
    let n: usize = dims.iter().product();
    let mut args = vec![ptr(a), ptr(b), ptr(y), len(n), len(dims[1]), len(dims[2]), len(dims[3])];
    args.extend(sa.iter().chain(&sb).map(|&s| len(s)));
    args.push(Arg::I32(binary_code(op)));
    // SAFETY: `binary_fwd_f32(const float* a, const float* b, float* y, long long n, long long d1,
    // long long d2, long long d3, long long sa0..sa3, long long sb0..sb3, int op)`; writes y[i]
    // for every i < n = d0·d1·d2·d3, reading a and b inside their extents (strides from their
    // own shapes, 0 where broadcast).
    launch(dev, "binary", "fwd", grid_stride(n), &args)
}

/// `n` numbers from `dist` ([`crate::backend::Backend::random`]), the counter of storage index i
/// being its NCHW index when y is NHWC memory of `c` channels and `hw` pixels (c = hw = 1: i).
pub fn random(dev: &dyn Device, y: DevicePtr, n: usize, c: usize, hw: usize, seed: u64, dist: Random) -> Result<()> {
    let normal = Arg::I32(matches!(dist, Random::Normal) as i32);
    // SAFETY: `random_fwd_f32(float* y, long long n, long long c, long long hw,
    // unsigned long long seed, int normal)`; the grid-stride loop writes y[i] for every i < n.
    launch(dev, "random", "fwd", grid_stride(n), &[ptr(y), len(n), len(c), len(hw), Arg::I64(seed as i64), normal])
}

/// `y[i] = i`, `n` elements.
pub fn iota(dev: &dyn Device, y: DevicePtr, n: usize) -> Result<()> {
    // SAFETY: `iota_fwd_f32(float* y, long long n)`; writes y[i] for every i < n.
    launch(dev, "iota", "fwd", grid_stride(n), &[ptr(y), len(n)])
}
