//! Launches for `kernels/reduce.cu`.

use super::{grid_stride, launch, len, ptr};
use crate::device::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::Result;

pub const KERNELS: &[(&str, &str)] = &[("channel_sum", "fwd"), ("channel_absmax", "fwd"), ("softmax", "fwd")];

/// Channels per block and rows of threads of `channel_sum_fwd_f32` (`CSUM_*` in reduce.cu).
const CSUM_CHANNELS: u32 = 32;
const CSUM_ROWS: u32 = 8;
/// Threads per row of `softmax_fwd_f32` (`SOFTMAX_THREADS`).
const SOFTMAX_THREADS: u32 = 256;

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
