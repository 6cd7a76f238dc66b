//! moodmirror's inference core: face detectors (YuNet, MTCNN, Haar), the emotion CNN (f32,
//! bf16 and int8 CPU kernels), tracking, the per-frame analysis and drawing, on plain image
//! planes. No GStreamer and no command line here: the plugin and the CLI build on it.

pub mod analysis;
pub mod background;
pub mod detect;
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
