//! ARP for Ethernet and IPv4 (RFC 826). Other hardware or protocol types are refused.

use super::ethernet::MacAddr;
use super::{Result, WireError, be16, ip4, need, put16};
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;

pub struct ArpOp;
impl ArpOp {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

/// A view of an Ethernet/IPv4 ARP packet (28 bytes).
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// The whole buffer the view covers.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }
    /// Checks the length and that the packet is Ethernet (1) over IPv4 (0x0800) with
    /// 6- and 4-byte addresses.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        need("arp packet", PACKET_LEN, b.len())?;
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::Malformed {
                what: "arp packet",
                why: "not Ethernet/IPv4",
            });
        }
        Ok(p)
    }
    #[inline]
    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[8], b[9], b[10], b[11], b[12], b[13]])
    }
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), 14)
    }
    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[18], b[19], b[20], b[21], b[22], b[23]])
    }
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), 24)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the fixed Ethernet/IPv4 preamble (types and lengths).
    pub fn init(&mut self) {
        let b = self.buffer.as_mut();
        put16(b, 0, 1);
        put16(b, 2, 0x0800);
        b[4] = 6;
        b[5] = 4;
    }
    pub fn set_operation(&mut self, op: u16) {
        put16(self.buffer.as_mut(), 6, op);
    }
    pub fn set_sender_mac(&mut self, m: MacAddr) {
        self.buffer.as_mut()[8..14].copy_from_slice(&m.0);
    }
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[14..18].copy_from_slice(&ip.octets());
    }
    pub fn set_target_mac(&mut self, m: MacAddr) {
        self.buffer.as_mut()[18..24].copy_from_slice(&m.0);
    }
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[24..28].copy_from_slice(&ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 172.17.0.1? Tell 172.17.0.2 (02:42:ac:11:00:02).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0xac,
        0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac, 0x11, 0x00, 0x01,
    ];

    #[test]
    fn parse_fixture() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), ArpOp::REQUEST);
        assert_eq!(p.sender_mac(), MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]));
        assert_eq!(p.sender_ip(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.target_mac(), MacAddr::ZERO);
        assert_eq!(p.target_ip(), Ipv4Addr::new(172, 17, 0, 1));
    }

    #[test]
    fn build_round_trip() {
        let mut b = [0u8; 28];
        let mut p = ArpPacket::new_unchecked(&mut b[..]);
        p.init();
        p.set_operation(ArpOp::REQUEST);
        p.set_sender_mac(MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]));
        p.set_sender_ip(Ipv4Addr::new(172, 17, 0, 2));
        p.set_target_mac(MacAddr::ZERO);
        p.set_target_ip(Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(b, REQUEST);
    }

    #[test]
    fn refuses_short_and_foreign() {
        assert!(ArpPacket::new_checked(&REQUEST[..27]).is_err());
        let mut other = REQUEST;
        other[1] = 6; // IEEE 802 hardware
        assert!(ArpPacket::new_checked(&other[..]).is_err());
    }

    #[test]
    fn against_etherparse() {
        let a = etherparse::ArpPacketSlice::from_slice(&REQUEST).unwrap();
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(a.operation().0, p.operation());
        assert_eq!(a.sender_hw_addr(), &p.sender_mac().0);
        assert_eq!(a.sender_protocol_addr(), &p.sender_ip().octets());
        assert_eq!(a.target_protocol_addr(), &p.target_ip().octets());
    }
}
