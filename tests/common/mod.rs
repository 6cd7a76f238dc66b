//! Shared by the integration tests of the plugin and the CLI: GStreamer and plugin set-up, fixture paths.

use std::path::{Path, PathBuf};
use std::sync::Once;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst init");
        gstmoodmirror::plugin_register_static().expect("register moodmirror");
    });
}

/// A file of the workspace's `tests/fixtures`, from the tests of any of its crates.
pub fn fixture(name: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().find(|dir| dir.join("tests/fixtures").is_dir()).unwrap_or(manifest);
    root.join("tests/fixtures").join(name)
}
