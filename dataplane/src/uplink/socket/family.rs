//! The address family as one more arm: what the uplink reads of a container's packet
//! and the packets it builds back, for IPv4 and IPv6 alike (header layouts stay in
//! `wire`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::icmp::{IcmpType, UnreachCode};
use crate::wire::icmpv6::{MIN_MTU, Unreach6Code};
use crate::wire::ipv6::{HEADER_LEN as V6_HEADER, Icmpv6Type, NextHeader, Upper};
use crate::wire::{Icmpv4Packet, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

/// Upper-layer protocol numbers the uplink carries (the same in both families, but
/// ICMP's).
pub(super) const TCP: u8 = 6;
pub(super) const UDP: u8 = 17;
pub(super) const ICMP: u8 = 1;
pub(super) const ICMPV6: u8 = NextHeader::ICMPV6;

/// What the uplink reads of an IP packet from a container: its addresses, upper-layer
/// protocol, and where the upper-layer header starts.
#[derive(Debug, Clone, Copy)]
pub(super) struct L3<'a> {
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) proto: u8,
    /// The IP header (IPv4 with its options; IPv6's fixed header and its extension
    /// headers).
    pub(super) header: &'a [u8],
    /// The upper-layer header and data, bounded by the IP length.
    pub(super) payload: &'a [u8],
}

impl<'a> L3<'a> {
    /// The packet's view; None for what the uplink does not carry: malformed, a
    /// fragment (nothing is reassembled), or IPv6 whose extension headers lead to no
    /// upper layer it carries (more than `MAX_EXT_HEADERS` of them, ESP, no next
    /// header). Extension headers are stepped over, their options not acted on.
    pub(super) fn parse(pkt: &'a [u8]) -> Option<L3<'a>> {
        match pkt.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(pkt).ok()?;
                if ip.is_fragment() {
                    return None;
                }
                let (hl, end) = (ip.header_len(), ip.total_len().min(pkt.len()));
                Some(L3 {
                    src: ip.src().into(),
                    dst: ip.dst().into(),
                    proto: u8::from(ip.protocol()),
                    header: pkt.get(..hl)?,
                    payload: pkt.get(hl..end)?,
                })
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(pkt).ok()?;
                let walk = ip.walk().ok()?;
                let Upper::At { proto, offset } = walk.upper else {
                    return None;
                };
                if walk.fragment || !matches!(proto, TCP | UDP | ICMPV6) {
                    return None;
                }
                let end = (V6_HEADER + ip.payload_len()).min(pkt.len());
                Some(L3 {
                    src: ip.src().into(),
                    dst: ip.dst().into(),
                    proto,
                    header: pkt.get(..offset)?,
                    payload: pkt.get(offset..end)?,
                })
            }
            _ => None,
        }
    }
}

/// Whether `pkt` is a fragment of an IPv4 or IPv6 datagram (what the uplink drops and
/// counts: it reassembles nothing).
pub(super) fn is_fragment(pkt: &[u8]) -> bool {
    match version(pkt) {
        4 => Ipv4Packet::new_checked(pkt).is_ok_and(|ip| ip.is_fragment()),
        6 => Ipv6Packet::new_checked(pkt)
            .ok()
            .and_then(|ip| ip.walk().ok())
            .is_some_and(|w| w.fragment),
        _ => false,
    }
}

impl L3<'_> {
    /// Whether IPv6 extension headers stand between the fixed header and the upper
    /// layer.
    pub(super) fn has_extensions(&self) -> bool {
        self.dst.is_ipv6() && self.header.len() > V6_HEADER
    }
}

/// Sets the IP length fields of the packet that is all of `pkt` (and IPv4's header
/// checksum): `pkt` is a whole header cut from a longer packet, whose length fields
/// still say the longer one's.
pub(super) fn set_length(pkt: &mut [u8]) -> Option<()> {
    let len = pkt.len();
    match version(pkt) {
        4 => {
            let hl = Ipv4Packet::new_unchecked(&pkt[..]).header_len();
            if hl < 20 || len < hl {
                return None;
            }
            let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
            ip.set_total_len(u16::try_from(len).ok()?);
            ip.fill_checksum();
        }
        6 => {
            let mut ip = Ipv6Packet::new_checked(&mut pkt[..]).ok()?;
            ip.set_payload_len(u16::try_from(len.checked_sub(V6_HEADER)?).ok()?);
        }
        _ => return None,
    }
    Some(())
}

/// The IP version of a packet (its first nibble).
pub(super) fn version(pkt: &[u8]) -> u8 {
    pkt.first().map_or(0, |b| b >> 4)
}

/// Builds an IP packet of `src`'s family with a fresh header around `payload` (None:
/// the families differ, or it is too long).
pub(super) fn build(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => super::build_ip(s, d, IpProtocol::from(proto), payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => build6(s, d, proto, payload),
        _ => None,
    }
}

fn build6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut p = vec![0u8; V6_HEADER + payload.len()];
    {
        let mut ip = Ipv6Packet::new_unchecked(&mut p[..]);
        ip.init();
        ip.set_payload_len(len);
        ip.set_next_header(next);
        ip.set_hop_limit(64);
        ip.set_src(src);
        ip.set_dst(dst);
    }
    p.get_mut(V6_HEADER..)?.copy_from_slice(payload);
    Some(p)
}

/// Builds a UDP packet of either family.
pub(super) fn build_udp(src: (IpAddr, u16), dst: (IpAddr, u16), data: &[u8]) -> Option<Vec<u8>> {
    match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => super::build_udp(s, src.1, d, dst.1, data),
        (IpAddr::V6(s), IpAddr::V6(d)) => crate::gateway::udp6_packet((s, src.1), (d, dst.1), data),
        _ => None,
    }
}

/// Fills the checksum of a TCP segment between `src` and `dst`.
pub(super) fn fill_tcp_checksum<T: AsRef<[u8]> + AsMut<[u8]>>(
    t: &mut TcpPacket<T>,
    src: IpAddr,
    dst: IpAddr,
) {
    t.fill_checksum_ip(src, dst);
}

/// The protocol number of ICMP in `ip`'s family.
pub(super) fn icmp_proto(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { ICMP } else { ICMPV6 }
}

/// Why a destination cannot be reached, in both families' codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unreachable {
    /// No route to the network (the host has none for this family).
    Net,
    /// The host is not reachable (no neighbour answered).
    Host,
    /// The port is closed (UDP).
    Port,
    /// Not allowed from here (no ping sockets).
    Prohibited,
}

impl Unreachable {
    /// The reason an I/O error names, if it is one of these.
    pub(super) fn of(e: &std::io::Error) -> Option<Unreachable> {
        match e.raw_os_error() {
            Some(libc::ENETUNREACH | libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT) => {
                Some(Unreachable::Net)
            }
            Some(libc::EHOSTUNREACH) => Some(Unreachable::Host),
            _ => None,
        }
    }

    fn code_v4(self) -> u8 {
        match self {
            Unreachable::Net => UnreachCode::NET,
            Unreachable::Host => UnreachCode::HOST,
            Unreachable::Port => UnreachCode::PORT,
            Unreachable::Prohibited => UnreachCode::ADMIN_PROHIBITED,
        }
    }

    fn code_v6(self) -> u8 {
        match self {
            Unreachable::Net => Unreach6Code::NO_ROUTE,
            Unreachable::Host => Unreach6Code::ADDRESS,
            Unreachable::Port => Unreach6Code::PORT,
            Unreachable::Prohibited => Unreach6Code::ADMIN_PROHIBITED,
        }
    }
}

/// A "destination unreachable" from `from` to `to` quoting `quoted` (the offending
/// packet: its IP header and at least 8 bytes after it; ICMPv6 takes what fits the
/// minimum MTU).
pub(super) fn unreachable(
    from: IpAddr,
    to: IpAddr,
    why: Unreachable,
    quoted: &[u8],
) -> Option<Vec<u8>> {
    let room = match to {
        IpAddr::V4(_) => quoted.len().min(576 - 28),
        IpAddr::V6(_) => quoted.len().min(MIN_MTU - V6_HEADER - 8),
    };
    let mut m = vec![0u8; 8 + room];
    m.get_mut(8..)?.copy_from_slice(quoted.get(..room)?);
    match (from, to) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let mut i = Icmpv4Packet::new_unchecked(&mut m[..]);
            i.set_msg_type(IcmpType::DEST_UNREACHABLE);
            i.set_code(why.code_v4());
            i.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut i = Icmpv6Packet::new_unchecked(&mut m[..]);
            i.set_msg_type(Icmpv6Type::DEST_UNREACHABLE);
            i.set_code(why.code_v6());
            i.fill_checksum(&s, &d);
        }
        _ => return None,
    }
    build(from, to, icmp_proto(to), &m)
}

/// An echo reply's type in `ip`'s family.
pub(super) fn echo_reply_type(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        IcmpType::ECHO_REPLY
    } else {
        Icmpv6Type::ECHO_REPLY
    }
}

/// Whether an ICMP message of `ip`'s family is an echo request.
pub(super) fn is_echo_request(ip: IpAddr, ty: u8) -> bool {
    match ip {
        IpAddr::V4(_) => ty == IcmpType::ECHO_REQUEST,
        IpAddr::V6(_) => ty == Icmpv6Type::ECHO_REQUEST,
    }
}

/// The echo id of an ICMP or ICMPv6 echo message (the same place in both).
pub(super) fn echo_ident(msg: &[u8]) -> u16 {
    Icmpv6Packet::new_checked(msg).map_or(0, |i| i.echo_ident())
}

/// Puts the container's echo id back into an echo reply from a ping socket and fills
/// its checksum (ICMPv6's covers the addresses).
pub(super) fn fix_echo_reply(msg: &mut [u8], id: u16, from: IpAddr, to: IpAddr) -> bool {
    match (from, to) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let Ok(mut icmp) = Icmpv4Packet::new_checked(&mut *msg) else {
                return false;
            };
            icmp.set_echo_ident(id);
            icmp.fill_checksum();
            true
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let Ok(mut icmp) = Icmpv6Packet::new_checked(&mut *msg) else {
                return false;
            };
            icmp.set_echo_ident(id);
            icmp.fill_checksum(&s, &d);
            true
        }
        _ => false,
    }
}

/// The address of `ip`'s family that stands for "any".
pub(super) fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}
