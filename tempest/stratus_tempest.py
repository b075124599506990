#!/usr/bin/env python3
"""The Python half of scripts/tempest.sh: prepares a running Stratus cloud for Tempest,
writes tempest.conf from what the cloud reports, deletes what a run left behind, and
summarises a run's subunit stream.

    stratus_tempest.py configure --url URL --password PW --config-show FILE --image-dir DIR
                                 --http-image URL --template FILE --out FILE --lock-path DIR
    stratus_tempest.py cleanup --url URL --password PW
    stratus_tempest.py compose (--regex RE | --list FILE | --ci DIR) --out FILE --expect-out FILE
                               [--exclude-out FILE]
    stratus_tempest.py summarize SUBUNIT_FILE --out-dir DIR [--expect FILE] [--title TEXT]
    stratus_tempest.py make-list RUN_DIR --suite SUITE --list FILE
    stratus_tempest.py format-images DIR

`configure` is deliberately discovery-driven: [service_available] comes from the catalog
*and* a real request to each endpoint, the microversion ranges from the version documents,
the network extensions from GET /v2.0/extensions and the lockout / password-history values
from the cloud's effective configuration (`stratus config show`), so tempest.conf turns
features on as Stratus grows without anyone editing it. Only the standard library,
`requests` and `python-subunit`/`testtools` (all in .venv through Tempest's requirements)
are used.
"""

import argparse
import collections
import os
import re
import sys
import time

import requests

# Catalog service type -> Tempest's [service_available] option.
SERVICE_OPTIONS = {
    "image": "glance",
    "compute": "nova",
    "network": "neutron",
    "block-storage": "cinder",
    "volumev3": "cinder",
    "volume": "cinder",
    "object-store": "swift",
    "orchestration": "heat",
}
# The options Tempest (and the Heat plugin) know; each gets a line, true or false.
ALL_SERVICE_OPTIONS = ["cinder", "glance", "heat", "horizon", "neutron", "nova", "swift"]

# A request a user of the service makes first; the service "answers" when it returns 2xx.
# Version documents alone do not count: a service that only discovers its versions serves
# nothing Tempest could test.
PROBES = {
    "identity": "/v3/projects",
    "image": "/v2/images?limit=1",
    "compute": "/servers?limit=1",
    "network": "/v2.0/networks?limit=1",
    "placement": "/",
    "block-storage": "/volumes?limit=1",
    "volumev3": "/volumes?limit=1",
    "volume": "/volumes?limit=1",
    "object-store": "?format=json&limit=1",
    "orchestration": "/stacks?limit=1",
}

TEST_FLAVOR = ("42", "m1.nano", 128)  # smallest that boots the test image (>= 96 MiB)
ALT_FLAVOR = ("84", "m1.micro", 192)  # bigger, for resize
PUBLIC_CIDR = "172.24.4.0/24"


def log(msg):
    print(f"tempest.sh: {msg}", file=sys.stderr, flush=True)


class CloudError(Exception):
    pass


class Cloud:
    """An admin session on the cloud through plain REST calls."""

    def __init__(self, url, password, region="RegionOne"):
        self.url = url.rstrip("/")
        self.http = requests.Session()
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": password}},
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        r = self.http.post(f"{self.url}/identity/v3/auth/tokens", json=body, timeout=60)
        if r.status_code != 201:
            raise CloudError(f"admin login failed: {r.status_code} {r.text[:300]}")
        self.http.headers["X-Auth-Token"] = r.headers["X-Subject-Token"]
        token = r.json()["token"]
        self.project_id = token["project"]["id"]
        self.catalog = {}
        for svc in token.get("catalog", []):
            for ep in svc["endpoints"]:
                if ep["interface"] == "public" and ep.get("region_id", region) == region:
                    self.catalog[svc["type"]] = ep["url"].rstrip("/")

    def endpoint(self, service_type):
        if service_type not in self.catalog:
            raise CloudError(f"no {service_type} endpoint in the catalog")
        return self.catalog[service_type]

    def call(self, method, url, ok=(200, 201, 202, 204), **kw):
        r = self.http.request(method, url, timeout=120, **kw)
        if r.status_code not in ok:
            raise CloudError(f"{method} {url}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content and "json" in r.headers.get("content-type", "") else None

    def api(self, service_type, method, path, **kw):
        return self.call(method, self.endpoint(service_type) + path, **kw)


# ----------------------------------------------------------------------------- configure


def served_services(cloud):
    """{catalog type: (answers?, detail)} for every catalog entry, and horizon."""
    out = {}
    for stype, url in sorted(cloud.catalog.items()):
        probe = PROBES.get(stype)
        if probe is None:
            out[stype] = (False, "no probe known for this service type")
            continue
        try:
            r = cloud.http.get(url + probe, timeout=30)
            out[stype] = (200 <= r.status_code < 300, f"GET {probe} -> {r.status_code}")
        except requests.RequestException as e:
            out[stype] = (False, f"GET {probe} -> {e.__class__.__name__}")
    # Horizon is not in Keystone's catalog; Tempest's dashboard test logs in through the
    # login form, so the dashboard counts as served when that form is there.
    try:
        r = requests.get(f"{cloud.url}/dashboard/auth/login/", timeout=30)
        out["dashboard"] = (r.status_code == 200 and "csrfmiddlewaretoken" in r.text, f"GET /dashboard/auth/login/ -> {r.status_code}")
    except requests.RequestException as e:
        out["dashboard"] = (False, f"GET /dashboard/auth/login/ -> {e.__class__.__name__}")
    return out


def microversions(cloud, stype):
    """(min, max) from the service's version document, or (None, None)."""
    url = cloud.endpoint(stype)
    if stype == "compute":
        doc = cloud.call("GET", url)["version"]
        return doc.get("min_version") or None, doc.get("version") or None
    if stype == "placement":
        doc = cloud.call("GET", url)["versions"][0]
        return doc.get("min_version"), doc.get("max_version")
    # Block storage: the endpoint carries /v3/<project>; the versions are at its root.
    root = re.sub(r"/v3(/.*)?$", "/", url)
    docs = cloud.call("GET", root, ok=(200, 300))
    for v in docs.get("versions", []):
        if str(v.get("id", "")).startswith("v3"):
            return v.get("min_version") or None, v.get("version") or None
    return None, None


def identity_settings(config_show):
    """The [identity] keys of `stratus config show` output."""
    values, section = {}, None
    for line in config_show.splitlines():
        m = re.match(r"^\[(.+)\]$", line.strip())
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^([a-z0-9_]+) = (.+?)\s+# STRATUS_", line)
        if m and section == "identity":
            values[m.group(1)] = m.group(2).strip().strip('"')
    return values


def wait_image(cloud, name, timeout=180):
    deadline = time.time() + timeout
    while True:
        imgs = cloud.api("image", "GET", f"/v2/images?name={name}")["images"]
        if imgs and imgs[0]["status"] == "active":
            return imgs[0]["id"]
        if time.time() > deadline:
            raise CloudError(f"image {name!r} not active after {timeout}s: {imgs}")
        time.sleep(1)


def ensure_alt_image(cloud, image_dir):
    imgs = cloud.api("image", "GET", "/v2/images?name=cirros-alt")["images"]
    if imgs and imgs[0]["status"] == "active":
        return imgs[0]["id"]
    img = cloud.api(
        "image",
        "POST",
        "/v2/images",
        json={
            "name": "cirros-alt",
            "disk_format": "qcow2",
            "container_format": "bare",
            "visibility": "public",
            "min_ram": 96,
            "os_distro": "cirros",
            "description": "Stratus test guest, variant b (tools/build-test-image.sh): login cirros/gocubsgo",
        },
    )
    with open(f"{image_dir}/b/disk.qcow2", "rb") as f:
        cloud.api("image", "PUT", f"/v2/images/{img['id']}/file", data=f, headers={"Content-Type": "application/octet-stream"})
    return wait_image(cloud, "cirros-alt")


def ensure_flavor(cloud, fid, name, ram):
    r = cloud.http.get(cloud.endpoint("compute") + f"/flavors/{fid}", timeout=60)
    if r.status_code == 200:
        have = r.json()["flavor"]["ram"]
        if have < 96:
            raise CloudError(f"flavor {fid} has {have} MiB of RAM: the test image needs at least 96")
        return fid
    cloud.api("compute", "POST", "/flavors", json={"flavor": {"id": fid, "name": name, "ram": ram, "vcpus": 1, "disk": 1}})
    return fid


def ensure_networks(cloud, extensions):
    """devstack's `public` (external, flat on physical network `public`) and `shared`."""
    nets = cloud.api("network", "GET", "/v2.0/networks?name=public")["networks"]
    if nets:
        public = nets[0]["id"]
    else:
        net = {"name": "public", "router:external": True, "provider:network_type": "flat", "provider:physical_network": "public"}
        if "auto-allocated-topology" in extensions:
            net["is_default"] = True
        public = cloud.api("network", "POST", "/v2.0/networks", json={"network": net})["network"]["id"]
        cloud.api(
            "network",
            "POST",
            "/v2.0/subnets",
            json={
                "subnet": {
                    "name": "public-subnet",
                    "network_id": public,
                    "ip_version": 4,
                    "cidr": PUBLIC_CIDR,
                    "gateway_ip": "172.24.4.1",
                    "allocation_pools": [{"start": "172.24.4.2", "end": "172.24.4.254"}],
                    "enable_dhcp": False,
                }
            },
        )
    # devstack adds a shared network "to make sure its presence does not confuse the tests".
    if not cloud.api("network", "GET", "/v2.0/networks?name=shared")["networks"]:
        shared = cloud.api("network", "POST", "/v2.0/networks", json={"network": {"name": "shared", "shared": True}})
        cloud.api(
            "network",
            "POST",
            "/v2.0/subnets",
            json={
                "subnet": {
                    "name": "shared-subnet",
                    "description": "shared-subnet",
                    "network_id": shared["network"]["id"],
                    "ip_version": 4,
                    "cidr": "192.168.233.0/24",
                }
            },
        )
    return public


def render(template, values):
    """Fills @NAME@ placeholders; a line whose value is None is left out."""
    out = []
    for line in template.splitlines():
        names = re.findall(r"@([A-Z0-9_]+)@", line)
        missing = [n for n in names if n not in values]
        if missing:
            raise CloudError(f"template placeholder(s) without a value: {missing}")
        if any(values[n] is None for n in names):
            continue
        for n in names:
            line = line.replace(f"@{n}@", str(values[n]))
        out.append(line)
    return "\n".join(out) + "\n"


def configure(a):
    cloud = Cloud(a.url, a.password)
    with open(a.config_show) as f:
        ident = identity_settings(f.read())

    services = served_services(cloud)
    for stype, (ok, why) in services.items():
        log(f"service {stype:14} {'served' if ok else 'NOT served'} ({why})")
    served = {t for t, (ok, _) in services.items() if ok}
    available = {opt: False for opt in ALL_SERVICE_OPTIONS}
    for stype in served:
        if stype in SERVICE_OPTIONS:
            available[SERVICE_OPTIONS[stype]] = True
    available["horizon"] = "dashboard" in served
    for must in ("identity", "image", "compute", "network"):
        if must not in served:
            raise CloudError(f"the {must} service does not answer: {services.get(must)}")

    extensions = sorted(e["alias"] for e in cloud.api("network", "GET", "/v2.0/extensions")["extensions"])
    cmin, cmax = microversions(cloud, "compute")
    pmin, pmax = microversions(cloud, "placement") if "placement" in served else (None, None)
    volume_type = next((t for t in ("block-storage", "volumev3", "volume") if t in served), None)
    vmin, vmax = microversions(cloud, volume_type) if volume_type else (None, None)

    image_ref = wait_image(cloud, "cirros")
    image_ref_alt = ensure_alt_image(cloud, a.image_dir)
    flavor = ensure_flavor(cloud, *TEST_FLAVOR)
    flavor_alt = ensure_flavor(cloud, *ALT_FLAVOR)
    public = ensure_networks(cloud, extensions)

    lockout = int(ident.get("lockout_failure_attempts", "0"))
    history = ident.get("unique_last_password_count")
    values = {
        "LOCK_PATH": a.lock_path,
        "ADMIN_PASSWORD": a.password,
        "IDENTITY_URI_V3": cloud.endpoint("identity") + "/v3",
        "REGION": "RegionOne",
        "LOCKOUT_FAILURE_ATTEMPTS": lockout,
        "LOCKOUT_DURATION": ident.get("lockout_duration_secs"),
        "UNIQUE_LAST_PASSWORD_COUNT": history,
        # Keystone's security compliance is "on" when accounts lock after failed logins.
        "SECURITY_COMPLIANCE": "true" if lockout > 0 else "false",
        "HTTP_IMAGE": a.http_image,
        "IMAGES_MANIFEST": a.images_manifest,
        "IMAGE_REF": image_ref,
        "IMAGE_REF_ALT": image_ref_alt,
        "FLAVOR_REF": flavor,
        "FLAVOR_REF_ALT": flavor_alt,
        "COMPUTE_MIN_MICROVERSION": cmin,
        "COMPUTE_MAX_MICROVERSION": cmax,
        "COMPUTE_EXTRA": "",
        "PUBLIC_NETWORK_ID": public,
        "NETWORK_EXTENSIONS": ",".join(extensions),
        "PLACEMENT_MIN_MICROVERSION": pmin,
        "PLACEMENT_MAX_MICROVERSION": pmax,
        "VOLUME_CATALOG_TYPE": volume_type,
        "VOLUME_MIN_MICROVERSION": vmin,
        "VOLUME_MAX_MICROVERSION": vmax,
        "SERVICE_AVAILABLE": "\n".join(f"{k} = {'true' if v else 'false'}" for k, v in sorted(available.items())),
    }
    with open(a.template) as f:
        text = render(f.read(), values)
    with open(a.out, "w") as f:
        f.write(text)
    log(
        f"tempest.conf written: compute {cmin}..{cmax}, placement {pmin}..{pmax}, "
        f"{len(extensions)} network extensions, services {', '.join(k for k, v in sorted(available.items()) if v)}"
    )


# ----------------------------------------------------------------------------- cleanup


def cleanup(a):
    """Deletes every server (all projects) and waits until they are gone."""
    cloud = Cloud(a.url, a.password)
    servers = cloud.api("compute", "GET", "/servers?all_tenants=1")["servers"]
    for s in servers:
        cloud.http.delete(cloud.endpoint("compute") + f"/servers/{s['id']}", timeout=60)
    deadline = time.time() + a.timeout
    while servers and time.time() < deadline:
        time.sleep(2)
        servers = cloud.api("compute", "GET", "/servers?all_tenants=1")["servers"]
    if servers:
        log(f"{len(servers)} server(s) still there after {a.timeout}s: {[s['id'] for s in servers]}")
        return 1
    return 0


# ----------------------------------------------------------------------------- lists

# A line naming one test by its id: dotted, ending in the test method (`….Class.test_x`).
PLAIN_ID = re.compile(r"^tempest\.[A-Za-z0-9_.]+\.test_\w*$")
SUITES = ("identity", "image", "network", "compute", "volume", "object_storage", "orchestration")


def read_list(path):
    """The entries of a list file: one a line, `#` starts a comment."""
    with open(path) as f:
        return [line.split("#", 1)[0].strip() for line in f if line.split("#", 1)[0].strip()]


def ci_entries(ci_dir):
    """tempest/ci/suites: `<suite> full` runs tempest.api.<suite>, `<suite> list` its list."""
    entries = []
    for line in read_list(os.path.join(ci_dir, "suites")):
        parts = line.split()
        if len(parts) != 2 or parts[0] not in SUITES or parts[1] not in ("full", "list"):
            raise CloudError(f"{ci_dir}/suites: bad line {line!r} (want '<suite> full|list', suite one of {SUITES})")
        suite, mode = parts
        if mode == "full":
            entries.append(rf"^tempest\.api\.{suite}\.")
        else:
            listed = read_list(os.path.join(ci_dir, f"{suite}.txt"))
            if not listed:
                raise CloudError(f"{ci_dir}/{suite}.txt is empty")
            entries += listed
    return entries


def ci_gaps(ci_dir):
    """tempest/ci/gaps.txt: tests of a `full` suite left out of CI because Stratus lacks a
    feature OpenStack has (each line a test id and, after `#`, the gap and its issue).
    Every entry is listed in docs/conformance.md; an entry is removed when the gap closes."""
    path = os.path.join(ci_dir, "gaps.txt")
    if not os.path.exists(path):
        return []
    gaps = []
    with open(path) as f:
        for line in f:
            test, _, why = line.partition("#")
            test = test.strip()
            if not test:
                continue
            if not PLAIN_ID.match(test) or not why.strip():
                raise CloudError(f"{path}: want '<test id>  # <why>' (got {line.strip()!r})")
            gaps.append(test)
    return gaps


def compose(a):
    """Writes the include list for `tempest run` and the ids that must pass.

    A test id is matched exactly (`^id\\[`: every Tempest test carries `[id-…]` attributes),
    so `test_foo` does not also select `test_foo_bar`; other lines are regexes as they are.
    With --ci, the known gaps (tempest/ci/gaps.txt) go to --exclude-out.
    """
    if a.exclude_out is not None:
        gaps = ci_gaps(a.ci) if a.ci is not None else []
        with open(a.exclude_out, "w") as f:
            f.write("".join("^" + re.escape(g) + "\\[\n" for g in gaps))
    if a.regex is not None:
        re.compile(a.regex)
        with open(a.out, "w") as f:
            f.write(a.regex + "\n")
        open(a.expect_out, "w").close()
        return
    if a.list is not None:
        entries = read_list(a.list)
    else:
        entries = ci_entries(a.ci)
    if not entries:
        raise CloudError("nothing selected")
    regexes, expect = [], []
    for e in entries:
        if PLAIN_ID.match(e):
            regexes.append("^" + re.escape(e) + r"\[")
            expect.append(e)
        else:
            re.compile(e)
            regexes.append(e)
    with open(a.out, "w") as f:
        f.write("".join(f"{r}\n" for r in regexes))
    with open(a.expect_out, "w") as f:
        f.write("".join(f"{e}\n" for e in expect))


def load_subunit(path):
    import subunit
    import testtools

    tests = []
    with open(path, "rb") as f:
        case = subunit.ByteStreamToStreamResult(f, non_subunit_name="stdout")
        result = testtools.StreamToDict(tests.append)
        result.startTestRun()
        case.run(result)
        result.stopTestRun()
    # `exists` events only enumerate the selected tests before they run.
    return [t for t in tests if t["status"] != "exists"]


def split_id(full):
    """`tempest.api.x.C.test_y[id-…,smoke]` -> (`tempest.api.x.C.test_y`, {"id-…", "smoke"})."""
    m = re.match(r"^(.*?)(?:\[(.*)\])?$", full)
    return m.group(1), set((m.group(2) or "").split(","))


def trace(a):
    """Prints one line per finished test while a subunit stream comes in on stdin."""
    import subunit
    import testtools

    counts = collections.Counter()

    def line(t):
        if t["status"] == "exists":
            return
        tid, _ = split_id(t["id"])
        status = {"success": "ok", "skip": "SKIP", "fail": "FAIL", "xfail": "ok (expected failure)"}.get(t["status"], t["status"].upper())
        counts[status] += 1
        extra = ""
        if t["status"] == "skip" and "reason" in t["details"]:
            extra = ": " + t["details"]["reason"].as_text().strip()[:120]
        start, end = t["timestamps"]
        took = f" [{(end - start).total_seconds():.1f}s]" if start and end else ""
        print(f"{tid}{took} ... {status}{extra}", flush=True)

    try:
        case = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
        result = testtools.StreamToDict(line)
        result.startTestRun()
        case.run(result)
        result.stopTestRun()
    except Exception as e:  # the stream is saved whole upstream: keep draining, never stall Tempest
        log(f"progress display stopped: {e!r}")
        while sys.stdin.buffer.read(1 << 16):
            pass


BOOT = re.compile(r"Request \((\w+):(\w+)\): 202 POST \S+/servers(?:\s|$)")


# Suites whose CI list leaves out the tests that boot guests (except `smoke` ones): booting
# TCG guests one after another would not fit CI's time budget.
GUEST_FILTERED = ("compute", "network")


def make_list(a):
    """Adds to a CI list the tests of SUITE that passed in a run (for compute and network:
    those that boot no guest, plus the passed `smoke` tests). Never removes an entry: the
    lists only grow."""
    tests = load_subunit(os.path.join(a.run_dir, "subunit.bin"))
    boot_classes, boot_tests = set(), set()
    with open(os.path.join(a.run_dir, "tempest.log"), errors="replace") as f:
        for line in f:
            m = BOOT.search(line)
            if m:
                cls, meth = m.groups()
                # Made in a test: that test boots. Made in setUpClass/setUp/...: every test
                # of the class depends on a guest.
                (boot_tests.add((cls, meth)) if meth.startswith("test") else boot_classes.add(cls))
    prefix = f"tempest.api.{a.suite}."
    new, booting = set(), 0
    for t in tests:
        tid, attrs = split_id(t["id"])
        if t["status"] != "success" or not tid.startswith(prefix):
            continue
        cls, meth = tid.rsplit(".", 2)[-2:]
        boots = cls in boot_classes or (cls, meth) in boot_tests
        booting += boots
        if a.suite not in GUEST_FILTERED or not boots or "smoke" in attrs:
            new.add(tid)
    old = read_list(a.list) if os.path.exists(a.list) else []
    ran = {split_id(t["id"])[0]: t["status"] for t in tests}
    for e in old:
        if e in ran and ran[e] != "success":
            log(f"warning: {e} is listed but {ran[e]} in this run (a regression: fix it, do not drop it)")
    merged = sorted(set(old) | new)
    with open(a.list, "w") as f:
        which = (
            "the passing tests that boot no guest, plus\n# the passing smoke tests"
            if a.suite in GUEST_FILTERED
            else "the passing tests (until the suite\n# reaches zero failures and runs in full)"
        )
        f.write(
            f"# tempest.api.{a.suite} tests that CI runs (tempest/ci/suites): {which}.\n"
            "# This list only grows; add the tests a fix makes pass with\n"
            "# `tempest/stratus_tempest.py make-list` (docs/conformance.md). Every listed test must pass.\n"
        )
        f.write("".join(f"{e}\n" for e in merged))
    log(f"{a.list}: {len(merged)} tests ({len(merged) - len(old)} added; {booting} passed tests boot a guest)")


# ----------------------------------------------------------------------------- format images

def format_images(a):
    """Writes the disk images of Tempest's image-format tests and their manifest.yaml
    (`[image] images_manifest_file`; devstack makes the same set with os-test-images):
    usable images of each format, and images a careful service must refuse because they
    point outside themselves (backing files, data files, external extents) or pretend to
    be another format. Made with qemu-img, sfdisk and genisoimage."""
    import struct
    import subprocess

    os.makedirs(a.dir, exist_ok=True)

    def run(*argv):
        subprocess.run(argv, cwd=a.dir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def path(name):
        return os.path.join(a.dir, name)

    def rewrite(name, start, length, old, new):
        with open(path(name), "r+b") as f:
            f.seek(start)
            block = f.read(length)
            changed = block.replace(old, new)
            if changed == block:
                raise CloudError(f"{name}: {old!r} not found where expected")
            f.seek(start)
            f.write(changed.ljust(len(block), b"\0")[: len(block)])

    def footer(name):
        # A streamOptimized-style footer: the header says "grain directory at the end"
        # (gdOffset = all ones), and the file ends with a footer marker, a copy of the
        # original header (the footer) and an end-of-stream marker.
        with open(path(name), "r+b") as f:
            header = f.read(512)
            f.seek(56)
            f.write(struct.pack("<Q", 0xFFFFFFFFFFFFFFFF))
            f.seek(0, 2)
            marker = bytearray(512)
            marker[12:16] = struct.pack("<I", 3)
            f.write(bytes(marker) + header + bytes(512))

    images = []

    def image(name, fmt, usable, *steps, description=""):
        fn = f"{name}.{fmt}"
        if os.path.exists(path(fn)):
            os.remove(path(fn))
        for step in steps:
            step(fn) if callable(step) else run(*[x.format(fn=fn, name=name) for x in step])
        images.append({"name": name, "format": fmt, "filename": fn, "usable": usable, "insecure": "leak" in description, "description": description})

    image("standard-qcow2v3", "qcow2", True, ["qemu-img", "create", "-f", "qcow2", "{fn}", "10M"], description="plain qcow2")
    image("qcow-with-backing", "qcow2", False, ["qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "/etc/hosts", "{fn}", "10M"], description="backing file on the host: leak")
    image(
        "qcow-with-datafile", "qcow2", False,
        ["qemu-img", "create", "-f", "qcow2", "-o", "data_file=qcow-data-file,data_file_raw=on", "{fn}", "10M"],
        ["rm", "-f", "qcow-data-file"], description="external data file: leak",
    )
    image("raw-blank", "raw", True, ["qemu-img", "create", "-f", "raw", "{fn}", "1M"], description="empty raw")
    image(
        "gpt-blank", "gpt", True, ["qemu-img", "create", "-f", "raw", "{fn}", "1M"],
        lambda fn: subprocess.run(["sfdisk", "-q", path(fn)], input=b"label: gpt\n", check=True, stdout=subprocess.DEVNULL),
        description="whole disk with a GPT label",
    )
    if b"qed" in subprocess.run(["qemu-img", "--help"], capture_output=True).stdout:
        image("standard", "qed", False, ["qemu-img", "create", "-f", "qed", "{fn}", "10M"], description="QED, which no service supports")
    image("standard-iso9660", "iso", True, ["genisoimage", "-quiet", "-V", "{name}", "-o", "{fn}", "/etc/hosts"], description="ISO9660")
    image("standard-udf", "iso", True, ["genisoimage", "-quiet", "-udf", "-V", "{name}", "-o", "{fn}", "/etc/hosts"], description="UDF")
    image(
        "iso-with-qcow2-in-system", "iso", False,  # qemu-img takes it for qcow2
        ["genisoimage", "-quiet", "-V", "{name}", "-o", "{fn}", "/etc/hosts"],
        ["qemu-img", "create", "-f", "qcow2", "tmp.qcow", "10M"],
        ["dd", "if=tmp.qcow", "of={fn}", "bs=32k", "count=1", "conv=notrunc", "status=none"],
        ["rm", "-f", "tmp.qcow"], description="ISO with a qcow2 header in its system area: leak",
    )
    image("vmdk-monolithicSparse", "vmdk", True, ["qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicSparse", "{fn}", "10M"], description="sparse VMDK")
    image("vmdk-streamOptimized", "vmdk", True, ["qemu-img", "create", "-f", "vmdk", "-o", "subformat=streamOptimized", "{fn}", "10M"], description="streamOptimized VMDK")
    image(
        "vmdk-monolithicFlat", "vmdk", False,
        ["qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", "{fn}", "10M"],
        ["rm", "-f", "{name}-flat.vmdk"], description="descriptor of an external extent",
    )
    image(
        "vmdk-monolithicFlat-leak", "vmdk", False,
        ["qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", "{fn}", "10M"],
        lambda fn: rewrite(fn, 0, os.path.getsize(path(fn)), b"vmdk-monolithicFlat-leak-flat.vmdk", b"/etc/hosts"),
        ["rm", "-f", "{name}-flat.vmdk"], description="descriptor of a host file as extent: leak",
    )
    image(
        "vmdk-sparse-with-url-backing", "vmdk", False,
        ["qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicSparse", "{fn}", "10M"],
        lambda fn: rewrite(fn, 512, 20 * 512, b'"vmdk-sparse-with-url-backing.vmdk"', b'"/etc/hosts"'),
        description="sparse VMDK whose extent is a host file: leak",
    )
    image(
        "vmdk-sparse-with-footer", "vmdk", True,
        ["qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicSparse", "{fn}", "10M"],
        footer, description="sparse VMDK with a footer",
    )
    import yaml

    with open(path("manifest.yaml"), "w") as f:
        yaml.safe_dump({"images": images}, f)
    log(f"{len(images)} format test images in {a.dir}")


# ----------------------------------------------------------------------------- summarize

UUID = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I)
HEXID = re.compile(r"\b[0-9a-f]{16,64}\b", re.I)
RAND_NAME = re.compile(r"\btempest-[\w.-]*?-?\d{6,}\b|\b[\w-]*-\d{8,}\b")
REQUEST = re.compile(r"Request \([^)]*\): (\d{3}) (\w+) (\S+)")
HTTP_STATUS = {
    "BadRequest": 400, "Unauthorized": 401, "Forbidden": 403, "NotFound": 404, "Conflict": 409,
    "Gone": 410, "RequestEntityTooLarge": 413, "OverLimit": 413, "InvalidContentType": 415,
    "UnprocessableEntity": 422, "ServerFault": 500, "NotImplemented": 501,
}
HTTP_EXC = re.compile(r"^tempest\.lib\.exceptions\.(\w+): (.*)")


def normalise(text):
    text = re.sub(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", "{time}", text)
    text = UUID.sub("{id}", text)
    text = HEXID.sub("{id}", text)
    text = RAND_NAME.sub("{name}", text)
    text = re.sub(r"\b\d+\.\d+s\b", "", text)
    text = re.sub(r"\bline \d+ column \d+", "line N column N", text)
    return text


def url_pattern(url):
    path = re.sub(r"^https?://[^/]+", "", url)
    path, _, query = path.partition("?")
    path = normalise(path)
    if query:
        keys = sorted({kv.split("=", 1)[0] for kv in query.split("&")})
        path += "?" + "&".join(keys)
    return path


def exception_lines(traceback):
    """The exception part of a Python traceback (what follows the last stack frame)."""
    lines = traceback.rstrip().splitlines()
    last = max((i for i, l in enumerate(lines) if l.startswith('  File "')), default=-1)
    i = last + 1
    while i < len(lines) and lines[i].startswith("    "):
        i += 1
    return [l for l in lines[i:] if l.strip()] or lines[-1:]


def last_frame(traceback):
    """`file.py:LINE` of the innermost frame in Tempest's own test code."""
    frames = re.findall(r'File "[^"]*/tempest/([^"]+)", line (\d+)', traceback)
    tests = [f for f in frames if f[0].startswith(("api/", "scenario/", "common/"))]
    f = (tests or frames or [None])[-1]
    return f"{f[0]}:{f[1]}" if f else "?"


def cause_of(test):
    """A short text naming why the test failed; tests with the same text share a cause."""
    details = test["details"]
    tb = details["traceback"].as_text() if "traceback" in details else ""
    logtext = "".join(c.as_text() for k, c in details.items() if k.startswith("pythonlogging"))
    exc = exception_lines(tb) if tb else []
    if not exc:
        why = "did not finish (run interrupted or worker died)" if test["status"] == "inprogress" else f"status {test['status']}"
        return f"no traceback: {why}", exc
    first = exc[0]
    m = HTTP_EXC.match(first)
    if m and m.group(1) not in HTTP_STATUS and m.group(1) not in ("UnexpectedResponseCode", "InvalidHTTPResponseBody"):
        m = None  # TimeoutException and friends: no failing request to name
    joined = "\n".join(exc)
    schema = re.search(r"HTTP response body is invalid \((.*)", joined)
    if m and schema:
        # Tempest checks every response against its schema: name the rule that failed.
        rule = re.search(r"Failed validating '(\w+)' in (schema\S*):", joined)
        where = f" ({rule.group(1)} at {rule.group(2)})" if rule else ""
        # The checked response: the last request (cleanups, which run after the failure, delete).
        reqs = [r for r in REQUEST.findall(logtext) if r[1] != "DELETE"] or REQUEST.findall(logtext)
        req = f"{reqs[-1][1]} {url_pattern(reqs[-1][2])}: " if reqs else ""
        return f"response schema: {req}{normalise(schema.group(1))[:120]}{where}", exc
    if m:
        msg = re.search(r"""['"]message['"]: ['"](.*?)['"](, ['"]|\})""", " ".join(exc))
        msg = f": {normalise(msg.group(1))[:120]}" if msg else ""
        # The failing request: the last one with the exception's status (cleanups, which
        # run after the failure and may meet 404s, delete: prefer other methods).
        code = HTTP_STATUS.get(m.group(1))
        reqs = [r for r in REQUEST.findall(logtext) if (int(r[0]) == code if code else int(r[0]) >= 400)]
        reqs = [r for r in reqs if r[1] != "DELETE"] or reqs
        if reqs:
            status, method, url = reqs[-1]
            return f"HTTP {status} {method} {url_pattern(url)} ({m.group(1)}){msg}", exc
        return f"{m.group(1)}{msg} (no request logged; at {last_frame(tb)})", exc
    text = normalise(first)
    details = next((l for l in exc[1:] if l.startswith("Details: ")), None)
    if details and len(text) < 120:
        # "Request timed out" says little; the details say what was awaited.
        text += " " + re.sub(r"^\(\w+:\w+\) ", "", normalise(details[9:]))
        text = re.sub(r"Request ID of server operation.*?(Current|$)", r"\1", text)
    text = re.sub(r"\b0x[0-9a-f]+\b", "0x…", text)
    # assertRaises that saw no error: the call succeeded where the API must refuse.
    text = re.sub(
        r"<bound method (\w+)\.(\w+) of <[^>]*>> returned .*",
        r"\1.\2 succeeded where an error was expected",
        text,
    )
    return f"{text[:220]} (at {last_frame(tb)})", exc


def summarize(a):
    tests = load_subunit(a.subunit)
    expect = read_list(a.expect) if a.expect else []
    expected = set(expect)

    passed, failed, skipped = [], [], []
    causes = collections.defaultdict(list)
    skips = collections.defaultdict(list)
    details = []
    seen = {}
    for t in tests:
        tid = split_id(t["id"])[0]
        seen[tid] = t["status"]
        if t["status"] in ("success", "xfail"):
            passed.append(tid)
        elif t["status"] == "skip" and tid in expected:
            # A listed test must pass: skipped means a feature was switched off or broke.
            failed.append(tid)
            reason = t["details"]["reason"].as_text().strip() if "reason" in t["details"] else "no reason given"
            cause = f"listed test skipped: {normalise(reason)[:160]}"
            causes[cause].append(tid)
            details.append((tid, cause, [reason]))
        elif t["status"] == "skip":
            skipped.append(tid)
            reason = t["details"]["reason"].as_text().strip() if "reason" in t["details"] else "no reason given"
            skips[normalise(reason)[:200]].append(tid)
        elif t["status"] in ("fail", "uxsuccess", "inprogress", "unknown"):
            failed.append(tid)
            cause, exc = cause_of(t)
            causes[cause].append(tid)
            details.append((tid, cause, exc))

    for e in expect:
        if e not in seen:
            failed.append(e)
            cause = "listed test did not run (renamed or removed in this Tempest?)"
            causes[cause].append(e)
            details.append((e, cause, []))

    os.makedirs(a.out_dir, exist_ok=True)
    closing = f"{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped"
    with open(f"{a.out_dir}/summary.txt", "w") as out:
        if a.title:
            out.write(a.title + "\n\n")
        out.write(closing + "\n")
        if causes:
            out.write(f"\nFailures by cause ({len(causes)} causes):\n")
            for cause, ids in sorted(causes.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                out.write(f"\n[{len(ids)}] {cause}\n")
                for tid in sorted(ids):
                    out.write(f"    {tid}\n")
        if skips:
            out.write(f"\nSkips by reason ({len(skips)} reasons):\n")
            for reason, ids in sorted(skips.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                out.write(f"\n[{len(ids)}] {reason}\n")
                for tid in sorted(ids):
                    out.write(f"    {tid}\n")
    with open(f"{a.out_dir}/failures.txt", "w") as out:
        for tid, cause, exc in sorted(details):
            out.write(f"== {tid}\n   cause: {cause}\n")
            for line in exc[:20]:
                out.write(f"   | {line[:400]}\n")
            out.write("\n")
    with open(f"{a.out_dir}/passed.txt", "w") as out:
        out.write("".join(f"{t}\n" for t in sorted(passed)))
    # The console gets the grouped causes and, last, the closing line.
    if causes:
        print(f"\nFailures by cause ({len(failed)} failed tests, {len(causes)} causes; details in {a.out_dir}/summary.txt):")
        for cause, ids in sorted(causes.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            print(f"  [{len(ids):3}] {cause}")
    print(closing)
    return 1 if failed or not tests else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("configure")
    for opt in ("--url", "--password", "--config-show", "--image-dir", "--http-image", "--template", "--out", "--lock-path", "--images-manifest"):
        c.add_argument(opt, required=True)
    k = sub.add_parser("cleanup")
    k.add_argument("--url", required=True)
    k.add_argument("--password", required=True)
    k.add_argument("--timeout", type=int, default=120)
    o = sub.add_parser("compose")
    sel = o.add_mutually_exclusive_group(required=True)
    sel.add_argument("--regex")
    sel.add_argument("--list")
    sel.add_argument("--ci")
    o.add_argument("--out", required=True)
    o.add_argument("--expect-out", required=True)
    o.add_argument("--exclude-out")
    s = sub.add_parser("summarize")
    s.add_argument("subunit")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--expect")
    s.add_argument("--title", default="")
    sub.add_parser("trace")
    fi = sub.add_parser("format-images")
    fi.add_argument("dir")
    m = sub.add_parser("make-list")
    m.add_argument("run_dir")
    m.add_argument("--suite", required=True, choices=SUITES)
    m.add_argument("--list", required=True)
    a = p.parse_args()
    try:
        commands = {"configure": configure, "cleanup": cleanup, "compose": compose, "summarize": summarize, "make-list": make_list, "trace": trace, "format-images": format_images}
        return commands[a.cmd.replace("_", "-")](a) or 0
    except CloudError as e:
        log(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
