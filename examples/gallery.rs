//! One picture per method (the README's gallery) and each method's images per second.
//!
//!     cargo run --release --example gallery -- OUT.jpg [IMAGE] [--batch 8] [--reps 3]
//!
//! On the default model (EfficientNet-Lite0) and the CPU engine: every attribution method of
//! the registry with its defaults (the overlay of its map on IMAGE, default
//! samples/chelsea.png, for the image's top class), Grad-CAM with `aug_smooth` at two layers,
//! the weakly supervised segmentation from saliency, DeepDream, and the class model of the
//! top class, tiled with their names into OUT (PNG or JPEG by its extension; the README's is
//! docs/methods.jpg). Then, per attribution method, the time of
//! one call on a batch of `--batch` copies of the image (median of `--reps`, after a warm-up),
//! printed as one JSON line per method: `{"method", "batch", "ms", "images_per_s"}`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::{Backend, Unary};
use deepviz::engine::Engine;
use deepviz::imageio;
use deepviz::job::{DreamJob, Inputs};
use deepviz::model::Model;
use deepviz::viz::render::{self, Style};
use deepviz::viz::segment::{largest_component, overlay, GrabCut};
use deepviz::viz::{attribution, plot, Maximize, MethodOptions, Target, METHODS};
use deepviz::Tensor;
use image::RgbImage;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| a.iter().position(|s| s == name).map_or(default, |i| a[i + 1].parse().expect("a number"));
    let (batch, reps) = (flag("--batch", 8), flag("--reps", 3));
    let positional: Vec<&String> = a.iter().enumerate().filter(|(i, s)| !s.starts_with("--") && (*i == 0 || !a[i - 1].starts_with("--"))).map(|(_, s)| s).collect();
    let Some(out) = positional.first() else {
        eprintln!("usage: gallery OUT.jpg [IMAGE] [--batch 8] [--reps 3]");
        std::process::exit(2);
    };
    let image = positional.get(1).map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/chelsea.png"), PathBuf::from);
    let model = Arc::new(Model::default_model()?);
    let eng = Engine::new(model.clone(), Cpu)?;
    let pre = model.preprocess;
    let b = Inputs::expand(&[image])?.batches(&pre, 1).next().expect("one image")?;
    let (x, picture) = (b.x, b.items[0].picture.clone());
    let top = deepviz::viz::classify(&eng, &x, 1)?[0][0].class;
    let target = [Target::Class(top)];
    let mut tiles: Vec<(RgbImage, String)> = vec![(picture.clone(), format!("input: {}", model.class_name(top)))];
    let overlay_of = |maps: &<Cpu as Backend>::T, name: &str| -> deepviz::Result<RgbImage> {
        let info = deepviz::viz::method_info(name).expect("a method");
        let shown = if info.signed { eng.be.unary(maps, Unary::Abs)? } else { maps.clone() };
        let style = Style { colormap: info.colormap, clip: (info.clip_percentile < 100.0).then_some(info.clip_percentile / 100.0), alpha: 0.5 };
        Ok(render::pictures(&eng.be, &shown, &[picture.clone()], &style)?.remove(0).1)
    };
    let xd = eng.upload(&x)?;
    for m in METHODS {
        let (maps, _) = attribution(&eng, m.name, &MethodOptions::default())?.attribute_on_device(&xd, Some(&target))?;
        tiles.push((overlay_of(&maps, m.name)?, m.name.to_string()));
    }
    let opts = MethodOptions { layers: vec!["_blocks.10".into(), "_blocks.15".into()], aug_smooth: true, ..Default::default() };
    let (maps, _) = attribution(&eng, "gradcam", &opts)?.attribute_on_device(&xd, Some(&target))?;
    tiles.push((overlay_of(&maps, "gradcam")?, "gradcam, 2 layers, aug".into()));
    let (maps, _) = attribution(&eng, "saliency", &MethodOptions::default())?.attribute_on_device(&xd, Some(&target))?;
    let [h, w] = pre.size;
    let norm = render::normalized(&eng.be, &eng.be.unary(&maps, Unary::Abs)?, [h, w], None)?;
    let seg = GrabCut::default().segment_map(&picture, norm.item(0))?;
    tiles.push((overlay(&picture, &largest_component(&seg.mask, h, w)?)?, "segment (saliency)".into()));
    let dream = DreamJob::default().dream_tensor(&eng, &x, &mut |_| {})?;
    tiles.push((imageio::to_rgb(&dream.data, h, w, &pre), "dream".into()));
    let class_model = Maximize::default().run(&eng, &target, [h, w], &pre, &mut || {})?;
    tiles.push((imageio::to_rgb(&class_model.data, h, w, &pre), format!("maximize class {top}")));
    plot::tile_grid(&tiles, 224, 5).save(out)?;
    eprintln!("wrote {out}");

    // images per second, per method, on a batch of copies
    let xb = Tensor::new(vec![batch, 3, h, w], (0..batch).flat_map(|_| x.data.iter().copied()).collect())?;
    let targets = vec![Target::Class(top); batch];
    for m in METHODS {
        let method = attribution(&eng, m.name, &MethodOptions::default())?;
        let call = || -> deepviz::Result<f64> {
            let t = Instant::now();
            method.attribute(&xb, Some(&targets))?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        call()?;
        let mut ms: Vec<f64> = (0..reps.max(1)).map(|_| call()).collect::<deepviz::Result<_>>()?;
        ms.sort_by(f64::total_cmp);
        let med = ms[ms.len() / 2];
        println!("{}", serde_json::json!({"method": m.name, "batch": batch, "ms": med, "images_per_s": batch as f64 * 1e3 / med}));
    }
    Ok(())
}
