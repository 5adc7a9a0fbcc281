//! Launches for `kernels/reduce.cu`: per-channel sums, softmax, row-wise top-k, and the generic
//! reductions along any axes ([`reduce`]).

use super::{grid_stride, launch, len, ptr, MAX_BLOCKS};
use crate::device::{Arg, Device, DevicePtr, LaunchConfig};
use crate::backend::Reduce;
use crate::error::{Error, Result};

/// The kernels this file launches, as `(op, variant)` of [`crate::device::kernel_name`].
pub const KERNELS: &[(&str, &str)] = &[
    ("channel_sum", "fwd"),
    ("softmax", "fwd"),
    ("topk", "fwd"),
    ("reduce", "thread"),
    ("reduce", "block"),
    ("reduce", "quantile"),
    ("reduce", "percentile"),
];

/// Channels per block and rows of threads of `channel_sum_fwd_f32` (`CSUM_*` in reduce.cu).
const CSUM_CHANNELS: u32 = 32;
const CSUM_ROWS: u32 = 8;
/// Threads per row of `softmax_fwd_f32` (`SOFTMAX_THREADS`).
const SOFTMAX_THREADS: u32 = 256;
/// Threads per row of `topk_fwd_f32` (`TOPK_THREADS`).
const TOPK_THREADS: u32 = 256;
/// Threads per output of `reduce_block_f32`, `reduce_quantile_f32` and `reduce_percentile_f32`
/// (`RB_THREADS`, `QB_THREADS`, `PB_THREADS`).
const RB_THREADS: u32 = 256;
/// Up to this many reduced elements, one thread per output (`reduce_thread_f32`) beats a block.
const REDUCE_THREAD_MAX: usize = 64;
/// Largest k of [`topk`] (`TOPK_MAX_K`): the kernel reads the row once per output.
pub const TOPK_MAX_K: usize = 64;

/// y[b, c] = scale * Σ_r x[b, r, c] for x `[batch, rows, c]`.
pub fn channel_sum(dev: &dyn Device, x: DevicePtr, y: DevicePtr, batch: usize, rows: usize, c: usize, scale: f32) -> Result<()> {
    let tiles = c.div_ceil(CSUM_CHANNELS as usize);
    let cfg = LaunchConfig { grid: [(batch * tiles).max(1) as u32, 1, 1], block: [CSUM_CHANNELS, CSUM_ROWS, 1], shared_bytes: 0 };
    // SAFETY: `channel_sum_fwd_f32(const float* x, float* y, long long batch, long long rows,
    // long long c, float scale)`; one block per (b, 32-channel tile) writes y[b, c] for every c
    // of its tile.
    launch(dev, "channel_sum", "fwd", cfg, &[ptr(x), ptr(y), len(batch), len(rows), len(c), Arg::F32(scale)])
}

/// y[b, c] = mean over the hw positions of NHWC x (global average pooling, CAM weights).
pub fn spatial_mean(dev: &dyn Device, x: DevicePtr, y: DevicePtr, batch: usize, hw: usize, c: usize) -> Result<()> {
    channel_sum(dev, x, y, batch, hw, c, 1.0 / hw.max(1) as f32)
}

/// Row-wise softmax of `[rows, cols]`.
pub fn softmax(dev: &dyn Device, x: DevicePtr, y: DevicePtr, rows: usize, cols: usize) -> Result<()> {
    let cfg = LaunchConfig { grid: [rows.max(1) as u32, 1, 1], block: [SOFTMAX_THREADS, 1, 1], shared_bytes: 0 };
    // SAFETY: `softmax_fwd_f32(const float* x, float* y, long long rows, long long cols)`; block
    // r writes all cols elements of row r.
    launch(dev, "softmax", "fwd", cfg, &[ptr(x), ptr(y), len(rows), len(cols)])
}

/// The `k` largest values of each row of x `[rows, cols]` into values `[rows, k]` (f32) and
/// their column indices into indices `[rows, k]` (device i32), in descending order. Ties go to
/// the lower index, which is what torch.topk returns on the CPU in practice (PyTorch does not
/// promise an order among equal values); a NaN ranks above every number, as in torch.topk.
/// Errors unless 1 <= k <= min(cols, [`TOPK_MAX_K`]) and cols fits an i32.
#[allow(clippy::too_many_arguments)]
pub fn topk(dev: &dyn Device, x: DevicePtr, values: DevicePtr, indices: DevicePtr, rows: usize, cols: usize, k: usize) -> Result<()> {
    if k == 0 || k > TOPK_MAX_K || k > cols {
        return Err(Error::InvalidArgument(format!("topk: k = {k} must be in 1..={} and at most cols = {cols}", TOPK_MAX_K)));
    }
    if cols > i32::MAX as usize {
        return Err(Error::InvalidArgument(format!("topk: {cols} columns do not fit i32 indices")));
    }
    let cfg = LaunchConfig { grid: [rows.max(1) as u32, 1, 1], block: [TOPK_THREADS, 1, 1], shared_bytes: 0 };
    // SAFETY: `topk_fwd_f32(const float* x, float* values, int* indices, long long rows,
    // long long cols, long long k)`; block r writes values and indices [r, t] for every t < k,
    // and k <= cols means each round finds an element.
    launch(dev, "topk", "fwd", cfg, &[ptr(x), ptr(values), ptr(indices), len(rows), len(cols), len(k)])
}

/// The kernel-side code of a reduction (`DvReduce` in reduce.cu); Quantile and Percentile have
/// their own kernels.
fn reduce_code(op: Reduce) -> i32 {
    match op {
        Reduce::Sum => 0,
        Reduce::Mean => 1,
        Reduce::Max => 2,
        Reduce::Min => 3,
        Reduce::ArgMax => 4,
        Reduce::Quantile(_) | Reduce::Percentile(_) => -1,
    }
}

/// Reduce x into y: y dense over `out_dims` (the last fastest) with `out_strides` into x, each
/// output reducing the elements over `red_dims` (in the logical order of the reduced axes, for
/// ArgMax's positions) with `red_strides` into x.
#[allow(clippy::too_many_arguments)]
pub fn reduce(dev: &dyn Device, x: DevicePtr, y: DevicePtr, out_dims: [usize; 4], out_strides: [usize; 4], red_dims: [usize; 4], red_strides: [usize; 4], op: Reduce) -> Result<()> {
    let (n_out, n_red): (usize, usize) = (out_dims.iter().product(), red_dims.iter().product());
    let mut args = vec![ptr(x), ptr(y), len(n_out), len(n_red), len(out_dims[1]), len(out_dims[2]), len(out_dims[3])];
    args.extend(out_strides.iter().map(|&s| len(s)));
    args.extend([len(red_dims[1]), len(red_dims[2]), len(red_dims[3])]);
    args.extend(red_strides.iter().map(|&s| len(s)));
    let blocks = |threads: u32| LaunchConfig { grid: [n_out.clamp(1, MAX_BLOCKS) as u32, 1, 1], block: [threads, 1, 1], shared_bytes: 0 };
    match op {
        Reduce::Quantile(q) => {
            args.push(Arg::F32(q));
            // SAFETY: `reduce_quantile_f32(<reduce params>, float q)`; the blocks stride over the
            // n_out outputs and thread 0 writes y[o] for each.
            launch(dev, "reduce", "quantile", blocks(RB_THREADS), &args)
        }
        Reduce::Percentile(q) => {
            args.push(Arg::F32(q));
            // SAFETY: `reduce_percentile_f32(<reduce params>, float q)`; the blocks stride over
            // the n_out outputs and thread 0 writes y[o] for each.
            launch(dev, "reduce", "percentile", blocks(RB_THREADS), &args)
        }
        _ if n_red <= REDUCE_THREAD_MAX => {
            args.push(Arg::I32(reduce_code(op)));
            // SAFETY: `reduce_thread_f32(<reduce params>, int op)`; the grid-stride loop writes
            // y[o] for every o < n_out.
            launch(dev, "reduce", "thread", grid_stride(n_out), &args)
        }
        _ => {
            args.push(Arg::I32(reduce_code(op)));
            // SAFETY: `reduce_block_f32(<reduce params>, int op)`; the blocks stride over the
            // n_out outputs and thread 0 writes y[o] for each.
            launch(dev, "reduce", "block", blocks(RB_THREADS), &args)
        }
    }
}
