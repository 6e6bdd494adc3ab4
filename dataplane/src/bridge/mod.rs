//! The bridge: forwarding database, VLAN sets, per-port counters.
//!
//! The forwarding decision itself lives in [`crate::pipeline`]; this module holds the
//! state it reads and writes.

pub mod counters;
pub mod fdb;

pub use counters::{CounterTable, DropReason, PortStats};
pub use fdb::{Fdb, FdbRef, FdbRow, Learned};

/// A set of 802.1Q VLAN ids (0..4096) as a bitmap.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet(Box<[u64; 64]>);

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet(Box::new([0; 64]))
    }
}

impl core::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl VlanSet {
    pub fn from_ids(ids: impl IntoIterator<Item = u16>) -> VlanSet {
        let mut s = VlanSet::default();
        for id in ids {
            s.insert(id);
        }
        s
    }
    #[inline]
    pub fn insert(&mut self, vid: u16) {
        let v = usize::from(vid & 0x0fff);
        if let Some(w) = self.0.get_mut(v / 64) {
            *w |= 1 << (v % 64);
        }
    }
    #[inline]
    pub fn contains(&self, vid: u16) -> bool {
        let v = usize::from(vid & 0x0fff);
        self.0.get(v / 64).is_some_and(|w| w & (1 << (v % 64)) != 0)
    }
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0u16..4096).filter(|v| self.contains(*v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_set() {
        let s = VlanSet::from_ids([1, 10, 4095]);
        assert!(s.contains(10) && s.contains(1) && s.contains(4095));
        assert!(!s.contains(0) && !s.contains(11));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 10, 4095]);
    }
}
