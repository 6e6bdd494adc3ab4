//! The pure part of the daemon: the dataplane's [`Snapshot`] and the gateway's
//! [`GatewayConfig`] built from the state and the open ports, with no I/O (unit tested
//! below without a runtime).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use dataplane::bridge::VlanSet;
use dataplane::config::{
    DomainConf, FIRST_PORT, GATEWAY_PORT, PortConf, PortMode, PortRole, Security, Snapshot,
    UPLINK_DOMAIN, UPLINK_PORT, Uplink6, UplinkConf,
};
use dataplane::config::{Net4, Net6};
use dataplane::gateway::config::PacketUplink6;
use dataplane::gateway::{GatewayConfig, Lease, NetConfig, NetDns, PacketUplink, UplinkMode};
use dataplane::ids::{DomainId, Generation, VlanId};
use dataplane::wire::MacAddr;

use super::PortRt;
use crate::net::{Ipv4Cidr, Ipv6Cidr};
use crate::state::{
    Container, DEFAULT_UPLINK_MTU, DnsMode, Endpoint, Network, Proto, State, Uplink,
};

/// What the snapshot and the gateway's configuration are built from.
pub(super) struct Inputs<'a> {
    pub state: &'a State,
    /// Port name -> the port's slot and endpoint.
    pub ports: &'a BTreeMap<String, PortRt>,
    /// Generation per slot.
    pub gens: &'a [u16],
    pub aging_secs: u32,
    pub mac_limit: u32,
    /// The packet uplink's port is open.
    pub uplink_open: bool,
    /// A container not yet in the state (its first port is being opened).
    pub extra: Option<&'a Container>,
    /// Where DNS queries for other names go.
    pub upstreams: &'a [SocketAddr],
}

/// The packet uplink as the state describes it, when its port is open.
struct PacketSegment {
    address: Ipv4Cidr,
    next_hop: Option<Ipv4Addr>,
    mtu: u16,
    address6: Option<Ipv6Cidr>,
    next_hop6: Option<Ipv6Addr>,
}

impl Inputs<'_> {
    fn packet_segment(&self) -> Option<PacketSegment> {
        match &self.state.uplink {
            Uplink::Packet {
                address,
                next_hop,
                mtu,
                address6,
                next_hop6,
                ..
            } if self.uplink_open => Some(PacketSegment {
                address: *address,
                next_hop: *next_hop,
                mtu: mtu.unwrap_or(DEFAULT_UPLINK_MTU),
                address6: *address6,
                next_hop6: *next_hop6,
            }),
            _ => None,
        }
    }

    /// The containers of the state and the one being attached.
    fn containers(&self) -> impl Iterator<Item = &Container> {
        self.state.containers.values().chain(self.extra)
    }
}

/// The dataplane's configuration.
pub(super) fn snapshot(i: &Inputs) -> Snapshot {
    let mut s = Snapshot {
        aging_secs: i.aging_secs,
        ..Snapshot::default()
    };
    s.version = s.version.wrapping_add(1);
    s.domains = domains(i.state);
    s.ports = ports(i);
    if let Some(seg) = i.packet_segment() {
        if let Some(slot) = s.ports.get_mut(UPLINK_PORT.index()) {
            *slot = Some(fixed_port("uplink", PortRole::Uplink, UPLINK_DOMAIN));
        }
        s.uplink = Some(uplink_conf(i, &seg));
    }
    s.rebuild();
    s
}

/// One bridge domain per network, indexed by domain id.
fn domains(state: &State) -> Vec<Option<DomainConf>> {
    let len = state
        .networks
        .values()
        .map(|n| usize::from(n.domain) + 1)
        .max()
        .unwrap_or(0);
    let mut v = vec![None; len];
    for n in state.networks.values() {
        if let Some(d) = v.get_mut(usize::from(n.domain)) {
            *d = Some(DomainConf {
                name: n.name.clone(),
                vlan: n.vlan.and_then(VlanId::new),
                gateway_mac: n.gateway_mac(),
                v4: net4(n),
                v6: net6(n),
                icc: n.icc,
                egress: n.masquerade && !n.internal,
                members: Vec::new(),
                owners: vec![],
                listeners: vec![],
            });
        }
    }
    v
}

/// A port the daemon does not open for a container (the gateway, the uplink).
fn fixed_port(name: &str, role: PortRole, domain: DomainId) -> PortConf {
    PortConf {
        name: name.into(),
        generation: Generation::default(),
        role,
        mode: PortMode::Access { domain },
        security: None,
        mac_limit: 0,
        kernel: false,
        limits: Default::default(),
    }
}

/// The gateway's port and every open container port, indexed by slot.
fn ports(i: &Inputs) -> Vec<Option<PortConf>> {
    let len = i
        .ports
        .values()
        .map(|p| usize::from(p.slot) + 1)
        .max()
        .unwrap_or(0);
    let mut v = vec![None; len.max(FIRST_PORT.index())];
    if let Some(p) = v.get_mut(GATEWAY_PORT.index()) {
        *p = Some(fixed_port("gateway", PortRole::Gateway, DomainId(0)));
    }
    for (name, p) in i.ports {
        if let Some(slot) = v.get_mut(usize::from(p.slot)) {
            *slot = container_port(i, name, p);
        }
    }
    v
}

fn container_port(i: &Inputs, name: &str, p: &PortRt) -> Option<PortConf> {
    let c = (i.state.containers.get(&p.container)).or(i.extra.filter(|c| c.name == p.container))?;
    let e = c.endpoint(&p.network)?;
    let n = i.state.networks.get(&e.network)?;
    let mode = if e.trunk.is_empty() {
        PortMode::Access {
            domain: DomainId(n.domain),
        }
    } else {
        PortMode::Trunk {
            native: Some(DomainId(n.domain)),
            vlans: VlanSet::from_ids(e.trunk.iter().copied()),
        }
    };
    Some(PortConf {
        name: name.to_string(),
        generation: Generation(i.gens.get(usize::from(p.slot)).copied().unwrap_or(0)),
        role: PortRole::Container,
        mode,
        security: e.port_security.then_some(Security {
            mac: e.mac,
            ip: e.ip,
            ip6: e.ip6,
        }),
        mac_limit: i.mac_limit,
        kernel: p.kernel.is_some() && e.port_security && e.limits.to_dataplane().is_none(),
        limits: e.limits.to_dataplane(),
    })
}

fn uplink_conf(i: &Inputs, seg: &PacketSegment) -> UplinkConf {
    let mut hosts: Vec<(DomainId, Ipv4Addr, MacAddr)> = i
        .containers()
        .flat_map(|c| c.endpoints.iter())
        .filter_map(|e| {
            let domain = DomainId(i.state.networks.get(&e.network)?.domain);
            Some((domain, e.ip?, e.mac))
        })
        .collect();
    hosts.sort_by_key(|h| (h.0, h.1));
    hosts.dedup_by_key(|h| (h.0, h.1));
    let rules = i
        .containers()
        .flat_map(|c| dnat_rules(i.state, c, |e| e.ip, seg.address.addr().into()))
        .collect();
    UplinkConf {
        ext_ip: seg.address.addr(),
        ext_mac: MacAddr::from_ipv4(seg.address.addr()),
        subnet: seg.address.network().addr(),
        prefix_len: seg.address.prefix_len(),
        next_hop: seg.next_hop,
        mtu: seg.mtu,
        rules: dataplane::nat::DnatRules::new(rules),
        hosts,
        v6: seg.address6.map(|a| uplink6(i, a, seg.next_hop6)),
    }
}

/// The packet uplink's IPv6: every network's prefix, the routed ones (masquerade off,
/// not internal), every port's IPv6 address, the published ports of the containers
/// with one (DNAT66).
fn uplink6(i: &Inputs, address: Ipv6Cidr, next_hop: Option<Ipv6Addr>) -> Uplink6 {
    let nets = i.state.networks.values();
    let inside: Vec<Ipv6Cidr> = nets
        .clone()
        .filter_map(|n| n.ipv6.map(|v| v.subnet))
        .collect();
    let routed: Vec<DomainId> = nets
        .filter(|n| n.ipv6.is_some() && !n.masquerade && !n.internal)
        .map(|n| DomainId(n.domain))
        .collect();
    let hosts: Vec<(DomainId, Ipv6Addr, MacAddr)> = i
        .containers()
        .flat_map(|c| c.endpoints.iter())
        .filter_map(|e| {
            let domain = DomainId(i.state.networks.get(&e.network)?.domain);
            Some((domain, e.ip6?, e.mac))
        })
        .collect();
    let rules = i
        .containers()
        .flat_map(|c| dnat_rules(i.state, c, |e| e.ip6, address.addr().into()))
        .collect();
    Uplink6::new(address, next_hop, &inside, routed, &hosts)
        .with_rules(dataplane::nat::DnatRules::new(rules))
}

/// A container's published ports as DNAT rules to its first endpoint's address of one
/// family (`addr`: none, no rules in that family) on the uplink's address `ext` of that
/// family. A port is published there when its host address is none (0.0.0.0: both
/// families), `::` (IPv6) or `ext` itself; one bound to another address
/// (`127.0.0.1:8080:80`) is for that address alone, which the uplink's segment is not.
fn dnat_rules<A: dataplane::nat::Af>(
    state: &State,
    c: &Container,
    addr: impl Fn(&Endpoint) -> Option<A::Addr>,
    ext: std::net::IpAddr,
) -> Vec<dataplane::nat::DnatRule<A>> {
    let Some(e) = c.endpoints.first() else {
        return Vec::new();
    };
    let (Some(n), Some(ip)) = (state.networks.get(&e.network), addr(e)) else {
        return Vec::new();
    };
    let any6 = std::net::IpAddr::from(Ipv6Addr::UNSPECIFIED);
    let serves = |h: std::net::IpAddr| {
        h == ext || h == std::net::Ipv4Addr::UNSPECIFIED || (ext.is_ipv6() && h == any6)
    };
    c.published
        .iter()
        .filter(|p| serves(p.host_ip))
        .map(|p| dataplane::nat::DnatRule {
            proto: match p.proto {
                Proto::Tcp => dataplane::wire::IpProtocol::Tcp,
                Proto::Udp => dataplane::wire::IpProtocol::Udp,
            },
            ext_port: p.host_port,
            domain: n.domain,
            ip,
            port: p.container_port,
        })
        .collect()
}

/// The gateway's view of the networks: addresses, DNS names, leases, the uplink.
pub(super) fn gateway_config(i: &Inputs) -> GatewayConfig {
    let mut c = GatewayConfig {
        uplink: match i.state.uplink {
            Uplink::Socket => UplinkMode::Socket,
            Uplink::None => UplinkMode::None,
            Uplink::Packet { .. } => UplinkMode::Packet,
        },
        ..Default::default()
    };
    let upstreams = all_upstreams(i);
    for n in i.state.networks.values() {
        let d = usize::from(n.domain);
        if c.nets.len() <= d {
            c.nets.resize(d + 1, None);
        }
        if c.names.len() <= d {
            c.names.resize(d + 1, None);
        }
        if let Some(slot) = c.nets.get_mut(d) {
            *slot = Some(net_service(n));
        }
        if let Some(slot) = c.names.get_mut(d) {
            *slot = names(i.state, n, &upstreams);
        }
    }
    c.upstreams = upstreams;
    c.packet = i.packet_segment().map(|seg| PacketUplink {
        ext_ip: seg.address.addr(),
        ext_mac: MacAddr::from_ipv4(seg.address.addr()),
        subnet: seg.address.network().addr(),
        prefix_len: seg.address.prefix_len(),
        next_hop: seg.next_hop,
        mtu: seg.mtu,
        v6: seg.address6.map(|a| PacketUplink6 {
            ext_ip: a.addr(),
            prefix: a.network(),
            next_hop: seg.next_hop6,
        }),
    });
    for p in i.ports.values() {
        if let (Some(ct), Some(n)) = (
            i.state.containers.get(&p.container),
            i.state.networks.get(&p.network),
        ) && let Some(e) = ct.endpoint(&p.network)
        {
            let lease = Lease {
                mac: e.mac,
                v4: e.ip,
                v6: e.ip6,
            };
            c.leases.insert((n.domain, p.slot), lease);
        }
    }
    c
}

/// A network's IPv4 as the dataplane takes it.
fn net4(n: &Network) -> Option<Net4> {
    n.v4().map(|(subnet, gateway)| Net4 { gateway, subnet })
}

/// A network's IPv6 as the dataplane takes it.
fn net6(n: &Network) -> Option<Net6> {
    n.ipv6.map(|v| Net6 {
        gateway: v.gateway,
        subnet: v.subnet,
    })
}

fn net_service(n: &Network) -> NetConfig {
    NetConfig {
        name: n.name.clone(),
        gateway_mac: n.gateway_mac(),
        v4: net4(n),
        v6: net6(n),
        mtu: n.mtu,
        internal: n.internal,
        masquerade: n.masquerade,
        host_loopback: n.host_loopback,
        slaac: !n.no_slaac,
        dns: match n.dns {
            DnsMode::Names => NetDns::Names,
            DnsMode::ForwardOnly => NetDns::ForwardOnly,
            DnsMode::Off => NetDns::Off,
        },
    }
}

/// The daemon's resolvers, then every other one a network or a container names.
fn all_upstreams(i: &Inputs) -> Vec<SocketAddr> {
    let mut v = i.upstreams.to_vec();
    for a in i.state.named_resolvers() {
        if !v.contains(&a) {
            v.push(a);
        }
    }
    v
}

/// Where `servers` are in `all`.
fn route(all: &[SocketAddr], servers: &[SocketAddr]) -> Vec<usize> {
    (servers.iter())
        .filter_map(|s| all.iter().position(|a| a == s))
        .collect()
}

/// What each container on `n` resolves for itself: its resolvers, search domains,
/// `--add-host` names (`host-gateway`: the gateway of the address's family).
fn client_names(
    b: &mut dataplane::dns::NamesBuilder,
    ct: &Container,
    ips: &[IpAddr],
    (n, all): (&Network, &[SocketAddr]),
) {
    for ip in ips {
        if !ct.dns.servers.is_empty() {
            b.client_upstreams(*ip, route(all, &ct.dns.servers));
        }
        for d in &ct.dns.search {
            let _ = b.client_search(*ip, d);
        }
        let gw = match ip {
            IpAddr::V4(_) => n.gateway.map(IpAddr::V4),
            IpAddr::V6(_) => n.ipv6.map(|v| IpAddr::V6(v.gateway)),
        };
        for h in &ct.dns.hosts {
            if let Some(to) = h.ip.or(gw) {
                let _ = b.client_host(*ip, &h.name, to);
            }
        }
    }
}

/// The names the gateway answers on network `n` (none with DNS off); `all`: every
/// upstream resolver, in the gateway's order.
fn names(state: &State, n: &Network, all: &[SocketAddr]) -> Option<Arc<dataplane::dns::Names>> {
    if n.dns == DnsMode::Off {
        return None;
    }
    let mut b = dataplane::dns::Names::builder();
    let gateways = [
        n.gateway.map(IpAddr::V4),
        n.ipv6.map(|v| IpAddr::V6(v.gateway)),
    ];
    for g in gateways.into_iter().flatten() {
        b.gateway(g);
    }
    b.forward(!n.internal)
        .forward_only(n.dns == DnsMode::ForwardOnly);
    let _ = b.search_domain(&n.name);
    for d in &n.dns_search {
        let _ = b.search_domain(d);
    }
    if !n.dns_servers.is_empty() {
        b.upstreams(route(all, &n.dns_servers));
    }
    for (ct, e) in state.endpoints_on(&n.name) {
        let addrs: Vec<IpAddr> = [e.ip.map(IpAddr::V4), e.ip6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .collect();
        client_names(&mut b, ct, &addrs, (n, all));
        if n.dns != DnsMode::Names {
            continue;
        }
        for ip in &addrs {
            let _ = b.container(&ct.name, *ip);
            for a in e.aliases.iter().chain(&ct.dns.hostname) {
                let _ = b.alias(a, *ip);
            }
        }
    }
    Some(Arc::new(b.build()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EndpointSpec, Published, Sandbox};

    struct World {
        state: State,
        ports: BTreeMap<String, PortRt>,
        gens: Vec<u16>,
    }

    /// The default network with container `web` on it, its port open in slot FIRST_PORT.
    fn world() -> World {
        let mut state = State::new(None, None).unwrap();
        let spec = EndpointSpec {
            network: "bridge".into(),
            port_security: true,
            ..Default::default()
        };
        let sandbox = Sandbox::Tap {
            ifname: "tap-web".into(),
        };
        let mut c = state.check_attach("web", &sandbox, &spec).unwrap();
        c.published.push(Published {
            proto: Proto::Tcp,
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: 8080,
            container_port: 80,
            auto: false,
        });
        let port = PortRt {
            slot: FIRST_PORT.0,
            container: "web".into(),
            network: "bridge".into(),
            netns: None,
            handoff: None,
            ifname: c.endpoints[0].ifname.clone(),
            kernel: None,
        };
        state.attach(c);
        let mut gens = vec![0; 64];
        gens[FIRST_PORT.index()] = 3;
        World {
            state,
            ports: BTreeMap::from([("web".to_string(), port)]),
            gens,
        }
    }

    fn inputs(w: &World, uplink_open: bool) -> Inputs<'_> {
        Inputs {
            state: &w.state,
            ports: &w.ports,
            gens: &w.gens,
            aging_secs: 300,
            mac_limit: 7,
            uplink_open,
            extra: None,
            upstreams: &[],
        }
    }

    #[test]
    fn resolvers_of_networks_and_containers_follow_the_daemons_and_route_their_queries() {
        let mut w = world();
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let net = w.state.networks.get_mut("bridge").unwrap();
        net.dns_servers = vec![sa("10.0.0.2:53")];
        net.dns_search = vec!["corp.test".into()];
        let web = w.state.containers.get_mut("web").unwrap();
        web.dns.servers = vec![sa("10.0.0.1:53"), sa("10.0.0.3:53")];
        web.dns.hosts = vec![crate::state::ExtraHost {
            name: "gw".into(),
            ip: None,
        }];
        let daemons = [sa("10.0.0.1:53")];
        let i = Inputs {
            upstreams: &daemons,
            ..inputs(&w, false)
        };
        let g = gateway_config(&i);
        let want = ["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"]
            .map(sa)
            .to_vec();
        assert_eq!(g.upstreams, want);
        let d = usize::from(w.state.networks["bridge"].domain);
        let names = g.names[d].as_ref().unwrap();
        let ip = w.state.containers["web"].endpoints[0].ip.unwrap();
        assert_eq!(names.route(None), Some(&[1][..]));
        assert_eq!(names.route(Some(ip.into())), Some(&[0, 2][..]));
        assert_eq!(names.search_domain(), Some("bridge"));
    }

    #[test]
    fn a_container_port_joins_its_networks_domain() {
        let w = world();
        let s = snapshot(&inputs(&w, false));
        let bridge = &w.state.networks["bridge"];
        let d = s.domains[usize::from(bridge.domain)].as_ref().unwrap();
        assert_eq!(
            (d.name.as_str(), d.gateway_ip()),
            ("bridge", bridge.gateway)
        );
        let gw = s.ports[GATEWAY_PORT.index()].as_ref().unwrap();
        assert_eq!(gw.role, PortRole::Gateway);
        let p = s.ports[FIRST_PORT.index()].as_ref().unwrap();
        let e = &w.state.containers["web"].endpoints[0];
        assert_eq!(
            (p.name.as_str(), p.generation.0, p.mac_limit),
            ("web", 3, 7)
        );
        assert!(matches!(p.mode, PortMode::Access { domain } if domain.0 == bridge.domain));
        assert_eq!(
            p.security.as_ref().map(|s| (s.mac, s.ip)),
            Some((e.mac, e.ip))
        );
        assert!(s.uplink.is_none());
        assert_eq!(s.aging_secs, 300);
    }

    #[test]
    fn a_port_whose_container_is_not_saved_yet_counts_only_when_given() {
        let mut w = world();
        let c = w.state.containers.remove("web").unwrap();
        assert!(snapshot(&inputs(&w, false)).ports[FIRST_PORT.index()].is_none());
        let mut i = inputs(&w, false);
        i.extra = Some(&c);
        assert!(snapshot(&i).ports[FIRST_PORT.index()].is_some());
    }

    #[test]
    fn an_open_packet_uplink_gets_its_port_hosts_and_dnat_rules() {
        let mut w = world();
        w.state.uplink = Uplink::Packet {
            tap: Some("up0".into()),
            netns: None,
            address: "198.51.100.2/24".parse().unwrap(),
            next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
            mtu: None,
            address6: None,
            next_hop6: None,
        };
        assert!(snapshot(&inputs(&w, false)).uplink.is_none());
        let s = snapshot(&inputs(&w, true));
        let u = s.uplink.as_ref().unwrap();
        assert_eq!(u.ext_ip, Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!((u.prefix_len, u.mtu), (24, DEFAULT_UPLINK_MTU));
        let e = &w.state.containers["web"].endpoints[0];
        assert!(u.hosts.iter().any(|h| Some(h.1) == e.ip && h.2 == e.mac));
        let r = u
            .rules
            .find(dataplane::wire::IpProtocol::Tcp, 8080)
            .unwrap();
        assert_eq!((Some(r.ip), r.port), (e.ip, 80));
        let up = s.ports[UPLINK_PORT.index()].as_ref().unwrap();
        assert_eq!(up.role, PortRole::Uplink);
        let c = gateway_config(&inputs(&w, true));
        assert!(matches!(c.uplink, UplinkMode::Packet));
        assert_eq!(c.packet.map(|p| p.ext_ip), Some(u.ext_ip));
    }

    #[test]
    fn published_ports_reach_a_container_over_ipv6_only_when_it_has_an_address6() {
        let mut w = world();
        w.state.uplink = Uplink::Packet {
            tap: Some("up0".into()),
            netns: None,
            address: "198.51.100.2/24".parse().unwrap(),
            next_hop: None,
            mtu: None,
            address6: Some("2001:db8:ff::2/64".parse().unwrap()),
            next_hop6: None,
        };
        let tcp = dataplane::wire::IpProtocol::Tcp;
        // Without IPv6 the port stays closed on the uplink's IPv6 address.
        let s = snapshot(&inputs(&w, true));
        let u = s.uplink.as_ref().unwrap();
        assert!(u.rules.find(tcp, 8080).is_some(), "the IPv4 rule (control)");
        assert!(u.v6.as_ref().unwrap().rules.is_empty());
        let ip6: Ipv6Addr = "fd00:1::5".parse().unwrap();
        w.state.containers.get_mut("web").unwrap().endpoints[0].ip6 = Some(ip6);
        let s = snapshot(&inputs(&w, true));
        let v6 = s.uplink.as_ref().and_then(|u| u.v6.as_ref()).unwrap();
        let r = v6.rules.find(tcp, 8080).unwrap();
        assert_eq!((r.ip, r.port), (ip6, 80));
        // A host address: the uplink's own publishes in its family, `::` over IPv6,
        // another address (the host's loopback) nowhere on the segment.
        let host = |w: &mut World, ip: std::net::IpAddr| {
            w.state.containers.get_mut("web").unwrap().published[0].host_ip = ip;
            let s = snapshot(&inputs(w, true));
            let u = s.uplink.unwrap();
            let v6 = u.v6.as_ref().unwrap().rules.find(tcp, 8080).is_some();
            (u.rules.find(tcp, 8080).is_some(), v6)
        };
        let ext: Ipv4Addr = "198.51.100.2".parse().unwrap();
        let ext6: Ipv6Addr = "2001:db8:ff::2".parse().unwrap();
        assert_eq!(host(&mut w, ext.into()), (true, false));
        assert_eq!(host(&mut w, ext6.into()), (false, true));
        assert_eq!(host(&mut w, Ipv6Addr::UNSPECIFIED.into()), (false, true));
        assert_eq!(host(&mut w, Ipv4Addr::LOCALHOST.into()), (false, false));
        assert_eq!(host(&mut w, Ipv6Addr::LOCALHOST.into()), (false, false));
    }

    #[test]
    fn the_gateway_knows_names_and_leases() {
        let w = world();
        let c = gateway_config(&inputs(&w, false));
        let bridge = &w.state.networks["bridge"];
        let e = &w.state.containers["web"].endpoints[0];
        let d = usize::from(bridge.domain);
        assert_eq!(
            c.nets[d].as_ref().and_then(|n| n.v4).map(|v| v.gateway),
            bridge.gateway
        );
        assert!(c.names[d].is_some());
        assert_eq!(
            c.leases
                .get(&(bridge.domain, FIRST_PORT.0))
                .map(|l| (l.mac, l.v4)),
            Some((e.mac, e.ip))
        );
        assert!(c.packet.is_none());
    }
}
