//! The desired state the network service sends to an agent.
//!
//! The network service (crate `stratus-network`) answers the bus call
//! `get_desired_state {"host": "<agent host>"}` on topic `network-server` with one
//! JSON document of this shape. It may send the whole cloud's state or only what is
//! relevant to the host (networks with a port bound to it, plus every port of those
//! networks so l2population and remote security groups can be computed); the agent
//! filters by `binding:host_id` either way. Field names follow Neutron's API where one
//! exists, so the service can mostly serialise its rows as they are.
//!
//! ```json
//! {
//!   "generation": 42,
//!   "hosts": [{"host": "compute1", "tunnel_ip": "192.0.2.1"}],
//!   "networks": [{"id": "6b0c…", "project_id": "p1", "provider:network_type": "vxlan",
//!                 "provider:segmentation_id": 1001, "provider:physical_network": null,
//!                 "mtu": 1450, "router:external": false, "admin_state_up": true}],
//!   "subnets": [{"id": "a1…", "network_id": "6b0c…", "ip_version": 4, "cidr": "10.0.0.0/24",
//!                "gateway_ip": "10.0.0.1", "enable_dhcp": true, "dns_nameservers": ["192.0.2.53"],
//!                "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.254"}]}],
//!   "ports": [{"id": "c3…", "network_id": "6b0c…", "mac_address": "fa:16:3e:00:00:05",
//!              "fixed_ips": [{"subnet_id": "a1…", "ip_address": "10.0.0.5"}],
//!              "device_owner": "compute:nova", "device_id": "<server id>",
//!              "binding:host_id": "compute1", "security_groups": ["sg1"],
//!              "allowed_address_pairs": [{"ip_address": "10.0.0.100/32", "mac_address": null}],
//!              "port_security_enabled": true, "admin_state_up": true}],
//!   "routers": [{"id": "r1…", "project_id": "p1", "enable_snat": true,
//!                "gateway_port_id": "<port with device_owner network:router_gateway>",
//!                "interface_port_ids": ["<ports with device_owner network:router_interface>"],
//!                "routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.254"}]}],
//!   "floating_ips": [{"id": "f1…", "floating_ip_address": "203.0.113.20",
//!                     "floating_network_id": "<external net>", "router_id": "r1…",
//!                     "port_id": "c3…", "fixed_ip_address": "10.0.0.5"}],
//!   "security_groups": [{"id": "sg1", "project_id": "p1", "stateful": true, "rules": [
//!       {"id": "r", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
//!        "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0",
//!        "remote_group_id": null}]}]
//! }
//! ```
//!
//! Placement of the per-network services follows the ports: a host runs the DHCP
//! namespace of a network when that network's `network:dhcp` port is bound to it, and a
//! router's namespace when the router's ports are bound to it (the service schedules by
//! setting `binding:host_id`). The `hosts` table gives each agent's VXLAN endpoint
//! (Neutron's agent `configurations.tunneling_ip`), which l2population needs.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Everything an agent needs to realise; see the module doc for the JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DesiredState {
    /// Increases with every change on the service side; agents log it, nothing depends on it.
    pub generation: u64,
    /// Agents and their tunnel endpoints.
    pub hosts: Vec<HostInfo>,
    /// Networks.
    pub networks: Vec<Network>,
    /// Subnets.
    pub subnets: Vec<Subnet>,
    /// Ports of every owner (guests, DHCP, router interfaces and gateways).
    pub ports: Vec<Port>,
    /// Routers.
    pub routers: Vec<Router>,
    /// Floating IPs (associated or not).
    pub floating_ips: Vec<FloatingIp>,
    /// Security groups with their rules.
    pub security_groups: Vec<SecurityGroup>,
}

/// One agent host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostInfo {
    /// The host name ports are bound to (`binding:host_id`).
    pub host: String,
    /// Local VXLAN endpoint of that host; `None` when it has no tunnel networks.
    #[serde(default)]
    pub tunnel_ip: Option<Ipv4Addr>,
}

/// `provider:network_type`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// Untagged on a physical interface.
    Flat,
    /// 802.1Q on a physical interface.
    Vlan,
    /// VXLAN between hosts' tunnel endpoints.
    Vxlan,
    /// Host-local only (a bridge and nothing else).
    Local,
}

/// A network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    /// UUID.
    pub id: String,
    /// Owner.
    #[serde(default)]
    pub project_id: String,
    /// Segment type.
    #[serde(rename = "provider:network_type")]
    pub network_type: NetworkType,
    /// VLAN id or VNI.
    #[serde(rename = "provider:segmentation_id", default)]
    pub segmentation_id: Option<u32>,
    /// Physical network name for flat/vlan (mapped to an interface by the agent config).
    #[serde(rename = "provider:physical_network", default)]
    pub physical_network: Option<String>,
    /// MTU given to the bridge and advertised by DHCP.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Whether it is an external network (routers' gateways live there).
    #[serde(rename = "router:external", default)]
    pub router_external: bool,
    /// Down networks are realised but their bridge is kept down.
    #[serde(default = "yes")]
    pub admin_state_up: bool,
}

fn default_mtu() -> u32 {
    1500
}

fn yes() -> bool {
    true
}

/// A static route (subnet `host_routes`, router `routes`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Route {
    /// CIDR.
    pub destination: String,
    /// Next hop address.
    pub nexthop: String,
}

/// A subnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subnet {
    /// UUID.
    pub id: String,
    /// Network it belongs to.
    pub network_id: String,
    /// 4 or 6.
    #[serde(default = "four")]
    pub ip_version: u8,
    /// CIDR.
    pub cidr: String,
    /// Gateway, if any.
    #[serde(default)]
    pub gateway_ip: Option<String>,
    /// Whether DHCP serves it.
    #[serde(default = "yes")]
    pub enable_dhcp: bool,
    /// DNS servers advertised by DHCP.
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
    /// Extra routes advertised by DHCP (option 121).
    #[serde(default)]
    pub host_routes: Vec<Route>,
    /// IPv6: who sends router advertisements and with which flags (`slaac`,
    /// `dhcpv6-stateful`, `dhcpv6-stateless`); `None` = nobody of ours.
    #[serde(default)]
    pub ipv6_ra_mode: Option<String>,
    /// IPv6: how guests get addresses (same values); `None` = not by us.
    #[serde(default)]
    pub ipv6_address_mode: Option<String>,
}

impl Subnet {
    /// The prefix length of the CIDR.
    pub fn prefix_len(&self) -> Option<u8> {
        self.cidr.split_once('/')?.1.parse().ok()
    }

    /// IPv6 subnet whose addresses come from the MAC (SLAAC or DHCPv6-stateless), as
    /// Neutron's `is_auto_address_subnet`.
    pub fn is_auto_address(&self) -> bool {
        let auto = |m: &Option<String>| matches!(m.as_deref(), Some("slaac") | Some("dhcpv6-stateless"));
        self.ip_version == 6 && (auto(&self.ipv6_address_mode) || auto(&self.ipv6_ra_mode))
    }
}

fn four() -> u8 {
    4
}

/// One fixed IP of a port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FixedIp {
    /// Subnet the address is from.
    pub subnet_id: String,
    /// The address.
    pub ip_address: String,
}

/// An `allowed_address_pairs` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddressPair {
    /// Address or CIDR.
    pub ip_address: String,
    /// MAC; the port's own when absent.
    #[serde(default)]
    pub mac_address: Option<String>,
}

/// A port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Port {
    /// UUID.
    pub id: String,
    /// Network.
    pub network_id: String,
    /// MAC address.
    pub mac_address: String,
    /// Addresses.
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    /// `compute:<az>`, `network:dhcp`, `network:router_interface`, `network:router_gateway`, ...
    #[serde(default)]
    pub device_owner: String,
    /// Server or router id.
    #[serde(default)]
    pub device_id: String,
    /// Host the port is bound to; empty when unbound.
    #[serde(rename = "binding:host_id", default)]
    pub binding_host_id: String,
    /// Security group ids.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Extra addresses the port may use.
    #[serde(default)]
    pub allowed_address_pairs: Vec<AddressPair>,
    /// Anti-spoofing and security groups apply only when true.
    #[serde(default = "yes")]
    pub port_security_enabled: bool,
    /// Down ports are not plugged.
    #[serde(default = "yes")]
    pub admin_state_up: bool,
}

impl Port {
    /// Ports a guest (or anything but Neutron itself) owns get security groups.
    pub fn is_network_owned(&self) -> bool {
        self.device_owner.starts_with("network:")
    }

    /// IPv4 fixed addresses.
    pub fn ipv4s(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.fixed_ips.iter().filter_map(|f| f.ip_address.parse().ok())
    }

    /// IPv6 fixed addresses.
    pub fn ipv6s(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.fixed_ips.iter().filter_map(|f| f.ip_address.parse().ok())
    }

    /// The IPv6 link-local address the kernel derives from the MAC (`fe80::` + EUI-64).
    pub fn link_local(&self) -> Option<Ipv6Addr> {
        eui64("fe80::".parse().ok()?, &self.mac_address)
    }
}

/// A router.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Router {
    /// UUID.
    pub id: String,
    /// Owner.
    pub project_id: String,
    /// SNAT of tenant subnets behind the gateway address.
    #[serde(default = "yes")]
    pub enable_snat: bool,
    /// The gateway port on the external network.
    pub gateway_port_id: Option<String>,
    /// Interface ports on tenant subnets.
    pub interface_port_ids: Vec<String>,
    /// Extra routes.
    pub routes: Vec<Route>,
}

/// A floating IP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FloatingIp {
    /// UUID.
    pub id: String,
    /// The public address.
    pub floating_ip_address: String,
    /// External network it is from.
    pub floating_network_id: String,
    /// Router doing the NAT (set while associated).
    #[serde(default)]
    pub router_id: Option<String>,
    /// Associated port.
    #[serde(default)]
    pub port_id: Option<String>,
    /// Associated fixed address.
    #[serde(default)]
    pub fixed_ip_address: Option<String>,
}

/// Rule direction.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Towards the port.
    Ingress,
    /// From the port.
    Egress,
}

/// A security group rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecurityGroupRule {
    /// UUID.
    #[serde(default)]
    pub id: String,
    /// Direction.
    pub direction: Direction,
    /// `IPv4` or `IPv6`.
    #[serde(default = "ipv4")]
    pub ethertype: String,
    /// Name (`tcp`, `icmp`...) or number; any when absent.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Lowest port (or ICMP type).
    #[serde(default)]
    pub port_range_min: Option<u16>,
    /// Highest port (or ICMP code).
    #[serde(default)]
    pub port_range_max: Option<u16>,
    /// Peer prefix.
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    /// Peer group (its members' addresses).
    #[serde(default)]
    pub remote_group_id: Option<String>,
}

fn ipv4() -> String {
    "IPv4".into()
}

/// A security group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecurityGroup {
    /// UUID.
    pub id: String,
    /// Owner.
    #[serde(default)]
    pub project_id: String,
    /// Stateless groups are not supported yet and are treated as stateful.
    #[serde(default = "yes")]
    pub stateful: bool,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<SecurityGroupRule>,
}

impl DesiredState {
    /// Network by id.
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }

    /// Subnet by id.
    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.id == id)
    }

    /// Port by id.
    pub fn port(&self, id: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.id == id)
    }

    /// Tunnel endpoint of a host.
    pub fn tunnel_ip(&self, host: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find(|h| h.host == host).and_then(|h| h.tunnel_ip)
    }
}

/// `prefix` (its upper 64 bits) + the modified EUI-64 interface id of `mac` (RFC 4291
/// appendix A: `ff:fe` in the middle, universal/local bit flipped), as Neutron computes
/// SLAAC addresses.
pub fn eui64(prefix: Ipv6Addr, mac: &str) -> Option<Ipv6Addr> {
    let b: Vec<u8> = mac.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().ok()?;
    if b.len() != 6 {
        return None;
    }
    let iid = u64::from_be_bytes([b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]]);
    let net = u128::from(prefix) & !(u64::MAX as u128);
    Some(Ipv6Addr::from(net | iid as u128))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_doc_example_parses() {
        let doc = include_str!("model.rs");
        let start = doc.find("```json").unwrap() + 7;
        let end = doc[start..].find("```").unwrap() + start;
        let json: String = doc[start..end]
            .lines()
            .map(|l| l.trim_start().trim_start_matches("//!"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace('…', "");
        let s: DesiredState = serde_json::from_str(&json).unwrap();
        assert_eq!(s.networks[0].network_type, NetworkType::Vxlan);
        assert_eq!(s.ports[0].binding_host_id, "compute1");
        assert_eq!(s.security_groups[0].rules[0].direction, Direction::Ingress);
        assert_eq!(s.tunnel_ip("compute1"), Some(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn eui64_matches_the_kernel() {
        let a = eui64("fd00:1::".parse().unwrap(), "fa:16:3e:00:00:05").unwrap();
        assert_eq!(a.to_string(), "fd00:1::f816:3eff:fe00:5");
        assert_eq!(
            eui64("fe80::".parse().unwrap(), "fa:16:3e:12:34:56").unwrap().to_string(),
            "fe80::f816:3eff:fe12:3456"
        );
        assert!(eui64("fe80::".parse().unwrap(), "fa:16:3e:12:34").is_none());
    }
}
