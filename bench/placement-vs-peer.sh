#!/usr/bin/env bash
# Placement side by side (issue 5): the real Python Placement (openstack-placement 16,
# gunicorn, 2 workers, SQLite in WAL mode, noauth2) and Stratus (`stratus up`, release
# build, SQLite), loaded one after the other in the same run by the same client —
# ../shared/peers/bench/osbench.py: N providers with VCPU/MEMORY_MB/DISK_GB, then
# GET /allocation_candidates (all, and limit=10) and PUT /allocations at each
# concurrency — and printed side by side with the Stratus/Python ratio.
#
# Usage: bench/placement-vs-peer.sh [PROVIDERS=1000] [CONCURRENCY=1,8]
# Env:   PEERS    a writable copy of the peers directory with .venv-placement installed
#              (default: the shared one if writable, else /work/peers-perf, created by
#              copying the shared one and running its install.sh placement)
#        ALLOC_N  PUT /allocations per concurrency (default 2000; the peer stops at
#              --max-seconds 60 per phase)
#
# osbench.py is stdlib Python threads: above a few thousand requests/s the client is
# the bottleneck, so Stratus's column is a lower bound (client CPU is printed).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
N=${1:-1000}
CONC=${2:-1,8}
ALLOC_N=${ALLOC_N:-2000}
SHARED=/work/shared/peers
if [[ -z ${PEERS:-} ]]; then
  if [[ -w $SHARED ]]; then PEERS=$SHARED; else PEERS=/work/peers-perf; fi
fi
if [[ ! -x $PEERS/.venv-placement/bin/gunicorn ]]; then
  if [[ $PEERS != "$SHARED" && ! -d $PEERS ]]; then
    cp -r "$SHARED/." "$PEERS" && chmod -R u+w "$PEERS"
  fi
  "$PEERS/install.sh" placement
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
(cd "$ROOT" && cargo build -q --release --bin stratus)
BIN="$CARGO_TARGET_DIR/release/stratus"

WORK=$(mktemp -d)
SPID=""
cleanup() {
  [[ -n $SPID ]] && { kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; }
  PL_PORT=$PEER_PORT "$PEERS/placement/stop.sh" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PEER_PORT=$(free_port)
SPORT=$(free_port)

echo "== $(date -u +%FT%TZ)  $(nproc) cores  load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
PL_RESET=1 PL_PORT=$PEER_PORT "$PEERS/placement/start.sh"
PEER_PID=$(cat "$PEERS/placement/data/server.pid")

STRATUS_LOG_LEVEL=warn "$BIN" up --data-dir "$WORK/data" --listen "127.0.0.1:$SPORT" \
  --admin-password bench-pw >"$WORK/stratus.log" 2>&1 &
SPID=$!
for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$SPORT/identity/v3" && break; sleep 0.1; done
TOKEN=$(curl -sf -D - -o /dev/null -H 'Content-Type: application/json' \
  -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"bench-pw"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}' \
  "http://127.0.0.1:$SPORT/identity/v3/auth/tokens" | awk 'tolower($1)=="x-subject-token:" {print $2}' | tr -d '\r')
[[ -n $TOKEN ]] || { echo "no Stratus token"; cat "$WORK/stratus.log"; exit 1; }
# The in-process compute agent registers a provider of its own; osbench only counts its own.

run() { # name url token pid
  python3 "$PEERS/bench/osbench.py" placement --url "$2" --token "$3" --providers "$N" \
    --concurrency "$CONC" --alloc-n "$ALLOC_N" --ac-n 100 --ac-limit-n 300 --max-seconds 60 \
    --pid "$1=$4" --json "$WORK/$1.json"
}
run python "http://127.0.0.1:$PEER_PORT" admin "$PEER_PID"
run stratus "http://127.0.0.1:$SPORT/placement" "$TOKEN" "$SPID"

python3 - "$WORK/python.json" "$WORK/stratus.json" <<'PY'
import json, sys
py, st = (json.load(open(f)) for f in sys.argv[1:3])
def rows(r):
    out = {}
    for key, label in [('setup', 'setup: POST rp + PUT inventories'),
                       ('allocation_candidates', 'GET allocation_candidates (all)'),
                       ('allocation_candidates_limit10', 'GET allocation_candidates limit=10'),
                       ('put_allocations', 'PUT /allocations/{consumer}')]:
        v = r['results'][key] if 'results' in r else r[key]
        for x in (v if isinstance(v, list) else [v]):
            out[(label, x['concurrency'])] = x
    return out
def res(d):
    return d.get('placement', d)
p, s = rows(res(py)), rows(res(st))
print()
print('%-38s %4s | %20s | %20s | %7s %7s' % ('phase', 'conc', 'Python req/s  p50 ms', 'Stratus req/s  p50 ms', 'x req/s', 'x p50'))
for k in p:
    if k not in s:
        continue
    a, b = p[k], s[k]
    ratio = (b['rps'] or 0) / a['rps'] if a.get('rps') else float('nan')
    lat = (a['p50_ms'] or 0) / b['p50_ms'] if b.get('p50_ms') else float('nan')
    print('%-38s %4s | %9.1f %10.2f | %9.1f %10.2f | %7.1f %7.1f%s' % (
        k[0], k[1], a['rps'] or 0, a['p50_ms'] or 0, b['rps'] or 0, b['p50_ms'] or 0, ratio, lat,
        '   (errors: py %s, stratus %s)' % (a['errors'], b['errors']) if a['errors'] or b['errors'] else ''))
    if 'client_cpu_s' in b and b.get('wall_s'):
        print('%-38s      client CPU %.0f%% of one core during the Stratus phase' % ('', 100 * b['client_cpu_s'] / b['wall_s']))
rp, rs = py.get('rss_peak_mib', {}), st.get('rss_peak_mib', {})
print('\nRSS peak (MiB, process tree): Python %s, Stratus %s (Stratus = the whole cloud, every service)' % (
    rp.get('python'), rs.get('stratus')))
PY
echo "== load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
