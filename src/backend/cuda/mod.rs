//! Launch code for `kernels/*.cu`: for each kernel, one function that computes its grid, block
//! and shared memory and passes its arguments in the order of its C signature. Written against
//! [`Device`], so the emulated device runs exactly what the real GPU runs.
//!
//! - `gpu.rs`: [`Gpu`], the `Backend` of the CUDA engine over any `Device` (tensors stay there).
//! - `mod.rs` (this file): launch helpers, activation codes, the list of every kernel used.
//! - `elementwise.rs`: activations, add, channel scale, affine, channel copy (concat / split),
//!   fill, NCHW <-> NHWC, and the generic unary / broadcast binary ops and iota.
//! - `pool.rs`: max / average / adaptive-average pooling, forward and backward.
//! - `reduce.rs`: per-channel sums, softmax, top-k, and the generic reductions along any axes
//!   (sum, mean, max, min, argmax, exact percentile, histogram quantile).
//! - `linear.rs`: fully connected forward, backward-data, backward-weight.
//! - `gemm_tc.rs`: the TF32 tensor-core GEMM (row-major f32, optional accumulate).
//! - `conv.rs`: implicit-GEMM and depthwise convolution with a fused epilogue (bias, residual,
//!   activation, writing into a channel slice), weight repacking; f32 (`conv.cu`) or tensor
//!   cores (`conv_tc.cu`, TF32 / BF16) by [`crate::backend::Precision`].
//! - `image.rs`: bilinear resize, (de)normalisation, roll, flip, crop / paste, gathering whole
//!   planes, Gaussian blur, affine warp and its adjoint.
//! - `dissect.rs`: Network Dissection's counts (masks against label images) on the device.
//! - `lrn.rs`: local response normalisation across channels, forward and backward.
//!
//! Layout: activations are NHWC (`[n, h, w, c]`) on the device, converted at the boundary with
//! [`elementwise::nchw_to_nhwc`]; conv weights are KKIO `[kh, kw, cin/groups, cout]`
//! ([`conv::repack_weight`]). Every pointer is f32 unless its name says otherwise (`argmax`: u32).

pub mod conv;
pub mod dissect;
pub mod elementwise;
pub mod gemm_tc;
mod gpu;
pub mod image;
pub mod linear;
pub mod lrn;
pub mod pool;
pub mod reduce;

pub use gpu::{DTensor, Gpu, MemoryPool, PoolIdx};

use crate::backend::Act;
use crate::device::{kernel_name, Arg, Device, DevicePtr, LaunchConfig};
use crate::error::Result;

/// The only dtype so far.
pub const DTYPE: &str = "f32";
/// Threads per block of the elementwise (grid-stride) kernels: 8 warps, full occupancy on
/// sm_80..sm_90 at their register counts.
pub const THREADS: u32 = 256;
/// Most blocks of a grid-stride launch: enough to fill any current GPU many times over; the
/// loop covers the rest.
pub const MAX_BLOCKS: usize = 1 << 16;

/// A 1-d grid-stride launch over `n` elements.
pub(crate) fn grid_stride(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig { grid: [blocks, 1, 1], block: [THREADS, 1, 1], shared_bytes: 0 }
}

/// Launch `{op}_{variant}_f32`.
pub(crate) fn launch(dev: &dyn Device, op: &str, variant: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
    dev.launch(&kernel_name(op, variant, DTYPE), cfg, args)
}

pub(crate) fn ptr(p: DevicePtr) -> Arg {
    Arg::Ptr(p)
}
pub(crate) fn len(n: usize) -> Arg {
    Arg::I64(n as i64)
}

/// An optional pointer: a null device pointer when absent (kernels test for null).
pub(crate) fn opt_ptr(p: Option<DevicePtr>) -> Arg {
    Arg::Ptr(p.unwrap_or(DevicePtr(0)))
}

/// The kernel-side activation code (`DvAct` in kernels/common.cuh).
pub fn act_code(a: Option<Act>) -> i32 {
    match a {
        None => 0,
        Some(Act::Relu) => 1,
        Some(Act::Relu6) => 2,
        Some(Act::Silu) => 3,
        Some(Act::Sigmoid) => 4,
        Some(Act::HardSwish) => 5,
    }
}

/// Every kernel name this launch code can use; a device must have all of them.
pub fn kernel_names() -> Vec<String> {
    [elementwise::KERNELS, pool::KERNELS, reduce::KERNELS, linear::KERNELS, conv::KERNELS, image::KERNELS, lrn::KERNELS, gemm_tc::KERNELS, dissect::KERNELS]
        .iter()
        .flat_map(|k| k.iter().map(|(op, variant)| kernel_name(op, variant, DTYPE)))
        .collect()
}
