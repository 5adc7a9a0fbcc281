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

use super::gemm::{sgemm, Mat};
use crate::backend::Conv2dGeom;
use crate::tensor::Tensor;
use rayon::prelude::*;

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

/// `y[j] += a * x[j * sx]` for every j of y.
fn axpy(y: &mut [f32], a: f32, x: &[f32], sx: usize) {
    if sx == 1 {
        y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
    } else {
        y.iter_mut().zip(x.iter().step_by(sx)).for_each(|(y, x)| *y += a * x);
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

/// `Σ_j y[j] * x[j * sx]`
fn dot_strided(y: &[f32], x: &[f32], sx: usize) -> f32 {
    if sx == 1 {
        y.iter().zip(x).map(|(y, x)| y * x).sum()
    } else {
        y.iter().zip(x.iter().step_by(sx)).map(|(y, x)| y * x).sum()
    }
}

/// Fill `col` (`[K, rows*OW]`) with the patches of output rows `y0..y0+rows` of one group's
/// input planes `x` (`[CG, H, W]`); padding reads as zero.
fn im2col(d: &Dims, x: &[f32], y0: usize, rows: usize, col: &mut [f32]) {
    let (sw, pc) = (d.g.stride[1], rows * d.ow);
    col.par_chunks_mut(pc).with_min_len(MIN_TASK / pc + 1).enumerate().for_each(|(r, dst)| {
        let (ci, ky, kx) = (r / (d.kh * d.kw), r / d.kw % d.kh, r % d.kw);
        let plane = &x[ci * d.h * d.w..(ci + 1) * d.h * d.w];
        let (lo, hi, first) = d.col_span(kx);
        for (oy, out) in (y0..y0 + rows).zip(dst.chunks_mut(d.ow)) {
            let Some(iy) = d.in_row(oy, ky) else {
                out.fill(0.0);
                continue;
            };
            let src = &plane[iy * d.w + first..(iy + 1) * d.w];
            out[..lo].fill(0.0);
            if sw == 1 {
                out[lo..hi].copy_from_slice(&src[..hi - lo]);
            } else {
                out[lo..hi].iter_mut().zip(src.iter().step_by(sw)).for_each(|(v, x)| *v = *x);
            }
            out[hi..].fill(0.0);
        }
    });
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

pub fn forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Conv2dGeom) -> Tensor {
    let d = Dims::new(&x.shape, &w.shape, g);
    let mut y = Tensor::zeros(&[d.n, d.o, d.oh, d.ow]);
    let (p, k) = (d.p(), d.k());
    if p == 0 || d.n == 0 {
        return y;
    }
    if d.cg == 1 {
        depthwise_forward(&d, x, w, &mut y);
    } else {
        let band = d.band_rows();
        y.data.par_chunks_mut(d.o * p).enumerate().for_each(|(ni, yn)| {
            let xn = x.item(ni);
            let mut col = vec![0.0; k * band * d.ow];
            for gi in 0..g.groups {
                let xg = &xn[gi * d.cg * d.h * d.w..(gi + 1) * d.cg * d.h * d.w];
                let wg = Mat::rows(&w.data[gi * d.og * k..(gi + 1) * d.og * k], d.og, k);
                for y0 in (0..d.oh).step_by(band) {
                    let rows = band.min(d.oh - y0);
                    let pc = rows * d.ow;
                    im2col(&d, xg, y0, rows, &mut col[..k * pc]);
                    let c = &mut yn[gi * d.og * p + y0 * d.ow..];
                    sgemm(wg, Mat::rows(&col, k, pc), c, p, false);
                }
            }
        });
    }
    if let Some(b) = b {
        debug_assert_eq!(b.numel(), d.o);
        y.data.par_chunks_mut(p).enumerate().for_each(|(i, plane)| {
            let bo = b.data[i % d.o];
            plane.iter_mut().for_each(|v| *v += bo);
        });
    }
    y
}

pub fn backward_data(gy: &Tensor, w: &Tensor, x_shape: &[usize], g: &Conv2dGeom) -> Tensor {
    let d = Dims::new(x_shape, &w.shape, g);
    debug_assert_eq!(gy.shape, [d.n, d.o, d.oh, d.ow]);
    let mut gx = Tensor::zeros(x_shape);
    let (p, k) = (d.p(), d.k());
    if p == 0 || d.n == 0 || gx.numel() == 0 {
        return gx;
    }
    if d.cg == 1 {
        depthwise_backward_data(&d, gy, w, &mut gx);
        return gx;
    }
    let band = d.band_rows();
    gx.data.par_chunks_mut(d.c * d.h * d.w).enumerate().for_each(|(ni, gxn)| {
        let gyn = gy.item(ni);
        let mut col = vec![0.0; k * band * d.ow];
        for gi in 0..g.groups {
            let gxg = &mut gxn[gi * d.cg * d.h * d.w..(gi + 1) * d.cg * d.h * d.w];
            let wgt = Mat::rows(&w.data[gi * d.og * k..(gi + 1) * d.og * k], d.og, k).t();
            for y0 in (0..d.oh).step_by(band) {
                let rows = band.min(d.oh - y0);
                let pc = rows * d.ow;
                let gyb = Mat::strided(&gyn[gi * d.og * p + y0 * d.ow..], d.og, pc, p);
                sgemm(wgt, gyb, &mut col, pc, false);
                col2im(&d, &col[..k * pc], y0, rows, gxg);
            }
        }
    });
    gx
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
        depthwise_backward_filter(&d, x, gy, &mut gw);
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

// ---- one input channel per group (depthwise, possibly with a channel multiplier) ----------

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

fn depthwise_forward(d: &Dims, x: &Tensor, w: &Tensor, y: &mut Tensor) {
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

fn depthwise_backward_data(d: &Dims, gy: &Tensor, w: &Tensor, gx: &mut Tensor) {
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

fn depthwise_backward_filter(d: &Dims, x: &Tensor, gy: &Tensor, gw: &mut Tensor) {
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
