//! Activations, channel scale, affine and LRN against f64 formulas written here, backward
//! passes against central differences (of an f64 reference, so a small eps is exact enough),
//! and the gradients at the kinks by PyTorch's conventions.

mod common;
use common::*;
use deepviz::backend::cpu::Cpu;
use deepviz::backend::{Act, LrnGeom};
use deepviz::Tensor;

const SHAPE: [usize; 4] = [3, 33, 7, 13];
const ACTS: [Act; 5] = [Act::Relu, Act::Relu6, Act::Silu, Act::Sigmoid, Act::HardSwish];

fn act_ref(x: f64, a: Act) -> f64 {
    let sig = 1.0 / (1.0 + (-x).exp());
    match a {
        Act::Relu => x.max(0.0),
        Act::Relu6 => x.clamp(0.0, 6.0),
        Act::Silu => x * sig,
        Act::Sigmoid => sig,
        Act::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
    }
}

/// Inputs spread over [-8, 8) so every piece of every activation is hit.
fn wide_input(seed: u64) -> Tensor {
    let mut x = seeded_tensor(seed, &SHAPE);
    x.data.iter_mut().for_each(|v| *v *= 8.0);
    x
}

#[test]
fn activations_forward_and_backward() {
    let cpu = Cpu;
    let x = wide_input(51);
    let r = seeded_tensor(52, &SHAPE);
    for a in ACTS {
        let what = format!("act.{a:?}");
        let want: Vec<f64> = x.data.iter().map(|&v| act_ref(v as f64, a)).collect();
        let y = cpu.act(&x, a);
        assert_close(&format!("{what}.forward"), &y.data, &f32s(&want), 1e-6, 1e-6);
        let gx = cpu.act_backward(&x, &r, a);
        fd_check(&format!("{what}.gx"), &x.data, &gx.data,
            |v| r.data.iter().zip(v).map(|(&rv, &xv)| rv as f64 * act_ref(xv, a)).sum(), 1e-6, 400, 1e-5, 1e-4);
    }
}

#[test]
fn activation_gradients_at_the_kinks_follow_pytorch() {
    let cpu = Cpu;
    let x = Tensor::new(vec![1, 7, 1, 1], vec![-3.0, 0.0, 3.0, 6.0, -3.5, 3.5, 6.5]).unwrap();
    let ones = Tensor::full(&x.shape, 1.0);
    let g = |a| cpu.act_backward(&x, &ones, a).data;
    // threshold_backward: 0 where x <= 0
    assert_eq!(g(Act::Relu), [0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
    // hardtanh_backward: 0 where x <= 0 or x >= 6
    assert_eq!(g(Act::Relu6), [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    // hardswish_backward: 0 if x < -3, x/3 + 1/2 if x <= 3, else 1
    assert_eq!(g(Act::HardSwish), [-0.5, 0.5, 1.5, 1.0, 0.0, 1.0, 1.0]);
    // NaN propagates forward
    let nan = Tensor::new(vec![1, 1, 1, 1], vec![f32::NAN]).unwrap();
    for a in ACTS {
        assert!(cpu.act(&nan, a).data[0].is_nan(), "{a:?} swallowed a NaN");
    }
}

#[test]
fn channel_scale_forward_and_backward() {
    let cpu = Cpu;
    let x = seeded_tensor(61, &SHAPE);
    let s = seeded_tensor(62, &[3, 33, 1, 1]);
    let hw = 7 * 13;
    let fwd = |x: &[f64], s: &[f64]| -> Vec<f64> { x.iter().enumerate().map(|(i, v)| v * s[i / hw]).collect() };
    let (xd, sd) = (f64s(&x.data), f64s(&s.data));
    let y = cpu.channel_scale(&x, &s);
    assert_close("channel_scale.forward", &y.data, &f32s(&fwd(&xd, &sd)), 1e-6, 1e-6);
    let r = seeded_tensor(63, &SHAPE);
    let (gx, gs) = cpu.channel_scale_backward(&x, &s, &r);
    assert_eq!(gs.shape, s.shape);
    fd_check("channel_scale.gx", &x.data, &gx.data, |v| dot(&r.data, &fwd(v, &sd)), 1e-3, 200, 1e-5, 1e-4);
    fd_check("channel_scale.gs", &s.data, &gs.data, |v| dot(&r.data, &fwd(&xd, v)), 1e-3, 200, 1e-4, 1e-4);
}

#[test]
fn affine_forward_and_backward() {
    let cpu = Cpu;
    let x = seeded_tensor(71, &SHAPE);
    let (scale, shift) = (seeded(72, 33), seeded(73, 33));
    let hw = 7 * 13;
    let fwd = |x: &[f64]| -> Vec<f64> {
        x.iter().enumerate().map(|(i, v)| v * scale[i / hw % 33] as f64 + shift[i / hw % 33] as f64).collect()
    };
    let y = cpu.affine(&x, &scale, &shift);
    assert_close("affine.forward", &y.data, &f32s(&fwd(&f64s(&x.data))), 1e-6, 1e-6);
    let r = seeded_tensor(74, &SHAPE);
    let gx = cpu.affine_backward(&r, &scale);
    fd_check("affine.gx", &x.data, &gx.data, |v| dot(&r.data, &fwd(v)), 1e-3, 200, 1e-5, 1e-4);
}

/// PyTorch's LocalResponseNorm in f64: window [c - size/2, c + (size-1)/2] clipped, divided by
/// `size` whatever the clipping (avg_pool3d over a zero-padded channel axis).
fn lrn_ref(x: &[f64], s: &[usize], g: &LrnGeom) -> Vec<f64> {
    let (c, hw) = (s[1], s[2] * s[3]);
    let mut y = vec![0.0; x.len()];
    for n in 0..s[0] {
        for ci in 0..c {
            for p in 0..hw {
                let lo = ci as isize - (g.size / 2) as isize;
                let hi = ci as isize + ((g.size - 1) / 2) as isize;
                let mut sum = 0.0;
                for j in lo.max(0)..=hi.min(c as isize - 1) {
                    sum += x[(n * c + j as usize) * hw + p].powi(2);
                }
                let d = g.k as f64 + g.alpha as f64 / g.size as f64 * sum;
                let i = (n * c + ci) * hw + p;
                y[i] = x[i] / d.powf(g.beta as f64);
            }
        }
    }
    y
}

#[test]
fn lrn_forward_and_backward() {
    let cpu = Cpu;
    // AlexNet's (size 5, 1e-4, 0.75, 2), GoogLeNet-like k=1, an even size (asymmetric
    // window), and a strong alpha so the cross-channel term dominates the gradient
    let geoms = [
        LrnGeom { size: 5, alpha: 1e-4, beta: 0.75, k: 2.0 },
        LrnGeom { size: 5, alpha: 0.5, beta: 0.75, k: 1.0 },
        LrnGeom { size: 4, alpha: 2.0, beta: 0.6, k: 2.0 },
        LrnGeom { size: 40, alpha: 1.0, beta: 1.5, k: 1.0 },
    ];
    let s = [3, 33, 3, 5];
    for (i, g) in geoms.iter().enumerate() {
        let what = format!("lrn.{i}");
        let mut x = seeded_tensor(81, &s);
        x.data.iter_mut().for_each(|v| *v *= 3.0);
        let want = lrn_ref(&f64s(&x.data), &s, g);
        let y = cpu.lrn(&x, g);
        assert_close(&format!("{what}.forward"), &y.data, &f32s(&want), 1e-6, 1e-5);
        let r = seeded_tensor(82, &s);
        let gx = cpu.lrn_backward(&x, &r, g);
        fd_check(&format!("{what}.gx"), &x.data, &gx.data, |v| dot(&r.data, &lrn_ref(v, &s, g)), 1e-5, 200, 1e-5, 1e-3);
    }
}
