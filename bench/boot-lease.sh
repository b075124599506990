#!/usr/bin/env bash
# Boot benchmark to the DHCP lease (issue 8): N servers (default 10) booted one after the
# other with a port on a Stratus network, each timed from `POST /servers` to ACTIVE and to
# the guest's lease, split into control plane / QEMU + firmware / guest boot, next to N bare
# QEMU boots with the same argv (QEMU's user-mode network instead of the tap). Runs the
# ignored test `qemu_boot_to_dhcp_lease_bench` (crates/testkit/tests/cloud/qemu.rs) under
# the machine-wide QEMU lock; root, QEMU, the test image and the host tools are needed;
# nothing touches the root namespace. Debug build (the control plane is a few ms of it).
set -euo pipefail
cd "$(dirname "$0")/.."
export STRATUS_TEST_IMAGE_DIR=${STRATUS_TEST_IMAGE_DIR:-$PWD/build/test-image}
export STRATUS_BENCH_BOOTS=${1:-10}
lock=${STRATUS_QEMU_LOCK:-/work/wt/_shared/qemu.lock}
cargo test -q -p stratus-testkit --test cloud --no-run
run=(cargo test -q -p stratus-testkit --test cloud qemu_boot_to_dhcp_lease_bench -- --ignored --nocapture)
if [[ -e $lock ]]; then exec flock "$lock" "${run[@]}"; else exec "${run[@]}"; fi
