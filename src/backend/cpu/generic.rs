//! The CPU engine's generic primitives ([`crate::backend::Unary`], [`Binary`], [`Reduce`]) on
//! row-major host tensors of rank up to 4. Sums accumulate in f64.

use crate::backend::{broadcast_shape, reduced_shape_of, Binary, Random, Reduce, Unary};
use crate::error::Result;
use crate::imageio::clip_threshold;
use crate::tensor::Tensor;
use rayon::prelude::*;

pub fn unary_value(x: f32, op: Unary) -> f32 {
    match op {
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                x
            }
        }
        Unary::Square => x * x,
        Unary::Sqrt => x.sqrt(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Step => (x > 0.0) as u8 as f32,
        Unary::Affine(a, b) => a * x + b,
        Unary::Clamp(lo, hi) => {
            if x < lo {
                lo
            } else if x > hi {
                hi
            } else {
                x
            }
        }
        Unary::Recip => 1.0 / x,
    }
}

pub fn binary_value(a: f32, b: f32, op: Binary) -> f32 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Max => {
            if a > b || a.is_nan() {
                a
            } else {
                b
            }
        }
        Binary::Min => {
            if a < b || a.is_nan() {
                a
            } else {
                b
            }
        }
        Binary::Eq => (a == b) as u8 as f32,
    }
}

pub fn unary(x: &Tensor, op: Unary) -> Tensor {
    Tensor { shape: x.shape.clone(), data: x.data.iter().map(|&v| unary_value(v, op)).collect() }
}

/// Row-major strides of `shape`, 0 along axes of length 1 (so they broadcast).
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        s[i] = if shape[i] == 1 { 0 } else { acc };
        acc *= shape[i];
    }
    s
}

/// The multi-index of flat row-major position `i` of `shape`.
fn unravel(mut i: usize, shape: &[usize], out: &mut [usize]) {
    for d in (0..shape.len()).rev() {
        out[d] = i % shape[d];
        i /= shape[d];
    }
}

pub fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    if a.shape == b.shape {
        let data = a.data.iter().zip(&b.data).map(|(&x, &y)| binary_value(x, y, op)).collect();
        return Ok(Tensor { shape, data });
    }
    if let Some(row) = row_broadcast(&a.shape, &b.shape) {
        // one b per row of a (a map's min against the map): no index arithmetic per element
        let mut data = Vec::with_capacity(a.data.len());
        for (r, &y) in a.data.chunks_exact(row).zip(&b.data) {
            data.extend(r.iter().map(|&x| binary_value(x, y, op)));
        }
        return Ok(Tensor { shape, data });
    }
    let (sa, sb) = (strides(&a.shape), strides(&b.shape));
    let n: usize = shape.iter().product();
    let mut idx = vec![0; shape.len()];
    let data = (0..n)
        .map(|i| {
            unravel(i, &shape, &mut idx);
            let (ia, ib) = idx.iter().enumerate().fold((0, 0), |(ia, ib), (d, &k)| (ia + k * sa[d], ib + k * sb[d]));
            binary_value(a.data[ia], b.data[ib], op)
        })
        .collect();
    Ok(Tensor { shape, data })
}

/// The length of a's rows when `b` holds one value per row of `a`: `b`'s shape is a leading
/// part of `a`'s followed by ones (`[n, 1, 1, 1]` against `[n, c, h, w]`), rows not empty.
fn row_broadcast(a: &[usize], b: &[usize]) -> Option<usize> {
    let k = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let row: usize = a[k..].iter().product();
    (a.len() == b.len() && b[k..].iter().all(|&d| d == 1) && row > 0).then_some(row)
}

pub fn reduce(x: &Tensor, op: Reduce, axes: &[usize]) -> Result<Tensor> {
    let shape = reduced_shape_of(&x.shape, axes, op)?;
    let (lo, hi) = (*axes.iter().min().expect("checked"), *axes.iter().max().expect("checked"));
    if hi - lo + 1 == axes.len() {
        // the reduced axes are one run (the usual case: channels, or the spatial axes): output
        // (o, i) reduces x[o, r, i] over r, in row-major order, `inner` apart
        let outer: usize = x.shape[..lo].iter().product();
        let red: usize = x.shape[lo..=hi].iter().product();
        let inner: usize = x.shape[hi + 1..].iter().product();
        let data = (0..outer * inner)
            .into_par_iter()
            .with_min_len((1 << 14) / red.max(1) + 1)
            .map_init(
                || Vec::with_capacity(red),
                |row, oi| {
                    let base = oi / inner * red * inner + oi % inner;
                    row.clear();
                    row.extend((0..red).map(|r| x.data[base + r * inner]));
                    reduce_row(row, op)
                },
            )
            .collect();
        return Ok(Tensor { shape, data });
    }
    let red: Vec<usize> = x.shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { d } else { 1 }).collect();
    let st = {
        let mut s = vec![0; x.shape.len()];
        let mut acc = 1;
        for i in (0..x.shape.len()).rev() {
            s[i] = acc;
            acc *= x.shape[i];
        }
        s
    };
    let (n_out, n_red): (usize, usize) = (shape.iter().product(), red.iter().product());
    let (mut oi, mut ri) = (vec![0; shape.len()], vec![0; shape.len()]);
    let mut row = Vec::with_capacity(n_red);
    let data = (0..n_out)
        .map(|o| {
            unravel(o, &shape, &mut oi);
            let base: usize = oi.iter().zip(&st).map(|(k, s)| k * s).sum();
            row.clear();
            row.extend((0..n_red).map(|r| {
                unravel(r, &red, &mut ri);
                x.data[base + ri.iter().zip(&st).map(|(k, s)| k * s).sum::<usize>()]
            }));
            reduce_row(&row, op)
        })
        .collect();
    Ok(Tensor { shape, data })
}

/// One output of [`reduce`]: `row` holds the reduced elements in row-major order.
fn reduce_row(row: &[f32], op: Reduce) -> f32 {
    let pick = |is_min: bool| -> (f32, usize) {
        let mut best = (row[0], 0);
        for (i, &v) in row.iter().enumerate().skip(1) {
            let (m, _) = best;
            let before = if v.is_nan() != m.is_nan() { v.is_nan() } else { !v.is_nan() && (if is_min { v < m } else { v > m }) };
            if before {
                best = (v, i);
            }
        }
        best
    };
    match op {
        Reduce::Sum => row.iter().map(|&v| v as f64).sum::<f64>() as f32,
        Reduce::Mean => (row.iter().map(|&v| v as f64).sum::<f64>() / row.len() as f64) as f32,
        Reduce::Max => pick(false).0,
        Reduce::Min => pick(true).0,
        Reduce::ArgMax => pick(false).1 as f32,
        Reduce::Percentile(q) => percentile(row, q),
        Reduce::Quantile(q) => match clip_threshold(row, q) {
            Some(t) => t,
            None => row.iter().copied().filter(|v| v.is_finite()).fold(f32::NAN, f32::max),
        },
    }
}

/// [`Reduce::Percentile`]: numpy's linear percentile of a float32 row, in numpy's arithmetic.
fn percentile(row: &[f32], q: f32) -> f32 {
    if row.is_empty() || row.iter().any(|v| v.is_nan()) {
        return f32::NAN;
    }
    let n = row.len();
    let at = (n - 1) as f64 * (q as f64 / 100.0);
    let lo = (at.floor() as usize).min(n - 1);
    let t = at - lo as f64;
    let mut s = row.to_vec();
    let (_, &mut a, above) = s.select_nth_unstable_by(lo, f32::total_cmp);
    let b = above.iter().copied().min_by(f32::total_cmp).unwrap_or(a);
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t) as f32
    } else {
        a + d * t as f32
    }
}

/// [`crate::backend::Backend::random`]: SplitMix64 of (seed, counter) → 53-bit uniforms in
/// (0, 1); a normal from the uniforms at counters 2i and 2i + 1 (Box–Muller, cosine branch), in
/// f64, rounded once to f32. `kernels/elementwise.cu`'s `random_fwd` is the same sum.
pub fn random(shape: &[usize], seed: u64, dist: Random) -> Tensor {
    let mix = |i: u64| {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i + 1));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let unit = |i: u64| ((mix(i) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let len: usize = shape.iter().product();
    let data = (0..len as u64)
        .into_par_iter()
        .map(|i| match dist {
            Random::Normal => ((-2.0 * unit(2 * i).ln()).sqrt() * (std::f64::consts::TAU * unit(2 * i + 1)).cos()) as f32,
            Random::Uniform => unit(i) as f32,
        })
        .collect();
    Tensor { shape: shape.to_vec(), data }
}

pub fn iota(n: usize) -> Tensor {
    Tensor { shape: vec![1, n], data: (0..n).map(|i| i as f32).collect() }
}
