//! Saliency (Simonyan et al. 2014) for one photo with the default model, as a library user
//! writes it: load, preprocess, attribute, render, write.
//!
//! ```text
//! cargo run --release --example saliency -- samples/chelsea.png [OUT_DIR] [--device auto|cpu|cuda:N|emu]
//! ```
//!
//! Writes `OUT_DIR/<stem>_saliency.png` (the map) and `<stem>_saliency_overlay.png` (over the
//! photo) — OUT_DIR defaults to `example-out` — and prints the class the map explains. Runs on
//! the GPU when the CUDA driver sees one, on the CPU engine otherwise.

use std::path::{Path, PathBuf};

use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::job::{gpu_precision, with_backend, DeviceChoice, WithBackend};
use deepviz::model::Model;
use deepviz::viz::render::{pictures, Style};
use deepviz::viz::{method_info, Attribution, Saliency, Target};
use deepviz::{imageio, Tensor};

struct Job {
    image: PathBuf,
    out: PathBuf,
}

impl WithBackend for Job {
    type Output = ();
    fn run<B: Backend>(self, be: B) -> deepviz::Result<()> {
        let eng = Engine::new(Model::default_model()?, be)?;
        let pre = eng.model().preprocess;
        let photo = imageio::resize_crop(&imageio::load_rgb(&self.image)?, pre.size);
        let x = imageio::to_tensor(std::slice::from_ref(&photo), &pre);
        // the top class's pre-softmax score, its gradient at the pixels, max |.| over colours
        let (map, targets) = Saliency::new(&eng).attribute(&x, None)?;
        if let Target::Class(c) = targets[0] {
            println!("{}: class {c} ({})", self.image.display(), eng.model().class_name(c));
        }
        let [h, w] = [map.shape[1], map.shape[2]];
        let maps = eng.upload(&Tensor::new(vec![1, 1, h, w], map.data)?)?;
        let info = method_info("saliency").expect("a registered method");
        let style = Style { colormap: info.colormap, clip: Some(info.clip_percentile / 100.0), alpha: 0.5 };
        let (heat, overlay) = pictures(&eng.be, &maps, &[photo], &style)?.remove(0);
        let stem = self.image.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
        std::fs::create_dir_all(&self.out).map_err(|source| deepviz::Error::Io { path: self.out.clone(), source })?;
        for (name, img) in [(format!("{stem}_saliency.png"), heat), (format!("{stem}_saliency_overlay.png"), overlay)] {
            let path = self.out.join(name);
            imageio::write_png(&path, &img)?;
            println!("wrote {}", path.display());
        }
        Ok(())
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let device = match args.iter().position(|a| a == "--device") {
        Some(i) if i + 1 < args.len() => args.drain(i..i + 2).nth(1).expect("two drained"),
        _ => "auto".into(),
    };
    let Some(image) = args.first().map(PathBuf::from) else {
        eprintln!("usage: saliency IMAGE [OUT_DIR] [--device auto|cpu|cuda:N|emu]");
        std::process::exit(2);
    };
    let out = args.get(1).map_or_else(|| Path::new("example-out").to_path_buf(), PathBuf::from);
    let run = || -> deepviz::Result<()> {
        let choice: DeviceChoice = device.parse()?;
        let gpu_default = gpu_precision("saliency");
        with_backend(choice, None, gpu_default, &mut |n| eprintln!("note: {n}"), Job { image, out })
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
