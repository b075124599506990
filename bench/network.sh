#!/usr/bin/env bash
# Network benchmark (issue 7): port-creation throughput at concurrency 8 on one /16
# (zero duplicate addresses) and the time to allocate the last free address of a nearly
# full /24, on SQLite and, when STRATUS_TEST_POSTGRES_URL is set, on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -q -p stratus-network --example bench_ports
if [[ -n ${STRATUS_TEST_POSTGRES_URL:-} ]]; then
  BENCH_DB_URL="$STRATUS_TEST_POSTGRES_URL" cargo run --release -q -p stratus-network --example bench_ports
fi
