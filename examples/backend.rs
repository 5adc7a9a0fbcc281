//! deepviz as a backend: load a model, run its forward pass on the GPU engine (or the CPU
//! engine), keep a layer, and take gradients from your own seeds — the building blocks every
//! method here is made of, for a method of your own.
//!
//! ```text
//! cargo run --release --example backend -- [IMAGE] [--model FILE] [--layer PATH] [--device auto|cpu|cuda:N|emu]
//! ```
//!
//! Prints the top-5 classes, the kept layer's shape and mean activation, the gradient of the
//! top class's score at the input and at that layer, and checks one directional derivative of
//! the score against a finite difference (so you can see the gradient is the true one).

use std::path::PathBuf;

use deepviz::backend::Backend;
use deepviz::engine::{Engine, Rule};
use deepviz::job::{with_backend, DeviceChoice, WithBackend};
use deepviz::model::Model;
use deepviz::{imageio, Error, Result, Tensor};

struct Job {
    image: PathBuf,
    model: Option<PathBuf>,
    layer: Option<String>,
}

impl WithBackend for Job {
    type Output = ();
    fn run<B: Backend>(self, be: B) -> Result<()> {
        println!("backend: {}", be.name());
        let model = match &self.model {
            Some(p) => Model::load(p, None)?,
            None => Model::default_model()?,
        };
        let eng = Engine::new(model, be)?;
        let m = eng.model();
        let pre = m.preprocess;
        let x = imageio::to_tensor(&[imageio::resize_crop(&imageio::load_rgb(&self.image)?, pre.size)], &pre);
        let (input, out) = (m.input(), m.output());
        let layer = m.resolve(self.layer.as_deref().unwrap_or(&m.graph.heads.dream_layer))?;

        // forward to the logits, keeping one layer; everything stays on the backend
        let acts = eng.forward(eng.upload(&x)?, out, &[layer])?;
        let logits = eng.download(acts.get(out).expect("the output is kept"))?;
        let mut order: Vec<usize> = (0..logits.numel()).collect();
        order.sort_by(|&a, &b| logits.data[b].total_cmp(&logits.data[a]));
        for &c in &order[..5.min(order.len())] {
            println!("  {:8.3}  {c:4} {}", logits.data[c], m.class_name(c));
        }
        let a = eng.download(acts.get(layer).expect("kept"))?;
        println!("layer {}: shape {:?}, mean {:.4}", m.graph.nodes[layer.node()].name, a.shape, a.data.iter().sum::<f32>() / a.numel() as f32);

        // backward from a one-hot seed at the logits (the top class's pre-softmax score) to the
        // input and to the kept layer, under the plain gradient rule
        let top = order[0];
        let mut seed = Tensor::zeros(&logits.shape);
        seed.data[top] = 1.0;
        let g = eng.backward(&acts, vec![(out, eng.upload(&seed)?)], &[input, layer], Rule::Gradient)?;
        let (gx, ga) = (eng.download(&g[0])?, eng.download(&g[1])?);
        let norm = |t: &Tensor| t.data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        println!("|d score / d input| = {:.4e}, |d score / d layer| = {:.4e}", norm(&gx), norm(&ga));

        // the gradient is the true one: a central difference along it agrees with |gx|²
        let h = 1e-3 / norm(&gx).max(1e-12);
        let score = |sign: f64| -> Result<f64> {
            let xs = Tensor::new(x.shape.clone(), x.data.iter().zip(&gx.data).map(|(v, g)| v + (sign * h) as f32 * g).collect())?;
            let acts = eng.forward(eng.upload(&xs)?, out, &[])?;
            Ok(eng.download(acts.get(out).expect("kept"))?.data[top] as f64)
        };
        let fd = (score(1.0)? - score(-1.0)?) / (2.0 * h);
        println!("directional derivative: backward {:.4e}, finite difference {fd:.4e}", norm(&gx).powi(2));
        Ok(())
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| match args.iter().position(|a| a == name) {
        Some(i) if i + 1 < args.len() => args.drain(i..i + 2).nth(1),
        _ => None,
    };
    let (model, layer, device) = (flag("--model").map(PathBuf::from), flag("--layer"), flag("--device"));
    let image = args.first().map_or_else(|| PathBuf::from("samples/chelsea.png"), PathBuf::from);
    let run = || -> Result<()> {
        let choice: DeviceChoice = device.as_deref().unwrap_or("auto").parse()?;
        with_backend(choice, None, deepviz::backend::Precision::F32, &mut |n| eprintln!("note: {n}"), Job { image, model, layer })
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(match e {
            Error::InvalidArgument(_) => 2,
            _ => 1,
        });
    }
}
