//! Golden tests: deepviz's CPU engine against an independent float64 JAX implementation of each
//! architecture (scripts/golden/, which made the fixtures in tests/fixtures/golden/). Random-
//! weight models are regenerated here from the fixture's list of state-dict tensors with the
//! same counter-based generator (scripts/golden/README.md), written to a real .safetensors file
//! in memory and loaded through the normal loader. The default model uses its real weights and
//! the two sample photos.
//!
//! Checked per model: logits (1e-3 of the largest |logit|, elementwise), and saliency, Grad-CAM,
//! CAM and the DeepDream input gradient to 1e-3 relative RMS.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{assert_close, rel_rms};
use deepviz::backend::cpu::Cpu;
use deepviz::engine::{Engine, Rule};
use deepviz::model::Model;
use deepviz::viz::{Attribution, Cam, GradCam, Saliency, Target};
use deepviz::Tensor;
use safetensors::{Dtype, SafeTensors};

struct Fixture {
    meta: HashMap<String, String>,
    t: HashMap<String, Tensor>,
    cls: Vec<usize>,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden").join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let mut t = HashMap::new();
    let mut cls = vec![];
    for (k, v) in st.tensors() {
        if k == "cls" {
            cls = v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize).collect();
            continue;
        }
        assert_eq!(v.dtype(), Dtype::F32, "{k}");
        let data = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        t.insert(k.clone(), Tensor::new(v.shape().to_vec(), data).unwrap());
    }
    Fixture { meta, t, cls }
}

fn model_for(fx: &Fixture, name: &str) -> Model {
    if let Some(w) = fx.meta.get("weights") {
        return Model::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(w), None).unwrap();
    }
    common::st::fixture_model(name)
}

/// `bound` is 1e-3, or 3× the map's own sensitivity at this input where that is larger (see
/// `golden`).
fn check_map(what: &str, got: &Tensor, want: &Tensor, bound: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let e = rel_rms(&got.data, &want.data);
    eprintln!("{what}: relative RMS error {e:.2e} (bound {bound:.1e})");
    if e > bound && std::env::var("GOLDEN_DEBUG").is_ok() {
        let per = got.numel() / got.shape[0];
        for b in 0..got.shape[0] {
            eprintln!("  item {b}: {:.2e}", rel_rms(&got.data[b * per..(b + 1) * per], &want.data[b * per..(b + 1) * per]));
        }
        let mut idx: Vec<usize> = (0..got.numel()).collect();
        idx.sort_by(|&a, &b| (got.data[b] - want.data[b]).abs().total_cmp(&(got.data[a] - want.data[a]).abs()));
        let (h, w) = (got.shape[got.rank() - 2], got.shape[got.rank() - 1]);
        for &i in idx.iter().take(8) {
            eprintln!("  at n{} y{} x{}: got {} want {}", i / (h * w), (i / w) % h, i % w, got.data[i], want.data[i]);
        }
    }
    assert!(e <= bound, "{what}: relative RMS error {e:.3e} > {bound:.1e}");
}

fn golden(name: &str) {
    let fx = fixture(name);
    let model = std::sync::Arc::new(model_for(&fx, name));
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let x = &fx.t["x"];

    // logits
    let acts = eng.forward(x.clone(), model.output(), &[]).unwrap();
    let logits = acts.get(model.output()).unwrap();
    let want = &fx.t["logits"];
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_close(&format!("{name}.logits"), &logits.data, &want.data, 1e-3 * scale, 1e-3);

    let targets: Vec<Target> = fx.cls.iter().map(|&c| Target::Class(c)).collect();
    let cls = Some(targets.as_slice());
    let gc = GradCam::new(&eng, Some(&fx.meta["gradcam_layer"])).unwrap();
    let cam = fx.t.get("cam").map(|_| Cam::new(&eng).unwrap());
    if let Some(cam) = &cam {
        assert_eq!(model.name(cam.feature), model.name(model.resolve(&fx.meta["cam_layer"]).unwrap()));
    } else {
        assert!(Cam::new(&eng).is_err(), "{name}: CAM must be refused for this head");
    }
    let layer = model.resolve(&fx.meta["dream_layer"]).unwrap();
    // every map, in the fixture's names: saliency, Grad-CAM, CAM, and DeepDream's gradient
    // d(½‖A‖²)/dx at the dream layer
    let maps = |x: &Tensor| -> Vec<(&'static str, Tensor)> {
        let mut v = vec![
            ("saliency", Saliency::new(&eng).attribute(x, cls).unwrap().0),
            ("gradcam", gc.attribute(x, cls).unwrap().0),
        ];
        if let Some(cam) = &cam {
            v.push(("cam", cam.attribute(x, cls).unwrap().0));
        }
        let acts = eng.forward(x.clone(), layer, &[]).unwrap();
        let seed = acts.get(layer).unwrap().clone();
        v.push(("dream_grad", eng.backward(&acts, vec![(layer, seed)], &[model.input()], Rule::Gradient).unwrap().remove(0)));
        v
    };
    // Input gradients of ReLU networks jump where a gate sits on its kink, and random-weight
    // ReLU6 networks (mobilenet_v2) have such gates near almost every input: there a float32
    // engine can only agree with a float64 reference as well as the map agrees with itself
    // under a change of the input by one part in a million. The bound is 1e-3, or three times
    // that self-sensitivity where it is larger (it is 0 for the well-conditioned fixtures).
    let base = maps(x);
    let mut sens = vec![0f64; base.len()];
    for d in [1e-6f32, -1e-6] {
        let xp = Tensor::new(x.shape.clone(), x.data.iter().map(|v| v * (1.0 + d)).collect()).unwrap();
        for (k, (_, m)) in maps(&xp).iter().enumerate() {
            sens[k] = sens[k].max(rel_rms(&m.data, &base[k].1.data));
        }
    }
    for ((map, got), s) in base.iter().zip(sens) {
        check_map(&format!("{name}.{map}"), got, &fx.t[*map], (3.0 * s).max(1e-3));
    }
}

macro_rules! golden_tests {
    ($($name:ident),*) => { $( #[test] fn $name() { golden(stringify!($name)); } )* };
}

golden_tests!(
    resnet18,
    resnet50,
    vgg11,
    vgg11_bn,
    alexnet,
    googlenet,
    mobilenet_v2,
    squeezenet1_0,
    squeezenet1_1,
    efficientnet_lite0,
    efficientnet_lite0_pkg,
    efficientnet_lite0_default
);
