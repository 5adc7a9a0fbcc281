//! Whole jobs as the `deepviz` command runs them, for any caller: inputs in, output files out.
//!
//! - this file: [`MapJob`] (any attribution method over files, with targets, pictures and raw
//!   arrays), [`DreamJob`], [`classify_files`], and [`Progress`] reports.
//! - `inputs.rs`: files and folders into lazily decoded batches.
//! - `targets.rs`: what the user asked the maps to explain ([`TargetSpec`]): classes for every
//!   image, a file mapping images to classes, units and neurons of layers.
//! - `device.rs`: choosing the engine ([`DeviceChoice`], [`with_backend`]).
//! - `evaluate.rs`: [`EvaluateJob`], judging an attribution method by deletion and insertion
//!   curves (RISE).
//! - `segment.rs`: [`SegmentJob`], weakly supervised segmentation seeded by a method's maps
//!   (Simonyan et al. 2014, §3.1; [`crate::viz::segment`]).
//! - `sanity.rs`: [`SanityJob`], the cascading model-randomisation test (Adebayo et al. 2018).
//! - `trace.rs`: a job on the recording device ([`trace`]): launches, allocations, host syncs,
//!   bytes and multiply-adds, without a GPU.
//!
//! Every job writes into an [`OutputSet`] as each batch finishes (memory stays bounded over a
//! folder of any size) and returns records of what it wrote; the caller commits the set, so a
//! failure anywhere leaves nothing behind. Nothing here prints.

mod background;
mod device;
mod evaluate;
pub mod inputs;
mod sanity;
mod segment;
mod targets;
mod trace;

pub use evaluate::EvaluateJob;
pub use sanity::SanityJob;
pub use segment::SegmentJob;
pub use device::{cuda_backend, emu_backend, gpu_precision, with_backend, DeviceChoice, WithBackend};
pub use inputs::{Batch, Inputs, Item};
pub use targets::{parse_target, TargetName, TargetSpec, MAX_CLASS_FILE_BYTES};
pub use trace::{trace, trace_jobs};

use std::path::PathBuf;

use image::RgbImage;
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::imageio;
use crate::output::OutputSet;
use crate::tensor::Tensor;
use crate::viz::render::{self, Style};
use crate::viz::{attribution, classify, method_info, zoom, DeepDream, Maximize, MethodOptions, Objective, Target};

/// What a long job reports as it goes, for a progress bar.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// the job has this many steps, doing `what`
    Start {
        /// the steps
        total: usize,
        /// what is being done, for the bar's label
        what: String,
    },
    /// this many more steps are done
    Advance(usize),
    /// the job is done
    Finish,
}

/// A PNG in memory.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).map_err(|e| Error::InvalidArgument(format!("cannot encode a PNG: {e}")))?;
    Ok(buf.into_inner())
}

/// An attribution method over files.
#[derive(Clone, Debug)]
pub struct MapJob {
    /// a method of [`crate::viz::METHODS`]
    pub method: String,
    /// the method's options (`--layer`, `--samples`, …)
    pub options: MethodOptions,
    /// which targets each image's maps explain
    pub targets: TargetSpec,
    /// clip the pictures at this percentile of each map (0 < P <= 100); `None`: the method's
    /// default
    pub clip_percentile: Option<f32>,
    /// opacity of the heat map in the overlay
    pub alpha: f32,
    /// also write each raw map as float32 `.npy`
    pub raw: bool,
    /// images per forward / backward pass
    pub batch_size: usize,
    /// also write the overlay at each image's own resolution (`*_overlay_full.png`): the map
    /// over the window the network saw ([`imageio::CropBox`]), the rest darkened
    pub full_size: bool,
    /// the heat maps' colours; `None`: the method's default
    pub colormap: Option<imageio::Colormap>,
    /// also write every raw map of the run stacked in one `{method}.npz`, streamed as batches
    /// finish ([`imageio::npz::NpzStack`]): `maps` float32 `[N, h, w]`, and per map `images`
    /// (the input's path), `stems` (its files' stem) and `targets` (`class:285`,
    /// `unit:LAYER:C`, …) as unicode arrays
    pub npz: bool,
}

/// One map a job wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MapRecord {
    /// the input it explains
    pub image: PathBuf,
    /// the target it explains
    pub target: Target,
    /// the class's name, for a class target
    pub class_name: Option<String>,
    /// the layer of a layer method (a CAM)
    pub layer: Option<String>,
    /// the raw map's size (h, w)
    pub map_shape: [usize; 2],
    /// the files written for it
    pub files: Vec<PathBuf>,
    /// per-map figures the method reports (Integrated Gradients: `completeness_error`)
    pub extras: Vec<(String, f32)>,
    /// where the map lies in the original image (image files; not `.npy` tensors)
    pub crop: Option<imageio::CropBox>,
}

impl MapRecord {
    /// The record as the CLI's `--json` prints it.
    pub fn to_json(&self, model: &crate::model::Model) -> Value {
        let mut v = json!({
            "image": self.image.display().to_string(),
            "layer": self.layer,
            "map_shape": self.map_shape,
            "files": self.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        });
        if let Some(c) = &self.crop {
            v["crop"] = json!(c);
        }
        for (name, x) in &self.extras {
            v[name.as_str()] = json!(x);
        }
        match self.target {
            Target::Class(c) => {
                v["class"] = json!(c);
                v["class_name"] = json!(self.class_name);
            }
            Target::Channel { layer, channel } => v["target"] = json!({"unit": model.name(layer), "channel": channel}),
            Target::Neuron { layer, channel, y, x } => v["target"] = json!({"neuron": model.name(layer), "channel": channel, "y": y, "x": x}),
        }
        v
    }
}

/// The suffix of a target's file names when an image has several targets.
/// A target as the CLI's flags write it: `class:130`, `unit:LAYER:CHANNEL`,
/// `neuron:LAYER:CHANNEL:Y:X` (the layer by the node it resolved to).
fn target_label<B: Backend>(eng: &Engine<B>, t: &Target) -> String {
    match *t {
        Target::Class(c) => format!("class:{c}"),
        Target::Channel { layer, channel } => format!("unit:{}:{channel}", eng.model().name(layer)),
        Target::Neuron { layer, channel, y, x } => format!("neuron:{}:{channel}:{y}:{x}", eng.model().name(layer)),
    }
}

fn target_suffix<B: Backend>(eng: &Engine<B>, t: &Target) -> String {
    let name = |l| eng.model().name(l).replace([':', '/'], "_");
    match *t {
        Target::Class(c) => format!("_c{c}"),
        Target::Channel { layer, channel } => format!("_unit-{}-{channel}", name(layer)),
        Target::Neuron { layer, channel, y, x } => format!("_neuron-{}-{channel}-{y}-{x}", name(layer)),
    }
}

/// Each (item, target) pair of a batch, in order: one map each; an item with several targets
/// repeats, one with none (`None`: its top class) appears once.
pub(crate) fn target_pairs(per_item: &[Option<Vec<Target>>]) -> Vec<(usize, Option<Target>)> {
    per_item
        .iter()
        .enumerate()
        .flat_map(|(i, t)| match t {
            None => vec![(i, None)],
            Some(ts) => ts.iter().map(|&t| (i, Some(t))).collect(),
        })
        .collect()
}

/// The inputs of a chunk of [`target_pairs`] on the backend, `[pairs, 3, h, w]` (the batch's
/// tensor itself when the chunk is the batch).
pub(crate) fn upload_pairs<B: Backend>(eng: &Engine<B>, batch: &Batch, chunk: &[(usize, Option<Target>)]) -> Result<B::T> {
    if chunk.len() == batch.items.len() && chunk.iter().enumerate().all(|(k, p)| p.0 == k) {
        return eng.upload(&batch.x);
    }
    let data: Vec<f32> = chunk.iter().flat_map(|&(i, _)| batch.x.item(i).iter().copied()).collect();
    let mut shape = batch.x.shape.clone();
    shape[0] = chunk.len();
    eng.upload(&Tensor::new(shape, data)?)
}

/// `maps` `[n, 1, h, w]`, or the error [`render::normalized`] gives for a map with a NaN or an
/// infinity.
fn finite_maps(maps: Tensor) -> Result<Tensor> {
    match (0..maps.shape[0]).find(|&i| maps.item(i).iter().any(|v| !v.is_finite())) {
        Some(i) => Err(Error::InvalidArgument(format!("the map of item {i} holds NaN or infinite values (the computation diverged)"))),
        None => Ok(maps),
    }
}

/// Maps on the host `[n, 1, ·, ·]` on their way to pictures: raw (the CPU engine's; each task
/// upsamples and normalises its own), or already upsampled and normalised to [0, 1] (a GPU's).
enum PictureMaps {
    Raw(Tensor),
    Scaled(Tensor),
}

/// A map's pictures, encoded: the heat map, the overlay and (`full_size`) the overlay at the
/// image's own resolution.
type Encoded = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// A map computed but not yet written: its pictures being encoded on the background thread.
struct Deferred {
    pictures: background::Ticket<Result<Encoded>>,
    /// the raw map `[h, w]` (`--raw`, `--npz`)
    raw: Option<Vec<f32>>,
    item: usize,
    target: Target,
    stem: String,
    extras: Vec<(String, f32)>,
    map_shape: [usize; 2],
}

/// Where [`MapJob::run`] writes: the output set, the `.npz` stack, the records.
struct Sink<'o> {
    out: &'o mut OutputSet,
    stack: Option<(imageio::npz::NpzStack, [Vec<String>; 3])>,
    records: Vec<MapRecord>,
    method: &'static str,
    layer: Option<String>,
}

/// A batch's [`Deferred`] maps, and its items.
struct DeferredBatch {
    maps: Vec<Deferred>,
    items: Vec<Item>,
}

impl MapJob {
    /// Run on `eng` over `inputs`, writing into `out`.
    ///
    /// The host work (the next batch's decoding, this one's colouring and PNG encoding) runs on
    /// a thread below the network's priority while the next batch is computed
    /// (`job::background`): a batch's files are written into `out` after the next batch's maps,
    /// in order, from this thread.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, inputs: &Inputs, out: &mut OutputSet, progress: &mut dyn FnMut(Progress)) -> Result<Vec<MapRecord>> {
        let info = method_info(&self.method).ok_or_else(|| Error::InvalidArgument(format!("unknown method `{}`", self.method)))?;
        let method = attribution(eng, &self.method, &self.options)?;
        let percentile = self.clip_percentile.unwrap_or(info.clip_percentile);
        if !(percentile > 0.0 && percentile <= 100.0) {
            return Err(Error::InvalidArgument(format!("the clip percentile must be in (0, 100], not {percentile}")));
        }
        let style = Style { colormap: self.colormap.unwrap_or(info.colormap), clip: (percentile < 100.0).then_some(percentile / 100.0), alpha: self.alpha };
        let model = eng.model();
        let pre = model.preprocess;
        let stack = match self.npz {
            true => {
                let (dest, file) = out.create(&format!("{}.npz", info.name))?;
                Some((imageio::npz::NpzStack::new(&dest, file, "maps")?, [vec![], vec![], vec![]]))
            }
            false => None,
        };
        let mut sink = Sink { out, stack, records: vec![], method: info.name, layer: method.layer_name() };
        progress(Progress::Start { total: inputs.files.len(), what: info.name.to_string() });
        let bg = background::Background::new();
        let batches = inputs.batches(&pre, self.batch_size).prefetching(&bg);
        let batches = if self.full_size { batches.keeping_originals() } else { batches };
        let mut waiting: Option<DeferredBatch> = None;
        for batch in batches {
            let mut batch = batch?;
            // each (item, target) pair is one map; several targets per image repeat the image
            let per_item: Vec<Option<Vec<Target>>> = batch.items.iter().map(|it| self.targets.for_item(model, it)).collect::<Result<_>>()?;
            let pairs = target_pairs(&per_item);
            let originals: Vec<Option<std::sync::Arc<RgbImage>>> = batch.items.iter_mut().map(|it| it.original.take().map(std::sync::Arc::new)).collect();
            let mut maps = vec![];
            for chunk in pairs.chunks(self.batch_size.max(1)) {
                let x = upload_pairs(eng, &batch, chunk)?;
                let given: Option<Vec<Target>> = chunk.iter().map(|p| p.1).collect();
                let attributed = method.attribute_with_extras(&x, given.as_deref())?;
                let (raw_maps, targets) = (attributed.map, attributed.targets);
                // signed maps: the raw array keeps the sign, the picture shows |map|
                let abs;
                let shown = if info.signed {
                    abs = eng.be.unary(&raw_maps, crate::backend::Unary::Abs)?;
                    &abs
                } else {
                    &raw_maps
                };
                // the pictures' maps in [0, 1]: a GPU upsamples and normalises the batch on the
                // device; the CPU engine's maps are on the host already, so each map's task does
                // it, off this thread (the same code on one map: the same bits)
                let maps_host = if eng.be.on_host() {
                    PictureMaps::Raw(finite_maps(eng.download(shown)?)?)
                } else {
                    // a batch's pictures have one size (its items' tensors have one shape)
                    let first = &batch.items[chunk[0].0].picture;
                    PictureMaps::Scaled(render::normalized(&eng.be, shown, [first.height() as usize, first.width() as usize], style.clip)?)
                };
                let extras: Vec<(&str, Vec<f32>)> = attributed.extras.iter().map(|(k, t)| Ok((*k, eng.download(t)?.data))).collect::<Result<_>>()?;
                let raw = if self.raw || self.npz { Some(eng.download(&raw_maps)?) } else { None };
                let resolved = targets.resolve(eng)?;
                let ms = eng.be.shape(&raw_maps);
                let (h, w) = (ms[2], ms[3]);
                for (k, (&(i, _), target)) in chunk.iter().zip(&resolved).enumerate() {
                    let it = &batch.items[i];
                    // colouring and encoding, a map and its overlay (and the full-size one),
                    // on the background thread
                    let (picture, original, crop) = (it.picture.clone(), originals[i].clone(), it.crop);
                    let map = match &maps_host {
                        PictureMaps::Scaled(n) => PictureMaps::Scaled(Tensor::new(vec![1, 1, n.shape[2], n.shape[3]], n.item(k).to_vec())?),
                        PictureMaps::Raw(m) => PictureMaps::Raw(Tensor::new(vec![1, 1, h, w], m.item(k).to_vec())?),
                    };
                    let full_size = self.full_size;
                    let pictures = bg.spawn(move || -> Result<Encoded> {
                        let (ih, iw) = (picture.height() as usize, picture.width() as usize);
                        let map01 = match map {
                            PictureMaps::Raw(m) => render::normalized(&crate::backend::cpu::Cpu, &m, [ih, iw], style.clip)?.data,
                            PictureMaps::Scaled(n) => n.data,
                        };
                        let heat = imageio::colorize(&map01, ih, iw, style.colormap);
                        let over = imageio::blend(&picture, &heat, style.alpha);
                        let full = match (original, crop) {
                            (Some(orig), Some(crop)) if full_size => Some(png_bytes(&imageio::overlay_in_box(&orig, &map01, ih, iw, &crop, style.colormap, style.alpha))?),
                            _ => None,
                        };
                        Ok((png_bytes(&heat)?, png_bytes(&over)?, full))
                    });
                    // an image with several targets: one set of files per target
                    let several = per_item[i].as_ref().is_some_and(|t| t.len() > 1);
                    let stem = if several { format!("{}{}", it.stem, target_suffix(eng, target)) } else { it.stem.clone() };
                    maps.push(Deferred {
                        pictures,
                        raw: raw.as_ref().map(|r| r.item(k).to_vec()),
                        item: i,
                        target: *target,
                        stem,
                        extras: extras.iter().map(|(name, v)| (name.to_string(), v[k])).collect(),
                        map_shape: [h, w],
                    });
                }
            }
            // the previous batch's pictures had this batch's maps' time to be made
            if let Some(done) = waiting.replace(DeferredBatch { maps, items: batch.items }) {
                self.write(eng, &mut sink, done, progress)?;
            }
        }
        if let Some(done) = waiting {
            self.write(eng, &mut sink, done, progress)?;
        }
        if let Some((npz, [images, stems, labels])) = sink.stack {
            let u = imageio::npz::unicode_npy;
            npz.finish(&[("images", u(&images)), ("stems", u(&stems)), ("targets", u(&labels))])?;
        }
        progress(Progress::Finish);
        Ok(sink.records)
    }

    /// A batch's files into the sink, as its pictures are ready.
    fn write<B: Backend>(&self, eng: &Engine<B>, sink: &mut Sink, batch: DeferredBatch, progress: &mut dyn FnMut(Progress)) -> Result<()> {
        let model = eng.model();
        let (maps, tickets): (Vec<_>, Vec<_>) = batch.maps.into_iter().map(|d| ((d.raw, d.item, d.target, d.stem, d.extras, d.map_shape), d.pictures)).unzip();
        for ((raw, i, target, stem, extras, [h, w]), pictures) in maps.into_iter().zip(background::Background::wait_all(tickets)) {
            let (heat, over, full) = pictures?;
            let it = &batch.items[i];
            let name = |ext: &str| format!("{stem}_{}{ext}", sink.method);
            let out = &mut *sink.out;
            let mut files = vec![out.add(&name(".png"), &heat)?, out.add(&name("_overlay.png"), &over)?];
            if let Some(full) = full {
                files.push(out.add(&name("_overlay_full.png"), &full)?);
            }
            if let (Some(raw), true) = (&raw, self.raw) {
                files.push(out.add(&name(".npy"), &imageio::npy::npy_bytes(&Tensor::new(vec![h, w], raw.clone())?))?);
            }
            if let (Some(raw), Some((npz, [images, stems, labels]))) = (&raw, sink.stack.as_mut()) {
                npz.push(&[h, w], raw)?;
                images.push(it.source.display().to_string());
                stems.push(stem.clone());
                labels.push(target_label(eng, &target));
            }
            sink.records.push(MapRecord {
                image: it.source.clone(),
                target,
                class_name: target.class().map(|c| model.class_name(c)),
                layer: sink.layer.clone(),
                map_shape: [h, w],
                files,
                extras,
                crop: it.crop,
            });
        }
        progress(Progress::Advance(batch.items.len()));
        Ok(())
    }
}

/// DeepDream over files.
#[derive(Clone, Debug)]
pub struct DreamJob {
    /// the layer to amplify (module path); `None`: the architecture's default
    pub layer: Option<String>,
    /// the schedule (its objective is set from `layer`)
    pub dream: DeepDream,
    /// also write the dreamed input tensor as `.npy`
    pub raw: bool,
    /// images per pass
    pub batch_size: usize,
    /// a guide image: dream towards what it shows at the layer ([`crate::viz::Term::Guide`]) instead of
    /// amplifying ½‖A‖²
    pub guide: Option<Guide>,
    /// frames of the notebook's zoom loop (1: one dream); each frame dreams on the previous one
    /// zoomed into its centre by `zoom` ([`crate::viz::zoom`])
    pub frames: usize,
    /// the zoom loop's zoom per frame (0.05: 5%)
    pub zoom: f32,
}

/// DeepDream's guide image: a file (preprocessed as the inputs are) or a preprocessed tensor
/// `[1, 3, h, w]`.
#[derive(Clone, Debug)]
pub enum Guide {
    /// an image file
    File(PathBuf),
    /// a preprocessed tensor `[1, 3, h, w]`
    Tensor(Tensor),
}

impl Default for DreamJob {
    /// The classic notebook's schedule ([`DeepDream::new`]) at the default layer; its zoom loop's
    /// 5% per frame.
    fn default() -> Self {
        DreamJob { layer: None, dream: DeepDream::new(Objective { terms: vec![] }), raw: false, batch_size: 16, guide: None, frames: 1, zoom: 0.05 }
    }
}

impl DreamJob {
    /// Run on `eng` over `inputs`, writing each dreamed picture (and with `raw` its `.npy`)
    /// into `out`; one JSON record per picture.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, inputs: &Inputs, out: &mut OutputSet, progress: &mut dyn FnMut(Progress)) -> Result<Vec<Value>> {
        let model = eng.model();
        self.check()?;
        // an unknown layer is an error before any input is read
        let layer = self.dream_layer(eng)?;
        let objective = self.objective(eng)?;
        let pre = model.preprocess;
        let mut records = vec![];
        for batch in inputs.batches(&pre, self.batch_size) {
            let batch = batch?;
            let [_, _, h, w] = batch.x.shape[..] else { unreachable!("batches are [n, 3, h, w]") };
            let mut files = vec![vec![]; batch.items.len()];
            let dream = DeepDream { objective: objective.clone(), ..self.dream.clone() };
            progress(Progress::Start { total: self.frames * dream.total_steps(h, w), what: format!("dream {}", model.name(layer)) });
            let mut x = batch.x;
            for frame in 0..self.frames {
                let y = dream_checked(eng, &dream, &x, progress)?;
                for (j, it) in batch.items.iter().enumerate() {
                    let stem = if self.frames > 1 { format!("{}_dream_{frame:04}", it.stem) } else { format!("{}_dream", it.stem) };
                    let img = Tensor::new(vec![1, 3, h, w], y.item(j).to_vec())?;
                    files[j].push(out.add(&format!("{stem}.png"), &png_bytes(&imageio::to_rgb(&img.data, h, w, &pre))?)?);
                    if self.raw {
                        files[j].push(out.add(&format!("{stem}.npy"), &imageio::npy::npy_bytes(&img))?);
                    }
                }
                if frame + 1 < self.frames {
                    x = zoom(&y, self.zoom)?;
                }
            }
            progress(Progress::Finish);
            for (it, files) in batch.items.iter().zip(files) {
                records.push(json!({
                    "image": it.source.display().to_string(),
                    "layer": model.name(layer),
                    "guide": match &self.guide {
                        Some(Guide::File(p)) => Some(p.display().to_string()),
                        Some(Guide::Tensor(_)) => Some("a tensor".to_string()),
                        None => None,
                    },
                    "frames": self.frames,
                    "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                }));
            }
        }
        Ok(records)
    }

    /// The zoom loop's settings.
    fn check(&self) -> Result<()> {
        if self.frames == 0 || !(0.0..0.5).contains(&self.zoom) {
            return Err(Error::InvalidArgument(format!("the zoom loop needs frames >= 1 and a zoom in [0, 0.5) (got {}, {})", self.frames, self.zoom)));
        }
        Ok(())
    }

    /// The objective: ½‖A‖² at the layer, or the guided objective towards the guide image's
    /// features there (the guide preprocessed as the inputs are, at the model's input size).
    pub fn objective<B: Backend>(&self, eng: &Engine<B>) -> Result<Objective> {
        let layer = self.dream_layer(eng)?;
        let x = match &self.guide {
            None => return Ok(Objective::layer(layer)),
            Some(Guide::Tensor(x)) => inputs::check_input("the guide", x.clone())?,
            Some(Guide::File(path)) => {
                let guide = Inputs::expand(std::slice::from_ref(path))?;
                if guide.files.len() != 1 {
                    return Err(Error::InvalidArgument(format!("--guide takes one image, and {} holds {}", path.display(), guide.files.len())));
                }
                guide.batches(&eng.model().preprocess, 1).next().expect("one file, one batch")?.x
            }
        };
        if x.shape[0] != 1 {
            return Err(Error::shape("the guide", "one image [1, 3, h, w]", &x.shape));
        }
        let acts = eng.forward(eng.upload(&x)?, layer, &[layer])?;
        Objective::guide(layer, &eng.download(acts.get(layer).expect("kept"))?)
    }

    /// The layer dreamed at: the `layer` field resolved, or the architecture's default.
    pub fn dream_layer<B: Backend>(&self, eng: &Engine<B>) -> Result<crate::model::Layer> {
        let model = eng.model();
        let layer = model.resolve(self.layer.as_deref().unwrap_or(&model.graph.heads.dream_layer))?;
        if layer == model.input() {
            return Err(Error::InvalidArgument("dream needs a layer inside the network, not its input".into()));
        }
        Ok(layer)
    }

    /// The dream of one preprocessed batch `x` `[n, 3, h, w]` (the CLI's files and the Python
    /// package's arrays): the dreamed batch, normalised, or an error if it diverged.
    pub fn dream_tensor<B: Backend>(&self, eng: &Engine<B>, x: &Tensor, progress: &mut dyn FnMut(Progress)) -> Result<Tensor> {
        let model = eng.model();
        let layer = self.dream_layer(eng)?;
        let dream = DeepDream { objective: self.objective(eng)?, ..self.dream.clone() };
        let [_, _, h, w] = x.shape[..] else { return Err(Error::shape("DeepDream input", "[n, 3, h, w]", &x.shape)) };
        progress(Progress::Start { total: dream.total_steps(h, w), what: format!("dream {}", model.name(layer)) });
        let y = dream_checked(eng, &dream, x, progress)?;
        progress(Progress::Finish);
        Ok(y)
    }
}

/// `dream.run` with a progress tick per step, and an error if the result is not finite.
fn dream_checked<B: Backend>(eng: &Engine<B>, dream: &DeepDream, x: &Tensor, progress: &mut dyn FnMut(Progress)) -> Result<Tensor> {
    let y = dream.run(eng, x, &eng.model().preprocess, &mut || progress(Progress::Advance(1)))?;
    if let Some(i) = y.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!("the dream diverged: value {} at index {i} (try a smaller --lr)", y.data[i])));
    }
    Ok(y)
}

/// Activation maximisation ([`Maximize`]): one picture per target, optimised in batches.
#[derive(Clone, Debug)]
pub struct MaximizeJob {
    /// the units or classes to maximise, one picture each
    pub targets: Vec<TargetName>,
    /// the optimisation's schedule
    pub schedule: Maximize,
    /// the pictures' size; `None`: the model's input size
    pub size: Option<[usize; 2]>,
    /// also write the optimised input tensor as `.npy`
    pub raw: bool,
    /// pictures optimised at once
    pub batch_size: usize,
}

impl MaximizeJob {
    /// Run on `eng`, writing `maximize_<target>.png` (and `.npy`) into `out`; one JSON record
    /// per target with the score its picture reaches.
    pub fn run<B: Backend>(&self, eng: &Engine<B>, out: &mut OutputSet, progress: &mut dyn FnMut(Progress)) -> Result<Vec<Value>> {
        let model = eng.model();
        let pre = model.preprocess;
        let [h, w] = self.size.unwrap_or(pre.size);
        let targets: Vec<Target> = self.targets.iter().map(|t| t.resolve(model)).collect::<Result<_>>()?;
        if targets.is_empty() {
            return Err(Error::InvalidArgument("maximize needs a target: --class N, --unit LAYER:CHANNEL or --neuron LAYER:CHANNEL:Y:X".into()));
        }
        let mut records = vec![];
        for chunk in targets.chunks(self.batch_size.max(1)) {
            progress(Progress::Start { total: self.schedule.steps, what: format!("maximize {} target(s)", chunk.len()) });
            let y = self.schedule.run(eng, chunk, [h, w], &pre, &mut || progress(Progress::Advance(1)))?;
            progress(Progress::Finish);
            let scores = Maximize::scores(eng, &y, chunk)?;
            for (j, t) in chunk.iter().enumerate() {
                let img = Tensor::new(vec![1, 3, h, w], y.item(j).to_vec())?;
                let stem = format!("maximize{}", target_suffix(eng, t));
                let mut files = vec![out.add(&format!("{stem}.png"), &png_bytes(&imageio::to_rgb(&img.data, h, w, &pre))?)?];
                if self.raw {
                    files.push(out.add(&format!("{stem}.npy"), &imageio::npy::npy_bytes(&img))?);
                }
                records.push(json!({
                    "target": target_label(eng, t),
                    "class_name": t.class().map(|c| model.class_name(c)),
                    "score": scores[j],
                    "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                }));
            }
        }
        Ok(records)
    }
}

/// The top `k` classes of every input, as JSON records (`image`, `top`: class, name, logit, prob).
pub fn classify_files<B: Backend>(eng: &Engine<B>, inputs: &Inputs, k: usize, batch_size: usize) -> Result<Vec<Value>> {
    let pre = eng.model().preprocess;
    let mut records = vec![];
    for batch in inputs.batches(&pre, batch_size) {
        let batch = batch?;
        for (it, p) in batch.items.iter().zip(classify(eng, &batch.x, k.max(1))?) {
            let top: Vec<_> = p.iter().map(|q| json!({"class": q.class, "name": q.name, "logit": q.logit, "prob": q.prob})).collect();
            records.push(json!({"image": it.source.display().to_string(), "top": top}));
        }
    }
    Ok(records)
}
