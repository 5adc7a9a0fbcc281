//! torchvision MobileNetV2 (`mobilenetv2.py`, width 1.0).
//!
//! `features.0` and `features.18` are `Conv2dNormActivation` (`.0` conv, `.1` bn, `.2` ReLU6).
//! An `InvertedResidual` is `conv.N`: with expand ratio 1 (`features.1`) there is no expansion
//! layer, so `conv.0` is the depthwise ConvBNReLU6, `conv.1` the projection conv and `conv.2` its
//! bn; otherwise `conv.0` expands, `conv.1` is depthwise, `conv.2`/`conv.3` project. The residual
//! sum is the node `features.N.add`. The forward's functional pooling and flatten are the nodes
//! `avgpool` and `flatten`; `classifier.0` is Dropout (no node).

use crate::backend::Act;
use crate::graph::{Graph, GraphBuilder, Heads, NodeId, Pad};

const EPS: f32 = 1e-5;

/// `Conv2dNormActivation(cin, cout, k, stride, groups)` with ReLU6 under `name` (`.0`, `.1`, `.2`).
#[allow(clippy::too_many_arguments)]
fn conv_bn_relu6(b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, cout: usize, k: usize, stride: usize, groups: usize) -> NodeId {
    let p = (k - 1) / 2;
    let x = b.conv(&format!("{name}.0"), x, cin, cout, [k, k], [stride, stride], Pad::sym(p, p), [1, 1], groups, false);
    let x = b.batch_norm(&format!("{name}.1"), x, cout, EPS);
    b.act(&format!("{name}.2"), x, Act::Relu6)
}

fn inverted_residual(b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, cout: usize, stride: usize, t: usize) -> NodeId {
    let hidden = cin * t;
    let conv = |i: usize| format!("{name}.conv.{i}");
    let (mut y, mut i) = (x, 0);
    if t != 1 {
        y = conv_bn_relu6(b, &conv(0), y, cin, hidden, 1, 1, 1);
        i = 1;
    }
    y = conv_bn_relu6(b, &conv(i), y, hidden, hidden, 3, stride, hidden);
    y = b.conv_k(&conv(i + 1), y, hidden, cout, 1, 1, 0, false);
    y = b.batch_norm(&conv(i + 2), y, cout, EPS);
    if stride == 1 && cin == cout {
        y = b.add(&format!("{name}.add"), x, y);
    }
    y
}

pub(super) fn build() -> Graph {
    let mut b = GraphBuilder::new("mobilenet_v2");
    let x = b.input();
    let mut x = conv_bn_relu6(&mut b, "features.0", x, 3, 32, 3, 2, 1);
    // (expand ratio t, channels c, repeats n, first stride s)
    let settings: [(usize, usize, usize, usize); 7] =
        [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
    let (mut cin, mut idx) = (32, 1);
    for (t, c, n, s) in settings {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            x = inverted_residual(&mut b, &format!("features.{idx}"), x, cin, c, stride, t);
            cin = c;
            idx += 1;
        }
    }
    let x = conv_bn_relu6(&mut b, &format!("features.{idx}"), x, cin, 1280, 1, 1, 1);
    let x = b.adaptive_avg_pool("avgpool", x, [1, 1]);
    let x = b.flatten("flatten", x);
    let y = b.linear("classifier.1", x, 1280, 1000, true);
    let heads = Heads {
        gradcam_layer: "features".into(),
        dream_layer: "features.7".into(),
        cam: Some(("features".into(), "classifier.1".into())),
    };
    b.finish(y, heads)
}
