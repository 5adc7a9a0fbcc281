//! `neighbors`: for query images, the k nearest images of a dataset by a layer's feature vector
//! (global-average-pooled when the layer is spatial; cosine or L2), beside the k nearest by raw
//! pixels — the comparison of Krizhevsky et al. 2012 (fig. 4) and of CS231n's lecture on
//! visualising networks. Exact: every distance is computed (in f64, on the host) and ties go
//! to the lower image index.
//!
//! Pixels are the centre crop the network sees, shrunk to [`THUMB`]×[`THUMB`] (bilinear), in
//! [0, 1], compared by L2 whatever the feature metric. The tally holds every image's vectors, so
//! it grows with the dataset (about 90 KB an image for EfficientNet-Lite0's last layer).

use image::{imageops, RgbImage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::report::{self, Figure};
use super::top::{crops, grid, TILE};
use super::{load_crop, pass, Dataset, Partial, Shard, Tally};
use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::{self, Preprocess};
use crate::job::{png_bytes, Progress};
use crate::output::OutputSet;
use crate::tensor::Tensor;

/// Side of the pixel thumbnails compared by the raw-pixel search.
pub const THUMB: u32 = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
/// How two feature vectors are compared.
pub enum Metric {
    /// 1 − cos(a, b)
    Cosine,
    /// ‖a − b‖
    L2,
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Metric> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "l2" => Ok(Metric::L2),
            _ => Err(Error::InvalidArgument(format!("--metric {s:?}: cosine or l2"))),
        }
    }
}

impl Metric {
    /// The distance between `a` and `b` under this metric.
    pub fn distance(self, a: &[f64], b: &[f64]) -> f64 {
        match self {
            Metric::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt(),
            Metric::Cosine => {
                let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
                for (x, y) in a.iter().zip(b) {
                    ab += x * y;
                    aa += x * x;
                    bb += y * y;
                }
                if aa == 0.0 || bb == 0.0 {
                    1.0
                } else {
                    1.0 - ab / (aa.sqrt() * bb.sqrt())
                }
            }
        }
    }
}

/// The job.
#[derive(Clone, Debug)]
pub struct Neighbors {
    /// the layer whose global-average-pooled features are compared
    pub layer: String,
    /// neighbours per query
    pub k: usize,
    /// how features are compared
    pub metric: Metric,
    /// the query images
    pub queries: Vec<std::path::PathBuf>,
    /// images per forward pass
    pub batch_size: usize,
}

/// One image's vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// the image's index in the dataset
    pub image: usize,
    /// its feature vector
    pub feature: Vec<f64>,
    /// its thumbnail's pixels in [0, 1] (the pixel-space baseline)
    pub pixels: Vec<f64>,
}

/// A query's vectors (its path, absolute).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// the query's path
    pub path: String,
    /// its feature vector
    pub feature: Vec<f64>,
    /// its thumbnail's pixels in [0, 1]
    pub pixels: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// The state of a neighbours pass: the queries' vectors and every image's read so far.
pub struct NeighborTally {
    /// as [`Neighbors::layer`]
    pub layer: String,
    /// as [`Neighbors::k`]
    pub k: usize,
    /// as [`Neighbors::metric`]
    pub metric: Metric,
    /// the network input's size (height, width)
    pub input_hw: [usize; 2],
    /// the queries' vectors
    pub queries: Vec<Query>,
    /// every image read, in image order after a merge
    pub rows: Vec<Row>,
}

impl NeighborTally {
    /// Both shards' rows, in image order.
    pub fn merge(mut self, other: NeighborTally) -> NeighborTally {
        self.rows.extend(other.rows);
        self.rows.sort_by_key(|r| r.image);
        self
    }

    /// The k nearest rows to `q` by `dist`: (image, distance), nearest first, ties by image.
    pub fn nearest(&self, dist: impl Fn(&Row) -> f64) -> Vec<(usize, f64)> {
        let mut d: Vec<(usize, f64)> = self.rows.iter().map(|r| (r.image, dist(r))).collect();
        d.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        d.truncate(self.k);
        d
    }
}

/// The global-average-pooled feature of item `j` of `a` (`[n, c, h, w]`), in f64.
fn pooled(a: &Tensor, j: usize) -> Vec<f64> {
    let hw = a.shape[2] * a.shape[3];
    a.item(j).chunks(hw).map(|ch| ch.iter().map(|&v| v as f64).sum::<f64>() / hw as f64).collect()
}

/// The raw-pixel vector of a crop.
pub fn pixel_vector(picture: &RgbImage) -> Vec<f64> {
    imageops::resize(picture, THUMB, THUMB, imageops::FilterType::Triangle).into_raw().into_iter().map(|v| v as f64 / 255.0).collect()
}

impl Neighbors {
    /// Read `shard` of `ds` and the queries: the shard's state.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, ds: &Dataset, shard: Shard, progress: &mut dyn FnMut(Progress)) -> Result<Partial> {
        if self.k == 0 || self.queries.is_empty() {
            return Err(Error::InvalidArgument("neighbors needs --k >= 1 and at least one query image".into()));
        }
        let model = eng.model();
        let layer = model.resolve(&self.layer)?;
        let pre = model.preprocess;
        let check_finite = |v: &[f64], what: &str| match v.iter().position(|x| !x.is_finite()) {
            Some(i) => Err(Error::InvalidArgument(format!("layer `{}`: feature {i} of {what} is not finite", self.layer))),
            None => Ok(()),
        };
        // the queries (every shard computes them; a merge keeps the first shard's)
        let mut queries = vec![];
        for q in &self.queries {
            let pic = load_crop(q, &pre)?;
            let x = imageio::to_tensor(std::slice::from_ref(&pic), &pre);
            let a = super::layer_maps(eng, &x, layer)?;
            let feature = pooled(&a, 0);
            check_finite(&feature, &q.display().to_string())?;
            let path = std::fs::canonicalize(q).map_err(|e| Error::io(q, e))?;
            queries.push(Query { path: path.display().to_string(), feature, pixels: pixel_vector(&pic) });
        }
        let mut rows = vec![];
        let skipped = pass(eng, ds, shard, layer, self.batch_size, progress, "neighbors", |b, a| {
            for (j, &image) in b.indices.iter().enumerate() {
                let feature = pooled(a, j);
                check_finite(&feature, &ds.names[image])?;
                rows.push(Row { image, feature, pixels: pixel_vector(&b.pictures[j]) });
            }
            Ok(())
        })?;
        let name = model.name(layer).to_string();
        let params = json!({"layer": name, "k": self.k, "metric": self.metric, "queries": queries.iter().map(|q| &q.path).collect::<Vec<_>>()});
        let images = rows.iter().map(|r| r.image).collect();
        let t = NeighborTally { layer: name, k: self.k, metric: self.metric, input_hw: pre.size, queries, rows };
        let mut p = Partial::new(model, ds, shard, params, Tally::Neighbors(t));
        p.images = images;
        p.skipped = skipped;
        Ok(p)
    }
}

/// Render a (merged) neighbours state: `neighbors.png` (per query two rows: the query and its
/// nearest by features; the query and its nearest by pixels), `neighbors.json`, `index.html`.
pub fn finish(p: &Partial, t: &NeighborTally, ds: &Dataset, out: &mut OutputSet) -> Result<Value> {
    let pre = Preprocess { size: t.input_hw, ..Preprocess::imagenet(t.input_hw) };
    let mut results = vec![];
    let mut all = vec![];
    for q in &t.queries {
        let by_feature = t.nearest(|r| t.metric.distance(&q.feature, &r.feature));
        let by_pixels = t.nearest(|r| Metric::L2.distance(&q.pixels, &r.pixels));
        all.extend(by_feature.iter().chain(&by_pixels).map(|x| x.0));
        results.push((q, by_feature, by_pixels));
    }
    let pictures = crops(ds, all, &pre)?;
    let tile = |img: &RgbImage| imageops::resize(img, TILE, TILE, imageops::FilterType::Triangle);
    let blank = RgbImage::from_pixel(TILE, TILE, image::Rgb([255, 255, 255]));
    let mut tiles = vec![];
    let mut json_queries = vec![];
    for (q, by_feature, by_pixels) in &results {
        let qp = tile(&load_crop(std::path::Path::new(&q.path), &pre)?);
        for list in [by_feature, by_pixels] {
            tiles.push(qp.clone());
            tiles.extend(list.iter().map(|(i, _)| tile(&pictures[i])));
            tiles.extend((list.len()..t.k).map(|_| blank.clone()));
        }
        let rows = |l: &Vec<(usize, f64)>| l.iter().map(|&(i, d)| json!({"image": ds.names[i], "index": i, "distance": d})).collect::<Vec<_>>();
        json_queries.push(json!({"query": q.path, "features": rows(by_feature), "pixels": rows(by_pixels)}));
    }
    out.add("neighbors.png", &png_bytes(&grid(&tiles, t.k + 1, 4))?)?;
    let summary = json!({
        "command": "neighbors",
        "layer": t.layer,
        "k": t.k,
        "metric": t.metric,
        "pixels": format!("{THUMB}x{THUMB} thumbnails of the crop, L2"),
        "dataset": p.dataset,
        "images": p.images.len(),
        "skipped": p.skipped.iter().map(|s| json!({"image": ds.names.get(s.image), "error": s.error})).collect::<Vec<_>>(),
        "queries": json_queries,
    });
    out.add("neighbors.json", &serde_json::to_vec_pretty(&summary).expect("JSON serialises"))?;
    let intro = format!(
        "For each query (first column), two rows: its {} nearest of {} images by the {} distance between layer <code>{}</code>'s global-average-pooled features, then by L2 distance between {THUMB}x{THUMB} pixel thumbnails.",
        t.k,
        p.images.len(),
        serde_json::to_value(t.metric).expect("serialises").as_str().unwrap_or("?"),
        report::escape(&t.layer)
    );
    let figures = [Figure { file: "neighbors.png".into(), caption: "query | nearest by features; query | nearest by pixels".into() }];
    out.add("index.html", report::page("neighbors", &intro, &figures, &["neighbors.json"]).as_bytes())?;
    Ok(summary)
}
