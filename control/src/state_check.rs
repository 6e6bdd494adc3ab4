//! Consistency of a loaded state file: everything the requests that built it would have
//! refused. A state that fails here is not used (the daemon starts from the last good
//! one instead), so a hand-edited or damaged file cannot put two networks on one VLAN
//! or one address on two containers.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use dataplane::config::UPLINK_DOMAIN;
use dataplane::wire::MacAddr;

use crate::state::{Container, Endpoint, Network, State, Uplink, valid_name};

/// What is wrong with a state; each message names the entries involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    #[error("{0} networks, more than a daemon holds ({1})")]
    TooManyNetworks(usize, usize),
    #[error("{0} endpoints, more than a daemon's ports ({1})")]
    TooManyEndpoints(usize, usize),
    #[error("network {0:?} is stored under the name {1:?}")]
    NetworkKey(String, String),
    #[error("container {0:?} is stored under the name {1:?}")]
    ContainerKey(String, String),
    #[error("{0:?} is not a valid name")]
    BadName(String),
    #[error("networks {0:?} and {1:?} have the same bridge domain {2}")]
    DuplicateDomain(String, String, u16),
    #[error("network {0:?} has bridge domain {1}, which is reserved")]
    ReservedDomain(String, u16),
    #[error("subnets of networks {0:?} and {1:?} overlap")]
    Overlap(String, String),
    #[error("network {0:?}: subnet {1} is not a /8 to /30 with no host bits")]
    BadSubnet(String, String),
    #[error("network {0:?}: gateway {1} is not a usable address of its subnet")]
    BadGateway(String, IpAddr),
    #[error("network {0:?} has neither IPv4 (subnet and gateway) nor IPv6")]
    NoFamily(String),
    #[error("network {0:?}: ip range {1} is not inside its subnet")]
    BadRange(String, String),
    #[error("network {0:?}: VLAN {1} is out of 1-4094")]
    BadVlan(String, u16),
    #[error("networks {0:?} and {1:?} both use VLAN {2}")]
    DuplicateVlan(String, String, u16),
    #[error("network {0:?}: MTU {1} is out of 68-65520")]
    BadMtu(String, u16),
    #[error("networks {0:?} and {1:?} have the same id")]
    DuplicateId(String, String),
    #[error("network {0:?}: reserved address {1} is not a usable address of it, or reserved twice")]
    BadReservation(String, Ipv4Addr),
    #[error("network {0:?}: address {1} is both reserved and container {2:?}'s")]
    ReservedInUse(String, Ipv4Addr, String),
    #[error("network {0:?}: reserved address {1} is not a usable address of it, or reserved twice")]
    BadReservation6(String, std::net::Ipv6Addr),
    #[error("network {0:?}: address {1} is both reserved and container {2:?}'s")]
    Reserved6InUse(String, std::net::Ipv6Addr, String),
    #[error("container {0:?} has no endpoint")]
    NoEndpoint(String),
    #[error("container {0:?} is on network {1:?}, which does not exist")]
    MissingNetwork(String, String),
    #[error("container {0:?} is on network {1:?} twice")]
    TwiceOnNetwork(String, String),
    #[error("container {0:?}: address {1} is not a usable address of network {2:?}")]
    BadAddress(String, IpAddr, String),
    #[error("containers {0:?} and {1:?} both have address {2} on network {3:?}")]
    DuplicateAddress(String, String, IpAddr, String),
    #[error("container {0:?}: its addresses on network {1:?} are not of the network's families")]
    FamilyMismatch(String, String),
    #[error("container {0:?}: MAC {1} is not a unicast address")]
    BadMac(String, MacAddr),
    #[error("containers {0:?} and {1:?} both have MAC {2} on network {3:?}")]
    DuplicateMac(String, String, MacAddr, String),
    #[error("container {0:?}: trunk VLAN {1} is out of 1-4094")]
    BadTrunk(String, u16),
    #[error("containers {0:?} and {1:?} both publish host port {2}")]
    DuplicatePublished(String, String, String),
    #[error("the packet uplink's address {0} is not usable or overlaps network {1:?}")]
    BadUplink(String, String),
    #[error("the packet uplink's next hop {0} is not another address of its segment")]
    BadNextHop(Ipv4Addr),
    #[error("the packet uplink's MTU {0} is out of 576-65520")]
    BadUplinkMtu(u16),
    #[error("{0:?}: its DNS settings are not valid ({1})")]
    BadDns(String, String),
}

/// Checks every invariant the daemon keeps; the first violation found is returned.
pub fn check(s: &State) -> Result<(), Inconsistency> {
    check_sizes(s)?;
    for (key, n) in &s.networks {
        check_network(key, n)?;
    }
    check_network_pairs(s)?;
    for (key, c) in &s.containers {
        check_container(s, key, c)?;
    }
    check_unique_endpoints(s)?;
    check_published(s)?;
    check_dns(s)?;
    check_uplink(s)
}

/// Resolvers, search domains and DNS options within their limits and well formed, as
/// `network create`, `attach` and `connect` would have taken them.
fn check_dns(s: &State) -> Result<(), Inconsistency> {
    use crate::state::dnsopts::{self, MAX_DNS_ITEMS, MAX_EXTRA_HOSTS, MAX_RESOLVERS};
    let bad = |who: &str, why: &str| Inconsistency::BadDns(who.to_string(), why.to_string());
    let search_ok =
        |v: &[String]| v.len() <= MAX_DNS_ITEMS && v.iter().all(|d| dnsopts::valid_domain(d));
    for n in s.networks.values() {
        if n.dns_servers.len() > MAX_DNS_ITEMS || !search_ok(&n.dns_search) {
            return Err(bad(&n.name, "too many resolvers or a bad search domain"));
        }
    }
    for c in s.containers.values() {
        let d = &c.dns;
        let opts = DnsOptsOf(d);
        if d.servers.len() > MAX_DNS_ITEMS
            || !search_ok(&d.search)
            || d.hosts.len() > MAX_EXTRA_HOSTS
        {
            return Err(bad(&c.name, "too many entries or a bad search domain"));
        }
        if let Err(e) = opts.check() {
            return Err(bad(&c.name, &e));
        }
    }
    if s.named_resolvers().len() > MAX_RESOLVERS {
        return Err(bad("state", "too many distinct resolvers"));
    }
    Ok(())
}

/// A container's stored DNS settings, checked as their options would be.
struct DnsOptsOf<'a>(&'a crate::state::ContainerDns);

impl DnsOptsOf<'_> {
    fn check(&self) -> Result<(), String> {
        let d = self.0;
        let o = crate::state::DnsOpts {
            dns_option: d.options.clone(),
            hostname: d.hostname.clone(),
            add_host: (d.hosts.iter())
                .map(|h| match h.ip {
                    Some(ip) => format!("{}:{ip}", h.name),
                    None => format!("{}:host-gateway", h.name),
                })
                .collect(),
            ..Default::default()
        };
        o.parse().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// No more networks or endpoints than a daemon can run (the checks after this one
/// compare pairs, so they stay bounded too).
fn check_sizes(s: &State) -> Result<(), Inconsistency> {
    let max_ports = dataplane::bridge::fdb::MAX_PORT_SLOTS - dataplane::config::FIRST_PORT.index();
    if s.networks.len() > crate::state::MAX_NETWORKS {
        return Err(Inconsistency::TooManyNetworks(
            s.networks.len(),
            crate::state::MAX_NETWORKS,
        ));
    }
    let endpoints: usize = s.containers.values().map(|c| c.endpoints.len()).sum();
    if endpoints > max_ports {
        return Err(Inconsistency::TooManyEndpoints(endpoints, max_ports));
    }
    Ok(())
}

fn check_uplink(s: &State) -> Result<(), Inconsistency> {
    let Uplink::Packet {
        address,
        next_hop,
        mtu,
        ..
    } = &s.uplink
    else {
        return Ok(());
    };
    let a = *address;
    let usable = (1..=30).contains(&a.prefix_len())
        && a.addr() != a.network().addr()
        && a.addr() != a.broadcast();
    let clash = (s.networks.values()).find(|n| n.subnet.is_some_and(|s| s.overlaps(&a)));
    if !usable || clash.is_some() {
        let with = clash.map(|n| n.name.clone()).unwrap_or_default();
        return Err(Inconsistency::BadUplink(a.to_string(), with));
    }
    if let Some(h) = next_hop
        && (!a.contains(*h) || *h == a.addr())
    {
        return Err(Inconsistency::BadNextHop(*h));
    }
    if let Some(m) = mtu
        && !(576..=65520).contains(m)
    {
        return Err(Inconsistency::BadUplinkMtu(*m));
    }
    check_uplink6(s)
}

/// The packet uplink's IPv6 address: a unicast, not link-local address of its prefix,
/// apart from every network's IPv6 prefix.
fn check_uplink6(s: &State) -> Result<(), Inconsistency> {
    let Uplink::Packet {
        address6: Some(a), ..
    } = &s.uplink
    else {
        return Ok(());
    };
    let usable = (1..=127).contains(&a.prefix_len())
        && a.addr() != a.network().addr()
        && !a.addr().is_multicast()
        && !dataplane::wire::ipv6::is_link_local(&a.addr());
    let clash = (s.networks.values()).find(|n| n.ipv6.is_some_and(|v| v.subnet.overlaps(a)));
    if !usable || clash.is_some() {
        let with = clash.map(|n| n.name.clone()).unwrap_or_default();
        return Err(Inconsistency::BadUplink(a.to_string(), with));
    }
    Ok(())
}

fn check_network(key: &str, n: &Network) -> Result<(), Inconsistency> {
    let bad = |f: fn(String) -> Inconsistency| Err(f(n.name.clone()));
    if key != n.name {
        return Err(Inconsistency::NetworkKey(key.into(), n.name.clone()));
    }
    if !valid_name(&n.name) {
        return bad(Inconsistency::BadName);
    }
    if n.domain >= UPLINK_DOMAIN.0 {
        return Err(Inconsistency::ReservedDomain(n.name.clone(), n.domain));
    }
    check_families(n)?;
    if let Some(r) = n.ip_range
        && !n.subnet.is_some_and(|sub| sub.covers(&r))
    {
        return Err(Inconsistency::BadRange(n.name.clone(), r.to_string()));
    }
    if let Some(v) = n.vlan
        && !(1..=4094).contains(&v)
    {
        return Err(Inconsistency::BadVlan(n.name.clone(), v));
    }
    if !(68..=65520).contains(&n.mtu) {
        return Err(Inconsistency::BadMtu(n.name.clone(), n.mtu));
    }
    for (i, r) in n.reserved.iter().enumerate() {
        let unusable = match n.v4() {
            Some((sub, g)) => {
                !sub.contains(*r) || [sub.network().addr(), sub.broadcast(), g].contains(r)
            }
            None => true,
        };
        if unusable || n.reserved.iter().skip(i + 1).any(|o| o == r) {
            return Err(Inconsistency::BadReservation(n.name.clone(), *r));
        }
    }
    check_reservations6(n)
}

/// The IPv6 reservations: usable addresses of the network's prefix, each once.
fn check_reservations6(n: &Network) -> Result<(), Inconsistency> {
    for (i, r) in n.reserved6.iter().enumerate() {
        let unusable = match n.ipv6 {
            Some(v6) => {
                !v6.subnet.contains(*r) || [v6.subnet.network().addr(), v6.gateway].contains(r)
            }
            None => true,
        };
        if unusable || n.reserved6.iter().skip(i + 1).any(|o| o == r) {
            return Err(Inconsistency::BadReservation6(n.name.clone(), *r));
        }
    }
    Ok(())
}

/// A network's IPv4 (subnet and gateway together) and IPv6, at least one of them.
fn check_families(n: &Network) -> Result<(), Inconsistency> {
    match (n.subnet, n.gateway) {
        (Some(sub), Some(g)) => {
            if !sub.is_canonical() || !(8..=30).contains(&sub.prefix_len()) {
                return Err(Inconsistency::BadSubnet(n.name.clone(), sub.to_string()));
            }
            if !sub.contains(g) || g == sub.network().addr() || g == sub.broadcast() {
                return Err(Inconsistency::BadGateway(n.name.clone(), g.into()));
            }
        }
        (None, None) if n.ipv6.is_some() => {}
        _ => return Err(Inconsistency::NoFamily(n.name.clone())),
    }
    if let Some(v6) = n.ipv6 {
        let sub = v6.subnet;
        if !sub.is_canonical() || !(32..=124).contains(&sub.prefix_len()) {
            return Err(Inconsistency::BadSubnet(n.name.clone(), sub.to_string()));
        }
        if !sub.contains(v6.gateway) || v6.gateway == sub.network().addr() {
            return Err(Inconsistency::BadGateway(n.name.clone(), v6.gateway.into()));
        }
    }
    Ok(())
}

fn check_network_pairs(s: &State) -> Result<(), Inconsistency> {
    let nets: Vec<&Network> = s.networks.values().collect();
    for (i, a) in nets.iter().enumerate() {
        for b in nets.iter().skip(i + 1) {
            let (x, y) = (a.name.clone(), b.name.clone());
            if a.domain == b.domain {
                return Err(Inconsistency::DuplicateDomain(x, y, a.domain));
            }
            if a.overlaps(b) {
                return Err(Inconsistency::Overlap(x, y));
            }
            if let Some(v) = a.vlan
                && a.vlan == b.vlan
            {
                return Err(Inconsistency::DuplicateVlan(x, y, v));
            }
            if a.id == b.id {
                return Err(Inconsistency::DuplicateId(x, y));
            }
        }
    }
    Ok(())
}

fn check_container(s: &State, key: &str, c: &Container) -> Result<(), Inconsistency> {
    if key != c.name {
        return Err(Inconsistency::ContainerKey(key.into(), c.name.clone()));
    }
    if !valid_name(&c.name) {
        return Err(Inconsistency::BadName(c.name.clone()));
    }
    if c.endpoints.is_empty() {
        return Err(Inconsistency::NoEndpoint(c.name.clone()));
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        let n = s
            .networks
            .get(&e.network)
            .ok_or_else(|| Inconsistency::MissingNetwork(c.name.clone(), e.network.clone()))?;
        if c.endpoints
            .iter()
            .skip(i + 1)
            .any(|o| o.network == e.network)
        {
            return Err(Inconsistency::TwiceOnNetwork(
                c.name.clone(),
                e.network.clone(),
            ));
        }
        check_addresses(c, e, n)?;
        if !e.mac.is_unicast() || e.mac.is_zero() {
            return Err(Inconsistency::BadMac(c.name.clone(), e.mac));
        }
        if let Some(v) = e.trunk.iter().find(|v| !(1..=4094).contains(*v)) {
            return Err(Inconsistency::BadTrunk(c.name.clone(), *v));
        }
    }
    Ok(())
}

/// An endpoint has an address of each family its network has, and only those, each
/// a usable address of the network's prefix.
fn check_addresses(c: &Container, e: &Endpoint, n: &Network) -> Result<(), Inconsistency> {
    let bad = |ip: IpAddr| Inconsistency::BadAddress(c.name.clone(), ip, n.name.clone());
    match (n.v4(), e.ip) {
        (Some((sub, gw)), Some(ip)) => {
            let reserved = [sub.network().addr(), sub.broadcast(), gw];
            if !sub.contains(ip) || reserved.contains(&ip) {
                return Err(bad(ip.into()));
            }
        }
        (None, None) => {}
        _ => {
            return Err(Inconsistency::FamilyMismatch(
                c.name.clone(),
                n.name.clone(),
            ));
        }
    }
    match (n.ipv6, e.ip6) {
        (Some(v6), Some(ip)) => {
            if !v6.subnet.contains(ip) || ip == v6.gateway || ip == v6.subnet.network().addr() {
                return Err(bad(ip.into()));
            }
        }
        (_, None) => {}
        (None, Some(_)) => {
            return Err(Inconsistency::FamilyMismatch(
                c.name.clone(),
                n.name.clone(),
            ));
        }
    }
    Ok(())
}

/// No address and no MAC twice on one network.
fn check_unique_endpoints(s: &State) -> Result<(), Inconsistency> {
    let mut ips: HashMap<(&str, IpAddr), &str> = HashMap::new();
    let mut macs: HashMap<(&str, MacAddr), &str> = HashMap::new();
    for c in s.containers.values() {
        for e in &c.endpoints {
            let net = e.network.as_str();
            if let Some(ip) = e.ip
                && s.networks
                    .get(net)
                    .is_some_and(|n| n.reserved.contains(&ip))
            {
                return Err(Inconsistency::ReservedInUse(net.into(), ip, c.name.clone()));
            }
            if let Some(ip) = e.ip6
                && s.networks
                    .get(net)
                    .is_some_and(|n| n.reserved6.contains(&ip))
            {
                return Err(Inconsistency::Reserved6InUse(
                    net.into(),
                    ip,
                    c.name.clone(),
                ));
            }
            let addrs = [e.ip.map(IpAddr::V4), e.ip6.map(IpAddr::V6)];
            for ip in addrs.into_iter().flatten() {
                if let Some(o) = ips.insert((net, ip), &c.name) {
                    return Err(Inconsistency::DuplicateAddress(
                        o.into(),
                        c.name.clone(),
                        ip,
                        net.into(),
                    ));
                }
            }
            if let Some(o) = macs.insert((net, e.mac), &c.name) {
                return Err(Inconsistency::DuplicateMac(
                    o.into(),
                    c.name.clone(),
                    e.mac,
                    net.into(),
                ));
            }
        }
    }
    Ok(())
}

fn check_published(s: &State) -> Result<(), Inconsistency> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for c in s.containers.values() {
        for p in &c.published {
            let addr = std::net::SocketAddr::new(p.host_ip, p.host_port);
            let key = format!("{addr}/{}", p.proto);
            if let Some(o) = seen.insert(key.clone(), &c.name) {
                return Err(Inconsistency::DuplicatePublished(
                    o.into(),
                    c.name.clone(),
                    key,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EndpointSpec, NetworkSpec, Sandbox};

    fn good() -> State {
        let mut s = State::new(None, None).expect("state");
        let spec = NetworkSpec {
            name: "front".into(),
            vlan: Some(10),
            ..Default::default()
        };
        s.create_network(&spec).expect("network");
        for name in ["a", "b"] {
            let sb = Sandbox::Netns {
                path: format!("/run/netns/{name}"),
            };
            let ep = EndpointSpec {
                network: "front".into(),
                port_security: true,
                ..Default::default()
            };
            let c = s.check_attach(name, &sb, &ep).expect("attach");
            s.attach(c);
        }
        s
    }

    fn refused(f: impl FnOnce(&mut State), want: &str) {
        let mut s = good();
        f(&mut s);
        let e = check(&s).expect_err("refused").to_string();
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }

    /// A state file with more networks or endpoints than a daemon runs is refused by
    /// size, before the checks that compare pairs.
    #[test]
    fn oversized_states_are_refused() {
        refused(
            |s| {
                let n = s.networks.get("front").expect("front").clone();
                for i in 0..crate::state::MAX_NETWORKS {
                    s.networks.insert(format!("x{i}"), n.clone());
                }
            },
            "more than a daemon holds (4094)",
        );
        refused(
            |s| {
                let c = s.containers.get("a").expect("a").clone();
                for i in 0..2100 {
                    let mut c = c.clone();
                    c.endpoints.push(c.endpoints[0].clone());
                    s.containers.insert(format!("y{i}"), c);
                }
            },
            "more than a daemon's ports (4094)",
        );
    }

    #[test]
    fn a_state_built_by_requests_passes() {
        assert_eq!(check(&good()), Ok(()));
    }

    #[test]
    fn each_inconsistency_is_named() {
        let net = |s: &mut State| s.networks.get_mut("front").expect("front").clone();
        refused(
            |s| s.networks.get_mut("front").expect("n").vlan = Some(4095),
            "VLAN 4095",
        );
        refused(
            |s| {
                let mut n = net(s);
                n.name = "other".into();
                n.subnet = Some("10.1.0.0/16".parse().expect("cidr"));
                n.gateway = Some(Ipv4Addr::new(10, 1, 0, 1));
                n.domain = 7;
                s.networks.insert("other".into(), n);
            },
            "both use VLAN 10",
        );
        refused(
            |s| {
                let mut n = net(s);
                n.name = "other".into();
                n.vlan = None;
                n.domain = 7;
                s.networks.insert("other".into(), n);
            },
            "overlap",
        );
        refused(
            |s| {
                let n = s.networks.get_mut("front").expect("n");
                n.subnet = Some("172.18.0.0/31".parse().expect("cidr"));
            },
            "not a /8 to /30",
        );
        refused(
            |s| {
                let mut n = net(s);
                (n.subnet, n.gateway) = (
                    Some("10.1.0.0/16".parse().expect("cidr")),
                    Some([10, 1, 0, 1].into()),
                );
                (n.name, n.vlan, n.domain) = ("other".into(), None, 7);
                s.networks.insert("other".into(), n);
            },
            "have the same id",
        );
        refused(
            |s| {
                let ip = s.containers["a"].endpoints[0].ip.expect("IPv4");
                s.networks.get_mut("front").expect("n").reserved.push(ip);
            },
            "both reserved and container \"a\"'s",
        );
        refused(
            |s| {
                let n = s.networks.get_mut("front").expect("n");
                n.reserved = n.gateway.into_iter().collect();
            },
            "reserved address",
        );
        refused(
            |s| s.networks.get_mut("front").expect("n").domain = 0,
            "same bridge domain",
        );
        refused(
            |s| {
                let ip = s.containers["a"].endpoints[0].ip;
                s.containers.get_mut("b").expect("b").endpoints[0].ip = ip;
            },
            "both have address",
        );
        refused(
            |s| {
                let mac = s.containers["a"].endpoints[0].mac;
                s.containers.get_mut("b").expect("b").endpoints[0].mac = mac;
            },
            "both have MAC",
        );
        refused(
            |s| s.containers.get_mut("a").expect("a").endpoints[0].network = "gone".into(),
            "does not exist",
        );
        refused(
            |s| {
                s.uplink = Uplink::Packet {
                    tap: Some("t".into()),
                    netns: None,
                    address: "172.18.0.9/24".parse().expect("cidr"),
                    next_hop: None,
                    mtu: None,
                    address6: None,
                    next_hop6: None,
                }
            },
            "overlaps network \"front\"",
        );
        refused(
            |s| {
                s.uplink = Uplink::Packet {
                    tap: Some("t".into()),
                    netns: None,
                    address: "198.51.100.2/24".parse().expect("cidr"),
                    next_hop: None,
                    mtu: None,
                    address6: Some("fe80::2/64".parse().expect("cidr")),
                    next_hop6: None,
                }
            },
            "fe80::2/64 is not usable",
        );
        refused(
            |s| {
                let mut n = s.networks.remove("front").expect("n");
                n.name = "renamed".into();
                s.networks.insert("front".into(), n);
            },
            "stored under the name",
        );
    }
}
