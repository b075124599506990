#!/usr/bin/env bash
# Boot benchmark of the qemu virt driver: for N servers (default 10) booted one after
# the other on `stratus up` with the test image (tools/build-test-image.sh) on m1.nano
# (128 MB) with no NIC, the time from `POST /servers` to ACTIVE and to the guest's
# console marker ("stratus-guest: up", printed at the end of its init), next to N bare
# `qemu-system-x86_64` boots of the same image with the very same command line (taken
# from the first server's qemu.argv, on a fresh overlay of the same base); plus QEMU's
# RSS per guest once booted. Prints every run and the medians.
#
# Usage: bench/boot.sh [N]
#   PROFILE=release|debug (default release: builds the release binary first)
#   STRATUS_TEST_IMAGE_DIR (default <repo>/build/test-image)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# No network data plane: as root it would build bridges in this machine's root namespace.
export STRATUS_NETWORK_AGENT_ENABLED="${STRATUS_NETWORK_AGENT_ENABLED:-false}"
N=${1:-10}
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
  cargo build --release --locked --bin stratus >&2
else
  cargo build --locked --bin stratus >&2
fi
BIN="$CARGO_TARGET_DIR/$PROFILE/stratus"
export STRATUS_TEST_IMAGE_DIR="${STRATUS_TEST_IMAGE_DIR:-$ROOT/build/test-image}"
[[ -f $STRATUS_TEST_IMAGE_DIR/disk.qcow2 ]] || { echo "no test image: run tools/build-test-image.sh build/test-image" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "no QEMU: run sudo scripts/install-host-packages.sh" >&2; exit 1; }
PORT=${PORT:-15180}
DIR="$(mktemp -d /tmp/stratus-boot.XXXXXX)"
export STRATUS_COMPUTE_VIRT_DRIVER=qemu
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
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, profile $PROFILE" >&2
python3 - "$PORT" "$DIR" "$N" <<'PY'
import json, os, re, statistics, subprocess, sys, time, urllib.request

port, data, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
MARKER = b"stratus-guest: up"

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
s, h, _ = req("POST", "/identity/v3/auth/tokens", auth)
token = h["X-Subject-Token"]
image = None
deadline = time.time() + 60
while image is None:
    _, _, b = req("GET", "/image/v2/images?name=cirros", token=token)
    imgs = [i for i in b["images"] if i["status"] == "active"]
    image = imgs[0]["id"] if imgs else None
    assert image or time.time() < deadline, "the cirros image was not uploaded at start-up"
    time.sleep(0.1)
# The agent registers in the background: wait for the hypervisor.
deadline = time.time() + 60
while True:
    _, _, b = req("GET", "/compute/v2.1/os-hypervisors/detail", token=token)
    if b and b.get("hypervisors"):
        hv = b["hypervisors"][0]
        break
    assert time.time() < deadline, "no hypervisor registered"
    time.sleep(0.1)
print(f"hypervisor_type {hv.get('hypervisor_type')} version {hv.get('hypervisor_version')}")
mv = {"OpenStack-API-Version": "compute 2.37", "X-OpenStack-Nova-API-Version": "2.37"}

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

def wait_marker(path, t0, limit=120):
    while time.time() - t0 < limit:
        try:
            with open(path, "rb") as f:
                if MARKER in f.read():
                    return time.time()
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"no marker in {path}")

api, active, marker, rss = [], [], [], []
bare, bare_rss = [], []
argv_template = None

def bare_run(i):
    # The same argv, on a fresh overlay of the same base in another directory.
    argv, inst0 = argv_template
    base_path = json.load(open(os.path.join(data, "instances", "_base", image + ".json")))["path"]
    d = os.path.join(data, f"bare{i}")
    os.makedirs(d)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base_path, "-F", "qcow2", os.path.join(d, "disk"), str(1 << 30)], check=True)
    args = [a.replace(inst0, d) for a in argv]
    log = open(os.path.join(d, "qemu.log"), "w")
    t0 = time.time()
    p = subprocess.Popen(["qemu-system-x86_64"] + args, stdout=log, stderr=log)
    t = wait_marker(os.path.join(d, "console.log"), t0)
    bare.append(t - t0)
    time.sleep(1.0)
    bare_rss.append(rss_kb(p.pid) / 1024)
    p.kill(); p.wait()
    print(f"bare qemu run {i+1}: console marker {bare[-1]:.2f} s, RSS {bare_rss[-1]:.0f} MiB")

# Stratus and bare runs alternate so that both see the same machine load.
for i in range(n):
    t0 = time.time()
    s, _, b = req("POST", "/compute/v2.1/servers", {"server": {"name": f"b{i}", "imageRef": image, "flavorRef": "42", "networks": "none"}}, token, mv)
    t_api = time.time()
    assert s == 202, (s, b)
    sid = b["server"]["id"]
    while True:
        _, _, b = req("GET", f"/compute/v2.1/servers/{sid}", token=token)
        st = b["server"]["status"]
        if st == "ACTIVE":
            t_act = time.time()
            break
        assert st != "ERROR", b
        time.sleep(0.002)
    inst = os.path.join(data, "instances", sid)
    t_mark = wait_marker(os.path.join(inst, "console.log"), t0)
    pid = int(open(os.path.join(inst, "qemu.pid")).read())
    time.sleep(1.0)
    rss.append(rss_kb(pid) / 1024)
    if argv_template is None:
        argv_template = (open(os.path.join(inst, "qemu.argv")).read().split("\n")[:-1], inst)
    api.append((t_api - t0) * 1000); active.append((t_act - t0) * 1000); marker.append(t_mark - t0)
    print(f"stratus run {i+1}: API {api[-1]:.1f} ms, ACTIVE {active[-1]:.0f} ms, console marker {marker[-1]:.2f} s, QEMU RSS {rss[-1]:.0f} MiB")
    req("DELETE", f"/compute/v2.1/servers/{sid}", token=token)
    deadline = time.time() + 60
    while os.path.exists(inst):
        assert time.time() < deadline, "server not deleted"
        time.sleep(0.05)
    bare_run(i)

med = statistics.median
print()
print(f"median POST /servers API time:        {med(api):.1f} ms (n={n})")
print(f"median POST /servers -> ACTIVE:       {med(active):.0f} ms")
print(f"median POST /servers -> console 'up': {med(marker):.2f} s")
print(f"median bare qemu start -> 'up':       {med(bare):.2f} s  (same argv)")
print(f"Stratus overhead to the guest marker: {med(marker) - med(bare):+.2f} s")
print(f"median QEMU RSS per m1.nano guest (1 s after 'up'): {med(rss):.0f} MiB (bare: {med(bare_rss):.0f} MiB)")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
