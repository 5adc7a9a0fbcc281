//! Weakly supervised segmentation from an attribution map (Simonyan, Vedaldi, Zisserman 2014,
//! "Deep Inside Convolutional Networks", §3.1): the map seeds a GrabCut.
//!
//! - this file: [`seed_maps`] (an attribution's maps as the seeds read them, on the backend),
//!   [`GrabCut`] (seeds from the map's quantiles, the iterated graph cut),
//!   [`largest_component`], and the pictures of a mask ([`mask_picture`], [`overlay`],
//!   [`mask_in_box`]).
//! - `segment/gmm.rs`: [`Gmm`], the colour models, with k-means.
//! - `segment/maxflow.rs`: [`Graph`], the minimum cut (Boykov–Kolmogorov).
//!
//! All but [`seed_maps`] is host code on an RGB picture and a map of the same size; nothing here
//! needs the network once the map is made.

mod gmm;
mod maxflow;

pub use gmm::{kmeans, Component, Gmm, Rgb, VARIANCE_FLOOR};
pub use maxflow::Graph;

use image::RgbImage;
use rayon::prelude::*;

use crate::backend::{Backend, Unary};
use crate::error::{Error, Result};
use crate::imageio::CropBox;
use crate::tensor::Tensor;
use crate::viz::render;

/// An attribution method's maps `[n, 1, h', w']` as the seeds read them: |map| for a `signed`
/// method, upsampled to the network's input `[h, w]` and min-max normalised per map as the
/// pictures are ([`render::normalized`]), so the quantiles lie in [0, 1]. The CLI's job and the
/// Python package both take their maps from here.
pub fn seed_maps<B: Backend>(be: &B, maps: &B::T, signed: bool, hw: [usize; 2]) -> Result<Tensor> {
    if signed {
        render::normalized(be, &be.unary(maps, Unary::Abs)?, hw, None)
    } else {
        render::normalized(be, maps, hw, None)
    }
}

/// What a pixel is before the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// not a seed: the cut decides
    Unknown,
    /// a hard constraint: foreground
    Foreground,
    /// a hard constraint: background
    Background,
}

/// Saliency-seeded GrabCut.
///
/// Seeds (Simonyan et al. 2014, §3.1): pixels whose map value is at or above the map's
/// `fg_quantile` (0.95) are foreground, at or below its `bg_quantile` (0.30) background (the
/// quantiles interpolate linearly, as NumPy's default; ties at a threshold join its seed set,
/// so a map that is flat at its minimum — a ReLU'd CAM — seeds all of its flat part as
/// background).
///
/// The cut (GrabCut: Rother, Kolmogorov, Blake 2004; the graph of Boykov & Jolly 2001): a
/// Gaussian mixture of `components` (5) full-covariance Gaussians in RGB for the foreground and
/// one for the background ([`Gmm`]); unary costs −ln p(z | model); pairwise costs
/// γ·exp(−β‖z_m − z_n‖²)/dist(m, n) between 8-neighbours, β = 1/(2⟨‖z_m − z_n‖²⟩) over the
/// picture's neighbour pairs, γ = `gamma` (50); seeds are hard constraints (a terminal edge of
/// 1 + the largest sum of a pixel's pairwise costs, which no cut can afford); the minimum cut by
/// [`Graph`]. Then `iterations` (5) times, or until the mask stops changing: re-assign each
/// pixel to its most likely component, refit both models on the current foreground and
/// background, cut again.
///
/// Deviations: the first models are fit to the seeds alone (GrabCut's user rectangle has no
/// background inside it; here the unknown pixels count for neither model until the first cut
/// labels them), the mixture likelihood is used for the unary term (as OpenCV's `grabCut`, not
/// the assigned component's alone as in the paper), and covariances have a floor
/// ([`VARIANCE_FLOOR`]). k-means starts from `seed`, so a run is deterministic.
#[derive(Clone, Debug, PartialEq)]
pub struct GrabCut {
    /// pixels at or above this quantile of the map seed the foreground (0.95)
    pub fg_quantile: f64,
    /// pixels at or below this quantile seed the background (0.30)
    pub bg_quantile: f64,
    /// at most this many cuts (at least 1)
    pub iterations: usize,
    /// Gaussians per colour model (5)
    pub components: usize,
    /// γ, the weight of the pairwise (smoothness) term (50)
    pub gamma: f64,
    /// the k-means start's seed
    pub seed: u64,
}

impl Default for GrabCut {
    fn default() -> Self {
        GrabCut { fg_quantile: 0.95, bg_quantile: 0.30, iterations: 5, components: 5, gamma: 50.0, seed: 0 }
    }
}

/// A segmentation: the mask (row-major, true for foreground) and how it was reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Segmentation {
    /// true for foreground, row-major
    pub mask: Vec<bool>,
    /// rows
    pub height: usize,
    /// columns
    pub width: usize,
    /// pixels seeded as foreground
    pub foreground_seeds: usize,
    /// pixels seeded as background
    pub background_seeds: usize,
    /// cuts made
    pub iterations: usize,
    /// the last cut gave the mask the one before it gave
    pub converged: bool,
}

impl Segmentation {
    /// The share of pixels in the foreground.
    pub fn foreground_fraction(&self) -> f64 {
        self.mask.iter().filter(|&&m| m).count() as f64 / self.mask.len().max(1) as f64
    }
}

/// The `q`-quantile of `sorted` (ascending, not empty), interpolated linearly.
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    (sorted[lo] as f64 + (pos - lo as f64) * (sorted[hi] as f64 - sorted[lo] as f64)) as f32
}

impl GrabCut {
    /// Refuse settings that make no segmentation: quantiles out of [0, 1] or out of order, no
    /// iteration, no component, a negative or non-finite γ.
    pub fn check(&self) -> Result<()> {
        let (b, f) = (self.bg_quantile, self.fg_quantile);
        if !((0.0..=1.0).contains(&b) && (0.0..=1.0).contains(&f) && b < f) {
            return Err(Error::InvalidArgument(format!("the quantiles must satisfy 0 <= background ({b}) < foreground ({f}) <= 1")));
        }
        if self.iterations == 0 || self.components == 0 {
            return Err(Error::InvalidArgument(format!("GrabCut needs at least 1 iteration and 1 component per model, not {} and {}", self.iterations, self.components)));
        }
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(Error::InvalidArgument(format!("GrabCut's gamma must be a finite number >= 0, not {}", self.gamma)));
        }
        Ok(())
    }

    /// The seeds of a map (any size; row-major): see [`GrabCut`]. A map too flat to tell the
    /// two quantiles apart, or holding NaN, is an error.
    pub fn seeds(&self, map: &[f32]) -> Result<Vec<Seed>> {
        self.check()?;
        if let Some(i) = map.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!("the map holds {} at pixel {i}: no seeds can be taken from it", map[i])));
        }
        if map.is_empty() {
            return Err(Error::InvalidArgument("an empty map gives no seeds".into()));
        }
        let mut sorted = map.to_vec();
        sorted.sort_by(f32::total_cmp);
        let (lo, hi) = (quantile(&sorted, self.bg_quantile), quantile(&sorted, self.fg_quantile));
        if lo >= hi {
            return Err(Error::InvalidArgument(format!(
                "the map is too flat to seed a segmentation: its {} and {} quantiles are both {lo}",
                self.bg_quantile, self.fg_quantile
            )));
        }
        Ok(map.iter().map(|&v| if v >= hi { Seed::Foreground } else if v <= lo { Seed::Background } else { Seed::Unknown }).collect())
    }

    /// Segment `picture` from the seeds its attribution map `map` (at the picture's size,
    /// row-major) gives.
    pub fn segment_map(&self, picture: &RgbImage, map: &[f32]) -> Result<Segmentation> {
        self.segment(picture, &self.seeds(map)?)
    }

    /// Segment `picture` from `seeds` (one per pixel, row-major); both seed sets must be
    /// non-empty.
    pub fn segment(&self, picture: &RgbImage, seeds: &[Seed]) -> Result<Segmentation> {
        self.check()?;
        let (h, w) = (picture.height() as usize, picture.width() as usize);
        if seeds.len() != h * w || h * w == 0 {
            return Err(Error::InvalidArgument(format!("{} seeds for a {w}x{h} picture", seeds.len())));
        }
        let count = |s: Seed| seeds.iter().filter(|&&x| x == s).count();
        let (nf, nb) = (count(Seed::Foreground), count(Seed::Background));
        if nf == 0 || nb == 0 {
            return Err(Error::InvalidArgument(format!("GrabCut needs foreground and background seeds; found {nf} and {nb}")));
        }
        let z: Vec<Rgb> = picture.pixels().map(|p| p.0.map(f64::from)).collect();
        let pairs = Pairs::new(&z, h, w, self.gamma);
        // a terminal edge no cut can afford: more than all of a pixel's pairwise edges
        let hard = 1.0 + pairs.max_sum();
        let mut mask: Vec<bool> = seeds.iter().map(|&s| s == Seed::Foreground).collect();
        let mut models: Option<(Gmm, Gmm)> = None;
        let mut converged = false;
        let mut iterations = 0;
        while iterations < self.iterations && !converged {
            // the models: k-means on the seeds first, then re-assigned and refit on the mask
            let (fg_px, bg_px): (Vec<Rgb>, Vec<Rgb>) = if models.is_none() {
                (pick(&z, seeds, |s| s == Seed::Foreground), pick(&z, seeds, |s| s == Seed::Background))
            } else {
                (z.iter().zip(&mask).filter(|p| *p.1).map(|p| *p.0).collect(), z.iter().zip(&mask).filter(|p| !*p.1).map(|p| *p.0).collect())
            };
            let refit = |what: &str, px: &[Rgb], old: Option<&Gmm>, seed: u64| -> Result<Gmm> {
                match old {
                    Some(g) => Gmm::fit(what, px, &g.assign(px), g.components.len()),
                    None => Gmm::fit(what, px, &kmeans(px, self.components, seed), self.components),
                }
            };
            let fg = refit("foreground", &fg_px, models.as_ref().map(|m| &m.0), self.seed)?;
            let bg = refit("background", &bg_px, models.as_ref().map(|m| &m.1), self.seed.wrapping_add(1))?;
            let next = cut(&z, seeds, &fg, &bg, &pairs, hard)?;
            converged = iterations > 0 && next == mask;
            mask = next;
            models = Some((fg, bg));
            iterations += 1;
        }
        Ok(Segmentation { mask, height: h, width: w, foreground_seeds: nf, background_seeds: nb, iterations, converged })
    }
}

fn pick(z: &[Rgb], seeds: &[Seed], keep: impl Fn(Seed) -> bool) -> Vec<Rgb> {
    z.iter().zip(seeds).filter(|p| keep(*p.1)).map(|p| *p.0).collect()
}

/// Each pixel's neighbours to the right, below-right, below and below-left (every
/// 8-neighbour pair once), with GrabCut's pairwise weights.
struct Pairs {
    h: usize,
    w: usize,
    /// per pixel, per direction of [`Pairs::DIRS`]: the weight (0 outside the picture)
    weight: Vec<[f64; 4]>,
}

impl Pairs {
    const DIRS: [(isize, isize); 4] = [(0, 1), (1, 1), (1, 0), (1, -1)];

    fn neighbour(&self, p: usize, d: usize) -> Option<usize> {
        let (dy, dx) = Self::DIRS[d];
        let (y, x) = ((p / self.w) as isize + dy, (p % self.w) as isize + dx);
        (y >= 0 && x >= 0 && (y as usize) < self.h && (x as usize) < self.w).then(|| y as usize * self.w + x as usize)
    }

    fn new(z: &[Rgb], h: usize, w: usize, gamma: f64) -> Pairs {
        let mut p = Pairs { h, w, weight: vec![[0.0; 4]; h * w] };
        let (mut sum, mut n) = (0.0, 0usize);
        for i in 0..h * w {
            for d in 0..4 {
                if let Some(j) = p.neighbour(i, d) {
                    sum += gmm::dist2(&z[i], &z[j]);
                    n += 1;
                }
            }
        }
        // β = 1 / (2 ⟨‖Δz‖²⟩); a flat picture (or one pixel) has β = 0
        let beta = if sum > 0.0 { n as f64 / (2.0 * sum) } else { 0.0 };
        for i in 0..h * w {
            for d in 0..4 {
                if let Some(j) = p.neighbour(i, d) {
                    let dist = if d % 2 == 1 { std::f64::consts::SQRT_2 } else { 1.0 };
                    p.weight[i][d] = gamma * (-beta * gmm::dist2(&z[i], &z[j])).exp() / dist;
                }
            }
        }
        p
    }

    /// The largest sum of one pixel's pairwise weights.
    fn max_sum(&self) -> f64 {
        let mut sums = vec![0.0; self.h * self.w];
        for i in 0..self.h * self.w {
            for d in 0..4 {
                if let Some(j) = self.neighbour(i, d) {
                    sums[i] += self.weight[i][d];
                    sums[j] += self.weight[i][d];
                }
            }
        }
        sums.into_iter().fold(0.0, f64::max)
    }
}

/// The minimum cut of one GrabCut energy: true for the pixels on the source (foreground) side.
fn cut(z: &[Rgb], seeds: &[Seed], fg: &Gmm, bg: &Gmm, pairs: &Pairs, hard: f64) -> Result<Vec<bool>> {
    let n = z.len();
    // the cost of labelling each unknown pixel background (the edge from the source) and
    // foreground (to the sink), less their minimum: a constant per pixel changes no cut
    let unary: Vec<(f64, f64)> = z
        .par_iter()
        .zip(seeds)
        .map(|(z, s)| match s {
            Seed::Foreground => (hard, 0.0),
            Seed::Background => (0.0, hard),
            Seed::Unknown => {
                let (to_bg, to_fg) = (-bg.log_likelihood(z), -fg.log_likelihood(z));
                let m = to_bg.min(to_fg);
                (to_bg - m, to_fg - m)
            }
        })
        .collect();
    let mut g = Graph::new(n, 4 * n);
    for (i, &(s, t)) in unary.iter().enumerate() {
        g.add_terminal(i, s, t)?;
    }
    for i in 0..n {
        for d in 0..4 {
            if let Some(j) = pairs.neighbour(i, d) {
                let c = pairs.weight[i][d];
                g.add_edge(i, j, c, c)?;
            }
        }
    }
    g.max_flow();
    Ok((0..n).map(|i| match seeds[i] {
        Seed::Foreground => true,
        Seed::Background => false,
        Seed::Unknown => g.is_source_side(i),
    }).collect())
}

/// The largest 8-connected component of a mask's foreground (the first in row-major order
/// among equals; all background for an empty foreground). Simonyan et al. 2014 (§3.1) take it as
/// the object's mask after the cut; here it is an option, since it drops foreground seeds.
pub fn largest_component(mask: &[bool], height: usize, width: usize) -> Result<Vec<bool>> {
    if mask.len() != height * width {
        return Err(Error::InvalidArgument(format!("a mask of {} pixels is not {width}x{height}", mask.len())));
    }
    let mut label = vec![0u32; mask.len()];
    let (mut best, mut best_size, mut next) = (0u32, 0usize, 0u32);
    let mut stack = vec![];
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.push(start);
        let mut size = 0;
        while let Some(p) = stack.pop() {
            size += 1;
            let (y, x) = ((p / width) as isize, (p % width) as isize);
            for (dy, dx) in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)] {
                let (yy, xx) = (y + dy, x + dx);
                if yy >= 0 && xx >= 0 && (yy as usize) < height && (xx as usize) < width {
                    let q = yy as usize * width + xx as usize;
                    if mask[q] && label[q] == 0 {
                        label[q] = next;
                        stack.push(q);
                    }
                }
            }
        }
        if size > best_size {
            (best, best_size) = (next, size);
        }
    }
    Ok(label.iter().map(|&l| l != 0 && l == best).collect())
}

/// Background pixels of an overlay keep this share of their brightness.
const DARKEN: f32 = 0.3;
/// The colour of the mask's boundary in an overlay.
const BOUNDARY: [u8; 3] = [255, 230, 0];

/// The mask as a picture: white foreground, black background.
pub fn mask_picture(mask: &[bool], height: usize, width: usize) -> RgbImage {
    let mut img = RgbImage::new(width as u32, height as u32);
    for (px, &m) in img.pixels_mut().zip(mask) {
        px.0 = if m { [255; 3] } else { [0; 3] };
    }
    img
}

/// `picture` with the background darkened and the boundary drawn (the foreground pixels with a
/// 4-neighbour in the background); `mask` is at the picture's size.
pub fn overlay(picture: &RgbImage, mask: &[bool]) -> Result<RgbImage> {
    let (h, w) = (picture.height() as usize, picture.width() as usize);
    if mask.len() != h * w {
        return Err(Error::InvalidArgument(format!("a mask of {} pixels over a {w}x{h} picture", mask.len())));
    }
    let mut out = picture.clone();
    for (i, px) in out.pixels_mut().enumerate() {
        let (y, x) = (i / w, i % w);
        let bg = |j: usize| !mask[j];
        let edge = mask[i] && ((y > 0 && bg(i - w)) || (y + 1 < h && bg(i + w)) || (x > 0 && bg(i - 1)) || (x + 1 < w && bg(i + 1)));
        if edge {
            px.0 = BOUNDARY;
        } else if !mask[i] {
            px.0 = px.0.map(|v| (v as f32 * DARKEN).round() as u8);
        }
    }
    Ok(out)
}

/// The mask (`height × width`, over the network's input) at the original image's resolution:
/// each pixel inside `crop` (the window the input was cut from, [`crate::imageio::crop_box`])
/// takes the mask pixel its centre falls in (nearest), every pixel outside is background.
/// Row-major, `crop.image_size` = (width, height).
pub fn mask_in_box(mask: &[bool], height: usize, width: usize, crop: &CropBox) -> Vec<bool> {
    let [iw, ih] = crop.image_size.map(|v| v as usize);
    let index = |p: usize, start: f64, len: f64, n: usize| -> Option<usize> {
        let c = p as f64 + 0.5;
        (len > 0.0 && c >= start && c < start + len).then(|| (((c - start) * n as f64 / len) as usize).min(n - 1))
    };
    let mut out = vec![false; iw * ih];
    if height == 0 || width == 0 || mask.len() != height * width {
        return out;
    }
    let cols: Vec<Option<usize>> = (0..iw).map(|x| index(x, crop.x, crop.width, width)).collect();
    for y in 0..ih {
        if let Some(my) = index(y, crop.y, crop.height, height) {
            for (x, c) in cols.iter().enumerate() {
                if let Some(mx) = c {
                    out[y * iw + x] = mask[my * width + mx];
                }
            }
        }
    }
    out
}
