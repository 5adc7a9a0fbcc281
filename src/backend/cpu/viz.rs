//! The CPU engine's tensor plumbing and the reductions / image ops of the visualisations
//! (NCHW host tensors).

use image::RgbImage;

use crate::imageio::{colorize, normalize_map_clipped, overlay, upsample_bilinear, Colormap};
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

pub fn one_hot(shape: &[usize], targets: &[usize]) -> Tensor {
    let mut t = Tensor::zeros(shape);
    let per = t.numel() / shape[0];
    for (i, &c) in targets.iter().enumerate() {
        t.data[i * per + c] = 1.0;
    }
    t
}

pub fn max_abs_channels(g: &Tensor) -> Tensor {
    let (n, c, h, w) = g.nchw();
    let hw = h * w;
    let mut out = Tensor::zeros(&[n, 1, h, w]);
    for b in 0..n {
        let src = g.item(b);
        let dst = &mut out.data[b * hw..(b + 1) * hw];
        for ch in 0..c {
            for (d, s) in dst.iter_mut().zip(&src[ch * hw..(ch + 1) * hw]) {
                *d = d.max(s.abs());
            }
        }
    }
    out
}

pub fn spatial_mean(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.nchw();
    let hw = h * w;
    let data = x.data.chunks(hw).map(|p| p.iter().sum::<f32>() / hw as f32).collect();
    Tensor { shape: vec![n, c, 1, 1], data }
}

pub fn weighted_channel_sum(a: &Tensor, wt: &Tensor, relu: bool) -> Tensor {
    let (n, k, h, w) = a.nchw();
    let hw = h * w;
    let mut out = Tensor::zeros(&[n, 1, h, w]);
    for b in 0..n {
        let src = a.item(b);
        let dst = &mut out.data[b * hw..(b + 1) * hw];
        for ch in 0..k {
            let wk = wt.data[b * k + ch];
            for (d, s) in dst.iter_mut().zip(&src[ch * hw..(ch + 1) * hw]) {
                *d += wk * s;
            }
        }
        if relu {
            dst.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    out
}

pub fn per_item(x: &Tensor, f: impl Fn(&[f32]) -> f32) -> Vec<f32> {
    (0..x.shape[0]).map(|i| f(x.item(i))).collect()
}

pub fn axpy_items(x: &mut Tensor, g: &Tensor, alpha: &[f32]) {
    for (i, &a) in alpha.iter().enumerate() {
        let gi = g.item(i);
        x.item_mut(i).iter_mut().zip(gi).for_each(|(v, d)| *v += a * d);
    }
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

pub fn clamp_channels(x: &mut Tensor, lo: &[f32], hi: &[f32]) {
    let (n, c, h, w) = x.nchw();
    for b in 0..n {
        for ch in 0..c {
            let off = (b * c + ch) * h * w;
            x.data[off..off + h * w].iter_mut().for_each(|v| *v = v.clamp(lo[ch], hi[ch]));
        }
    }
}

/// Heat-map pictures of maps `[n, 1, h, w]` (arguments checked by the caller), exactly as the
/// host pipeline makes them: upsample, normalise (clipped at the `clip`-quantile when given),
/// then colour or blend over the picture.
pub fn render(maps: &Tensor, pictures: Option<&[RgbImage]>, out_hw: [usize; 2], cmap: Colormap, alpha: f32, clip: Option<f32>) -> Vec<RgbImage> {
    let (n, _, h, w) = maps.nchw();
    let [oh, ow] = out_hw;
    (0..n)
        .map(|i| {
            let up = normalize_map_clipped(&upsample_bilinear(maps.item(i), h, w, oh, ow), clip);
            match pictures {
                Some(p) => overlay(&p[i], &up, cmap, alpha),
                None => colorize(&up, oh, ow, cmap),
            }
        })
        .collect()
}
