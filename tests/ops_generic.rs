//! The generic primitives of the `Backend` trait (unary, broadcast binary, reductions along
//! axes, iota, full, random, flip, crop and paste, gathering planes, affine warp and its adjoint) — one test body per primitive, run on every backend: the CPU engine, the
//! CUDA engine on the emulated GPU under every schedule, and on the real GPU when there is one.
//! References are f64 loops written here over row-major NCHW. Shapes break careless indexing
//! (batch 3, 33 channels, 7x13 planes) and cross the engine's NHWC layout: a [3, 33, 1, 1]
//! broadcast over [3, 33, 7, 13], a reduction over channels of an NHWC tensor.

mod common;

use std::sync::Arc;

use common::{assert_close, seeded};
use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::{Backend, Binary, Random, Reduce, Unary};
use deepviz::device::Device;
use deepviz::imageio::clip_threshold;
use deepviz::Tensor;

/// Run `$body(&backend, name)` on every backend.
macro_rules! on_every_backend {
    ($body:ident) => {{
        $body(&Cpu, "cpu");
        for d in common::devices() {
            let name = d.name().to_string();
            let gpu = Gpu::new(Arc::<dyn Device>::from(d));
            $body(&gpu, &name);
        }
    }};
}

fn t(shape: &[usize], seed: u64) -> Tensor {
    common::seeded_tensor(seed, shape)
}

/// Row-major multi-index of flat position i.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        out[d] = i % shape[d];
        i /= shape[d];
    }
    out
}

fn at(x: &Tensor, idx: &[usize]) -> f32 {
    let mut off = 0;
    for (d, &k) in idx.iter().enumerate() {
        off = off * x.shape[d] + if x.shape[d] == 1 { 0 } else { k };
    }
    x.data[off]
}

fn unary_body<B: Backend>(be: &B, name: &str) {
    let mut x = t(&[3, 33, 7, 13], 1);
    x.data.iter_mut().for_each(|v| *v *= 3.0);
    x.data[5] = 0.0;
    x.data[6] = f32::NAN;
    let dx = be.upload(&x).unwrap();
    type Ref = fn(f64) -> f64;
    let ops: [(Unary, Ref); 11] = [
        (Unary::Neg, |v| -v),
        (Unary::Abs, f64::abs),
        (Unary::Relu, |v| if v <= 0.0 { 0.0 } else { v }),
        (Unary::Square, |v| v * v),
        (Unary::Sqrt, f64::sqrt),
        (Unary::Exp, f64::exp),
        (Unary::Log, f64::ln),
        (Unary::Step, |v| if v > 0.0 { 1.0 } else { 0.0 }),
        (Unary::Affine(-0.75, 0.25), |v| -0.75 * v + 0.25),
        (Unary::Clamp(-0.5, 1.25), |v| v.clamp(-0.5, 1.25)),
        (Unary::Recip, |v| 1.0 / v),
    ];
    for (op, f) in ops {
        let got = be.download(&be.unary(&dx, op).unwrap()).unwrap();
        assert_eq!(got.shape, x.shape);
        // NaN stays NaN (Step of NaN: 0, as NaN > 0 is false)
        let want: Vec<f32> = x.data.iter().map(|&v| if v.is_nan() && op != Unary::Step { f32::NAN } else { f(v as f64) as f32 }).collect();
        assert_close(&format!("{name}.unary.{op:?}"), &got.data, &want, 1e-7, 2e-6);
    }
}

#[test]
fn unary_ops() {
    on_every_backend!(unary_body);
}

fn binary_body<B: Backend>(be: &B, name: &str) {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 33, 7, 13], &[3, 33, 7, 13]),
        (&[3, 33, 7, 13], &[3, 33, 1, 1]),
        (&[1, 33, 1, 1], &[3, 33, 7, 13]),
        (&[3, 1, 7, 13], &[1, 33, 1, 1]),
        (&[3, 1, 7, 1], &[3, 1, 1, 13]),
        (&[3, 1000], &[3, 1]),
        // one value per item, as heat maps are normalised: [n, 1, 1, 1] against [n, c, h, w]
        (&[3, 1, 7, 13], &[3, 1, 1, 1]),
        (&[3, 33, 7, 13], &[3, 1, 1, 1]),
        (&[1, 1000], &[3, 1]),
        (&[7], &[7]),
    ];
    let ops = [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Max, Binary::Min, Binary::Eq];
    for (k, &(sa, sb)) in cases.iter().enumerate() {
        let mut a = t(sa, 10 + k as u64);
        let mut b = t(sb, 20 + k as u64);
        // equal values for Eq, and a NaN on each side
        let n = a.data.len().min(b.data.len());
        for i in (0..n).step_by(3) {
            a.data[i] = b.data[i];
        }
        a.data[1] = f32::NAN;
        let last = b.data.len() - 1;
        b.data[last] = f32::NAN;
        let shape = deepviz::backend::broadcast_shape(sa, sb).unwrap();
        let (da, db) = (be.upload(&a).unwrap(), be.upload(&b).unwrap());
        for op in ops {
            let got = be.download(&be.binary(&da, &db, op).unwrap()).unwrap();
            assert_eq!(got.shape, shape, "{name} {sa:?} {op:?} {sb:?}");
            let want: Vec<f32> = (0..got.data.len())
                .map(|i| {
                    let idx = unravel(i, &shape);
                    let (x, y) = (at(&a, &idx), at(&b, &idx));
                    match op {
                        Binary::Add => x + y,
                        Binary::Sub => x - y,
                        Binary::Mul => x * y,
                        Binary::Div => x / y,
                        Binary::Max => if x.is_nan() || y.is_nan() { f32::NAN } else { x.max(y) },
                        Binary::Min => if x.is_nan() || y.is_nan() { f32::NAN } else { x.min(y) },
                        Binary::Eq => (x == y) as u8 as f32,
                    }
                })
                .collect();
            assert_close(&format!("{name}.binary.{sa:?}.{op:?}.{sb:?}"), &got.data, &want, 0.0, 0.0);
        }
    }
    // shapes that do not broadcast
    let (a, b) = (be.upload(&t(&[3, 4, 5, 6], 1)).unwrap(), be.upload(&t(&[3, 2, 5, 6], 2)).unwrap());
    assert!(be.binary(&a, &b, Binary::Add).is_err(), "{name}");
    assert!(be.binary(&a, &be.upload(&t(&[3, 4], 3)).unwrap(), Binary::Add).is_err(), "{name}");
}

#[test]
fn binary_ops_broadcast() {
    on_every_backend!(binary_body);
}

/// The f64 reference of one reduction.
fn reduce_ref(x: &Tensor, op: Reduce, axes: &[usize]) -> Tensor {
    let shape: Vec<usize> = x.shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let n_out: usize = shape.iter().product();
    let mut rows: Vec<Vec<f32>> = vec![vec![]; n_out];
    for i in 0..x.data.len() {
        let idx = unravel(i, &x.shape);
        let mut o = 0;
        for (d, &k) in idx.iter().enumerate() {
            o = o * shape[d] + if axes.contains(&d) { 0 } else { k };
        }
        rows[o].push(x.data[i]); // row-major order within the reduced axes
    }
    let data = rows
        .iter()
        .map(|r| match op {
            Reduce::Sum => r.iter().map(|&v| v as f64).sum::<f64>() as f32,
            Reduce::Mean => (r.iter().map(|&v| v as f64).sum::<f64>() / r.len() as f64) as f32,
            Reduce::Max => r.iter().copied().fold(f32::NEG_INFINITY, |m, v| if m.is_nan() || v.is_nan() { f32::NAN } else { m.max(v) }),
            Reduce::Min => r.iter().copied().fold(f32::INFINITY, |m, v| if m.is_nan() || v.is_nan() { f32::NAN } else { m.min(v) }),
            Reduce::ArgMax => {
                let nan = r.iter().position(|v| v.is_nan());
                nan.unwrap_or_else(|| {
                    let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    r.iter().position(|&v| v == m).unwrap()
                }) as f32
            }
            Reduce::Percentile(q) => numpy_percentile(r, q),
            Reduce::Quantile(q) => clip_threshold(r, q).unwrap_or_else(|| r.iter().copied().filter(|v| v.is_finite()).fold(f32::NAN, f32::max)),
        })
        .collect();
    Tensor::new(shape, data).unwrap()
}

/// `np.percentile(np.array(row, dtype=np.float32), float(q))` (numpy 2.x, method "linear"): a full
/// host sort, then numpy's `_lerp` in numpy's dtypes (checked against numpy 2.4 on 3000 random
/// rows with ties, every bit equal).
fn numpy_percentile(row: &[f32], q: f32) -> f32 {
    if row.iter().any(|v| v.is_nan()) {
        return f32::NAN;
    }
    let mut s = row.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = (s.len() - 1) as f64 * (q as f64 / 100.0);
    let lo = at.floor() as usize;
    let (a, b, t) = (s[lo], s[(lo + 1).min(s.len() - 1)], at - at.floor());
    let d = b - a; // float32 - float32
    // float32 * Python float: the float is cast to float32 first
    if t >= 0.5 {
        b - d * (1.0 - t) as f32
    } else {
        a + d * t as f32
    }
}

fn reduce_body<B: Backend>(be: &B, name: &str) {
    let mut x = t(&[3, 33, 7, 13], 30);
    // ties: repeat the maximum of a few rows
    x.data[100] = 5.0;
    x.data[200] = 5.0;
    let mut big = t(&[2, 5, 40, 50], 31);
    big.data[17] = f32::NAN; // one NaN in item 0 (the block kernel's path)
    let mut logits = t(&[4, 1000], 32);
    logits.data[7] = 2.0;
    logits.data[9] = 2.0; // tie in row 0: the first wins
    logits.data[1000 + 500] = f32::NAN; // row 1: NaN wins
    let cases: Vec<(&Tensor, Vec<Vec<usize>>)> = vec![
        (&x, vec![vec![1], vec![2, 3], vec![1, 2, 3], vec![0], vec![0, 2], vec![3], vec![0, 1, 2, 3]]),
        (&big, vec![vec![1, 2, 3], vec![2, 3], vec![1]]),
        (&logits, vec![vec![1], vec![0]]),
    ];
    for (x, axes_list) in cases {
        let dx = be.upload(x).unwrap();
        for axes in axes_list {
            for op in [Reduce::Sum, Reduce::Mean, Reduce::Max, Reduce::Min, Reduce::ArgMax, Reduce::Quantile(0.9), Reduce::Quantile(0.5), Reduce::Percentile(60.0), Reduce::Percentile(37.3)] {
                let what = format!("{name}.reduce.{:?}.{axes:?}.{op:?}", x.shape);
                let got = be.download(&be.reduce(&dx, op, &axes).unwrap()).unwrap();
                let want = reduce_ref(x, op, &axes);
                assert_eq!(got.shape, want.shape, "{what}");
                let (atol, rtol) = match op {
                    Reduce::Sum | Reduce::Mean => (2e-6, 2e-5),
                    _ => (0.0, 0.0),
                };
                assert_close(&what, &got.data, &want.data, atol, rtol);
                // the same bits on a second run
                let again = be.download(&be.reduce(&dx, op, &axes).unwrap()).unwrap();
                let bits = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&again), "{what}: two runs differ");
            }
        }
    }
    assert!(be.reduce(&dx_of(be, &x), Reduce::Sum, &[4]).is_err(), "{name}: axis out of range");
    assert!(be.reduce(&dx_of(be, &x), Reduce::Sum, &[1, 1]).is_err(), "{name}: repeated axis");
    assert!(be.reduce(&dx_of(be, &x), Reduce::Sum, &[]).is_err(), "{name}: no axis");
}

fn dx_of<B: Backend>(be: &B, x: &Tensor) -> B::T {
    be.upload(x).unwrap()
}

#[test]
fn reductions_along_axes() {
    on_every_backend!(reduce_body);
}

fn percentile_body<B: Backend>(be: &B, name: &str) {
    // ties (values rounded to a few levels), both signs of zero, one-element rows, a row of equal
    // values, and odd lengths
    let mut x = t(&[3, 5, 7, 13], 33);
    x.data.iter_mut().for_each(|v| *v = (*v * 4.0).round() * 0.37);
    x.data[0] = -0.0;
    x.data[5 * 7 * 13..2 * 5 * 7 * 13].iter_mut().for_each(|v| *v = 2.5); // item 1: all equal
    // infinities in rows of 99 (the radix selection) and of 11 (ranked by counting)
    let mut inf = t(&[2, 1, 9, 11], 34);
    inf.data[3] = f32::INFINITY;
    inf.data[20] = f32::NEG_INFINITY;
    inf.data[120] = f32::INFINITY;
    let single = t(&[4, 1, 1, 1], 35);
    for (x, axes) in [(&x, vec![1, 2, 3]), (&x, vec![2, 3]), (&x, vec![3]), (&x, vec![0, 2]), (&inf, vec![1, 2, 3]), (&inf, vec![3]), (&single, vec![1, 2, 3])] {
        let dx = be.upload(x).unwrap();
        for q in [0.0, 12.5, 37.3, 50.0, 60.0, 99.9, 100.0] {
            let got = be.download(&be.reduce(&dx, Reduce::Percentile(q), &axes).unwrap()).unwrap();
            let want = reduce_ref(x, Reduce::Percentile(q), &axes);
            assert_eq!(got.shape, want.shape, "{name}");
            // one value for every NaN (numpy's answer where ±inf meet with weight 0): the card's
            // 0·inf is 0x7fffffff, the x86 CPU's 0xffc00000
            let bits = |t: &Tensor| t.data.iter().map(|v| if *v == 0.0 { 0 } else if v.is_nan() { 1 } else { v.to_bits() }).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{name}: percentile {q} of {:?} along {axes:?}: {:?} want {:?}", x.shape, got.data, want.data);
        }
    }
    for q in [-1.0, 100.5, f32::NAN] {
        assert!(be.reduce(&dx_of(be, &x), Reduce::Percentile(q), &[1]).is_err(), "{name}: percentile {q}");
    }
}

#[test]
fn percentiles_are_numpys() {
    on_every_backend!(percentile_body);
}

fn iota_full_body<B: Backend>(be: &B, name: &str) {
    let i = be.download(&be.iota(1001).unwrap()).unwrap();
    assert_eq!(i.shape, vec![1, 1001], "{name}");
    assert!(i.data.iter().enumerate().all(|(k, &v)| v == k as f32), "{name}: iota");
    for (shape, v) in [(vec![3, 33, 7, 13], -2.5f32), (vec![2, 5], 0.0), (vec![3, 1, 1, 1], 1e-3)] {
        let f = be.download(&be.full(&shape, v).unwrap()).unwrap();
        assert_eq!(f.shape, shape, "{name}");
        assert!(f.data.iter().all(|&x| x == v), "{name}: full {v}");
    }
    // a fresh zero tensor is all zeros, whatever the allocation held before
    let z = be.download(&be.zeros(&[3, 33, 7, 13]).unwrap()).unwrap();
    assert!(z.data.iter().all(|&x| x == 0.0 && x.is_sign_positive()), "{name}: zeros");
    let _ = seeded(0, 1);
}

#[test]
fn iota_and_full() {
    on_every_backend!(iota_full_body);
}

/// SplitMix64 (Steele, Lea, Flood 2014) of (seed, counter) as a 53-bit uniform in (0, 1).
fn unit_ref(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 + 0.5) / 2f64.powi(53)
}

fn random_body<B: Backend>(be: &B, name: &str) {
    // [3, 33, 7, 13] sits in NHWC memory on the GPU: the counter must still be the NCHW index
    for shape in [vec![3, 33, 7, 13], vec![5, 11], vec![2, 1, 4, 4]] {
        for (dist, seed) in [(Random::Normal, 7u64), (Random::Uniform, 0x2545_F491_4F6C_DD1D)] {
            let got = be.download(&be.random(&shape, seed, dist).unwrap()).unwrap();
            assert_eq!(got.shape, shape, "{name}");
            let want: Vec<f32> = (0..got.data.len() as u64)
                .map(|i| match dist {
                    Random::Normal => ((-2.0 * unit_ref(seed, 2 * i).ln()).sqrt() * (std::f64::consts::TAU * unit_ref(seed, 2 * i + 1)).cos()) as f32,
                    Random::Uniform => unit_ref(seed, i) as f32,
                })
                .collect();
            // the GPU's f64 log / cos may differ from the host's in the last bit of a double
            assert_close(&format!("{name} random {dist:?} {shape:?}"), &got.data, &want, 1e-6, 1e-6);
        }
    }
    // the numbers look like their distributions, and another seed gives others
    let n = be.download(&be.random(&[3, 33, 7, 13], 1, Random::Normal).unwrap()).unwrap().data;
    let m = n.iter().map(|&v| v as f64).sum::<f64>() / n.len() as f64;
    let var = n.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n.len() as f64;
    assert!(m.abs() < 0.05 && (var - 1.0).abs() < 0.05, "{name}: normal mean {m}, variance {var}");
    let u = be.download(&be.random(&[3, 33, 7, 13], 1, Random::Uniform).unwrap()).unwrap().data;
    assert!(u.iter().all(|&v| v > 0.0 && v < 1.0), "{name}: uniform outside (0, 1)");
    let other = be.download(&be.random(&[3, 33, 7, 13], 2, Random::Normal).unwrap()).unwrap().data;
    assert!(n.iter().zip(&other).filter(|(a, b)| a == b).count() < 10, "{name}: seeds 1 and 2 draw the same");
}

#[test]
fn random_numbers_are_the_same_on_every_backend() {
    on_every_backend!(random_body);
}

fn flip_body<B: Backend>(be: &B, name: &str) {
    // [3, 33, 7, 13] sits in NHWC memory on the GPU; odd sides put a fixed middle row / column
    for shape in [vec![3, 33, 7, 13], vec![2, 1, 4, 6], vec![1, 3, 1, 1]] {
        let x = t(&shape, 11);
        let dx = be.upload(&x).unwrap();
        for (fy, fx) in [(false, true), (true, false), (true, true), (false, false)] {
            let got = be.download(&be.flip(&dx, fy, fx).unwrap()).unwrap();
            assert_eq!(got.shape, shape, "{name}");
            let (h, w) = (shape[2], shape[3]);
            let want: Vec<f32> = (0..x.data.len())
                .map(|i| {
                    let mut idx = unravel(i, &shape);
                    if fy {
                        idx[2] = h - 1 - idx[2];
                    }
                    if fx {
                        idx[3] = w - 1 - idx[3];
                    }
                    at(&x, &idx)
                })
                .collect();
            assert_eq!(got.data, want, "{name}: flip {shape:?} vertical {fy} horizontal {fx}");
        }
        // a flip is its own inverse
        let twice = be.flip(&be.flip(&dx, true, true).unwrap(), true, true).unwrap();
        assert_eq!(be.download(&twice).unwrap().data, x.data, "{name}: flip twice");
    }
}

#[test]
fn flip_mirrors_planes() {
    on_every_backend!(flip_body);
}

fn crop_paste_body<B: Backend>(be: &B, name: &str) {
    let shape = [3, 33, 7, 13];
    let x = t(&shape, 12);
    let dx = be.upload(&x).unwrap();
    for (y0, x0, h, w) in [(0, 0, 7, 13), (2, 5, 4, 8), (6, 12, 1, 1), (1, 0, 5, 13)] {
        let c = be.download(&be.crop(&dx, y0, x0, h, w).unwrap()).unwrap();
        assert_eq!(c.shape, vec![3, 33, h, w], "{name}");
        let want: Vec<f32> = (0..c.data.len()).map(|i| { let k = unravel(i, &c.shape); at(&x, &[k[0], k[1], k[2] + y0, k[3] + x0]) }).collect();
        assert_eq!(c.data, want, "{name}: crop ({y0}, {x0}) {h}x{w}");
        // pasting the window back into zeros puts it where it came from, and nothing elsewhere
        let mut z = be.zeros(&shape).unwrap();
        be.paste(&mut z, &be.upload(&c).unwrap(), y0, x0).unwrap();
        let z = be.download(&z).unwrap();
        for (i, v) in z.data.iter().enumerate() {
            let k = unravel(i, &shape);
            let inside = (y0..y0 + h).contains(&k[2]) && (x0..x0 + w).contains(&k[3]);
            assert_eq!(*v, if inside { x.data[i] } else { 0.0 }, "{name}: paste at {k:?}");
        }
    }
    // a shared tensor is copied before the paste: the other handle keeps its values
    let mut shared = dx.clone();
    be.paste(&mut shared, &be.zeros(&[3, 33, 2, 2]).unwrap(), 0, 0).unwrap();
    assert_eq!(be.download(&dx).unwrap().data, x.data, "{name}: paste wrote through a clone");
    // windows outside, or of another batch or channel count, are errors
    assert!(be.crop(&dx, 5, 0, 3, 13).is_err() && be.crop(&dx, 0, 10, 7, 4).is_err(), "{name}");
    let mut z = be.zeros(&shape).unwrap();
    assert!(be.paste(&mut z, &be.zeros(&[3, 32, 2, 2]).unwrap(), 0, 0).is_err(), "{name}");
    assert!(be.paste(&mut z, &be.zeros(&[3, 33, 2, 2]).unwrap(), 6, 0).is_err(), "{name}");
}

#[test]
fn crop_and_paste_windows() {
    on_every_backend!(crop_paste_body);
}

fn gather_planes_body<B: Backend>(be: &B, name: &str) {
    let (n, c, h, w) = (3, 33, 7, 13);
    let x = t(&[n, c, h, w], 77);
    let xd = be.upload(&x).unwrap();
    // repeats, out of order, the first and the last plane
    let planes = [2 * c + 32, 0, 40, 40, c - 1, n * c - 1];
    let got = be.download(&be.gather_planes(&xd, &planes).unwrap()).unwrap();
    assert_eq!(got.shape, [planes.len(), 1, h, w], "{name}");
    for (k, &p) in planes.iter().enumerate() {
        assert_eq!(&got.data[k * h * w..(k + 1) * h * w], &x.data[p * h * w..(p + 1) * h * w], "{name}: plane {p} (item {}, channel {})", p / c, p % c);
    }
    assert_eq!(be.download(&be.gather_planes(&xd, &[]).unwrap()).unwrap().shape, [0, 1, h, w], "{name}");
    assert!(be.gather_planes(&xd, &[n * c]).is_err(), "{name}: a plane past the end");
}

#[test]
fn gather_planes_picks_whole_planes() {
    on_every_backend!(gather_planes_body);
}

/// PyTorch's `grid_sample(x, affine_grid(theta, x.shape, align_corners=False), "bilinear",
/// "zeros", align_corners=False)` in f64 as its docs define it, as (output index, input index,
/// weight) per tap, row-major NCHW.
fn warp_taps_ref(shape: &[usize], theta: &[f32]) -> Vec<(usize, usize, f64)> {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let mut taps = vec![];
    for i in 0..n {
        let th: Vec<f64> = theta[i * 6..i * 6 + 6].iter().map(|&v| v as f64).collect();
        for oy in 0..h {
            for ox in 0..w {
                let (xn, yn) = ((2 * ox + 1) as f64 / w as f64 - 1.0, (2 * oy + 1) as f64 / h as f64 - 1.0);
                let (gx, gy) = (th[0] * xn + th[1] * yn + th[2], th[3] * xn + th[4] * yn + th[5]);
                let (ix, iy) = (((gx + 1.0) * w as f64 - 1.0) / 2.0, ((gy + 1.0) * h as f64 - 1.0) / 2.0);
                if !(ix > -1.0 && ix < w as f64 && iy > -1.0 && iy < h as f64) {
                    continue;
                }
                let (x0, y0) = (ix.floor(), iy.floor());
                for (dy, dx) in [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)] {
                    let (xx, yy) = (x0 + dx, y0 + dy);
                    if xx < 0.0 || yy < 0.0 || xx >= w as f64 || yy >= h as f64 {
                        continue;
                    }
                    let wt = (1.0 - (ix - xx).abs()) * (1.0 - (iy - yy).abs());
                    for ch in 0..c {
                        let plane = (i * c + ch) * h * w;
                        taps.push((plane + oy * w + ox, plane + yy as usize * w + xx as usize, wt));
                    }
                }
            }
        }
    }
    taps
}

fn warp_body<B: Backend>(be: &B, name: &str) {
    let deg = |a: f32| a.to_radians();
    let (c30, s30) = (deg(30.0).cos(), deg(30.0).sin());
    // per item [t00, t01, t02, t10, t11, t12]: a rotation with zoom and shift; a zoom in by 1/0.3
    // (each input pixel feeds ~11 outputs a side); a singular map (every sample on one line);
    // a zoom out by 2 with shear; a NaN map (reads 0 everywhere); the identity
    let thetas = [
        [0.8 * c30, -0.8 * s30, 0.1, 0.8 * s30, 0.8 * c30, -0.2],
        [0.3, 0.0, 0.05, 0.0, 0.3, 0.0],
        [0.5, 0.25, 0.0, 1.0, 0.5, 0.1],
        [2.0, 0.4, 0.0, 0.0, 2.0, 0.3],
        [f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    ];
    for (shape, items) in [([3usize, 5, 7, 13], 0..3), ([3, 2, 12, 9], 3..6)] {
        let theta_t = Tensor::new(vec![3, 2, 3], thetas[items.clone()].concat()).unwrap();
        let x = t(&shape, 40);
        let gy = t(&shape, 41);
        let (dx, dt) = (be.upload(&x).unwrap(), be.upload(&theta_t).unwrap());
        let got = be.download(&be.warp(&dx, &dt).unwrap()).unwrap();
        let back = be.download(&be.warp_backward(&be.upload(&gy).unwrap(), &dt).unwrap()).unwrap();
        assert_eq!((&got.shape[..], &back.shape[..]), (&shape[..], &shape[..]), "{name}");
        let taps = warp_taps_ref(&shape, &theta_t.data);
        let (mut want, mut want_back) = (vec![0f64; x.data.len()], vec![0f64; x.data.len()]);
        for &(o, i, wt) in &taps {
            want[o] += wt * x.data[i] as f64;
            want_back[i] += wt * gy.data[o] as f64;
        }
        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
        assert_close(&format!("{name}.warp{shape:?}"), &got.data, &f32s(&want), 2e-5, 1e-5);
        assert_close(&format!("{name}.warp_backward{shape:?}"), &back.data, &f32s(&want_back), 2e-5, 1e-5);
        // the adjoint identity on the engine's own results
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
        let (lhs, rhs) = (dot(&got.data, &gy.data), dot(&x.data, &back.data));
        assert!((lhs - rhs).abs() <= 1e-5 * lhs.abs().max(1.0), "{name}: <warp(x), y> {lhs} but <x, warp_backward(y)> {rhs}");
        // every backend makes the CPU engine's bits (the same f32 operations, summed in the same order)
        let cpu = Cpu;
        let (cx, cb) = (cpu.warp(&x, &theta_t).unwrap(), cpu.warp_backward(&gy, &theta_t).unwrap());
        assert_close(&format!("{name}.warp_vs_cpu{shape:?}"), &got.data, &cx.data, 0.0, 0.0);
        assert_close(&format!("{name}.warp_backward_vs_cpu{shape:?}"), &back.data, &cb.data, 0.0, 0.0);
        if items.start == 3 {
            // the identity returns the input to the bit, and so does its adjoint; the NaN map reads 0
            let plane = 2 * 12 * 9;
            assert_eq!(&got.data[2 * plane..], &x.data[2 * plane..], "{name}: identity warp");
            assert_eq!(&back.data[2 * plane..], &gy.data[2 * plane..], "{name}: identity warp_backward");
            assert!(got.data[plane..2 * plane].iter().chain(&back.data[plane..2 * plane]).all(|&v| v == 0.0), "{name}: NaN map");
        }
    }
    // theta must be [n, 2, 3] for the batch
    let dx = be.upload(&t(&[3, 5, 7, 13], 42)).unwrap();
    for bad in [vec![2, 2, 3], vec![3, 6], vec![3, 3, 2]] {
        let th = be.upload(&Tensor::zeros(&bad)).unwrap();
        assert!(be.warp(&dx, &th).is_err() && be.warp_backward(&dx, &th).is_err(), "{name}: theta {bad:?}");
    }
}

#[test]
fn warp_resamples_like_grid_sample_and_its_adjoint_is_exact() {
    on_every_backend!(warp_body);
}
