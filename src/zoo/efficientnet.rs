//! EfficientNet-Lite0: ReLU6, no squeeze-excitation, stem 32 and head 1280 channels, under two
//! namings of the same network.
//!
//! - timm (`timm/models/efficientnet.py`, `_efficientnet_blocks.py`): `conv_stem`, `bn1`,
//!   `blocks.S.B`, `conv_head`, `bn2`, `global_pool`, `classifier`. timm's `BatchNormAct2d` is
//!   one module that normalises then activates (its `act` submodule is called inside its
//!   forward). It becomes two nodes under the module's own path, like a module called twice: the
//!   batch norm `…bn1:0` (which owns `…bn1.weight` etc.) and the ReLU6 `…bn1`, so `bn1` resolves to
//!   the activated output, as a hook on the module would see it, and the pre-activation stays
//!   reachable as `bn1:0`. `efficientnet_lite0` pads k//2 with BN eps 1e-5;
//!   `tf_efficientnet_lite0` (ported TF weights) pads TF "SAME" with eps 1e-3.
//! - the `efficientnet_lite_pytorch` package (`model.py`): `_conv_stem`, `_bn0`, `_blocks.N`
//!   (`MBConvBlock`), `_conv_head`, `_bn1`, `_avg_pooling`, `_fc`; TF "SAME" padding everywhere,
//!   BN eps 1e-3. Its one `_swish` module (ReLU6, whatever the name says) runs after the stem
//!   (`_swish:0`) and after the head (`_swish`); inside a block, `_blocks.N._swish` likewise.
//!
//! In both, a block's residual sum is the node `<block>.add`, the block's last node.

use crate::backend::Act;
use crate::graph::{Graph, GraphBuilder, Heads, NodeId, Pad};

/// Lite0 stages: (repeats, kernel, first stride, expand ratio, output channels).
const STAGES: [(usize, usize, usize, usize, usize); 7] =
    [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)];
const STEM: usize = 32;
const HEAD: usize = 1280;

/// Convolution geometry shared by one naming: explicit k//2 padding or TF "SAME".
#[derive(Clone, Copy)]
struct Style {
    same: bool,
    eps: f32,
}

impl Style {
    #[allow(clippy::too_many_arguments)]
    fn conv(self, b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, cout: usize, k: usize, stride: usize, groups: usize) -> NodeId {
        let pad = if self.same { Pad::Same } else { Pad::sym(k / 2, k / 2) };
        b.conv(name, x, cin, cout, [k, k], [stride, stride], pad, [1, 1], groups, false)
    }
}

/// timm's `BatchNormAct2d`: a bn node, then (if `act`) a ReLU6 node, both called `name` (so the
/// builder renames the bn node `name:0`).
fn bn_act(b: &mut GraphBuilder, name: &str, x: NodeId, c: usize, eps: f32, act: bool) -> NodeId {
    let x = b.batch_norm(name, x, c, eps);
    if act {
        b.act(name, x, Act::Relu6)
    } else {
        x
    }
}

pub(super) fn build_timm(arch: &str, tf: bool) -> Graph {
    let st = if tf { Style { same: true, eps: 1e-3 } } else { Style { same: false, eps: 1e-5 } };
    let mut b = GraphBuilder::new(arch);
    let x = b.input();
    let x = st.conv(&mut b, "conv_stem", x, 3, STEM, 3, 2, 1);
    let mut x = bn_act(&mut b, "bn1", x, STEM, st.eps, true);
    let mut cin = STEM;
    for (s, &(repeats, k, stride, t, cout)) in STAGES.iter().enumerate() {
        for i in 0..repeats {
            let stride = if i == 0 { stride } else { 1 };
            let name = format!("blocks.{s}.{i}");
            let n = |m: &str| format!("{name}.{m}");
            let y = if s == 0 {
                // DepthwiseSeparableConv: conv_dw, bn1 (+act), conv_pw, bn2 (no act)
                let y = st.conv(&mut b, &n("conv_dw"), x, cin, cin, k, stride, cin);
                let y = bn_act(&mut b, &n("bn1"), y, cin, st.eps, true);
                let y = st.conv(&mut b, &n("conv_pw"), y, cin, cout, 1, 1, 1);
                bn_act(&mut b, &n("bn2"), y, cout, st.eps, false)
            } else {
                // InvertedResidual: conv_pw, bn1 (+act), conv_dw, bn2 (+act), conv_pwl, bn3
                let mid = cin * t;
                let y = st.conv(&mut b, &n("conv_pw"), x, cin, mid, 1, 1, 1);
                let y = bn_act(&mut b, &n("bn1"), y, mid, st.eps, true);
                let y = st.conv(&mut b, &n("conv_dw"), y, mid, mid, k, stride, mid);
                let y = bn_act(&mut b, &n("bn2"), y, mid, st.eps, true);
                let y = st.conv(&mut b, &n("conv_pwl"), y, mid, cout, 1, 1, 1);
                bn_act(&mut b, &n("bn3"), y, cout, st.eps, false)
            };
            x = if stride == 1 && cin == cout { b.add(&n("add"), y, x) } else { y };
            cin = cout;
        }
    }
    let x = st.conv(&mut b, "conv_head", x, cin, HEAD, 1, 1, 1);
    let x = bn_act(&mut b, "bn2", x, HEAD, st.eps, true);
    let x = b.adaptive_avg_pool("global_pool.pool", x, [1, 1]);
    let x = b.flatten("global_pool.flatten", x);
    let y = b.linear("classifier", x, HEAD, 1000, true);
    let heads = Heads {
        gradcam_layer: "bn2".into(),
        dream_layer: "blocks.5".into(),
        cam: Some(("bn2".into(), "classifier".into())),
    };
    b.finish(y, heads)
}

pub(super) fn build_lite_package() -> Graph {
    let st = Style { same: true, eps: 1e-3 };
    let mut b = GraphBuilder::new("efficientnet_lite0");
    let x = b.input();
    let x = st.conv(&mut b, "_conv_stem", x, 3, STEM, 3, 2, 1);
    let x = b.batch_norm("_bn0", x, STEM, st.eps);
    let mut x = b.act("_swish", x, Act::Relu6);
    let (mut cin, mut idx) = (STEM, 0);
    for &(repeats, k, stride, t, cout) in &STAGES {
        for i in 0..repeats {
            let stride = if i == 0 { stride } else { 1 };
            let name = format!("_blocks.{idx}");
            let n = |m: &str| format!("{name}.{m}");
            let mid = cin * t;
            let mut y = x;
            if t != 1 {
                y = st.conv(&mut b, &n("_expand_conv"), y, cin, mid, 1, 1, 1);
                y = b.batch_norm(&n("_bn0"), y, mid, st.eps);
                y = b.act(&n("_swish"), y, Act::Relu6);
            }
            y = st.conv(&mut b, &n("_depthwise_conv"), y, mid, mid, k, stride, mid);
            y = b.batch_norm(&n("_bn1"), y, mid, st.eps);
            y = b.act(&n("_swish"), y, Act::Relu6);
            y = st.conv(&mut b, &n("_project_conv"), y, mid, cout, 1, 1, 1);
            y = b.batch_norm(&n("_bn2"), y, cout, st.eps);
            x = if stride == 1 && cin == cout { b.add(&n("add"), y, x) } else { y };
            cin = cout;
            idx += 1;
        }
    }
    let x = st.conv(&mut b, "_conv_head", x, cin, HEAD, 1, 1, 1);
    let x = b.batch_norm("_bn1", x, HEAD, st.eps);
    let x = b.act("_swish", x, Act::Relu6);
    let x = b.adaptive_avg_pool("_avg_pooling", x, [1, 1]);
    let x = b.flatten("flatten", x);
    let y = b.linear("_fc", x, HEAD, 1000, true);
    let heads = Heads {
        gradcam_layer: "_swish".into(),
        dream_layer: "_blocks.10".into(),
        cam: Some(("_swish".into(), "_fc".into())),
    };
    b.finish(y, heads)
}
