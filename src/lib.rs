//! moodmirror: real-time facial emotion estimation for GStreamer.
//!
//! The `moodmirror` element finds faces, classifies each into one of FER2013's seven emotions
//! with a CNN run by candle (the `moodmirror` core crate), attaches the results as buffer
//! metadata and optionally draws them; `moodmirrorjson` writes them as JSON lines to a file or
//! publishes them to an MQTT broker.

use gst::glib;

pub mod export;
pub mod frame;
pub mod meta;
mod moodmirror;
mod moodmirrorjson;
mod state;

pub use crate::moodmirror::{DetectionMode, DetectorKind, DeviceKind, MoodMirror, Precision};
pub use moodmirrorjson::{mqtt, Method as JsonMethod, MoodMirrorJson};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meta::register();
    crate::moodmirror::register(plugin)?;
    moodmirrorjson::register(plugin)
}

gst::plugin_define!(
    moodmirror,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    // GStreamer refuses a plugin without an origin; the project publishes no address yet, so
    // this says so in GStreamer's own words rather than naming one that does not exist.
    "Unknown package origin",
    env!("BUILD_REL_DATE")
);
