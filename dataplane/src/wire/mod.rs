//! Zero-copy views over frame bytes.
//!
//! Every view wraps a buffer (`&[u8]`, `&mut [u8]`, or anything `AsRef<[u8]>`) and is
//! built with `new_checked`, which verifies every length the accessors rely on. After a
//! successful check no accessor can panic, whatever the bytes say. `new_unchecked` exists
//! for buffers the caller sized itself (building a reply into a fresh buffer); its
//! accessors may panic on a short buffer.
//!
//! Setters write in place. Checksums are either recomputed (`fill_checksum`) or updated
//! incrementally (RFC 1624) through [`checksum`].

pub mod arp;
pub mod checksum;
pub mod cidr;
pub mod dhcp;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod ports;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use arp::ArpPacket;
pub use checksum::Checksum;
pub use cidr::{CidrError, Ipv4Cidr};
pub use dhcp::DhcpPacket;
pub use ethernet::{EtherType, EthernetFrame, MacAddr};
pub use icmp::Icmpv4Packet;
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
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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
    std::net::Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}
