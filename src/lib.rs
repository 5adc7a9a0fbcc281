//! deepviz: see what a convolutional network has learned.
//!
//! Map of the crate:
//! - [`error`]: the one error enum.
//! - [`tensor`]: the host tensor (NCHW f32) used at the API boundary and by the CPU engine.
//! - [`backend`]: one method per op ([`backend::Backend`]); `backend::cpu` is the reference engine.
//! - [`device`]: devices that run our CUDA kernels (the real GPU, its CPU emulation, a recorder),
//!   and the launch queue that replays repeated launches as CUDA graphs.
//! - [`engine`]: a model made ready on one backend (weights prepared), forward / backward.
//! - [`graph`]: named-layer DAG, shape inference, forward / backward execution.
//! - [`zoo`]: architectures (torchvision / timm / efficientnet-lite naming) as graphs.
//! - [`onnx`]: importing a CNN from an ONNX file into the same graph and parameters.
//! - [`model`]: loading a model file (`.safetensors`, or ONNX through [`onnx`]): validation,
//!   dtype conversion, layer names.
//! - [`imageio`]: image loading and preprocessing, `.npy` input/output, colormaps and PNGs.
//! - [`output`]: the output set of a run: staged, committed all at once, never over an input.
//! - [`viz`]: the visualisations: the [`viz::Attribution`] trait and its methods, targets,
//!   DeepDream, classification, heat-map pictures.
//! - [`job`]: whole jobs over files (the CLI's work): inputs, targets, device choice, outputs.
//! - [`dataset`]: dataset commands (top patches, neighbours, filters): streaming, shards, merge, reports.
//! - [`cli`]: the command line the `deepviz` binary parses (a clap `Command`).

#![warn(missing_docs)]

pub mod backend;
pub mod cli;
pub mod dataset;
pub mod device;
pub mod engine;
pub mod error;
pub mod graph;
pub mod imageio;
pub mod job;
pub mod model;
pub mod onnx;
pub mod output;
pub mod tensor;
pub mod viz;
pub mod zoo;

pub use error::{Error, Result};

/// The README's code blocks, run as doctests so its library example stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use tensor::Tensor;
