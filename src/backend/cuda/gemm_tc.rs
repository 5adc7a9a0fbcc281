//! Launches for `kernels/gemm_tc.cu`: the tensor-core (TF32) GEMM on row-major f32 matrices.
//! The mma / ldmatrix / cp.async wrappers it uses live in `kernels/tensorcore.cuh`.

use super::{launch, len, ptr};
use crate::device::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::Result;

/// The kernels this file launches, as `(op, variant)` of [`crate::device::kernel_name`].
pub const KERNELS: &[(&str, &str)] = &[("gemm", "tf32")];

/// C rows per block (`TILE_M` in gemm_tc.cu): 2 warps of one 16-row mma each.
const TILE_M: usize = 32;
/// C columns per block (`TILE_N`): 2 warps of one 8-column mma each.
const TILE_N: usize = 16;
/// Threads per block (`GEMM_THREADS`): the 2x2 warps.
const THREADS: u32 = 128;

/// C `[m, n]` = A `[m, k]` · B `[k, n]` (+ C when `accumulate`), all row-major f32, with TF32
/// tensor cores: inputs rounded to 10 mantissa bits, f32 accumulation (relative error about
/// 1e-3 of Σ|a||b|). Any m, n, k (k = 0 gives zeros, or C unchanged).
#[allow(clippy::too_many_arguments)]
pub fn gemm_tf32(dev: &dyn Device, a: DevicePtr, b: DevicePtr, c: DevicePtr, m: usize, n: usize, k: usize, accumulate: bool) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid: [m.div_ceil(TILE_M) as u32, n.div_ceil(TILE_N) as u32, 1], block: [THREADS, 1, 1], shared_bytes: 0 };
    // SAFETY: `gemm_tf32_f32(const float* a, const float* b, float* c, long long m, long long n,
    // long long k, int accumulate)`; the grid tiles all of [m, n] (x: TILE_M rows, y: TILE_N
    // columns) and every in-range element is stored by the lane that owns it in the C fragment.
    let args = [ptr(a), ptr(b), ptr(c), len(m), len(n), len(k), Arg::I32(accumulate as i32)];
    launch(dev, "gemm", "tf32", cfg, &args)
}
