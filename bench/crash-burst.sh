#!/usr/bin/env bash
# Burst-and-kill (issue W2 10, fault injection): N boots with the fake driver, kill -9 of
# `stratus up` shortly after, restart; every acknowledged boot must end ACTIVE.
# Usage: bench/crash-burst.sh [SERVERS=40] [KILL_AFTER_MS=150]
# Env:   STRATUS_BIN (default target/release/stratus, built when missing)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
BIN=${STRATUS_BIN:-$ROOT/target/release/stratus}
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release --locked -p stratus)
WORK=$(mktemp -d)
trap '[[ -n ${KEEP:-} ]] || rm -rf "$WORK"' EXIT INT TERM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "crash-burst ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(basename "$BIN") binary)"
status=0
python3 "$ROOT/bench/crash-burst.py" --bin "$BIN" --data-dir "$WORK/data" --port "$port" \
  --servers "${1:-40}" --kill-after-ms "${2:-150}" || status=$?
if [[ $status -ne 0 ]]; then echo "--- server log (tail)"; tail -30 "$WORK/server.log"; fi
exit $status
