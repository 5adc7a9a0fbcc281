//! Launches for `kernels/linear.cu`: x `[n, in]`, w `[out, in]`, b `[out]`. The bias gradient
//! is [`super::reduce::channel_sum`] over gy (`batch` 1, `rows` n, `c` out). Up to
//! [`ROWS_MAX`] rows (the head of a batch of 1 to 8) the forward and backward data take the
//! few-rows kernels: the tiled GEMM would be 15/16 padding there, with a grid of a few dozen
//! blocks each waiting on one load per K step (resnet50's fc at batch 1: 63 blocks, 128 steps).

use super::{launch, len, opt_ptr, ptr};
use crate::device::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::Result;

/// The kernels this file launches, as `(op, variant)` of [`crate::device::kernel_name`].
pub const KERNELS: &[(&str, &str)] = &[("linear", "fwd"), ("linear", "bwd_data"), ("linear", "bwd_weight"), ("linear", "fwd_rows"), ("linear", "bwd_data_rows")];

/// Most rows the few-rows kernels take (`ROWS_MAX` in linear.cu).
pub const ROWS_MAX: usize = 8;
/// Threads per block of the few-rows kernels (8 warps).
const ROWS_THREADS: u32 = 256;

/// Output tile edge of the GEMM (`LIN_TILE` in linear.cu): one thread per output.
const LIN_TILE: u32 = 16;

/// Multiply-adds of a launch over `[m, n]` with reduction `k`: whole 16x16 tiles, k in steps
/// of 16, every thread in the loop.
fn macs(m: usize, n: usize, k: usize) -> u64 {
    let t = LIN_TILE as usize;
    (m.div_ceil(t) * t) as u64 * (n.div_ceil(t) * t) as u64 * (k.div_ceil(t) * t) as u64
}

/// Grid for an `[m, n]` output.
fn cfg(m: usize, n: usize) -> LaunchConfig {
    let t = LIN_TILE as usize;
    LaunchConfig { grid: [n.div_ceil(t).max(1) as u32, m.div_ceil(t).max(1) as u32, 1], block: [LIN_TILE, LIN_TILE, 1], shared_bytes: 0 }
}

/// y `[n, out]` = x·wᵀ + b
#[allow(clippy::too_many_arguments)]
pub fn forward(dev: &dyn Device, x: DevicePtr, w: DevicePtr, b: Option<DevicePtr>, y: DevicePtr, n: usize, fin: usize, fout: usize) -> Result<()> {
    // SAFETY: `linear_fwd_f32(const float* x, const float* w, const float* b, float* y,
    // long long n, long long in, long long out, int has_bias)`; the grid tiles all of [n, out]
    // and each in-range thread stores its element.
    let args = [ptr(x), ptr(w), opt_ptr(b), ptr(y), len(n), len(fin), len(fout), Arg::I32(b.is_some() as i32)];
    if n <= ROWS_MAX {
        dev.account("linear_fwd_rows", (n * fin * fout) as u64, (n * fin * fout) as u64);
        // SAFETY: `linear_fwd_rows_f32(same signature)`; n <= ROWS_MAX; one warp per output
        // (the grid's whole warps cover fout; warps past it return), lane 0 storing its n values.
        let blocks = (fout * 32).div_ceil(ROWS_THREADS as usize).max(1) as u32;
        return launch(dev, "linear", "fwd_rows", LaunchConfig { grid: [blocks, 1, 1], block: [ROWS_THREADS, 1, 1], shared_bytes: 0 }, &args);
    }
    dev.account("linear_fwd", macs(n, fout, fin), (n * fin * fout) as u64);
    launch(dev, "linear", "fwd", cfg(n, fout), &args)
}

/// gx `[n, in]` = gy·w
pub fn backward_data(dev: &dyn Device, gy: DevicePtr, w: DevicePtr, gx: DevicePtr, n: usize, fin: usize, fout: usize) -> Result<()> {
    let args = [ptr(gy), ptr(w), ptr(gx), len(n), len(fin), len(fout)];
    if n <= ROWS_MAX {
        dev.account("linear_bwd_data_rows", (n * fin * fout) as u64, (n * fin * fout) as u64);
        // SAFETY: `linear_bwd_data_rows_f32(same signature)`; n <= ROWS_MAX; a block of 8 warps
        // per 32 inputs covers all of fin, lanes past it skip the loads and the store.
        let blocks = fin.div_ceil(32).max(1) as u32;
        return launch(dev, "linear", "bwd_data_rows", LaunchConfig { grid: [blocks, 1, 1], block: [ROWS_THREADS, 1, 1], shared_bytes: 0 }, &args);
    }
    dev.account("linear_bwd_data", macs(n, fin, fout), (n * fin * fout) as u64);
    // SAFETY: `linear_bwd_data_f32(const float* gy, const float* w, float* gx, long long n,
    // long long in, long long out)`; the grid tiles all of [n, in].
    launch(dev, "linear", "bwd_data", cfg(n, fin), &args)
}

/// gw `[out, in]` = gyᵀ·x
pub fn backward_weight(dev: &dyn Device, x: DevicePtr, gy: DevicePtr, gw: DevicePtr, n: usize, fin: usize, fout: usize) -> Result<()> {
    // SAFETY: `linear_bwd_weight_f32(const float* x, const float* gy, float* gw, long long n,
    // long long in, long long out)`; the grid tiles all of [out, in].
    launch(dev, "linear", "bwd_weight", cfg(fout, fin), &[ptr(x), ptr(gy), ptr(gw), len(n), len(fin), len(fout)])
}
