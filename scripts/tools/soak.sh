#!/usr/bin/env bash
# Soak test: moodmirror on a looped 1280x720 clip of moving faces for SECONDS (default 3600),
# at the clip's own 30 fps, logging RSS and per-frame time every minute; exits non-zero when
# RSS grew by more than 2 MiB after the first minute or the median frame time rose 1.5x.
# usage: scripts/tools/soak.sh [SECONDS] [CLIP.mp4]      (log: out/soak.log)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/setup.sh
cargo build --release --locked --example bench_video
mkdir -p out
seconds=${1:-3600}
clip=${2:-out/bench-720p.mp4}
[ -f "$clip" ] || target/release/examples/bench_video make "$clip" 300
target/release/examples/bench_video soak "$clip" "$seconds" | tee out/soak.log
