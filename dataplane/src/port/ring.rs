//! The gateway's ring port: the bridge's door to the gateway.
//!
//! Frames the bridge sends to the gateway (ARP for it, IP to its MAC, broadcasts of its
//! domain) are copied into a single-producer single-consumer ring (rtrb) to the gateway
//! thread, which answers through a ring the other way; those answers are what this port
//! receives. Buffers travel back on return rings so the steady state allocates nothing.
//! When the gateway falls behind, frames are dropped and counted, never queued without
//! bound. Each worker holds a [`RingPort`] at the gateway's slot; the gateway thread
//! holds the matching [`RingEnd`].

use super::{Batch, Port, PortCaps, PortError, TxSel, write_tagged};
use std::sync::Arc;

/// A frame on its way to or from the gateway thread.
#[derive(Debug, Default)]
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
    pub data: Vec<u8>,
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
}

/// Creates the two ends. `wake_gateway` is called after the worker queues frames,
/// `wake_worker` after the gateway queues replies.
pub fn ring_pair(wake_gateway: Arc<dyn Wake>, wake_worker: Arc<dyn Wake>) -> (RingPort, RingEnd) {
    let (to_p, to_c) = rtrb::RingBuffer::new(RING_SLOTS);
    let (from_p, from_c) = rtrb::RingBuffer::new(RING_SLOTS);
    let (spare_gw_p, spare_gw_c) = rtrb::RingBuffer::new(RING_SLOTS);
    let (spare_wrk_p, spare_wrk_c) = rtrb::RingBuffer::new(RING_SLOTS);
    (
        RingPort {
            to_gateway: to_p,
            from_gateway: from_c,
            spare_in: spare_gw_c,
            spare_out: spare_wrk_p,
            wake_gateway,
            segmenter: super::gso::Segmenter::new(),
            dropped: 0,
        },
        RingEnd {
            rx: to_c,
            tx: from_p,
            spare_out: spare_gw_p,
            spare_in: spare_wrk_c,
            wake_worker,
        },
    )
}

impl RingEnd {
    /// Takes the next frame from the worker.
    pub fn recv(&mut self) -> Option<RingFrame> {
        self.rx.pop().ok()
    }
    /// Hands a consumed frame's buffer back for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.spare_out.push(buf);
    }
    /// A buffer to build a reply in.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare_in.pop().unwrap_or_default()
    }
    /// Queues a reply into `domain`. False when the worker's ring is full (dropped).
    pub fn send(&mut self, domain: u16, data: Vec<u8>) -> bool {
        self.send_offload(domain, data, super::VnetHdr::default())
    }
    /// Queues a reply with offload metadata (a super-frame); as [`RingEnd::send`].
    pub fn send_offload(&mut self, domain: u16, data: Vec<u8>, vnet: super::VnetHdr) -> bool {
        self.tx
            .push(RingFrame {
                domain,
                port: 0,
                punt: super::Punt::None,
                vnet,
                data,
            })
            .is_ok()
    }
    /// Wakes the worker after a run of sends.
    pub fn flush(&self) {
        self.wake_worker.wake();
    }
}

impl RingPort {
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
        let mut n = 0;
        for slot in batch.slots_mut() {
            let Ok(f) = self.from_gateway.pop() else {
                break;
            };
            if slot.load(&f.data) {
                slot.domain = f.domain;
                slot.vnet = f.vnet;
                n += 1;
            }
            let mut buf = f.data;
            buf.clear();
            let _ = self.spare_out.push(buf);
        }
        batch.set_len(n);
        Ok(n)
    }

    fn send(&mut self, batch: &Batch, sel: &[TxSel]) -> Result<usize, PortError> {
        use super::VnetHdr;
        let mut n = 0;
        for s in sel {
            let Some(f) = batch.get(usize::from(s.idx)) else {
                continue;
            };
            let gso = f.vnet.gso_type & !VnetHdr::GSO_ECN;
            if gso != VnetHdr::GSO_NONE && gso != VnetHdr::GSO_TCPV4 && gso != VnetHdr::GSO_TCPV6 {
                // UDP super-frames: the gateway's protocols want datagrams as sent.
                n += self.push_segments(f);
            } else if self.push_whole(f, s.vlan, gso) {
                n += 1;
            }
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
        let mut rb = Batch::new(4, 2048);
        assert_eq!(port.recv(&mut rb).unwrap(), 1);
        assert_eq!(rb.frames()[0].domain, 5);
        assert_eq!(rb.frames()[0].data(), &[8u8; 42][..]);
        // The reply's buffer came back to the gateway for reuse.
        assert!(end.buffer().capacity() >= 42);
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
