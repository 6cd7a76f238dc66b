#!/usr/bin/env bash
# Per-frame time of moodmirror (default settings) at 640x480 and 1280x720 on the bundled photo
# (one face), measured against the same pipeline without moodmirror in the same run.
# usage: scripts/tools/frame_time.sh [frames]   (needs a release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
export GST_PLUGIN_PATH="$PWD/target/release"
n=${1:-200}
run() {
  local start end
  start=$(date +%s.%N)
  gst-launch-1.0 -q filesrc location=tests/fixtures/astronaut.jpg ! jpegdec ! videoconvert \
    ! videoscale add-borders=true ! "video/x-raw,format=I420,width=$1,height=$2,pixel-aspect-ratio=1/1" \
    ! imagefreeze num-buffers="$n" $3 ! fakesink sync=false
  end=$(date +%s.%N)
  echo "$start $end" | awk -v n="$n" '{printf "%.2f", ($2-$1)*1000/n}'
}
for size in "640 480" "1280 720"; do
  set -- $size
  base=$(run "$1" "$2" "")
  with=$(run "$1" "$2" "! moodmirror")
  nodraw=$(run "$1" "$2" "! moodmirror draw=false")
  echo "$1x$2: pipeline alone $base ms/frame, with moodmirror $with ms/frame (draw=false $nodraw)" \
    "-> moodmirror $(awk -v a="$with" -v b="$base" 'BEGIN{printf "%.1f", a-b}') ms per frame"
done
