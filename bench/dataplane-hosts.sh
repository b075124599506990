#!/usr/bin/env bash
# Cross-host TCP throughput (issue 9): two real TCG guests on different "hosts" (host
# namespaces joined by an underlay veth, VXLAN between their agents) next to two guests on
# the same host, and the namespace references of the network agent's tests: namespaces on
# one host with security groups, across VXLAN, and a bare bridge without VXLAN or filtering.
#
# Runs the tests that measure (dev profile: the data path is the kernel and QEMU, not
# Stratus code). The guest part boots three TCG guests, so it takes the machine-wide QEMU
# lock. Needs root, the host tools, QEMU and the test image (see the tests' module docs).
# The machine is shared: read every figure with the load average printed beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target} CARGO_INCREMENTAL=0
export STRATUS_TEST_IMAGE_DIR=${STRATUS_TEST_IMAGE_DIR:-$PWD/build/test-image}
lock=${STRATUS_QEMU_LOCK:-/work/wt/_shared/qemu.lock}

echo "load before: $(cat /proc/loadavg)"
cargo test -q -p stratus-network-agent --test dataplane provider_networks_between_two_hosts_and_throughput \
    -- --nocapture 2>&1 | grep -E "TCP throughput" | sed 's/^/namespaces: /'
echo "load: $(cat /proc/loadavg)"
cargo test -q -p stratus-testkit --test cloud --no-run
STRATUS_BENCH_SAME_HOST=1 flock "$lock" cargo test -q -p stratus-testkit --test cloud two_hosts_real_guests_over_vxlan \
    -- --nocapture 2>&1 | grep -E "^dataplane_hosts|ACTIVE after" | sed 's/^/guests: /'
echo "load after: $(cat /proc/loadavg)"
