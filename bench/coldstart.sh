#!/usr/bin/env bash
# Cold start of the all-in-one cloud: time from `stratus up` on an EMPTY data directory
# (database created, migrated and bootstrapped) to the first 200 from /identity/v3, and
# the server's idle RSS afterwards. Prints each run and the median of N (default 5).
# Usage: bench/coldstart.sh [N]     (builds the release binary first)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
N=${1:-5}
cd "$ROOT"
cargo build --release --locked --bin stratus >&2
BIN="$ROOT/target/release/stratus"
PORT=${PORT:-15080}
times=(); rss=()
for i in $(seq 1 "$N"); do
  dir="$(mktemp -d)"
  t0=$(date +%s.%N)
  "$BIN" up --data-dir "$dir" --listen "127.0.0.1:$PORT" --admin-password bench-pw >"$dir/log" 2>&1 &
  pid=$!
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/identity/v3" || true)" == 200 ]]; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log"; exit 1; }
    sleep 0.005
  done
  t1=$(date +%s.%N)
  sleep 2
  r=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$dir"
  ms=$(echo "($t1 - $t0) * 1000" | bc -l)
  printf 'run %d: first 200 after %.1f ms, idle RSS %.1f MiB\n' "$i" "$ms" "$(echo "$r/1024" | bc -l)"
  times+=("$ms"); rss+=("$r")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
printf 'median cold start to first 200 on /identity/v3: %.1f ms (n=%d)\n' "$(median "${times[@]}")" "$N"
printf 'median idle RSS: %.1f MiB\n' "$(echo "$(median "${rss[@]}")/1024" | bc -l)"
