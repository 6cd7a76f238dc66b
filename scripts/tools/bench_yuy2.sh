#!/usr/bin/env bash
# ms per frame of moodmirror on a webcam's packed YUY2 at 1280x720 (the bundled photo frozen):
# the element on YUY2 directly against videoconvert to I420 first (what it needed before YUY2 was
# accepted), each against the same pipeline without it, in the same run.
# usage: scripts/tools/bench_yuy2.sh [frames] [rounds]   (needs a release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
export GST_PLUGIN_PATH="$PWD/target/release"
n=${1:-300}
rounds=${2:-2}
run() {
  local start end
  start=$(date +%s.%N)
  gst-launch-1.0 -q filesrc location=tests/fixtures/astronaut.jpg ! jpegdec ! videoconvert ! videoscale add-borders=true \
    ! "video/x-raw,format=YUY2,width=1280,height=720,pixel-aspect-ratio=1/1" ! imagefreeze num-buffers="$n" $1 ! fakesink sync=false
  end=$(date +%s.%N)
  echo "$start $end" | awk -v n="$n" '{printf "%.2f", ($2-$1)*1000/n}'
}
for round in $(seq "$rounds"); do
  echo "round $round (ms/frame): source alone $(run '')" \
    "| YUY2 ! moodmirror draw=false $(run '! moodmirror draw=false')" \
    "| YUY2 ! videoconvert ! I420 ! moodmirror draw=false $(run '! videoconvert ! video/x-raw,format=I420 ! moodmirror draw=false')" \
    "| YUY2 ! videoconvert ! I420 alone $(run '! videoconvert ! video/x-raw,format=I420')"
done
