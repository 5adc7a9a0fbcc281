//! ONNX models against PyTorch: three small CNNs the zoo does not have (a custom one, a
//! ResNeXt-style and a ConvNeXt-style net; tests/fixtures/onnx/, made by
//! scripts/golden/make_onnx.py with torch.onnx.export), loaded through `Model::load` and run on
//! the CPU engine and the emulated GPU engine. Logits, saliency and Grad-CAM must agree with
//! PyTorch's float64 answers to |got − want| ≤ 1e-3·max|want| + 1e-3·|want| everywhere (the
//! worst element is reported). Also: the refusal of unsupported operators (a LayerNorm
//! ConvNeXt), truncated files, and the module names the exporter's node names map back to.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::graph::Op;
use deepviz::model::Model;
use deepviz::viz::{Attribution, Cam, GradCam, Saliency, Target};
use deepviz::Tensor;

fn path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx").join(file)
}

struct Golden {
    t: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

fn golden(name: &str) -> Golden {
    let (t, meta) = common::st::read_fixture(&path(&format!("{name}.safetensors")));
    Golden { t, meta }
}

fn load(name: &str) -> Model {
    Model::load(&path(&format!("{name}.onnx")), None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json_list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|v| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().ok().unwrap())
        .collect()
}

/// |got − want| ≤ 1e-3·max|want| + 1e-3·|want|, worst element reported.
fn close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got.data.iter().zip(&want.data).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
    eprintln!("{what}: worst |diff| {worst:.2e} (max |ref| {scale:.2e}), rel_rms {:.2e}", common::rel_rms(&got.data, &want.data));
    common::assert_close(what, &got.data, &want.data, 1e-3 * scale, 1e-3);
}

fn check<B: Backend>(name: &str, eng: &Engine<B>, dev: &str) {
    let g = golden(name);
    let model = eng.model();
    let x = &g.t["x"];
    let acts = eng.forward(eng.be.upload(x).unwrap(), model.output(), &[]).unwrap();
    let logits = eng.download(acts.get(model.output()).unwrap()).unwrap();
    close(&format!("{name}.{dev}.logits"), &logits, &g.t["logits"]);
    let targets: Vec<Target> = json_list::<usize>(&g.meta["targets"]).into_iter().map(Target::Class).collect();
    let (sal, _) = Saliency::new(eng).attribute(x, Some(&targets)).unwrap();
    close(&format!("{name}.{dev}.saliency"), &sal, &g.t["saliency"]);
    let (cam, _) = GradCam::new(eng, Some(&g.meta["gradcam_layer"])).unwrap().attribute(x, Some(&targets)).unwrap();
    close(&format!("{name}.{dev}.gradcam"), &cam, &g.t["gradcam"]);
}

macro_rules! against_pytorch {
    ($($name:ident),*) => { $(
        mod $name {
            #[test]
            fn cpu() {
                let eng = super::Engine::new(super::load(stringify!($name)), super::Cpu).unwrap();
                super::check(stringify!($name), &eng, "cpu");
            }
            #[test]
            fn emulated_gpu() {
                let eng = super::Engine::new(super::load(stringify!($name)), super::Gpu::emulated()).unwrap();
                super::check(stringify!($name), &eng, "emu");
            }
        }
    )* };
}

against_pytorch!(small_cnn, resnext, convnext);

#[test]
fn unsupported_operators_are_one_error_listing_them() {
    let e = Model::load(&path("convnext_ln.onnx"), None).err().expect("a LayerNorm ConvNeXt must be refused").to_string();
    for want in ["convnext_ln.onnx", "unsupported ONNX operators", "Transpose ×10", "LayerNormalization ×5", "BatchNorm"] {
        assert!(e.contains(want), "`{want}` missing from: {e}");
    }
}

#[test]
fn truncated_and_damaged_files_are_errors() {
    let bytes = std::fs::read(path("resnext.onnx")).unwrap();
    // every cut gives Ok or an error, never a panic; cuts inside the graph are errors
    for k in (0..bytes.len()).step_by(211) {
        let r = Model::from_onnx(&bytes[..k], "cut.onnx", None);
        if k < bytes.len() * 9 / 10 {
            let e = r.err().unwrap_or_else(|| panic!("a file cut at {k} of {} bytes loaded", bytes.len()));
            assert!(e.to_string().contains("cut.onnx"), "{e}");
        }
    }
    let e = Model::from_onnx(&bytes[..bytes.len() / 2], "cut.onnx", None).err().unwrap().to_string();
    assert!(e.contains("not a valid ONNX file"), "{e}");
    // a file named .onnx that is not one
    let dir = std::env::temp_dir().join(format!("deepviz-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.onnx"), b"{\"not\": \"onnx\"}").unwrap();
    assert!(Model::load(&dir.join("x.onnx"), None).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
    // --arch does not apply
    let e = Model::from_bytes(&bytes, "m.onnx", Some("resnet18")).err().unwrap().to_string();
    assert!(e.contains("--arch resnet18"), "{e}");
}

#[test]
fn node_names_map_back_to_module_paths() {
    let m = load("resnext");
    let g = golden("resnext");
    // every Conv2d / Linear of the PyTorch model is a layer under its module path
    for module in json_list::<String>(&g.meta["modules"]) {
        let l = m.resolve(&module).unwrap_or_else(|e| panic!("{module}: {e}"));
        assert_eq!(m.name(l), module);
        assert!(matches!(m.graph.nodes[l.node()].op, Op::Conv { .. } | Op::Linear { .. }), "{module}");
    }
    let kinds: Vec<(&str, &str)> = m.graph.nodes.iter().map(|n| (n.name.as_str(), n.op.kind())).collect();
    for want in [
        ("layer1.0.relu:0", "ReLU"),         // first call of a reused module
        ("layer1.0.relu", "ReLU"),           // its last call: /layer1/layer1.0/relu_2/Relu
        ("layer1.0.add", "add"),             // y + identity, in the block's forward
        ("layer1.0.se.mul", "mul"),          // x * sigmoid(...): a channel scale
        ("layer1.0.se.sigmoid", "Sigmoid"),  // torch.sigmoid inside the SE module
        ("layer2.0.downsample.0", "Conv2d"), // a Sequential's child
        ("flatten", "flatten"),
        ("fc", "Linear"),
    ] {
        assert!(kinds.contains(&want), "{want:?} missing from {kinds:?}");
    }
    // a container resolves to its last node: the block's output
    assert_eq!(m.name(m.resolve("layer2").unwrap()), "layer2.0.relu");
    // the default heads: the last feature map, CAM through the global pool and fc
    assert_eq!(m.graph.heads.gradcam_layer, "layer2.0.relu");
    assert_eq!(m.graph.heads.cam, Some(("layer2.0.relu".to_string(), "fc".to_string())));
    let eng = Engine::new(Arc::new(m), Cpu).unwrap();
    assert!(Cam::new(&eng).is_ok());

    // a batch norm the exporter kept is its own layer, as from safetensors
    let m = load("small_cnn");
    assert_eq!(m.graph.nodes[m.resolve("bn1").unwrap().node()].op.kind(), "BatchNorm2d");
    assert_eq!(m.graph.nodes[m.output().node()].op.kind(), "Linear", "the final softmax is dropped");
    for (layer, kind) in [("act3", "SiLU"), ("act4", "Hardswish"), ("act2", "ReLU6"), ("lrn", "LocalResponseNorm"), ("se", "mul")] {
        assert_eq!(m.graph.nodes[m.resolve(layer).unwrap().node()].op.kind(), kind, "{layer}");
    }
}
