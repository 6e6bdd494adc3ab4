//! ICMPv6 on the gateway (RFC 4443): echo replies for its two addresses, and the
//! errors a router sends (destination unreachable, packet too big, time exceeded),
//! quoting as much of the offending packet as fits the IPv6 minimum MTU. The errors
//! share the per-port budget of ICMPv4 errors ([`super::icmp::ErrorBudget`]).

use std::net::Ipv6Addr;

use super::{GatewayNet6, icmp6_frame};
use crate::wire::icmpv6::{self, MIN_MTU};
use crate::wire::ipv6::{HEADER_LEN, Icmpv6Type, NextHeader, Upper, is_link_local};
use crate::wire::{EtherType, EthernetFrame, Icmpv6Packet, Ipv6Packet, MacAddr};

/// Hop limit of what the gateway sends (Linux's default).
const HOPS: u8 = 64;

/// The source MAC and IPv6 packet of a frame from a unicast MAC.
fn ipv6_from_unicast(frame: &[u8]) -> Option<(MacAddr, Ipv6Packet<&[u8]>)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::IPV6 || !eth.src().is_unicast() {
        return None;
    }
    let src_mac = eth.src();
    Some((src_mac, Ipv6Packet::new_checked(eth.into_payload()).ok()?))
}

/// Answers an echo request to one of the gateway's addresses with an echo reply.
pub fn echo_reply(frame: &[u8], net: &GatewayNet6, out: &mut Vec<u8>) -> bool {
    let Some((src_mac, ip)) = ipv6_from_unicast(frame) else {
        return false;
    };
    let (src, dst) = (ip.src(), ip.dst());
    if !net.is_gateway(&dst) || src.is_unspecified() || src.is_multicast() {
        return false;
    }
    if ip.next_header() != NextHeader::ICMPV6 {
        return false;
    }
    let msg = ip.into_payload();
    let Ok(req) = Icmpv6Packet::new_checked(msg) else {
        return false;
    };
    if req.msg_type() != Icmpv6Type::ECHO_REQUEST || req.code() != 0 {
        return false;
    }
    if !req.verify_checksum(&src, &dst) {
        return false;
    }
    icmp6_frame(out, (src_mac, net.gateway_mac), (dst, src), HOPS, |b| {
        let at = b.len();
        b.extend_from_slice(msg);
        if let Some(m) = b.get_mut(at..) {
            Icmpv6Packet::new_unchecked(m).set_msg_type(Icmpv6Type::ECHO_REPLY);
        }
    })
}

/// Builds an ICMPv6 error (`ty`, `code`, and `word`: the MTU of packet too big, else
/// 0) about the IPv6 packet in `frame`, from the gateway back to its sender, into
/// `out`. Returns false where RFC 4443 section 2.4 (e) says not to send one: about an
/// error or a redirect, about a packet from :: or a multicast address, or to a
/// multicast destination (but packet too big), or from a frame without a unicast
/// source MAC.
pub fn error(
    frame: &[u8],
    net: &GatewayNet6,
    (ty, code): (u8, u8),
    word: u32,
    out: &mut Vec<u8>,
) -> bool {
    let Some((src_mac, ip)) = ipv6_from_unicast(frame) else {
        return false;
    };
    let (src, dst) = (ip.src(), ip.dst());
    if src.is_unspecified() || src.is_multicast() {
        return false;
    }
    if dst.is_multicast() && ty != Icmpv6Type::PACKET_TOO_BIG {
        return false;
    }
    if about_an_error(&ip) {
        return false;
    }
    let whole = ip.packet();
    let room = MIN_MTU - HEADER_LEN - icmpv6::HEADER_LEN;
    let quote = whole.get(..whole.len().min(room)).unwrap_or(whole);
    // From the gateway's address of the sender's scope.
    let from = if is_link_local(&src) {
        net.link_local
    } else {
        net.gateway
    };
    icmp6_frame(out, (src_mac, net.gateway_mac), (from, src), HOPS, |b| {
        let at = b.len();
        b.extend_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
        if let Some(m) = b.get_mut(at..) {
            Icmpv6Packet::new_unchecked(m).set_word(word);
        }
        b.extend_from_slice(quote);
    })
}

/// Whether the packet is an ICMPv6 error or redirect (answered with no error), or its
/// headers cannot be followed (nothing to say about it either).
fn about_an_error(ip: &Ipv6Packet<&[u8]>) -> bool {
    match ip.upper() {
        Ok(Upper::At {
            proto: NextHeader::ICMPV6,
            offset,
        }) => {
            let ty = ip.packet().get(offset).copied().unwrap_or(0);
            !icmpv6::may_cause_error(ty)
        }
        Ok(_) => false,
        Err(_) => true,
    }
}

/// The sender of an IPv6 frame.
pub fn source_ip(frame: &[u8]) -> Option<Ipv6Addr> {
    let e = EthernetFrame::new_checked(frame).ok()?;
    Ipv6Packet::new_checked(e.payload()).ok().map(|p| p.src())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ndp::tests::net;
    use crate::wire::captured::{self, bytes};
    use crate::wire::icmpv6::Unreach6Code;

    fn parsed(out: &[u8]) -> (Ipv6Packet<&[u8]>, Icmpv6Packet<&[u8]>) {
        let ip = Ipv6Packet::new_checked(&out[14..]).unwrap();
        let m = Icmpv6Packet::new_checked(&out[54..]).unwrap();
        assert!(m.verify_checksum(&ip.src(), &ip.dst()));
        (ip, m)
    }

    #[test]
    fn echo_reply_as_the_kernel_answers() {
        let mut out = Vec::new();
        assert!(echo_reply(&bytes(captured::ECHO), &net(), &mut out));
        let want = bytes(captured::ECHO_REPLY);
        // Linux's reply, but for its random flow label and the hop limit.
        assert_eq!(out[..14], want[..14]);
        assert_eq!(out[18..21], want[18..21]);
        assert_eq!(out[22..], want[22..]);
        // Not to others, not broken.
        let mut other = bytes(captured::ECHO);
        other[53] = 9;
        assert!(!echo_reply(&other, &net(), &mut out));
        let mut bad = bytes(captured::ECHO);
        bad[60] ^= 1;
        assert!(!echo_reply(&bad, &net(), &mut out));
        assert!(!echo_reply(&bytes(captured::NS), &net(), &mut out));
    }

    #[test]
    fn unreachable_quotes_the_packet_from_the_right_address() {
        let mut out = Vec::new();
        let f = bytes(captured::ECHO);
        let kind = (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::NO_ROUTE);
        assert!(error(&f, &net(), kind, 0, &mut out));
        let (ip, m) = parsed(&out);
        // The sender is link-local: answered from the gateway's link-local address.
        assert_eq!(ip.src(), net().link_local);
        assert_eq!(
            ip.dst(),
            "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!((m.msg_type(), m.code()), (1, 0));
        assert_eq!(m.data(), &f[14..]);
        assert_eq!(
            EthernetFrame::new_checked(&out[..]).unwrap().dst(),
            MacAddr([2, 0x42, 0xac, 0x11, 0, 2])
        );
    }

    #[test]
    fn packet_too_big_carries_the_mtu_and_the_quote_fits_1280() {
        let mut f = bytes(captured::ECHO);
        f.resize(14 + 40 + 3000, 0x55);
        f[18..20].copy_from_slice(&3000u16.to_be_bytes());
        let mut out = Vec::new();
        assert!(error(
            &f,
            &net(),
            (Icmpv6Type::PACKET_TOO_BIG, 0),
            1400,
            &mut out
        ));
        let (ip, m) = parsed(&out);
        assert_eq!(m.mtu(), 1400);
        assert_eq!(ip.packet().len(), MIN_MTU);
    }

    #[test]
    fn no_error_about_errors_multicast_or_unspecified() {
        let mut out = Vec::new();
        let kind = (Icmpv6Type::TIME_EXCEEDED, 0);
        // An error.
        let mut e = Vec::new();
        assert!(error(&bytes(captured::ECHO), &net(), kind, 0, &mut e));
        let mut back = e.clone();
        back[..6].copy_from_slice(&net().gateway_mac.0);
        back[6..12].copy_from_slice(&[2, 0x42, 0xac, 0x11, 0, 2]);
        assert!(!error(&back, &net(), kind, 0, &mut out));
        // To a multicast group (the router solicitation), from :: (DAD).
        assert!(!error(&bytes(captured::RS), &net(), kind, 0, &mut out));
        assert!(!error(&bytes(captured::NS_DAD), &net(), kind, 0, &mut out));
        assert_eq!(
            source_ip(&bytes(captured::RS)),
            Some("fe80::42:acff:fe11:2".parse().unwrap())
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
            let mut out = Vec::new();
            let _ = echo_reply(&b, &net(), &mut out);
            let _ = error(&b, &net(), (1, 0), 0, &mut out);
        }
    }
}
