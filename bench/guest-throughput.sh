#!/usr/bin/env bash
# Same-host guest throughput (issue 9): TCP between two real TCG guests on one Stratus
# network (with security groups, then with port security off), a guest into a native sink,
# and two namespaces on a plain Linux bridge without filtering as the physical reference.
# Runs the ignored test `dataplane_guests_throughput_bench` (crates/testkit/tests/cloud/
# dataplane_guests.rs) under the machine-wide QEMU lock. Root, QEMU, the test image and the
# host tools are needed; nothing touches the root namespace.
# STRATUS_BENCH_MB (default 32) MiB per guest stream, STRATUS_BENCH_RUNS (default 3) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export STRATUS_TEST_IMAGE_DIR=${STRATUS_TEST_IMAGE_DIR:-$PWD/build/test-image}
lock=${STRATUS_QEMU_LOCK:-/work/wt/_shared/qemu.lock}
cargo test -q -p stratus-testkit --test cloud --no-run
run=(cargo test -q -p stratus-testkit --test cloud dataplane_guests_throughput_bench -- --ignored --nocapture)
if [[ -e $lock ]]; then exec flock "$lock" "${run[@]}"; else exec "${run[@]}"; fi
