//! A GPU that runs out of memory (issue 9): the error says what was asked, what is free and
//! which batch would fit, and the engine stays usable — on the emulated device with a finite
//! memory ([`EmuDevice::with_memory_limit`]), as on a real card.

use std::sync::Arc;

use deepviz::backend::cuda::Gpu;
use deepviz::device::emu::EmuDevice;
use deepviz::device::Device;
use deepviz::engine::Engine;
use deepviz::model::Model;
use deepviz::viz::{Attribution, Saliency};
use deepviz::{Error, Tensor};

fn input(n: usize, side: usize) -> Tensor {
    let data = (0..n * 3 * side * side).map(|i| ((i * 2654435761usize % 1000) as f32 / 500.0) - 1.0).collect();
    Tensor::new(vec![n, 3, side, side], data).unwrap()
}

#[test]
fn out_of_memory_names_the_batch_that_fits_and_the_engine_goes_on() {
    let model = Arc::new(Model::default_model().unwrap());
    let side = 64;
    // the weights' share of a device, measured on one without a limit
    let probe = Arc::new(EmuDevice::new().with_memory_limit(1 << 30));
    let eng = Engine::new(model.clone(), Gpu::new(probe.clone())).unwrap();
    let (free, total) = probe.memory().unwrap();
    let weights = total - free;
    let x1 = input(1, side);
    let want = Saliency::new(&eng).attribute(&x1, None).unwrap();
    let (free1, _) = probe.memory().unwrap();
    let one = total - free1 - weights;
    drop(eng);
    eprintln!("weights {weights} bytes, one item's pass {one} bytes");

    // room for the weights and a few items' passes, not for sixteen
    let dev = Arc::new(EmuDevice::new().with_memory_limit(weights + 4 * one));
    let eng = Engine::new(model, Gpu::new(dev.clone())).unwrap();
    let err = Saliency::new(&eng).attribute(&input(16, side), None).expect_err("sixteen items cannot fit");
    let msg = err.to_string();
    eprintln!("{msg}");
    let Error::OutOfMemory { asked, free, total, fits: Some(k), .. } = err else { panic!("not the device's out-of-memory error: {msg}") };
    assert!(asked > free && total == weights + 4 * one, "{msg}");
    assert!((1..16).contains(&k), "{msg}");
    assert!(msg.contains(&format!("a batch of at most {k} should fit")), "{msg}");
    // the batch it names does fit, on the same engine
    let (maps, _) = Saliency::new(&eng).attribute(&input(k, side), None).unwrap();
    assert_eq!(maps.shape, [k, side, side]);
    // and a normal job afterwards gives the maps of an engine that never ran out
    let got = Saliency::new(&eng).attribute(&x1, None).unwrap();
    assert_eq!(got.1, want.1);
    assert!(got.0.data == want.0.data, "the maps changed after running out of memory");
}
