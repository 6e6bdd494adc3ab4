//! Egress: the per-port send lists one batch leaves for the worker.

use crate::ids::{Encap, PortId};
use crate::port::{MAX_BATCH, TxSel};

/// Per-port send lists for one batch.
pub struct Egress {
    queues: Vec<TxQueue>,
    touched: Vec<PortId>,
}

#[derive(Clone, Copy)]
struct TxQueue {
    len: u8,
    sel: [TxSel; MAX_BATCH],
}

impl Default for TxQueue {
    fn default() -> Self {
        TxQueue {
            len: 0,
            sel: [TxSel::default(); MAX_BATCH],
        }
    }
}

impl Default for Egress {
    fn default() -> Self {
        Egress::new(64)
    }
}

/// The 802.1Q id a port pushes for `encap` (0: none), as [`TxSel`] carries it.
#[inline(always)]
fn tag_of(encap: Encap) -> u16 {
    match encap {
        Encap::None => 0,
        Encap::Vlan(v) => v.get(),
    }
}

impl Egress {
    /// Queues for `slots` port slots (grown by [`Egress::fit`] when ports are added).
    pub fn new(slots: usize) -> Egress {
        Egress {
            queues: vec![TxQueue::default(); slots],
            touched: Vec::with_capacity(slots),
        }
    }

    /// Makes room for `slots` ports. Allocates only when the port table grew.
    pub fn fit(&mut self, slots: usize) {
        if self.queues.len() < slots {
            self.queues.resize(slots, TxQueue::default());
            self.touched
                .reserve(slots.saturating_sub(self.touched.capacity()));
        }
    }

    /// Queues frame `idx` of the batch to leave `port` encapsulated as `encap`.
    #[inline(always)]
    pub(super) fn push(&mut self, port: PortId, idx: usize, encap: Encap) {
        let Some(q) = self.queues.get_mut(port.index()) else {
            return;
        };
        let n = usize::from(q.len);
        let Some(slot) = q.sel.get_mut(n) else {
            return;
        };
        *slot = TxSel {
            idx: idx as u8,
            vlan: tag_of(encap),
        };
        if n == 0 && self.touched.len() < self.touched.capacity() {
            self.touched.push(port);
        }
        q.len += 1;
    }

    /// The ports that have frames to send, in first-touched order.
    #[inline]
    pub fn touched(&self) -> &[PortId] {
        &self.touched
    }

    /// The frames port `port` should send.
    #[inline]
    pub fn queue(&self, port: PortId) -> &[TxSel] {
        self.queues
            .get(port.index())
            .and_then(|q| q.sel.get(..usize::from(q.len)))
            .unwrap_or(&[])
    }

    /// Keeps only the first `n` frames queued for `port`.
    #[inline]
    pub(super) fn truncate(&mut self, port: PortId, n: usize) {
        if let Some(q) = self.queues.get_mut(port.index()) {
            q.len = q.len.min(u8::try_from(n).unwrap_or(u8::MAX));
        }
    }

    /// Empties every queue for the next batch.
    #[inline]
    pub fn clear(&mut self) {
        for &p in &self.touched {
            if let Some(q) = self.queues.get_mut(p.index()) {
                q.len = 0;
            }
        }
        self.touched.clear();
    }
}
