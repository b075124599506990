#!/usr/bin/env python3
"""Response-schema check and fuzzer for a running Stratus cloud, driven by OpenStack's
OpenAPI descriptions (../shared/openapi/).

For every operation of a service's spec it sends real requests to the cloud: one well-formed
request (path parameters filled with resources it made first) and a set of malformed ones
(path parameters that are empty, blank, full of markup or control characters, or 100 KB long;
query values of the wrong kind; bodies that are not JSON, not UTF-8, of the wrong JSON kind,
and each documented body field given the wrong type, an overlong string or a control
character). It asserts:

- no 5xx, no dropped connection and no answer slower than the timeout (a hang);
- every 4xx carries the service's fault body (Glance's webob JSON for the image service);
- every 2xx JSON body validates against the spec's response schema for that path, method
  and status (required fields present, types right, no undocumented field where the schema
  closes the object), except the cases listed in KNOWN_SPEC_ERRORS, each of which is a
  documented disagreement between the generated spec and the real service
  (docs/conformance.md).

Run by scripts/fuzz.sh, which starts the cloud; prints one line per finding and a summary,
and exits 1 when there is a finding.

`--check-recorded FILE` checks instead the answers a cloud recorded during a whole-cloud run
(`[record] path`, which scripts/tempest.sh sets) against the specs, offline: see
tools/apicheck_recorded.py.
"""

import argparse
import json
import sys
import time
import urllib.parse
import uuid

import requests
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

METHODS = ("get", "put", "post", "patch", "delete", "head")

# Path-parameter values a user could send by mistake or on purpose (already percent-encoded
# where needed, as a client puts them on the wire).
BAD_PATH_VALUES = [
    "%20",
    "%3Cscript%3E",
    "%00",
    "%01x",
    "%2E%2E",
    "%FF%FE",
    "a" * 300,
    "a" * 100_000,
    "00000000-0000-0000-0000-000000000000",
]

BAD_QUERY_VALUES = ["-1", "abc", "%00", "%ZZ", "a" * 5000, "<>", "1e999", "[]"]

# Generated-spec errors, by (method, path-template prefix): the real service (Glance)
# answers differently and Stratus follows the service. Each is listed in docs/conformance.md.
KNOWN_SPEC_ERRORS = [
    # SchemasImageResponse and its siblings say `type: string` ("Schema data as string");
    # Glance answers the JSON Schema document itself, a JSON object, and its clients
    # (glanceclient, openstacksdk) read it as one.
    ("get", "/v2/schemas/", "the schema documents are JSON objects, not strings"),
]

# Request lines the HTTP layer refuses before any service sees them: the `http` crate's URIs
# hold at most 65,534 bytes, and hyper answers 414 with an empty body (real OpenStack's
# eventlet/Apache front ends likewise answer a plain 414 of their own for overlong lines).
MAX_URI = 65_534


class Spec:
    """One OpenAPI document and a validator factory for its schemas."""

    def __init__(self, path):
        with open(path) as f:
            self.doc = yaml.safe_load(f)
        self.registry = Registry().with_resource(
            "urn:spec", Resource.from_contents(self.doc, default_specification=DRAFT202012)
        )

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ptr = node["$ref"].lstrip("#/").split("/")
            node = self.doc
            for part in ptr:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def operations(self):
        for path, item in self.doc["paths"].items():
            common = item.get("parameters", [])
            for method, op in item.items():
                if method in METHODS:
                    params = [self.resolve(p) for p in common + op.get("parameters", [])]
                    yield path, method, op, params

    def validator(self, path, method, status, ctype="application/json"):
        resp = self.doc["paths"][path][method].get("responses", {}).get(str(status))
        if not resp:
            return None
        resp = self.resolve(resp)
        content = resp.get("content", {}).get(ctype)
        if not content or "schema" not in content:
            return None
        pointer = "/".join(
            p.replace("~", "~0").replace("/", "~1")
            for p in ["paths", path, method, "responses", str(status), "content", ctype, "schema"]
        )
        return Draft202012Validator({"$ref": f"urn:spec#/{pointer}"}, registry=self.registry)

    def body_schema(self, op):
        rb = self.resolve(op.get("requestBody", {}))
        for ctype, c in rb.get("content", {}).items():
            return ctype, self.resolve(c.get("schema", {}))
        return None, None


def glance_fault(body):
    """Glance's webob JSON fault: code ("404 Not Found"), title and message."""
    try:
        v = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(v, dict):
        return "not a JSON object"
    for k in ("code", "title", "message"):
        if not isinstance(v.get(k), str) or not v.get(k):
            return f"no {k!r} string"
    return None


def keystone_fault(body):
    """Keystone: {"error": {"code": 404, "message": "...", "title": "..."}}."""
    try:
        e = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "not a JSON object"
    if not isinstance(e, dict) or not isinstance(e.get("code"), int) or not e.get("message"):
        return "no error.code/error.message"
    return None


def placement_fault(body):
    """Placement: {"errors": [{"status": 404, "title": ..., "detail": ...}]}."""
    try:
        errs = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        return "not a JSON object"
    if not isinstance(errs, list) or not errs or not all(isinstance(e, dict) and "status" in e for e in errs):
        return "no errors[].status"
    return None


def neutron_fault(body):
    """Neutron: {"NeutronError": {"type": ..., "message": ..., "detail": ...}}."""
    try:
        e = json.loads(body).get("NeutronError")
    except (ValueError, AttributeError):
        return "not a JSON object"
    if not isinstance(e, dict) or not e.get("type") or "message" not in e:
        return "no NeutronError.type/message"
    return None


def nova_fault(body):
    """Nova: {"itemNotFound": {"code": 404, "message": "..."}} (one key, any fault name)."""
    try:
        v = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(v, dict) or len(v) != 1:
        return "not a one-key object"
    (e,) = v.values()
    if not isinstance(e, dict) or not isinstance(e.get("code"), int) or not e.get("message"):
        return "no <fault>.code/message"
    return None


FAULTS = {
    "image": glance_fault,
    "identity": keystone_fault,
    "placement": placement_fault,
    "network": neutron_fault,
    "compute": nova_fault,
}


class Checker:
    def __init__(self, args, spec, token):
        self.args = args
        self.spec = spec
        self.base = args.url.rstrip("/") + args.prefix
        self.s = requests.Session()
        self.s.headers["X-Auth-Token"] = token
        self.fault = FAULTS[args.service]
        self.findings = []
        self.requests = 0
        self.validated = 0
        self.statuses = {}
        self.slowest = 0.0
        self.resets = 0

    def finding(self, what, method, url, status, detail):
        shown = url if len(url) < 160 else url[:150] + f"...({len(url)} chars)"
        self.findings.append(f"{what}: {method.upper()} {shown} -> {status}: {detail}")

    def send(self, template, method, url, body=None, ctype=None, headers=None):
        h = dict(headers or {})
        if ctype:
            h["Content-Type"] = ctype
        self.requests += 1
        t0 = time.monotonic()
        try:
            try:
                r = self.s.request(method.upper(), url, data=body, headers=h, timeout=self.args.timeout)
            except requests.ConnectionError as e:
                if "RemoteDisconnected" not in str(e):
                    raise
                # The server closed a kept-alive connection the client reused (likely
                # after hyper's own 414, see docs/conformance.md); counted, and the
                # request sent once more on a fresh connection.
                self.resets += 1
                self.s.close()
                r = self.s.request(method.upper(), url, data=body, headers=h, timeout=self.args.timeout)
        except requests.Timeout:
            self.finding("hang", method, url, "-", f"no answer within {self.args.timeout}s")
            return None
        except requests.RequestException as e:
            self.finding("connection", method, url, "-", str(e)[:200])
            return None
        dt = time.monotonic() - t0
        self.slowest = max(self.slowest, dt)
        self.statuses[r.status_code // 100] = self.statuses.get(r.status_code // 100, 0) + 1
        if r.status_code >= 500:
            self.finding("5xx", method, url, r.status_code, r.text[:200])
        elif r.status_code == 414 and len(url) - len(self.args.url) > MAX_URI and not r.content:
            pass
        elif r.status_code >= 400 and method != "head" and r.status_code != 401:
            bad = self.fault(r.content)
            if bad:
                self.finding("fault body", method, url, r.status_code, f"{bad}: {r.text[:120]!r}")
        elif 200 <= r.status_code < 300 and template:
            if method != "get" and self.args.show_accepted:
                shown = body if body is None or len(body) < 120 else f"{body[:100]!r}..."
                print(f"  accepted: {method.upper()} {url[:160]} {shown!r} -> {r.status_code}")
            self.check_schema(template, method, url, r)
        return r

    def check_schema(self, template, method, url, r):
        if not r.content or "json" not in r.headers.get("Content-Type", ""):
            return
        if any(method == m and template.startswith(p) for m, p, _ in KNOWN_SPEC_ERRORS):
            return
        v = self.spec.validator(template, method, r.status_code)
        if v is None:
            return
        self.validated += 1
        try:
            body = r.json()
        except ValueError:
            self.finding("schema", method, url, r.status_code, "body is not JSON")
            return
        errors = sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))
        for e in errors[:3]:
            where = "/".join(str(p) for p in e.absolute_path) or "(body)"
            rule = "/".join(str(p) for p in e.schema_path)
            self.finding("schema", method, url, r.status_code, f"at {where}: {e.validator} ({rule}): {e.message[-160:]}")


def bad_bodies(schema):
    """Malformed request bodies: broken JSON, wrong kinds, and each documented top-level
    field with a wrong type, an overlong string, a control character."""
    yield b"{"
    yield b'{"name": "\xff\xfe"}'
    yield b"[]"
    yield b'"x"'
    yield b"null"
    yield b"1" * 20
    props = (schema or {}).get("properties", {}) if isinstance(schema, dict) else {}
    for name in list(props)[:12]:
        for value in ({"a": [1]}, [None], 12345, "x" * 70_000, "a\u0000b", True):
            yield json.dumps({name: value}).encode()


def bad_patches():
    yield b'[{"op": "add"}]'
    yield b'[{"op": "replace", "path": "/name", "value": {"a": 1}}]'
    yield b'[{"op": "add", "path": "/x\\u0000", "value": "v"}]'
    yield b'[{"op": "add", "path": "/' + b"a" * 300 + b'", "value": "v"}]'
    yield b'[{"op": "move", "path": "/name", "from": 5}]'
    yield b'{"op": "add"}'
    yield b"[" * 10_000


def run(args):
    spec = Spec(args.spec)
    token = authenticate(args)
    c = Checker(args, spec, token)
    fixtures = make_fixtures(c)
    ops = 0
    for template, method, op, params in spec.operations():
        if args.skip_path and any(template.startswith(p) for p in args.skip_path):
            continue
        ops += 1
        path_params = [p for p in params if p.get("in") == "path"]
        query_params = [p for p in params if p.get("in") == "query"]
        good = fill(template, {p["name"]: fixtures.get(p["name"], "stc-none") for p in path_params})
        ctype, schema = spec.body_schema(op)
        destructive = method == "delete" or template.endswith(("/deactivate", "/reactivate", "/import"))
        # Well-formed, read-only first: its answer is schema-checked.
        if method == "get":
            c.send(template, method, c.base + good)
        # Path parameters, one at a time.
        for p in path_params:
            for bad in BAD_PATH_VALUES:
                vals = {q["name"]: fixtures.get(q["name"], "stc-none") for q in path_params}
                vals[p["name"]] = bad
                url = c.base + fill(template, vals, encode=False)
                body = b"{}" if ctype == "application/json" else None
                c.send(template, method, url, body=body, ctype=ctype if body else None)
        if destructive:
            continue
        # Query values.
        for p in query_params:
            for bad in BAD_QUERY_VALUES:
                c.send(template, method, f"{c.base}{good}?{p['name']}={bad}")
        # Bodies.
        if method in ("post", "put", "patch") and ctype and "octet-stream" not in ctype:
            gen = bad_patches() if method == "patch" else bad_bodies(schema)
            for body in gen:
                c.send(template, method, c.base + good, body=body, ctype=ctype)
            c.send(template, method, c.base + good, body=b"{}", ctype="text/plain")
    cleanup(c, fixtures)
    print(
        f"apicheck {args.service}: {ops} operations, {c.requests} requests "
        f"({', '.join(f'{k}xx {v}' for k, v in sorted(c.statuses.items()))}), "
        f"{c.validated} responses schema-checked, slowest {c.slowest * 1000:.0f} ms, "
        f"{c.resets} kept-alive connections closed by the server, "
        f"{len(c.findings)} findings"
    )
    for f in c.findings:
        print("  " + f)
    return 1 if c.findings else 0


def fill(template, values, encode=True):
    out = template
    for k, v in values.items():
        out = out.replace("{" + k + "}", urllib.parse.quote(v, safe="") if encode else v)
    return out


def authenticate(args):
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": args.password}},
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }
    r = requests.post(args.url.rstrip("/") + "/identity/v3/auth/tokens", json=body, timeout=30)
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def make_fixtures(c):
    """Real resources whose ids fill the path parameters of the well-formed requests."""
    f = {}
    if c.args.service != "image":
        return f
    name = f"stc-fuzz-{uuid.uuid4().hex[:8]}"
    r = c.send("/v2/images", "post", c.base + "/v2/images",
               body=json.dumps({"name": name, "disk_format": "raw", "container_format": "bare"}),
               ctype="application/json")
    image = r.json()["id"]
    c.send("/v2/images/{image_id}/tags/{tag_value}", "put", f"{c.base}/v2/images/{image}/tags/t1")
    r = c.send("/v2/metadefs/namespaces", "post", c.base + "/v2/metadefs/namespaces",
               body=json.dumps({
                   "namespace": name,
                   "properties": {"p1": {"title": "P1", "type": "string"}},
                   "objects": [{"name": "o1"}],
                   "tags": [{"name": "g1"}],
                   "resource_type_associations": [{"name": "OS::Glance::Image"}],
               }),
               ctype="application/json")
    for k in ("image_id",):
        f[k] = image
    f.update({
        "namespace_name": name,
        "property_name": "p1",
        "object_name": "o1",
        "tag_name": "g1",
        "resource_type": "OS::Glance::Image",
        "tag_value": "t1",
        "store_id": "file",
        "member_id": "stc-nobody",
        "task_id": str(uuid.uuid4()),
    })
    return f


def cleanup(c, f):
    if "namespace_name" in f:
        c.send(None, "delete", f"{c.base}/v2/metadefs/namespaces/{f['namespace_name']}")
    if "image_id" in f:
        c.send(None, "delete", f"{c.base}/v2/images/{f['image_id']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check-recorded", metavar="FILE",
                    help="check the answers recorded in FILE against the specs (no cloud needed)")
    ap.add_argument("--openapi-dir", default="../shared/openapi",
                    help="with --check-recorded: the directory of the specs")
    ap.add_argument("--enforce", metavar="SERVICES",
                    help="with --check-recorded: comma-separated services whose findings fail the check "
                         "(default: all); the others' are printed only")
    ap.add_argument("--url", help="the cloud's base URL")
    ap.add_argument("--password", help="admin password")
    ap.add_argument("--service", default="image", choices=sorted(FAULTS))
    ap.add_argument("--spec", help="OpenAPI file of the service")
    ap.add_argument("--prefix", default="/image", help="the service's path prefix in Stratus")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as a hang")
    ap.add_argument("--show-accepted", action="store_true",
                    help="print every request other than GET that was answered 2xx (to spot bad input accepted)")
    ap.add_argument("--skip-path", action="append", default=[],
                    help="path prefix of operations Stratus does not serve (listed in docs/conformance.md)")
    args = ap.parse_args()
    if args.check_recorded:
        import apicheck_recorded

        enforce = set(args.enforce.split(",")) if args.enforce else None
        sys.exit(apicheck_recorded.main(args.check_recorded, args.openapi_dir, enforce))
    for need in ("url", "password", "spec"):
        if not getattr(args, need):
            ap.error(f"--{need} is required (unless --check-recorded)")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
