//! Networking types, made through the network API (Neutron v2.0) as the stack's owner:
//! `OS::Neutron::Net`, `Subnet`, `Port`, `Router`, `RouterInterface`, `SecurityGroup`,
//! `SecurityGroupRule`, `FloatingIP` and `FloatingIPAssociation`. Networks, subnets and security groups may
//! be named by name or id, as in Heat; their attributes are the network API's
//! representation of the thing.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::Method;
use serde_json::{json, Map, Value};
use stratus_core::internal::InternalUri;

use super::{copy, opt, prop_str, req, Change, Created, Cx, Kind, Prop, Registry, ResourceType};

pub(super) fn register(r: &mut Registry) {
    r.add(Arc::new(Net));
    r.add(Arc::new(Subnet));
    r.add(Arc::new(Port));
    r.add(Arc::new(Router));
    r.add(Arc::new(RouterInterface));
    r.add(Arc::new(SecurityGroup));
    r.add(Arc::new(FloatingIp));
    r.add(Arc::new(FloatingIpAssociation));
    r.add(Arc::new(SecurityGroupRule));
}

fn uri(collection: &str) -> InternalUri {
    InternalUri::new("/network/v2.0").seg(collection)
}

/// Merges `value_specs` (extra fields passed as they are) into `body`.
fn value_specs(props: &Map<String, Value>, body: &mut Map<String, Value>) {
    if let Some(Value::Object(extra)) = props.get("value_specs") {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
}

/// What one kind of network API object looks like to the resource that makes it:
/// where it lives, which properties pass into its body as they are (renamed to the
/// API's field), which of those an update changes in place, and whether it gets a
/// generated name when the template gives none. Every networking type makes, tags,
/// updates and deletes its object the same way through it.
struct Shape {
    /// `networks`, `subnets`...
    collection: &'static str,
    /// `network`, `subnet`... (the key of the request and response bodies).
    singular: &'static str,
    /// `(property, API field)` copied when set.
    fields: &'static [(&'static str, &'static str)],
    /// Properties an update changes in place (`name` and `tags` included when so).
    updatable: &'static [&'static str],
    /// Whether the object has a name (generated when not given).
    named: bool,
}

impl Shape {
    /// A create body: the name, the copied fields and `value_specs`, over `body`
    /// (what the type resolved itself: ids found by name...).
    fn body(&self, cx: &Cx, props: &Map<String, Value>, mut body: Map<String, Value>) -> Map<String, Value> {
        if self.named {
            let name = prop_str(props, "name").map(str::to_string).unwrap_or_else(|| cx.physical_name());
            body.insert("name".into(), json!(name));
        }
        copy(props, &mut body, self.fields);
        value_specs(props, &mut body);
        body
    }

    /// POSTs `{singular: body}`, records the id, sets the `tags` property (the network
    /// API takes tags separately) and answers the created object.
    async fn make(&self, cx: &Cx, props: &Map<String, Value>, body: Map<String, Value>) -> Result<Value, String> {
        let r = cx.call(Method::POST, &uri(self.collection), Some(json!({ self.singular: body }))).await?;
        let obj = r[self.singular].clone();
        let id = obj["id"]
            .as_str()
            .ok_or_else(|| format!("resources.{}: the network API returned no id", cx.resource_name))?;
        cx.started(id).await?;
        if let Some(Value::Array(tags)) = props.get("tags") {
            if !tags.is_empty() {
                let uri = uri(self.collection).seg(id).seg("tags");
                cx.call(Method::PUT, &uri, Some(json!({"tags": tags}))).await?;
            }
        }
        Ok(obj)
    }

    /// Deletes object `id` (gone already is success).
    async fn remove(&self, cx: &Cx, id: &str) -> Result<(), String> {
        cx.delete(&uri(self.collection).seg(id)).await
    }

    /// Applies an in-place update with one `PUT {collection}/{id}`: each changed
    /// property of `fields` is sent, an unset `name` as a generated name and other
    /// unset properties as null (the API's default); `extra` adds what the type
    /// resolved itself. Tags go to their own endpoint. Answers the object as it is now.
    async fn put(&self, cx: &Cx, change: &Change<'_>, extra: Map<String, Value>) -> Result<Value, String> {
        let mut body = extra;
        for (p, v) in change.changed_values() {
            if p == "name" && self.named {
                let name = if v.is_null() { json!(cx.physical_name()) } else { v };
                body.insert("name".into(), name);
            } else if let Some((_, f)) = self.fields.iter().find(|(name, _)| *name == p) {
                body.insert((*f).to_string(), v);
            }
        }
        let id = change.physical_id;
        let (collection, singular) = (self.collection, self.singular);
        let mut obj = if body.is_empty() {
            cx.call(Method::GET, &uri(collection).seg(id), None).await?[singular].clone()
        } else {
            cx.call(Method::PUT, &uri(collection).seg(id), Some(json!({ singular: body }))).await?[singular].clone()
        };
        if change.changed.iter().any(|c| c == "tags") {
            let tags = change.new.get("tags").cloned().unwrap_or(json!([]));
            let r = cx.call(Method::PUT, &uri(collection).seg(id).seg("tags"), Some(json!({"tags": tags}))).await?;
            obj["tags"] = r["tags"].clone();
        }
        Ok(obj)
    }
}

fn created(obj: Value) -> Created {
    Created { physical_id: obj["id"].as_str().unwrap_or_default().to_string(), ref_id: None, attributes: obj }
}

struct Net;

const NET: Shape = Shape {
    collection: "networks",
    singular: "network",
    fields: &[
        ("admin_state_up", "admin_state_up"),
        ("shared", "shared"),
        ("port_security_enabled", "port_security_enabled"),
        ("dns_domain", "dns_domain"),
        ("tenant_id", "tenant_id"),
        ("qos_policy", "qos_policy_id"),
    ],
    updatable: &["name", "admin_state_up", "shared", "port_security_enabled", "dns_domain", "qos_policy", "tags"],
    named: true,
};

#[async_trait]
impl ResourceType for Net {
    fn name(&self) -> &'static str {
        "OS::Neutron::Net"
    }
    fn description(&self) -> &'static str {
        "A network."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("name", Kind::Str, "Name (default: <stack>-<resource>-<random>)."),
            opt("admin_state_up", Kind::Bool, "Administrative state (default true)."),
            opt("shared", Kind::Bool, "Shared with every project (admin)."),
            opt("port_security_enabled", Kind::Bool, "Port security default of its ports."),
            opt("dns_domain", Kind::Str, "DNS domain."),
            opt("tenant_id", Kind::Str, "Owning project (admin)."),
            opt("value_specs", Kind::Map, "Extra fields passed to the API as they are."),
            opt("tags", Kind::List, "Tags."),
            opt("qos_policy", Kind::Str, "QoS policy."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[
            "name",
            "status",
            "subnets",
            "admin_state_up",
            "tenant_id",
            "project_id",
            "mtu",
            "port_security_enabled",
            "shared",
            "id",
        ]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let body = NET.body(cx, props, Map::new());
        Ok(created(NET.make(cx, props, body).await?))
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        NET.remove(cx, id).await
    }
    fn updatable(&self) -> &'static [&'static str] {
        NET.updatable
    }
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        Ok(created(NET.put(cx, change, Map::new()).await?))
    }
}

struct Subnet;

const SUBNET: Shape = Shape {
    collection: "subnets",
    singular: "subnet",
    fields: &[
        ("cidr", "cidr"),
        ("enable_dhcp", "enable_dhcp"),
        ("allocation_pools", "allocation_pools"),
        ("dns_nameservers", "dns_nameservers"),
        ("host_routes", "host_routes"),
        ("prefixlen", "prefixlen"),
        ("ipv6_address_mode", "ipv6_address_mode"),
        ("ipv6_ra_mode", "ipv6_ra_mode"),
        ("tenant_id", "tenant_id"),
    ],
    updatable: &["name", "enable_dhcp", "allocation_pools", "dns_nameservers", "host_routes", "tags"],
    named: true,
};

#[async_trait]
impl ResourceType for Subnet {
    fn name(&self) -> &'static str {
        "OS::Neutron::Subnet"
    }
    fn description(&self) -> &'static str {
        "A subnet of a network."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("network", Kind::Str, "The network (name or id)."),
            opt("network_id", Kind::Str, "The network id (deprecated: use network)."),
            opt("cidr", Kind::Str, "The CIDR."),
            opt("ip_version", Kind::Int, "4 (default) or 6."),
            opt("name", Kind::Str, "Name."),
            opt("enable_dhcp", Kind::Bool, "DHCP (default true)."),
            opt("gateway_ip", Kind::Str, "Gateway address; empty for none."),
            opt("allocation_pools", Kind::List, "Pools ({start, end})."),
            opt("dns_nameservers", Kind::List, "DNS servers."),
            opt("host_routes", Kind::List, "Routes ({destination, nexthop})."),
            opt("subnetpool", Kind::Str, "Subnet pool (name or id)."),
            opt("prefixlen", Kind::Int, "Prefix length when allocating from a pool."),
            opt("ipv6_address_mode", Kind::Str, "IPv6 address mode."),
            opt("ipv6_ra_mode", Kind::Str, "IPv6 router advertisement mode."),
            opt("tenant_id", Kind::Str, "Owning project (admin)."),
            opt("value_specs", Kind::Map, "Extra fields passed to the API as they are."),
            opt("tags", Kind::List, "Tags."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[
            "name",
            "network_id",
            "tenant_id",
            "project_id",
            "allocation_pools",
            "gateway_ip",
            "host_routes",
            "ip_version",
            "cidr",
            "dns_nameservers",
            "enable_dhcp",
            "subnetpool_id",
            "id",
        ]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let net = prop_str(props, "network").or_else(|| prop_str(props, "network_id")).ok_or_else(|| {
            format!(
                "Property error: resources.{}.properties: one of network or network_id is required",
                cx.resource_name
            )
        })?;
        let mut body = Map::new();
        body.insert("network_id".into(), json!(cx.neutron_id("networks", "network", net).await?));
        body.insert("ip_version".into(), props.get("ip_version").cloned().unwrap_or(json!(4)));
        match props.get("gateway_ip") {
            Some(Value::String(g)) if g.is_empty() || g == "~" => {
                body.insert("gateway_ip".into(), Value::Null);
            }
            Some(Value::String(g)) => {
                body.insert("gateway_ip".into(), json!(g));
            }
            _ => {}
        }
        if let Some(pool) = prop_str(props, "subnetpool") {
            body.insert("subnetpool_id".into(), json!(cx.neutron_id("subnetpools", "subnetpool", pool).await?));
        }
        let body = SUBNET.body(cx, props, body);
        Ok(created(SUBNET.make(cx, props, body).await?))
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        SUBNET.remove(cx, id).await
    }
    fn updatable(&self) -> &'static [&'static str] {
        SUBNET.updatable
    }
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        Ok(created(SUBNET.put(cx, change, Map::new()).await?))
    }
}

struct Port;

const PORT: Shape = Shape {
    collection: "ports",
    singular: "port",
    fields: &[
        ("mac_address", "mac_address"),
        ("admin_state_up", "admin_state_up"),
        ("device_id", "device_id"),
        ("device_owner", "device_owner"),
        ("port_security_enabled", "port_security_enabled"),
        ("allowed_address_pairs", "allowed_address_pairs"),
        ("binding:vnic_type", "binding:vnic_type"),
        ("dns_name", "dns_name"),
    ],
    updatable: &["name", "admin_state_up", "security_groups", "allowed_address_pairs", "port_security_enabled", "tags"],
    named: true,
};

#[async_trait]
impl ResourceType for Port {
    fn name(&self) -> &'static str {
        "OS::Neutron::Port"
    }
    fn description(&self) -> &'static str {
        "A port on a network."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("network", Kind::Str, "The network (name or id)."),
            opt("name", Kind::Str, "Name."),
            opt("fixed_ips", Kind::List, "Addresses ({subnet, ip_address})."),
            opt("security_groups", Kind::List, "Security groups (names or ids)."),
            opt("mac_address", Kind::Str, "MAC address."),
            opt("admin_state_up", Kind::Bool, "Administrative state."),
            opt("device_id", Kind::Str, "Device id."),
            opt("device_owner", Kind::Str, "Device owner."),
            opt("port_security_enabled", Kind::Bool, "Port security."),
            opt("allowed_address_pairs", Kind::List, "Allowed address pairs."),
            opt("binding:vnic_type", Kind::Str, "VNIC type."),
            opt("dns_name", Kind::Str, "DNS name."),
            opt("value_specs", Kind::Map, "Extra fields passed to the API as they are."),
            opt("tags", Kind::List, "Tags."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[
            "admin_state_up",
            "device_id",
            "device_owner",
            "fixed_ips",
            "mac_address",
            "name",
            "network_id",
            "security_groups",
            "status",
            "tenant_id",
            "project_id",
            "allowed_address_pairs",
            "port_security_enabled",
            "subnets",
            "id",
        ]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let net = prop_str(props, "network").unwrap_or_default();
        let mut body = Map::new();
        body.insert("network_id".into(), json!(cx.neutron_id("networks", "network", net).await?));
        if let Some(Value::Array(ips)) = props.get("fixed_ips") {
            let mut out = Vec::new();
            for ip in ips {
                let mut e = Map::new();
                if let Some(s) = ip["subnet"].as_str().or_else(|| ip["subnet_id"].as_str()) {
                    e.insert("subnet_id".into(), json!(cx.neutron_id("subnets", "subnet", s).await?));
                }
                if let Some(a) = ip["ip_address"].as_str() {
                    e.insert("ip_address".into(), json!(a));
                }
                out.push(Value::Object(e));
            }
            body.insert("fixed_ips".into(), Value::Array(out));
        }
        if let Some(Value::Array(sgs)) = props.get("security_groups") {
            let mut ids = Vec::new();
            for g in sgs.iter().filter_map(Value::as_str) {
                ids.push(json!(cx.neutron_id("security-groups", "security_group", g).await?));
            }
            body.insert("security_groups".into(), Value::Array(ids));
        }
        let body = PORT.body(cx, props, body);
        let mut obj = PORT.make(cx, props, body).await?;
        // Heat's `subnets` attribute: the subnets of the port's addresses.
        let subnets: Vec<Value> =
            obj["fixed_ips"].as_array().map(|a| a.iter().map(|f| f["subnet_id"].clone()).collect()).unwrap_or_default();
        obj["subnets"] = Value::Array(subnets);
        Ok(created(obj))
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        PORT.remove(cx, id).await
    }
    fn updatable(&self) -> &'static [&'static str] {
        PORT.updatable
    }
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        let mut extra = Map::new();
        if change.changed.iter().any(|c| c == "security_groups") {
            let mut ids = Vec::new();
            for g in change.new.get("security_groups").and_then(Value::as_array).into_iter().flatten() {
                let g = g.as_str().unwrap_or_default();
                ids.push(json!(cx.neutron_id("security-groups", "security_group", g).await?));
            }
            extra.insert("security_groups".into(), Value::Array(ids));
        }
        let mut obj = PORT.put(cx, change, extra).await?;
        obj["subnets"] = change.attributes["subnets"].clone();
        Ok(created(obj))
    }
}

struct Router;

const ROUTER: Shape = Shape {
    collection: "routers",
    singular: "router",
    fields: &[("admin_state_up", "admin_state_up"), ("distributed", "distributed"), ("ha", "ha")],
    updatable: &["name", "admin_state_up", "tags"],
    named: true,
};

#[async_trait]
impl ResourceType for Router {
    fn name(&self) -> &'static str {
        "OS::Neutron::Router"
    }
    fn description(&self) -> &'static str {
        "A router, optionally with a gateway on an external network."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("name", Kind::Str, "Name."),
            opt("external_gateway_info", Kind::Map, "Gateway: {network, enable_snat, external_fixed_ips}."),
            opt("admin_state_up", Kind::Bool, "Administrative state."),
            opt("distributed", Kind::Bool, "Distributed (admin)."),
            opt("ha", Kind::Bool, "Highly available (admin)."),
            opt("value_specs", Kind::Map, "Extra fields passed to the API as they are."),
            opt("tags", Kind::List, "Tags."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["status", "external_gateway_info", "name", "admin_state_up", "tenant_id", "project_id", "id"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let mut body = Map::new();
        if let Some(Value::Object(gw)) = props.get("external_gateway_info") {
            let net = gw.get("network").or_else(|| gw.get("network_id")).and_then(Value::as_str).ok_or_else(|| {
                format!(
                    "Property error: resources.{}.properties.external_gateway_info: network is required",
                    cx.resource_name
                )
            })?;
            let mut g = Map::new();
            g.insert("network_id".into(), json!(cx.neutron_id("networks", "network", net).await?));
            if let Some(s) = gw.get("enable_snat").filter(|v| !v.is_null()) {
                g.insert("enable_snat".into(), s.clone());
            }
            if let Some(f) = gw.get("external_fixed_ips").filter(|v| !v.is_null()) {
                g.insert("external_fixed_ips".into(), f.clone());
            }
            body.insert("external_gateway_info".into(), Value::Object(g));
        }
        let body = ROUTER.body(cx, props, body);
        Ok(created(ROUTER.make(cx, props, body).await?))
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        ROUTER.remove(cx, id).await
    }
    fn updatable(&self) -> &'static [&'static str] {
        ROUTER.updatable
    }
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        Ok(created(ROUTER.put(cx, change, Map::new()).await?))
    }
}

struct RouterInterface;

#[async_trait]
impl ResourceType for RouterInterface {
    fn name(&self) -> &'static str {
        "OS::Neutron::RouterInterface"
    }
    fn description(&self) -> &'static str {
        "A router's interface on a subnet (or through a port)."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("router", Kind::Str, "The router (name or id)."),
            opt("subnet", Kind::Str, "The subnet (name or id)."),
            opt("port", Kind::Str, "The port (name or id)."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let router = cx.neutron_id("routers", "router", prop_str(props, "router").unwrap_or_default()).await?;
        let (key, id) = match (prop_str(props, "subnet"), prop_str(props, "port")) {
            (Some(s), None) => ("subnet_id", cx.neutron_id("subnets", "subnet", s).await?),
            (None, Some(p)) => ("port_id", cx.neutron_id("ports", "port", p).await?),
            _ => {
                return Err(format!(
                    "Property error: resources.{}.properties: exactly one of subnet or port is required",
                    cx.resource_name
                ))
            }
        };
        let physical = format!("{router}:{key}={id}");
        // Recorded first: an interface is found again by its router and subnet/port.
        cx.started(&physical).await?;
        let r = cx
            .call(Method::PUT, &uri("routers").seg(&router).seg("add_router_interface"), Some(json!({ key: id })))
            .await?;
        Ok(Created { physical_id: physical, ref_id: None, attributes: r })
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        let Some((router, rest)) = id.split_once(':') else { return Ok(()) };
        let Some((key, value)) = rest.split_once('=') else { return Ok(()) };
        let r = cx
            .call(Method::PUT, &uri("routers").seg(router).seg("remove_router_interface"), Some(json!({ key: value })))
            .await;
        match r {
            Ok(_) => Ok(()),
            // The router or the interface is gone already.
            Err(e) if e.starts_with("NotFound") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

struct SecurityGroup;

const SECURITY_GROUP: Shape = Shape {
    collection: "security-groups",
    singular: "security_group",
    fields: &[("description", "description")],
    updatable: &["name", "description", "rules"],
    named: true,
};

#[async_trait]
impl ResourceType for SecurityGroup {
    fn name(&self) -> &'static str {
        "OS::Neutron::SecurityGroup"
    }
    fn description(&self) -> &'static str {
        "A security group with its rules."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("name", Kind::Str, "Name."),
            opt("description", Kind::Str, "Description."),
            opt(
                "rules",
                Kind::List,
                "Rules: {direction, ethertype, protocol, port_range_min, port_range_max, remote_mode, remote_ip_prefix, remote_group_id}.",
            ),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["name", "description", "security_group_rules", "tenant_id", "project_id", "id"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let mut body = Map::new();
        body.insert("description".into(), json!(""));
        let body = SECURITY_GROUP.body(cx, props, body);
        let obj = SECURITY_GROUP.make(cx, props, body).await?;
        let id = obj["id"].as_str().unwrap_or_default().to_string();
        set_rules(cx, &id, &obj, props, false).await
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        SECURITY_GROUP.remove(cx, id).await
    }
    fn updatable(&self) -> &'static [&'static str] {
        SECURITY_GROUP.updatable
    }
    /// Name and description in place; new rules replace all the group's ingress rules
    /// (and its egress ones when the new rules have some), as Heat does.
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        let obj = SECURITY_GROUP.put(cx, change, Map::new()).await?;
        if !change.changed.iter().any(|c| c == "rules") {
            return Ok(created(obj));
        }
        set_rules(cx, change.physical_id, &obj, change.new, true).await
    }
}

/// Gives security group `id` (as `obj` shows it) the rules of `props`: rules given for
/// egress replace the default "allow all egress" ones; with `replace`, the existing
/// ingress rules go too. Answers the group as it is then.
async fn set_rules(
    cx: &Cx,
    id: &str,
    obj: &Value,
    props: &Map<String, Value>,
    replace: bool,
) -> Result<Created, String> {
    let rules = props.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    let egress = rules.iter().any(|r| r["direction"].as_str() == Some("egress"));
    for r in obj["security_group_rules"].as_array().cloned().unwrap_or_default() {
        let gone = if r["direction"] == "egress" { egress } else { replace };
        if gone {
            if let Some(rid) = r["id"].as_str() {
                cx.delete(&uri("security-group-rules").seg(rid)).await?;
            }
        }
    }
    for (i, r) in rules.iter().enumerate() {
        let Some(r) = r.as_object() else {
            return Err(format!(
                "Property error: resources.{}.properties.rules[{i}]: a rule must be a map",
                cx.resource_name
            ));
        };
        let mut rule = Map::new();
        rule.insert("security_group_id".into(), json!(id));
        rule.insert("direction".into(), r.get("direction").cloned().unwrap_or(json!("ingress")));
        rule.insert("ethertype".into(), r.get("ethertype").cloned().unwrap_or(json!("IPv4")));
        copy(
            r,
            &mut rule,
            &[("protocol", "protocol"), ("port_range_min", "port_range_min"), ("port_range_max", "port_range_max")],
        );
        let mode = r.get("remote_mode").and_then(Value::as_str).unwrap_or("remote_ip_prefix");
        if mode == "remote_group_id" {
            let g = match r.get("remote_group_id").and_then(Value::as_str) {
                Some(g) => cx.neutron_id("security-groups", "security_group", g).await?,
                None => id.to_string(),
            };
            rule.insert("remote_group_id".into(), json!(g));
        } else if let Some(p) = r.get("remote_ip_prefix").filter(|v| !v.is_null()) {
            rule.insert("remote_ip_prefix".into(), p.clone());
        }
        cx.call(Method::POST, &uri("security-group-rules"), Some(json!({"security_group_rule": rule}))).await?;
    }
    let fresh = cx.call(Method::GET, &uri("security-groups").seg(id), None).await?;
    Ok(created(fresh["security_group"].clone()))
}

struct FloatingIp;

const FLOATING_IP: Shape = Shape {
    collection: "floatingips",
    singular: "floatingip",
    fields: &[
        ("fixed_ip_address", "fixed_ip_address"),
        ("floating_ip_address", "floating_ip_address"),
        ("dns_name", "dns_name"),
        ("dns_domain", "dns_domain"),
    ],
    updatable: &[],
    named: false,
};

#[async_trait]
impl ResourceType for FloatingIp {
    fn name(&self) -> &'static str {
        "OS::Neutron::FloatingIP"
    }
    fn description(&self) -> &'static str {
        "A floating IP on an external network, optionally associated with a port."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("floating_network", Kind::Str, "The external network (name or id)."),
            opt("port_id", Kind::Str, "Port to associate with (name or id)."),
            opt("fixed_ip_address", Kind::Str, "Address of the port to map to."),
            opt("floating_ip_address", Kind::Str, "The address to take."),
            opt("floating_subnet", Kind::Str, "Subnet of the external network to take it from."),
            opt("dns_name", Kind::Str, "DNS name."),
            opt("dns_domain", Kind::Str, "DNS domain."),
            opt("value_specs", Kind::Map, "Extra fields passed to the API as they are."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[
            "floating_ip_address",
            "floating_network_id",
            "fixed_ip_address",
            "port_id",
            "router_id",
            "status",
            "tenant_id",
            "project_id",
            "id",
        ]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let net = prop_str(props, "floating_network").unwrap_or_default();
        let mut body = Map::new();
        body.insert("floating_network_id".into(), json!(cx.neutron_id("networks", "network", net).await?));
        if let Some(p) = prop_str(props, "port_id") {
            body.insert("port_id".into(), json!(cx.neutron_id("ports", "port", p).await?));
        }
        if let Some(s) = prop_str(props, "floating_subnet") {
            body.insert("subnet_id".into(), json!(cx.neutron_id("subnets", "subnet", s).await?));
        }
        let body = FLOATING_IP.body(cx, props, body);
        Ok(created(FLOATING_IP.make(cx, props, body).await?))
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        FLOATING_IP.remove(cx, id).await
    }
}

struct FloatingIpAssociation;

#[async_trait]
impl ResourceType for FloatingIpAssociation {
    fn name(&self) -> &'static str {
        "OS::Neutron::FloatingIPAssociation"
    }
    fn description(&self) -> &'static str {
        "Associates an existing floating IP with a port."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("floatingip_id", Kind::Str, "The floating IP's id."),
            req("port_id", Kind::Str, "The port (name or id)."),
            opt("fixed_ip_address", Kind::Str, "Address of the port to map to."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let fip = prop_str(props, "floatingip_id").unwrap_or_default().to_string();
        let port = cx.neutron_id("ports", "port", prop_str(props, "port_id").unwrap_or_default()).await?;
        let physical = format!("{fip}:{port}");
        cx.started(&physical).await?;
        let mut body = Map::new();
        body.insert("port_id".into(), json!(port));
        copy(props, &mut body, &[("fixed_ip_address", "fixed_ip_address")]);
        let r = cx.call(Method::PUT, &uri("floatingips").seg(&fip), Some(json!({"floatingip": body}))).await?;
        Ok(Created { physical_id: physical, ref_id: None, attributes: r["floatingip"].clone() })
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        let Some((fip, port)) = id.split_once(':') else { return Ok(()) };
        // Only undo our own association: the floating IP may have moved on since.
        let current = match cx.call(Method::GET, &uri("floatingips").seg(fip), None).await {
            Ok(v) => v,
            Err(e) if e.starts_with("NotFound") => return Ok(()),
            Err(e) => return Err(e),
        };
        if current["floatingip"]["port_id"] != port {
            return Ok(());
        }
        match cx.call(Method::PUT, &uri("floatingips").seg(fip), Some(json!({"floatingip": {"port_id": null}}))).await {
            Ok(_) => Ok(()),
            Err(e) if e.starts_with("NotFound") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

struct SecurityGroupRule;

const RULE: Shape = Shape {
    collection: "security-group-rules",
    singular: "security_group_rule",
    fields: &[
        ("protocol", "protocol"),
        ("port_range_min", "port_range_min"),
        ("port_range_max", "port_range_max"),
        ("remote_ip_prefix", "remote_ip_prefix"),
        ("description", "description"),
    ],
    updatable: &[],
    named: false,
};

#[async_trait]
impl ResourceType for SecurityGroupRule {
    fn name(&self) -> &'static str {
        "OS::Neutron::SecurityGroupRule"
    }
    fn description(&self) -> &'static str {
        "One rule of a security group."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("security_group", Kind::Str, "The security group (name or id)."),
            opt("direction", Kind::Str, "ingress (default) or egress."),
            opt("ethertype", Kind::Str, "IPv4 (default) or IPv6."),
            opt("protocol", Kind::Str, "Protocol name or number."),
            opt("port_range_min", Kind::Int, "Lowest port."),
            opt("port_range_max", Kind::Int, "Highest port."),
            opt("remote_ip_prefix", Kind::Str, "Remote CIDR."),
            opt("remote_group", Kind::Str, "Remote security group (name or id)."),
            opt("description", Kind::Str, "Description."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[
            "direction",
            "ethertype",
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "security_group_id",
            "id",
        ]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let sg = prop_str(props, "security_group").unwrap_or_default();
        let mut rule = Map::new();
        rule.insert("security_group_id".into(), json!(cx.neutron_id("security-groups", "security_group", sg).await?));
        rule.insert("direction".into(), props.get("direction").cloned().unwrap_or(json!("ingress")));
        rule.insert("ethertype".into(), props.get("ethertype").cloned().unwrap_or(json!("IPv4")));
        if let Some(g) = prop_str(props, "remote_group") {
            rule.insert("remote_group_id".into(), json!(cx.neutron_id("security-groups", "security_group", g).await?));
        }
        let rule = RULE.body(cx, props, rule);
        Ok(created(RULE.make(cx, props, rule).await?))
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        RULE.remove(cx, id).await
    }
}
