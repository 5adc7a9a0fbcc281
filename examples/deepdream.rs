//! DeepDream (Mordvintsev et al. 2015): amplify what a layer sees in a photo by gradient ascent
//! on ½‖A‖² of its activations, over octaves with jitter — with the default model, as a library
//! user writes it.
//!
//! ```text
//! cargo run --release --example deepdream -- IMAGE OUT.png [--layer PATH] [--octaves N] [--steps N] [--size PX] [--device auto|cpu|cuda:N|emu]
//! ```
//!
//! `--layer` is a PyTorch module path (default: the model's usual dream layer); the photo is
//! resized to `--size` pixels on its short side (default 224); a progress line counts the steps.

use std::io::Write;
use std::path::PathBuf;

use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::job::{with_backend, DeviceChoice, WithBackend};
use deepviz::model::Model;
use deepviz::viz::{DeepDream, Objective};
use deepviz::{imageio, Error, Result};

struct Job {
    image: PathBuf,
    out: PathBuf,
    layer: Option<String>,
    octaves: usize,
    steps: usize,
    size: usize,
}

impl WithBackend for Job {
    type Output = ();
    fn run<B: Backend>(self, be: B) -> Result<()> {
        let eng = Engine::new(Model::default_model()?, be)?;
        let m = eng.model();
        let layer = m.resolve(self.layer.as_deref().unwrap_or(&m.graph.heads.dream_layer))?;
        let photo = imageio::load_rgb(&self.image)?;
        let scale = self.size as f64 / photo.width().min(photo.height()).max(1) as f64;
        let (w, h) = ((photo.width() as f64 * scale).round() as usize, (photo.height() as f64 * scale).round() as usize);
        let pre = m.preprocess;
        let x = imageio::to_tensor(&[image::imageops::resize(&photo, w as u32, h as u32, image::imageops::FilterType::Triangle)], &pre);
        let dream = DeepDream { octaves: self.octaves, steps: self.steps, ..DeepDream::new(Objective::layer(layer)) };
        let total = dream.total_steps(h, w);
        let mut done = 0;
        let y = dream.run(&eng, &x, &pre, &mut || {
            done += 1;
            eprint!("\rstep {done}/{total}");
            let _ = std::io::stderr().flush();
        })?;
        eprintln!();
        imageio::write_png(&self.out, &imageio::to_rgb(&y.data, h, w, &pre))?;
        println!("wrote {} ({w}x{h}, layer {})", self.out.display(), m.graph.nodes[layer.node()].name);
        Ok(())
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| match args.iter().position(|a| a == name) {
        Some(i) if i + 1 < args.len() => args.drain(i..i + 2).nth(1),
        _ => None,
    };
    let (layer, octaves, steps, size, device) = (flag("--layer"), flag("--octaves"), flag("--steps"), flag("--size"), flag("--device"));
    let (Some(image), Some(out)) = (args.first().map(PathBuf::from), args.get(1).map(PathBuf::from)) else {
        eprintln!("usage: deepdream IMAGE OUT.png [--layer PATH] [--octaves N] [--steps N] [--size PX] [--device auto|cpu|cuda:N|emu]");
        std::process::exit(2);
    };
    let run = || -> Result<()> {
        let count = |v: Option<String>, name: &str, default: usize| {
            v.map_or(Ok(default), |s| s.parse().map_err(|_| Error::InvalidArgument(format!("{name}: not a count: {s}"))))
        };
        let job = Job { layer, octaves: count(octaves, "--octaves", 4)?, steps: count(steps, "--steps", 10)?, size: count(size, "--size", 224)?, image, out };
        if job.out.canonicalize().ok() == Some(job.image.canonicalize().map_err(|source| Error::Io { path: job.image.clone(), source })?) {
            return Err(Error::InvalidArgument("OUT.png is the input photo: choose another name".into()));
        }
        let choice: DeviceChoice = device.as_deref().unwrap_or("auto").parse()?;
        with_backend(choice, None, deepviz::job::gpu_precision("dream"), &mut |n| eprintln!("note: {n}"), job)
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
