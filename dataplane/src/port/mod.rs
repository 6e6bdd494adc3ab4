//! Frames, batches and the `Port` trait.
//!
//! A [`Batch`] owns up to [`MAX_BATCH`] preallocated [`Frame`] buffers. A port fills a
//! batch on receive; the pipeline decides per frame and leaves, per egress port, a list
//! of [`TxSel`] (frame index plus the VLAN tag to push); the worker hands each list to
//! its port's `send`. Frames are never copied between receive and send: a flooded frame
//! is selected by several ports.
//!
//! Every buffer keeps [`HEADROOM`] bytes in front of the frame so a VLAN tag can be
//! pushed by moving the 12 address bytes, and carries a [`VnetHdr`] so a TAP with
//! offloads can pass a 64 KB super-frame with its segmentation metadata.

pub mod coalesce;
pub mod gso;
pub mod memory;
pub mod ring;
pub mod stream;
pub mod tap;

pub use memory::MemoryPort;

use crate::wire::ethernet::HEADER_LEN;
use crate::wire::vlan::TAG_LEN;
use std::os::fd::RawFd;

/// Frames a port hands over (or takes) per call.
pub const MAX_BATCH: usize = 64;
/// Room in front of each frame for pushing up to two tags.
pub const HEADROOM: usize = 16;
/// A buffer for a standard frame with tags (1518 + 8, rounded up).
pub const STD_FRAME_CAP: usize = 2048 - HEADROOM;
/// A buffer for a 64 KB super-frame plus its Ethernet header and tags.
pub const SUPER_FRAME_CAP: usize = 65536 + 32;
/// The whole buffer of a frame that takes super-frames (headroom included).
pub const SUPER_FRAME_BUF: usize = HEADROOM + SUPER_FRAME_CAP;

pub use crate::wire::vlan::write_tagged;
pub use crate::wire::vnet::VnetHdr;

/// One frame buffer. Invariant: `start + len <= buf.len()` and `start <= HEADROOM`
/// (plus the room a pop gave back), so the accessors cannot panic.
pub struct Frame {
    buf: Vec<u8>,
    /// The largest frame this slot takes; `buf` holds at least `HEADROOM + cap` bytes
    /// (it may hold more after taking a longer buffer whole).
    cap: usize,
    start: usize,
    len: usize,
    /// Offload metadata the frame came with (a TAP with vnet headers), or plain.
    pub vnet: VnetHdr,
    /// The bridge domain (network) the frame belongs to, set by classification or by
    /// the gateway's ring port for frames the gateway sends.
    pub domain: u16,
    /// The port slot the frame came in on (set by the worker).
    pub in_port: u16,
    /// Why a routed frame goes to the gateway instead of out (packet uplink).
    pub punt: Punt,
}

/// Why the workers hand a routed frame to the gateway rather than send it out the
/// packet uplink: the gateway answers, or resolves, accordingly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Punt {
    /// Not punted: a frame for the gateway itself.
    #[default]
    None,
    /// Its TTL ran out: time exceeded (the frame is untranslated).
    TimeExceeded,
    /// Larger than the uplink's MTU with DF set: fragmentation needed (untranslated).
    TooBig,
    /// Translated, but its next hop is not resolved yet: ask for it (ARP).
    Unresolved,
    /// For the packet uplink's own address, and no flow or published port takes it
    /// (a ping, a closed port): the gateway answers as that address's owner
    /// (untranslated).
    UplinkAddress,
}

impl Frame {
    /// A buffer holding frames up to `cap` bytes (plus headroom).
    pub fn new(cap: usize) -> Frame {
        Frame {
            buf: vec![0u8; HEADROOM + cap],
            cap,
            start: HEADROOM,
            len: 0,
            vnet: VnetHdr::default(),
            domain: 0,
            in_port: 0,
            punt: Punt::None,
        }
    }

    /// The frame bytes, starting at the Ethernet header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.buf
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = self.start + self.len;
        self.buf.get_mut(self.start..end).unwrap_or(&mut [])
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest frame this buffer takes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The area a receive writes into (the frame's room past the headroom). Call
    /// [`Frame::set_received`] with the length read.
    #[inline]
    pub fn recv_area(&mut self) -> &mut [u8] {
        self.buf
            .get_mut(HEADROOM..HEADROOM + self.cap)
            .unwrap_or(&mut [])
    }

    /// Marks `len` bytes at the start of the receive area as the frame.
    #[inline]
    pub fn set_received(&mut self, len: usize) {
        self.start = HEADROOM;
        self.len = len.min(self.capacity());
        self.vnet = VnetHdr::default();
        self.domain = 0;
        self.punt = Punt::None;
    }

    /// Copies `bytes` in as the frame. False (and the frame emptied) when too long.
    #[inline]
    pub fn load(&mut self, bytes: &[u8]) -> bool {
        self.start = HEADROOM;
        self.vnet = VnetHdr::default();
        self.domain = 0;
        self.punt = Punt::None;
        if bytes.len() > self.cap {
            self.len = 0;
            return false;
        }
        match self.buf.get_mut(HEADROOM..HEADROOM + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = bytes.len();
                true
            }
            None => {
                self.len = 0;
                false
            }
        }
    }

    /// Takes `data` (a frame `data[..len]`, at least half as long as this buffer and no
    /// longer than a frame it takes, in a buffer with the capacity of it) as this
    /// frame's buffer instead of copying it in,
    /// and returns the buffer it replaces; gives `data` back when it does not qualify.
    /// The buffer never gets smaller, so a later receive into it has the room it had.
    #[inline]
    pub fn take_whole(&mut self, mut data: Vec<u8>, len: usize) -> Result<Vec<u8>, Vec<u8>> {
        let room = HEADROOM + self.cap;
        let too_long = len > self.cap || len > data.len();
        if len < room / 2 || too_long || data.capacity() < room {
            return Err(data);
        }
        // Zeroes only growth past the frame, if any.
        if data.len() < room {
            data.resize(room, 0);
        }
        let old = std::mem::replace(&mut self.buf, data);
        self.start = 0;
        self.len = len;
        self.vnet = VnetHdr::default();
        self.domain = 0;
        self.punt = Punt::None;
        Ok(old)
    }

    /// Gives this frame's buffer away for `other`, which must be at least as long (a
    /// later receive keeps its room); returns the buffer with where the frame starts
    /// and ends in it, and leaves this frame empty. Gives `other` back when too short.
    #[inline]
    pub fn swap_out(&mut self, other: Vec<u8>) -> Result<(Vec<u8>, usize, usize), Vec<u8>> {
        if other.len() < HEADROOM + self.cap {
            return Err(other);
        }
        let old = std::mem::replace(&mut self.buf, other);
        let (start, end) = (self.start, self.start + self.len);
        self.start = HEADROOM;
        self.len = 0;
        Ok((old, start, end))
    }

    /// Truncates the frame to `len` bytes (no-op when already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Removes the 4-byte tag that follows the MAC addresses by moving the addresses
    /// forward. False when the frame is too short to hold a tag and a header.
    #[inline]
    pub fn pop_tag(&mut self) -> bool {
        if self.len < HEADER_LEN + TAG_LEN {
            return false;
        }
        let s = self.start;
        self.buf.copy_within(s..s + 12, s + TAG_LEN);
        self.start += TAG_LEN;
        self.len -= TAG_LEN;
        self.shift_offloads(-(TAG_LEN as i32));
        true
    }

    /// Keeps the offload offsets (checksum start, header length) pointing at the same
    /// bytes after `delta` bytes were inserted (or removed) in the Ethernet header.
    #[inline]
    fn shift_offloads(&mut self, delta: i32) {
        if self.vnet.is_plain() {
            return;
        }
        let adj = |v: u16| (i32::from(v) + delta).clamp(0, i32::from(u16::MAX)) as u16;
        if self.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0 {
            self.vnet.csum_start = adj(self.vnet.csum_start);
        }
        if self.vnet.gso_type & !VnetHdr::GSO_ECN != VnetHdr::GSO_NONE {
            self.vnet.hdr_len = adj(self.vnet.hdr_len);
        }
    }

    /// Inserts a tag (TPID, TCI) after the MAC addresses, using the headroom. False when
    /// there is no room or the frame has no Ethernet header.
    #[inline]
    pub fn push_tag(&mut self, tpid: u16, tci: u16) -> bool {
        if self.start < TAG_LEN || self.len < 12 {
            return false;
        }
        let s = self.start;
        self.buf.copy_within(s..s + 12, s - TAG_LEN);
        self.start -= TAG_LEN;
        self.len += TAG_LEN;
        let t = self.start + 12;
        if let Some(dst) = self.buf.get_mut(t..t + 4) {
            dst[..2].copy_from_slice(&tpid.to_be_bytes());
            dst[2..].copy_from_slice(&tci.to_be_bytes());
        }
        self.shift_offloads(TAG_LEN as i32);
        true
    }
}

/// A set of frame buffers filled by one receive.
pub struct Batch {
    frames: Box<[Frame]>,
    len: usize,
    /// How many buffers a receive may fill (all but for a port held to a rate).
    limit: usize,
}

impl Batch {
    /// `n` buffers (at most [`MAX_BATCH`]) of `frame_cap` bytes each.
    pub fn new(n: usize, frame_cap: usize) -> Batch {
        let n = n.clamp(1, MAX_BATCH);
        Batch {
            frames: (0..n).map(|_| Frame::new(frame_cap)).collect(),
            len: 0,
            limit: n,
        }
    }
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The frames a receive may fill.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.limit
    }
    /// Lets the next receives fill at most `n` frames (1 to all of them).
    #[inline]
    pub fn set_limit(&mut self, n: usize) {
        self.limit = n.clamp(1, self.frames.len());
    }
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// The filled frames.
    #[inline]
    pub fn frames(&self) -> &[Frame] {
        self.frames.get(..self.len).unwrap_or(&[])
    }
    #[inline]
    pub fn frames_mut(&mut self) -> &mut [Frame] {
        let n = self.len;
        self.frames.get_mut(..n).unwrap_or(&mut [])
    }
    /// The buffers a receive may fill, from index 0; then call [`Batch::set_len`].
    #[inline]
    pub fn slots_mut(&mut self) -> &mut [Frame] {
        let n = self.limit;
        self.frames.get_mut(..n).unwrap_or(&mut [])
    }
    #[inline]
    pub fn set_len(&mut self, n: usize) {
        self.len = n.min(self.frames.len());
    }
    /// Frame `i` of the filled ones.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&Frame> {
        self.frames().get(i)
    }
    /// Appends a copy of `bytes` (for the slow path and tests). False when full or too long.
    pub fn push(&mut self, bytes: &[u8], domain: u16) -> bool {
        let Some(f) = self.frames.get_mut(self.len) else {
            return false;
        };
        if !f.load(bytes) {
            return false;
        }
        f.domain = domain;
        self.len += 1;
        true
    }
}

/// One frame selected for sending: its index in the batch and the VLAN id to tag it
/// with on the way out (0: untagged). The pipeline decides an [`Encap`] per frame and
/// hands ports this form of it; an encapsulation beyond a tag (a tunnel) adds a field.
///
/// [`Encap`]: crate::ids::Encap
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxSel {
    pub idx: u8,
    pub vlan: u16,
}

/// What a port can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCaps {
    /// Takes super-frames with partial checksums and segmentation metadata.
    pub offloads: bool,
    /// The largest frame it takes (Ethernet header included, no vnet header).
    pub max_frame: usize,
}

impl Default for PortCaps {
    fn default() -> Self {
        PortCaps {
            offloads: false,
            max_frame: 1518,
        }
    }
}

/// Why a port operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port {port}: {source}")]
    Io {
        port: String,
        #[source]
        source: std::io::Error,
    },
    #[error("port {0} is gone (its device was removed)")]
    Gone(String),
}

/// What a port with offloads counted of its super-frames since it was opened (cumulative;
/// its worker copies them into its counter table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadCounts {
    /// Frames received with segmentation metadata (super-frames).
    pub rx_super: u64,
    /// Super-frames handed to the kernel as they are (with their segmentation metadata),
    /// merged datagrams included.
    pub tx_super: u64,
    /// Frames written on behalf of super-frames segmented in software.
    pub tx_sw_segments: u64,
    /// Datagrams written merged with others of their flow.
    pub tx_udp_merged: u64,
    /// Merged writes the kernel refused.
    pub tx_merge_refused: u64,
}

impl OffloadCounts {
    pub fn add(&mut self, o: &OffloadCounts) {
        self.rx_super += o.rx_super;
        self.tx_super += o.tx_super;
        self.tx_sw_segments += o.tx_sw_segments;
        self.tx_udp_merged += o.tx_udp_merged;
        self.tx_merge_refused += o.tx_merge_refused;
    }
}

/// What a port with a peer that connects (a VM's stream socket) counted of it since it
/// was opened (cumulative; its receiving worker copies them into its counter table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Connections taken (the first, and each reconnection).
    pub connects: u64,
    /// Peers cut off for what they sent: a length over the port's frame limit, or
    /// bytes that are no frame.
    pub cut_off: u64,
}

impl PeerCounts {
    pub fn add(&mut self, o: &PeerCounts) {
        self.connects += o.connects;
        self.cut_off += o.cut_off;
    }
}

/// A source and sink of frames. Ports do I/O; the pipeline never does.
pub trait Port: Send {
    fn name(&self) -> &str;
    /// Fills `batch` from index 0 with what is waiting (at most its capacity) and sets
    /// its length. Ok(0) when nothing waits.
    fn recv(&mut self, batch: &mut Batch) -> Result<usize, PortError>;
    /// Sends the selected frames of `batch`, tagging each as its `TxSel` says. Returns
    /// how many went out; the rest were dropped (queue full).
    fn send(&mut self, batch: &Batch, sel: &[TxSel]) -> Result<usize, PortError>;
    /// As [`Port::send`], for the last port a batch goes to: nothing reads the frames
    /// after it, so the port may take their buffers instead of copying them (the
    /// gateway's ring does). Frames it took are left empty.
    fn send_last(&mut self, batch: &mut Batch, sel: &[TxSel]) -> Result<usize, PortError> {
        self.send(batch, sel)
    }
    fn caps(&self) -> PortCaps {
        PortCaps::default()
    }
    /// The descriptor to wait on for receive readiness, if the port has one.
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }
    /// Frames the port can still queue without dropping, when it knows (a ring).
    fn room(&self) -> Option<usize> {
        None
    }
    /// Its offload counters, when it has offloads to count (a TAP).
    fn offload_counts(&self) -> Option<OffloadCounts> {
        None
    }
    /// Its peer counters, when it has a peer that connects (a VM's socket).
    fn peer_counts(&self) -> Option<PeerCounts> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 18] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef,
    ];
    const TAGGED: [u8; 22] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, 0xde, 0xad,
        0xbe, 0xef,
    ];

    #[test]
    fn push_and_pop_tag() {
        let mut f = Frame::new(64);
        assert!(f.load(&UNTAGGED));
        assert!(f.push_tag(0x8100, 10));
        assert_eq!(f.data(), &TAGGED);
        assert!(f.pop_tag());
        assert_eq!(f.data(), &UNTAGGED);
        // Two pushes fit in the headroom, five do not.
        assert!(f.push_tag(0x8100, 1));
        assert!(f.push_tag(0x88a8, 2));
        assert!(f.push_tag(0x88a8, 3));
        assert!(f.push_tag(0x88a8, 4));
        assert!(!f.push_tag(0x88a8, 5));
    }

    #[test]
    fn tags_keep_offload_offsets_on_the_same_bytes() {
        let mut f = Frame::new(64);
        assert!(f.load(&TAGGED));
        f.vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 58,
            gso_size: 1448,
            csum_start: 38,
            csum_offset: 16,
        };
        assert!(f.pop_tag());
        assert_eq!((f.vnet.csum_start, f.vnet.hdr_len), (34, 54));
        assert!(f.push_tag(0x8100, 10));
        assert_eq!((f.vnet.csum_start, f.vnet.hdr_len), (38, 58));
        // Plain frames carry no offsets to move.
        let mut g = Frame::new(64);
        assert!(g.load(&TAGGED));
        assert!(g.pop_tag());
        assert_eq!(g.vnet, VnetHdr::default());
    }

    #[test]
    fn pop_refuses_short_frames() {
        let mut f = Frame::new(64);
        assert!(f.load(&UNTAGGED[..17]));
        assert!(!f.pop_tag());
        assert_eq!(f.len(), 17);
    }

    #[test]
    fn whole_buffers_change_places_and_never_shrink() {
        let mut f = Frame::new(STD_FRAME_CAP);
        let room = f.capacity() + HEADROOM;
        // Too short a frame, or a buffer without the room: refused, given back.
        assert!(f.take_whole(vec![1u8; room], room / 2 - 1).is_err());
        assert!(f.take_whole(vec![1u8; room / 2], room / 2).is_err());
        // Longer than a frame this slot takes (a load would refuse it too).
        assert!(f.take_whole(vec![1u8; 2 * room], room).is_err());
        // A frame in a longer buffer: taken; the old buffer comes back.
        let mut data = vec![7u8; room + 10];
        data[0] = 9;
        let old = f.take_whole(data, room / 2 + 1).unwrap();
        assert_eq!(old.len(), room);
        assert_eq!(f.len(), room / 2 + 1);
        assert_eq!(f.data()[0], 9);
        assert!(f.capacity() >= STD_FRAME_CAP);
        // Given away for a buffer at least as long, the frame is left empty.
        assert!(f.swap_out(vec![0u8; 10]).is_err());
        let (buf, start, end) = f.swap_out(vec![0u8; room + 10]).unwrap();
        assert_eq!((start, end, buf[0]), (0, room / 2 + 1, 9));
        assert!(f.is_empty());
        assert_eq!(
            f.recv_area().len(),
            STD_FRAME_CAP,
            "a longer buffer, the same room"
        );
    }

    #[test]
    fn load_refuses_oversize() {
        let mut f = Frame::new(16);
        assert!(!f.load(&UNTAGGED));
        assert!(f.is_empty());
    }

    #[test]
    fn write_tagged_matches_push() {
        let mut out = [0u8; 32];
        assert_eq!(write_tagged(&UNTAGGED, 10, &mut out), Some(22));
        assert_eq!(&out[..22], &TAGGED);
        assert_eq!(write_tagged(&UNTAGGED, 0, &mut out), Some(18));
        assert_eq!(write_tagged(&UNTAGGED, 10, &mut out[..21]), None);
    }

    #[test]
    fn vnet_header_round_trip() {
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(!h.is_plain());
        assert!(VnetHdr::default().is_plain());
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }

    #[test]
    fn batch_push_and_views() {
        let mut b = Batch::new(2, 64);
        assert!(b.push(&UNTAGGED, 3));
        assert!(b.push(&TAGGED, 4));
        assert!(!b.push(&UNTAGGED, 5));
        assert_eq!(b.len(), 2);
        assert_eq!(b.frames()[1].domain, 4);
        b.clear();
        assert!(b.frames().is_empty());
    }
}
