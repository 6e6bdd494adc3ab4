//! Merging consecutive UDP datagrams of one flow into one USO super-frame.
//!
//! A TAP takes one frame per `write`, and each write runs the receiving kernel's whole
//! input path (skb, IP, UDP, waking the reader) once. When a burst of datagrams of one
//! flow goes to the same TAP (a UDP flood, a bulk transfer), they can instead go down as
//! one super-frame with `VIRTIO_NET_HDR_GSO_UDP_L4` metadata: one header, the payloads
//! back to back, the datagram size as `gso_size`. The receiving kernel splits it again
//! in its UDP layer (`udp_rcv_segment`), so the socket sees the same datagrams, in
//! order, with their checksums computed; a socket with UDP_GRO gets them merged, as it
//! would from a NIC with UDP GRO forwarding on. What sits below the socket in the
//! receiving namespace (netfilter, tc, a packet socket such as tcpdump's) sees one
//! packet per burst, as it does for TCP with GRO; `--no-offload` turns merging off.
//!
//! Only datagrams that segmentation gives back unchanged are merged: IPv4 without
//! options, not fragments, the same Ethernet header, TOS, DF, TTL, addresses and ports,
//! one payload size (the last may be shorter), a checksum that is good, or partial
//! with the seed the kernel would have written (merging must not turn a corrupt
//! datagram into a good one), and, without DF, IP identifications that count up by one
//! (segmentation numbers the segments from the first's; with DF the identification
//! carries no meaning, RFC 6864, and is not kept).
//!
//! Sans-I/O: the TAP port asks [`candidate`] and [`same_flow`] while it walks its send
//! list and writes [`super_header`]'s header followed by the payloads in one `writev`.

use super::VnetHdr;
use crate::wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket, ethernet, ipv4, udp,
};

/// Where the IPv4 header starts (untagged Ethernet).
const L3: usize = ethernet::HEADER_LEN;
/// Where the UDP header starts (IPv4 without options).
const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
/// Ethernet (untagged), IPv4 without options, UDP.
pub const HEADER: usize = L4 + udp::HEADER_LEN;
/// Datagrams per super-frame at most (the kernel's UDP_MAX_SEGMENTS was 64 until 6.8).
pub const MAX_SEGMENTS: usize = 64;
/// Payload bytes per super-frame at most (the IPv4 total length is 16 bits).
pub const MAX_PAYLOAD: usize = 65535 - (HEADER - L3);

const UDP_CSUM_START: u16 = L4 as u16;
const UDP_CSUM_OFFSET: u16 = udp::CHECKSUM_AT as u16;

/// The Ethernet, IPv4 and UDP header views of one frame.
type Headers<'a> = (
    EthernetFrame<&'a [u8]>,
    Ipv4Packet<&'a [u8]>,
    UdpPacket<&'a [u8]>,
);

/// The three header views of a frame at least [`HEADER`] bytes long, over exactly its
/// first [`HEADER`] bytes (the IPv4 view's lengths are not checked: read header fields
/// only).
#[inline]
fn headers(h: &[u8]) -> Option<Headers<'_>> {
    let h = h.get(..HEADER)?;
    Some((
        EthernetFrame::new_unchecked(h),
        Ipv4Packet::new_unchecked(h.get(L3..L4)?),
        UdpPacket::new_unchecked(h.get(L4..)?),
    ))
}

/// The payload length of a datagram that may be merged with others of its flow, or
/// None. Checks the headers and the UDP checksum (unless it is partial, known good or
/// absent).
pub fn candidate(frame: &[u8], vnet: &VnetHdr) -> Option<usize> {
    if vnet.gso_type != VnetHdr::GSO_NONE {
        return None;
    }
    let eth = EthernetFrame::new_checked(frame).ok()?;
    // IPv4, no options, UDP, not a fragment (MF clear, offset 0).
    if eth.ethertype() != EtherType::IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.header_len() != ipv4::MIN_HEADER_LEN
        || ip.protocol() != IpProtocol::Udp
        || ip.is_fragment()
        || !ip.verify_checksum()
    {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    let udp_len = udp.len();
    if udp_len != ip.payload().len() || udp_len <= udp::HEADER_LEN {
        return None;
    }
    if vnet.flags & VnetHdr::F_NEEDS_CSUM != 0 {
        // Anything but the kernel's seed would arrive as a bad checksum if sent alone.
        if vnet.csum_start != UDP_CSUM_START
            || vnet.csum_offset != UDP_CSUM_OFFSET
            || udp.checksum() != partial_seed(&ip, udp_len)
        {
            return None;
        }
    } else if vnet.flags & VnetHdr::F_DATA_VALID == 0 && !udp.verify_checksum(ip.src(), ip.dst()) {
        return None;
    }
    Some(udp_len - udp::HEADER_LEN)
}

/// The value a partial UDP checksum holds before it is completed: the pseudo-header's
/// sum, folded, not inverted (what a sender's kernel writes, and what segmentation of a
/// super-frame starts from).
fn partial_seed<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>, udp_len: usize) -> u16 {
    crate::wire::checksum::fold(ip.pseudo_header_sum(IpProtocol::Udp, udp_len as u32))
}

/// Whether `next` (a [`candidate`]) is a datagram of `first`'s flow that segmentation of
/// a super-frame headed by `first` gives back unchanged (but for its IP id).
pub fn same_flow(first: &[u8], next: &[u8]) -> bool {
    let (Some((ea, ia, ua)), Some((eb, ib, ub))) = (headers(first), headers(next)) else {
        return false;
    };
    ea.dst() == eb.dst()
        && ea.src() == eb.src()
        && ea.ethertype() == eb.ethertype()
        && ia.version() == ib.version()
        && ia.header_len() == ib.header_len()
        && ia.dscp_ecn() == ib.dscp_ecn()
        // DF (the rest of the word is 0 in a candidate)
        && ia.flags_and_offset() == ib.flags_and_offset()
        && ia.ttl() == ib.ttl()
        && ia.protocol() == ib.protocol()
        && ia.src() == ib.src()
        && ia.dst() == ib.dst()
        && ua.src_port() == ub.src_port()
        && ua.dst_port() == ub.dst_port()
}

/// Whether `next`, of `first`'s flow, may be segment number `pos` (0 for `first`) of a
/// super-frame headed by `first`: without DF its IP identification must be the one
/// segmentation will give it, `first`'s plus `pos`.
pub fn in_sequence(first: &[u8], next: &[u8], pos: usize) -> bool {
    match (headers(first), headers(next)) {
        (Some((_, a, _)), Some((_, b, _))) => {
            a.dont_fragment() || b.ident() == a.ident().wrapping_add(pos as u16)
        }
        _ => false,
    }
}

/// Writes into `out` the header of a super-frame carrying `payload` bytes of datagrams
/// `seg` bytes long, headed by `first`'s headers (a [`candidate`]), and returns its vnet
/// header, or None when the sizes cannot be one super-frame.
pub fn super_header(
    first: &[u8],
    payload: usize,
    seg: usize,
    out: &mut [u8; HEADER],
) -> Option<VnetHdr> {
    if payload > MAX_PAYLOAD || seg == 0 || payload <= seg {
        return None;
    }
    out.copy_from_slice(first.get(..HEADER)?);
    let udp_len = payload + udp::HEADER_LEN;
    let (l3, l4) = out.split_at_mut(L4);
    let mut ip = Ipv4Packet::new_unchecked(l3.get_mut(L3..)?);
    ip.set_total_len((udp_len + ipv4::MIN_HEADER_LEN) as u16);
    ip.fill_checksum();
    let seed = partial_seed(&ip, udp_len);
    let mut u = UdpPacket::new_unchecked(l4);
    u.set_len(udp_len as u16);
    u.set_checksum(seed);
    Some(VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_UDP_L4,
        hdr_len: HEADER as u16,
        gso_size: u16::try_from(seg).ok()?,
        csum_start: UDP_CSUM_START,
        csum_offset: UDP_CSUM_OFFSET,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::gso::Segmenter;
    use crate::wire::checksum;
    use std::net::Ipv4Addr;

    /// A UDP datagram 10.0.0.1:4000 -> 10.0.0.2:5001 as Linux sends it (DF, TTL 64),
    /// with a full checksum.
    fn datagram(payload: &[u8], id: u16) -> Vec<u8> {
        let mut f = vec![
            0x02, 0x42, 0x0a, 0x00, 0x00, 0x02, 0x02, 0x42, 0x0a, 0x00, 0x00, 0x01, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2, 0x0f, 0xa0, 0x13, 0x89, 0x00, 0x00, 0x00, 0x00,
        ];
        f.extend_from_slice(payload);
        let total = (28 + payload.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[18..20].copy_from_slice(&id.to_be_bytes());
        let ip = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ip.to_be_bytes());
        let ul = (8 + payload.len()) as u16;
        f[38..40].copy_from_slice(&ul.to_be_bytes());
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let p = checksum::pseudo_header_v4(src, dst, 17, u32::from(ul));
        let c = !checksum::fold(checksum::add(p, checksum::sum(&f[34..])));
        f[40..42].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn a_good_datagram_is_a_candidate() {
        let f = datagram(&[7; 18], 1);
        assert_eq!(f.len(), 60);
        assert_eq!(candidate(&f, &VnetHdr::default()), Some(18));
        // Ethernet padding after the datagram is fine.
        let mut padded = datagram(&[7; 4], 1);
        padded.resize(60, 0);
        assert_eq!(candidate(&padded, &VnetHdr::default()), Some(4));
    }

    #[test]
    fn what_segmentation_would_change_is_not_a_candidate() {
        let plain = VnetHdr::default();
        let good = datagram(&[1, 2, 3, 4, 5], 9);
        type Change = fn(&mut Vec<u8>);
        let cases: [(&str, Change); 10] = [
            ("bad udp checksum", |f| f[45] ^= 1),
            ("bad ip checksum", |f| f[22] = 63),
            ("ip options", |f| f[14] = 0x46),
            ("more fragments", |f| f[20] |= 0x20),
            ("fragment offset", |f| f[21] = 1),
            ("tcp", |f| f[23] = 6),
            ("arp", |f| f[13] = 0x06),
            ("udp length", |f| f[39] -= 1),
            ("truncated", |f| f.truncate(45)),
            ("empty payload", |f| f.truncate(42)),
        ];
        for (what, change) in cases {
            let mut f = good.clone();
            change(&mut f);
            assert_eq!(candidate(&f, &plain), None, "{what}");
        }
        assert_eq!(candidate(&good[..30], &plain), None);
        let gso = VnetHdr {
            gso_type: VnetHdr::GSO_UDP_L4,
            ..plain
        };
        assert_eq!(candidate(&good, &gso), None, "already a super-frame");
    }

    #[test]
    fn partial_valid_and_absent_checksums_are_not_verified() {
        let mut f = datagram(&[9; 20], 3);
        f[40..42].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(candidate(&f, &VnetHdr::default()), None);
        let partial = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        // A partial checksum must hold the seed the kernel writes, or sent alone it
        // would arrive bad: merged, it must not arrive good.
        assert_eq!(candidate(&f, &partial), None, "wrong seed");
        let seed = partial_seed(&Ipv4Packet::new_checked(&f[14..]).unwrap(), 28);
        f[40..42].copy_from_slice(&seed.to_be_bytes());
        assert_eq!(candidate(&f, &partial), Some(20));
        let elsewhere = VnetHdr {
            csum_start: 30,
            ..partial
        };
        assert_eq!(candidate(&f, &elsewhere), None);
        f[40..42].copy_from_slice(&[0x12, 0x34]);
        let valid = VnetHdr {
            flags: VnetHdr::F_DATA_VALID,
            ..VnetHdr::default()
        };
        assert_eq!(candidate(&f, &valid), Some(20));
        f[40..42].copy_from_slice(&[0, 0]);
        assert_eq!(candidate(&f, &VnetHdr::default()), Some(20));
    }

    #[test]
    fn flows_differ_by_any_kept_header_field() {
        let a = datagram(&[1; 10], 1);
        let b = datagram(&[2; 10], 2);
        assert!(same_flow(&a, &b), "ids and payloads may differ");
        for at in [0, 6, 13, 15, 20, 22, 26, 30, 34, 36] {
            let mut c = b.clone();
            c[at] ^= 0x40;
            assert!(!same_flow(&a, &c), "byte {at}");
        }
        assert!(!same_flow(&a, &b[..20]));
    }

    #[test]
    fn without_df_ids_must_count_up() {
        let with_df = datagram(&[1; 10], 500);
        assert!(
            in_sequence(&with_df, &datagram(&[1; 10], 7), 3),
            "DF: any id"
        );
        let no_df = |id| {
            let mut f = datagram(&[1; 10], id);
            f[20] = 0;
            f
        };
        let first = no_df(0xfffe);
        assert!(in_sequence(&first, &no_df(0xffff), 1));
        assert!(in_sequence(&first, &no_df(0), 2), "wraps");
        assert!(!in_sequence(&first, &no_df(3), 2));
        assert!(!in_sequence(&first, &no_df(0xfffe), 1), "a repeated id");
        assert!(!in_sequence(&first, &first[..19], 1));
    }

    /// The super-frame our header describes, segmented the way the kernel does it (our
    /// software segmenter, checked against Linux elsewhere), gives back the datagrams.
    #[test]
    fn the_super_frame_segments_back_into_the_datagrams() {
        let payloads: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                (0..if i == 4 { 7 } else { 18 })
                    .map(|j| i * 31 + j)
                    .collect()
            })
            .collect();
        let frames: Vec<Vec<u8>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| datagram(p, 100 + i as u16))
            .collect();
        let total: usize = payloads.iter().map(Vec::len).sum();
        let mut head = [0u8; HEADER];
        let vnet = super_header(&frames[0], total, 18, &mut head).expect("header");
        assert_eq!(vnet.gso_size, 18);
        assert_eq!(vnet.hdr_len, 42);
        let mut sup = head.to_vec();
        for p in &payloads {
            sup.extend_from_slice(p);
        }
        // etherparse agrees on the headers.
        let (eth, rest) = etherparse::Ethernet2Header::from_slice(&sup).expect("eth");
        assert_eq!(eth.ether_type, etherparse::EtherType::IPV4);
        let (ip, _) = etherparse::Ipv4Header::from_slice(rest).expect("ip");
        assert_eq!(usize::from(ip.total_len), 28 + total);
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        let mut seg = Segmenter::new();
        let mut out = Vec::new();
        seg.segment(&sup, &vnet, |h, b| {
            let mut f = h.to_vec();
            f.extend_from_slice(b);
            out.push(f);
            true
        })
        .expect("segments");
        assert_eq!(out.len(), frames.len());
        for (got, want) in out.iter().zip(&frames) {
            // Everything but the IP id and so the IP checksum.
            assert_eq!(got[..18], want[..18]);
            assert_eq!(got[20..24], want[20..24]);
            assert_eq!(got[26..], want[26..]);
        }
    }

    #[test]
    fn sizes_that_cannot_be_one_super_frame() {
        let f = datagram(&[0; 18], 1);
        let mut head = [0u8; HEADER];
        assert!(
            super_header(&f, 18, 18, &mut head).is_none(),
            "one datagram"
        );
        assert!(super_header(&f, MAX_PAYLOAD + 1, 18, &mut head).is_none());
        assert!(super_header(&f, 100, 0, &mut head).is_none());
        assert!(super_header(&f[..30], 100, 18, &mut head).is_none());
        assert!(super_header(&f, MAX_PAYLOAD, 1472, &mut head).is_some());
    }
}
