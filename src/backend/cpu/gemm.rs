//! The one place the CPU engine multiplies matrices. Every conv and linear op goes through
//! [`sgemm`] (or [`sgemm_packed`], with a left operand packed ahead of time), so swapping the
//! GEMM is a change to this file only.
//!
//! Two implementations, chosen at run time:
//! - on x86-64 with AVX-512F, our own (module `avx512`): packed, cache-blocked, with a
//!   [`avx512::MR`] x [`avx512::NR`] register tile of fused multiply-adds (`benches/gemm.rs`
//!   times it against the alternatives);
//! - everywhere else, the `matrixmultiply` crate (without its own thread pool).
//!
//! Threads come from rayon, by splitting C into blocks here, so that calls made from inside
//! rayon tasks (the conv's loop over the batch) share one pool instead of oversubscribing the
//! cores.

use rayon::prelude::*;

use crate::backend::Act;

/// Below this many multiply-adds a product runs on the calling thread: splitting would cost
/// more (each block re-packs its panel of the other operand) than it saves.
const PAR_MIN_MACS: usize = 1 << 20;
/// A block of C handed to one rayon task has at least this many rows (or columns), so that
/// the microkernel still runs on full tiles.
const MIN_BLOCK: usize = 32;

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    /// the elements
    pub data: &'a [f32],
    /// number of rows
    pub rows: usize,
    /// number of columns
    pub cols: usize,
    /// row stride, in elements
    pub rs: usize,
    /// column stride, in elements
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
    /// Element (i, j).
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// Whether this machine runs the AVX-512 GEMM (else `matrixmultiply`) and the AVX-512 depthwise
/// convolution (`conv/depthwise.rs`; else its portable loops). `DEEPVIZ_GEMM=portable`
/// forces the portable path (to compare the two, or to test it on an AVX-512 machine).
pub fn uses_avx512() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let forced_off = std::env::var("DEEPVIZ_GEMM").is_ok_and(|v| v == "portable");
        #[cfg(target_arch = "x86_64")]
        {
            !forced_off && std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = forced_off;
            false
        }
    })
}

/// A left operand packed once for the AVX-512 kernel (a convolution's or a linear layer's
/// weights), reused by every product it is the left factor of.
pub struct PackedA {
    rows: usize,
    cols: usize,
    /// [`avx512::MR`]-row panels over all of k, zero-padded to whole panels
    data: Vec<f32>,
}

impl PackedA {
    /// Pack `a`; `None` where the portable GEMM runs (it packs per call).
    pub fn new(a: Mat) -> Option<PackedA> {
        assert!(a.in_bounds(), "PackedA: view out of bounds");
        if !uses_avx512() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut data = vec![0.0; avx512::packed_a_len(a.rows, a.cols)];
            avx512::pack_a(a, &mut data);
            Some(PackedA { rows: a.rows, cols: a.cols, data })
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }
    /// Rows of the packed matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of the packed matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A right operand the AVX-512 GEMM packs itself, a block at a time, without the matrix ever
/// being written out whole (a convolution's column matrix, made from the image as it is packed).
pub trait PackB: Sync {
    /// Rows of the matrix (the product's inner dimension).
    fn rows(&self) -> usize;
    /// Columns of the matrix.
    fn cols(&self) -> usize;
    /// Write rows `p0..p0+kc`, columns `j0..j0+nc` (nc <= [`PACK_NC`]) into `dst` as
    /// [`PACK_NR`]-column panels, `kc` rows of `PACK_NR` floats each, the last panel's columns past
    /// `nc` zero.
    fn pack(&self, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]);
}

/// Columns of a packed B panel ([`PackB`]).
#[cfg(target_arch = "x86_64")]
pub const PACK_NR: usize = avx512::NR;
#[cfg(not(target_arch = "x86_64"))]
pub const PACK_NR: usize = 32;
/// Most columns [`PackB::pack`] is asked for at once.
#[cfg(target_arch = "x86_64")]
pub const PACK_NC: usize = avx512::NC;
#[cfg(not(target_arch = "x86_64"))]
pub const PACK_NC: usize = 1024;

impl PackB for Mat<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        const NR: usize = PACK_NR;
        let b = self;
        // (only the AVX-512 GEMM packs: contiguous rows by vectors, anything else below)
        #[cfg(target_arch = "x86_64")]
        if b.cs == 1 && uses_avx512() {
            // SAFETY: AVX-512F was detected
            unsafe { avx512::pack_rows(b, p0, kc, j0, nc, dst) };
            return;
        }
        for (jp, d) in dst[..nc.div_ceil(NR) * NR * kc].chunks_exact_mut(NR * kc).enumerate() {
            let c0 = j0 + jp * NR;
            let cols = NR.min(j0 + nc - c0);
            // columns of b are contiguous (b.rs == 1) or strided: gather column by column
            for j in 0..NR {
                if j < cols {
                    for kk in 0..kc {
                        d[kk * NR + j] = b.at(p0 + kk, c0 + j);
                    }
                } else {
                    for kk in 0..kc {
                        d[kk * NR + j] = 0.0;
                    }
                }
            }
        }
    }
}

/// Pointer to C shared by the tasks of one [`sgemm`]; each task writes a disjoint block.
#[derive(Clone, Copy)]
struct SharedC(*mut f32);
// SAFETY: only used inside `sgemm`, whose blocks of C are disjoint and which outlives its tasks.
unsafe impl Send for SharedC {}
unsafe impl Sync for SharedC {}

/// What a product does with C.
#[derive(Clone, Copy, Debug)]
pub enum Out<'a> {
    /// C = A·B
    Overwrite,
    /// C += A·B
    Accumulate,
    /// C = A·B + bias\[i\] in row i (one bias per row of C): a convolution's output, written once
    RowBias(&'a [f32]),
}

impl From<bool> for Out<'_> {
    /// `accumulate`: true → [`Out::Accumulate`], false → [`Out::Overwrite`]
    fn from(accumulate: bool) -> Self {
        if accumulate {
            Out::Accumulate
        } else {
            Out::Overwrite
        }
    }
}

/// What the last store of each tile of C does after the product (a fused epilogue): `C +=
/// residual`, then `C = act(C)`, then `C *= act'(mask)` — the same arithmetic, element by element,
/// as [`crate::backend::cpu`]'s separate add, activation and activation-gradient ops, so a
/// fused convolution equals the unfused one to the bit. The slices are laid out like C (same
/// origin, rows `ldc` apart). Only the AVX-512 GEMM takes one ([`sgemm_source_epi`]).
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// added to C first
    pub residual: Option<&'a [f32]>,
    /// ReLU or ReLU6 only ([`crate::backend::Act::is_mask`])
    pub act: Option<Act>,
    /// a ReLU / ReLU6's forward input or output: the gradient's mask
    pub mask: Option<(&'a [f32], Act)>,
}

impl Epilogue<'_> {
    /// Nothing to do after the product.
    pub fn is_empty(&self) -> bool {
        self.residual.is_none() && self.act.is_none() && self.mask.is_none()
    }
}

/// Checks shared by the entry points (A `m x k`, B `k x n` already checked in bounds); false
/// when there is nothing left to multiply (C then holds its result).
fn check(m: usize, k: usize, n: usize, c: &mut [f32], ldc: usize, out: Out) -> bool {
    // SAFETY: `c` is a live slice of `c.len()` floats
    unsafe { check_raw(m, k, n, c.as_mut_ptr(), c.len(), ldc, out) }
}

/// [`check`] on C as a pointer to `c_len` floats.
///
/// SAFETY: `c` is writable for `c_len` floats (it may be uninitialised unless `out` is
/// `Accumulate`: only written here).
unsafe fn check_raw(m: usize, k: usize, n: usize, c: *mut f32, c_len: usize, ldc: usize, out: Out) -> bool {
    assert!(ldc >= n, "sgemm: ldc < n");
    if let Out::RowBias(b) = out {
        assert!(b.len() >= m, "sgemm: {} biases for {m} rows", b.len());
    }
    if m == 0 || n == 0 {
        return false;
    }
    assert!((m - 1) * ldc + n <= c_len, "sgemm: C out of bounds");
    if k == 0 {
        for i in 0..m {
            let v = match out {
                Out::Overwrite => 0.0,
                Out::RowBias(b) => b[i],
                Out::Accumulate => continue,
            };
            for j in 0..n {
                c.add(i * ldc + j).write(v);
            }
        }
        return false;
    }
    true
}

/// How [`sgemm`] splits C across rayon's threads: (blocks, split along rows, block length).
fn split(m: usize, k: usize, n: usize, row_quantum: usize, col_quantum: usize) -> (usize, bool, usize) {
    let threads = rayon::current_num_threads();
    let split_rows = m >= n;
    let (long, q) = if split_rows { (m, row_quantum) } else { (n, col_quantum) };
    let blocks = if m * n * k < PAR_MIN_MACS { 1 } else { threads.min(long / MIN_BLOCK).max(1) };
    // whole tiles per block, so no block but the last has a ragged edge
    let per = long.div_ceil(blocks).div_ceil(q) * q;
    (long.div_ceil(per), split_rows, per)
}

/// `C = A·B` (or `C += A·B` when `accumulate`), where C is `a.rows x b.cols`, row-major with
/// rows `ldc` apart, at the start of `c`. Panics (a programming error, not a user error) if a
/// view runs past its slice or the inner dimensions differ.
pub fn sgemm(a: Mat, b: Mat, c: &mut [f32], ldc: usize, accumulate: bool) {
    sgemm_packed(a, None, b, c, ldc, accumulate.into());
}

/// [`sgemm`] with the left operand `a` packed ahead of time into `packed` (where the AVX-512
/// GEMM runs; `None` packs it here, and the portable GEMM uses `a` as is; `packed` must be `a`
/// packed), and any [`Out`].
pub fn sgemm_packed(a: Mat, packed: Option<&PackedA>, b: Mat, c: &mut [f32], ldc: usize, out: Out) {
    assert!(b.in_bounds(), "sgemm: operand view out of bounds");
    if uses_avx512() {
        sgemm_source(a, packed, &b, c, ldc, out);
    } else {
        portable(a, b, c, ldc, out);
    }
}

/// [`sgemm_packed`] with a right operand that packs itself. Only where [`uses_avx512`] (the
/// portable GEMM needs B as a matrix); panics elsewhere.
pub fn sgemm_source(a: Mat, packed: Option<&PackedA>, b: &dyn PackB, c: &mut [f32], ldc: usize, out: Out) {
    sgemm_source_epi(a, packed, b, c, ldc, out, Epilogue::default());
}

/// [`sgemm_source`] with an [`Epilogue`] applied in the last store of each tile.
pub fn sgemm_source_epi(a: Mat, packed: Option<&PackedA>, b: &dyn PackB, c: &mut [f32], ldc: usize, out: Out, epi: Epilogue) {
    // SAFETY: `c` is a live slice of `c.len()` floats
    unsafe { sgemm_source_epi_raw(a, packed, b, c.as_mut_ptr(), c.len(), ldc, out, epi) }
}

/// [`sgemm_source_epi`] into C given as a pointer to `c_len` floats, which may be uninitialised
/// unless `out` is `Accumulate`: with `Overwrite` or `RowBias` every element of C's `m x n`
/// block is written before any is read (the first store of each tile does not read C), so a
/// caller can skip zeroing an output the product fills whole.
///
/// # Safety
/// `c` is writable for `c_len` floats, and nothing else reads or writes them during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_source_epi_raw(a: Mat, packed: Option<&PackedA>, b: &dyn PackB, c: *mut f32, c_len: usize, ldc: usize, out: Out, epi: Epilogue) {
    assert!(uses_avx512(), "sgemm_source: only on the AVX-512 path");
    assert!(a.in_bounds(), "sgemm: operand view out of bounds");
    let (m, k, n) = (a.rows, a.cols, b.cols());
    assert_eq!(b.rows(), k, "sgemm: inner dimensions differ");
    let extent = if m == 0 || n == 0 { 0 } else { (m - 1) * ldc + n };
    for t in epi.residual.iter().chain(epi.mask.as_ref().map(|m| &m.0)) {
        assert!(t.len() >= extent, "sgemm: epilogue operand of {} floats for C's {extent}", t.len());
    }
    assert!(epi.act.is_none_or(Act::is_mask) && epi.mask.is_none_or(|m| m.1.is_mask()), "sgemm: the epilogue takes ReLU / ReLU6 only");
    if k == 0 && !epi.is_empty() {
        // no product to end with a store: C is the bias or zeros, then the epilogue
        check_raw(m, k, n, c, c_len, ldc, out);
        if n == 0 {
            return;
        }
        for i in 0..m {
            // rows 0..m of C were written by `check_raw` (or are C's own, accumulating)
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), n);
            epilogue_scalar(row, epi.residual.map(|r| &r[i * ldc..]), epi.act, epi.mask.map(|(t, a)| (&t[i * ldc..], a)));
        }
        return;
    }
    if !check_raw(m, k, n, c, c_len, ldc, out) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let e = avx512::EpiPtr::new(&epi);
        match packed {
            Some(p) => {
                assert!(p.rows == m && p.cols == k, "sgemm: packed operand is {}x{}, a is {m}x{k}", p.rows, p.cols);
                avx512::sgemm_par(&p.data, m, k, b, c, ldc, out, e);
            }
            None => {
                let mut buf = avx512::take_buf(avx512::A_BUF, avx512::packed_a_len(m, k));
                avx512::pack_a_par(a, &mut buf);
                avx512::sgemm_par(&buf, m, k, b, c, ldc, out, e);
                avx512::give_buf(avx512::A_BUF, buf);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (packed, epi);
}

/// The epilogue on a row of C, one element at a time (the reference the vector store matches,
/// and the fallback where there is no product).
pub fn epilogue_scalar(c: &mut [f32], residual: Option<&[f32]>, act: Option<Act>, mask: Option<(&[f32], Act)>) {
    if let Some(r) = residual {
        c.iter_mut().zip(r).for_each(|(v, r)| *v += r);
    }
    use super::elementwise::{act_grad, act_value, per_act};
    if let Some(a) = act {
        macro_rules! apply {
            ($a:expr) => {
                c.iter_mut().for_each(|v| *v = act_value(*v, $a))
            };
        }
        per_act!(a, apply);
    }
    if let Some((m, a)) = mask {
        macro_rules! apply {
            ($a:expr) => {
                c.iter_mut().zip(m).for_each(|(v, &m)| *v *= act_grad(m, $a))
            };
        }
        per_act!(a, apply);
    }
}

/// [`sgemm_packed`] on the portable path (`matrixmultiply`) whatever the machine (for tests and
/// benchmarks; the entry points above take it where the AVX-512 GEMM cannot run).
pub fn portable(a: Mat, b: Mat, c: &mut [f32], ldc: usize, out: Out) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(a.in_bounds() && b.in_bounds(), "sgemm: operand view out of bounds");
    assert_eq!(b.rows, k, "sgemm: inner dimensions differ");
    if !check(m, k, n, c, ldc, out) {
        return;
    }
    let accumulate = match out {
        Out::Overwrite => false,
        Out::Accumulate => true,
        Out::RowBias(bias) => {
            for (row, &b) in c.chunks_mut(ldc).take(m).zip(bias) {
                row[..n].fill(b);
            }
            true
        }
    };
    let (blocks, split_rows, per) = split(m, k, n, 8, 8);
    let long = if split_rows { m } else { n };
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

/// The AVX-512 GEMM. A is packed into `MR`-row panels over all of k (`[k][MR]` each); B, a
/// block of `KC` x `NC` at a time, into `NR`-column panels (`[kc][NR]` each), which stay
/// in L2 while every A panel (in L1) sweeps them. Edges: A and B panels are zero-padded and the
/// kernel stores only the rows and (by mask) the columns inside C.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{split, Mat, Out, PackB, SharedC};
    use crate::backend::Act;
    use rayon::prelude::*;
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    /// rows of the register tile
    pub const MR: usize = 12;
    /// vectors (of 16 floats) across the register tile
    const NV: usize = 2;
    /// columns of the register tile
    pub const NR: usize = NV * 16;
    /// depth of a packed B block
    pub(super) const KC: usize = 256;
    /// width of a packed B block (KC x NC floats = 1 MiB, half of a core's L2)
    pub const NC: usize = 1024;

    pub(super) const A_BUF: usize = 0;
    const B_BUF: usize = 1;

    thread_local! {
        /// Packing buffers kept per thread (so repeated products allocate nothing). Taken out
        /// while in use: a rayon thread waiting inside one product may run another.
        static BUFS: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
    }

    /// This thread's buffer `which`, at least `len` long (contents unspecified).
    pub(super) fn take_buf(which: usize, len: usize) -> Vec<f32> {
        let mut v = BUFS.with(|b| std::mem::take(&mut b.borrow_mut()[which]));
        if v.len() < len {
            v = vec![0.0; len];
        }
        v
    }
    pub(super) fn give_buf(which: usize, v: Vec<f32>) {
        BUFS.with(|b| {
            let slot = &mut b.borrow_mut()[which];
            if v.len() > slot.len() {
                *slot = v;
            }
        });
    }

    /// The mask of a vector's first `n` lanes (all 16 for n >= 16).
    #[inline(always)]
    fn lanes(n: usize) -> u16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// [`PackB::pack`] of a matrix with contiguous rows (`cs == 1`): a few rows at a time across
    /// all panels (the reads stream through a few rows, the writes fill a few consecutive rows
    /// of each panel), each panel row as two loads and two stores; a ragged last panel's loads
    /// are masked, which zero its padding lanes (no memset a row, no element loop).
    ///
    /// SAFETY: AVX-512F present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_rows(b: &Mat, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        const ROWS: usize = 8;
        const { assert!(NR == 32) };
        let panels = nc.div_ceil(NR);
        if kc == 0 || nc == 0 {
            return;
        }
        assert!(b.cs == 1 && dst.len() >= panels * NR * kc && (p0 + kc - 1) * b.rs + j0 + nc <= b.data.len(), "pack_rows: out of bounds");
        let (src, out) = (b.data.as_ptr(), dst.as_mut_ptr());
        for k0 in (0..kc).step_by(ROWS) {
            for jp in 0..panels {
                let c0 = jp * NR;
                let cols = NR.min(nc - c0);
                let (m0, m1) = (lanes(cols), lanes(cols.saturating_sub(16)));
                for kk in k0..kc.min(k0 + ROWS) {
                    // reads: row p0 + kk, columns j0 + c0 .. + cols (in bounds: asserted above);
                    // writes: panel jp's row kk, NR floats inside dst
                    // (a masked-off lane is not read: `wrapping_add`, as the second half may lie
                    // past the data when the panel has 16 columns or fewer)
                    let s = src.add((p0 + kk) * b.rs + j0 + c0);
                    let d = out.add((jp * kc + kk) * NR);
                    _mm512_storeu_ps(d, _mm512_maskz_loadu_ps(m0, s));
                    _mm512_storeu_ps(d.add(16), _mm512_maskz_loadu_ps(m1, s.wrapping_add(16)));
                }
            }
        }
    }

    /// The length of [`pack_a`]'s output for an `m x k` matrix.
    pub fn packed_a_len(m: usize, k: usize) -> usize {
        m.div_ceil(MR) * MR * k
    }

    /// Pack panel `p` of `a` (rows `p*MR..`) into `dst` (`k * MR` floats).
    fn pack_a_panel(a: Mat, p: usize, dst: &mut [f32]) {
        let (r0, k) = (p * MR, a.cols);
        let rows = MR.min(a.rows - r0);
        if a.rs == 1 {
            // column-major (a transposed row-major matrix): each k's MR values are contiguous
            for (kk, d) in dst.chunks_exact_mut(MR).enumerate().take(k) {
                let src = &a.data[kk * a.cs + r0..][..rows];
                d[..rows].copy_from_slice(src);
                d[rows..].fill(0.0);
            }
        } else {
            for i in 0..MR {
                if i < rows {
                    for kk in 0..k {
                        dst[kk * MR + i] = a.at(r0 + i, kk);
                    }
                } else {
                    for kk in 0..k {
                        dst[kk * MR + i] = 0.0;
                    }
                }
            }
        }
    }

    /// Pack all of `a` into `dst` ([`packed_a_len`] floats).
    pub fn pack_a(a: Mat, dst: &mut [f32]) {
        let k = a.cols;
        for (p, d) in dst[..packed_a_len(a.rows, k)].chunks_exact_mut(MR * k).enumerate() {
            pack_a_panel(a, p, d);
        }
    }

    /// [`pack_a`], split across threads when large.
    pub(super) fn pack_a_par(a: Mat, dst: &mut [f32]) {
        let k = a.cols;
        let dst = &mut dst[..packed_a_len(a.rows, k)];
        if dst.len() < 1 << 16 {
            pack_a(a, dst);
        } else {
            dst.par_chunks_exact_mut(MR * k).enumerate().for_each(|(p, d)| pack_a_panel(a, p, d));
        }
    }

    /// An [`super::Epilogue`] as pointers laid out like C (null where absent), moved along with
    /// C's pointer to each block and tile.
    #[derive(Clone, Copy)]
    pub(super) struct EpiPtr {
        res: *const f32,
        mask: *const f32,
        /// 0 none, 1 ReLU, 2 ReLU6
        act: u8,
        mask_act: u8,
    }
    // SAFETY: read-only views of slices that outlive the product (see sgemm_source_epi)
    unsafe impl Send for EpiPtr {}
    unsafe impl Sync for EpiPtr {}

    fn code(a: Option<Act>) -> u8 {
        match a {
            Some(Act::Relu) => 1,
            Some(Act::Relu6) => 2,
            _ => 0,
        }
    }

    impl EpiPtr {
        pub(super) fn new(e: &super::Epilogue) -> EpiPtr {
            EpiPtr {
                res: e.residual.map_or(std::ptr::null(), |r| r.as_ptr()),
                mask: e.mask.map_or(std::ptr::null(), |m| m.0.as_ptr()),
                act: code(e.act),
                mask_act: code(e.mask.map(|m| m.1)),
            }
        }
        fn is_empty(&self) -> bool {
            self.res.is_null() && self.mask.is_null() && self.act == 0
        }
        /// SAFETY: `off` floats further stays inside the slices (C's offset, which does).
        unsafe fn add(self, off: usize) -> EpiPtr {
            EpiPtr {
                res: if self.res.is_null() { self.res } else { self.res.add(off) },
                mask: if self.mask.is_null() { self.mask } else { self.mask.add(off) },
                ..self
            }
        }
        /// The epilogue on the 16 lanes `m` of v, at `off` floats from the tile's origin, as
        /// [`super::epilogue_scalar`] computes it (ReLU: x <= 0 → +0; ReLU6: `f32::clamp`, which
        /// keeps -0 and NaN; gradients multiply by exactly 1 or 0).
        #[inline(always)]
        unsafe fn apply(&self, mut v: __m512, off: usize, m: u16) -> __m512 {
            let (zero, one, six) = (_mm512_setzero_ps(), _mm512_set1_ps(1.0), _mm512_set1_ps(6.0));
            if !self.res.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, self.res.add(off)));
            }
            match self.act {
                1 => v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, zero), zero),
                2 => {
                    v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero), zero);
                    v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, six), six);
                }
                _ => {}
            }
            if !self.mask.is_null() {
                let x = _mm512_maskz_loadu_ps(m, self.mask.add(off));
                // !(x <= 0) (ReLU), !(x <= 0 || x >= 6) (ReLU6): NaN passes
                let mut off_ = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, zero);
                if self.mask_act == 2 {
                    off_ |= _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, six);
                }
                v = _mm512_mul_ps(v, _mm512_mask_mov_ps(one, off_, zero));
            }
            v
        }
    }

    /// How the kernel combines its tile with C.
    #[derive(Clone, Copy)]
    enum First {
        /// C = tile
        Overwrite,
        /// C += tile
        Add,
        /// C = tile + bias[row] (`bias` points at the tile's first row's)
        Bias(*const f32),
    }

    /// `C[0..mr, 0..nr] (+)= Apanel · Bpanel` over `kc`; `ap` is `kc` steps of MR floats,
    /// `bp` `kc` steps of NR floats. The register tile is the panel's first `R` rows (`R` >=
    /// `mr`; a panel's padding rows are zero) by `V` vectors of 16 columns plus `E` single
    /// columns after them (`nr` = 16 V + E exactly when E > 0; with E = 0, `nr <= 16 V` and the
    /// last vector is masked). The single columns are kept as column vectors over the rows (one
    /// masked load of the panel's k-th row of A, E broadcasts of B), so that a ragged edge costs
    /// what it computes: resnet50's 7 x 7 maps are 49 = 32 + 16 + 1 columns, which a 32-wide
    /// tile computed as 64, and its 64-channel layers are 5 panels of 12 rows and one of 4.
    ///
    /// Every element of C is the same chain of fused multiply-adds over k, in order, whatever
    /// the tile: a product's bits do not depend on which tile computed an element.
    ///
    /// SAFETY: AVX-512F present; `ap`/`bp` hold `kc * MR` / `kc * NR` floats; rows `0..mr`
    /// (mr <= R <= MR) of C, columns `0..nr` (nr <= 16 V + E <= NR), rows `ldc` apart, are
    /// writable; a bias pointer has `mr` floats.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const R: usize, const V: usize, const E: usize>(kc: usize, ap: *const f32, bp: *const f32, c: *mut f32, ldc: usize, mr: usize, nr: usize, first: First, epi: Option<EpiPtr>) {
        debug_assert!(mr <= R && R <= MR && 16 * V + E <= NR && nr <= 16 * V + E && (E == 0 || nr == 16 * V + E));
        // C's lines are wanted only at the end: fetch them while the products run
        let lines = V + (E > 0) as usize;
        for i in 0..R {
            if i < mr {
                for j in 0..lines {
                    _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + 16 * j) as *const i8);
                }
            }
        }
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        // extra column e, rows in lanes
        let mut ext = [_mm512_setzero_ps(); E];
        let rows = ((1u32 << R) - 1) as u16;
        let (mut a, mut b) = (ap, bp);
        for _ in 0..kc {
            let mut bv = [_mm512_setzero_ps(); V];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(b.add(16 * j));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i));
                for (j, r) in row.iter_mut().enumerate() {
                    *r = _mm512_fmadd_ps(av, bv[j], *r);
                }
            }
            if E > 0 {
                let col = _mm512_maskz_loadu_ps(rows, a);
                for (e, x) in ext.iter_mut().enumerate() {
                    *x = _mm512_fmadd_ps(col, _mm512_set1_ps(*b.add(16 * V + e)), *x);
                }
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        let masks: [u16; V] = std::array::from_fn(|j| lanes(nr.saturating_sub(16 * j)));
        for (i, row) in acc.iter().enumerate() {
            if i < mr {
                let cr = c.add(i * ldc);
                let base = match first {
                    First::Bias(bias) => Some(_mm512_set1_ps(*bias.add(i))),
                    _ => None,
                };
                for (j, &v) in row.iter().enumerate() {
                    let p = cr.add(16 * j);
                    let m = masks[j];
                    if m == 0xffff {
                        let mut v = match (first, base) {
                            (First::Add, _) => _mm512_add_ps(_mm512_loadu_ps(p), v),
                            (_, Some(b)) => _mm512_add_ps(b, v),
                            _ => v,
                        };
                        if let Some(e) = &epi {
                            v = e.apply(v, i * ldc + 16 * j, m);
                        }
                        _mm512_storeu_ps(p, v);
                    } else if m != 0 {
                        let mut v = match (first, base) {
                            (First::Add, _) => _mm512_add_ps(_mm512_maskz_loadu_ps(m, p), v),
                            (_, Some(b)) => _mm512_add_ps(b, v),
                            _ => v,
                        };
                        if let Some(e) = &epi {
                            v = e.apply(v, i * ldc + 16 * j, m);
                        }
                        _mm512_mask_storeu_ps(p, m, v);
                    }
                }
            }
        }
        for (e, &x) in ext.iter().enumerate() {
            let mut lanes = [0.0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), x);
            for (i, &t) in lanes.iter().enumerate().take(mr) {
                let (off, tv) = (i * ldc + 16 * V + e, _mm512_set1_ps(t));
                let p = c.add(off);
                // one lane through the vector path's arithmetic, so the bits are the same
                let mut v = match first {
                    First::Add => _mm512_add_ps(_mm512_set1_ps(*p), tv),
                    First::Bias(bias) => _mm512_add_ps(_mm512_set1_ps(*bias.add(i)), tv),
                    First::Overwrite => tv,
                };
                if let Some(ep) = &epi {
                    v = ep.apply(v, off, 1);
                }
                *p = _mm512_cvtss_f32(v);
            }
        }
    }

    /// [`kernel`] for a tile of `mr` rows and `nr` columns: the narrowest register tile that
    /// covers it (rows 4, 8 or 12; 16-column vectors, then up to 4 single columns).
    ///
    /// SAFETY: as [`kernel`], with `mr <= MR`, `nr <= NR`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(kc: usize, ap: *const f32, bp: *const f32, c: *mut f32, ldc: usize, mr: usize, nr: usize, first: First, epi: Option<EpiPtr>) {
        match mr {
            0..=4 => tile_cols::<4>(kc, ap, bp, c, ldc, mr, nr, first, epi),
            5..=8 => tile_cols::<8>(kc, ap, bp, c, ldc, mr, nr, first, epi),
            _ => tile_cols::<MR>(kc, ap, bp, c, ldc, mr, nr, first, epi),
        }
    }

    /// [`tile`]'s choice of columns for `R` rows.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_cols<const R: usize>(kc: usize, ap: *const f32, bp: *const f32, c: *mut f32, ldc: usize, mr: usize, nr: usize, first: First, epi: Option<EpiPtr>) {
        macro_rules! go {
            ($v:expr, $e:expr) => {
                kernel::<R, $v, $e>(kc, ap, bp, c, ldc, mr, nr, first, epi)
            };
        }
        match nr {
            1 => go!(0, 1),
            2 => go!(0, 2),
            3 => go!(0, 3),
            4 => go!(0, 4),
            5..=16 => go!(1, 0),
            17 => go!(1, 1),
            18 => go!(1, 2),
            19 => go!(1, 3),
            20 => go!(1, 4),
            _ => go!(NV, 0),
        }
    }

    /// One thread's product: `C[m x n] (+)= A·B[:, j_lo..j_lo+n]`, A packed (all of k), C at `c`.
    ///
    /// SAFETY: AVX-512F present; `pa` is `m x k` packed; `b` is `k x (>= j_lo+n)`; the
    /// `m x n` block of C at `c` with rows `ldc` apart is writable and written by no one else.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_block(pa: &[f32], m: usize, k: usize, b: &dyn PackB, j_lo: usize, n: usize, c: *mut f32, ldc: usize, out: Out, epi: EpiPtr) {
        let mut bbuf = take_buf(B_BUF, KC * NC.min(n.div_ceil(NR) * NR));
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                b.pack(pc, kc, j_lo + jc, nc, &mut bbuf);
                for ir in (0..m).step_by(MR) {
                    let ap = pa.as_ptr().add(ir * k + pc * MR);
                    let mr = MR.min(m - ir);
                    let first = match out {
                        _ if pc > 0 => First::Add,
                        Out::Accumulate => First::Add,
                        Out::Overwrite => First::Overwrite,
                        Out::RowBias(bias) => First::Bias(bias[ir..ir + mr].as_ptr()),
                    };
                    let last = pc + kc == k && !epi.is_empty();
                    for jr in (0..nc).step_by(NR) {
                        let bp = bbuf.as_ptr().add(jr * kc);
                        let off = ir * ldc + jc + jr;
                        tile(kc, ap, bp, c.add(off), ldc, mr, NR.min(nc - jr), first, last.then(|| epi.add(off)));
                    }
                }
            }
        }
        give_buf(B_BUF, bbuf);
    }

    /// `C (+)= A·B` with A packed, split across rayon's threads (checked by the caller).
    ///
    /// SAFETY: `c` is writable for C's `m x n` block with rows `ldc` apart (checked by the
    /// caller), touched by nothing else during the call.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn sgemm_par(pa: &[f32], m: usize, k: usize, b: &dyn PackB, c: *mut f32, ldc: usize, out: Out, epi: EpiPtr) {
        let n = b.cols();
        assert!(pa.len() >= packed_a_len(m, k));
        let (blocks, split_rows, per) = split(m, k, n, MR, NR);
        let cp = SharedC(c);
        let run = |blk: usize| {
            #[allow(clippy::redundant_locals)]
            let cp = cp;
            let lo = blk * per;
            // SAFETY: the caller checked the views and C's extent; blocks are whole MR panels
            // (rows) or a column range, disjoint, inside C; AVX-512F was detected.
            unsafe {
                if split_rows {
                    let len = per.min(m - lo);
                    let out = match out {
                        Out::RowBias(bias) => Out::RowBias(&bias[lo..]),
                        o => o,
                    };
                    gemm_block(&pa[lo * k..], len, k, b, 0, n, cp.0.add(lo * ldc), ldc, out, epi.add(lo * ldc));
                } else {
                    let len = per.min(n - lo);
                    gemm_block(pa, m, k, b, lo, len, cp.0.add(lo), ldc, out, epi.add(lo));
                }
            }
        };
        if blocks == 1 {
            run(0);
        } else {
            (0..blocks).into_par_iter().for_each(run);
        }
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

    /// Every register tile (rows 4 / 8 / 12; 0, 1 or 2 vectors and 0–4 single columns) computes
    /// each element as the same chain of fused multiply-adds over k, block by `KC` block, as a
    /// scalar `mul_add` loop does: the product's bits do not depend on the tile that computed an
    /// element. Every tile row and column count is some shape's edge here (n up to 53: a last
    /// panel of 1–32 columns; 1030: past one `NC` block), k past one `KC` block, each `Out`.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_tile_is_the_same_fma_chain_to_the_bit() {
        if !uses_avx512() {
            return;
        }
        let val = |i: usize, s: usize| ((i * s % 97) as f32 - 48.0) / 37.0 + (i % 7) as f32 * 1e-3;
        for k in [1, 7, 300] {
            for m in [1, 3, 4, 5, 8, 9, 12, 13, 20, 25] {
                for n in (1..=53).chain([196, 1030]) {
                    let a: Vec<f32> = (0..m * k).map(|i| val(i, 31)).collect();
                    let b: Vec<f32> = (0..k * n).map(|i| val(i, 17)).collect();
                    let bias: Vec<f32> = (0..m).map(|i| val(i, 5)).collect();
                    let ldc = n + 2;
                    for mode in 0..3 {
                        let out = [Out::Overwrite, Out::Accumulate, Out::RowBias(&bias)][mode];
                        let c0: Vec<f32> = (0..m * ldc).map(|i| val(i, 3)).collect();
                        let mut want = c0.clone();
                        for i in 0..m {
                            for j in 0..n {
                                let c = &mut want[i * ldc + j];
                                for p0 in (0..k).step_by(avx512::KC) {
                                    let t = (p0..k.min(p0 + avx512::KC)).fold(0.0f32, |t, p| a[i * k + p].mul_add(b[p * n + j], t));
                                    *c = match (p0, out) {
                                        (0, Out::Overwrite) => t,
                                        (0, Out::RowBias(bias)) => bias[i] + t,
                                        _ => *c + t,
                                    };
                                }
                            }
                        }
                        let mut got = c0.clone();
                        sgemm_packed(Mat::rows(&a, m, k), None, Mat::rows(&b, k, n), &mut got, ldc, out);
                        let bad = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
                        assert!(bad.is_none(), "m{m} n{n} k{k} mode{mode}: element {:?}", bad.map(|e| (e / ldc, e % ldc, got[e], want[e])));
                    }
                }
            }
        }
    }
}
