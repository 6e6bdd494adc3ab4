//! Which work earns a worker its polling after work.
//!
//! After a round that moved frames a worker polls without sleeping for a while
//! (`runtime::SPIN_AFTER_WORK`): the answer that usually follows finds it awake. A
//! container whose flows the gateway refuses (over its TCP, UDP, echo or DNS quota)
//! gets no answer worth waiting for, only the gateway's refusal; and one that sends
//! such flows at tens of thousands a second would keep the worker polling without
//! pause, a core taken from its neighbours on a small host. So frames from a port the
//! gateway refused a flow within the last second, and the gateway's frames to it (the
//! RSTs of refused SYNs), still go through as ever but earn no polling: the worker
//! sleeps between them and is woken by the next.
//!
//! The gateway thread counts refusals per port in its own counter table, which any
//! thread may read; a worker notes, per port, the count it last saw and the second it
//! last moved.

use std::sync::Arc;

use crate::bridge::CounterTable;
use crate::ids::PortId;

/// Seconds after a port's last refusal during which its work earns no polling.
pub const REFUSED_FOR_SECS: u32 = 1;

/// Per port: the gateway's refusal count as a worker last saw it, and when it moved.
pub struct Refused {
    /// The gateway thread's counters (`Runtime`'s gateway table).
    gateway: Arc<CounterTable>,
    /// By slot: (refusals seen, second they last moved; None: never while seen).
    seen: Vec<(u64, Option<u32>)>,
}

impl Refused {
    pub fn new(gateway: Arc<CounterTable>) -> Refused {
        Refused {
            gateway,
            seen: Vec::new(),
        }
    }

    /// Room for slots `0..slots` (when a port is added: no allocation per frame).
    pub fn fit(&mut self, slots: usize) {
        if self.seen.len() < slots {
            self.seen.resize(slots, (0, None));
        }
    }

    /// Whether the gateway refused `port` a flow within the last
    /// [`REFUSED_FOR_SECS`] at `now` (the worker's clock, in seconds).
    #[inline]
    pub fn recent(&mut self, port: PortId, now: u32) -> bool {
        let n = self.gateway.refusals(port);
        let Some(s) = self.seen.get_mut(port.index()) else {
            return false;
        };
        if n != s.0 {
            *s = (n, Some(now));
        }
        s.1.is_some_and(|t| now.wrapping_sub(t) <= REFUSED_FOR_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::DropReason;

    #[test]
    fn a_port_is_refused_for_a_second_after_the_gateway_last_refused_it() {
        let table = Arc::new(CounterTable::default());
        let mut r = Refused::new(table.clone());
        r.fit(8);
        let (evil, nb) = (PortId(3), PortId(4));
        // Nothing refused yet: neither port.
        assert!(!r.recent(evil, 10) && !r.recent(nb, 10));
        table.count_drop(evil, DropReason::TcpQuota, 1);
        assert!(r.recent(evil, 10));
        assert!(!r.recent(nb, 10), "its neighbour is not");
        // Still within the second after; past it, no longer, until the next refusal.
        assert!(r.recent(evil, 11));
        assert!(!r.recent(evil, 12));
        table.count_drop(evil, DropReason::DnsQuota, 1);
        assert!(r.recent(evil, 20));
        // Drops that are not refusals of a flow do not count.
        table.count_drop(nb, DropReason::ServiceQuota, 5);
        table.count_drop(nb, DropReason::IpSpoof, 5);
        assert!(!r.recent(nb, 20));
    }

    #[test]
    fn a_slot_beyond_the_table_is_never_refused() {
        let table = Arc::new(CounterTable::default());
        let mut r = Refused::new(table.clone());
        r.fit(2);
        table.count_drop(PortId(5), DropReason::TcpQuota, 1);
        assert!(!r.recent(PortId(5), 0));
    }
}
