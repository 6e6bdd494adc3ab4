//! 802.1Q tags (and 802.1ad outer tags for double tagging).
//!
//! A tag sits between the source MAC and the EtherType: TPID (0x8100, or 0x88a8 for an
//! outer service tag) followed by the TCI (PCP 3 bits, DEI 1 bit, VID 12 bits). The view
//! here covers the four bytes after the TPID: the TCI and the next EtherType.

use super::ethernet::{EtherType, HEADER_LEN, MacAddr};
use super::{Result, WireError, be16, need, put16};

/// A view of one tag: TCI at 0..2, encapsulated EtherType at 2..4, then the payload.
#[derive(Debug, Clone)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

pub const TAG_LEN: usize = 4;

/// Is this EtherType a tag protocol identifier?
#[inline]
pub fn is_tpid(ethertype: u16) -> bool {
    ethertype == EtherType::VLAN || ethertype == EtherType::QINQ
}

/// Builds a TCI from priority, drop-eligible bit and VLAN id.
#[inline]
pub fn tci(pcp: u8, dei: bool, vid: u16) -> u16 {
    (u16::from(pcp & 7) << 13) | (u16::from(dei) << 12) | (vid & 0x0fff)
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let t = Self::new_unchecked(buffer);
        need("802.1Q tag", TAG_LEN, t.buffer.as_ref().len())?;
        Ok(t)
    }
    #[inline]
    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }
    /// The EtherType of what the tag encapsulates (another TPID when double tagged).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[TAG_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        put16(self.buffer.as_mut(), 0, tci);
    }
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let t = (self.tci() & 0xf000) | (vid & 0x0fff);
        self.set_tci(t);
    }
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), 2, t);
    }
}

/// What the link layer of a frame says, up to two tags deep. A summary for the slow path,
/// capture and tests; the forwarding path reads the views directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Info {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// Outer tag: (TPID, VID).
    pub outer: Option<(u16, u16)>,
    /// Inner tag of a double-tagged frame: (TPID, VID).
    pub inner: Option<(u16, u16)>,
    /// The EtherType after all tags.
    pub ethertype: u16,
    /// Offset of the network-layer header.
    pub l3_offset: usize,
}

/// Parses the Ethernet header and up to two VLAN tags. A third stacked tag is refused.
pub fn parse_l2(frame: &[u8]) -> Result<L2Info> {
    need("ethernet header", HEADER_LEN, frame.len())?;
    let dst = MacAddr::from_slice(frame).unwrap_or_default();
    let src = MacAddr::from_slice(&frame[6..]).unwrap_or_default();
    let mut ethertype = be16(frame, 12);
    let mut off = HEADER_LEN;
    let mut tags = [None, None];
    for slot in &mut tags {
        if !is_tpid(ethertype) {
            break;
        }
        let tpid = ethertype;
        let tag = VlanTag::new_checked(&frame[off..])?;
        *slot = Some((tpid, tag.vid()));
        ethertype = tag.ethertype();
        off += TAG_LEN;
    }
    if is_tpid(ethertype) {
        return Err(WireError::Malformed {
            what: "802.1Q tag",
            why: "more than two stacked tags",
        });
    }
    Ok(L2Info {
        dst,
        src,
        outer: tags[0],
        inner: tags[1],
        ethertype,
        l3_offset: off,
    })
}

/// Bytes of the two MAC addresses in front of a tag.
const MAC_LEN: usize = 6;

/// Writes `frame` as it goes out on the wire (tag `vlan` pushed when non-zero) into
/// `out`, returning the length, or None when `out` is too small. Used by ports that copy
/// (memory, rings); a TAP uses scatter-gather instead.
#[inline]
pub fn write_tagged(frame: &[u8], vlan: u16, out: &mut [u8]) -> Option<usize> {
    if vlan == 0 {
        let dst = out.get_mut(..frame.len())?;
        dst.copy_from_slice(frame);
        return Some(frame.len());
    }
    let total = frame.len() + TAG_LEN;
    if frame.len() < 2 * MAC_LEN || out.len() < total {
        return None;
    }
    let (macs, rest) = frame.split_at(2 * MAC_LEN);
    let (head, tail) = out.split_at_mut(2 * MAC_LEN);
    head.copy_from_slice(macs);
    let (tag, body) = tail.split_at_mut(TAG_LEN);
    tag[..2].copy_from_slice(&crate::wire::EtherType::VLAN.to_be_bytes());
    tag[2..].copy_from_slice(&(vlan & 0x0fff).to_be_bytes());
    body.get_mut(..rest.len())?.copy_from_slice(rest);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMP-bearing frame tagged VID 10, priority 5: 8100 a00a 0800 ...
    const SINGLE: [u8; 22] = [
        0x02, 0x42, 0xac, 0x11, 0x00, 0x03, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x81, 0x00, 0xa0,
        0x0a, 0x08, 0x00, 0x45, 0x00, 0x00, 0x14,
    ];
    // Double tagged: outer 88a8 VID 100, inner 8100 VID 20, then ARP.
    const DOUBLE: [u8; 24] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x88, 0xa8, 0x00,
        0x64, 0x81, 0x00, 0x00, 0x14, 0x08, 0x06, 0x00, 0x01,
    ];

    #[test]
    fn single_tag() {
        let l2 = parse_l2(&SINGLE).unwrap();
        assert_eq!(l2.outer, Some((0x8100, 10)));
        assert_eq!(l2.inner, None);
        assert_eq!(l2.ethertype, EtherType::IPV4);
        assert_eq!(l2.l3_offset, 18);
        let t = VlanTag::new_checked(&SINGLE[14..]).unwrap();
        assert_eq!(t.pcp(), 5);
        assert!(!t.dei());
        assert_eq!(t.vid(), 10);
    }

    #[test]
    fn double_tag() {
        let l2 = parse_l2(&DOUBLE).unwrap();
        assert_eq!(l2.outer, Some((0x88a8, 100)));
        assert_eq!(l2.inner, Some((0x8100, 20)));
        assert_eq!(l2.ethertype, EtherType::ARP);
        assert_eq!(l2.l3_offset, 22);
    }

    #[test]
    fn truncated_and_triple_refused() {
        assert!(parse_l2(&SINGLE[..15]).is_err());
        let mut triple = DOUBLE.to_vec();
        triple[20] = 0x81;
        triple[21] = 0x00;
        triple.extend_from_slice(&[0, 0, 0, 0]);
        assert!(parse_l2(&triple).is_err());
    }

    #[test]
    fn setters_round_trip() {
        let mut b = [0u8; 4];
        let mut t = VlanTag::new_checked(&mut b[..]).unwrap();
        t.set_tci(tci(5, false, 0));
        t.set_vid(10);
        t.set_ethertype(EtherType::IPV4);
        assert_eq!(b, [0xa0, 0x0a, 0x08, 0x00]);
    }

    #[test]
    fn against_etherparse() {
        use etherparse::SingleVlanSlice;
        let v = SingleVlanSlice::from_slice(&SINGLE[14..]).unwrap();
        assert_eq!(v.vlan_identifier().value(), 10);
        assert_eq!(v.priority_code_point().value(), 5);
        assert_eq!(v.ether_type().0, EtherType::IPV4);

        let outer = SingleVlanSlice::from_slice(&DOUBLE[14..]).unwrap();
        assert_eq!(outer.vlan_identifier().value(), 100);
        assert_eq!(outer.ether_type().0, EtherType::VLAN);
        let inner = SingleVlanSlice::from_slice(&DOUBLE[18..]).unwrap();
        assert_eq!(inner.vlan_identifier().value(), 20);
        assert_eq!(inner.ether_type().0, EtherType::ARP);
        let l2 = parse_l2(&DOUBLE).unwrap();
        assert_eq!(l2.outer.map(|t| t.1), Some(outer.vlan_identifier().value()));
        assert_eq!(l2.inner.map(|t| t.1), Some(inner.vlan_identifier().value()));
    }
}
