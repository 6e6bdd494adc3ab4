//! Port capture (`vswitch ctl capture`): a copy of every frame a port receives or sends,
//! as the wire shows it, for a pcap file.
//!
//! While no capture runs, a worker pays one atomic pointer load per batch. While one
//! runs, each worker copies the frames of the captured port into its own ring
//! (single producer, single consumer; a frame that finds the ring full is not
//! captured), and the capture's reader drains the rings.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Captured {
    pub time: SystemTime,
    pub data: Vec<u8>,
}

/// Frames captured per worker that may wait to be read.
pub const CAPTURE_RING: usize = 4096;
/// Bytes of each frame kept (pcap snap length).
pub const SNAPLEN: usize = 65535;

/// A capture in progress: the port slot and one ring per worker.
pub struct CaptureTap {
    pub slot: u16,
    producers: Vec<Mutex<rtrb::Producer<Captured>>>,
}

impl CaptureTap {
    /// A capture of `slot` for `workers` workers, and the reading ends.
    pub fn new(slot: u16, workers: usize) -> (Arc<CaptureTap>, Vec<rtrb::Consumer<Captured>>) {
        let mut producers = Vec::new();
        let mut consumers = Vec::new();
        for _ in 0..workers.max(1) {
            let (p, c) = rtrb::RingBuffer::new(CAPTURE_RING);
            producers.push(Mutex::new(p));
            consumers.push(c);
        }
        (Arc::new(CaptureTap { slot, producers }), consumers)
    }

    /// Worker `worker` saw `frame` on the captured port.
    pub fn record(&self, worker: usize, frame: &[u8]) {
        let Some(p) = self.producers.get(worker) else {
            return;
        };
        let Ok(mut p) = p.lock() else { return };
        if p.is_full() {
            return;
        }
        let n = frame.len().min(SNAPLEN);
        let _ = p.push(Captured {
            time: SystemTime::now(),
            data: frame.get(..n).unwrap_or(frame).to_vec(),
        });
    }
}

/// Where workers look for a capture.
pub type CaptureSlot = Arc<arc_swap::ArcSwapOption<CaptureTap>>;

/// The reading end of one worker's capture ring.
pub type CaptureRing = rtrb::Consumer<Captured>;

/// The pcap file header: version 2.4, microsecond timestamps, Ethernet links.
pub fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    let fields: [&[u8]; 7] = [
        &0xa1b2_c3d4u32.to_le_bytes(), // magic
        &2u16.to_le_bytes(),           // major version
        &4u16.to_le_bytes(),           // minor version
        &0i32.to_le_bytes(),           // time zone
        &0u32.to_le_bytes(),           // timestamp accuracy
        &(SNAPLEN as u32).to_le_bytes(),
        &1u32.to_le_bytes(), // link type: Ethernet
    ];
    let mut at = 0;
    for f in fields {
        if let Some(d) = h.get_mut(at..at + f.len()) {
            d.copy_from_slice(f);
        }
        at += f.len();
    }
    h
}

/// One pcap record: header and frame bytes.
pub fn pcap_record(c: &Captured, out: &mut Vec<u8>) {
    let t = c
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let len = c.data.len() as u32;
    out.extend_from_slice(&(t.as_secs() as u32).to_le_bytes());
    out.extend_from_slice(&t.subsec_micros().to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&c.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_per_worker_and_pcap_layout() {
        let (tap, mut cons) = CaptureTap::new(5, 2);
        tap.record(1, &[1, 2, 3]);
        tap.record(7, &[9]); // no such worker: ignored
        assert!(cons[0].pop().is_err());
        let c = cons[1].pop().unwrap();
        assert_eq!(c.data, vec![1, 2, 3]);
        let mut out = pcap_header().to_vec();
        pcap_record(&c, &mut out);
        assert_eq!(out.len(), 24 + 16 + 3);
        assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&out[32..36], &3u32.to_le_bytes());
    }

    #[test]
    fn full_ring_drops_rather_than_blocks() {
        let (tap, cons) = CaptureTap::new(1, 1);
        for _ in 0..CAPTURE_RING + 10 {
            tap.record(0, &[0u8; 60]);
        }
        assert_eq!(cons[0].slots(), CAPTURE_RING);
    }
}
