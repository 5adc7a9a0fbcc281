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

    #[error("{device}: out of memory: asked for {asked} bytes, {free} of {total} bytes free")]
    OutOfMemory { device: String, asked: usize, free: usize, total: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
