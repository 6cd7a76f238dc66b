//! The core's error type: one variant per kind of failure, each message naming what failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Reasons are part of the message, not error sources (a field named `source` is one): a
    // chain printer such as anyhow's `{:#}` would say them twice.
    #[error("{}: cannot read: {reason}", path.display())]
    Read { path: PathBuf, reason: std::io::Error },
    #[error("{}: not a readable image: {reason}", path.display())]
    ImageFile { path: PathBuf, reason: Box<Error> },
    #[error("unknown image format")]
    UnknownImageFormat,
    #[error("truncated JPEG (no end-of-image marker)")]
    TruncatedJpeg,
    #[error(transparent)]
    Decode(#[from] image::ImageError),
    /// An emotion model file that cannot be read, parsed or loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A model file's tensors or metadata are unusable (non-finite weights, bad metadata values).
    #[error("{0}")]
    ModelFile(String),
    /// A Haar cascade XML that cannot be used.
    #[error("Haar cascade: {0}")]
    Cascade(String),
    /// A detector failed to load or to run.
    #[error("{detector}: {reason}")]
    Detector { detector: &'static str, reason: String },
    /// The background detection thread could not start or stopped.
    #[error("background detection: {0}")]
    Worker(String),
    /// The requested arithmetic is not available for this model or CPU.
    #[error("{0}")]
    Precision(String),
    /// The requested device is not available.
    #[error("{0}")]
    Device(String),
    /// A kernel was given buffers or shapes it cannot work on.
    #[error("{0}")]
    Kernel(String),
    /// A network's computation failed (shapes, a device error): the per-frame API's failures.
    #[error("model computation: {0}")]
    Compute(candle_core::Error),
    /// The embedded label font cannot be read.
    #[error("label font: {0}")]
    Font(String),
}

/// An emotion model file that cannot be read, parsed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // The OS reason is part of the message, not an error source: a chain printer would say it twice.
    #[error("cannot read emotion model '{path}': {reason}")]
    Io { path: String, reason: std::io::Error },
    #[error("emotion model '{origin}' is not a valid safetensors file: {reason}")]
    Format { origin: String, reason: String },
    #[error("emotion model '{origin}' does not fit architecture '{arch}': {reason}")]
    Shape { origin: String, arch: String, reason: String },
}

// Not `#[from]`, which would also make it the error's source: said in the message, it is not
// repeated by chain printers.
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Compute(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
