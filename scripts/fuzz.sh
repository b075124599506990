#!/usr/bin/env bash
# scripts/fuzz.sh [--service image] [--timeout SECONDS]
#
# Starts an all-in-one cloud (`stratus up`, fake virt driver, no network agent, fresh data
# directory under /tmp/stc-fuzz.*), then runs tools/apicheck.py against it over the service's
# OpenAPI description in ../shared/openapi/: every operation gets a well-formed request and
# malformed ones (path, query, body); any 5xx, hang, 4xx without the service's fault body, or
# 2xx answer that the spec's response schema rejects is a finding and fails the run.
# The cloud and its data are removed at exit, also on Ctrl-C.
#
# Environment: STRATUS_BIN (default target/debug/stratus, built when missing),
# FUZZ_PORT (default: a free port).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || scripts/setup-clients.sh

service=image timeout=10 extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --service) service=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --show-accepted) extra+=(--show-accepted); shift ;;
        *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$service" in
    image) spec=../shared/openapi/image/v2.16.yaml prefix=/image
        # Glance's image cache API: Stratus has no image cache (docs/conformance.md).
        skips=(--skip-path /v2/cache) ;;
    *) echo "fuzz.sh: no fault format known for service $service" >&2; exit 2 ;;
esac
[ -f "$spec" ] || { echo "fuzz.sh: $spec not found (../shared/openapi must sit beside the repository)" >&2; exit 2; }

bin=${STRATUS_BIN:-$ROOT/target/debug/stratus}
[ -x "$bin" ] || cargo build -p stratus --locked
port=${FUZZ_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
DATA=$(mktemp -d /tmp/stc-fuzz.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    mkdir -p build/fuzz && cp "$DATA/stratus.log" build/fuzz/stratus.log 2>/dev/null || true
    rm -rf "$DATA"
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
echo "fuzz.sh: $service: $(( $(date +%s) - t0 ))s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if ! kill -0 "$PID" 2>/dev/null; then echo "fuzz.sh: the cloud died during the run" >&2; tail -20 "$DATA/stratus.log" >&2; exit 1; fi
if grep -q "panicked" "$DATA/stratus.log"; then echo "fuzz.sh: the cloud logged a panic:" >&2; grep -m5 -A3 panicked "$DATA/stratus.log" >&2; exit 1; fi
exit "$status"
