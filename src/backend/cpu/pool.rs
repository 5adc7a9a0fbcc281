//! Pooling on the CPU, following PyTorch's CPU kernels (`MaxPoolKernel.cpp`,
//! `AvgPoolKernel.cpp`, `AdaptiveAvgPoolKernel.cpp`) window for window, so that ties, padding,
//! `ceil_mode` and the average divisor agree with PyTorch to the bit where the sums allow.
//!
//! Every function runs rayon over the (n, c) planes; each plane is independent.

use crate::backend::Pool2dGeom;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// One window of a strided pool along one dimension: the clipped input range `[lo, hi)` and
/// PyTorch's average-pool divisor length (the window clipped to the *padded* input only).
fn window(o: usize, k: usize, s: usize, p: usize, input: usize) -> (usize, usize, usize) {
    let start = (o * s) as isize - p as isize;
    let end_padded = (start + k as isize).min((input + p) as isize);
    let padded_len = (end_padded - start) as usize;
    let lo = start.max(0) as usize;
    let hi = (end_padded.max(0) as usize).min(input);
    (lo, hi.max(lo), padded_len)
}

/// Output shape of a pool; the graph validated it, so an empty pool here is a bug upstream.
fn out_shape(x_shape: &[usize], g: &Pool2dGeom) -> [usize; 4] {
    debug_assert_eq!(x_shape.len(), 4, "pool: x {x_shape:?}");
    let (oh, ow) = g.out_hw(x_shape[2], x_shape[3]).unwrap_or((0, 0));
    [x_shape[0], x_shape[1], oh, ow]
}

/// Max pooling. A padded position never wins (it acts as -inf); the first maximum in
/// row-major window order wins ties, and a NaN always wins (so the last NaN), as PyTorch's
/// `val > maxval || isnan(val)` update does. `argmax` is `ih*W + iw` within the plane.
pub fn max_forward(x: &Tensor, g: &Pool2dGeom) -> (Tensor, Vec<u32>) {
    let [n, c, oh, ow] = out_shape(&x.shape, g);
    let (h, w) = (x.shape[2], x.shape[3]);
    let mut y = Tensor::zeros(&[n, c, oh, ow]);
    let mut arg = vec![0u32; y.numel()];
    if y.numel() == 0 {
        return (y, arg);
    }
    // output columns whose window lies whole inside the input's columns: the vector path's
    let (k, s, p) = (g.kernel[1], g.stride[1], g.pad[1]);
    let inner_lo = p.div_ceil(s).min(ow);
    let inner_hi = if w + p >= k { ((w + p - k) / s + 1).clamp(inner_lo, ow) } else { inner_lo };
    let planes = y.data.par_chunks_mut(oh * ow).zip(arg.par_chunks_mut(oh * ow));
    planes.enumerate().for_each(|(i, (yp, ap))| {
        let xp = &x.data[i * h * w..(i + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1, _) = window(oy, g.kernel[0], g.stride[0], g.pad[0], h);
            let (yr, ar) = (&mut yp[oy * ow..(oy + 1) * ow], &mut ap[oy * ow..(oy + 1) * ow]);
            #[allow(unused_mut)]
            let mut vec_to = inner_lo;
            #[cfg(target_arch = "x86_64")]
            if (s == 1 || s == 2) && crate::backend::cpu::gemm::uses_avx512() {
                // SAFETY: AVX-512F was detected; the columns inner_lo..inner_hi read inside
                // the input (their windows lie within 0..w, checked above)
                vec_to = unsafe { max_row_avx512(xp, w, y0..y1, k, s, p, inner_lo..inner_hi, yr, ar) };
            }
            for ox in (0..inner_lo).chain(vec_to..ow) {
                let (x0, x1, _) = window(ox, k, s, p, w);
                let mut best = (f32::NEG_INFINITY, y0 * w + x0);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let v = xp[iy * w + ix];
                        if v > best.0 || v.is_nan() {
                            best = (v, iy * w + ix);
                        }
                    }
                }
                yr[ox] = best.0;
                ar[ox] = best.1 as u32;
            }
        }
    });
    (y, arg)
}

/// Max pooling of one output row over the columns `cols` (whose windows lie inside the input's
/// columns), 16 at a time, with [`max_forward`]'s rule (window in row-major order, `v > best ||
/// v is NaN` takes over): stride 1 reads each tap's 16 inputs as one load, stride 2 as two
/// loads and a permute of their even lanes. Returns where it stopped (the rest of `cols` is
/// fewer than 16 columns, for the caller's scalar loop).
///
/// SAFETY: AVX-512F present; `s` is 1 or 2; for every ox in `cols`, `ox * s - p + k <= w` and
/// `ox * s >= p`; rows `rows` lie inside the plane `xp` (`[_, w]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn max_row_avx512(xp: &[f32], w: usize, rows: std::ops::Range<usize>, k: usize, s: usize, p: usize, cols: std::ops::Range<usize>, yr: &mut [f32], ar: &mut [u32]) -> usize {
    use std::arch::x86_64::*;
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let step = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(s as i32));
    let mut ox = cols.start;
    while ox + 16 <= cols.end {
        let x0 = ox * s - p;
        let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut arg = _mm512_add_epi32(_mm512_set1_epi32((rows.start * w + x0) as i32), step);
        for iy in rows.clone() {
            let row = xp[iy * w..(iy + 1) * w].as_ptr();
            for kx in 0..k {
                let ix = x0 + kx;
                // the 16 windows' inputs at this tap: ix + s·lane, inside the row (the last
                // lane's is ox·s - p + 15·s + kx < w); stride 2's second load stops at lane 15's
                let v = if s == 1 {
                    _mm512_loadu_ps(row.add(ix))
                } else {
                    let a = _mm512_loadu_ps(row.add(ix));
                    let b = _mm512_maskz_loadu_ps(0x7fff, row.add(ix + 16));
                    _mm512_permutex2var_ps(a, evens, b)
                };
                let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                best = _mm512_mask_mov_ps(best, take, v);
                arg = _mm512_mask_mov_epi32(arg, take, _mm512_add_epi32(_mm512_set1_epi32((iy * w + ix) as i32), step));
            }
        }
        _mm512_storeu_ps(yr[ox..ox + 16].as_mut_ptr(), best);
        _mm512_storeu_si512(ar[ox..ox + 16].as_mut_ptr().cast(), arg);
        ox += 16;
    }
    ox
}

/// Scatters each output gradient to its argmax, adding where windows overlap.
pub fn max_backward(gy: &Tensor, argmax: &[u32], x_shape: &[usize]) -> Tensor {
    debug_assert_eq!(argmax.len(), gy.numel());
    let mut gx = Tensor::zeros(x_shape);
    let (hw, p) = (x_shape[2] * x_shape[3], gy.shape[2] * gy.shape[3]);
    if gx.numel() == 0 || p == 0 {
        return gx;
    }
    gx.data.par_chunks_mut(hw).enumerate().for_each(|(i, gxp)| {
        for (&a, &gv) in argmax[i * p..(i + 1) * p].iter().zip(&gy.data[i * p..(i + 1) * p]) {
            gxp[a as usize] += gv;
        }
    });
    gx
}

/// The window of output (oy, ox) and its divisor, PyTorch's rule: the divisor is the window
/// clipped to the padded input (`count_include_pad`) or to the input itself; an empty window
/// (possible only past the input under `ceil_mode`) has divisor 0 and yields 0.
fn avg_window(g: &Pool2dGeom, h: usize, w: usize, oy: usize, ox: usize) -> ([usize; 4], usize) {
    let (y0, y1, ph) = window(oy, g.kernel[0], g.stride[0], g.pad[0], h);
    let (x0, x1, pw) = window(ox, g.kernel[1], g.stride[1], g.pad[1], w);
    let div = if g.count_include_pad { ph * pw } else { (y1 - y0) * (x1 - x0) };
    ([y0, y1, x0, x1], if y0 >= y1 || x0 >= x1 { 0 } else { div })
}

pub fn avg_forward(x: &Tensor, g: &Pool2dGeom) -> Tensor {
    let [n, c, oh, ow] = out_shape(&x.shape, g);
    let (h, w) = (x.shape[2], x.shape[3]);
    let mut y = Tensor::zeros(&[n, c, oh, ow]);
    if y.numel() == 0 {
        return y;
    }
    y.data.par_chunks_mut(oh * ow).enumerate().for_each(|(i, yp)| {
        let xp = &x.data[i * h * w..(i + 1) * h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let ([y0, y1, x0, x1], div) = avg_window(g, h, w, oy, ox);
                if div == 0 {
                    continue;
                }
                let s: f32 = (y0..y1).map(|iy| xp[iy * w + x0..iy * w + x1].iter().sum::<f32>()).sum();
                yp[oy * ow + ox] = s / div as f32;
            }
        }
    });
    y
}

pub fn avg_backward(gy: &Tensor, x_shape: &[usize], g: &Pool2dGeom) -> Tensor {
    let (h, w, oh, ow) = (x_shape[2], x_shape[3], gy.shape[2], gy.shape[3]);
    let mut gx = Tensor::zeros(x_shape);
    if gx.numel() == 0 || gy.numel() == 0 {
        return gx;
    }
    gx.data.par_chunks_mut(h * w).enumerate().for_each(|(i, gxp)| {
        let gyp = &gy.data[i * oh * ow..(i + 1) * oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let ([y0, y1, x0, x1], div) = avg_window(g, h, w, oy, ox);
                if div == 0 {
                    continue;
                }
                let v = gyp[oy * ow + ox] / div as f32;
                for iy in y0..y1 {
                    gxp[iy * w + x0..iy * w + x1].iter_mut().for_each(|e| *e += v);
                }
            }
        }
    });
    gx
}

/// PyTorch's adaptive window along one dimension: `[floor(o*in/out), ceil((o+1)*in/out))`.
/// Never empty, also when `out > in` (windows then overlap or repeat).
fn adaptive_window(o: usize, out: usize, input: usize) -> (usize, usize) {
    (o * input / out, ((o + 1) * input).div_ceil(out))
}

pub fn adaptive_avg_forward(x: &Tensor, out: [usize; 2]) -> Tensor {
    let (n, c, h, w) = x.nchw();
    let [oh, ow] = out;
    let mut y = Tensor::zeros(&[n, c, oh, ow]);
    if y.numel() == 0 || h * w == 0 {
        return y;
    }
    y.data.par_chunks_mut(oh * ow).enumerate().for_each(|(i, yp)| {
        let xp = &x.data[i * h * w..(i + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1) = adaptive_window(oy, oh, h);
            for ox in 0..ow {
                let (x0, x1) = adaptive_window(ox, ow, w);
                let s: f32 = (y0..y1).map(|iy| xp[iy * w + x0..iy * w + x1].iter().sum::<f32>()).sum();
                yp[oy * ow + ox] = s / ((y1 - y0) * (x1 - x0)) as f32;
            }
        }
    });
    y
}

pub fn adaptive_avg_backward(gy: &Tensor, x_shape: &[usize]) -> Tensor {
    let (h, w, oh, ow) = (x_shape[2], x_shape[3], gy.shape[2], gy.shape[3]);
    let mut gx = Tensor::zeros(x_shape);
    if gx.numel() == 0 || gy.numel() == 0 {
        return gx;
    }
    gx.data.par_chunks_mut(h * w).enumerate().for_each(|(i, gxp)| {
        let gyp = &gy.data[i * oh * ow..(i + 1) * oh * ow];
        for oy in 0..oh {
            let (y0, y1) = adaptive_window(oy, oh, h);
            for ox in 0..ow {
                let (x0, x1) = adaptive_window(ox, ow, w);
                let v = gyp[oy * ow + ox] / ((y1 - y0) * (x1 - x0)) as f32;
                for iy in y0..y1 {
                    gxp[iy * w + x0..iy * w + x1].iter_mut().for_each(|e| *e += v);
                }
            }
        }
    });
    gx
}
