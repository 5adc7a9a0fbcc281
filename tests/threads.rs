//! Threads: what the library lets several threads share, and that sharing it gives the same
//! bits as one thread. `Model`, `Engine<Cpu>` and `Engine<Gpu>` (and the methods made from an
//! engine) are `Send + Sync`; these tests run them from several threads at once and compare
//! every map with the one-thread result, bit for bit.

mod common;

use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::model::{Layer, Model};
use deepviz::viz::{Attribution, GradCam, Saliency, Target};
use deepviz::Tensor;

/// The types a caller may share between threads (a compile-time check: this file does not build
/// if one stops being `Send + Sync`).
#[test]
fn the_shared_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Model>();
    send_sync::<Arc<Model>>();
    send_sync::<Layer>();
    send_sync::<Target>();
    send_sync::<Tensor>();
    send_sync::<Engine<Cpu>>();
    send_sync::<Engine<Gpu>>();
    send_sync::<Gpu>();
    send_sync::<Saliency<'static, Cpu>>();
    send_sync::<GradCam<'static, Gpu>>();
    send_sync::<deepviz::Error>();
}

/// Saliency and Grad-CAM of `x` at each item's top class.
fn maps<B: Backend>(eng: &Engine<B>, x: &Tensor) -> (Tensor, Tensor, Vec<Target>) {
    let (sal, t) = Saliency::new(eng).attribute(x, None).unwrap();
    let (cam, _) = GradCam::new(eng, None).unwrap().attribute(x, Some(&t)).unwrap();
    (sal, cam, t)
}

fn same_bits(what: &str, got: &(Tensor, Tensor, Vec<Target>), want: &(Tensor, Tensor, Vec<Target>)) {
    assert_eq!(got.2, want.2, "{what}: targets differ");
    for (name, g, w) in [("saliency", &got.0, &want.0), ("gradcam", &got.1, &want.1)] {
        assert_eq!(g.shape, w.shape, "{what}: {name} shapes differ");
        if let Some(i) = g.data.iter().zip(&w.data).position(|(a, b)| a.to_bits() != b.to_bits()) {
            panic!("{what}: {name} differs first at index {i}: {} vs {}", g.data[i], w.data[i]);
        }
    }
}

#[test]
fn four_threads_share_one_cpu_engine() {
    let model = Arc::new(common::st::fixture_model("resnet18"));
    let inputs: Vec<Tensor> = (0..4).map(|t| common::seeded_tensor(40 + t, &[2, 3, 33, 31])).collect();
    // one thread, its own engine
    let alone = Engine::new(model.clone(), Cpu).unwrap();
    let want: Vec<_> = inputs.iter().map(|x| maps(&alone, x)).collect();
    // a fresh engine (its convolution weights are prepared on first use, here by whichever
    // thread gets there first), shared by four threads, each running its input twice
    let shared = Engine::new(model, Cpu).unwrap();
    std::thread::scope(|s| {
        for (t, (x, want)) in inputs.iter().zip(&want).enumerate() {
            let eng = &shared;
            s.spawn(move || {
                for round in 0..2 {
                    same_bits(&format!("thread {t}, round {round}"), &maps(eng, x), want);
                }
            });
        }
    });
}

#[test]
fn two_models_on_one_emulated_device_at_once() {
    let gpu = Gpu::emulated();
    let a = Engine::new(common::st::fixture_model("squeezenet1_1"), gpu.clone()).unwrap();
    let b = Engine::new(common::st::fixture_model("resnet18"), gpu.clone()).unwrap();
    let xa = common::seeded_tensor(5, &[1, 3, 35, 33]);
    let xb = common::seeded_tensor(6, &[2, 3, 32, 36]);
    let (want_a, want_b) = (maps(&a, &xa), maps(&b, &xb));
    // both at once, twice each, on the one device and its one memory pool
    std::thread::scope(|s| {
        s.spawn(|| (0..2).for_each(|r| same_bits(&format!("squeezenet1_1, round {r}"), &maps(&a, &xa), &want_a)));
        s.spawn(|| (0..2).for_each(|r| same_bits(&format!("resnet18, round {r}"), &maps(&b, &xb), &want_b)));
    });
}
