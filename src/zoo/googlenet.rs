//! torchvision GoogLeNet (`googlenet.py`), inference path with `transform_input=False`.
//!
//! - `BasicConv2d` is conv (no bias) + bn (eps 0.001) + `F.relu`. The ReLU is a function call, not
//!   a module, so its node is named `<basicconv>.relu` (e.g. `inception3a.branch2.1.relu`); the
//!   BasicConv2d's path resolves to it.
//! - Branch 3 uses a 3×3 conv where the paper has 5×5: torchvision's known bug
//!   (pytorch/vision#906), which the published weights are trained with.
//! - An Inception module's `torch.cat` is the node `<inception>.concat`, its last node.
//! - The auxiliary classifiers (`aux1.`, `aux2.`) only run in training; their tensors may be in
//!   the file and are ignored.

use super::{conv_bn, pool};
use crate::backend::Act;
use crate::graph::{Graph, GraphBuilder, Heads, NodeId};

const EPS: f32 = 1e-3;

/// conv + bn + relu under the module path `name`; returns the relu node.
#[allow(clippy::too_many_arguments)]
fn basic_conv(b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> NodeId {
    let x = conv_bn(b, &format!("{name}.conv"), &format!("{name}.bn"), x, cin, cout, k, stride, pad, EPS);
    b.act(&format!("{name}.relu"), x, Act::Relu)
}

/// `Inception(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`; returns the
/// concat node and its channel count.
fn inception(b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, ch: [usize; 6]) -> (NodeId, usize) {
    let [c1, c3r, c3, c5r, c5, pp] = ch;
    let n = |s: &str| format!("{name}.{s}");
    let b1 = basic_conv(b, &n("branch1"), x, cin, c1, 1, 1, 0);
    let b2 = basic_conv(b, &n("branch2.0"), x, cin, c3r, 1, 1, 0);
    let b2 = basic_conv(b, &n("branch2.1"), b2, c3r, c3, 3, 1, 1);
    let b3 = basic_conv(b, &n("branch3.0"), x, cin, c5r, 1, 1, 0);
    let b3 = basic_conv(b, &n("branch3.1"), b3, c5r, c5, 3, 1, 1);
    let b4 = b.max_pool(&n("branch4.0"), x, pool(3, 1, 1, true));
    let b4 = basic_conv(b, &n("branch4.1"), b4, cin, pp, 1, 1, 0);
    (b.concat(&n("concat"), &[b1, b2, b3, b4]), c1 + c3 + c5 + pp)
}

pub(super) fn build() -> Graph {
    let mut b = GraphBuilder::new("googlenet");
    b.ignore_prefix("aux1.");
    b.ignore_prefix("aux2.");
    let x = b.input();
    let x = basic_conv(&mut b, "conv1", x, 3, 64, 7, 2, 3);
    let x = b.max_pool("maxpool1", x, pool(3, 2, 0, true));
    let x = basic_conv(&mut b, "conv2", x, 64, 64, 1, 1, 0);
    let x = basic_conv(&mut b, "conv3", x, 64, 192, 3, 1, 1);
    let mut x = b.max_pool("maxpool2", x, pool(3, 2, 0, true));
    let mut c = 192;
    let stages: [(&str, [usize; 6]); 9] = [
        ("inception3a", [64, 96, 128, 16, 32, 32]),
        ("inception3b", [128, 128, 192, 32, 96, 64]),
        ("inception4a", [192, 96, 208, 16, 48, 64]),
        ("inception4b", [160, 112, 224, 24, 64, 64]),
        ("inception4c", [128, 128, 256, 24, 64, 64]),
        ("inception4d", [112, 144, 288, 32, 64, 64]),
        ("inception4e", [256, 160, 320, 32, 128, 128]),
        ("inception5a", [256, 160, 320, 32, 128, 128]),
        ("inception5b", [384, 192, 384, 48, 128, 128]),
    ];
    for (name, ch) in stages {
        (x, c) = inception(&mut b, name, x, c, ch);
        match name {
            "inception3b" => x = b.max_pool("maxpool3", x, pool(3, 2, 0, true)),
            "inception4e" => x = b.max_pool("maxpool4", x, pool(2, 2, 0, true)),
            _ => {}
        }
    }
    let x = b.adaptive_avg_pool("avgpool", x, [1, 1]);
    let x = b.flatten("flatten", x);
    let y = b.linear("fc", x, c, 1000, true);
    let heads = Heads {
        gradcam_layer: "inception5b".into(),
        dream_layer: "inception4c".into(),
        cam: Some(("inception5b".into(), "fc".into())),
    };
    b.finish(y, heads)
}
