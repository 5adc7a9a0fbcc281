//! Depthwise convolution on the CPU: one input channel per group (possibly with a channel
//! multiplier `OG`), where im2col would only copy the input to multiply it by a vector. Direct
//! loops over one `[H, W]` plane at a time, rayon over the planes.
//!
//! Versions (the one place that picks: [`forward`] and [`backward_data`]):
//! - v1 `portable_*`: per output row and kernel tap, an axpy over the output columns that tap
//!   reads inside the image (a strided gather or scatter where the stride is above 1). Any
//!   machine; also backward-filter, which the visualisations never run.
//! - v2 `avx512::*` (x86-64 with AVX-512F, as the GEMM: [`uses_avx512`], so
//!   `DEEPVIZ_GEMM=portable` turns both off): the plane is copied once into zero-padded column
//!   *phases* ([`Phases`]), after which every tap, at any stride, dilation and padding, reads (or
//!   writes) a contiguous run: no bounds test, no strided access in the inner loops. Forward keeps
//!   up to [`avx512::VECS`] vectors of 16 output columns in registers across all taps.
//!   Backward-data computes the padded input gradient in the same layout, each vector of a phase
//!   row summed in registers over the taps that write it (a gather from the output gradient,
//!   whose rows are copied with zeros on both sides first), then reads the input gradient back
//!   out of it. (Adding each tap's product into the phases instead, a vector store per tap, was
//!   slower than v1: a tap reads back the vector the previous tap stored one float over, and the
//!   store cannot be forwarded.) v1 spent ~58% of efficientnet_lite0's saliency
//!   time in these ops (batch 8, `examples/op_profile.rs`); `benches/RESULTS.md` has v2's.

use super::{scatter_axpy, Dims, Tensor};
use crate::backend::cpu::gemm::uses_avx512;
use rayon::prelude::*;

/// y += depthwise conv(x, w) (y holds the bias planes)
pub(super) fn forward(d: &Dims, x: &Tensor, w: &Tensor, y: &mut Tensor) {
    #[cfg(target_arch = "x86_64")]
    if uses_avx512() {
        return avx512::forward(d, x, w, y);
    }
    portable_forward(d, x, w, y)
}

/// gx += the adjoint of [`forward`] in x, applied to gy (gx zeroed by the caller)
pub(super) fn backward_data(d: &Dims, gy: &Tensor, w: &Tensor, gx: &mut Tensor) {
    #[cfg(target_arch = "x86_64")]
    if uses_avx512() {
        return avx512::backward_data(d, gy, w, gx);
    }
    portable_backward_data(d, gy, w, gx)
}

/// The layout v2 copies a plane into. With strides `(SY, SX)`, the padded plane is the input
/// shifted by the top and left padding and zero outside it; phase `f < SX` holds its columns
/// `f, f + SX, f + 2·SX, ...`, `rows` rows of `wq` floats. Kernel tap `(ky, kx)` of output
/// `(oy, ox)` reads padded `(oy·SY + ky·DY, ox·SX + kx·DX)`, that is phase `kx·DX mod SX`, row
/// `oy·SY + ky·DY`, column `ox + kx·DX div SX`: consecutive output columns read consecutive
/// floats.
struct Phases {
    sx: usize,
    rows: usize,
    wq: usize,
}

/// Output columns per vector.
const LANES: usize = 16;

impl Phases {
    fn new(d: &Dims) -> Phases {
        let (sx, dx) = (d.g.stride[1], d.g.dilation[1]);
        let rows = (d.oh - 1) * d.g.stride[0] + (d.kh - 1) * d.g.dilation[0] + 1;
        // whole vectors past the last output column stay inside the row, and rows are whole
        // vectors (backward-data sweeps them in vectors)
        let wq = (d.ow.next_multiple_of(LANES) + (d.kw - 1) * dx / sx).next_multiple_of(LANES);
        Phases { sx, rows, wq }
    }
    fn len(&self) -> usize {
        self.sx * self.rows * self.wq
    }
    /// Start of phase `f`, row `r`.
    fn at(&self, f: usize, r: usize) -> usize {
        (f * self.rows + r) * self.wq
    }
    /// The largest column offset of a tap.
    fn max_off(&self, d: &Dims) -> usize {
        (d.kw - 1) * d.g.dilation[1] / self.sx
    }
    /// The phase and column offset kernel column `kx` reads.
    fn tap(&self, d: &Dims, kx: usize) -> (usize, usize) {
        let c = kx * d.g.dilation[1];
        (c % self.sx, c / self.sx)
    }
    /// For phase `f`: the columns `lo..hi` that hold input columns (the first holds input column
    /// `first`; the next ones every SX-th from there), and the input row of padded row `r`.
    fn cols(&self, d: &Dims, f: usize) -> (usize, usize, usize) {
        let (s, pl) = (self.sx, d.g.pad[2]);
        let lo = pl.saturating_sub(f).div_ceil(s).min(self.wq);
        let hi = (d.w + pl).saturating_sub(f).div_ceil(s).clamp(lo, self.wq);
        (lo, hi, (lo * s + f).saturating_sub(pl))
    }
    fn in_row(&self, d: &Dims, r: usize) -> Option<usize> {
        r.checked_sub(d.g.pad[0]).filter(|&iy| iy < d.h)
    }
    /// Copy plane `x` (`[H, W]`) into `buf` ([`Phases::len`] floats), zeros around it.
    fn fill(&self, d: &Dims, x: &[f32], buf: &mut [f32]) {
        for f in 0..self.sx {
            let (lo, hi, first) = self.cols(d, f);
            for r in 0..self.rows {
                let row = &mut buf[self.at(f, r)..][..self.wq];
                let Some(iy) = self.in_row(d, r) else {
                    row.fill(0.0);
                    continue;
                };
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                if lo == hi {
                    continue;
                }
                let src = &x[iy * d.w + first..(iy + 1) * d.w];
                if self.sx == 1 {
                    row[lo..hi].copy_from_slice(&src[..hi - lo]);
                } else {
                    row[lo..hi].iter_mut().zip(src.iter().step_by(self.sx)).for_each(|(v, x)| *v = *x);
                }
            }
        }
    }
    /// The adjoint of [`Phases::fill`]: read plane `x` back out of `buf` (padding dropped).
    fn extract(&self, d: &Dims, buf: &[f32], x: &mut [f32]) {
        for f in 0..self.sx {
            let (lo, hi, first) = self.cols(d, f);
            for r in 0..self.rows {
                let Some(iy) = self.in_row(d, r).filter(|_| lo < hi) else { continue };
                let row = &buf[self.at(f, r)..][..self.wq];
                let dst = &mut x[iy * d.w + first..(iy + 1) * d.w];
                if self.sx == 1 {
                    dst[..hi - lo].copy_from_slice(&row[lo..hi]);
                } else {
                    dst.iter_mut().step_by(self.sx).zip(&row[lo..hi]).for_each(|(v, x)| *v = *x);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Dims, Phases, Tensor, LANES};
    use rayon::prelude::*;
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    /// Vectors of output columns one register block holds (4 x 16 = 64 columns; with the taps'
    /// broadcasts and loads this stays well inside the 32 vector registers).
    pub const VECS: usize = 4;

    thread_local! {
        /// One plane's [`Phases`], kept per thread between planes and calls.
        static BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// Run `f` with this thread's phase buffer, at least `len` floats (contents unspecified).
    fn with_buf<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        BUF.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < len {
                b.resize(len, 0.0);
            }
            f(&mut b[..len])
        })
    }

    /// Mask of the columns of the vector at `ox0` that lie before `ow`.
    fn mask(ox0: usize, ow: usize) -> u16 {
        let n = (ow - ox0).min(LANES);
        ((1u32 << n) - 1) as u16
    }

    pub fn forward(d: &Dims, x: &Tensor, w: &Tensor, y: &mut Tensor) {
        let (hw, kk, p) = (d.h * d.w, d.kh * d.kw, d.p());
        let ph = Phases::new(d);
        // (where in the phases tap (ky, kx) of output (0, 0) reads, the tap's index), worked out
        // once: no index arithmetic per plane or vector
        let taps: Vec<(usize, usize)> = (0..kk)
            .map(|t| {
                let (f, off) = ph.tap(d, t % d.kw);
                (ph.at(f, t / d.kw * d.g.dilation[0]) + off, t)
            })
            .collect();
        // one task per input plane and its OG output planes (consecutive in y)
        y.data.par_chunks_mut(d.og * p).enumerate().for_each(|(i, ys)| {
            let ci = i % d.c;
            with_buf(ph.len(), |buf| {
                ph.fill(d, &x.data[i * hw..][..hw], buf);
                for (m, yp) in ys.chunks_mut(p).enumerate() {
                    let wk = &w.data[(ci * d.og + m) * kk..][..kk];
                    // SAFETY: AVX-512F was detected (uses_avx512); `buf` holds `ph`'s layout,
                    // `yp` one output plane of OH*OW floats
                    unsafe { forward_plane(d, &ph, &taps, buf, wk, yp) };
                }
            });
        });
    }

    pub fn backward_data(d: &Dims, gy: &Tensor, w: &Tensor, gx: &mut Tensor) {
        let (hw, kk, p) = (d.h * d.w, d.kh * d.kw, d.p());
        let ph = Phases::new(d);
        // output-gradient rows with max_off zeros before and enough after for a whole phase row
        let (om, wg) = (ph.max_off(d), ph.max_off(d) + ph.wq);
        let plan = BackwardPlan::new(d, &ph, om);
        gx.data.par_chunks_mut(hw).enumerate().for_each(|(i, gxp)| {
            let ci = i % d.c;
            with_buf(ph.len() + d.oh * wg, |buf| {
                let (buf, gpad) = buf.split_at_mut(ph.len());
                for m in 0..d.og {
                    let oc = ci * d.og + m;
                    let gyp = &gy.data[(i / d.c * d.o + oc) * p..][..p];
                    for (dst, src) in gpad.chunks_exact_mut(wg).zip(gyp.chunks_exact(d.ow)) {
                        dst[..om].fill(0.0);
                        dst[om..om + d.ow].copy_from_slice(src);
                        dst[om + d.ow..].fill(0.0);
                    }
                    // SAFETY: AVX-512F was detected; `buf` is in `ph`'s layout, `gpad` OH rows
                    // of `wg` floats
                    unsafe { backward_plane(&ph, &plan, buf, &w.data[oc * kk..][..kk], gpad, m > 0) };
                }
                ph.extract(d, buf, gxp);
            });
        });
    }

    /// `yp += Σ_taps w[tap] · (the run of `buf` the tap reads)`, one output plane.
    ///
    /// SAFETY: AVX-512F present; `buf` is `ph.len()` floats in `ph`'s layout for `d`, `wk` holds
    /// KH*KW weights and `yp` OH*OW floats. Every load lies inside `buf`: row `oy·SY + ky·DY <
    /// rows`, and column offset + the vector's end `<= OW` rounded up to 16 + offset `<= wq`.
    #[target_feature(enable = "avx512f")]
    unsafe fn forward_plane(d: &Dims, ph: &Phases, taps: &[(usize, usize)], buf: &[f32], wk: &[f32], yp: &mut [f32]) {
        debug_assert!(buf.len() >= ph.len() && yp.len() >= d.p() && wk.len() == d.kh * d.kw);
        for oy in 0..d.oh {
            let src = buf.as_ptr().add(oy * d.g.stride[0] * ph.wq);
            let dst = yp.as_mut_ptr().add(oy * d.ow);
            let mut ox0 = 0;
            while ox0 + VECS * LANES <= d.ow {
                forward_block::<VECS>(taps, wk, src.add(ox0), dst.add(ox0), 0xffff);
                ox0 += VECS * LANES;
            }
            while ox0 < d.ow {
                forward_block::<1>(taps, wk, src.add(ox0), dst.add(ox0), mask(ox0, d.ow));
                ox0 += LANES;
            }
        }
    }

    /// `dst[0 .. 16·V] += Σ_(off, t) wk[t] · src[off ..]`, the last vector stored under `last`.
    #[inline(always)]
    unsafe fn forward_block<const V: usize>(taps: &[(usize, usize)], wk: &[f32], src: *const f32, dst: *mut f32, last: u16) {
        let mut acc = [_mm512_setzero_ps(); V];
        for &(off, t) in taps {
            let wv = _mm512_set1_ps(*wk.get_unchecked(t));
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(wv, _mm512_loadu_ps(src.add(off + v * LANES)), *a);
            }
        }
        for (v, a) in acc.iter().enumerate() {
            let m = if v + 1 == V { last } else { 0xffff };
            let p = dst.add(v * LANES);
            _mm512_mask_storeu_ps(p, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, p), *a));
        }
    }

    /// `buf (+)= ` the padded input gradient of one (output-gradient plane, kernel) pair (`=`
    /// unless `add`): each vector of each phase row summed over the taps that write it. Only the
    /// columns [`Phases::extract`] reads are written.
    ///
    /// SAFETY: AVX-512F present; `buf` is `ph.len()` floats in `ph`'s layout, `plan` made for the
    /// same `d` and `ph`, `wk` holds KH*KW weights; `gpad` holds OH rows of `om + ph.wq` floats,
    /// the output-gradient row at `om` (`om` = [`Phases::max_off`]). Phase rows are whole
    /// vectors (`hi <= wq`), and a tap at offset `off` reads gradient row columns
    /// `om - off + q0 ..` with `q0 + 16 <= wq`: inside the row.
    #[target_feature(enable = "avx512f")]
    unsafe fn backward_plane(ph: &Phases, plan: &BackwardPlan, buf: &mut [f32], wk: &[f32], gpad: &[f32], add: bool) {
        debug_assert!(buf.len() >= ph.len() && plan.row.len() == ph.sx * ph.rows + 1);
        for f in 0..ph.sx {
            let hi = plan.hi[f];
            for r in 0..ph.rows {
                let taps = &plan.taps[plan.row[f * ph.rows + r]..plan.row[f * ph.rows + r + 1]];
                let dst = buf.as_mut_ptr().add(ph.at(f, r));
                let mut q0 = 0;
                while q0 + VECS * LANES <= hi {
                    backward_block::<VECS>(taps, wk, gpad.as_ptr().add(q0), dst.add(q0), add);
                    q0 += VECS * LANES;
                }
                while q0 < hi {
                    backward_block::<1>(taps, wk, gpad.as_ptr().add(q0), dst.add(q0), add);
                    q0 += LANES;
                }
            }
        }
    }

    /// Which taps write each phase row in backward-data, worked out once per call.
    struct BackwardPlan {
        /// per phase row (`f·rows + r`), where its taps start in `taps` (and one past the last)
        row: Vec<usize>,
        /// (where in the padded output gradient the tap reads for column 0, the tap's index):
        /// tap (ky, kx) writes row r of phase f where kx's phase is f and r - ky·DY is SY times
        /// an output-gradient row
        taps: Vec<(usize, usize)>,
        /// per phase, the end of the columns [`Phases::extract`] reads
        hi: Vec<usize>,
    }

    impl BackwardPlan {
        fn new(d: &Dims, ph: &Phases, om: usize) -> BackwardPlan {
            let (sy, wg) = (d.g.stride[0], om + ph.wq);
            let (mut row, mut taps) = (vec![0], vec![]);
            for f in 0..ph.sx {
                for r in 0..ph.rows {
                    for ky in 0..d.kh {
                        let Some(t) = r.checked_sub(ky * d.g.dilation[0]) else { break };
                        if t % sy != 0 || t / sy >= d.oh {
                            continue;
                        }
                        for kx in 0..d.kw {
                            let (fk, off) = ph.tap(d, kx);
                            if fk == f {
                                taps.push((t / sy * wg + om - off, ky * d.kw + kx));
                            }
                        }
                    }
                    row.push(taps.len());
                }
            }
            BackwardPlan { row, taps, hi: (0..ph.sx).map(|f| ph.cols(d, f).1).collect() }
        }
    }

    /// `dst[0 .. 16·V] (+)= Σ_(off, t) wk[t] · src[off ..]` (`+=` where `add`), whole vectors.
    #[inline(always)]
    unsafe fn backward_block<const V: usize>(taps: &[(usize, usize)], wk: &[f32], src: *const f32, dst: *mut f32, add: bool) {
        let mut acc = [_mm512_setzero_ps(); V];
        if add {
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(dst.add(v * LANES));
            }
        }
        for &(off, t) in taps {
            let wv = _mm512_set1_ps(*wk.get_unchecked(t));
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(wv, _mm512_loadu_ps(src.add(off + v * LANES)), *a);
            }
        }
        for (v, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(dst.add(v * LANES), *a);
        }
    }
}

// ---- v1: portable ------------------------------------------------------------------------

/// `y[j] += a * x[j * sx]` for every j of y.
fn axpy(y: &mut [f32], a: f32, x: &[f32], sx: usize) {
    if sx == 1 {
        y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
    } else {
        y.iter_mut().zip(x.iter().step_by(sx)).for_each(|(y, x)| *y += a * x);
    }
}

/// `Σ_j y[j] * x[j * sx]`
fn dot_strided(y: &[f32], x: &[f32], sx: usize) -> f32 {
    if sx == 1 {
        y.iter().zip(x).map(|(y, x)| y * x).sum()
    } else {
        y.iter().zip(x.iter().step_by(sx)).map(|(y, x)| y * x).sum()
    }
}

/// Calls `f(lo, hi, i0, ky, kx)` for every kernel tap of output row `oy` that reads inside
/// the image: output columns `lo..hi` read input row-major indices `i0, i0 + stride, ...`.
fn for_taps(d: &Dims, oy: usize, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
    for ky in 0..d.kh {
        let Some(iy) = d.in_row(oy, ky) else { continue };
        for kx in 0..d.kw {
            let (lo, hi, first) = d.col_span(kx);
            if lo < hi {
                f(lo, hi, iy * d.w + first, ky, kx);
            }
        }
    }
}

fn portable_forward(d: &Dims, x: &Tensor, w: &Tensor, y: &mut Tensor) {
    let (hw, kk, sw) = (d.h * d.w, d.kh * d.kw, d.g.stride[1]);
    y.data.par_chunks_mut(d.p()).enumerate().for_each(|(i, yp)| {
        let (ni, oc) = (i / d.o, i % d.o);
        let ci = oc / d.og;
        let xp = &x.data[(ni * d.c + ci) * hw..][..hw];
        let wk = &w.data[oc * kk..(oc + 1) * kk];
        for (oy, yr) in yp.chunks_mut(d.ow).enumerate() {
            for_taps(d, oy, |lo, hi, i0, ky, kx| axpy(&mut yr[lo..hi], wk[ky * d.kw + kx], &xp[i0..], sw));
        }
    });
}

fn portable_backward_data(d: &Dims, gy: &Tensor, w: &Tensor, gx: &mut Tensor) {
    let (hw, kk, p, sw) = (d.h * d.w, d.kh * d.kw, d.p(), d.g.stride[1]);
    gx.data.par_chunks_mut(hw).enumerate().for_each(|(i, gxp)| {
        let (ni, ci) = (i / d.c, i % d.c);
        for oc in ci * d.og..(ci + 1) * d.og {
            let gyp = &gy.data[(ni * d.o + oc) * p..][..p];
            let wk = &w.data[oc * kk..(oc + 1) * kk];
            for (oy, gr) in gyp.chunks(d.ow).enumerate() {
                for_taps(d, oy, |lo, hi, i0, ky, kx| scatter_axpy(&mut gxp[i0..], sw, wk[ky * d.kw + kx], &gr[lo..hi]));
            }
        }
    });
}

pub(super) fn backward_filter(d: &Dims, x: &Tensor, gy: &Tensor, gw: &mut Tensor) {
    let (hw, kk, p, sw) = (d.h * d.w, d.kh * d.kw, d.p(), d.g.stride[1]);
    gw.data.par_chunks_mut(kk).enumerate().for_each(|(oc, gk)| {
        let ci = oc / d.og;
        for ni in 0..d.n {
            let xp = &x.data[(ni * d.c + ci) * hw..][..hw];
            let gyp = &gy.data[(ni * d.o + oc) * p..][..p];
            for (oy, gr) in gyp.chunks(d.ow).enumerate() {
                for_taps(d, oy, |lo, hi, i0, ky, kx| gk[ky * d.kw + kx] += dot_strided(&gr[lo..hi], &xp[i0..], sw));
            }
        }
    });
}
