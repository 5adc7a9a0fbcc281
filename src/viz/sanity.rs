//! The model-parameter randomisation test of Adebayo et al. 2018 (*Sanity Checks for Saliency
//! Maps*, §3.1, "cascading randomization"): a map that explains the model must change when the
//! model's weights are destroyed. Starting from the logits, the weights of each parameterised
//! layer (convolution or linear, [`cascade`]) are re-initialised in turn, cumulatively, top to
//! bottom; after each step the map of the same image for the same target (the original model's
//! top class) is compared with the original map.
//!
//! - Re-initialisation ([`reinitialised`]): weight ~ N(0, σ_W²) with σ_W the standard deviation
//!   of the layer's original weights (population), the bias likewise with its own σ (0 for a
//!   constant bias), deterministic from the seed and the parameter's index — the same numbers on
//!   every backend (drawn on the host). Batch-norm statistics and affine parameters are kept,
//!   as the paper keeps everything but the re-initialised weights; a folded batch norm folds
//!   into the new weights ([`crate::engine::Engine::with_params`] re-prepares only the changed
//!   layers).
//! - Similarity (on the maps upsampled bilinearly to the input, as the pictures show them):
//!   [`spearman`] rank correlation of the absolute maps and of the raw maps (average ranks for
//!   ties, as `scipy.stats.spearmanr`), and [`ssim`] of the maps' absolute values min–max
//!   normalised to [0, 1] (Wang et al. 2004: Gaussian window σ = 1.5 truncated at 3.5σ, C1 =
//!   (0.01)², C2 = (0.03)² for data range 1, reflected borders, the mean over pixels at least
//!   5 from the edge — `skimage.metrics.structural_similarity(gaussian_weights=True,
//!   use_sample_covariance=False, data_range=1)`).
//!
//! Deviation from the paper: it randomises Inception v3 by named blocks; we go layer by layer
//! by default, or by block ([`Granularity::Block`]: the top-level module and its index, e.g.
//! `layer4.1`, `_blocks.15`, `features.3`).

use std::sync::Arc;

use crate::backend::cpu::Cpu;
use crate::backend::{Backend, Random};
use crate::error::{Error, Result};
use crate::graph::{NodeId, Op, ParamId};
use crate::model::Model;
use crate::tensor::Tensor;

/// How many layers one randomisation step takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Granularity {
    /// one convolution or linear layer per step
    #[default]
    Layer,
    /// every layer of a block per step: the module path's first component, with the next one
    /// when it is an index (`layer4.1`, `_blocks.15`, `features.3`, `inception4c`, `fc`)
    Block,
}

impl std::str::FromStr for Granularity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "layer" => Ok(Granularity::Layer),
            "block" => Ok(Granularity::Block),
            _ => Err(Error::InvalidArgument(format!("unknown granularity `{s}`; known: layer, block"))),
        }
    }
}

/// One step of the cascade: what it names and the layers it re-initialises.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// the layer's module path, or the block's
    pub name: String,
    /// the graph nodes whose parameters this step re-initialises
    pub nodes: Vec<NodeId>,
}

/// The block a module path belongs to ([`Granularity::Block`]).
fn block_of(path: &str) -> String {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or(path);
    match parts.next() {
        Some(i) if !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) => format!("{first}.{i}"),
        _ => first.to_string(),
    }
}

/// The steps of the cascade: the convolution and linear layers from the output back to the
/// input, one a step or grouped by block.
pub fn cascade(model: &Model, granularity: Granularity) -> Vec<Step> {
    let mut steps: Vec<Step> = vec![];
    for (id, n) in model.graph.nodes.iter().enumerate().rev() {
        if !matches!(n.op, Op::Conv { .. } | Op::Linear { .. }) {
            continue;
        }
        let name = match granularity {
            Granularity::Layer => n.name.clone(),
            Granularity::Block => block_of(&n.name),
        };
        match steps.last_mut() {
            Some(s) if granularity == Granularity::Block && s.name == name => s.nodes.push(id),
            _ => steps.push(Step { name, nodes: vec![id] }),
        }
    }
    steps
}

/// New values for the weight and bias of the layers of `step`: N(0, σ²) with each tensor's own
/// original σ, from `seed` (the same numbers on every backend).
pub fn reinitialised(model: &Model, step: &Step, seed: u64) -> Result<Vec<(ParamId, Arc<Tensor>)>> {
    let mut out = vec![];
    for &id in &step.nodes {
        let (Op::Conv { weight, bias, .. } | Op::Linear { weight, bias }) = model.graph.nodes[id].op else {
            return Err(Error::InvalidArgument(format!("layer `{}` is not a convolution or linear layer", model.graph.nodes[id].name)));
        };
        for p in std::iter::once(weight).chain(bias) {
            let orig = &model.params[p];
            let n = orig.data.len().max(1) as f64;
            let mean = orig.data.iter().map(|&v| v as f64).sum::<f64>() / n;
            let sigma = (orig.data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32;
            let seed = seed ^ (p as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            let mut t = Cpu.random(&orig.shape, seed, Random::Normal)?;
            t.data.iter_mut().for_each(|v| *v *= sigma);
            out.push((p, Arc::new(t)));
        }
    }
    Ok(out)
}

/// Average ranks (1-based; ties share the mean of their positions).
fn average_ranks(v: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of `a` and `b` (the Pearson correlation of their average
/// ranks); `None` when either is constant (undefined) or their lengths differ.
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// `|v|` min–max normalised to [0, 1] (all zeros for a constant map).
pub fn normalized_abs(v: &[f32]) -> Vec<f32> {
    let a: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let lo = a.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = hi - lo;
    a.iter().map(|&x| if span > 0.0 { (x - lo) / span } else { 0.0 }).collect()
}

/// The SSIM window's σ and radius (3.5σ, rounded: 11 taps).
const SSIM_SIGMA: f64 = 1.5;
const SSIM_RADIUS: usize = 5;

/// A separable Gaussian filter of an `h` × `w` plane, borders reflected (scipy's `reflect`).
fn gaussian(x: &[f64], h: usize, w: usize) -> Vec<f64> {
    let taps: Vec<f64> = (0..=2 * SSIM_RADIUS).map(|i| (-((i as f64 - SSIM_RADIUS as f64).powi(2)) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp()).collect();
    let total: f64 = taps.iter().sum();
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let mut i = i;
        loop {
            if i < 0 {
                i = -i - 1;
            } else if i >= n {
                i = 2 * n - i - 1;
            } else {
                return i as usize;
            }
        }
    };
    let pass = |src: &[f64], along_rows: bool| -> Vec<f64> {
        let mut out = vec![0.0; h * w];
        for y in 0..h {
            for xx in 0..w {
                out[y * w + xx] = taps
                    .iter()
                    .enumerate()
                    .map(|(k, t)| {
                        let d = k as isize - SSIM_RADIUS as isize;
                        let (yy, xs) = if along_rows { (reflect(y as isize + d, h), xx) } else { (y, reflect(xx as isize + d, w)) };
                        t * src[yy * w + xs]
                    })
                    .sum::<f64>()
                    / total;
            }
        }
        out
    };
    pass(&pass(x, true), false)
}

/// The structural similarity of two `h` × `w` planes with values in [0, 1] (module doc).
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize) -> Result<f64> {
    if a.len() != h * w || b.len() != h * w || h == 0 || w == 0 {
        return Err(Error::InvalidArgument(format!("SSIM of {} and {} values as {h}x{w} planes", a.len(), b.len())));
    }
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let x: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).collect::<Vec<_>>();
    let (mx, my) = (gaussian(&x, h, w), gaussian(&y, h, w));
    let (sxx, syy, sxy) = (gaussian(&prod(&x, &x), h, w), gaussian(&prod(&y, &y), h, w), gaussian(&prod(&x, &y), h, w));
    // the mean over pixels whose window lies inside the plane (all of it when none does)
    let r = if h > 2 * SSIM_RADIUS && w > 2 * SSIM_RADIUS { SSIM_RADIUS } else { 0 };
    let (mut sum, mut n) = (0.0, 0usize);
    for yy in r..h - r {
        for xx in r..w - r {
            let i = yy * w + xx;
            let (vx, vy, cxy) = (sxx[i] - mx[i] * mx[i], syy[i] - my[i] * my[i], sxy[i] - mx[i] * my[i]);
            sum += ((2.0 * mx[i] * my[i] + c1) * (2.0 * cxy + c2)) / ((mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2));
            n += 1;
        }
    }
    Ok(sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_the_top_module_and_its_index() {
        assert_eq!(block_of("layer4.1.conv2"), "layer4.1");
        assert_eq!(block_of("layer4.0.downsample.0"), "layer4.0");
        assert_eq!(block_of("_blocks.15._project_conv"), "_blocks.15");
        assert_eq!(block_of("inception4c.branch2.0.conv"), "inception4c");
        assert_eq!(block_of("fc"), "fc");
    }
}
