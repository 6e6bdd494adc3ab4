//! Notable dataplane events in the log: MAC moves, tables full, quotas hit, guards
//! refusing frames, DNS answers failing.
//!
//! The dataplane keeps counters, never logs (nothing is written per packet). The
//! daemon's timer thread reads the counters every [`PERIOD`] (the lock-free ones: the
//! workers' per-port tables, the FDB's and the NAT table's atomics; the gateway's DNS
//! counts as `ctl stats` last saw them), and this module turns what moved since the
//! last look into log lines: at most one per kind of event (and per port or network
//! for the per-port ones) per period, with the count, so a flood writes a line every
//! few seconds, not a line per frame.

use std::collections::HashMap;

use dataplane::bridge::DropReason;
use log::Level;

/// How often the counters are compared.
pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// The drop reasons worth a line: a tenant hitting its quota, a guard refusing what a
/// container sent, a table full. (Malformed frames, misses and full queues are the
/// counters' business.)
pub const NOTABLE: [DropReason; 17] = [
    DropReason::MacSpoof,
    DropReason::IpSpoof,
    DropReason::NdSpoof,
    DropReason::RaGuard,
    DropReason::DhcpGuard,
    DropReason::DoubleTag,
    DropReason::NatFull,
    DropReason::NatQuota,
    DropReason::TcpQuota,
    DropReason::UdpQuota,
    DropReason::PingQuota,
    DropReason::DnsQuota,
    DropReason::ServiceQuota,
    DropReason::FdLimit,
    DropReason::RateLimit,
    DropReason::VlanNotAllowed,
    DropReason::SourceOutsideNetwork,
];

/// The counters events are read from, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub fdb_moves: u64,
    pub fdb_refused: u64,
    /// Packet-uplink flows refused: the table full, no free port.
    pub nat_refused_full: u64,
    pub nat_refused_ports: u64,
    /// Each port's [`NOTABLE`] drop counts, in that order.
    pub ports: HashMap<String, [u64; NOTABLE.len()]>,
    /// Each network's DNS failures (answers SERVFAIL or REFUSED, queries refused).
    pub dns_failures: HashMap<String, u64>,
}

/// The log lines for what moved from `prev` to `now` (ports and networks new since
/// `prev` count from zero), sorted so the same changes always read the same.
pub fn changes(prev: &Snapshot, now: &Snapshot) -> Vec<(Level, String)> {
    let mut out = Vec::new();
    let moved = now.fdb_moves.saturating_sub(prev.fdb_moves);
    if moved > 0 {
        out.push((
            Level::Info,
            format!("event fdb: {moved} MAC moves between ports"),
        ));
    }
    let refused = now.fdb_refused.saturating_sub(prev.fdb_refused);
    if refused > 0 {
        out.push((
            Level::Warn,
            format!("event fdb: {refused} MACs not learned (a port's MAC limit or the table full)"),
        ));
    }
    for (what, n, p) in [
        (
            "the flow table full",
            now.nat_refused_full,
            prev.nat_refused_full,
        ),
        (
            "no free outside port",
            now.nat_refused_ports,
            prev.nat_refused_ports,
        ),
    ] {
        let d = n.saturating_sub(p);
        if d > 0 {
            out.push((
                Level::Warn,
                format!("event nat: {d} new flows refused, {what}"),
            ));
        }
    }
    out.extend(port_changes(prev, now));
    out.extend(dns_changes(prev, now));
    out
}

fn port_changes(prev: &Snapshot, now: &Snapshot) -> Vec<(Level, String)> {
    let mut names: Vec<&String> = now.ports.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let (Some(n), p) = (now.ports.get(name), prev.ports.get(name)) else {
            continue;
        };
        for (i, reason) in NOTABLE.iter().enumerate() {
            let before = p.and_then(|p| p.get(i)).copied().unwrap_or(0);
            let d = n.get(i).copied().unwrap_or(0).saturating_sub(before);
            if d > 0 {
                out.push((
                    Level::Warn,
                    format!("event port={name}: {d} frames dropped as {}", reason.name()),
                ));
            }
        }
    }
    out
}

fn dns_changes(prev: &Snapshot, now: &Snapshot) -> Vec<(Level, String)> {
    let mut names: Vec<&String> = now.dns_failures.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let n = now.dns_failures.get(name).copied().unwrap_or(0);
        let d = n.saturating_sub(prev.dns_failures.get(name).copied().unwrap_or(0));
        if d > 0 {
            out.push((
                Level::Warn,
                format!("event network={name}: {d} DNS queries failed (SERVFAIL, REFUSED or over the container's share)"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_moved_nothing_said_and_each_change_one_line() {
        let mut a = Snapshot::default();
        a.ports.insert("web".into(), [0; NOTABLE.len()]);
        assert!(changes(&a, &a).is_empty());
        let mut b = a.clone();
        b.fdb_moves = 3;
        b.nat_refused_full = 7;
        if let Some(p) = b.ports.get_mut("web") {
            p[8] = 120; // tcp_quota
            p[0] = 1; // mac_spoof
        }
        b.ports.insert("db".into(), [0; NOTABLE.len()]);
        b.dns_failures.insert("front".into(), 2);
        let lines: Vec<String> = changes(&a, &b).into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            lines,
            [
                "event fdb: 3 MAC moves between ports",
                "event nat: 7 new flows refused, the flow table full",
                "event port=web: 1 frames dropped as mac_spoof",
                "event port=web: 120 frames dropped as tcp_quota",
                "event network=front: 2 DNS queries failed (SERVFAIL, REFUSED or over the container's share)",
            ]
        );
        // A counter that went back (a port re-attached under the same name) says nothing.
        assert!(changes(&b, &a).is_empty());
    }
}
