//! The packet uplink's shared state: who is who on the outside segment.
//!
//! The gateway thread answers ARP for vswitch's address there and learns the
//! neighbours (the next hop above all); workers read them per routed packet without a
//! lock: the next hop's MAC is one atomic, other neighbours a sorted list swapped whole
//! (one of each per address family).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::wire::MacAddr;

const KNOWN: u64 = 1 << 63;

/// The most neighbours remembered on the outside segment, per address family.
pub const MAX_NEIGHBOURS: usize = 4096;

/// The segment's neighbours of each address family.
#[derive(Default)]
pub struct Neighbours {
    v4: Family<Ipv4Addr>,
    /// IPv6 neighbours, learnt from neighbour discovery.
    pub v6: Family<Ipv6Addr>,
}

/// The neighbours of one address family: the next hop's MAC, the others' list.
pub struct Family<A> {
    next_hop: AtomicU64,
    map: arc_swap::ArcSwap<Vec<(A, MacAddr)>>,
}

impl<A> Default for Family<A> {
    fn default() -> Self {
        Family {
            next_hop: AtomicU64::new(0),
            map: arc_swap::ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl<A: Copy + Ord + Into<IpAddr>> Family<A> {
    /// The next hop's MAC, once resolved.
    #[inline]
    pub fn next_hop(&self) -> Option<MacAddr> {
        let v = self.next_hop.load(Relaxed);
        (v & KNOWN != 0).then(|| MacAddr::from_u64(v & 0xffff_ffff_ffff))
    }

    pub fn set_next_hop(&self, mac: Option<MacAddr>) {
        self.next_hop
            .store(mac.map_or(0, |m| m.to_u64() | KNOWN), Relaxed);
    }

    /// The MAC of an on-link neighbour.
    #[inline]
    pub fn lookup(&self, ip: A) -> Option<MacAddr> {
        let m = self.map.load();
        m.binary_search_by_key(&ip, |e| e.0)
            .ok()
            .and_then(|i| m.get(i))
            .map(|e| e.1)
    }

    /// Learns (or updates) a neighbour. Allocates; the gateway thread calls it.
    pub fn learn(&self, ip: A, mac: MacAddr) {
        if !mac.is_unicast() || mac.is_zero() || ip.into().is_unspecified() {
            return;
        }
        let cur = self.map.load();
        match cur.binary_search_by_key(&ip, |e| e.0) {
            Ok(i) if cur.get(i).map(|e| e.1) == Some(mac) => {}
            Ok(i) => {
                let mut v = (**cur).clone();
                if let Some(e) = v.get_mut(i) {
                    e.1 = mac;
                }
                self.map.store(Arc::new(v));
            }
            Err(i) if cur.len() < MAX_NEIGHBOURS => {
                let mut v = (**cur).clone();
                v.insert(i, (ip, mac));
                self.map.store(Arc::new(v));
            }
            Err(_) => {}
        }
    }

    pub fn clear(&self) {
        self.set_next_hop(None);
        self.map.store(Arc::new(Vec::new()));
    }
}

impl Neighbours {
    /// The IPv4 next hop's MAC, once resolved.
    #[inline]
    pub fn next_hop(&self) -> Option<MacAddr> {
        self.v4.next_hop()
    }

    pub fn set_next_hop(&self, mac: Option<MacAddr>) {
        self.v4.set_next_hop(mac);
    }

    /// The MAC of an on-link IPv4 neighbour.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.v4.lookup(ip)
    }

    /// Learns (or updates) an IPv4 neighbour.
    pub fn learn(&self, ip: Ipv4Addr, mac: MacAddr) {
        self.v4.learn(ip, mac);
    }

    pub fn clear(&self) {
        self.v4.clear();
        self.v6.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_and_answers() {
        let n = Neighbours::default();
        assert_eq!(n.next_hop(), None);
        let m = MacAddr([2, 0, 0, 0, 0, 9]);
        n.set_next_hop(Some(m));
        assert_eq!(n.next_hop(), Some(m));
        n.learn(Ipv4Addr::new(198, 51, 100, 9), m);
        n.learn(Ipv4Addr::new(198, 51, 100, 3), MacAddr([2, 0, 0, 0, 0, 3]));
        n.learn(Ipv4Addr::new(198, 51, 100, 4), MacAddr::BROADCAST);
        assert_eq!(n.lookup(Ipv4Addr::new(198, 51, 100, 9)), Some(m));
        assert_eq!(n.lookup(Ipv4Addr::new(198, 51, 100, 4)), None);
        n.learn(Ipv4Addr::new(198, 51, 100, 9), MacAddr([2, 0, 0, 0, 0, 8]));
        assert_eq!(
            n.lookup(Ipv4Addr::new(198, 51, 100, 9)),
            Some(MacAddr([2, 0, 0, 0, 0, 8]))
        );
        n.clear();
        assert_eq!(n.lookup(Ipv4Addr::new(198, 51, 100, 3)), None);
    }
}
