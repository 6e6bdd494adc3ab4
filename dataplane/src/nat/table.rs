//! The flow table: two keys per flow, lookups without a lock, bounded.
//!
//! An index of fingerprints (a keyed 64-bit hash of a tuple) points at flow records in
//! a fixed array. Readers — every packet of an established flow — probe the index and
//! check the record's stored tuple, never taking a lock and never waiting. Creating or
//! removing a flow takes a mutex (the first packet of a flow, the sweeper), under which
//! keys are published record-first, fingerprint-last, so a reader that sees a
//! fingerprint sees its record. A reader that races a removal finds the record's tuple
//! changed or the flow dead and treats it as a miss, then the slow path decides again
//! under the mutex.
//!
//! The table holds at most `max_flows` flows; a new flow beyond that is refused and
//! counted, and existing flows keep working. Expired flows are reclaimed by [`FlowTable::sweep`],
//! and a lookup never returns an expired flow.
//!
//! Each container (an inside address of a network) holds at most its quota of flows
//! (by default a quarter of the table, at least 4,096), so one container opening
//! connections cannot take the table from its neighbours. The counts live beside the
//! free list, under the same mutex, in a map sized for the whole table at start.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

use super::af::{Af, V4, mix};
use super::timeout;
use super::zeroed::{self, Zeroed};
use crate::wire::IpProtocol;

/// Protocol, source, destination. For ICMP echo the identifier stands in the port of the
/// side that chose it (source port of a request, destination port of a reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple<A: Af = V4> {
    pub proto: IpProtocol,
    pub src: A::Addr,
    pub sport: u16,
    pub dst: A::Addr,
    pub dport: u16,
}

impl<A: Af> Tuple<A> {
    /// The outside key of this inside tuple once masqueraded behind `ext:port`: the
    /// remote end, then the external address and port (for ICMP echo the identifier
    /// `port` stands in the destination port).
    #[inline]
    fn masqueraded(&self, ext: A::Addr, port: u16) -> Tuple<A> {
        let sport = if self.proto == A::ICMP { 0 } else { self.dport };
        Tuple {
            proto: self.proto,
            src: self.dst,
            sport,
            dst: ext,
            dport: port,
        }
    }

    /// The same flow seen from the other end.
    #[inline]
    pub fn reversed(&self) -> Tuple<A> {
        Tuple {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// Which key of a flow a lookup matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Packets from the container (source = container).
    Inside,
    /// Packets from the outside (destination = external address).
    Outside,
}

impl Side {
    /// The other key of the same flow.
    #[inline]
    fn other(self) -> Side {
        match self {
            Side::Inside => Side::Outside,
            Side::Outside => Side::Inside,
        }
    }
}

const EMPTY: u64 = 0;
const TOMB: u64 = u64::MAX;
const MAX_PROBE: usize = 256;

struct Slot {
    fp: AtomicU64,
    /// flow index << 1 | side (0 inside, 1 outside)
    val: AtomicU32,
}

// SAFETY: both fields are atomics; all zero is an empty slot (`EMPTY` is 0).
unsafe impl Zeroed for Slot {}

/// TCP states (nf_conntrack names) and flags in the state word.
mod st {
    pub const NONE: u32 = 0;
    pub const SYN_SENT: u32 = 1;
    pub const SYN_RECV: u32 = 2;
    pub const ESTABLISHED: u32 = 3;
    pub const FIN_WAIT: u32 = 4;
    pub const TIME_WAIT: u32 = 5;
    pub const CLOSE: u32 = 6;
    pub const MASK: u32 = 0xff;
    /// A packet came from the outside.
    pub const REPLIED: u32 = 1 << 8;
    pub const FIN_IN: u32 = 1 << 9;
    pub const FIN_OUT: u32 = 1 << 10;
    /// The outside opened the flow (a published port).
    pub const FROM_OUTSIDE: u32 = 1 << 11;
}

struct Flow<A: Af> {
    inside: A::Stored,
    outside: A::Stored,
    domain: AtomicU32,
    state: AtomicU32,
    last: AtomicU32,
    live: AtomicBool,
}

// SAFETY: every field is zero-valid (`Af::Stored` is `Zeroed`, the rest atomics); all
// zero is a dead flow with empty keys.
unsafe impl<A: Af> Zeroed for Flow<A> {}

impl<A: Af> Flow<A> {
    #[inline]
    fn inside(&self) -> Tuple<A> {
        let k = A::load(&self.inside);
        A::unpack(A::proto_of(&k), &k)
    }

    /// The packed key of one side (compared without unpacking on the fast path).
    #[inline]
    fn packed(&self, side: Side) -> A::Key {
        match side {
            Side::Inside => A::load(&self.inside),
            Side::Outside => A::load(&self.outside),
        }
    }

    #[inline]
    fn outside(&self) -> Tuple<A> {
        let k = A::load(&self.outside);
        A::unpack(A::proto_of(&k), &k)
    }
}

/// Counters of the table (slow-path events; per-packet counts live with the ports).
#[derive(Debug, Default)]
pub struct NatCounters {
    pub created: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_ports: AtomicU64,
    /// New flows refused because their container held its quota.
    pub refused_quota: AtomicU64,
    pub expired: AtomicU64,
}

/// One row of `conntrack ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo<A: Af = V4> {
    pub proto: IpProtocol,
    pub domain: u16,
    /// As the container sees it.
    pub inside: Tuple<A>,
    /// As the outside sees it.
    pub outside: Tuple<A>,
    pub state: &'static str,
    pub expires_in: u32,
}

/// A flow found by a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<A: Af = V4> {
    pub index: u32,
    pub side: Side,
    pub domain: u16,
    /// The other side's tuple: for an inside hit, the outside tuple, and the reverse.
    pub other: Tuple<A>,
}

/// Why a new flow was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The table is full.
    Full,
    /// No external port was free.
    NoPort,
    /// The container holds its quota of flows.
    Quota,
}

/// The fewest flows a container's default quota allows.
pub const MIN_DEFAULT_QUOTA: usize = 4096;

/// The default per-container quota for a table of `max` flows: a quarter of it, at
/// least [`MIN_DEFAULT_QUOTA`], never more than the table.
pub fn default_quota(max: usize) -> usize {
    (max / 4).max(MIN_DEFAULT_QUOTA).min(max)
}

/// Hashes who a flow counts against ([`Af::owner`]: for IPv4 its network and inside
/// address packed in one word) with the table's seeded mix: one multiply-xorshift round where
/// SipHash took some two hundred instructions per new flow. A container cannot choose
/// its network's number, and the seed is random per table, so it cannot aim its
/// addresses at one bucket either; the map is sized for the whole table and never grows.
#[derive(Clone, Copy)]
struct OwnerHash(u64);

impl BuildHasher for OwnerHash {
    type Hasher = OwnerHasher;
    fn build_hasher(&self) -> OwnerHasher {
        OwnerHasher(self.0)
    }
}

struct OwnerHasher(u64);

impl Hasher for OwnerHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = mix(self.0 ^ v);
    }
    fn write_u16(&mut self, v: u16) {
        self.0 = mix(self.0 ^ u64::from(v));
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = mix(mix(self.0 ^ (v >> 64) as u64) ^ v as u64);
    }
}

struct Alloc<A: Af> {
    free: Vec<u32>,
    /// Next pseudo-random port candidate.
    rng: u64,
    /// Live flows per container; sized for the whole table, so it never grows.
    owners: HashMap<A::Owner, u32, OwnerHash>,
}

impl<A: Af> Alloc<A> {
    /// A random port of `range` that `free` accepts, after at most 128 tries.
    fn random_port(&mut self, range: (u16, u16), free: impl Fn(u16) -> bool) -> Option<u16> {
        let (lo, hi) = range;
        let span = u64::from(hi.saturating_sub(lo)) + 1;
        for _ in 0..128 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let p = lo.saturating_add((self.rng % span) as u16);
            if free(p) {
                return Some(p);
            }
        }
        None
    }
}

pub struct FlowTable<A: Af = V4> {
    index: Box<[Slot]>,
    mask: usize,
    seed: u64,
    flows: Box<[Flow<A>]>,
    alloc: Mutex<Alloc<A>>,
    live: AtomicU32,
    /// Flows one container may hold.
    quota: u32,
    pub counters: NatCounters,
    /// External ports chosen from this range when the original one is taken.
    pub port_range: (u16, u16),
}

fn random_u64() -> u64 {
    crate::random::u64() | 1
}

/// Seconds a flow in `state` lives after its last packet.
fn lifetime(proto: IpProtocol, state: u32) -> u32 {
    match proto {
        IpProtocol::Tcp => match state & st::MASK {
            st::SYN_SENT => timeout::TCP_SYN_SENT,
            st::SYN_RECV => timeout::TCP_SYN_RECV,
            st::ESTABLISHED => timeout::TCP_ESTABLISHED,
            st::FIN_WAIT => timeout::TCP_FIN_WAIT,
            st::TIME_WAIT => timeout::TCP_TIME_WAIT,
            st::CLOSE => timeout::TCP_CLOSE,
            _ => timeout::TCP_SYN_SENT,
        },
        IpProtocol::Udp if state & st::REPLIED != 0 => timeout::UDP_REPLIED,
        IpProtocol::Udp => timeout::UDP_UNREPLIED,
        IpProtocol::Icmp | IpProtocol::Icmpv6 => timeout::ICMP,
        _ => timeout::UDP_UNREPLIED,
    }
}

fn state_name(proto: IpProtocol, state: u32) -> &'static str {
    match proto {
        IpProtocol::Tcp => match state & st::MASK {
            st::SYN_SENT => "SYN_SENT",
            st::SYN_RECV => "SYN_RECV",
            st::ESTABLISHED => "ESTABLISHED",
            st::FIN_WAIT => "FIN_WAIT",
            st::TIME_WAIT => "TIME_WAIT",
            st::CLOSE => "CLOSE",
            _ => "NONE",
        },
        _ if state & st::REPLIED != 0 => "REPLIED",
        _ => "UNREPLIED",
    }
}

/// TCP flag bits.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The state after a packet with `flags` from `side`.
fn next_state(proto: IpProtocol, state: u32, side: Side, flags: u8) -> u32 {
    let from_outside = side == Side::Outside;
    let mut s = state;
    if from_outside {
        s |= st::REPLIED;
    }
    if proto != IpProtocol::Tcp {
        return s;
    }
    let initiator_outside = state & st::FROM_OUTSIDE != 0;
    let from_initiator = from_outside == initiator_outside;
    let base = s & st::MASK;
    let mut ns = base;
    if flags & RST != 0 {
        ns = st::CLOSE;
    } else {
        match base {
            st::SYN_SENT | st::NONE if !from_initiator && flags & (SYN | ACK) == SYN | ACK => {
                ns = st::SYN_RECV;
            }
            st::SYN_RECV if from_initiator && flags & ACK != 0 && flags & SYN == 0 => {
                ns = st::ESTABLISHED;
            }
            st::TIME_WAIT | st::CLOSE if from_initiator && flags & SYN != 0 && flags & ACK == 0 => {
                // The port pair is reused for a new connection.
                s &= !(st::FIN_IN | st::FIN_OUT);
                ns = st::SYN_SENT;
            }
            _ => {}
        }
        if flags & FIN != 0 && matches!(ns, st::ESTABLISHED | st::FIN_WAIT | st::SYN_RECV) {
            s |= if from_outside {
                st::FIN_OUT
            } else {
                st::FIN_IN
            };
            ns = if s & st::FIN_IN != 0 && s & st::FIN_OUT != 0 {
                st::TIME_WAIT
            } else {
                st::FIN_WAIT
            };
        }
    }
    (s & !st::MASK) | ns
}

impl<A: Af> FlowTable<A> {
    /// A table for at most `max_flows` flows (at least 16), with the default quota.
    pub fn new(max_flows: usize) -> FlowTable<A> {
        Self::with_quota(max_flows, 0)
    }

    /// A table for at most `max_flows` flows, of which one container may hold `quota`
    /// (0: [`default_quota`]).
    pub fn with_quota(max_flows: usize, quota: usize) -> FlowTable<A> {
        let max = max_flows.clamp(16, 1 << 24);
        let quota = match quota {
            0 => default_quota(max),
            q => q.min(max),
        };
        // Two keys per flow, at most a quarter full.
        let cap = (max * 8).next_power_of_two();
        FlowTable {
            // Zeroed memory: an empty slot and an empty flow are all zero bytes, and
            // the pages become resident as flows touch them.
            index: zeroed::boxed(cap),
            mask: cap - 1,
            seed: random_u64(),
            flows: zeroed::boxed(max),
            alloc: Mutex::new(Alloc {
                free: (0..max as u32).rev().collect(),
                rng: random_u64(),
                owners: HashMap::with_capacity_and_hasher(max, OwnerHash(random_u64())),
            }),
            live: AtomicU32::new(0),
            quota: u32::try_from(quota).unwrap_or(u32::MAX),
            counters: NatCounters::default(),
            port_range: (1024, 65535),
        }
    }

    /// Makes every page of the table resident now (a write that changes nothing on
    /// each page): the table's memory is otherwise mapped as flows first touch it, a
    /// page fault on a few thousand new flows over the daemon's life. For measuring
    /// flow creation in a steady state.
    pub fn touch_all(&self) {
        const PAGE: usize = 4096;
        let every = |size: usize| (PAGE / size.max(1)).max(1);
        // A compare-and-swap of a word with itself: a write the compiler keeps (an
        // idempotent `fetch_or(0)` may become a load, which maps the zero page).
        let rewrite = |a: &AtomicU32| {
            let v = a.load(Relaxed);
            let _ = a.compare_exchange(v, v, Relaxed, Relaxed);
        };
        for s in self.index.iter().step_by(every(size_of::<Slot>())) {
            rewrite(&s.val);
        }
        for f in self.flows.iter().step_by(every(size_of::<Flow<A>>())) {
            rewrite(&f.last);
        }
    }

    pub fn max_flows(&self) -> usize {
        self.flows.len()
    }

    /// Flows one container may hold.
    pub fn quota(&self) -> usize {
        self.quota as usize
    }

    pub fn len(&self) -> usize {
        self.live.load(Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn fingerprint(&self, t: &Tuple<A>) -> u64 {
        self.fingerprint_packed(&A::pack(t))
    }

    #[inline]
    fn fingerprint_packed(&self, key: &A::Key) -> u64 {
        let h = A::fingerprint(key, self.seed);
        match h {
            EMPTY => 1,
            TOMB => 2,
            h => h,
        }
    }

    /// Brings the slot a tuple's lookup starts at into cache.
    #[inline]
    pub fn prefetch(&self, t: &Tuple<A>) {
        let fp = self.fingerprint(t);
        if let Some(s) = self.index.get(fp as usize & self.mask) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: prefetching is a hint and never faults.
            unsafe {
                core::arch::x86_64::_mm_prefetch(
                    (s as *const Slot).cast::<i8>(),
                    core::arch::x86_64::_MM_HINT_T0,
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = s;
        }
    }

    /// Finds the live, unexpired flow with key `t` on `side`.
    #[inline]
    pub fn lookup(&self, t: &Tuple<A>, side: Side, now: u32) -> Option<Hit<A>> {
        let key = A::pack(t);
        let fp = self.fingerprint_packed(&key);
        let mut i = fp as usize & self.mask;
        for _ in 0..MAX_PROBE {
            let slot = self.index.get(i)?;
            let f = slot.fp.load(Acquire);
            if f == EMPTY {
                return None;
            }
            if f == fp {
                let v = slot.val.load(Relaxed);
                let (idx, s) = (
                    v >> 1,
                    if v & 1 == 0 {
                        Side::Inside
                    } else {
                        Side::Outside
                    },
                );
                if s == side
                    && let Some(flow) = self.flows.get(idx as usize)
                    && flow.live.load(Acquire)
                    && A::same(&flow.packed(side), &key)
                {
                    let state = flow.state.load(Relaxed);
                    if now.wrapping_sub(flow.last.load(Relaxed)) > lifetime(t.proto, state) {
                        return None;
                    }
                    // Both keys of a flow share the protocol: no need to decode it.
                    let other = A::unpack(t.proto, &flow.packed(side.other()));
                    return Some(Hit {
                        index: idx,
                        side,
                        domain: flow.domain.load(Relaxed) as u16,
                        other,
                    });
                }
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Records a packet of flow `hit` with TCP `flags` at `now`: state and age, written
    /// only when they change.
    #[inline]
    pub fn touch(&self, hit: &Hit<A>, proto: IpProtocol, flags: u8, now: u32) {
        let Some(flow) = self.flows.get(hit.index as usize) else {
            return;
        };
        if flow.last.load(Relaxed) != now {
            flow.last.store(now, Relaxed);
        }
        let old = flow.state.load(Relaxed);
        let new = next_state(proto, old, hit.side, flags);
        if new != old {
            let _ = flow.state.compare_exchange(old, new, Relaxed, Relaxed);
        }
    }

    fn insert_key(&self, t: &Tuple<A>, val: u32) -> bool {
        let fp = self.fingerprint(t);
        let mut i = fp as usize & self.mask;
        for _ in 0..MAX_PROBE {
            let Some(slot) = self.index.get(i) else {
                return false;
            };
            let f = slot.fp.load(Relaxed);
            if f == EMPTY || f == TOMB {
                slot.val.store(val, Relaxed);
                slot.fp.store(fp, Release);
                return true;
            }
            i = (i + 1) & self.mask;
        }
        false
    }

    fn remove_key(&self, t: &Tuple<A>, val: u32) {
        let fp = self.fingerprint(t);
        let mut i = fp as usize & self.mask;
        for _ in 0..MAX_PROBE {
            let Some(slot) = self.index.get(i) else {
                return;
            };
            let f = slot.fp.load(Relaxed);
            if f == EMPTY {
                return;
            }
            if f == fp && slot.val.load(Relaxed) == val {
                slot.fp.store(TOMB, Release);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn free_flow(&self, a: &mut Alloc<A>, idx: u32) {
        let Some(flow) = self.flows.get(idx as usize) else {
            return;
        };
        if !flow.live.swap(false, Release) {
            return;
        }
        let inside = flow.inside();
        self.remove_key(&inside, idx << 1);
        self.remove_key(&flow.outside(), (idx << 1) | 1);
        let owner = A::owner(flow.domain.load(Relaxed) as u16, inside.src);
        if let Some(n) = a.owners.get_mut(&owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                a.owners.remove(&owner);
            }
        }
        a.free.push(idx);
        let _ = self
            .live
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }

    /// Creates a flow whose inside tuple is `inside`, choosing its external port on
    /// `ext` (keeping the inside source port when free, as MASQUERADE does; never a port
    /// `reserved` says is published). For ICMP echo the port is the identifier.
    /// Returns the outside tuple's hit, or why no flow was created.
    pub fn create_outbound(
        &self,
        inside: Tuple<A>,
        ext: A::Addr,
        domain: u16,
        now: u32,
        reserved: impl Fn(IpProtocol, u16) -> bool,
    ) -> Result<Hit<A>, Refusal> {
        let Ok(mut a) = self.alloc.lock() else {
            return Err(Refusal::Full);
        };
        // Another worker may have created it meanwhile.
        if let Some(h) = self.lookup(&inside, Side::Inside, now) {
            return Ok(h);
        }
        // An expired flow with the same key: reclaim it first.
        self.reclaim_key(&mut a, &inside, Side::Inside);
        let free = |p: u16| {
            p != 0
                && !reserved(inside.proto, p)
                && self
                    .lookup(&inside.masqueraded(ext, p), Side::Outside, now)
                    .is_none()
        };
        let mut port = inside.sport;
        if !free(port) {
            match a.random_port(self.port_range, free) {
                Some(p) => port = p,
                None => {
                    self.counters.refused_ports.fetch_add(1, Relaxed);
                    return Err(Refusal::NoPort);
                }
            }
        }
        let outside = inside.masqueraded(ext, port);
        self.create(&mut a, inside, outside, domain, now, 0)
    }

    /// Creates the flow of a client reaching a published port: `outside` is what arrived
    /// (client -> external address and port), `to` the container's address and port.
    pub fn create_inbound(
        &self,
        outside: Tuple<A>,
        to: (A::Addr, u16),
        domain: u16,
        now: u32,
    ) -> Result<Hit<A>, Refusal> {
        let Ok(mut a) = self.alloc.lock() else {
            return Err(Refusal::Full);
        };
        if let Some(h) = self.lookup(&outside, Side::Outside, now) {
            return Ok(h);
        }
        self.reclaim_key(&mut a, &outside, Side::Outside);
        let inside = Tuple {
            proto: outside.proto,
            src: to.0,
            sport: to.1,
            dst: outside.src,
            dport: outside.sport,
        };
        if self.lookup(&inside, Side::Inside, now).is_some() {
            self.counters.refused_ports.fetch_add(1, Relaxed);
            return Err(Refusal::NoPort);
        }
        self.reclaim_key(&mut a, &inside, Side::Inside);
        let h = self.create(&mut a, inside, outside, domain, now, st::FROM_OUTSIDE)?;
        Ok(Hit {
            side: Side::Outside,
            other: inside,
            ..h
        })
    }

    /// Frees a dead or expired flow still holding `key` (so its key can be reused).
    fn reclaim_key(&self, a: &mut Alloc<A>, key: &Tuple<A>, side: Side) {
        let fp = self.fingerprint(key);
        let mut i = fp as usize & self.mask;
        for _ in 0..MAX_PROBE {
            let Some(slot) = self.index.get(i) else {
                return;
            };
            let f = slot.fp.load(Relaxed);
            if f == EMPTY {
                return;
            }
            if f == fp {
                let v = slot.val.load(Relaxed);
                let idx = v >> 1;
                let s = if v & 1 == 0 {
                    Side::Inside
                } else {
                    Side::Outside
                };
                if s == side
                    && let Some(flow) = self.flows.get(idx as usize)
                {
                    let t = match side {
                        Side::Inside => flow.inside(),
                        Side::Outside => flow.outside(),
                    };
                    if t == *key {
                        self.free_flow(a, idx);
                        return;
                    }
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    fn create(
        &self,
        a: &mut Alloc<A>,
        inside: Tuple<A>,
        outside: Tuple<A>,
        domain: u16,
        now: u32,
        extra: u32,
    ) -> Result<Hit<A>, Refusal> {
        if a.free.is_empty() {
            self.counters.refused_full.fetch_add(1, Relaxed);
            return Err(Refusal::Full);
        }
        let owner = A::owner(domain, inside.src);
        if a.owners.get(&owner).is_some_and(|&n| n >= self.quota) {
            self.counters.refused_quota.fetch_add(1, Relaxed);
            return Err(Refusal::Quota);
        }
        let Some(idx) = a.free.pop() else {
            return Err(Refusal::Full);
        };
        let Some(flow) = self.flows.get(idx as usize) else {
            return Err(Refusal::Full);
        };
        A::store(&flow.inside, &A::pack(&inside));
        A::store(&flow.outside, &A::pack(&outside));
        flow.domain.store(u32::from(domain), Relaxed);
        flow.state.store(
            if inside.proto == IpProtocol::Tcp {
                st::SYN_SENT | extra
            } else {
                extra
            },
            Relaxed,
        );
        flow.last.store(now, Relaxed);
        flow.live.store(true, Release);
        // Counted before a failed insert frees it again (which uncounts it).
        *a.owners.entry(owner).or_insert(0) += 1;
        if !self.insert_key(&inside, idx << 1) || !self.insert_key(&outside, (idx << 1) | 1) {
            self.free_flow(a, idx);
            self.counters.refused_full.fetch_add(1, Relaxed);
            return Err(Refusal::Full);
        }
        self.live.fetch_add(1, Relaxed);
        self.counters.created.fetch_add(1, Relaxed);
        Ok(Hit {
            index: idx,
            side: Side::Inside,
            domain,
            other: outside,
        })
    }

    /// Removes flows idle past their timeout at `now`; returns how many.
    pub fn sweep(&self, now: u32) -> usize {
        let Ok(mut a) = self.alloc.lock() else {
            return 0;
        };
        let mut n = 0;
        for (i, f) in self.flows.iter().enumerate() {
            if !f.live.load(Acquire) {
                continue;
            }
            let t = f.inside();
            if now.wrapping_sub(f.last.load(Relaxed)) > lifetime(t.proto, f.state.load(Relaxed)) {
                self.free_flow(&mut a, i as u32);
                n += 1;
            }
        }
        self.counters.expired.fetch_add(n as u64, Relaxed);
        n
    }

    /// Removes every flow.
    pub fn flush(&self) -> usize {
        let Ok(mut a) = self.alloc.lock() else {
            return 0;
        };
        let mut n = 0;
        for i in 0..self.flows.len() {
            if self.flows.get(i).is_some_and(|f| f.live.load(Acquire)) {
                self.free_flow(&mut a, i as u32);
                n += 1;
            }
        }
        n
    }

    /// Every live flow, for `conntrack ls`.
    pub fn list(&self, now: u32) -> Vec<FlowInfo<A>> {
        self.flows
            .iter()
            .filter(|f| f.live.load(Acquire))
            .map(|f| {
                let inside = f.inside();
                let state = f.state.load(Relaxed);
                let age = now.wrapping_sub(f.last.load(Relaxed));
                FlowInfo {
                    proto: inside.proto,
                    domain: f.domain.load(Relaxed) as u16,
                    inside,
                    outside: f.outside(),
                    state: state_name(inside.proto, state),
                    expires_in: lifetime(inside.proto, state).saturating_sub(age),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn t(proto: IpProtocol, s: [u8; 4], sp: u16, d: [u8; 4], dp: u16) -> Tuple {
        Tuple {
            proto,
            src: Ipv4Addr::from(s),
            sport: sp,
            dst: Ipv4Addr::from(d),
            dport: dp,
        }
    }

    const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    #[test]
    fn outbound_keeps_port_and_both_keys_find_it() {
        let tb = FlowTable::new(64);
        let inside = t(IpProtocol::Udp, [10, 0, 0, 2], 5000, [203, 0, 113, 9], 53);
        let h = tb.create_outbound(inside, EXT, 3, 0, |_, _| false).unwrap();
        assert_eq!(h.other.dport, 5000, "source port kept");
        assert_eq!((h.other.src, h.other.dst), (inside.dst, EXT));
        let hi = tb.lookup(&inside, Side::Inside, 0).unwrap();
        assert_eq!(hi.domain, 3);
        let ho = tb.lookup(&h.other, Side::Outside, 0).unwrap();
        assert_eq!(ho.other, inside);
        assert!(tb.lookup(&inside, Side::Outside, 0).is_none());
        assert_eq!(tb.len(), 1);
    }

    #[test]
    fn a_table_made_resident_keeps_its_flows() {
        let tb = FlowTable::new(4096);
        let inside = t(IpProtocol::Udp, [10, 0, 0, 2], 5000, [203, 0, 113, 9], 53);
        let h = tb.create_outbound(inside, EXT, 3, 0, |_, _| false).unwrap();
        tb.touch_all();
        assert_eq!(tb.lookup(&inside, Side::Inside, 0).unwrap().other, h.other);
        assert_eq!(tb.lookup(&h.other, Side::Outside, 0).unwrap().other, inside);
        assert_eq!(tb.len(), 1);
        let fresh = t(IpProtocol::Udp, [10, 0, 0, 2], 5001, [203, 0, 113, 9], 53);
        assert!(
            tb.lookup(&fresh, Side::Inside, 0).is_none(),
            "an empty slot"
        );
    }

    #[test]
    fn port_collision_falls_back_to_another_port() {
        let tb = FlowTable::new(64);
        let a = t(IpProtocol::Tcp, [10, 0, 0, 2], 4000, [203, 0, 113, 9], 80);
        let b = t(IpProtocol::Tcp, [10, 0, 0, 3], 4000, [203, 0, 113, 9], 80);
        let ha = tb.create_outbound(a, EXT, 0, 0, |_, _| false).unwrap();
        let hb = tb.create_outbound(b, EXT, 0, 0, |_, _| false).unwrap();
        assert_eq!(ha.other.dport, 4000);
        assert_ne!(hb.other.dport, 4000);
        // Published ports are never chosen.
        let c = t(IpProtocol::Tcp, [10, 0, 0, 4], 8080, [203, 0, 113, 9], 80);
        let hc = tb
            .create_outbound(c, EXT, 0, 0, |p, port| p == IpProtocol::Tcp && port == 8080)
            .unwrap();
        assert_ne!(hc.other.dport, 8080);
    }

    #[test]
    fn quota_per_container_leaves_room_for_the_neighbours() {
        let tb = FlowTable::with_quota(64, 3);
        assert_eq!(tb.quota(), 3);
        let greedy = |port| t(IpProtocol::Udp, [10, 0, 0, 2], port, [1, 1, 1, 1], 53);
        for p in 0..3 {
            assert!(
                tb.create_outbound(greedy(1000 + p), EXT, 0, 0, |_, _| false)
                    .is_ok()
            );
        }
        assert_eq!(
            tb.create_outbound(greedy(2000), EXT, 0, 0, |_, _| false),
            Err(Refusal::Quota)
        );
        assert_eq!(tb.counters.refused_quota.load(Relaxed), 1);
        // The same address on another network, and a neighbour, are their own owners.
        assert!(
            tb.create_outbound(greedy(2000), EXT, 1, 0, |_, _| false)
                .is_ok()
        );
        let other = t(IpProtocol::Udp, [10, 0, 0, 3], 1000, [1, 1, 1, 1], 53);
        assert!(tb.create_outbound(other, EXT, 0, 0, |_, _| false).is_ok());
        // Established flows of the greedy one still work; once they expire it may open more.
        assert!(tb.lookup(&greedy(1000), Side::Inside, 0).is_some());
        assert_eq!(tb.sweep(10_000), 5);
        assert!(
            tb.create_outbound(greedy(2000), EXT, 0, 10_000, |_, _| false)
                .is_ok()
        );
        assert_eq!(default_quota(65536), 16384);
        assert_eq!(default_quota(8192), 4096);
        assert_eq!(default_quota(100), 100);
    }

    #[test]
    fn full_table_refuses_new_and_keeps_old() {
        let tb = FlowTable::new(16);
        for i in 0..16u16 {
            assert!(
                tb.create_outbound(
                    t(IpProtocol::Udp, [10, 0, 0, 2], 1000 + i, [1, 1, 1, 1], 53),
                    EXT,
                    0,
                    0,
                    |_, _| false
                )
                .is_ok()
            );
        }
        assert_eq!(
            tb.create_outbound(
                t(IpProtocol::Udp, [10, 0, 0, 2], 2000, [1, 1, 1, 1], 53),
                EXT,
                0,
                0,
                |_, _| false
            ),
            Err(Refusal::Full)
        );
        assert_eq!(tb.counters.refused_full.load(Relaxed), 1);
        for i in 0..16u16 {
            assert!(
                tb.lookup(
                    &t(IpProtocol::Udp, [10, 0, 0, 2], 1000 + i, [1, 1, 1, 1], 53),
                    Side::Inside,
                    1
                )
                .is_some()
            );
        }
    }

    #[test]
    fn udp_timeouts_unreplied_and_replied() {
        let tb = FlowTable::new(16);
        let inside = t(IpProtocol::Udp, [10, 0, 0, 2], 5000, [1, 1, 1, 1], 53);
        let h = tb
            .create_outbound(inside, EXT, 0, 100, |_, _| false)
            .unwrap();
        assert!(tb.lookup(&inside, Side::Inside, 130).is_some());
        assert!(
            tb.lookup(&inside, Side::Inside, 131).is_none(),
            "unreplied lives 30 s"
        );
        assert_eq!(tb.sweep(131), 1);
        assert!(tb.is_empty());
        let h2 = tb
            .create_outbound(inside, EXT, 0, 200, |_, _| false)
            .unwrap();
        let ho = tb.lookup(&h2.other, Side::Outside, 200).unwrap();
        tb.touch(&ho, IpProtocol::Udp, 0, 200);
        assert!(
            tb.lookup(&inside, Side::Inside, 320).is_some(),
            "replied lives 120 s"
        );
        assert_eq!(tb.sweep(321), 1);
        let _ = h;
    }

    #[test]
    fn tcp_states_and_their_timeouts() {
        let tb = FlowTable::new(16);
        let inside = t(IpProtocol::Tcp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 80);
        let h = tb.create_outbound(inside, EXT, 0, 0, |_, _| false).unwrap();
        let hi = tb.lookup(&inside, Side::Inside, 0).unwrap();
        let ho = tb.lookup(&h.other, Side::Outside, 0).unwrap();
        let state = |now| tb.list(now)[0].state;
        assert_eq!(state(0), "SYN_SENT");
        tb.touch(&ho, IpProtocol::Tcp, SYN | ACK, 1);
        assert_eq!(state(1), "SYN_RECV");
        tb.touch(&hi, IpProtocol::Tcp, ACK, 1);
        assert_eq!(state(1), "ESTABLISHED");
        assert!(
            tb.lookup(&inside, Side::Inside, 1 + 86000).is_some(),
            "established lives a day"
        );
        tb.touch(&hi, IpProtocol::Tcp, FIN | ACK, 2);
        assert_eq!(state(2), "FIN_WAIT");
        tb.touch(&ho, IpProtocol::Tcp, FIN | ACK, 3);
        assert_eq!(state(3), "TIME_WAIT");
        assert!(tb.lookup(&inside, Side::Inside, 123).is_some());
        assert!(
            tb.lookup(&inside, Side::Inside, 124).is_none(),
            "TIME_WAIT lives 120 s"
        );
        // A new SYN on the same pair reopens it.
        tb.touch(&hi, IpProtocol::Tcp, SYN, 100);
        assert_eq!(state(100), "SYN_SENT");
        tb.touch(&ho, IpProtocol::Tcp, RST, 101);
        assert_eq!(state(101), "CLOSE");
        assert!(
            tb.lookup(&inside, Side::Inside, 112).is_none(),
            "CLOSE lives 10 s"
        );
    }

    #[test]
    fn inbound_flows_and_icmp_ids() {
        let tb = FlowTable::new(16);
        let arrived = t(IpProtocol::Tcp, [203, 0, 113, 7], 55555, EXT.octets(), 8080);
        let h = tb
            .create_inbound(arrived, (Ipv4Addr::new(10, 0, 0, 5), 80), 2, 0)
            .unwrap();
        assert_eq!(
            h.other,
            t(IpProtocol::Tcp, [10, 0, 0, 5], 80, [203, 0, 113, 7], 55555)
        );
        let back = tb.lookup(&h.other, Side::Inside, 0).unwrap();
        assert_eq!(back.other, arrived);
        // The initiator is outside: SYN-ACK from inside, ACK from outside.
        tb.touch(&back, IpProtocol::Tcp, SYN | ACK, 0);
        tb.touch(
            &tb.lookup(&arrived, Side::Outside, 0).unwrap(),
            IpProtocol::Tcp,
            ACK,
            0,
        );
        assert_eq!(tb.list(0)[0].state, "ESTABLISHED");
        let echo = t(IpProtocol::Icmp, [10, 0, 0, 2], 0x1234, [1, 1, 1, 1], 0);
        let he = tb.create_outbound(echo, EXT, 0, 0, |_, _| false).unwrap();
        assert_eq!((he.other.sport, he.other.dport), (0, 0x1234));
    }

    #[test]
    fn two_threads_create_and_look_up_consistently() {
        let tb = std::sync::Arc::new(FlowTable::new(1 << 14));
        let hs: Vec<_> = (0..2)
            .map(|w| {
                let tb = tb.clone();
                std::thread::spawn(move || {
                    for i in 0..5000u16 {
                        let inside = t(
                            IpProtocol::Udp,
                            [10, 0, (i >> 8) as u8, i as u8],
                            1000 + (i % 7),
                            [1, 1, 1, 1],
                            53,
                        );
                        let h = tb
                            .create_outbound(inside, EXT, 0, 0, |_, _| false)
                            .expect("room");
                        let o = tb.lookup(&h.other, Side::Outside, 0).expect("outside key");
                        assert_eq!(o.other, inside, "worker {w}");
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(tb.len(), 5000);
        assert_eq!(tb.flush(), 5000);
        assert!(tb.is_empty());
    }
}
