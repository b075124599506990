#!/usr/bin/env bash
# Starts the all-in-one Stratus cloud on this machine, installing what it needs first:
# the OpenStack CLI (into .venv), a release build of the `stratus` binary and, as root, QEMU and
# friends (scripts/install-host-packages.sh) plus the CirrOS-like test image that `stratus up`
# uploads as `cirros` (tools/build-test-image.sh), so the first `server create` boots a real guest.
# Arguments go to `stratus up` (e.g. --listen 0.0.0.0:5080 --admin-password ...).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
scripts/setup-clients.sh
if [ "$(id -u)" -eq 0 ]; then
    scripts/install-host-packages.sh
    [ -f build/test-image/disk.qcow2 ] || tools/build-test-image.sh build/test-image
    export STRATUS_TEST_IMAGE_DIR="${STRATUS_TEST_IMAGE_DIR:-$ROOT/build/test-image}"
else
    echo "up.sh: not root: skipping QEMU packages and the test image (servers use the fake driver)" >&2
fi
cargo build --release --locked --bin stratus
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/stratus" up "$@"
