//! moodmirror: real-time facial emotion estimation for GStreamer.
//!
//! The `moodmirror` element finds faces, classifies each into one of FER2013's seven emotions
//! with a CNN run by candle, attaches the results as buffer metadata and optionally draws them.
//! The `moodmirror` binary trains and evaluates the emotion model and runs the same analysis on
//! still images.

use gst::glib;

pub mod analysis;
pub mod average;
pub mod background;
pub mod annotate;
pub mod bench;
pub mod crop_fit;
pub mod dataset;
pub mod detect;
pub mod distill;
pub mod draw;
pub mod emotion;
pub mod evaluate;
pub mod export;
pub mod frame;
pub mod image_cmd;
pub mod image_io;
pub mod meta;
mod moodmirror;
mod moodmirrorjson;
pub mod ops;
pub mod optim;
pub mod plots;
pub mod report;
pub mod tracking;
pub mod train;

pub use moodmirror::MoodMirror;
pub use moodmirrorjson::MoodMirrorJson;

/// candle asks for its thread count on every matrix product and, unless `RAYON_NUM_THREADS` is
/// set, answers by parsing /proc/cpuinfo each time (a third of MTCNN's time here, when MTCNN was
/// the default). The `moodmirror` binary sets the variable once, at the start of `main` before
/// any other thread exists, to the physical core count candle would have found. The plugin does
/// not: a loaded plugin shares its process (OBS, a Python app, gst-inspect's registry scan) with
/// threads that may read the environment while it is written, and the variable would change
/// rayon for every other library there. The element's per-frame networks run on moodmirror's own
/// kernels, with a few candle products left per classification batch.
///
/// # Safety
///
/// No other thread may exist (or read the environment) while this runs.
pub unsafe fn configure_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // SAFETY: the caller guarantees no other thread exists yet.
            unsafe { std::env::set_var("RAYON_NUM_THREADS", num_cpus::get_physical().max(1).to_string()) };
            THREADS_SET_BY_US.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

static THREADS_SET_BY_US: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `RAYON_NUM_THREADS` comes from [`configure_threads`] rather than the user.
pub fn threads_set_by_us() -> bool {
    THREADS_SET_BY_US.load(std::sync::atomic::Ordering::Relaxed)
}

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meta::register();
    moodmirror::register(plugin)?;
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
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
