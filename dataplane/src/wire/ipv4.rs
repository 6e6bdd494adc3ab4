//! IPv4 headers (RFC 791).

use super::checksum;
use super::{Result, WireError, be16, ip4, need, put16};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;

/// The protocol field of an IPv4 header (the next header of IPv6): the protocols the
/// dataplane handles by name, any other number as [`IpProtocol::Unknown`].
///
/// Convert with `From<u8>` and `u8::from`; the conversion is total and round-trips, and a
/// known number never becomes `Unknown` (so `==` compares protocol numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProtocol {
    /// ICMP for IPv4 (1).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other protocol number.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(n: u8) -> IpProtocol {
        match n {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            58 => IpProtocol::Icmpv6,
            n => IpProtocol::Unknown(n),
        }
    }
}

/// The protocol number, as packet dumps print it.
impl core::fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", u8::from(*self))
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Unknown(n) => n,
        }
    }
}

/// A view of an IPv4 packet. The checked length guarantees
/// 20 <= header_len <= total_len <= buffer length.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// The whole buffer the view covers.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need("ipv4 header", MIN_HEADER_LEN, b.len())?;
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed {
                what: "ipv4 header",
                why: "version is not 4",
            });
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed {
                what: "ipv4 header",
                why: "header length below 20",
            });
        }
        let total = usize::from(be16(b, field::LENGTH));
        if total < hl {
            return Err(WireError::Malformed {
                what: "ipv4 header",
                why: "total length below header length",
            });
        }
        need("ipv4 packet", total, b.len())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::LENGTH))
    }
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }
    #[inline]
    pub fn dont_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x4000 != 0
    }
    #[inline]
    pub fn more_fragments(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x2000 != 0
    }
    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) * 8
    }
    /// The flags and fragment offset word as it stands (reserved bit included).
    #[inline]
    pub fn flags_and_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF)
    }
    /// A fragment other than a whole datagram.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x3fff != 0
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::SRC)
    }
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::DST)
    }
    /// The header including options.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }
    /// The payload up to `total_len` (trailing Ethernet padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }
    /// Partial sum of the pseudo-header TCP and UDP checksums cover, for a transport
    /// packet of `proto` and `len` bytes.
    #[inline]
    pub fn pseudo_header_sum(&self, proto: IpProtocol, len: u32) -> u32 {
        checksum::pseudo_header_v4(self.src(), self.dst(), u8::from(proto), len)
    }
    /// Does the header checksum verify?
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// The payload, borrowed from the buffer rather than from the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &self.buffer[h..t]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length (bytes, a multiple of 4).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }
    pub fn set_total_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, len);
    }
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }
    /// Sets the DF flag and clears MF and the offset.
    pub fn set_dont_fragment(&mut self, df: bool) {
        put16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            if df { 0x4000 } else { 0 },
        );
    }
    /// Marks a fragment: DF clear, MF as `more`, the offset in bytes (a multiple of 8).
    pub fn set_fragment(&mut self, more: bool, offset: usize) {
        let mf = if more { 0x2000 } else { 0 };
        put16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            mf | ((offset / 8) as u16 & 0x1fff),
        );
    }
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }
    pub fn set_protocol(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = u8::from(v);
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    #[inline]
    pub fn set_src(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&ip.octets());
    }
    #[inline]
    pub fn set_dst(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&ip.octets());
    }
    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }
    /// Rewrites the source address, updating the header checksum incrementally.
    /// Returns the old address (the caller updates any transport checksum).
    #[inline]
    pub fn rewrite_src(&mut self, ip: Ipv4Addr) -> Ipv4Addr {
        let old = self.src();
        let c = checksum::update32(self.checksum(), u32::from(old), u32::from(ip));
        self.set_src(ip);
        self.set_checksum(c);
        old
    }
    /// Rewrites the destination address, updating the header checksum incrementally.
    #[inline]
    pub fn rewrite_dst(&mut self, ip: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst();
        let c = checksum::update32(self.checksum(), u32::from(old), u32::from(ip));
        self.set_dst(ip);
        self.set_checksum(c);
        old
    }
    /// Decrements the TTL with an incremental checksum update.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        // TTL and protocol share a checksum word: the new word is computed, not read
        // back after a byte store (which would stall store-to-load forwarding).
        let old = be16(self.buffer.as_ref(), field::TTL);
        let new = if old >> 8 == 0 { old } else { old - 0x0100 };
        put16(self.buffer.as_mut(), field::TTL, new);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[h..t]
    }
    /// Header and payload, mutably, split at the header's end.
    #[inline]
    pub fn split_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let (h, t) = (self.header_len(), self.total_len());
        let b = &mut self.buffer.as_mut()[..t];
        b.split_at_mut(h)
    }
}

/// How much of a quoted packet must follow its header: the 8 bytes an ICMP error
/// quotes at least (RFC 792), enough for ports or an echo identifier.
pub const QUOTED_DATA_LEN: usize = 8;

/// The header length of the IPv4 packet an ICMP error quotes at the start of `quote`,
/// checked: at least 20, and the header and [`QUOTED_DATA_LEN`] bytes after it inside
/// `quote`. The total length is not checked (quotes are cut).
fn quoted_header_len(quote: &[u8]) -> Result<usize> {
    let first = quote.first().copied().unwrap_or(0);
    let hl = usize::from(first & 0x0f) * 4;
    if hl < MIN_HEADER_LEN {
        return Err(WireError::Malformed {
            what: "quoted ipv4 header",
            why: "header length below 20",
        });
    }
    need("quoted ipv4 packet", hl + QUOTED_DATA_LEN, quote.len())?;
    Ok(hl)
}

/// Splits the IPv4 packet quoted by an ICMP error into a view of its header alone and
/// the bytes after the header. Use the header view for header fields and address
/// rewrites only: its total length describes the original packet, not the quote.
pub fn split_quote(quote: &[u8]) -> Result<(Ipv4Packet<&[u8]>, &[u8])> {
    let hl = quoted_header_len(quote)?;
    let (h, rest) = quote.split_at(hl);
    Ok((Ipv4Packet::new_unchecked(h), rest))
}

/// [`split_quote`] for rewriting the quote in place.
pub fn split_quote_mut(quote: &mut [u8]) -> Result<(Ipv4Packet<&mut [u8]>, &mut [u8])> {
    let hl = quoted_header_len(quote)?;
    let (h, rest) = quote.split_at_mut(hl);
    Ok((Ipv4Packet::new_unchecked(h), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 172.17.0.2 -> 172.17.0.3, ICMP, 28 bytes total, DF, TTL 64, id 0x1c46.
    const PACKET: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0xc6, 0x73, 0xac, 0x11, 0x00,
        0x02, 0xac, 0x11, 0x00, 0x03, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn parse_fixture() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_fragment());
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Icmp);
        assert_eq!(p.src(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(172, 17, 0, 3));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn build_round_trip() {
        let mut b = [0u8; 28];
        b[20..].copy_from_slice(&PACKET[20..]);
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(20);
        p.set_total_len(28);
        p.set_ident(0x1c46);
        p.set_dont_fragment(true);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::Icmp);
        p.set_src(Ipv4Addr::new(172, 17, 0, 2));
        p.set_dst(Ipv4Addr::new(172, 17, 0, 3));
        p.fill_checksum();
        assert_eq!(b, PACKET);
    }

    #[test]
    fn padding_is_not_payload() {
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 18]);
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn refuses_bad_lengths() {
        assert!(Ipv4Packet::new_checked(&PACKET[..19]).is_err());
        assert!(Ipv4Packet::new_checked(&PACKET[..27]).is_err()); // total_len says 28
        let mut bad = PACKET;
        bad[0] = 0x44; // IHL 4
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
        bad[0] = 0x4f; // IHL 15 = 60 bytes > total 28
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
        bad[0] = 0x65; // version 6
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
    }

    #[test]
    fn incremental_rewrites_keep_checksum_valid() {
        let mut b = PACKET;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.rewrite_src(Ipv4Addr::new(10, 0, 0, 1));
        p.rewrite_dst(Ipv4Addr::new(192, 168, 1, 1));
        p.decrement_ttl();
        p.set_fragment(true, 1480);
        assert!(p.more_fragments() && !p.dont_fragment());
        assert_eq!(p.frag_offset(), 1480);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.ttl(), 63);
    }

    #[test]
    fn quotes_may_be_cut_but_not_shorter_than_header_and_eight() {
        let (h, rest) = split_quote(&PACKET[..]).unwrap();
        assert_eq!(
            (h.src(), h.protocol(), rest.len()),
            (Ipv4Addr::new(172, 17, 0, 2), IpProtocol::Icmp, 8)
        );
        let mut cut = PACKET;
        cut[3] = 200; // total length past the quote
        assert!(split_quote_mut(&mut cut[..]).is_ok());
        assert!(split_quote(&PACKET[..27]).is_err());
        let mut bad = PACKET;
        bad[0] = 0x44;
        assert!(split_quote(&bad[..]).is_err());
    }

    #[test]
    fn protocol_numbers_round_trip() {
        for n in 0..=u8::MAX {
            let p = IpProtocol::from(n);
            assert_eq!(u8::from(p), n);
            assert_eq!(
                matches!(p, IpProtocol::Unknown(_)),
                ![1, 6, 17, 58].contains(&n)
            );
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
    }

    #[test]
    fn against_etherparse() {
        let (h, _) = etherparse::Ipv4HeaderSlice::from_slice(&PACKET)
            .map(|s| (s.to_header(), ()))
            .unwrap();
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(h.source, p.src().octets());
        assert_eq!(h.destination, p.dst().octets());
        assert_eq!(h.time_to_live, p.ttl());
        assert_eq!(h.protocol.0, u8::from(p.protocol()));
        assert_eq!(h.total_len, p.total_len() as u16);
        assert_eq!(h.header_checksum, p.checksum());
        assert_eq!(h.calc_header_checksum(), p.checksum());
        assert_eq!(h.identification, p.ident());
        assert!(h.dont_fragment);
    }
}
