#!/usr/bin/env bash
# Property-based fuzzing of every reader of outside input (moodmirror-train/tests/fuzz.rs) with many cases:
# a million per reader by default (hours on 2 cores); CI runs 64 per reader.
# usage: scripts/tools/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/setup.sh
PROPTEST_CASES=${1:-1000000} cargo test --release --locked -p moodmirror-train --test fuzz -- --test-threads 2
