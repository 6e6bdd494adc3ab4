//! The gateway: what each network's gateway address answers, and the I/O behind it.
//!
//! Sans-I/O, a frame in and actions out:
//! - [`dispatch`]: [`Gateway`], which dispatches each frame the bridge sends to the
//!   gateway by protocol and keeps the tables it answers from (leases, neighbours).
//! - [`arp`]: who-has for the gateway address; building requests.
//! - [`icmp`]: echo replies, and the errors the gateway sends (port unreachable,
//!   fragmentation needed, time exceeded), rate limited.
//! - [`dhcp`]: the DHCP server that hands each port the address IPAM gave it.
//! - `resolver`: DNS queries to the gateway, through the sans-I/O [`crate::dns`] server.
//! - `segment`: vswitch's own address on a packet uplink's segment, and what the
//!   workers punt on the way out.
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
pub mod dispatch;
pub mod icmp;
pub mod io;
mod resolver;
mod segment;

pub use action::{Action, Actions};
pub use config::{DHCP_LEASE_SECS, GatewayConfig, NetConfig, NetDns, PacketUplink, UplinkMode};
pub use dispatch::{Gateway, GatewayStats, Inbound, Verdict};
pub use io::GatewayIo;

use std::net::Ipv4Addr;

use crate::wire::{Ipv4Cidr, MacAddr};

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
