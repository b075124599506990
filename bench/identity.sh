#!/usr/bin/env bash
# Identity benchmark: password token issue and token validation over HTTP, at
# concurrency 1 and 8, against a release `stratus up` on a temporary data directory.
# Prints requests/s and p50/p99 latency per case (wrk, bounded by duration).
#
# Usage: bench/identity.sh [DURATION=10s]
# Env:   STRATUS_BIN (default target/release/stratus, built when missing)
#        BENCH_COSTS "memKiB:iterations ..." argon2id costs to measure issue at
#        (default: the configured default 19456:2, and the lowest 8:1)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
DUR=${1:-10s}
BIN=${STRATUS_BIN:-$ROOT/target/release/stratus}
COSTS=${BENCH_COSTS:-"19456:2 8:1"}
PASSWORD=bench-admin-pw

if ! command -v wrk >/dev/null; then
  if [[ $(id -u) == 0 ]]; then apt-get install -y -qq wrk >/dev/null; else echo "install wrk (apt-get install wrk)" >&2; exit 1; fi
fi
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release -p stratus)

WORK=$(mktemp -d)
PID=""
cleanup() {
  if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/issue.lua" <<'LUA'
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
LUA

BODY=$(printf '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"%s"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}' "$PASSWORD")
export BENCH_BODY="$BODY"

start() { # $1 memory KiB, $2 iterations
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -rf "$WORK/data"
  STRATUS_IDENTITY_PASSWORD_HASH_MEMORY_KIB=$1 STRATUS_IDENTITY_PASSWORD_HASH_ITERATIONS=$2 STRATUS_LOG_LEVEL=warn \
    "$BIN" up --data-dir "$WORK/data" --listen "127.0.0.1:$port" --admin-password "$PASSWORD" >"$WORK/server.log" 2>&1 &
  PID=$!
  URL="http://127.0.0.1:$port/identity"
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$URL/v3" && return 0
    sleep 0.1
  done
  echo "stratus did not start:" >&2; cat "$WORK/server.log" >&2; exit 1
}

stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

# Runs wrk and prints one summary line: label, req/s, p50, p99, errors.
measure() { # $1 label, $2 connections, rest: wrk arguments
  local label=$1 conn=$2; shift 2
  local threads=$(( conn < 2 ? conn : 2 ))
  local out
  out=$(wrk -t "$threads" -c "$conn" -d "$DUR" --latency "$@")
  local rps p50 p99 errs
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '%-44s c=%-2s %10s req/s   p50 %-9s p99 %-9s %s\n' "$label" "$conn" "$rps" "$p50" "$p99" "${errs:+non-2xx: $errs}"
}

echo "Stratus identity benchmark ($(nproc) cores, wrk, ${DUR} per case)"
first=1
for cost in $COSTS; do
  mem=${cost%%:*}; iters=${cost##*:}
  start "$mem" "$iters"
  if [[ $first == 1 ]]; then
    TOKEN=$(curl -sf -D - -o /dev/null -H 'Content-Type: application/json' -d "$BODY" "$URL/v3/auth/tokens" \
      | awk 'tolower($1)=="x-subject-token:" {print $2}' | tr -d '\r')
    [[ -n $TOKEN ]] || { echo "no token" >&2; exit 1; }
    for c in 1 8; do
      measure "token validation (GET /v3/auth/tokens)" "$c" -H "X-Auth-Token: $TOKEN" -H "X-Subject-Token: $TOKEN" "$URL/v3/auth/tokens"
    done
    for c in 1 8; do
      measure "validation, nocatalog" "$c" -H "X-Auth-Token: $TOKEN" -H "X-Subject-Token: $TOKEN" "$URL/v3/auth/tokens?nocatalog"
    done
    first=0
  fi
  for c in 1 8; do
    measure "password issue, argon2id m=${mem}KiB t=${iters}" "$c" -s "$WORK/issue.lua" "$URL/v3/auth/tokens"
  done
  stop
done
