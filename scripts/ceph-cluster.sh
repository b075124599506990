#!/usr/bin/env bash
# A one-node Ceph cluster in userspace for tests and benchmarks: mon + mgr + one OSD
# (BlueStore on a sparse file, no LVM) + optionally radosgw, all on 127.0.0.1, all state
# under one directory. Facts and pitfalls: ../shared/HOST-FACTS.md §11.
#
#   scripts/ceph-cluster.sh start DIR   # prints nothing on success; writes DIR/env
#   scripts/ceph-cluster.sh stop DIR    # stops every daemon started in DIR (rgw, osd, mgr, mon)
#
# DIR/env holds KEY=VALUE lines for the users of the cluster:
#   CEPH_CONF, CEPH_ADMIN_KEYRING, CEPH_MON_ADDR (v1 address, host:port), CEPH_MON_HOST
#   (the `mon host` value), RBD_POOL (`volumes`, rbd enabled), RBD_CLIENT (`client.volumes`),
#   RBD_CLIENT_KEY, RBD_CLIENT_KEYRING, and with radosgw: RGW_ENDPOINT, S3_ACCESS_KEY,
#   S3_SECRET_KEY, SWIFT_USER, SWIFT_KEY (Swift v1 auth at $RGW_ENDPOINT/auth/1.0).
#
# Environment (defaults in the object engineer's port range):
#   CEPH_MON_PORT_V2=20530 CEPH_MON_PORT_V1=20531 CEPH_RGW_PORT=20580
#   CEPH_RGW=1 (0: no radosgw, e.g. for RBD-only users)   CEPH_OSD_SIZE_GB=10
#   CEPH_START_TIMEOUT=120 (seconds to wait for HEALTH_OK and radosgw)
# If start fails, whatever it started is stopped again before it exits non-zero.
# Run under `flock /tmp/stratus-heavy.lock` (the tests using it do).
set -euo pipefail

cmd=${1:-}
B=${2:-}
[[ -n $cmd && -n $B ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
mkdir -p "$B"
B=$(cd "$B" && pwd)

log() { printf 'ceph-cluster: %s\n' "$*" >&2; }

stop_all() {
    # Reverse start order; SIGTERM, then SIGKILL after ~10 s.
    local d pid
    for d in rgw osd mgr mon; do
        [[ -f $B/$d.pid ]] || continue
        pid=$(cat "$B/$d.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$B/$d.pid"
    done
}

if [[ $cmd == stop ]]; then
    stop_all
    exit 0
fi
[[ $cmd == start ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

for bin in ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool; do
    command -v "$bin" >/dev/null || { log "$bin missing: run scripts/install-ceph.sh"; exit 1; }
done
MON_V2=${CEPH_MON_PORT_V2:-20530}
MON_V1=${CEPH_MON_PORT_V1:-20531}
RGW_PORT=${CEPH_RGW_PORT:-20580}
WITH_RGW=${CEPH_RGW:-1}
OSD_GB=${CEPH_OSD_SIZE_GB:-10}
TIMEOUT=${CEPH_START_TIMEOUT:-120}
if [[ $WITH_RGW == 1 ]] && ! command -v radosgw >/dev/null; then
    log "radosgw missing: run scripts/install-ceph.sh"; exit 1
fi
for port in "$MON_V2" "$MON_V1" $([[ $WITH_RGW == 1 ]] && echo "$RGW_PORT"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        log "port $port on 127.0.0.1 is in use (another cluster running? set CEPH_MON_PORT_V2/V1, CEPH_RGW_PORT)"
        exit 1
    fi
done

trap 'rc=$?; if [[ $rc != 0 ]]; then log "start failed (logs in $B/log); stopping"; stop_all; fi' EXIT

FSID=$(cat /proc/sys/kernel/random/uuid)
MON_HOST="[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]"
mkdir -p "$B"/{mon,mgr,osd,rgw,run,log,crash}
export CEPH_CONF=$B/ceph.conf
cat > "$CEPH_CONF" <<CONF
[global]
fsid = $FSID
mon initial members = a
mon host = $MON_HOST
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $B/keyring.\$name
run dir = $B/run
admin socket = $B/run/\$cluster-\$name.asok
log file = $B/log/\$cluster-\$name.log
mon cluster log file = $B/log/\$cluster.log
crash dir = $B/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 500
mon data avail warn = 5
mon data avail crit = 1
[mon]
mon data = $B/mon/\$cluster-\$id
[mgr]
mgr data = $B/mgr/\$cluster-\$id
[osd]
osd data = $B/osd/\$cluster-\$id
osd objectstore = bluestore
bluestore block path = $B/osd/block-\$id.img
bluestore block create = true
bluestore block size = $((OSD_GB * 1024 * 1024 * 1024))
bluestore fsck on mount = false
osd memory target = 1073741824
[client.rgw.gw]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $B/rgw/\$cluster-\$id
rgw dns name = 127.0.0.1
CONF

# Starts daemon NAME (pid file $B/NAME.pid) in its own session, output to its log.
spawn() {
    local name=$1; shift
    setsid "$@" >"$B/log/$name.out" 2>&1 < /dev/null &
    echo $! > "$B/$name.pid"
}

ceph_() { timeout 60 ceph --conf "$CEPH_CONF" "$@"; }

# 1. keys and monmap
ceph-authtool --create-keyring "$B/keyring.mon.a" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$B/keyring.client.admin" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$B/keyring.mon.a" --import-keyring "$B/keyring.client.admin" >/dev/null
monmaptool --create --addv a "$MON_HOST" --fsid "$FSID" "$B/monmap" >/dev/null
# 2. mon
ceph-mon --conf "$CEPH_CONF" --mkfs -i a --monmap "$B/monmap" --keyring "$B/keyring.mon.a" >/dev/null 2>&1
spawn mon ceph-mon --conf "$CEPH_CONF" -f -i a
# 3. mgr
ceph_ auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$B/keyring.mgr.x" >/dev/null
mkdir -p "$B/mgr/ceph-x"
spawn mgr ceph-mgr --conf "$CEPH_CONF" -f -i x
# 4. osd on a sparse file
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_KEY=$(ceph-authtool --gen-print-key)
OSD_ID=$(echo "{\"cephx_secret\": \"$OSD_KEY\"}" | ceph_ osd new "$OSD_UUID" -i -)
mkdir -p "$B/osd/ceph-$OSD_ID"
ceph-authtool --create-keyring "$B/keyring.osd.$OSD_ID" --name "osd.$OSD_ID" --add-key "$OSD_KEY" >/dev/null
ceph-osd --conf "$CEPH_CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >/dev/null 2>&1
spawn osd ceph-osd --conf "$CEPH_CONF" -f -i "$OSD_ID"
# 5. the RBD pool and its client
ceph_ osd pool create volumes 32 >/dev/null 2>&1
ceph_ osd pool application enable volumes rbd >/dev/null 2>&1
RBD_KEY=$(ceph_ auth get-or-create-key client.volumes mon 'profile rbd' osd 'profile rbd pool=volumes' mgr 'profile rbd pool=volumes')
ceph_ auth get client.volumes -o "$B/keyring.client.volumes" >/dev/null 2>&1

deadline=$((SECONDS + TIMEOUT))
until ceph_ health 2>/dev/null | grep -q HEALTH_OK && ceph_ pg stat 2>/dev/null | grep -qv 'unknown\|creating\|peering\|activating'; do
    if (( SECONDS > deadline )); then log "no HEALTH_OK within ${TIMEOUT}s: $(ceph_ health detail 2>&1 | head -5)"; exit 1; fi
    for d in mon mgr osd; do
        kill -0 "$(cat "$B/$d.pid")" 2>/dev/null || { log "$d exited: $(tail -5 "$B/log/$d.out")"; exit 1; }
    done
    sleep 1
done
if command -v rbd >/dev/null; then timeout 60 rbd --conf "$CEPH_CONF" pool init volumes; fi

{
    echo "CEPH_CONF=$CEPH_CONF"
    echo "CEPH_ADMIN_KEYRING=$B/keyring.client.admin"
    echo "CEPH_MON_ADDR=127.0.0.1:$MON_V1"
    echo "CEPH_MON_HOST=$MON_HOST"
    echo "RBD_POOL=volumes"
    echo "RBD_CLIENT=client.volumes"
    echo "RBD_CLIENT_KEY=$RBD_KEY"
    echo "RBD_CLIENT_KEYRING=$B/keyring.client.volumes"
} > "$B/env.partial"

# 6. radosgw with one S3 user and its Swift subuser
if [[ $WITH_RGW == 1 ]]; then
    ceph_ auth get-or-create client.rgw.gw mon 'allow rw' osd 'allow rwx' mgr 'allow rw' -o "$B/keyring.client.rgw.gw" >/dev/null
    mkdir -p "$B/rgw/ceph-rgw.gw"
    spawn rgw radosgw --conf "$CEPH_CONF" -f -n client.rgw.gw
    until curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/"; do
        if (( SECONDS > deadline )); then log "radosgw did not answer within ${TIMEOUT}s"; exit 1; fi
        kill -0 "$(cat "$B/rgw.pid")" 2>/dev/null || { log "radosgw exited: $(tail -5 "$B/log/rgw.out")"; exit 1; }
        sleep 0.5
    done
    # (od reads exactly N bytes: no SIGPIPE for pipefail to trip on)
    rand_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
    ACCESS=$(rand_hex 10 | tr a-f A-F)
    SECRET=$(rand_hex 20)
    SWIFT_KEY=$(rand_hex 20)
    timeout 60 radosgw-admin --conf "$CEPH_CONF" user create --uid=stratus --display-name=Stratus \
        --access-key="$ACCESS" --secret-key="$SECRET" >/dev/null
    timeout 60 radosgw-admin --conf "$CEPH_CONF" subuser create --uid=stratus --subuser=stratus:swift \
        --access=full --key-type=swift --secret-key="$SWIFT_KEY" >/dev/null
    {
        echo "RGW_ENDPOINT=http://127.0.0.1:$RGW_PORT"
        echo "S3_ACCESS_KEY=$ACCESS"
        echo "S3_SECRET_KEY=$SECRET"
        echo "SWIFT_USER=stratus:swift"
        echo "SWIFT_KEY=$SWIFT_KEY"
    } >> "$B/env.partial"
fi
mv "$B/env.partial" "$B/env"
