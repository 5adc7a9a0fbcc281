//! The one error type of the crate. Every message names what a user can act on:
//! which file, which tensor, which layer, expected versus found.

use std::path::PathBuf;

/// Everything that can go wrong in deepviz, each with the context a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// the file
        path: PathBuf,
        /// what the system said
        source: std::io::Error,
    },

    /// A model file is damaged or does not fit its architecture.
    #[error("model file {path}: {msg}")]
    ModelFile {
        /// the file (or `embedded …` for the default model)
        path: PathBuf,
        /// what is wrong, naming the tensor or field
        msg: String,
    },

    /// One tensor of a model is unusable (shape, dtype, non-finite values).
    #[error("tensor `{name}`: {msg}")]
    Tensor {
        /// its state-dict name
        name: String,
        /// what is wrong
        msg: String,
    },

    /// An architecture the zoo does not build.
    #[error("unknown architecture `{arch}`; known: {known}")]
    UnknownArch {
        /// the name asked for
        arch: String,
        /// the names the zoo knows, comma-separated
        known: String,
    },

    /// A layer name the model does not have.
    #[error("unknown layer `{name}`{hint}")]
    UnknownLayer {
        /// the module path asked for
        name: String,
        /// the close matches, as `; close matches: …` (or empty)
        hint: String,
    },

    /// An image that cannot be decoded or used.
    #[error("image {path}: {msg}")]
    Image {
        /// the file
        path: PathBuf,
        /// what is wrong
        msg: String,
    },

    /// A tensor of the wrong shape.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape {
        /// the tensor or operation
        what: String,
        /// the shape wanted
        expected: String,
        /// the shape given
        found: String,
    },

    /// Something this build, model or method does not do (the message says what does).
    #[error("{0}")]
    Unsupported(String),

    /// A bad option or input value (the message names it and what is allowed).
    #[error("{0}")]
    InvalidArgument(String),

    /// A GPU (driver, module, launch or asynchronous fault) error; the message names the kernel
    /// or call.
    #[error("{0}")]
    Device(String),

    /// The device could not allocate a buffer.
    #[error("{device}: out of memory: asked for {asked} bytes, {free} of {total} bytes free{}", fit_hint(.fits))]
    OutOfMemory {
        /// the device's name
        device: String,
        /// bytes asked for
        asked: usize,
        /// bytes free at the time
        free: usize,
        /// the device's memory
        total: usize,
        /// the largest batch of the same job that should fit (the engine's bound on a pass,
        /// [`crate::engine::Engine::forward`]), when known
        fits: Option<usize>,
    },
}

/// deepviz's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn fit_hint(fits: &Option<usize>) -> String {
    match fits {
        None => String::new(),
        Some(0) => "; not even a batch of one image of this size fits: use a smaller input".into(),
        Some(k) => format!("; a batch of at most {k} should fit (--batch-size {k})"),
    }
}

impl Error {
    /// [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    /// [`Error::ModelFile`] of `path`.
    pub fn model(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::ModelFile { path: path.into(), msg: msg.into() }
    }
    /// [`Error::Tensor`] named `name`.
    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { name: name.into(), msg: msg.into() }
    }
    /// [`Error::Shape`] of `what`, the shapes written as `Debug` shows them.
    pub fn shape(what: impl Into<String>, expected: impl std::fmt::Debug, found: impl std::fmt::Debug) -> Self {
        Error::Shape { what: what.into(), expected: format!("{expected:?}"), found: format!("{found:?}") }
    }
}
