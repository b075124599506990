#!/usr/bin/env bash
# scripts/fuzz.sh [--service image|placement|identity|network|compute] [--timeout SECONDS] [--show-accepted]
#                 [--postgres URL]
#
# Starts an all-in-one cloud (`stratus up`, fake virt driver, no network agent, fresh data
# directory under /tmp/stc-fuzz.*), then runs tools/apicheck.py against it over the service's
# OpenAPI description in ../shared/openapi/: every operation gets a well-formed request and
# malformed ones (path, query, body); any 5xx, hang, 4xx without the service's fault body, or
# 2xx answer that the spec's response schema rejects is a finding and fails the run.
# The cloud and its data are removed at exit, also on Ctrl-C. With --postgres URL the cloud
# keeps its records in a fresh schema `stc_fuzz_<pid>` of that PostgreSQL database (dropped
# at exit) instead of SQLite: some bad input only hurts there (PostgreSQL refuses NUL).
#
# Environment: STRATUS_BIN (default target/debug/stratus, built when missing),
# FUZZ_PORT (default: a free port).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || scripts/setup-clients.sh

service=image timeout=10 extra=() pg_base=""
while [ $# -gt 0 ]; do
    case "$1" in
        --service) service=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --show-accepted) extra+=(--show-accepted); shift ;;
        --postgres) pg_base=$2; shift 2 ;;
        *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$service" in
    image) spec=../shared/openapi/image/v2.16.yaml prefix=/image
        # Glance's image cache API: Stratus has no image cache (docs/conformance.md).
        skips=(--skip-path /v2/cache) ;;
    placement) spec=../shared/openapi/placement/v1.yaml prefix=/placement skips=() ;;
    # Report-only so far (their findings are in docs/conformance.md); CI runs image and placement.
    identity) spec=../shared/openapi/identity/v3.14.yaml prefix=/identity skips=() ;;
    network) spec=../shared/openapi/network/v2.yaml prefix=/network skips=() ;;
    compute) spec=../shared/openapi/compute/v2.96.yaml prefix=/compute skips=() ;;
    *) echo "fuzz.sh: no fault format known for service $service" >&2; exit 2 ;;
esac
[ -f "$spec" ] || { echo "fuzz.sh: $spec not found (../shared/openapi must sit beside the repository)" >&2; exit 2; }

bin=${STRATUS_BIN:-$ROOT/target/debug/stratus}
[ -x "$bin" ] || cargo build -p stratus --locked
port=${FUZZ_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
DATA=$(mktemp -d /tmp/stc-fuzz.XXXXXX)
PID=""
pg_schema="" db_url=""
if [ -n "$pg_base" ]; then
    pg_schema="stc_fuzz_$$"
    PGOPTIONS="--client-min-messages=warning" psql "$pg_base" -qtAc "DROP SCHEMA IF EXISTS $pg_schema CASCADE; CREATE SCHEMA $pg_schema" >/dev/null
    case "$pg_base" in *\?*) sep='&' ;; *) sep='?' ;; esac
    db_url="${pg_base}${sep}options=-c%20search_path%3D${pg_schema}"
fi
cleanup() {
    if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    mkdir -p build/fuzz && cp "$DATA/stratus.log" build/fuzz/stratus.log 2>/dev/null || true
    rm -rf "$DATA"
    [ -z "$pg_schema" ] || psql "$pg_base" -qtAc "DROP SCHEMA IF EXISTS $pg_schema CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

password="fuzz-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$DATA/stratus.toml" <<TOML
data_dir = "$DATA/data"
[server]
listen = "127.0.0.1:$port"
[compute]
virt_driver = "fake"
[network_agent]
# No data plane: it would build bridges in this machine's root namespace.
enabled = "false"
[database]
url = "$db_url"
TOML
env -i "PATH=$PATH" "HOME=${HOME:-/root}" "LANG=C.UTF-8" \
    "$bin" --config "$DATA/stratus.toml" up --admin-password "$password" >"$DATA/stratus.log" 2>&1 </dev/null &
PID=$!
url="http://127.0.0.1:$port"
for i in $(seq 1 120); do
    kill -0 "$PID" 2>/dev/null || { tail -20 "$DATA/stratus.log" >&2; echo "fuzz.sh: stratus up exited" >&2; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/identity/v3")" = 200 ] && break
    [ "$i" -lt 120 ] || { echo "fuzz.sh: stratus up did not answer within 120 s" >&2; exit 1; }
    sleep 1
done
t0=$(date +%s)
set +e
"$PY" tools/apicheck.py --url "$url" --password "$password" --service "$service" --spec "$spec" \
    --prefix "$prefix" --timeout "$timeout" "${skips[@]}" "${extra[@]}"
status=$?
set -e
db=SQLite; [ -z "$pg_schema" ] || db=PostgreSQL
echo "fuzz.sh: $service on $db: $(( $(date +%s) - t0 ))s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if ! kill -0 "$PID" 2>/dev/null; then echo "fuzz.sh: the cloud died during the run" >&2; tail -20 "$DATA/stratus.log" >&2; exit 1; fi
if grep -q "panicked" "$DATA/stratus.log"; then echo "fuzz.sh: the cloud logged a panic:" >&2; grep -m5 -A3 panicked "$DATA/stratus.log" >&2; exit 1; fi
exit "$status"
