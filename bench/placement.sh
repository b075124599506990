#!/usr/bin/env bash
# Placement benchmark (issue 5): 10,000 providers, allocation candidates p50/p99 and claim
# throughput at concurrency 8, in-process through the real router, on SQLite and, when
# STRATUS_TEST_POSTGRES_URL is set (scripts/test-postgres.sh prints one), on PostgreSQL.
# Usage: bench/placement.sh [--providers N] [--queries N] [--claims N] [--concurrency N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p stratus-placement --example bench
bin=target/release/examples/bench
"$bin" "$@"
if [ -n "${STRATUS_TEST_POSTGRES_URL:-}" ]; then
  "$bin" --postgres "$STRATUS_TEST_POSTGRES_URL" "$@"
fi
