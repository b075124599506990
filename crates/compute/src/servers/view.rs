//! The server JSON, field by field per microversion, as the API reference documents it.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha224};
use stratus_core::time::{micros_naive, seconds_z};
use stratus_core::ApiVersion;

use super::store::Instance;
use crate::state;

/// Nova's `hostId`: an opaque per-project hash of the host name.
pub fn host_id(project_id: &str, host: &str) -> String {
    if host.is_empty() {
        return String::new();
    }
    let d = Sha224::digest(format!("{project_id}{host}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn links(base: &str, kind: &str, id: &str) -> Value {
    let href = format!("{base}/v2.1/{kind}/{id}");
    json!([{"rel": "self", "href": href}, {"rel": "bookmark", "href": format!("{base}/{kind}/{id}")}])
}

/// The short form used by `GET /servers`.
pub fn summary(i: &Instance, base: &str) -> Value {
    json!({"id": i.uuid, "name": i.name, "links": links(base, "servers", &i.uuid)})
}

/// `addresses`: network name → IPs.
fn addresses(i: &Instance) -> Value {
    let mut m = Map::new();
    for p in &i.ports {
        let name = if p.network_name.is_empty() { p.network_id.clone() } else { p.network_name.clone() };
        let entry = m.entry(name).or_insert_with(|| json!([]));
        for ip in &p.fixed_ips {
            let version = if ip.contains(':') { 6 } else { 4 };
            if let Some(a) = entry.as_array_mut() {
                a.push(json!({"version": version, "addr": ip, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": p.mac_address}));
            }
        }
    }
    Value::Object(m)
}

/// The full server (`GET /servers/{id}`, `/servers/detail`). `admin` adds the
/// extended server attributes.
pub fn detail(i: &Instance, base: &str, v: ApiVersion, admin: bool) -> Value {
    let status = state::status(&i.vm_state, i.task_state.as_deref());
    let mut o = json!({
        "id": i.uuid,
        "name": i.name,
        "status": status,
        "tenant_id": i.project_id,
        "user_id": i.user_id,
        "metadata": i.metadata,
        "hostId": host_id(&i.project_id, i.host.as_deref().unwrap_or("")),
        "created": seconds_z(&i.created_at),
        "updated": seconds_z(&i.updated_at),
        "addresses": addresses(i),
        "accessIPv4": i.access_ipv4.clone().unwrap_or_default(),
        "accessIPv6": i.access_ipv6.clone().unwrap_or_default(),
        "links": links(base, "servers", &i.uuid),
        "OS-DCF:diskConfig": if i.auto_disk_config { "AUTO" } else { "MANUAL" },
        "OS-EXT-AZ:availability_zone": i.availability_zone.clone().unwrap_or_default(),
        "config_drive": if i.config_drive { "True" } else { "" },
        "key_name": i.key_name,
        "OS-SRV-USG:launched_at": i.launched_at.as_deref().map(micros_naive),
        "OS-SRV-USG:terminated_at": i.terminated_at.as_deref().map(micros_naive),
        "OS-EXT-STS:task_state": i.task_state,
        "OS-EXT-STS:vm_state": i.vm_state,
        "OS-EXT-STS:power_state": i.power_state,
        "os-extended-volumes:volumes_attached": i.bdms.iter().map(|b| if v.at_least(2, 3) {
            json!({"id": b.volume_id, "delete_on_termination": b.delete_on_termination})
        } else {
            json!({"id": b.volume_id})
        }).collect::<Vec<_>>(),
    });
    o["image"] = if i.image_ref.is_empty() {
        json!("")
    } else {
        json!({"id": i.image_ref, "links": [{"rel": "bookmark", "href": format!("{base}/images/{}", i.image_ref)}]})
    };
    o["flavor"] = if v.at_least(2, 47) {
        let f = &i.flavor;
        let mut fl = json!({
            "vcpus": f.vcpus, "ram": f.ram, "disk": f.disk, "ephemeral": f.ephemeral, "swap": f.swap,
            "original_name": f.name,
        });
        fl["extra_specs"] = json!(f.extra_specs);
        fl
    } else {
        json!({"id": i.flavor.id, "links": [{"rel": "bookmark", "href": format!("{base}/flavors/{}", i.flavor.id)}]})
    };
    if matches!(status, "BUILD" | "REBUILD" | "RESIZE" | "VERIFY_RESIZE" | "MIGRATING" | "ACTIVE") {
        o["progress"] = json!(i.progress);
    }
    // Nova leaves the key out when the server is in no group (e.g. all were removed).
    if !i.security_groups.is_empty() {
        o["security_groups"] = json!(i.security_groups.iter().map(|n| json!({"name": n})).collect::<Vec<_>>());
    }
    if matches!(status, "ERROR" | "DELETED") {
        if let Some(f) = &i.fault {
            let mut f = f.clone();
            if !admin && f["code"].as_u64() == Some(500) {
                // Non-admins see the message, not the internals.
                if let Some(m) = f.as_object_mut() {
                    m.remove("details");
                }
            }
            if let Some(c) = f["created"].as_str() {
                f["created"] = json!(seconds_z(c));
            }
            o["fault"] = f;
        }
    }
    if admin {
        o["OS-EXT-SRV-ATTR:host"] = json!(i.host);
        o["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!(i.node);
        o["OS-EXT-SRV-ATTR:instance_name"] = json!(format!("instance-{}", &i.uuid[..8.min(i.uuid.len())]));
        if v.at_least(2, 3) {
            o["OS-EXT-SRV-ATTR:reservation_id"] = json!(i.reservation_id);
            o["OS-EXT-SRV-ATTR:launch_index"] = json!(i.launch_index);
            o["OS-EXT-SRV-ATTR:hostname"] = json!(i.hostname);
            o["OS-EXT-SRV-ATTR:kernel_id"] = json!("");
            o["OS-EXT-SRV-ATTR:ramdisk_id"] = json!("");
            o["OS-EXT-SRV-ATTR:root_device_name"] = json!("/dev/vda");
            o["OS-EXT-SRV-ATTR:user_data"] = json!(i.user_data);
        }
    }
    if v.at_least(2, 9) {
        o["locked"] = json!(i.locked);
    }
    if v.at_least(2, 16) && admin {
        o["host_status"] = json!(if i.host.is_some() { "UP" } else { "" });
    }
    if v.at_least(2, 19) {
        o["description"] = json!(i.description);
    }
    if v.at_least(2, 26) {
        o["tags"] = json!(i.tags);
    }
    if v.at_least(2, 63) {
        o["trusted_image_certificates"] = Value::Null;
    }
    if v.at_least(2, 71) {
        o["server_groups"] = json!([]);
    }
    if v.at_least(2, 73) {
        o["locked_reason"] = json!(i.locked_reason);
    }
    if v.at_least(2, 90) {
        o["OS-EXT-SRV-ATTR:hostname"] = json!(i.hostname);
    }
    if v.at_least(2, 96) {
        o["pinned_availability_zone"] = json!(i.requested_az);
    }
    o
}

/// Which response a server body is for, besides `GET /servers/{id}` (the full
/// [`detail`]): Nova leaves fields out of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `GET /servers/detail`: everything but `server_groups`.
    List,
    /// `PUT /servers/{id}`: below 2.75 without the extension fields.
    Update,
    /// The `rebuild` action: as `Update`, with `key_name` from 2.54 and `user_data` from 2.57.
    Rebuild,
}

/// Fields of the full view that update and rebuild leave out below 2.75 (Nova's view
/// builder with `show_AZ`, `show_config_drive`, `show_keypair`, `show_srv_usg`,
/// `show_sec_grp`, `show_extended_status`, `show_extended_volumes`, `show_extended_attr`
/// and `show_host_status` off).
const EXTENSION_FIELDS: &[&str] = &[
    "OS-EXT-AZ:availability_zone",
    "config_drive",
    "key_name",
    "OS-SRV-USG:launched_at",
    "OS-SRV-USG:terminated_at",
    "security_groups",
    "OS-EXT-STS:task_state",
    "OS-EXT-STS:vm_state",
    "OS-EXT-STS:power_state",
    "os-extended-volumes:volumes_attached",
    "OS-EXT-SRV-ATTR:host",
    "OS-EXT-SRV-ATTR:hypervisor_hostname",
    "OS-EXT-SRV-ATTR:instance_name",
    "OS-EXT-SRV-ATTR:reservation_id",
    "OS-EXT-SRV-ATTR:launch_index",
    "OS-EXT-SRV-ATTR:kernel_id",
    "OS-EXT-SRV-ATTR:ramdisk_id",
    "OS-EXT-SRV-ATTR:root_device_name",
    "OS-EXT-SRV-ATTR:user_data",
    "host_status",
];

/// Cuts a full view (from [`detail`], addresses decorated) down to what `shape` shows at
/// `v`, and adds the rebuild-only `user_data`.
pub fn shape(body: &mut Value, i: &Instance, v: ApiVersion, shape: Shape) {
    let Some(o) = body.as_object_mut() else { return };
    if shape == Shape::List {
        o.remove("server_groups");
    }
    if matches!(shape, Shape::Update | Shape::Rebuild) {
        if !v.at_least(2, 75) {
            for k in EXTENSION_FIELDS {
                o.remove(*k);
            }
            if shape == Shape::Rebuild && v.at_least(2, 54) {
                o.insert("key_name".into(), json!(i.key_name));
            }
            // Addresses without the OS-EXT-IPS extension attributes.
            for list in o.get_mut("addresses").and_then(Value::as_object_mut).into_iter().flat_map(|m| m.values_mut()) {
                for a in list.as_array_mut().into_iter().flatten().filter_map(Value::as_object_mut) {
                    a.remove("OS-EXT-IPS:type");
                    a.remove("OS-EXT-IPS-MAC:mac_addr");
                }
            }
        } else if shape == Shape::Rebuild {
            o.remove("OS-EXT-SRV-ATTR:user_data");
        }
        if shape == Shape::Rebuild && v.at_least(2, 57) {
            o.insert("user_data".into(), json!(i.user_data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_id_is_opaque_and_empty_without_host() {
        assert_eq!(host_id("p", ""), "");
        assert_eq!(host_id("p", "h").len(), 56);
        assert_ne!(host_id("p", "h"), host_id("q", "h"));
    }
}
