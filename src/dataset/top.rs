//! `top-patches`: for units of a layer, the k images of a dataset that activate each most (a
//! unit's value on an image is the maximum over its spatial map), each cropped to the receptive
//! field ([`super::rf`]) of the position of that maximum, with the unit's map overlaid. As
//! Zeiler & Fergus (2014) and the "top images per unit" of NetDissect; the crop is the
//! theoretical receptive field, not the effective one.
//!
//! The tally keeps per unit the k best hits, ordered by value descending and then by image index
//! ascending (so ties are broken the same way in one pass and in merged shards), each with its
//! map so that a merge needs no engine.

use std::collections::HashMap;

use image::{imageops, Rgb, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::report::{self, Figure};
use super::rf::{receptive_fields, Rf};
use super::{load_crop, pass, Dataset, Partial, Shard, Tally};
use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::colormap::{overlay, upsample_bilinear, Colormap};
use crate::imageio::Preprocess;
use crate::job::{png_bytes, Progress};
use crate::output::OutputSet;

/// Side of one tile of a unit's grid, in pixels.
pub const TILE: u32 = 112;
/// Tiles per row of a unit's grid.
pub const GRID_COLUMNS: usize = 8;

/// The job: which layer, which units, how many images each.
#[derive(Clone, Debug)]
pub struct TopPatches {
    /// the layer's module path
    pub layer: String,
    /// channels of the layer; `None`: all of them
    pub units: Option<Vec<usize>>,
    /// top images kept per unit
    pub k: usize,
    /// images per forward pass
    pub batch_size: usize,
}

/// One image's value for a unit: where its map peaks (the first maximum in row-major order),
/// and the map itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// the image's index in the dataset
    pub image: usize,
    /// the map's maximum
    pub value: f64,
    /// the maximum's row in the map
    pub y: usize,
    /// the maximum's column in the map
    pub x: usize,
    /// the unit's map on this image, row-major
    pub map: Vec<f64>,
}

/// The state of a top-patches pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopTally {
    /// as [`TopPatches::layer`]
    pub layer: String,
    /// as [`TopPatches::k`]
    pub k: usize,
    /// the units, in the order of [`TopTally::hits`]
    pub units: Vec<usize>,
    /// the layer's map size and the network input's
    pub map_hw: [usize; 2],
    /// the network input's size (height, width)
    pub input_hw: [usize; 2],
    /// the receptive field of the layer's units
    pub rf: Rf,
    /// per unit (in `units` order), the best hits, best first
    pub hits: Vec<Vec<Hit>>,
}

/// `a` ranks before `b`.
fn before(a: &Hit, b_value: f64, b_image: usize) -> bool {
    a.value > b_value || (a.value == b_value && a.image < b_image)
}

/// Where a hit of (value, image) would go in a list of at most `k`, if it makes it.
fn slot(list: &[Hit], k: usize, value: f64, image: usize) -> Option<usize> {
    let at = list.partition_point(|h| before(h, value, image));
    (at < k).then_some(at)
}

impl TopTally {
    /// Add one image's map of the unit at position `u` of `units`.
    pub(crate) fn offer(&mut self, u: usize, image: usize, map: &[f32]) -> Result<()> {
        let mut best = 0;
        for (i, &v) in map.iter().enumerate() {
            if v.is_nan() {
                return Err(Error::InvalidArgument(format!("layer `{}` unit {}: NaN on image {image}", self.layer, self.units[u])));
            }
            if v > map[best] {
                best = i;
            }
        }
        self.offer_max(u, image, map[best], best, || map.iter().map(|&v| v as f64).collect());
        Ok(())
    }

    /// Add one image's hit for the unit at position `u` from its map's maximum `value`, first
    /// at row-major position `best`; `map` makes the map if the hit enters the list. Whether it
    /// does depends on the value alone.
    pub(crate) fn offer_max(&mut self, u: usize, image: usize, value: f32, best: usize, map: impl FnOnce() -> Vec<f64>) {
        if let Some(at) = slot(&self.hits[u], self.k, value as f64, image) {
            let w = self.map_hw[1];
            let hit = Hit { image, value: value as f64, y: best / w, x: best % w, map: map() };
            self.hits[u].insert(at, hit);
            self.hits[u].truncate(self.k);
        }
    }

    /// The tally of both shards: each unit's lists merged in rank order.
    pub fn merge(mut self, other: TopTally) -> Result<TopTally> {
        if (self.units != other.units) || self.k != other.k || self.map_hw != other.map_hw || self.rf != other.rf {
            return Err(Error::InvalidArgument("top-patches states of different layers, units or k".into()));
        }
        for (mine, theirs) in self.hits.iter_mut().zip(other.hits) {
            for h in theirs {
                if let Some(at) = slot(mine, self.k, h.value, h.image) {
                    mine.insert(at, h);
                    mine.truncate(self.k);
                }
            }
        }
        Ok(self)
    }
}

impl TopPatches {
    /// One pass over the shard's images: the shard's partial state.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, ds: &Dataset, shard: Shard, progress: &mut dyn FnMut(Progress)) -> Result<Partial> {
        if self.k == 0 {
            return Err(Error::InvalidArgument("--top must be at least 1".into()));
        }
        let model = eng.model();
        let layer = model.resolve(&self.layer)?;
        let node = layer.node();
        let input_hw = model.preprocess.size;
        let shapes = model.infer_shapes(&[1, 3, input_hw[0], input_hw[1]])?;
        let s = &shapes[node];
        let (c, map_hw) = match s.len() {
            4 => (s[1], [s[2], s[3]]),
            2 => (s[1], [1, 1]),
            _ => return Err(Error::shape(format!("layer `{}`", self.layer), "[n, c, h, w] or [n, c]", s)),
        };
        let units = match &self.units {
            None => (0..c).collect(),
            Some(u) => {
                if let Some(bad) = u.iter().find(|&&u| u >= c) {
                    return Err(Error::InvalidArgument(format!("unit {bad} of layer `{}`: it has {c} channels (0..{})", self.layer, c - 1)));
                }
                u.clone()
            }
        };
        let ps: Vec<Vec<usize>> = model.params.iter().map(|t| t.shape.clone()).collect();
        let rf = receptive_fields(&model.graph, &ps, input_hw, node)?[node];
        let name = model.name(layer).to_string();
        let params = json!({"layer": name, "units": units, "k": self.k, "input_hw": input_hw});
        let mut t = TopTally { layer: name, k: self.k, hits: vec![vec![]; units.len()], units, map_hw, input_hw, rf };
        let hw = map_hw[0] * map_hw[1];
        let mut images = vec![];
        let skipped = pass(eng, ds, shard, layer, self.batch_size, progress, "top-patches", |b, a| {
            for (j, &image) in b.indices.iter().enumerate() {
                let item = a.item(j);
                for u in 0..t.units.len() {
                    let ch = t.units[u];
                    t.offer(u, image, &item[ch * hw..(ch + 1) * hw])?;
                }
                images.push(image);
            }
            Ok(())
        })?;
        let mut p = Partial::new(model, ds, shard, params, Tally::TopPatches(t));
        p.images = images;
        p.skipped = skipped;
        Ok(p)
    }
}

/// The box of a hit in the input crop: `[x0, y0, x1, y1)`.
pub fn hit_box(t: &TopTally, h: &Hit) -> [usize; 4] {
    t.rf.region(h.y, h.x, t.input_hw[0], t.input_hw[1])
}

/// A picture scaled to fit a `TILE × TILE` square (aspect kept, centred on black).
fn fit_tile(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = TILE as f32 / w.max(h).max(1) as f32;
    let (nw, nh) = (((w as f32 * s).round() as u32).clamp(1, TILE), ((h as f32 * s).round() as u32).clamp(1, TILE));
    let scaled = imageops::resize(img, nw, nh, imageops::FilterType::Triangle);
    let mut tile = RgbImage::from_pixel(TILE, TILE, Rgb([0, 0, 0]));
    imageops::overlay(&mut tile, &scaled, ((TILE - nw) / 2) as i64, ((TILE - nh) / 2) as i64);
    tile
}

/// Tiles laid out in rows of `cols`, `gap` pixels apart on white.
pub fn grid(tiles: &[RgbImage], cols: usize, gap: u32) -> RgbImage {
    let cols = cols.clamp(1, tiles.len().max(1));
    let rows = tiles.len().div_ceil(cols).max(1);
    let (tw, th) = tiles.first().map_or((1, 1), |t| t.dimensions());
    let mut out = RgbImage::from_pixel(cols as u32 * (tw + gap) + gap, rows as u32 * (th + gap) + gap, Rgb([255, 255, 255]));
    for (i, t) in tiles.iter().enumerate() {
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        imageops::overlay(&mut out, t, (gap + c * (tw + gap)) as i64, (gap + r * (th + gap)) as i64);
    }
    out
}

/// The crops of the images `indices` (each decoded once, in parallel).
pub(crate) fn crops(ds: &Dataset, indices: impl IntoIterator<Item = usize>, pre: &Preprocess) -> Result<HashMap<usize, RgbImage>> {
    let mut want: Vec<usize> = indices.into_iter().collect();
    want.sort_unstable();
    want.dedup();
    want.par_iter().map(|&i| Ok((i, load_crop(ds.files.get(i).ok_or_else(|| Error::InvalidArgument(format!("image #{i} is not in the dataset")))?, pre)?))).collect()
}

/// Render a (merged) top-patches state: one grid PNG per unit, `top-patches.json`, `index.html`.
pub fn finish(p: &Partial, t: &TopTally, ds: &Dataset, out: &mut OutputSet) -> Result<Value> {
    let pre = Preprocess { size: t.input_hw, ..Preprocess::imagenet(t.input_hw) };
    let pictures = crops(ds, t.hits.iter().flatten().map(|h| h.image), &pre)?;
    let [ih, iw] = t.input_hw;
    let [mh, mw] = t.map_hw;
    // each unit's grid, in parallel (the pictures are the slow part of a wide layer)
    let rendered: Vec<(Value, Option<Vec<u8>>)> = t
        .units
        .par_iter()
        .zip(&t.hits)
        .map(|(&unit, hits)| {
            let lo = hits.iter().flat_map(|h| h.map.iter().copied()).fold(f64::INFINITY, f64::min);
            let hi = hits.iter().map(|h| h.value).fold(f64::NEG_INFINITY, f64::max);
            let span = if hi > lo { hi - lo } else { 1.0 };
            let mut tiles = vec![];
            let mut rows = vec![];
            for h in hits {
                let map01: Vec<f32> = h.map.iter().map(|&v| ((v - lo) / span) as f32).collect();
                let up = upsample_bilinear(&map01, mh, mw, ih, iw);
                let [x0, y0, x1, y1] = hit_box(t, h);
                let (cw, ch) = ((x1 - x0).max(1), (y1 - y0).max(1));
                let crop = imageops::crop_imm(&pictures[&h.image], x0 as u32, y0 as u32, cw as u32, ch as u32).to_image();
                let (cw, ch) = (crop.width() as usize, crop.height() as usize);
                let up_crop: Vec<f32> = (0..ch).flat_map(|y| up[(y0 + y) * iw + x0..(y0 + y) * iw + x0 + cw].iter().copied()).collect();
                tiles.push(fit_tile(&overlay(&crop, &up_crop, Colormap::Turbo, 0.45)));
                rows.push(json!({"image": ds.names[h.image], "index": h.image, "value": h.value, "y": h.y, "x": h.x, "box": [x0, y0, x1, y1]}));
            }
            let file = format!("unit_{unit:04}.png");
            let png = if tiles.is_empty() { None } else { Some(png_bytes(&grid(&tiles, GRID_COLUMNS, 4))?) };
            Ok((json!({"unit": unit, "file": file, "top": hi, "hits": rows}), png))
        })
        .collect::<Result<_>>()?;
    let mut units = vec![];
    let mut figures = vec![];
    for (u, png) in rendered {
        if let Some(png) = png {
            let file = u["file"].as_str().expect("a name");
            out.add(file, &png)?;
            figures.push(Figure { file: file.to_string(), caption: format!("unit {}: top value {:.4}", u["unit"], u["top"].as_f64().unwrap_or(f64::NAN)) });
        }
        units.push(u);
    }
    let summary = json!({
        "command": "top-patches",
        "layer": t.layer,
        "k": t.k,
        "map_hw": t.map_hw,
        "input_hw": t.input_hw,
        "receptive_field": t.rf,
        "dataset": p.dataset,
        "images": p.images.len(),
        "skipped": p.skipped.iter().map(|s| json!({"image": ds.names.get(s.image), "error": s.error})).collect::<Vec<_>>(),
        "shards": p.shards.len(),
        "units": units,
    });
    out.add("top-patches.json", &serde_json::to_vec_pretty(&summary).expect("JSON serialises"))?;
    let intro = format!(
        "Layer <code>{}</code> ({}x{} map), {} images of {} ({} skipped), the {} most activating per unit; each tile is the unit's receptive field ({}) around its maximum, its map overlaid (turbo, scaled per unit). Boxes are in the {}x{} centre crop the network sees.",
        report::escape(&t.layer), mh, mw, p.images.len(), report::escape(&p.dataset), p.skipped.len(), t.k, report::escape(&rf_words(&t.rf)), ih, iw
    );
    out.add("index.html", report::page("top-patches", &intro, &figures, &["top-patches.json"]).as_bytes())?;
    Ok(summary)
}

/// The receptive field in words.
pub fn rf_words(rf: &Rf) -> String {
    match rf {
        Rf::Whole => "the whole image".into(),
        Rf::Lattice([y, x]) => format!("{}x{} px, stride {}x{}, first at ({}, {})", y.size, x.size, y.jump, x.jump, y.lo, x.lo),
    }
}
