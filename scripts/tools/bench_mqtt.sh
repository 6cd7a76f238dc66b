#!/usr/bin/env bash
# Throughput of moodmirrorjson method=mqtt into one local mosquitto: CAMERAS pipelines publishing
# FRAMES messages each as fast as they can (videotestsrc, no analysis: the message of a frame
# without faces, ~150 bytes; with --big a 1,000-byte tag on each, the size of a one-face message),
# and `moodmirror listen` receiving them all. Prints messages/s published and received per QoS.
# usage: scripts/tools/bench_mqtt.sh [CAMERAS] [FRAMES] [--big]
set -euo pipefail
cd "$(dirname "$0")/../.."
cameras=${1:-3}
frames=${2:-20000}
big=${3:-}
cargo build --release --locked -p moodmirror-cli -p gst-plugin-moodmirror >/dev/null
export GST_PLUGIN_PATH=$PWD/target/release
mm=target/release/moodmirror
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' "$port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
sleep 0.5
src="videotestsrc num-buffers=$frames ! video/x-raw,width=64,height=48"
tags=()
[ "$big" = --big ] && tags=("tags={\"pad\":\"$(printf '%*s' 1000 '' | tr ' ' x)\"}")
for qos in 0 1; do
  total=$((cameras * frames))
  "$mm" listen "mqtt://127.0.0.1:$port/bench$qos/#" --out "$work/summary$qos" --count "$total" --duration 300 --refresh 1000 >"$work/listen$qos.log" &
  listener=$!
  sleep 0.5
  start=$(date +%s.%N)
  pipelines=()
  for c in $(seq 1 "$cameras"); do
    gst-launch-1.0 -q $src ! moodmirrorjson method=mqtt address=127.0.0.1:$port topic=bench$qos/cam$c source=cam$c \
      qos=$qos queue-size=1000000 "${tags[@]}" ! fakesink &
    pipelines+=($!)
  done
  # A pipeline ends when its last message is delivered (QoS 1: acknowledged).
  wait "${pipelines[@]}"
  published=$(date +%s.%N)
  wait "$listener"
  received=$(date +%s.%N)
  got=$(awk -F, 'NR>1 {n+=$4} END {print n}' "$work/summary$qos/fleet.csv")
  python3 - "$qos" "$cameras" "$frames" "$start" "$published" "$received" "$got" <<'PY'
import sys
qos, cams, frames, t0, t1, t2, got = sys.argv[1:]
cams, frames, t0, t1, t2, got = int(cams), int(frames), float(t0), float(t1), float(t2), int(got)
total = cams * frames
print(f"qos {qos}: {cams} cameras x {frames} messages: published in {t1-t0:.2f} s ({total/(t1-t0):,.0f}/s), "
      f"all {got} received after {t2-t0:.2f} s ({got/(t2-t0):,.0f}/s)")
PY
done
