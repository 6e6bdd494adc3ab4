//! What each network's gateway address answers, sans-I/O: a frame in, frames out.
//!
//! - [`arp`]: who-has for the gateway address; building requests.
//! - [`icmp`]: echo replies, and the errors the gateway sends (port unreachable,
//!   fragmentation needed, time exceeded), rate limited.
//! - [`dhcp`]: the DHCP server that hands each port the address IPAM gave it.
//!
//! Every function takes an untagged Ethernet frame and writes complete Ethernet frames
//! into a buffer the caller reuses.

pub mod arp;
pub mod dhcp;
pub mod icmp;

use std::net::Ipv4Addr;

use crate::wire::MacAddr;

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
    pub fn netmask(&self) -> Ipv4Addr {
        let m = if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len.min(32)))
        };
        Ipv4Addr::from(m)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) | !u32::from(self.netmask()))
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
