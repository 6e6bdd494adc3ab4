//! The gateway: what each network's gateway address answers, and the I/O behind it.
//!
//! Sans-I/O, a frame in and actions out:
//! - [`dispatch`]: [`Gateway`], which dispatches each frame the bridge sends to the
//!   gateway by protocol and keeps the tables it answers from (leases, neighbours).
//! - [`arp`]: who-has for the gateway address; building requests.
//! - [`icmp`]: echo replies, and the errors the gateway sends (port unreachable,
//!   fragmentation needed, time exceeded), rate limited.
//! - [`dhcp`]: the DHCP server that hands each port the address IPAM gave it.
//! - IPv6, one more arm of the same dispatch (`dispatch6`): [`ndp`] (neighbour
//!   advertisements for the gateway's addresses, router advertisements), [`icmp6`]
//!   (echo, errors), [`dhcp6`] (stateful DHCPv6 of the IPAM address), DNS on the
//!   gateway's IPv6 address, and the path of routed IPv6: to the socket uplink like
//!   IPv4, else "no route" ([`Gateway::not_yet_routed`]) until the packet uplink
//!   carries IPv6.
//! - `resolver`: DNS queries to the gateway, through the sans-I/O [`crate::dns`] server.
//! - `segment`: vswitch's own address on a packet uplink's segment, and what the
//!   workers punt on the way out; `own_address`: that address as the containers
//!   reach it (a ping, a closed port), answered as its owner would.
//! - [`action`]: what the gateway asks its I/O to do ([`Action`]).
//! - [`config`]: what it answers from ([`GatewayConfig`]), rebuilt by the control thread.
//!
//! The I/O, in [`io`]: [`GatewayIo`] runs on the gateway thread, performs the actions
//! (rings to the workers, upstream resolvers' sockets, the socket uplink) and holds
//! every mio token ([`io::token`]).
//!
//! The responders take an untagged Ethernet frame and write complete Ethernet frames
//! into a buffer the caller reuses.

pub mod action;
pub mod arp;
pub mod config;
pub mod dhcp;
pub mod dhcp6;
pub mod dispatch;
mod dispatch6;
pub mod icmp;
pub mod icmp6;
pub mod io;
pub mod ndp;
mod own_address;
mod resolver;
mod segment;
mod segment6;

pub use action::{Action, Actions};
pub use config::{
    DHCP_LEASE_SECS, GatewayConfig, Lease, Net4, Net6, NetConfig, NetDns, PacketUplink,
    PacketUplink6, UplinkMode,
};
pub use dispatch::{DnsNetCounts, Gateway, GatewayStats, Inbound, Verdict};
pub use io::GatewayIo;

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::{Ipv4Cidr, Ipv6Cidr, MacAddr};

/// What the gateway knows of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayNet {
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: MacAddr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
    /// DNS is served on the gateway (DHCP advertises it).
    pub dns: bool,
    pub lease_secs: u32,
    /// Search domain DHCP advertises (empty: none).
    pub domain_name: String,
}

impl GatewayNet {
    /// The network's prefix.
    pub fn cidr(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(self.subnet, self.prefix_len)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        self.cidr().netmask()
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        self.cidr().broadcast()
    }
}

/// What the IPv6 responders know of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayNet6 {
    /// The gateway's address in the network's prefix.
    pub gateway: Ipv6Addr,
    /// Its link-local address (the EUI-64 of its MAC): router advertisements come
    /// from it.
    pub link_local: Ipv6Addr,
    pub gateway_mac: MacAddr,
    pub subnet: Ipv6Cidr,
    pub mtu: u16,
    /// DNS is served on the gateway (advertised in RDNSS and DHCPv6).
    pub dns: bool,
    /// The gateway is a default router (not on an internal network).
    pub router: bool,
    pub lease_secs: u32,
    /// The network lets hosts form their address by SLAAC ([`super::NetConfig::slaac`]).
    pub autonomous: bool,
    /// The domain given to DHCPv6 clients as their search list (the network's name,
    /// as DHCPv4's domain name).
    pub domain_name: String,
}

impl GatewayNet6 {
    /// Whether `a` is one of the gateway's two addresses.
    pub fn is_gateway(&self, a: &Ipv6Addr) -> bool {
        *a == self.gateway || *a == self.link_local
    }

    /// Whether hosts form their address from the prefix by SLAAC: a /64 (RFC 4862),
    /// where IPAM's address is the same EUI-64 address, on a network whose engine
    /// does not configure addresses itself.
    pub fn slaac(&self) -> bool {
        self.autonomous && self.subnet.prefix_len() == 64
    }
}

/// Writes an Ethernet header into `out` (cleared first).
pub(crate) fn eth_header(out: &mut Vec<u8>, dst: MacAddr, src: MacAddr, ethertype: u16) {
    out.clear();
    out.extend_from_slice(&dst.0);
    out.extend_from_slice(&src.0);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

/// Appends an IPv4 header (no options, DF clear, TTL 64) for `payload_len` bytes.
pub(crate) fn ipv4_header(
    out: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: crate::wire::IpProtocol,
    payload_len: usize,
) -> bool {
    let Ok(total) = u16::try_from(20 + payload_len) else {
        return false;
    };
    let at = out.len();
    out.resize(at + 20, 0);
    let Some(b) = out.get_mut(at..) else {
        return false;
    };
    let mut ip = crate::wire::Ipv4Packet::new_unchecked(b);
    ip.set_version_and_header_len(20);
    ip.set_total_len(total);
    ip.set_ttl(64);
    ip.set_protocol(proto);
    ip.set_src(src);
    ip.set_dst(dst);
    ip.fill_checksum();
    true
}

/// Appends an IPv6 header (hop limit `hops`) for `payload_len` bytes of `next`.
pub(crate) fn ipv6_header(
    out: &mut Vec<u8>,
    (src, dst): (Ipv6Addr, Ipv6Addr),
    next: u8,
    hops: u8,
    payload_len: usize,
) -> bool {
    let Ok(len) = u16::try_from(payload_len) else {
        return false;
    };
    let at = out.len();
    out.resize(at + crate::wire::ipv6::HEADER_LEN, 0);
    let Some(b) = out.get_mut(at..) else {
        return false;
    };
    let mut ip = crate::wire::Ipv6Packet::new_unchecked(b);
    ip.init();
    ip.set_payload_len(len);
    ip.set_next_header(next);
    ip.set_hop_limit(hops);
    ip.set_src(src);
    ip.set_dst(dst);
    true
}

/// Appends an IP header of the addresses' family (IPv4: no options, DF clear, TTL 64;
/// IPv6: hop limit 64) for `payload_len` bytes of `proto`. False when the families
/// differ or the payload is too long.
pub(crate) fn ip_header(
    out: &mut Vec<u8>,
    (src, dst): (std::net::IpAddr, std::net::IpAddr),
    proto: u8,
    payload_len: usize,
) -> bool {
    use std::net::IpAddr;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4_header(out, s, d, crate::wire::IpProtocol::from(proto), payload_len)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_header(out, (s, d), proto, 64, payload_len),
        _ => false,
    }
}

/// Writes a whole Ethernet frame holding an ICMPv6 message into `out`: `fill` writes
/// the message after the headers (its checksum is filled here).
pub(crate) fn icmp6_frame(
    out: &mut Vec<u8>,
    (dst_mac, src_mac): (MacAddr, MacAddr),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    hops: u8,
    fill: impl FnOnce(&mut Vec<u8>),
) -> bool {
    eth_header(out, dst_mac, src_mac, crate::wire::EtherType::IPV6);
    let ip_at = out.len();
    if !ipv6_header(
        out,
        (src, dst),
        crate::wire::ipv6::NextHeader::ICMPV6,
        hops,
        0,
    ) {
        return false;
    }
    let at = out.len();
    fill(out);
    let Ok(len) = u16::try_from(out.len() - at) else {
        return false;
    };
    if let Some(ip) = out.get_mut(ip_at..at) {
        crate::wire::Ipv6Packet::new_unchecked(ip).set_payload_len(len);
    }
    let Some(m) = out.get_mut(at..) else {
        return false;
    };
    if m.len() < crate::wire::icmpv6::HEADER_LEN {
        return false;
    }
    crate::wire::Icmpv6Packet::new_unchecked(m).fill_checksum(&src, &dst);
    true
}

/// Builds an IPv6/UDP packet (no Ethernet header) from `src` to `dst` carrying
/// `payload`, checksum filled; None when it would be too long.
pub fn udp6_packet(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(48 + payload.len());
    udp6_append(&mut out, src, dst, payload).then_some(out)
}

/// Appends an IPv6 header and a UDP datagram carrying `payload` to `out`.
pub(crate) fn udp6_append(
    out: &mut Vec<u8>,
    (src, sport): (Ipv6Addr, u16),
    (dst, dport): (Ipv6Addr, u16),
    payload: &[u8],
) -> bool {
    let Ok(len) = u16::try_from(8 + payload.len()) else {
        return false;
    };
    let next = crate::wire::ipv6::NextHeader::UDP;
    if !ipv6_header(out, (src, dst), next, 64, usize::from(len)) {
        return false;
    }
    let at = out.len();
    out.resize(at + 8, 0);
    out.extend_from_slice(payload);
    let Some(b) = out.get_mut(at..) else {
        return false;
    };
    let mut u = crate::wire::UdpPacket::new_unchecked(b);
    u.set_src_port(sport);
    u.set_dst_port(dport);
    u.set_len(len);
    u.fill_checksum_v6(&src, &dst);
    true
}
