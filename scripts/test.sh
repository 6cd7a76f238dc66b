#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (apt packages) and runs every moodmirror test:
# formatting, module cycles, unit tests, GStreamer harness/pipeline tests, the CLI, clippy,
# gst-inspect and the Python GI reader, for every crate of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== style: rustfmt, module cycles, house rules"
cargo fmt --all --check
python3 scripts/ci/check_module_cycles.py
bash scripts/ci/check_house.sh

# One release build serves the plugin, the binary and the tests (candle is unusable unoptimised).
cargo build --release --locked
cargo test --release --locked

# After the tests: clippy re-checks the same release build's crates (no second full build).
echo "== clippy (all crates and targets, warnings are errors)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

echo "== gst-inspect-1.0 moodmirror"
GST_PLUGIN_PATH="$PWD/target/release" gst-inspect-1.0 moodmirror | grep -E "^  (draw|detector|detection-mode|min-face-size|max-faces|scale-factor|min-neighbors|model-location|device|post-messages) "

echo "== Python (GObject introspection) reads MoodMirrorMeta"
GST_PLUGIN_PATH="$PWD/target/release" /usr/bin/python3 tests/python/test_read_meta.py
