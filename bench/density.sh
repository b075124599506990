#!/usr/bin/env bash
# Density benchmark of the qemu virt driver: how many m1.nano (128 MB) test guests this
# host runs at once. Starts `stratus up` with the test image, then boots guests in
# steps (default 5, 10, 20 in total: each step adds guests to those already running,
# all of a step at once), waits until every guest printed its console marker
# ("stratus-guest: up"), and prints per step: the time to the last marker, QEMU RSS per
# guest (median, max), the sum of RSS, the drop of the host's MemAvailable since before
# the first boot, the CPU the idle guests burn, and the memory bound extrapolated from
# the cost per guest. Every guest and the cloud are removed at the end.
#
# Usage: flock /work/wt/_shared/qemu.lock bench/density.sh [TOTAL...]   (default: 5 10 20)
#   PROFILE=release|debug (default release; the binary must be built already:
#     cargo build --release --bin stratus)
#   STRATUS_TEST_IMAGE_DIR (default <repo>/build/test-image)
#   RESERVE_MIB: memory kept for the host in the extrapolation (default 2048)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
STEPS=("$@")
[[ ${#STEPS[@]} -gt 0 ]] || STEPS=(5 10 20)
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE=${PROFILE:-release}
BIN="$CARGO_TARGET_DIR/$PROFILE/stratus"
[[ -x $BIN ]] || { echo "no $BIN: cargo build --${PROFILE/debug/dev} --bin stratus" >&2; exit 1; }
export STRATUS_TEST_IMAGE_DIR="${STRATUS_TEST_IMAGE_DIR:-$ROOT/build/test-image}"
[[ -f $STRATUS_TEST_IMAGE_DIR/disk.qcow2 ]] || { echo "no test image: run tools/build-test-image.sh build/test-image" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "no QEMU: run sudo scripts/install-host-packages.sh" >&2; exit 1; }
PORT=${PORT:-15181}
DIR="$(mktemp -d /tmp/stratus-density.XXXXXX)"
export STRATUS_COMPUTE_VIRT_DRIVER=qemu
# 20 one-vCPU guests on 2 cores: Nova's default ratio (16), not Stratus's 4.
export STRATUS_COMPUTE_AGENT_CPU_ALLOCATION_RATIO=${CPU_ALLOCATION_RATIO:-16}
"$BIN" up --data-dir "$DIR" --listen "127.0.0.1:$PORT" --admin-password bench-pw >"$DIR/log" 2>&1 &
PID=$!
cleanup() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  # No QEMU of this run may survive it.
  for p in $(pgrep -f "$DIR" || true); do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), profile $PROFILE" >&2
python3 - "$PORT" "$DIR" "${RESERVE_MIB:-2048}" "${STEPS[@]}" <<'PY'
import json, os, re, statistics, sys, time, urllib.request

port, data, reserve = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = [int(s) for s in sys.argv[4:]]
base = f"http://127.0.0.1:{port}"
MARKER = b"stratus-guest: up"
TICK = os.sysconf("SC_CLK_TCK")

def req(method, path, body=None, token=None, headers=None):
    h = {"Content-Type": "application/json"}
    if token:
        h["X-Auth-Token"] = token
    h.update(headers or {})
    r = urllib.request.Request(base + path, method=method, headers=h,
                               data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            raw = resp.read()
            return resp.status, resp.headers, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()

def meminfo(key):
    with open("/proc/meminfo") as f:
        return int(re.search(rf"^{key}:\s+(\d+)", f.read(), re.M).group(1)) / 1024

def rss_mib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1)) / 1024

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])

deadline = time.time() + 60
while True:
    try:
        if req("GET", "/identity/v3")[0] == 200:
            break
    except Exception:
        pass
    assert time.time() < deadline, "stratus did not start"
    time.sleep(0.05)
auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": "bench-pw"}}},
                 "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
s, h, b = req("POST", "/identity/v3/auth/tokens", auth)
token = h["X-Subject-Token"]
project = b["token"]["project"]["id"]
image = None
deadline = time.time() + 60
while image is None:
    _, _, b = req("GET", "/image/v2/images?name=cirros", token=token)
    imgs = [i for i in b["images"] if i["status"] == "active"]
    image = imgs[0]["id"] if imgs else None
    assert image or time.time() < deadline, "the cirros image was not uploaded at start-up"
    time.sleep(0.1)
deadline = time.time() + 60
while True:
    _, _, b = req("GET", "/compute/v2.1/os-hypervisors/detail", token=token)
    if b and b.get("hypervisors"):
        break
    assert time.time() < deadline, "no hypervisor registered"
    time.sleep(0.1)
# Room for every guest of the run in the admin project's quota.
n_max = max(steps)
s, _, b = req("PUT", f"/compute/v2.1/os-quota-sets/{project}",
              {"quota_set": {"instances": n_max + 5, "cores": n_max + 5, "ram": 1024 * (n_max + 5)}}, token)
assert s == 200, (s, b)
mv = {"OpenStack-API-Version": "compute 2.37", "X-OpenStack-Nova-API-Version": "2.37"}

def wait_marker(path, limit):
    while time.time() < limit:
        try:
            with open(path, "rb") as f:
                if MARKER in f.read():
                    return time.time()
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    return None

avail0 = meminfo("MemAvailable")
print(f"MemAvailable before the first guest: {avail0:.0f} MiB")
guests = []  # (server id, instance dir)
for total in steps:
    add = total - len(guests)
    if add <= 0:
        continue
    t0 = time.time()
    new = []
    for i in range(add):
        s, _, b = req("POST", "/compute/v2.1/servers",
                      {"server": {"name": f"d{len(guests) + i}", "imageRef": image, "flavorRef": "42", "networks": "none"}}, token, mv)
        assert s == 202, (s, b)
        new.append(b["server"]["id"])
    limit = t0 + 420
    up, failed = [], []
    for sid in new:
        inst = os.path.join(data, "instances", sid)
        t = wait_marker(os.path.join(inst, "console.log"), limit)
        if t is None:
            _, _, b = req("GET", f"/compute/v2.1/servers/{sid}", token=token)
            failed.append((sid, b["server"]["status"] if isinstance(b, dict) else b))
        else:
            up.append(t - t0)
        guests.append((sid, inst))
    time.sleep(3.0)
    pids = []
    for sid, inst in guests:
        try:
            pids.append(int(open(os.path.join(inst, "qemu.pid")).read()))
        except (FileNotFoundError, ValueError):
            pass
    rss = [rss_mib(p) for p in pids]
    # Private memory (guest RAM touched, TCG's translation cache, heap); the rest of RSS
    # is the QEMU binary, its libraries and the shared base image's page cache.
    anon = [rss_mib(p, "RssAnon") for p in pids]
    c0 = {p: cpu_ticks(p) for p in pids}
    w0 = time.time()
    time.sleep(5.0)
    idle_cpu = sum(cpu_ticks(p) - c0[p] for p in pids) / TICK / (time.time() - w0)
    avail = meminfo("MemAvailable")
    drop = avail0 - avail
    per_guest = drop / len(pids) if pids else float("nan")
    usable = avail0 - reserve
    bound = int(usable / per_guest) if pids else 0
    print(f"{len(guests)} guests ({add} booted at once): {len(up)} reached the marker, last after {max(up) if up else float('nan'):.1f} s"
          f"{'; NOT UP: ' + str(failed) if failed else ''}")
    print(f"  QEMU RSS per guest: median {statistics.median(rss):.0f} MiB, max {max(rss):.0f} MiB; sum {sum(rss):.0f} MiB;"
          f" private (RssAnon) median {statistics.median(anon):.0f} MiB, sum {sum(anon):.0f} MiB")
    print(f"  host MemAvailable dropped {drop:.0f} MiB = {per_guest:.0f} MiB per guest; idle guests burn {idle_cpu:.2f} CPUs "
          f"({idle_cpu / len(pids) * 100:.1f} % of a CPU each); load {open('/proc/loadavg').read().split()[0]}")
    print(f"  memory bound: ~{int(usable / max(rss))} guests at full RSS each (conservative), ~{int(usable / statistics.median(anon))}"
          f" at private memory each, ~{bound} at the measured MemAvailable drop"
          f" ({avail0:.0f} MiB available before, {reserve} MiB kept for the host)")
t0 = time.time()
for sid, _ in guests:
    req("DELETE", f"/compute/v2.1/servers/{sid}", token=token)
deadline = time.time() + 120
while any(os.path.exists(inst) for _, inst in guests):
    assert time.time() < deadline, "servers not deleted"
    time.sleep(0.2)
print(f"deleted {len(guests)} guests in {time.time() - t0:.1f} s")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
