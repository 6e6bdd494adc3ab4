//! The service port: the bridge's door to the gateway.
//!
//! Frames the bridge sends to the gateway (ARP for it, IP to its MAC, broadcasts of its
//! domain) are copied into a single-producer single-consumer ring (rtrb) to the service
//! thread, which answers through a ring the other way; those answers are what this port
//! receives. Buffers travel back on return rings so the steady state allocates nothing.
//! When the service falls behind, frames are dropped and counted, never queued without
//! bound.

use super::{Batch, Port, PortCaps, PortError, TxSel, write_tagged};
use std::sync::Arc;

/// A frame on its way to or from the service thread.
#[derive(Debug, Default)]
pub struct ServiceFrame {
    /// The bridge domain (network) of the frame.
    pub domain: u16,
    /// To the service: the port slot it came in on. From the service: unused (0).
    pub port: u16,
    /// To the service: why a routed frame was handed over.
    pub punt: super::Punt,
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
pub const SERVICE_RING: usize = 1024;

/// The worker's end.
pub struct ServicePort {
    to_service: rtrb::Producer<ServiceFrame>,
    from_service: rtrb::Consumer<ServiceFrame>,
    /// Empty buffers coming back from the service.
    spare_in: rtrb::Consumer<Vec<u8>>,
    /// Buffers of consumed replies going back to the service.
    spare_out: rtrb::Producer<Vec<u8>>,
    wake_service: Arc<dyn Wake>,
    segmenter: super::gso::Segmenter,
    /// Frames dropped because the service ring was full.
    pub dropped: u64,
}

/// The service thread's end for one worker.
pub struct ServiceEnd {
    pub rx: rtrb::Consumer<ServiceFrame>,
    pub tx: rtrb::Producer<ServiceFrame>,
    /// Return buffers of frames the service consumed.
    pub spare_out: rtrb::Producer<Vec<u8>>,
    /// Buffers of replies the worker consumed, to reuse.
    pub spare_in: rtrb::Consumer<Vec<u8>>,
    wake_worker: Arc<dyn Wake>,
}

/// Creates the two ends. `wake_service` is called after the worker queues frames,
/// `wake_worker` after the service queues replies.
pub fn service_pair(
    wake_service: Arc<dyn Wake>,
    wake_worker: Arc<dyn Wake>,
) -> (ServicePort, ServiceEnd) {
    let (to_p, to_c) = rtrb::RingBuffer::new(SERVICE_RING);
    let (from_p, from_c) = rtrb::RingBuffer::new(SERVICE_RING);
    let (spare_svc_p, spare_svc_c) = rtrb::RingBuffer::new(SERVICE_RING);
    let (spare_wrk_p, spare_wrk_c) = rtrb::RingBuffer::new(SERVICE_RING);
    (
        ServicePort {
            to_service: to_p,
            from_service: from_c,
            spare_in: spare_svc_c,
            spare_out: spare_wrk_p,
            wake_service,
            segmenter: super::gso::Segmenter::new(),
            dropped: 0,
        },
        ServiceEnd {
            rx: to_c,
            tx: from_p,
            spare_out: spare_svc_p,
            spare_in: spare_wrk_c,
            wake_worker,
        },
    )
}

impl ServiceEnd {
    /// Takes the next frame from the worker.
    pub fn recv(&mut self) -> Option<ServiceFrame> {
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
        self.tx
            .push(ServiceFrame {
                domain,
                port: 0,
                punt: super::Punt::None,
                data,
            })
            .is_ok()
    }
    /// Wakes the worker after a run of sends.
    pub fn flush(&self) {
        self.wake_worker.wake();
    }
}

impl Port for ServicePort {
    fn name(&self) -> &str {
        "gateway"
    }

    fn recv(&mut self, batch: &mut Batch) -> Result<usize, PortError> {
        let mut n = 0;
        for slot in batch.slots_mut() {
            let Ok(f) = self.from_service.pop() else {
                break;
            };
            if slot.load(&f.data) {
                slot.domain = f.domain;
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
                let (to, spare, dropped) =
                    (&mut self.to_service, &mut self.spare_in, &mut self.dropped);
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
                    if to
                        .push(ServiceFrame {
                            domain,
                            port,
                            punt,
                            data: buf,
                        })
                        .is_ok()
                    {
                        n += 1;
                    }
                    true
                });
                continue;
            }
            if self.to_service.is_full() {
                self.dropped += 1;
                continue;
            }
            let mut buf = self.spare_in.pop().unwrap_or_default();
            buf.resize(f.len() + 4, 0);
            let Some(len) = write_tagged(f.data(), s.vlan, &mut buf) else {
                continue;
            };
            buf.truncate(len);
            // A TCP super-frame goes whole (the gateway's TCP takes 64 KB segments and
            // trusts local checksums); any other partial checksum is completed here.
            if gso == VnetHdr::GSO_NONE
                && f.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0
                && let Ok((pos, c)) =
                    super::gso::partial_checksum(&buf, f.vnet.csum_start, f.vnet.csum_offset)
                && let Some(dst) = buf.get_mut(pos..pos + 2)
            {
                dst.copy_from_slice(&c.to_be_bytes());
            }
            if self
                .to_service
                .push(ServiceFrame {
                    domain: f.domain,
                    port: f.in_port,
                    punt: f.punt,
                    data: buf,
                })
                .is_ok()
            {
                n += 1;
            }
        }
        if n > 0 {
            self.wake_service.wake();
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
        Some(self.to_service.slots())
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
        let (mut port, mut end) = service_pair(ws.clone(), ww.clone());
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
        // The reply's buffer came back to the service for reuse.
        assert!(end.buffer().capacity() >= 42);
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let (mut port, _end) = service_pair(Arc::new(NoWake), Arc::new(NoWake));
        let mut b = Batch::new(1, 2048);
        assert!(b.push(&[1u8; 60], 0));
        let sel = [TxSel { idx: 0, vlan: 0 }];
        for _ in 0..SERVICE_RING {
            assert_eq!(port.send(&b, &sel).unwrap(), 1);
        }
        assert_eq!(port.send(&b, &sel).unwrap(), 0);
        assert_eq!(port.dropped, 1);
    }
}
