#!/usr/bin/env bash
# The house rules CI keeps: no source file over 700 lines outside tests; the plugin builds the
# core without training's kernels (no `train` feature, so no bf16 GEMM code in the .so) and has no
# direct candle-core dependency (it uses the core's re-exported Device).
set -euo pipefail
cd "$(dirname "$0")/../.."
long=$(find src moodmirror/src moodmirror-train/src moodmirror-cli/src examples build.rs -name '*.rs' \
  -not -name 'tests.rs' -exec wc -l {} + | awk '$2 != "total" && $1 > 700 {print $2 " (" $1 " lines)"}')
if [ -n "$long" ]; then
  echo "source files over 700 lines: $long" >&2
  exit 1
fi
if cargo tree --locked -p gst-plugin-moodmirror -e features -i moodmirror | grep -q 'moodmirror feature "train"'; then
  echo "the plugin's build of the core has the train feature (bf16 training kernels in the plugin)" >&2
  exit 1
fi
if cargo tree --locked -p gst-plugin-moodmirror -e normal --depth 1 | grep -q candle-core; then
  echo "the plugin depends on candle-core directly: use moodmirror::Device" >&2
  exit 1
fi
echo "house rules: files <= 700 lines, plugin core without train, no direct candle-core in the plugin"
