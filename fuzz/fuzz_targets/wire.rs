//! The wire views: every view over arbitrary bytes (and over the payloads of the views
//! around it), every accessor, and the in-place rewrites on a copy. Checked:
//!
//! - parse → emit → parse: whatever a view accepts, its fields written through the
//!   setters into a fresh buffer parse back to the same fields (and, for headers the
//!   setters cover whole, the same bytes): Ethernet, 802.1Q, ARP, IPv4, UDP, TCP, ICMP,
//!   DHCP (fixed fields and options), DHCPv6, the virtio-net header;
//! - checksums: after `fill_checksum` a header verifies, and every incremental rewrite
//!   (addresses, ports, TTL, echo id; full and partial checksums) keeps it verifying
//!   exactly as a checksum computed afresh would.
#![no_main]

use dataplane::port::VnetHdr;
use dataplane::wire::checksum::{fold, pseudo_header_v4};
use dataplane::wire::ipv4::split_quote;
use dataplane::wire::{
    ArpPacket, Checksum, DhcpPacket, EthernetFrame, Icmpv4Packet, IpProtocol, Ipv4Packet,
    PortsHeader, TcpPacket, UdpPacket, VlanTag, dhcp, dhcpv6, parse_l2,
};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use std::net::Ipv4Addr;

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn ethernet(b: &[u8]) {
    let Ok(e) = EthernetFrame::new_checked(b) else {
        return;
    };
    let mut out = vec![0u8; b.len()];
    let mut o = EthernetFrame::new_unchecked(&mut out[..]);
    o.set_dst(e.dst());
    o.set_src(e.src());
    o.set_ethertype(e.ethertype());
    o.payload_mut().copy_from_slice(e.payload());
    assert_eq!(out, b, "ethernet: emitted bytes differ");
    let again = EthernetFrame::new_checked(&out[..]).expect("emitted ethernet parses");
    assert_eq!(
        (again.dst(), again.src(), again.ethertype()),
        (e.dst(), e.src(), e.ethertype())
    );
}

fn vlan(b: &[u8]) {
    let Ok(v) = VlanTag::new_checked(b) else {
        return;
    };
    let mut out = b.to_vec();
    out[..4].fill(0);
    let mut o = VlanTag::new_unchecked(&mut out[..]);
    o.set_tci(v.tci());
    o.set_ethertype(v.ethertype());
    assert_eq!(out, b, "802.1Q: emitted bytes differ");
    let again = VlanTag::new_checked(&out[..]).expect("emitted tag parses");
    assert_eq!(
        (again.vid(), again.pcp(), again.dei(), again.ethertype()),
        (v.vid(), v.pcp(), v.dei(), v.ethertype())
    );
    // A VID set alone keeps the priority and DEI.
    let mut o = VlanTag::new_unchecked(&mut out[..]);
    o.set_vid(0xabc);
    assert_eq!((o.vid(), o.pcp(), o.dei()), (0xabc, v.pcp(), v.dei()));
}

fn arp(b: &[u8]) {
    let Ok(a) = ArpPacket::new_checked(b) else {
        return;
    };
    let mut out = b.to_vec();
    out[..28].fill(0);
    let mut o = ArpPacket::new_unchecked(&mut out[..]);
    o.init();
    o.set_operation(a.operation());
    o.set_sender_mac(a.sender_mac());
    o.set_sender_ip(a.sender_ip());
    o.set_target_mac(a.target_mac());
    o.set_target_ip(a.target_ip());
    assert_eq!(out, b, "arp: emitted bytes differ");
}

/// The fields of an IPv4 header, as the view reads them.
fn ip_fields(p: &Ipv4Packet<&[u8]>) -> impl PartialEq + std::fmt::Debug {
    (
        (p.version(), p.header_len(), p.dscp_ecn(), p.total_len()),
        (
            p.ident(),
            p.dont_fragment(),
            p.more_fragments(),
            p.frag_offset(),
        ),
        (p.ttl(), p.protocol(), p.checksum(), p.src(), p.dst()),
        // The reserved flag bit is not modelled.
        (
            p.flags_and_offset() & 0x7fff,
            p.header()[20..].to_vec(),
            p.payload().to_vec(),
        ),
    )
}

fn ipv4_round_trip(b: &[u8]) {
    let Ok(p) = Ipv4Packet::new_checked(b) else {
        return;
    };
    let mut out = vec![0u8; b.len()];
    let hl = p.header_len();
    // Options are bytes the view does not model: carried over as they are.
    out[20..hl].copy_from_slice(&p.header()[20..]);
    let mut o = Ipv4Packet::new_unchecked(&mut out[..]);
    o.set_version_and_header_len(hl);
    o.set_dscp_ecn(p.dscp_ecn());
    o.set_total_len(p.total_len() as u16);
    o.set_ident(p.ident());
    if p.dont_fragment() {
        o.set_dont_fragment(true);
    } else {
        o.set_fragment(p.more_fragments(), p.frag_offset());
    }
    o.set_ttl(p.ttl());
    o.set_protocol(p.protocol());
    o.set_checksum(p.checksum());
    o.set_src(p.src());
    o.set_dst(p.dst());
    o.payload_mut().copy_from_slice(p.payload());
    let again = Ipv4Packet::new_checked(&out[..]).expect("emitted ipv4 parses");
    // DF together with MF or an offset is a header the setters cannot write (DF clears
    // them).
    if !(p.dont_fragment() && (p.more_fragments() || p.frag_offset() != 0)) {
        assert_eq!(ip_fields(&again), ip_fields(&p), "ipv4: fields differ");
    }
}

fn ipv4_checksums(b: &mut [u8]) {
    let Ok(mut p) = Ipv4Packet::new_checked(&mut *b) else {
        return;
    };
    p.fill_checksum();
    assert!(
        p.verify_checksum(),
        "ipv4: a filled checksum does not verify"
    );
    let old = p.rewrite_src(A);
    p.rewrite_dst(old);
    p.decrement_ttl();
    assert!(
        p.verify_checksum(),
        "ipv4: an incremental rewrite broke the checksum"
    );
    let kept = p.checksum();
    p.fill_checksum();
    assert_eq!(
        p.checksum(),
        kept,
        "ipv4: incremental and fresh checksums differ"
    );
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, b: &mut [u8]) {
    let Ok(u) = UdpPacket::new_checked(&*b) else {
        return;
    };
    let len = u.len();
    let mut out = b.to_vec();
    out[..8].fill(0);
    let mut o = UdpPacket::new_unchecked(&mut out[..]);
    o.set_src_port(u.src_port());
    o.set_dst_port(u.dst_port());
    o.set_len(len as u16);
    o.set_checksum(u.checksum());
    assert_eq!(out, b, "udp: emitted bytes differ");
    let had = u.checksum();
    let mut u = UdpPacket::new_checked(&mut b[..len]).expect("udp");
    // A datagram without a checksum keeps none through full-mode rewrites.
    if had == 0 {
        u.rewrite_src_port(7, Checksum::Full);
        u.update_for_address(src, A, Checksum::Full);
        assert_eq!(u.checksum(), 0, "udp: a zero checksum did not stay zero");
    }
    u.fill_checksum(src, dst);
    assert!(
        u.verify_checksum(src, dst),
        "udp: a filled checksum does not verify"
    );
    u.rewrite_src_port(1, Checksum::Full);
    u.rewrite_dst_port(2, Checksum::Full);
    u.update_for_address(src, A, Checksum::Full);
    assert!(
        u.verify_checksum(A, dst),
        "udp: an incremental rewrite broke it"
    );
    assert_ne!(
        u.checksum(),
        0,
        "udp: a rewrite produced the 'none' checksum"
    );
    partial(IpProtocol::Udp, src, dst, b, len);
}

/// A partial checksum (the pseudo-header sum) follows an address change exactly, and
/// a port change leaves it alone.
fn partial(proto: IpProtocol, src: Ipv4Addr, dst: Ipv4Addr, b: &mut [u8], len: usize) {
    let sum = |s: Ipv4Addr| fold(pseudo_header_v4(s, dst, u8::from(proto), len as u32));
    let b = &mut b[..len];
    match proto {
        IpProtocol::Udp => UdpPacket::new_unchecked(&mut *b).set_checksum(sum(src)),
        _ => TcpPacket::new_unchecked(&mut *b).set_checksum(sum(src)),
    }
    let Ok(mut p) = PortsHeader::new_checked(proto, &mut *b) else {
        return;
    };
    p.rewrite_src_port(9, Checksum::Partial);
    p.update_for_address(src, B, Checksum::Partial);
    // 0 and 0xffff are the same sum.
    let same = |x: u16, y: u16| x == y || (x | y == 0xffff && x & y == 0);
    let got = p.checksum().unwrap_or_default();
    assert!(
        same(got, sum(B)),
        "{proto:?}: partial checksum {got:#x}, afresh {:#x}",
        sum(B)
    );
}

fn tcp(src: Ipv4Addr, dst: Ipv4Addr, b: &mut [u8]) {
    let Ok(t) = TcpPacket::new_checked(&*b) else {
        return;
    };
    let hl = t.header_len();
    let mut out = b.to_vec();
    out[..20].fill(0);
    let mut o = TcpPacket::new_unchecked(&mut out[..]);
    o.set_src_port(t.src_port());
    o.set_dst_port(t.dst_port());
    o.set_seq(t.seq());
    o.set_ack(t.ack());
    o.set_header_len(hl);
    o.set_flags(t.flags());
    o.set_window(t.window());
    o.set_checksum(t.checksum());
    o.set_urgent(t.urgent());
    // The reserved bits beside the data offset are not modelled: carried over.
    out[12] |= b[12] & 0x0f;
    assert_eq!(out, b, "tcp: emitted bytes differ");
    let again = TcpPacket::new_checked(&out[..]).expect("emitted tcp parses");
    assert_eq!(
        (again.options(), again.payload(), again.mss_option()),
        (t.options(), t.payload(), t.mss_option())
    );
    let len = b.len();
    let mut t = TcpPacket::new_checked(&mut *b).expect("tcp");
    t.fill_checksum(src, dst);
    assert!(
        t.verify_checksum(src, dst),
        "tcp: a filled checksum does not verify"
    );
    t.rewrite_src_port(1, Checksum::Full);
    t.rewrite_dst_port(2, Checksum::Full);
    t.update_for_address(src, A, Checksum::Full);
    assert!(
        t.verify_checksum(A, dst),
        "tcp: an incremental rewrite broke it"
    );
    if t.set_mss_option(1200) {
        assert_eq!(t.mss_option(), Some(1200));
    }
    partial(IpProtocol::Tcp, A, dst, b, len);
}

fn icmp(b: &mut [u8]) {
    let Ok(i) = Icmpv4Packet::new_checked(&*b) else {
        return;
    };
    let mut out = b.to_vec();
    out[..8].fill(0);
    let mut o = Icmpv4Packet::new_unchecked(&mut out[..]);
    o.set_msg_type(i.msg_type());
    o.set_code(i.code());
    o.set_checksum(i.checksum());
    o.set_echo_ident(i.echo_ident());
    o.set_echo_seq(i.echo_seq());
    assert_eq!(out, b, "icmp: emitted bytes differ");
    let mut i = Icmpv4Packet::new_checked(&mut *b).expect("icmp");
    i.fill_checksum();
    assert!(
        i.verify_checksum(),
        "icmp: a filled checksum does not verify"
    );
    i.rewrite_echo_ident(7);
    assert!(i.verify_checksum(), "icmp: the echo id rewrite broke it");
    i.set_next_hop_mtu(1280);
    assert_eq!((i.echo_ident(), i.next_hop_mtu()), (0, 1280));
}

fn dhcp_round_trip(b: &[u8]) {
    let Ok(d) = DhcpPacket::new_checked(b) else {
        return;
    };
    let mut out = vec![0u8; dhcp::HEADER_LEN];
    let mut o = DhcpPacket::new_unchecked(&mut out[..]);
    o.set_op(d.op());
    if d.is_ethernet() {
        o.set_ethernet();
    }
    o.set_xid(d.xid());
    o.set_flags(d.flags());
    o.set_ciaddr(d.ciaddr());
    o.set_yiaddr(d.yiaddr());
    o.set_siaddr(d.siaddr());
    o.set_giaddr(d.giaddr());
    o.set_chaddr(d.chaddr());
    o.set_magic();
    let options: Vec<(u8, Vec<u8>)> = d.options().map(|(c, v)| (c, v.to_vec())).collect();
    for (c, v) in &options {
        dhcp::push_option(&mut out, *c, v);
    }
    out.push(dhcp::DhcpOption::END);
    let e = DhcpPacket::new_checked(&out[..]).expect("emitted dhcp parses");
    assert_eq!(
        (e.op(), e.is_ethernet(), e.xid(), e.flags(), e.chaddr()),
        (d.op(), d.is_ethernet(), d.xid(), d.flags(), d.chaddr())
    );
    assert_eq!(
        (e.ciaddr(), e.yiaddr(), e.siaddr(), e.giaddr()),
        (d.ciaddr(), d.yiaddr(), d.siaddr(), d.giaddr())
    );
    let again: Vec<(u8, Vec<u8>)> = e.options().map(|(c, v)| (c, v.to_vec())).collect();
    assert_eq!(again, options, "dhcp: options differ");
    assert_eq!(e.msg_type(), d.msg_type());
    assert_eq!(dhcp::is_server_message(&out), dhcp::is_server_message(b));
}

fn dhcpv6_round_trip(b: &[u8]) {
    let Ok(d) = dhcpv6::Dhcpv6Packet::new_checked(b) else {
        return;
    };
    let mut out = b.to_vec();
    out[..4].fill(0);
    let mut o = dhcpv6::Dhcpv6Packet::new_unchecked(&mut out[..]);
    o.set_msg_type(d.msg_type());
    o.set_transaction_id(d.transaction_id());
    assert_eq!(out, b, "dhcpv6: emitted bytes differ");
    assert_eq!(dhcpv6::is_server_message(&out), d.is_server_message());
}

fn vnet(b: &[u8]) {
    if let Some(v) = VnetHdr::parse(b) {
        assert_eq!(&v.to_bytes()[..], &b[..VnetHdr::LEN], "virtio-net header");
        assert_eq!(VnetHdr::parse(&v.to_bytes()), Some(v));
    }
}

/// Transport views behind an IPv4 header, the addresses taken from it.
fn l4(proto: IpProtocol, src: Ipv4Addr, dst: Ipv4Addr, b: &mut [u8]) {
    match proto {
        IpProtocol::Tcp => tcp(src, dst, b),
        IpProtocol::Udp => {
            udp(src, dst, b);
            if let Ok(u) = UdpPacket::new_checked(&*b) {
                dhcp_round_trip(u.payload());
                dhcpv6_round_trip(u.payload());
            }
        }
        _ => icmp(b),
    }
}

fn ip(b: &mut [u8]) {
    ipv4_round_trip(b);
    let Ok(p) = Ipv4Packet::new_checked(&*b) else {
        return;
    };
    let (src, dst, proto) = (p.src(), p.dst(), p.protocol());
    black_box((p.is_fragment(), p.flags_and_offset(), p.verify_checksum()));
    let mut copy = b.to_vec();
    ipv4_checksums(&mut copy);
    let mut p = Ipv4Packet::new_checked(&mut *b).expect("ipv4");
    let (_, payload) = p.split_mut();
    l4(proto, src, dst, payload);
    // The quoted packet of an ICMP error is a view of its own.
    if proto == IpProtocol::Icmp
        && let Some(inner) = payload.get(8..)
        && let Ok((q, rest)) = split_quote(inner)
    {
        black_box((q.src(), q.dst(), q.protocol(), rest));
    }
}

/// IPv6 and what rides on it: the fixed header and extension walk, ICMPv6, neighbour
/// discovery and its options, DHCPv6's options and identity associations.
fn ip6(b: &[u8]) {
    use dataplane::wire::dhcpv6::{Dhcpv6Packet, IaNa};
    use dataplane::wire::ndp::{NdpMessage, PrefixInfo, rdnss_servers};
    use dataplane::wire::{Icmpv6Packet, Ipv6Packet};
    if let Ok(p) = Ipv6Packet::new_checked(b) {
        black_box((p.src(), p.dst(), p.hop_limit(), p.payload(), p.packet()));
        let _ = black_box(p.upper());
        let _ = black_box(p.walk());
    }
    // Stripping in place: what is left must still be a packet whose upper layer the
    // walk finds right behind the fixed header.
    let mut owned = b.to_vec();
    if let Some(start) = dataplane::wire::ipv6::strip_extension_headers(&mut owned) {
        let p = Ipv6Packet::new_checked(&owned[start..]).expect("a stripped packet parses");
        let at = p.upper().expect("a stripped packet's upper layer");
        assert!(
            matches!(at, dataplane::wire::ipv6::Upper::At { offset: 40, .. }),
            "{at:?}"
        );
    }
    if let Ok(i) = Icmpv6Packet::new_checked(b) {
        let a = std::net::Ipv6Addr::LOCALHOST;
        black_box((i.msg_type(), i.echo_ident(), i.mtu(), i.data()));
        black_box(i.verify_checksum(&a, &a));
    }
    if let Ok(m) = NdpMessage::new_checked(b) {
        let _ = black_box((m.target(), m.flags(), m.router_lifetime(), m.lladdr()));
        for (_, body) in m.options().flatten() {
            black_box((PrefixInfo::parse(body), rdnss_servers(body).count()));
        }
    }
    if let Ok(m) = Dhcpv6Packet::new_checked(b) {
        for (code, body) in m.options().flatten() {
            if code == 3
                && let Ok(ia) = IaNa::parse(body)
            {
                black_box(ia.addresses().count());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(l2) = parse_l2(data) {
        black_box(l2);
    }
    ethernet(data);
    vnet(data);
    let mut buf = data.to_vec();
    if let Ok(mut e) = EthernetFrame::new_checked(&mut buf[..]) {
        let payload = e.payload_mut();
        vlan(payload);
        arp(payload);
        ip(payload);
        if let Some(inner) = payload.get_mut(4..) {
            ip(inner);
        }
    }
    ip(&mut data.to_vec());
    arp(data);
    dhcp_round_trip(data);
    dhcpv6_round_trip(data);
    ip6(data);
    for proto in [6u8, 17, 1] {
        let mut raw = data.to_vec();
        l4(IpProtocol::from(proto), A, B, &mut raw);
    }
});
