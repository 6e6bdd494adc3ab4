//! The gateway thread's fair queue: frames from the workers' rings wait here, one queue
//! per port, and are served by deficit round robin.
//!
//! Every wake-up the gateway thread moves what the rings hold into the queue of the
//! port each frame came in on (moving a frame is a pointer copy, so the rings stay
//! nearly empty however slow a frame is to handle), then serves one round: each port
//! with frames gets its quantum ([`QUANTUM`] units of cost), in turn, and is served
//! frames while its deficit covers them. A frame costs one unit, a TCP SYN opening a
//! connection [`SYN_COST`]: it asks the most work for its size (a connection's state
//! and a host connect, or, refused, an answer built and sent back), so a port
//! flooding SYNs gets a few of them a round where a port uploading gets a quantum of
//! its segments. Between rounds the thread polls its sockets and runs the control
//! thread's jobs, so a `ctl` request waits for at most one round, and a port flooding
//! the gateway gets one quantum a round like everyone else: it slows only itself.
//!
//! Work-conserving: nothing is cut while the queue has room, however many frames one
//! port sends. When the whole queue is full ([`FairQueue::new`]'s frames or bytes),
//! the newest frame of the longest queue is dropped (counted as `service_quota` on
//! its port): the port taking the most room loses, never a quiet one.

use std::collections::VecDeque;

use crate::bridge::{CounterTable, DropReason};
use crate::ids::PortId;
use crate::port::ring::RingFrame;

/// What a port is served in its turn, in units of cost: this many ordinary frames.
pub const QUANTUM: usize = 64;

/// The cost of a TCP SYN opening a connection, in units (an ordinary frame: one).
pub const SYN_COST: usize = 8;

/// Frames the gateway holds waiting, for all ports, by default.
pub const DEFAULT_QUEUE_FRAMES: usize = 4096;

/// Bytes of buffers the gateway holds waiting, for all ports.
pub const QUEUE_BYTES: usize = 64 << 20;

/// Per-port queues served by deficit round robin.
pub struct FairQueue {
    queues: Vec<VecDeque<RingFrame>>,
    /// Each port's deficit: the cost it may still be served (kept while it has frames
    /// left, zero once it has none).
    deficits: Vec<usize>,
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
            deficits: Vec::new(),
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
            self.deficits.resize(slot + 1, 0);
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

    /// Serves one round: each port with frames, one after the other, gets its quantum
    /// added to its deficit and is handed the frames the deficit covers as one batch
    /// (the gateway finishes a port's batch with one smoltcp poll for all its frames).
    /// A port with frames left goes to the back of the line, keeping what its deficit
    /// did not spend; one without starts again from nothing. Returns the frames served.
    pub fn round(&mut self, mut turn: impl FnMut(u16, &mut Turn<'_>)) -> usize {
        let mut served = 0;
        for _ in 0..self.active.len() {
            let Some(port) = self.active.pop_front() else {
                break;
            };
            let slot = usize::from(port);
            let (Some(q), Some(deficit)) = (self.queues.get_mut(slot), self.deficits.get_mut(slot))
            else {
                continue;
            };
            let mut t = Turn {
                q,
                // Capped: a turn not taken whole does not bank more than one more.
                deficit: (*deficit + QUANTUM).min(QUANTUM + SYN_COST),
                served: 0,
                frames: &mut self.frames,
                bytes: &mut self.bytes,
            };
            turn(port, &mut t);
            served += t.served;
            if t.q.is_empty() {
                *deficit = 0;
            } else {
                *deficit = t.deficit;
                self.active.push_back(port);
            }
        }
        served
    }
}

/// What serving a frame costs, in units of [`QUANTUM`].
fn cost(f: &RingFrame) -> usize {
    if crate::wire::tcp::opens_ipv4_connection(f.frame()) {
        SYN_COST
    } else {
        1
    }
}

/// One port's turn: its frames, as many as its deficit covers.
pub struct Turn<'a> {
    q: &'a mut VecDeque<RingFrame>,
    deficit: usize,
    served: usize,
    frames: &'a mut usize,
    bytes: &'a mut usize,
}

impl Iterator for Turn<'_> {
    type Item = RingFrame;
    fn next(&mut self) -> Option<RingFrame> {
        let c = cost(self.q.front()?);
        if c > self.deficit {
            return None;
        }
        let f = self.q.pop_front()?;
        self.deficit -= c;
        self.served += 1;
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

    /// A frame from `port` carrying a TCP segment with `flags`.
    fn tcp(port: u16, flags: u8) -> RingFrame {
        use crate::wire::{EtherType, EthernetFrame, IpProtocol, TcpPacket};
        let mut seg = vec![0u8; 20];
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_header_len(20);
        t.set_flags(flags);
        let (a, b) = ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap());
        let ip = crate::uplink::socket::build_ip(a, b, IpProtocol::Tcp, &seg).unwrap();
        let mut data = vec![0u8; 14];
        EthernetFrame::new_unchecked(&mut data[..]).set_ethertype(EtherType::IPV4);
        data.extend_from_slice(&ip);
        let mut f = RingFrame::whole(data);
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

    #[test]
    fn a_port_sending_syns_gets_fewer_frames_a_round_and_still_all_of_them() {
        use crate::wire::tcp::TcpFlags;
        let counters = CounterTable::default();
        let mut q = FairQueue::new(4096);
        for _ in 0..(4 * QUANTUM) {
            q.push(tcp(1, TcpFlags::SYN), &counters, &mut |_| {});
            q.push(tcp(2, TcpFlags::ACK), &counters, &mut |_| {});
        }
        let mut first = Vec::new();
        q.round(|_, t| first.extend(t.map(|f| f.port)));
        // The uploader's segments cost a unit each, the SYNs SYN_COST (a SYN-ACK from a
        // container is not opening anything: one unit).
        assert_eq!(first.iter().filter(|&&p| p == 2).count(), QUANTUM);
        assert_eq!(
            first.iter().filter(|&&p| p == 1).count(),
            QUANTUM / SYN_COST
        );
        // Work-conserving: the SYNs are all served, nothing dropped.
        let rest = drain(&mut q);
        assert_eq!(first.len() + rest.len(), 8 * QUANTUM);
        assert_eq!(counters.read(PortId(1)).total_drops(), 0);
        let mut ack = Vec::new();
        let mut q = FairQueue::new(4096);
        for _ in 0..QUANTUM {
            q.push(
                tcp(3, TcpFlags::SYN | TcpFlags::ACK),
                &counters,
                &mut |_| {},
            );
        }
        q.round(|_, t| ack.extend(t.map(|f| f.port)));
        assert_eq!(ack.len(), QUANTUM);
    }
}
