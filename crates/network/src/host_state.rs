//! Per-host desired state: the part of the cloud one agent host realises (Neutron's agents
//! likewise only get the ports bound to them, their networks, and the l2population and
//! security group member data those ports need).
//!
//! A host gets:
//! - the ports bound to it (guests, and the DHCP and router ports scheduled to it);
//! - the networks of those ports, with their subnets and *every* port on them: the DHCP
//!   server needs all its network's hosts entries, a router all its interfaces, the
//!   metadata proxy the addresses it answers for, l2population every remote MAC;
//! - the members of the remote groups its ports' security groups name (their ports, even
//!   on networks the host does not carry, only stand for addresses in nft sets);
//! - the security groups of its ports;
//! - the routers with a port bound to it and their floating IPs;
//! - itself and the VTEPs of hosts with ports on its networks.
//!
//! What the host does not get cannot leak into its kernel: another tenant's network whose
//! ports are all elsewhere never becomes a bridge here, and the size of the document
//! (and of each convergence) grows with what the host runs, not with the cloud.

use std::collections::BTreeSet;

use stratus_network_proto::model::DesiredState;

/// The part of `all` that `host` realises (see the module doc). An empty `host` (a caller
/// that is no agent) gets everything.
pub(crate) fn for_host(all: DesiredState, host: &str) -> DesiredState {
    if host.is_empty() {
        return all;
    }
    let local = |h: &str| h == host;
    let nets: BTreeSet<String> =
        all.ports.iter().filter(|p| local(&p.binding_host_id)).map(|p| p.network_id.clone()).collect();
    let routers: BTreeSet<String> = all
        .routers
        .iter()
        .filter(|r| {
            r.gateway_port_id
                .iter()
                .chain(&r.interface_port_ids)
                .any(|id| all.port(id).is_some_and(|p| local(&p.binding_host_id)))
        })
        .map(|r| r.id.clone())
        .collect();
    let groups: BTreeSet<String> = all
        .ports
        .iter()
        .filter(|p| local(&p.binding_host_id))
        .flat_map(|p| p.security_groups.iter().cloned())
        .collect();
    let remote_groups: BTreeSet<String> = all
        .security_groups
        .iter()
        .filter(|g| groups.contains(&g.id))
        .flat_map(|g| g.rules.iter().filter_map(|r| r.remote_group_id.clone()))
        .collect();
    let ports: Vec<_> = all
        .ports
        .into_iter()
        .filter(|p| nets.contains(&p.network_id) || p.security_groups.iter().any(|g| remote_groups.contains(g)))
        .collect();
    // VTEP peers: hosts with a port on a network this host carries.
    let peers: BTreeSet<&str> = ports
        .iter()
        .filter(|p| nets.contains(&p.network_id))
        .map(|p| p.binding_host_id.as_str())
        .chain([host])
        .collect();
    let hosts = all.hosts.into_iter().filter(|h| peers.contains(h.host.as_str())).collect();
    // Remote group members' subnets are not needed: their addresses are all the firewall uses.
    let subnets = all.subnets.into_iter().filter(|s| nets.contains(&s.network_id)).collect();
    DesiredState {
        generation: all.generation,
        hosts,
        networks: all.networks.into_iter().filter(|n| nets.contains(&n.id)).collect(),
        subnets,
        routers: all.routers.into_iter().filter(|r| routers.contains(&r.id)).collect(),
        floating_ips: all
            .floating_ips
            .into_iter()
            .filter(|f| f.router_id.as_ref().is_some_and(|r| routers.contains(r)))
            .collect(),
        security_groups: all.security_groups.into_iter().filter(|g| groups.contains(&g.id)).collect(),
        ports,
    }
}

#[cfg(test)]
mod tests {
    use stratus_network_proto::model::*;

    use super::*;

    fn port(id: &str, net: &str, host: &str, owner: &str, sgs: &[&str]) -> Port {
        Port {
            id: id.into(),
            network_id: net.into(),
            mac_address: "fa:16:3e:00:00:01".into(),
            fixed_ips: vec![],
            device_owner: owner.into(),
            device_id: String::new(),
            binding_host_id: host.into(),
            security_groups: sgs.iter().map(|s| s.to_string()).collect(),
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            admin_state_up: true,
        }
    }

    fn network(id: &str) -> Network {
        Network {
            id: id.into(),
            project_id: "p".into(),
            network_type: NetworkType::Vxlan,
            segmentation_id: Some(1),
            physical_network: None,
            mtu: 1450,
            router_external: false,
            admin_state_up: true,
        }
    }

    fn subnet(id: &str, net: &str) -> Subnet {
        Subnet {
            id: id.into(),
            network_id: net.into(),
            ip_version: 4,
            cidr: "10.0.0.0/24".into(),
            gateway_ip: None,
            enable_dhcp: true,
            dns_nameservers: vec![],
            host_routes: vec![],
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
        }
    }

    fn sg(id: &str, remote: Option<&str>) -> SecurityGroup {
        SecurityGroup {
            id: id.into(),
            project_id: "p".into(),
            stateful: true,
            rules: vec![SecurityGroupRule {
                id: format!("{id}-r"),
                direction: Direction::Ingress,
                ethertype: "IPv4".into(),
                protocol: None,
                port_range_min: None,
                port_range_max: None,
                remote_ip_prefix: None,
                remote_group_id: remote.map(str::to_string),
            }],
        }
    }

    /// Host A runs `shared` (with B) and `a-only` (DHCP and a router there too); host C
    /// runs `c-only`, whose port is in a group A's group names as remote.
    fn cloud() -> DesiredState {
        let host = |h: &str, ip: &str| HostInfo { host: h.into(), tunnel_ip: Some(ip.parse().unwrap()) };
        DesiredState {
            generation: 7,
            hosts: vec![host("a", "192.0.2.1"), host("b", "192.0.2.2"), host("c", "192.0.2.3")],
            networks: ["shared", "a-only", "c-only", "empty"].into_iter().map(network).collect(),
            subnets: vec![subnet("s-shared", "shared"), subnet("s-a", "a-only"), subnet("s-c", "c-only")],
            ports: vec![
                port("vm-a", "shared", "a", "compute:nova", &["sg-a"]),
                port("vm-b", "shared", "b", "compute:nova", &["sg-b"]),
                port("dhcp-shared", "shared", "a", "network:dhcp", &[]),
                port("vm-a2", "a-only", "a", "compute:nova", &["sg-a"]),
                port("rtr-if", "a-only", "a", "network:router_interface", &[]),
                port("vm-c", "c-only", "c", "compute:nova", &["sg-member"]),
                port("vm-c2", "c-only", "c", "compute:nova", &["sg-c"]),
            ],
            routers: vec![
                Router { id: "r-a".into(), interface_port_ids: vec!["rtr-if".into()], ..Default::default() },
                Router { id: "r-none".into(), ..Default::default() },
            ],
            floating_ips: vec![
                FloatingIp {
                    id: "f-a".into(),
                    floating_ip_address: "203.0.113.5".into(),
                    floating_network_id: "ext".into(),
                    router_id: Some("r-a".into()),
                    port_id: Some("vm-a2".into()),
                    fixed_ip_address: None,
                },
                FloatingIp {
                    id: "f-free".into(),
                    floating_ip_address: "203.0.113.6".into(),
                    floating_network_id: "ext".into(),
                    router_id: None,
                    port_id: None,
                    fixed_ip_address: None,
                },
            ],
            security_groups: vec![
                sg("sg-a", Some("sg-member")),
                sg("sg-b", None),
                sg("sg-member", None),
                sg("sg-c", None),
            ],
        }
    }

    fn ids<T>(v: &[T], f: impl Fn(&T) -> &str) -> Vec<String> {
        let mut out: Vec<String> = v.iter().map(|x| f(x).to_string()).collect();
        out.sort();
        out
    }

    #[test]
    fn host_a_gets_its_networks_router_and_remote_group_members() {
        let s = for_host(cloud(), "a");
        assert_eq!(s.generation, 7);
        assert_eq!(ids(&s.networks, |n| &n.id), ["a-only", "shared"]);
        assert_eq!(ids(&s.subnets, |n| &n.id), ["s-a", "s-shared"]);
        // B's port on the shared network (l2population, DHCP hosts), C's remote-group member.
        assert_eq!(ids(&s.ports, |p| &p.id), ["dhcp-shared", "rtr-if", "vm-a", "vm-a2", "vm-b", "vm-c"]);
        assert_eq!(ids(&s.routers, |r| &r.id), ["r-a"]);
        assert_eq!(ids(&s.floating_ips, |f| &f.id), ["f-a"]);
        assert_eq!(ids(&s.security_groups, |g| &g.id), ["sg-a"]);
        // VTEPs: itself and B (shares `shared`); C only contributes a group member.
        assert_eq!(ids(&s.hosts, |h| &h.host), ["a", "b"]);
    }

    #[test]
    fn host_b_does_not_receive_host_a_only_objects() {
        let s = for_host(cloud(), "b");
        assert_eq!(ids(&s.networks, |n| &n.id), ["shared"]);
        assert_eq!(ids(&s.subnets, |n| &n.id), ["s-shared"]);
        assert_eq!(ids(&s.ports, |p| &p.id), ["dhcp-shared", "vm-a", "vm-b"]);
        assert!(s.routers.is_empty() && s.floating_ips.is_empty(), "A's router and its floating IP stay on A");
        assert_eq!(ids(&s.security_groups, |g| &g.id), ["sg-b"]);
        assert_eq!(ids(&s.hosts, |h| &h.host), ["a", "b"]);
    }

    #[test]
    fn a_host_without_ports_gets_nothing_and_no_host_gets_everything() {
        let s = for_host(cloud(), "idle");
        assert!(s.networks.is_empty() && s.ports.is_empty() && s.routers.is_empty() && s.security_groups.is_empty());
        assert!(s.hosts.is_empty(), "not even C's VTEP");
        assert_eq!(for_host(cloud(), ""), cloud());
    }
}
