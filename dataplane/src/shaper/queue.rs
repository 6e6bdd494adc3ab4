//! Frames into a port held to its rate (`rate_in`) that its bucket could not pass yet.
//!
//! They wait here in arrival order and leave as the bucket refills, as in a token
//! bucket filter's queue (`tc tbf`): TCP into the container sees a slower link (delay)
//! rather than losses, and only what overflows the queue is dropped. A queue holds
//! about the bucket's depth in bytes (see [`queue_limit`]), so the delay it adds is
//! bounded by the burst's time at the rate (50 ms by default).
//!
//! A held frame is copied into a buffer from the worker's pool (the batch's buffers go
//! back to the next receive, and a flooded frame may be in several send lists). The
//! pool grows only while the queues reach a depth they had not reached before, and
//! keeps at most [`POOL_MAX`] buffers, so a warm queue allocates nothing per frame.

use std::collections::VecDeque;

use super::Rate;
use crate::port::VnetHdr;

/// The fewest bytes a port's queue takes, whatever its rate (a few super-frames).
pub const QUEUE_MIN: usize = 256 * 1024;
/// The most bytes a port's queue takes, whatever its burst.
pub const QUEUE_MAX: usize = 8 * 1024 * 1024;
/// The most recycled buffers a worker keeps.
pub const POOL_MAX: usize = 1024;

/// How many bytes of frames a port held to `rate` may have waiting: its burst, within
/// [`QUEUE_MIN`] and [`QUEUE_MAX`].
pub fn queue_limit(rate: Rate) -> usize {
    usize::try_from(rate.burst)
        .unwrap_or(QUEUE_MAX)
        .clamp(QUEUE_MIN, QUEUE_MAX)
}

/// A frame waiting for its port's bucket, with what the send needs of it.
pub struct HeldFrame {
    pub buf: Vec<u8>,
    /// The VLAN id to tag it with on the way out (0: untagged).
    pub vlan: u16,
    pub vnet: VnetHdr,
    pub domain: u16,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<HeldFrame>,
    bytes: usize,
}

/// A worker's queues, by port slot, and the time the earliest of them is due.
#[derive(Default)]
pub struct Held {
    queues: Vec<Queue>,
    /// The slots with frames waiting.
    active: Vec<u16>,
    due: Option<u64>,
    pool: Vec<Vec<u8>>,
}

impl Held {
    /// Sizes the table to hold `slot` (when a port is added, never while forwarding).
    pub fn fit(&mut self, slot: u16) {
        let n = usize::from(slot) + 1;
        if self.queues.len() < n {
            self.queues.resize_with(n, Queue::default);
        }
    }

    /// Whether frames into `slot` are waiting (new ones must wait behind them).
    #[inline]
    pub fn holds(&self, slot: u16) -> bool {
        self.queues
            .get(usize::from(slot))
            .is_some_and(|q| !q.frames.is_empty())
    }

    /// Queues a copy of `data` for `slot` when the queue has room for it within
    /// `limit` bytes; false (nothing queued) when it has not.
    pub fn push(
        &mut self,
        slot: u16,
        limit: usize,
        data: &[u8],
        meta: (u16, VnetHdr, u16),
    ) -> bool {
        self.fit(slot);
        let Some(q) = self.queues.get_mut(usize::from(slot)) else {
            return false;
        };
        if q.bytes.saturating_add(data.len()) > limit {
            return false;
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        let (vlan, vnet, domain) = meta;
        if q.frames.is_empty() {
            self.active.push(slot);
        }
        q.bytes += data.len();
        q.frames.push_back(HeldFrame {
            buf,
            vlan,
            vnet,
            domain,
        });
        true
    }

    /// The next frame waiting for `slot`; give its buffer back with [`Held::recycle`].
    pub fn pop(&mut self, slot: u16) -> Option<HeldFrame> {
        let q = self.queues.get_mut(usize::from(slot))?;
        let f = q.frames.pop_front()?;
        q.bytes = q.bytes.saturating_sub(f.buf.len());
        Some(f)
    }

    /// Takes back a buffer [`Held::pop`] gave out.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < POOL_MAX {
            self.pool.push(buf);
        }
    }

    /// The bytes waiting for `slot`.
    pub fn bytes(&self, slot: u16) -> usize {
        self.queues.get(usize::from(slot)).map_or(0, |q| q.bytes)
    }

    /// The slots with frames waiting, taken out (give the list back with
    /// [`Held::restore_active`], so its room is kept).
    pub fn take_active(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.active)
    }

    /// Gives back the list [`Held::take_active`] took, keeping the slots that still
    /// hold frames (and any that started waiting meanwhile).
    pub fn restore_active(&mut self, mut list: Vec<u16>) {
        list.retain(|&s| self.holds(s));
        for s in std::mem::take(&mut self.active) {
            if !list.contains(&s) {
                list.push(s);
            }
        }
        self.active = list;
    }

    /// The earliest time a queue is due, if any holds frames.
    pub fn next_due(&self) -> Option<u64> {
        self.due
    }

    /// Sets the due time to at most `at`.
    pub fn due_by(&mut self, at: u64) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Forgets the due time (before a pass over the queues sets it again).
    pub fn clear_due(&mut self) {
        self.due = None;
    }

    /// Drops every frame waiting for `slot` (its port is gone), returning how many.
    pub fn forget(&mut self, slot: u16) -> usize {
        let mut n = 0;
        while let Some(f) = self.pop(slot) {
            self.recycle(f.buf);
            n += 1;
        }
        self.active.retain(|&s| s != slot);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> (u16, VnetHdr, u16) {
        (0, VnetHdr::default(), 0)
    }

    #[test]
    fn frames_leave_in_order_and_the_queue_is_bounded_in_bytes() {
        let mut h = Held::default();
        h.fit(3);
        assert!(!h.holds(3));
        for i in 0..10u8 {
            assert!(h.push(3, 10_000, &[i; 1000], meta()));
        }
        assert!(!h.push(3, 10_500, &[0; 1000], meta()), "past the limit");
        assert_eq!(h.bytes(3), 10_000);
        assert_eq!(h.take_active(), vec![3]);
        for i in 0..10u8 {
            let f = h.pop(3).unwrap();
            assert_eq!(f.buf[0], i);
            h.recycle(f.buf);
        }
        assert!(h.pop(3).is_none());
        assert_eq!(h.bytes(3), 0);
    }

    #[test]
    fn buffers_are_recycled_and_active_slots_follow_the_queues() {
        let mut h = Held::default();
        assert!(h.push(1, QUEUE_MIN, &[1; 100], meta()));
        assert!(h.push(2, QUEUE_MIN, &[2; 100], meta()));
        let list = h.take_active();
        let f = h.pop(1).unwrap();
        let ptr = f.buf.as_ptr();
        h.recycle(f.buf);
        assert!(h.push(4, QUEUE_MIN, &[4; 50], meta()));
        h.restore_active(list);
        let mut active = h.take_active();
        active.sort();
        assert_eq!(active, vec![2, 4]);
        // Slot 4's frame took the buffer slot 1's gave back.
        assert_eq!(h.pop(4).unwrap().buf.as_ptr(), ptr);
        assert_eq!(h.forget(2), 1);
        assert!(!h.holds(2));
    }

    #[test]
    fn the_limit_follows_the_burst_within_bounds() {
        let r = |bits| Rate::from_bits(bits, None).unwrap();
        assert_eq!(queue_limit(r(8_000_000)), QUEUE_MIN);
        assert_eq!(queue_limit(r(100_000_000)), 625_000);
        assert_eq!(queue_limit(r(100_000_000_000)), QUEUE_MAX);
        let mut h = Held::default();
        h.due_by(50);
        h.due_by(70);
        assert_eq!(h.next_due(), Some(50));
        h.clear_due();
        assert_eq!(h.next_due(), None);
    }
}
