//! Egress: the per-port send lists one batch leaves for the worker.

use crate::ids::{Encap, PortId};
use crate::port::{MAX_BATCH, TxSel};

/// Per-port send lists for one batch.
///
/// Invariant: `touched` holds each port with a non-empty queue at most once, so it
/// never holds more entries than there are queues, and its capacity is kept at least
/// the number of queues ([`Egress::fit`]): a push never allocates, whatever the number
/// of ports a batch reaches (a broadcast in a network of thousands).
pub struct Egress {
    queues: Vec<TxQueue>,
    touched: Vec<PortId>,
}

#[derive(Clone, Copy)]
struct TxQueue {
    len: u8,
    /// Listed in `touched` (also when a truncation emptied it again).
    listed: bool,
    sel: [TxSel; MAX_BATCH],
}

impl Default for TxQueue {
    fn default() -> Self {
        TxQueue {
            len: 0,
            listed: false,
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
        }
        // `reserve` counts from the length: capacity >= len + additional.
        let want = self.queues.len();
        if self.touched.capacity() < want {
            self.touched
                .reserve(want.saturating_sub(self.touched.len()));
        }
    }

    /// The port slots the lists have room for.
    pub fn slots(&self) -> usize {
        self.queues.len()
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
        if !q.listed {
            q.listed = true;
            // Within capacity by the invariant: no allocation.
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
    pub fn truncate(&mut self, port: PortId, n: usize) {
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
                q.listed = false;
            }
        }
        self.touched.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::VlanId;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// What a batch's send lists should be: for each port, its frames in push order,
    /// and the order ports were first given a frame.
    #[derive(Default)]
    struct Model {
        queues: BTreeMap<u16, Vec<TxSel>>,
        order: Vec<u16>,
    }

    impl Model {
        fn push(&mut self, port: u16, idx: usize, vlan: u16) {
            let q = self.queues.entry(port).or_default();
            if q.len() >= MAX_BATCH {
                return;
            }
            if !self.order.contains(&port) {
                self.order.push(port);
            }
            q.push(TxSel {
                idx: idx as u8,
                vlan,
            });
        }
        fn truncate(&mut self, port: u16, n: usize) {
            if let Some(q) = self.queues.get_mut(&port) {
                q.truncate(n);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16, usize, u16),
        /// Frame `idx` to ports `from..to` (a flood).
        Flood(u16, u16, usize),
        Truncate(u16, usize),
        Clear,
        /// The port table grows to this many slots (as `Worker::add_port` fits).
        Grow(u16),
    }

    fn op(slots: u16) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..slots, 0..MAX_BATCH, 0u16..3).prop_map(|(p, i, v)| Op::Push(p, i, v)),
            2 => (0..slots, 0..slots, 0..MAX_BATCH).prop_map(|(a, b, i)| Op::Flood(a.min(b), a.max(b), i)),
            1 => (0..slots, 0..MAX_BATCH + 2).prop_map(|(p, n)| Op::Truncate(p, n)),
            1 => Just(Op::Clear),
            1 => (1..=slots).prop_map(Op::Grow),
        ]
    }

    fn encap(v: u16) -> Encap {
        VlanId::new(v).map_or(Encap::None, Encap::Vlan)
    }

    fn check(e: &Egress, m: &Model, slots: usize) {
        let touched: Vec<u16> = e.touched().iter().map(|p| p.0).collect();
        let first_diff = touched.iter().zip(&m.order).position(|(a, b)| a != b);
        assert!(
            touched == m.order,
            "ports touched: {} listed, {} expected, first difference at {first_diff:?}",
            touched.len(),
            m.order.len()
        );
        for p in 0..slots as u16 {
            let want = m.queues.get(&p).map_or(&[][..], |q| &q[..]);
            let got = e.queue(PortId(p));
            assert_eq!(got.len(), want.len(), "port {p}'s list");
            for (g, w) in got.iter().zip(want) {
                assert_eq!((g.idx, g.vlan), (w.idx, w.vlan), "port {p}");
            }
        }
    }

    fn run(slots: u16, ops: &[Op]) {
        let mut e = Egress::default();
        let mut grown = 0usize;
        let mut m = Model::default();
        for o in ops {
            match *o {
                Op::Grow(k) => {
                    grown = grown.max(usize::from(k));
                    e.fit(grown);
                    continue;
                }
                Op::Clear => {
                    e.clear();
                    m = Model::default();
                    check(&e, &m, usize::from(slots));
                    continue;
                }
                _ => {}
            }
            // The pipeline fits the lists to the snapshot before every batch.
            e.fit(usize::from(slots));
            match *o {
                Op::Push(p, i, v) => {
                    e.push(PortId(p), i, encap(v));
                    m.push(p, i, tag_of(encap(v)));
                }
                Op::Flood(a, b, i) => {
                    for p in a..b {
                        e.push(PortId(p), i, Encap::None);
                        m.push(p, i, 0);
                    }
                }
                Op::Truncate(p, n) => {
                    e.truncate(PortId(p), n);
                    m.truncate(p, n);
                }
                Op::Clear | Op::Grow(_) => {}
            }
        }
        check(&e, &m, usize::from(slots));
        e.clear();
        check(&e, &Model::default(), usize::from(slots));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Against a plain model, for port counts across every power of two up to the
        /// daemon's limit.
        #[test]
        fn egress_matches_a_plain_model(
            (slots, ops) in (1u16..=4096).prop_flat_map(|s| (Just(s), proptest::collection::vec(op(s), 1..80)))
        ) {
            run(slots, &ops);
        }
    }

    /// The case that lost every port past the 64th: the lists grown one port at a time
    /// (as ports are attached), then a broadcast to all of them, batch after batch.
    #[test]
    fn a_flood_reaches_every_port_of_a_table_grown_one_at_a_time() {
        for slots in [63usize, 64, 65, 127, 128, 129, 1000, 4096] {
            let mut e = Egress::default();
            for k in 1..=slots {
                e.fit(k);
            }
            let cap = e.touched.capacity();
            for batch in 0..3 {
                for p in 0..slots as u16 {
                    e.push(PortId(p), batch, Encap::None);
                }
                assert_eq!(e.touched().len(), slots, "{slots} ports, batch {batch}");
                assert!((0..slots as u16).all(|p| e.queue(PortId(p)).len() == 1));
                e.clear();
                assert!((0..slots as u16).all(|p| e.queue(PortId(p)).is_empty()));
            }
            assert_eq!(e.touched.capacity(), cap, "no allocation while forwarding");
        }
    }
}
