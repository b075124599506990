#!/usr/bin/env bash
# Installs the OpenStack command-line clients (python-openstackclient, osc-placement,
# openstacksdk, python-swiftclient, python-heatclient) into <repo>/.venv at the versions pinned in requirements-clients.txt.
# Idempotent: a second run only checks.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements-clients.txt"
STAMP="$VENV/.stratus-clients-stamp"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x $VENV/bin/openstack && -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv
fi
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
echo "$want" > "$STAMP"
echo "openstack CLI: $("$VENV/bin/openstack" --version 2>&1)"
