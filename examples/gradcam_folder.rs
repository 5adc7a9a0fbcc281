//! Grad-CAM (Selvaraju et al. 2017) over every image of a folder, in batches, with the default
//! model or a `.safetensors` / `.onnx` model of your own, as a library user writes it.
//!
//! ```text
//! cargo run --release --example gradcam_folder -- FOLDER OUT_DIR [--layer PATH] [--model FILE] [--batch N] [--device auto|cpu|cuda:N|emu]
//! ```
//!
//! Writes `OUT_DIR/<name>_gradcam_overlay.png` for each image (the folder's structure kept, as
//! `deepviz gradcam --image FOLDER` does) and prints each image's class. `--layer` is a PyTorch
//! module path (default: the model's last convolutional block). OUT_DIR must not be inside
//! FOLDER.

use std::path::{Path, PathBuf};

use deepviz::backend::Backend;
use deepviz::dataset::Dataset;
use deepviz::engine::Engine;
use deepviz::job::{gpu_precision, with_backend, DeviceChoice, WithBackend};
use deepviz::model::Model;
use deepviz::viz::render::{pictures, Style};
use deepviz::viz::{method_info, Attribution, GradCam, Target};
use deepviz::{imageio, Error, Result};

struct Job {
    folder: PathBuf,
    out: PathBuf,
    layer: Option<String>,
    model: Option<PathBuf>,
    batch: usize,
}

impl WithBackend for Job {
    type Output = ();
    fn run<B: Backend>(self, be: B) -> Result<()> {
        let model = match &self.model {
            Some(p) => Model::load(p, None)?,
            None => Model::default_model()?,
        };
        let eng = Engine::new(model, be)?;
        let cam = GradCam::new(&eng, self.layer.as_deref())?;
        let ds = Dataset::open(&self.folder)?;
        let pre = eng.model().preprocess;
        let info = method_info("gradcam").expect("a registered method");
        let style = Style { colormap: info.colormap, clip: Some(info.clip_percentile / 100.0), alpha: 0.5 };
        println!("{} images, layer {}", ds.len(), cam.layer_name().unwrap_or_default());
        for (b, chunk) in ds.files.chunks(self.batch.max(1)).enumerate() {
            let photos = chunk.iter().map(|f| Ok(imageio::resize_crop(&imageio::load_rgb(f)?, pre.size))).collect::<Result<Vec<_>>>()?;
            let x = eng.upload(&imageio::to_tensor(&photos, &pre))?;
            // the maps stay on the backend: upsampled, normalised and coloured there
            let (maps, targets) = cam.attribute_on_device(&x, None)?;
            let targets = targets.resolve(&eng)?;
            for (i, (_, overlay)) in pictures(&eng.be, &maps, &photos, &style)?.into_iter().enumerate() {
                let k = b * self.batch + i;
                let name = Path::new(&ds.names[k]);
                let path = self.out.join(name.with_file_name(format!("{}_gradcam_overlay.png", name.file_stem().and_then(|s| s.to_str()).unwrap_or("image"))));
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
                }
                imageio::write_png(&path, &overlay)?;
                let class = match targets[i] {
                    Target::Class(c) => format!("class {c} ({})", eng.model().class_name(c)),
                    ref t => format!("{t:?}"),
                };
                println!("[{}/{}] {}: {class} -> {}", k + 1, ds.len(), ds.names[k], path.display());
            }
        }
        Ok(())
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| match args.iter().position(|a| a == name) {
        Some(i) if i + 1 < args.len() => args.drain(i..i + 2).nth(1),
        _ => None,
    };
    let (layer, model, batch, device) = (flag("--layer"), flag("--model").map(PathBuf::from), flag("--batch"), flag("--device"));
    let [folder, out] = [args.first(), args.get(1)].map(|a| a.map(PathBuf::from));
    let (Some(folder), Some(out)) = (folder, out) else {
        eprintln!("usage: gradcam_folder FOLDER OUT_DIR [--layer PATH] [--model FILE] [--batch N] [--device auto|cpu|cuda:N|emu]");
        std::process::exit(2);
    };
    let run = || -> Result<()> {
        let batch = batch.map_or(Ok(8), |b| b.parse().map_err(|_| Error::InvalidArgument(format!("--batch: not a count: {b}"))))?;
        if out.canonicalize().ok().zip(folder.canonicalize().ok()).is_some_and(|(o, f)| o.starts_with(f)) {
            return Err(Error::InvalidArgument("OUT_DIR is inside FOLDER: its pictures would be read as inputs next time".into()));
        }
        let choice: DeviceChoice = device.as_deref().unwrap_or("auto").parse()?;
        with_backend(choice, None, gpu_precision("gradcam"), &mut |n| eprintln!("note: {n}"), Job { folder, out, layer, model, batch })
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
