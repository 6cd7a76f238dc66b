//! Shared by the integration tests: GStreamer and plugin set-up, fixture paths.

use std::path::{Path, PathBuf};
use std::sync::Once;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst init");
        gstmoodmirror::plugin_register_static().expect("register moodmirror");
    });
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}
