//! The CPU engine's tensor plumbing and image ops: concat / split along channels, roll, bilinear
//! resize, affine warp and its adjoint (NCHW host tensors).

use crate::backend::warp_map;
use crate::imageio::upsample_bilinear;
use rayon::prelude::*;
use crate::tensor::Tensor;

pub fn concat(xs: &[&Tensor]) -> Tensor {
    let (n, _, h, w) = xs[0].nchw();
    let c: usize = xs.iter().map(|x| x.shape[1]).sum();
    let mut data = Vec::with_capacity(n * c * h * w);
    for b in 0..n {
        for x in xs {
            data.extend_from_slice(x.item(b));
        }
    }
    Tensor { shape: vec![n, c, h, w], data }
}

pub fn split(gy: &Tensor, channels: &[usize]) -> Vec<Tensor> {
    let (n, _, h, w) = gy.nchw();
    let hw = h * w;
    let mut out: Vec<Tensor> = channels.iter().map(|&c| Tensor::zeros(&[n, c, h, w])).collect();
    for b in 0..n {
        let src = gy.item(b);
        let mut off = 0;
        for (t, &c) in out.iter_mut().zip(channels) {
            t.item_mut(b).copy_from_slice(&src[off..off + c * hw]);
            off += c * hw;
        }
    }
    out
}

pub fn roll(x: &Tensor, dy: isize, dx: isize) -> Tensor {
    let (n, c, h, w) = x.nchw();
    let mut out = Tensor::zeros(&x.shape);
    for p in 0..n * c {
        let src = &x.data[p * h * w..(p + 1) * h * w];
        let dst = &mut out.data[p * h * w..(p + 1) * h * w];
        for i in 0..h {
            let si = (i as isize - dy).rem_euclid(h as isize) as usize;
            for j in 0..w {
                let sj = (j as isize - dx).rem_euclid(w as isize) as usize;
                dst[i * w + j] = src[si * w + sj];
            }
        }
    }
    out
}

/// The `oh x ow` window at (y0, x0) of every plane of `[n, c, h, w]` (inside: checked by the
/// caller).
pub fn crop(x: &Tensor, y0: usize, x0: usize, oh: usize, ow: usize) -> Tensor {
    let (n, c, h, w) = x.nchw();
    let mut data = Vec::with_capacity(n * c * oh * ow);
    for p in 0..n * c {
        for i in 0..oh {
            data.extend_from_slice(&x.data[(p * h + y0 + i) * w + x0..][..ow]);
        }
    }
    Tensor { shape: vec![n, c, oh, ow], data }
}

/// dst's window at (y0, x0) = src, in place (inside: checked by the caller).
pub fn paste(dst: &mut Tensor, src: &Tensor, y0: usize, x0: usize) {
    let (n, c, h, w) = dst.nchw();
    let (_, _, oh, ow) = src.nchw();
    for p in 0..n * c {
        for i in 0..oh {
            dst.data[(p * h + y0 + i) * w + x0..][..ow].copy_from_slice(&src.data[(p * oh + i) * ow..][..ow]);
        }
    }
}

/// torch.flip over h (`fy`) and / or w (`fx`) of every plane of `[n, c, h, w]`.
pub fn flip(x: &Tensor, fy: bool, fx: bool) -> Tensor {
    let (n, c, h, w) = x.nchw();
    let mut out = Tensor::zeros(&x.shape);
    for p in 0..n * c {
        let src = &x.data[p * h * w..(p + 1) * h * w];
        let dst = &mut out.data[p * h * w..(p + 1) * h * w];
        for (i, row) in dst.chunks_exact_mut(w).enumerate() {
            let s = &src[(if fy { h - 1 - i } else { i }) * w..][..w];
            row.copy_from_slice(s);
            if fx {
                row.reverse();
            }
        }
    }
    out
}

pub fn resize_bilinear(x: &Tensor, oh: usize, ow: usize) -> Tensor {
    let (n, c, h, w) = x.nchw();
    if (h, w) == (oh, ow) {
        return x.clone();
    }
    let mut data = Vec::with_capacity(n * c * oh * ow);
    for p in 0..n * c {
        data.extend(upsample_bilinear(&x.data[p * h * w..(p + 1) * h * w], h, w, oh, ow));
    }
    Tensor { shape: vec![n, c, oh, ow], data }
}

/// The input position output pixel (ox, oy) of an `h x w` plane samples under the pixel map `a`
/// ([`warp_map`]), as its top-left tap (x0, y0) and weights ([1 − fx, fx], [1 − fy, fy]); `None`
/// when the point is not inside (-1, w) x (-1, h) (a non-finite one never is). The taps are
/// (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1), PyTorch's nw, ne, sw, se; a tap outside
/// the plane reads 0. The f32 operations of `dv_warp_point` in kernels/image.cu, in its order.
fn warp_point(a: &[f32; 6], ox: usize, oy: usize, h: usize, w: usize) -> Option<(isize, isize, [f32; 2], [f32; 2])> {
    let (cx, cy) = ((w - 1) as f32 * 0.5, (h - 1) as f32 * 0.5);
    let (u, v) = (ox as f32 - cx, oy as f32 - cy);
    let ix = cx + (a[0] * u + a[1] * v + a[2]);
    let iy = cy + (a[3] * u + a[4] * v + a[5]);
    if !(ix > -1.0 && ix < w as f32 && iy > -1.0 && iy < h as f32) {
        return None;
    }
    let (x0, y0) = (ix.floor(), iy.floor());
    Some((x0 as isize, y0 as isize, [(x0 + 1.0) - ix, ix - x0], [(y0 + 1.0) - iy, iy - y0]))
}

/// Visit the in-plane taps of every output pixel of an `h x w` plane under `a`: `f(output index,
/// input index, weight)`, pixels in row-major order, taps in PyTorch's order.
fn warp_taps(a: &[f32; 6], h: usize, w: usize, mut f: impl FnMut(usize, usize, f32)) {
    for oy in 0..h {
        for ox in 0..w {
            let Some((x0, y0, wx, wy)) = warp_point(a, ox, oy, h, w) else { continue };
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let (x, y) = (x0 + dx as isize, y0 + dy as isize);
                if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
                    f(oy * w + ox, y as usize * w + x as usize, wx[dx] * wy[dy]);
                }
            }
        }
    }
}

/// [`crate::backend::Backend::warp`] of `x`, or with `backward` its adjoint
/// [`crate::backend::Backend::warp_backward`] (each plane's values scattered with the forward's
/// weights); shapes checked by the caller. One plane per thread: the same sums in the same order
/// on every run.
pub fn warp(x: &Tensor, theta: &Tensor, backward: bool) -> Tensor {
    let (_, c, h, w) = x.nchw();
    let mut out = Tensor::zeros(&x.shape);
    out.data.par_chunks_mut(h * w).enumerate().for_each(|(p, dst)| {
        let src = &x.data[p * h * w..(p + 1) * h * w];
        let a = warp_map(&theta.data[p / c * 6..][..6], h, w);
        match backward {
            false => warp_taps(&a, h, w, |o, i, wt| dst[o] += wt * src[i]),
            true => warp_taps(&a, h, w, |o, i, wt| dst[i] += wt * src[o]),
        }
    });
    out
}
