#!/usr/bin/env bash
# Data plane benchmark (issue 9): port create + plug -> first DHCP reply, and security
# group rule add/delete -> effect, against an in-process cloud whose network agent runs in a
# namespace the benchmark makes (crates/testkit/examples/dataplane_bench.rs). Root and the
# host tools (scripts/install-host-packages.sh) are needed; nothing touches the root
# namespace. Dev profile by default (the timings are kernel, dnsmasq and agent work);
# BENCH_PROFILE=release for an optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
[[ ${BENCH_PROFILE:-dev} == release ]] && profile=(--release)
exec cargo run "${profile[@]}" -q -p stratus-testkit --example dataplane_bench
