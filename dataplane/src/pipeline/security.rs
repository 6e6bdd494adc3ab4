//! Port security: what a port vswitch addressed may send, and the first-hop guards
//! (no rogue DHCP servers or IPv6 routers).

use crate::bridge::DropReason;
use crate::config::Security;
use crate::wire::ipv6::{Icmpv6Type, NextHeader, Upper, icmpv6_type, is_unaddressed_source};
use crate::wire::udp::peek_src_port;
use crate::wire::{ArpPacket, EtherType, IpProtocol, Ipv4Packet, Ipv6Packet, MacAddr};

const DHCP_SERVER_PORT: u16 = 67;
const DHCPV6_SERVER_PORT: u16 = 547;

/// Port security of a port vswitch addressed: its own MAC and IPv4 (0.0.0.0 allowed for
/// DHCP) as Ethernet source, IPv4 source and ARP sender, and the first-hop guards.
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
        EtherType::IPV6 => guard_v6(l3)?,
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

/// First-hop guard for IPv6 from a secured port (RFC 6105): a source in fe80::/64 or
/// ::, no router advertisement or redirect, no DHCPv6 server message; extension
/// headers are walked, and a chain that cannot be followed is dropped.
#[cold]
fn guard_v6(ip: &[u8]) -> Result<(), DropReason> {
    let p = Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?;
    if !is_unaddressed_source(&p.src_octets()) {
        return Err(DropReason::IpSpoof);
    }
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
