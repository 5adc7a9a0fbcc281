//! Layer names mean what a PyTorch forward hook on that module sees.
//!
//! - `conv_and_bn_are_two_layers`: for every convolution followed by a batch norm in every zoo
//!   family with batch norms, the conv's kept output is the pre-normalisation value (the batch
//!   norm's output is that value times s plus t, computed here on the host from the running
//!   statistics), and keeping a conv changes nothing downstream (the folded and unfolded passes
//!   give the same logits).
//! - `hooks_match_pytorch`: activations and gradients at conv, batch-norm, activation and
//!   container paths against PyTorch forward hooks on the same modules
//!   (`tests/fixtures/hooks/<model>.safetensors`, made by `scripts/golden/make_hooks.py` with
//!   torch + torchvision / timm / efficientnet_lite_pytorch), on the CPU engine and the emulated
//!   GPU engine.

mod common;

use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::engine::{Engine, Rule};
use deepviz::graph::Op;
use deepviz::model::Model;
use deepviz::Tensor;

/// The zoo families with batch norms, by golden fixture name.
const WITH_BN: &[&str] = &["resnet18", "vgg11_bn", "googlenet", "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite0_pkg"];

#[test]
fn conv_and_bn_are_two_layers() {
    for name in WITH_BN {
        let model = Arc::new(common::st::fixture_model(name));
        let eng = Engine::new(model.clone(), Cpu).unwrap();
        let x = common::seeded_tensor(11, &[2, 3, 40, 48]);
        let out = model.output();
        let folded = eng.forward(x.clone(), out, &[]).unwrap().get(out).unwrap().clone();
        let g = &model.graph;
        let pairs: Vec<(usize, usize)> = g
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::BatchNorm { .. }) && matches!(g.nodes[n.inputs[0]].op, Op::Conv { .. }))
            .map(|(bn, n)| (n.inputs[0], bn))
            .collect();
        assert!(pairs.len() >= 5, "{name}: {} conv + bn pairs", pairs.len());
        // keep every conv and every bn at once: nothing is folded
        let keep: Vec<_> = pairs.iter().flat_map(|&(c, b)| [c, b]).map(|i| model.resolve(&g.nodes[i].name).unwrap()).collect();
        let acts = eng.forward(x.clone(), out, &keep).unwrap();
        common::assert_close(&format!("{name}.logits unfolded"), &acts.get(out).unwrap().data, &folded.data, 1e-4, 1e-4);
        for &(c, b) in &pairs {
            let (cl, bl) = (model.resolve(&g.nodes[c].name).unwrap(), model.resolve(&g.nodes[b].name).unwrap());
            assert_eq!((cl.node(), bl.node()), (c, b), "{name}: `{}` and `{}` resolve to themselves", g.nodes[c].name, g.nodes[b].name);
            let (a, y) = (acts.get(cl).unwrap(), acts.get(bl).unwrap());
            let Op::BatchNorm { weight, bias, mean, var, eps } = g.nodes[b].op else { unreachable!() };
            let p = |i: usize| &model.params[i].data;
            let (_, ch, h, w) = a.nchw();
            let mut want = a.clone();
            for (i, v) in want.data.iter_mut().enumerate() {
                let k = (i / (h * w)) % ch;
                let s = p(weight)[k] as f64 / (p(var)[k] as f64 + eps as f64).sqrt();
                *v = ((*v as f64 - p(mean)[k] as f64) * s + p(bias)[k] as f64) as f32;
            }
            common::assert_close(&format!("{name}.{}", g.nodes[b].name), &y.data, &want.data, 1e-5, 1e-4);
            // the batch norm is not the identity here: the two layers really differ
            assert!(common::rel_rms(&a.data, &y.data) > 1e-2, "{name}: `{}` equals its batch norm", g.nodes[c].name);
        }
    }
}

/// One hooks fixture: the input, and per hooked module path its output and the gradient of the
/// target logit w.r.t. it.
struct Hooks {
    x: Tensor,
    cls: Vec<usize>,
    acts: Vec<(String, Tensor, Tensor)>,
}

fn hooks(name: &str) -> Option<Hooks> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hooks").join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).ok()?;
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let get = |n: &str| {
        let v = st.tensor(n).unwrap_or_else(|_| panic!("{name}: no tensor {n}"));
        let data: Vec<f32> = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        Tensor::new(v.shape().to_vec(), data).unwrap()
    };
    let layers: Vec<String> = serde_json::from_str(&meta["layers"]).unwrap();
    let cls: Vec<usize> = serde_json::from_str(&meta["cls"]).unwrap();
    let acts = layers.iter().map(|l| (l.clone(), get(&format!("act:{l}")), get(&format!("grad:{l}")))).collect();
    Some(Hooks { x: get("x"), cls, acts })
}

fn check_hooks<B: Backend>(name: &str, model: &Arc<Model>, be: B, h: &Hooks) {
    let dev = be.name();
    let eng = Engine::new(model.clone(), be).unwrap();
    let layers: Vec<_> = h.acts.iter().map(|(l, _, _)| model.resolve(l).unwrap()).collect();
    let out = model.output();
    let acts = eng.forward(eng.upload(&h.x).unwrap(), out, &layers).unwrap();
    let cls: Vec<f32> = h.cls.iter().map(|&c| c as f32).collect();
    let cls = eng.upload(&Tensor::new(vec![cls.len(), 1], cls).unwrap()).unwrap();
    let seed = deepviz::viz::ops::indicator(&eng.be, &cls, 1, acts.shape(out)[1]).unwrap();
    let grads = eng.backward(&acts, vec![(out, seed)], &layers, Rule::Gradient).unwrap();
    for (((path, want_a, want_g), &l), g) in h.acts.iter().zip(&layers).zip(&grads) {
        let a = eng.download(acts.get(l).unwrap()).unwrap();
        let g = eng.download(g).unwrap();
        let (ea, eg) = (common::rel_rms(&a.data, &want_a.data), common::rel_rms(&g.data, &want_g.data));
        eprintln!("{name}.{path}.{dev}: activation {ea:.1e}, gradient {eg:.1e}");
        assert_eq!(a.shape, want_a.shape, "{name}.{path}");
        assert!(ea < 1e-4, "{name}: `{path}` on {dev} differs from the PyTorch hook by {ea:.2e} relative RMS");
        assert!(eg < 1e-4, "{name}: the gradient at `{path}` on {dev} differs from PyTorch's by {eg:.2e} relative RMS");
    }
}

#[test]
fn hooks_match_pytorch() {
    let mut seen = 0;
    for name in WITH_BN.iter().chain(&["alexnet", "squeezenet1_1"]) {
        let Some(h) = hooks(name) else { continue };
        seen += 1;
        let model = Arc::new(common::st::fixture_model(name));
        check_hooks(name, &model, Cpu, &h);
        check_hooks(name, &model, Gpu::emulated(), &h);
    }
    assert!(seen >= WITH_BN.len(), "only {seen} hooks fixtures in tests/fixtures/hooks");
}

/// An unknown layer's error lists the nearest module paths first (Levenshtein distance in
/// characters, `strsim`), ties in the model's order.
#[test]
fn an_unknown_layer_names_its_close_matches() {
    let m = common::st::fixture_model("resnet18");
    let e = m.resolve("layr4").expect_err("no such layer").to_string();
    assert!(e.contains("unknown layer `layr4`; close matches: `layer4`, "), "{e}");
    let e = m.resolve("layer4.1.cnv2").expect_err("no such layer").to_string();
    assert!(e.contains("close matches: `layer4.1.conv2`, "), "{e}");
    assert!(e.contains("`deepviz layers` lists them all"), "{e}");
}
