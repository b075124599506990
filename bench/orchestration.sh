#!/usr/bin/env bash
# Orchestration benchmark: a ResourceGroup of N servers (fake virt driver) created and
# deleted through the Heat API, against the same servers made and deleted directly by a
# script in the same run. Prints wall times, achieved parallelism and the engine's
# overhead per resource, with the load average.
#
# Usage: bench/orchestration.sh [SERVERS=50]
# Env:   STRATUS_BIN (default target/release/stratus, built when missing)
#        FAKE_OP_DELAY_MS: how long each fake driver operation takes (default 1000)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
N=${1:-50}
BIN=${STRATUS_BIN:-$ROOT/target/release/stratus}
PASSWORD=bench-admin-pw
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release --locked -p stratus)

WORK=$(mktemp -d -t hot-bench.XXXXXX)
PID=""
cleanup() {
  if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
STRATUS_LOG_LEVEL=warn STRATUS_COMPUTE_VIRT_DRIVER=fake STRATUS_COMPUTE_FAKE_VCPUS=1024 STRATUS_COMPUTE_FAKE_MEMORY_MB=1048576 STRATUS_COMPUTE_FAKE_LOCAL_GB=100000 STRATUS_COMPUTE_FAKE_OP_DELAY_MS=${FAKE_OP_DELAY_MS:-1000} \
  "$BIN" up --data-dir "$WORK/data" --listen "127.0.0.1:$port" --admin-password "$PASSWORD" >"$WORK/server.log" 2>&1 &
PID=$!
URL="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
  curl -sf -o /dev/null "$URL/identity/v3" && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
sleep 3
echo "Stratus orchestration ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(basename "$(dirname "$(dirname "$BIN")")")/$(basename "$(dirname "$BIN")") binary)"
python3 "$ROOT/bench/orchestration.py" --url "$URL" --password "$PASSWORD" --servers "$N"
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if grep -q "panicked" "$WORK/server.log"; then
  echo "the server log has a panic:"; grep -m5 -A3 panicked "$WORK/server.log"; exit 1
fi
