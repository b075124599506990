"""Orchestration benchmark (run by bench/orchestration.sh against `stratus up` with the fake
virt driver): a stack of one OS::Heat::ResourceGroup of N servers, created and deleted
through the Heat API; then the same N servers made and deleted by this script directly
through the compute API (N threads), as the reference. Prints wall times, the
parallelism the engine achieved (sum of the members' own create times over the wall
time), and the engine's overhead per resource against the direct calls."""

import argparse
import http.client
import json
import threading
import time
import uuid

P = argparse.ArgumentParser()
P.add_argument("--url", required=True)
P.add_argument("--password", required=True)
P.add_argument("--servers", type=int, default=50)
ARGS = P.parse_args()
HOST, PORT = ARGS.url.split("//")[1].split(":")
PORT = int(PORT)


def request(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(HOST, PORT, timeout=120)
    hdrs = {"Content-Type": "application/json", "Accept": "application/json"}
    hdrs.update(headers or {})
    c.request(method, path, None if body is None else json.dumps(body), hdrs)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def must(res, *ok):
    s, _, b = res
    if s not in ok:
        raise RuntimeError(f"unexpected {s}: {b[:300]}")
    return json.loads(b) if b else {}


body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": ARGS.password}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
s, h, b = request("POST", "/identity/v3/auth/tokens", body)
TOKEN = h.get("X-Subject-Token") or h.get("x-subject-token")
PROJECT = json.loads(b)["token"]["project"]["id"]
H = {"X-Auth-Token": TOKEN}
N = ARGS.servers
RUN = uuid.uuid4().hex[:6]

# Room for N servers and their ports.
must(request("PUT", f"/compute/v2.1/os-quota-sets/{PROJECT}",
             {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}, H), 200)
must(request("PUT", f"/network/v2.0/quotas/{PROJECT}", {"quota": {"port": -1}}, H), 200)
img = must(request("POST", "/image/v2/images", {"name": f"bench-{RUN}", "disk_format": "raw",
                                               "container_format": "bare"}, H), 201)
c = http.client.HTTPConnection(HOST, PORT, timeout=60)
c.request("PUT", f"/image/v2/images/{img['id']}/file", b"\0" * (1 << 20),
          {**H, "Content-Type": "application/octet-stream"})
assert c.getresponse().status == 204
net = must(request("POST", "/network/v2.0/networks", {"network": {"name": f"bench-{RUN}"}}, H), 201)["network"]
must(request("POST", "/network/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.77.0.0/22",
                                                          "ip_version": 4}}, H), 201)

TEMPLATE = {
    "heat_template_version": "2021-04-16",
    "resources": {"group": {"type": "OS::Heat::ResourceGroup", "properties": {
        "count": N,
        "resource_def": {"type": "OS::Nova::Server", "properties": {
            "name": "bench-%index%", "image": img["id"], "flavor": "1",
            "networks": [{"network": net["id"]}]}}}}},
}
HEAT = f"/orchestration/v1/{PROJECT}"


def wait_stack(path, want):
    while True:
        s, _, b = request("GET", path, headers=H)
        if s == 404 and want == "GONE":
            return
        st = json.loads(b)["stack"]["stack_status"]
        if st == want:
            return
        if st.endswith("FAILED"):
            raise RuntimeError(f"{path}: {st}: {json.loads(b)['stack']['stack_status_reason']}")
        time.sleep(0.2)


def ts(t):
    return time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ"))


t0 = time.monotonic()
stack = must(request("POST", f"{HEAT}/stacks", {"stack_name": f"bench-{RUN}", "template": TEMPLATE}, H), 201)["stack"]
path = f"{HEAT}/stacks/bench-{RUN}/{stack['id']}"
wait_stack(path, "CREATE_COMPLETE")
heat_create = time.monotonic() - t0
group = must(request("GET", f"{path}/resources/group", headers=H), 200)["resource"]
nested_id = group["physical_resource_id"]
# Member create times from the nested stack's events (seconds resolution).
s, hd, _ = request("GET", f"{HEAT}/stacks/{nested_id}", headers=H)
loc = (hd.get("Location") or hd.get("location")).split("/orchestration")[1]
events = must(request("GET", f"/orchestration{loc}/events?limit=10000", headers=H), 200)["events"]
started = [ts(e["event_time"]) for e in events
           if e["resource_name"].isdigit() and e["resource_status"] == "CREATE_IN_PROGRESS"]
spread = max(started) - min(started)
t0 = time.monotonic()
must(request("DELETE", path, headers=H), 204)
wait_stack(path, "DELETE_COMPLETE")
heat_delete = time.monotonic() - t0

# The reference: the same servers made and deleted directly, N at once.
ids = [None] * N
took = [0.0] * N


def boot(i):
    t = time.monotonic()
    srv = must(request("POST", "/compute/v2.1/servers", {"server": {
        "name": f"direct-{i}", "imageRef": img["id"], "flavorRef": "1",
        "networks": [{"uuid": net["id"]}]}}, H), 202)["server"]
    ids[i] = srv["id"]
    while must(request("GET", f"/compute/v2.1/servers/{srv['id']}", headers=H), 200)["server"]["status"] != "ACTIVE":
        time.sleep(0.2)
    took[i] = time.monotonic() - t


def kill(i):
    must(request("DELETE", f"/compute/v2.1/servers/{ids[i]}", headers=H), 204)
    while request("GET", f"/compute/v2.1/servers/{ids[i]}", headers=H)[0] != 404:
        time.sleep(0.2)


def run_all(fn):
    t = time.monotonic()
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(N)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.monotonic() - t


direct_create = run_all(boot)
direct_delete = run_all(kill)
print(f"servers: {N} (fake virt driver)")
print(f"heat create (ResourceGroup of {N}): {heat_create:6.2f} s   direct (script, {N} threads): {direct_create:6.2f} s")
print(f"heat delete:                        {heat_delete:6.2f} s   direct:                        {direct_delete:6.2f} s")
one = sorted(took)[N // 2]
print(f"one server alone (median of the direct boots): {one:5.2f} s; serial would take ~{one * N:6.1f} s")
print(f"parallelism achieved in create: {one * N / heat_create:5.1f} (serial estimate / heat wall); "
      f"members started within {spread:.0f} s of each other (event times, 1 s resolution)")
print(f"engine overhead per resource: create {(heat_create - direct_create) / N * 1000:7.1f} ms, "
      f"delete {(heat_delete - direct_delete) / N * 1000:7.1f} ms")
