#!/usr/bin/env bash
# Network benchmark (issue 7): port-creation throughput at concurrency 8 on one /16
# (zero duplicate addresses) and the time to allocate the last free address of a nearly
# full /24, on SQLite and, when STRATUS_TEST_POSTGRES_URL is set, on PostgreSQL.
# Builds with the dev profile by default (dependencies are optimised there already and
# it reuses the test build); BENCH_PROFILE=release for a fully optimised run.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
[[ ${BENCH_PROFILE:-dev} == release ]] && profile=(--release)
cargo run "${profile[@]}" -q -p stratus-network --example bench_ports
if [[ -n ${STRATUS_TEST_POSTGRES_URL:-} ]]; then
  BENCH_DB_URL="$STRATUS_TEST_POSTGRES_URL" cargo run "${profile[@]}" -q -p stratus-network --example bench_ports
fi
