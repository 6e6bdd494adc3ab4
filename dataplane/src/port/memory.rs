//! An in-memory port for tests and benchmarks.
//!
//! Receive hands out frames queued with [`MemoryPort::inject`], or, for benchmarks,
//! cycles endlessly through a fixed set (copying each into the batch as a TAP read
//! would). Send copies each selected frame as it would appear on the wire (tag pushed)
//! into a scratch buffer, and, when recording, keeps the copies for the test to read.

use super::{Batch, Port, PortCaps, PortError, TxSel, write_tagged};
use std::collections::VecDeque;

pub struct MemoryPort {
    name: String,
    queue: VecDeque<Vec<u8>>,
    cycle: Vec<Vec<u8>>,
    cycle_pos: usize,
    recording: bool,
    sent: Vec<Vec<u8>>,
    sink: Box<[u8]>,
    /// Frames and bytes sent through this port.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    caps: PortCaps,
}

impl MemoryPort {
    /// A port that records what it sends.
    pub fn new(name: impl Into<String>) -> MemoryPort {
        MemoryPort {
            name: name.into(),
            queue: VecDeque::new(),
            cycle: Vec::new(),
            cycle_pos: 0,
            recording: true,
            sent: Vec::new(),
            sink: vec![0u8; super::SUPER_FRAME_CAP + 8].into_boxed_slice(),
            tx_frames: 0,
            tx_bytes: 0,
            caps: PortCaps {
                offloads: false,
                max_frame: super::SUPER_FRAME_CAP,
            },
        }
    }

    /// A benchmark port: receive cycles through `frames` forever; send copies and counts
    /// but keeps nothing.
    pub fn cycling(name: impl Into<String>, frames: Vec<Vec<u8>>) -> MemoryPort {
        let mut p = MemoryPort::new(name);
        p.cycle = frames;
        p.recording = false;
        p
    }

    /// Queues a frame for the next receive.
    pub fn inject(&mut self, frame: &[u8]) {
        self.queue.push_back(frame.to_vec());
    }

    /// Takes the frames sent since the last call, as they went out on the wire.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }

    pub fn set_caps(&mut self, caps: PortCaps) {
        self.caps = caps;
    }
}

impl Port for MemoryPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv(&mut self, batch: &mut Batch) -> Result<usize, PortError> {
        let slots = batch.slots_mut();
        let mut n = 0;
        if !self.cycle.is_empty() {
            for slot in slots.iter_mut() {
                let Some(f) = self.cycle.get(self.cycle_pos) else {
                    break;
                };
                slot.load(f);
                self.cycle_pos += 1;
                if self.cycle_pos == self.cycle.len() {
                    self.cycle_pos = 0;
                }
                n += 1;
            }
        } else {
            for slot in slots.iter_mut() {
                let Some(f) = self.queue.pop_front() else {
                    break;
                };
                if slot.load(&f) {
                    n += 1;
                }
            }
        }
        batch.set_len(n);
        Ok(n)
    }

    fn send(&mut self, batch: &Batch, sel: &[TxSel]) -> Result<usize, PortError> {
        let mut n = 0;
        for s in sel {
            let Some(f) = batch.get(usize::from(s.idx)) else {
                continue;
            };
            let Some(len) = write_tagged(f.data(), s.vlan, &mut self.sink) else {
                continue;
            };
            self.tx_frames += 1;
            self.tx_bytes += len as u64;
            if self.recording {
                self.sent.push(self.sink.get(..len).unwrap_or(&[]).to_vec());
            }
            n += 1;
        }
        Ok(n)
    }

    fn caps(&self) -> PortCaps {
        self.caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_recv_send_record() {
        let mut p = MemoryPort::new("m0");
        p.inject(&[1u8; 60]);
        p.inject(&[2u8; 61]);
        let mut b = Batch::new(64, 2048);
        assert_eq!(p.recv(&mut b).unwrap(), 2);
        let sel = [TxSel { idx: 1, vlan: 0 }, TxSel { idx: 0, vlan: 7 }];
        assert_eq!(p.send(&b, &sel).unwrap(), 2);
        let sent = p.take_sent();
        assert_eq!(sent[0], vec![2u8; 61]);
        assert_eq!(sent[1].len(), 64);
        assert_eq!(&sent[1][12..16], &[0x81, 0x00, 0x00, 0x07]);
        assert_eq!(p.recv(&mut b).unwrap(), 0);
    }

    #[test]
    fn cycling_never_runs_dry() {
        let mut p = MemoryPort::cycling("m1", vec![vec![0u8; 64], vec![1u8; 64]]);
        let mut b = Batch::new(64, 2048);
        for _ in 0..3 {
            assert_eq!(p.recv(&mut b).unwrap(), 64);
        }
        assert_eq!(b.frames()[1].data(), &[1u8; 64][..]);
    }
}
