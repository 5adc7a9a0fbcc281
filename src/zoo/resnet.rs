//! torchvision ResNet (`torchvision/models/resnet.py`, v1.5: the stride sits on the
//! Bottleneck's 3×3 conv).
//!
//! Each block reuses one `relu` module, so its calls are `layerL.B.relu:0`, `:1`, … and the last
//! call (after the residual add) is `layerL.B.relu`, the block's output. The residual sum is a
//! `+=` in the source; it is the node `layerL.B.add`.

use super::{conv_bn, pool};
use crate::backend::Act;
use crate::graph::{Graph, GraphBuilder, Heads, NodeId};

const EPS: f32 = 1e-5;

pub(super) fn build(arch: &str) -> Graph {
    let (bottleneck, blocks): (bool, [usize; 4]) = match arch {
        "resnet18" => (false, [2, 2, 2, 2]),
        "resnet34" => (false, [3, 4, 6, 3]),
        "resnet50" => (true, [3, 4, 6, 3]),
        "resnet101" => (true, [3, 4, 23, 3]),
        "resnet152" => (true, [3, 8, 36, 3]),
        _ => unreachable!("zoo::build dispatches only resnet names here"),
    };
    let expansion = if bottleneck { 4 } else { 1 };
    let mut b = GraphBuilder::new(arch);
    let x = b.input();
    let x = conv_bn(&mut b, "conv1", "bn1", x, 3, 64, 7, 2, 3, EPS);
    let x = b.act("relu", x, Act::Relu);
    let mut x = b.max_pool("maxpool", x, pool(3, 2, 1, false));

    let mut inplanes = 64;
    for (l, &n) in blocks.iter().enumerate() {
        let planes = 64 << l;
        for i in 0..n {
            let stride = if l > 0 && i == 0 { 2 } else { 1 };
            let name = format!("layer{}.{i}", l + 1);
            x = if bottleneck {
                bottleneck_block(&mut b, &name, x, inplanes, planes, stride)
            } else {
                basic_block(&mut b, &name, x, inplanes, planes, stride)
            };
            inplanes = planes * expansion;
        }
    }

    let x = b.adaptive_avg_pool("avgpool", x, [1, 1]);
    let x = b.flatten("flatten", x);
    let y = b.linear("fc", x, 512 * expansion, 1000, true);
    let heads = Heads {
        gradcam_layer: "layer4".into(),
        dream_layer: "layer3".into(),
        cam: Some(("layer4".into(), "fc".into())),
    };
    b.finish(y, heads)
}

/// `downsample.0` (1×1 conv, stride) + `downsample.1` (bn) when the shape changes, else `x`.
fn shortcut(b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, cout: usize, stride: usize) -> NodeId {
    if stride == 1 && cin == cout {
        return x;
    }
    conv_bn(b, &format!("{name}.downsample.0"), &format!("{name}.downsample.1"), x, cin, cout, 1, stride, 0, EPS)
}

fn basic_block(b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, planes: usize, stride: usize) -> NodeId {
    let n = |s: &str| format!("{name}.{s}");
    let y = conv_bn(b, &n("conv1"), &n("bn1"), x, cin, planes, 3, stride, 1, EPS);
    let y = b.act(&n("relu"), y, Act::Relu);
    let y = conv_bn(b, &n("conv2"), &n("bn2"), y, planes, planes, 3, 1, 1, EPS);
    let identity = shortcut(b, name, x, cin, planes, stride);
    let y = b.add(&n("add"), y, identity);
    b.act(&n("relu"), y, Act::Relu)
}

fn bottleneck_block(b: &mut GraphBuilder, name: &str, x: NodeId, cin: usize, planes: usize, stride: usize) -> NodeId {
    let n = |s: &str| format!("{name}.{s}");
    let cout = planes * 4;
    let y = conv_bn(b, &n("conv1"), &n("bn1"), x, cin, planes, 1, 1, 0, EPS);
    let y = b.act(&n("relu"), y, Act::Relu);
    let y = conv_bn(b, &n("conv2"), &n("bn2"), y, planes, planes, 3, stride, 1, EPS);
    let y = b.act(&n("relu"), y, Act::Relu);
    let y = conv_bn(b, &n("conv3"), &n("bn3"), y, planes, cout, 1, 1, 0, EPS);
    let identity = shortcut(b, name, x, cin, cout, stride);
    let y = b.add(&n("add"), y, identity);
    b.act(&n("relu"), y, Act::Relu)
}
