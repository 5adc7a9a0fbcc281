//! The CPU engine's tensor plumbing and image ops: concat / split along channels, roll, bilinear
//! resize (NCHW host tensors).

use crate::imageio::upsample_bilinear;
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
