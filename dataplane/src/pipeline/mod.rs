//! One batch of frames through the stages of the forwarding path:
//!
//! - ingress ([`process`]): counters, the batch's prefetches, one stage loop per batch;
//! - `classify`: the domain of a frame of an untrusted port, its tag popped;
//! - `security`: port security and first-hop guards of the ports vswitch addressed;
//! - `l2`: learning, then flooding, the gateway, or the port a MAC was learned on;
//! - `route`: traffic routed through the packet uplink (NAT on the fast path);
//!   `route6` its IPv6 (NAT66, or routed as it is);
//! - `egress`: the per-port send lists, with each frame's [`Encap`]sulation;
//! - `share`: each port's share of the gateway ring.
//!
//! Sans-I/O: [`process`] takes the frames one port received and leaves, in an
//! [`Egress`], the frames each port should send (as indexes into the batch plus how to
//! encapsulate them). The worker then calls each port's `send`. Per batch: one snapshot
//! load, one FDB pin, one clock read, one counter update per port touched. Per frame:
//! header fields read through `wire` views over the frame's bytes (no parsed header
//! struct), an FDB learn and lookup, and a push into a preallocated queue. Nothing here
//! allocates or locks.
//!
//! [`Encap`]: crate::ids::Encap

mod classify;
mod egress;
mod l2;
mod route;
mod route6;
mod security;
mod share;
#[cfg(test)]
mod tests;

pub use egress::Egress;
pub use share::{GATEWAY_LIGHT, GATEWAY_RESERVE};

use crate::bridge::{CounterTable, DropReason, Fdb, FdbRef};
use crate::config::{PortConf, PortMode, PortRole, Snapshot};
use crate::ids::PortId;
use crate::nat::Nat;
use crate::port::Batch;
use crate::uplink::packet::Neighbours;
use crate::wire::{EtherType, EthernetFrame};

/// A worker's private pipeline state: its send lists, and what each port sent the
/// gateway this second.
#[derive(Default)]
pub struct Local {
    pub egress: Egress,
    gw_use: Vec<share::GatewayUse>,
    gw_top: share::GatewayTop,
}

/// What the pipeline reads and writes besides the frames.
pub struct Context<'a> {
    pub snap: &'a Snapshot,
    pub fdb: &'a Fdb,
    pub counters: &'a CounterTable,
    /// The coarse clock (seconds) for FDB ages and NAT timeouts.
    pub now: u32,
    /// Connection tracking, for the packet uplink.
    pub nat: Option<&'a Nat>,
    /// Who is who on the packet uplink's segment.
    pub neigh: Option<&'a Neighbours>,
    /// Free slots in this worker's gateway ring when the batch started.
    pub service_room: usize,
    /// Where unicast between two kernel-path ports is noted for the pair manager.
    pub kernel_pairs: Option<&'a crate::kernel::hints::PairHints>,
}

/// What every frame of one batch shares (a batch comes from one port), read once and
/// handed to each stage.
struct Ingress<'a> {
    ctx: &'a Context<'a>,
    fdb: &'a FdbRef<'a>,
    /// The port the batch came in on.
    port: &'a PortConf,
    in_port: PortId,
    /// The gateway's port: its frames carry their domain and are not learned.
    trusted: bool,
}

/// Forwards one batch received on `in_port`, filling `local`'s send lists. Frames to
/// drop are counted on `in_port` and left out.
pub fn process(ctx: &Context<'_>, in_port: PortId, batch: &mut Batch, local: &mut Local) {
    let snap = ctx.snap;
    local.egress.fit(snap.ports.len());
    let n = batch.len();
    let rx_bytes: u64 = batch.frames().iter().map(|f| f.len() as u64).sum();
    ctx.counters.rx(in_port, n as u64, rx_bytes);
    let Some(port) = snap.port(in_port) else {
        ctx.counters
            .count_drop(in_port, DropReason::NoNetwork, n as u64);
        return;
    };
    let fdb = ctx.fdb.pin();
    let ing = Ingress {
        ctx,
        fdb: &fdb,
        port,
        in_port,
        trusted: port.role == PortRole::Gateway,
    };
    prefetch(&ing, batch);
    let out = &mut local.egress;
    // Two loops, so that each stage is inlined into its own.
    if port.role == PortRole::Uplink {
        for (i, f) in batch.frames_mut().iter_mut().enumerate() {
            if let Err(r) = route::from_uplink(&ing, i, f, out) {
                ctx.counters.count_drop(in_port, r, 1);
            }
        }
    } else {
        for (i, f) in batch.frames_mut().iter_mut().enumerate() {
            if let Err(r) = l2::forward_one(&ing, i, f, out) {
                ctx.counters.count_drop(in_port, r, 1);
            }
        }
    }
    if !ing.trusted {
        share::gateway_share(ctx, in_port, local);
    }
}

/// Brings every frame's FDB slots into cache before deciding any of them, so a large
/// table costs one overlapped memory access per batch, not two per frame; and, for
/// translated traffic, the flow table's slots.
#[inline(always)]
fn prefetch(ing: &Ingress<'_>, batch: &Batch) {
    if let PortMode::Access { domain } = ing.port.mode
        && !ing.trusted
    {
        for f in batch.frames() {
            if let Ok(eth) = EthernetFrame::new_checked(f.data()) {
                ing.fdb.prefetch(domain, eth.dst());
                ing.fdb.prefetch(domain, eth.src());
            }
        }
    }
    if let Some(nat) = ing.ctx.nat
        && ing.ctx.snap.uplink.is_some()
    {
        for f in batch.frames() {
            let Ok(eth) = EthernetFrame::new_checked(f.data()) else {
                continue;
            };
            match eth.ethertype() {
                EtherType::IPV4 => nat.prefetch(eth.payload()),
                EtherType::IPV6 => nat.prefetch6(eth.payload()),
                _ => {}
            }
        }
    }
}
