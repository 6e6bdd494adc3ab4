//! What the gateway asks its I/O to do: the gateway decides, [`super::io`] performs.
//!
//! The gateway pushes [`Action`]s into an [`Actions`] queue the caller owns and drains.
//! Frame buffers go round: the gateway takes one from the queue's spares, the I/O hands
//! it to the ring towards the workers and gives the queue back a buffer the workers
//! returned, so the steady state allocates nothing.

use std::collections::VecDeque;

use crate::bridge::DropReason;
use crate::dns::Transport;
use crate::port::VnetHdr;
use crate::uplink::socket::TcpConnId;

/// One thing for the I/O to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a complete (untagged) Ethernet frame into `domain`; the bridge forwards it
    /// by destination MAC; `vnet` is plain but for a super-frame (the socket uplink's
    /// TCP toward a container whose port takes them).
    Send {
        domain: u16,
        /// The frame is `frame[..len]`: a buffer the socket uplink built a packet in
        /// keeps its length past the frame (reused, it needs no zeroing).
        frame: Vec<u8>,
        len: usize,
        vnet: VnetHdr,
    },
    /// Write a DNS answer to a client connected over TCP through the socket uplink.
    DnsTcpReply { conn: TcpConnId, bytes: Vec<u8> },
    /// Send a query to upstream resolver number `upstream`; if it cannot be sent, tell
    /// the gateway ([`super::Gateway::upstream_failed`]).
    Forward {
        upstream: usize,
        transport: Transport,
        id: u16,
        bytes: Vec<u8>,
    },
    /// Count a frame or flow refused on `port`.
    Drop { port: u16, reason: DropReason },
}

/// The queue of actions, and spare frame buffers.
#[derive(Debug, Default)]
pub struct Actions {
    queue: VecDeque<Action>,
    spare: Vec<Vec<u8>>,
}

/// Spare buffers kept at most.
const SPARES: usize = 64;

impl Actions {
    /// The next action, oldest first.
    pub fn pop(&mut self) -> Option<Action> {
        self.queue.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn push(&mut self, a: Action) {
        self.queue.push_back(a);
    }

    /// A cleared buffer to build a frame in.
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Frees the spare buffers (flows ended: a later burst makes new ones).
    pub fn shed(&mut self) {
        self.spare = Vec::new();
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
    }

    /// Keeps a buffer for a later frame (empty ones, never used, are not kept).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() > 0 && self.spare.len() < SPARES {
            self.spare.push(buf);
        }
    }

    /// Builds a frame with `build` (which reports whether it wrote one) and queues it
    /// for `domain`; returns whether it did.
    pub fn send_with(&mut self, domain: u16, build: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        self.send_offload_with(domain, VnetHdr::default(), build)
    }

    /// As [`Actions::send_with`], the frame carrying offload metadata `vnet`.
    pub fn send_offload_with(
        &mut self,
        domain: u16,
        vnet: VnetHdr,
        build: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> bool {
        let mut b = self.buffer();
        if build(&mut b) {
            self.push(Action::Send {
                domain,
                len: b.len(),
                frame: b,
                vnet,
            });
            true
        } else {
            self.recycle(b);
            false
        }
    }
}
