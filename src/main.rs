//! The `deepviz` command-line program: one shape for every method,
//! `deepviz METHOD --image FILE... [--model FILE] [--arch NAME] [--class N] [--layer NAME]
//! [--out DIR] [--raw] [--json] [--device auto|cpu]`. Errors are printed as one line and exit
//! with status 1 (usage errors: 2); nothing is written unless everything succeeded.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::imageio::{self, Colormap, Preprocess};
use deepviz::model::Model;
use deepviz::output::OutputSet;
use deepviz::viz::{classify, Cam, DeepDream, GradCam, Objective, Saliency};
use deepviz::{Error, Result, Tensor};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Parser)]
#[command(name = "deepviz", version, about = "See what a convolutional network has learned: saliency, CAM, Grad-CAM, DeepDream.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Top-k classes with probabilities
    Classify {
        #[command(flatten)]
        common: Common,
        /// how many classes to show
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Saliency map (Simonyan et al. 2014): max over colour channels of |d score / d image|
    Saliency {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        map: MapArgs,
    },
    /// Class activation map (Zhou et al. 2016); needs a linear classifier after global average pooling
    Cam {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        map: MapArgs,
    },
    /// Grad-CAM (Selvaraju et al. 2017) at --layer (default: the last feature layer)
    Gradcam {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        map: MapArgs,
    },
    /// DeepDream: amplify what --layer sees (maximise ½‖A‖²) over octaves, with jitter
    Dream {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        dream: DreamArgs,
    },
    /// List the model's layers (PyTorch module paths) with their output shapes
    Layers {
        /// model file (.safetensors); default: the embedded EfficientNet-Lite0
        #[arg(long)]
        model: Option<PathBuf>,
        /// architecture, for files without `arch` metadata
        #[arg(long)]
        arch: Option<String>,
        /// print JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct Common {
    /// input images (PNG, JPEG, ...), folders of them, or float32 NCHW .npy tensors already preprocessed
    #[arg(long, num_args = 1.., required = true)]
    image: Vec<PathBuf>,
    /// model file (.safetensors); default: the embedded EfficientNet-Lite0 (ImageNet)
    #[arg(long)]
    model: Option<PathBuf>,
    /// architecture, for files without `arch` metadata (e.g. resnet50)
    #[arg(long)]
    arch: Option<String>,
    /// target class index for every image; default: each image's top class
    #[arg(long = "class")]
    class: Option<usize>,
    /// layer (PyTorch module path, e.g. layer4, features.29, blocks.5)
    #[arg(long)]
    layer: Option<String>,
    /// output folder
    #[arg(long, default_value = "deepviz-out")]
    out: PathBuf,
    /// also write the raw map as float32 .npy at its native resolution
    #[arg(long)]
    raw: bool,
    /// print a machine-readable summary (JSON) on stdout
    #[arg(long)]
    json: bool,
    /// compute device
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// images per batch
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
}

#[derive(Args)]
struct MapArgs {
    /// clip the heat map at this percentile of each map's values before normalising, so a few
    /// extreme pixels do not darken the rest (0 < P <= 100; 100: no clipping) [default: 99.5 for
    /// saliency, 100 for cam and gradcam]; the --raw .npy stays unclipped
    #[arg(long, value_name = "P", value_parser = parse_percentile)]
    clip_percentile: Option<f32>,
}

fn parse_percentile(s: &str) -> std::result::Result<f32, String> {
    let p: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if p > 0.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(format!("a percentile in (0, 100], not {s}"))
    }
}

#[derive(Args)]
struct DreamArgs {
    #[arg(long, default_value_t = 4)]
    octaves: usize,
    #[arg(long, default_value_t = 1.4)]
    octave_scale: f32,
    /// gradient-ascent steps per octave
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// step size (normalised input units, on g / mean|g|)
    #[arg(long, default_value_t = 0.02)]
    lr: f32,
    /// maximum random shift in pixels per step
    #[arg(long, default_value_t = 32)]
    jitter: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    /// the GPU when one is present (CUDA engine), else the CPU engine
    Auto,
    /// the CPU engine
    Cpu,
    /// the CUDA engine on the first GPU
    Cuda,
    /// the CUDA engine on the CPU emulation of the CUDA execution model (slow; for checking)
    Emu,
}

/// The CUDA engine on the real GPU, or why not.
fn cuda_backend() -> Result<Gpu> {
    #[cfg(feature = "cuda")]
    {
        Ok(Gpu::new(std::sync::Arc::new(deepviz::device::cuda::CudaDevice::new(0)?)))
    }
    #[cfg(not(feature = "cuda"))]
    Err(Error::Unsupported("this deepviz was built without the CUDA engine (feature `cuda`); use --device cpu".into()))
}

/// `--device auto`: the GPU when one is present, else the CPU with a one-line notice.
fn auto_backend() -> Option<Gpu> {
    match cuda_backend() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("note: running on the CPU engine ({e})");
            None
        }
    }
}

/// One input item: where it came from, a name for its outputs, its picture, its tensor.
struct Item {
    source: PathBuf,
    stem: String,
    picture: RgbImage,
    x: Tensor,
}

const IMAGE_EXTS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "npy"];

fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Error::InvalidArgument(format!("{}: no images in this folder", p.display())));
            }
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn load_items(paths: &[PathBuf], pre: &Preprocess) -> Result<Vec<Item>> {
    let mut items = vec![];
    for path in expand_inputs(paths)? {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into());
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
            let t = imageio::read_npy(&path)?;
            let t = match t.rank() {
                3 => {
                    let s = t.shape.clone();
                    t.reshape(&[1, s[0], s[1], s[2]])?
                }
                4 => t,
                _ => return Err(Error::shape(format!("{}", path.display()), "a float32 [n, 3, h, w] or [3, h, w] tensor", &t.shape)),
            };
            let (n, c, h, w) = t.nchw();
            if c != 3 || h == 0 || w == 0 || n == 0 {
                return Err(Error::shape(format!("{}", path.display()), "a float32 [n, 3, h, w] tensor", &t.shape));
            }
            for i in 0..n {
                let x = Tensor::new(vec![1, c, h, w], t.item(i).to_vec())?;
                let picture = imageio::to_rgb(&x.data, h, w, pre);
                let stem = if n > 1 { format!("{stem}_{i}") } else { stem.clone() };
                items.push(Item { source: path.clone(), stem, picture, x });
            }
        } else {
            let img = imageio::load_rgb(&path)?;
            let picture = imageio::resize_crop(&img, pre.size);
            let x = imageio::to_tensor(std::slice::from_ref(&picture), pre);
            items.push(Item { source: path, stem, picture, x });
        }
    }
    // distinct output names
    let mut seen = HashSet::new();
    for it in &mut items {
        let base = it.stem.clone();
        let mut k = 2;
        while !seen.insert(it.stem.clone()) {
            it.stem = format!("{base}-{k}");
            k += 1;
        }
    }
    Ok(items)
}

fn batches(items: &[Item], size: usize) -> Result<Vec<(std::ops::Range<usize>, Tensor)>> {
    let size = size.max(1);
    let mut out = vec![];
    let mut start = 0;
    while start < items.len() {
        let end = (start + size).min(items.len());
        let shape = &items[start].x.shape;
        let mut data = Vec::new();
        for it in &items[start..end] {
            if &it.x.shape != shape {
                return Err(Error::InvalidArgument(format!(
                    "inputs of different sizes cannot share a batch ({} is {:?}, {} is {:?}); use --batch-size 1",
                    items[start].source.display(),
                    shape,
                    it.source.display(),
                    it.x.shape
                )));
            }
            data.extend_from_slice(&it.x.data);
        }
        out.push((start..end, Tensor::new(vec![end - start, shape[1], shape[2], shape[3]], data)?));
        start = end;
    }
    Ok(out)
}

/// Evaluate `$body` with `$be` bound to the backend `--device` picks (each backend is its own
/// type, so the body is instantiated once per backend).
macro_rules! on_device {
    ($dev:expr, $be:ident => $body:expr) => {
        match $dev {
            DeviceArg::Cpu => {
                let $be = Cpu;
                $body
            }
            DeviceArg::Emu => {
                let $be = Gpu::emulated();
                $body
            }
            DeviceArg::Cuda => match cuda_backend() {
                Ok($be) => $body,
                Err(e) => Err(e),
            },
            DeviceArg::Auto => match auto_backend() {
                Some($be) => $body,
                None => {
                    let $be = Cpu;
                    $body
                }
            },
        }
    };
}

fn load_model(model: &Option<PathBuf>, arch: &Option<String>) -> Result<Model> {
    match model {
        Some(p) => Model::load(p, arch.as_deref()),
        None if arch.is_some() => Err(Error::InvalidArgument("--arch needs --model FILE".into())),
        None => Model::default_model(),
    }
}

/// The run's output set: nothing it reads (the inputs found in folders included, and the model
/// file) may be replaced by an output.
fn output_set(c: &Common) -> Result<OutputSet> {
    let mut out = OutputSet::new(&c.out);
    for p in expand_inputs(&c.image)? {
        out.protect(&p);
    }
    if let Some(m) = &c.model {
        out.protect(m);
    }
    Ok(out)
}

fn png_bytes(img: &RgbImage, name: &str) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).map_err(|e| Error::Image { path: name.into(), msg: e.to_string() })?;
    Ok(buf.into_inner())
}

fn progress(len: usize, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise}").unwrap().progress_chars("=> "));
    pb.set_message(msg.to_string());
    pb
}

#[derive(Clone, Copy, PartialEq)]
enum MapKind {
    Saliency,
    Cam,
    GradCam,
}

fn run_map<B: Backend>(be: B, c: &Common, m: &MapArgs, kind: MapKind) -> Result<()> {
    let model = std::sync::Arc::new(load_model(&c.model, &c.arch)?);
    let eng = Engine::new(model.clone(), be)?;
    let pre = model.preprocess;
    let items = load_items(&c.image, &pre)?;
    let (method, cmap) = match kind {
        MapKind::Saliency => ("saliency", Colormap::Inferno),
        MapKind::Cam => ("cam", Colormap::Turbo),
        MapKind::GradCam => ("gradcam", Colormap::Turbo),
    };
    // saliency is speckled with a few extreme gradients: clip at 99.5 % unless told otherwise
    let percentile = m.clip_percentile.unwrap_or(if kind == MapKind::Saliency { 99.5 } else { 100.0 });
    let clip = (percentile < 100.0).then_some(percentile / 100.0);
    let cam = if kind == MapKind::Cam {
        if c.layer.is_some() {
            return Err(Error::InvalidArgument("cam uses the layer before the classifier; --layer is for gradcam".into()));
        }
        Some(Cam::new(&model)?)
    } else {
        None
    };
    let gradcam = if kind == MapKind::GradCam { Some(GradCam::new(&model, c.layer.as_deref())?) } else { None };
    if kind == MapKind::Saliency && c.layer.is_some() {
        return Err(Error::InvalidArgument("saliency is taken w.r.t. the input image; --layer does not apply".into()));
    }
    let layer_name = match (&cam, &gradcam) {
        (Some(m), _) => Some(model.name(m.feature).to_string()),
        (_, Some(g)) => Some(model.name(g.layer).to_string()),
        _ => None,
    };
    let mut out = output_set(c)?;
    let mut summary = vec![];
    let bs = batches(&items, c.batch_size)?;
    let pb = progress(items.len(), method);
    for (range, x) in bs {
        let targets = c.class.map(|k| vec![k; range.len()]);
        let (maps, cls) = match kind {
            MapKind::Saliency => Saliency.attribute_on_device(&eng, &x, targets.as_deref())?,
            MapKind::Cam => cam.as_ref().unwrap().attribute_on_device(&eng, &x, targets.as_deref())?,
            MapKind::GradCam => gradcam.as_ref().unwrap().attribute_on_device(&eng, &x, targets.as_deref())?,
        };
        let (h, w) = (eng.be.shape(&maps)[2], eng.be.shape(&maps)[3]);
        // the pictures of a batch share its input size; the maps are rendered where they live
        // and only the finished pictures come back
        let pictures: Vec<RgbImage> = items[range.clone()].iter().map(|it| it.picture.clone()).collect();
        let out_hw = [pictures[0].height() as usize, pictures[0].width() as usize];
        let heats = eng.be.render(&maps, None, out_hw, cmap, 0.0, clip)?;
        let overs = eng.be.render(&maps, Some(&pictures), out_hw, cmap, 0.5, clip)?;
        // the raw maps come back only when asked for
        let raw = if c.raw { Some(eng.download(&maps)?) } else { None };
        for (j, it) in items[range.clone()].iter().enumerate() {
            let heat = format!("{}_{method}.png", it.stem);
            let over = format!("{}_{method}_overlay.png", it.stem);
            let mut files = vec![out.add(&heat, &png_bytes(&heats[j], &heat)?)?, out.add(&over, &png_bytes(&overs[j], &over)?)?];
            if let Some(raw) = &raw {
                let t = Tensor::new(vec![h, w], raw.item(j).to_vec())?;
                files.push(out.add(&format!("{}_{method}.npy", it.stem), &imageio::npy::npy_bytes(&t))?);
            }
            summary.push(json!({
                "image": it.source.display().to_string(),
                "class": cls[j],
                "class_name": model.class_name(cls[j]),
                "layer": layer_name,
                "map_shape": [h, w],
                "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            }));
        }
        pb.inc(range.len() as u64);
    }
    pb.finish_and_clear();
    let written = out.commit()?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    } else {
        for s in &summary {
            println!("{}: class {} ({})", s["image"].as_str().unwrap(), s["class"], s["class_name"].as_str().unwrap());
        }
        for p in written {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn run_classify<B: Backend>(be: B, c: &Common, top: usize) -> Result<()> {
    if c.class.is_some() || c.layer.is_some() || c.raw {
        return Err(Error::InvalidArgument("classify takes no --class, --layer or --raw".into()));
    }
    let model = std::sync::Arc::new(load_model(&c.model, &c.arch)?);
    let eng = Engine::new(model.clone(), be)?;
    let items = load_items(&c.image, &model.preprocess)?;
    let mut summary = vec![];
    for (range, x) in batches(&items, c.batch_size)? {
        let preds = classify(&eng, &x, top.max(1))?;
        for (it, p) in items[range].iter().zip(preds) {
            if !c.json {
                println!("{}:", it.source.display());
                for q in &p {
                    println!("  {:>4}  {:<30} logit {:>8.3}  p {:.4}", q.class, q.name, q.logit, q.prob);
                }
            }
            let top: Vec<_> = p
                .iter()
                .map(|q| json!({"class": q.class, "name": q.name, "logit": q.logit, "prob": q.prob}))
                .collect();
            summary.push(json!({"image": it.source.display().to_string(), "top": top}));
        }
    }
    if c.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    }
    Ok(())
}

fn run_dream<B: Backend>(be: B, c: &Common, d: &DreamArgs) -> Result<()> {
    if c.class.is_some() {
        return Err(Error::InvalidArgument("dream amplifies a layer; --class does not apply".into()));
    }
    let model = std::sync::Arc::new(load_model(&c.model, &c.arch)?);
    let eng = Engine::new(model.clone(), be)?;
    let pre = model.preprocess;
    let items = load_items(&c.image, &pre)?;
    let layer = model.resolve(c.layer.as_deref().unwrap_or(&model.graph.heads.dream_layer))?;
    if layer == model.input() {
        return Err(Error::InvalidArgument("dream needs a layer inside the network, not its input".into()));
    }
    let dream = DeepDream {
        objective: Objective::layer(layer),
        octaves: d.octaves,
        octave_scale: d.octave_scale,
        steps: d.steps,
        lr: d.lr,
        jitter: d.jitter,
        seed: d.seed,
    };
    let mut out = output_set(c)?;
    let mut summary = vec![];
    for (range, x) in batches(&items, c.batch_size)? {
        let (_, _, h, w) = x.nchw();
        let pb = progress(dream.total_steps(h, w), &format!("dream {}", model.name(layer)));
        let y = dream.run(&eng, &x, &pre, &mut || pb.inc(1))?;
        pb.finish_and_clear();
        for (j, it) in items[range].iter().enumerate() {
            let img = Tensor::new(vec![1, 3, h, w], y.item(j).to_vec())?;
            let name = format!("{}_dream.png", it.stem);
            let mut files = vec![out.add(&name, &png_bytes(&imageio::to_rgb(&img.data, h, w, &pre), &name)?)?];
            if c.raw {
                files.push(out.add(&format!("{}_dream.npy", it.stem), &imageio::npy::npy_bytes(&img))?);
            }
            summary.push(json!({
                "image": it.source.display().to_string(),
                "layer": model.name(layer),
                "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            }));
        }
    }
    let written = out.commit()?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    } else {
        for p in written {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn run_layers(model: &Option<PathBuf>, arch: &Option<String>, as_json: bool) -> Result<()> {
    let m = load_model(model, arch)?;
    let [h, w] = m.preprocess.size;
    let rows = m.layer_table()?;
    if as_json {
        let v: Vec<_> = rows.iter().map(|r| json!({"layer": r.path, "node": r.node, "op": r.op, "shape": r.shape})).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"arch": m.graph.arch, "origin": m.origin, "layers": v})).unwrap());
    } else {
        println!("{} ({}), input [1, 3, {h}, {w}]; a container yields its last layer's output (→)", m.graph.arch, m.origin);
        for r in rows {
            let yields = if r.node == r.path { r.op.to_string() } else { format!("→ {} ({})", r.node, r.op) };
            println!("  {:<40} {yields:<40} {:?}", r.path, r.shape);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C / SIGTERM / SIGHUP: undo the output set (a commit in progress finishes or rolls
    // back first), then exit as a shell expects of an interrupted program
    let _ = ctrlc::set_handler(|| {
        deepviz::output::abort_all();
        eprintln!("error: interrupted; no output was written");
        std::process::exit(130);
    });
    let r = match &cli.cmd {
        Cmd::Classify { common, top } => on_device!(common.device, be => run_classify(be, common, *top)),
        Cmd::Saliency { common: c, map } => on_device!(c.device, be => run_map(be, c, map, MapKind::Saliency)),
        Cmd::Cam { common: c, map } => on_device!(c.device, be => run_map(be, c, map, MapKind::Cam)),
        Cmd::Gradcam { common: c, map } => on_device!(c.device, be => run_map(be, c, map, MapKind::GradCam)),
        Cmd::Dream { common, dream } => on_device!(common.device, be => run_dream(be, common, dream)),
        Cmd::Layers { model, arch, json } => run_layers(model, arch, *json),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
