//! The forwarding database: (bridge domain, MAC) -> port.
//!
//! A fixed-capacity open-addressing hash table of inline atomic slots, sized once for
//! the total MAC limit (at most half full), so it never resizes under traffic:
//!
//! - Readers (every worker, every frame) never lock or wait: a lookup hashes the key
//!   and reads slots until it finds the key or an empty slot. With the table at most
//!   half full that is one or two slots, one cache line: at a million MACs, one DRAM
//!   miss per lookup, which the pipeline hides by prefetching a batch's slots first.
//! - Learning a new MAC claims an empty slot with one compare-and-swap; a key only ever
//!   goes empty -> key -> tombstone, so two workers learning the same MAC at once meet
//!   at the same slot. Refreshing an age (at most once a second per MAC) and a MAC
//!   moving are single atomic stores into the slot's value.
//! - Aging (the gateway thread, once a second) and flushing (the control thread, when
//!   a port or network goes) turn entries into tombstones; when tombstones pile up the
//!   table is rebuilt beside the old one and swapped in (arc-swap). Sweeps and rebuilds
//!   take a mutex among themselves (never on the forwarding path), so two of them never
//!   interleave. Learns that race a rebuild are lost and simply happen again on the
//!   MAC's next frame.
//!
//! Limits: a per-port cap (the caller passes the port's) and a total cap. A full port
//! or table refuses new MACs and keeps the ones it has; frames from a refused MAC are
//! still forwarded, only not learned. Counts are kept per port and recounted on every
//! sweep, so drift from concurrent learning is corrected within a sweep.
//!
//! The key mixes in a per-process random seed, so addresses chosen to collide on one
//! machine do not collide on another, and probe chains are bounded.

use std::sync::atomic::{
    AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

use std::sync::{Arc, Mutex};

use crate::ids::{DomainId, Generation, PortId};
use crate::wire::MacAddr;

/// Port slots the FDB can name (12 bits in an entry).
pub const MAX_PORT_SLOTS: usize = 4096;

const EMPTY: u64 = 0;
const TOMB: u64 = u64::MAX;
const VALID: u64 = 1 << 63;
/// Slots a lookup or learn examines at most.
const MAX_PROBE: usize = 128;

/// An entry's value: valid (bit 63) | port (bits 48..60) | gen (32..48) | seen (0..32).
#[inline]
fn pack(port: u16, gen_: u16, seen: u32) -> u64 {
    VALID | (u64::from(port & 0x0fff) << 48) | (u64::from(gen_) << 32) | u64::from(seen)
}

#[inline]
fn unpack(v: u64) -> (u16, u16, u32) {
    (((v >> 48) & 0x0fff) as u16, (v >> 32) as u16, v as u32)
}

/// The key: domain in the top 16 bits, MAC in the low 48. Domain 0xffff is never a
/// real domain, so the tombstone (all ones) and empty (zero MAC) never collide with one.
#[inline]
fn key(domain: u16, mac: MacAddr) -> u64 {
    (u64::from(domain) << 48) | mac.to_u64()
}

/// What a learn call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port; nothing written.
    Known,
    /// Known on this port; its age was refreshed.
    Refreshed,
    /// A new address.
    New,
    /// The address moved here from another port (or another generation of it).
    Moved { from: PortId },
    /// Refused: the port or the table is at its limit.
    Refused,
}

/// One row of `fdb show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbRow {
    pub domain: DomainId,
    pub mac: MacAddr,
    pub port: PortId,
    pub generation: Generation,
    pub last_seen: u32,
}

struct Slot {
    key: AtomicU64,
    val: AtomicU64,
}

struct Table {
    slots: Box<[Slot]>,
    mask: usize,
    seed: u64,
    /// Slots not empty (live entries and tombstones).
    used: AtomicUsize,
    tombs: AtomicUsize,
}

impl Table {
    fn new(capacity: usize, seed: u64) -> Table {
        let cap = capacity.next_power_of_two().max(1024);
        Table {
            slots: (0..cap)
                .map(|_| Slot {
                    key: AtomicU64::new(EMPTY),
                    val: AtomicU64::new(0),
                })
                .collect(),
            mask: cap - 1,
            seed,
            used: AtomicUsize::new(0),
            tombs: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn home(&self, k: u64) -> usize {
        let mut h = (k ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 32;
        h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
        (h ^ (h >> 29)) as usize & self.mask
    }

    #[inline]
    fn slot(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i & self.mask)
    }

    #[inline]
    fn find(&self, k: u64) -> Option<&Slot> {
        let mut i = self.home(k);
        for _ in 0..MAX_PROBE {
            let s = self.slot(i)?;
            let sk = s.key.load(Acquire);
            if sk == k {
                return Some(s);
            }
            if sk == EMPTY {
                return None;
            }
            i = i.wrapping_add(1);
        }
        None
    }
}

pub struct Fdb {
    table: arc_swap::ArcSwap<Table>,
    per_port: Box<[AtomicU32]>,
    total: AtomicU32,
    total_limit: AtomicU32,
    /// MAC moves seen.
    pub moves: AtomicU64,
    /// New MACs refused by a limit.
    pub refused: AtomicU64,
    /// Held by sweeps and rebuilds (aging, flushing, a new limit), which come from
    /// different threads; the forwarding path never takes it.
    maintenance: Mutex<()>,
}

/// The default cap on learned MACs in total.
pub const DEFAULT_TOTAL_LIMIT: u32 = 65536;
/// The default cap per port.
pub const DEFAULT_PORT_LIMIT: u32 = 1024;

impl Default for Fdb {
    fn default() -> Self {
        Fdb::new(DEFAULT_TOTAL_LIMIT)
    }
}

fn random_seed() -> u64 {
    crate::random::u64()
}

fn capacity_for(limit: u32) -> usize {
    (limit as usize).saturating_mul(2)
}

impl Fdb {
    pub fn new(total_limit: u32) -> Fdb {
        Fdb {
            table: arc_swap::ArcSwap::from_pointee(Table::new(
                capacity_for(total_limit),
                random_seed(),
            )),
            per_port: (0..MAX_PORT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU32::new(0),
            total_limit: AtomicU32::new(total_limit),
            moves: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            maintenance: Mutex::new(()),
        }
    }

    /// Changes the total cap; the table is rebuilt when it needs more room.
    pub fn set_total_limit(&self, limit: u32) {
        let _one = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        self.total_limit.store(limit, Relaxed);
        if capacity_for(limit) > self.table.load().slots.len() {
            self.rebuild();
        }
    }

    pub fn total_limit(&self) -> u32 {
        self.total_limit.load(Relaxed)
    }

    /// Learned entries in total.
    pub fn len(&self) -> usize {
        self.total.load(Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Learned entries on `port`.
    pub fn port_count(&self, port: PortId) -> u32 {
        self.count(port.0)
    }

    #[inline]
    fn count(&self, port: u16) -> u32 {
        self.per_port
            .get(usize::from(port))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Pins the current table for a batch of lookups and learns.
    #[inline]
    pub fn pin(&self) -> FdbRef<'_> {
        FdbRef {
            fdb: self,
            table: self.table.load(),
        }
    }

    fn count_add(&self, port: u16) {
        if let Some(c) = self.per_port.get(usize::from(port)) {
            c.fetch_add(1, Relaxed);
        }
    }

    fn count_sub(&self, port: u16) {
        if let Some(c) = self.per_port.get(usize::from(port)) {
            let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        }
    }

    /// Removes entries not seen for more than `max_age` seconds at time `now`, and
    /// recounts. Returns how many were removed. The gateway thread calls it once a
    /// second.
    pub fn age(&self, now: u32, max_age: u32) -> usize {
        self.sweep(|_, _, _, seen| now.wrapping_sub(seen) > max_age)
    }

    /// Removes every entry (of one domain, or on one port, when given).
    pub fn flush(&self, domain: Option<DomainId>, port: Option<PortId>) -> usize {
        self.sweep(|d, p, _, _| domain.is_none_or(|x| x.0 == d) && port.is_none_or(|x| x.0 == p))
    }

    /// Tombstones the entries `dead(domain, port, gen, last_seen)` picks; recounts the
    /// rest; rebuilds the table when tombstones take more than an eighth of it.
    fn sweep(&self, dead: impl Fn(u16, u16, u16, u32) -> bool) -> usize {
        let _one = self.maintenance.lock().unwrap_or_else(|e| e.into_inner());
        let t = self.table.load();
        let mut counts = vec![0u32; MAX_PORT_SLOTS];
        let mut removed = 0;
        let mut kept = 0u32;
        for s in t.slots.iter() {
            let k = s.key.load(Acquire);
            if k == EMPTY || k == TOMB {
                continue;
            }
            let v = s.val.load(Acquire);
            if v & VALID == 0 {
                continue;
            }
            let (port, gen_, seen) = unpack(v);
            if dead((k >> 48) as u16, port, gen_, seen) {
                s.val.store(0, Release);
                s.key.store(TOMB, Release);
                t.tombs.fetch_add(1, Relaxed);
                removed += 1;
            } else {
                kept += 1;
                if let Some(c) = counts.get_mut(usize::from(port)) {
                    *c += 1;
                }
            }
        }
        for (slot, c) in self.per_port.iter().zip(counts) {
            slot.store(c, Relaxed);
        }
        self.total.store(kept, Relaxed);
        if t.tombs.load(Relaxed) > t.slots.len() / 8 || t.used.load(Relaxed) > t.slots.len() / 4 * 3
        {
            drop(t);
            self.rebuild();
        }
        removed
    }

    /// Copies the live entries into a fresh table (sized for the limit) and swaps it in.
    /// The caller holds `maintenance`.
    fn rebuild(&self) {
        let old = self.table.load_full();
        let new = Table::new(
            capacity_for(self.total_limit()).max(old.slots.len() / 2),
            random_seed(),
        );
        for s in old.slots.iter() {
            let k = s.key.load(Acquire);
            let v = s.val.load(Acquire);
            if k == EMPTY || k == TOMB || v & VALID == 0 {
                continue;
            }
            let mut i = new.home(k);
            for _ in 0..MAX_PROBE {
                let Some(d) = new.slot(i) else { break };
                if d.key.load(Relaxed) == EMPTY {
                    d.key.store(k, Relaxed);
                    d.val.store(v, Relaxed);
                    new.used.fetch_add(1, Relaxed);
                    break;
                }
                i = i.wrapping_add(1);
            }
        }
        self.table.store(Arc::new(new));
    }

    /// Every entry, for `fdb show`.
    pub fn rows(&self) -> Vec<FdbRow> {
        let t = self.table.load();
        let mut v: Vec<FdbRow> = t
            .slots
            .iter()
            .filter_map(|s| {
                let k = s.key.load(Acquire);
                let val = s.val.load(Acquire);
                if k == EMPTY || k == TOMB || val & VALID == 0 {
                    return None;
                }
                let (port, gen_, last_seen) = unpack(val);
                Some(FdbRow {
                    domain: DomainId((k >> 48) as u16),
                    mac: MacAddr::from_u64(k & 0xffff_ffff_ffff),
                    port: PortId(port),
                    generation: Generation(gen_),
                    last_seen,
                })
            })
            .collect();
        v.sort_by_key(|r| (r.domain, r.mac));
        v
    }
}

/// The FDB pinned for one batch.
pub struct FdbRef<'a> {
    fdb: &'a Fdb,
    table: arc_swap::Guard<Arc<Table>>,
}

impl FdbRef<'_> {
    /// Asks the CPU to bring the home slot of (domain, mac) into cache.
    #[inline(always)]
    pub fn prefetch(&self, domain: DomainId, mac: MacAddr) {
        let k = key(domain.0, mac);
        if let Some(s) = self.table.slot(self.table.home(k)) {
            prefetch_read(s as *const Slot);
        }
    }

    /// The port and port generation `mac` was learned on in `domain`.
    #[inline]
    pub fn lookup(&self, domain: DomainId, mac: MacAddr) -> Option<(PortId, Generation)> {
        let v = self.table.find(key(domain.0, mac))?.val.load(Acquire);
        if v & VALID == 0 {
            return None;
        }
        let (port, gen_, _) = unpack(v);
        Some((PortId(port), Generation(gen_)))
    }

    /// Records that `mac` was seen in `domain` on `port` (generation `gen_`) at `now`.
    #[inline]
    pub fn learn(
        &self,
        domain: DomainId,
        mac: MacAddr,
        port: PortId,
        gen_: Generation,
        now: u32,
        port_limit: u32,
    ) -> Learned {
        let (DomainId(domain), PortId(port), Generation(gen_)) = (domain, port, gen_);
        let f = self.fdb;
        if usize::from(port) >= MAX_PORT_SLOTS || mac.is_zero() || domain == u16::MAX {
            return Learned::Refused;
        }
        let t = &*self.table;
        let k = key(domain, mac);
        let mut i = t.home(k);
        for _ in 0..MAX_PROBE {
            let Some(s) = t.slot(i) else { break };
            let sk = s.key.load(Acquire);
            if sk == k {
                return self.update(s, port, gen_, now, port_limit);
            }
            if sk == EMPTY {
                if f.count(port) >= port_limit
                    || f.total.load(Relaxed) >= f.total_limit.load(Relaxed)
                {
                    f.refused.fetch_add(1, Relaxed);
                    return Learned::Refused;
                }
                match s.key.compare_exchange(EMPTY, k, Release, Acquire) {
                    Ok(_) => {
                        s.val.store(pack(port, gen_, now), Release);
                        t.used.fetch_add(1, Relaxed);
                        f.count_add(port);
                        f.total.fetch_add(1, Relaxed);
                        return Learned::New;
                    }
                    // Another worker learned this very MAC into this slot first.
                    Err(actual) if actual == k => {
                        return self.update(s, port, gen_, now, port_limit);
                    }
                    // Another MAC took the slot: keep probing.
                    Err(_) => {}
                }
            }
            i = i.wrapping_add(1);
        }
        f.refused.fetch_add(1, Relaxed);
        Learned::Refused
    }

    #[inline]
    fn update(&self, s: &Slot, port: u16, gen_: u16, now: u32, port_limit: u32) -> Learned {
        let f = self.fdb;
        let v = s.val.load(Acquire);
        let (p, g, seen) = unpack(v);
        if v & VALID != 0 && p == port && g == gen_ {
            if seen == now {
                return Learned::Known;
            }
            s.val.store(pack(port, gen_, now), Release);
            return Learned::Refreshed;
        }
        if v & VALID != 0 && p != port && f.count(port) >= port_limit {
            f.refused.fetch_add(1, Relaxed);
            return Learned::Refused;
        }
        s.val.store(pack(port, gen_, now), Release);
        if v & VALID == 0 {
            // The slot's first writer had not stored its value yet: ours counts as it.
            return Learned::Known;
        }
        if p != port {
            f.count_sub(p);
            f.count_add(port);
            f.moves.fetch_add(1, Relaxed);
        }
        Learned::Moved { from: PortId(p) }
    }
}

#[inline(always)]
fn prefetch_read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DomainId as D, Generation as G, PortId as P};

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learn_lookup_refresh() {
        let f = Fdb::default();
        let r = f.pin();
        assert_eq!(r.lookup(D(1), mac(1)), None);
        assert_eq!(r.learn(D(1), mac(1), P(5), G(0), 100, 1024), Learned::New);
        assert_eq!(r.lookup(D(1), mac(1)), Some((P(5), G(0))));
        assert_eq!(r.learn(D(1), mac(1), P(5), G(0), 100, 1024), Learned::Known);
        assert_eq!(
            r.learn(D(1), mac(1), P(5), G(0), 101, 1024),
            Learned::Refreshed
        );
        // Domains are separate key spaces.
        assert_eq!(r.lookup(D(2), mac(1)), None);
        assert_eq!(f.len(), 1);
        assert_eq!(f.port_count(P(5)), 1);
    }

    #[test]
    fn moves_are_counted_and_recounted() {
        let f = Fdb::default();
        let r = f.pin();
        r.learn(D(1), mac(1), P(5), G(0), 10, 1024);
        assert_eq!(
            r.learn(D(1), mac(1), P(6), G(0), 11, 1024),
            Learned::Moved { from: P(5) }
        );
        assert_eq!(r.lookup(D(1), mac(1)), Some((P(6), G(0))));
        assert_eq!(f.moves.load(Relaxed), 1);
        assert_eq!((f.port_count(P(5)), f.port_count(P(6))), (0, 1));
        // A new generation of the same port slot is a move too (port re-created).
        assert_eq!(
            r.learn(D(1), mac(1), P(6), G(1), 12, 1024),
            Learned::Moved { from: P(6) }
        );
        assert_eq!(f.moves.load(Relaxed), 1);
    }

    #[test]
    fn aging_with_injected_clock() {
        let f = Fdb::default();
        {
            let r = f.pin();
            r.learn(D(1), mac(1), P(5), G(0), 0, 1024);
            r.learn(D(1), mac(2), P(5), G(0), 200, 1024);
        }
        assert_eq!(f.age(300, 300), 0);
        assert_eq!(f.age(301, 300), 1);
        let r = f.pin();
        assert_eq!(r.lookup(D(1), mac(1)), None);
        assert_eq!(r.lookup(D(1), mac(2)), Some((P(5), G(0))));
        assert_eq!(f.port_count(P(5)), 1);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn per_port_limit_keeps_old_entries() {
        let f = Fdb::default();
        let r = f.pin();
        for i in 0..3 {
            assert_eq!(r.learn(D(1), mac(i), P(5), G(0), 0, 3), Learned::New);
        }
        assert_eq!(r.learn(D(1), mac(3), P(5), G(0), 0, 3), Learned::Refused);
        assert_eq!(r.lookup(D(1), mac(3)), None);
        for i in 0..3 {
            assert_eq!(r.lookup(D(1), mac(i)), Some((P(5), G(0))));
        }
        // Another port still learns.
        assert_eq!(r.learn(D(1), mac(3), P(6), G(0), 0, 3), Learned::New);
        // A move into a full port is refused; the entry stays where it was.
        assert_eq!(r.learn(D(1), mac(3), P(5), G(0), 1, 3), Learned::Refused);
        assert_eq!(r.lookup(D(1), mac(3)), Some((P(6), G(0))));
        assert_eq!(f.refused.load(Relaxed), 2);
    }

    #[test]
    fn total_limit() {
        let f = Fdb::new(2);
        let r = f.pin();
        assert_eq!(r.learn(D(1), mac(1), P(1), G(0), 0, 10), Learned::New);
        assert_eq!(r.learn(D(1), mac(2), P(2), G(0), 0, 10), Learned::New);
        assert_eq!(r.learn(D(1), mac(3), P(3), G(0), 0, 10), Learned::Refused);
        drop(r);
        assert_eq!(f.flush(None, Some(P(1))), 1);
        assert_eq!(f.pin().learn(D(1), mac(3), P(3), G(0), 0, 10), Learned::New);
    }

    #[test]
    fn flush_by_domain_and_rows() {
        let f = Fdb::default();
        {
            let r = f.pin();
            r.learn(D(1), mac(1), P(5), G(0), 7, 1024);
            r.learn(D(2), mac(1), P(6), G(0), 8, 1024);
        }
        let rows = f.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].domain, D(1));
        assert_eq!(rows[0].mac, mac(1));
        assert_eq!(rows[0].last_seen, 7);
        assert_eq!(f.flush(Some(D(2)), None), 1);
        assert_eq!(f.rows().len(), 1);
    }

    #[test]
    fn tombstones_are_compacted_and_live_entries_survive() {
        let f = Fdb::new(1024); // 2048 slots; rebuild past 256 tombstones
        {
            let r = f.pin();
            for i in 0..1000 {
                assert_eq!(r.learn(D(1), mac(i), P(2), G(0), 0, u32::MAX), Learned::New);
            }
            r.learn(D(1), mac(5000), P(3), G(0), 50, u32::MAX);
        }
        // Age out all but one: well past the rebuild threshold.
        assert_eq!(f.age(301, 300), 1000);
        let r = f.pin();
        assert_eq!(r.lookup(D(1), mac(5000)), Some((P(3), G(0))));
        for i in 0..1000 {
            assert_eq!(r.lookup(D(1), mac(i)), None);
        }
        // The table has room again.
        for i in 0..1000 {
            assert_eq!(
                r.learn(D(2), mac(i), P(4), G(0), 400, u32::MAX),
                Learned::New
            );
        }
        assert_eq!(f.len(), 1001);
    }

    #[test]
    fn hostile_inputs_are_refused_not_stored() {
        let f = Fdb::default();
        let r = f.pin();
        assert_eq!(
            r.learn(D(1), MacAddr::ZERO, P(2), G(0), 0, 10),
            Learned::Refused
        );
        assert_eq!(
            r.learn(D(u16::MAX), mac(1), P(2), G(0), 0, 10),
            Learned::Refused
        );
        assert_eq!(
            r.learn(D(1), mac(1), P(5000), G(0), 0, 10),
            Learned::Refused
        );
        assert_eq!(r.lookup(D(u16::MAX), MacAddr([0xff; 6])), None);
        assert!(f.is_empty());
    }

    #[test]
    fn concurrent_learning_converges() {
        let f = std::sync::Arc::new(Fdb::new(1 << 20));
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let r = f.pin();
                    for i in 0..10_000u32 {
                        r.learn(D(1), mac(i), P(t), G(0), 0, u32::MAX);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        f.age(0, 300); // recount
        assert_eq!(f.len(), 10_000);
        assert_eq!(f.port_count(P(0)) + f.port_count(P(1)), 10_000);
    }
}
