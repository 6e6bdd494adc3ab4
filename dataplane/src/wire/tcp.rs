//! TCP headers (RFC 9293).

use super::checksum::{self, Checksum};
use super::{Result, WireError, be16, be32, need, put16, put32};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;
/// Where the checksum sits in the header (for offload metadata: `csum_offset`).
pub const CHECKSUM_OFFSET: usize = 16;

/// TCP flag bits (low byte of offset 13, plus NS not used).
pub struct TcpFlags;
impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Whether an Ethernet frame carries an IPv4 TCP segment opening a connection (SYN
/// without ACK, first fragment): of all frames, the one that asks its receiver for the
/// most work for its size (a connection's state, or an answer refusing it).
pub fn opens_ipv4_connection(frame: &[u8]) -> bool {
    use super::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet};
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.ethertype() != EtherType::IPV4 {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    if ip.protocol() != IpProtocol::Tcp || ip.frag_offset() != 0 {
        return false;
    }
    TcpPacket::new_checked(ip.payload()).is_ok_and(|t| t.syn() && !t.ack_flag())
}

/// A view of a TCP segment. The checked length guarantees 20 <= header_len <= buffer
/// length; the payload is everything after the header (the IP layer bounds the buffer).
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// The whole buffer the view covers.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        need("tcp header", MIN_HEADER_LEN, b.len())?;
        let hl = usize::from(b[12] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed {
                what: "tcp header",
                why: "data offset below 5",
            });
        }
        need("tcp header with options", hl, b.len())?;
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
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
    #[inline]
    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & TcpFlags::SYN != 0
    }
    #[inline]
    pub fn ack_flag(&self) -> bool {
        self.flags() & TcpFlags::ACK != 0
    }
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & TcpFlags::FIN != 0
    }
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & TcpFlags::RST != 0
    }
    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), 14)
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 16)
    }
    #[inline]
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), 18)
    }
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
    /// The MSS option, if the header carries one.
    pub fn mss_option(&self) -> Option<u16> {
        let mut o = self.options();
        while let Some((&kind, rest)) = o.split_first() {
            match kind {
                0 => return None,
                1 => o = rest,
                _ => {
                    let len = usize::from(*rest.first()?);
                    if len < 2 || len > o.len() {
                        return None;
                    }
                    if kind == 2 && len == 4 {
                        return Some(u16::from_be_bytes([o[2], o[3]]));
                    }
                    o = &o[len..];
                }
            }
        }
        None
    }
    /// Verifies the checksum over pseudo-header, header and payload.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let s = checksum::add(
            checksum::pseudo_header_v4(src, dst, 6, b.len() as u32),
            checksum::sum(b),
        );
        checksum::fold(s) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 0, v);
    }
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }
    pub fn set_seq(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 4, v);
    }
    pub fn set_ack(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 8, v);
    }
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[12] = ((len / 4) as u8) << 4;
    }
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[13] = f;
    }
    pub fn set_window(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 14, v);
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 16, v);
    }
    pub fn set_urgent(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 18, v);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
    /// Replaces the value of the MSS option (checksum updated); false when the header
    /// carries none.
    pub fn set_mss_option(&mut self, mss: u16) -> bool {
        let Some(old) = self.mss_option() else {
            return false;
        };
        let hl = self.header_len();
        let mut at = MIN_HEADER_LEN;
        while at + 1 < hl {
            let b = self.buffer.as_ref();
            let (Some(&kind), Some(&len)) = (b.get(at), b.get(at + 1)) else {
                return false;
            };
            match kind {
                0 => return false,
                1 => at += 1,
                2 if len == 4 && at + 4 <= hl => {
                    let c = checksum::update16(self.checksum(), old, mss);
                    put16(self.buffer.as_mut(), at + 2, mss);
                    self.set_checksum(c);
                    return true;
                }
                _ if len < 2 => return false,
                _ => at += usize::from(len),
            }
        }
        false
    }
    /// Computes the checksum over pseudo-header, header and payload.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let s = checksum::add(
            checksum::pseudo_header_v4(src, dst, 6, b.len() as u32),
            checksum::sum(b),
        );
        self.set_checksum(!checksum::fold(s));
    }
    /// As [`TcpPacket::fill_checksum`], over the IPv6 pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: &std::net::Ipv6Addr, dst: &std::net::Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let s = checksum::add(
            super::ipv6::pseudo_header_sum(src, dst, 6, b.len() as u32),
            checksum::sum(b),
        );
        self.set_checksum(!checksum::fold(s));
    }
    /// As [`TcpPacket::fill_checksum`] over the pseudo-header of either family (the
    /// addresses' family must agree; when they do not, nothing is filled).
    pub fn fill_checksum_ip(&mut self, src: std::net::IpAddr, dst: std::net::IpAddr) {
        use std::net::IpAddr;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.fill_checksum(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.fill_checksum_v6(&s, &d),
            _ => {}
        }
    }
    /// Rewrites the source port, keeping the checksum right for `csum`.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16, csum: Checksum) {
        let c = csum.update_covered16(self.checksum(), self.src_port(), port, false);
        self.set_src_port(port);
        self.set_checksum(c);
    }
    /// Rewrites the destination port, keeping the checksum right for `csum`.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16, csum: Checksum) {
        let c = csum.update_covered16(self.checksum(), self.dst_port(), port, false);
        self.set_dst_port(port);
        self.set_checksum(c);
    }
    /// Accounts for an address change in the pseudo-header (the IP header holds the
    /// address: rewrite it there).
    #[inline]
    pub fn update_for_address(&mut self, old: Ipv4Addr, new: Ipv4Addr, csum: Checksum) {
        let c = csum.update_pseudo32(self.checksum(), u32::from(old), u32::from(new), false);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mss_option_is_rewritten_with_its_checksum() {
        let mut b = SYN.to_vec();
        TcpPacket::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert!(t.set_mss_option(65000));
        assert_eq!(t.mss_option(), Some(65000));
        assert!(t.verify_checksum(SRC, DST));
        let mut plain = SYN[..20].to_vec();
        plain[12] = 0x50;
        assert!(
            !TcpPacket::new_checked(&mut plain[..])
                .unwrap()
                .set_mss_option(1)
        );
    }

    const SRC: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    // SYN 43210 -> 80, seq 0x01020304, window 64240, MSS 1460, NOP, NOP, SACK-permitted.
    const SYN: [u8; 28] = [
        0xa8, 0xca, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xfa,
        0xf0, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x04, 0x02,
    ];

    fn with_checksum() -> [u8; 28] {
        let mut b = SYN;
        TcpPacket::new_checked(&mut b[..])
            .unwrap()
            .fill_checksum(SRC, DST);
        b
    }

    #[test]
    fn parse_fixture() {
        let b = with_checksum();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), 43210);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq(), 0x01020304);
        assert_eq!(p.header_len(), 28);
        assert!(p.syn() && !p.ack_flag() && !p.fin() && !p.rst());
        assert_eq!(p.window(), 64240);
        assert_eq!(p.mss_option(), Some(1460));
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn lengths_checked() {
        assert!(TcpPacket::new_checked(&SYN[..19]).is_err());
        assert!(TcpPacket::new_checked(&SYN[..27]).is_err()); // offset says 28
        let mut bad = SYN;
        bad[12] = 0x40; // offset 4
        assert!(TcpPacket::new_checked(&bad[..]).is_err());
    }

    #[test]
    fn hostile_options_do_not_panic() {
        let mut b = SYN;
        b[20..].copy_from_slice(&[0x02, 0xff, 0x05, 0xb4, 0x03, 0x00, 0x01, 0x01]);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.mss_option(), None);
        b[20..].copy_from_slice(&[0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x08]);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.mss_option(), None);
    }

    #[test]
    fn nat_rewrite_keeps_checksum() {
        let mut b = with_checksum();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.rewrite_src_port(61000, Checksum::Full);
        let out = Ipv4Addr::new(198, 51, 100, 7);
        p.update_for_address(SRC, out, Checksum::Full);
        assert!(p.verify_checksum(out, DST));
    }

    #[test]
    fn nat_rewrite_keeps_partial_checksum_partial() {
        let mut b = SYN;
        let len = b.len() as u32;
        let seed = checksum::fold(checksum::pseudo_header_v4(SRC, DST, 6, len));
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.set_checksum(seed);
        let out = Ipv4Addr::new(198, 51, 100, 7);
        p.rewrite_src_port(61000, Checksum::Partial);
        p.update_for_address(SRC, out, Checksum::Partial);
        let want = checksum::fold(checksum::pseudo_header_v4(out, DST, 6, len));
        assert_eq!(p.checksum(), want);
        // Completed over header and data it verifies.
        let done = !checksum::fold(checksum::sum(p.as_bytes()));
        p.set_checksum(done);
        assert!(p.verify_checksum(out, DST));
    }

    #[test]
    fn against_etherparse() {
        let b = with_checksum();
        let s = etherparse::TcpHeaderSlice::from_slice(&b).unwrap();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(s.source_port(), p.src_port());
        assert_eq!(s.destination_port(), p.dst_port());
        assert_eq!(s.sequence_number(), p.seq());
        assert_eq!(s.acknowledgment_number(), p.ack());
        assert_eq!(usize::from(s.data_offset()) * 4, p.header_len());
        assert!(s.syn());
        assert_eq!(s.window_size(), p.window());
        let h = s.to_header();
        assert_eq!(
            h.calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), &[])
                .unwrap(),
            p.checksum()
        );
    }
}
