//! Determinism: the same inputs on the same device and build give bit-identical maps — run
//! twice in one process, on two engines made from the same model, and from a model loaded
//! twice. On the emulated GPU also under every thread schedule the emulator has (forward,
//! reversed, shuffled at each barrier): the kernels reduce in a fixed order (no float atomics),
//! so the order threads run in must not show in a single bit.

mod common;

use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::device::emu::{EmuDevice, Schedule};
use deepviz::engine::Engine;
use deepviz::model::Model;
use deepviz::viz::{Attribution, GradCam, Saliency, Target};
use deepviz::Tensor;

/// Saliency and Grad-CAM (each item's top class, so the device argmax is in the path too).
fn maps<B: Backend>(eng: &Engine<B>, x: &Tensor) -> (Vec<Tensor>, Vec<Target>) {
    let (sal, targets) = Saliency::new(eng).attribute(x, None).unwrap();
    let (cam, t2) = GradCam::new(eng, None).unwrap().attribute(x, None).unwrap();
    assert_eq!(targets, t2, "{}: the two methods chose different top classes", eng.model().origin);
    (vec![sal, cam], targets)
}

/// Panics at the first bit that differs, naming the map, the index and both values.
fn identical(what: &str, got: &(Vec<Tensor>, Vec<Target>), want: &(Vec<Tensor>, Vec<Target>)) {
    assert_eq!(got.1, want.1, "{what}: targets differ");
    for (k, (g, w)) in got.0.iter().zip(&want.0).enumerate() {
        let name = ["saliency", "gradcam"][k];
        assert_eq!(g.shape, w.shape, "{what}: {name} shapes differ");
        if let Some(i) = g.data.iter().zip(&w.data).position(|(a, b)| a.to_bits() != b.to_bits()) {
            panic!("{what}: {name} differs first at index {i}: {} vs {} (bits {:#x} vs {:#x})", g.data[i], w.data[i], g.data[i].to_bits(), w.data[i].to_bits());
        }
    }
}

#[test]
fn the_cpu_engine_is_bit_identical_run_to_run_and_engine_to_engine() {
    let model = Arc::new(common::st::fixture_model("resnet18"));
    let x = common::seeded_tensor(7, &[3, 3, 37, 29]);
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let first = maps(&eng, &x);
    assert!(first.0.iter().all(|m| m.data.iter().any(|&v| v != 0.0)), "the maps are not all zero");
    identical("cpu, same engine, second run", &maps(&eng, &x), &first);
    identical("cpu, second engine", &maps(&Engine::new(model, Cpu).unwrap(), &x), &first);
    identical("cpu, model loaded again", &maps(&Engine::new(common::st::fixture_model("resnet18"), Cpu).unwrap(), &x), &first);
}

#[test]
fn the_emulated_gpu_is_bit_identical_run_to_run_and_under_every_schedule() {
    let model = Arc::new(common::st::fixture_model("squeezenet1_1"));
    let x = common::seeded_tensor(11, &[2, 3, 35, 33]);
    let eng = Engine::new(model.clone(), Gpu::emulated()).unwrap();
    let first = maps(&eng, &x);
    assert!(first.0.iter().all(|m| m.data.iter().any(|&v| v != 0.0)), "the maps are not all zero");
    identical("emu, same engine, second run", &maps(&eng, &x), &first);
    for s in Schedule::ALL {
        let eng = Engine::new(model.clone(), Gpu::new(Arc::new(EmuDevice::with_schedule(s)))).unwrap();
        identical(&format!("emu, {s:?} schedule, new engine"), &maps(&eng, &x), &first);
    }
    let again: Model = common::st::fixture_model("squeezenet1_1");
    identical("emu, model loaded again", &maps(&Engine::new(again, Gpu::emulated()).unwrap(), &x), &first);
}
