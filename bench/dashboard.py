#!/usr/bin/env python3
"""Dashboard page times (issue 21): server-side response time of the main pages, p50/p99,
next to the compute API call the Instances page is built on, in the same run.

Starts `stratus up` (fake virt driver, no network agent) on a temporary data directory,
creates SERVERS servers through the compute API, logs in through the dashboard's form and
times each page REQUESTS times over one keep-alive connection. Standard library only.

Usage: bench/dashboard.py STRATUS_BIN [SERVERS=200] [REQUESTS=50]
"""
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

PORT = int(os.environ.get("DSH_BENCH_PORT", "19210"))
PASSWORD = "bench-admin-pw"


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r.status, r.headers, data


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    binary = sys.argv[1]
    servers = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    work = tempfile.mkdtemp(prefix="dsh-bench-")
    conf = os.path.join(work, "stratus.toml")
    with open(conf, "w") as f:
        # A fake host big enough for the servers (the real host's 2 cores would not be).
        f.write('[compute]\nvirt_driver = "fake"\n\n[compute.fake]\nvcpus = 4096\nmemory_mb = 8388608\n'
                'local_gb = 100000\n\n[network_agent]\nenabled = "false"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUS_")}
    log = open(os.path.join(work, "stratus.log"), "w")
    proc = subprocess.Popen(
        [binary, "--config", conf, "up", "--data-dir", os.path.join(work, "data"),
         "--listen", f"127.0.0.1:{PORT}", "--admin-password", PASSWORD],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        run(servers, n)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def run(servers, n):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    for _ in range(300):
        try:
            if request(conn, "GET", "/identity/v3")[0] == 200:
                break
        except OSError:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        time.sleep(0.1)
    auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    st, h, tbody = request(conn, "POST", "/identity/v3/auth/tokens", json.dumps(auth), {"Content-Type": "application/json"})
    assert st == 201, st
    tok = {"X-Auth-Token": h["X-Subject-Token"]}
    js = dict(tok, **{"Content-Type": "application/json"})
    project = json.loads(tbody)["token"]["project"]["id"]
    st, _, body = request(conn, "PUT", f"/compute/v2.1/os-quota-sets/{project}", json.dumps(
        {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}), js)
    assert st == 200, (st, body[:300])
    st, _, body = request(conn, "POST", "/image/v2/images", json.dumps(
        {"name": "tiny", "disk_format": "raw", "container_format": "bare", "visibility": "public"}), js)
    image = json.loads(body)["id"]
    st, _, _ = request(conn, "PUT", f"/image/v2/images/{image}/file", b"\0" * (1 << 20),
                       dict(tok, **{"Content-Type": "application/octet-stream"}))
    assert st == 204, st
    for i in range(servers):
        st, _, body = request(conn, "POST", "/compute/v2.1/servers", json.dumps({"server": {
            "name": f"bench-{i}", "imageRef": image, "flavorRef": "1", "networks": "none"}}),
            dict(js, **{"OpenStack-API-Version": "compute 2.47"}))
        assert st == 202, (st, body[:300])
    for _ in range(600):
        st, _, body = request(conn, "GET", "/compute/v2.1/servers/detail", headers=tok)
        states = [s["status"] for s in json.loads(body)["servers"]]
        if len(states) == servers and all(s == "ACTIVE" for s in states):
            break
        time.sleep(0.5)

    # Log in through the form, as a browser does.
    st, h, body = request(conn, "GET", "/dashboard/auth/login")
    csrf = re.search(rb'name="csrf_token" value="([0-9a-f]+)"', body).group(1).decode()
    cookie = h["Set-Cookie"].split(";")[0]
    form = urllib.parse.urlencode({"csrf_token": csrf, "domain": "Default", "username": "admin", "password": PASSWORD})
    st, h, _ = request(conn, "POST", "/dashboard/auth/login", form,
                       {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    assert st == 303, st
    session = [c for c in h.get_all("Set-Cookie") if c.startswith("stratus_session=")][0].split(";")[0]

    rows = [
        ("API GET /compute/v2.1/servers/detail (reference)", "/compute/v2.1/servers/detail?limit=100",
         dict(tok, **{"OpenStack-API-Version": "compute 2.47"})),
        ("Overview", "/dashboard/project/overview", {"Cookie": session}),
        ("Instances (100 per page)", "/dashboard/project/instances", {"Cookie": session}),
        ("Instances poll fragment", "/dashboard/project/instances/rows", {"Cookie": session}),
        ("Images", "/dashboard/project/images", {"Cookie": session}),
        ("Networks", "/dashboard/project/networks", {"Cookie": session}),
        ("Routers", "/dashboard/project/routers", {"Cookie": session}),
        ("Floating IPs", "/dashboard/project/floating_ips", {"Cookie": session}),
        ("Volumes", "/dashboard/project/volumes", {"Cookie": session}),
        ("Launch form", "/dashboard/project/instances/launch", {"Cookie": session}),
    ]
    print(f"dashboard pages: {servers} servers in the project, {n} requests per row, keep-alive, debug build unless noted")
    print(f"{'page':52} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>8}  load avg")
    for name, path, headers in rows:
        times = []
        size = 0
        for i in range(n + 3):
            t0 = time.perf_counter()
            st, _, body = request(conn, "GET", path, headers=headers)
            dt = (time.perf_counter() - t0) * 1000
            assert st == 200, (path, st, body[:300])
            size = len(body)
            if i >= 3:
                times.append(dt)
        load = open("/proc/loadavg").read().split()[0]
        print(f"{name:52} {statistics.median(times):8.2f} {pct(times, 99):8.2f} {size:8d}  {load}")


if __name__ == "__main__":
    main()
