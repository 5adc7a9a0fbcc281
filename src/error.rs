//! The one error type of the crate. Every message names what a user can act on:
//! which file, which tensor, which layer, expected versus found.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("model file {path}: {msg}")]
    ModelFile { path: PathBuf, msg: String },

    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },

    #[error("unknown architecture `{arch}`; known: {known}")]
    UnknownArch { arch: String, known: String },

    #[error("unknown layer `{name}`{hint}")]
    UnknownLayer { name: String, hint: String },

    #[error("image {path}: {msg}")]
    Image { path: PathBuf, msg: String },

    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape { what: String, expected: String, found: String },

    #[error("{0}")]
    Unsupported(String),

    #[error("{0}")]
    InvalidArgument(String),

    /// A GPU (driver, module, launch or asynchronous fault) error; the message names the kernel
    /// or call.
    #[error("{0}")]
    Device(String),

    /// The device's memory is exhausted; `fits`: the largest batch of the same job that should
    /// fit (the engine's bound on a pass, [`crate::engine::Engine::forward`]), when known.
    #[error("{device}: out of memory: asked for {asked} bytes, {free} of {total} bytes free{}", fit_hint(.fits))]
    OutOfMemory { device: String, asked: usize, free: usize, total: usize, fits: Option<usize> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn fit_hint(fits: &Option<usize>) -> String {
    match fits {
        None => String::new(),
        Some(0) => "; not even a batch of one image of this size fits: use a smaller input".into(),
        Some(k) => format!("; a batch of at most {k} should fit (--batch-size {k})"),
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn model(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::ModelFile { path: path.into(), msg: msg.into() }
    }
    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { name: name.into(), msg: msg.into() }
    }
    pub fn shape(what: impl Into<String>, expected: impl std::fmt::Debug, found: impl std::fmt::Debug) -> Self {
        Error::Shape { what: what.into(), expected: format!("{expected:?}"), found: format!("{found:?}") }
    }
}
