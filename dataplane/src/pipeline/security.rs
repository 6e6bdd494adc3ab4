//! Port security: what a port vswitch addressed may send, and the first-hop guards
//! (no rogue DHCP servers or IPv6 routers, no neighbour discovery for addresses not the
//! port's).

use crate::bridge::DropReason;
use crate::config::Security;
use crate::wire::ipv6::{Icmpv6Type, NextHeader, Upper, icmpv6_type, link_local};
use crate::wire::ndp::NdpMessage;
use crate::wire::udp::{peek_payload, peek_ports};
use crate::wire::{ArpPacket, EtherType, IpProtocol, Ipv4Packet, Ipv6Packet, MacAddr};
use crate::wire::{dhcp, dhcpv6};

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

/// First-hop guard for IPv4 from a secured port: no DHCP server messages. Reads the
/// protocol and, for UDP, both ports (one load); only UDP from or to a DHCP port is
/// looked at further ([`dhcp_guard_v4`]).
#[inline(always)]
fn guard_v4(ip: &Ipv4Packet<&[u8]>) -> Result<(), DropReason> {
    // Later fragments carry no UDP header; the first one does.
    if ip.protocol() != IpProtocol::Udp || ip.frag_offset() != 0 {
        return Ok(());
    }
    match peek_ports(ip.payload()) {
        Some((sport, dport))
            if sport == dhcp::SERVER_PORT
                || dport == dhcp::CLIENT_PORT
                || dport == dhcp::SERVER_PORT =>
        {
            dhcp_guard_v4(ip, sport)
        }
        _ => Ok(()),
    }
}

/// UDP from or to a DHCP port: refused when it comes from the server port (only a
/// server or relay sends from 67), or when it goes to a client or relay (port 68 or
/// 67) and is a server message by its meaning, whatever its source port: a BOOTREPLY,
/// an OFFER, ACK or NAK. A first fragment to those ports is refused too: a DHCP message
/// is never fragmented, and its options could hide in the later fragments.
#[cold]
fn dhcp_guard_v4(ip: &Ipv4Packet<&[u8]>, sport: u16) -> Result<(), DropReason> {
    let payload = ip.payload();
    if sport == dhcp::SERVER_PORT
        || ip.more_fragments()
        || dhcp::is_server_message(peek_payload(payload))
    {
        return Err(DropReason::DhcpGuard);
    }
    Ok(())
}

/// DHCPv6 from a secured port: refused from the server port (547), or to a client or
/// relay (546, 547) when its type is one only servers send (ADVERTISE, REPLY,
/// RECONFIGURE, RELAY-REPL, ...), whatever its source port.
fn dhcp_guard_v6(udp: &[u8]) -> Result<(), DropReason> {
    let Some((sport, dport)) = peek_ports(udp) else {
        return Ok(());
    };
    let to_dhcp = dport == dhcpv6::CLIENT_PORT || dport == dhcpv6::SERVER_PORT;
    if sport == dhcpv6::SERVER_PORT || (to_dhcp && dhcpv6::is_server_message(peek_payload(udp))) {
        return Err(DropReason::DhcpGuard);
    }
    Ok(())
}

/// First-hop guard for IPv6 from a secured port (RFC 6105): no router advertisement
/// or redirect, no DHCPv6 server message ([`dhcp_guard_v6`]); extension headers are
/// walked, and a chain that cannot be followed is dropped.
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
        NextHeader::UDP => dhcp_guard_v6(upper),
        _ => Ok(()),
    }
}

/// Whether `a` is one of the port's two IPv6 addresses: its IPAM address or its
/// link-local (the EUI-64 of its MAC).
#[inline]
fn owns6(sec: &Security, a: std::net::Ipv6Addr) -> bool {
    Some(a) == sec.ip6 || a == link_local(sec.mac)
}

/// The IPv6 source a secured port may use: one of its addresses ([`owns6`]), or ::
/// for what a host sends before it has an address ([`unspecified_source`]).
#[inline]
fn v6_source(sec: &Security, ip: &[u8]) -> Result<(), DropReason> {
    let p = Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?;
    let src = p.src();
    if owns6(sec, src) {
        Ok(())
    } else if src.is_unspecified() {
        unspecified_source(&p, ip)
    } else {
        Err(DropReason::IpSpoof)
    }
}

/// What may come from `::` (RFC 4862, RFC 4861, RFC 3810): a neighbour solicitation
/// (duplicate address detection; [`nd_guard`] holds its target to the port's own
/// addresses), a router solicitation, a multicast listener report. Anything else is a
/// spoof.
fn unspecified_source(p: &Ipv6Packet<&[u8]>, ip: &[u8]) -> Result<(), DropReason> {
    let Ok(Upper::At {
        proto: NextHeader::ICMPV6,
        offset,
    }) = p.upper()
    else {
        return Err(DropReason::IpSpoof);
    };
    match icmpv6_type(ip.get(offset..).unwrap_or_default()) {
        Some(
            Icmpv6Type::NEIGHBOR_SOLICIT
            | Icmpv6Type::ROUTER_SOLICIT
            | Icmpv6Type::MLD_REPORT
            | Icmpv6Type::MLD2_REPORT,
        ) => Ok(()),
        _ => Err(DropReason::IpSpoof),
    }
}

/// Neighbour discovery guard: a secured port advertises only its own addresses
/// (neighbour advertisement targets) and probes only them from `::` (a probe for
/// another port's address would make that port give it up: a duplicate address
/// detection attack), and any link-layer address option it sends in a solicitation or
/// advertisement is its own MAC. TCP and UDP right behind the fixed
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
    let claims = ty == Some(Icmpv6Type::NEIGHBOR_ADVERT)
        || (ty == Some(Icmpv6Type::NEIGHBOR_SOLICIT) && p.src().is_unspecified());
    if claims && !owns6(sec, m.target()) {
        return Err(DropReason::NdSpoof);
    }
    match m.lladdr() {
        Ok(None) => Ok(()),
        Ok(Some(mac)) if mac == sec.mac => Ok(()),
        Ok(Some(_)) => Err(DropReason::NdSpoof),
        Err(_) => Err(DropReason::Malformed),
    }
}
