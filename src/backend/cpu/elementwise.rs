//! Elementwise ops on the CPU: activations, channel scale (squeeze-excitation), per-channel
//! affine, and local response normalisation. Gradients at kinks follow PyTorch (see
//! [`act_grad`]); NaN inputs propagate through every activation.

use crate::backend::{Act, LrnGeom};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Elements per rayon task for the purely elementwise loops.
const CHUNK: usize = 1 << 14;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub(crate) fn act_value(x: f32, a: Act) -> f32 {
    match a {
        // not x.max(0.0), which turns NaN into 0
        Act::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                x
            }
        }
        Act::Relu6 => x.clamp(0.0, 6.0), // f32::clamp keeps NaN
        Act::Silu => x * sigmoid(x),
        Act::Sigmoid => sigmoid(x),
        Act::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
    }
}

/// d act / dx at x, PyTorch's choice at the kinks: ReLU 0 at x = 0 (`threshold_backward`),
/// ReLU6 0 at x <= 0 and x >= 6 (`hardtanh_backward`), hard-swish 0 for x < -3, 1 for x > 3,
/// x/3 + 1/2 on [-3, 3] (`hardswish_backward`).
#[allow(clippy::neg_cmp_op_on_partial_ord)] // PyTorch's comparisons, NaN behaviour included
pub(crate) fn act_grad(x: f32, a: Act) -> f32 {
    match a {
        // negated comparisons, as PyTorch writes them: a NaN input passes the gradient on
        Act::Relu => !(x <= 0.0) as u8 as f32,
        Act::Relu6 => !(x <= 0.0 || x >= 6.0) as u8 as f32,
        Act::Silu => {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
        Act::Sigmoid => {
            let s = sigmoid(x);
            s * (1.0 - s)
        }
        Act::HardSwish => {
            if x < -3.0 {
                0.0
            } else if x <= 3.0 {
                x / 3.0 + 0.5
            } else {
                1.0
            }
        }
    }
}

/// A vector of `n` floats computed in parallel [`CHUNK`] at a time, written once: `f(start, len)`
/// yields the values at `start..start + len` (at least `len` of them; fewer panics). The ops below
/// build their outputs with it: no copy of the input first, no zero-filled buffer overwritten.
fn par_vec<I: Iterator<Item = f32>>(n: usize, f: impl Fn(usize, usize) -> I + Sync) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n].par_chunks_mut(CHUNK).enumerate().for_each(|(i, dst)| {
        let len = dst.len();
        let mut written = 0;
        for (slot, x) in dst.iter_mut().zip(f(i * CHUNK, len)) {
            slot.write(x);
            written += 1;
        }
        assert_eq!(written, len, "par_vec: too few values");
    });
    // SAFETY: each chunk of the first n elements was written in full (counted above; a task that
    // panics propagates its panic out of for_each before this line runs)
    unsafe { v.set_len(n) };
    v
}

/// `$body!(act)` with `$a` matched outside it: ReLU and ReLU6 get a loop of their own with the
/// activation a constant, which vectorises (with the match inside, each element went through a
/// jump table: ~4% of resnet50's saliency on the CPU).
macro_rules! per_act {
    ($a:expr, $body:ident) => {
        match $a {
            Act::Relu => $body!(Act::Relu),
            Act::Relu6 => $body!(Act::Relu6),
            a => $body!(a),
        }
    };
}
pub(crate) use per_act;

pub fn act(x: &Tensor, a: Act) -> Tensor {
    macro_rules! go {
        ($a:expr) => {
            par_vec(x.numel(), |s, l| x.data[s..s + l].iter().map(move |&v| act_value(v, $a)))
        };
    }
    Tensor { shape: x.shape.clone(), data: per_act!(a, go) }
}

pub fn act_backward(x: &Tensor, gy: &Tensor, a: Act) -> Tensor {
    debug_assert_eq!(x.shape, gy.shape);
    macro_rules! go {
        ($a:expr) => {
            par_vec(gy.numel(), |s, l| gy.data[s..s + l].iter().zip(&x.data[s..s + l]).map(move |(&g, &xv)| g * act_grad(xv, $a)))
        };
    }
    Tensor { shape: gy.shape.clone(), data: per_act!(a, go) }
}

/// a + b (equal shapes)
pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    debug_assert_eq!(a.shape, b.shape);
    let data = par_vec(a.numel(), |s, l| a.data[s..s + l].iter().zip(&b.data[s..s + l]).map(|(x, y)| x + y));
    Tensor { shape: a.shape.clone(), data }
}

/// a += b (equal shapes)
pub fn add_assign(a: &mut Tensor, b: &Tensor) {
    debug_assert_eq!(a.shape, b.shape);
    a.data.par_chunks_mut(CHUNK).zip(b.data.par_chunks(CHUNK)).for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(x, y)| *x += y));
}

/// Size of one (n, c) plane, checking that `per_channel` holds one value per channel plane.
fn plane(x: &Tensor, per_plane: usize) -> usize {
    debug_assert!(x.rank() >= 2 && per_plane > 0 && x.numel().is_multiple_of(per_plane), "shape {:?}", x.shape);
    x.numel() / per_plane.max(1)
}

/// y = x * s[n, c]
pub fn channel_scale(x: &Tensor, s: &Tensor) -> Tensor {
    debug_assert_eq!(s.numel(), x.shape[0] * x.shape[1]);
    let hw = plane(x, s.numel());
    let mut y = x.clone();
    y.data.par_chunks_mut(hw.max(1)).zip(&s.data).for_each(|(p, &sv)| p.iter_mut().for_each(|v| *v *= sv));
    y
}

/// (gx = gy * s, gs[n, c] = sum over the plane of gy * x)
pub fn channel_scale_backward(x: &Tensor, s: &Tensor, gy: &Tensor) -> (Tensor, Tensor) {
    let gx = channel_scale(gy, s);
    let hw = plane(x, s.numel()).max(1);
    let gs = gy.data.par_chunks(hw).zip(x.data.par_chunks(hw)).map(|(g, xv)| g.iter().zip(xv).map(|(a, b)| a * b).sum());
    (gx, Tensor { shape: s.shape.clone(), data: gs.collect() })
}

/// y[n, c, ..] = x[n, c, ..] * scale[c] + shift[c]
pub fn affine(x: &Tensor, scale: &[f32], shift: &[f32]) -> Tensor {
    let c = x.shape[1];
    debug_assert!(scale.len() == c && shift.len() == c);
    let hw = plane(x, x.shape[0] * c).max(1);
    let mut y = x.clone();
    y.data.par_chunks_mut(hw).enumerate().for_each(|(i, p)| {
        let (a, b) = (scale[i % c], shift[i % c]);
        p.iter_mut().for_each(|v| *v = *v * a + b);
    });
    y
}

pub fn affine_backward(gy: &Tensor, scale: &[f32]) -> Tensor {
    affine(gy, scale, &vec![0.0; scale.len()])
}

/// The channel window of LRN around channel `c`: `[c - size/2, c + (size-1)/2]` clipped.
fn lrn_window(c: usize, size: usize, channels: usize) -> (usize, usize) {
    (c.saturating_sub(size / 2), (c + size.saturating_sub(1) / 2 + 1).min(channels))
}

/// `d[c, p] = k + alpha/size * sum_{j in window(c)} x[j, p]^2` for one image `[C, HW]`.
fn lrn_denominator(x: &[f32], c: usize, hw: usize, g: &LrnGeom) -> Vec<f32> {
    let sq: Vec<f32> = x.iter().map(|v| v * v).collect();
    let mut d = vec![0.0f32; c * hw];
    let a = g.alpha / g.size as f32;
    for (ci, dc) in d.chunks_mut(hw).enumerate() {
        let (lo, hi) = lrn_window(ci, g.size, c);
        for j in lo..hi {
            dc.iter_mut().zip(&sq[j * hw..(j + 1) * hw]).for_each(|(s, q)| *s += q);
        }
        dc.iter_mut().for_each(|s| *s = g.k + a * *s);
    }
    d
}

/// PyTorch's `nn.LocalResponseNorm`: y = x / d^beta, d as in [`lrn_denominator`].
pub fn lrn(x: &Tensor, g: &LrnGeom) -> Tensor {
    let (_, c, h, w) = x.nchw();
    let hw = h * w;
    let mut y = x.clone();
    if y.numel() == 0 {
        return y;
    }
    y.data.par_chunks_mut(c * hw).zip(x.data.par_chunks(c * hw)).for_each(|(yn, xn)| {
        let d = lrn_denominator(xn, c, hw, g);
        yn.iter_mut().zip(&d).for_each(|(v, dv)| *v *= dv.powf(-g.beta));
    });
    y
}

/// gx[j] = gy[j] d[j]^-beta - (2 alpha beta / size) x[j] sum_{c : j in window(c)} gy[c] x[c] d[c]^(-beta-1),
/// where j is in window(c) exactly when c is in `[j - (size-1)/2, j + size/2]`.
pub fn lrn_backward(x: &Tensor, gy: &Tensor, g: &LrnGeom) -> Tensor {
    let (_, c, h, w) = x.nchw();
    let hw = h * w;
    let mut gx = Tensor::zeros(&x.shape);
    if gx.numel() == 0 {
        return gx;
    }
    let coef = 2.0 * g.alpha * g.beta / g.size as f32;
    let items = gx.data.par_chunks_mut(c * hw).zip(x.data.par_chunks(c * hw)).zip(gy.data.par_chunks(c * hw));
    items.for_each(|((gxn, xn), gyn)| {
        let d = lrn_denominator(xn, c, hw, g);
        // t = gy * x * d^(-beta-1)
        let t: Vec<f32> = gyn.iter().zip(xn).zip(&d).map(|((gv, xv), dv)| gv * xv * dv.powf(-g.beta - 1.0)).collect();
        for (j, gj) in gxn.chunks_mut(hw).enumerate() {
            let lo = j.saturating_sub(g.size.saturating_sub(1) / 2);
            let hi = (j + g.size / 2 + 1).min(c);
            for ci in lo..hi {
                gj.iter_mut().zip(&t[ci * hw..(ci + 1) * hw]).for_each(|(s, tv)| *s += tv);
            }
            let (xj, gyj, dj) = (&xn[j * hw..(j + 1) * hw], &gyn[j * hw..(j + 1) * hw], &d[j * hw..(j + 1) * hw]);
            for p in 0..hw {
                gj[p] = gyj[p] * dj[p].powf(-g.beta) - coef * xj[p] * gj[p];
            }
        }
    });
    gx
}
