//! The graph executor's fusion (`Engine::set_fusion`): a convolution with its folded batch norm,
//! residual add and ReLU / ReLU6 in one epilogue forward, and the ReLU / ReLU6 mask applied in
//! the next convolution's backward-data. Fusion changes what is written, never a number: on the
//! CPU engine and on the emulated CUDA engine, fused and unfused passes agree to the bit —
//! outputs, kept layers (which are never fused away), and gradients under every rule.

mod common;

use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::engine::{Engine, Rule};
use deepviz::model::Model;
use deepviz::Tensor;

/// Everything a pass shows: the logits, each kept layer, and the gradient at the input and at
/// each kept layer of the sum of the logits weighted by a fixed seed, under `rule`.
fn pass<B: Backend>(eng: &Engine<B>, x: &Tensor, keep: &[&str], rule: Rule) -> Vec<(String, Vec<u32>)> {
    let m = eng.model();
    let keep: Vec<_> = keep.iter().map(|k| m.resolve(k).unwrap()).collect();
    let out = m.output();
    let acts = eng.forward(eng.upload(x).unwrap(), out, &keep).unwrap();
    let logits = eng.download(acts.get(out).unwrap()).unwrap();
    let seed = Tensor::new(logits.shape.clone(), common::seeded(7, logits.numel())).unwrap();
    let mut want = vec![m.input()];
    want.extend(&keep);
    let grads = eng.backward(&acts, vec![(out, eng.upload(&seed).unwrap())], &want, rule).unwrap();
    let bits = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let mut v = vec![("logits".to_string(), bits(&logits))];
    for (i, &k) in keep.iter().enumerate() {
        v.push((format!("{} value", m.graph.nodes[k.node()].name), bits(&eng.download(acts.get(k).unwrap()).unwrap())));
        v.push((format!("{} gradient", m.graph.nodes[k.node()].name), bits(&eng.download(&grads[i + 1]).unwrap())));
    }
    v.push(("input gradient".into(), bits(&eng.download(&grads[0]).unwrap())));
    v
}

fn same<B: Backend>(what: &str, model: &Arc<Model>, be: impl Fn() -> B, x: &Tensor, keep: &[&str]) {
    let fused = Engine::new(model.clone(), be()).unwrap();
    let mut plain = Engine::new(model.clone(), be()).unwrap();
    plain.set_fusion(false);
    for rule in [Rule::Gradient, Rule::GuidedBackprop, Rule::Deconvnet] {
        let (a, b) = (pass(&fused, x, keep, rule), pass(&plain, x, keep, rule));
        for ((name, a), (_, b)) in a.iter().zip(&b) {
            let bad = a.iter().zip(b).filter(|(a, b)| a != b).count();
            assert!(bad == 0, "{what}, {rule:?}, keep {keep:?}: {name}: {bad} of {} values differ between fused and unfused", a.len());
        }
    }
}

#[test]
fn fused_and_unfused_passes_agree_to_the_bit() {
    // resnet18: conv → bn → relu, and conv → bn → + identity → relu; mobilenet_v2: conv → bn →
    // relu6 and a linear bottleneck's conv → bn → + residual without an activation
    for (name, keeps) in [
        ("resnet18", vec![vec![], vec!["layer2.0.bn2", "layer3.1.conv1"], vec!["layer1.0.relu", "layer4"]]),
        ("mobilenet_v2", vec![vec![], vec!["features.3.conv.0.1", "features.4"]]),
    ] {
        let model = Arc::new(common::st::fixture_model(name));
        let x = Tensor::new(vec![2, 3, 32, 32], common::seeded(11, 2 * 3 * 32 * 32)).unwrap();
        for keep in &keeps {
            same(&format!("{name} on the CPU"), &model, || Cpu, &x, keep);
        }
        // the emulated CUDA engine runs every thread as a fiber: one keep list, a smaller input
        let x = Tensor::new(vec![1, 3, 24, 24], common::seeded(12, 3 * 24 * 24)).unwrap();
        same(&format!("{name} on the emulated GPU"), &model, Gpu::emulated, &x, &keeps[1]);
    }
}
