//! Zero-copy views over frame bytes: the only code in the dataplane that knows where a
//! header field sits. Everything else reads and rewrites packets through these views.
//!
//! What is modelled:
//!
//! - [`ethernet`]: Ethernet II frames and MAC addresses; [`vlan`]: 802.1Q / 802.1ad tags
//!   and [`parse_l2`], which finds the network header behind up to two tags.
//! - [`arp`]: ARP for Ethernet and IPv4.
//! - [`ipv4`]: IPv4 headers, [`IpProtocol`] (the protocol numbers, with an `Unknown`
//!   variant for the rest), incremental address and TTL rewrites, and the packet an
//!   ICMP error quotes ([`ipv4::split_quote`]: a header whose total length runs past
//!   the quote).
//! - [`ipv6`]: the fixed IPv6 header (lengths, addresses, hop limit, pseudo-header
//!   sum), a bounded walk over extension headers, and the address rules (EUI-64,
//!   link-local, solicited-node groups and their MACs).
//! - [`tcp`], [`udp`]: TCP and UDP headers; [`ports`]: the part they share (ports and a
//!   pseudo-header checksum) for code that rewrites either, such as NAT.
//! - [`icmp`]: ICMPv4 echo and errors; [`icmpv6`]: ICMPv6 echo and errors;
//!   [`ndp`]: neighbour discovery bodies and options (RA, NS, NA, RDNSS).
//! - [`dhcp`]: DHCP messages (the BOOTP fixed part, the magic cookie, the options);
//!   [`dhcpv6`]: DHCPv6 messages (the type and transaction id they start with) and
//!   their options (IA_NA, IAADDR).
//! - [`dns`]: the fixed DNS header, read before a message is trusted to hickory-proto.
//! - [`vnet`]: the virtio-net header (offload metadata) a TAP puts before each frame.
//! - [`cidr`]: IPv4 and IPv6 prefixes.
//! - [`checksum`]: the Internet checksum, its incremental update (RFC 1624), and
//!   [`Checksum`], what a TCP or UDP checksum field holds: `Full`, a finished checksum,
//!   or `Partial`, the pseudo-header sum alone of a frame whose checksum is offloaded
//!   (virtio-net `NEEDS_CSUM`, Linux `CHECKSUM_PARTIAL`), completed later over header
//!   and data. Rewrites of addresses and ports take the mode: a partial checksum is
//!   updated as a plain sum for an address and left alone for a port.
//!
//! The view contract (after smoltcp's): every view wraps a buffer (`&[u8]`,
//! `&mut [u8]`, or anything `AsRef<[u8]>`) and is built with `new_checked`, which
//! verifies every length the accessors rely on. After a successful check no accessor
//! can panic, whatever the bytes say. `new_unchecked` exists for buffers the caller
//! sized itself (building a reply into a fresh buffer, a header already checked); its
//! accessors may panic on a short buffer. Accessors are `#[inline]` loads and stores at
//! fixed offsets, so going through a view costs what indexing the bytes would.
//!
//! Setters write in place. Checksums are either recomputed (`fill_checksum`) or updated
//! incrementally through [`checksum`].

pub mod arp;
#[cfg(test)]
pub(crate) mod captured;
pub mod checksum;
pub mod cidr;
pub mod dhcp;
pub mod dhcpv6;
pub mod dns;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ndp;
pub mod ports;
pub mod stream;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vnet;

pub use arp::{ArpOp, ArpPacket};
pub use checksum::Checksum;
pub use cidr::{Cidr6Error, CidrError, Ipv4Cidr, Ipv6Cidr};
pub use dhcp::DhcpPacket;
pub use ethernet::{EtherType, EthernetFrame, MacAddr};
pub use icmp::Icmpv4Packet;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::{IpProtocol, Ipv4Packet};
pub use ipv6::Ipv6Packet;
pub use ports::PortsHeader;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;
pub use vlan::{VlanTag, parse_l2};

/// Why a buffer was not accepted as a header view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header (or than a length field inside it says).
    #[error("truncated: {what} needs {needed} bytes, got {got}")]
    Truncated {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    /// A field holds a value the view cannot work with (bad version, bad header length).
    #[error("malformed {what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
}

pub type Result<T> = core::result::Result<T, WireError>;

#[inline]
pub(crate) fn need(what: &'static str, needed: usize, got: usize) -> Result<()> {
    if got < needed {
        Err(WireError::Truncated { what, needed, got })
    } else {
        Ok(())
    }
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    // One bounds check, then one load.
    let s = &b[at..at + 2];
    u16::from_be_bytes([s[0], s[1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    let s = &b[at..at + 4];
    u32::from_be_bytes([s[0], s[1], s[2], s[3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn ip4(b: &[u8], at: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(be32(b, at))
}
