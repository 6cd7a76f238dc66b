#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds moodmirror and runs it with the embedded default
# model: annotates the bundled public-domain photo into a short MP4 and a PNG, then shows the
# live-webcam pipeline. Output goes to ./out/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release --locked
export GST_PLUGIN_PATH="$PWD/target/release"
mkdir -p out

echo "== annotating tests/fixtures/astronaut.jpg into out/astronaut-annotated.mp4 (3 s, 30 fps)"
gst-launch-1.0 -q filesrc location=tests/fixtures/astronaut.jpg ! jpegdec ! videoconvert \
  ! imagefreeze num-buffers=90 ! video/x-raw,framerate=30/1 \
  ! moodmirror ! videoconvert ! x264enc speed-preset=veryfast tune=stillimage \
  ! mp4mux ! filesink location=out/astronaut-annotated.mp4

echo "== one still frame: out/astronaut-annotated.png, results: out/astronaut.jsonl"
target/release/moodmirror image --annotate out --jsonl out/astronaut.jsonl tests/fixtures/astronaut.png
mv -f out/astronaut.png out/astronaut-annotated.png
cat out/astronaut.jsonl

echo
echo "Done. Output files:"
ls -l "$PWD"/out/astronaut-annotated.mp4 "$PWD"/out/astronaut-annotated.png "$PWD"/out/astronaut.jsonl
echo
echo "Live webcam (run it yourself; needs a camera and a display):"
echo "  GST_PLUGIN_PATH=$PWD/target/release gst-launch-1.0 v4l2src ! videoconvert ! moodmirror ! videoconvert ! autovideosink"
