#!/usr/bin/env bash
# Starts the all-in-one Stratus cloud on this machine, installing what it needs first:
# the OpenStack CLI (into .venv) and a release build of the `stratus` binary.
# Arguments go to `stratus up` (e.g. --listen 0.0.0.0:5080 --admin-password ...).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
scripts/setup-clients.sh
cargo build --release --locked --bin stratus
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/stratus" up "$@"
