//! Heat-map pictures of attribution maps. On the backend, from its generic primitives: upsample
//! each map `[n, 1, h, w]` bilinearly to the picture size (PyTorch's `align_corners=False`), and
//! normalise each item to [0, 1] by its min and max — or, with a clip quantile q, by its min and
//! its q-quantile ([`Reduce::Quantile`], values above clamped to 1), so a few extreme values do
//! not leave the rest dark. On the host: colour ([`colorize`]) and blend over the picture
//! ([`blend`], the colours computed once for both pictures). Only the normalised maps cross to
//! the host.
//!
//! A map holding NaN or an infinity is an error naming the item, never a black picture.

use image::RgbImage;
use rayon::prelude::*;

use crate::backend::{Backend, Binary, Reduce, Unary};
use crate::error::{Error, Result};
use crate::imageio::{blend, colorize, Colormap};
use crate::tensor::Tensor;

/// How a map becomes a picture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Style {
    /// the colours of the normalised map
    pub colormap: Colormap,
    /// normalise by this quantile (in (0, 1]) of each map instead of its maximum; `None` or 1:
    /// by the maximum
    pub clip: Option<f32>,
    /// opacity of the heat map over the picture in overlays, in [0, 1]
    pub alpha: f32,
}

/// The maps `[n, 1, h, w]` upsampled to `out_hw` and normalised per item to [0, 1], as a host
/// tensor `[n, 1, H, W]`.
pub fn normalized<B: Backend>(be: &B, maps: &B::T, out_hw: [usize; 2], clip: Option<f32>) -> Result<Tensor> {
    let s = be.shape(maps);
    if s.len() != 4 || s[1] != 1 || s[2] == 0 || s[3] == 0 {
        return Err(Error::shape("heat map", "maps [n, 1, h, w] with h, w > 0", s));
    }
    if out_hw.contains(&0) {
        return Err(Error::InvalidArgument(format!("cannot make pictures of {}x{} pixels", out_hw[0], out_hw[1])));
    }
    if let Some(q) = clip {
        if !(q > 0.0 && q <= 1.0) {
            return Err(Error::InvalidArgument(format!("the clip quantile must be in (0, 1], not {q}")));
        }
    }
    let axes = [1, 2, 3];
    let up = be.resize(maps, out_hw[0], out_hw[1])?;
    let lo = be.reduce(&up, Reduce::Min, &axes)?;
    let max = be.reduce(&up, Reduce::Max, &axes)?;
    let hi = match clip {
        Some(q) if q < 1.0 => be.reduce(&up, Reduce::Quantile(q), &axes)?,
        _ => max.clone(),
    };
    // (v − lo) / max(hi − lo, tiny), clamped to [0, 1]: a constant map becomes all zeros
    let span = be.unary(&be.binary(&hi, &lo, Binary::Sub)?, Unary::Clamp(f32::MIN_POSITIVE, f32::MAX))?;
    let scaled = be.binary(&be.binary(&up, &lo, Binary::Sub)?, &be.unary(&span, Unary::Recip)?, Binary::Mul)?;
    let norm = be.download(&be.unary(&scaled, Unary::Clamp(0.0, 1.0))?)?;
    // min and max carry any NaN or infinity of their map
    let (lo, max) = (be.download(&lo)?, be.download(&max)?);
    if let Some(i) = (0..lo.data.len()).find(|&i| !lo.data[i].is_finite() || !max.data[i].is_finite()) {
        return Err(Error::InvalidArgument(format!("the map of item {i} holds NaN or infinite values (the computation diverged)")));
    }
    Ok(norm)
}

/// The heat map and its overlay over `pictures[i]` for every map `[n, 1, h, w]`, at the
/// pictures' size (all pictures of a batch have one size).
pub fn pictures<B: Backend>(be: &B, maps: &B::T, pictures: &[RgbImage], style: &Style) -> Result<Vec<(RgbImage, RgbImage)>> {
    Ok(pictures_and_maps(be, maps, pictures, style)?.0)
}

/// [`pictures`], and the normalised maps they were coloured from (a host tensor
/// `[n, 1, H, W]` at the pictures' size), for more pictures of the same maps.
pub fn pictures_and_maps<B: Backend>(be: &B, maps: &B::T, pictures: &[RgbImage], style: &Style) -> Result<(Vec<(RgbImage, RgbImage)>, Tensor)> {
    let n = be.shape(maps).first().copied().unwrap_or(0);
    if pictures.len() != n {
        return Err(Error::InvalidArgument(format!("{} pictures for {n} maps", pictures.len())));
    }
    let Some(first) = pictures.first() else { return Ok((vec![], Tensor::zeros(&[0, 1, 1, 1]))) };
    let (h, w) = (first.height() as usize, first.width() as usize);
    if pictures.iter().any(|p| (p.height() as usize, p.width() as usize) != (h, w)) {
        return Err(Error::InvalidArgument("the pictures of a batch must have one size".into()));
    }
    let norm = normalized(be, maps, [h, w], style.clip)?;
    let pics = pictures
        .par_iter()
        .enumerate()
        .map(|(i, pic)| {
            let heat = colorize(norm.item(i), h, w, style.colormap);
            let over = blend(pic, &heat, style.alpha);
            (heat, over)
        })
        .collect();
    Ok((pics, norm))
}
