//! The one place the CPU engine multiplies matrices. Every conv and linear op goes through
//! [`sgemm`], so swapping the GEMM crate is a change to this file only.
//!
//! The crate is `matrixmultiply` (without its own thread pool): `benches/gemm.rs` measured it
//! about 1.6x faster than the `gemm` crate at convolution shapes on one core. Threads come
//! from rayon, by splitting C into blocks here, so that calls made from inside rayon tasks
//! (the conv's loop over the batch) share one pool instead of oversubscribing the cores.

use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread: splitting would cost
/// more (each block re-packs its panel of the other operand) than it saves.
const PAR_MIN_MACS: usize = 1 << 20;
/// A block of C handed to one rayon task has at least this many rows (or columns), so that
/// the microkernel (up to 16 wide with AVX-512) still runs on full tiles.
const MIN_BLOCK: usize = 32;

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major `rows x cols` matrix at the start of `data`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }
    /// A row-major `rows x cols` matrix whose rows are `ld` apart (a block of a wider matrix).
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Mat { data, rows, cols, rs: ld, cs: 1 }
    }
    /// The transpose (a view; nothing moves).
    pub fn t(self) -> Self {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    /// Whether every element the view names lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Pointer to C shared by the tasks of one [`sgemm`]; each task writes a disjoint block.
#[derive(Clone, Copy)]
struct SharedC(*mut f32);
// SAFETY: only used inside `sgemm`, whose blocks of C are disjoint and which outlives its tasks.
unsafe impl Send for SharedC {}
unsafe impl Sync for SharedC {}

/// `C = A·B` (or `C += A·B` when `accumulate`), where C is `a.rows x b.cols`, row-major with
/// rows `ldc` apart, at the start of `c`. Panics (a programming error, not a user error) if a
/// view runs past its slice or the inner dimensions differ.
pub fn sgemm(a: Mat, b: Mat, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "sgemm: inner dimensions differ");
    assert!(a.in_bounds() && b.in_bounds(), "sgemm: operand view out of bounds");
    assert!(ldc >= n, "sgemm: ldc < n");
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * ldc + n <= c.len(), "sgemm: C out of bounds");
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }

    let threads = rayon::current_num_threads();
    let split_rows = m >= n;
    let long = if split_rows { m } else { n };
    let blocks = if m * n * k < PAR_MIN_MACS { 1 } else { threads.min(long / MIN_BLOCK).max(1) };
    let per = long.div_ceil(blocks);
    let cp = SharedC(c.as_mut_ptr());
    let beta = if accumulate { 1.0 } else { 0.0 };
    let run = |blk: usize| {
        let lo = blk * per;
        let len = per.min(long - lo);
        let (ao, bo, co, mm, nn) = if split_rows {
            (lo * a.rs, 0, lo * ldc, len, n)
        } else {
            (0, lo * b.cs, lo, m, len)
        };
        #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw-pointer field
        let cp = cp;
        // SAFETY: matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c,
        // rsc, csc). The views were bounds-checked above and the block [lo, lo+len) stays
        // inside them, so every read is in `a.data` / `b.data` and every write in `c`; the
        // blocks of C are disjoint, so no two tasks write the same element. Strides fit in
        // isize because they index slices.
        unsafe {
            matrixmultiply::sgemm(
                mm,
                k,
                nn,
                1.0,
                a.data.as_ptr().add(ao),
                a.rs as isize,
                a.cs as isize,
                b.data.as_ptr().add(bo),
                b.rs as isize,
                b.cs as isize,
                beta,
                cp.0.add(co),
                ldc as isize,
                1,
            )
        }
    };
    if blocks == 1 {
        run(0);
    } else {
        (0..blocks).into_par_iter().for_each(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_with_transposes_and_blocks() {
        // m large enough to take the parallel path; odd sizes throughout
        let (m, k, n) = (301, 37, 129);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        // B stored transposed (n x k) and read through .t()
        let mut bt = vec![0.0; n * k];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        let ldc = n + 3;
        let mut c = vec![1.0; m * ldc];
        sgemm(Mat::rows(&a, m, k), Mat::rows(&bt, n, k).t(), &mut c, ldc, true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>();
                assert!((c[i * ldc + j] - want).abs() < 1e-3, "({i},{j}) {} vs {want}", c[i * ldc + j]);
            }
            assert_eq!(c[i * ldc + n], 1.0, "padding column written");
        }
    }
}
