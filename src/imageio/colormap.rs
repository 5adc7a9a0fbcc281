//! Heat maps: from a raw attribution map to a picture. Normalise to [0, 1]
//! ([`normalize_map`]), resample to the image size ([`upsample_bilinear`]), colour
//! ([`colorize`]) and blend over the input ([`overlay`], or [`blend`] for a map already
//! coloured).
//!
//! The maps are row-major `h × w` slices of f32. The functions take sizes that callers have
//! already checked; a slice shorter than its stated size reads as zeros past its end rather
//! than panicking.

use image::{Rgb, RgbImage};
use rayon::prelude::*;

use super::CropBox;

/// How values in [0, 1] become colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Colormap {
    /// Google's Turbo (Mikhailov, 2019): an improved rainbow, dark blue → green → dark red.
    Turbo,
    /// matplotlib's Inferno (van der Walt & Smith, 2015): perceptually uniform, black → yellow.
    Inferno,
    /// Black → white.
    Gray,
}

impl Colormap {
    /// Every colormap, by [`Colormap::name`].
    pub const ALL: [Colormap; 3] = [Colormap::Turbo, Colormap::Inferno, Colormap::Gray];

    /// Its name on the command line: `turbo`, `inferno`, `gray`.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Turbo => "turbo",
            Colormap::Inferno => "inferno",
            Colormap::Gray => "gray",
        }
    }
}

impl std::str::FromStr for Colormap {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Colormap::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| crate::Error::InvalidArgument(format!("unknown colormap `{s}`; known: turbo, inferno, gray")))
    }
}

/// Scale to [0, 1] by min and max. NaN is ignored when finding the range and maps to 0; a map
/// whose finite values are all equal (or that has none) becomes all zeros. Infinities clamp to
/// the ends.
pub fn normalize_map(map: &[f32]) -> Vec<f32> {
    normalize_map_clipped(map, None)
}

/// Bins of the histogram that [`clip_threshold`] picks its quantile from (`CLIP_BINS` in
/// kernels/render.cu).
pub const CLIP_BINS: usize = 4096;

/// (min, max) of the finite values in f64 (+inf, -inf when there are none).
fn finite_range(map: &[f32]) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in map.iter().filter(|v| v.is_finite()) {
        lo = lo.min(v as f64);
        hi = hi.max(v as f64);
    }
    (lo, hi)
}

/// The q-quantile (q in (0, 1]) of the finite values of `map`, as a histogram defines it (the
/// rule `map_clip_fwd_f32` in kernels/render.cu follows, so both give the same threshold): with
/// lo, hi the finite min and max, [`CLIP_BINS`] equal bins over [lo, hi] (value v falls in bin
/// `min(floor((v - lo) / (hi - lo) * CLIP_BINS), CLIP_BINS - 1)`, in f64), the threshold is the
/// upper edge `lo + (hi - lo) * ((j + 1) / CLIP_BINS)` (f64, rounded to f32) of the first bin j at
/// which the cumulative count reaches `ceil(q * count)` (clamped to [1, count]). `None` when
/// nothing would be clipped: an empty range, or an edge that does not fall strictly between lo
/// and hi.
pub fn clip_threshold(map: &[f32], q: f32) -> Option<f32> {
    let (lo, hi) = finite_range(map);
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 {
        return None;
    }
    let mut hist = vec![0u64; CLIP_BINS];
    let mut count = 0u64;
    for &v in map.iter().filter(|v| v.is_finite()) {
        let t = (v as f64 - lo) / span * CLIP_BINS as f64;
        hist[(t as usize).min(CLIP_BINS - 1)] += 1;
        count += 1;
    }
    let k = ((q as f64) * count as f64).ceil().clamp(1.0, count as f64) as u64;
    let mut acc = 0u64;
    let mut j = CLIP_BINS - 1;
    for (i, &c) in hist.iter().enumerate() {
        acc += c;
        if acc >= k {
            j = i;
            break;
        }
    }
    if j == CLIP_BINS - 1 {
        return None; // the last bin's edge is hi (q = 1 always ends here)
    }
    let edge = (lo + span * ((j + 1) as f64 / CLIP_BINS as f64)) as f32;
    (edge as f64 > lo && (edge as f64) < hi).then_some(edge)
}

/// [`normalize_map`], with the values above the `clip`-quantile of the map ([`clip_threshold`],
/// q in (0, 1]) first clamped to it: the max of the range becomes the threshold. `None`: no
/// clipping.
pub fn normalize_map_clipped(map: &[f32], clip: Option<f32>) -> Vec<f32> {
    let (lo, mut hi) = finite_range(map);
    if let Some(t) = clip.and_then(|q| clip_threshold(map, q)) {
        hi = t as f64;
    }
    // f64, so that the range of two extreme f32 values cannot overflow.
    let range = hi - lo;
    if range <= 0.0 {
        return vec![0.0; map.len()];
    }
    map.iter()
        .map(|&v| {
            if v.is_nan() {
                0.0
            } else {
                ((v as f64 - lo) / range).clamp(0.0, 1.0) as f32
            }
        })
        .collect()
}

/// Resize an `h × w` map to `out_h × out_w` exactly as PyTorch's
/// `F.interpolate(mode="bilinear", align_corners=False)` (no antialiasing): the source
/// coordinate of output index `d` is `(d + 0.5) * in / out - 0.5`, clamped at 0, and the
/// neighbour past the last row or column is the last one. Arithmetic in f32, as PyTorch's CPU
/// kernel for f32.
pub fn upsample_bilinear(map: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; out_h * out_w];
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return out;
    }
    let padded;
    let map = if map.len() >= h * w {
        map
    } else {
        padded = [map, &vec![0.0; h * w - map.len()]].concat();
        &padded
    };
    let ys = bilinear_taps(h, out_h);
    let xs = bilinear_taps(w, out_w);
    for (oy, &(y0, y1, wy0, wy1)) in ys.iter().enumerate() {
        let (r0, r1) = (&map[y0 * w..(y0 + 1) * w], &map[y1 * w..(y1 + 1) * w]);
        let row = &mut out[oy * out_w..(oy + 1) * out_w];
        for (o, &(x0, x1, wx0, wx1)) in row.iter_mut().zip(&xs) {
            *o = wy0 * (wx0 * r0[x0] + wx1 * r0[x1]) + wy1 * (wx0 * r1[x0] + wx1 * r1[x1]);
        }
    }
    out
}

/// The pixels (row-major indices of `out_h × out_w`) where [`upsample_bilinear`] of the map
/// exceeds `t`, bit for bit the same test, but computing only pixels one of whose four taps
/// exceeds `t`: the weights are convex, so the others cannot. What dissection's masks need: a
/// unit's mask is mostly empty, and this skips the rest.
pub fn upsample_bilinear_above(map: &[f32], h: usize, w: usize, out_h: usize, out_w: usize, t: f32) -> Vec<usize> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 || map.len() < h * w {
        return upsample_bilinear(map, h, w, out_h, out_w).iter().enumerate().filter(|(_, &v)| v > t).map(|(i, _)| i).collect();
    }
    let hot: Vec<bool> = map[..h * w].iter().map(|&v| v > t).collect();
    let row_hot: Vec<bool> = hot.chunks(w).map(|r| r.iter().any(|&b| b)).collect();
    let (ys, xs) = (bilinear_taps(h, out_h), bilinear_taps(w, out_w));
    let mut on = vec![];
    for (oy, &(y0, y1, wy0, wy1)) in ys.iter().enumerate() {
        if !(row_hot[y0] || row_hot[y1]) {
            continue;
        }
        let (r0, r1) = (&map[y0 * w..(y0 + 1) * w], &map[y1 * w..(y1 + 1) * w]);
        let (h0, h1) = (&hot[y0 * w..(y0 + 1) * w], &hot[y1 * w..(y1 + 1) * w]);
        for (ox, &(x0, x1, wx0, wx1)) in xs.iter().enumerate() {
            if (h0[x0] || h0[x1] || h1[x0] || h1[x1]) && wy0 * (wx0 * r0[x0] + wx1 * r0[x1]) + wy1 * (wx0 * r1[x0] + wx1 * r1[x1]) > t {
                on.push(oy * out_w + ox);
            }
        }
    }
    on
}

/// For each output index along one axis: (i0, i1, weight of i0, weight of i1), as PyTorch's
/// `area_pixel_compute_source_index` and `upsample_bilinear2d` compute them (and the CUDA
/// engine's dissection counts read them: `kernels/dissect.cu`).
pub fn bilinear_taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(n_in - 1);
            let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Colour an `h × w` map of values in [0, 1] (values outside are clamped, NaN reads as 0).
pub fn colorize(map01: &[f32], h: usize, w: usize, cmap: Colormap) -> RgbImage {
    let mut img = RgbImage::new(w as u32, h as u32);
    let n = img.len().min(3 * map01.len());
    colors_into(&mut img.as_mut()[..n], map01, cmap);
    img
}

/// The colours of `map01`'s values, three bytes each, into `out` (as many as fit). One `match`
/// per call, not per pixel, so that each map's loop is simple enough to vectorise.
fn colors_into(out: &mut [u8], map01: &[f32], cmap: Colormap) {
    fn each(out: &mut [u8], map01: &[f32], f: impl Fn(f32) -> [f32; 3]) {
        for (px, &v) in out.chunks_exact_mut(3).zip(map01) {
            px.copy_from_slice(&to_u8(f(clean(v))));
        }
    }
    match cmap {
        Colormap::Turbo => each(out, map01, turbo),
        Colormap::Inferno => each(out, map01, inferno),
        Colormap::Gray => each(out, map01, |v| [v; 3]),
    }
}

/// Alpha-blend the coloured map over `base`: `(1 - alpha) * base + alpha * colour`, with
/// `alpha` clamped to [0, 1] (NaN reads as 0). The map must be at `base`'s size (row-major,
/// `height × width`); upsample it first with [`upsample_bilinear`]. Pixels past the end of a
/// shorter map are left as they are.
pub fn overlay(
    base: &RgbImage,
    map01_at_base_size: &[f32],
    cmap: Colormap,
    alpha: f32,
) -> RgbImage {
    let mut colours = vec![0u8; base.len().min(3 * map01_at_base_size.len())];
    colors_into(&mut colours, map01_at_base_size, cmap);
    blend_prefix(base, &colours, alpha)
}

/// [`overlay`] of a map already coloured: `heat` as [`colorize`] made it from the map (at
/// `base`'s size), blended over `base`. The same pixels as [`overlay`] of the map, without
/// computing its colours a second time.
pub fn blend(base: &RgbImage, heat: &RgbImage, alpha: f32) -> RgbImage {
    blend_prefix(base, heat.as_raw(), alpha)
}

/// `base` with its first `colours.len()` bytes blended with `colours` ([`overlay`]'s rule).
fn blend_prefix(base: &RgbImage, colours: &[u8], alpha: f32) -> RgbImage {
    let a = clean(alpha);
    let mut out = base.clone();
    for (p, &c) in out.iter_mut().zip(colours) {
        *p = blend_u8(*p, c, a);
    }
    out
}

/// One channel of [`overlay`]: `(1 - a) * p + a * c`, rounded.
#[inline]
fn blend_u8(p: u8, c: u8, a: f32) -> u8 {
    round_u8((1.0 - a) * p as f32 + a * c as f32)
}

/// `x.round() as u8` — half away from zero, saturating, NaN to 0 — for every f32, bit for bit,
/// without `f32::round`: baseline x86-64 has no rounding instruction, so `round` is a call into
/// libm per value, and a loop of calls does not vectorise. Truncate (`as i32`, exact below 2^31
/// and saturating above), then add one when the fraction `x - t` (exact) is at least one half;
/// a negative `x` ends at or below 0 either way and saturates to 0, as `round` does.
#[inline]
pub(crate) fn round_u8(x: f32) -> u8 {
    let t = x as i32 as f32;
    (if x - t >= 0.5 { t + 1.0 } else { t }) as u8
}

/// [`overlay`] on the original image: `map01` (`h × w`, normalised to [0, 1]) covers `crop`
/// of `base` — the window the network's input was cut from ([`super::crop_box`]) — and is
/// resampled bilinearly there (pixel centres, edges clamped, as [`upsample_bilinear`]), then
/// blended as [`overlay`] blends. Pixels outside the window, which the network never saw, are
/// darkened to half.
pub fn overlay_in_box(base: &RgbImage, map01: &[f32], h: usize, w: usize, crop: &CropBox, cmap: Colormap, alpha: f32) -> RgbImage {
    let a = clean(alpha);
    let mut out = base.clone();
    let bw = base.width() as usize;
    if h == 0 || w == 0 || bw == 0 || !(crop.width > 0.0 && crop.height > 0.0) {
        return out;
    }
    let at = |y: usize, x: usize| map01.get(y * w + x).copied().unwrap_or(0.0);
    // source coordinate (align_corners = false) of an output pixel centre, clamped to the map
    let src = |p: usize, start: f64, len: f64, n: usize| -> Option<(usize, usize, f32)> {
        let c = p as f64 + 0.5;
        if c < start || c >= start + len {
            return None;
        }
        let f = ((c - start) * n as f64 / len - 0.5).clamp(0.0, (n - 1) as f64);
        let i0 = f.floor() as usize;
        Some((i0, (i0 + 1).min(n - 1), (f - i0 as f64) as f32))
    };
    let cols: Vec<Option<(usize, usize, f32)>> = (0..bw).map(|x| src(x, crop.x, crop.width, w)).collect();
    out.par_chunks_mut(bw * 3).enumerate().for_each(|(y, row)| {
        let ry = src(y, crop.y, crop.height, h);
        for (x, px) in row.chunks_mut(3).enumerate() {
            match (ry, cols[x]) {
                (Some((y0, y1, ty)), Some((x0, x1, tx))) => {
                    let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
                    let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
                    let c = color(cmap, top * (1.0 - ty) + bottom * ty);
                    for k in 0..3 {
                        px[k] = blend_u8(px[k], c.0[k], a);
                    }
                }
                _ => px.iter_mut().for_each(|v| *v /= 2),
            }
        }
    });
    out
}

fn color(cmap: Colormap, v: f32) -> Rgb<u8> {
    let v = clean(v);
    Rgb(to_u8(match cmap {
        Colormap::Turbo => turbo(v),
        Colormap::Inferno => inferno(v),
        Colormap::Gray => [v; 3],
    }))
}

/// A map value as the colour maps read it (and an opacity as blending does): clamped to
/// [0, 1], NaN as 0.
#[inline]
fn clean(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 1.0)
    }
}

/// A colour in [0, 1] (clamped) as 8-bit levels.
#[inline]
fn to_u8(rgb: [f32; 3]) -> [u8; 3] {
    rgb.map(|c| round_u8(c.clamp(0.0, 1.0) * 255.0))
}

/// Turbo by Google's published polynomial approximation (Anton Mikhailov, "Turbo, an improved
/// rainbow colormap for visualization", 2019): a degree-5 polynomial per channel.
fn turbo(x: f32) -> [f32; 3] {
    #[rustfmt::skip]
    const COEF: [[f64; 6]; 3] = [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ];
    let x = x as f64;
    COEF.map(|c| c.iter().rev().fold(0.0, |acc, &k| acc * x + k) as f32)
}

/// Inferno, sampled at 33 evenly spaced points from matplotlib's 256-entry definition and
/// interpolated linearly between them (within 2/255 of the full table everywhere).
fn inferno(x: f32) -> [f32; 3] {
    const KNOTS: [[f32; 3]; 33] = [
        [0.0015, 0.0005, 0.0139],
        [0.0139, 0.0112, 0.0716],
        [0.0420, 0.0280, 0.1406],
        [0.0815, 0.0432, 0.2144],
        [0.1285, 0.0473, 0.2896],
        [0.1823, 0.0405, 0.3539],
        [0.2370, 0.0366, 0.3956],
        [0.2894, 0.0453, 0.4182],
        [0.3399, 0.0618, 0.4292],
        [0.3897, 0.0803, 0.4331],
        [0.4393, 0.0986, 0.4317],
        [0.4889, 0.1164, 0.4259],
        [0.5386, 0.1339, 0.4157],
        [0.5882, 0.1516, 0.4011],
        [0.6375, 0.1704, 0.3822],
        [0.6858, 0.1910, 0.3591],
        [0.7328, 0.2143, 0.3321],
        [0.7776, 0.2414, 0.3016],
        [0.8195, 0.2728, 0.2685],
        [0.8578, 0.3090, 0.2333],
        [0.8918, 0.3500, 0.1965],
        [0.9210, 0.3954, 0.1584],
        [0.9451, 0.4448, 0.1188],
        [0.9640, 0.4974, 0.0776],
        [0.9774, 0.5526, 0.0380],
        [0.9855, 0.6100, 0.0245],
        [0.9879, 0.6692, 0.0596],
        [0.9847, 0.7296, 0.1222],
        [0.9759, 0.7909, 0.1973],
        [0.9623, 0.8522, 0.2867],
        [0.9486, 0.9109, 0.3962],
        [0.9518, 0.9608, 0.5247],
        [0.9884, 0.9984, 0.6449],
    ];
    let t = x * (KNOTS.len() - 1) as f32;
    let i = (t as usize).min(KNOTS.len() - 2);
    let f = t - i as f32;
    let (a, b) = (KNOTS[i], KNOTS[i + 1]);
    [0, 1, 2].map(|k| a[k] + f * (b[k] - a[k]))
}
