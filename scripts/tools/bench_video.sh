#!/usr/bin/env bash
# Frames/s of moodmirror on a 1280x720 30 fps H.264 clip of three moving real faces, against
# decoding alone and against GStreamer's own `facedetect` (OpenCV Haar), all in one run:
#   (a) decode only            (b) decode + facedetect display=false
#   (c) decode + moodmirror draw=false (defaults otherwise)
#   (d) (c) with detect-interval=1 classify-interval=1
#   (e) decode + moodmirror, default settings (drawing on)
# then the element's per-frame time (p50/p95/p99/max) on that clip and on a crowded one (12
# faces), with full detections on the streaming thread and on the worker, and the resident
# memory of a 10,000-frame run.
# usage: scripts/tools/bench_video.sh [CLIP.mp4]   (generated into out/ when not given)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/setup.sh
dpkg -s gstreamer1.0-opencv >/dev/null 2>&1 || { apt-get install -y -qq gstreamer1.0-opencv >/dev/null; }
cargo build --release --locked --example bench_video
export GST_PLUGIN_PATH="$PWD/target/release"
mkdir -p out
clip=${1:-out/bench-720p.mp4}
[ -f "$clip" ] || target/release/examples/bench_video make "$clip" 300
frames=$(gst-launch-1.0 -q filesrc location="$clip" ! qtdemux ! h264parse ! avdec_h264 ! fakesink silent=false -v 2>/dev/null | grep -c "chain" || true)
[ "$frames" -gt 0 ] || frames=300

decode="filesrc location=$clip ! qtdemux ! h264parse ! avdec_h264"
time_fps() {  # pipeline tail -> frames/s
  local start end
  start=$(date +%s.%N)
  gst-launch-1.0 -q $decode $1 ! fakesink sync=false >/dev/null
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" -v n="$frames" 'BEGIN{printf "%.1f", n/(e-s)}'
}
a=$(time_fps "")
b=$(time_fps "! videoconvert ! facedetect display=false")
c=$(time_fps "! moodmirror draw=false")
d=$(time_fps "! moodmirror draw=false detect-interval=1 classify-interval=1")
e=$(time_fps "! moodmirror")
echo "clip: $clip ($frames frames, 1280x720)"
printf "%-58s %8s %12s %14s\n" "pipeline" "frames/s" "ms/frame" "extra ms/frame"
row() { awk -v name="$1" -v f="$2" -v a="$a" 'BEGIN{ms=1000/f; base=1000/a; printf "%-58s %8.1f %12.2f %14.2f\n", name, f, ms, ms-base}'; }
row "(a) decode only" "$a"
row "(b) decode + facedetect display=false" "$b"
row "(c) decode + moodmirror draw=false" "$c"
row "(d) decode + moodmirror draw=false, intervals 1" "$d"
row "(e) decode + moodmirror (defaults, drawing)" "$e"
awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" -v e="$e" 'BEGIN{
  base=1000/a; fd=1000/b-base;
  printf "\nmoodmirror cost per frame as a share of facedetect'"'"'s: (c) %.3f  (d) %.3f  (e) %.3f\n", (1000/c-base)/fd, (1000/d-base)/fd, (1000/e-base)/fd;
  printf "frames/s relative to decode only: (b) %.3f (c) %.3f (d) %.3f (e) %.3f; to facedetect: (c) %.1fx (d) %.1fx (e) %.1fx\n", b/a, c/a, d/a, e/a, c/b, d/b, e/b }'
echo
crowd=out/crowd-720p.mp4
[ -f "$crowd" ] || target/release/examples/bench_video make "$crowd" 300 12
for clip_name in "$clip" "$crowd"; do
  echo "== per-frame time in the element: $clip_name"
  for props in "draw=false detection-mode=sync" "draw=false detection-mode=async" "detection-mode=async"; do
    target/release/examples/bench_video frames "$clip_name" $props
  done
done
echo
echo "== resident memory over 10,000 frames (moodmirror draw=false, 720p, three faces)"
target/release/examples/bench_video memory 10000
