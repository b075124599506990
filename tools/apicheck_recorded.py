"""Checks recorded API responses against OpenStack's OpenAPI descriptions (../shared/openapi/).

Input: the file a cloud writes with `[record] path` set (crates/stratus/src/recorder.rs): one
JSON object per line, `{"service", "method", "path", "status", "versions", "body"}`, from a
whole-cloud run (scripts/tempest.sh records every run). For each recorded answer it finds
the spec operation (the service's prefix stripped, the path matched against the spec's path
templates, literal segments winning over parameters), takes the response schema for the
status, narrows it to the negotiated microversion, and validates the body (JSON Schema
2020-12): no missing required field, no wrong type, no undocumented field where the schema
closes the object. Error answers (4xx) are checked for the service's fault format instead.

Microversions: the specs describe the newest microversion, marking fields and operations
that exist only in a range with `x-openstack: {min-ver, max-ver}`. A field outside the
answer's microversion is removed from the schema (from `properties` and `required`), so it
is undocumented there; a `oneOf` alternative outside it is dropped (and `oneOf` is read as
`anyOf`: generated alternatives overlap). Where the spec has no
mark, it cannot tell versions apart: an answer at an older microversion carrying a field the
newest schema does not document is then reported as *uncertain* (printed, never failing),
because Nova's older microversions really have fields that later ones removed. A missing
required field or a wrong type always counts.

A success status the spec does not document for the operation is a finding too.

Findings that the real service shares (the spec is generated and sometimes wrong; the real
service wins) are in ALLOWED, NULLABLE and STATUS_ALLOWED below, each with its reason; they
are printed as allowed and do not fail the check. docs/conformance.md lists them too.
"""

import json
import re
import sys
from collections import Counter, defaultdict

import yaml
from jsonschema import Draft202012Validator

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # PyYAML without libyaml
    _Loader = yaml.SafeLoader

# Stratus's path prefix -> (spec file under the openapi directory, microversion service
# type in `OpenStack-API-Version`, or None).
SERVICES = {
    "identity": ("identity/v3.14.yaml", None),
    "image": ("image/v2.16.yaml", None),
    "placement": ("placement/v1.yaml", "placement"),
    "compute": ("compute/v2.96.yaml", "compute"),
    "network": ("network/v2.yaml", None),
    "volume": ("block-storage/v3.70.yaml", "volume"),
    "object": ("object-store/v1.yaml", None),
}

# Known disagreements between a generated spec and the real service, where Stratus follows
# the service. Each entry: service, method ("*" for any), path template (a regex matched
# against the whole template), location in the body (a regex matched against the whole
# path of the finding, list indices written as `*`), the JSON Schema keyword that failed,
# (`null`: only a null value failing `type`/`enum`), why the service's behaviour is right,
# and optionally the newest microversion the entry applies to. Keep each one narrow, and in
# docs/conformance.md.
ALLOWED = [
    # Keystone's `links` are objects: `{self, next, previous}` on a collection (keystone/
    # server/flask wrap_collection) and `{self}` on each entity (wrap_member); the generated
    # spec types some of them as arrays. openstacksdk and keystoneclient read the objects.
    ("identity", "*", r"/v3/.*", r"(.*/)?links", "type",
     "Keystone's `links` are objects ({self, next, previous} / {self}); the spec says array"),
    # Keystone's default domain configuration shows every option, unset ones (most LDAP
    # options, whose keystone.conf default is None) as null; the spec types them string.
    ("identity", "get", r"/v3/domains/config/(\{group\}/)?default.*", r"config/[a-z_]+/[a-z_]+|config/[a-z_]+|[a-z_]+",
     "null",
     "Keystone's default domain config answers unset options as null"),
    # Keystone's application credential lists each role as {id, name, domain_id} (the role
    # reference, api-ref example `"domain_id": null`); the spec closes the role object at
    # two properties.
    ("identity", "*", r"/v3/users/\{user_id\}/application_credentials.*",
     r"application_credentials?/(\*/)?roles/\*(/domain_id)?", "additionalProperties|maxProperties",
     "Keystone's application credential roles carry domain_id (api-ref example)"),
    # Glance's "create tags" (POST /v2/metadefs/namespaces/{ns}/tags) makes several tags and
    # answers {"tags": [{name, ...}]} (Tempest's namespace tags client reads body["tags"]); the
    # spec gives it the single-tag answer of POST .../tags/{tag_name}.
    ("image", "post", r"/v2/metadefs/namespaces/\{namespace_name\}/tags", r"tags|\(body\)",
     "additionalProperties|required", "Glance's create-tags answer is {tags: [...]}, not one tag"),
    # Glance serves its JSON Schema documents as JSON objects; the spec calls them strings.
    ("image", "get", r"/v2/schemas/.*", r".*", "type",
     "the schema documents are JSON objects (what glanceclient/openstacksdk read), not strings"),
    # Neutron: `l2_adjacency` is a boolean (neutron-lib api/definitions/l2_adjacency.py,
    # convert_to_boolean); the spec says string.
    ("network", "*", r"/v2\.0/networks.*", r"networks?/(\*/)?l2_adjacency", "type",
     "Neutron's l2_adjacency is a boolean"),
    # Neutron embeds a security group's rules as a list of rule objects
    # (securitygroups_db._make_security_group_dict); the spec says string.
    ("network", "*", r"/v2\.0/security-groups.*", r"security_groups?/(\*/)?security_group_rules", "type",
     "Neutron's security_group_rules inside a group is a list of rules"),
    # Nova's flavors carry `OS-FLV-DISABLED:disabled` (every microversion) and `description`
    # (from 2.55) (api-ref "List Flavors With Details"); the spec's flavor objects are closed
    # without them.
    ("compute", "*", r"/v2\.1/flavors.*", r"flavors?/(\*/)?(OS-FLV-DISABLED:disabled|description)",
     "additionalProperties", "Nova's flavors have OS-FLV-DISABLED:disabled and (2.55+) description"),
    # Neutron's attribute maps type these as integers, lists or objects (neutron-lib
    # api/definitions: port_range_* convert_to_int, ip_version convert_to_int, dns_assignment
    # a list of {hostname, ip_address, fqdn}, port_forwardings a list, port_details an
    # object); the generated spec falls back to string for attributes without a validator.
    ("network", "*", r"/v2\.0/security-group-rules.*|/v2\.0/security-groups.*",
     r"(.*/)?(port_range_min|port_range_max)", "type", "Neutron's port_range_min/max are integers"),
    ("network", "*", r"/v2\.0/subnetpools.*", r"subnetpools?/(\*/)?(ip_version|default_quota)", "type",
     "Neutron's subnet pool ip_version and default_quota are integers (default_quota null when unset)"),
    ("network", "*", r"/v2\.0/ports.*", r"ports?/(\*/)?dns_assignment", "type",
     "Neutron's dns_assignment is a list of {hostname, ip_address, fqdn}"),
    ("network", "*", r"/v2\.0/floatingips.*", r"floatingips?/(\*/)?(port_forwardings|port_details)", "type",
     "Neutron's port_forwardings is a list and port_details an object (null without a port)"),
    # Neutron's agents: `alive` is a boolean, `configurations` an object (the agent's
    # reported state), `resources_synced` and `availability_zone` null for agents without
    # them (neutron/db/agents_db.py); the spec says string.
    ("network", "*", r"/v2\.0/agents.*", r"agents?/(\*/)?(alive|configurations)", "type",
     "Neutron's agent alive is a boolean and configurations an object"),
    # Nova's hypervisor `cpu_info` is a JSON-encoded string before microversion 2.28 and an
    # object from 2.28 (api-ref "Changed in version 2.28"); the spec has only the object.
    ("compute", "get", r"/v2\.1/os-hypervisors.*", r"hypervisors?/(\*/)?cpu_info", "type",
     "Nova's cpu_info is a string before 2.28", (2, 27)),
    # Cinder's os-hosts list answers {host_name, service, zone, service-status,
    # service-state, last-update} per host (api-ref "List all hosts"); the spec gives the list
    # the schema of a single host's resources.
    ("volume", "get", r"/v3/\{project_id\}/os-hosts", r"hosts/\*(/.*)?", "required|additionalProperties",
     "Cinder's os-hosts list has per-host summary fields, not the host's resources"),
    # Cinder's lists carry `<collection>_links` when a page is cut (limit/marker), like
    # Nova's; the spec leaves them out of the closed list objects.
    ("volume", "get", r"/v3/\{project_id\}/.*", r"[a-z_]+_links", "additionalProperties",
     "Cinder's paginated lists carry <collection>_links"),
    # Nova answers `swap: ""` for a flavor without swap before microversion 2.75 (api-ref:
    # "Currently, the empty string is used to represent 0. As of microversion 2.75 default
    # return value of swap is 0"); the spec's pattern forbids "".
    ("compute", "*", r"/v2\.1/flavors.*", r"flavors?/(\*/)?swap", "pattern",
     "Nova answers swap \"\" (no swap) before 2.75, as the spec's own description says"),
]

# Fields the real service answers as null when unset, where the generated spec leaves out
# null from the type (or enum): service -> (regex on the field name, why). Applies only to a
# null value failing `type` or `enum`; any other value is still checked.
NULLABLE = {
    "identity": [
        (r"description", "Keystone stores and returns description null when none was given (roles, ...)"),
        (r"password_expires_at", "Keystone's token user has password_expires_at null when the password never expires"),
    ],
    "compute": [
        (r"disabled_reason", "Nova answers disabled_reason null for an enabled service"),
        (r"availability_zone|updated_at|deleted_at",
         "Nova answers an aggregate's unset availability_zone and a record's unset timestamps as null"),
        (r"description|key_name|OS-EXT-STS:task_state|OS-SRV-USG:terminated_at|OS-SRV-USG:launched_at"
         r"|OS-EXT-SRV-ATTR:user_data|OS-EXT-SRV-ATTR:host|OS-EXT-SRV-ATTR:hypervisor_hostname"
         r"|OS-EXT-SRV-ATTR:instance_name|OS-EXT-SRV-ATTR:kernel_id|OS-EXT-SRV-ATTR:ramdisk_id|ended_at",
         "Nova answers a server's unset description, key_name, task_state, timestamps, user_data and "
         "(before scheduling) host as null (api-ref examples)"),
    ],
    "network": [
        (r"protocol|port_range_min|port_range_max|remote_ip_prefix|resource_request|port_details|remote_group_id|remote_address_group_id"
         r"|ipv4_address_scope|ipv6_address_scope|provider:physical_network|provider:segmentation_id"
         r"|external_gateway_info|flavor_id|ipv6_ra_mode|ipv6_address_mode|gateway_ip|qos_policy_id"
         r"|qos_network_policy_id|dns_domain|dns_name|port_id|fixed_ip_address|floating_network_id|router_id"
         r"|subnetpool_id|address_scope_id|device_id|binding:host_id|segment_id|network_id|description"
         r"|resources_synced|availability_zone",
         "Neutron answers unset attributes as null (its api-ref examples; neutron-lib ATTR_NOT_SPECIFIED)"),
    ],
    "volume": [
        (r"snapshot_id|source_volid|consistencygroup_id|migration_status|group_id|service_uuid|cluster_name"
         r"|description|name|replication_status|os-vol-host-attr:host|volume_type_id|backup_id|attached_host"
         r"|instance_uuid|detached_at|attach_time|attached_at|connection_info|connector|provider_id|shared_targets"
         r"|updated_at|fail_reason|display_description|availability_zone|encryption_key_id|user_message"
         r"|qos_specs_id|group_snapshot_id|progress|os-extended-snapshot-attributes:progress"
         r"|destination_project_id|source_project_id",
         "Cinder answers unset volume attributes as null (its api-ref examples)"),
    ],
}

# Success statuses the generated spec gets wrong: (service, method, path template regex,
# status the service answers, status the spec documents, why[, newest microversion it
# applies to]). The answer is validated
# against the documented status's schema. Any other success status the spec does not list
# is a finding.
STATUS_ALLOWED = [
    # Keystone answers 201 Created to every create and to token issue (keystone/server/flask
    # resources return http.client.CREATED; Tempest's identity clients expect 201); the
    # generated spec documents 200.
    ("identity", "post", r"/v3/.*", 201, 200, "Keystone answers 201 to creates; the spec says 200"),
    ("identity", "put", r"/v3/.*", 201, 200, "Keystone answers 201 to PUT-creates (implied roles, ...)"),
    # Keystone answers 200 to replacing a project's tag list (Tempest's projects client:
    # update_all_project_tags expects 200); the spec says 201.
    ("identity", "put", r"/v3/projects/\{project_id\}/tags", 200, 201,
     "Keystone answers 200 to PUT /v3/projects/{id}/tags"),
    # Keystone's version list (GET /) is `300 Multiple Choices`, as every OpenStack version
    # document list; the spec documents 200.
    ("identity", "get", r"/", 300, 200, "Keystone's version list answers 300 Multiple Choices"),
    # Nova answers 200 to these creates (api-ref: "Normal response codes: 200"; Tempest's
    # compute response schemas expect 200); the generated spec says 201.
    ("compute", "post", r"/v2\.1/(flavors|os-aggregates|os-server-groups)", 200, 201,
     "Nova answers 200 to these creates; the spec says 201"),
    # Nova answers 200 to a volume attach (api-ref "Normal response codes: 200"; Tempest's
    # attach_volume schema expects 200); the spec says 201.
    ("compute", "post", r"/v2\.1/servers/\{server_id\}/os-volume_attachments", 200, 201,
     "Nova answers 200 to a volume attach; the spec says 201"),
    # Server actions with an answer body (os-getConsoleOutput, os-getVNCConsole, rescue,
    # evacuate) answer 200 in Nova (api-ref of each action; Tempest's compute schemas expect
    # 200); the spec puts their schemas under 201.
    ("compute", "post", r"/v2\.1/servers/\{id\}/action", 200, 201,
     "Nova answers 200 to the server actions that return a body; the spec says 201"),
    # Glance answers 200 to an image member create (Tempest's image members client:
    # expected_success(200)); the spec says 201.
    ("image", "post", r"/v2/images/\{image_id\}/members", 200, 201, "Glance answers 200 to a member create"),
    # Nova answers 200 to creating flavor extra specs (api-ref "Normal response codes: 200");
    # the spec says 201.
    ("compute", "post", r"/v2\.1/flavors/\{flavor_id\}/os-extra_specs", 200, 201,
     "Nova answers 200 to a flavor extra specs create"),
    # Cinder answers 200 to these creates (api-ref: volume types, their extra specs, QoS
    # specs, volume and snapshot metadata: "Normal response codes: 200"; Tempest's volume
    # clients expect 200); the spec says 201.
    ("volume", "post", r"/v3/\{project_id\}/(types|types/\{type_id\}/extra_specs|qos-specs"
     r"|volumes/\{volume_id\}/metadata|snapshots/\{snapshot_id\}/metadata)", 200, 201,
     "Cinder answers 200 to these creates"),
    # Keypair create: 200 before microversion 2.2, 201 from 2.2 (api-ref "Normal response
    # codes: 200, 201"); the spec has only 201.
    ("compute", "post", r"/v2\.1/os-keypairs", 200, 201, "Nova answers 200 to a keypair create before 2.2",
     (2, 1)),
]


def template_regex(template):
    """`/v2.1/servers/{id}` -> a regex, and its specificity (literal segments first)."""
    parts = [p for p in template.strip("/").split("/")]
    out, score = [], []
    for p in parts:
        if re.fullmatch(r"\{[^}]+\}", p):
            out.append(r"[^/]+")
            score.append(0)
        elif "{" in p:
            out.append(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(p)))
            score.append(1)
        else:
            out.append(re.escape(p))
            score.append(2)
    return re.compile("^/" + "/".join(out) + "/?$"), tuple(score)


def parse_version(s):
    try:
        a, b = s.split(".")
        return (int(a), int(b))
    except (ValueError, AttributeError):
        return None


def negotiated(versions, service_type):
    """The answer's microversion for `service_type`, from its OpenStack-API-Version (or
    Nova's legacy) header; None when the answer carries none."""
    for h, v in (versions or {}).items():
        h = h.lower()
        if h == "openstack-api-version":
            for part in v.split(","):
                bits = part.split()
                if len(bits) == 2 and bits[0].lower() == service_type:
                    return parse_version(bits[1])
        elif h == "x-openstack-nova-api-version" and service_type == "compute":
            return parse_version(v)
    return None


def in_range(node, version):
    """False when `node` carries an `x-openstack` range that excludes `version`."""
    x = node.get("x-openstack") if isinstance(node, dict) else None
    if not isinstance(x, dict) or version is None:
        return True
    lo, hi = parse_version(x.get("min-ver")), parse_version(x.get("max-ver"))
    return not ((lo and version < lo) or (hi and version > hi))


class ServiceSpec:
    """One service's spec: operations by path template, schemas narrowed per version."""

    def __init__(self, path):
        with open(path) as f:
            self.doc = yaml.load(f, Loader=_Loader)
        self.templates = []
        for t in self.doc.get("paths", {}):
            rx, score = template_regex(t)
            self.templates.append((score, rx, t))
        self.templates.sort(key=lambda x: x[0], reverse=True)
        self.max_version = None
        self._validators = {}

    def match(self, path):
        for _, rx, t in self.templates:
            if rx.match(path):
                return t
        return None

    def deref(self, ref):
        node = self.doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def operation(self, template, method):
        return self.doc["paths"][template].get(method)

    def schema_for(self, template, method, status, version):
        """(validator, why-not): the validator for this answer, or None and the reason."""
        key = (template, method, status, version)
        if key in self._validators:
            return self._validators[key]
        op = self.operation(template, method)
        result = (None, "no such method in the spec")
        if op is not None:
            resp = op.get("responses", {}).get(str(status))
            if isinstance(resp, dict) and "$ref" in resp:
                resp = self.deref(resp["$ref"])
            if not resp:
                result = (None, f"the spec has no {status} response")
            else:
                content = resp.get("content") or {}
                schema = next((c.get("schema") for ct, c in content.items() if "json" in ct and c.get("schema")), None)
                if schema is None:
                    result = (None, f"the spec's {status} response has no JSON schema")
                else:
                    result = (Draft202012Validator(self.materialize(schema, version, ())), None)
        self._validators[key] = result
        return result

    def materialize(self, node, version, stack):
        """A self-contained copy of `node`: `$ref`s inlined (a cycle becomes `{}`, which
        accepts anything), and everything outside `version` removed."""
        if isinstance(node, list):
            return [self.materialize(n, version, stack) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node and isinstance(node["$ref"], str):
            ref = node["$ref"]
            if ref in stack or len(stack) > 40:
                return {}
            target = self.materialize(self.deref(ref), version, stack + (ref,))
            rest = {k: v for k, v in node.items() if k != "$ref"}
            if rest:
                return {"allOf": [target], **self.materialize(rest, version, stack)}
            return target
        out = {}
        for k, v in node.items():
            if k == "x-openstack":
                continue
            if k == "properties" and isinstance(v, dict):
                out[k] = {
                    name: self.materialize(sub, version, stack)
                    for name, sub in v.items()
                    if in_range(sub, version)
                }
                continue
            if k in ("oneOf", "anyOf") and isinstance(v, list):
                # Read as anyOf: the generated alternatives overlap (an action's possible
                # answers; `format: ipv4` vs `ipv6`, which JSON Schema does not assert), so
                # "exactly one" would reject answers every alternative accepts.
                alts = [a for a in v if in_range(a if "$ref" not in a else self.deref(a["$ref"]), version)]
                out["anyOf"] = [self.materialize(a, version, stack) for a in (alts or v)]
                continue
            out[k] = self.materialize(v, version, stack)
        if "required" in out and isinstance(out.get("properties"), dict) and isinstance(node.get("properties"), dict):
            dropped = set(node["properties"]) - set(out["properties"])
            out["required"] = [r for r in out["required"] if r not in dropped]
        # Draft-4 leftovers in generated specs (`exclusiveMinimum: true`) are not numbers in
        # 2020-12; they would make the schema itself invalid. Read as draft 4 meant them.
        for excl, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(out.get(excl), bool):
                if out[excl] and bound in out:
                    out[excl] = out.pop(bound)
                else:
                    out.pop(excl)
        return out


def fault_checkers():
    """The fault-body checks of tools/apicheck.py, by service (imported lazily: that module
    needs `requests`, which the offline check does not)."""
    try:
        import apicheck
    except ImportError:
        return {}
    return apicheck.FAULTS


class Report:
    def __init__(self):
        self.lines = 0
        self.responses = 0
        self.checked = 0
        self.faults_checked = 0
        self.by_service = Counter()
        self.unmatched = Counter()
        self.no_schema = Counter()
        self.skipped_bodies = Counter()
        self.markers = []
        self.uncertain_versions = Counter()
        self.status_aliases = Counter()
        # (service, method, template, status, version) -> Counter of (where, keyword, message)
        self.findings = defaultdict(Counter)
        self.allowed = defaultdict(Counter)
        self.uncertain = defaultdict(Counter)
        self.samples = {}


def allowed_reason(service, method, template, where, keyword, instance=0, version=None):
    """The reason of the ALLOWED entry matching this finding, or None. An entry whose
    keyword is `null` matches only a null value failing `type` or `enum`; one with a
    seventh element applies only up to that microversion."""
    for s, m, t, w, k, reason, *upto in ALLOWED:
        if upto and (version is None or version > upto[0]):
            continue
        if k == "null":
            kw_ok = instance is None and keyword in ("type", "enum")
        else:
            kw_ok = re.fullmatch(k, keyword)
        if s == service and m in ("*", method) and re.fullmatch(t, template) and kw_ok and re.fullmatch(w, where):
            return reason
    return None


def check_file(path, openapi_dir, services=None):
    rep = Report()
    specs = {}
    faults = fault_checkers()
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            rep.lines += 1
            try:
                rec = json.loads(raw)
            except ValueError:
                rep.markers.append(f"line {rep.lines} is not JSON")
                continue
            if "service" not in rec:
                rep.markers.append(f"line {rep.lines}: {raw[:80]}")
                continue
            check_one(rec, rep, specs, openapi_dir, faults, services)
    return rep


def check_one(rec, rep, specs, openapi_dir, faults, services):
    service = rec["service"]
    if service not in SERVICES or (services and service not in services):
        return
    rep.responses += 1
    rep.by_service[service] += 1
    if service not in specs:
        specs[service] = ServiceSpec(f"{openapi_dir}/{SERVICES[service][0]}")
    spec = specs[service]
    method = rec["method"].lower()
    status = int(rec["status"])
    path = rec["path"].split("?", 1)[0][len(service) + 1:] or "/"
    template = spec.match(path)
    if "body" not in rec or "body_skipped" in rec:
        rep.skipped_bodies[rec.get("body_skipped", "not JSON") if "body_text" not in rec else "not JSON"] += 1
        if "body_text" in rec and 200 <= status < 300:
            add(rep, rep.findings, (service, method, template or path, status, None), "(body)", "json",
                "the body is not valid JSON although the answer says it is", rec)
        return
    if status >= 400:
        check = faults.get(service)
        if check and status != 401 and method != "head":
            rep.faults_checked += 1
            bad = check(json.dumps(rec["body"]).encode())
            if bad:
                add(rep, rep.findings, (service, method, template or path, status, None), "(body)", "fault",
                    f"not the service's fault format: {bad}", rec)
        return
    if template is None:
        rep.unmatched[(service, rec["method"], path)] += 1
        return
    mv_type = SERVICES[service][1]
    version = negotiated(rec.get("versions"), mv_type) if mv_type else None
    op = spec.operation(template, method)
    key = (service, method, template, status, f"{version[0]}.{version[1]}" if version else None)
    if op is not None and not in_range(op, version):
        add(rep, rep.findings, key, "(operation)", "x-openstack",
            f"answered {status} although the spec has this operation only in "
            f"{op['x-openstack'].get('min-ver', '')}..{op['x-openstack'].get('max-ver', '')}", rec)
        return
    validator, why = spec.schema_for(template, method, status, version)
    if validator is None and why.startswith("the spec has no") and status < 400:
        documented = [int(c) for c in (op or {}).get("responses", {}) if c.isdigit() and int(c) < 400]
        alias = next((a for a in STATUS_ALLOWED if a[0] == service and a[1] == method and a[3] == status
                      and a[4] in documented and re.fullmatch(a[2], template)
                      and (len(a) < 7 or (version is not None and version <= a[6]))), None)
        if alias:
            rep.status_aliases[(service, method, template, status, alias[4])] += 1
            validator, why = spec.schema_for(template, method, alias[4], version)
        elif documented:
            add(rep, rep.findings, key, "(status)", "status",
                f"answered {status}; the spec documents {', '.join(map(str, sorted(documented)))}", rec)
            return
    if validator is None:
        rep.no_schema[(service, method, template, status, why)] += 1
        return
    rep.checked += 1
    older = version is not None and version < max_version(spec, mv_type)
    for where, kw, msg, instance in errors(validator, rec["body"]):
        reason = allowed_reason(service, method, template, where, kw, instance, version)
        if reason is None and instance is None and kw in ("type", "enum"):
            field = where.rsplit("/", 1)[-1]
            reason = next((why for rx, why in NULLABLE.get(service, []) if re.fullmatch(rx, field)), None)
        if reason is None and kw == "additionalProperties" and older:
            rep.uncertain_versions[key[4]] += 1
            add(rep, rep.uncertain, key, where, kw, msg, rec)
        elif reason:
            add(rep, rep.allowed, key, where, kw, f"{msg}  [allowed: {reason}]", rec)
        else:
            add(rep, rep.findings, key, where, kw, msg, rec)


def errors(validator, body):
    """(where, keyword, message, instance) per error; an undocumented field in a closed
    object is one error per field, at the field's own path, so that allow-list entries can
    name the field."""
    for e in validator.iter_errors(body):
        where = "/".join("*" if isinstance(p, int) else str(p) for p in e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set((e.schema.get("properties") or {}))
            patterns = list((e.schema.get("patternProperties") or {}))
            extras = [k for k in e.instance if k not in known and not any(re.search(p, k) for p in patterns)]
            for k in extras:
                yield f"{where}/{k}" if where else k, "additionalProperties", "undocumented field", e.instance[k]
            if extras:
                continue
        msg = e.message if len(e.message) < 200 else e.message[:120] + "..." + e.message[-60:]
        yield where or "(body)", e.validator, msg, e.instance


def max_version(spec, mv_type):
    """The newest microversion the spec describes (its `info.version`: compute 2.96)."""
    if spec.max_version is None:
        m = re.search(r"\d+\.\d+", str(spec.doc.get("info", {}).get("version", "")))
        spec.max_version = parse_version(m.group(0)) if m else (99, 99)
    return spec.max_version


def add(rep, table, key, where, keyword, message, rec):
    table[key][(where, keyword, message)] += 1
    rep.samples.setdefault((key, where, keyword), rec["path"])


def print_report(rep, out=sys.stdout):
    def section(title, table):
        if not table:
            return
        print(f"\n{title}", file=out)
        for key in sorted(table, key=lambda k: tuple(str(x) for x in k)):
            service, method, template, status, version = key
            v = f" @{version}" if version else ""
            print(f"  {service} {method.upper()} {template} -> {status}{v}", file=out)
            for (where, kw, msg), n in sorted(table[key].items(), key=lambda x: -x[1]):
                sample = rep.samples.get((key, where, kw), "")
                print(f"      {n:>4} x at {where}: {kw}: {msg}   (e.g. {sample[:100]})", file=out)

    section("FINDINGS (fail the check):", rep.findings)
    section("Allowed (known spec errors, the real service answers the same; docs/conformance.md):", rep.allowed)
    section("Uncertain (field the newest schema lacks, at an older microversion the spec does not describe):",
            rep.uncertain)
    if rep.unmatched:
        print("\nNo operation in the spec for these paths (not checked):", file=out)
        for (s, m, p), n in sorted(rep.unmatched.items()):
            print(f"  {n:>5} x {s} {m} {p}", file=out)
    if rep.status_aliases:
        print("\nAllowed status differences (checked against the documented status's schema):", file=out)
        for (s, m, t, st, doc), n in sorted(rep.status_aliases.items()):
            print(f"  {n:>5} x {s} {m.upper()} {t} -> {st} (spec: {doc})", file=out)
    if rep.markers:
        print("\nRecord markers (the record is incomplete):", file=out)
        for m in rep.markers[:20]:
            print(f"  {m}", file=out)
    no_schema = Counter()
    for (s, m, t, st, why), n in rep.no_schema.items():
        no_schema[why.replace(str(st), "N")] += n
    nf = sum(sum(c.values()) for c in rep.findings.values())
    na = sum(sum(c.values()) for c in rep.allowed.values())
    nu = sum(sum(c.values()) for c in rep.uncertain.values())
    by_service = Counter()
    for (s, *_), c in rep.findings.items():
        by_service[s] += sum(c.values())
    print(
        f"\nrecorded responses: {rep.lines} lines, {rep.responses} from spec'd services "
        f"({', '.join(f'{s} {n}' for s, n in sorted(rep.by_service.items()))}); "
        f"{rep.checked} schema-checked, {rep.faults_checked} error bodies fault-checked, "
        f"{sum(rep.unmatched.values())} on paths the spec lacks, "
        f"{sum(rep.no_schema.values())} without a schema for their status "
        f"({', '.join(f'{w}: {n}' for w, n in no_schema.most_common())}), "
        f"{sum(rep.skipped_bodies.values())} without a recorded body",
        file=out,
    )
    print(
        f"findings: {nf} in {len(rep.findings)} operations "
        f"({', '.join(f'{s} {n}' for s, n in sorted(by_service.items())) or 'none'}); "
        f"allowed {na}; uncertain {nu}",
        file=out,
    )
    return nf


def main(path, openapi_dir, enforce=None):
    """Checks the record at `path`; 1 when a service in `enforce` (default: every one) has
    a finding."""
    rep = check_file(path, openapi_dir)
    print_report(rep)
    failing = Counter()
    for (service, *_), c in rep.findings.items():
        if enforce is None or service in enforce:
            failing[service] += sum(c.values())
    if enforce is not None:
        print(f"enforced: {', '.join(sorted(enforce))}; failing findings: {sum(failing.values())}"
              + (f" ({', '.join(f'{s} {n}' for s, n in sorted(failing.items()))})" if failing else ""))
    return 1 if failing else 0
