//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

use std::net::Ipv4Addr;

/// One's-complement sum of `data` as big-endian 16-bit words, not folded, not inverted.
/// An odd trailing byte counts as the high byte of a word padded with zero.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // Sum 32-bit big-endian words into a u64 to defer carries; fold at the end.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    // Fold 64 -> 32 -> 16 keeping the carries.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = acc as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s
}

/// Fold a 32-bit one's-complement accumulator to 16 bits (not inverted).
#[inline]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The one's-complement sum of an IPv6 address's eight words, folded: its four
/// 32-bit words summed in a `u64` (2^32 and 2^16 are both 1 modulo 0xffff, so the
/// fold of their sum is the sum of the 16-bit words). What an address change costs a
/// checksum, without a pass over its bytes.
#[inline(always)]
pub fn sum_ipv6(a: &std::net::Ipv6Addr) -> u16 {
    let v = u128::from(*a);
    let mut acc = (v >> 96) as u64 + u64::from((v >> 64) as u32);
    acc += u64::from((v >> 32) as u32) + u64::from(v as u32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    fold(acc as u32)
}

/// Add two partial sums.
#[inline]
pub fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// The finished checksum of `data`: folded and inverted.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the IPv4 pseudo-header used by TCP and UDP.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16)
        + (s & 0xffff)
        + (d >> 16)
        + (d & 0xffff)
        + u32::from(protocol)
        + (length >> 16)
        + (length & 0xffff)
}

/// RFC 1624 eqn. 3: the checksum `hc` after one 16-bit word of the covered data changes
/// from `old` to `new`: HC' = ~(~HC + ~m + m').
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!hc) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// The checksum after a 32-bit field (an IPv4 address, a sequence number) changes.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!hc)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

/// Like [`update16`] for the UDP checksum, where 0 means "no checksum" and a computed
/// 0 is sent as 0xffff (RFC 768): a zero checksum stays zero.
#[inline]
pub fn update16_udp(hc: u16, old: u16, new: u16) -> u16 {
    if hc == 0 {
        return 0;
    }
    match update16(hc, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// [`update32`] with UDP's zero rule.
#[inline]
pub fn update32_udp(hc: u16, old: u32, new: u32) -> u16 {
    if hc == 0 {
        return 0;
    }
    match update32(hc, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// An address of a pseudo-header: how a checksum follows its change.
pub trait PseudoAddr: Copy {
    /// The field `field` (kept as `csum` says) after the address changes from `self`
    /// to `new`.
    fn update(self, csum: Checksum, field: u16, new: Self, udp: bool) -> u16;
}

impl PseudoAddr for Ipv4Addr {
    #[inline(always)]
    fn update(self, csum: Checksum, field: u16, new: Ipv4Addr, udp: bool) -> u16 {
        csum.update_pseudo32(field, u32::from(self), u32::from(new), udp)
    }
}

impl PseudoAddr for std::net::Ipv6Addr {
    /// RFC 1624 over the address's words at once: the new address's 32-bit words and
    /// the old one's complemented (a 32-bit word's complement is its negation modulo
    /// 0xffff too) summed with the field in one accumulator, folded once.
    #[inline(always)]
    fn update(self, csum: Checksum, field: u16, new: std::net::Ipv6Addr, udp: bool) -> u16 {
        let (old, new) = (u128::from(self), u128::from(new));
        let words = |v: u128| {
            let v = [
                (v >> 96) as u32,
                (v >> 64) as u32,
                (v >> 32) as u32,
                v as u32,
            ];
            v.iter().map(|w| u64::from(*w)).sum::<u64>()
        };
        let delta = words(new) + words(!old);
        let fold64 = |mut acc: u64| {
            acc = (acc & 0xffff_ffff) + (acc >> 32);
            acc = (acc & 0xffff_ffff) + (acc >> 32);
            fold(acc as u32)
        };
        match csum {
            Checksum::Full if udp && field == 0 => 0,
            Checksum::Full => match !fold64(u64::from(!field) + delta) {
                0 if udp => 0xffff,
                c => c,
            },
            Checksum::Partial => fold64(u64::from(field) + delta),
        }
    }
}

/// What the checksum field of a TCP or UDP header holds, so a rewrite knows how to
/// keep it right.
///
/// A frame whose checksum is offloaded (virtio-net `VIRTIO_NET_HDR_F_NEEDS_CSUM`, Linux
/// `CHECKSUM_PARTIAL`) carries in that field only the pseudo-header sum, folded and not
/// inverted; whoever completes it later (the kernel, a NIC, the segmenter) adds the
/// header and data. Changing an address then changes that sum like any other sum, and
/// changing a port changes nothing yet (ports are summed at completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The finished checksum: the inverted sum of pseudo-header, header and data (for
    /// UDP, 0 means "none" and stays 0).
    Full,
    /// The partial checksum of an offloaded frame: the pseudo-header sum only.
    Partial,
}

impl Checksum {
    /// `Partial` when `partial`, else `Full`.
    #[inline]
    pub fn partial_if(partial: bool) -> Checksum {
        if partial {
            Checksum::Partial
        } else {
            Checksum::Full
        }
    }

    /// The field `field` after a 32-bit word of the pseudo-header (an address) changes
    /// from `old` to `new`. `udp` applies UDP's zero rule to a full checksum.
    #[inline]
    pub fn update_pseudo32(self, field: u16, old: u32, new: u32, udp: bool) -> u16 {
        match self {
            Checksum::Full if udp => update32_udp(field, old, new),
            Checksum::Full => update32(field, old, new),
            // A plain sum: update it as the complement of a checksum.
            Checksum::Partial => !update32(!field, old, new),
        }
    }

    /// The field `field` after words of the pseudo-header whose folded sum was `old`
    /// change to words whose folded sum is `new` (an IPv6 address: its eight words
    /// summed are one word, RFC 1624 applied to the sum). `udp` applies UDP's zero rule
    /// to a full checksum.
    #[inline]
    pub fn update_pseudo16(self, field: u16, old: u16, new: u16, udp: bool) -> u16 {
        match self {
            Checksum::Full if udp => update16_udp(field, old, new),
            Checksum::Full => update16(field, old, new),
            Checksum::Partial => !update16(!field, old, new),
        }
    }

    /// The field `field` after a 16-bit word of the header (a port) changes from `old`
    /// to `new`. A partial checksum does not cover the header yet: it is unchanged.
    #[inline]
    pub fn update_covered16(self, field: u16, old: u16, new: u16, udp: bool) -> u16 {
        match self {
            Checksum::Full if udp => update16_udp(field, old, new),
            Checksum::Full => update16(field, old, new),
            Checksum::Partial => field,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The one-pass IPv6 update agrees with RFC 1624 over the folded sums (up to
        /// the two forms of zero), for full and partial checksums.
        #[test]
        fn ipv6_update_in_one_pass_agrees_with_the_folded_sums(
            field in proptest::prelude::any::<u16>(),
            old in proptest::prelude::any::<u128>(),
            new in proptest::prelude::any::<u128>(),
        ) {
            let (o, n) = (std::net::Ipv6Addr::from(old), std::net::Ipv6Addr::from(new));
            for csum in [Checksum::Full, Checksum::Partial] {
                let a = o.update(csum, field, n, false);
                let b = csum.update_pseudo16(field, sum_ipv6(&o), sum_ipv6(&n), false);
                proptest::prop_assert!(a == b || (a | b == 0xffff && (a == 0 || b == 0)));
            }
        }
    }

    #[test]
    fn an_ipv6_address_sums_as_its_bytes_do() {
        for a in [
            "::",
            "2001:db8::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fd00:1:2:3:4:5:6:7",
        ] {
            let a: std::net::Ipv6Addr = a.parse().unwrap();
            let (x, y) = (sum_ipv6(&a), fold(sum(&a.octets())));
            assert!(
                x == y || (x | y == 0xffff && (x == 0 || y == 0)),
                "{a}: {x:#x} {y:#x}"
            );
        }
    }

    /// A TCP segment 10.0.0.1:1000 -> 10.0.0.2:80 with 3 data bytes, checksum field at 16.
    fn segment() -> (Ipv4Addr, Ipv4Addr, Vec<u8>) {
        let mut seg = vec![0u8; 23];
        seg[0..2].copy_from_slice(&1000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&80u16.to_be_bytes());
        seg[12] = 0x50;
        seg[20..].copy_from_slice(b"abc");
        (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), seg)
    }

    fn full(src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> u16 {
        let mut s = seg.to_vec();
        s[16..18].copy_from_slice(&[0, 0]);
        !fold(add(pseudo_header_v4(src, dst, 6, s.len() as u32), sum(&s)))
    }

    fn partial(src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> u16 {
        fold(pseudo_header_v4(src, dst, 6, seg.len() as u32))
    }

    #[test]
    fn full_mode_follows_address_and_port_changes() {
        let (src, dst, mut seg) = segment();
        let c = full(src, dst, &seg);
        let new = Ipv4Addr::new(192, 0, 2, 7);
        let c = Checksum::Full.update_pseudo32(c, u32::from(src), u32::from(new), false);
        let c = Checksum::Full.update_covered16(c, 1000, 4242, false);
        seg[0..2].copy_from_slice(&4242u16.to_be_bytes());
        assert_eq!(c, full(new, dst, &seg));
    }

    #[test]
    fn partial_mode_updates_the_pseudo_header_sum_only() {
        let (src, dst, mut seg) = segment();
        let c = partial(src, dst, &seg);
        let new = Ipv4Addr::new(192, 0, 2, 7);
        let c = Checksum::Partial.update_pseudo32(c, u32::from(src), u32::from(new), false);
        let c = Checksum::Partial.update_covered16(c, 1000, 4242, false);
        seg[0..2].copy_from_slice(&4242u16.to_be_bytes());
        assert_eq!(c, partial(new, dst, &seg));
        // Completing it (what the kernel or the segmenter does) gives the full checksum.
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(!fold(sum(&seg)), full(new, dst, &seg));
        // Updating it as a full checksum would not.
        let wrong = Checksum::Full.update_pseudo32(
            partial(src, dst, &seg),
            u32::from(src),
            u32::from(new),
            false,
        );
        assert_ne!(wrong, c);
    }

    #[test]
    fn full_udp_keeps_zero_partial_does_not_apply_it() {
        assert_eq!(Checksum::Full.update_pseudo32(0, 1, 2, true), 0);
        assert_eq!(Checksum::Full.update_covered16(0, 1, 2, true), 0);
        assert_eq!(
            Checksum::Partial.update_covered16(0x1234, 1, 2, true),
            0x1234
        );
        assert_eq!(Checksum::partial_if(true), Checksum::Partial);
        assert_eq!(Checksum::partial_if(false), Checksum::Full);
    }

    // The example from RFC 1071 section 3.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    // A captured IPv4 header (from Wikipedia's checksum example) verifies to zero.
    #[test]
    fn ipv4_header_verifies() {
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut hdr = [
            0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        // Rewrite the source address 192.168.0.1 -> 10.1.2.3 incrementally.
        let old = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
        let new = u32::from_be_bytes([10, 1, 2, 3]);
        let inc = update32(c, old, new);
        hdr[12..16].copy_from_slice(&new.to_be_bytes());
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc, checksum(&hdr));
        // And a TTL decrement, a 16-bit word change.
        hdr[10..12].copy_from_slice(&inc.to_be_bytes());
        let old_w = u16::from_be_bytes([hdr[8], hdr[9]]);
        hdr[8] -= 1;
        let new_w = u16::from_be_bytes([hdr[8], hdr[9]]);
        let inc2 = update16(inc, old_w, new_w);
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc2, checksum(&hdr));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        assert_eq!(update16_udp(0, 1, 2), 0);
        assert_eq!(update32_udp(0, 1, 2), 0);
    }

    #[test]
    fn pseudo_header_sum() {
        let s = pseudo_header_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            17,
            8,
        );
        assert_eq!(s, 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 8);
    }
}
