//! Launches for `kernels/reduce.cu`: per-channel sums, channel max-|x|, softmax, weighted
//! channel sums (CAM maps), per-item reductions (objectives and penalties), row-wise top-k.

use super::{grid_stride, launch, len, ptr, MAX_BLOCKS};
use crate::device::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::{Error, Result};

pub const KERNELS: &[(&str, &str)] = &[
    ("channel_sum", "fwd"),
    ("channel_absmax", "fwd"),
    ("softmax", "fwd"),
    ("weighted_channel_sum", "fwd"),
    ("item_reduce", "half_sum_sq"),
    ("item_reduce", "mean_abs"),
    ("topk", "fwd"),
];

/// Channels per block and rows of threads of `channel_sum_fwd_f32` (`CSUM_*` in reduce.cu).
const CSUM_CHANNELS: u32 = 32;
const CSUM_ROWS: u32 = 8;
/// Threads per row of `softmax_fwd_f32` (`SOFTMAX_THREADS`).
const SOFTMAX_THREADS: u32 = 256;
/// Warps per block of `weighted_channel_sum_fwd_f32` (`WCS_WARPS`), one pixel row per warp.
const WCS_WARPS: u32 = 8;
/// Threads per item of `item_reduce_*_f32` (`IR_THREADS`): fixed, so the tree is too.
const IR_THREADS: u32 = 256;
/// Threads per row of `topk_fwd_f32` (`TOPK_THREADS`).
const TOPK_THREADS: u32 = 256;
/// Largest k of [`topk`] (`TOPK_MAX_K`): the kernel reads the row once per output.
pub const TOPK_MAX_K: usize = 64;

/// What [`item_reduce`] computes over each item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemReduce {
    /// ½ Σ x² (an L2 objective or penalty).
    HalfSumSq,
    /// mean |x| (an L1 penalty).
    MeanAbs,
}

impl ItemReduce {
    /// The kernel variant (`item_reduce_{variant}_f32`).
    fn variant(self) -> &'static str {
        match self {
            ItemReduce::HalfSumSq => "half_sum_sq",
            ItemReduce::MeanAbs => "mean_abs",
        }
    }
}

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

/// y[p] = max_c |x[p, c]| for x `[pixels, c]`.
pub fn channel_absmax(dev: &dyn Device, x: DevicePtr, y: DevicePtr, pixels: usize, c: usize) -> Result<()> {
    // SAFETY: `channel_absmax_fwd_f32(const float* x, float* y, long long pixels, long long c)`;
    // the grid-stride loop writes y[p] for every p < pixels.
    launch(dev, "channel_absmax", "fwd", grid_stride(pixels), &[ptr(x), ptr(y), len(pixels), len(c)])
}

/// Row-wise softmax of `[rows, cols]`.
pub fn softmax(dev: &dyn Device, x: DevicePtr, y: DevicePtr, rows: usize, cols: usize) -> Result<()> {
    let cfg = LaunchConfig { grid: [rows.max(1) as u32, 1, 1], block: [SOFTMAX_THREADS, 1, 1], shared_bytes: 0 };
    // SAFETY: `softmax_fwd_f32(const float* x, float* y, long long rows, long long cols)`; block
    // r writes all cols elements of row r.
    launch(dev, "softmax", "fwd", cfg, &[ptr(x), ptr(y), len(rows), len(cols)])
}

/// y[b, p] = Σ_c w[b, c] · x[b, p, c] for NHWC x `[batch, hw, c]` and w `[batch, c]`, then
/// max(0, ·) when `relu` (CAM and Grad-CAM maps).
#[allow(clippy::too_many_arguments)]
pub fn weighted_channel_sum(dev: &dyn Device, x: DevicePtr, w: DevicePtr, y: DevicePtr, batch: usize, hw: usize, c: usize, relu: bool) -> Result<()> {
    let blocks = (batch * hw).div_ceil(WCS_WARPS as usize).clamp(1, MAX_BLOCKS) as u32;
    let cfg = LaunchConfig { grid: [blocks, 1, 1], block: [WCS_WARPS * 32, 1, 1], shared_bytes: 0 };
    // SAFETY: `weighted_channel_sum_fwd_f32(const float* x, const float* w, float* y,
    // long long batch, long long hw, long long c, int relu)`; the warps stride over all batch*hw
    // rows and lane 0 writes y[r] for each.
    launch(dev, "weighted_channel_sum", "fwd", cfg, &[ptr(x), ptr(w), ptr(y), len(batch), len(hw), len(c), Arg::I32(relu as i32)])
}

/// y[b] = ½ Σ_j x[b, j]² or mean_j |x[b, j]| over x `[batch, per_item]`. Deterministic: the
/// same bits on every run (a fixed reduction tree per item, no atomics).
pub fn item_reduce(dev: &dyn Device, x: DevicePtr, y: DevicePtr, batch: usize, per_item: usize, mode: ItemReduce) -> Result<()> {
    let cfg = LaunchConfig { grid: [batch.clamp(1, MAX_BLOCKS) as u32, 1, 1], block: [IR_THREADS, 1, 1], shared_bytes: 0 };
    // SAFETY: `item_reduce_{half_sum_sq,mean_abs}_f32(const float* x, float* y, long long batch,
    // long long per_item)`; the blocks stride over the items and thread 0 writes y[b] for each
    // (0 for an empty item).
    launch(dev, "item_reduce", mode.variant(), cfg, &[ptr(x), ptr(y), len(batch), len(per_item)])
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
