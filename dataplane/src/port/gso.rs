//! Software segmentation and checksum completion for frames with offload metadata.
//!
//! A TAP with offloads hands over super-frames: up to 64 KB of TCP or UDP payload behind
//! one set of headers, with a [`VnetHdr`] saying how to cut it (`gso_type`, `gso_size`)
//! and, with `F_NEEDS_CSUM`, that the transport checksum field holds only the
//! pseudo-header sum (what Linux leaves for CHECKSUM_PARTIAL). A port that cannot pass
//! that metadata on (a TAP without a vnet header) turns such a frame into ordinary frames
//! here.
//!
//! Output copies no payload: each resulting frame is emitted as two pieces, a *head* (the
//! rewritten Ethernet, IP and transport headers, in the [`Segmenter`]'s own scratch
//! buffer) and a *body* (a slice of the original frame). A port writes both with one
//! `writev`. Nothing is allocated.
//!
//! What is handled:
//! - `GSO_NONE` with `F_NEEDS_CSUM`: the checksum is completed: the one's-complement sum
//!   from `csum_start` to the end of the frame (the pseudo-header sum already sits in the
//!   field), folded, inverted and stored at `csum_start + csum_offset` (0 is stored as
//!   0xffff, as Linux's `skb_checksum_help` does).
//! - `GSO_TCPV4` (with or without `GSO_ECN`) and `GSO_TCPV6`: the payload is cut into
//!   `gso_size` pieces; each segment gets a copy of the headers with the IP length fixed,
//!   the IPv4 identification incremented per segment and its header checksum recomputed,
//!   the sequence number advanced by the payload offset, FIN and PSH kept only on the last
//!   segment, CWR only on the first, and the TCP checksum computed in full.
//! - `GSO_UDP_L4` (USO) over IPv4 and IPv6: every `gso_size` piece becomes a datagram of
//!   its own, with its UDP length and full checksum.
//! - `GSO_UDP` (legacy UFO), IPv4 only: the frame is *one* datagram, so it is fragmented
//!   at the IP level (fragments of `gso_size` rounded down to a multiple of 8, one IP
//!   identification, MF and offsets), after its UDP checksum is completed over the whole
//!   datagram. This is what Linux does for virtio guests (`udp4_ufo_fragment`); cutting
//!   it as USO would turn one datagram into several and change what the receiving
//!   application reads.
//!
//! Header offsets are taken from the headers themselves (`hdr_len` and, for segmentation,
//! `csum_start` are hints that are not trusted). An IPv6 header must be followed directly
//! by the transport header (no extension headers). Frames may carry up to two VLAN tags.

use super::{Frame, VnetHdr};
use crate::wire::checksum;
use crate::wire::tcp::TcpFlags;
use crate::wire::{
    EtherType, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket, WireError, parse_l2,
};

/// The longest head (all headers of one segment) the segmenter rewrites.
pub const MAX_HEADER: usize = 256;
/// The most frames one super-frame may turn into (64 KB at Linux's smallest TCP MSS is
/// under 800).
pub const MAX_SEGMENTS: usize = 1024;

const UDP_HEADER_LEN: usize = crate::wire::udp::HEADER_LEN;

/// Why a frame's offload metadata could not be carried out. The frame is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    #[error("unknown segmentation type {0:#04x} in the offload header")]
    UnknownType(u8),
    #[error("segmentation size {0} is unusable for this frame")]
    BadGsoSize(u16),
    #[error("checksum offsets (start {start}, offset {offset}) fall outside the {len}-byte frame")]
    BadCsumOffsets { start: u16, offset: u16, len: usize },
    #[error("headers of {0} bytes are longer than the {MAX_HEADER} bytes segmentation handles")]
    HeadersTooLong(usize),
    #[error("the frame would become {0} segments, more than the {MAX_SEGMENTS} allowed")]
    TooManySegments(usize),
    #[error("offload metadata does not match the frame: {0}")]
    Mismatch(&'static str),
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
}

/// Where the network and transport headers of a frame are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    l3: usize,
    l4: usize,
    /// End of the IP packet (Ethernet padding excluded).
    end: usize,
    proto: IpProtocol,
}

fn truncated(what: &'static str, needed: usize, got: usize) -> GsoError {
    GsoError::Wire(WireError::Truncated { what, needed, got })
}

fn layout(frame: &[u8]) -> Result<Layout, GsoError> {
    let l2 = parse_l2(frame)?;
    let l3 = l2.l3_offset;
    let ip = frame
        .get(l3..)
        .ok_or(truncated("ip header", l3, frame.len()))?;
    match l2.ethertype {
        EtherType::IPV4 => {
            let p = Ipv4Packet::new_checked(ip)?;
            if p.is_fragment() {
                return Err(GsoError::Mismatch("an IPv4 fragment cannot be segmented"));
            }
            Ok(Layout {
                v6: false,
                l3,
                l4: l3 + p.header_len(),
                end: l3 + p.total_len(),
                proto: p.protocol(),
            })
        }
        EtherType::IPV6 => {
            let p = Ipv6Packet::new_checked(ip)?;
            if p.payload_len() == 0 {
                return Err(GsoError::Mismatch("IPv6 jumbograms are not segmented"));
            }
            let l4 = l3 + crate::wire::ipv6::HEADER_LEN;
            let end = l4 + p.payload_len();
            if end > frame.len() {
                return Err(truncated("ipv6 packet", end, frame.len()));
            }
            Ok(Layout {
                v6: true,
                l3,
                l4,
                end,
                proto: IpProtocol::from(p.next_header()),
            })
        }
        _ => Err(GsoError::Mismatch(
            "segmentation asked for a frame that is not IP",
        )),
    }
}

/// The pseudo-header sum without the length: addresses and protocol.
fn pseudo_base(head: &[u8], lay: &Layout) -> u32 {
    let ip = head.get(lay.l3..lay.l4).unwrap_or(&[]);
    if lay.v6 {
        Ipv6Packet::new_checked(ip).map_or(0, |p| p.pseudo_header_sum(lay.proto, 0))
    } else if ip.len() >= crate::wire::ipv4::MIN_HEADER_LEN {
        Ipv4Packet::new_unchecked(ip).pseudo_header_sum(lay.proto, 0)
    } else {
        0
    }
}

/// Adds a transport length to a pseudo-header base sum.
#[inline]
fn with_len(base: u32, len: usize) -> u32 {
    let len = len as u32;
    checksum::add(base, (len >> 16) + (len & 0xffff))
}

/// The finished transport checksum over `base`, `hdr` and `body` (`hdr` has even length).
#[inline]
fn finish(base: u32, hdr: &[u8], body: &[u8]) -> u16 {
    let s = checksum::add(base, checksum::add(checksum::sum(hdr), checksum::sum(body)));
    match !checksum::fold(s) {
        0 => 0xffff,
        c => c,
    }
}

/// Stores a completed checksum at the position the offload metadata names.
fn store_checksum(b: &mut [u8], at: usize, v: u16) {
    if let Some(d) = b.get_mut(at..at + 2) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// The transport header fields that change from one segment to the next.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// TCP: the first segment's sequence number and flags.
    Tcp { seq0: u32, flags0: u8 },
    /// UDP (USO): every piece a datagram of its own.
    Udp,
}

impl Cut {
    /// Rewrites the transport header `th` of segment `i` of `n`, carrying `chunk` from
    /// payload offset `from`, with its full checksum over `base` (the pseudo-header sum
    /// without the length).
    fn fix(self, th: &mut [u8], base: u32, i: usize, n: usize, from: usize, chunk: &[u8]) {
        let len = th.len() + chunk.len();
        match self {
            Cut::Tcp { seq0, flags0 } => {
                let mut t = TcpPacket::new_unchecked(&mut *th);
                t.set_seq(seq0.wrapping_add(from as u32));
                let mut f = flags0;
                if i > 0 {
                    f &= !TcpFlags::CWR;
                }
                if i + 1 < n {
                    f &= !(TcpFlags::FIN | TcpFlags::PSH);
                }
                t.set_flags(f);
                t.set_checksum(0);
                let c = finish(with_len(base, len), th, chunk);
                TcpPacket::new_unchecked(th).set_checksum(c);
            }
            Cut::Udp => {
                let mut u = UdpPacket::new_unchecked(&mut *th);
                u.set_len(len as u16);
                u.set_checksum(0);
                let c = finish(with_len(base, len), th, chunk);
                UdpPacket::new_unchecked(th).set_checksum(c);
            }
        }
    }
}

/// The completed value of a partial checksum and where it goes: the sum from
/// `csum_start` to the end of `frame`, folded and inverted (0 as 0xffff), for the field
/// at `csum_start + csum_offset`.
pub fn partial_checksum(
    frame: &[u8],
    csum_start: u16,
    csum_offset: u16,
) -> Result<(usize, u16), GsoError> {
    let start = usize::from(csum_start);
    let pos = start + usize::from(csum_offset);
    let covered = match frame.get(start..) {
        Some(c) if pos + 2 <= frame.len() => c,
        _ => {
            return Err(GsoError::BadCsumOffsets {
                start: csum_start,
                offset: csum_offset,
                len: frame.len(),
            });
        }
    };
    let c = match !checksum::fold(checksum::sum(covered)) {
        0 => 0xffff,
        c => c,
    };
    Ok((pos, c))
}

/// Completes the partial checksum of a frame without segmentation metadata in place and
/// clears `F_NEEDS_CSUM`. A frame with nothing to complete is left as it is; a frame
/// that still needs segmenting is refused (segment it with [`Segmenter`] instead).
pub fn complete_checksum(frame: &mut Frame) -> Result<(), GsoError> {
    if frame.vnet.gso_type & !VnetHdr::GSO_ECN != VnetHdr::GSO_NONE {
        return Err(GsoError::Mismatch(
            "a super-frame needs segmenting, not only a checksum",
        ));
    }
    if frame.vnet.flags & VnetHdr::F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let (pos, c) = partial_checksum(frame.data(), frame.vnet.csum_start, frame.vnet.csum_offset)?;
    store_checksum(frame.data_mut(), pos, c);
    frame.vnet.flags &= !VnetHdr::F_NEEDS_CSUM;
    frame.vnet.flags |= VnetHdr::F_DATA_VALID;
    Ok(())
}

/// Turns frames with offload metadata into plain frames. Owns the scratch buffer the
/// rewritten headers live in; keep one per port (or per thread) and reuse it.
pub struct Segmenter {
    head: Box<[u8; MAX_HEADER]>,
}

impl Default for Segmenter {
    fn default() -> Self {
        Segmenter::new()
    }
}

impl Segmenter {
    pub fn new() -> Segmenter {
        Segmenter {
            head: Box::new([0u8; MAX_HEADER]),
        }
    }

    /// Emits `frame` as the plain frames its metadata `vnet` asks for. Each frame goes to
    /// `emit(head, body)`, the frame being `head` followed by `body` (`head` may be empty
    /// for a frame passed through as it is). `emit` returns false to stop (the receiver
    /// is full): the remaining segments are not produced. Returns how many frames `emit`
    /// accepted. Errors are found before anything is emitted.
    pub fn segment<F>(&mut self, frame: &[u8], vnet: &VnetHdr, emit: F) -> Result<usize, GsoError>
    where
        F: FnMut(&[u8], &[u8]) -> bool,
    {
        match vnet.gso_type & !VnetHdr::GSO_ECN {
            VnetHdr::GSO_NONE if vnet.flags & VnetHdr::F_NEEDS_CSUM == 0 => {
                let mut emit = emit;
                Ok(usize::from(emit(&[], frame)))
            }
            VnetHdr::GSO_NONE => self.checksum_only(frame, vnet, emit),
            VnetHdr::GSO_TCPV4 => self.tcp(frame, vnet.gso_size, false, emit),
            VnetHdr::GSO_TCPV6 => self.tcp(frame, vnet.gso_size, true, emit),
            VnetHdr::GSO_UDP_L4 => self.uso(frame, vnet.gso_size, emit),
            VnetHdr::GSO_UDP => self.ufo(frame, vnet, emit),
            t => Err(GsoError::UnknownType(t)),
        }
    }

    /// Copies the first `len` bytes of `frame` into the scratch head.
    fn load(&mut self, frame: &[u8], len: usize) -> Result<&mut [u8], GsoError> {
        if len > MAX_HEADER {
            return Err(GsoError::HeadersTooLong(len));
        }
        let src = frame
            .get(..len)
            .ok_or(truncated("headers", len, frame.len()))?;
        let head = self
            .head
            .get_mut(..len)
            .ok_or(GsoError::HeadersTooLong(len))?;
        head.copy_from_slice(src);
        Ok(head)
    }

    fn checksum_only<F>(
        &mut self,
        frame: &[u8],
        vnet: &VnetHdr,
        mut emit: F,
    ) -> Result<usize, GsoError>
    where
        F: FnMut(&[u8], &[u8]) -> bool,
    {
        let (pos, c) = partial_checksum(frame, vnet.csum_start, vnet.csum_offset)?;
        let end = pos + 2;
        let head = self.load(frame, end)?;
        store_checksum(head, pos, c);
        let body = frame.get(end..).unwrap_or(&[]);
        Ok(usize::from(emit(head, body)))
    }

    fn tcp<F>(&mut self, frame: &[u8], gso_size: u16, v6: bool, emit: F) -> Result<usize, GsoError>
    where
        F: FnMut(&[u8], &[u8]) -> bool,
    {
        let lay = layout(frame)?;
        if lay.v6 != v6 {
            return Err(GsoError::Mismatch(
                "the TCP segmentation type names the other IP version",
            ));
        }
        if lay.proto != IpProtocol::Tcp {
            return Err(GsoError::Mismatch(
                "TCP segmentation asked for a non-TCP packet",
            ));
        }
        let l4_bytes =
            frame
                .get(lay.l4..lay.end)
                .ok_or(truncated("tcp segment", lay.end, frame.len()))?;
        let tcp = TcpPacket::new_checked(l4_bytes)?;
        let cut = Cut::Tcp {
            seq0: tcp.seq(),
            flags0: tcp.flags(),
        };
        self.cut(frame, &lay, lay.l4 + tcp.header_len(), gso_size, cut, emit)
    }

    fn uso<F>(&mut self, frame: &[u8], gso_size: u16, emit: F) -> Result<usize, GsoError>
    where
        F: FnMut(&[u8], &[u8]) -> bool,
    {
        let lay = layout(frame)?;
        if lay.proto != IpProtocol::Udp {
            return Err(GsoError::Mismatch(
                "UDP segmentation asked for a non-UDP packet",
            ));
        }
        let hdr_end = lay.l4 + UDP_HEADER_LEN;
        if hdr_end > lay.end {
            return Err(truncated("udp header", hdr_end, lay.end));
        }
        self.cut(frame, &lay, hdr_end, gso_size, Cut::Udp, emit)
    }

    /// Cuts the payload between `hdr_end` and the end of the IP packet into `gso_size`
    /// pieces, each emitted behind a copy of the headers fixed for it.
    fn cut<F>(
        &mut self,
        frame: &[u8],
        lay: &Layout,
        hdr_end: usize,
        gso_size: u16,
        cut: Cut,
        mut emit: F,
    ) -> Result<usize, GsoError>
    where
        F: FnMut(&[u8], &[u8]) -> bool,
    {
        let payload = frame.get(hdr_end..lay.end).unwrap_or(&[]);
        let mss = usize::from(gso_size);
        if mss == 0 {
            return Err(GsoError::BadGsoSize(gso_size));
        }
        let n = payload.len().div_ceil(mss).max(1);
        if n > MAX_SEGMENTS {
            return Err(GsoError::TooManySegments(n));
        }
        let head = self.load(frame, hdr_end)?;
        let base = pseudo_base(head, lay);
        let id0 = first_ident(head, lay);
        let mut sent = 0;
        for i in 0..n {
            let from = i * mss;
            let chunk = payload
                .get(from..(from + mss).min(payload.len()))
                .unwrap_or(&[]);
            fix_ip(head, lay, hdr_end + chunk.len(), id0.wrapping_add(i as u16));
            let Some(th) = head.get_mut(lay.l4..hdr_end) else {
                break;
            };
            cut.fix(th, base, i, n, from, chunk);
            if !emit(head, chunk) {
                break;
            }
            sent += 1;
        }
        Ok(sent)
    }

    fn ufo<F>(&mut self, frame: &[u8], vnet: &VnetHdr, emit: F) -> Result<usize, GsoError>
    where
        F: FnMut(&[u8], &[u8]) -> bool,
    {
        let lay = layout(frame)?;
        if lay.v6 {
            return Err(GsoError::Mismatch(
                "UDP fragmentation offload is handled for IPv4 only",
            ));
        }
        if lay.proto != IpProtocol::Udp {
            return Err(GsoError::Mismatch(
                "UDP fragmentation asked for a non-UDP packet",
            ));
        }
        let l4 = lay.l4;
        let dgram =
            frame
                .get(l4..lay.end)
                .ok_or(truncated("udp datagram", lay.end, frame.len()))?;
        if dgram.len() < UDP_HEADER_LEN {
            return Err(truncated("udp header", UDP_HEADER_LEN, dgram.len()));
        }
        let frag = usize::from(vnet.gso_size) & !7;
        if frag < UDP_HEADER_LEN {
            return Err(GsoError::BadGsoSize(vnet.gso_size));
        }
        let n = dgram.len().div_ceil(frag);
        if n > MAX_SEGMENTS {
            return Err(GsoError::TooManySegments(n));
        }
        let head = self.load(frame, l4 + UDP_HEADER_LEN)?;
        if vnet.flags & VnetHdr::F_NEEDS_CSUM != 0 {
            complete_udp(head, &lay, dgram);
        }
        Ok(fragment(head, &lay, dgram, frag, emit))
    }
}

/// Emits the datagram `dgram` as IPv4 fragments of `frag` bytes (a multiple of 8), the
/// headers in `head` (the UDP header, completed, at the layout's transport offset).
/// Returns how many `emit` accepted.
fn fragment<F>(head: &mut [u8], lay: &Layout, dgram: &[u8], frag: usize, mut emit: F) -> usize
where
    F: FnMut(&[u8], &[u8]) -> bool,
{
    let (l3, l4) = (lay.l3, lay.l4);
    let hdr_end = l4 + UDP_HEADER_LEN;
    let n = dgram.len().div_ceil(frag);
    let ihl = l4 - l3;
    let mut sent = 0;
    for i in 0..n {
        let from = i * frag;
        let to = (from + frag).min(dgram.len());
        // The first fragment carries the UDP header (from the head, with its
        // completed checksum); the others only IP payload.
        let (head_len, body) = if i == 0 {
            (hdr_end, dgram.get(UDP_HEADER_LEN..to))
        } else {
            (l4, dgram.get(from..to))
        };
        let Some(body) = body else {
            break;
        };
        if let Some(ip) = head.get_mut(l3..l4) {
            let mut p = Ipv4Packet::new_unchecked(ip);
            if n > 1 {
                p.set_fragment(i + 1 < n, from);
            }
            p.set_total_len((ihl + to - from) as u16);
            p.fill_checksum();
        }
        let Some(h) = head.get(..head_len) else {
            break;
        };
        if !emit(h, body) {
            break;
        }
        sent += 1;
    }
    sent
}

/// Completes the UDP checksum of the whole datagram `dgram` (its header copied into
/// `head` at the layout's transport offset) in `head`.
fn complete_udp(head: &mut [u8], lay: &Layout, dgram: &[u8]) {
    let base = pseudo_base(head, lay);
    let after = dgram.get(UDP_HEADER_LEN..).unwrap_or(&[]);
    if let Some(uh) = head.get_mut(lay.l4..lay.l4 + UDP_HEADER_LEN) {
        // The datagram with a zero checksum field: the header so, then the data.
        UdpPacket::new_unchecked(&mut *uh).set_checksum(0);
        let c = finish(with_len(base, dgram.len()), uh, after);
        UdpPacket::new_unchecked(uh).set_checksum(c);
    }
}

/// The IPv4 identification of the first segment (0 for IPv6, which has none).
fn first_ident(head: &[u8], lay: &Layout) -> u16 {
    match head.get(lay.l3..lay.l4) {
        Some(ip) if !lay.v6 && ip.len() >= crate::wire::ipv4::MIN_HEADER_LEN => {
            Ipv4Packet::new_unchecked(ip).ident()
        }
        _ => 0,
    }
}

/// Sets the IP length fields of a segment whose headers end at `hdr_end` and whose frame
/// is `seg_end` bytes long: IPv4 total length, identification and header checksum, or
/// the IPv6 payload length.
fn fix_ip(head: &mut [u8], lay: &Layout, seg_end: usize, ident: u16) {
    let ip_len = seg_end - lay.l3;
    if lay.v6 {
        if let Some(ip) = head.get_mut(lay.l3..lay.l4) {
            let payload_len = ip_len - crate::wire::ipv6::HEADER_LEN;
            Ipv6Packet::new_unchecked(ip).set_payload_len(payload_len as u16);
        }
        return;
    }
    if let Some(ip) = head.get_mut(lay.l3..lay.l4) {
        let mut p = Ipv4Packet::new_unchecked(ip);
        p.set_total_len(ip_len as u16);
        p.set_ident(ident);
        p.fill_checksum();
    }
}

/// Byte fixtures of super-frames as Linux hands them over, shared with the TAP tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use std::net::Ipv4Addr;

    pub const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    pub const DST4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    // Ethernet + IPv4 (DF, id 0x1c46, lengths and checksum filled by the builder) + TCP
    // 50000 -> 5201, seq 0x01020304, ack 0xa0b0c0d0, PSH|ACK, NOP NOP timestamps.
    pub const TCP4_HEADERS: [u8; 66] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x00, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02, //
        0xc3, 0x50, 0x14, 0x51, 0x01, 0x02, 0x03, 0x04, 0xa0, 0xb0, 0xc0, 0xd0, 0x80, 0x18, 0x01,
        0xf5, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00,
        0x00, 0xc8,
    ];

    // Ethernet + IPv4 (id 0x0100) + UDP 40000 -> 5353.
    pub const UDP4_HEADERS: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02, //
        0x9c, 0x40, 0x14, 0xe9, 0x00, 0x00, 0x00, 0x00,
    ];

    // Ethernet + IPv6 fd00::1 -> fd00::2, next header TCP + the TCP header above.
    pub fn tcp6_headers() -> Vec<u8> {
        let mut h = vec![
            0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86,
            0xdd, //
            0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x40,
        ];
        h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        h.extend_from_slice(&TCP4_HEADERS[34..]);
        h
    }

    pub fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// A TCP/IPv4 super-frame as Linux hands it to a TAP with TSO: lengths of the whole,
    /// IP checksum valid, the TCP checksum field holding the folded pseudo-header sum.
    pub fn tcp4_super(payload: &[u8], flags: u8, gso_size: u16) -> (Vec<u8>, VnetHdr) {
        let mut f = TCP4_HEADERS.to_vec();
        f[47] = flags;
        f.extend_from_slice(payload);
        let total = (f.len() - 14) as u16;
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
        ip.set_total_len(total);
        ip.fill_checksum();
        let tcp_len = (f.len() - 34) as u32;
        let pseudo = checksum::fold(checksum::pseudo_header_v4(SRC4, DST4, 6, tcp_len));
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size,
            csum_start: 34,
            csum_offset: 16,
        };
        (f, vnet)
    }

    pub fn udp4_super(payload: &[u8], gso_type: u8, gso_size: u16) -> (Vec<u8>, VnetHdr) {
        let mut f = UDP4_HEADERS.to_vec();
        f.extend_from_slice(payload);
        let total = (f.len() - 14) as u16;
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
        ip.set_total_len(total);
        ip.fill_checksum();
        let udp_len = (f.len() - 34) as u16;
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        let pseudo = checksum::fold(checksum::pseudo_header_v4(SRC4, DST4, 17, udp_len.into()));
        f[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type,
            hdr_len: 42,
            gso_size,
            csum_start: 34,
            csum_offset: 6,
        };
        (f, vnet)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::wire::UdpPacket;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn collect(frame: &[u8], vnet: &VnetHdr) -> Result<Vec<Vec<u8>>, GsoError> {
        let mut out = Vec::new();
        let n = Segmenter::new().segment(frame, vnet, |h, b| {
            let mut v = h.to_vec();
            v.extend_from_slice(b);
            out.push(v);
            true
        })?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    /// Checks one TCP/IPv4 segment with etherparse and the wire views; returns (ip id,
    /// seq, fin, psh, cwr, payload).
    fn check_tcp4(seg: &[u8]) -> (u16, u32, bool, bool, bool, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(seg).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not ipv4")
        };
        let h = ip.header();
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        assert_eq!(usize::from(h.total_len()), seg.len() - 14);
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!("not tcp")
        };
        assert_eq!(
            t.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
            t.checksum()
        );
        let ours = Ipv4Packet::new_checked(&seg[14..]).unwrap();
        assert!(ours.verify_checksum());
        assert!(
            TcpPacket::new_checked(ours.payload())
                .unwrap()
                .verify_checksum(SRC4, DST4)
        );
        (
            h.identification(),
            t.sequence_number(),
            t.fin(),
            t.psh(),
            t.cwr(),
            t.payload().to_vec(),
        )
    }

    #[test]
    fn tcp4_super_frame_is_cut_at_mss() {
        let payload = pattern(4000);
        let (f, vnet) = tcp4_super(&payload, TcpFlags::ACK | TcpFlags::PSH, 1448);
        let segs = collect(&f, &vnet).unwrap();
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(s.len() <= 1514);
            let (id, seq, fin, psh, cwr, data) = check_tcp4(s);
            assert_eq!(id, 0x1c46 + i as u16);
            assert_eq!(seq, 0x01020304 + (i * 1448) as u32);
            assert!(!fin && !cwr);
            assert_eq!(psh, i == 2);
            assert_eq!(data.len(), if i < 2 { 1448 } else { 4000 - 2 * 1448 });
            // Options and the rest of the headers are copied unchanged.
            assert_eq!(&s[..14], &f[..14]);
            assert_eq!(&s[54..66], &f[54..66]);
            joined.extend_from_slice(&data);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn tcp_flags_fin_psh_last_cwr_first() {
        let payload = pattern(3000);
        let flags = TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN | TcpFlags::CWR | TcpFlags::ECE;
        let (f, mut vnet) = tcp4_super(&payload, flags, 1000);
        vnet.gso_type |= VnetHdr::GSO_ECN;
        let segs = collect(&f, &vnet).unwrap();
        assert_eq!(segs.len(), 3);
        let got: Vec<u8> = segs.iter().map(|s| s[47]).collect();
        assert_eq!(
            got,
            vec![
                TcpFlags::ACK | TcpFlags::CWR | TcpFlags::ECE,
                TcpFlags::ACK | TcpFlags::ECE,
                TcpFlags::ACK | TcpFlags::ECE | TcpFlags::PSH | TcpFlags::FIN,
            ]
        );
        for s in &segs {
            check_tcp4(s);
        }
    }

    // The checksum test proves itself: a frame whose partial checksum is not completed
    // fails verification; after segmentation (or completion) every frame verifies.
    #[test]
    fn partial_checksum_is_completed_and_uncompleted_is_caught() {
        let payload = pattern(3000);
        let (f, vnet) = tcp4_super(&payload, TcpFlags::ACK, 1448);
        let tcp_of = |frame: &[u8]| frame[34..].to_vec();
        // The super-frame as received: its checksum is only the pseudo-header sum.
        assert!(
            !TcpPacket::new_checked(&tcp_of(&f)[..])
                .unwrap()
                .verify_checksum(SRC4, DST4)
        );
        for s in collect(&f, &vnet).unwrap() {
            assert!(
                TcpPacket::new_checked(&tcp_of(&s)[..])
                    .unwrap()
                    .verify_checksum(SRC4, DST4)
            );
        }

        // A frame small enough not to need segmenting, with a partial checksum.
        let (small, mut vnet) = tcp4_super(&payload[..100], TcpFlags::ACK, 1448);
        vnet.gso_type = VnetHdr::GSO_NONE;
        assert!(
            !TcpPacket::new_checked(&tcp_of(&small)[..])
                .unwrap()
                .verify_checksum(SRC4, DST4)
        );
        let out = collect(&small, &vnet).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), small.len());
        assert!(
            TcpPacket::new_checked(&tcp_of(&out[0])[..])
                .unwrap()
                .verify_checksum(SRC4, DST4)
        );
        let e = SlicedPacket::from_ethernet(&out[0]).unwrap();
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (&e.net, &e.transport)
        else {
            panic!()
        };
        let h = ip.header();
        assert_eq!(
            t.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
            t.checksum()
        );

        // In place, on a Frame.
        let mut fr = Frame::new(4096);
        assert!(fr.load(&small));
        fr.vnet = vnet;
        complete_checksum(&mut fr).unwrap();
        assert_eq!(fr.data(), &out[0][..]);
        assert!(fr.vnet.is_plain());
        // A super-frame is refused in place.
        let (big, vnet) = tcp4_super(&payload, TcpFlags::ACK, 1448);
        assert!(fr.load(&big));
        fr.vnet = vnet;
        assert!(matches!(
            complete_checksum(&mut fr),
            Err(GsoError::Mismatch(_))
        ));
    }

    #[test]
    fn tcp_over_vlan_tagged_frame() {
        let payload = pattern(2000);
        let (f, vnet) = tcp4_super(&payload, TcpFlags::ACK, 1448);
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tagged.extend_from_slice(&f[12..]);
        let segs = collect(&tagged, &vnet).unwrap();
        assert_eq!(segs.len(), 2);
        for s in &segs {
            assert_eq!(&s[12..16], &[0x81, 0x00, 0x00, 0x0a]);
            let mut untagged = s[..12].to_vec();
            untagged.extend_from_slice(&s[16..]);
            check_tcp4(&untagged);
        }
    }

    #[test]
    fn tcp6_super_frame() {
        let mut f = tcp6_headers();
        let payload = pattern(3000);
        f.extend_from_slice(&payload);
        let plen = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV6,
            hdr_len: 86,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        let segs = collect(&f, &vnet).unwrap();
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let Some(NetSlice::Ipv6(ip)) = &p.net else {
                panic!()
            };
            let h = ip.header();
            assert_eq!(usize::from(h.payload_length()), s.len() - 54);
            let Some(TransportSlice::Tcp(t)) = &p.transport else {
                panic!()
            };
            assert_eq!(
                t.calc_checksum_ipv6(h.source(), h.destination()).unwrap(),
                t.checksum()
            );
            assert_eq!(t.sequence_number(), 0x01020304 + (i * 1428) as u32);
            joined.extend_from_slice(t.payload());
        }
        assert_eq!(joined, payload);
        // The IPv4 type on an IPv6 frame is refused.
        let mut wrong = vnet;
        wrong.gso_type = VnetHdr::GSO_TCPV4;
        assert!(matches!(collect(&f, &wrong), Err(GsoError::Mismatch(_))));
    }

    #[test]
    fn uso_makes_datagrams() {
        let payload = pattern(2500);
        let (f, vnet) = udp4_super(&payload, VnetHdr::GSO_UDP_L4, 1000);
        let segs = collect(&f, &vnet).unwrap();
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let Some(NetSlice::Ipv4(ip)) = &p.net else {
                panic!()
            };
            let h = ip.header();
            assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
            assert_eq!(h.identification(), 0x0100 + i as u16);
            let Some(TransportSlice::Udp(u)) = &p.transport else {
                panic!()
            };
            let want = if i < 2 { 1000 } else { 500 };
            assert_eq!(usize::from(u.length()), 8 + want);
            assert_eq!(
                u.to_header()
                    .calc_checksum_ipv4_raw(h.source(), h.destination(), u.payload())
                    .unwrap(),
                u.checksum()
            );
            let ours = Ipv4Packet::new_checked(&s[14..]).unwrap();
            assert!(
                UdpPacket::new_checked(ours.payload())
                    .unwrap()
                    .verify_checksum(SRC4, DST4)
            );
            joined.extend_from_slice(u.payload());
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn ufo_fragments_one_datagram() {
        let payload = pattern(3500);
        let (f, vnet) = udp4_super(&payload, VnetHdr::GSO_UDP, 1480);
        let frags = collect(&f, &vnet).unwrap();
        // 3508 bytes of IP payload in 1480-byte fragments.
        assert_eq!(frags.len(), 3);
        let mut dgram = Vec::new();
        for (i, s) in frags.iter().enumerate() {
            let ip = Ipv4Packet::new_checked(&s[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.ident(), 0x0100);
            assert_eq!(ip.more_fragments(), i < 2);
            assert_eq!(ip.frag_offset(), i * 1480);
            assert_eq!(ip.total_len(), s.len() - 14);
            let eh = etherparse::Ipv4HeaderSlice::from_slice(&s[14..]).unwrap();
            assert_eq!(eh.to_header().calc_header_checksum(), eh.header_checksum());
            dgram.extend_from_slice(ip.payload());
        }
        assert_eq!(dgram.len(), 3508);
        let u = UdpPacket::new_checked(&dgram[..]).unwrap();
        assert_eq!(u.len(), 3508);
        assert!(u.verify_checksum(SRC4, DST4));
        assert_eq!(u.payload(), &payload[..]);
        // Without the completed checksum, the reassembled datagram would not verify.
        let raw = UdpPacket::new_checked(&f[34..]).unwrap();
        assert!(!raw.verify_checksum(SRC4, DST4));
    }

    #[test]
    fn plain_frame_passes_through() {
        let (f, _) = tcp4_super(&pattern(10), TcpFlags::ACK, 1448);
        let mut seen = 0;
        let n = Segmenter::new()
            .segment(&f, &VnetHdr::default(), |h, b| {
                assert!(h.is_empty());
                assert_eq!(b, &f[..]);
                seen += 1;
                true
            })
            .unwrap();
        assert_eq!((n, seen), (1, 1));
    }

    #[test]
    fn emit_can_stop_early() {
        let (f, vnet) = tcp4_super(&pattern(5000), TcpFlags::ACK, 1000);
        let mut calls = 0;
        let n = Segmenter::new()
            .segment(&f, &vnet, |_, _| {
                calls += 1;
                calls < 2
            })
            .unwrap();
        assert_eq!((n, calls), (1, 2));
    }

    #[test]
    fn bad_metadata_is_refused() {
        let (f, vnet) = tcp4_super(&pattern(3000), TcpFlags::ACK, 1448);
        let with = |g: &dyn Fn(&mut VnetHdr)| {
            let mut v = vnet;
            g(&mut v);
            collect(&f, &v)
        };
        assert_eq!(with(&|v| v.gso_size = 0), Err(GsoError::BadGsoSize(0)));
        assert_eq!(
            with(&|v| v.gso_size = 2),
            Err(GsoError::TooManySegments(1500))
        );
        assert_eq!(with(&|v| v.gso_type = 9), Err(GsoError::UnknownType(9)));
        assert!(matches!(
            with(&|v| v.gso_type = VnetHdr::GSO_UDP_L4),
            Err(GsoError::Mismatch(_))
        ));
        assert!(matches!(
            with(&|v| {
                v.gso_type = VnetHdr::GSO_NONE;
                v.csum_start = 3060;
            }),
            Err(GsoError::BadCsumOffsets { .. })
        ));
        assert!(matches!(
            with(&|v| {
                v.gso_type = VnetHdr::GSO_NONE;
                v.csum_start = 1000;
            }),
            Err(GsoError::HeadersTooLong(_))
        ));
        // The IP header claims more than the frame holds.
        assert!(matches!(collect(&f[..2000], &vnet), Err(GsoError::Wire(_))));
        // Not IP at all.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(matches!(collect(&arp, &vnet), Err(GsoError::Mismatch(_))));
    }

    proptest::proptest! {
        #[test]
        fn hostile_frames_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            hdr in proptest::prelude::any::<[u8; 10]>(),
            ip_first in proptest::prelude::any::<bool>(),
        ) {
            let mut f = bytes;
            if ip_first && f.len() > 34 {
                // Steer most cases past the Ethernet and IP checks.
                f[12] = 0x08;
                f[13] = 0x00;
                f[14] = 0x45;
            }
            let mut vnet = VnetHdr::parse(&hdr).unwrap();
            vnet.gso_type %= 8;
            let mut seg = Segmenter::new();
            let _ = seg.segment(&f, &vnet, |h, b| h.len() + b.len() < 100_000);
            let mut fr = Frame::new(512);
            fr.load(&f);
            fr.vnet = vnet;
            let _ = complete_checksum(&mut fr);
        }
    }
}
