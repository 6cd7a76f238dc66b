#!/usr/bin/env bash
# Installs the Debian 12 packages moodmirror builds, tests and demos with (only those missing).
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail

MOODMIRROR_APT_PACKAGES=(
  pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  libgstrtspserver-1.0-dev gstreamer1.0-rtsp gstreamer1.0-opencv
  # facedetect (gstreamer1.0-opencv) loads its Haar cascades from opencv-data, which is only a
  # recommend of it: --no-install-recommends below would leave it out.
  opencv-data
  python3-gi python3-gst-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
  # The MQTT tests start their own broker on a free loopback port (openssl makes the TLS test's
  # certificates).
  mosquitto openssl
)

missing=()
for p in "${MOODMIRROR_APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install a Rust toolchain >= 1.92 (rustup) and run again." >&2
  exit 1
fi
