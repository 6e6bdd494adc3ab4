//! NAT66 and the routed mode's tracking on IPv6 packets built by etherparse.

use std::net::Ipv6Addr;

use super::*;
use crate::nat::{Nat, NatDrop, NatVerdict};
use crate::wire::checksum;
use crate::wire::ipv6::pseudo_header_sum;
use etherparse::PacketBuilder;

const C: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
const R: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9);
const EXT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
/// No published ports.
const NO6: DnatRules<V6> = DnatRules::EMPTY;

fn tcp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), syn: bool, data: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(src.0.octets(), dst.0.octets(), 64).tcp(src.1, dst.1, 1000, 65535);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

fn udp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1)
        .write(&mut v, data)
        .unwrap();
    v
}

fn echo(src: Ipv6Addr, dst: Ipv6Addr, request: bool, id: u16) -> Vec<u8> {
    let b = PacketBuilder::ipv6(src.octets(), dst.octets(), 64);
    let b = if request {
        b.icmpv6_echo_request(id, 1)
    } else {
        b.icmpv6_echo_reply(id, 1)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"ping").unwrap();
    v
}

/// Source, destination and the upper layer's ports (or echo id), with its checksum
/// checked against the pseudo-header.
fn valid6(pkt: &[u8]) -> (Ipv6Addr, Ipv6Addr, u16, u16) {
    let ip = Ipv6Packet::new_checked(pkt).unwrap();
    let Ok(crate::wire::ipv6::Upper::At { proto, offset }) = ip.upper() else {
        panic!("no upper layer")
    };
    let l4 = &pkt[offset..];
    let s = checksum::add(
        pseudo_header_sum(&ip.src(), &ip.dst(), proto, l4.len() as u32),
        checksum::sum(l4),
    );
    assert_eq!(checksum::fold(s), 0xffff, "upper-layer checksum");
    let w = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    if proto == 58 {
        (ip.src(), ip.dst(), w(4), 0)
    } else {
        (ip.src(), ip.dst(), w(0), w(2))
    }
}

#[test]
fn nat66_tcp_both_ways_and_states() {
    let nat = Nat::new(64);
    let mut syn = tcp((C, 40000), (R, 80), true, &[]);
    assert_eq!(
        nat.outbound6(&mut syn, 1, Some(EXT), &NO6, false, 0),
        Ok(NatVerdict::Out { dst: R })
    );
    assert_eq!(valid6(&syn), (EXT, R, 40000, 80));
    let mut reply = tcp((R, 80), (EXT, 40000), false, b"hello");
    assert_eq!(
        nat.inbound6(&mut reply, Some(EXT), &NO6, false, 0),
        Ok(NatVerdict::In { domain: 1, ip: C })
    );
    assert_eq!(valid6(&reply), (R, C, 80, 40000));
    let flows = nat.table6.list(0);
    assert_eq!((flows.len(), flows[0].inside.src), (1, C));
    assert!(nat.table.is_empty(), "IPv4's table untouched");
    // Not for us, and nothing known: refused.
    let mut other = tcp((R, 80), (EXT, 40001), false, b"x");
    assert_eq!(
        nat.inbound6(&mut other, Some(EXT), &NO6, false, 0),
        Err(NatDrop::NoFlow)
    );
    let mut elsewhere = tcp((R, 80), (C, 40000), false, b"x");
    assert_eq!(
        nat.inbound6(&mut elsewhere, Some(EXT), &NO6, false, 0),
        Err(NatDrop::Local)
    );
}

/// A flow's packet from outside at hop limit 1 is left as it came (the gateway answers
/// time exceeded quoting it); masqueraded or routed alike.
#[test]
fn a_flows_packet_out_of_hops_stays_untranslated() {
    let nat = Nat::new(64);
    let mut a = udp((C, 5353), (R, 53), b"q");
    nat.outbound6(&mut a, 0, Some(EXT), &NO6, false, 0).unwrap();
    let mut r = udp((R, 53), (EXT, 5353), b"a");
    r[7] = 1;
    let before = r.clone();
    assert_eq!(
        nat.inbound6(&mut r, Some(EXT), &NO6, false, 0),
        Err(NatDrop::HopLimit)
    );
    assert_eq!(r, before);
    // With a hop to spare: translated (the control).
    r[7] = 2;
    assert_eq!(
        nat.inbound6(&mut r, Some(EXT), &NO6, false, 0),
        Ok(NatVerdict::In { domain: 0, ip: C })
    );
    // Not a flow's: not this answer either.
    let mut stray = udp((R, 53), (EXT, 999), b"a");
    stray[7] = 1;
    assert_eq!(
        nat.inbound6(&mut stray, Some(EXT), &NO6, false, 0),
        Err(NatDrop::NoFlow)
    );
}

#[test]
fn nat66_udp_ports_collide_and_echo_ids_map() {
    let nat = Nat::new(64);
    let c2 = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3);
    let mut a = udp((C, 5353), (R, 53), b"q");
    let mut b = udp((c2, 5353), (R, 53), b"q");
    nat.outbound6(&mut a, 0, Some(EXT), &NO6, false, 0).unwrap();
    nat.outbound6(&mut b, 0, Some(EXT), &NO6, false, 0).unwrap();
    assert_eq!(valid6(&a).2, 5353);
    let pb = valid6(&b).2;
    assert_ne!(pb, 5353);
    let mut r = udp((R, 53), (EXT, pb), b"a");
    assert_eq!(
        nat.inbound6(&mut r, Some(EXT), &NO6, false, 0),
        Ok(NatVerdict::In { domain: 0, ip: c2 })
    );
    assert_eq!(valid6(&r), (R, c2, 53, 5353));
    let mut p1 = echo(C, R, true, 7);
    let mut p2 = echo(c2, R, true, 7);
    nat.outbound6(&mut p1, 0, Some(EXT), &NO6, false, 0)
        .unwrap();
    nat.outbound6(&mut p2, 0, Some(EXT), &NO6, false, 0)
        .unwrap();
    assert_eq!(valid6(&p1).2, 7);
    let id2 = valid6(&p2).2;
    assert_ne!(id2, 7);
    let mut reply = echo(R, EXT, false, id2);
    assert_eq!(
        nat.inbound6(&mut reply, Some(EXT), &NO6, false, 0),
        Ok(NatVerdict::In { domain: 0, ip: c2 })
    );
    assert_eq!(valid6(&reply), (R, c2, 7, 0));
    // A ping to the uplink's own address is the gateway's.
    let mut to_us = echo(R, EXT, true, 1);
    assert_eq!(
        nat.inbound6(&mut to_us, Some(EXT), &NO6, false, 0),
        Err(NatDrop::Local)
    );
}

/// An ICMPv6 error from `from` to `to` quoting `quoted` (cut to `cut` bytes).
fn error6(from: Ipv6Addr, to: Ipv6Addr, ty: u8, word: u32, quoted: &[u8], cut: usize) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(&word.to_be_bytes());
    m.extend_from_slice(&quoted[..cut.min(quoted.len())]);
    let mut v = Vec::new();
    PacketBuilder::ipv6(from.octets(), to.octets(), 64)
        .icmpv6(etherparse::Icmpv6Type::Unknown {
            type_u8: 200,
            code_u8: 0,
            bytes5to8: [0; 4],
        })
        .write(&mut v, &[])
        .unwrap();
    // Replace the builder's message by ours, then fill the checksum.
    v.truncate(40);
    v.extend_from_slice(&m);
    let len = m.len() as u16;
    v[4..6].copy_from_slice(&len.to_be_bytes());
    let mut ip = Ipv6Packet::new_checked(&mut v[..]).unwrap();
    let (s, d) = (ip.src(), ip.dst());
    crate::wire::icmpv6::Icmpv6Packet::new_checked(ip.upper_mut(40))
        .unwrap()
        .fill_checksum(&s, &d);
    v
}

#[test]
fn packet_too_big_about_a_flow_reaches_the_container() {
    let nat = Nat::new(64);
    let mut out = tcp((C, 40000), (R, 443), false, &[0u8; 1300]);
    nat.outbound6(&mut out, 4, Some(EXT), &NO6, false, 0)
        .unwrap();
    let router = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
    let mut err = error6(router, EXT, 2, 1280, &out, 1232);
    assert_eq!(
        nat.inbound6(&mut err, Some(EXT), &NO6, false, 0),
        Ok(NatVerdict::In { domain: 4, ip: C })
    );
    let (src, dst, _, _) = valid6(&err);
    assert_eq!((src, dst), (router, C));
    let m = crate::wire::icmpv6::Icmpv6Packet::new_checked(&err[40..]).unwrap();
    assert_eq!((m.msg_type(), m.mtu()), (2, 1280));
    let inner = Ipv6Packet::new_checked(m.data()).unwrap();
    assert_eq!((inner.src(), inner.dst()), (C, R));
    assert_eq!(u16::from_be_bytes([m.data()[40], m.data()[41]]), 40000);
    // An error quoting no flow of ours goes nowhere.
    let stray = tcp((C, 1), (R, 443), false, &[]);
    let mut e2 = error6(router, EXT, 1, 0, &stray, 60);
    assert_eq!(
        nat.inbound6(&mut e2, Some(EXT), &NO6, false, 0),
        Err(NatDrop::NoFlow)
    );
}

#[test]
fn routed_mode_tracks_without_rewriting_and_admits_only_replies() {
    let nat = Nat::new(64);
    let mut syn = tcp((C, 40000), (R, 80), true, &[]);
    let before = syn.clone();
    assert_eq!(
        nat.outbound6(&mut syn, 2, None, &NO6, false, 0),
        Ok(NatVerdict::Out { dst: R })
    );
    assert_eq!(syn, before, "routed: nothing rewritten");
    let mut reply = tcp((R, 80), (C, 40000), false, b"ok");
    let kept = reply.clone();
    assert_eq!(
        nat.inbound6(&mut reply, None, &NO6, false, 0),
        Ok(NatVerdict::In { domain: 2, ip: C })
    );
    assert_eq!(reply, kept);
    // A connection the container never started is not let in.
    let mut probe = tcp((R, 5555), (C, 22), true, &[]);
    assert_eq!(
        nat.inbound6(&mut probe, None, &NO6, false, 0),
        Err(NatDrop::NoFlow)
    );
    let mut ping = echo(C, R, true, 9);
    nat.outbound6(&mut ping, 2, None, &NO6, false, 0).unwrap();
    let mut pong = echo(R, C, false, 9);
    assert_eq!(
        nat.inbound6(&mut pong, None, &NO6, false, 0),
        Ok(NatVerdict::In { domain: 2, ip: C })
    );
    let rows = nat.table6.list(0);
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.outside.dst == C || r.outside.src == R)
    );
}

#[test]
fn partial_checksums_follow_the_address_as_sums() {
    let nat = Nat::new(64);
    let mut p = tcp((C, 40000), (R, 80), false, b"x");
    let len = (p.len() - 40) as u32;
    let pseudo = checksum::fold(pseudo_header_sum(&C, &R, 6, len));
    p[56..58].copy_from_slice(&pseudo.to_be_bytes());
    nat.outbound6(&mut p, 0, Some(EXT), &NO6, true, 0).unwrap();
    let expect = checksum::fold(pseudo_header_sum(&EXT, &R, 6, len));
    assert_eq!(u16::from_be_bytes([p[56], p[57]]), expect);
    let c = !checksum::fold(checksum::add(checksum::sum(&p[40..]), 0));
    p[56..58].copy_from_slice(&c.to_be_bytes());
    valid6(&p);
}

#[test]
fn fragments_and_garbage_are_refused() {
    let nat = Nat::new(64);
    assert_eq!(
        nat.outbound6(&mut [0x60; 20], 0, Some(EXT), &NO6, false, 0),
        Err(NatDrop::Malformed)
    );
    // A later fragment: fragment header with offset 8.
    let mut f = udp((C, 1), (R, 2), b"abcdefgh");
    f[6] = 44;
    let mut frag = f[..40].to_vec();
    frag.extend_from_slice(&[17, 0, 0, 8, 0, 0, 0, 1]);
    frag.extend_from_slice(&f[40..]);
    let n = (frag.len() - 40) as u16;
    frag[4..6].copy_from_slice(&n.to_be_bytes());
    assert_eq!(
        nat.outbound6(&mut frag, 0, Some(EXT), &NO6, false, 0),
        Err(NatDrop::Fragment)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
    #[test]
    fn mutated_ipv6_packets_never_panic(
        flips in proptest::collection::vec((0usize..90, proptest::prelude::any::<u8>()), 0..6),
        inbound in proptest::prelude::any::<bool>(),
        routed in proptest::prelude::any::<bool>(),
    ) {
        let nat = Nat::new(64);
        let ext = (!routed).then_some(EXT);
        let mut seed = udp((C, 1234), (R, 53), b"hi");
        let _ = nat.outbound6(&mut seed, 0, ext, &NO6, false, 0);
        let mut p = if inbound {
            let mut e = error6(R, EXT, 1, 0, &seed, 60);
            e.extend_from_slice(&[0; 8]);
            e
        } else {
            tcp((C, 1234), (R, 80), true, b"hi")
        };
        for (i, v) in flips {
            if let Some(x) = p.get_mut(i) { *x = v; }
        }
        let _ = if inbound { nat.inbound6(&mut p, ext, &NO6, false, 0) } else { nat.outbound6(&mut p, 0, ext, &NO6, false, 0) };
    }
}

/// A second container, and the rule publishing C's TCP and UDP port 80 as 8080 (C in
/// network 1).
const C2: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3);

fn published() -> DnatRules<V6> {
    let rule = |proto| crate::nat::DnatRule::<V6> {
        proto,
        ext_port: 8080,
        domain: 1,
        ip: C,
        port: 80,
    };
    DnatRules::new(vec![rule(IpProtocol::Tcp), rule(IpProtocol::Udp)])
}

#[test]
fn dnat66_a_syn_to_a_published_port_reaches_the_container_and_its_reply_leaves_from_it() {
    let (nat, rules) = (Nat::new(64), published());
    let mut syn = tcp((R, 55555), (EXT, 8080), true, &[]);
    assert_eq!(
        nat.inbound6(&mut syn, Some(EXT), &rules, false, 0),
        Ok(NatVerdict::In { domain: 1, ip: C })
    );
    assert_eq!(valid6(&syn), (R, C, 55555, 80), "the client's address kept");
    let mut reply = tcp((C, 80), (R, 55555), false, b"page");
    assert_eq!(
        nat.outbound6(&mut reply, 1, Some(EXT), &rules, false, 0),
        Ok(NatVerdict::Out { dst: R })
    );
    assert_eq!(valid6(&reply), (EXT, R, 8080, 55555));
    let flows = nat.table6.list(0);
    assert_eq!(flows.len(), 1);
    assert_eq!((flows[0].inside.src, flows[0].outside.dport), (C, 8080));
    assert!(nat.table.is_empty(), "IPv4's table untouched");
    // UDP too: a datagram makes the flow.
    let mut q = udp((R, 4000), (EXT, 8080), b"q");
    assert_eq!(
        nat.inbound6(&mut q, Some(EXT), &rules, false, 0),
        Ok(NatVerdict::In { domain: 1, ip: C })
    );
    assert_eq!(valid6(&q), (R, C, 4000, 80));
}

#[test]
fn dnat66_refuses_what_is_not_a_new_connection_to_a_published_port() {
    let (nat, rules) = (Nat::new(64), published());
    // Not a SYN, a closed port, another protocol's port: no flow (the gateway answers
    // an RST or port unreachable); a ping: the gateway's.
    let mut ack = tcp((R, 55555), (EXT, 8080), false, b"x");
    let mut closed = tcp((R, 55555), (EXT, 8081), true, &[]);
    let mut closed_udp = udp((R, 4000), (EXT, 53), b"q");
    for p in [&mut ack, &mut closed, &mut closed_udp] {
        assert_eq!(
            nat.inbound6(p, Some(EXT), &rules, false, 0),
            Err(NatDrop::NoFlow)
        );
    }
    let mut ping = echo(R, EXT, true, 7);
    assert_eq!(
        nat.inbound6(&mut ping, Some(EXT), &rules, false, 0),
        Err(NatDrop::Local)
    );
    // Without the rule (a container without IPv6 has none) the port is closed, and
    // the control: with it, the same SYN passes.
    let mut syn = tcp((R, 55555), (EXT, 8080), true, &[]);
    assert_eq!(
        nat.inbound6(&mut syn.clone(), Some(EXT), &NO6, false, 0),
        Err(NatDrop::NoFlow)
    );
    assert!(nat.table6.is_empty());
    assert!(nat.inbound6(&mut syn, Some(EXT), &rules, false, 0).is_ok());
}

#[test]
fn dnat66_flows_count_against_the_containers_quota_and_masquerade_avoids_the_port() {
    let (nat, rules) = (Nat::with_quota(64, 1), published());
    let mut a = tcp((R, 1), (EXT, 8080), true, &[]);
    assert!(nat.inbound6(&mut a, Some(EXT), &rules, false, 0).is_ok());
    let mut b = tcp((R, 2), (EXT, 8080), true, &[]);
    assert_eq!(
        nat.inbound6(&mut b, Some(EXT), &rules, false, 0),
        Err(NatDrop::Quota)
    );
    // Another container's masquerade never takes the published port.
    let mut out = udp((C2, 8080), (R, 53), b"q");
    nat.outbound6(&mut out, 1, Some(EXT), &rules, false, 0)
        .unwrap();
    let (src, _, sport, _) = valid6(&out);
    assert_eq!(src, EXT);
    assert_ne!(sport, 8080);
}

#[test]
fn dnat66_on_a_routed_network_is_translated_both_ways() {
    let (nat, rules) = (Nat::new(64), published());
    let mut syn = tcp((R, 55555), (EXT, 8080), true, &[]);
    assert!(nat.inbound6(&mut syn, Some(EXT), &rules, false, 0).is_ok());
    assert_eq!(valid6(&syn), (R, C, 55555, 80));
    // The container's network is routed (no ext): its reply still leaves from the
    // published port, while its own flows keep its address (the control).
    let mut reply = tcp((C, 80), (R, 55555), false, b"page");
    nat.outbound6(&mut reply, 1, None, &rules, false, 0)
        .unwrap();
    assert_eq!(valid6(&reply), (EXT, R, 8080, 55555));
    let mut own = tcp((C, 40000), (R, 443), true, &[]);
    nat.outbound6(&mut own, 1, None, &rules, false, 0).unwrap();
    assert_eq!(valid6(&own), (C, R, 40000, 443));
}

#[test]
fn hairpin6_a_container_reaches_a_published_port_on_the_uplinks_address() {
    let (nat, rules) = (Nat::new(64), published());
    let mut syn = tcp((C2, 43000), (EXT, 8080), true, &[]);
    // Out: masqueraded behind the uplink's address, for the uplink's address.
    assert_eq!(
        nat.outbound6(&mut syn, 2, Some(EXT), &rules, false, 0),
        Ok(NatVerdict::Out { dst: EXT })
    );
    // Back in at once, even at hop limit 1 (stepped on the way out already).
    syn[7] = 1;
    assert_eq!(
        nat.hairpin6(&mut syn, EXT, &rules, false, 0),
        Ok(NatVerdict::In { domain: 1, ip: C })
    );
    let (src, dst, sport, dport) = valid6(&syn);
    assert_eq!(
        (src, dst, dport),
        (EXT, C, 80),
        "seen from the uplink's address"
    );
    // The reply goes the same way back to C2.
    let mut reply = tcp((C, 80), (EXT, sport), false, b"page");
    assert_eq!(
        nat.outbound6(&mut reply, 1, Some(EXT), &rules, false, 0),
        Ok(NatVerdict::Out { dst: EXT })
    );
    assert_eq!(
        nat.hairpin6(&mut reply, EXT, &rules, false, 0),
        Ok(NatVerdict::In { domain: 2, ip: C2 })
    );
    assert_eq!(valid6(&reply), (EXT, C2, 8080, 43000));
    assert_eq!(nat.table6.len(), 2, "the masquerade and the DNAT66 flow");
}

#[test]
fn a_routed_networks_published_port_is_open_at_the_containers_own_address() {
    let nat = Nat::new(64);
    let (masq, routed) = (published(), published().routed(|d| d == 1));
    let mut syn = tcp((R, 55555), (C, 80), true, &[]);
    // Masqueraded: only what the container started comes in (the control).
    assert_eq!(
        nat.inbound6(&mut syn.clone(), None, &masq, false, 0),
        Err(NatDrop::NoFlow)
    );
    assert_eq!(
        nat.inbound6(&mut syn, None, &routed, false, 0),
        Ok(NatVerdict::In { domain: 1, ip: C })
    );
    assert_eq!(valid6(&syn), (R, C, 55555, 80), "untranslated");
    let mut reply = tcp((C, 80), (R, 55555), false, b"page");
    nat.outbound6(&mut reply, 1, None, &routed, false, 0)
        .unwrap();
    assert_eq!(valid6(&reply), (C, R, 80, 55555), "untranslated");
    // Another port of it stays closed, and so does its host port at its address.
    for port in [81, 8080] {
        let mut other = tcp((R, 55555), (C, port), true, &[]);
        assert_eq!(
            nat.inbound6(&mut other, None, &routed, false, 0),
            Err(NatDrop::NoFlow)
        );
    }
}

/// The container's port unreachable about a published port's datagram leaves from the
/// uplink's address, quoting the datagram as the client sent it; on a routed network
/// too.
#[test]
fn a_containers_icmpv6_error_about_a_published_flow_is_translated_out() {
    for ext in [Some(EXT), None] {
        let (nat, rules) = (Nat::new(64), published());
        let mut q = udp((R, 4000), (EXT, 8080), b"q");
        nat.inbound6(&mut q, Some(EXT), &rules, false, 0).unwrap();
        let mut err = error6(C, R, 1, 0, &q, q.len());
        assert_eq!(
            nat.outbound6(&mut err, 1, ext, &rules, false, 0),
            Ok(NatVerdict::Out { dst: R })
        );
        let (src, dst, _, _) = valid6(&err);
        assert_eq!((src, dst), (EXT, R), "{ext:?}");
        let m = crate::wire::icmpv6::Icmpv6Packet::new_checked(&err[40..]).unwrap();
        let inner = Ipv6Packet::new_checked(m.data()).unwrap();
        assert_eq!((inner.src(), inner.dst()), (R, EXT));
        assert_eq!(u16::from_be_bytes([m.data()[42], m.data()[43]]), 8080);
    }
}

/// What a container sends to the uplink's IPv6 address: a ping or a closed port is the
/// address's own (no flow made); a published port, its flow's reply and an ICMPv6
/// error are the translation's.
#[test]
fn the_uplinks_ipv6_address_itself_is_told_from_published_ports_and_flows() {
    let (nat, rules) = (Nat::new(64), published());
    let mine = |mut pkt: Vec<u8>| {
        let ip = Ipv6Packet::new_checked(&mut pkt[..]).unwrap();
        nat.for_uplink_address6(&ip, &rules, 0)
    };
    assert!(mine(tcp((C2, 43000), (EXT, 9), true, &[])), "closed TCP");
    let closed = udp((C2, 5000), (EXT, 9), b"q");
    assert!(mine(closed.clone()), "closed UDP");
    assert!(mine(echo(C2, EXT, true, 0)), "ping, identifier 0 too");
    assert!(mine(echo(C2, EXT, false, 7)), "an echo reply of no flow");
    let err = error6(C2, EXT, 1, 0, &closed, 48);
    assert!(!mine(err), "an ICMPv6 error is the translation's");
    assert!(nat.table6.is_empty(), "asking makes no flow");
    let mut syn = tcp((C2, 43001), (EXT, 8080), true, &[]);
    assert!(!mine(syn.clone()), "a published port");
    assert!(
        nat.outbound6(&mut syn, 2, Some(EXT), &rules, false, 0)
            .is_ok()
    );
    assert!(nat.hairpin6(&mut syn, EXT, &rules, false, 0).is_ok());
    let back = valid6(&syn).2;
    assert!(!mine(tcp((C, 80), (EXT, back), false, &[])), "its reply");
    assert!(mine(tcp((C, 80), (EXT, back + 1), false, &[])), "no flow's");
}
