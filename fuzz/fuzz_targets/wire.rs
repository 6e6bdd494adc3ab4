//! The wire views: every view over arbitrary bytes (and over the payloads of the views
//! around it), every accessor, and the in-place rewrites on a copy.
#![no_main]

use dataplane::wire::ipv4::split_quote;
use dataplane::wire::{
    ArpPacket, Checksum, EthernetFrame, Icmpv4Packet, IpProtocol, Ipv4Packet, PortsHeader,
    TcpPacket, UdpPacket, VlanTag, parse_l2,
};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use std::net::Ipv4Addr;

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

fn l4(proto: IpProtocol, src: Ipv4Addr, dst: Ipv4Addr, b: &mut [u8]) {
    // The same rewrites through the view TCP and UDP share, in both checksum modes.
    let csum = Checksum::partial_if(b.first().is_some_and(|x| x & 1 != 0));
    if let Ok(mut p) = PortsHeader::new_checked(proto, &mut *b) {
        black_box((p.src_port(), p.dst_port(), p.checksum(), p.tcp_flags()));
        p.rewrite_src_port(3, csum);
        p.rewrite_dst_port(4, csum);
        p.update_for_address(src, A, csum);
    }
    match proto {
        IpProtocol::Tcp => {
            if let Ok(mut t) = TcpPacket::new_checked(&mut *b) {
                black_box((t.src_port(), t.dst_port(), t.seq(), t.ack(), t.flags()));
                black_box((
                    t.window(),
                    t.urgent(),
                    t.options(),
                    t.payload(),
                    t.mss_option(),
                ));
                black_box(t.verify_checksum(src, dst));
                t.rewrite_src_port(1, csum);
                t.rewrite_dst_port(2, csum);
                t.update_for_address(src, A, csum);
                t.fill_checksum(src, dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(mut u) = UdpPacket::new_checked(&mut *b) {
                black_box((
                    u.src_port(),
                    u.dst_port(),
                    u.len(),
                    u.checksum(),
                    u.payload(),
                ));
                black_box(u.verify_checksum(src, dst));
                u.rewrite_src_port(1, csum);
                u.rewrite_dst_port(2, csum);
                u.update_for_address(src, A, csum);
                u.fill_checksum(src, dst);
            }
        }
        _ => {
            if let Ok(mut i) = Icmpv4Packet::new_checked(&mut *b) {
                black_box((i.msg_type(), i.code(), i.echo_ident(), i.echo_seq()));
                black_box((i.next_hop_mtu(), i.data(), i.verify_checksum()));
                i.rewrite_echo_ident(7);
                i.fill_checksum();
            }
        }
    }
}

fn ip(b: &mut [u8]) {
    let Ok(mut p) = Ipv4Packet::new_checked(&mut *b) else {
        return;
    };
    black_box((
        p.version(),
        p.header_len(),
        p.total_len(),
        p.ident(),
        p.frag_offset(),
    ));
    black_box((
        p.is_fragment(),
        p.ttl(),
        p.header(),
        p.payload(),
        p.verify_checksum(),
    ));
    let (src, dst, proto) = (p.src(), p.dst(), p.protocol());
    let old = p.rewrite_src(A);
    p.rewrite_dst(old);
    p.decrement_ttl();
    p.fill_checksum();
    let (_, payload) = p.split_mut();
    l4(proto, src, dst, payload);
    // The quoted packet of an ICMP error is a view of its own.
    if proto == IpProtocol::Icmp
        && let Some(inner) = payload.get(8..)
    {
        if let Ok(q) = Ipv4Packet::new_checked(inner) {
            black_box((q.src(), q.dst(), q.payload()));
        }
        if let Ok((q, rest)) = split_quote(inner) {
            black_box((q.src(), q.dst(), q.protocol(), rest));
        }
    }
}

/// IPv6 and what rides on it: the fixed header and extension walk, ICMPv6, neighbour
/// discovery and its options, DHCPv6 and its identity associations.
fn ip6(b: &[u8]) {
    use dataplane::wire::dhcpv6::{Dhcpv6Message, IaNa};
    use dataplane::wire::ndp::{NdpMessage, PrefixInfo, rdnss_servers};
    use dataplane::wire::{Icmpv6Packet, Ipv6Packet};
    if let Ok(p) = Ipv6Packet::new_checked(b) {
        black_box((p.src(), p.dst(), p.hop_limit(), p.payload(), p.packet()));
        black_box(p.upper());
    }
    if let Ok(i) = Icmpv6Packet::new_checked(b) {
        let a = std::net::Ipv6Addr::LOCALHOST;
        black_box((i.msg_type(), i.echo_ident(), i.mtu(), i.data()));
        black_box(i.verify_checksum(&a, &a));
    }
    if let Ok(m) = NdpMessage::new_checked(b) {
        black_box((m.target(), m.flags(), m.router_lifetime(), m.lladdr()));
        for (_, body) in m.options().flatten() {
            black_box((PrefixInfo::parse(body), rdnss_servers(body).count()));
        }
    }
    if let Ok(m) = Dhcpv6Message::new_checked(b) {
        black_box((m.msg_type(), m.transaction_id()));
        for (code, body) in m.options().flatten() {
            if code == 3
                && let Ok(ia) = IaNa::parse(body)
            {
                black_box(ia.addresses().count());
            }
        }
    }
}

fn arp(b: &[u8]) {
    if let Ok(a) = ArpPacket::new_checked(b) {
        black_box((a.operation(), a.sender_mac(), a.sender_ip()));
        black_box((a.target_mac(), a.target_ip()));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if let Ok(l2) = parse_l2(&buf) {
        black_box(l2);
    }
    if let Ok(mut e) = EthernetFrame::new_checked(&mut buf[..]) {
        black_box((e.dst(), e.src(), e.ethertype()));
        let payload = e.payload_mut();
        if let Ok(v) = VlanTag::new_checked(&*payload) {
            black_box((
                v.tci(),
                v.vid(),
                v.pcp(),
                v.dei(),
                v.ethertype(),
                v.payload(),
            ));
        }
        arp(payload);
        ip(payload);
        if let Some(inner) = payload.get_mut(4..) {
            ip(inner);
        }
    }
    let mut raw = data.to_vec();
    ip(&mut raw);
    arp(data);
    ip6(data);
    for proto in [6u8, 17, 1] {
        let mut raw = data.to_vec();
        l4(IpProtocol::from(proto), A, A, &mut raw);
    }
});
