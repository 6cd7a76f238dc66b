//! moodmirror's inference core: face detectors (YuNet, MTCNN, Haar), the emotion CNN (f32 and
//! int8 CPU kernels; training's bf16 kernels with the `train` feature), tracking, the per-frame
//! analysis and drawing, on plain image planes. No GStreamer and no command line here: the
//! plugin and the CLI build on it.

pub mod analysis;
pub mod background;
pub mod crop;
pub mod detect;
pub mod device;
pub mod draw;
pub mod emotion;
pub mod error;
pub mod face;
pub mod image;
pub mod image_io;
pub mod layers;
pub mod ops;
pub mod tracking;

pub use error::{Error, Result};

/// Where the models run (CPU, or a CUDA GPU with the `cuda` feature): candle's device, so that
/// users of the core need no candle dependency of their own.
pub use candle_core::Device;
