//! Model loading: validation errors name the tensor, dtypes convert, layer names resolve, and
//! metadata (arch, transform_input) is honoured.

mod common;

use std::path::Path;

use common::st::{safetensors_bytes, Entry};
use deepviz::backend::cpu::Cpu;
use deepviz::engine::Engine;
use deepviz::model::Model;
use deepviz::Tensor;
use safetensors::{Dtype, SafeTensors};

fn default_entries() -> Vec<Entry> {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/efficientnet_lite0.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<Entry> =
        st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), t.dtype(), t.data().to_vec())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn load(entries: &[Entry], meta: &[(&str, &str)]) -> deepviz::Result<Model> {
    Model::from_bytes(&safetensors_bytes(entries, meta), "test.safetensors", None)
}

fn err(entries: &[Entry], meta: &[(&str, &str)]) -> String {
    match load(entries, meta) {
        Ok(_) => panic!("loaded a bad model"),
        Err(e) => e.to_string(),
    }
}

const LITE: &[(&str, &str)] = &[("arch", "efficientnet_lite0")];

fn logits(m: Model, x: &Tensor) -> Vec<f32> {
    let eng = Engine::new(m, Cpu).unwrap();
    let out = eng.model().output();
    let acts = eng.forward(x.clone(), out, &[]).unwrap();
    acts.get(out).unwrap().data.clone()
}

#[test]
fn layer_names_resolve_like_forward_hooks() {
    let m = Model::default_model().unwrap();
    // a container resolves to its last node; a batch norm and its conv are two layers
    let b10 = m.resolve("_blocks.10").unwrap();
    assert!(m.name(b10).starts_with("_blocks.10."), "{}", m.name(b10));
    assert_eq!(m.name(m.resolve("_bn1").unwrap()), "_bn1");
    assert_eq!(m.name(m.resolve("_conv_head").unwrap()), "_conv_head");
    assert_ne!(m.resolve("_bn1").unwrap(), m.resolve("_conv_head").unwrap());
    assert_eq!(m.name(m.resolve("_swish").unwrap()), "_swish");
    let e = m.resolve("_block.10").unwrap_err().to_string();
    assert!(e.contains("unknown layer `_block.10`") && e.contains("`_blocks.10`"), "{e}");
}

#[test]
fn missing_extra_misshapen_and_wrong_dtype_tensors_are_named() {
    let base = default_entries();

    let mut v = base.clone();
    v.retain(|e| e.0 != "_blocks.3._project_conv.weight");
    let e = err(&v, LITE);
    assert!(e.contains("missing tensor `_blocks.3._project_conv.weight`"), "{e}");

    let mut v = base.clone();
    v.push(("head.extra.weight".into(), vec![2], Dtype::F32, vec![0; 8]));
    let e = err(&v, LITE);
    assert!(e.contains("unexpected tensor `head.extra.weight`"), "{e}");

    let mut v = base.clone();
    let i = v.iter().position(|e| e.0 == "_fc.bias").unwrap();
    v[i].1 = vec![999];
    v[i].3.truncate(999 * 4);
    let e = err(&v, LITE);
    assert!(e.contains("`_fc.bias` has shape [999]") && e.contains("[1000]"), "{e}");

    let mut v = base.clone();
    let i = v.iter().position(|e| e.0 == "_fc.bias").unwrap();
    v[i].2 = Dtype::I32;
    let e = err(&v, LITE);
    assert!(e.contains("_fc.bias") && e.contains("I32"), "{e}");

    let mut v = base.clone();
    let i = v.iter().position(|e| e.0 == "_fc.bias").unwrap();
    v[i].3[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = err(&v, LITE);
    assert!(e.contains("`_fc.bias` holds NaN"), "{e}");
}

#[test]
fn arch_comes_from_metadata_or_the_caller() {
    let v = default_entries();
    let e = err(&v, &[]);
    assert!(e.contains("no `arch`") && e.contains("--arch"), "{e}");
    let bytes = safetensors_bytes(&v, &[]);
    assert!(Model::from_bytes(&bytes, "x", Some("efficientnet_lite0")).is_ok());
    let e = Model::from_bytes(&bytes, "x", Some("resnet51")).err().unwrap().to_string();
    assert!(e.contains("unknown architecture `resnet51`") && e.contains("resnet50"), "{e}");
    // the wrong architecture: its first missing tensor is named
    let e = Model::from_bytes(&bytes, "x", Some("resnet18")).err().unwrap().to_string();
    assert!(e.contains("missing tensor `conv1.weight`"), "{e}");
}

#[test]
fn f16_and_bf16_weights_load() {
    let base = default_entries();
    let m32 = load(&base, LITE).unwrap();
    let x = Tensor::new(vec![1, 3, 224, 224], common::seeded(7, 3 * 224 * 224)).unwrap();
    let want = logits(m32, &x);
    for dt in [Dtype::F16, Dtype::BF16] {
        let v: Vec<Entry> = base
            .iter()
            .map(|(n, s, d, b)| {
                if *d != Dtype::F32 {
                    return (n.clone(), s.clone(), *d, b.clone());
                }
                let data = b
                    .chunks_exact(4)
                    .flat_map(|c| {
                        let f = f32::from_le_bytes(c.try_into().unwrap());
                        match dt {
                            Dtype::F16 => half::f16::from_f32(f).to_le_bytes(),
                            _ => half::bf16::from_f32(f).to_le_bytes(),
                        }
                    })
                    .collect();
                (n.clone(), s.clone(), dt, data)
            })
            .collect();
        let got = logits(load(&v, LITE).unwrap(), &x);
        let e = common::rel_rms(&got, &want);
        // the rounding of the weights themselves, not of the engine: f16 keeps 11 bits, bf16 8
        assert!(e < if dt == Dtype::F16 { 3e-2 } else { 2e-1 }, "{dt:?}: logits differ by {e:.2e} relative RMS");
    }
}

#[test]
fn googlenet_transform_input_is_applied() {
    let (entries, _) = common::st::fixture_state_dict("googlenet");
    let plain = load(&entries, &[("arch", "googlenet")]).unwrap();
    let tin = load(&entries, &[("arch", "googlenet"), ("transform_input", "true")]).unwrap();
    let (h, w) = (64, 80);
    let x = Tensor::new(vec![1, 3, h, w], common::seeded(3, 3 * h * w)).unwrap();
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let mut xt = x.clone();
    for c in 0..3 {
        for v in &mut xt.data[c * h * w..(c + 1) * h * w] {
            *v = *v * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5;
        }
    }
    common::assert_close("transform_input", &logits(tin, &x), &logits(plain, &xt), 1e-4, 1e-4);
    let e = err(&entries, &[("arch", "googlenet"), ("transform_input", "maybe")]);
    assert!(e.contains("transform_input"), "{e}");
}
