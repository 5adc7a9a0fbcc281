//! Launches for `kernels/render.cu`: heat maps rendered on the device (per-item range, then
//! normalise + colour + blend into u8 RGB), so only the finished pictures come back.

use super::{grid_stride, launch, len, opt_ptr, ptr, MAX_BLOCKS};
use crate::device::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::Result;
use crate::imageio::Colormap;

pub const KERNELS: &[(&str, &str)] = &[("map_minmax", "fwd"), ("map_clip", "fwd"), ("heatmap", "fwd")];

/// Threads per item of `map_minmax_fwd_f32` (`MM_THREADS` in render.cu): fixed, so the tree is too.
const MM_THREADS: u32 = 256;

/// The kernel-side colormap code (`DvCmap` in kernels/render.cu).
pub fn cmap_code(c: Colormap) -> i32 {
    match c {
        Colormap::Turbo => 0,
        Colormap::Inferno => 1,
        Colormap::Gray => 2,
    }
}

/// range `[batch, 2]` = (min, max) over the finite values of each item of x `[batch, per_item]`
/// (+inf, -inf for an item without any). Deterministic: one block per item, a fixed tree.
pub fn map_minmax(dev: &dyn Device, x: DevicePtr, range: DevicePtr, batch: usize, per_item: usize) -> Result<()> {
    let cfg = LaunchConfig { grid: [batch.clamp(1, MAX_BLOCKS) as u32, 1, 1], block: [MM_THREADS, 1, 1], shared_bytes: 0 };
    // SAFETY: `map_minmax_fwd_f32(const float* x, float* range, long long batch, long long
    // per_item)`; the blocks stride over the items and thread 0 writes range[2b], range[2b+1]
    // for each; reads stay inside x[b * per_item .. (b + 1) * per_item].
    launch(dev, "map_minmax", "fwd", cfg, &[ptr(x), ptr(range), len(batch), len(per_item)])
}

/// Threads per item of `map_clip_fwd_f32` (`CLIP_THREADS` in render.cu).
const CLIP_THREADS: u32 = 256;

/// Lowers each item's hi in `range` (from [`map_minmax`]) to the q-quantile (q in (0, 1]) of the
/// item's finite values of x `[batch, per_item]`, by the histogram rule of
/// [`crate::imageio::clip_threshold`]; an item whose quantile is not strictly inside its range
/// keeps it. Deterministic: integer counts, one block per item.
pub fn map_clip(dev: &dyn Device, x: DevicePtr, range: DevicePtr, batch: usize, per_item: usize, q: f32) -> Result<()> {
    let cfg = LaunchConfig { grid: [batch.clamp(1, MAX_BLOCKS) as u32, 1, 1], block: [CLIP_THREADS, 1, 1], shared_bytes: 0 };
    // SAFETY: `map_clip_fwd_f32(const float* x, float* range, long long batch, long long
    // per_item, float q)`; the blocks stride over the items, read range[2b], range[2b+1] and
    // x[b * per_item .. (b + 1) * per_item], and thread 0 writes range[2b+1] only; the histogram
    // lives in static shared memory.
    launch(dev, "map_clip", "fwd", cfg, &[ptr(x), ptr(range), len(batch), len(per_item), Arg::F32(q)])
}

/// y `[batch, hw, 3]` u8: each value of x `[batch, hw]` normalised by its item's `range`
/// (from [`map_minmax`]; an item whose range is empty renders as 0), coloured by `cmap`, and
/// blended as `(1 - alpha) * base + alpha * colour` over `base` (u8 `[batch, hw, 3]`) when given.
/// `alpha` must already be in [0, 1].
#[allow(clippy::too_many_arguments)]
pub fn heatmap(dev: &dyn Device, x: DevicePtr, range: DevicePtr, base: Option<DevicePtr>, y: DevicePtr, batch: usize, hw: usize, cmap: Colormap, alpha: f32) -> Result<()> {
    // SAFETY: `heatmap_fwd_f32(const float* x, const float* range, const unsigned char* base,
    // unsigned char* y, long long batch, long long hw, int cmap, float alpha)`; the grid-stride
    // loop covers the batch * hw pixels, reading x[i], range[2b..2b+2], base[3i..3i+3] (null:
    // not read) and writing y[3i..3i+3].
    let args = [ptr(x), ptr(range), opt_ptr(base), ptr(y), len(batch), len(hw), Arg::I32(cmap_code(cmap)), Arg::F32(alpha)];
    launch(dev, "heatmap", "fwd", grid_stride(batch * hw), &args)
}
