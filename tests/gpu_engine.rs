//! The CUDA engine end to end: every visualisation on the GPU backend — the emulated device in
//! CI, the real GPU too when one is present — against the CPU engine, to 1e-4 relative RMS in
//! f32. Models: the real default (EfficientNet-Lite0, package naming, TF SAME padding) and
//! random-weight resnet18, googlenet, mobilenet_v2 and squeezenet1_1 from the golden fixtures' tensor
//! lists. Inputs are small (the emulator runs every CUDA thread as a fiber) and drawn to be
//! well-conditioned (see `conditioned_input`).

mod common;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::Backend;
use std::sync::Arc;

use deepviz::engine::{Engine, Rule};
use deepviz::model::Model;
use deepviz::viz::{Attribution, Cam, DeepDream, GradCam, Objective, Saliency, Target};
use deepviz::Tensor;

/// Every map the check compares, on the CPU engine: saliency, Grad-CAM and the DeepDream
/// gradient, for fixed target classes.
fn cpu_maps(eng: &Engine<Cpu>, x: &Tensor, cls: &[Target]) -> Vec<Tensor> {
    let m = eng.model();
    let layer = m.resolve(&m.graph.heads.dream_layer).unwrap();
    let acts = eng.forward(x.clone(), layer, &[]).unwrap();
    let seed = acts.get(layer).unwrap().clone();
    vec![
        Saliency::new(eng).attribute(x, Some(cls)).unwrap().0,
        GradCam::new(eng, None).unwrap().attribute(x, Some(cls)).unwrap().0,
        eng.backward(&acts, vec![(layer, seed)], &[m.input()], Rule::Gradient).unwrap().remove(0),
    ]
}

/// Gradients through ReLU gates and max-pool choices are discontinuous: where a pre-activation
/// sits within float32 rounding of a kink, two correct float32 engines that sum in different
/// orders disagree by far more than 1e-4 (seen on an H200: 5e-3 on saliency). So the input is
/// drawn until it is well-conditioned: the CPU engine's maps at x and at x·(1 ± 1e-5) agree to
/// 1e-4 relative RMS (a smooth change moves them ~1e-5; a flipped gate, 1e-3 or more). Between
/// such points, the 1e-4 comparison tests the kernels, not the luck of the rounding.
fn conditioned_input(eng: &Engine<Cpu>, h: usize, w: usize) -> (Tensor, Vec<Target>) {
    for seed in 0..48u64 {
        let x = Tensor::new(vec![2, 3, h, w], common::seeded(100 + seed, 2 * 3 * h * w)).unwrap();
        let (_, cls) = Saliency::new(eng).attribute(&x, None).unwrap();
        let a = cpu_maps(eng, &x, &cls);
        let stable = [1e-5f32, -1e-5].iter().all(|d| {
            let xp = Tensor::new(x.shape.clone(), x.data.iter().map(|v| v * (1.0 + d)).collect()).unwrap();
            let b = cpu_maps(eng, &xp, &cls);
            a.iter().zip(&b).all(|(a, b)| common::rel_rms(&b.data, &a.data) < 1e-4)
        });
        if stable {
            return (x, cls);
        }
    }
    panic!("{}: no well-conditioned input among 48 draws", eng.model().origin);
}

fn close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape, "{what}");
    let e = common::rel_rms(&got.data, &want.data);
    eprintln!("{what}: relative RMS {e:.2e}");
    assert!(e <= 1e-4, "{what}: relative RMS {e:.3e} > 1e-4");
}

fn check(name: &str, model: Model, h: usize, w: usize) {
    let model = Arc::new(model);
    let cpu = Engine::new(model.clone(), Cpu).unwrap();
    let (x, cls) = conditioned_input(&cpu, h, w);
    for gpu in common::gpus() {
        let dev = gpu.name();
        let eng = Engine::new(model.clone(), gpu).unwrap();
        let tag = |m: &str| format!("{name}.{m}.{dev}");

        let out = model.output();
        let want = cpu.forward(x.clone(), out, &[]).unwrap();
        let got = eng.forward(eng.upload(&x).unwrap(), out, &[]).unwrap();
        close(&tag("logits"), &eng.download(got.get(out).unwrap()).unwrap(), want.get(out).unwrap());

        let (s_cpu, _) = Saliency::new(&cpu).attribute(&x, Some(&cls)).unwrap();
        let (s_gpu, cls_gpu) = Saliency::new(&eng).attribute(&x, None).unwrap();
        assert_eq!(cls, cls_gpu, "{name}: top classes differ");
        close(&tag("saliency"), &s_gpu, &s_cpu);

        let (gg, gc) = (GradCam::new(&eng, None).unwrap(), GradCam::new(&cpu, None).unwrap());
        close(&tag("gradcam"), &gg.attribute(&x, Some(&cls)).unwrap().0, &gc.attribute(&x, Some(&cls)).unwrap().0);

        if let (Ok(cg), Ok(cc)) = (Cam::new(&eng), Cam::new(&cpu)) {
            close(&tag("cam"), &cg.attribute(&x, Some(&cls)).unwrap().0, &cc.attribute(&x, Some(&cls)).unwrap().0);
        }

        // one DeepDream step (forward to the layer, backward, normalised ascent, clip)
        let layer = model.resolve(&model.graph.heads.dream_layer).unwrap();
        // no jitter: the conditioning above holds at x, not at a rolled x (roll has its own test)
        let dream = DeepDream { jitter: 0, ..DeepDream::new(Objective::layer(layer)) };
        let pre = model.preprocess;
        let (mut a, mut b) = (x.clone(), eng.upload(&x).unwrap());
        let (mut ra, mut rb) = (5u64, 5u64);
        let va = dream.step(&cpu, &mut a, &pre, &mut ra).unwrap();
        let vb = dream.step(&eng, &mut b, &pre, &mut rb).unwrap();
        close(&tag("dream_objective"), &Tensor::new(vec![2], vb).unwrap(), &Tensor::new(vec![2], va).unwrap());
        close(&tag("dream_step"), &eng.download(&b).unwrap(), &a);
    }
}

#[test]
fn default_model_on_the_gpu_engine() {
    check("efficientnet_lite0_default", Model::default_model().unwrap(), 64, 80);
}

#[test]
fn resnet18_on_the_gpu_engine() {
    check("resnet18", common::st::fixture_model("resnet18"), 64, 48);
}

#[test]
fn googlenet_on_the_gpu_engine() {
    check("googlenet", common::st::fixture_model("googlenet"), 64, 72);
}

#[test]
fn mobilenet_v2_on_the_gpu_engine() {
    // random-weight ReLU6 networks are kinky almost everywhere: a small input keeps the count of
    // gates low enough for well-conditioned inputs to exist
    check("mobilenet_v2", common::st::fixture_model("mobilenet_v2"), 32, 40);
}

#[test]
fn squeezenet1_1_on_the_gpu_engine() {
    check("squeezenet1_1", common::st::fixture_model("squeezenet1_1"), 64, 56);
}
