#!/usr/bin/env bash
# Hostile-login benchmark: RSS of a release `stratus up` while anyone who can reach the
# API fires failed logins (no credentials needed), and after it goes quiet.
#
# Cases, each on a fresh data directory with the default argon2id cost (19 MiB):
#   throttled    default config: the per-source failed-login limit refuses most with 429
#   unthrottled  failed-login limits off: only the hashing admission bounds memory
#   real-user    the admin user with a wrong password, limits off
# Each prints the status codes seen, p50/p99, RSS idle before, peak during, and idle 10 s
# after.
#
# Usage: bench/login-storm.sh [REQUESTS=1000] [CONCURRENCY=64]
# Env:   STRATUS_BIN (default target/release/stratus, built when missing)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
N=${1:-1000}
C=${2:-64}
BIN=${STRATUS_BIN:-$ROOT/target/release/stratus}
PASSWORD=bench-admin-pw
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --release -p stratus)

WORK=$(mktemp -d)
PID=""
cleanup() {
  if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

start() { # env assignments for the server
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -rf "$WORK/data"
  env "$@" STRATUS_LOG_LEVEL=error STRATUS_COMPUTE_VIRT_DRIVER=fake \
    "$BIN" up --data-dir "$WORK/data" --listen "127.0.0.1:$port" --admin-password "$PASSWORD" >"$WORK/server.log" 2>&1 &
  PID=$!
  URL="http://127.0.0.1:$port/identity"
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null "$URL/v3" && return 0
    sleep 0.1
  done
  echo "stratus did not start:" >&2; cat "$WORK/server.log" >&2; exit 1
}

stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

storm() { # $1 label, $2 user name
  python3 - "$1" "$2" "$URL" "$PID" "$N" "$C" <<'PY'
import collections, http.client, json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
label, user, url, pid, n, c = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
host, port = url.split("//")[1].split("/")[0].split(":")
body = json.dumps({"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": user, "domain": {"name": "Default"}, "password": "wrong-password"}}}}})

def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0

before = rss()
peak = [before]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()

def one(_):
    t = time.monotonic()
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/identity/v3/auth/tokens", body, {"Content-Type": "application/json"})
        status = conn.getresponse().status
    except Exception as e:
        status = type(e).__name__
    finally:
        conn.close()
    return status, time.monotonic() - t

t0 = time.monotonic()
with ThreadPoolExecutor(c) as ex:
    results = list(ex.map(one, range(n)))
wall = time.monotonic() - t0
done.set()
time.sleep(10)
after = rss()
codes = collections.Counter(s for s, _ in results)
lat = sorted(d for _, d in results)
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
print(f"{label:<12} {n} logins c={c} in {wall:5.1f} s  codes {dict(sorted(codes.items(), key=str))}  "
      f"p50 {p(0.5):6.0f} ms p99 {p(0.99):6.0f} ms  RSS MiB: idle {before}, peak {peak[0]}, idle 10 s after {after}")
PY
}

echo "Stratus login storm ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
start
storm throttled no-such-user
stop
start STRATUS_IDENTITY_FAILED_LOGIN_SOURCE_BURST=0 STRATUS_IDENTITY_FAILED_LOGIN_USER_BURST=0
storm unthrottled no-such-user
storm real-user admin
stop
