#!/usr/bin/env bash
# Dashboard page times (issue 21): builds the stratus binary and runs bench/dashboard.py
# (server-side time of Overview, Instances, Images, Networks and the launch form, p50/p99,
# next to the compute API's /servers/detail in the same run, with the load average).
#
# Usage: bench/dashboard.sh [servers=200] [requests=50]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build -q --bin stratus
exec python3 "$ROOT/bench/dashboard.py" "$CARGO_TARGET_DIR/debug/stratus" "${1:-200}" "${2:-50}"
