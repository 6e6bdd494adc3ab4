//! What the metrics thread reads of the daemon: the counters (as `ctl stats`) and what
//! each port is.

use super::Daemon;
use crate::api::Stats;
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
}
