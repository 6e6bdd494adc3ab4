//! Each port's share of the gateway ring.

use super::{Context, Local};
use crate::bridge::DropReason;
use crate::config::GATEWAY_PORT;
use crate::ids::PortId;

/// Frames a second a port may hand the gateway into any free slot of the ring.
pub const GATEWAY_LIGHT: u32 = 256;

/// The part of the gateway ring kept for quiet ports: a port past it gets
/// in only while more than this is free.
pub const GATEWAY_RESERVE: usize = crate::port::ring::RING_SLOTS / 4;

/// Frames one port handed the gateway (through this worker's ring) in second `sec`.
#[derive(Clone, Copy)]
pub(super) struct GatewayUse {
    sec: u32,
    frames: u32,
}

impl Default for GatewayUse {
    /// No second yet: the port's first batch starts one (and counts it as a sender).
    fn default() -> Self {
        GatewayUse {
            sec: u32::MAX,
            frames: 0,
        }
    }
}

/// The most frames one port handed the gateway through this worker's ring, this
/// second and the one before: who is the heaviest sender.
#[derive(Clone, Copy, Default)]
pub(super) struct GatewayTop {
    sec: u32,
    cur: u32,
    prev: u32,
    /// Ports that handed the gateway frames this second and the one before.
    ports_cur: u32,
    ports_prev: u32,
}

impl GatewayTop {
    /// The heaviest port's count as of second `now` (this one's or the last one's).
    fn get(&mut self, now: u32) -> u32 {
        if self.sec != now {
            let last = now == self.sec.wrapping_add(1);
            self.prev = if last { self.cur } else { 0 };
            self.ports_prev = if last { self.ports_cur } else { 0 };
            self.cur = 0;
            self.ports_cur = 0;
            self.sec = now;
        }
        self.cur.max(self.prev)
    }

    /// No other port handed the gateway frames this second or the one before.
    fn alone(&self) -> bool {
        self.ports_cur.max(self.ports_prev) <= 1
    }
}

/// Keeps the last [`GATEWAY_RESERVE`] slots of the worker's gateway ring for quiet
/// ports: a port's frames take any free slot while more than the reserve is free (the
/// ring is only the way in: the gateway thread moves its frames into its fair queue at
/// once, `crate::fair`, so the ring fills only while that thread is kept from running),
/// and past that only its first [`GATEWAY_LIGHT`] frames of a second, or while it has
/// sent fewer this second than the heaviest port (the heaviest sender is the one cut),
/// or while no other port sent the gateway anything this second or the last (a lone
/// port may fill the ring),
/// so the ARP and DHCP of quiet ports, and the traffic of ports busy but lighter than a
/// flooder, find room however busy a neighbour keeps the gateway. Nothing is cut while
/// the ring has room. What is cut is counted as `service_quota`. One check
/// per batch (a batch comes from one port).
#[inline]
pub(super) fn gateway_share(ctx: &Context<'_>, in_port: PortId, local: &mut Local) {
    let queued = local.egress.queue(GATEWAY_PORT).len();
    if queued == 0 {
        return;
    }
    let slot = in_port.index();
    // Grows only when the port table did (as the send lists do).
    if local.gw_use.len() <= slot {
        let slots = ctx.snap.ports.len().max(slot + 1);
        local.gw_use.resize(slots, GatewayUse::default());
    }
    let Some(u) = local.gw_use.get_mut(slot) else {
        return;
    };
    let top = local.gw_top.get(ctx.now);
    if u.sec != ctx.now {
        *u = GatewayUse {
            sec: ctx.now,
            frames: 0,
        };
        local.gw_top.ports_cur += 1;
    }
    let light = GATEWAY_LIGHT.saturating_sub(u.frames) as usize;
    let spare = ctx.service_room.saturating_sub(GATEWAY_RESERVE);
    // A lone port may fill the ring; a port lighter than the heaviest gets any room.
    let alone = local.gw_top.alone();
    let lighter = if u.frames < top || alone {
        ctx.service_room
    } else {
        0
    };
    let allowed = queued.min(light.max(spare).max(lighter));
    u.frames = u.frames.saturating_add(allowed as u32);
    local.gw_top.cur = local.gw_top.cur.max(u.frames);
    if allowed < queued {
        local.egress.truncate(GATEWAY_PORT, allowed);
        ctx.counters
            .count_drop(in_port, DropReason::ServiceQuota, (queued - allowed) as u64);
    }
}
