#!/usr/bin/env bash
# Accuracy of the element on video: builds clips of real portraits changing in place from a
# labelled photo folder (wild-dev: images/ + labels.csv) with make_face_clip.py, then scores the
# element on each with `moodmirror evaluate --video`: defaults, then a full detection on every
# frame, then any element settings given. The README's "Accuracy on video" table comes from it.
# usage: scripts/tools/bench_face_clips.sh PHOTOS_DIR [TOOLS_DIR] [-- element options, e.g. --detector mtcnn]
#   TOOLS_DIR: where make_face_clip.py lives [default: ../shared/tools]
set -euo pipefail
cd "$(dirname "$0")/../.."
photos=${1:?usage: scripts/tools/bench_face_clips.sh PHOTOS_DIR [TOOLS_DIR] [-- element options]}
shift
tools=../shared/tools
if [ $# -gt 0 ] && [ "$1" != "--" ]; then tools=$1; shift; fi
[ "${1:-}" = "--" ] && shift
[ -f "$tools/make_face_clip.py" ] || { echo "no make_face_clip.py in $tools" >&2; exit 1; }
cargo build --release --locked -p moodmirror-cli
mm=target/release/moodmirror
out=out/face-clips
mkdir -p "$out"
# name | make_face_clip.py options | drift (px/frame)
clips=(
  "cells3-400|--cells 3 --size 400 --segments 20|0"
  "cells6-160-drift|--cells 6 --size 160 --drift 1 --background noise --offset 100|1"
  "cells3-300-soft|--cells 3 --size 300 --soft 3 --background gradient --offset 300|0"
  "cells2-500-grey-drift|--cells 2 --size 500 --grey --drift 2 --offset 500|2"
  "fills-frame|--cells 1 --size 680 --segments 15 --offset 600|0"
  "crowd12-200|--cells 12 --size 200 --segments 7 --drift 1 --background noise --offset 400|1"
)
printf "%-24s %-22s %8s %8s %8s %8s %8s\n" clip settings present fresh settled balanced to-label
for entry in "${clips[@]}"; do
  IFS='|' read -r name options drift <<<"$entry"
  [ -f "$out/$name.mp4" ] || python3 "$tools/make_face_clip.py" --photos "$photos" --out "$out/$name.mp4" $options >/dev/null
  for settings in "defaults" "--detect-interval 1" ${*:+"$*"}; do
    args=()
    [ "$settings" = defaults ] || read -r -a args <<<"$settings"
    report="$out/$name-report"
    "$mm" evaluate --video "$out/$name.mp4" --segments "$out/$name.csv" --drift "$drift" --report "$report" "${args[@]}" >/dev/null
    python3 - "$report/report.json" "$name" "$settings" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<24} {sys.argv[3]:<22} {r['present']:8.4f} {r['fresh']:8.4f} {r['settled_accuracy']:8.4f} "
      f"{r['settled_balanced_accuracy']:8.4f} {r['frames_to_right_label']:8.1f}")
PY
  done
done
