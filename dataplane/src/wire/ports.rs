//! The part TCP and UDP share: ports at the start of the header and a checksum that
//! covers the IPv4 pseudo-header. One view for code that translates either (NAT), so it
//! does not need to tell them apart for every field.
//!
//! The view needs only the 8 bytes every TCP and UDP header starts with (an ICMP error
//! quotes no more than that). The checksum is TCP's at offset 16 or UDP's at offset 6;
//! a quoted TCP header cut before its checksum has none to read or update
//! ([`PortsHeader::checksum`] is `None`, the rewrites change only the ports).

use super::checksum::{Checksum, PseudoAddr};
use super::{IpProtocol, Result, WireError, be16, need, put16};

/// Bytes the view needs: both ports, and UDP's length and checksum.
pub const MIN_LEN: usize = 8;

const SRC_PORT: usize = 0;
const DST_PORT: usize = 2;
const TCP_CHECKSUM: usize = 16;
const TCP_FLAGS: usize = 13;
const UDP_CHECKSUM: usize = 6;

/// A view of the ports and checksum of a TCP or UDP header.
#[derive(Debug, Clone)]
pub struct PortsHeader<T: AsRef<[u8]>> {
    buffer: T,
    udp: bool,
}

impl<T: AsRef<[u8]>> PortsHeader<T> {
    /// A view of the transport header of protocol `proto` at the start of `buffer`:
    /// refused for a protocol without ports or fewer than [`MIN_LEN`] bytes.
    #[inline]
    pub fn new_checked(proto: IpProtocol, buffer: T) -> Result<Self> {
        let udp = match proto {
            IpProtocol::Tcp => false,
            IpProtocol::Udp => true,
            _ => {
                return Err(WireError::Malformed {
                    what: "transport header",
                    why: "not TCP or UDP",
                });
            }
        };
        need("transport ports", MIN_LEN, buffer.as_ref().len())?;
        Ok(PortsHeader { buffer, udp })
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), SRC_PORT)
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), DST_PORT)
    }
    #[inline]
    fn checksum_at(&self) -> usize {
        if self.udp { UDP_CHECKSUM } else { TCP_CHECKSUM }
    }
    /// The checksum field, if the buffer holds it.
    #[inline]
    pub fn checksum(&self) -> Option<u16> {
        let at = self.checksum_at();
        match self.buffer.as_ref().get(at..at + 2) {
            Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }
    /// TCP's flags byte (0 for UDP or a header cut before it).
    #[inline]
    pub fn tcp_flags(&self) -> u8 {
        if self.udp {
            return 0;
        }
        self.buffer.as_ref().get(TCP_FLAGS).copied().unwrap_or(0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PortsHeader<T> {
    #[inline]
    fn set_checksum(&mut self, c: u16) {
        let at = self.checksum_at();
        if let Some(f) = self.buffer.as_mut().get_mut(at..at + 2) {
            f.copy_from_slice(&c.to_be_bytes());
        }
    }
    /// Accounts for an address change in the pseudo-header.
    #[inline]
    pub fn update_for_address<A: PseudoAddr>(&mut self, old: A, new: A, csum: Checksum) {
        if let Some(c) = self.checksum() {
            let udp = self.udp;
            self.set_checksum(old.update(csum, c, new, udp));
        }
    }
    #[inline]
    fn rewrite_port(&mut self, at: usize, port: u16, csum: Checksum) {
        let old = be16(self.buffer.as_ref(), at);
        if let Some(c) = self.checksum() {
            let udp = self.udp;
            self.set_checksum(csum.update_covered16(c, old, port, udp));
        }
        put16(self.buffer.as_mut(), at, port);
    }
    /// Accounts for an address change `old` -> `new` in the pseudo-header and rewrites
    /// the source port (`src`) or the destination port to `port`, the checksum read and
    /// written once: what a NAT does to one end of a packet.
    #[inline]
    pub fn translate<A: PseudoAddr>(
        &mut self,
        old: A,
        new: A,
        src: bool,
        port: u16,
        csum: Checksum,
    ) {
        let at = if src { SRC_PORT } else { DST_PORT };
        let old_port = be16(self.buffer.as_ref(), at);
        if let Some(c) = self.checksum() {
            let udp = self.udp;
            let c = old.update(csum, c, new, udp);
            self.set_checksum(csum.update_covered16(c, old_port, port, udp));
        }
        put16(self.buffer.as_mut(), at, port);
    }
    /// Rewrites the source port, keeping the checksum right for `csum`.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16, csum: Checksum) {
        self.rewrite_port(SRC_PORT, port, csum);
    }
    /// Rewrites the destination port, keeping the checksum right for `csum`.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16, csum: Checksum) {
        self.rewrite_port(DST_PORT, port, csum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{TcpPacket, UdpPacket};
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
    const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn tcp() -> Vec<u8> {
        let mut b = vec![0u8; 24];
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_src_port(40000);
        t.set_dst_port(80);
        t.set_header_len(20);
        t.set_flags(0x12);
        t.fill_checksum(SRC, DST);
        b
    }

    #[test]
    fn tcp_and_udp_share_ports_and_keep_checksums() {
        let mut b = tcp();
        let mut p = PortsHeader::new_checked(IpProtocol::Tcp, &mut b[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.tcp_flags()),
            (40000, 80, 0x12)
        );
        p.update_for_address(SRC, EXT, Checksum::Full);
        p.rewrite_src_port(1024, Checksum::Full);
        assert!(
            TcpPacket::new_checked(&b[..])
                .unwrap()
                .verify_checksum(EXT, DST)
        );

        let mut u = vec![0x9c, 0x40, 0, 53, 0, 10, 0, 0, b'h', b'i'];
        UdpPacket::new_unchecked(&mut u[..]).fill_checksum(SRC, DST);
        let mut p = PortsHeader::new_checked(IpProtocol::Udp, &mut u[..]).unwrap();
        assert_eq!(p.tcp_flags(), 0);
        p.update_for_address(DST, EXT, Checksum::Full);
        p.rewrite_dst_port(5353, Checksum::Full);
        let v = UdpPacket::new_checked(&u[..]).unwrap();
        assert!(v.verify_checksum(SRC, EXT));
        assert_eq!(v.dst_port(), 5353);
    }

    #[test]
    fn translate_is_address_then_port() {
        let mut a = tcp();
        let mut b = a.clone();
        for csum in [Checksum::Full, Checksum::Partial] {
            let mut p = PortsHeader::new_checked(IpProtocol::Tcp, &mut a[..]).unwrap();
            p.translate(SRC, EXT, true, 1024, csum);
            let mut q = PortsHeader::new_checked(IpProtocol::Tcp, &mut b[..]).unwrap();
            q.update_for_address(SRC, EXT, csum);
            q.rewrite_src_port(1024, csum);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_quoted_tcp_header_without_checksum_gets_its_ports_only() {
        let b = tcp();
        let mut cut = b[..8].to_vec();
        let mut p = PortsHeader::new_checked(IpProtocol::Tcp, &mut cut[..]).unwrap();
        assert_eq!(p.checksum(), None);
        p.rewrite_dst_port(7, Checksum::Full);
        assert_eq!(p.dst_port(), 7);
        assert_eq!(cut[4..8], b[4..8]);
    }

    #[test]
    fn refuses_short_and_portless() {
        assert!(PortsHeader::new_checked(IpProtocol::Udp, &[0u8; 7][..]).is_err());
        assert!(PortsHeader::new_checked(IpProtocol::Icmp, &[0u8; 8][..]).is_err());
        assert!(PortsHeader::new_checked(IpProtocol::Unknown(47), &[0u8; 20][..]).is_err());
    }
}
