//! torchvision SqueezeNet 1.0 / 1.1 (`squeezenet.py`).
//!
//! A Fire module's `torch.cat` is the node `features.N.concat`, its last node. The classifier is
//! `classifier.1` (1×1 conv to 1000 classes), `.2` ReLU, `.3` AdaptiveAvgPool2d(1), then
//! `torch.flatten` (`flatten`); `classifier.0` is Dropout (no node). The logits come after a
//! ReLU and a pooling, so CAM does not apply.

use super::pool;
use crate::backend::Act;
use crate::graph::{Graph, GraphBuilder, Heads, NodeId};

/// `Fire(inplanes, squeeze, expand1x1, expand3x3)`; returns the concat node.
fn fire(b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, sq: usize, e1: usize, e3: usize) -> NodeId {
    let n = |s: &str| format!("{name}.{s}");
    let s = b.conv_k(&n("squeeze"), x, cin, sq, 1, 1, 0, true);
    let s = b.act(&n("squeeze_activation"), s, Act::Relu);
    let a = b.conv_k(&n("expand1x1"), s, sq, e1, 1, 1, 0, true);
    let a = b.act(&n("expand1x1_activation"), a, Act::Relu);
    let c = b.conv_k(&n("expand3x3"), s, sq, e3, 3, 1, 1, true);
    let c = b.act(&n("expand3x3_activation"), c, Act::Relu);
    b.concat(&n("concat"), &[a, c])
}

/// One `features` entry after the stem's ReLU (index 2 on).
enum Layer {
    Pool,
    /// (squeeze, expand1x1, expand3x3)
    Fire(usize, usize, usize),
}
use Layer::{Fire, Pool};

pub(super) fn build(arch: &str) -> Graph {
    let (stem_c, stem_k, layers): (usize, usize, [Layer; 11]) = match arch {
        "squeezenet1_0" => (
            96,
            7,
            [
                Pool,
                Fire(16, 64, 64),
                Fire(16, 64, 64),
                Fire(32, 128, 128),
                Pool,
                Fire(32, 128, 128),
                Fire(48, 192, 192),
                Fire(48, 192, 192),
                Fire(64, 256, 256),
                Pool,
                Fire(64, 256, 256),
            ],
        ),
        "squeezenet1_1" => (
            64,
            3,
            [
                Pool,
                Fire(16, 64, 64),
                Fire(16, 64, 64),
                Pool,
                Fire(32, 128, 128),
                Fire(32, 128, 128),
                Pool,
                Fire(48, 192, 192),
                Fire(48, 192, 192),
                Fire(64, 256, 256),
                Fire(64, 256, 256),
            ],
        ),
        _ => unreachable!("zoo::build dispatches only squeezenet names here"),
    };
    let mut b = GraphBuilder::new(arch);
    let x = b.input();
    let x = b.conv_k("features.0", x, 3, stem_c, stem_k, 2, 0, true);
    let mut x = b.act("features.1", x, Act::Relu);
    let mut c = stem_c;
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("features.{}", i + 2);
        x = match *layer {
            Pool => b.max_pool(&name, x, pool(3, 2, 0, true)),
            Fire(sq, e1, e3) => {
                let y = fire(&mut b, &name, x, c, sq, e1, e3);
                c = e1 + e3;
                y
            }
        };
    }
    let x = b.conv_k("classifier.1", x, c, 1000, 1, 1, 0, true);
    let x = b.act("classifier.2", x, Act::Relu);
    let x = b.adaptive_avg_pool("classifier.3", x, [1, 1]);
    let y = b.flatten("flatten", x);
    let heads = Heads { gradcam_layer: "features.12".into(), dream_layer: "features.7".into(), cam: None };
    b.finish(y, heads)
}
