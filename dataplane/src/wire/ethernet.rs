//! Ethernet II frames.

use super::{Result, be16, need, put16};
use core::fmt;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);
    /// IPv6 all-routers (ff02::2): router solicitations, MLDv1 done.
    pub const IPV6_ALL_ROUTERS: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 0x02]);
    /// IPv6 all-MLDv2-capable routers (ff02::16): MLDv2 reports.
    pub const IPV6_MLDV2_ROUTERS: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 0x16]);

    /// Reads a MAC from the first six bytes of `b`, if there are six.
    #[inline]
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        let a: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(MacAddr(a))
    }
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }
    /// Group bit set: multicast or broadcast.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
    /// An IPv6 multicast group's MAC (33:33:..., RFC 2464).
    #[inline]
    pub fn is_ipv6_multicast(&self) -> bool {
        self.0[0] == 0x33 && self.0[1] == 0x33
    }
    /// A group only routers (and multicast snooping switches) listen to: what a
    /// host sends there (router solicitations, MLD reports) is for routers alone.
    #[inline]
    pub fn is_ipv6_router_group(&self) -> bool {
        *self == Self::IPV6_ALL_ROUTERS || *self == Self::IPV6_MLDV2_ROUTERS
    }
    /// The low 24 bits of the addresses an IPv6 solicited-node group (ff02::1:ffXX:XXXX,
    /// at 33:33:ff:XX:XX:XX) is for, when this is one.
    #[inline]
    pub fn solicited_node_key(&self) -> Option<u32> {
        let [a, b, c, x, y, z] = self.0;
        (a == 0x33 && b == 0x33 && c == 0xff).then(|| u32::from_be_bytes([0, x, y, z]))
    }
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
    /// The address as the low 48 bits of a u64 (big-endian order), for hashing and keys.
    #[inline]
    pub fn to_u64(&self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    #[inline]
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    /// Docker's scheme: 02:42 followed by the four bytes of the IPv4 address.
    pub fn from_ipv4(ip: std::net::Ipv4Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a MAC address from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 02:42:ac:11:00:02")]
pub struct MacParseError(pub String);

impl core::str::FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split([':', '-']) {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(MacParseError(s.to_string()));
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_string()))?;
            n += 1;
        }
        if n != 6 {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

/// EtherType values the dataplane knows.
pub struct EtherType;
impl EtherType {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    pub const DST: core::ops::Range<usize> = 0..6;
    pub const SRC: core::ops::Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// Length of the untagged Ethernet header.
pub const HEADER_LEN: usize = 14;

/// A view of an Ethernet II frame (no FCS).
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// The whole buffer the view covers.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Wraps without checking; accessors panic on a buffer shorter than 14 bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        need("ethernet header", HEADER_LEN, self.buffer.as_ref().len())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    #[inline]
    pub fn dst(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    #[inline]
    pub fn src(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[6], b[7], b[8], b[9], b[10], b[11]])
    }
    /// The EtherType (or TPID when the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }
    /// Everything after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<'a> EthernetFrame<&'a [u8]> {
    /// The payload, borrowed from the buffer rather than from the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }
    #[inline]
    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, t);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request as seen on the wire (broadcast, from 02:42:ac:11:00:02).
    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x06, 0xaa,
        0xbb,
    ];

    #[test]
    fn parse_fixture() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src(), MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]));
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn round_trip_setters() {
        let mut buf = [0u8; 16];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]));
        f.set_ethertype(EtherType::ARP);
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn short_is_refused() {
        assert!(EthernetFrame::new_checked(&FRAME[..13]).is_err());
        assert!(EthernetFrame::new_checked(&FRAME[..14]).is_ok());
    }

    #[test]
    fn against_etherparse() {
        let (h, rest) = etherparse::Ethernet2Header::from_slice(&FRAME).unwrap();
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(h.destination, f.dst().0);
        assert_eq!(h.source, f.src().0);
        assert_eq!(h.ether_type.0, f.ethertype());
        assert_eq!(rest, f.payload());
    }

    #[test]
    fn mac_text_and_bits() {
        let m: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert!(m.is_unicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<MacAddr>().is_err());
        assert!("zz:42:ac:11:00:02".parse::<MacAddr>().is_err());
        assert_eq!(
            MacAddr::from_ipv4(std::net::Ipv4Addr::new(172, 17, 0, 2)).to_string(),
            "02:42:ac:11:00:02"
        );
    }
}
