#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the tests need
# (OpenStack CLI venv, PostgreSQL), then formatting, lints and every test.
# This is the README's test command, and exactly what CI (.ci/run) runs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "Host packages for real guests (QEMU from bookworm-backports, dnsmasq, nftables, ...)"
scripts/install-host-packages.sh

step "Test guest images (build/test-image, from Debian packages)"
tools/build-test-image.sh build/test-image
export STRATUS_TEST_IMAGE_DIR="$ROOT/build/test-image"

step "Ceph (mon, mgr, osd, radosgw) for the tests that start a one-node cluster"
scripts/install-ceph.sh

step "Chromium (Debian's) for the dashboard's browser test (crates/testkit/tests/cloud/dashboard_browser.rs, ~5 s)"
scripts/install-chromium.sh

step "OpenStack clients (.venv)"
scripts/setup-clients.sh

step "PostgreSQL for the database tests"
STRATUS_TEST_POSTGRES_URL="$(scripts/test-postgres.sh)"
export STRATUS_TEST_POSTGRES_URL

step "cargo fmt --check"
cargo fmt --all -- --check

step "Structure: controller crates never depend on agent crates"
scripts/check-structure.sh

step "Python tools' unit tests (tools/test_*.py: the response-schema checker)"
.venv/bin/python -m unittest discover -s tools -p 'test_*.py'

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${STRATUS_TEST_THREADS:-4}"

step "Tempest: OpenStack's own tests against stratus up (scripts/tempest.sh --ci, docs/conformance.md)"
# The suites and lists in tempest/ci/suites; any failure, or a listed test that is skipped or
# missing, fails CI; so does a response of identity, image or placement that its OpenAPI
# description rejects (every JSON answer of the run is recorded and checked). The debug binary is nearly built by now (release would cost ~6 minutes).
tempest_start=$SECONDS
cargo build --locked --bin stratus
STRATUS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/stratus" scripts/tempest.sh --ci --concurrency 2
echo "Tempest step: $((SECONDS - tempest_start)) s"

step "API descriptions and fuzzing: every image and placement operation, malformed input, response schemas (scripts/fuzz.sh)"
for service in image placement; do
    STRATUS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/stratus" scripts/fuzz.sh --service "$service"
done
# Again on PostgreSQL, which refuses what SQLite stores (NUL).
STRATUS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/stratus" scripts/fuzz.sh --service image \
    --postgres "$STRATUS_TEST_POSTGRES_URL"
