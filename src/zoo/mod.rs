//! The model zoo: each architecture as a [`Graph`] whose node names are PyTorch module paths and
//! whose parameters are the exact state-dict names and shapes of the published models.
//!
//! - `resnet.rs`: torchvision ResNet-18/34/50/101/152.
//! - `vgg.rs`: torchvision VGG-11/13/16/19 (plain and `_bn`) and AlexNet.
//! - `googlenet.rs`: torchvision GoogLeNet (Inception v1).
//! - `mobilenet.rs`: torchvision MobileNetV2.
//! - `squeezenet.rs`: torchvision SqueezeNet 1.0 / 1.1.
//! - `efficientnet.rs`: EfficientNet-Lite0 under timm's names and under the
//!   `efficientnet_lite_pytorch` package's names.
//! - this file: the arch table ([`ARCHS`], [`build`]) and the helpers the builders share.
//!
//! Naming conventions shared by every builder:
//! - Dropout is the identity at inference and gets no node.
//! - An operation done by a function rather than a module (`torch.flatten`, `x + identity`,
//!   `torch.cat`, `F.relu`) gets a node named after where it happens: `flatten` at the top level,
//!   `<block>.add`, `<block>.concat`, `<basicconv>.relu`. Such a node is always the last one of its
//!   block when it is the block's output, so the block's path resolves to it.

mod efficientnet;
mod googlenet;
mod mobilenet;
mod resnet;
mod squeezenet;
mod vgg;

use crate::backend::Pool2dGeom;
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, NodeId};

/// Every architecture name `build` accepts.
pub const ARCHS: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "alexnet",
    "googlenet",
    "mobilenet_v2",
    "squeezenet1_0",
    "squeezenet1_1",
    "efficientnet_lite0",
    "tf_efficientnet_lite0",
];

/// Build the graph for `arch`. `has_tensor` tells whether the weights file holds a tensor of
/// that name, for architectures published under more than one naming (efficientnet_lite0).
pub fn build(arch: &str, has_tensor: &dyn Fn(&str) -> bool) -> Result<Graph> {
    let g = match arch {
        "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152" => resnet::build(arch),
        "vgg11" | "vgg11_bn" | "vgg13" | "vgg13_bn" | "vgg16" | "vgg16_bn" | "vgg19" | "vgg19_bn" => vgg::build_vgg(arch),
        "alexnet" => vgg::build_alexnet(),
        "googlenet" => googlenet::build(),
        "mobilenet_v2" => mobilenet::build(),
        "squeezenet1_0" | "squeezenet1_1" => squeezenet::build(arch),
        "efficientnet_lite0" if has_tensor("_conv_stem.weight") => efficientnet::build_lite_package(),
        "efficientnet_lite0" => efficientnet::build_timm(arch, false),
        "tf_efficientnet_lite0" => efficientnet::build_timm(arch, true),
        _ => return Err(Error::UnknownArch { arch: arch.into(), known: ARCHS.join(", ") }),
    };
    Ok(g)
}

/// PyTorch pooling geometry with a square kernel, stride and padding.
fn pool(k: usize, stride: usize, pad: usize, ceil_mode: bool) -> Pool2dGeom {
    Pool2dGeom { kernel: [k, k], stride: [stride, stride], pad: [pad, pad], ceil_mode, count_include_pad: true }
}

/// `conv` (square kernel, symmetric padding, no bias) followed by batch norm `bn`; returns the
/// batch norm node.
#[allow(clippy::too_many_arguments)]
fn conv_bn(
    b: &mut GraphBuilder,
    conv: &str,
    bn: &str,
    x: NodeId,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    eps: f32,
) -> NodeId {
    let x = b.conv_k(conv, x, cin, cout, k, stride, pad, false);
    b.batch_norm(bn, x, cout, eps)
}
