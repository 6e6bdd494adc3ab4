//! Port security: what a port vswitch addressed may send, and the first-hop guards
//! (no rogue DHCP servers or IPv6 routers, no neighbour discovery for addresses not the
//! port's).

use crate::bridge::DropReason;
use crate::config::Security;
use crate::wire::ipv6::{Icmpv6Type, NextHeader, Upper, icmpv6_type, link_local};
use crate::wire::ndp::NdpMessage;
use crate::wire::udp::peek_src_port;
use crate::wire::{ArpPacket, EtherType, IpProtocol, Ipv4Packet, Ipv6Packet, MacAddr};

const DHCP_SERVER_PORT: u16 = 67;
const DHCPV6_SERVER_PORT: u16 = 547;

/// Port security of a port vswitch addressed: its own MAC and IPv4 (0.0.0.0 allowed for
/// DHCP) as Ethernet source, IPv4 source and ARP sender, its own IPv6 addresses as
/// IPv6 source, and the first-hop guards.
/// `l3` is what follows the (untagged) Ethernet header.
#[inline(always)]
pub(super) fn port_security(
    sec: &Security,
    l3: &[u8],
    src: MacAddr,
    ethertype: u16,
) -> Result<(), DropReason> {
    if src != sec.mac {
        return Err(DropReason::MacSpoof);
    }
    let allowed = |ip: std::net::Ipv4Addr| ip.is_unspecified() || Some(ip) == sec.ip;
    match ethertype {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).map_err(|_| DropReason::Malformed)?;
            if !allowed(ip.src()) {
                return Err(DropReason::IpSpoof);
            }
            guard_v4(&ip)?;
        }
        EtherType::IPV6 => {
            v6_source(sec, l3)?;
            guard_v6(l3)?;
            nd_guard(sec, l3)?;
        }
        EtherType::ARP => {
            let arp = ArpPacket::new_checked(l3).map_err(|_| DropReason::Malformed)?;
            if arp.sender_mac() != sec.mac {
                return Err(DropReason::MacSpoof);
            }
            if !allowed(arp.sender_ip()) {
                return Err(DropReason::IpSpoof);
            }
        }
        // Anything else may only carry the port's MAC, checked above.
        _ => {}
    }
    Ok(())
}

/// First-hop guard for IPv4 from a secured port: no DHCP server messages (UDP from
/// port 67). Reads the protocol and, for UDP, the source port; nothing else.
#[inline(always)]
fn guard_v4(ip: &Ipv4Packet<&[u8]>) -> Result<(), DropReason> {
    // Later fragments carry no UDP header; the first one does.
    if ip.protocol() != IpProtocol::Udp || ip.frag_offset() != 0 {
        return Ok(());
    }
    if peek_src_port(ip.payload()) == Some(DHCP_SERVER_PORT) {
        return Err(DropReason::DhcpGuard);
    }
    Ok(())
}

/// First-hop guard for IPv6 from a secured port (RFC 6105): no router advertisement
/// or redirect, no DHCPv6 server message; extension headers are walked, and a chain
/// that cannot be followed is dropped.
#[inline]
fn guard_v6(ip: &[u8]) -> Result<(), DropReason> {
    let p = Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?;
    let (proto, at) = match p.upper().map_err(|_| DropReason::BadIpv6Chain)? {
        Upper::At { proto, offset } => (proto, offset),
        Upper::LaterFragment | Upper::Opaque => return Ok(()),
    };
    let upper = ip.get(at..).unwrap_or_default();
    match proto {
        NextHeader::ICMPV6 => match icmpv6_type(upper) {
            Some(Icmpv6Type::ROUTER_ADVERT | Icmpv6Type::REDIRECT) => Err(DropReason::RaGuard),
            _ => Ok(()),
        },
        NextHeader::UDP if peek_src_port(upper) == Some(DHCPV6_SERVER_PORT) => {
            Err(DropReason::DhcpGuard)
        }
        _ => Ok(()),
    }
}

/// The IPv6 source a secured port may use: its address, its link-local (the EUI-64 of
/// its MAC), or :: (duplicate address detection).
#[inline]
fn v6_source(sec: &Security, ip: &[u8]) -> Result<(), DropReason> {
    let p = Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?;
    let src = p.src();
    if src.is_unspecified() || Some(src) == sec.ip6 || src == link_local(sec.mac) {
        Ok(())
    } else {
        Err(DropReason::IpSpoof)
    }
}

/// Neighbour discovery guard: a secured port advertises only its own addresses
/// (neighbour advertisement targets), and any link-layer address option it sends in a
/// solicitation or advertisement is its own MAC. TCP and UDP right behind the fixed
/// header (the usual case) are passed without a walk.
#[inline]
fn nd_guard(sec: &Security, ip: &[u8]) -> Result<(), DropReason> {
    let p = Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?;
    if matches!(p.next_header(), NextHeader::TCP | NextHeader::UDP) {
        return Ok(());
    }
    let Ok(Upper::At {
        proto: NextHeader::ICMPV6,
        offset,
    }) = p.upper()
    else {
        return Ok(());
    };
    let msg = ip.get(offset..).unwrap_or_default();
    let ty = icmpv6_type(msg);
    if !matches!(
        ty,
        Some(
            Icmpv6Type::NEIGHBOR_SOLICIT | Icmpv6Type::NEIGHBOR_ADVERT | Icmpv6Type::ROUTER_SOLICIT
        )
    ) {
        return Ok(());
    }
    // Too short to be valid: every receiver discards it (RFC 4861 section 7.1.1).
    let Ok(m) = NdpMessage::new_checked(msg) else {
        return Ok(());
    };
    if ty == Some(Icmpv6Type::NEIGHBOR_ADVERT) {
        let t = m.target();
        if Some(t) != sec.ip6 && t != link_local(sec.mac) {
            return Err(DropReason::NdSpoof);
        }
    }
    match m.lladdr() {
        Ok(None) => Ok(()),
        Ok(Some(mac)) if mac == sec.mac => Ok(()),
        Ok(Some(_)) => Err(DropReason::NdSpoof),
        Err(_) => Err(DropReason::Malformed),
    }
}
