//! Gaussian mixture colour models as GrabCut uses them (Rother, Kolmogorov, Blake 2004, §3.1):
//! K full-covariance Gaussians in RGB, learnt from a hard assignment of every sample to one
//! component (each component's weight, mean and covariance are its samples' share, mean and
//! covariance), the assignment first made by k-means (k-means++ seeding, Arthur & Vassilvitskii
//! 2007; seeded and deterministic, as OpenCV's `grabCut` initialises with `kmeans`), then by
//! the most likely component of the current model.
//!
//! Deviation: every covariance gets [`VARIANCE_FLOOR`] added to its diagonal (OpenCV adds 0.01
//! only to a singular one), so a flat region of 8-bit colour (zero variance) does not make a
//! component whose density is unbounded.

use crate::error::{Error, Result};

/// Added to each covariance's diagonal, in (8-bit level)²: σ ≥ 1 level per channel.
pub const VARIANCE_FLOOR: f64 = 1.0;

/// Lloyd iterations of the k-means that starts a model (fewer when the assignment settles).
const KMEANS_ITERATIONS: usize = 10;

/// An RGB colour, channels in [0, 255].
pub type Rgb = [f64; 3];

/// One Gaussian of a mixture.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// the mixture weight (the share of the pixels assigned to it)
    pub weight: f64,
    /// the mean colour
    pub mean: Rgb,
    /// the covariance, [`VARIANCE_FLOOR`] included
    pub cov: [[f64; 3]; 3],
    inv: [[f64; 3]; 3],
    /// ln(weight) − ½ ln det(2π cov)
    log_norm: f64,
}

impl Component {
    /// ln(weight · N(z; mean, cov)).
    fn log_weighted_density(&self, z: &Rgb) -> f64 {
        let d = [z[0] - self.mean[0], z[1] - self.mean[1], z[2] - self.mean[2]];
        let mut m = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                m += d[i] * self.inv[i][j] * d[j];
            }
        }
        self.log_norm - 0.5 * m
    }
}

/// A Gaussian mixture over RGB colours.
#[derive(Clone, Debug, PartialEq)]
pub struct Gmm {
    /// the components that received samples (at most the number asked for)
    pub components: Vec<Component>,
}

fn det3(a: &[[f64; 3]; 3]) -> f64 {
    a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
}

/// The inverse of a symmetric positive-definite 3x3 matrix with determinant `det`.
fn inv3(a: &[[f64; 3]; 3], det: f64) -> [[f64; 3]; 3] {
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // cofactor of a[j][i] over det (the adjugate is the cofactors' transpose)
            let (r0, r1) = ((j + 1) % 3, (j + 2) % 3);
            let (c0, c1) = ((i + 1) % 3, (i + 2) % 3);
            *v = (a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0]) / det;
        }
    }
    r
}

pub(super) fn dist2(a: &Rgb, b: &Rgb) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// splitmix64: the next value of the generator state `s`, uniform in [0, 1).
fn uniform(s: &mut u64) -> f64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The index of the nearest centre to `z`.
fn nearest(centres: &[Rgb], z: &Rgb) -> usize {
    let mut best = (0, f64::INFINITY);
    for (c, m) in centres.iter().enumerate() {
        let d = dist2(m, z);
        if d < best.1 {
            best = (c, d);
        }
    }
    best.0
}

/// k-means of `samples` into at most `k` clusters: k-means++ seeding from `seed`, then Lloyd
/// iterations; each sample's cluster. Fewer clusters when the samples have fewer distinct
/// colours.
pub fn kmeans(samples: &[Rgb], k: usize, seed: u64) -> Vec<usize> {
    let mut s = seed;
    let Some(first) = samples.get(((uniform(&mut s) * samples.len() as f64) as usize).min(samples.len().saturating_sub(1))) else { return vec![] };
    let mut centres = vec![*first];
    let mut d2: Vec<f64> = samples.iter().map(|z| dist2(z, first)).collect();
    while centres.len() < k {
        let total: f64 = d2.iter().sum();
        if total <= 0.0 {
            break;
        }
        // the next centre with probability ∝ its squared distance to the nearest centre
        let mut r = uniform(&mut s) * total;
        let mut pick = samples.len() - 1;
        for (i, &d) in d2.iter().enumerate() {
            if r < d {
                pick = i;
                break;
            }
            r -= d;
        }
        let c = samples[pick];
        centres.push(c);
        for (d, z) in d2.iter_mut().zip(samples) {
            *d = d.min(dist2(z, &c));
        }
    }
    let mut assign: Vec<usize> = samples.iter().map(|z| nearest(&centres, z)).collect();
    for _ in 0..KMEANS_ITERATIONS {
        let mut sums = vec![([0.0; 3], 0usize); centres.len()];
        for (z, &a) in samples.iter().zip(&assign) {
            (0..3).for_each(|c| sums[a].0[c] += z[c]);
            sums[a].1 += 1;
        }
        for (m, (sum, n)) in centres.iter_mut().zip(&sums) {
            if *n > 0 {
                *m = sum.map(|v| v / *n as f64);
            }
        }
        let next: Vec<usize> = samples.iter().map(|z| nearest(&centres, z)).collect();
        if next == assign {
            break;
        }
        assign = next;
    }
    assign
}

impl Gmm {
    /// The mixture learnt from `samples` and each one's component (`assign[i] < k`); components
    /// with no sample are left out. `what` names the samples in errors.
    pub fn fit(what: &str, samples: &[Rgb], assign: &[usize], k: usize) -> Result<Gmm> {
        if samples.is_empty() {
            return Err(Error::InvalidArgument(format!("cannot fit a colour model to no {what} pixels")));
        }
        if assign.len() != samples.len() || assign.iter().any(|&a| a >= k) {
            return Err(Error::InvalidArgument(format!("{what}: {} component indices (each < {k}) for {} samples", assign.len(), samples.len())));
        }
        let mut sum = vec![[0.0; 3]; k];
        let mut count = vec![0usize; k];
        for (z, &a) in samples.iter().zip(assign) {
            (0..3).for_each(|c| sum[a][c] += z[c]);
            count[a] += 1;
        }
        let means: Vec<Rgb> = sum.iter().zip(&count).map(|(s, &n)| s.map(|v| v / n.max(1) as f64)).collect();
        let mut cov = vec![[[0.0; 3]; 3]; k];
        for (z, &a) in samples.iter().zip(assign) {
            let d = [z[0] - means[a][0], z[1] - means[a][1], z[2] - means[a][2]];
            for i in 0..3 {
                for j in 0..3 {
                    cov[a][i][j] += d[i] * d[j];
                }
            }
        }
        let n = samples.len() as f64;
        let components = (0..k)
            .filter(|&c| count[c] > 0)
            .map(|c| {
                let mut s = cov[c].map(|row| row.map(|v| v / count[c] as f64));
                (0..3).for_each(|i| s[i][i] += VARIANCE_FLOOR);
                let det = det3(&s);
                let weight = count[c] as f64 / n;
                let log_norm = weight.ln() - 0.5 * (3.0 * (2.0 * std::f64::consts::PI).ln() + det.ln());
                Component { weight, mean: means[c], cov: s, inv: inv3(&s, det), log_norm }
            })
            .collect();
        Ok(Gmm { components })
    }

    /// ln p(z) = ln Σ_k π_k N(z; μ_k, Σ_k).
    pub fn log_likelihood(&self, z: &Rgb) -> f64 {
        let terms: Vec<f64> = self.components.iter().map(|c| c.log_weighted_density(z)).collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return max;
        }
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    }

    /// Each sample's most likely component (GrabCut's step 1: argmin of −ln π_k − ln N_k).
    pub fn assign(&self, samples: &[Rgb]) -> Vec<usize> {
        samples
            .iter()
            .map(|z| {
                let mut best = (0, f64::NEG_INFINITY);
                for (k, c) in self.components.iter().enumerate() {
                    let l = c.log_weighted_density(z);
                    if l > best.1 {
                        best = (k, l);
                    }
                }
                best.0
            })
            .collect()
    }
}
