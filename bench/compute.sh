#!/usr/bin/env bash
# Compute control-plane benchmark with the fake driver:
#   POST /servers -> ACTIVE latency (p50/p99), scheduler throughput with N fake nodes and
#   M concurrent boots (zero overcommit checked), GET /servers/detail?limit=1000 latency.
# Usage: bench/compute.sh [nodes=100] [boots=2000] [real|memory placement, default real]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q --release -p stratus-compute --example bench
exec "$CARGO_TARGET_DIR/release/examples/bench" "${1:-100}" "${2:-2000}" "${3:-real}"
