//! The pair manager's decisions: which unicast pairs of kernel-path ports the kernel
//! carries, the filters that make it so, and their counters. The I/O (netlink) is
//! behind [`KernelOps`], so the decisions are tested without a kernel.
//!
//! A pair A → B is installed when the workers noted a frame of it and both ports are
//! still kernel-path ports of one network, under port security. Its filters sit on A's
//! host end's ingress and redirect to B's host end:
//!
//! - IPv4 from A's MAC and address to B's MAC (ARP is another EtherType: it stays in
//!   userspace, where the first-hop guards see it);
//! - IPv6 TCP and UDP from A's MAC and address to B's MAC (ICMPv6, neighbour discovery
//!   among it, stays in userspace).
//!
//! Anything else A sends (another source, a tag, a broadcast) misses them and reaches
//! the daemon as before. A pair is removed when either port changes (detached, limited,
//! captured, another address), and when its filters counted nothing for
//! [`IDLE_SECS`]. A port holds at most [`PAIRS_PER_PORT`] pairs as sender.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;

use super::netlink::{ETH_P_IP, ETH_P_IPV6, PrioCounters, Redirect, U32Key};
use crate::bridge::CounterTable;
use crate::config::{PortConf, PortMode, Snapshot};
use crate::ids::{DomainId, Generation, PortId};
use crate::wire::MacAddr;

/// Pairs a port sends on through the kernel at most.
pub const PAIRS_PER_PORT: usize = 16;
/// The first priority of the pairs' filters on a host end (the frames to the daemon
/// come after them, at [`SLOW_PRIO`]).
pub const PAIR_PRIO_BASE: u16 = 100;
/// Filters per pair at most (IPv4, IPv6 TCP, IPv6 UDP).
const RULES_PER_PAIR: usize = 3;
/// The priority of the filter that sends everything else to the daemon's TAP.
pub const SLOW_PRIO: u16 = 0xf000;
/// A pair whose filters counted nothing for this long is removed.
pub const IDLE_SECS: u32 = 60;
/// A pair that could not be installed is not tried again for this long.
const RETRY_SECS: u32 = 10;

/// The Ethernet header's bytes, which tc's byte counts leave out.
const ETH_HEADER: u64 = crate::wire::ethernet::HEADER_LEN as u64;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// The kernel's side: device indexes and tc filters.
pub trait KernelOps {
    /// The index of the device `name` of the manager's namespace.
    fn ifindex(&mut self, name: &str) -> Option<u32>;
    fn add_redirect(&mut self, r: &Redirect<'_>) -> io::Result<()>;
    fn delete_filter(&mut self, ifindex: u32, prio: u16, protocol: u16) -> io::Result<()>;
    fn ingress_counters(&mut self, ifindex: u32) -> io::Result<Vec<PrioCounters>>;
}

/// What a pair's filters were made from: when its ports no longer give the same, it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ends {
    gens: (Generation, Generation),
    domain: DomainId,
    from_mac: MacAddr,
    from_ip: Option<std::net::Ipv4Addr>,
    from_ip6: Option<std::net::Ipv6Addr>,
    to_mac: MacAddr,
}

/// One installed pair.
struct Pair {
    ends: Ends,
    /// A's host end, where the filters are.
    from_if: u32,
    /// The filters: (priority, EtherType).
    rules: Vec<(u16, u16)>,
    packets: u64,
    bytes: u64,
    /// When the counters last moved (or the pair was installed).
    moved: u32,
}

/// The installed pairs of a runtime.
pub struct Pairs<O: KernelOps> {
    ops: O,
    names: super::Names,
    /// What the kernel carried, per port.
    counters: Arc<CounterTable>,
    pairs: HashMap<(PortId, PortId), Pair>,
    /// Priorities in use per host end.
    prios: HashMap<u32, BTreeSet<u16>>,
    /// Pairs that failed, and until when they are not tried again.
    failed: HashMap<(PortId, PortId), u32>,
    /// Pairs per sending port.
    sent: HashMap<PortId, usize>,
    /// Filters whose removal failed (device, priority, EtherType): tried again on
    /// each scan, their priority held until then.
    pending: Vec<(u32, u16, u16)>,
    /// The senders whose pairs moved frames at the last reading (see [`Pairs::take_active`]).
    active: Vec<Sender>,
}

/// A port that sent through the kernel: its MAC stays learned in the FDB, as its
/// frames through the daemon would keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub port: PortId,
    pub generation: Generation,
    pub domain: DomainId,
    pub mac: MacAddr,
}

/// The kernel-path port `p` of `snap`, when its frames may be carried by the kernel
/// (and not being captured).
fn kernel_port(snap: &Snapshot, p: PortId, captured: Option<PortId>) -> Option<&PortConf> {
    let c = snap.port(p)?;
    (c.kernel && c.security.is_some() && captured != Some(p)).then_some(c)
}

/// What the pair `from` → `to` would be made from now, if it may be.
fn ends_of(snap: &Snapshot, (from, to): (PortId, PortId), cap: Option<PortId>) -> Option<Ends> {
    let (a, b) = (kernel_port(snap, from, cap)?, kernel_port(snap, to, cap)?);
    let (PortMode::Access { domain }, PortMode::Access { domain: d2 }) = (&a.mode, &b.mode) else {
        return None;
    };
    let (sa, sb) = (a.security.as_ref()?, b.security.as_ref()?);
    (domain == d2 && from != to && snap.domain(*domain)?.icc).then_some(Ends {
        gens: (a.generation, b.generation),
        domain: *domain,
        from_mac: sa.mac,
        from_ip: sa.ip,
        from_ip6: sa.ip6,
        to_mac: sb.mac,
    })
}

/// The filters of a pair: (EtherType, keys).
fn rules_of(e: &Ends) -> Vec<(u16, Vec<U32Key>)> {
    let macs = U32Key::macs(e.to_mac, e.from_mac);
    let mut v = Vec::with_capacity(RULES_PER_PAIR);
    if let Some(ip) = e.from_ip {
        let mut k = macs.to_vec();
        k.push(U32Key::ipv4_no_options());
        k.push(U32Key::ipv4_src(ip));
        v.push((ETH_P_IP, k));
    }
    if let Some(ip6) = e.from_ip6 {
        for nh in [TCP, UDP] {
            let mut k = macs.to_vec();
            k.extend(U32Key::ipv6_src(ip6));
            k.push(U32Key::ipv6_next_header(nh));
            v.push((ETH_P_IPV6, k));
        }
    }
    v
}

impl<O: KernelOps> Pairs<O> {
    pub fn new(ops: O, names: super::Names, counters: Arc<CounterTable>) -> Pairs<O> {
        Pairs {
            ops,
            names,
            counters,
            pairs: HashMap::new(),
            prios: HashMap::new(),
            failed: HashMap::new(),
            sent: HashMap::new(),
            pending: Vec::new(),
            active: Vec::new(),
        }
    }

    /// How many pairs the kernel carries.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether the kernel carries `from` → `to`.
    pub fn carries(&self, from: PortId, to: PortId) -> bool {
        self.pairs.contains_key(&(from, to))
    }

    /// Removes the pairs `snap` no longer allows, then installs those noted in
    /// `noted` that it does. `captured`: the port a capture is watching.
    pub fn scan(
        &mut self,
        snap: &Snapshot,
        noted: &[(PortId, PortId)],
        captured: Option<PortId>,
        now: u32,
    ) {
        self.retry_pending();
        let stale: Vec<_> = (self.pairs.iter())
            .filter(|(k, p)| ends_of(snap, **k, captured) != Some(p.ends))
            .map(|(k, _)| *k)
            .collect();
        if !stale.is_empty() {
            // What they carried since the last reading, before they go.
            self.count(now);
        }
        for k in stale {
            self.remove(k);
        }
        self.failed.retain(|_, until| *until > now);
        for &k in noted {
            if self.pairs.contains_key(&k) || self.failed.contains_key(&k) {
                continue;
            }
            if let Some(e) = ends_of(snap, k, captured)
                && self.install(k, e, now).is_err()
            {
                self.failed.insert(k, now.saturating_add(RETRY_SECS));
            }
        }
    }

    /// The pairs A already sends on.
    fn sent_by(&self, from: PortId) -> usize {
        self.sent.get(&from).copied().unwrap_or(0)
    }

    fn install(&mut self, k: (PortId, PortId), e: Ends, now: u32) -> io::Result<()> {
        if self.sent_by(k.0) >= PAIRS_PER_PORT {
            return Err(io::Error::other("the port carries its most pairs"));
        }
        let from_if = self.host_end(e.domain, e.from_mac)?;
        let to_if = self.host_end(e.domain, e.to_mac)?;
        let mut pair = Pair {
            ends: e,
            from_if,
            rules: Vec::new(),
            packets: 0,
            bytes: 0,
            moved: now,
        };
        for (protocol, keys) in rules_of(&e) {
            let added = self.free_prio(from_if).and_then(|prio| {
                let r = Redirect {
                    ifindex: from_if,
                    prio,
                    protocol,
                    keys: &keys,
                    to: to_if,
                };
                // A refused add gives its priority back.
                self.ops
                    .add_redirect(&r)
                    .inspect_err(|_| self.release(from_if, prio))?;
                Ok(prio)
            });
            match added {
                Ok(prio) => pair.rules.push((prio, protocol)),
                Err(err) => {
                    self.drop_rules(&pair);
                    return Err(err);
                }
            }
        }
        self.pairs.insert(k, pair);
        *self.sent.entry(k.0).or_default() += 1;
        Ok(())
    }

    fn host_end(&mut self, domain: DomainId, mac: MacAddr) -> io::Result<u32> {
        let name = (self.names).host_end(super::PortKey {
            domain: domain.0,
            mac,
        });
        (self.ops.ifindex(&name)).ok_or_else(|| io::Error::other(format!("no device {name}")))
    }

    /// Takes the lowest free pair priority of `ifindex`.
    fn free_prio(&mut self, ifindex: u32) -> io::Result<u16> {
        let used = self.prios.entry(ifindex).or_default();
        let top = PAIR_PRIO_BASE + (PAIRS_PER_PORT * RULES_PER_PAIR) as u16;
        let prio = (PAIR_PRIO_BASE..top)
            .find(|p| !used.contains(p))
            .ok_or_else(|| io::Error::other("no free filter priority"))?;
        used.insert(prio);
        Ok(prio)
    }

    fn drop_rules(&mut self, p: &Pair) {
        for &(prio, protocol) in &p.rules {
            self.delete_rule(p.from_if, prio, protocol);
        }
    }

    /// Removes one filter, or keeps it to try again (its priority held) when the
    /// kernel refused for another reason than its being gone already.
    fn delete_rule(&mut self, ifindex: u32, prio: u16, protocol: u16) {
        match self.ops.delete_filter(ifindex, prio, protocol) {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => {
                self.pending.push((ifindex, prio, protocol));
            }
            _ => self.release(ifindex, prio),
        }
    }

    /// Frees `prio` of `ifindex`.
    fn release(&mut self, ifindex: u32, prio: u16) {
        if let Some(used) = self.prios.get_mut(&ifindex) {
            used.remove(&prio);
        }
        if self.prios.get(&ifindex).is_some_and(BTreeSet::is_empty) {
            self.prios.remove(&ifindex);
        }
    }

    /// Tries the removals that failed again.
    fn retry_pending(&mut self) {
        for (ifindex, prio, protocol) in std::mem::take(&mut self.pending) {
            self.delete_rule(ifindex, prio, protocol);
        }
    }

    fn remove(&mut self, k: (PortId, PortId)) {
        if let Some(p) = self.pairs.remove(&k) {
            self.drop_rules(&p);
            if let Some(n) = self.sent.get_mut(&k.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.sent.remove(&k.0);
                }
            }
        }
    }

    /// The senders whose pairs moved frames since the last call.
    pub fn take_active(&mut self) -> Vec<Sender> {
        std::mem::take(&mut self.active)
    }

    /// Removes every pair (the runtime stops).
    pub fn clear(&mut self) {
        let keys: Vec<_> = self.pairs.keys().copied().collect();
        for k in keys {
            self.remove(k);
        }
    }

    /// Reads the filters' counters: what moved since the last read is counted as
    /// received on A and sent on B in the pairs' counter table; pairs idle for
    /// [`IDLE_SECS`] go.
    pub fn count(&mut self, now: u32) {
        let devices: BTreeSet<u32> = self.pairs.values().map(|p| p.from_if).collect();
        let mut read: HashMap<(u32, u16), (u64, u64)> = HashMap::new();
        for dev in devices {
            for c in self.ops.ingress_counters(dev).unwrap_or_default() {
                read.insert((dev, c.prio), (c.packets, c.bytes));
            }
        }
        let mut idle = Vec::new();
        for (k, p) in &mut self.pairs {
            let (packets, bytes) = (p.rules.iter())
                .filter_map(|(prio, _)| read.get(&(p.from_if, *prio)))
                .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
            let (dp, db) = (
                packets.saturating_sub(p.packets),
                bytes.saturating_sub(p.bytes),
            );
            if dp > 0 {
                // tc counts from the network header: the Ethernet header makes the frame.
                let db = db.saturating_add(dp.saturating_mul(ETH_HEADER));
                self.counters.rx(k.0, dp, db);
                self.counters.tx(k.1, dp, db);
                self.active.push(Sender {
                    port: k.0,
                    generation: p.ends.gens.0,
                    domain: p.ends.domain,
                    mac: p.ends.from_mac,
                });
                (p.packets, p.bytes, p.moved) = (packets, bytes, now);
            } else if now.saturating_sub(p.moved) >= IDLE_SECS {
                idle.push(*k);
            }
        }
        for k in idle {
            self.remove(k);
        }
    }
}

#[cfg(test)]
#[path = "pairs_tests.rs"]
mod tests;
