//! The gateway's ring port: the bridge's door to the gateway.
//!
//! Frames the bridge sends to the gateway (ARP for it, IP to its MAC, broadcasts of its
//! domain) are copied into a single-producer single-consumer ring (rtrb) to the gateway
//! thread, which answers through a ring the other way; those answers are what this port
//! receives. Buffers travel back on return rings so the steady state allocates nothing.
//! Once flows have ended the gateway frees the spares of both sides ([`RingEnd::shed`]).
//! When the gateway falls behind, frames are dropped and counted, never queued without
//! bound. Each worker holds a [`RingPort`] at the gateway's slot; the gateway thread
//! holds the matching [`RingEnd`].

use super::{Batch, Port, PortCaps, PortError, TxSel, write_tagged};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A frame on its way to or from the gateway thread.
#[derive(Debug)]
pub struct RingFrame {
    /// The bridge domain (network) of the frame.
    pub domain: u16,
    /// To the gateway: the port slot it came in on. From the gateway: unused (0).
    pub port: u16,
    /// To the gateway: why a routed frame was handed over.
    pub punt: super::Punt,
    /// From the gateway: offload metadata of a super-frame (the socket uplink's TCP
    /// toward a container), or plain.
    pub vnet: super::VnetHdr,
    /// The buffer; the frame is `data[start..end]` (a worker's frame buffer taken whole
    /// has room around it).
    pub data: Vec<u8>,
    pub start: usize,
    pub end: usize,
}

impl RingFrame {
    /// `data`, all of it, as a plain frame of domain 0 from port 0.
    pub fn whole(data: Vec<u8>) -> RingFrame {
        RingFrame {
            domain: 0,
            port: 0,
            punt: super::Punt::None,
            vnet: super::VnetHdr::default(),
            start: 0,
            end: data.len(),
            data,
        }
    }
    /// The frame's bytes.
    pub fn frame(&self) -> &[u8] {
        self.data.get(self.start..self.end).unwrap_or(&[])
    }
}

/// Wakes the thread at the other end of a ring (an eventfd, a waker, an unpark).
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// A waker that does nothing (polling consumers, benchmarks).
pub struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

/// Ring sizes: frames in flight each way.
pub const RING_SLOTS: usize = 1024;

/// The worker's end.
pub struct RingPort {
    to_gateway: rtrb::Producer<RingFrame>,
    from_gateway: rtrb::Consumer<RingFrame>,
    /// Empty buffers coming back from the gateway.
    spare_in: rtrb::Consumer<Vec<u8>>,
    /// Buffers of consumed replies going back to the gateway.
    spare_out: rtrb::Producer<Vec<u8>>,
    wake_gateway: Arc<dyn Wake>,
    segmenter: super::gso::Segmenter,
    /// Set by the gateway when flows ended: the spare buffers waiting here are freed
    /// on the next receive.
    shed: Arc<AtomicBool>,
    /// Frames dropped because the ring to the gateway was full.
    pub dropped: u64,
}

/// The gateway thread's end of one worker's rings.
pub struct RingEnd {
    pub rx: rtrb::Consumer<RingFrame>,
    pub tx: rtrb::Producer<RingFrame>,
    /// Return buffers of frames the gateway consumed.
    pub spare_out: rtrb::Producer<Vec<u8>>,
    /// Buffers of replies the worker consumed, to reuse.
    pub spare_in: rtrb::Consumer<Vec<u8>>,
    wake_worker: Arc<dyn Wake>,
    shed: Arc<AtomicBool>,
    /// Frames were queued since the worker was last woken.
    queued: bool,
}

/// Creates the two ends. `wake_gateway` is called after the worker queues frames,
/// `wake_worker` after the gateway queues replies.
pub fn ring_pair(wake_gateway: Arc<dyn Wake>, wake_worker: Arc<dyn Wake>) -> (RingPort, RingEnd) {
    let (to_p, to_c) = rtrb::RingBuffer::new(RING_SLOTS);
    let (from_p, from_c) = rtrb::RingBuffer::new(RING_SLOTS);
    let (spare_gw_p, spare_gw_c) = rtrb::RingBuffer::new(RING_SLOTS);
    let (spare_wrk_p, spare_wrk_c) = rtrb::RingBuffer::new(RING_SLOTS);
    let shed = Arc::new(AtomicBool::new(false));
    (
        RingPort {
            to_gateway: to_p,
            from_gateway: from_c,
            spare_in: spare_gw_c,
            spare_out: spare_wrk_p,
            wake_gateway,
            segmenter: super::gso::Segmenter::new(),
            shed: shed.clone(),
            dropped: 0,
        },
        RingEnd {
            rx: to_c,
            tx: from_p,
            spare_out: spare_gw_p,
            spare_in: spare_wrk_c,
            wake_worker,
            shed,
            queued: false,
        },
    )
}

impl RingEnd {
    /// Takes the next frame from the worker.
    pub fn recv(&mut self) -> Option<RingFrame> {
        self.rx.pop().ok()
    }
    /// Hands a consumed frame's buffer back for reuse. It keeps its length: a worker
    /// clears it before copying a frame in, or takes it whole for a frame buffer.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        let _ = self.spare_out.push(buf);
    }
    /// A buffer to build a reply in (not cleared: it may hold an old frame).
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare_in.pop().unwrap_or_default()
    }
    /// Queues a reply into `domain`. False when the worker's ring is full (dropped).
    pub fn send(&mut self, domain: u16, data: Vec<u8>) -> bool {
        self.send_offload(domain, data, super::VnetHdr::default())
    }
    /// Queues a reply with offload metadata (a super-frame); as [`RingEnd::send`].
    pub fn send_offload(&mut self, domain: u16, data: Vec<u8>, vnet: super::VnetHdr) -> bool {
        let len = data.len();
        self.send_frame(domain, data, len, vnet)
    }
    /// As [`RingEnd::send_offload`], the frame being `data[..len]` (the buffer keeps
    /// its length past it).
    pub fn send_frame(
        &mut self,
        domain: u16,
        data: Vec<u8>,
        len: usize,
        vnet: super::VnetHdr,
    ) -> bool {
        let sent = self
            .tx
            .push(RingFrame {
                domain,
                port: 0,
                punt: super::Punt::None,
                vnet,
                start: 0,
                end: len.min(data.len()),
                data,
            })
            .is_ok();
        self.queued |= sent;
        sent
    }
    /// Frees the spare buffers waiting on both sides once flows have ended: the ones
    /// here now, the worker's on its next receive (it is woken for it). Buffers in
    /// circulation are only ever added (a side that finds no spare makes one), so
    /// without this the most a burst ever needed stays allocated for good.
    pub fn shed(&mut self) {
        while self.spare_in.pop().is_ok() {}
        self.shed.store(true, Ordering::Relaxed);
        self.wake_worker.wake();
    }
    /// Wakes the worker after a run of sends (not when nothing was sent).
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.queued) {
            self.wake_worker.wake();
        }
    }
}

/// A super-frame of UDP (`gso`: the type without its ECN bit): the gateway's protocols
/// want its datagrams one by one.
fn udp_super(gso: u8) -> bool {
    use super::VnetHdr;
    gso != VnetHdr::GSO_NONE && gso != VnetHdr::GSO_TCPV4 && gso != VnetHdr::GSO_TCPV6
}

impl RingPort {
    /// Queues the frame of `s` in its own buffer, a spare one of at least that length
    /// taking its place in the batch: for an untagged TCP frame (super-frame or not)
    /// of half a super-frame or more, with such a spare at hand. Some(queued), or None
    /// when it is to be copied instead.
    fn take(&mut self, batch: &mut Batch, s: &TxSel) -> Option<bool> {
        use super::VnetHdr;
        let f = batch.frames_mut().get_mut(usize::from(s.idx))?;
        let gso = f.vnet.gso_type & !VnetHdr::GSO_ECN;
        let tcp = usize::from(f.vnet.csum_offset) == crate::wire::tcp::CHECKSUM_OFFSET;
        let plain = f.vnet.flags & VnetHdr::F_NEEDS_CSUM == 0 && gso == VnetHdr::GSO_NONE;
        let small = f.len() < super::SUPER_FRAME_BUF / 2;
        if s.vlan != 0 || small || !(tcp || plain) || udp_super(gso) {
            return None;
        }
        if self.to_gateway.is_full() {
            self.dropped += 1;
            return Some(false);
        }
        let room = f.capacity() + super::HEADROOM;
        // A spare that is (nearly) as long: little or nothing to zero.
        let fits = |b: &Vec<u8>| b.capacity() >= room && b.len() >= room / 2;
        if !self.spare_in.peek().is_ok_and(fits) {
            return None;
        }
        let (domain, port, punt) = (f.domain, f.in_port, f.punt);
        let mut spare = self.spare_in.pop().ok()?;
        // Only growth is zeroed: buffers in circulation keep their length.
        spare.resize(room, 0);
        let (data, start, end) = f.swap_out(spare).ok()?;
        let frame = RingFrame {
            domain,
            port,
            punt,
            vnet: VnetHdr::default(),
            data,
            start,
            end,
        };
        Some(self.to_gateway.push(frame).is_ok())
    }

    /// Queues a copy of the frame of `s` (its segments, for a UDP super-frame); returns
    /// how many frames went.
    fn push_sel(&mut self, batch: &Batch, s: &TxSel) -> usize {
        use super::VnetHdr;
        let Some(f) = batch.get(usize::from(s.idx)) else {
            return 0;
        };
        let gso = f.vnet.gso_type & !VnetHdr::GSO_ECN;
        if udp_super(gso) {
            self.push_segments(f)
        } else {
            usize::from(self.push_whole(f, s.vlan, gso))
        }
    }

    /// Queues each segment of a super-frame as its own frame; returns how many.
    fn push_segments(&mut self, f: &super::Frame) -> usize {
        use super::VnetHdr;
        let mut n = 0;
        let (to, spare, dropped) = (&mut self.to_gateway, &mut self.spare_in, &mut self.dropped);
        let (domain, port, punt) = (f.domain, f.in_port, f.punt);
        let _ = self.segmenter.segment(f.data(), &f.vnet, |head, body| {
            if to.is_full() {
                *dropped += 1;
                return false;
            }
            let mut buf = spare.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(head);
            buf.extend_from_slice(body);
            let frame = RingFrame {
                domain,
                port,
                punt,
                vnet: VnetHdr::default(),
                start: 0,
                end: buf.len(),
                data: buf,
            };
            if to.push(frame).is_ok() {
                n += 1;
            }
            true
        });
        n
    }

    /// Queues a frame whole (with its VLAN tag, if any); false when it was dropped.
    fn push_whole(&mut self, f: &super::Frame, vlan: u16, gso: u8) -> bool {
        use super::VnetHdr;
        if self.to_gateway.is_full() {
            self.dropped += 1;
            return false;
        }
        let mut buf = self.spare_in.pop().unwrap_or_default();
        buf.clear();
        if f.len() >= super::SUPER_FRAME_BUF / 2 {
            // Room for a later frame to be taken whole into this buffer.
            buf.reserve(super::SUPER_FRAME_BUF);
        }
        if vlan == 0 {
            // Untagged (the usual case): one copy, no zeroing first.
            buf.extend_from_slice(f.data());
        } else {
            buf.resize(f.len() + 4, 0);
            let Some(len) = write_tagged(f.data(), vlan, &mut buf) else {
                return false;
            };
            buf.truncate(len);
        }
        // TCP goes as it is, super-frame or not (the gateway's TCP takes 64 KB segments
        // and trusts local checksums: it never reads a TCP checksum); any other partial
        // checksum is completed here.
        let tcp_csum = usize::from(f.vnet.csum_offset) == crate::wire::tcp::CHECKSUM_OFFSET;
        if gso == VnetHdr::GSO_NONE
            && !tcp_csum
            && f.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0
            && let Ok((pos, c)) =
                super::gso::partial_checksum(&buf, f.vnet.csum_start, f.vnet.csum_offset)
            && let Some(dst) = buf.get_mut(pos..pos + 2)
        {
            dst.copy_from_slice(&c.to_be_bytes());
        }
        let frame = RingFrame {
            domain: f.domain,
            port: f.in_port,
            punt: f.punt,
            vnet: VnetHdr::default(),
            start: 0,
            end: buf.len(),
            data: buf,
        };
        self.to_gateway.push(frame).is_ok()
    }
}

impl Port for RingPort {
    fn name(&self) -> &str {
        "gateway"
    }

    fn recv(&mut self, batch: &mut Batch) -> Result<usize, PortError> {
        if self.shed.load(Ordering::Relaxed) && self.shed.swap(false, Ordering::Relaxed) {
            while self.spare_in.pop().is_ok() {}
        }
        let mut n = 0;
        let slots = batch.slots_mut();
        while let Some(slot) = slots.get_mut(n) {
            let Ok(f) = self.from_gateway.pop() else {
                break;
            };
            // A super-frame's buffer becomes the slot's (the slot's goes back in its
            // place); a small frame is copied. One too large for the slot is dropped.
            let back = if f.start == 0 {
                match slot.take_whole(f.data, f.end) {
                    Ok(old) => Some(old),
                    Err(data) => slot.load(data.get(..f.end).unwrap_or(&[])).then_some(data),
                }
            } else {
                slot.load(f.frame()).then_some(f.data)
            };
            let Some(back) = back else {
                continue;
            };
            slot.domain = f.domain;
            slot.vnet = f.vnet;
            n += 1;
            // Back with its length: whoever builds in it next clears it or, as the
            // socket uplink does, writes over it without zeroing it first.
            let _ = self.spare_out.push(back);
        }
        batch.set_len(n);
        Ok(n)
    }

    fn send(&mut self, batch: &Batch, sel: &[TxSel]) -> Result<usize, PortError> {
        let n = sel.iter().map(|s| self.push_sel(batch, s)).sum();
        if n > 0 {
            self.wake_gateway.wake();
        }
        Ok(n)
    }
    fn send_last(&mut self, batch: &mut Batch, sel: &[TxSel]) -> Result<usize, PortError> {
        let mut n = 0;
        for s in sel {
            n += match self.take(batch, s) {
                Some(queued) => usize::from(queued),
                None => self.push_sel(batch, s),
            };
        }
        if n > 0 {
            self.wake_gateway.wake();
        }
        Ok(n)
    }
    fn caps(&self) -> PortCaps {
        PortCaps {
            offloads: false,
            max_frame: super::SUPER_FRAME_CAP,
        }
    }

    fn room(&self) -> Option<usize> {
        Some(self.to_gateway.slots())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn frames_cross_both_ways_and_buffers_recycle() {
        let ws = Arc::new(Count(AtomicUsize::new(0)));
        let ww = Arc::new(Count(AtomicUsize::new(0)));
        let (mut port, mut end) = ring_pair(ws.clone(), ww.clone());
        let mut b = Batch::new(4, 2048);
        assert!(b.push(&[7u8; 60], 3));
        b.frames_mut()[0].in_port = 9;
        assert_eq!(port.send(&b, &[TxSel { idx: 0, vlan: 0 }]).unwrap(), 1);
        assert_eq!(ws.0.load(Ordering::Relaxed), 1);
        let f = end.recv().unwrap();
        assert_eq!((f.domain, f.port, f.data.len()), (3, 9, 60));
        end.recycle(f.data);
        let mut reply = end.buffer();
        reply.extend_from_slice(&[8u8; 42]);
        assert!(end.send(5, reply));
        end.flush();
        assert_eq!(ww.0.load(Ordering::Relaxed), 1);
        // Nothing sent since: the worker is left asleep.
        end.flush();
        assert_eq!(ww.0.load(Ordering::Relaxed), 1);
        let mut rb = Batch::new(4, 2048);
        assert_eq!(port.recv(&mut rb).unwrap(), 1);
        assert_eq!(rb.frames()[0].domain, 5);
        assert_eq!(rb.frames()[0].data(), &[8u8; 42][..]);
        // The reply's buffer came back to the gateway for reuse.
        assert!(end.buffer().capacity() >= 42);
    }

    #[test]
    fn shed_frees_the_spares_of_both_sides() {
        let ww = Arc::new(Count(AtomicUsize::new(0)));
        let (mut port, mut end) = ring_pair(Arc::new(NoWake), ww.clone());
        // Spares waiting on both sides.
        for _ in 0..3 {
            end.recycle(vec![0u8; 1000]);
            assert!(port.spare_out.push(vec![0u8; 1000]).is_ok());
        }
        // Positive control: they are there to be reused.
        assert_eq!((port.spare_in.slots(), end.spare_in.slots()), (3, 3));
        end.shed();
        assert_eq!(end.spare_in.slots(), 0, "the gateway's side, at once");
        assert_eq!(
            ww.0.load(Ordering::Relaxed),
            1,
            "the worker woken for its side"
        );
        let mut b = Batch::new(4, 2048);
        assert_eq!(port.recv(&mut b).unwrap(), 0);
        assert_eq!(
            port.spare_in.slots(),
            0,
            "the worker's side, on its next receive"
        );
        // Only once: later spares are kept.
        end.recycle(vec![0u8; 1000]);
        assert_eq!(port.recv(&mut b).unwrap(), 0);
        assert_eq!(port.spare_in.slots(), 1);
    }

    /// A frame whose transport checksum is left partial at `csum_offset` past byte 34.
    fn partial(csum_offset: u16) -> (Batch, u16) {
        use crate::port::VnetHdr;
        let mut b = Batch::new(1, 2048);
        let mut data = [0u8; 100];
        data[12] = 0x08;
        let field = 34 + usize::from(csum_offset);
        data[field] = 0x12;
        data[field + 1] = 0x34;
        data[90] = 0xab;
        assert!(b.push(&data, 1));
        b.frames_mut()[0].vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset,
            ..VnetHdr::default()
        };
        (b, 0x1234)
    }

    #[test]
    fn tcp_goes_with_its_partial_checksum_and_others_are_completed() {
        let (mut port, mut end) = ring_pair(Arc::new(NoWake), Arc::new(NoWake));
        let sel = [TxSel { idx: 0, vlan: 0 }];
        // TCP (checksum 16 bytes in): the gateway's TCP never reads it.
        let (b, sum) = partial(16);
        assert_eq!(port.send(&b, &sel).unwrap(), 1);
        let f = end.recv().unwrap();
        assert_eq!(&f.data[..], b.frames()[0].data());
        assert_eq!(u16::from_be_bytes([f.data[50], f.data[51]]), sum);
        // UDP (6 bytes in): completed.
        let (b, sum) = partial(6);
        assert_eq!(port.send(&b, &sel).unwrap(), 1);
        let f = end.recv().unwrap();
        assert_eq!(f.data.len(), 100);
        assert_ne!(u16::from_be_bytes([f.data[40], f.data[41]]), sum);
        // Tagged on the way: the tag is pushed, the rest kept.
        let (b, _) = partial(16);
        assert_eq!(port.send(&b, &[TxSel { idx: 0, vlan: 5 }]).unwrap(), 1);
        let f = end.recv().unwrap();
        assert_eq!(f.data.len(), 104);
        assert_eq!(&f.data[12..16], &[0x81, 0, 0, 5]);
        assert_eq!(&f.data[16..], &b.frames()[0].data()[12..]);
    }

    #[test]
    fn large_tcp_frames_go_in_their_own_buffer_and_others_are_copied() {
        use crate::port::{SUPER_FRAME_BUF, SUPER_FRAME_CAP, VnetHdr};
        let (mut port, mut end) = ring_pair(Arc::new(NoWake), Arc::new(NoWake));
        let mut b = Batch::new(3, SUPER_FRAME_CAP);
        let big: Vec<u8> = (0..40000u32).map(|i| i as u8).collect();
        for data in [&big[..], &big[..], &big[..100]] {
            assert!(b.push(data, 1));
        }
        for f in b.frames_mut() {
            f.vnet = VnetHdr {
                flags: VnetHdr::F_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 16,
                ..VnetHdr::default()
            };
        }
        // No spare as long as a frame buffer yet: copied.
        let sel = [TxSel { idx: 0, vlan: 0 }];
        assert_eq!(port.send_last(&mut b, &sel).unwrap(), 1);
        let f = end.recv().unwrap();
        assert_eq!((f.start, f.end), (0, big.len()));
        assert_eq!(b.frames()[0].len(), big.len(), "a copy leaves the frame");
        // With one: taken, the spare standing in for it.
        end.recycle(vec![0u8; SUPER_FRAME_BUF]);
        end.recycle(vec![0u8; SUPER_FRAME_BUF]);
        let sel = [TxSel { idx: 1, vlan: 0 }, TxSel { idx: 2, vlan: 0 }];
        assert_eq!(port.send_last(&mut b, &sel).unwrap(), 2);
        let f = end.recv().unwrap();
        assert_eq!(f.frame(), &big[..]);
        assert!(f.start > 0 && f.data.len() >= SUPER_FRAME_BUF);
        assert!(b.frames()[1].is_empty());
        assert!(b.frames_mut()[1].recv_area().len() >= SUPER_FRAME_CAP);
        // A small one is copied.
        let f = end.recv().unwrap();
        assert_eq!((f.start, f.frame()), (0, &big[..100]));
        // Tagged on the way: copied with its tag.
        let mut b = Batch::new(1, SUPER_FRAME_CAP);
        assert!(b.push(&big, 1));
        end.recycle(vec![0u8; SUPER_FRAME_BUF]);
        let sel = [TxSel { idx: 0, vlan: 7 }];
        assert_eq!(port.send_last(&mut b, &sel).unwrap(), 1);
        let f = end.recv().unwrap();
        assert_eq!(f.frame().len(), big.len() + 4);
        assert_eq!(b.frames()[0].len(), big.len());
    }

    #[test]
    fn a_reply_in_a_long_buffer_becomes_the_slot_buffer() {
        use crate::port::{SUPER_FRAME_BUF, SUPER_FRAME_CAP};
        let (mut port, mut end) = ring_pair(Arc::new(NoWake), Arc::new(NoWake));
        let mut data = vec![5u8; SUPER_FRAME_BUF + 8];
        data[0] = 1;
        assert!(end.send_frame(2, data, 50000, crate::port::VnetHdr::default()));
        assert!(end.send_frame(2, vec![6u8; 200], 60, crate::port::VnetHdr::default()));
        let mut rb = Batch::new(4, SUPER_FRAME_CAP);
        assert_eq!(port.recv(&mut rb).unwrap(), 2);
        assert_eq!(rb.frames()[0].len(), 50000);
        assert_eq!((rb.frames()[0].data()[0], rb.frames()[0].domain), (1, 2));
        assert_eq!(rb.frames()[1].data(), &[6u8; 60][..]);
        // The slot's own buffer went back, whole.
        assert_eq!(end.buffer().len(), SUPER_FRAME_BUF);
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let (mut port, _end) = ring_pair(Arc::new(NoWake), Arc::new(NoWake));
        let mut b = Batch::new(1, 2048);
        assert!(b.push(&[1u8; 60], 0));
        let sel = [TxSel { idx: 0, vlan: 0 }];
        for _ in 0..RING_SLOTS {
            assert_eq!(port.send(&b, &sel).unwrap(), 1);
        }
        assert_eq!(port.send(&b, &sel).unwrap(), 0);
        assert_eq!(port.dropped, 1);
    }
}
