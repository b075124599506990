//! Address arithmetic: CIDRs, address ranges, MAC addresses.
//!
//! Addresses of both families are `u128` internally (IPv4 in the low 32 bits), so pools,
//! free ranges and EUI-64 derivation are plain integer math. Stored range bounds use a
//! fixed-width hex key whose text order equals numeric order, so SQL can index them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::Rng;

/// A subnet: version, network address and prefix length (host bits always zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// 4 or 6.
    pub version: u8,
    /// Network address.
    pub net: u128,
    /// Prefix length.
    pub prefix: u8,
}

/// Parses an address of either family.
pub fn parse_ip(s: &str) -> Option<(u8, u128)> {
    match s.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some((4, u32::from(a) as u128)),
        IpAddr::V6(a) => Some((6, u128::from(a))),
    }
}

/// Canonical text of an address.
pub fn fmt_ip(version: u8, ip: u128) -> String {
    if version == 4 {
        Ipv4Addr::from(ip as u32).to_string()
    } else {
        Ipv6Addr::from(ip).to_string()
    }
}

/// Canonical form of an address string (`None` when it is not one).
pub fn canonical(s: &str) -> Option<String> {
    parse_ip(s).map(|(v, ip)| fmt_ip(v, ip))
}

/// Sortable storage key of an address.
pub fn key(ip: u128) -> String {
    format!("{ip:032x}")
}

/// Inverse of [`key`].
pub fn from_key(s: &str) -> u128 {
    u128::from_str_radix(s, 16).unwrap_or(0)
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::/n`. With `strict`, host bits must be zero (Neutron
    /// rejects `10.0.0.1/24` as a subnet cidr).
    pub fn parse(s: &str, strict: bool) -> Result<Cidr, String> {
        let (addr, len) = s.trim().split_once('/').ok_or_else(|| format!("'{s}' is not a valid IP subnet"))?;
        let (version, ip) = parse_ip(addr).ok_or_else(|| format!("'{s}' is not a valid IP subnet"))?;
        let bits = if version == 4 { 32 } else { 128 };
        let prefix: u8 =
            len.parse().ok().filter(|p| *p <= bits).ok_or_else(|| format!("'{s}' is not a valid IP subnet"))?;
        let c = Cidr { version, net: 0, prefix };
        let net = ip & c.netmask();
        if strict && net != ip {
            return Err(format!(
                "'{s}' isn't a recognized IP subnet cidr, '{}' is recommended",
                Cidr { version, net, prefix }
            ));
        }
        Ok(Cidr { version, net, prefix })
    }

    /// Address width in bits.
    pub fn bits(&self) -> u8 {
        if self.version == 4 {
            32
        } else {
            128
        }
    }

    fn hostmask(&self) -> u128 {
        let host = (self.bits() - self.prefix) as u32;
        if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        }
    }

    fn netmask(&self) -> u128 {
        let all = if self.version == 4 { u32::MAX as u128 } else { u128::MAX };
        all & !self.hostmask()
    }

    /// First address.
    pub fn first(&self) -> u128 {
        self.net
    }

    /// Last address.
    pub fn last(&self) -> u128 {
        self.net | self.hostmask()
    }

    /// Number of addresses (saturating for a v6 /0).
    pub fn size(&self) -> u128 {
        self.hostmask().saturating_add(1)
    }

    /// True when `ip` of `version` lies inside.
    pub fn contains(&self, version: u8, ip: u128) -> bool {
        version == self.version && ip >= self.first() && ip <= self.last()
    }

    /// True when the two subnets share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.version == other.version && self.first() <= other.last() && other.first() <= self.last()
    }

    /// Neutron's default gateway: the first host address.
    pub fn default_gateway(&self) -> Option<u128> {
        (self.size() > 2 || self.version == 6 && self.size() > 1).then(|| self.net + 1)
    }

    /// Neutron's default pool: every usable host address except the gateway (IPv4 drops
    /// network and broadcast, IPv6 only the subnet-router anycast address).
    pub fn default_pools(&self, gateway: Option<u128>) -> Vec<(u128, u128)> {
        let (lo, hi) = if self.version == 4 {
            if self.size() <= 2 {
                (self.first(), self.last())
            } else {
                (self.first() + 1, self.last() - 1)
            }
        } else {
            (self.first() + 1, self.last())
        };
        if lo > hi {
            return vec![];
        }
        match gateway {
            Some(g) if g >= lo && g <= hi => {
                let mut v = vec![];
                if g > lo {
                    v.push((lo, g - 1));
                }
                if g < hi {
                    v.push((g + 1, hi));
                }
                v
            }
            _ => vec![(lo, hi)],
        }
    }

    /// True when `ip` is the network address or (IPv4) the broadcast address.
    pub fn is_reserved(&self, ip: u128) -> bool {
        self.version == 4 && self.size() > 2 && (ip == self.first() || ip == self.last())
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", fmt_ip(self.version, self.net), self.prefix)
    }
}

/// A random MAC with OpenStack's `fa:16:3e` prefix.
pub fn random_mac() -> String {
    let mut r = rand::thread_rng();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", r.gen::<u8>(), r.gen::<u8>(), r.gen::<u8>())
}

/// Lower-case canonical MAC (`None` when not a unicast-capable 48-bit MAC).
pub fn canonical_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut bytes = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        bytes[i] = u8::from_str_radix(p, 16).ok()?;
    }
    if bytes[0] & 1 == 1 || bytes == [0; 6] {
        return None;
    }
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// SLAAC address of `mac` in a /64 (EUI-64, universal/local bit flipped).
pub fn eui64(cidr: &Cidr, mac: &str) -> Option<u128> {
    let m = canonical_mac(mac)?;
    let b: Vec<u8> = m.split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    let iid = [b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]];
    let mut low = 0u128;
    for x in iid {
        low = (low << 8) | x as u128;
    }
    Some(cidr.net | low)
}

/// Parses `start`/`end` of an allocation pool.
pub fn range_text(version: u8, a: u128, b: u128) -> String {
    format!("{}-{}", fmt_ip(version, a), fmt_ip(version, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_pools() {
        let c = Cidr::parse("10.0.0.0/24", true).unwrap();
        assert_eq!(c.size(), 256);
        assert!(Cidr::parse("10.0.0.1/24", true).unwrap_err().contains("10.0.0.0/24"));
        assert!(Cidr::parse("10.0.0.0/33", true).is_err());
        assert!(Cidr::parse("nonsense", true).is_err());
        let g = c.default_gateway().unwrap();
        assert_eq!(fmt_ip(4, g), "10.0.0.1");
        let pools = c.default_pools(Some(g));
        assert_eq!(pools.len(), 1);
        assert_eq!(range_text(4, pools[0].0, pools[0].1), "10.0.0.2-10.0.0.254");
        let v6 = Cidr::parse("2001:db8::/64", true).unwrap();
        let p6 = v6.default_pools(v6.default_gateway());
        assert_eq!(range_text(6, p6[0].0, p6[0].1), "2001:db8::2-2001:db8::ffff:ffff:ffff:ffff");
        assert!(c.overlaps(&Cidr::parse("10.0.0.128/25", true).unwrap()));
        assert!(!c.overlaps(&Cidr::parse("10.0.1.0/24", true).unwrap()));
        assert!(key(5) < key(16) && from_key(&key(1 << 100)) == 1 << 100);
    }

    #[test]
    fn macs() {
        let m = random_mac();
        assert!(m.starts_with("fa:16:3e:") && canonical_mac(&m).as_deref() == Some(m.as_str()));
        assert_eq!(canonical_mac("FA-16-3E-00-00-01").as_deref(), Some("fa:16:3e:00:00:01"));
        assert!(canonical_mac("01:00:5e:00:00:01").is_none(), "multicast refused");
        assert!(canonical_mac("fa:16:3e:00:00").is_none());
        let v6 = Cidr::parse("2001:db8::/64", true).unwrap();
        assert_eq!(fmt_ip(6, eui64(&v6, "fa:16:3e:11:22:33").unwrap()), "2001:db8::f816:3eff:fe11:2233");
    }
}
