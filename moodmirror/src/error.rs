//! The core's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not a readable image: {source}", path.display())]
    ImageFile { path: PathBuf, source: Box<Error> },
    #[error("unknown image format")]
    UnknownImageFormat,
    #[error("truncated JPEG (no end-of-image marker)")]
    TruncatedJpeg,
    #[error(transparent)]
    Decode(#[from] image::ImageError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
