//! The gateway thread's fair queue: frames from the workers' rings wait here, one queue
//! per port, and are served by deficit round robin.
//!
//! Every wake-up the gateway thread moves what the rings hold into the queue of the
//! port each frame came in on (moving a frame is a pointer copy, so the rings stay
//! nearly empty however slow a frame is to handle), then serves one round: each port
//! with frames gets its quantum ([`QUANTUM`] frames), in turn. Between rounds the
//! thread polls its sockets and runs the control thread's jobs, so a `ctl` request
//! waits for at most one round, and a port flooding the gateway gets one quantum a
//! round like everyone else: it slows only itself.
//!
//! Work-conserving: nothing is cut while the queue has room, however many frames one
//! port sends. When the whole queue is full ([`FairQueue::new`]'s frames or bytes),
//! the newest frame of the longest queue is dropped (counted as `service_quota` on
//! its port): the port taking the most room loses, never a quiet one.

use std::collections::VecDeque;

use crate::bridge::{CounterTable, DropReason};
use crate::ids::PortId;
use crate::port::ring::RingFrame;

/// Frames a port is served in its turn.
pub const QUANTUM: usize = 64;

/// Frames the gateway holds waiting, for all ports, by default.
pub const DEFAULT_QUEUE_FRAMES: usize = 4096;

/// Bytes of buffers the gateway holds waiting, for all ports.
pub const QUEUE_BYTES: usize = 64 << 20;

/// Per-port queues served by deficit round robin.
pub struct FairQueue {
    queues: Vec<VecDeque<RingFrame>>,
    /// Ports with frames, in serving order (each at most once).
    active: VecDeque<u16>,
    frames: usize,
    bytes: usize,
    max_frames: usize,
}

/// A frame's weight against the byte budget: its buffer (which it holds).
fn weight(f: &RingFrame) -> usize {
    f.data.capacity()
}

impl FairQueue {
    /// A queue holding at most `max_frames` frames (and [`QUEUE_BYTES`]) in all.
    pub fn new(max_frames: usize) -> FairQueue {
        FairQueue {
            queues: Vec::new(),
            active: VecDeque::new(),
            frames: 0,
            bytes: 0,
            max_frames: max_frames.max(QUANTUM),
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames
    }

    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Queues a frame behind its port's. When the queue is full, the newest frame of
    /// the longest queue (maybe this one) is dropped, counted on its port, and its
    /// buffer handed to `recycle`.
    pub fn push(
        &mut self,
        f: RingFrame,
        counters: &CounterTable,
        recycle: &mut impl FnMut(Vec<u8>),
    ) {
        let slot = usize::from(f.port);
        if self.queues.len() <= slot {
            self.queues.resize_with(slot + 1, VecDeque::new);
        }
        while self.frames >= self.max_frames || self.bytes + weight(&f) > QUEUE_BYTES {
            let Some(fat) = self.longest() else { break };
            let mine = self.queues.get(slot).map_or(0, |q| q.len());
            let theirs = self.queues.get(usize::from(fat)).map_or(0, |q| q.len());
            if mine + 1 >= theirs {
                // This port is (about to be) the longest: its newest frame goes.
                counters.count_drop(PortId(f.port), DropReason::ServiceQuota, 1);
                recycle(f.data);
                return;
            }
            if let Some(old) = self
                .queues
                .get_mut(usize::from(fat))
                .and_then(|q| q.pop_back())
            {
                self.frames -= 1;
                self.bytes -= weight(&old);
                counters.count_drop(PortId(fat), DropReason::ServiceQuota, 1);
                recycle(old.data);
            }
        }
        let Some(q) = self.queues.get_mut(slot) else {
            recycle(f.data);
            return;
        };
        if q.is_empty() {
            self.active.push_back(f.port);
        }
        self.frames += 1;
        self.bytes += weight(&f);
        q.push_back(f);
    }

    /// The port with the most frames waiting (a scan of the active ports: only when
    /// the queue is full).
    fn longest(&self) -> Option<u16> {
        self.active
            .iter()
            .copied()
            .max_by_key(|&p| self.queues.get(usize::from(p)).map_or(0, |q| q.len()))
    }

    /// Serves one round: each port with frames, one after the other, is handed up to
    /// [`QUANTUM`] of them as one batch (the gateway finishes a port's batch with one
    /// smoltcp poll for all its frames). A port with frames left goes to the back of
    /// the line. Returns the frames served.
    pub fn round(&mut self, mut turn: impl FnMut(u16, &mut Turn<'_>)) -> usize {
        let mut served = 0;
        for _ in 0..self.active.len() {
            let Some(port) = self.active.pop_front() else {
                break;
            };
            let Some(q) = self.queues.get_mut(usize::from(port)) else {
                continue;
            };
            let mut t = Turn {
                q,
                left: QUANTUM,
                frames: &mut self.frames,
                bytes: &mut self.bytes,
            };
            turn(port, &mut t);
            served += QUANTUM - t.left;
            if !t.q.is_empty() {
                self.active.push_back(port);
            }
        }
        served
    }
}

/// One port's turn: its frames, at most a quantum of them.
pub struct Turn<'a> {
    q: &'a mut VecDeque<RingFrame>,
    left: usize,
    frames: &'a mut usize,
    bytes: &'a mut usize,
}

impl Iterator for Turn<'_> {
    type Item = RingFrame;
    fn next(&mut self) -> Option<RingFrame> {
        if self.left == 0 {
            return None;
        }
        let f = self.q.pop_front()?;
        self.left -= 1;
        *self.frames -= 1;
        *self.bytes -= weight(&f);
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(port: u16) -> RingFrame {
        let mut f = RingFrame::whole(vec![0u8; 60]);
        f.port = port;
        f
    }

    fn drain(q: &mut FairQueue) -> Vec<u16> {
        let mut order = Vec::new();
        while !q.is_empty() {
            q.round(|_, t| order.extend(t.map(|f| f.port)));
        }
        order
    }

    #[test]
    fn a_lone_burst_loses_nothing_up_to_the_whole_queue() {
        let counters = CounterTable::default();
        let mut q = FairQueue::new(1000);
        let mut dropped = 0;
        for _ in 0..1000 {
            q.push(frame(3), &counters, &mut |_| dropped += 1);
        }
        assert_eq!(dropped, 0);
        assert_eq!(drain(&mut q).len(), 1000);
        assert_eq!(counters.read(PortId(3)).total_drops(), 0);
    }

    #[test]
    fn a_full_queue_cuts_the_longest_and_keeps_the_quiet_port() {
        let counters = CounterTable::default();
        let mut q = FairQueue::new(256);
        let mut dropped = 0;
        for _ in 0..10_000 {
            q.push(frame(2), &counters, &mut |_| dropped += 1);
        }
        // Positive control: the flood was cut, on its own port.
        assert_eq!(dropped, 10_000 - 256);
        assert_eq!(counters.read(PortId(2)).total_drops(), 10_000 - 256);
        for _ in 0..10 {
            q.push(frame(5), &counters, &mut |_| dropped += 1);
        }
        assert_eq!(counters.read(PortId(5)).total_drops(), 0);
        // The quiet port is served in the first round, after one quantum of the flood.
        let mut first = Vec::new();
        q.round(|_, t| first.extend(t.map(|f| f.port)));
        assert_eq!(first.iter().filter(|&&p| p == 5).count(), 10);
        assert_eq!(first.iter().filter(|&&p| p == 2).count(), QUANTUM);
    }

    #[test]
    fn ports_take_turns_a_quantum_each() {
        let counters = CounterTable::default();
        let mut q = FairQueue::new(4096);
        for _ in 0..(3 * QUANTUM) {
            q.push(frame(1), &counters, &mut |_| {});
        }
        for _ in 0..QUANTUM {
            q.push(frame(4), &counters, &mut |_| {});
        }
        let mut turns = Vec::new();
        let mut order = Vec::new();
        while !q.is_empty() {
            q.round(|p, t| {
                turns.push(p);
                order.extend(t.map(|f| f.port));
            });
        }
        assert_eq!(turns, vec![1, 4, 1, 1]);
        assert_eq!(order.len(), 4 * QUANTUM);
    }
}
