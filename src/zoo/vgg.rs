//! torchvision VGG (`vgg.py`, `make_layers`) and AlexNet (`alexnet.py`).
//!
//! `features.N` indices follow `nn.Sequential` exactly, MaxPool and ReLU entries included, so
//! they match the state dict and any hook path a PyTorch user would write. Dropout entries of
//! `classifier` keep their index but get no node. `torch.flatten` is the node `flatten`.

use super::pool;
use crate::backend::Act;
use crate::graph::{Graph, GraphBuilder, Heads, NodeId};

const EPS: f32 = 1e-5;
/// `make_layers` configuration: a number is a 3×3 conv with that many channels, 0 is a max pool.
const CFG_A: &[usize] = &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
const CFG_B: &[usize] = &[64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
const CFG_D: &[usize] = &[64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
const CFG_E: &[usize] = &[64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0];

pub(super) fn build_vgg(arch: &str) -> Graph {
    let batch_norm = arch.ends_with("_bn");
    let cfg = match arch.trim_end_matches("_bn") {
        "vgg11" => CFG_A,
        "vgg13" => CFG_B,
        "vgg16" => CFG_D,
        "vgg19" => CFG_E,
        _ => unreachable!("zoo::build dispatches only vgg names here"),
    };
    let mut b = GraphBuilder::new(arch);
    let mut x = b.input();
    let (mut idx, mut cin, mut pools) = (0, 3, 0);
    // Grad-CAM: the last ReLU of `features`; DeepDream: the ReLU before the fourth max pool
    // (conv4_3 in VGG-16, `features.22`).
    let (mut last_relu, mut dream) = (String::new(), String::new());
    for &v in cfg {
        if v == 0 {
            x = b.max_pool(&format!("features.{idx}"), x, pool(2, 2, 0, false));
            idx += 1;
            pools += 1;
            if pools == 4 {
                dream = last_relu.clone();
            }
            continue;
        }
        x = b.conv_k(&format!("features.{idx}"), x, cin, v, 3, 1, 1, true);
        idx += 1;
        if batch_norm {
            x = b.batch_norm(&format!("features.{idx}"), x, v, EPS);
            idx += 1;
        }
        last_relu = format!("features.{idx}");
        x = b.act(&last_relu, x, Act::Relu);
        idx += 1;
        cin = v;
    }
    let x = b.adaptive_avg_pool("avgpool", x, [7, 7]);
    let x = b.flatten("flatten", x);
    let y = classifier(&mut b, x, 512 * 7 * 7, [0, 1, 3, 4, 6]);
    let heads = Heads { gradcam_layer: last_relu, dream_layer: dream, cam: None };
    b.finish(y, heads)
}

/// Linear, ReLU, (Dropout), Linear, ReLU, (Dropout), Linear, at the given `classifier.N`
/// indices (the dropouts have none).
fn classifier(b: &mut GraphBuilder, x: NodeId, cin: usize, idx: [usize; 5]) -> NodeId {
    let c = |i: usize| format!("classifier.{i}");
    let x = b.linear(&c(idx[0]), x, cin, 4096, true);
    let x = b.act(&c(idx[1]), x, Act::Relu);
    let x = b.linear(&c(idx[2]), x, 4096, 4096, true);
    let x = b.act(&c(idx[3]), x, Act::Relu);
    b.linear(&c(idx[4]), x, 4096, 1000, true)
}

pub(super) fn build_alexnet() -> Graph {
    let mut b = GraphBuilder::new("alexnet");
    let x = b.input();
    let x = b.conv_k("features.0", x, 3, 64, 11, 4, 2, true);
    let x = b.act("features.1", x, Act::Relu);
    let x = b.max_pool("features.2", x, pool(3, 2, 0, false));
    let x = b.conv_k("features.3", x, 64, 192, 5, 1, 2, true);
    let x = b.act("features.4", x, Act::Relu);
    let x = b.max_pool("features.5", x, pool(3, 2, 0, false));
    let x = b.conv_k("features.6", x, 192, 384, 3, 1, 1, true);
    let x = b.act("features.7", x, Act::Relu);
    let x = b.conv_k("features.8", x, 384, 256, 3, 1, 1, true);
    let x = b.act("features.9", x, Act::Relu);
    let x = b.conv_k("features.10", x, 256, 256, 3, 1, 1, true);
    let x = b.act("features.11", x, Act::Relu);
    let x = b.max_pool("features.12", x, pool(3, 2, 0, false));
    let x = b.adaptive_avg_pool("avgpool", x, [6, 6]);
    let x = b.flatten("flatten", x);
    let y = classifier(&mut b, x, 256 * 6 * 6, [1, 2, 4, 5, 6]);
    let heads = Heads { gradcam_layer: "features.11".into(), dream_layer: "features.7".into(), cam: None };
    b.finish(y, heads)
}
