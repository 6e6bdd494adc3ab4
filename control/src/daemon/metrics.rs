//! What the metrics thread reads of the daemon: the counters (as `ctl stats`) and what
//! each port is; and what the timer thread logs as notable events.

use std::sync::atomic::Ordering::Relaxed;

use super::Daemon;
use crate::api::Stats;
use crate::events::{self, NOTABLE};
use crate::metrics::PortLabels;

impl Daemon {
    /// Every counter `ctl stats` shows.
    pub fn stats_now(&self) -> Stats {
        self.stats()
    }

    /// Each port's network, container and limits, for the metrics' labels.
    pub fn port_labels(&self) -> Vec<PortLabels> {
        self.ports
            .iter()
            .map(|(name, p)| {
                let limits = self
                    .state
                    .containers
                    .get(&p.container)
                    .and_then(|c| c.endpoint(&p.network))
                    .map(|e| e.limits)
                    .unwrap_or_default();
                PortLabels {
                    port: name.clone(),
                    network: p.network.clone(),
                    container: p.container.clone(),
                    rate_in: limits.rate_in,
                    rate_out: limits.rate_out,
                }
            })
            .collect()
    }

    /// Each network's leased and free addresses, per family (as `network inspect`'s
    /// `Status.IPAM.Subnets`).
    pub fn network_addresses(&self) -> Vec<crate::metrics::NetworkAddresses> {
        let mut out = Vec::new();
        for n in self.state.networks.values() {
            let v4 = self.state.use_v4(n).map(|u| ("ipv4", u));
            let v6 = self.state.use_v6(n).map(|u| ("ipv6", u));
            for (family, u) in v4.into_iter().chain(v6) {
                out.push(crate::metrics::NetworkAddresses {
                    network: n.name.clone(),
                    family,
                    in_use: u.in_use,
                    available: u.available,
                });
            }
        }
        out
    }

    /// The log lines for the notable events since the last call (the first call
    /// reports what happened since the daemon started).
    pub fn take_events(&mut self) -> Vec<(log::Level, String)> {
        let now = self.event_snapshot();
        let lines = events::changes(&self.events, &now);
        self.events = now;
        lines
    }

    /// The counters events are read from: lock-free ones, and the gateway's DNS counts
    /// when its thread answers within a moment (else the last ones, so nothing is said).
    fn event_snapshot(&self) -> events::Snapshot {
        let ports = self
            .ports
            .iter()
            .map(|(name, p)| {
                let s = self.rt.stats(p.slot);
                (name.clone(), NOTABLE.map(|r| s.drop_count(r)))
            })
            .collect();
        let dns = self
            .rt
            .gateway_call_within(std::time::Duration::from_millis(20), |g, _| {
                g.stats().dns.clone()
            });
        let dns_failures = match dns {
            Ok(by_domain) => (self.state.networks.values())
                .filter_map(|n| {
                    let c = by_domain.get(usize::from(n.domain))?;
                    Some((n.name.clone(), c.failures))
                })
                .collect(),
            Err(_) => self.events.dns_failures.clone(),
        };
        let nat = self.packet_nat_counters();
        events::Snapshot {
            fdb_moves: self.rt.fdb.moves.load(Relaxed),
            fdb_refused: self.rt.fdb.refused.load(Relaxed),
            nat_refused_full: nat.refused_full,
            nat_refused_ports: nat.refused_ports,
            ports,
            dns_failures,
        }
    }
}
