#!/usr/bin/env python3
"""Soak a running Stratus with a mixed workload from simulated users; optionally add
hostile clients; report per-operation latency in the first and last tenth of each phase,
RSS and file descriptors over time, and whether anything leaked.

Stdlib only. Called by bench/soak.sh, which starts and stops the cloud.

Legitimate users talk from 127.0.0.1. Hostile clients use other loopback addresses
(127.0.0.2-4), as attackers elsewhere would, so the per-source failed-login limit
refuses them without refusing the users:
  - a failed-login storm (16 threads, unknown user names) from 127.0.0.2,
  - slow-header clients (200 connections sending one header line every 5 s) from 127.0.0.3,
  - N idle connections (default 5,000; reopened when the server closes them) from 127.0.0.4.

Exit status 1 when a 5xx was seen, a request hung, or something leaked.
"""
import argparse
import collections
import http.client
import json
import os
import random
import socket
import sys
import threading
import time
import uuid

P = argparse.ArgumentParser()
P.add_argument("--url", required=True, help="public URL, e.g. http://127.0.0.1:5080")
P.add_argument("--password", required=True, help="admin password")
P.add_argument("--pid", type=int, required=True, help="the server's pid (RSS, fds)")
P.add_argument("--users", type=int, default=8)
P.add_argument("--seconds", type=int, default=1800, help="length of each phase")
P.add_argument("--hostile", action="store_true", help="add a hostile phase after the calm one")
P.add_argument("--idle-connections", type=int, default=5000)
P.add_argument("--rss-budget-mib", type=int, default=150)
ARGS = P.parse_args()

HOST, PORT = ARGS.url.split("//")[1].split(":")
PORT = int(PORT.split("/")[0])
TIMEOUT = 60


class Client:
    """One keep-alive HTTP connection from a given source address."""

    def __init__(self, source="127.0.0.1"):
        self.source = source
        self.conn = None

    def request(self, method, path, body=None, headers=None, raw=False):
        hdrs = {"Content-Type": "application/json", "Accept": "application/json"}
        hdrs.update(headers or {})
        data = body if raw or body is None else json.dumps(body)
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, PORT, timeout=TIMEOUT, source_address=(self.source, 0))
            try:
                self.conn.request(method, path, data, hdrs)
                r = self.conn.getresponse()
                payload = r.read()
                return r.status, dict(r.getheaders()), payload
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
            except Exception:
                self.conn.close()
                self.conn = None
                raise
        raise RuntimeError("unreachable")


def token_for(c, user, password, project):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    s, h, b = c.request("POST", "/identity/v3/auth/tokens", body)
    if s != 201:
        raise RuntimeError(f"login {user}: {s} {b[:200]}")
    return h.get("X-Subject-Token") or h.get("x-subject-token"), json.loads(b)


def must(res, *ok):
    s, _, b = res
    if s not in ok:
        raise RuntimeError(f"unexpected {s}: {b[:300]}")
    return json.loads(b) if b else {}


# ---------------------------------------------------------------- setup (admin) ---
admin = Client()
ADMIN_TOKEN, _ = token_for(admin, "admin", ARGS.password, "admin")
AH = {"X-Auth-Token": ADMIN_TOKEN}
RUN = uuid.uuid4().hex[:6]

member_role = [r for r in must(admin.request("GET", "/identity/v3/roles?name=member", headers=AH), 200)["roles"]][0]["id"]
ext = must(admin.request("POST", "/network/v2.0/networks", {"network": {
    "name": f"soak-public-{RUN}", "router:external": True}}, AH), 201)["network"]
must(admin.request("POST", "/network/v2.0/subnets", {"subnet": {
    "network_id": ext["id"], "cidr": "203.0.113.0/24", "ip_version": 4, "enable_dhcp": False}}, AH), 201)
# A small public image for boots (the fake driver does not read it).
img = must(admin.request("POST", "/image/v2/images", {"name": f"soak-{RUN}", "disk_format": "raw",
                                                     "container_format": "bare", "visibility": "public"}, AH), 201)
must(admin.request("PUT", f"/image/v2/images/{img['id']}/file", os.urandom(1 << 20),
                   {**AH, "Content-Type": "application/octet-stream"}, raw=True), 204)
IMAGE = img["id"]

USERS = []
for i in range(ARGS.users):
    name = f"soak-{RUN}-{i}"
    proj = must(admin.request("POST", "/identity/v3/projects", {"project": {"name": name}}, AH), 201)["project"]
    user = must(admin.request("POST", "/identity/v3/users", {"user": {"name": name, "password": "pw-" + name,
                                                                        "default_project_id": proj["id"]}}, AH), 201)["user"]
    must(admin.request("PUT", f"/identity/v3/projects/{proj['id']}/users/{user['id']}/roles/{member_role}",
                       headers=AH), 204)
    USERS.append({"name": name, "password": "pw-" + name, "project": proj["id"]})


class User:
    def __init__(self, spec):
        self.spec = spec
        self.c = Client()
        self.token, _ = token_for(self.c, spec["name"], spec["password"], spec["name"])
        self.h = {"X-Auth-Token": self.token}
        net = must(self.c.request("POST", "/network/v2.0/networks", {"network": {"name": "soak"}}, self.h), 201)["network"]
        self.net = net["id"]
        sub = must(self.c.request("POST", "/network/v2.0/subnets", {"subnet": {
            "network_id": self.net, "cidr": "10.0.0.0/22", "ip_version": 4}}, self.h), 201)["subnet"]
        rtr = must(self.c.request("POST", "/network/v2.0/routers", {"router": {
            "name": "soak", "external_gateway_info": {"network_id": ext["id"]}}}, self.h), 201)["router"]
        must(self.c.request("PUT", f"/network/v2.0/routers/{rtr['id']}/add_router_interface",
                            {"subnet_id": sub["id"]}, self.h), 200)
        self.router, self.subnet = rtr["id"], sub["id"]


# ---------------------------------------------------------------- operations -------
def op_token_issue(u):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": u.spec["name"], "domain": {"id": "default"}, "password": u.spec["password"]}}}}}
    return [u.c.request("POST", "/identity/v3/auth/tokens?nocatalog", body)]


def op_token_validate(u):
    return [u.c.request("GET", "/identity/v3/auth/tokens", headers={**u.h, "X-Subject-Token": u.token})]


LISTS = ["/compute/v2.1/servers/detail", "/image/v2/images", "/network/v2.0/networks", "/network/v2.0/ports",
         "/compute/v2.1/flavors/detail", "/network/v2.0/floatingips", "/network/v2.0/security-groups",
         "/network/v2.0/routers", "/compute/v2.1/os-keypairs", "/compute/v2.1/limits"]


def op_list(u):
    return [u.c.request("GET", random.choice(LISTS), headers=u.h)]


def op_show(u):
    return [u.c.request("GET", random.choice([f"/network/v2.0/networks/{u.net}", f"/image/v2/images/{IMAGE}",
                                              f"/network/v2.0/routers/{u.router}", "/compute/v2.1/flavors/1"]),
                        headers=u.h)]


def op_server(u):
    out = [u.c.request("POST", "/compute/v2.1/servers", {"server": {
        "name": "soak", "imageRef": IMAGE, "flavorRef": "1", "networks": [{"uuid": u.net}]}}, u.h)]
    if out[0][0] != 202:
        return out
    sid = json.loads(out[0][2])["server"]["id"]
    deadline = time.time() + 60
    while time.time() < deadline:
        r = u.c.request("GET", f"/compute/v2.1/servers/{sid}", headers=u.h)
        out.append(r)
        if r[0] != 200 or json.loads(r[2])["server"]["status"] in ("ACTIVE", "ERROR"):
            break
        time.sleep(0.1)
    out.append(u.c.request("DELETE", f"/compute/v2.1/servers/{sid}", headers=u.h))
    while time.time() < deadline + 60:
        r = u.c.request("GET", f"/compute/v2.1/servers/{sid}", headers=u.h)
        if r[0] == 404:
            break
        time.sleep(0.1)
    return out


def op_port(u):
    out = [u.c.request("POST", "/network/v2.0/ports", {"port": {"network_id": u.net}}, u.h)]
    if out[0][0] == 201:
        pid = json.loads(out[0][2])["port"]["id"]
        out.append(u.c.request("DELETE", f"/network/v2.0/ports/{pid}", headers=u.h))
    return out


def op_fip(u):
    out = [u.c.request("POST", "/network/v2.0/floatingips", {"floatingip": {"floating_network_id": ext["id"]}}, u.h)]
    if out[0][0] == 201:
        fid = json.loads(out[0][2])["floatingip"]["id"]
        out.append(u.c.request("DELETE", f"/network/v2.0/floatingips/{fid}", headers=u.h))
    return out


def op_image(u):
    out = [u.c.request("POST", "/image/v2/images", {"name": "soak-u", "disk_format": "raw",
                                                    "container_format": "bare"}, u.h)]
    if out[0][0] != 201:
        return out
    iid = json.loads(out[0][2])["id"]
    out.append(u.c.request("PUT", f"/image/v2/images/{iid}/file", os.urandom(256 << 10),
                           {**u.h, "Content-Type": "application/octet-stream"}, raw=True))
    out.append(u.c.request("GET", f"/image/v2/images/{iid}/file", headers=u.h))
    out.append(u.c.request("DELETE", f"/image/v2/images/{iid}", headers=u.h))
    return out


OPS = [(op_token_issue, 4), (op_token_validate, 10), (op_list, 25), (op_show, 10),
       (op_server, 4), (op_port, 5), (op_fip, 4), (op_image, 1)]
EXPECTED = {200, 201, 202, 204}

RECORDS = collections.defaultdict(list)   # (phase, op) -> [(t, latency)]
ERRORS = collections.Counter()            # (phase, op, status) -> n
FIVEXX = []
LOCK = threading.Lock()
PHASE = {"name": "calm", "start": 0.0}
STOP = threading.Event()


def worker(spec):
    u = User(spec)
    ops, weights = zip(*OPS)
    while not STOP.is_set():
        op = random.choices(ops, weights)[0]
        phase = PHASE["name"]
        t0 = time.monotonic()
        try:
            results = op(u)
        except Exception as e:  # a hang (timeout) or a dropped connection
            results = [(f"exc:{type(e).__name__}", {}, str(e).encode())]
        dt = time.monotonic() - t0
        with LOCK:
            RECORDS[(phase, op.__name__[3:])].append((t0 - PHASE["start"], dt))
            for s, _, b in results:
                if s not in EXPECTED:
                    ERRORS[(phase, op.__name__[3:], s)] += 1
                    if isinstance(s, str) or s >= 500:
                        FIVEXX.append((phase, op.__name__, s, b[:300]))


SAMPLES = []  # (t, phase, rss MiB, fds)


def sampler():
    t0 = time.monotonic()
    while not STOP.is_set():
        try:
            with open(f"/proc/{ARGS.pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) // 1024
            fds = len(os.listdir(f"/proc/{ARGS.pid}/fd"))
        except OSError:
            break
        SAMPLES.append((time.monotonic() - t0, PHASE["name"], rss, fds))
        STOP.wait(5)


# ---------------------------------------------------------------- hostile clients --
HOSTILE_STOP = threading.Event()
HOSTILE = collections.Counter()


def login_storm():
    c = Client("127.0.0.2")
    while not HOSTILE_STOP.is_set():
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": f"nobody-{random.random()}", "domain": {"id": "default"}, "password": "x"}}}}}
        try:
            s, _, _ = c.request("POST", "/identity/v3/auth/tokens", body)
            HOSTILE[f"storm {s}"] += 1
        except Exception as e:
            HOSTILE[f"storm {type(e).__name__}"] += 1
            time.sleep(0.1)


def slow_headers():
    while not HOSTILE_STOP.is_set():
        try:
            s = socket.create_connection((HOST, PORT), source_address=("127.0.0.3", 0))
            s.sendall(b"GET /identity/v3 HTTP/1.1\r\n")
            t0 = time.monotonic()
            i = 0
            while not HOSTILE_STOP.is_set():
                HOSTILE_STOP.wait(5)
                s.sendall(f"X-Slow-{i}: a\r\n".encode())
                i += 1
        except OSError:
            HOSTILE["slow-header connections cut"] += 1
            HOSTILE["slow-header seconds held (sum)"] += int(time.monotonic() - t0)
        finally:
            s.close()


def idle_connections(n):
    socks = []
    while not HOSTILE_STOP.is_set():
        socks = [s for s in socks if s.fileno() != -1]
        alive = []
        for s in socks:
            try:
                s.setblocking(False)
                if s.recv(1) == b"":
                    s.close()
                    HOSTILE["idle connections closed by server"] += 1
                    continue
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                continue
            alive.append(s)
        socks = alive
        while len(socks) < n and not HOSTILE_STOP.is_set():
            try:
                socks.append(socket.create_connection((HOST, PORT), source_address=("127.0.0.4", 0)))
            except OSError as e:
                HOSTILE[f"idle connect {e.errno}"] += 1
                break
        HOSTILE["idle connections held (max)"] = max(HOSTILE["idle connections held (max)"], len(socks))
        HOSTILE_STOP.wait(1)
    for s in socks:
        s.close()


# ---------------------------------------------------------------- run --------------
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def report(phase):
    print(f"\n== phase {phase}: {ARGS.users} users, {ARGS.seconds} s ==")
    print(f"{'operation':<16}{'count':>8}{'errors':>8}  {'p50 first':>10}{'p99 first':>10}  {'p50 last':>10}{'p99 last':>10}  (ms, first/last tenth)")
    for (ph, op), recs in sorted(RECORDS.items()):
        if ph != phase:
            continue
        tenth = ARGS.seconds / 10
        first = [d for t, d in recs if t < tenth]
        last = [d for t, d in recs if t >= ARGS.seconds - tenth]
        errs = sum(n for (p, o, _), n in ERRORS.items() if p == phase and o == op)
        print(f"{op:<16}{len(recs):>8}{errs:>8}  {pct(first, .5):>10.1f}{pct(first, .99):>10.1f}  {pct(last, .5):>10.1f}{pct(last, .99):>10.1f}")
    for (p, o, s), n in sorted(ERRORS.items(), key=str):
        if p == phase:
            print(f"  unexpected status {s} on {o}: {n}")
    s = [x for x in SAMPLES if x[1] == phase]
    if s:
        print(f"RSS MiB: first {s[0][2]}, min {min(x[2] for x in s)}, max {max(x[2] for x in s)}, last {s[-1][2]};"
              f"  fds: first {s[0][3]}, max {max(x[3] for x in s)}, last {s[-1][3]}")
        print("RSS/fds over time: " + " ".join(f"{int(t)}s:{r}/{f}" for t, _, r, f in s[:: max(1, len(s) // 12)]))


def run_phase(name):
    PHASE["name"], PHASE["start"] = name, time.monotonic()
    time.sleep(ARGS.seconds)


threading.Thread(target=sampler, daemon=True).start()
workers = [threading.Thread(target=worker, args=(spec,), daemon=True) for spec in USERS]
for w in workers:
    w.start()
run_phase("calm")
hostile_threads = []
if ARGS.hostile:
    hostile_threads = [threading.Thread(target=login_storm, daemon=True) for _ in range(16)]
    hostile_threads += [threading.Thread(target=slow_headers, daemon=True) for _ in range(200)]
    hostile_threads += [threading.Thread(target=idle_connections, args=(ARGS.idle_connections,), daemon=True)]
    for t in hostile_threads:
        t.start()
    run_phase("hostile")
    HOSTILE_STOP.set()
STOP.set()
for w in workers:
    w.join(timeout=120)
for t in hostile_threads:
    t.join(timeout=10)

report("calm")
if ARGS.hostile:
    report("hostile")
    print("hostile clients: " + ", ".join(f"{k}: {v}" for k, v in sorted(HOSTILE.items())))
    calm = [d for (p, o), r in RECORDS.items() if p == "calm" and o != "server" for _, d in r]
    host = [d for (p, o), r in RECORDS.items() if p == "hostile" and o != "server" for _, d in r]
    print(f"legitimate p99 (all but server lifecycles): calm {pct(calm, .99):.1f} ms, hostile {pct(host, .99):.1f} ms"
          f" ({pct(host, .99) / max(pct(calm, .99), 1e-9):.2f}x)")

# Leak check: every user's servers, ports and floating IPs gone; placement usage zero.
time.sleep(3)
leaks = []
servers = must(admin.request("GET", "/compute/v2.1/servers?all_tenants=1", headers=AH), 200)["servers"]
soak_servers = [s for s in servers if s["name"] == "soak"]
if soak_servers:
    leaks.append(f"{len(soak_servers)} servers")
projects = {u["project"] for u in USERS}
ports = must(admin.request("GET", "/network/v2.0/ports", headers=AH), 200)["ports"]
stray = [p for p in ports if p["project_id"] in projects and not p["device_owner"].startswith("network:")]
if stray:
    leaks.append(f"{len(stray)} ports")
fips = [f for f in must(admin.request("GET", "/network/v2.0/floatingips", headers=AH), 200)["floatingips"]
        if f["project_id"] in projects]
if fips:
    leaks.append(f"{len(fips)} floating IPs")
PH = {**AH, "OpenStack-API-Version": "placement 1.39"}
for rp in must(admin.request("GET", "/placement/resource_providers", headers=PH), 200)["resource_providers"]:
    used = must(admin.request("GET", f"/placement/resource_providers/{rp['uuid']}/usages", headers=PH), 200)["usages"]
    if any(used.values()):
        leaks.append(f"allocations on {rp['name']}: {used}")
print("\nleaks: " + (", ".join(leaks) if leaks else "none (servers, ports, floating IPs, allocations)"))
if FIVEXX:
    print(f"5xx or hung requests: {len(FIVEXX)}; first: {FIVEXX[:3]}")
peak = max((x[2] for x in SAMPLES), default=0)
fail = bool(FIVEXX or leaks)
if peak > ARGS.rss_budget_mib:
    print(f"RSS peaked at {peak} MiB, over the budget of {ARGS.rss_budget_mib} MiB")
    fail = True
print("RESULT: " + ("FAIL" if fail else "PASS"))
sys.exit(1 if fail else 0)
