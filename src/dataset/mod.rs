//! Looking at units over whole datasets: one streaming pass over a folder (or a list) of images,
//! sharded over many machines and merged exactly.
//!
//! - this file: [`Dataset`] (the images, found deterministically), [`Shard`] (`i/N`: a
//!   deterministic subset), [`Pass`] over a [`stream`] (batches decoded on background threads,
//!   bounded memory, unreadable images skipped and counted).
//! - `rf.rs`: receptive fields from the graph ([`rf::receptive_fields`]).
//! - `state.rs`: partial states ([`Partial`]): what a shard writes, how shards merge.
//! - `top.rs`: `top-patches`, the top-k images per unit cropped to its receptive field.
//! - `neighbors.rs`: `neighbors`, exact nearest neighbours by features and by pixels.
//! - `filters.rs`: `filters`, a convolution's weights as pictures.
//! - `report.rs`: the static HTML report written beside each command's files.
//! - `synth.rs`: a generated dataset with planted colours and shapes (tests, demos), also in
//!   the Broden layout.
//! - `broden.rs`: the Broden layout (index.csv, label images, label and category tables).
//! - `dissect.rs`: `dissect`, Network Dissection: per-unit thresholds, then IoU with concepts.
//! - `tsne.rs`: `tsne`, a t-SNE of pooled features and its "cnn embed" mosaic; exact gradients
//!   up to a few thousand images, `bhtsne.rs`: Barnes–Hut's (sparse `P`, a quadtree) beyond.
//!
//! A dataset command runs as: [`stream`] the shard's images through the engine into a
//! [`Partial`] (a single pass is shard `0/1`), then [`Partial::merge`] the shards, then
//! [`finish`] renders the merged state into an [`OutputSet`].

mod bhtsne;
pub mod broden;
pub mod dissect;
pub mod filters;
pub mod neighbors;
pub mod report;
pub mod rf;
mod state;
pub mod synth;
pub mod top;
pub mod tsne;

pub use state::{Partial, Tally};

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio::{self, Preprocess};
use crate::job::Progress;
use crate::output::OutputSet;
use crate::tensor::Tensor;

/// The image extensions a dataset folder is searched for (no `.npy`: a dataset is pictures).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"];

/// Batches decoded ahead of the engine: memory holds at most this many plus the one in use.
pub const PREFETCH_BATCHES: usize = 2;

/// The images of a dataset, in a fixed order: index `i` names the same image on every machine
/// that sees the same files.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// the folder, or the list file, as given
    pub root: PathBuf,
    /// each image's path (to open)
    pub files: Vec<PathBuf>,
    /// each image's name: its path relative to the folder (or as the list gives it), `/`-separated
    pub names: Vec<String>,
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl Dataset {
    /// A folder (searched recursively; hidden files and folders skipped, symlinked folders not
    /// followed; sorted by relative path, byte order), a Broden folder (`index.csv` and
    /// `images/`: the images `index.csv` lists with some annotation, in its order; see
    /// [`broden`]) or a list file (one image path a line, relative to the list's folder; blank
    /// lines and `#` comments ignored; the list's order).
    pub fn open(path: &Path) -> Result<Dataset> {
        let m = std::fs::metadata(path).map_err(|e| Error::InvalidArgument(format!("dataset {}: {e}", path.display())))?;
        let (files, names) = if m.is_dir() && broden::Broden::is_broden(path) {
            let b = broden::Broden::open(path)?;
            let names: Vec<String> = b.rows.iter().map(|r| r.image.clone()).collect();
            (names.iter().map(|n| b.file(n)).collect(), names)
        } else if m.is_dir() {
            let mut found = vec![];
            walk(path, path, &mut found)?;
            found.sort();
            let files = found.iter().map(|n: &String| path.join(n)).collect();
            (files, found)
        } else if m.is_file() {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let base = path.parent().unwrap_or(Path::new(""));
            let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
            (names.iter().map(|n| base.join(n)).collect(), names)
        } else {
            return Err(Error::InvalidArgument(format!("{}: a dataset is a folder of images or a list file, not this", path.display())));
        };
        if names.is_empty() {
            return Err(Error::InvalidArgument(format!("{}: no images in this dataset ({})", path.display(), IMAGE_EXTENSIONS.join(", "))));
        }
        Ok(Dataset { root: path.to_path_buf(), files, names })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No images (never true of a dataset [`Dataset::open`] made).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// A fingerprint of the listing (FNV-1a over the names): shards of one job must agree on it.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for n in &self.names {
            for b in n.bytes().chain([0u8]) {
                h = (h ^ b as u64).wrapping_mul(0x100000001b3);
            }
        }
        format!("{h:016x}-{}", self.names.len())
    }
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = e.file_type().map_err(|err| Error::io(&p, err))?;
        if ft.is_dir() {
            walk(root, &p, found)?;
        } else if is_image(&p) && std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            // only regular files (a FIFO named x.png is skipped, not opened)
            let rel = p.strip_prefix(root).unwrap_or(&p);
            found.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    Ok(())
}

/// Shard `index` of `count`: the images whose index is `index` modulo `count` (round robin, so
/// shards are balanced whatever the folder's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// this shard's number, `0..count`
    pub index: usize,
    /// the number of shards
    pub count: usize,
}

impl Shard {
    /// The whole dataset.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The dataset indices of this shard.
    pub fn select(&self, n: usize) -> Vec<usize> {
        (self.index..n).step_by(self.count).collect()
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;
    /// `i/N` with 0 <= i < N.
    fn from_str(s: &str) -> Result<Shard> {
        let bad = |why: &str| Error::InvalidArgument(format!("--shard {s:?}: {why} (expected i/N with 0 <= i < N, e.g. 0/8)"));
        let (i, n) = s.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let (index, count): (usize, usize) = (i.trim().parse().map_err(|_| bad("i is not a number"))?, n.trim().parse().map_err(|_| bad("N is not a number"))?);
        if count == 0 || index >= count {
            return Err(bad("out of range"));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// An image that could not be read, and why; a dataset pass skips it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// the image's index in the dataset
    pub image: usize,
    /// why it was skipped
    pub error: String,
}

/// A batch of a dataset: the images' dataset indices, their preprocessed crops (what the
/// network sees), their tensor `[n, 3, h, w]`, and what the pass's `extra` made of each image
/// (its labels, for Network Dissection; `()` elsewhere).
pub struct DsBatch<T = ()> {
    /// each image's index in the dataset
    pub indices: Vec<usize>,
    /// the pictures the network sees (the preprocessed crops)
    pub pictures: Vec<RgbImage>,
    /// their tensor `[n, 3, h, w]`
    pub x: Tensor,
    /// images of this stretch of the dataset that could not be read
    pub skipped: Vec<Skipped>,
    /// what `extra` made of each image of `indices`, in the same order
    pub extras: Vec<T>,
}

/// Decode and preprocess one image into the crop the network sees.
pub fn load_crop(path: &Path, pre: &Preprocess) -> Result<RgbImage> {
    Ok(imageio::resize_crop(&imageio::load_rgb(path)?, pre.size))
}

/// An image resized whole to the network input (stretched when its aspect differs), so that the
/// layer's maps cover its label images.
pub fn load_stretched(path: &Path, pre: &Preprocess) -> Result<RgbImage> {
    let img = imageio::load_rgb(path)?;
    let [h, w] = pre.size;
    if (img.height() as usize, img.width() as usize) == (h, w) {
        return Ok(img);
    }
    Ok(image::imageops::resize(&img, w as u32, h as u32, image::imageops::FilterType::Triangle))
}

/// How a pass turns each image into the network's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// the model's preprocessing: resized, centre-cropped ([`load_crop`]); top patches,
    /// neighbours, t-SNE
    Crop,
    /// resized whole, stretched where the aspect differs ([`load_stretched`]): Network
    /// Dissection, whose label images cover the whole picture
    Stretch,
}

impl Framing {
    /// The picture the network sees of the image at `path`.
    pub fn load(self, path: &Path, pre: &Preprocess) -> Result<RgbImage> {
        match self {
            Framing::Crop => load_crop(path, pre),
            Framing::Stretch => load_stretched(path, pre),
        }
    }
}

/// The images `indices` of `ds` in batches of `batch` (the last may be smaller), framed by
/// `framing` and decoded in parallel on a background thread up to [`PREFETCH_BATCHES`] ahead,
/// with what `extra` makes of each readable one. An image that cannot be read is skipped and
/// reported in its batch's `skipped` (a batch may then be empty); an error of `extra` (a label
/// image) is the stream's last item.
pub fn stream<T: Send + 'static>(
    ds: &Dataset,
    indices: Vec<usize>,
    pre: Preprocess,
    batch: usize,
    framing: Framing,
    extra: impl Fn(usize) -> Result<T> + Send + Sync + 'static,
) -> Receiver<Result<DsBatch<T>>> {
    let files = ds.files.clone();
    let (tx, rx) = sync_channel(PREFETCH_BATCHES);
    let items = stream_with(indices, batch, move |i| framing.load(&files[i], &pre).map(|p| (p, extra(i))));
    std::thread::spawn(move || {
        for decoded in items {
            let mut b = DsBatch { indices: vec![], pictures: vec![], x: Tensor::zeros(&[0]), skipped: vec![], extras: vec![] };
            for (i, r) in decoded {
                match r {
                    Ok((p, Ok(e))) => {
                        b.indices.push(i);
                        b.pictures.push(p);
                        b.extras.push(e);
                    }
                    Ok((_, Err(e))) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    Err(e) => b.skipped.push(Skipped { image: i, error: e.to_string() }),
                }
            }
            b.x = imageio::to_tensor(&b.pictures, &pre);
            if tx.send(Ok(b)).is_err() {
                return; // the consumer stopped (an error): stop decoding
            }
        }
    });
    rx
}

/// Whatever `load` makes of each index of `indices`, in batches of `batch`, made in parallel on
/// a background thread up to [`PREFETCH_BATCHES`] ahead ([`stream`] is this with pictures).
pub fn stream_with<T: Send + 'static>(indices: Vec<usize>, batch: usize, load: impl Fn(usize) -> T + Send + Sync + 'static) -> Receiver<Vec<(usize, T)>> {
    let (tx, rx) = sync_channel(PREFETCH_BATCHES);
    std::thread::spawn(move || {
        for chunk in indices.chunks(batch.max(1)) {
            let made: Vec<(usize, T)> = chunk.par_iter().map(|&i| (i, load(i))).collect();
            if tx.send(made).is_err() {
                return; // the consumer stopped (an error): stop
            }
        }
    });
    rx
}

/// One pass of the model over a shard's images up to a layer: what every dataset command
/// (top patches, neighbours, t-SNE, both passes of Network Dissection) runs.
#[derive(Clone, Copy, Debug)]
pub struct Pass<'a> {
    /// the images
    pub shard: Shard,
    /// where the network stops
    pub layer: crate::model::Layer,
    /// images per forward pass
    pub batch: usize,
    /// what the progress bar calls it
    pub what: &'a str,
    /// how each image becomes the network's input
    pub framing: Framing,
}

impl Pass<'_> {
    /// Run it, handing each batch (with what `extra` made of each of its images) and its
    /// activations (`[n, c, h, w]`; a `[n, c]` layer as `[n, c, 1, 1]`) to `each`. Returns the
    /// skipped images. Progress counts images (read or skipped).
    pub fn run<B: Backend, T: Send + 'static>(
        &self,
        eng: &Engine<B>,
        ds: &Dataset,
        progress: &mut dyn FnMut(Progress),
        extra: impl Fn(usize) -> Result<T> + Send + Sync + 'static,
        mut each: impl FnMut(&mut DsBatch<T>, &Tensor) -> Result<()>,
    ) -> Result<Vec<Skipped>> {
        self.run_with(eng, ds, progress, extra, |x| layer_maps(eng, x, self.layer), |b, a| each(b, &a))
    }

    /// [`Pass::run`] with the activations left where the engine made them (`[n, c, h, w]`; a
    /// `[n, c]` layer as `[n, c, 1, 1]`): for a tally that runs on the backend and downloads
    /// only its results (Network Dissection's counts on the GPU engine).
    pub fn run_kept<B: Backend, T: Send + 'static>(
        &self,
        eng: &Engine<B>,
        ds: &Dataset,
        progress: &mut dyn FnMut(Progress),
        extra: impl Fn(usize) -> Result<T> + Send + Sync + 'static,
        mut each: impl FnMut(&mut DsBatch<T>, &B::T) -> Result<()>,
    ) -> Result<Vec<Skipped>> {
        self.run_with(eng, ds, progress, extra, |x| layer_output(eng, x, self.layer), |b, a| each(b, &a))
    }

    /// The loop of both: `maps` runs the model on each batch's input.
    fn run_with<B: Backend, T: Send + 'static, A>(
        &self,
        eng: &Engine<B>,
        ds: &Dataset,
        progress: &mut dyn FnMut(Progress),
        extra: impl Fn(usize) -> Result<T> + Send + Sync + 'static,
        maps: impl Fn(&Tensor) -> Result<A>,
        mut each: impl FnMut(&mut DsBatch<T>, A) -> Result<()>,
    ) -> Result<Vec<Skipped>> {
        let indices = self.shard.select(ds.len());
        progress(Progress::Start { total: indices.len(), what: self.what.to_string() });
        let mut skipped = vec![];
        for b in stream(ds, indices, eng.model().preprocess, self.batch, self.framing, extra) {
            let mut b = b?;
            progress(Progress::Advance(b.indices.len() + b.skipped.len()));
            skipped.extend(b.skipped.iter().cloned());
            if b.indices.is_empty() {
                continue;
            }
            let a = maps(&b.x)?;
            each(&mut b, a)?;
        }
        progress(Progress::Finish);
        Ok(skipped)
    }
}

/// [`Pass::run`] over the model's crops with nothing extra: run the model over the shard's
/// images up to `layer`, handing each batch's activations with the batch to `each`.
#[allow(clippy::too_many_arguments)]
pub fn pass<B: Backend>(
    eng: &Engine<B>,
    ds: &Dataset,
    shard: Shard,
    layer: crate::model::Layer,
    batch: usize,
    progress: &mut dyn FnMut(Progress),
    what: &str,
    mut each: impl FnMut(&DsBatch, &Tensor) -> Result<()>,
) -> Result<Vec<Skipped>> {
    Pass { shard, layer, batch, what, framing: Framing::Crop }.run(eng, ds, progress, |_| Ok(()), |b, a| each(b, a))
}

/// The model's activations at `layer` for the batch `x`, on the host as `[n, c, h, w]` (see
/// [`as_maps`]).
pub fn layer_maps<B: Backend>(eng: &Engine<B>, x: &Tensor, layer: crate::model::Layer) -> Result<Tensor> {
    let acts = eng.forward(eng.upload(x)?, layer, &[layer])?;
    as_maps(eng.download(kept(eng, &acts, layer)?)?)
}

fn kept<'a, B: Backend>(eng: &Engine<B>, acts: &'a crate::engine::Activations<B>, layer: crate::model::Layer) -> Result<&'a B::T> {
    acts.get(layer).ok_or_else(|| Error::InvalidArgument(format!("layer `{}` was not kept", eng.model().name(layer))))
}

/// The model's activations at `layer` for the batch `x`, on the backend as `[n, c, h, w]` (a
/// `[n, c]` output as `[n, c, 1, 1]`).
pub fn layer_output<B: Backend>(eng: &Engine<B>, x: &Tensor, layer: crate::model::Layer) -> Result<B::T> {
    let acts = eng.forward(eng.upload(x)?, layer, &[layer])?;
    let a = kept(eng, &acts, layer)?;
    match eng.be.shape(a) {
        [n, c] => {
            let s = [*n, *c, 1, 1];
            eng.be.reshape(a.clone(), &s)
        }
        [_, _, _, _] => Ok(a.clone()),
        s => Err(Error::shape("layer output", "[n, c, h, w] or [n, c]", s)),
    }
}

/// A layer's output as `[n, c, h, w]` (a `[n, c]` output as `[n, c, 1, 1]`).
pub fn as_maps(a: Tensor) -> Result<Tensor> {
    match a.shape.len() {
        4 => Ok(a),
        2 => {
            let s = [a.shape[0], a.shape[1], 1, 1];
            a.reshape(&s)
        }
        _ => Err(Error::shape("layer output", "[n, c, h, w] or [n, c]", &a.shape)),
    }
}

/// Render a merged (or single-pass) state into `out`: the pictures, the JSON and `index.html`.
/// Returns the JSON summary. `be` computes what the state leaves to be computed on a device
/// (t-SNE's exact gradient, where `be` is a GPU engine).
pub fn finish<B: Backend>(be: &B, p: &Partial, ds: &Dataset, out: &mut OutputSet) -> Result<serde_json::Value> {
    if p.images.is_empty() {
        return Err(Error::InvalidArgument(format!("no image of the dataset {} could be read ({} skipped)", p.dataset, p.skipped.len())));
    }
    match &p.tally {
        Tally::TopPatches(t) => top::finish(p, t, ds, out),
        Tally::Neighbors(n) => neighbors::finish(p, n, ds, out),
        Tally::DissectQuantile(q) => dissect::finish_quantile(p, q, out),
        Tally::Dissect(d) => dissect::finish(p, d, ds, out),
        Tally::Tsne(t) => tsne::finish(be, p, t, ds, out),
    }
}
