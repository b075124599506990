#!/usr/bin/env bash
# Installs Debian's Ceph daemons and tools (mon, mgr, osd, radosgw, the ceph/rados CLIs)
# for the tests that run a one-node Ceph cluster in userspace (crates/testkit/src/ceph.rs,
# scripts/ceph-cluster.sh). Nothing is started: Debian's packages start no daemon here,
# and the tests start their own cluster under a temporary directory.
#
# Idempotent: exits at once when everything is installed. Needs root to install.
set -euo pipefail
PKGS=(ceph-mon ceph-mgr ceph-osd radosgw ceph-common)

log() { printf 'install-ceph: %s\n' "$*" >&2; }
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
    log "all present ($(ceph --version 2>/dev/null | cut -d' ' -f1-3))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    log "missing ${missing[*]} and not root: cannot install"; exit 1
fi
log "installing ${missing[*]}"
apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${PKGS[@]}" >&2
log "installed ($(ceph --version | cut -d' ' -f1-3))"
