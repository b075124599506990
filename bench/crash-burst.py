#!/usr/bin/env python3
"""Burst-and-kill: N concurrent server boots (fake driver), kill -9 of `stratus up` a
moment later, restart on the same data directory, then wait until every server is in a
stable state and report how they ended (ACTIVE / ERROR with the fault message).

Stdlib only; called by bench/crash-burst.sh, which owns the process and the data dir.
Exit status 1 when a server that had not reached its host ends ERROR or never settles."""
import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

P = argparse.ArgumentParser()
P.add_argument("--bin", required=True)
P.add_argument("--data-dir", required=True)
P.add_argument("--port", type=int, required=True)
P.add_argument("--servers", type=int, default=40)
P.add_argument("--kill-after-ms", type=int, default=150)
A = P.parse_args()
URL = f"http://127.0.0.1:{A.port}"
PW = "burst-admin-pw"
# The fake host is given room for every boot of the burst: by default it reports this
# machine's CPUs (2 here, x4 allocation ratio = 8 m1.nano), and a boot that does not fit
# rightly ends "No valid host", which is not what this benchmark is about.
ENV = dict(os.environ, STRATUS_LOG_LEVEL="warn", STRATUS_COMPUTE_VIRT_DRIVER="fake",
           STRATUS_NETWORK_AGENT_ENABLED="false", STRATUS_COMPUTE_FAKE_VCPUS="256")


def start(log):
    return subprocess.Popen([A.bin, "up", "--data-dir", A.data_dir, "--listen", f"127.0.0.1:{A.port}",
                             "--admin-password", PW], env=ENV, stdout=log, stderr=subprocess.STDOUT)


def call(method, path, token=None, body=None):
    req = urllib.request.Request(URL + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, (json.loads(r.read() or b"null"))
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


def wait_up(proc):
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"stratus up exited with {proc.returncode}")
        try:
            if call("GET", "/identity/v3")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("stratus up did not answer")


def token():
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": PW}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    s, h, _ = call("POST", "/identity/v3/auth/tokens", body=body)
    assert s == 201, s
    return h["X-Subject-Token"]


def main():
    log = open(os.path.join(os.path.dirname(A.data_dir), "server.log"), "ab")
    proc = start(log)
    wait_up(proc)
    t = token()
    # The fake compute agent registers (inventory in placement) a moment after the APIs
    # answer, and the test image is uploaded at start-up: boot only once both are there.
    image = None
    for _ in range(1200):
        s, _, rps = call("GET", "/placement/resource_providers", t)
        _, _, images = call("GET", "/image/v2/images?status=active", t)
        if s == 200 and rps["resource_providers"] and images["images"]:
            image = images["images"][0]["id"]
            break
        time.sleep(0.1)
    if image is None:
        sys.exit("no compute host or no active image after 120 s")
    _, _, flavors = call("GET", "/compute/v2.1/flavors/detail", t)
    flavor = min(flavors["flavors"], key=lambda f: (f["ram"], f["disk"]))["id"]
    accepted, lock = [], threading.Lock()

    def boot(n):
        try:
            s, _, b = call("POST", "/compute/v2.1/servers", t, {"server": {
                "name": f"burst{n}", "flavorRef": flavor, "imageRef": image, "networks": "none"}})
        except OSError:
            return  # the process died under this request: never acknowledged
        if s == 202:
            with lock:
                accepted.append(b["server"]["id"])

    threads = [threading.Thread(target=boot, args=(n,)) for n in range(A.servers)]
    for th in threads:
        th.start()
    time.sleep(A.kill_after_ms / 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for th in threads:
        th.join()
    proc = start(log)
    try:
        wait_up(proc)
        t = token()
        deadline = time.time() + 180
        while True:
            _, _, b = call("GET", "/compute/v2.1/servers/detail?all_tenants=1", t)
            servers = {s["id"]: s for s in b["servers"]}
            settled = all(s["status"] in ("ACTIVE", "ERROR", "SHUTOFF") and not s.get("OS-EXT-STS:task_state")
                          for s in servers.values())
            if settled or time.time() > deadline:
                break
            time.sleep(0.5)
        ends = collections.Counter()
        faults = collections.Counter()
        for sid in accepted:
            s = servers.get(sid)
            if s is None:
                ends["missing (acknowledged, then lost)"] += 1
                continue
            ends[s["status"] + ("" if not s.get("OS-EXT-STS:task_state") else f"/{s['OS-EXT-STS:task_state']}")] += 1
            if s["status"] == "ERROR":
                faults[s.get("fault", {}).get("message", "?")] += 1
        print(f"burst of {A.servers} boots, kill -9 after {A.kill_after_ms} ms: {len(accepted)} acknowledged")
        for k, v in sorted(ends.items()):
            print(f"  {k:<40} {v}")
        for k, v in faults.most_common():
            print(f"  fault: {k!r} x{v}")
        bad = sum(v for k, v in ends.items() if k != "ACTIVE")
        return 1 if bad else 0
    finally:
        proc.terminate()
        proc.wait()


sys.exit(main())
