//! `limit`: a port's bandwidth limits, changed live (saved, then a new snapshot; the
//! workers' buckets take the new rate with their next batch).

use super::{Daemon, DaemonError};
use crate::api::LimitInfo;
use crate::limit::{PortLimits, format_rate};

impl Daemon {
    /// Applies `update` to the limits of port `port` (`clear`: removes them); with
    /// nothing to change, shows them.
    pub(super) fn limit(
        &mut self,
        port: &str,
        update: &PortLimits,
        clear: bool,
    ) -> Result<LimitInfo, DaemonError> {
        update.check()?;
        let rt = self
            .ports
            .get(port)
            .ok_or_else(|| DaemonError::NoPort(port.to_string()))?;
        let (container, network) = (rt.container.clone(), rt.network.clone());
        let changes = clear || update.rate_in.is_some() || update.rate_out.is_some();
        let changes = changes || update.burst.is_some();
        let limits = if changes {
            self.limit_endpoint(&container, &network, update, clear)?
        } else {
            self.state
                .containers
                .get(&container)
                .and_then(|c| c.endpoint(&network))
                .map(|e| e.limits)
                .unwrap_or_default()
        };
        Ok(LimitInfo {
            port: port.to_string(),
            rate_in: limits.rate_in.map(format_rate),
            rate_out: limits.rate_out.map(format_rate),
            burst: limits.burst,
        })
    }

    /// Sets the limits of `container`'s endpoint on `network` (saved first), and
    /// publishes them. Returns what the endpoint has now.
    pub(super) fn limit_endpoint(
        &mut self,
        container: &str,
        network: &str,
        update: &PortLimits,
        clear: bool,
    ) -> Result<PortLimits, DaemonError> {
        let mut next = self.state.clone();
        let e = next
            .containers
            .get_mut(container)
            .and_then(|c| c.endpoints.iter_mut().find(|e| e.network == network))
            .ok_or_else(|| DaemonError::NoPort(format!("{container} on {network}")))?;
        let base = if clear {
            PortLimits::default()
        } else {
            e.limits
        };
        e.limits = base.updated(update);
        let now = e.limits;
        self.save(&next)?;
        self.state = next;
        self.apply();
        log::info!(
            "limits of {container} on {network}: in {}, out {}",
            now.rate_in.map_or("none".into(), format_rate),
            now.rate_out.map_or("none".into(), format_rate)
        );
        Ok(now)
    }
}
