//! `filters`: a convolution's weights as pictures (Krizhevsky et al. 2012, fig. 3; Zeiler &
//! Fergus 2014). The weights are the convolution's own, as PyTorch's state dict holds them —
//! not the batch-norm-folded ones the engine may run with (folding scales each filter by
//! γ/√(σ²+ε), which the per-filter normalisation would hide anyway, but not the bias shift).
//!
//! - A convolution over 3 channels (the first layer): one RGB tile per filter, each filter
//!   min–max normalised to [0, 1] on its own, tiles in a square-ish grid.
//! - A depthwise convolution (one input channel per filter): one grey tile per filter, likewise.
//! - Any other convolution: one row per filter, one grey tile per input channel of its group,
//!   min–max normalised per filter (so a filter's channels compare), at most
//!   [`MAX_SIDE`] rows and columns (the JSON says what was shown).

use image::{imageops, Rgb, RgbImage};
use serde_json::{json, Value};

use super::top::grid;
use crate::error::{Error, Result};
use crate::graph::Op;
use crate::model::Model;

/// Most filters (rows) and input channels (columns) a per-channel grid shows.
pub const MAX_SIDE: usize = 64;
/// Smallest side of a filter's tile in pixels (kernels are scaled up by an integer factor).
pub const MIN_TILE: usize = 24;

/// The grid picture of `layer`'s weights (default: the first convolution) and what it shows.
pub fn filter_grid(model: &Model, layer: Option<&str>) -> Result<(RgbImage, Value)> {
    let g = &model.graph;
    let node = match layer {
        Some(l) => model.resolve(l)?.node(),
        None => g.nodes.iter().position(|n| matches!(n.op, Op::Conv { .. })).ok_or_else(|| Error::Unsupported(format!("{} has no convolution", g.arch)))?,
    };
    let n = &g.nodes[node];
    let Op::Conv { weight, groups, .. } = n.op else {
        return Err(Error::InvalidArgument(format!("layer `{}` is a {}, not a convolution (`deepviz layers` shows each layer's op)", n.name, n.op.kind())));
    };
    let w = &model.params[weight];
    let [cout, cin, kh, kw] = w.shape[..] else { unreachable!("conv weights are 4-d") };
    let per = cin * kh * kw;
    let scale = MIN_TILE.div_ceil(kh.max(kw)).max(1);
    let normalised = |o: usize| -> Vec<f32> {
        let f = &w.data[o * per..(o + 1) * per];
        let (lo, hi) = f.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        f.iter().map(|&v| (v - lo) / span).collect()
    };
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let up = |t: RgbImage| imageops::resize(&t, (kw * scale) as u32, (kh * scale) as u32, imageops::FilterType::Nearest);
    let (picture, rows, cols) = if cin == 3 || cin == 1 {
        // one tile per filter: RGB, or grey for a depthwise convolution
        let tiles: Vec<RgbImage> = (0..cout)
            .map(|o| {
                let f = normalised(o);
                up(RgbImage::from_fn(kw as u32, kh as u32, |x, y| {
                    let at = |c: usize| byte(f[((c % cin) * kh + y as usize) * kw + x as usize]);
                    Rgb([at(0), at(1), at(2)])
                }))
            })
            .collect();
        let cols = (cout as f64).sqrt().ceil() as usize;
        (grid(&tiles, cols, 2), cout.div_ceil(cols), cols)
    } else {
        let (rows, cols) = (cout.min(MAX_SIDE), cin.min(MAX_SIDE));
        let mut tiles = vec![];
        for o in 0..rows {
            let f = normalised(o);
            for c in 0..cols {
                tiles.push(up(RgbImage::from_fn(kw as u32, kh as u32, |x, y| Rgb([byte(f[(c * kh + y as usize) * kw + x as usize]); 3]))));
            }
        }
        (grid(&tiles, cols, 1), rows, cols)
    };
    let info = json!({
        "layer": n.name,
        "weight": g.params[weight].name,
        "shape": w.shape,
        "groups": groups,
        "kind": match cin { 3 => "rgb", 1 => "depthwise", _ => "per-channel" },
        "shown": {"filters": if cin <= 3 { cout } else { rows }, "channels": if cin <= 3 { cin } else { cols }, "grid": [rows, cols]},
        "normalisation": "min-max per filter",
        "weights": "the convolution's own (PyTorch state dict), before any batch-norm folding",
    });
    Ok((picture, info))
}
