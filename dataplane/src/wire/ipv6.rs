//! IPv6 (RFC 8200): the fixed header, a bounded walk over the extension headers to
//! the upper-layer header (for first-hop checks and the gateway), and the address
//! rules vswitch relies on: the EUI-64 interface identifier of a MAC (RFC 4291
//! appendix A), link-local addresses, solicited-node groups and their MACs (RFC 2464).
//!
//! The walk never trusts a length: every header it steps over must lie inside the
//! buffer, and it stops after [`MAX_EXT_HEADERS`] headers. A chain it cannot follow to
//! the upper-layer header (truncated, too long) is an error, so a caller can drop what
//! it cannot inspect (RFC 7112: the first fragment carries the whole chain).

use super::{IpProtocol, MacAddr, Result, WireError, be16, checksum, need, put16};
use std::net::Ipv6Addr;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: core::ops::Range<usize> = 8..24;
    pub const DST: core::ops::Range<usize> = 24..40;
    /// Source and destination, the addresses of the pseudo-header.
    pub const ADDRESSES: core::ops::Range<usize> = 8..40;
}

pub const HEADER_LEN: usize = 40;

/// Extension headers walked before giving up.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values the walk knows.
pub struct NextHeader;
impl NextHeader {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
}

/// ICMPv6 message types (RFC 4443, RFC 4861).
pub struct Icmpv6Type;
impl Icmpv6Type {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    pub const REDIRECT: u8 = 137;
    /// Multicast listener reports (MLDv1, RFC 2710; MLDv2, RFC 3810).
    pub const MLD_REPORT: u8 = 131;
    pub const MLD2_REPORT: u8 = 143;
}

/// The message type of the ICMPv6 header at the start of `b` (its first byte), None
/// when `b` is empty.
#[inline]
pub fn icmpv6_type(b: &[u8]) -> Option<u8> {
    b.first().copied()
}

/// A view of an IPv6 packet; the check guarantees the 40-byte fixed header.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// What the extension-header walk found: where it ended, and whether it crossed a
/// fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    pub upper: Upper,
    pub fragment: bool,
}

/// Where the extension-header walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upper {
    /// The upper-layer protocol and the offset of its header in the packet; the
    /// offset is inside the buffer.
    At { proto: u8, offset: usize },
    /// A fragment other than the first: no upper-layer header to see.
    LaterFragment,
    /// Encrypted (ESP) or no next header: nothing to see.
    Opaque,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        need("ipv6 header", HEADER_LEN, p.buffer.as_ref().len())?;
        if p.version() != 6 {
            return Err(WireError::Malformed {
                what: "ipv6 header",
                why: "version is not 6",
            });
        }
        Ok(p)
    }
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }
    /// Bytes after the fixed header (0 for a jumbogram, RFC 2675).
    #[inline]
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::PAYLOAD_LEN))
    }
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }
    #[inline]
    pub fn src_octets(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }
    /// Partial sum of the pseudo-header (RFC 8200 section 8.1) for an upper-layer
    /// packet of `proto` and `len` bytes.
    #[inline]
    pub fn pseudo_header_sum(&self, proto: IpProtocol, len: u32) -> u32 {
        let addrs = checksum::sum(&self.buffer.as_ref()[field::ADDRESSES]);
        let rest = u32::from(u8::from(proto)) + (len >> 16) + (len & 0xffff);
        checksum::add(addrs, rest)
    }
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_octets())
    }
    #[inline]
    pub fn dst_octets(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_octets())
    }
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    /// What follows the fixed header, up to the payload length (or the buffer's end,
    /// when the length says more than the buffer holds or is 0).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = match self.payload_len() {
            0 => b.len(),
            n => (HEADER_LEN + n).min(b.len()),
        };
        b.get(HEADER_LEN..end).unwrap_or_default()
    }
    /// The packet as the payload length delimits it (Ethernet padding cut off).
    #[inline]
    pub fn packet(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(..HEADER_LEN + self.payload().len()).unwrap_or(b)
    }

    /// Walks the extension headers to the upper-layer header.
    pub fn upper(&self) -> Result<Upper> {
        self.walk().map(|w| w.upper)
    }

    /// As [`Ipv6Packet::upper`], also telling whether the packet is a fragment (a
    /// fragment header was crossed: a first fragment's upper layer is only a part).
    pub fn walk(&self) -> Result<Walk> {
        let b = self.buffer.as_ref();
        let mut proto = self.next_header();
        let mut at = HEADER_LEN;
        let mut fragment = false;
        let done = |upper, fragment| Ok(Walk { upper, fragment });
        for _ in 0..=MAX_EXT_HEADERS {
            let len = match proto {
                NextHeader::HOP_BY_HOP
                | NextHeader::ROUTING
                | NextHeader::DEST_OPTS
                | NextHeader::MOBILITY => {
                    need("ipv6 extension header", at + 2, b.len())?;
                    (usize::from(b[at + 1]) + 1) * 8
                }
                NextHeader::AH => {
                    need("ipv6 authentication header", at + 2, b.len())?;
                    (usize::from(b[at + 1]) + 2) * 4
                }
                NextHeader::FRAGMENT => {
                    need("ipv6 fragment header", at + 8, b.len())?;
                    if be16(b, at + 2) & 0xfff8 != 0 {
                        return done(Upper::LaterFragment, true);
                    }
                    fragment = true;
                    8
                }
                NextHeader::ESP | NextHeader::NO_NEXT => return done(Upper::Opaque, fragment),
                _ => {
                    need("ipv6 upper-layer header", at + 1, b.len())?;
                    return done(Upper::At { proto, offset: at }, fragment);
                }
            };
            need("ipv6 extension header", at + len, b.len())?;
            proto = b[at];
            at += len;
        }
        Err(WireError::Malformed {
            what: "ipv6 extension headers",
            why: "chain too long",
        })
    }
}

impl<'a> Ipv6Packet<&'a [u8]> {
    /// The payload (as [`Ipv6Packet::payload`] delimits it), borrowed from the buffer
    /// rather than from the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let n = self.payload().len();
        self.buffer
            .get(HEADER_LEN..HEADER_LEN + n)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }
    /// Version 6, traffic class and flow label 0.
    pub fn init(&mut self) {
        let b = self.buffer.as_mut();
        b[field::VER_TC_FLOW..field::PAYLOAD_LEN].copy_from_slice(&[0x60, 0, 0, 0]);
    }
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = v;
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }
    #[inline(always)]
    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }
    #[inline(always)]
    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }
    /// Rewrites the source address; returns the old one (IPv6 has no header checksum:
    /// the upper layer's follows the pseudo-header).
    #[inline(always)]
    pub fn rewrite_src(&mut self, a: Ipv6Addr) -> Ipv6Addr {
        let old = self.src();
        self.set_src(a);
        old
    }
    /// Rewrites the destination address; returns the old one.
    #[inline(always)]
    pub fn rewrite_dst(&mut self, a: Ipv6Addr) -> Ipv6Addr {
        let old = self.dst();
        self.set_dst(a);
        old
    }
    /// Takes one from the hop limit; false (and unchanged) when it was 1 or 0: a
    /// router may not forward the packet.
    #[inline]
    pub fn step_hop_limit(&mut self) -> bool {
        let h = self.hop_limit();
        if h <= 1 {
            return false;
        }
        self.set_hop_limit(h - 1);
        true
    }
    /// What follows the fixed header, as [`Ipv6Packet::payload`] delimits it.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = self.payload().len();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..HEADER_LEN + n)
            .unwrap_or_default()
    }
    /// The packet from byte `offset` (an upper-layer header's, from [`Ipv6Packet::upper`])
    /// to the end of the payload.
    #[inline]
    pub fn upper_mut(&mut self, offset: usize) -> &mut [u8] {
        let end = HEADER_LEN + self.payload().len();
        self.buffer
            .as_mut()
            .get_mut(offset..end)
            .unwrap_or_default()
    }
}

/// Partial sum of the pseudo-header (RFC 8200 section 8.1) of an upper-layer packet of
/// `proto` and `len` bytes from `src` to `dst`.
#[inline]
pub fn pseudo_header_sum(src: &Ipv6Addr, dst: &Ipv6Addr, proto: u8, len: u32) -> u32 {
    let addrs = checksum::add(checksum::sum(&src.octets()), checksum::sum(&dst.octets()));
    checksum::add(addrs, u32::from(proto) + (len >> 16) + (len & 0xffff))
}

/// The modified EUI-64 interface identifier of `mac` (RFC 4291 appendix A): the
/// universal/local bit inverted, ff:fe in the middle.
#[inline]
pub fn eui64(mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// The address of `prefix` (its first 64 bits) with `mac`'s EUI-64 interface
/// identifier: what SLAAC forms on a /64 (RFC 4862).
pub fn with_eui64(prefix: Ipv6Addr, mac: MacAddr) -> Ipv6Addr {
    let mut a = prefix.octets();
    a[8..].copy_from_slice(&eui64(mac));
    Ipv6Addr::from(a)
}

/// The link-local address `fe80::/64` + EUI-64 of `mac`.
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    with_eui64(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), mac)
}

/// The solicited-node group of `a` (RFC 4291 section 2.7.1): ff02::1:ffXX:XXXX.
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet group a multicast IPv6 address maps to (RFC 2464): 33:33 + its last
/// four bytes.
pub fn multicast_mac(a: &Ipv6Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// Removes the extension headers of the IPv6 packet in `pkt` in place, for a stack
/// that reads none but hop-by-hop (smoltcp): the fixed header moves up to sit just
/// before the upper-layer header, which becomes its next header, and the payload
/// length shrinks by what was removed. Returns where the packet now starts in `pkt`
/// (0: there was nothing to remove); None for what the walk cannot follow to an upper
/// layer, or a fragment.
pub fn strip_extension_headers(pkt: &mut [u8]) -> Option<usize> {
    let (proto, offset, len) = {
        let ip = Ipv6Packet::new_checked(&pkt[..]).ok()?;
        let walk = ip.walk().ok()?;
        let Upper::At { proto, offset } = walk.upper else {
            return None;
        };
        if walk.fragment {
            return None;
        }
        (proto, offset, ip.payload_len())
    };
    let start = offset.checked_sub(HEADER_LEN)?;
    if start == 0 {
        return Some(0);
    }
    // Checked before anything moves: a refusal leaves the packet as it was.
    let len = u16::try_from(len.checked_sub(start)?).ok()?;
    pkt.copy_within(..HEADER_LEN, start);
    let mut ip = Ipv6Packet::new_unchecked(pkt.get_mut(start..)?);
    ip.set_next_header(proto);
    ip.set_payload_len(len);
    Some(start)
}

/// All nodes on the link (ff02::1), all routers (ff02::2), and all DHCPv6 relay agents
/// and servers (ff02::1:2).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
pub const ALL_DHCP_AGENTS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Whether `a` is link-local unicast (fe80::/10).
#[inline]
pub fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, ext: &[u8], upper: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        let plen = (ext.len() + upper.len()) as u16;
        v.extend_from_slice(&plen.to_be_bytes());
        v.push(next);
        v.push(255);
        v.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v.extend_from_slice(ext);
        v.extend_from_slice(upper);
        v
    }

    #[test]
    fn upper_layer_directly_after_the_header() {
        let p = packet(NextHeader::ICMPV6, &[], &[134, 0, 0, 0]);
        let v = Ipv6Packet::new_checked(&p[..]).expect("view");
        assert_eq!(
            v.upper(),
            Ok(Upper::At {
                proto: 58,
                offset: 40
            })
        );
        assert!(is_link_local(&v.src()));
    }

    #[test]
    fn walks_hop_by_hop_dest_opts_and_first_fragment() {
        let mut ext = vec![NextHeader::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[NextHeader::FRAGMENT, 1]);
        ext.extend_from_slice(&[0; 14]);
        ext.extend_from_slice(&[NextHeader::ICMPV6, 0, 0, 0, 0, 0, 0, 1]);
        let p = packet(NextHeader::HOP_BY_HOP, &ext, &[134, 0, 0, 0]);
        let v = Ipv6Packet::new_checked(&p[..]).expect("view");
        assert_eq!(
            v.upper(),
            Ok(Upper::At {
                proto: 58,
                offset: 72
            })
        );
        assert!(v.walk().is_ok_and(|w| w.fragment));
        // Without the fragment header: the same upper layer, not a fragment.
        let mut ext = vec![NextHeader::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[NextHeader::UDP, 0, 0, 0, 0, 0, 0, 0]);
        let p = packet(NextHeader::HOP_BY_HOP, &ext, &[0; 8]);
        let v = Ipv6Packet::new_checked(&p[..]).expect("view");
        let w = v.walk().expect("a chain");
        assert_eq!(
            w.upper,
            Upper::At {
                proto: 17,
                offset: 56
            }
        );
        assert!(!w.fragment);
    }

    #[test]
    fn extension_headers_are_stripped_in_place() {
        let mut ext = vec![NextHeader::ROUTING, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[NextHeader::TCP, 0, 1, 4, 0, 0, 0, 0]);
        let mut p = packet(NextHeader::DEST_OPTS, &ext, &[7; 20]);
        let fixed = p[..40].to_vec();
        assert_eq!(strip_extension_headers(&mut p), Some(16));
        let v = Ipv6Packet::new_checked(&p[16..]).expect("view");
        assert_eq!(v.next_header(), NextHeader::TCP);
        assert_eq!(v.payload_len(), 20);
        assert_eq!(v.payload(), &[7; 20]);
        assert_eq!(p[16..20], fixed[..4]);
        assert_eq!(p[23..56], fixed[7..40]);
        // Nothing to strip; a fragment and a broken chain are refused.
        let mut p = packet(NextHeader::TCP, &[], &[7; 20]);
        assert_eq!(strip_extension_headers(&mut p), Some(0));
        let ext = [NextHeader::TCP, 0, 0, 0, 0, 0, 0, 1];
        let mut p = packet(NextHeader::FRAGMENT, &ext, &[7; 20]);
        assert_eq!(strip_extension_headers(&mut p), None);
        let mut p = packet(NextHeader::DEST_OPTS, &[NextHeader::TCP, 9], &[]);
        assert_eq!(strip_extension_headers(&mut p), None);
    }

    #[test]
    fn later_fragment_and_esp_are_not_inspected() {
        let ext = [NextHeader::ICMPV6, 0, 0, 0x10, 0, 0, 0, 1];
        let p = packet(NextHeader::FRAGMENT, &ext, &[]);
        let v = Ipv6Packet::new_checked(&p[..]).expect("view");
        assert_eq!(v.upper(), Ok(Upper::LaterFragment));
        let p = packet(NextHeader::ESP, &[], &[1, 2, 3, 4]);
        let v = Ipv6Packet::new_checked(&p[..]).expect("view");
        assert_eq!(v.upper(), Ok(Upper::Opaque));
    }

    #[test]
    fn hostile_chains_are_errors() {
        // A length pointing past the end.
        let p = packet(NextHeader::HOP_BY_HOP, &[NextHeader::ICMPV6, 200], &[]);
        let v = Ipv6Packet::new_checked(&p[..]).expect("view");
        assert!(v.upper().is_err());
        // A chain ending exactly where the upper-layer header should be.
        let p = packet(
            NextHeader::DEST_OPTS,
            &[NextHeader::ICMPV6, 0, 0, 0, 0, 0, 0, 0],
            &[],
        );
        let v = Ipv6Packet::new_checked(&p[..]).expect("view");
        assert!(v.upper().is_err());
        // Too many headers.
        let mut ext = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            ext.extend_from_slice(&[NextHeader::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = packet(NextHeader::DEST_OPTS, &ext, &[134, 0, 0, 0]);
        let v = Ipv6Packet::new_checked(&p[..]).expect("view");
        assert!(v.upper().is_err());
        // Short and wrong version.
        assert!(Ipv6Packet::new_checked(&p[..39]).is_err());
        let mut q = p.clone();
        q[0] = 0x40;
        assert!(Ipv6Packet::new_checked(&q[..]).is_err());
    }

    #[test]
    fn fixed_header_fields_and_pseudo_header() {
        let mut p = packet(NextHeader::TCP, &[], &[0; 20]);
        let mut v = Ipv6Packet::new_checked(&mut p[..]).expect("view");
        assert_eq!((v.payload_len(), v.next_header()), (20, 6));
        v.set_payload_len(1000);
        assert_eq!(v.payload_len(), 1000);
        // fe80::1 -> ff02::1, TCP, 20 bytes.
        let want = checksum::fold(0xfe80u32 + 1 + 0xff02 + 1 + 6 + 20);
        assert_eq!(
            checksum::fold(v.pseudo_header_sum(IpProtocol::Tcp, 20)),
            want
        );
    }

    #[test]
    fn addresses_of_a_mac() {
        // Linux's link-local for 02:42:ac:11:00:02 (`ip -6 addr` on docker0's peer).
        let mac = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        let ll: Ipv6Addr = "fe80::42:acff:fe11:2".parse().unwrap();
        assert_eq!(link_local(mac), ll);
        assert!(is_link_local(&ll));
        let p: Ipv6Addr = "2001:db8:1::".parse().unwrap();
        assert_eq!(
            with_eui64(p, mac),
            "2001:db8:1:0:42:acff:fe11:2".parse::<Ipv6Addr>().unwrap()
        );
        let sn = solicited_node(&ll);
        assert_eq!(sn, "ff02::1:ff11:2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            multicast_mac(&sn),
            MacAddr([0x33, 0x33, 0xff, 0x11, 0x00, 0x02])
        );
        assert!(!is_link_local(&p));
    }

    #[test]
    fn builds_a_header() {
        let mut b = [0xeeu8; 40];
        let mut v = Ipv6Packet::new_unchecked(&mut b[..]);
        v.init();
        v.set_payload_len(8);
        v.set_next_header(NextHeader::ICMPV6);
        v.set_hop_limit(255);
        v.set_src(ALL_ROUTERS);
        v.set_dst(ALL_NODES);
        let v = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((v.version(), v.hop_limit(), v.next_header()), (6, 255, 58));
        assert_eq!((v.src(), v.dst()), (ALL_ROUTERS, ALL_NODES));
        assert_eq!(
            v.payload(),
            &[] as &[u8],
            "payload length past the buffer is cut"
        );
        let sum = pseudo_header_sum(&ALL_ROUTERS, &ALL_NODES, 58, 8);
        assert_eq!(
            checksum::fold(sum),
            checksum::fold(v.pseudo_header_sum(IpProtocol::Icmpv6, 8))
        );
    }

    #[test]
    fn walks_the_router_alert_of_a_captured_mld_report() {
        let f = crate::wire::captured::bytes(crate::wire::captured::MLD_REPORT);
        let v = Ipv6Packet::new_checked(&f[14..]).unwrap();
        let Ok(Upper::At { proto, offset }) = v.upper() else {
            panic!("no upper layer");
        };
        assert_eq!((proto, offset), (NextHeader::ICMPV6, 48));
        assert_eq!(v.packet()[offset], 143);
        assert_eq!(v.payload().len(), v.payload_len());
    }

    #[test]
    fn sources() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert!(!is_link_local(&a));
        // fe80::/10, not only fe80::/64.
        assert!(is_link_local(&"febf::1".parse().unwrap()));
    }
}
