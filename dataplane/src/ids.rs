//! Typed identifiers the forwarding path passes around, so a port number cannot be
//! handed where a domain or a VLAN id is expected. Each is a `u16` underneath (tables
//! index by it) and costs nothing at run time.

use core::fmt;

/// A port's index in the switch (its slot in the snapshot and the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PortId(pub u16);

/// A broadcast domain (one network) inside the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct DomainId(pub u16);

/// An 802.1Q VLAN id, 1..=4094 (0 and 4095 are reserved and never a `VlanId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct VlanId(u16);

/// A port slot's generation: bumped each time the slot is given to a new port, so state
/// learned for the old occupant (FDB entries, flows) is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Generation(pub u16);

impl PortId {
    /// The index into per-port tables.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl DomainId {
    /// The index into per-domain tables.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl VlanId {
    /// The id, or None for 0, 4095 and anything wider than 12 bits.
    #[inline]
    pub const fn new(id: u16) -> Option<VlanId> {
        if id >= 1 && id <= 4094 {
            Some(VlanId(id))
        } else {
            None
        }
    }

    #[inline]
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl Generation {
    /// The generation after this one (wraps).
    #[inline]
    pub const fn next(self) -> Generation {
        Generation(self.0.wrapping_add(1))
    }
}

/// How a frame leaves a port. A tunnel encapsulation is one more variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encap {
    /// As it is (access ports, the untagged VLAN of a trunk).
    #[default]
    None,
    /// With an 802.1Q tag.
    Vlan(VlanId),
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.0)
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_ids_exclude_the_reserved_values() {
        assert_eq!(VlanId::new(0), None);
        assert_eq!(VlanId::new(4095), None);
        assert_eq!(VlanId::new(5000), None);
        assert_eq!(VlanId::new(1).map(VlanId::get), Some(1));
        assert_eq!(VlanId::new(4094).map(VlanId::get), Some(4094));
    }

    #[test]
    fn generations_wrap() {
        assert_eq!(Generation(u16::MAX).next(), Generation(0));
        assert_eq!(PortId(7).index(), 7);
    }
}
