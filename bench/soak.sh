#!/usr/bin/env bash
# Soak: a mixed workload (token issue and validation, list/show of every resource,
# server create/delete with the fake driver, port and floating IP churn, image
# upload/download) from simulated users against `stratus up`, then optionally the same
# with hostile clients beside them (failed-login storm, slow-header clients, thousands
# of idle connections). Prints per-operation count, errors and p50/p99 in the first and
# last tenth of each phase, RSS and fds over time, and a leak check; exits non-zero on
# any 5xx, hung request, leak, or RSS over the budget.
#
# Usage: bench/soak.sh [SECONDS_PER_PHASE=1800] [--hostile] [--users N]
#                      [--idle-connections N] [--rss-budget-mib N]
# Env:   STRATUS_BIN (default target/release/stratus, built when missing)
# CI runs `STRATUS_BIN=target/debug/stratus bench/soak.sh 90 --hostile --idle-connections 2000`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
SECS=${1:-1800}
shift || true
BIN=${STRATUS_BIN:-$ROOT/target/release/stratus}
PASSWORD=soak-admin-pw
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release --locked -p stratus)

WORK=$(mktemp -d)
PID=""
cleanup() {
  if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Hostile clients open thousands of sockets.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
STRATUS_LOG_LEVEL=warn STRATUS_COMPUTE_VIRT_DRIVER=fake STRATUS_NETWORK_AGENT_ENABLED=false \
  "$BIN" up --data-dir "$WORK/data" --listen "127.0.0.1:$port" --admin-password "$PASSWORD" >"$WORK/server.log" 2>&1 &
PID=$!
URL="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
  curl -sf -o /dev/null "$URL/identity/v3" && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
# The fake compute agent registers a moment after the APIs answer.
for _ in $(seq 1 100); do
  grep -q "compute agent registered\|registered host" "$WORK/server.log" 2>/dev/null && break
  sleep 0.1
done
sleep 2
echo "Stratus soak ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(basename "$BIN") binary, ${SECS} s per phase)"
status=0
python3 "$ROOT/bench/soak.py" --url "$URL" --password "$PASSWORD" --pid "$PID" --seconds "$SECS" "$@" || status=$?
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if grep -q "panicked" "$WORK/server.log"; then
  echo "the server log has a panic:"; grep -m5 -A3 panicked "$WORK/server.log"; status=1
fi
exit $status
