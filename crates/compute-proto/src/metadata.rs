//! Instance metadata content: the files a guest reads from the metadata service or from a
//! config drive, in the OpenStack and EC2 formats.
//!
//! Pure functions, no I/O and no dependency beyond `serde_json`: the metadata API (crate
//! `stratus-compute`, module `metadata`) serves [`MetadataTree::lookup`] over HTTP, and a
//! config drive writer can put [`MetadataTree::files`] into an ISO9660 image labelled
//! `config-2` as they are (paths are relative to the drive's root, e.g.
//! `openstack/latest/meta_data.json`; EC2 files under `ec2/` on a drive, see
//! [`MetadataTree::config_drive_files`]).
//!
//! Layout (what cloud-init's OpenStack and EC2 datasources read):
//! - `openstack/{latest,2018-08-27}/meta_data.json` (uuid, name, hostname, launch_index,
//!   availability_zone, project_id, public_keys, keys, meta, devices),
//!   `user_data` (raw, only when given), `network_data.json` (links, networks, services),
//!   `vendor_data.json` and `vendor_data2.json` (empty objects).
//! - `{latest,2009-04-04}/meta-data/...`: `instance-id`, `hostname`, `local-hostname`,
//!   `public-hostname`, `local-ipv4`, `public-ipv4`, `ami-id`, `ami-launch-index`,
//!   `instance-type`, `reservation-id`, `security-groups`, `placement/availability-zone`,
//!   `block-device-mapping/{ami,root}`, `public-keys/0/openssh-key`; `latest/user-data`.
//!
//! Directory listings follow the formats: names one per line, subdirectories with a
//! trailing `/`, and EC2's `public-keys/` lists `0=<key name>`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// One fixed IP of a NIC, for `network_data.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpFacts {
    /// Address.
    pub address: String,
    /// Subnet CIDR (`10.0.0.0/24`).
    pub cidr: String,
    /// Gateway, if the subnet has one.
    pub gateway: Option<String>,
    /// Whether DHCP serves the subnet (type `ipv4_dhcp` rather than static `ipv4`).
    pub dhcp: bool,
    /// DNS servers of the subnet.
    pub dns_nameservers: Vec<String>,
    /// Extra routes `(destination CIDR, next hop)`.
    pub routes: Vec<(String, String)>,
}

/// A NIC (a port) of the instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NicFacts {
    /// Port id.
    pub port_id: String,
    /// Network id.
    pub network_id: String,
    /// MAC address.
    pub mac: String,
    /// MTU of the network.
    pub mtu: Option<u32>,
    /// Addresses.
    pub ips: Vec<IpFacts>,
}

/// What the metadata is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceFacts {
    /// Server UUID.
    pub uuid: String,
    /// Display name.
    pub name: String,
    /// Host name (`hostname` of the server).
    pub hostname: String,
    /// Owner.
    pub project_id: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Index within a multi-create.
    pub launch_index: i64,
    /// Reservation id (`r-…`).
    pub reservation_id: String,
    /// Flavor name (EC2 `instance-type`).
    pub flavor_name: String,
    /// Image id (EC2 `ami-id`).
    pub image_id: String,
    /// Key pair name and public key.
    pub key: Option<(String, String)>,
    /// User data, decoded (the API takes it base64).
    pub user_data: Option<Vec<u8>>,
    /// Server metadata (`meta`).
    pub meta: BTreeMap<String, String>,
    /// Security group names.
    pub security_groups: Vec<String>,
    /// NICs in boot order.
    pub nics: Vec<NicFacts>,
    /// Floating IP, if any (EC2 `public-ipv4`).
    pub public_ipv4: Option<String>,
}

/// Prefix length of a CIDR as a dotted netmask (IPv4) or the prefix itself (IPv6).
fn netmask(cidr: &str) -> String {
    let (net, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let len: u32 = len.parse().unwrap_or(32);
    if net.contains(':') {
        return len.to_string();
    }
    let m: u32 = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32)) };
    format!("{}.{}.{}.{}", m >> 24, (m >> 16) & 255, (m >> 8) & 255, m & 255)
}

fn tap_name(port_id: &str) -> String {
    format!("tap{}", port_id.chars().take(11).collect::<String>())
}

impl InstanceFacts {
    /// The first IPv4 address (EC2 `local-ipv4`).
    pub fn local_ipv4(&self) -> Option<&str> {
        self.nics.iter().flat_map(|n| &n.ips).map(|i| i.address.as_str()).find(|a| !a.contains(':'))
    }

    /// Nova's EC2 instance id shape (`i-` and 8 hex digits), derived from the UUID.
    pub fn ec2_instance_id(&self) -> String {
        format!("i-{}", self.uuid.chars().filter(char::is_ascii_hexdigit).take(8).collect::<String>())
    }

    /// `openstack/latest/meta_data.json`.
    pub fn meta_data_json(&self) -> Value {
        let mut keys = vec![];
        let mut public_keys = serde_json::Map::new();
        if let Some((name, data)) = &self.key {
            keys.push(json!({"name": name, "type": "ssh", "data": data}));
            public_keys.insert(name.clone(), json!(data));
        }
        json!({
            "uuid": self.uuid,
            "name": self.name,
            "hostname": self.hostname,
            "launch_index": self.launch_index,
            "availability_zone": self.availability_zone,
            "project_id": self.project_id,
            "public_keys": public_keys,
            "keys": keys,
            "meta": self.meta,
            "devices": [],
        })
    }

    /// `openstack/latest/network_data.json` (Nova's format: links, networks, services).
    pub fn network_data_json(&self) -> Value {
        let mut links = vec![];
        let mut networks = vec![];
        let mut services: Vec<Value> = vec![];
        for nic in &self.nics {
            let link = tap_name(&nic.port_id);
            links.push(json!({
                "id": link,
                "vif_id": nic.port_id,
                "type": "bridge",
                "ethernet_mac_address": nic.mac,
                "mtu": nic.mtu,
            }));
            for ip in &nic.ips {
                let v6 = ip.address.contains(':');
                let mut n = json!({
                    "id": format!("network{}", networks.len()),
                    "link": link,
                    "network_id": nic.network_id,
                    "type": match (v6, ip.dhcp) { (false, true) => "ipv4_dhcp", (false, false) => "ipv4", (true, true) => "ipv6_dhcp", (true, false) => "ipv6" },
                    "ip_address": ip.address,
                    "netmask": netmask(&ip.cidr),
                    "routes": [],
                    "services": ip.dns_nameservers.iter().map(|d| json!({"type": "dns", "address": d})).collect::<Vec<_>>(),
                });
                let mut routes = vec![];
                if let Some(gw) = &ip.gateway {
                    let (network, mask) = if v6 { ("::", "::") } else { ("0.0.0.0", "0.0.0.0") };
                    routes.push(json!({"network": network, "netmask": mask, "gateway": gw}));
                }
                for (dest, hop) in &ip.routes {
                    let net = dest.split('/').next().unwrap_or(dest);
                    routes.push(json!({"network": net, "netmask": netmask(dest), "gateway": hop}));
                }
                n["routes"] = Value::Array(routes);
                networks.push(n);
                for d in &ip.dns_nameservers {
                    let s = json!({"type": "dns", "address": d});
                    if !services.contains(&s) {
                        services.push(s);
                    }
                }
            }
        }
        json!({"links": links, "networks": networks, "services": services})
    }

    /// Every file, keyed by its path relative to the metadata root.
    pub fn tree(&self) -> MetadataTree {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let pretty = |v: &Value| v.to_string().into_bytes();
        for version in ["latest", "2018-08-27"] {
            let d = format!("openstack/{version}");
            files.insert(format!("{d}/meta_data.json"), pretty(&self.meta_data_json()));
            files.insert(format!("{d}/network_data.json"), pretty(&self.network_data_json()));
            files.insert(format!("{d}/vendor_data.json"), b"{}".to_vec());
            files.insert(format!("{d}/vendor_data2.json"), b"{}".to_vec());
            if let Some(u) = &self.user_data {
                files.insert(format!("{d}/user_data"), u.clone());
            }
        }
        let local_ip = self.local_ipv4().unwrap_or_default().to_string();
        let public_ip = self.public_ipv4.clone().unwrap_or_default();
        let mut md: Vec<(&str, String)> = vec![
            ("ami-id", self.image_id.clone()),
            ("ami-launch-index", self.launch_index.to_string()),
            // Nova has always served this literal placeholder (there is no S3 manifest for
            // images it boots); EC2 tools list the key, so it is kept with Nova's exact value.
            ("ami-manifest-path", "FIXME".into()),
            ("block-device-mapping/ami", "vda".into()),
            ("block-device-mapping/root", "/dev/vda".into()),
            ("hostname", self.hostname.clone()),
            ("instance-action", "none".into()),
            ("instance-id", self.ec2_instance_id()),
            ("instance-type", self.flavor_name.clone()),
            ("local-hostname", self.hostname.clone()),
            ("local-ipv4", local_ip),
            ("placement/availability-zone", self.availability_zone.clone()),
            ("public-hostname", self.hostname.clone()),
            ("public-ipv4", public_ip),
            ("reservation-id", self.reservation_id.clone()),
            ("security-groups", self.security_groups.join("\n")),
        ];
        if let Some((_, data)) = &self.key {
            md.push(("public-keys/0/openssh-key", data.clone()));
        }
        let mut listings = BTreeMap::new();
        for version in ["latest", "2009-04-04"] {
            for (k, v) in &md {
                files.insert(format!("{version}/meta-data/{k}"), v.clone().into_bytes());
            }
            if let Some(u) = &self.user_data {
                files.insert(format!("{version}/user-data"), u.clone());
            }
            if let Some((name, _)) = &self.key {
                listings.insert(format!("{version}/meta-data/public-keys"), vec![format!("0={name}")]);
            }
        }
        MetadataTree { files, listings }
    }
}

/// The files of an instance plus the directory listings that are not just child names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataTree {
    /// Path (relative, no leading `/`) → content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Listings that differ from the children's names (EC2 `public-keys/`).
    pub listings: BTreeMap<String, Vec<String>>,
}

/// What a path is.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A file's content.
    File(Vec<u8>),
    /// A directory listing, one name per line (subdirectories end in `/`).
    Dir(Vec<String>),
}

impl MetadataTree {
    /// The file or directory at `path` (leading/trailing `/` ignored; `""` is the root).
    pub fn lookup(&self, path: &str) -> Option<Entry> {
        let p = path.trim_matches('/');
        if let Some(f) = self.files.get(p) {
            return Some(Entry::File(f.clone()));
        }
        if let Some(l) = self.listings.get(p) {
            return Some(Entry::Dir(l.clone()));
        }
        let prefix = if p.is_empty() { String::new() } else { format!("{p}/") };
        let mut names: Vec<String> = vec![];
        for k in self.files.keys().filter(|k| k.starts_with(&prefix)) {
            let rest = &k[prefix.len()..];
            let name = match rest.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => rest.to_string(),
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        (!names.is_empty()).then_some(Entry::Dir(names))
    }

    /// The files as a config drive (`config-2`) carries them: the OpenStack tree as is and
    /// the EC2 tree under `ec2/` (`ec2/latest/meta-data.json` is not produced).
    pub fn config_drive_files(&self) -> BTreeMap<String, Vec<u8>> {
        self.files
            .iter()
            .map(
                |(k, v)| {
                    if k.starts_with("openstack/") {
                        (k.clone(), v.clone())
                    } else {
                        (format!("ec2/{k}"), v.clone())
                    }
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> InstanceFacts {
        InstanceFacts {
            uuid: "6f1c2b8e-0c1a-4a55-9a53-1b2c3d4e5f60".into(),
            name: "web1".into(),
            hostname: "web1".into(),
            project_id: "p1".into(),
            availability_zone: "nova".into(),
            reservation_id: "r-abc".into(),
            flavor_name: "m1.tiny".into(),
            image_id: "img".into(),
            key: Some(("k1".into(), "ssh-ed25519 AAAA test".into())),
            user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
            security_groups: vec!["default".into()],
            nics: vec![NicFacts {
                port_id: "c3d4e5f6-0000-1111-2222-333344445555".into(),
                network_id: "n1".into(),
                mac: "fa:16:3e:00:00:05".into(),
                mtu: Some(1450),
                ips: vec![IpFacts {
                    address: "10.0.0.5".into(),
                    cidr: "10.0.0.0/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    dhcp: true,
                    dns_nameservers: vec!["192.0.2.53".into()],
                    routes: vec![("10.9.0.0/16".into(), "10.0.0.254".into())],
                }],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn openstack_and_ec2_files() {
        let t = facts().tree();
        let md: Value = serde_json::from_slice(&t.files["openstack/latest/meta_data.json"]).unwrap();
        assert_eq!(md["uuid"], "6f1c2b8e-0c1a-4a55-9a53-1b2c3d4e5f60");
        assert_eq!(md["public_keys"]["k1"], "ssh-ed25519 AAAA test");
        assert_eq!(md["keys"][0]["type"], "ssh");
        let nd: Value = serde_json::from_slice(&t.files["openstack/latest/network_data.json"]).unwrap();
        assert_eq!(nd["links"][0]["id"], "tapc3d4e5f6-00");
        assert_eq!(nd["networks"][0]["type"], "ipv4_dhcp");
        assert_eq!(nd["networks"][0]["netmask"], "255.255.255.0");
        assert_eq!(nd["networks"][0]["routes"][1]["netmask"], "255.255.0.0");
        assert_eq!(nd["services"][0]["address"], "192.0.2.53");
        assert_eq!(t.lookup("/latest/meta-data/local-ipv4"), Some(Entry::File(b"10.0.0.5".to_vec())));
        assert_eq!(
            t.lookup("latest/meta-data/public-keys/0/openssh-key"),
            Some(Entry::File(b"ssh-ed25519 AAAA test".to_vec()))
        );
        assert_eq!(t.lookup("latest/meta-data/public-keys/"), Some(Entry::Dir(vec!["0=k1".into()])));
        assert_eq!(t.lookup("latest/user-data"), Some(Entry::File(b"#!/bin/sh\necho hi\n".to_vec())));
        assert_eq!(t.lookup("openstack/"), Some(Entry::Dir(vec!["2018-08-27/".into(), "latest/".into()])));
        let Some(Entry::Dir(md)) = t.lookup("latest/meta-data") else { panic!() };
        assert!(md.contains(&"placement/".to_string()) && md.contains(&"instance-id".to_string()));
        assert_eq!(t.lookup("latest/meta-data/nope"), None);
        assert!(t.config_drive_files().contains_key("ec2/latest/meta-data/hostname"));
    }

    #[test]
    fn no_key_no_user_data() {
        let f = InstanceFacts { key: None, user_data: None, ..facts() };
        let t = f.tree();
        assert_eq!(t.lookup("openstack/latest/user_data"), None);
        assert_eq!(t.lookup("latest/meta-data/public-keys/0/openssh-key"), None);
        assert_eq!(f.ec2_instance_id(), "i-6f1c2b8e");
    }
}
