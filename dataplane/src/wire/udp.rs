//! UDP (RFC 768).

use super::checksum::{self, Checksum};
use super::{Result, WireError, be16, need, put16};
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 8;
/// Where the checksum field sits in the header (what offload metadata names as the
/// checksum offset).
pub const CHECKSUM_AT: usize = 6;

/// A view of a UDP datagram. The checked length guarantees 8 <= length <= buffer length.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// The source port of the UDP header at the start of `b`, without the length checks of
/// [`UdpPacket::new_checked`]: a first fragment carries the header but not the whole
/// datagram its length field counts. None when `b` is too short to hold the port.
#[inline]
pub fn peek_src_port(b: &[u8]) -> Option<u16> {
    b.first_chunk::<2>().map(|p| u16::from_be_bytes(*p))
}

/// The source and destination ports of the UDP header at the start of `b` (one load,
/// no length checks, as [`peek_src_port`]), None when `b` is too short to hold them.
#[inline]
pub fn peek_ports(b: &[u8]) -> Option<(u16, u16)> {
    b.first_chunk::<4>().map(|p| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    })
}

/// The payload of the UDP header at the start of `b`: what follows the 8 header bytes,
/// cut to the header's length when that is shorter (a first fragment holds less than
/// the length says, so the rest of `b` is taken then). Empty when `b` is shorter than
/// a header.
#[inline]
pub fn peek_payload(b: &[u8]) -> &[u8] {
    let len = b
        .get(4..6)
        .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
    let end = len.clamp(HEADER_LEN, b.len().max(HEADER_LEN));
    b.get(HEADER_LEN..end).unwrap_or(&[])
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// The whole buffer the view covers.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        need("udp header", HEADER_LEN, b.len())?;
        let len = usize::from(be16(b, 4));
        if len < HEADER_LEN {
            return Err(WireError::Malformed {
                what: "udp header",
                why: "length below 8",
            });
        }
        need("udp datagram", len, b.len())?;
        Ok(p)
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 4))
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), CHECKSUM_AT)
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
    }
    /// Verifies the checksum against the pseudo-header; a zero checksum (none) passes.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let s = checksum::add(
            checksum::pseudo_header_v4(src, dst, 17, len as u32),
            checksum::sum(&self.buffer.as_ref()[..len]),
        );
        checksum::fold(s) == 0xffff
    }
}

impl<'a> UdpPacket<&'a [u8]> {
    /// The payload, borrowed from the buffer rather than from the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let len = self.len();
        &self.buffer[HEADER_LEN..len]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 0, v);
    }
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 4, v);
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), CHECKSUM_AT, v);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
    /// Computes the checksum with the pseudo-header (0 is sent as 0xffff).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = self.len();
        self.fill_with_pseudo(checksum::pseudo_header_v4(src, dst, 17, len as u32));
    }
    /// As [`UdpPacket::fill_checksum`], over the IPv6 pseudo-header (where the
    /// checksum is mandatory).
    pub fn fill_checksum_v6(&mut self, src: &std::net::Ipv6Addr, dst: &std::net::Ipv6Addr) {
        let len = self.len();
        self.fill_with_pseudo(super::ipv6::pseudo_header_sum(src, dst, 17, len as u32));
    }
    fn fill_with_pseudo(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let len = self.len();
        let s = checksum::add(pseudo, checksum::sum(&self.buffer.as_ref()[..len]));
        let c = match !checksum::fold(s) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }
    /// Rewrites the source port, keeping the checksum right for `csum`.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16, csum: Checksum) {
        let c = csum.update_covered16(self.checksum(), self.src_port(), port, true);
        self.set_src_port(port);
        self.set_checksum(c);
    }
    /// Rewrites the destination port, keeping the checksum right for `csum`.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16, csum: Checksum) {
        let c = csum.update_covered16(self.checksum(), self.dst_port(), port, true);
        self.set_dst_port(port);
        self.set_checksum(c);
    }
    /// Accounts for an address change in the pseudo-header (the IP header holds the
    /// address: rewrite it there).
    #[inline]
    pub fn update_for_address(&mut self, old: Ipv4Addr, new: Ipv4Addr, csum: Checksum) {
        let c = csum.update_pseudo32(self.checksum(), u32::from(old), u32::from(new), true);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_read_ports_and_payload_without_trusting_the_length() {
        let d = [0x9c, 0x40, 0, 68, 0, 11, 0, 0, 1, 2, 3, 9, 9];
        assert_eq!(peek_src_port(&d), Some(40000));
        assert_eq!(peek_ports(&d), Some((40000, 68)));
        assert_eq!(peek_payload(&d), &[1, 2, 3]);
        // A first fragment: the length counts more than the buffer holds.
        let mut cut = d;
        cut[5] = 200;
        assert_eq!(peek_payload(&cut), &d[8..]);
        // A length below the header's: no payload.
        cut[5] = 3;
        assert!(peek_payload(&cut).is_empty());
        assert_eq!(peek_ports(&d[..3]), None);
        assert!(peek_payload(&d[..7]).is_empty());
    }

    const SRC: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

    // DNS-ish datagram 40000 -> 53, payload "hi", checksum computed below.
    const DGRAM: [u8; 10] = [0x9c, 0x40, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, 0x68, 0x69];

    fn with_checksum() -> [u8; 10] {
        let mut b = DGRAM;
        UdpPacket::new_checked(&mut b[..])
            .unwrap()
            .fill_checksum(SRC, DST);
        b
    }

    #[test]
    fn parse_fixture() {
        let b = with_checksum();
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 10);
        assert_eq!(p.payload(), b"hi");
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn lengths_checked() {
        assert!(UdpPacket::new_checked(&DGRAM[..7]).is_err());
        assert!(UdpPacket::new_checked(&DGRAM[..9]).is_err()); // length says 10
        let mut bad = DGRAM;
        bad[5] = 4; // length 4 < 8
        assert!(UdpPacket::new_checked(&bad[..]).is_err());
    }

    #[test]
    fn nat_rewrite_keeps_checksum() {
        let mut b = with_checksum();
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.rewrite_src_port(1234, Checksum::Full);
        let new_src = Ipv4Addr::new(10, 0, 0, 9);
        p.update_for_address(SRC, new_src, Checksum::Full);
        assert!(p.verify_checksum(new_src, DST));
        assert_eq!(p.src_port(), 1234);
    }

    #[test]
    fn nat_rewrite_keeps_partial_checksum_partial() {
        let mut b = DGRAM;
        let seed = checksum::fold(checksum::pseudo_header_v4(SRC, DST, 17, 10));
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.set_checksum(seed);
        let new_dst = Ipv4Addr::new(10, 0, 0, 9);
        p.rewrite_dst_port(5353, Checksum::Partial);
        p.update_for_address(DST, new_dst, Checksum::Partial);
        let want = checksum::fold(checksum::pseudo_header_v4(SRC, new_dst, 17, 10));
        assert_eq!(p.checksum(), want);
        let done = !checksum::fold(checksum::sum(p.as_bytes()));
        p.set_checksum(done);
        assert!(p.verify_checksum(SRC, new_dst));
    }

    #[test]
    fn against_etherparse() {
        let b = with_checksum();
        let s = etherparse::UdpHeaderSlice::from_slice(&b).unwrap();
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(s.source_port(), p.src_port());
        assert_eq!(s.destination_port(), p.dst_port());
        assert_eq!(usize::from(s.length()), p.len());
        let h = s.to_header();
        assert_eq!(
            h.calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), b"hi")
                .unwrap(),
            p.checksum()
        );
    }
}
