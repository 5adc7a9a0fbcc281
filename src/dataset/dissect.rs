//! `dissect`: Network Dissection (Bau, Zhou, Khosla, Oliva, Torralba, CVPR 2017), on a dataset in
//! the Broden layout ([`super::broden`]). Two passes over the images, each shardable:
//!
//! 1. **Thresholds.** Per unit of the layer, `T_k`: the top-`q` quantile (q = 0.5%) of its
//!    activations over every position of every image. *Exact, not sketched*: the state keeps per
//!    unit the `K = ⌈q·N·h·w⌉` largest values (N: the images of the whole dataset, h×w: the map),
//!    which is all a top-q quantile needs, whatever the shard. Two shards merge exactly (the `K`
//!    largest of the union are among the union of each one's `K` largest), so sharded equals one
//!    pass bit for bit — a sketch could only promise a rank error, and the reference's sampling
//!    sketch (NetDissect-Lite's `vecquantile`) gives different thresholds per run and per
//!    sharding. The cost is the state's size: `4·K` bytes per unit (f32, base64 in the JSON):
//!    ResNet-18 `layer4` on Broden (63k images, 7×7) keeps 15.4k values per unit, 32 MB for its
//!    512 units; a 14×14 layer four times that per unit. `T_k` is the `⌈q·M⌉`-th largest of
//!    the `M` values read (skipped images do not count); a pixel is *on* where the map exceeds it.
//! 2. **Counts.** Per image, each unit's map is upsampled (bilinear, half-pixel centres, as
//!    NetDissect-Lite's `imresize(mode='F')`) to the label resolution `sh × sw` and thresholded
//!    at `T_k` into the mask `M_k`; with the labels `L_c` of the image (label images decode
//!    `R + 256·G`; a whole-image label — scene, texture — is a mask of the whole image, as in
//!    Lite), it adds integers: `|M_k ∩ L_c|` per unit and label, `|L_c|` per label, and `|M_k|`
//!    per unit and category over the images annotated in that category. Integers merge by
//!    adding, so the counts of shards equal one pass exactly.
//!
//! Then `IoU_{k,c} = Σ|M_k ∩ L_c| / Σ|M_k ∪ L_c|` with `|M ∪ L| = |M| + |L| − |M ∩ L|`, the
//! sums over the images annotated in `c`'s (primary) category: the paper's definition. (Lite
//! adds a unit's area to a category's union only on images where the mask touches a label of
//! that category, which overstates IoU; we count every annotated image.) A unit's concept is
//! its best label; it is a detector when that IoU exceeds 0.04; the unique detectors are the
//! distinct labels detected. As in Lite, an image's unit is skipped when its map's maximum does
//! not exceed `T_k` (bilinear upsampling cannot exceed the maximum, so its mask is empty).
//!
//! Where the counts run: on the CPU engine, on the host over the maps (rayon over units); on
//! the GPU engine, on the device where the forward left the maps
//! ([`crate::backend::Backend::iou_counts`], `kernels/dissect.cu`), the same f32 arithmetic to
//! the bit, so both engines count the same pixels of the same maps; per batch only each
//! (image, unit)'s maximum and its position come back, and the maps of the few that enter a
//! unit's top images. Images are resized to the network input
//! whole (stretched, not centre-cropped), so that the maps cover the label images exactly.

use std::sync::Arc;

use image::{imageops, Rgb, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::broden::{Broden, ImageLabels};
use super::report::{self, Figure};
use super::rf::receptive_fields;
use super::top::{grid, TopTally};
use super::{Dataset, Framing, Partial, Pass, Shard, Skipped, Tally};
use crate::backend::dissect::{IouCounts, MaskLabels};
use crate::backend::{Backend, Reduce};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::colormap::{upsample_bilinear, upsample_bilinear_above};
use crate::imageio::Preprocess;
use crate::job::{png_bytes, Progress};
use crate::output::OutputSet;

/// The paper's top quantile of activations a unit's mask keeps.
pub const QUANTILE: f64 = 0.005;
/// A unit whose best IoU exceeds this is a detector (the paper's and Lite's 0.04).
pub const IOU_DETECTOR: f64 = 0.04;
/// The file the merged first pass writes, which the second pass reads (`--thresholds`).
pub const THRESHOLDS_FILE: &str = "dissect-thresholds.json";
const THRESHOLDS_FORMAT: &str = "deepviz-dissect-thresholds";
/// Side of one tile of a unit's top images.
pub const TILE: u32 = 96;

/// The job: the layer, the quantile, how many top images per unit.
#[derive(Clone, Debug)]
pub struct Dissect {
    /// the layer's module path
    pub layer: String,
    /// the activation quantile that thresholds a unit's maps (Bau et al.: 0.995)
    pub quantile: f64,
    /// top images shown per unit
    pub top: usize,
    /// images per forward pass
    pub batch_size: usize,
}

/// f32 values stored as base64 (little-endian) in a state's JSON: bit-exact and 4/3 the bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values(pub Vec<f32>);

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Serialize for Values {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for c in bytes.chunks(3) {
            let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                out.push(if i <= c.len() { B64[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
            }
        }
        s.serialize_str(&out)
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Values, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("not base64 of little-endian f32 values");
        let mut bytes = Vec::with_capacity(s.len() / 4 * 3);
        for c in s.as_bytes().chunks(4) {
            if c.len() != 4 {
                return Err(bad());
            }
            let mut n = 0u32;
            let mut pad = 0;
            for &b in c {
                let v = match b {
                    b'=' => {
                        pad += 1;
                        0
                    }
                    _ if pad > 0 => return Err(bad()),
                    _ => B64.iter().position(|&x| x == b).ok_or_else(bad)? as u32,
                };
                n = n << 6 | v;
            }
            bytes.extend_from_slice(&n.to_be_bytes()[1..4 - pad.min(2)]);
        }
        if bytes.len() % 4 != 0 {
            return Err(bad());
        }
        Ok(Values(bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
    }
}

/// The state of the first pass: per unit the largest values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantileTally {
    /// as [`Dissect::layer`]
    pub layer: String,
    /// as [`Dissect::quantile`]
    pub quantile: f64,
    /// the layer's map size
    pub map_hw: [usize; 2],
    /// values kept per unit: `⌈q · (images of the dataset) · h · w⌉`
    pub keep: usize,
    /// values read per unit
    pub seen: u64,
    /// per unit, its (at most) `keep` largest values, descending
    pub top: Vec<Values>,
}

/// The first pass while it runs: per unit a buffer of candidates above `floor`.
struct Largest {
    keep: usize,
    buf: Vec<f32>,
    /// every value at or below it is out of the top `keep` already
    floor: f32,
}

impl Largest {
    fn new(keep: usize) -> Largest {
        Largest { keep, buf: Vec::with_capacity(2 * keep), floor: f32::NEG_INFINITY }
    }

    fn offer(&mut self, vs: &[f32]) {
        for &v in vs {
            if v > self.floor {
                self.buf.push(v);
                if self.buf.len() >= 2 * self.keep {
                    self.compact();
                }
            }
        }
    }

    /// Keep only the `keep` largest, descending.
    fn compact(&mut self) {
        self.buf.sort_unstable_by(|a, b| b.total_cmp(a));
        self.buf.truncate(self.keep);
        if self.buf.len() == self.keep {
            self.floor = self.buf[self.keep - 1];
        }
    }
}

impl QuantileTally {
    /// The rank (1-based, from the top) of each unit's threshold among the values read.
    pub fn rank(&self) -> usize {
        ((self.quantile * self.seen as f64).ceil() as usize).clamp(1, self.keep)
    }

    /// Each unit's threshold `T_k`.
    pub fn thresholds(&self) -> Vec<f32> {
        let r = self.rank();
        self.top.iter().map(|v| v.0.get(r - 1).or(v.0.last()).copied().unwrap_or(0.0)).collect()
    }

    /// Both shards' values: still each unit's `keep` largest.
    pub fn merge(mut self, other: QuantileTally) -> Result<QuantileTally> {
        if (&self.layer, self.keep, self.map_hw, self.top.len()) != (&other.layer, other.keep, other.map_hw, other.top.len()) || self.quantile != other.quantile {
            return Err(Error::InvalidArgument("dissect threshold states of different layers or quantiles".into()));
        }
        for (a, b) in self.top.iter_mut().zip(other.top) {
            a.0.extend(b.0);
            a.0.sort_unstable_by(|x, y| y.total_cmp(x));
            a.0.truncate(self.keep);
        }
        self.seen += other.seen;
        Ok(self)
    }
}

/// The state of the second pass: integer counts, and the top images per unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IouTally {
    /// as [`Dissect::layer`]
    pub layer: String,
    /// the dataset's category names
    pub categories: Vec<String>,
    /// by label number: its name and primary category (`None`: no such label)
    pub labels: Vec<Option<(String, usize)>>,
    /// per unit, the first pass's threshold
    pub thresholds: Vec<f64>,
    /// `|L_c|` summed, per label number
    pub label_area: Vec<u64>,
    /// `|M_k|` summed over the images annotated in each category, per unit and category
    pub unit_area: Vec<Vec<u64>>,
    /// `|M_k ∩ L_c|` summed, per unit and label number
    pub inter: Vec<Vec<u64>>,
    /// label images read, and the resolution of the first
    pub label_hw: [usize; 2],
    /// each unit's top images by the maximum of its map
    pub top: TopTally,
}

fn add(a: &mut [u64], b: &[u64]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

impl IouTally {
    /// Both shards' counts added, or why they are not of one job.
    pub fn merge(mut self, other: IouTally) -> Result<IouTally> {
        if (&self.layer, &self.categories, &self.labels, &self.thresholds) != (&other.layer, &other.categories, &other.labels, &other.thresholds) {
            return Err(Error::InvalidArgument("dissect states of different layers, labels or thresholds".into()));
        }
        add(&mut self.label_area, &other.label_area);
        self.unit_area.iter_mut().zip(&other.unit_area).for_each(|(a, b)| add(a, b));
        self.inter.iter_mut().zip(&other.inter).for_each(|(a, b)| add(a, b));
        self.top = self.top.merge(other.top)?;
        Ok(self)
    }

    /// Add one image's `|L_c|` (and note the first label resolution).
    fn add_labels(&mut self, labels: &ImageLabels) {
        if self.label_hw == [0, 0] {
            self.label_hw = [labels.sh, labels.sw];
        }
        for plane in &labels.planes {
            for &n in plane {
                if n != 0 {
                    self.label_area[n as usize] += 1;
                }
            }
        }
        for &s in &labels.scalars {
            self.label_area[s] += (labels.sh * labels.sw) as u64;
        }
    }

    /// Add one image's maps (`[c, h, w]`, row-major) against its labels.
    fn add_image(&mut self, image: usize, maps: &[f32], hw: [usize; 2], labels: &ImageLabels) -> Result<()> {
        let (sh, sw) = (labels.sh, labels.sw);
        self.add_labels(labels);
        let n = hw[0] * hw[1];
        let thresholds = &self.thresholds;
        self.inter.par_iter_mut().zip(self.unit_area.par_iter_mut()).enumerate().for_each(|(u, (inter, area))| {
            let map = &maps[u * n..(u + 1) * n];
            let t = thresholds[u] as f32;
            if !map.iter().any(|&v| v > t) {
                return;
            }
            let on = upsample_bilinear_above(map, hw[0], hw[1], sh, sw, t);
            if on.is_empty() {
                return;
            }
            for (a, &yes) in area.iter_mut().zip(&labels.annotated) {
                if yes {
                    *a += on.len() as u64;
                }
            }
            for plane in &labels.planes {
                for &p in &on {
                    let l = plane[p];
                    if l != 0 {
                        inter[l as usize] += 1;
                    }
                }
            }
            for &s in &labels.scalars {
                inter[s] += on.len() as u64;
            }
        });
        for u in 0..self.top.units.len() {
            self.top.offer(u, image, &maps[u * n..(u + 1) * n])?;
        }
        Ok(())
    }

    /// Add a batch whose maps (`[n, c, h, w]`) stay on the backend: the labels' areas here, the
    /// masks' counts into `counts` there, and the top images from each (image, unit)'s maximum
    /// and its first position (two reductions, `[n, c]` each downloaded), with the maps of only
    /// those that make a unit's list gathered and downloaded.
    fn add_batch<B: Backend>(&mut self, be: &B, counts: &mut dyn IouCounts<B::T>, images: &[usize], maps: &B::T, labels: &[ImageLabels]) -> Result<()> {
        labels.iter().for_each(|l| self.add_labels(l));
        let views: Vec<MaskLabels> = labels.iter().map(|l| MaskLabels { hw: [l.sh, l.sw], planes: &l.planes, scalars: &l.scalars, annotated: &l.annotated }).collect();
        counts.add(maps, &views)?;
        let (max, arg) = (be.download(&be.reduce(maps, Reduce::Max, &[2, 3])?)?, be.download(&be.reduce(maps, Reduce::ArgMax, &[2, 3])?)?);
        let c = self.top.units.len();
        // a hit that enters gets its map after the batch: lists depend on the values alone
        for (j, &image) in images.iter().enumerate() {
            for u in 0..c {
                let value = max.data[j * c + u];
                if value.is_nan() {
                    return Err(Error::InvalidArgument(format!("layer `{}` unit {}: NaN on image {image}", self.layer, self.top.units[u])));
                }
                self.top.offer_max(u, image, value, arg.data[j * c + u] as usize, Vec::new);
            }
        }
        let missing: Vec<(usize, usize)> = self.top.hits.iter().enumerate().flat_map(|(u, hs)| hs.iter().enumerate().filter(|(_, h)| h.map.is_empty()).map(move |(i, _)| (u, i))).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let at = |image: usize| images.iter().position(|&i| i == image).expect("a hit without its map is of this batch");
        let planes: Vec<usize> = missing.iter().map(|&(u, i)| at(self.top.hits[u][i].image) * c + u).collect();
        let got = be.download(&be.gather_planes(maps, &planes)?)?;
        let hw = got.data.len() / planes.len();
        for (&(u, i), m) in missing.iter().zip(got.data.chunks(hw)) {
            let h = &mut self.top.hits[u][i];
            h.value = m[h.y * self.top.map_hw[1] + h.x] as f64; // the map's own bits (a zero's sign)
            h.map = m.iter().map(|&v| v as f64).collect();
        }
        Ok(())
    }

    /// Per unit, its IoU with every label (0 where the union is empty).
    pub fn iou(&self) -> Vec<Vec<f64>> {
        self.inter
            .iter()
            .zip(&self.unit_area)
            .map(|(inter, area)| {
                inter
                    .iter()
                    .enumerate()
                    .map(|(l, &i)| match &self.labels[l] {
                        Some((_, c)) => {
                            let union = area[*c] + self.label_area[l] - i;
                            if union == 0 {
                                0.0
                            } else {
                                i as f64 / union as f64
                            }
                        }
                        None => 0.0,
                    })
                    .collect()
            })
            .collect()
    }

    /// Per unit its best label and IoU (ties: the lowest label number; no label: `None`).
    pub fn best(&self) -> Vec<Option<(usize, f64)>> {
        self.iou().iter().map(|row| row.iter().enumerate().filter(|(l, _)| self.labels[*l].is_some()).fold(None, |b: Option<(usize, f64)>, (l, &v)| if b.is_none_or(|(_, bv)| v > bv) { Some((l, v)) } else { b })).collect()
    }
}

pub use super::load_stretched;

/// The layer's channels and map size at the model's input size.
fn layer_shape(model: &crate::model::Model, layer: &str) -> Result<(crate::model::Layer, usize, [usize; 2])> {
    let l = model.resolve(layer)?;
    let [ih, iw] = model.preprocess.size;
    let s = &model.infer_shapes(&[1, 3, ih, iw])?[l.node()];
    match s.len() {
        4 => Ok((l, s[1], [s[2], s[3]])),
        2 => Ok((l, s[1], [1, 1])),
        _ => Err(Error::shape(format!("layer `{layer}`"), "[n, c, h, w] or [n, c]", s)),
    }
}

/// A [`Pass`] over the stretched images (the maps must cover the label images), each loaded
/// with `extra` (its labels), handing each image's `[c, h, w]` maps to `each`. An unreadable
/// image is skipped; an error of `extra` (a label image) stops the pass. Returns the images
/// read and those skipped.
fn run_pass<B: Backend, T: Send + 'static>(
    eng: &Engine<B>,
    ds: &Dataset,
    pass: Pass,
    progress: &mut dyn FnMut(Progress),
    extra: impl Fn(usize) -> Result<T> + Send + Sync + 'static,
    mut each: impl FnMut(usize, &[f32], T) -> Result<()>,
) -> Result<(Vec<usize>, Vec<Skipped>)> {
    let mut images = vec![];
    let skipped = pass.run(eng, ds, progress, extra, |b, a| {
        for (j, (&i, x)) in b.indices.iter().zip(b.extras.drain(..)).enumerate() {
            each(i, a.item(j), x)?;
            images.push(i);
        }
        Ok(())
    })?;
    Ok((images, skipped))
}

impl Dissect {
    fn pass<'a>(&self, shard: Shard, layer: crate::model::Layer, what: &'a str) -> Pass<'a> {
        Pass { shard, layer, batch: self.batch_size, what, framing: Framing::Stretch }
    }

    fn check(&self) -> Result<()> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(Error::InvalidArgument(format!("--quantile {}: a fraction in (0, 1) expected", self.quantile)));
        }
        Ok(())
    }

    /// The first pass over the shard's images: the shard's threshold state.
    pub fn thresholds<B: Backend>(&self, eng: &Engine<B>, ds: &Dataset, shard: Shard, progress: &mut dyn FnMut(Progress)) -> Result<Partial> {
        self.check()?;
        Broden::open(&ds.root)?; // the second pass needs its labels: fail now, not after a pass
        let model = eng.model();
        let (layer, c, map_hw) = layer_shape(model, &self.layer)?;
        let name = model.name(layer).to_string();
        let hw = map_hw[0] * map_hw[1];
        let keep = ((self.quantile * (ds.len() * hw) as f64).ceil() as usize).max(1);
        let mut units: Vec<Largest> = (0..c).map(|_| Largest::new(keep)).collect();
        let mut seen = 0u64;
        let (images, skipped) = run_pass(eng, ds, self.pass(shard, layer, "dissect: thresholds"), progress, |_| Ok(()), |image, maps, ()| {
            if let Some(p) = maps.iter().position(|v| v.is_nan()) {
                return Err(Error::InvalidArgument(format!("layer `{name}` unit {}: NaN on image {image}", p / hw)));
            }
            units.par_iter_mut().enumerate().for_each(|(u, l)| l.offer(&maps[u * hw..(u + 1) * hw]));
            seen += hw as u64;
            Ok(())
        })?;
        let top = units
            .into_iter()
            .map(|mut l| {
                l.compact();
                Values(l.buf)
            })
            .collect();
        let t = QuantileTally { layer: name.clone(), quantile: self.quantile, map_hw, keep, seen, top };
        let params = json!({"layer": name, "quantile": self.quantile, "input_hw": model.preprocess.size});
        let mut p = Partial::new(model, ds, shard, params, Tally::DissectQuantile(t));
        p.images = images;
        p.skipped = skipped;
        Ok(p)
    }

    /// The second pass over the shard's images, with the thresholds of the first (merged):
    /// the shard's count state.
    pub fn counts<B: Backend>(&self, eng: &Engine<B>, ds: &Dataset, thresholds: &Thresholds, shard: Shard, progress: &mut dyn FnMut(Progress)) -> Result<Partial> {
        self.check()?;
        let model = eng.model();
        let (layer, c, map_hw) = layer_shape(model, &self.layer)?;
        let name = model.name(layer).to_string();
        thresholds.check(model, ds, &name, c)?;
        let broden = Arc::new(Broden::open(&ds.root)?);
        if broden.rows.len() != ds.len() {
            return Err(Error::InvalidArgument(format!("{}: the Broden index lists {} images, the dataset {}", ds.root.display(), broden.rows.len(), ds.len())));
        }
        let input_hw = model.preprocess.size;
        let ps: Vec<Vec<usize>> = model.params.iter().map(|t| t.shape.clone()).collect();
        let rf = receptive_fields(&model.graph, &ps, input_hw, layer.node())?[layer.node()];
        let top = TopTally { layer: name.clone(), k: self.top.max(1), units: (0..c).collect(), map_hw, input_hw, rf, hits: vec![vec![]; c] };
        let nl = broden.labels.len();
        let mut t = IouTally {
            layer: name.clone(),
            categories: broden.categories.clone(),
            labels: broden.labels.iter().map(|l| l.as_ref().map(|l| (l.name.clone(), l.category))).collect(),
            thresholds: thresholds.thresholds.clone(),
            label_area: vec![0; nl],
            unit_area: vec![vec![0; broden.categories.len()]; c],
            inter: vec![vec![0; nl]; c],
            label_hw: [0, 0],
            top,
        };
        let b = broden.clone();
        let pass = self.pass(shard, layer, "dissect: counts");
        let thresholds32: Vec<f32> = t.thresholds.iter().map(|&v| v as f32).collect();
        let (images, skipped) = match eng.be.iou_counts(&thresholds32, nl, broden.categories.len()) {
            // the CPU engine: the maps are on the host, count them there
            None => run_pass(eng, ds, pass, progress, move |i| b.image_labels(i), |image, maps, labels| t.add_image(image, maps, map_hw, &labels))?,
            // the GPU engine: count where the maps are, download the counts once
            Some(counts) => {
                let mut counts = counts?;
                let mut images = vec![];
                let skipped = pass.run_kept(eng, ds, progress, move |i| b.image_labels(i), |batch, maps| {
                    t.add_batch(&eng.be, counts.as_mut(), &batch.indices, maps, &batch.extras)?;
                    images.extend_from_slice(&batch.indices);
                    Ok(())
                })?;
                (t.inter, t.unit_area) = counts.counts()?;
                (images, skipped)
            }
        };
        let params = json!({"layer": name, "quantile": self.quantile, "top": self.top, "input_hw": input_hw, "thresholds": thresholds.thresholds});
        let mut p = Partial::new(model, ds, shard, params, Tally::Dissect(t));
        p.images = images;
        p.skipped = skipped;
        Ok(p)
    }
}

/// The merged first pass, as `dissect-thresholds.json` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// the file format's name
    pub format: String,
    /// the model's origin
    pub model: String,
    /// the model's architecture
    pub arch: String,
    /// the dataset folder or list file
    pub dataset: String,
    /// the dataset's fingerprint
    pub fingerprint: String,
    /// the layer's module path
    pub layer: String,
    /// the activation quantile
    pub quantile: f64,
    /// values read per unit, and the threshold's rank among them (1: the largest)
    pub values: u64,
    /// the threshold's rank among the values (1: the largest)
    pub rank: usize,
    /// images read
    pub images: usize,
    /// per unit, its threshold
    pub thresholds: Vec<f64>,
}

impl Thresholds {
    /// The thresholds of the merged first pass `q` of state `p`.
    pub fn of(p: &Partial, q: &QuantileTally) -> Thresholds {
        Thresholds {
            format: THRESHOLDS_FORMAT.into(),
            model: p.model.clone(),
            arch: p.arch.clone(),
            dataset: p.dataset.clone(),
            fingerprint: p.fingerprint.clone(),
            layer: q.layer.clone(),
            quantile: q.quantile,
            values: q.seen,
            rank: q.rank(),
            images: p.images.len(),
            thresholds: q.thresholds().iter().map(|&v| v as f64).collect(),
        }
    }

    /// The thresholds file at `path`, checked.
    pub fn read(path: &std::path::Path) -> Result<Thresholds> {
        crate::job::inputs::check_regular_file(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let t: Thresholds = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidArgument(format!("{}: not a {THRESHOLDS_FILE} (written by `deepviz merge` of dissect's first pass): {e}", path.display())))?;
        if t.format != THRESHOLDS_FORMAT {
            return Err(Error::InvalidArgument(format!("{}: not a {THRESHOLDS_FILE}", path.display())));
        }
        Ok(t)
    }

    /// These thresholds were made by this model, on this dataset, at this layer.
    fn check(&self, model: &crate::model::Model, ds: &Dataset, layer: &str, c: usize) -> Result<()> {
        let root = std::fs::canonicalize(&ds.root).unwrap_or_else(|_| ds.root.clone()).display().to_string();
        let differ = |what: &str, a: &str, b: &str| Err(Error::InvalidArgument(format!("--thresholds were made for {what} {a}, not {b}")));
        if self.model != model.origin || self.arch != model.graph.arch {
            return differ("the model", &self.model, &model.origin);
        }
        if self.dataset != root || self.fingerprint != ds.fingerprint() {
            return differ("the dataset", &format!("{} ({})", self.dataset, self.fingerprint), &format!("{root} ({})", ds.fingerprint()));
        }
        if self.layer != layer {
            return differ("layer", &self.layer, layer);
        }
        if self.thresholds.len() != c {
            return differ("units", &self.thresholds.len().to_string(), &c.to_string());
        }
        Ok(())
    }
}

/// Render the merged first pass: `dissect-thresholds.json` (what the second pass reads) and a
/// short `index.html`.
pub fn finish_quantile(p: &Partial, q: &QuantileTally, out: &mut OutputSet) -> Result<Value> {
    let t = Thresholds::of(p, q);
    let v = serde_json::to_value(&t).expect("JSON serialises");
    out.add(THRESHOLDS_FILE, &serde_json::to_vec_pretty(&v).expect("JSON serialises"))?;
    let intro = format!(
        "Network Dissection, first pass: layer <code>{}</code>, {} images, per unit the {}-th largest of {} activations (the top {}%). Give <code>{THRESHOLDS_FILE}</code> to <code>deepviz dissect --thresholds</code> for the second pass.",
        report::escape(&q.layer), p.images.len(), t.rank, t.values, q.quantile * 100.0
    );
    out.add("index.html", report::page("dissect thresholds", &intro, &[], &[THRESHOLDS_FILE]).as_bytes())?;
    Ok(v)
}

/// Colours of the categories in the histogram (cycled).
const CATEGORY_COLOURS: &[[u8; 3]] = &[[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75], [227, 119, 194], [127, 127, 127]];

/// A bar chart: one bar per category, its height the count, on white, with a base line.
fn histogram(counts: &[usize]) -> RgbImage {
    let (bar, gap, h) = (40u32, 16u32, 160u32);
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let w = gap + counts.len() as u32 * (bar + gap);
    let mut img = RgbImage::from_pixel(w, h + 2 * gap, Rgb([255, 255, 255]));
    for (i, &c) in counts.iter().enumerate() {
        let bh = (c as f64 / max * h as f64).round() as u32;
        let x0 = gap + i as u32 * (bar + gap);
        for y in (gap + h - bh)..(gap + h) {
            for x in x0..x0 + bar {
                img.put_pixel(x, y, Rgb(CATEGORY_COLOURS[i % CATEGORY_COLOURS.len()]));
            }
        }
    }
    for x in 0..w {
        img.put_pixel(x, gap + h, Rgb([0, 0, 0]));
    }
    img
}

/// One top image with the unit's mask: outside it dimmed to a third, its edge drawn.
fn masked_tile(picture: &RgbImage, map: &[f32], map_hw: [usize; 2], t: f32) -> RgbImage {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let up = upsample_bilinear(map, map_hw[0], map_hw[1], h, w);
    let on = |x: usize, y: usize| up[y * w + x] > t;
    let mut img = picture.clone();
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel_mut(x as u32, y as u32);
            if !on(x, y) {
                p.0 = p.0.map(|c| c / 3);
            } else if (x == 0 || !on(x - 1, y)) || (x + 1 == w || !on(x + 1, y)) || (y == 0 || !on(x, y - 1)) || (y + 1 == h || !on(x, y + 1)) {
                p.0 = [255, 255, 0];
            }
        }
    }
    imageops::resize(&img, TILE, TILE, imageops::FilterType::Triangle)
}

/// Render the merged second pass: `dissect.json`, `dissect.csv`, `detectors.png`, one strip of
/// top images per unit, `index.html`.
pub fn finish(p: &Partial, t: &IouTally, ds: &Dataset, out: &mut OutputSet) -> Result<Value> {
    let best = t.best();
    let name = |l: usize| t.labels[l].as_ref().map_or("", |x| x.0.as_str()).to_string();
    let cat_of = |l: usize| t.labels[l].as_ref().map_or(0, |x| x.1);
    // detectors: units whose best IoU exceeds the bar; unique detectors: distinct concepts
    let mut unique: Vec<Vec<usize>> = vec![vec![]; t.categories.len()];
    let mut units_per_cat = vec![0usize; t.categories.len()];
    for &(l, iou) in best.iter().flatten() {
        if iou > IOU_DETECTOR {
            units_per_cat[cat_of(l)] += 1;
            if !unique[cat_of(l)].contains(&l) {
                unique[cat_of(l)].push(l);
            }
        }
    }
    let unique_counts: Vec<usize> = unique.iter().map(Vec::len).collect();
    let n_unique: usize = unique_counts.iter().sum();
    out.add("detectors.png", &png_bytes(&histogram(&unique_counts))?)?;

    // top images per unit, the mask of its threshold drawn
    let pre = Preprocess { size: t.top.input_hw, ..Preprocess::imagenet(t.top.input_hw) };
    let mut want: Vec<usize> = t.top.hits.iter().flatten().map(|h| h.image).collect();
    want.sort_unstable();
    want.dedup();
    let pictures: std::collections::HashMap<usize, RgbImage> = want.par_iter().map(|&i| Ok((i, load_stretched(&ds.files[i], &pre)?))).collect::<Result<_>>()?;
    let strips: Vec<Option<Vec<u8>>> = t
        .top
        .hits
        .par_iter()
        .enumerate()
        .map(|(u, hits)| {
            let tiles: Vec<RgbImage> = hits.iter().map(|h| masked_tile(&pictures[&h.image], &h.map.iter().map(|&v| v as f32).collect::<Vec<_>>(), t.top.map_hw, t.thresholds[u] as f32)).collect();
            if tiles.is_empty() {
                Ok(None)
            } else {
                png_bytes(&grid(&tiles, tiles.len(), 3)).map(Some)
            }
        })
        .collect::<Result<_>>()?;

    let mut rows = vec![];
    let mut csv = String::from("unit,label,category,iou,threshold\n");
    for (u, b) in best.iter().enumerate() {
        let (label, category, iou) = match b {
            Some((l, iou)) => (name(*l), t.categories[cat_of(*l)].clone(), *iou),
            None => (String::new(), String::new(), 0.0),
        };
        csv += &format!("{u},{},{},{iou:.6},{}\n", csv_field(&label), csv_field(&category), t.thresholds[u]);
        let top: Vec<Value> = t.top.hits[u].iter().map(|h| json!({"image": ds.names[h.image], "index": h.image, "value": h.value})).collect();
        rows.push(json!({"unit": u, "label": label, "category": category, "iou": iou, "detector": iou > IOU_DETECTOR, "threshold": t.thresholds[u], "file": strips[u].as_ref().map(|_| format!("dissect_unit_{u:04}.png")), "top": top}));
    }
    for (u, s) in strips.iter().enumerate() {
        if let Some(png) = s {
            out.add(&format!("dissect_unit_{u:04}.png"), png)?;
        }
    }
    out.add("dissect.csv", csv.as_bytes())?;
    let detectors = units_per_cat.iter().sum::<usize>();
    let summary = json!({
        "command": "dissect",
        "layer": t.layer,
        "dataset": p.dataset,
        "images": p.images.len(),
        "skipped": p.skipped.iter().map(|s| json!({"image": ds.names.get(s.image), "error": s.error})).collect::<Vec<_>>(),
        "shards": p.shards.len(),
        "quantile": p.params["quantile"],
        "iou_detector": IOU_DETECTOR,
        "detectors": detectors,
        "unique_detectors": n_unique,
        "categories": t.categories.iter().enumerate().map(|(i, c)| json!({"category": c, "unique_detectors": unique_counts[i], "units": units_per_cat[i], "labels": unique[i].iter().map(|&l| name(l)).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "units": rows,
    });
    out.add("dissect.json", &serde_json::to_vec_pretty(&summary).expect("JSON serialises"))?;

    // the report: the histogram, a table of units by IoU, each unit's top images
    let legend = t.categories.iter().enumerate().map(|(i, c)| format!("{} {} ({})", colour_word(i), report::escape(c), unique_counts[i])).collect::<Vec<_>>().join(", ");
    let intro = format!(
        "Network Dissection (Bau et al. 2017) of layer <code>{}</code> over {} images of {} ({} skipped): {} of {} units are detectors (IoU &gt; {IOU_DETECTOR}), {} unique concepts. Each unit's mask: its map upsampled to the labels and thresholded at its top {}% quantile.",
        report::escape(&t.layer), p.images.len(), report::escape(&p.dataset), p.skipped.len(), detectors, best.len(), n_unique, p.params["quantile"].as_f64().unwrap_or(QUANTILE) * 100.0
    );
    let mut order: Vec<usize> = (0..best.len()).collect();
    order.sort_by(|&a, &b| rows[b]["iou"].as_f64().unwrap_or(0.0).total_cmp(&rows[a]["iou"].as_f64().unwrap_or(0.0)).then(a.cmp(&b)));
    let mut table = String::from("<h2>Units by IoU</h2>\n<table>\n<tr><th>unit</th><th>concept</th><th>category</th><th>IoU</th><th>top images (the mask outlined)</th></tr>\n");
    for &u in &order {
        let r = &rows[u];
        let img = r["file"].as_str().map_or(String::new(), |f| format!("<img src=\"{0}\" alt=\"unit {u}\">", report::escape(f)));
        table += &format!("<tr><td>{u}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{img}</td></tr>\n", report::escape(r["label"].as_str().unwrap_or("")), report::escape(r["category"].as_str().unwrap_or("")), r["iou"].as_f64().unwrap_or(0.0));
    }
    table += "</table>\n";
    let fig = Figure { file: "detectors.png".into(), caption: format!("unique detectors per category, left to right: {legend}") };
    out.add("index.html", report::page_with("dissect", &intro, &[fig], &table, &["dissect.json", "dissect.csv"]).as_bytes())?;
    Ok(summary)
}

fn colour_word(i: usize) -> &'static str {
    ["blue", "orange", "green", "red", "purple", "brown", "pink", "grey"][i % CATEGORY_COLOURS.len()]
}

/// A CSV field, quoted when it must be.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Two dissections side by side (two models, or two layers): from their `dissect.json`, a
/// table of detectors and unique detectors per category, a paired histogram
/// (`compare.png`: per category A's bar, then B's), each side's units ranked by IoU, and
/// `compare.json`, `index.html` in `out`.
pub fn compare(a: &Value, b: &Value, names: [&str; 2], out: &mut OutputSet) -> Result<Value> {
    for (v, n) in [(a, names[0]), (b, names[1])] {
        if v["command"] != "dissect" || !v["units"].is_array() || !v["categories"].is_array() {
            return Err(Error::InvalidArgument(format!("{n}: not a dissect.json (written by `deepviz dissect` or `deepviz merge`)")));
        }
    }
    // the union of both sides' categories, in A's order then B's new ones
    let mut cats: Vec<String> = vec![];
    for v in [a, b] {
        for c in v["categories"].as_array().into_iter().flatten() {
            let c = c["category"].as_str().unwrap_or("").to_string();
            if !cats.contains(&c) {
                cats.push(c);
            }
        }
    }
    let count = |v: &Value, c: &str, key: &str| v["categories"].as_array().into_iter().flatten().find(|x| x["category"] == c).and_then(|x| x[key].as_u64()).unwrap_or(0) as usize;
    let mut bars = vec![];
    let mut rows = String::from("<h2>Detectors per category</h2>\n<table>\n<tr><th>category</th><th>A: unique</th><th>A: units</th><th>B: unique</th><th>B: units</th></tr>\n");
    let mut per_cat = vec![];
    for c in &cats {
        let (ua, ub) = (count(a, c, "unique_detectors"), count(b, c, "unique_detectors"));
        bars.extend([ua, ub]);
        rows += &format!("<tr><td>{}</td><td>{ua}</td><td>{}</td><td>{ub}</td><td>{}</td></tr>\n", report::escape(c), count(a, c, "units"), count(b, c, "units"));
        per_cat.push(json!({"category": c, "a": {"unique_detectors": ua, "units": count(a, c, "units")}, "b": {"unique_detectors": ub, "units": count(b, c, "units")}}));
    }
    rows += "</table>\n";
    // paired bars: A in the category's colour, B in a lighter shade of it
    let mut img = histogram(&bars);
    let (bar, gap) = (40u32, 16u32);
    for (i, _) in bars.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let x0 = gap + i as u32 * (bar + gap);
        for y in 0..img.height() {
            for x in x0..x0 + bar {
                let p = img.get_pixel_mut(x, y);
                if p.0 != [255, 255, 255] && p.0 != [0, 0, 0] {
                    *p = Rgb(CATEGORY_COLOURS[(i / 2) % CATEGORY_COLOURS.len()].map(|c| c / 2 + 128));
                }
            }
        }
    }
    // recolour A's bars by category (histogram colours by bar index)
    for (i, _) in bars.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let x0 = gap + i as u32 * (bar + gap);
        for y in 0..img.height() {
            for x in x0..x0 + bar {
                let p = img.get_pixel_mut(x, y);
                if p.0 != [255, 255, 255] && p.0 != [0, 0, 0] {
                    *p = Rgb(CATEGORY_COLOURS[(i / 2) % CATEGORY_COLOURS.len()]);
                }
            }
        }
    }
    out.add("compare.png", &png_bytes(&img)?)?;
    let ranked = |v: &Value| -> String {
        let mut us: Vec<&Value> = v["units"].as_array().into_iter().flatten().collect();
        us.sort_by(|x, y| y["iou"].as_f64().unwrap_or(0.0).total_cmp(&x["iou"].as_f64().unwrap_or(0.0)));
        let mut s = String::from("<table>\n<tr><th>unit</th><th>concept</th><th>category</th><th>IoU</th></tr>\n");
        for u in us.iter().take(50) {
            s += &format!("<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td></tr>\n", u["unit"], report::escape(u["label"].as_str().unwrap_or("")), report::escape(u["category"].as_str().unwrap_or("")), u["iou"].as_f64().unwrap_or(0.0));
        }
        s + "</table>\n"
    };
    let side = |v: &Value, n: &str| json!({"file": n, "layer": v["layer"], "dataset": v["dataset"], "images": v["images"], "units": v["units"].as_array().map_or(0, Vec::len), "detectors": v["detectors"], "unique_detectors": v["unique_detectors"]});
    let summary = json!({"command": "dissect-compare", "a": side(a, names[0]), "b": side(b, names[1]), "categories": per_cat});
    out.add("compare.json", &serde_json::to_vec_pretty(&summary).expect("JSON serialises"))?;
    let describe = |v: &Value, n: &str| format!("<code>{}</code> (layer <code>{}</code>, {} units, {} detectors, {} unique)", report::escape(n), report::escape(v["layer"].as_str().unwrap_or("?")), v["units"].as_array().map_or(0, Vec::len), v["detectors"], v["unique_detectors"]);
    let intro = format!("Two Network Dissections side by side: A = {}, B = {}.", describe(a, names[0]), describe(b, names[1]));
    let legend = cats.iter().enumerate().map(|(i, c)| format!("{} {}", colour_word(i), report::escape(c))).collect::<Vec<_>>().join(", ");
    let body = format!("{rows}<div style=\"display:flex;gap:2em\"><div><h2>A: units by IoU</h2>\n{}</div><div><h2>B: units by IoU</h2>\n{}</div></div>\n", ranked(a), ranked(b));
    let fig = Figure { file: "compare.png".into(), caption: format!("unique detectors per category, A (dark) then B (light): {legend}") };
    out.add("index.html", report::page_with("dissect: compare", &intro, &[fig], &body, &["compare.json"]).as_bytes())?;
    Ok(summary)
}
