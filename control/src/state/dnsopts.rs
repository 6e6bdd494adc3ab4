//! DNS settings of networks and containers (`--dns`, `--dns-search`, `--dns-option`,
//! `--hostname`, `--add-host`), the address pools networks without `--subnet` take
//! their prefix from (`--default-address-pool`), and their validation.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::net::Ipv4Cidr;

/// Resolvers, search domains or options one network or container lists at most.
pub const MAX_DNS_ITEMS: usize = 6;
/// `--add-host` entries one container holds at most.
pub const MAX_EXTRA_HOSTS: usize = 64;
/// Distinct resolvers named by networks and containers together (each gets a socket).
pub const MAX_RESOLVERS: usize = 64;
/// What `--add-host NAME:host-gateway` names: the container's gateway.
pub const HOST_GATEWAY: &str = "host-gateway";

/// One `--add-host NAME:IP` entry; `ip` None is `host-gateway` (the network's gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

/// A container's own DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDns {
    /// Its upstream resolvers (the gateway still answers it, forwarding there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf `options` (`ndots:2`, `timeout:1`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<ExtraHost>,
}

impl ContainerDns {
    pub fn is_empty(&self) -> bool {
        *self == ContainerDns::default()
    }
}

/// The DNS options of a request, as given (`attach`, `connect`, `vswitch run`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsOpts {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_option: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_host: Vec<String>,
}

impl DnsOpts {
    pub fn is_empty(&self) -> bool {
        *self == DnsOpts::default()
    }

    /// Checks every option and returns the container's settings.
    pub fn parse(&self) -> Result<ContainerDns, StateError> {
        let hostname = match &self.hostname {
            Some(h) if !valid_domain(h) || h.len() > 63 => {
                return Err(StateError::BadHostname(h.clone()));
            }
            h => h.clone(),
        };
        if self.add_host.len() > MAX_EXTRA_HOSTS {
            return Err(StateError::TooManyDns("--add-host", MAX_EXTRA_HOSTS));
        }
        Ok(ContainerDns {
            servers: parse_servers(&self.dns)?,
            search: parse_search(&self.dns_search)?,
            options: parse_options(&self.dns_option)?,
            hostname,
            hosts: (self.add_host.iter())
                .map(|h| parse_extra_host(h))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// `--dns IP[:PORT]` values: at most [`MAX_DNS_ITEMS`], duplicates dropped.
pub fn parse_servers(v: &[String]) -> Result<Vec<SocketAddr>, StateError> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for s in v {
        let a = dataplane::dns::parse_upstream(s)
            .map_err(|e| StateError::BadDnsServer(e.to_string()))?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.len() > MAX_DNS_ITEMS {
        return Err(StateError::TooManyDns("--dns", MAX_DNS_ITEMS));
    }
    Ok(out)
}

/// `--dns-search DOMAIN` values, lowercase without the trailing dot.
pub fn parse_search(v: &[String]) -> Result<Vec<String>, StateError> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        let d = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if !valid_domain(&d) {
            return Err(StateError::BadSearchDomain(s.clone()));
        }
        if !out.contains(&d) {
            out.push(d);
        }
    }
    if out.len() > MAX_DNS_ITEMS {
        return Err(StateError::TooManyDns("--dns-search", MAX_DNS_ITEMS));
    }
    Ok(out)
}

/// `--dns-option OPT` values: one word of letters, digits, `-`, `_`, `:` and `.`
/// (`ndots:2`, `timeout:1`, `rotate`, `edns0`).
fn parse_options(v: &[String]) -> Result<Vec<String>, StateError> {
    for o in v {
        let ok = !o.is_empty()
            && o.len() <= 64
            && (o.bytes()).all(|c| c.is_ascii_alphanumeric() || b"-_:.".contains(&c));
        if !ok {
            return Err(StateError::BadDnsOption(o.clone()));
        }
    }
    if v.len() > MAX_DNS_ITEMS {
        return Err(StateError::TooManyDns("--dns-option", MAX_DNS_ITEMS));
    }
    Ok(v.to_vec())
}

/// `NAME:IP` (an IPv6 address may follow the first colon whole) or `NAME:host-gateway`.
fn parse_extra_host(s: &str) -> Result<ExtraHost, StateError> {
    let bad = || StateError::BadAddHost(s.to_string());
    let (name, ip) = s.split_once(':').ok_or_else(bad)?;
    let name = name.to_ascii_lowercase();
    if !valid_domain(&name) {
        return Err(bad());
    }
    let ip = match ip {
        HOST_GATEWAY => None,
        other => {
            let t = other.trim_start_matches('[').trim_end_matches(']');
            Some(t.parse::<IpAddr>().map_err(|_| bad())?)
        }
    };
    Ok(ExtraHost { name, ip })
}

/// A DNS name: labels of 1 to 63 letters, digits, `-` and `_`, at most 253 in all.
pub fn valid_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// One `--default-address-pool base=CIDR,size=N`: networks without `--subnet` take the
/// first free /N of `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    pub base: Ipv4Cidr,
    pub size: u8,
}

/// Most subnets one pool may be cut into (a /8 in /24s).
pub const MAX_POOL_BLOCKS: u32 = 1 << 16;

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "base={},size={}", self.base, self.size)
    }
}

impl std::str::FromStr for AddressPool {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, StateError> {
        let bad = || StateError::BadPool(s.to_string());
        let (mut base, mut size) = (None, None);
        for part in s.split(',') {
            match part.trim().split_once('=') {
                Some(("base", v)) => base = Some(v.parse::<Ipv4Cidr>().map_err(|_| bad())?),
                Some(("size", v)) => size = Some(v.parse::<u8>().map_err(|_| bad())?),
                _ => return Err(bad()),
            }
        }
        let (base, size) = base.zip(size).ok_or_else(bad)?;
        let fits = base.is_canonical()
            && (base.prefix_len()..=30).contains(&size)
            && base.prefix_len() >= 8
            && size - base.prefix_len() <= 16;
        if !fits {
            return Err(bad());
        }
        Ok(AddressPool { base, size })
    }
}

impl AddressPool {
    /// The first /size block of the pool that overlaps none of `used` (sorted by first
    /// address, none overlapping another): one binary search per block looked at, and
    /// a block inside a used prefix skips to its end.
    pub fn free_block(&self, used: &[(u32, u32)]) -> Option<Ipv4Cidr> {
        let step = 1u64 << (32 - u32::from(self.size));
        let (first, last) = (u64::from(self.base.first()), u64::from(self.base.last()));
        let mut a = first;
        while a + step - 1 <= last {
            let end = a + step - 1;
            let i = used.partition_point(|u| u64::from(u.0) <= end);
            match i.checked_sub(1).and_then(|j| used.get(j)) {
                Some(u) if u64::from(u.1) >= a => {
                    // Skip past the used prefix, to the next block boundary.
                    let next = u64::from(u.1) + 1;
                    a = first + (next - first).div_ceil(step) * step;
                }
                _ => {
                    let ip = std::net::Ipv4Addr::from(u32::try_from(a).ok()?);
                    return Some(Ipv4Cidr::new(ip, self.size));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_or_are_refused_with_the_value() {
        let o = DnsOpts {
            dns: vec!["10.0.0.53".into(), "127.0.0.1:5353".into()],
            dns_search: vec!["Corp.Test.".into()],
            dns_option: vec!["ndots:2".into()],
            hostname: Some("box1".into()),
            add_host: vec![
                "db:10.0.0.9".into(),
                "h6:2001:db8::1".into(),
                "gw:host-gateway".into(),
            ],
        };
        let c = o.parse().unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.search, vec!["corp.test".to_string()]);
        assert_eq!(c.hosts[1].ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(c.hosts[2].ip, None);
        for bad in [
            DnsOpts {
                dns: vec!["nope".into()],
                ..Default::default()
            },
            DnsOpts {
                dns_search: vec!["a..b".into()],
                ..Default::default()
            },
            DnsOpts {
                dns_option: vec!["nd ots".into()],
                ..Default::default()
            },
            DnsOpts {
                add_host: vec!["db".into()],
                ..Default::default()
            },
            DnsOpts {
                add_host: vec!["db:10.0.0.300".into()],
                ..Default::default()
            },
            DnsOpts {
                hostname: Some("-x y".into()),
                ..Default::default()
            },
        ] {
            let e = bad.parse().unwrap_err().to_string();
            assert!(!e.contains('\n') && e.contains("invalid"), "{e}");
        }
    }

    #[test]
    fn pools_parse_and_give_free_blocks() {
        let p: AddressPool = "base=10.10.0.0/16,size=24".parse().unwrap();
        assert_eq!(p.to_string(), "base=10.10.0.0/16,size=24");
        for bad in [
            "base=10.10.0.0/16",
            "base=10.10.0.1/16,size=24",
            "base=10.0.0.0/8,size=30",
            "base=10.10.0.0/16,size=12",
            "size=24,base=x",
        ] {
            assert!(bad.parse::<AddressPool>().is_err(), "{bad}");
        }
        let r = |s: &str| {
            let c: Ipv4Cidr = s.parse().unwrap();
            (c.first(), c.last())
        };
        assert_eq!(p.free_block(&[]).unwrap().to_string(), "10.10.0.0/24");
        let used = vec![r("10.10.0.0/23"), r("10.10.3.0/24")];
        assert_eq!(p.free_block(&used).unwrap().to_string(), "10.10.2.0/24");
        let used = vec![r("10.0.0.0/8")];
        assert_eq!(p.free_block(&used), None);
        // A smaller used prefix inside a block takes the whole block.
        let used = vec![r("10.10.0.128/25")];
        assert_eq!(p.free_block(&used).unwrap().to_string(), "10.10.1.0/24");
    }
}
