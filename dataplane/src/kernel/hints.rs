//! The pairs of kernel-path ports the bridge forwarded unicast between, from the
//! workers to the pair manager, lock-free.
//!
//! A fixed table of slots, each holding one pair or nothing. A worker that forwards a
//! frame from one kernel-path port to another writes the pair into the slot its hash
//! picks, and only when that slot holds something else (one load per such frame, a
//! store when it changes). The manager empties the table on each scan. Two pairs
//! sharing a slot take turns: the next frame of the one that lost writes it again.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::ids::PortId;

/// Slots in the table (a power of two).
const SLOTS: usize = 1024;

/// The pairs seen since the manager's last scan.
pub struct PairHints {
    slots: Box<[AtomicU32]>,
}

impl Default for PairHints {
    fn default() -> Self {
        PairHints {
            slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// A pair as a slot holds it: never 0 (an empty slot), since the gateway's port (0) is
/// never on the kernel path and the sending port is in the high half.
fn pack(from: PortId, to: PortId) -> u32 {
    (u32::from(from.0) << 16) | u32::from(to.0)
}

fn unpack(v: u32) -> (PortId, PortId) {
    (PortId((v >> 16) as u16), PortId(v as u16))
}

impl PairHints {
    /// Notes that a frame went from `from` to `to`.
    #[inline]
    pub fn note(&self, from: PortId, to: PortId) {
        let v = pack(from, to);
        // Fibonacci hashing of the pair onto the table.
        let i = (v.wrapping_mul(0x9E37_79B9) >> 22) as usize;
        if let Some(s) = self.slots.get(i & (SLOTS - 1))
            && s.load(Ordering::Relaxed) != v
        {
            s.store(v, Ordering::Relaxed);
        }
    }

    /// Empties the table, handing each pair found to `f`.
    pub fn drain(&self, mut f: impl FnMut(PortId, PortId)) {
        for s in self.slots.iter() {
            if s.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let v = s.swap(0, Ordering::Relaxed);
            if v != 0 {
                let (from, to) = unpack(v);
                f(from, to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_noted_are_drained_once() {
        let h = PairHints::default();
        h.note(PortId(3), PortId(4));
        h.note(PortId(3), PortId(4));
        h.note(PortId(4), PortId(3));
        let mut got = Vec::new();
        h.drain(|a, b| got.push((a.0, b.0)));
        got.sort_unstable();
        assert_eq!(got, vec![(3, 4), (4, 3)]);
        let mut again = 0;
        h.drain(|_, _| again += 1);
        assert_eq!(again, 0);
    }

    #[test]
    fn every_pair_of_a_large_network_is_seen_by_repeated_scans() {
        // 300 ports talking to their neighbours: collisions only delay a pair.
        let h = PairHints::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            for p in 2u16..302 {
                h.note(PortId(p), PortId(p + 1));
            }
            h.drain(|a, b| {
                seen.insert((a.0, b.0));
            });
        }
        assert_eq!(seen.len(), 300);
    }
}
