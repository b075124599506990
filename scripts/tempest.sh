#!/usr/bin/env bash
# Runs Tempest, OpenStack's own acceptance suite, against a fresh all-in-one Stratus cloud.
#
#   scripts/tempest.sh [REGEX | --list FILE | --ci] [--exclude-list FILE] [--concurrency N]
#
#   REGEX          tests to run, as for `tempest run --regex` (default: ^tempest\.api\.)
#   --list FILE    the tests named in FILE, one a line: a test id (tempest.api.…Class.test_x,
#                  matched exactly, and it must pass: a listed test that is skipped or does
#                  not run counts as failed) or a regex; `#` starts a comment
#   --ci           what CI runs: the suites of tempest/ci/suites, each in full or its list,
#                  less the known gaps of tempest/ci/gaps.txt (each listed with its reason)
#   --exclude-list FILE   leave these out (`tempest run --exclude-list`)
#   --concurrency N       parallel Tempest workers (default 2)
#
# What it does, in order (everything it makes is removed again at exit, also on Ctrl-C or
# SIGTERM, and the removal is checked):
# 1. installs Tempest (tempest/requirements.txt, pinned) into .venv beside the OpenStack
#    clients, builds the test images (tools/build-test-image.sh) if missing, and uses
#    target/release/stratus (built if needed) unless STRATUS_BIN names another binary;
# 2. makes the hypervisor's network namespace `<prefix>-host` (holding the VXLAN tunnel
#    address) and a devstack-like external network: a veth pair, `<prefix>pub` in the root
#    namespace with 172.24.4.1/24 and `<prefix>phy` inside `<prefix>-host`, mapped as the
#    physical network `public`;
# 3. starts `stratus up` on a free port with a fresh data directory: real QEMU guests and the
#    network agent inside `<prefix>-host` (its DHCP and router namespaces are named
#    `<prefix>-qdhcp-…`, `<prefix>-qrouter-…`), the test image served over HTTP for
#    web-download imports;
# 4. tempest/stratus_tempest.py uploads the second test image, makes the flavors and the
#    external network `public` (172.24.4.0/24), and writes tempest.conf from
#    tempest/tempest.conf.in with what the cloud reports (services that answer, microversion
#    ranges, network extensions, identity lockout settings);
# 5. `tempest run`, then a summary: failures grouped by cause, skips by reason, and a closing
#    line `N passed, N failed, N skipped`.
#
# Artifacts go to build/tempest/<time>-<label>/ (TEMPEST_RESULTS_DIR to choose): subunit.bin,
# tempest.log, tempest.conf, stratus.toml, stratus.log, console.log, summary.txt,
# failures.txt, passed.txt, responses.jsonl (every JSON answer the cloud gave, `[record]`)
# and schema-check.txt (those answers checked against ../shared/openapi by
# tools/apicheck.py --check-recorded; findings in the services of TEMPEST_SCHEMA_ENFORCE,
# default identity,image,placement, fail the run). build/tempest/latest points at the last run. docs/conformance.md
# explains the configuration and the CI lists.
#
# Environment: STRATUS_BIN (binary to run; default target/release/stratus, built when
# missing), TEMPEST_PREFIX (names of namespaces and veths, default `stt`), TEMPEST_PORT (API
# port, default a free one), TEMPEST_KEEP_DATA=1 (keep the cloud's data directory,
# /tmp/<prefix>-data.*).
#
# Needs root (namespaces, veths, guests) and the host packages of
# scripts/install-host-packages.sh. One run per machine at a time: 172.24.4.1/24 exists once.
# On the shared development machine run it under `flock /tmp/stratus-heavy.lock`.
# Exit status: 0 when every selected test passed or skipped (listed tests: passed) and
# nothing was left behind.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
HELPER="$ROOT/tempest/stratus_tempest.py"
TUNNEL_IP=198.18.0.1

die() { printf 'tempest.sh: error: %s\n' "$*" >&2; exit 2; }
say() { printf 'tempest.sh: %s\n' "$*" >&2; }

# State the teardown needs (set as the run goes).
STRATUS_PID=""
HTTP_PID=""
TEMPEST_PID=""
URL=""
PASSWORD=""
DATA=""
PREFIX=""
VETH_ROOT=""

# Kills what runs inside namespace $1, then deletes it.
drop_netns() {
    local pids
    pids=$(ip netns pids "$1" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    ip netns delete "$1" 2>/dev/null || true
}

our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true; }

# Processes of this run that outlived `stratus up` (QEMU guests name the data directory).
leftover_pids() { [ -z "$DATA" ] || pgrep -f -- "$DATA/" 2>/dev/null | grep -vx "$$" || true; }

teardown() {
    local rc=$?
    trap '' INT TERM
    set +e
    [ -n "$PREFIX" ] || exit "$rc"
    say "tearing down"
    if [ -n "$TEMPEST_PID" ] && kill -0 "$TEMPEST_PID" 2>/dev/null; then
        kill -TERM -- "-$TEMPEST_PID" 2>/dev/null
        sleep 2
        kill -KILL -- "-$TEMPEST_PID" 2>/dev/null
    fi
    # Servers first, through the API, so guests shut down and release their ports cleanly.
    if [ -n "$STRATUS_PID" ] && kill -0 "$STRATUS_PID" 2>/dev/null && [ -n "$URL" ]; then
        timeout 150 "$PY" "$HELPER" cleanup --url "$URL" --password "$PASSWORD" --timeout 120 ||
            say "could not delete every server through the API; killing their QEMUs below"
    fi
    [ -z "$HTTP_PID" ] || kill -TERM "$HTTP_PID" 2>/dev/null
    if [ -n "$STRATUS_PID" ] && kill -0 "$STRATUS_PID" 2>/dev/null; then
        kill -TERM "$STRATUS_PID" 2>/dev/null
        for _ in $(seq 1 40); do kill -0 "$STRATUS_PID" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$STRATUS_PID" 2>/dev/null
    fi
    # shellcheck disable=SC2046
    [ -z "$(leftover_pids)" ] || kill -KILL $(leftover_pids) 2>/dev/null
    for ns in $(our_netns); do drop_netns "$ns"; done
    ip link delete "$VETH_ROOT" 2>/dev/null
    sleep 1
    local left=()
    [ -z "$(our_netns)" ] || left+=("namespaces: $(our_netns | tr '\n' ' ')")
    ! ip link show "$VETH_ROOT" >/dev/null 2>&1 || left+=("link $VETH_ROOT")
    [ -z "$(leftover_pids)" ] || left+=("processes: $(leftover_pids | tr '\n' ' ')")
    if [ ${#left[@]} -gt 0 ]; then
        say "teardown LEFT BEHIND: ${left[*]}"
        [ "$rc" -ne 0 ] || rc=3
    else
        say "teardown: no namespace, veth, guest or process left"
    fi
    [ -z "$DATA" ] || [ "${TEMPEST_KEEP_DATA:-0}" = 1 ] || rm -rf "$DATA"
    exit "$rc"
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The whole run is one function, parsed before it starts: editing this file while a run is
# going (they take minutes) cannot change what that run executes.
main() {
    cd "$ROOT"
    # -------------------------------------------------------------------------- arguments
    local select=() exclude=() concurrency=2 label=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --list)
                [ -f "${2:-}" ] || die "--list needs a file (got '${2:-}')"
                [ ${#select[@]} -eq 0 ] || die "give one REGEX, --list FILE or --ci"
                select=(--list "$(realpath "$2")"); label=$(basename "$2" .txt); shift 2 ;;
            --ci)
                [ ${#select[@]} -eq 0 ] || die "give one REGEX, --list FILE or --ci"
                select=(--ci "$ROOT/tempest/ci"); label=ci; shift ;;
            --exclude-list)
                [ -f "${2:-}" ] || die "--exclude-list needs a file (got '${2:-}')"
                exclude=(--exclude-list "$(realpath "$2")"); shift 2 ;;
            --concurrency)
                [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--concurrency needs a positive number"
                concurrency=$2; shift 2 ;;
            -h|--help)
                sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            -*) die "unknown option $1 (see --help)" ;;
            *)
                [ ${#select[@]} -eq 0 ] || die "give one REGEX, --list FILE or --ci"
                select=(--regex "$1"); label=$1; shift ;;
        esac
    done
    [ ${#select[@]} -gt 0 ] || { select=(--regex '^tempest\.api\.'); label=api; }
    label=$(printf '%s' "$label" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-60)

    [ "$(id -u)" -eq 0 ] || die "must run as root (it makes network namespaces, veths and QEMU guests)"
    local prefix=${TEMPEST_PREFIX:-stt}
    [[ "$prefix" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "TEMPEST_PREFIX must be 1-8 lowercase letters/digits"
    local host_ns="$prefix-host" veth_cloud="${prefix}phy"
    for t in ip nft dnsmasq qemu-system-x86_64 qemu-img curl; do
        command -v "$t" >/dev/null || die "'$t' not found: run scripts/install-host-packages.sh first"
    done
    # One run per prefix at a time (a second would tear down the first one's namespaces).
    exec 9>"/tmp/stratus-tempest-$prefix.lock"
    flock -n 9 || die "another scripts/tempest.sh run with prefix '$prefix' is active"

    # -------------------------------------------------------------------------- install
    scripts/setup-clients.sh
    local stamp="$VENV/.stratus-tempest-stamp" want
    want="$(cat tempest/requirements.txt scripts/requirements-clients.txt | sha256sum | cut -d' ' -f1)"
    if [[ ! -x $VENV/bin/tempest || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
        say "installing Tempest (tempest/requirements.txt) into .venv"
        "$VENV/bin/pip" install -q --disable-pip-version-check -r tempest/requirements.txt
        "$VENV/bin/pip" check >/dev/null || die "pip check failed after installing Tempest"
        echo "$want" >"$stamp"
    fi
    local tempest_version
    tempest_version=$("$VENV/bin/tempest" --version 2>&1 | awk '{print $2}')
    if [ ! -f build/test-image/disk.qcow2 ] || [ ! -f build/test-image/b/disk.qcow2 ]; then
        tools/build-test-image.sh build/test-image
    fi
    local bin=${STRATUS_BIN:-}
    if [ -z "$bin" ]; then
        cargo build --release --locked --bin stratus
        bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/stratus"
    fi
    [ -x "$bin" ] || die "STRATUS_BIN=$bin is not an executable"
    bin=$(realpath "$bin")

    # -------------------------------------------------------------------------- results
    local results=${TEMPEST_RESULTS_DIR:-$ROOT/build/tempest/$(date +%Y%m%d-%H%M%S)-$label}
    mkdir -p "$results/work"
    results=$(realpath "$results")
    local work="$results/work"
    # The include list and the tests that must pass (listed by id).
    "$PY" "$HELPER" compose "${select[@]}" --out "$results/include.txt" --expect-out "$results/expect.txt" \
        --exclude-out "$results/gaps.txt"
    # Known gaps (tempest/ci/gaps.txt, --ci only) are left out, with any --exclude-list.
    if [ -s "$results/gaps.txt" ]; then
        if [ ${#exclude[@]} -gt 0 ]; then cat "${exclude[1]}" >>"$results/gaps.txt"; fi
        exclude=(--exclude-list "$results/gaps.txt")
        say "left out as known gaps (tempest/ci/gaps.txt): $(wc -l <"$results/gaps.txt") test(s)"
    fi

    # -------------------------------------------------------------------------- teardown
    PREFIX=$prefix
    VETH_ROOT="${prefix}pub"
    trap teardown EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # A previous run with this prefix that was killed hard (SIGKILL) could not clean up.
    for ns in $(our_netns); do say "removing stale namespace $ns"; drop_netns "$ns"; done
    ip link delete "$VETH_ROOT" 2>/dev/null || true
    # devstack's public range is one per machine: runs with other prefixes take turns
    # (a machine-wide lock, then up to TEMPEST_WAIT_PUBLIC seconds, default 1800, for a
    # run that does not take the lock to give the range back).
    exec 8>/tmp/stratus-tempest-public.lock
    if ! flock -n 8; then
        say "waiting for another Tempest run to give devstack's public range back"
        flock -w "${TEMPEST_WAIT_PUBLIC:-1800}" 8 || die "another Tempest run held devstack's public range too long"
    fi
    local waited=0
    while [ -n "$(ip -4 -o addr show to 172.24.4.0/24)" ]; do
        if [ "$waited" -ge "${TEMPEST_WAIT_PUBLIC:-1800}" ]; then
            die "172.24.4.0/24 is still on an interface here ($(ip -4 -o addr show to 172.24.4.0/24 | awk '{print $2}')): another cloud owns devstack's public range"
        fi
        [ "$waited" -gt 0 ] || say "172.24.4.0/24 is in use by another cloud; waiting for it"
        sleep 5
        waited=$((waited + 5))
    done
    # The cloud's data directory lives under /tmp: QEMU's QMP and VNC sockets sit in each
    # instance's directory, and a unix socket path must stay under 108 bytes.
    DATA=$(mktemp -d "/tmp/$prefix-data.XXXXXX")
    chmod 0755 "$DATA"

    # -------------------------------------------------------------------------- network
    say "namespace $host_ns (hypervisor), veth $VETH_ROOT (172.24.4.1/24) <-> $veth_cloud (physical network 'public')"
    ip netns add "$host_ns"
    ip -n "$host_ns" link set lo up
    ip -n "$host_ns" addr add "$TUNNEL_IP/32" dev lo
    ip link add "$VETH_ROOT" type veth peer name "$veth_cloud" netns "$host_ns"
    ip addr add 172.24.4.1/24 dev "$VETH_ROOT"
    ip link set "$VETH_ROOT" up
    ip -n "$host_ns" link set "$veth_cloud" up

    # -------------------------------------------------------------------------- cloud
    local port http_port
    port=${TEMPEST_PORT:-$(free_port)}
    http_port=$(free_port)
    PASSWORD="tempest-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    URL="http://127.0.0.1:$port"

    # The test image over HTTP, for web-download imports ([image] http_image).
    "$PY" -m http.server --bind 127.0.0.1 --directory "$ROOT/build/test-image" "$http_port" \
        >"$results/http.log" 2>&1 &
    HTTP_PID=$!

    cat >"$results/stratus.toml" <<EOF
# stratus.toml of a scripts/tempest.sh run
data_dir = "$DATA"

[server]
listen = "127.0.0.1:$port"

[identity]
# devstack's security compliance settings (lib/keystone); tempest.conf reads them back.
lockout_failure_attempts = 2
lockout_duration_secs = 10

[image]
web_download_allowed_urls = ["http://127.0.0.1:$http_port/"]
# Every import method Stratus has, and a second store so multi-store imports and
# copy-image are tested too (devstack's multi-store job; glance-download reads from this
# region's own image service, as Tempest's tests ask).
stores = ["file", "fast"]
enabled_import_methods = ["glance-direct", "web-download", "copy-image", "glance-download"]

[compute]
virt_driver = "qemu"
host_netns = "$host_ns"

[network_agent]
enabled = "true"
netns_prefix = "$prefix-"
tunnel_ip = "$TUNNEL_IP"

[network_agent.physical_interface_mappings]
public = "$veth_cloud"

[public_network]
# This script makes devstack's public network itself (above and in tempest/helper.py).
enabled = false

[record]
# Every JSON answer, checked against ../shared/openapi after the run (schema-check.txt).
path = "$results/responses.jsonl"
EOF
    # A clean environment, so no STRATUS_* variable of the caller changes this cloud.
    # Settings Stratus may not have yet go in as variables (unknown ones are ignored):
    # devstack's password history.
    local cloud_env=(env -i "PATH=$PATH" "HOME=${HOME:-/root}" "LANG=C.UTF-8"
        "STRATUS_TEST_IMAGE_DIR=$ROOT/build/test-image"
        "STRATUS_IDENTITY_UNIQUE_LAST_PASSWORD_COUNT=2")
    "${cloud_env[@]}" "$bin" --config "$results/stratus.toml" config show >"$results/stratus-config.txt"
    say "starting $bin up on $URL (data $DATA)"
    setsid "${cloud_env[@]}" "$bin" --config "$results/stratus.toml" up --admin-password "$PASSWORD" \
        >"$results/stratus.log" 2>&1 </dev/null &
    STRATUS_PID=$!
    local i
    for i in $(seq 1 180); do
        kill -0 "$STRATUS_PID" 2>/dev/null || { tail -20 "$results/stratus.log" >&2; die "stratus up exited (log: $results/stratus.log)"; }
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/identity/v3")" = 200 ] && break
        [ "$i" -lt 180 ] || die "stratus up did not answer within 180 s (log: $results/stratus.log)"
        sleep 1
    done
    say "cloud up after ${i}s"

    # The images of Tempest's image-format tests, as devstack makes them (os-test-images).
    "$PY" "$HELPER" format-images "$results/format-images"
    "$PY" "$HELPER" configure --url "$URL" --password "$PASSWORD" \
        --images-manifest "$results/format-images/manifest.yaml" \
        --config-show "$results/stratus-config.txt" --image-dir "$ROOT/build/test-image" \
        --http-image "http://127.0.0.1:$http_port/disk.qcow2" --template tempest/tempest.conf.in \
        --out "$results/tempest.conf" --lock-path "$work/locks"

    # -------------------------------------------------------------------------- tempest
    ln -sfn "$results" "$ROOT/build/tempest/latest" 2>/dev/null || true
    local what="${select[*]} ${exclude[*]} --concurrency $concurrency"
    say "tempest run: $what (results in $results)"
    local t0 elapsed status
    t0=$(date +%s)
    # The subunit stream is kept whole; the console gets one line per test (the failures'
    # details are in failures.txt and tempest.log, not on the console).
    (cd "$work" && exec setsid bash -c 'set -o pipefail
        "$@" | tee ../subunit.bin | "'"$PY"'" "'"$HELPER"'" trace | tee ../console.log' _ \
        "$VENV/bin/tempest" run --subunit --config-file "$results/tempest.conf" \
        --include-list "$results/include.txt" "${exclude[@]}" --concurrency "$concurrency") &
    TEMPEST_PID=$!
    set +e
    wait "$TEMPEST_PID"
    TEMPEST_PID=""
    set -e
    elapsed=$(( $(date +%s) - t0 ))
    [ ! -f "$work/tempest.log" ] || mv "$work/tempest.log" "$results/tempest.log"
    [ -s "$results/subunit.bin" ] || die "tempest run produced no results (see $results/console.log)"
    say "tempest run took ${elapsed}s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    set +e
    "$PY" "$HELPER" summarize "$results/subunit.bin" --out-dir "$results" --expect "$results/expect.txt" \
        --title "scripts/tempest.sh $what: ${elapsed}s, $(date -u +%FT%TZ), tempest $tempest_version, $(basename "$bin") $("$bin" version | awk '{print $2}')"
    status=$?
    # The answers the cloud gave during the run, against the OpenAPI descriptions: missing
    # required fields, wrong types, undocumented fields (docs/conformance.md). Findings in
    # the services of TEMPEST_SCHEMA_ENFORCE fail the run; the others are reported.
    local t1 schema_status
    t1=$(date +%s)
    "$PY" tools/apicheck.py --check-recorded "$results/responses.jsonl" \
        --enforce "${TEMPEST_SCHEMA_ENFORCE:-identity,image,placement}" >"$results/schema-check.txt" 2>&1
    schema_status=$?
    set -e
    say "response schemas ($(( $(date +%s) - t1 ))s, $results/schema-check.txt): $(tail -2 "$results/schema-check.txt" | tr '\n' ' ')"
    [ "$schema_status" -eq 0 ] || say "response schema findings in enforced services: see $results/schema-check.txt"
    [ "$status" -ne 0 ] || status=$schema_status
    return "$status"
}

main "$@"; exit
