#!/usr/bin/env bash
# Installs Debian's `chromium` for the dashboard's browser tests (headless, driven over
# the DevTools protocol by crates/testkit/tests/cloud/dashboard_browser.rs).
#
# Idempotent: exits at once when chromium is there. Uses the private apt state of
# scripts/install-host-packages.sh when present (it never touches /etc/apt), and
# `--no-remove` so apt refuses any plan that would remove a package.
set -euo pipefail

log() { printf 'install-chromium: %s\n' "$*" >&2; }

if command -v chromium >/dev/null 2>&1; then
    log "present ($(chromium --version 2>/dev/null | head -n1))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    log "must run as root (apt-get install)"; exit 1
fi
APT_DIR=${STRATUS_APT_DIR:-/var/cache/stratus/apt}
if [ -r "$APT_DIR/apt.conf" ]; then
    export APT_CONFIG="$APT_DIR/apt.conf"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -q -o DPkg::Lock::Timeout=600 update >&2
apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends --no-remove chromium >&2
log "installed ($(chromium --version 2>/dev/null | head -n1))"
