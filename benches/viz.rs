//! End-to-end visualisation throughput on the default model (EfficientNet-Lite0, 224×224):
//! saliency, Grad-CAM and one DeepDream step, batch 1 and 8, per backend. Each result is
//! checked before anything is timed; rates are images per second.
//!
//! Run: `cargo bench --bench viz`. Compare against PyTorch on the same machine in the same run
//! (`../shared/gpu/torch_baseline.py` on a GPU machine; see benches/RESULTS.md).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deepviz::backend::cpu::Cpu;
use deepviz::engine::Engine;
use deepviz::imageio::{load_rgb, resize_crop, to_tensor};
use deepviz::model::Model;
use deepviz::viz::{Attribution, DeepDream, GradCam, Objective, Saliency};
use deepviz::Tensor;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

fn batch(model: &Model, n: usize) -> Tensor {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let imgs: Vec<_> = ["chelsea.png", "coffee.png"]
        .iter()
        .map(|f| resize_crop(&load_rgb(&p.join(f)).unwrap(), model.preprocess.size))
        .cycle()
        .take(n)
        .collect();
    to_tensor(&imgs, &model.preprocess)
}

fn bench(c: &mut Criterion) {
    let model = std::sync::Arc::new(Model::default_model().unwrap());
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let gradcam = GradCam::new(&eng, None).unwrap();
    let saliency = Saliency::new(&eng);
    let layer = model.resolve(&model.graph.heads.dream_layer).unwrap();
    let dream = DeepDream::new(Objective::layer(layer));
    let mut g = c.benchmark_group(format!("viz_{}_efficientnet_lite0", deepviz::backend::Backend::name(&eng.be)));
    g.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    for n in [1usize, 8] {
        let x = batch(&model, n);
        // check before timing: the cat and the cup are found, maps are finite and not all zero
        let (s, cls) = saliency.attribute(&x, None).unwrap();
        let cls: Vec<usize> = cls.iter().filter_map(|t| t.class()).collect();
        assert_eq!(&cls[..2.min(n)], &[285, 967][..2.min(n)]);
        assert!(s.data.iter().all(|v| v.is_finite()) && s.data.iter().any(|&v| v > 0.0));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("saliency", n), &x, |b, x| {
            b.iter(|| black_box(saliency.attribute(x, None).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("gradcam", n), &x, |b, x| {
            b.iter(|| black_box(gradcam.attribute(x, None).unwrap()))
        });
        g.bench_with_input(BenchmarkId::new("dream_step", n), &x, |b, x| {
            let mut img = eng.upload(x).unwrap();
            let mut rng = 1u64;
            b.iter(|| black_box(dream.step(&eng, &mut img, &model.preprocess, &mut rng).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
