use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::*;
use crate::bridge::DropReason;
use crate::gateway::action::Action;
use crate::gateway::{GatewayConfig, Lease, Net4, Net6, NetConfig, NetDns};
use crate::port::Punt;
use crate::wire::captured::{self, bytes};
use crate::wire::{Icmpv6Packet, dhcpv6};

/// The capture's router MAC, on a dual-stack network 172.17.0.0/16 + 2001:db8:1::/64.
const GW_MAC: MacAddr = MacAddr([2, 0x42, 0xac, 0x11, 0, 1]);
const HOST_MAC: MacAddr = MacAddr([2, 0x42, 0xac, 0x11, 0, 2]);

fn host6() -> Ipv6Addr {
    "2001:db8:1:0:42:acff:fe11:2".parse().unwrap()
}

fn gateway(dns: NetDns) -> Gateway {
    let mut g = Gateway::default();
    let mut leases = HashMap::new();
    let lease = Lease {
        mac: HOST_MAC,
        v4: Some(Ipv4Addr::new(172, 17, 0, 2)),
        v6: Some(host6()),
    };
    leases.insert((0, 5), lease);
    g.configure(GatewayConfig {
        nets: vec![Some(NetConfig {
            name: "n".into(),
            gateway_mac: GW_MAC,
            v4: Some(Net4::of(Ipv4Addr::new(172, 17, 0, 1), 16)),
            v6: Some(Net6::of("2001:db8:1::1".parse().unwrap(), 64)),
            mtu: 1500,
            internal: false,
            masquerade: true,
            dns,
            host_loopback: false,
            slaac: true,
        })],
        leases,
        names: vec![Some(std::sync::Arc::new(crate::dns::Names::default()))],
        ..GatewayConfig::default()
    });
    g
}

fn inbound(data: &[u8]) -> Inbound<'_> {
    Inbound {
        domain: 0,
        port: 5,
        punt: Punt::default(),
        data,
        now: Instant::now(),
        host: None,
    }
}

/// The frames the gateway sent for one input.
fn answer(g: &mut Gateway, frame: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Actions::default();
    assert_eq!(g.frame(inbound(frame), &mut out), Verdict::Done);
    let mut sent = Vec::new();
    while let Some(a) = out.pop() {
        if let Action::Send { frame, len, .. } = a {
            sent.push(frame[..len].to_vec());
        }
    }
    sent
}

fn icmp_type(frame: &[u8]) -> (u8, u8) {
    let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
    let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(m.verify_checksum(&ip.src(), &ip.dst()));
    (m.msg_type(), m.code())
}

/// A packet from the host's global address to `dst` through the gateway's MAC.
fn routed(dst: &str, hops: u8) -> Vec<u8> {
    let mut f = bytes(captured::ECHO);
    f[22..38].copy_from_slice(&host6().octets());
    f[38..54].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    f[21] = hops;
    f[..6].copy_from_slice(&GW_MAC.0);
    let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
    let (s, d) = (ip.src(), ip.dst());
    Icmpv6Packet::new_unchecked(&mut f[54..]).fill_checksum(&s, &d);
    f
}

#[test]
fn answers_neighbour_and_router_solicitations_and_echo() {
    let mut g = gateway(NetDns::Names);
    let na = answer(&mut g, &bytes(captured::NS));
    assert_eq!(na.len(), 1);
    assert_eq!(icmp_type(&na[0]), (Icmpv6Type::NEIGHBOR_ADVERT, 0));
    let ra = answer(&mut g, &bytes(captured::RS));
    assert_eq!(icmp_type(&ra[0]), (Icmpv6Type::ROUTER_ADVERT, 0));
    let echo = answer(&mut g, &bytes(captured::ECHO));
    assert_eq!(icmp_type(&echo[0]), (Icmpv6Type::ECHO_REPLY, 0));
    assert_eq!((g.stats.nd_replies, g.stats.router_adverts), (1, 1));
    // The solicitation taught the gateway the host's link-local address.
    let ll: Ipv6Addr = "fe80::42:acff:fe11:2".parse().unwrap();
    assert_eq!(g.neighbour(0, IpAddr::V6(ll)), Some(HOST_MAC));
    // The host's address is IPAM's: the gateway knows it without hearing from it.
    assert_eq!(g.neighbour(0, IpAddr::V6(host6())), Some(HOST_MAC));
}

#[test]
fn dhcpv6_gives_the_port_its_ipam_address() {
    let mut g = gateway(NetDns::Names);
    let adv = answer(&mut g, &bytes(captured::SOLICIT));
    assert_eq!(adv.len(), 1);
    let m = dhcpv6::Dhcpv6Packet::new_checked(&adv[0][62..]).unwrap();
    let ia = dhcpv6::IaNa::parse(m.option(dhcpv6::Opt6::IA_NA).unwrap().unwrap()).unwrap();
    assert_eq!(ia.addresses().collect::<Vec<_>>(), [host6()]);
    assert_eq!(g.stats.dhcp_replies, 1);
}

#[test]
fn routed_ipv6_goes_to_the_socket_uplink_else_no_route_and_hop_limits_are_kept() {
    let mut g = gateway(NetDns::Names);
    let mut out = Actions::default();
    let f = routed("2001:db8:99::1", 64);
    assert_eq!(g.frame(inbound(&f), &mut out), Verdict::ToUplink);
    assert!(out.pop().is_none());
    let mut cfg = g.config().clone();
    cfg.uplink = UplinkMode::Packet;
    g.configure(cfg);
    let e = answer(&mut g, &routed("2001:db8:99::1", 64));
    assert_eq!(
        icmp_type(&e[0]),
        (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::NO_ROUTE)
    );
    // Answered from the gateway's global address to the sender's.
    let ip = Ipv6Packet::new_checked(&e[0][14..]).unwrap();
    assert_eq!(
        (ip.src(), ip.dst()),
        ("2001:db8:1::1".parse().unwrap(), host6())
    );
    let e = answer(&mut g, &routed("2001:db8:99::1", 1));
    assert_eq!(icmp_type(&e[0]), (Icmpv6Type::TIME_EXCEEDED, 0));
    assert_eq!(g.stats.icmp_errors, 2);
}

/// A UDP datagram from `src` port 0x3039 to [2001:db8:1::1]:`dport` (the echo frame
/// made UDP).
fn udp6(src: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = routed("2001:db8:1::1", 64);
    f.truncate(54);
    f[22..38].copy_from_slice(&src.octets());
    f[20] = NextHeader::UDP;
    let len = (8 + payload.len()) as u16;
    f[18..20].copy_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[0x30, 0x39]);
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
    let (s, d) = (ip.src(), ip.dst());
    UdpPacket::new_unchecked(&mut f[54..]).fill_checksum_v6(&s, &d);
    f
}

/// A query for NAME's A record with id `id`, recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
fn a_containers_dns_queries_share_one_quota_whatever_their_source() {
    let limits = crate::uplink::quota::UplinkLimits {
        dns_per_container: 2,
        ..Default::default()
    };
    let mut g = Gateway::with_limits(limits);
    let mut cfg = gateway(NetDns::Names).config().clone();
    cfg.upstreams = vec!["127.0.0.1:53".parse().unwrap()];
    g.configure(cfg);
    // What one query became: forwarded upstream, or dropped as over the quota.
    let mut ask = |src: Ipv6Addr, id: u16| {
        let mut out = Actions::default();
        let f = udp6(src, 53, &query(id, &format!("n{id}.example.org")));
        assert_eq!(g.frame(inbound(&f), &mut out), Verdict::Done);
        let mut got = (false, false);
        while let Some(a) = out.pop() {
            match a {
                Action::Forward { .. } => got.0 = true,
                Action::Drop {
                    reason: DropReason::DnsQuota,
                    ..
                } => got.1 = true,
                _ => {}
            }
        }
        got
    };
    // The port's global address: its share of two, forwarded (the positive control).
    assert_eq!(ask(host6(), 1), (true, false));
    assert_eq!(ask(host6(), 2), (true, false));
    // The same port from its link-local address counts on the same share: refused.
    let ll: Ipv6Addr = "fe80::42:acff:fe11:2".parse().unwrap();
    assert_eq!(ask(ll, 3), (false, true));
}

/// A TCP SYN from the port's address to [2001:db8:1::1]:`dport`.
fn syn6(dport: u16) -> Vec<u8> {
    let mut f = routed("2001:db8:1::1", 64);
    f.truncate(54);
    f[20] = NextHeader::TCP;
    f[18..20].copy_from_slice(&20u16.to_be_bytes());
    let mut t = [0u8; 20];
    {
        let mut seg = crate::wire::TcpPacket::new_unchecked(&mut t[..]);
        seg.set_src_port(0x3039);
        seg.set_dst_port(dport);
        seg.set_header_len(20);
        seg.set_flags(crate::wire::tcp::TcpFlags::SYN);
        seg.fill_checksum_v6(&host6(), &"2001:db8:1::1".parse().unwrap());
    }
    f.extend_from_slice(&t);
    f
}

/// TCP to the gateway's IPv6 address goes to the socket uplink whatever routes (as
/// over IPv4: the host is reached, or the uplink answers an RST); UDP that leads
/// nowhere is refused here in both uplink modes.
#[test]
fn the_gateways_ipv6_ports_reach_the_host_as_ipv4_ones_whatever_the_uplink() {
    for mode in [UplinkMode::Socket, UplinkMode::Packet] {
        let mut g = gateway(NetDns::Names);
        let mut cfg = g.config().clone();
        cfg.uplink = mode;
        g.configure(cfg);
        let mut out = Actions::default();
        let f = syn6(8080);
        assert_eq!(
            g.frame(inbound(&f), &mut out),
            Verdict::ToUplink,
            "{mode:?}"
        );
        assert!(out.pop().is_none());
        let e = answer(&mut g, &udp6(host6(), 9, b"x"));
        assert_eq!(
            icmp_type(&e[0]),
            (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::PORT),
            "{mode:?}"
        );
    }
}

#[test]
fn closed_gateway_ports_are_unreachable_and_dns_answers_over_ipv6() {
    let mut g = gateway(NetDns::Names);
    let udp = |dport: u16, payload: &[u8]| udp6(host6(), dport, payload);
    let e = answer(&mut g, &udp(9, b"x"));
    assert_eq!(
        icmp_type(&e[0]),
        (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::PORT)
    );
    // host.vswitch.internal AAAA? (id 0x0102, recursion desired).
    let mut q = vec![1, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["host", "vswitch", "internal"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 28, 0, 1]);
    let a = answer(&mut g, &udp(53, &q));
    assert_eq!(a.len(), 1, "a DNS answer");
    let ip = Ipv6Packet::new_checked(&a[0][14..]).unwrap();
    assert_eq!(
        (ip.src(), ip.dst()),
        ("2001:db8:1::1".parse().unwrap(), host6())
    );
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((u.src_port(), u.dst_port()), (53, 0x3039));
    assert_eq!(u.payload()[..2], [1, 2]);
    // With DNS off, port 53 is closed too.
    let mut g = gateway(NetDns::Off);
    let e = answer(&mut g, &udp(53, &q));
    assert_eq!(
        icmp_type(&e[0]),
        (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::PORT)
    );
}

#[test]
fn router_advertisements_go_out_periodically() {
    let mut g = gateway(NetDns::Names);
    let mut out = Actions::default();
    let t0 = Instant::now();
    let next = g.tick_ra(t0, &mut out);
    assert_eq!(next, Some(t0 + Duration::from_secs(ndp::RA_INTERVAL_SECS)));
    let Some(Action::Send { frame, len, .. }) = out.pop() else {
        panic!("no advertisement");
    };
    let e = EthernetFrame::new_checked(&frame[..len]).unwrap();
    assert_eq!(e.dst(), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(icmp_type(&frame[..len]), (Icmpv6Type::ROUTER_ADVERT, 0));
    // Not again before the interval; again after it.
    assert_eq!(g.tick_ra(t0 + Duration::from_secs(1), &mut out), next);
    assert!(out.pop().is_none());
    g.tick_ra(t0 + Duration::from_secs(ndp::RA_INTERVAL_SECS), &mut out);
    assert!(out.pop().is_some());
}

#[test]
fn delivers_ipv6_packets_to_leased_and_learned_neighbours() {
    let mut g = gateway(NetDns::Names);
    let p =
        crate::gateway::udp6_packet(("2001:db8:1::1".parse().unwrap(), 53), (host6(), 9), b"hi")
            .unwrap();
    let mut out = Actions::default();
    g.deliver_ip6(0, &p, &mut out);
    let Some(Action::Send { frame, len, .. }) = out.pop() else {
        panic!("not delivered");
    };
    let e = EthernetFrame::new_checked(&frame[..len]).unwrap();
    assert_eq!(
        (e.dst(), e.src(), e.ethertype()),
        (HOST_MAC, GW_MAC, EtherType::IPV6)
    );
    // Nobody has 2001:db8:1::77.
    let p = crate::gateway::udp6_packet(
        ("2001:db8:1::1".parse().unwrap(), 53),
        ("2001:db8:1::77".parse().unwrap(), 9),
        b"hi",
    )
    .unwrap();
    g.deliver_ip6(0, &p, &mut out);
    assert!(out.pop().is_none());
    assert_eq!(g.stats.no_neighbour, 1);
}
