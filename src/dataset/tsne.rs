//! `tsne`: a 2-D t-SNE (van der Maaten & Hinton, JMLR 2008) of a layer's feature vectors over a
//! dataset (global-average-pooled when the layer is spatial), drawn as the "cnn embed" mosaic
//! of Karpathy's CNN-codes pages: each image in the cell of a grid nearest to its embedded
//! position. By one of two gradients ([`Method`]): exact (a dense `P`, O(n²) a step) up to
//! [`EXACT_UP_TO`] images on the host or [`DEVICE_EXACT_UP_TO`] on a GPU, Barnes–Hut (van der
//! Maaten, JMLR 2014; `bhtsne.rs`: a sparse `P` over ⌊3·perplexity⌋ neighbours, the repulsion
//! from a quadtree, O(n log n) a step, on the host) beyond, unless θ = 0.
//!
//! On a GPU engine the exact gradient runs on the device ([`DeviceGradient`]): `P` stays there
//! (in f32), and each step is the backend's generic primitives over `n × n` tensors
//! (broadcast differences, the kernel `1 / (1 + d²)`, its sum `Z`, one `linear` for `Σ_j m_ij
//! y_j`); only the embedding (`n × 2`) goes up and its gradient comes back, and the step itself
//! (gains, momentum, recentring) stays on the host in f64. At 10 000 points that is ~20 passes
//! over a 400 MB matrix a step, where the host's exact step takes 0.4 s on two cores
//! (`benches/RESULTS.md`). The affinities come from the device too
//! ([`device_joint_probabilities`]: one Gram matrix for the distances, then every point's
//! perplexity search at once, its bookkeeping on the host). The device's
//! f32 gradient agrees with the host's f64 one to ~1e-6 relative (tests/dissect.rs), so the
//! embeddings of the two engines are alike but not equal (t-SNE amplifies rounding); each
//! engine's is repeatable.
//!
//! As van der Maaten's reference (`bhtsne` and `tsne.py`): the features are
//! centred and scaled by their largest magnitude; per point, a binary search (50 steps at most,
//! tolerance 1e-5) for the precision giving the perplexity (entropy `log(perplexity)`, natural
//! log) over squared Euclidean distances; `P` symmetrised (`(P + Pᵀ) / 2n`, at least 1e-12 on
//! the exact path); early exaggeration 12 for the first 250 iterations; momentum 0.5 then 0.8;
//! learning rate 200 (below 9600 points `max(n / 48, 50)`, as scikit-learn's "auto": 200
//! overshoots small sets); gains (+0.2 where the gradient's sign flips, ×0.8 where it stays, at
//! least 0.01); the embedding recentred after each step (one loop, `descend`, for both
//! gradients). The start is `N(0, 1e-4)` from the seed (SplitMix64 and Box–Muller), and every
//! sum runs in a fixed order, so a seed gives the same picture on every run, thread count and
//! sharding.
//!
//! Sharding: each shard's state holds its images' feature vectors; `merge` concatenates them
//! in image order and then runs t-SNE once, so it equals the single pass.

use image::{imageops, Rgb, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dissect::Values;
use super::report::{self, Figure};
use super::{pass, Dataset, Partial, Shard, Tally};
use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::Preprocess;
use crate::job::{png_bytes, Progress};
use crate::output::OutputSet;

/// Iterations of gradient descent, and when exaggeration and the low momentum stop (bhtsne).
pub const ITERATIONS: usize = 1000;
const STOP_LYING: usize = 250;
const EXAGGERATION: f64 = 12.0;
/// The learning rate's most (bhtsne's fixed rate); smaller sets get `max(n / 48, 50)`, as
/// scikit-learn's and openTSNE's "auto" (Belkina et al. 2019): 200 makes small sets overshoot.
const LEARNING_RATE: f64 = 200.0;

/// The job.
#[derive(Clone, Debug)]
pub struct Tsne {
    /// the layer whose global-average-pooled features are embedded
    pub layer: String,
    /// t-SNE's perplexity (the effective number of neighbours)
    pub perplexity: f64,
    /// Barnes–Hut's accuracy (cell side / distance below which a cell is summarised), used past
    /// [`EXACT_UP_TO`] images; 0: exact gradients whatever the size
    pub theta: f64,
    /// the seed of the embedding's random start
    pub seed: u64,
    /// side of each image's cell in the mosaic
    pub tile: u32,
    /// images per forward pass
    pub batch_size: usize,
}

/// The state: each image's feature vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TsneTally {
    /// as [`Tsne::layer`]
    pub layer: String,
    /// as [`Tsne::perplexity`]
    pub perplexity: f64,
    /// see [`Tsne::theta`]; states written before it existed read as the default
    #[serde(default = "default_theta")]
    pub theta: f64,
    /// as [`Tsne::seed`]
    pub seed: u64,
    /// as [`Tsne::tile`]
    pub tile: u32,
    /// the network's input size (height, width)
    pub input_hw: [usize; 2],
    /// (image, its pooled features), by image index
    pub features: Vec<(usize, Values)>,
}

/// θ's default (bhtsne's and scikit-learn's).
pub const THETA: f64 = 0.5;

fn default_theta() -> f64 {
    THETA
}

impl TsneTally {
    /// The tally of both shards' images, or why they are not of one job.
    pub fn merge(mut self, other: TsneTally) -> Result<TsneTally> {
        if (&self.layer, self.perplexity, self.theta, self.seed, self.tile) != (&other.layer, other.perplexity, other.theta, other.seed, other.tile) {
            return Err(Error::InvalidArgument("tsne states of different layers or parameters".into()));
        }
        self.features.extend(other.features);
        self.features.sort_by_key(|f| f.0);
        Ok(self)
    }
}

impl Tsne {
    /// One pass over the shard's images: the shard's features.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, ds: &Dataset, shard: Shard, progress: &mut dyn FnMut(Progress)) -> Result<Partial> {
        if !(self.perplexity >= 1.0 && self.perplexity.is_finite()) {
            return Err(Error::InvalidArgument(format!("--perplexity {}: at least 1", self.perplexity)));
        }
        if !(0.0..=1.0).contains(&self.theta) {
            return Err(Error::InvalidArgument(format!("--theta {}: from 0 (exact) to 1 (coarsest); 0.5 is the usual", self.theta)));
        }
        let model = eng.model();
        let layer = model.resolve(&self.layer)?;
        let name = model.name(layer).to_string();
        let mut features = vec![];
        let mut images = vec![];
        let skipped = pass(eng, ds, shard, layer, self.batch_size, progress, "tsne", |b, a| {
            let (c, hw) = (a.shape[1], a.shape[2] * a.shape[3]);
            for (j, &image) in b.indices.iter().enumerate() {
                let item = a.item(j);
                let f: Vec<f32> = (0..c).map(|ch| (item[ch * hw..(ch + 1) * hw].iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32).collect();
                if f.iter().any(|v| !v.is_finite()) {
                    return Err(Error::InvalidArgument(format!("layer `{name}`: a non-finite feature on image {image}")));
                }
                features.push((image, Values(f)));
                images.push(image);
            }
            Ok(())
        })?;
        let params = json!({"layer": name, "perplexity": self.perplexity, "theta": self.theta, "seed": self.seed, "tile": self.tile, "input_hw": model.preprocess.size});
        let t = TsneTally { layer: name, perplexity: self.perplexity, theta: self.theta, seed: self.seed, tile: self.tile, input_hw: model.preprocess.size, features };
        let mut p = Partial::new(model, ds, shard, params, Tally::Tsne(t));
        p.images = images;
        p.skipped = skipped;
        Ok(p)
    }
}

/// The exact path's limit: its `P` is a dense `n × n` matrix of f64 (3.2 GB at 20000 points).
pub const EXACT_MAX: usize = 20_000;
/// Up to this many points the default is exact: here it costs about what Barnes–Hut does (under
/// a second for 1000 iterations) with no approximation; beyond, Barnes–Hut is faster (measured,
/// benches/RESULTS.md 2026-12-03: ~0.8 s against 0.4 s at 500 points, ~14 s against 2.7 s at
/// 2000).
pub const EXACT_UP_TO: usize = 500;

/// Images up to which a GPU engine uses the exact gradient on the device (its `n × n` f32
/// matrices: ~6 of 400 MB live at this size); beyond, Barnes–Hut on the host as without a GPU.
pub const DEVICE_EXACT_UP_TO: usize = 10_000;

/// How the gradient is computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// every pair, O(n²) a step, a dense `P`
    Exact,
    /// a sparse `P` over each point's ⌊3·perplexity⌋ nearest neighbours and the repulsion from a
    /// quadtree summarised where `cell side / distance < theta` (van der Maaten, JMLR 2014)
    BarnesHut {
        /// a cell is summarised where its side / distance is below this
        theta: f64,
    },
}

impl Method {
    /// The method for `n` points at `theta` (0: exact): exact up to [`EXACT_UP_TO`] points,
    /// Barnes–Hut beyond.
    pub fn choose(n: usize, theta: f64) -> Method {
        if theta == 0.0 || n <= EXACT_UP_TO {
            Method::Exact
        } else {
            Method::BarnesHut { theta }
        }
    }

    /// [`Method::choose`] where the exact gradient runs on a device (`on_device`): exact up to
    /// [`DEVICE_EXACT_UP_TO`] points.
    pub fn choose_on(n: usize, theta: f64, on_device: bool) -> Method {
        if on_device && n <= DEVICE_EXACT_UP_TO {
            Method::Exact
        } else {
            Method::choose(n, theta)
        }
    }

    /// `exact` or `barnes-hut`, and θ (0 for exact)
    pub fn describe(&self) -> (&'static str, f64) {
        match *self {
            Method::Exact => ("exact", 0.0),
            Method::BarnesHut { theta } => ("barnes-hut", theta),
        }
    }
}

/// Rows whose distances to every point are computed together: each other point is read once a
/// block, not once a row (CNN features are ~1280-D: `n` rows of them do not fit in cache).
pub(super) const DISTANCE_ROWS: usize = 32;

/// Squared Euclidean distance, summed in four interleaved lanes (so that it vectorises), then
/// the lanes in a fixed order.
fn sq_distance(a: &[f64], b: &[f64]) -> f64 {
    let mut lane = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(u, v)| (u - v) * (u - v)).sum();
    for (u, v) in ca.zip(cb) {
        for k in 0..4 {
            lane[k] += (u[k] - v[k]) * (u[k] - v[k]);
        }
    }
    (lane[0] + lane[1]) + (lane[2] + lane[3]) + tail
}

/// Squared Euclidean distances from the rows `first..first + d.len() / n` of `x` to every row,
/// into `d` (row-major, a row per point of the block).
pub(super) fn sq_distances_from(x: &[Vec<f64>], first: usize, d: &mut [f64]) {
    let n = x.len();
    for (j, xj) in x.iter().enumerate() {
        for (r, row) in d.chunks_mut(n).enumerate() {
            row[j] = sq_distance(&x[first + r], xj);
        }
    }
}

/// One point's conditional probabilities `p_{j|i}` over the squared distances `d` (`row[skip]`,
/// the point itself, is 0): a binary search (50 steps at most, tolerance 1e-5) for the precision
/// whose entropy is `log_u`.
pub(super) fn conditional_row(d: &[f64], skip: Option<usize>, log_u: f64, row: &mut [f64]) {
    let (mut beta, mut lo, mut hi) = (1.0f64, f64::NEG_INFINITY, f64::INFINITY);
    for _ in 0..50 {
        let mut sum = 0.0;
        let mut dp = 0.0;
        for (j, (r, &dj)) in row.iter_mut().zip(d).enumerate() {
            *r = if Some(j) == skip { 0.0 } else { (-beta * dj).exp() };
            sum += *r;
            dp += dj * *r;
        }
        let sum = sum.max(f64::MIN_POSITIVE);
        let h = sum.ln() + beta * dp / sum;
        row.iter_mut().for_each(|v| *v /= sum);
        if search_step(h, log_u, &mut beta, &mut lo, &mut hi) {
            break;
        }
    }
}

/// The joint probabilities `P` (row-major `n × n`) of the points `x` at `perplexity`.
pub fn joint_probabilities(x: &[Vec<f64>], perplexity: f64) -> Vec<f64> {
    joint_probabilities_by(x.len(), perplexity, |first, d| sq_distances_from(x, first, d))
}

/// [`joint_probabilities`] of `n` points whose squared distances `distances(first, d)` writes
/// into `d`, row-major from row `first` (`d.len() / n` rows).
pub fn joint_probabilities_by(n: usize, perplexity: f64, distances: impl Fn(usize, &mut [f64]) + Sync) -> Vec<f64> {
    let log_u = perplexity.ln();
    let mut p = vec![0.0; n * n];
    p.par_chunks_mut(n * DISTANCE_ROWS).enumerate().for_each(|(b, rows)| {
        let mut d = vec![0.0; rows.len()];
        distances(b * DISTANCE_ROWS, &mut d);
        for (r, (row, dr)) in rows.chunks_mut(n).zip(d.chunks(n)).enumerate() {
            conditional_row(dr, Some(b * DISTANCE_ROWS + r), log_u, row);
        }
    });
    symmetrise(&mut p, n);
    p
}

/// The conditional probabilities (row-major `n × n`) made joint in place: `(P + Pᵀ) / 2n`, at
/// least 1e-12.
fn symmetrise(p: &mut [f64], n: usize) {
    for i in 0..n {
        for j in i..n {
            let v = ((p[i * n + j] + p[j * n + i]) / (2.0 * n as f64)).max(1e-12);
            p[i * n + j] = v;
            p[j * n + i] = v;
        }
    }
}

/// One step of a point's search for its precision β (as [`conditional_row`]'s): from the
/// entropy `h` at `beta` within `(lo, hi)`, whether it is found (within 1e-5 of `log_u`), else
/// the next β, narrowing the bracket.
fn search_step(h: f64, log_u: f64, beta: &mut f64, lo: &mut f64, hi: &mut f64) -> bool {
    let diff = h - log_u;
    if diff.abs() < 1e-5 {
        return true;
    }
    if diff > 0.0 {
        *lo = *beta;
        *beta = if hi.is_finite() { (*beta + *hi) / 2.0 } else { *beta * 2.0 };
    } else {
        *hi = *beta;
        *beta = if lo.is_finite() { (*beta + *lo) / 2.0 } else { *beta / 2.0 };
    }
    false
}

/// [`joint_probabilities`] with the distances and every point's perplexity search on `be`'s
/// device, in f32: the squared distances from one Gram matrix `X Xᵀ` (`|x_i|² + |x_j|² −
/// 2 x_i·x_j`, at least 0, the diagonal 0), then the same binary search as [`joint_probabilities`]
/// for all points at once, each step three passes over `n × n` (`exp(−β_i d_ij)` off the
/// diagonal, its row sums and those of `d ⊙ exp`) with only the `n` precisions going up and
/// the `2n` sums coming back; the search's bookkeeping (its bracket, and which points are
/// done) stays on the host in f64, a point keeping the β its search ended on. Then one pass
/// for the conditional rows, which come back (`n²` f32) to be made joint on the host.
///
/// For the exact path on a GPU, where the host's O(n²·d) distances and O(50 n²) search are
/// most of the time before the descent. The f32 sums move an entropy by ~1e-6 (relative), so a
/// point may end one bisection step off the host's, well inside what the embedding notices;
/// tests/dissect.rs compares `P` with the host's.
pub fn device_joint_probabilities<B: Backend>(be: &B, x: &[Vec<f64>], perplexity: f64) -> Result<Vec<f64>> {
    use crate::backend::{Binary, Reduce, Role, Unary};
    use crate::Tensor;
    let (n, dim) = (x.len(), x.first().map_or(0, |r| r.len()));
    if n == 0 {
        return Ok(vec![]);
    }
    let column = |v: &mut dyn Iterator<Item = f32>| -> Result<B::T> { be.upload(&Tensor::new(vec![n, 1], v.collect())?) };
    // held for the search: d and the off-diagonal mask (2 n² floats); each step adds two
    // (exp(−β d) masked, and d times it), each temporary dropped as soon as it is used
    let idx = be.iota(n)?;
    let off = be.unary(&be.binary(&be.reshape(idx.clone(), &[n, 1])?, &idx, Binary::Eq)?, Unary::Affine(-1.0, 1.0))?;
    let d = {
        let t = std::sync::Arc::new(Tensor::new(vec![n, dim], x.iter().flatten().map(|&v| v as f32).collect())?);
        let gram = be.linear(&be.upload(&t)?, &be.weight(&t, Role::LinearWeight)?, None)?;
        let norms = column(&mut x.iter().map(|r| r.iter().map(|v| v * v).sum::<f64>() as f32))?;
        let norms_row = be.reshape(norms.clone(), &[1, n])?;
        let d = be.binary(&be.unary(&gram, Unary::Affine(-2.0, 0.0))?, &norms, Binary::Add)?;
        drop(gram);
        let d = be.unary(&be.binary(&d, &norms_row, Binary::Add)?, Unary::Relu)?;
        be.binary(&d, &off, Binary::Mul)?
    };
    // exp(−β_i d_ij) off the diagonal, for the points' precisions β
    let kernel = |beta: &[f64]| -> Result<B::T> {
        let nb = column(&mut beta.iter().map(|&b| -b as f32))?;
        let e = be.unary(&be.binary(&d, &nb, Binary::Mul)?, Unary::Exp)?;
        be.binary(&e, &off, Binary::Mul)
    };
    let row_sums = |t: &B::T| -> Result<Vec<f32>> { Ok(be.download(&be.reduce(t, Reduce::Sum, &[1])?)?.data) };
    let log_u = perplexity.ln();
    let mut beta = vec![1.0f64; n];
    let (mut lo, mut hi) = (vec![f64::NEG_INFINITY; n], vec![f64::INFINITY; n]);
    let mut searching: Vec<usize> = (0..n).collect();
    let mut ended = beta.clone(); // the β each point's search ended on
    for _ in 0..50 {
        if searching.is_empty() {
            break;
        }
        let e = kernel(&beta)?;
        let (sum, dp) = (row_sums(&e)?, row_sums(&be.binary(&d, &e, Binary::Mul)?)?);
        searching.retain(|&i| {
            ended[i] = beta[i];
            let s = (sum[i] as f64).max(f64::MIN_POSITIVE);
            let h = s.ln() + beta[i] * dp[i] as f64 / s;
            !search_step(h, log_u, &mut beta[i], &mut lo[i], &mut hi[i])
        });
    }
    let e = kernel(&ended)?;
    let sum = row_sums(&e)?;
    let rows = be.binary(&e, &column(&mut sum.iter().map(|&s| s.max(f32::MIN_POSITIVE)))?, Binary::Div)?;
    let mut p: Vec<f64> = be.download(&rows)?.data.into_iter().map(f64::from).collect();
    symmetrise(&mut p, n);
    Ok(p)
}

/// The exact gradient of the cost at `y` (into `grad`), `P` dense and multiplied by `exaggeration`:
/// `4 Σ_j (e·p_ij − q_ij) (1 + |y_i − y_j|²)⁻¹ (y_i − y_j)`.
pub fn exact_gradient(p: &[f64], y: &[[f64; 2]], exaggeration: f64, grad: &mut [[f64; 2]]) {
    let n = y.len();
    // Z = sum over i != j of 1 / (1 + |y_i - y_j|^2), rows summed in order
    let rows: Vec<f64> = (0..n).into_par_iter().map(|i| (0..n).filter(|&j| j != i).map(|j| 1.0 / (1.0 + dist2(y[i], y[j]))).sum()).collect();
    let z: f64 = rows.iter().sum();
    grad.par_iter_mut().enumerate().for_each(|(i, g)| {
        let mut acc = [0.0; 2];
        for j in 0..n {
            if j == i {
                continue;
            }
            let num = 1.0 / (1.0 + dist2(y[i], y[j]));
            let m = (exaggeration * p[i * n + j] - num / z) * num;
            acc[0] += m * (y[i][0] - y[j][0]);
            acc[1] += m * (y[i][1] - y[j][1]);
        }
        *g = [4.0 * acc[0], 4.0 * acc[1]];
    });
}

/// Normal numbers from a seed: SplitMix64 and Box–Muller.
pub(crate) fn normals(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

/// The perplexity used for `n` points: at most `(n - 1) / 3`, as the reference requires.
pub fn effective_perplexity(perplexity: f64, n: usize) -> f64 {
    perplexity.min((n - 1) as f64 / 3.0).max(1.0)
}

/// The 2-D embedding (`n` rows of `[x, y]`) of the points `x` by `method`, on the host.
pub fn embed(x: &[Vec<f64>], perplexity: f64, method: Method, seed: u64, iterations: usize) -> Result<Vec<[f64; 2]>> {
    embed_on(&crate::backend::cpu::Cpu, x, perplexity, method, seed, iterations)
}

/// [`embed`] with the exact gradient on `be` when it is a device (not [`Backend::on_host`]);
/// on the host otherwise, and for Barnes–Hut.
pub fn embed_on<B: Backend>(be: &B, x: &[Vec<f64>], perplexity: f64, method: Method, seed: u64, iterations: usize) -> Result<Vec<[f64; 2]>> {
    let n = x.len();
    if n < 2 {
        return Err(Error::InvalidArgument(format!("t-SNE needs at least 2 images, not {n}")));
    }
    if method == Method::Exact && n > EXACT_MAX {
        return Err(Error::InvalidArgument(format!("exact t-SNE of {n} images needs a dense {n} x {n} matrix ({:.1} GB); at most {EXACT_MAX}: use Barnes-Hut (--theta 0.5)", (n * n * 8) as f64 / 1e9)));
    }
    let perplexity = effective_perplexity(perplexity, n);
    // centre, and scale by the largest magnitude (bhtsne)
    let dim = x[0].len();
    let mean: Vec<f64> = (0..dim).map(|k| x.iter().map(|r| r[k]).sum::<f64>() / n as f64).collect();
    let mut xs: Vec<Vec<f64>> = x.iter().map(|r| r.iter().zip(&mean).map(|(a, m)| a - m).collect()).collect();
    let max = xs.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    if max > 0.0 {
        xs.iter_mut().flatten().for_each(|v| *v /= max);
    }
    match method {
        Method::Exact if !be.on_host() => {
            let p = device_joint_probabilities(be, &xs, perplexity)?;
            let g = DeviceGradient::new(be, &p)?;
            descend(n, seed, iterations, |y, e, grad| g.gradient(y, e, grad))
        }
        Method::Exact => {
            let p = joint_probabilities(&xs, perplexity);
            descend(n, seed, iterations, |y, e, g| {
                exact_gradient(&p, y, e, g);
                Ok(())
            })
        }
        Method::BarnesHut { theta } => {
            let k = (n - 1).min((3.0 * perplexity) as usize);
            let p = super::bhtsne::SparseP::new(&xs, perplexity, k);
            descend(n, seed, iterations, |y, e, g| {
                super::bhtsne::gradient(&p, y, e, theta, g);
                Ok(())
            })
        }
    }
}

/// The exact gradient on a backend's device: `P` (`n × n`, f32) uploaded once, then per step
/// [`DeviceGradient::gradient`] from the backend's generic primitives.
pub struct DeviceGradient<'a, B: Backend> {
    be: &'a B,
    n: usize,
    p: B::T,
    /// `P` × the early exaggeration, while it is in use
    p_exaggerated: std::cell::RefCell<Option<(f64, B::T)>>,
}

impl<'a, B: Backend> DeviceGradient<'a, B> {
    /// `P` (row-major `n × n`, as [`joint_probabilities`] gives it) on `be`.
    pub fn new(be: &'a B, p: &[f64]) -> Result<Self> {
        let n = (p.len() as f64).sqrt().round() as usize;
        if n * n != p.len() {
            return Err(Error::InvalidArgument(format!("t-SNE: P has {} entries, not n x n", p.len())));
        }
        let p = be.upload(&crate::Tensor::new(vec![n, n], p.iter().map(|&v| v as f32).collect())?)?;
        Ok(DeviceGradient { be, n, p, p_exaggerated: std::cell::RefCell::new(None) })
    }

    /// The cost's gradient at `y` with `P` × `exaggeration`, into `grad`: with `d_ij = |y_i −
    /// y_j|²`, `w = 1 / (1 + d)`, `Z = Σ_{i≠j} w_ij` and `m = (e·P − w / Z) ⊙ w`, it is `4 (Σ_j m_ij
    /// · y_i − Σ_j m_ij y_j)`. The diagonal needs no mask: `w_ii = 1` (taken out of `Z`), and a
    /// term `m_ii (y_i − y_i)` is 0 whatever `m_ii`.
    pub fn gradient(&self, y: &[[f64; 2]], exaggeration: f64, grad: &mut [[f64; 2]]) -> Result<()> {
        use crate::backend::{Binary, Reduce, Role, Unary};
        use crate::Tensor;
        let (be, n) = (self.be, self.n);
        if y.len() != n || grad.len() != n {
            return Err(Error::InvalidArgument(format!("t-SNE: {} points and {} gradients for P of {n}", y.len(), grad.len())));
        }
        let column = |k: usize, shape: Vec<usize>| Tensor::new(shape, y.iter().map(|v| v[k] as f32).collect());
        let mut d = None;
        for k in 0..2 {
            let col = be.upload(&column(k, vec![n, 1])?)?;
            let diff = be.binary(&col, &be.reshape(col.clone(), &[1, n])?, Binary::Sub)?;
            let sq = be.unary(&diff, Unary::Square)?;
            d = Some(match d {
                None => sq,
                Some(d) => be.binary(&d, &sq, Binary::Add)?,
            });
        }
        let d = d.expect("two coordinates");
        let w = be.unary(&be.unary(&d, Unary::Affine(1.0, 1.0))?, Unary::Recip)?;
        drop(d);
        let total = be.download(&be.reduce(&w, Reduce::Sum, &[0, 1])?)?.data[0] as f64;
        let z = (total - n as f64).max(f64::MIN_POSITIVE);
        let q = be.unary(&w, Unary::Affine((-1.0 / z) as f32, 0.0))?;
        let m = {
            let mut cached = self.p_exaggerated.borrow_mut();
            let p = if exaggeration == 1.0 {
                *cached = None;
                &self.p
            } else {
                if cached.as_ref().is_none_or(|(e, _)| *e != exaggeration) {
                    *cached = Some((exaggeration, be.unary(&self.p, Unary::Affine(exaggeration as f32, 0.0))?));
                }
                &cached.as_ref().expect("set above").1
            };
            be.binary(&be.binary(p, &q, Binary::Add)?, &w, Binary::Mul)?
        };
        drop((q, w));
        let rows = be.download(&be.reduce(&m, Reduce::Sum, &[1])?)?;
        // Σ_j m_ij y_j: m (n × n) times the embedding as a linear layer's [2, n] weight
        let yt = std::sync::Arc::new(Tensor::new(vec![2, n], (0..2).flat_map(|k| y.iter().map(move |v| v[k] as f32)).collect())?);
        let my = be.download(&be.linear(&m, &be.weight(&yt, Role::LinearWeight)?, None)?)?;
        for (i, g) in grad.iter_mut().enumerate() {
            let r = rows.data[i] as f64;
            *g = [4.0 * (r * y[i][0] - my.data[2 * i] as f64), 4.0 * (r * y[i][1] - my.data[2 * i + 1] as f64)];
        }
        Ok(())
    }
}

/// Gradient descent from the seed's start, the schedule of bhtsne: `gradient(y, exaggeration,
/// grad)` writes the cost's gradient at `y` with `P` multiplied by `exaggeration` (a device's
/// can fail: the first error ends the descent).
fn descend(n: usize, seed: u64, iterations: usize, mut gradient: impl FnMut(&[[f64; 2]], f64, &mut [[f64; 2]]) -> Result<()>) -> Result<Vec<[f64; 2]>> {
    let rate = (n as f64 / EXAGGERATION / 4.0).clamp(50.0, LEARNING_RATE);
    let mut y: Vec<[f64; 2]> = normals(seed, 2 * n).chunks(2).map(|c| [1e-2 * c[0], 1e-2 * c[1]]).collect();
    let mut update = vec![[0.0f64; 2]; n];
    let mut gains = vec![[1.0f64; 2]; n];
    let mut grad = vec![[0.0f64; 2]; n];
    for it in 0..iterations {
        let exaggeration = if it < STOP_LYING { EXAGGERATION } else { 1.0 };
        let momentum = if it < STOP_LYING { 0.5 } else { 0.8 };
        gradient(&y, exaggeration, &mut grad)?;
        for i in 0..n {
            for k in 0..2 {
                let same = (grad[i][k] > 0.0) == (update[i][k] > 0.0);
                gains[i][k] = if same { gains[i][k] * 0.8 } else { gains[i][k] + 0.2 }.max(0.01);
                update[i][k] = momentum * update[i][k] - rate * gains[i][k] * grad[i][k];
                y[i][k] += update[i][k];
            }
        }
        let c = [y.iter().map(|v| v[0]).sum::<f64>() / n as f64, y.iter().map(|v| v[1]).sum::<f64>() / n as f64];
        y.iter_mut().for_each(|v| *v = [v[0] - c[0], v[1] - c[1]]);
    }
    Ok(y)
}

pub(super) fn dist2(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

/// Grid cells (column, row) on a `g × g` grid for the points `y`: each point, in order, takes
/// the free cell nearest its position scaled to the grid (ties: the lower cell index). Searched
/// in square rings around the nearest cell, stopping once no further ring can hold a nearer free
/// cell (a ring `r` away is at least `r − ½` away): near-linear while the grid is half empty, not
/// `n · g²`. More points than cells is an error.
pub fn snap_to_grid(y: &[[f64; 2]], g: usize) -> Result<Vec<(usize, usize)>> {
    if y.len() > g * g {
        return Err(Error::InvalidArgument(format!("{} points do not fit a {g}x{g} grid", y.len())));
    }
    let lo = [y.iter().map(|v| v[0]).fold(f64::INFINITY, f64::min), y.iter().map(|v| v[1]).fold(f64::INFINITY, f64::min)];
    let hi = [y.iter().map(|v| v[0]).fold(f64::NEG_INFINITY, f64::max), y.iter().map(|v| v[1]).fold(f64::NEG_INFINITY, f64::max)];
    let scale = |v: f64, k: usize| if hi[k] > lo[k] { (v - lo[k]) / (hi[k] - lo[k]) * (g - 1) as f64 } else { 0.0 };
    let mut free = vec![true; g * g];
    Ok(y.iter()
        .map(|v| {
            let (px, py) = (scale(v[0], 0), scale(v[1], 1));
            let (x0, y0) = (px.round() as isize, py.round() as isize);
            let mut best: Option<(f64, usize)> = None;
            for r in 0..g as isize {
                for cy in (y0 - r).max(0)..=(y0 + r).min(g as isize - 1) {
                    let edge = (cy - y0).abs() == r;
                    let step = if edge || r == 0 { 1 } else { 2 * r as usize };
                    for cx in ((x0 - r)..=(x0 + r)).step_by(step).filter(|&cx| cx >= 0 && cx < g as isize) {
                        let c = cy as usize * g + cx as usize;
                        let d = (cx as f64 - px).powi(2) + (cy as f64 - py).powi(2);
                        if free[c] && best.is_none_or(|b| (d, c) < b) {
                            best = Some((d, c));
                        }
                    }
                }
                // a cell in ring r + 1 is at least r + 1/2 away
                if best.is_some_and(|b| (r as f64 + 0.25).powi(2) > b.0) {
                    break;
                }
            }
            // a free cell exists (no more points than cells), and every ring is searched
            let (_, c) = best.expect("a free cell: checked above");
            free[c] = false;
            (c % g, c / g)
        })
        .collect())
}

/// Render the merged state: the embedding (`tsne.csv`: name,x,y), the mosaic (`tsne.png`),
/// `tsne.json`, `index.html`.
/// The exact gradient runs on `be` where it is a device ([`embed_on`]).
pub fn finish<B: Backend>(be: &B, p: &Partial, t: &TsneTally, ds: &Dataset, out: &mut OutputSet) -> Result<Value> {
    let x: Vec<Vec<f64>> = t.features.iter().map(|(_, f)| f.0.iter().map(|&v| v as f64).collect()).collect();
    let method = Method::choose_on(x.len(), t.theta, !be.on_host());
    let y = embed_on(be, &x, t.perplexity, method, t.seed, ITERATIONS)?;
    let engine = if method == Method::Exact && !be.on_host() { be.name() } else { "host" };
    let (method_name, theta) = method.describe();
    let mut csv = String::from("name,x,y\n");
    for ((i, _), v) in t.features.iter().zip(&y) {
        let name = &ds.names[*i];
        let name = if name.contains([',', '"', '\n']) { format!("\"{}\"", name.replace('"', "\"\"")) } else { name.clone() };
        csv += &format!("{name},{},{}\n", v[0], v[1]);
    }
    out.add("tsne.csv", csv.as_bytes())?;
    // the mosaic: a grid with about twice as many cells as images, so that the layout shows
    let g = ((2.0 * y.len() as f64).sqrt().ceil() as usize).max(2);
    let cells = snap_to_grid(&y, g)?;
    let pre = Preprocess { size: t.input_hw, ..Preprocess::imagenet(t.input_hw) };
    let pictures: Vec<RgbImage> = t.features.par_iter().map(|(i, _)| super::load_crop(&ds.files[*i], &pre).map(|img| imageops::resize(&img, t.tile, t.tile, imageops::FilterType::Triangle))).collect::<Result<_>>()?;
    let mut mosaic = RgbImage::from_pixel(g as u32 * t.tile, g as u32 * t.tile, Rgb([255, 255, 255]));
    for (pic, &(cx, cy)) in pictures.iter().zip(&cells) {
        imageops::overlay(&mut mosaic, pic, (cx as u32 * t.tile) as i64, (cy as u32 * t.tile) as i64);
    }
    out.add("tsne.png", &png_bytes(&mosaic)?)?;
    let perplexity = effective_perplexity(t.perplexity, y.len());
    let summary = json!({
        "command": "tsne",
        "layer": t.layer,
        "dataset": p.dataset,
        "images": p.images.len(),
        "skipped": p.skipped.iter().map(|s| json!({"image": ds.names.get(s.image), "error": s.error})).collect::<Vec<_>>(),
        "shards": p.shards.len(),
        "perplexity": perplexity,
        "method": method_name,
        "theta": theta,
        "gradient_on": engine,
        "seed": t.seed,
        "iterations": ITERATIONS,
        "grid": g,
        "points": t.features.iter().zip(&y).zip(&cells).map(|(((i, _), v), c)| json!({"image": ds.names[*i], "x": v[0], "y": v[1], "cell": [c.0, c.1]})).collect::<Vec<_>>(),
    });
    out.add("tsne.json", &serde_json::to_vec_pretty(&summary).expect("JSON serialises"))?;
    let intro = format!(
        "t-SNE ({}, perplexity {perplexity}, seed {}, {ITERATIONS} iterations) of layer <code>{}</code>'s global-average-pooled features over {} images of {} ({} skipped): each image in the free cell of a {g}x{g} grid nearest its embedded position.",
        if theta > 0.0 { format!("Barnes-Hut, theta {theta}") } else { "exact".into() },
        t.seed, report::escape(&t.layer), p.images.len(), report::escape(&p.dataset), p.skipped.len()
    );
    let fig = Figure { file: "tsne.png".into(), caption: format!("the cnn-embed mosaic of {}", t.layer) };
    out.add("index.html", report::page("tsne", &intro, &[fig], &["tsne.csv", "tsne.json"]).as_bytes())?;
    Ok(summary)
}
