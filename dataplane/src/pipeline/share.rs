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
#[derive(Clone, Copy, Default)]
pub(super) struct GatewayUse {
    sec: u32,
    frames: u32,
}

/// Keeps the last [`GATEWAY_RESERVE`] slots of the worker's gateway ring for quiet
/// ports: a port's frames take any free slot while more than the reserve is free (the
/// ring is only the way in: the gateway thread moves its frames into its fair queue at
/// once, `crate::fair`, so the ring fills only while that thread is kept from running),
/// and past that only its first [`GATEWAY_LIGHT`] frames of a second, so the ARP and
/// DHCP of quiet ports find room however busy a neighbour keeps the gateway. Nothing is
/// cut while the ring has room. What is cut is counted as `service_quota`. One check
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
    if u.sec != ctx.now {
        *u = GatewayUse {
            sec: ctx.now,
            frames: 0,
        };
    }
    let light = GATEWAY_LIGHT.saturating_sub(u.frames) as usize;
    let spare = ctx.service_room.saturating_sub(GATEWAY_RESERVE);
    let allowed = queued.min(light.max(spare));
    u.frames = u.frames.saturating_add(allowed as u32);
    if allowed < queued {
        local.egress.truncate(GATEWAY_PORT, allowed);
        ctx.counters
            .count_drop(in_port, DropReason::ServiceQuota, (queued - allowed) as u64);
    }
}
