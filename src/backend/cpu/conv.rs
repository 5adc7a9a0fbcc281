//! Convolution on the CPU: im2col + GEMM, and a direct loop when each group has one input
//! channel (depthwise), where im2col would only copy the input to multiply it by a vector.
//!
//! Notation: x `[N, C, H, W]`, w `[O, C/G, KH, KW]`, y `[N, O, OH, OW]`; per group
//! `CG = C/G` input and `OG = O/G` output channels, `K = CG*KH*KW` rows of the column matrix,
//! `P = OH*OW` output positions. The column matrix of one image and group is `[K, P]`, row
//! `(c, kh, kw)`, built a band of output rows at a time so its size stays bounded
//! ([`COL_BUDGET`]). Then, per band:
//! - forward:         `y_g[:, band] = W_g · col`                       (`[OG,K]·[K,P]`)
//! - backward-data:   `col = W_gᵀ · gy_g[:, band]`, then col2im adds col into gx
//! - backward-filter: `gw_g += gy_g[:, band] · colᵀ`, summed over the batch in order
//!
//! Forward and backward-data run rayon over the batch (each image's output is its own slice);
//! backward-filter runs the batch in order and lets the GEMM split its output across threads,
//! so its sums do not depend on scheduling.

use super::gemm::{epilogue_scalar, sgemm, sgemm_packed, sgemm_source_epi_raw, uses_avx512, Epilogue, Mat, Out, PackB, PackedA, PACK_NR};
use crate::backend::{Act, Conv2dGeom};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

mod depthwise;

/// Most floats in one column-matrix band (4 MiB): bounds memory at large images (VGG's second
/// conv would need 115 MB per image unbanded) while keeping each GEMM big enough to be fast.
const COL_BUDGET: usize = 1 << 20;
/// Floats of work below which a rayon task is not worth its scheduling cost.
const MIN_TASK: usize = 1 << 14;

/// The sizes every function below needs, from the shapes and the geometry.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    cg: usize,
    og: usize,
    g: Conv2dGeom,
}

impl Dims {
    fn new(x_shape: &[usize], w_shape: &[usize], g: &Conv2dGeom) -> Dims {
        debug_assert!(x_shape.len() == 4 && w_shape.len() == 4, "conv2d: x {x_shape:?}, w {w_shape:?}");
        let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
        let (o, cg, kh, kw) = (w_shape[0], w_shape[1], w_shape[2], w_shape[3]);
        debug_assert!(g.groups > 0 && c == cg * g.groups && o % g.groups == 0, "conv2d: groups");
        let (oh, ow) = g.out_hw(h, w, kh, kw).unwrap_or((0, 0));
        Dims { n, c, h, w, o, kh, kw, oh, ow, cg, og: o / g.groups, g: *g }
    }
    fn k(&self) -> usize {
        self.cg * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Output rows per column band.
    fn band_rows(&self) -> usize {
        (COL_BUDGET / (self.k() * self.ow).max(1)).clamp(1, self.oh.max(1))
    }
    /// Input row for output row `oy` and kernel row `ky`, if inside the image.
    fn in_row(&self, oy: usize, ky: usize) -> Option<usize> {
        let r = (oy * self.g.stride[0] + ky * self.g.dilation[0]) as isize - self.g.pad[0] as isize;
        (r >= 0 && (r as usize) < self.h).then_some(r as usize)
    }
    /// For kernel column `kx`: the range `lo..hi` of output columns whose input column lies
    /// inside the image, and the input column read by output column `lo` (consecutive output
    /// columns read every `stride[1]`-th input column from there). `lo == hi` when none does.
    fn col_span(&self, kx: usize) -> (usize, usize, usize) {
        let s = self.g.stride[1] as isize;
        let off = (kx * self.g.dilation[1]) as isize - self.g.pad[2] as isize;
        let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
        let hi = (self.w as isize - off + s - 1).div_euclid(s).max(0);
        let lo = (lo as usize).min(self.ow);
        let hi = (hi as usize).clamp(lo, self.ow);
        (lo, hi, if lo < hi { (lo as isize * s + off) as usize } else { 0 })
    }
}

impl Dims {
    /// Output columns `ox0..ox0 + seg.len()` of one output row for one kernel tap into `seg`:
    /// the taps' input row `iy` of `plane` (`None`: above or below the image), `span` the tap's
    /// [`Dims::col_span`]; padding as zeros.
    fn put_run(&self, seg: &mut [f32], plane: &[f32], iy: Option<usize>, ox0: usize, (lo, hi, first): (usize, usize, usize)) {
        let Some(iy) = iy else {
            seg.fill(0.0);
            return;
        };
        // output columns a..b read inside the image, from input column first + (a-lo)*sw
        let (ox1, sw) = (ox0 + seg.len(), self.g.stride[1]);
        let (a, b) = (lo.clamp(ox0, ox1), hi.clamp(ox0, ox1));
        seg[..a - ox0].fill(0.0);
        seg[b - ox0..].fill(0.0);
        if a < b {
            let src = &plane[iy * self.w + first + (a - lo) * sw..(iy + 1) * self.w];
            let out = &mut seg[a - ox0..b - ox0];
            if sw == 1 {
                out.copy_from_slice(&src[..b - a]);
            } else {
                out.iter_mut().zip(src.iter().step_by(sw)).for_each(|(v, x)| *v = *x);
            }
        }
    }
}

/// `x[j * sx] += a * y[j]` for every j of y (the adjoint of [`axpy`]).
fn scatter_axpy(x: &mut [f32], sx: usize, a: f32, y: &[f32]) {
    if sx == 1 {
        x.iter_mut().zip(y).for_each(|(x, y)| *x += a * y);
    } else {
        x.iter_mut().step_by(sx).zip(y).for_each(|(x, y)| *x += a * y);
    }
}

/// Row `r` = (ci, ky, kx) of the column matrix of one group's input planes `x` (`[CG, H, W]`),
/// at output positions `j0..j0 + out.len()` (row-major over the output plane); padding reads as
/// zero.
fn im2col_row(d: &Dims, x: &[f32], r: usize, j0: usize, out: &mut [f32]) {
    let (ci, ky, kx) = (r / (d.kh * d.kw), r / d.kw % d.kh, r % d.kw);
    let plane = &x[ci * d.h * d.w..(ci + 1) * d.h * d.w];
    let span = d.col_span(kx);
    let (mut pos, end, mut o) = (j0, j0 + out.len(), 0);
    while pos < end {
        let (oy, ox0) = (pos / d.ow, pos % d.ow);
        let ox1 = d.ow.min(ox0 + end - pos);
        d.put_run(&mut out[o..o + ox1 - ox0], plane, d.in_row(oy, ky), ox0, span);
        o += ox1 - ox0;
        pos += ox1 - ox0;
    }
}

/// Fill `col` (`[K, rows*OW]`) with the patches of output rows `y0..y0+rows` of one group's
/// input planes `x` (`[CG, H, W]`); padding reads as zero.
fn im2col(d: &Dims, x: &[f32], y0: usize, rows: usize, col: &mut [f32]) {
    let pc = rows * d.ow;
    col.par_chunks_mut(pc).with_min_len(MIN_TASK / pc + 1).enumerate().for_each(|(r, dst)| im2col_row(d, x, r, y0 * d.ow, dst));
}

/// The column matrix of one group's input planes as a GEMM operand that is never written out
/// whole: the GEMM packs it a block at a time straight from the image.
struct Im2col<'a> {
    d: &'a Dims,
    x: &'a [f32],
    /// [`Dims::col_span`] of each kernel column, found once per convolution
    spans: &'a [(usize, usize, usize)],
}

impl PackB for Im2col<'_> {
    fn rows(&self) -> usize {
        self.d.k()
    }
    fn cols(&self) -> usize {
        self.d.p()
    }
    /// Straight into the panels, one copy per float: per panel, its output positions as runs
    /// within one output row (found once), then per row of the block, each run from its input
    /// row (padding as zeros), the row's kernel tap counted along instead of divided out.
    fn pack(&self, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        const NR: usize = PACK_NR;
        let (d, sw, khw) = (self.d, self.d.g.stride[1], self.d.kh * self.d.kw);
        #[cfg(target_arch = "x86_64")]
        let (avx512, mut loads) = (uses_avx512(), [(std::ptr::null::<f32>(), 0u32); NR]);
        for (jp, panel) in dst[..nc.div_ceil(NR) * NR * kc].chunks_exact_mut(NR * kc).enumerate() {
            let c0 = j0 + jp * NR;
            let cols = NR.min(j0 + nc - c0);
            // (output row, first output column, length, first lane)
            let mut runs = [(0usize, 0usize, 0usize, 0usize); NR];
            let (mut nruns, mut lane) = (0, 0);
            while lane < cols {
                let (oy, ox) = ((c0 + lane) / d.ow, (c0 + lane) % d.ow);
                let len = (d.ow - ox).min(cols - lane);
                runs[nruns] = (oy, ox, len, lane);
                nruns += 1;
                lane += len;
            }
            let (mut ci, mut ky, mut kx) = (p0 / khw, p0 / d.kw % d.kh, p0 % d.kw);
            for row in panel.chunks_exact_mut(NR) {
                let plane = &self.x[ci * d.h * d.w..(ci + 1) * d.h * d.w];
                let (lo, hi, first) = self.spans[kx];
                #[cfg(target_arch = "x86_64")]
                if sw <= 2 && avx512 {
                    // each run's lanes inside the image, as masked loads: lane `l` of the run
                    // reads `base + sw·l`
                    let mut nl = 0;
                    for &(oy, ox0, len, l0) in &runs[..nruns] {
                        let Some(iy) = d.in_row(oy, ky) else { continue };
                        let (a, b) = (lo.clamp(ox0, ox0 + len), hi.clamp(ox0, ox0 + len));
                        if a < b {
                            let lane = l0 + a - ox0;
                            let base = plane[iy * d.w + first + (a - lo) * sw..][..(b - a - 1) * sw + 1].as_ptr().wrapping_sub(lane * sw);
                            loads[nl] = (base, (((1u64 << (b - a)) - 1) << lane) as u32);
                            nl += 1;
                        }
                    }
                    // SAFETY: AVX-512F is present (`avx512`); `row` holds NR = 32 floats; each
                    // load reads only the lanes of its mask, which the slice above bounds-checked
                    unsafe {
                        if sw == 1 {
                            put_row_masked(row.as_mut_ptr(), &loads[..nl])
                        } else {
                            put_row_masked_s2(row.as_mut_ptr(), &loads[..nl])
                        }
                    };
                    (kx, ky, ci) = next_tap(kx, ky, ci, d);
                    continue;
                }
                for &(oy, ox0, len, l0) in &runs[..nruns] {
                    d.put_run(&mut row[l0..l0 + len], plane, d.in_row(oy, ky), ox0, (lo, hi, first));
                }
                row[cols..].fill(0.0);
                (kx, ky, ci) = next_tap(kx, ky, ci, d);
            }
        }
    }
}

/// The column matrix's next row after kernel tap `kx`, `ky` of input channel `ci`.
#[inline(always)]
fn next_tap(kx: usize, ky: usize, ci: usize, d: &Dims) -> (usize, usize, usize) {
    match (kx + 1 == d.kw, ky + 1 == d.kh) {
        (false, _) => (kx + 1, ky, ci),
        (true, false) => (0, ky + 1, ci),
        (true, true) => (0, 0, ci + 1),
    }
}

/// One packed row of [`PACK_NR`] = 32 lanes: zeros, then each `(base, mask)`'s lanes `l` of
/// `mask` loaded from `base + l` (masked loads: no other lane is read), then stored whole.
///
/// SAFETY: AVX-512F present; `row` is writable for 32 floats; for each load, `base + l` is
/// readable for every set bit `l` of its mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn put_row_masked(row: *mut f32, loads: &[(*const f32, u32)]) {
    use std::arch::x86_64::*;
    const { assert!(PACK_NR == 32) };
    let (mut v0, mut v1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for &(base, mask) in loads {
        v0 = _mm512_mask_loadu_ps(v0, mask as u16, base);
        v1 = _mm512_mask_loadu_ps(v1, (mask >> 16) as u16, base.wrapping_add(16));
    }
    _mm512_storeu_ps(row, v0);
    _mm512_storeu_ps(row.add(16), v1);
}

/// [`put_row_masked`] at stride 2: lane `l` of a load's mask reads `base + 2l`. Each half of the
/// row is two masked loads (lanes 0–7 of the half from the even floats of its first 16, lanes
/// 8–15 from the next 16; only the floats of set lanes are read) and a permute of their even
/// lanes, merged under the mask.
///
/// SAFETY: AVX-512F present; `row` is writable for 32 floats; for each load, `base + 2l` is
/// readable for every set bit `l` of its mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn put_row_masked_s2(row: *mut f32, loads: &[(*const f32, u32)]) {
    use std::arch::x86_64::*;
    const { assert!(PACK_NR == 32) };
    // bits 0..8 of m to the even bits 0, 2, .., 14
    let spread = |m: u32| {
        let mut x = m & 0xff;
        x = (x | (x << 4)) & 0x0f0f;
        x = (x | (x << 2)) & 0x3333;
        ((x | (x << 1)) & 0x5555) as u16
    };
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mut v = [_mm512_setzero_ps(); 2];
    for &(base, mask) in loads {
        for (h, vh) in v.iter_mut().enumerate() {
            let m = (mask >> (16 * h)) & 0xffff;
            if m == 0 {
                continue;
            }
            let p = base.wrapping_add(32 * h);
            let a = _mm512_maskz_loadu_ps(spread(m), p);
            let b = _mm512_maskz_loadu_ps(spread(m >> 8), p.wrapping_add(16));
            *vh = _mm512_mask_mov_ps(*vh, m as u16, _mm512_permutex2var_ps(a, evens, b));
        }
    }
    _mm512_storeu_ps(row, v[0]);
    _mm512_storeu_ps(row.add(16), v[1]);
}

/// The adjoint of [`im2col`]: add each column entry into the input position it was read from.
fn col2im(d: &Dims, col: &[f32], y0: usize, rows: usize, x: &mut [f32]) {
    let (sw, pc, kk) = (d.g.stride[1], rows * d.ow, d.kh * d.kw);
    // one task per input channel: the channel's planes are disjoint, its K rows are not
    x.par_chunks_mut(d.h * d.w).with_min_len(MIN_TASK / (kk * pc) + 1).enumerate().for_each(|(ci, plane)| {
        for kr in 0..kk {
            let (ky, kx) = (kr / d.kw, kr % d.kw);
            let src = &col[(ci * kk + kr) * pc..(ci * kk + kr + 1) * pc];
            let (lo, hi, first) = d.col_span(kx);
            if lo == hi {
                continue;
            }
            for (oy, s) in (y0..y0 + rows).zip(src.chunks(d.ow)) {
                let Some(iy) = d.in_row(oy, ky) else { continue };
                scatter_axpy(&mut plane[iy * d.w + first..(iy + 1) * d.w], sw, 1.0, &s[lo..hi]);
            }
        }
    });
}

/// One group's weights `W_g` (`[OG, K]`) packed as the left factor of the forward product, per
/// group; `None` where the GEMM packs per call.
pub fn pack_forward(w: &Tensor, groups: usize) -> Option<Vec<PackedA>> {
    let (o, k) = (w.shape[0], w.numel() / w.shape[0].max(1));
    let og = o / groups;
    (0..groups).map(|gi| PackedA::new(Mat::rows(&w.data[gi * og * k..(gi + 1) * og * k], og, k))).collect()
}

/// `W_gᵀ` (`[K, OG]`) packed as the left factor of the backward-data product, per group.
pub fn pack_backward(w: &Tensor, groups: usize) -> Option<Vec<PackedA>> {
    let (o, k) = (w.shape[0], w.numel() / w.shape[0].max(1));
    let og = o / groups;
    (0..groups).map(|gi| PackedA::new(Mat::rows(&w.data[gi * og * k..(gi + 1) * og * k], og, k).t())).collect()
}

impl Dims {
    /// A 1x1 convolution reading every input pixel once, in order: its column matrix is the
    /// input itself (and backward-data's is the input gradient).
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.g.stride == [1, 1] && self.g.pad == [0; 4]
    }
}

/// A tensor of `shape` whose every plane `[h, w]` holds its channel's bias (or 0): written once,
/// in parallel (a plane per task, its pages first touched there), so the products accumulate
/// into it instead of into zeros the bias is added to afterwards.
fn planes_of_bias(shape: [usize; 4], b: Option<&Tensor>) -> Tensor {
    let [_, o, oh, ow] = shape;
    let p = oh * ow;
    let fill = |i: usize, plane: &mut [MaybeUninit<f32>]| {
        plane.fill(MaybeUninit::new(b.map_or(0.0, |b| b.data[i % o])));
    };
    // SAFETY: `fill` writes every float of its plane
    unsafe { par_chunks_written(&shape, p, MIN_TASK / p.max(1) + 1, fill) }
}

/// A tensor of `shape` whose items (the `shape[0]` slices of `item` floats) are made by
/// `fill(i, item)` in parallel, each zeroed first on the task that fills it: the zeroing and the
/// first touch of the pages spread over the threads instead of one serial memset on the caller's
/// thread (`Tensor::zeros`' calloc reuses freed memory and clears it there: ~3% of resnet50's
/// time, on one core).
fn par_items(shape: &[usize], item: usize, fill: impl Fn(usize, &mut [f32]) + Send + Sync) -> Tensor {
    let zeroed = |i: usize, chunk: &mut [MaybeUninit<f32>]| {
        chunk.fill(MaybeUninit::new(0.0));
        // SAFETY: every element of `chunk` was initialised on the line above
        fill(i, unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) });
    };
    // SAFETY: `zeroed` writes every float of its item
    unsafe { par_chunks_written(shape, item, 1, zeroed) }
}

/// [`par_items`] without the zeroing, for a `fill(i, item)` that writes every float of the
/// item at the pointer it is given (a product whose first store overwrites).
///
/// SAFETY: `fill` writes all `item` floats at its pointer, and reads none it has not written.
unsafe fn par_items_written(shape: &[usize], item: usize, fill: impl Fn(usize, *mut f32) + Send + Sync) -> Tensor {
    // SAFETY: the caller's promise
    unsafe { par_chunks_written(shape, item, 1, |i, chunk: &mut [MaybeUninit<f32>]| fill(i, chunk.as_mut_ptr().cast())) }
}

/// The one allocation behind the three above: an uninitialised tensor of `shape`, its chunks of
/// `chunk` floats handed to `fill` in parallel (at least `min_len` chunks a task).
///
/// SAFETY: `fill` initialises every float of each chunk it is given.
unsafe fn par_chunks_written(shape: &[usize], chunk: usize, min_len: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Send + Sync) -> Tensor {
    let total: usize = shape.iter().product();
    debug_assert!(chunk == 0 || total % chunk == 0);
    let mut data: Vec<f32> = Vec::with_capacity(total);
    data.spare_capacity_mut()[..total].par_chunks_mut(chunk.max(1)).with_min_len(min_len).enumerate().for_each(|(i, c)| fill(i, c));
    // SAFETY: the chunks cover `0..total` (chunk == 0: total == 0), each initialised by `fill`
    unsafe { data.set_len(total) };
    Tensor { shape: shape.to_vec(), data }
}

pub fn forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Conv2dGeom) -> Tensor {
    forward_packed(x, w, None, b, g)
}

/// [`forward`] with `packed` = [`pack_forward`]`(w, groups)` (or `None`: packed per call).
pub fn forward_packed(x: &Tensor, w: &Tensor, packed: Option<&[PackedA]>, b: Option<&Tensor>, g: &Conv2dGeom) -> Tensor {
    forward_epi(x, w, packed, b, g, Epi::default())
}

/// What a convolution does to its output after the product, as whole tensors of the output's
/// shape (see [`Epilogue`]): the forward fusion's residual and activation, the backward-data
/// fusion's mask.
#[derive(Clone, Copy, Default)]
pub struct Epi<'a> {
    pub residual: Option<&'a Tensor>,
    pub act: Option<Act>,
    pub mask: Option<(&'a Tensor, Act)>,
}

impl<'a> Epi<'a> {
    /// The epilogue for the slice of the output starting at `off` (elements).
    fn at(&self, off: usize) -> Epilogue<'a> {
        Epilogue { residual: self.residual.map(|r| &r.data[off..]), act: self.act, mask: self.mask.map(|(m, a)| (&m.data[off..], a)) }
    }
    fn is_empty(&self) -> bool {
        self.residual.is_none() && self.act.is_none() && self.mask.is_none()
    }
    /// Apply it, one element at a time, to `y`, the output's elements from `off` on.
    fn apply(&self, y: &mut [f32], off: usize) {
        if !self.is_empty() {
            let e = self.at(off);
            epilogue_scalar(y, e.residual, e.act, e.mask);
        }
    }
}

/// [`forward_packed`] with the epilogue `epi` in the GEMM's last store where the AVX-512 GEMM
/// runs, and applied right after each image's product elsewhere (the depthwise and portable
/// paths): the same numbers as the unfused ops either way.
pub fn forward_epi(x: &Tensor, w: &Tensor, packed: Option<&[PackedA]>, b: Option<&Tensor>, g: &Conv2dGeom, epi: Epi) -> Tensor {
    let d = Dims::new(&x.shape, &w.shape, g);
    let (p, k) = (d.p(), d.k());
    for t in epi.residual.iter().chain(epi.mask.as_ref().map(|m| &m.0)) {
        assert_eq!(t.shape, [d.n, d.o, d.oh, d.ow], "conv2d: epilogue operand shape");
    }
    if d.cg == 1 || p == 0 || d.n == 0 {
        let mut y = planes_of_bias([d.n, d.o, d.oh, d.ow], b);
        if p > 0 && d.n > 0 {
            depthwise::forward(&d, x, w, &mut y);
        }
        if !epi.is_empty() {
            y.data.par_chunks_mut(1 << 14).enumerate().for_each(|(i, c)| epi.apply(c, i << 14));
        }
        return y;
    }
    debug_assert!(b.is_none_or(|b| b.numel() == d.o));
    let out_of = |gi: usize| b.map_or(Out::Overwrite, |b| Out::RowBias(&b.data[gi * d.og..(gi + 1) * d.og]));
    if uses_avx512() {
        // the AVX-512 GEMM packs the column matrix straight from the image, and writes every
        // element of each group's `[OG, P]` block (its first store overwrites): the output is
        // never zeroed
        let spans: Vec<(usize, usize, usize)> = (0..d.kw).map(|kx| d.col_span(kx)).collect();
        let body = |ni: usize, yn: *mut f32| {
            let xn = x.item(ni);
            for gi in 0..g.groups {
                let xg = &xn[gi * d.cg * d.h * d.w..(gi + 1) * d.cg * d.h * d.w];
                let wg = Mat::rows(&w.data[gi * d.og * k..(gi + 1) * d.og * k], d.og, k);
                let (pw, off) = (packed.map(|v| &v[gi]), gi * d.og * p);
                let e = epi.at(ni * d.o * p + off);
                // SAFETY: `yn` is writable for the image's O·P floats, of which this group's
                // OG·P from `off` are written by this product only
                unsafe {
                    let c = yn.add(off);
                    if d.pointwise() {
                        sgemm_source_epi_raw(wg, pw, &Mat::rows(xg, k, p), c, d.og * p, p, out_of(gi), e);
                    } else {
                        sgemm_source_epi_raw(wg, pw, &Im2col { d: &d, x: xg, spans: &spans }, c, d.og * p, p, out_of(gi), e);
                    }
                }
            }
        };
        // SAFETY: `body` writes all O·P floats of each image (every group's block, whole)
        return unsafe { par_items_written(&[d.n, d.o, d.oh, d.ow], d.o * p, body) };
    }
    // the portable GEMM multiplies the column matrix a band of output rows at a time
    let band = if d.pointwise() { d.oh } else { d.band_rows() };
    par_items(&[d.n, d.o, d.oh, d.ow], d.o * p, |ni, yn| {
        let xn = x.item(ni);
        let mut col = if d.pointwise() { vec![] } else { vec![0.0; k * band * d.ow] };
        for gi in 0..g.groups {
            let xg = &xn[gi * d.cg * d.h * d.w..(gi + 1) * d.cg * d.h * d.w];
            let wg = Mat::rows(&w.data[gi * d.og * k..(gi + 1) * d.og * k], d.og, k);
            let pw = packed.map(|v| &v[gi]);
            for y0 in (0..d.oh).step_by(band) {
                let rows = band.min(d.oh - y0);
                let pc = rows * d.ow;
                let c = &mut yn[gi * d.og * p + y0 * d.ow..];
                if d.pointwise() {
                    sgemm_packed(wg, pw, Mat::rows(xg, k, p), c, p, out_of(gi));
                } else {
                    im2col(&d, xg, y0, rows, &mut col[..k * pc]);
                    sgemm_packed(wg, pw, Mat::rows(&col, k, pc), c, p, out_of(gi));
                }
            }
        }
        epi.apply(yn, ni * d.o * p);
    })
}

pub fn backward_data(gy: &Tensor, w: &Tensor, x_shape: &[usize], g: &Conv2dGeom) -> Tensor {
    match flipped_geom(&w.shape, g) {
        Some(fg) => {
            let gx = forward(gy, &flip(w, g.groups), None, &fg);
            debug_assert_eq!(gx.shape, x_shape);
            gx
        }
        None => backward_data_packed(gy, w, None, x_shape, g),
    }
}

/// Where backward-data is a forward convolution of the output gradient (stride 1, each padding
/// at most the kernel's extent less one, more than one input channel per group): the geometry of
/// that convolution, with the weights [`flip`]ped. It reads the gradient the way the forward pass
/// reads an image (im2col, packed straight into the GEMM) instead of scattering a column matrix
/// back (col2im).
pub fn flipped_geom(w_shape: &[usize], g: &Conv2dGeom) -> Option<Conv2dGeom> {
    let (cg, kh, kw) = (w_shape[1], w_shape[2], w_shape[3]);
    let (eh, ew) = (g.dilation[0] * (kh - 1), g.dilation[1] * (kw - 1));
    let pad = [eh.checked_sub(g.pad[0])?, eh.checked_sub(g.pad[1])?, ew.checked_sub(g.pad[2])?, ew.checked_sub(g.pad[3])?];
    (g.stride == [1, 1] && cg > 1).then_some(Conv2dGeom { stride: [1, 1], pad, dilation: g.dilation, groups: g.groups })
}

/// The weights of the convolution [`flipped_geom`] describes: `W'[g·CG + c, o, ky, kx] =
/// W[g·OG + o, c, KH-1-ky, KW-1-kx]` (`[C, OG, KH, KW]`).
pub fn flip(w: &Tensor, groups: usize) -> Tensor {
    let (o, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let (og, kk) = (o / groups, kh * kw);
    let mut data = vec![0.0; w.numel()];
    for gi in 0..groups {
        for oi in 0..og {
            for ci in 0..cg {
                let src = &w.data[((gi * og + oi) * cg + ci) * kk..][..kk];
                let dst = &mut data[((gi * cg + ci) * og + oi) * kk..][..kk];
                dst.iter_mut().zip(src.iter().rev()).for_each(|(d, s)| *d = *s);
            }
        }
    }
    Tensor { shape: vec![groups * cg, og, kh, kw], data }
}

/// [`backward_data`] with `packed` = [`pack_backward`]`(w, groups)` (or `None`).
pub fn backward_data_packed(gy: &Tensor, w: &Tensor, packed: Option<&[PackedA]>, x_shape: &[usize], g: &Conv2dGeom) -> Tensor {
    backward_data_masked(gy, w, packed, x_shape, g, None)
}

/// [`backward_data_packed`], then times the ReLU / ReLU6 gradient at `mask` (x's shape): in the
/// GEMM's store for 1x1 convolutions on the AVX-512 path, right after each image elsewhere.
pub fn backward_data_masked(gy: &Tensor, w: &Tensor, packed: Option<&[PackedA]>, x_shape: &[usize], g: &Conv2dGeom, mask: Option<(&Tensor, Act)>) -> Tensor {
    let d = Dims::new(x_shape, &w.shape, g);
    debug_assert_eq!(gy.shape, [d.n, d.o, d.oh, d.ow]);
    if let Some((m, _)) = mask {
        assert_eq!(m.shape, x_shape, "conv2d: backward-data mask shape");
    }
    let epi = Epi { mask, ..Epi::default() };
    let (p, k) = (d.p(), d.k());
    if p == 0 || d.n == 0 || d.c * d.h * d.w == 0 {
        let mut gx = Tensor::zeros(x_shape);
        epi.apply(&mut gx.data, 0);
        return gx;
    }
    if d.cg == 1 {
        let mut gx = Tensor::zeros(x_shape);
        depthwise::backward_data(&d, gy, w, &mut gx);
        if !epi.is_empty() {
            gx.data.par_chunks_mut(1 << 14).enumerate().for_each(|(i, c)| epi.apply(c, i << 14));
        }
        return gx;
    }
    let avx512 = uses_avx512();
    if d.pointwise() && avx512 {
        // the column matrix is the input gradient itself: the product writes every element of
        // each group's `[CG, H·W]` block (its first store overwrites), with the mask in its store
        let body = |ni: usize, gxn: *mut f32| {
            let gyn = gy.item(ni);
            for gi in 0..g.groups {
                let wgt = Mat::rows(&w.data[gi * d.og * k..(gi + 1) * d.og * k], d.og, k).t();
                let gyb = Mat::strided(&gyn[gi * d.og * p..], d.og, p, p);
                let off = gi * d.cg * d.h * d.w;
                // SAFETY: `gxn` is writable for the image's C·H·W floats, of which this group's
                // CG·H·W from `off` are written by this product only
                unsafe { sgemm_source_epi_raw(wgt, packed.map(|v| &v[gi]), &gyb, gxn.add(off), d.cg * p, p, Out::Overwrite, epi.at(ni * d.c * d.h * d.w + off)) };
            }
        };
        // SAFETY: `body` writes all C·H·W floats of each image (every group's block, whole)
        return unsafe { par_items_written(x_shape, d.c * d.h * d.w, body) };
    }
    let band = if d.pointwise() { d.oh } else { d.band_rows() };
    // zeroed per image: col2im adds into it
    par_items(x_shape, d.c * d.h * d.w, |ni, gxn| {
        let gyn = gy.item(ni);
        // the column matrix, written whole by each product before col2im reads it
        let mut col: Vec<f32> = if d.pointwise() { vec![] } else { Vec::with_capacity(k * band * d.ow) };
        for gi in 0..g.groups {
            let gxg = &mut gxn[gi * d.cg * d.h * d.w..(gi + 1) * d.cg * d.h * d.w];
            let wgt = Mat::rows(&w.data[gi * d.og * k..(gi + 1) * d.og * k], d.og, k).t();
            let pw = packed.map(|v| &v[gi]);
            for y0 in (0..d.oh).step_by(band) {
                let rows = band.min(d.oh - y0);
                let pc = rows * d.ow;
                let gyb = Mat::strided(&gyn[gi * d.og * p + y0 * d.ow..], d.og, pc, p);
                if d.pointwise() {
                    sgemm_packed(wgt, pw, gyb, gxg, p, Out::Overwrite);
                    continue;
                }
                if avx512 {
                    // SAFETY: `col` has room for k·pc floats; the product (k x pc, rows pc
                    // apart) writes every one of them before anything reads them
                    unsafe {
                        sgemm_source_epi_raw(wgt, pw, &gyb, col.as_mut_ptr(), k * pc, pc, Out::Overwrite, Epilogue::default());
                        col.set_len(k * pc);
                    }
                } else {
                    // zeroed once (the first band is the longest); every band overwrites it
                    col.resize(k * pc, 0.0);
                    sgemm_packed(wgt, pw, gyb, &mut col, pc, Out::Overwrite);
                }
                col2im(&d, &col[..k * pc], y0, rows, gxg);
            }
        }
        epi.apply(gxn, ni * d.c * d.h * d.w);
    })
}

pub fn backward_filter(x: &Tensor, gy: &Tensor, w_shape: &[usize], g: &Conv2dGeom) -> (Tensor, Tensor) {
    let d = Dims::new(&x.shape, w_shape, g);
    debug_assert_eq!(gy.shape, [d.n, d.o, d.oh, d.ow]);
    let mut gw = Tensor::zeros(w_shape);
    let (p, k) = (d.p(), d.k());
    // bias: sum over batch and positions, per output channel
    let gb: Vec<f32> = (0..d.o)
        .into_par_iter()
        .map(|oc| (0..d.n).map(|ni| gy.data[(ni * d.o + oc) * p..][..p].iter().sum::<f32>()).sum())
        .collect();
    let gb = Tensor { shape: vec![d.o], data: gb };
    if p == 0 || d.n == 0 {
        return (gw, gb);
    }
    if d.cg == 1 {
        depthwise::backward_filter(&d, x, gy, &mut gw);
        return (gw, gb);
    }
    let band = d.band_rows();
    let mut col = vec![0.0; k * band * d.ow];
    for ni in 0..d.n {
        let (xn, gyn) = (x.item(ni), gy.item(ni));
        for gi in 0..g.groups {
            let xg = &xn[gi * d.cg * d.h * d.w..(gi + 1) * d.cg * d.h * d.w];
            for y0 in (0..d.oh).step_by(band) {
                let rows = band.min(d.oh - y0);
                let pc = rows * d.ow;
                im2col(&d, xg, y0, rows, &mut col[..k * pc]);
                let gyb = Mat::strided(&gyn[gi * d.og * p + y0 * d.ow..], d.og, pc, p);
                let gwg = &mut gw.data[gi * d.og * k..(gi + 1) * d.og * k];
                sgemm(gyb, Mat::rows(&col, k, pc).t(), gwg, k, true);
            }
        }
    }
    (gw, gb)
}
