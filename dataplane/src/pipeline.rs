//! One batch of frames through ingress → classify → learn/lookup → egress.
//!
//! Sans-I/O: [`process`] takes the frames one port received and leaves, in an
//! [`Egress`], the frames each port should send (as indexes into the batch plus the tag
//! to push). The worker then calls each port's `send`. Per batch: one snapshot load, one
//! FDB pin, one clock read, one counter update per port touched. Per frame: header
//! fields read by offset from the bytes (no parsed header struct), an FDB learn and
//! lookup, and a push into a preallocated queue. Nothing here allocates or locks.

use crate::bridge::{CounterTable, DropReason, Fdb, FdbRef};
use crate::config::{PortMode, PortRole, SERVICE_PORT, Snapshot, UPLINK_DOMAIN, UPLINK_PORT};
use crate::nat::{Nat, NatDrop, NatVerdict};
use crate::port::{Batch, MAX_BATCH, TxSel};
use crate::port::{Punt, VnetHdr};
use crate::uplink::packet::Neighbours;
use crate::wire::{EtherType, MacAddr};

/// Per-port send lists for one batch.
pub struct Egress {
    queues: Vec<TxQueue>,
    touched: Vec<u16>,
}

#[derive(Clone, Copy)]
struct TxQueue {
    len: u8,
    sel: [TxSel; MAX_BATCH],
}

impl Default for TxQueue {
    fn default() -> Self {
        TxQueue {
            len: 0,
            sel: [TxSel::default(); MAX_BATCH],
        }
    }
}

impl Default for Egress {
    fn default() -> Self {
        Egress::new(64)
    }
}

impl Egress {
    /// Queues for `slots` port slots (grown by [`Egress::fit`] when ports are added).
    pub fn new(slots: usize) -> Egress {
        Egress {
            queues: vec![TxQueue::default(); slots],
            touched: Vec::with_capacity(slots),
        }
    }

    /// Makes room for `slots` ports. Allocates only when the port table grew.
    pub fn fit(&mut self, slots: usize) {
        if self.queues.len() < slots {
            self.queues.resize(slots, TxQueue::default());
            self.touched
                .reserve(slots.saturating_sub(self.touched.capacity()));
        }
    }

    #[inline(always)]
    fn push(&mut self, port: u16, idx: usize, vlan: u16) {
        let Some(q) = self.queues.get_mut(usize::from(port)) else {
            return;
        };
        let n = usize::from(q.len);
        let Some(slot) = q.sel.get_mut(n) else {
            return;
        };
        *slot = TxSel {
            idx: idx as u8,
            vlan,
        };
        if n == 0 && self.touched.len() < self.touched.capacity() {
            self.touched.push(port);
        }
        q.len += 1;
    }

    /// The ports that have frames to send, in first-touched order.
    #[inline]
    pub fn touched(&self) -> &[u16] {
        &self.touched
    }

    /// The frames port `port` should send.
    #[inline]
    pub fn queue(&self, port: u16) -> &[TxSel] {
        self.queues
            .get(usize::from(port))
            .and_then(|q| q.sel.get(..usize::from(q.len)))
            .unwrap_or(&[])
    }

    /// Keeps only the first `n` frames queued for `port`.
    #[inline]
    fn truncate(&mut self, port: u16, n: usize) {
        if let Some(q) = self.queues.get_mut(usize::from(port)) {
            q.len = q.len.min(u8::try_from(n).unwrap_or(u8::MAX));
        }
    }

    /// Empties every queue for the next batch.
    #[inline]
    pub fn clear(&mut self) {
        for &p in &self.touched {
            if let Some(q) = self.queues.get_mut(usize::from(p)) {
                q.len = 0;
            }
        }
        self.touched.clear();
    }
}

/// A worker's private pipeline state: its send lists, and what each port sent the
/// gateway this second.
#[derive(Default)]
pub struct Local {
    pub egress: Egress,
    gw_use: Vec<GatewayUse>,
}

/// Frames one port handed the gateway (through this worker's ring) in second `sec`.
#[derive(Clone, Copy, Default)]
struct GatewayUse {
    sec: u32,
    frames: u32,
}

/// Frames a second one port may always hand the gateway, by default.
pub const DEFAULT_GATEWAY_SHARE: u32 = 100_000;

/// Frames a second a port may hand the gateway into any free slot of the ring.
pub const GATEWAY_LIGHT: u32 = 256;

/// The part of the gateway ring kept for quiet ports: a port past it gets
/// in only while more than this is free.
pub const GATEWAY_RESERVE: usize = crate::port::service::SERVICE_RING / 4;

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
    /// Frames a second a port may hand the gateway ([`DEFAULT_GATEWAY_SHARE`]).
    pub gateway_share: u32,
}

const ETH_LEN: usize = 14;

#[inline]
fn mac_at(d: &[u8], at: usize) -> MacAddr {
    match d.get(at..at + 6) {
        Some(b) => MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]),
        None => MacAddr::ZERO,
    }
}

#[inline]
fn be16_at(d: &[u8], at: usize) -> u16 {
    match d.get(at..at + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    }
}

#[inline]
fn ip_at(d: &[u8], at: usize) -> Option<[u8; 4]> {
    d.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]])
}

/// Forwards one batch received on `in_port`, filling `out`. Frames to drop are
/// counted on `in_port` and left out.
pub fn process(ctx: &Context<'_>, in_port: u16, batch: &mut Batch, local: &mut Local) {
    let snap = ctx.snap;
    let out = &mut local.egress;
    out.fit(snap.ports.len());
    let mut rx_bytes = 0u64;
    let n = batch.len();
    for f in batch.frames() {
        rx_bytes += f.len() as u64;
    }
    ctx.counters.rx(in_port, n as u64, rx_bytes);

    let Some(pconf) = snap.port(in_port) else {
        ctx.counters
            .count_drop(in_port, DropReason::NoNetwork, n as u64);
        return;
    };
    let fdb = ctx.fdb.pin();
    let trusted = pconf.role == PortRole::Gateway;

    // Bring every frame's FDB slots into cache before deciding any of them, so a
    // large table costs one overlapped memory access per batch, not two per frame.
    if let PortMode::Access { domain } = pconf.mode
        && !trusted
    {
        for f in batch.frames() {
            let d = f.data();
            fdb.prefetch(domain, mac_at(d, 0));
            fdb.prefetch(domain, mac_at(d, 6));
        }
    }

    // Translated traffic: bring the flow table's slots in for the whole batch first.
    if let Some(nat) = ctx.nat
        && snap.uplink.is_some()
    {
        for f in batch.frames() {
            if let Some(ip) = f.data().get(ETH_LEN..)
                && be16_at(f.data(), 12) == EtherType::IPV4
            {
                nat.prefetch(ip);
            }
        }
    }
    if pconf.role == PortRole::Uplink {
        for (i, f) in batch.frames_mut().iter_mut().enumerate() {
            if let Err(r) = from_uplink(ctx, &fdb, i, f, out) {
                ctx.counters.count_drop(in_port, r, 1);
            }
        }
    } else {
        for (i, f) in batch.frames_mut().iter_mut().enumerate() {
            if let Err(r) = forward_one(ctx, &fdb, pconf, trusted, in_port, i, f, out) {
                ctx.counters.count_drop(in_port, r, 1);
            }
        }
    }
    if !trusted {
        gateway_share(ctx, in_port, local);
    }
}

/// Holds a port to its share of the gateway ring: at most `gateway_share` frames a
/// second; its first [`GATEWAY_LIGHT`] frames of a second may use the whole ring, the
/// rest only while more than [`GATEWAY_RESERVE`] slots are free, so the ARP and DHCP of
/// quiet ports always find room however busy a neighbour keeps the gateway. What is
/// cut is counted as `service_quota`. One check per batch (a batch comes from one port).
#[inline]
fn gateway_share(ctx: &Context<'_>, in_port: u16, local: &mut Local) {
    let queued = local.egress.queue(SERVICE_PORT).len();
    if queued == 0 {
        return;
    }
    let slot = usize::from(in_port);
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
    let cap = ctx.gateway_share.saturating_sub(u.frames) as usize;
    let light = GATEWAY_LIGHT.saturating_sub(u.frames) as usize;
    let spare = ctx.service_room.saturating_sub(GATEWAY_RESERVE);
    let allowed = queued.min(cap).min(light.max(spare));
    u.frames = u.frames.saturating_add(allowed as u32);
    if allowed < queued {
        local.egress.truncate(SERVICE_PORT, allowed);
        ctx.counters
            .count_drop(in_port, DropReason::ServiceQuota, (queued - allowed) as u64);
    }
}

/// Writes an Ethernet header's MAC addresses in place.
#[inline]
fn set_macs(f: &mut crate::port::Frame, dst: MacAddr, src: MacAddr) {
    if let Some(h) = f.data_mut().get_mut(..12) {
        h[..6].copy_from_slice(&dst.0);
        h[6..].copy_from_slice(&src.0);
    }
}

/// Decrements an IPv4 TTL in place (incremental checksum). False when it ran out.
#[inline]
fn ttl_step(ip: &mut [u8]) -> bool {
    let (Some(&ttl), Some(&proto)) = (ip.get(8), ip.get(9)) else {
        return false;
    };
    if ttl <= 1 {
        return false;
    }
    let old = u16::from_be_bytes([ttl, proto]);
    let new = u16::from_be_bytes([ttl - 1, proto]);
    if let Some(c) = ip.get(10..12).map(|b| u16::from_be_bytes([b[0], b[1]])) {
        let c = crate::wire::checksum::update16(c, old, new);
        if let Some(b) = ip.get_mut(8..12) {
            b[0] = ttl - 1;
            b[2..4].copy_from_slice(&c.to_be_bytes());
        }
    }
    true
}

fn nat_drop(d: NatDrop) -> DropReason {
    match d {
        NatDrop::TableFull => DropReason::NatFull,
        NatDrop::Quota => DropReason::NatQuota,
        NatDrop::Malformed => DropReason::Malformed,
        _ => DropReason::NoRoute,
    }
}

/// Delivers a translated packet to container `ip` of `domain`.
#[inline]
fn deliver_in(
    ctx: &Context<'_>,
    fdb: &FdbRef<'_>,
    i: usize,
    f: &mut crate::port::Frame,
    out: &mut Egress,
    to: (u16, std::net::Ipv4Addr),
) -> Result<(), DropReason> {
    let (domain, ip) = to;
    let up = ctx.snap.uplink.as_ref().ok_or(DropReason::NoRoute)?;
    let dconf = ctx.snap.domain(domain).ok_or(DropReason::NoNetwork)?;
    let mac = up.host_mac(domain, ip).ok_or(DropReason::NoRoute)?;
    set_macs(f, mac, dconf.gateway_mac);
    f.domain = domain;
    if let Some((port, gen_)) = fdb.lookup(domain, mac)
        && let Some(p) = ctx.snap.port(port)
        && p.gen_ == gen_
        && let Some(tag) = p.egress_tag(domain, dconf.vlan)
    {
        out.push(port, i, tag);
        return Ok(());
    }
    flood(dconf, UPLINK_PORT, false, i, out);
    Ok(())
}

/// A frame from a container to the gateway, bound outside: translated and sent out the
/// packet uplink (or, for its own external address, looped back in: hairpin).
#[inline]
fn route_out(
    ctx: &Context<'_>,
    fdb: &FdbRef<'_>,
    i: usize,
    f: &mut crate::port::Frame,
    out: &mut Egress,
    domain: u16,
) -> Result<(), DropReason> {
    let (Some(up), Some(nat)) = (ctx.snap.uplink.as_ref(), ctx.nat) else {
        return Err(DropReason::NoRoute);
    };
    let partial = f.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0;
    let vnet = f.vnet;
    let Some(ip) = f.data_mut().get_mut(ETH_LEN..) else {
        return Err(DropReason::Malformed);
    };
    // Larger than the segment takes, with DF (not for hairpin traffic, which never
    // crosses it): the gateway answers fragmentation needed.
    if too_big(ip, &vnet, up.mtu) && ip_at(ip, 16) != Some(up.ext_ip.octets()) {
        f.punt = Punt::TooBig;
        out.push(SERVICE_PORT, i, 0);
        return Ok(());
    }
    if !ttl_step(ip) {
        f.punt = Punt::TimeExceeded;
        out.push(SERVICE_PORT, i, 0);
        return Ok(());
    }
    match nat.outbound(ip, domain, up.ext_ip, &up.rules, partial, ctx.now) {
        Ok(NatVerdict::Out { dst }) if dst == up.ext_ip => {
            // Hairpin: the destination is our own external address.
            match nat.inbound(ip, up.ext_ip, &up.rules, partial, ctx.now) {
                Ok(NatVerdict::In { domain, ip }) => deliver_in(ctx, fdb, i, f, out, (domain, ip)),
                Ok(NatVerdict::Out { .. }) => Err(DropReason::NoRoute),
                Err(d) => Err(nat_drop(d)),
            }
        }
        Ok(NatVerdict::Out { dst }) => {
            let neigh = ctx.neigh.ok_or(DropReason::NoRoute)?;
            let mac = if up.on_link(dst) {
                neigh.lookup(dst)
            } else {
                neigh.next_hop()
            };
            match mac {
                Some(m) => {
                    set_macs(f, m, up.ext_mac);
                    out.push(UPLINK_PORT, i, 0);
                    Ok(())
                }
                // Not resolved yet: the gateway asks (ARP) and this packet is lost, as
                // a router without a neighbour entry does.
                None => {
                    f.punt = Punt::Unresolved;
                    out.push(SERVICE_PORT, i, 0);
                    Ok(())
                }
            }
        }
        Ok(NatVerdict::In { .. }) => Err(DropReason::NoRoute),
        Err(d) => Err(nat_drop(d)),
    }
}

/// Whether an IPv4 packet with DF set is larger than `mtu` (for a super-frame: whether
/// its segments are).
#[inline]
fn too_big(ip: &[u8], vnet: &VnetHdr, mtu: u16) -> bool {
    let Some(&[vihl, _, l0, l1, _, _, flags, _]) = ip.first_chunk::<8>() else {
        return false;
    };
    if flags & 0x40 == 0 {
        return false;
    }
    let total = usize::from(u16::from_be_bytes([l0, l1]));
    let gso = vnet.gso_type & !VnetHdr::GSO_ECN;
    if gso == VnetHdr::GSO_NONE {
        return total > usize::from(mtu);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let l4 = if gso == VnetHdr::GSO_TCPV4 {
        ip.get(ihl + 12).map_or(20, |d| usize::from(d >> 4) * 4)
    } else {
        8
    };
    // A super-frame holding one short segment is that segment.
    (ihl + l4 + usize::from(vnet.gso_size)).min(total) > usize::from(mtu)
}

/// A frame arriving on the packet uplink's port.
#[inline]
fn from_uplink(
    ctx: &Context<'_>,
    fdb: &FdbRef<'_>,
    i: usize,
    f: &mut crate::port::Frame,
    out: &mut Egress,
) -> Result<(), DropReason> {
    let (Some(up), Some(nat)) = (ctx.snap.uplink.as_ref(), ctx.nat) else {
        return Err(DropReason::NoNetwork);
    };
    if f.len() < ETH_LEN {
        return Err(DropReason::Malformed);
    }
    f.domain = UPLINK_DOMAIN;
    let d = f.data();
    let ethertype = be16_at(d, 12);
    let dst = mac_at(d, 0);
    if ethertype == EtherType::ARP {
        out.push(SERVICE_PORT, i, 0);
        return Ok(());
    }
    if ethertype != EtherType::IPV4 || (dst != up.ext_mac && !dst.is_broadcast()) {
        return Err(DropReason::NoNetwork);
    }
    if ip_at(d, ETH_LEN + 16) != Some(up.ext_ip.octets()) {
        return Err(DropReason::NoRoute);
    }
    let partial = f.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0;
    let Some(ip) = f.data_mut().get_mut(ETH_LEN..) else {
        return Err(DropReason::Malformed);
    };
    match nat.inbound(ip, up.ext_ip, &up.rules, partial, ctx.now) {
        Ok(NatVerdict::In { domain, ip: to }) => {
            if !ttl_step(ip) {
                return Err(DropReason::NoRoute);
            }
            deliver_in(ctx, fdb, i, f, out, (domain, to))
        }
        Ok(NatVerdict::Out { .. }) => Err(DropReason::NoRoute),
        // For the uplink's address itself (ping), or a closed port there (an RST or
        // port unreachable is due): the gateway answers.
        Err(NatDrop::Local) | Err(NatDrop::NoFlow) => {
            out.push(SERVICE_PORT, i, 0);
            Ok(())
        }
        Err(d) => Err(nat_drop(d)),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_one(
    ctx: &Context<'_>,
    fdb: &FdbRef<'_>,
    pconf: &crate::config::PortConf,
    trusted: bool,
    in_port: u16,
    i: usize,
    f: &mut crate::port::Frame,
    out: &mut Egress,
) -> Result<(), DropReason> {
    let snap = ctx.snap;
    if f.len() < ETH_LEN {
        return Err(DropReason::Malformed);
    }
    f.in_port = in_port;

    // Classify: which domain, and strip the tag so the frame is untagged inside.
    let (domain, ethertype) = if trusted {
        // The gateway's frames for the uplink segment go straight out there.
        if f.domain == UPLINK_DOMAIN {
            out.push(UPLINK_PORT, i, 0);
            return Ok(());
        }
        (f.domain, be16_at(f.data(), 12))
    } else {
        classify(snap, pconf, f)?
    };
    f.domain = domain;
    let Some(dconf) = snap.domain(domain) else {
        return Err(DropReason::NoNetwork);
    };

    let d = f.data();
    let dst = mac_at(d, 0);
    let src = mac_at(d, 6);

    if !trusted {
        if src.is_multicast() || src.is_zero() {
            return Err(DropReason::BadSrcMac);
        }
        if let Some(sec) = &pconf.security {
            port_security(sec, d, src, ethertype)?;
        }
        fdb.learn(domain, src, in_port, pconf.gen_, ctx.now, pconf.mac_limit);
    }

    let from_container = pconf.role == PortRole::Container;
    if dst.is_multicast() {
        // Broadcasts also reach the gateway (ARP for it, DHCP); other multicast does not.
        if dst.is_broadcast() && !trusted {
            out.push(SERVICE_PORT, i, 0);
        }
        flood(dconf, in_port, from_container, i, out);
        return Ok(());
    }
    if dst == dconf.gateway_mac {
        if trusted {
            return Err(DropReason::SamePort);
        }
        // Routed through the packet uplink: translated here, on the fast path.
        if snap.uplink.is_some()
            && ctx.nat.is_some()
            && ethertype == EtherType::IPV4
            && let Some(dip) = ip_at(f.data(), ETH_LEN + 16)
        {
            let dip = std::net::Ipv4Addr::from(dip);
            if dip != dconf.gateway_ip
                && !dip.is_broadcast()
                && !dip.is_multicast()
                && !snap.is_inside(dip)
            {
                if !dconf.egress {
                    return Err(DropReason::NoRoute);
                }
                return route_out(ctx, fdb, i, f, out, domain);
            }
        }
        out.push(SERVICE_PORT, i, 0);
        return Ok(());
    }
    if let Some((port, gen_)) = fdb.lookup(domain, dst)
        && let Some(p) = snap.port(port)
        && p.gen_ == gen_
        && let Some(tag) = p.egress_tag(domain, dconf.vlan)
    {
        if port == in_port {
            return Err(DropReason::SamePort);
        }
        if !dconf.icc && from_container && p.role == PortRole::Container {
            return Err(DropReason::Icc);
        }
        out.push(port, i, tag);
        return Ok(());
    }
    flood(dconf, in_port, from_container, i, out);
    Ok(())
}

/// Classify a frame of an untrusted port: the domain it belongs to (its port's network,
/// or the network of its VLAN on a trunk), with its tag popped so the frame is untagged
/// inside the switch. Returns the domain and the EtherType behind the tag.
#[inline(always)]
fn classify(
    snap: &Snapshot,
    pconf: &crate::config::PortConf,
    f: &mut crate::port::Frame,
) -> Result<(u16, u16), DropReason> {
    let mut ethertype = be16_at(f.data(), 12);
    let tagged = ethertype == EtherType::VLAN;
    let vid = if tagged {
        be16_at(f.data(), 14) & 0x0fff
    } else {
        0
    };
    let d = match &pconf.mode {
        PortMode::Access { domain } => {
            // Only priority tags (VID 0) are accepted on an access port, and never
            // with another tag behind them (VLAN hopping), nor 802.1ad.
            if tagged && vid != 0 {
                return Err(DropReason::VlanNotAllowed);
            }
            if ethertype == EtherType::QINQ
                || (tagged && crate::wire::vlan::is_tpid(be16_at(f.data(), 16)))
            {
                return Err(DropReason::DoubleTag);
            }
            *domain
        }
        PortMode::Trunk { native, vlans } => {
            if tagged && vid != 0 {
                if !vlans.contains(vid) {
                    return Err(DropReason::VlanNotAllowed);
                }
                snap.vlan_to_domain(vid).ok_or(DropReason::NoNetwork)?
            } else {
                native.ok_or(DropReason::NoNetwork)?
            }
        }
    };
    if tagged {
        if !f.pop_tag() {
            return Err(DropReason::Malformed);
        }
        ethertype = be16_at(f.data(), 12);
    }
    // A tag behind the one classified (double tagging, or an S-tag) would leave a
    // trunk as a tag of another network: VLAN hopping.
    if crate::wire::vlan::is_tpid(ethertype) {
        return Err(DropReason::VlanNotAllowed);
    }
    Ok((d, ethertype))
}

/// Port security of a port vswitch addressed: its own MAC and IPv4 (0.0.0.0 allowed for
/// DHCP) as Ethernet source, IPv4 source and ARP sender, and the first-hop guards.
#[inline(always)]
fn port_security(
    sec: &crate::config::Security,
    d: &[u8],
    src: MacAddr,
    ethertype: u16,
) -> Result<(), DropReason> {
    if src != sec.mac {
        return Err(DropReason::MacSpoof);
    }
    let own = sec.ip.map(|ip| ip.octets());
    let allowed = |ip: [u8; 4]| ip == [0; 4] || Some(ip) == own;
    match ethertype {
        EtherType::IPV4 => {
            let ip = ip_at(d, ETH_LEN + 12).ok_or(DropReason::Malformed)?;
            if !allowed(ip) {
                return Err(DropReason::IpSpoof);
            }
            guard_v4(d)?;
        }
        EtherType::IPV6 => guard_v6(d)?,
        EtherType::ARP => {
            let sha = d
                .get(ETH_LEN + 8..ETH_LEN + 14)
                .ok_or(DropReason::Malformed)?;
            let spa = ip_at(d, ETH_LEN + 14).ok_or(DropReason::Malformed)?;
            if sha != sec.mac.0 {
                return Err(DropReason::MacSpoof);
            }
            if !allowed(spa) {
                return Err(DropReason::IpSpoof);
            }
        }
        // Anything else may only carry the port's MAC, checked above.
        _ => {}
    }
    Ok(())
}

const DHCP_SERVER_PORT: u16 = 67;
const DHCPV6_SERVER_PORT: u16 = 547;

/// First-hop guard for IPv4 from a secured port: no DHCP server messages (UDP from
/// port 67). Reads the protocol and, for UDP, the source port; nothing else.
#[inline(always)]
fn guard_v4(d: &[u8]) -> Result<(), DropReason> {
    let Some(&[vihl, _, _, _, _, _, f0, f1, _, proto]) =
        d.get(ETH_LEN..).and_then(|ip| ip.first_chunk::<10>())
    else {
        return Err(DropReason::Malformed);
    };
    // Later fragments carry no UDP header; the first one does.
    if proto != u8::from(crate::wire::IpProtocol::Udp) || u16::from_be_bytes([f0, f1]) & 0x1fff != 0
    {
        return Ok(());
    }
    let sport = ETH_LEN + usize::from(vihl & 0x0f) * 4;
    if be16_at(d, sport) == DHCP_SERVER_PORT {
        return Err(DropReason::DhcpGuard);
    }
    Ok(())
}

/// First-hop guard for IPv6 from a secured port (RFC 6105): a source in fe80::/64 or
/// ::, no router advertisement or redirect, no DHCPv6 server message; extension
/// headers are walked, and a chain that cannot be followed is dropped.
#[cold]
fn guard_v6(d: &[u8]) -> Result<(), DropReason> {
    use crate::wire::ipv6::{Icmpv6Type, NextHeader, Upper, is_unaddressed_source};
    let ip = d.get(ETH_LEN..).ok_or(DropReason::Malformed)?;
    let p = crate::wire::Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Malformed)?;
    if !is_unaddressed_source(&p.src_octets()) {
        return Err(DropReason::IpSpoof);
    }
    let (proto, at) = match p.upper().map_err(|_| DropReason::BadIpv6Chain)? {
        Upper::At { proto, offset } => (proto, offset),
        Upper::LaterFragment | Upper::Opaque => return Ok(()),
    };
    match proto {
        NextHeader::ICMPV6 => match ip.get(at) {
            Some(&(Icmpv6Type::ROUTER_ADVERT | Icmpv6Type::REDIRECT)) => Err(DropReason::RaGuard),
            _ => Ok(()),
        },
        NextHeader::UDP if be16_at(ip, at) == DHCPV6_SERVER_PORT => Err(DropReason::DhcpGuard),
        _ => Ok(()),
    }
}

#[inline]
fn flood(
    dconf: &crate::config::DomainConf,
    in_port: u16,
    from_container: bool,
    i: usize,
    out: &mut Egress,
) {
    let isolate = !dconf.icc && from_container;
    for m in &dconf.members {
        if m.port == in_port || (isolate && m.role == PortRole::Container) {
            continue;
        }
        out.push(m.port, i, m.tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::VlanSet;
    use crate::config::{DomainConf, FIRST_PORT, PortConf, Security};
    use crate::port::{MemoryPort, Port};
    use std::net::Ipv4Addr;

    const GW1: MacAddr = MacAddr([0x02, 0x42, 10, 1, 0, 1]);

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    fn frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&dst.0);
        v.extend_from_slice(&src.0);
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(payload);
        v.resize(v.len().max(60), 0);
        v
    }

    fn tagged(dst: MacAddr, src: MacAddr, vid: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&dst.0);
        v.extend_from_slice(&src.0);
        v.extend_from_slice(&[0x81, 0x00]);
        v.extend_from_slice(&vid.to_be_bytes());
        v.extend_from_slice(&[0x08, 0x00]);
        v.extend_from_slice(payload);
        v.resize(v.len().max(64), 0);
        v
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p
    }

    fn arp(sha: MacAddr, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&sha.0);
        p.extend_from_slice(&spa);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&tpa);
        p
    }

    fn domain(name: &str, vlan: Option<u16>, third: u8, icc: bool) -> Option<DomainConf> {
        Some(DomainConf {
            name: name.into(),
            vlan,
            gateway_mac: MacAddr([0x02, 0x42, 10, third, 0, 1]),
            gateway_ip: Ipv4Addr::new(10, third, 0, 1),
            subnet: Ipv4Addr::new(10, third, 0, 0),
            prefix_len: 24,
            icc,
            egress: true,
            members: vec![],
        })
    }

    fn access(name: &str, domain: u16) -> Option<PortConf> {
        Some(PortConf {
            name: name.into(),
            gen_: 0,
            role: PortRole::Container,
            mode: PortMode::Access { domain },
            security: None,
            mac_limit: 1024,
        })
    }

    /// Ports: 0 gateway, 1 none, 2..=4 access domain 0 (vlan 10 on trunks), 5 access
    /// domain 1 (vlan 20), 6 trunk (native 0, vlans 10 20 30), 7 access domain 2 (no icc).
    struct Rig {
        snap: Snapshot,
        fdb: Fdb,
        counters: CounterTable,
        ports: Vec<MemoryPort>,
        now: u32,
        local: Local,
        room: usize,
        share: u32,
    }

    impl Rig {
        fn new() -> Rig {
            let gw = Some(PortConf {
                name: "gateway".into(),
                gen_: 0,
                role: PortRole::Gateway,
                mode: PortMode::Access { domain: 0 },
                security: None,
                mac_limit: 0,
            });
            let mut snap = Snapshot {
                domains: vec![
                    domain("a", Some(10), 1, true),
                    domain("b", Some(20), 2, true),
                    domain("c", None, 3, false),
                ],
                ports: vec![
                    gw,
                    None,
                    access("p2", 0),
                    access("p3", 0),
                    access("p4", 0),
                    access("p5", 1),
                    Some(PortConf {
                        name: "t6".into(),
                        gen_: 0,
                        role: PortRole::Container,
                        mode: PortMode::Trunk {
                            native: Some(0),
                            vlans: VlanSet::from_ids([10, 20, 30]),
                        },
                        security: None,
                        mac_limit: 1024,
                    }),
                    access("p7", 2),
                    access("p8", 2),
                ],
                ..Default::default()
            };
            snap.rebuild();
            Rig {
                snap,
                fdb: Fdb::default(),
                counters: CounterTable::default(),
                ports: (0..9).map(|i| MemoryPort::new(format!("m{i}"))).collect(),
                now: 0,
                local: Local::default(),
                room: crate::port::service::SERVICE_RING,
                share: DEFAULT_GATEWAY_SHARE,
            }
        }

        /// Sends `frames` in on `port`; returns what each port sent.
        fn run(&mut self, port: u16, frames: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
            self.run_with_domain(port, frames, 0)
        }

        fn run_with_domain(
            &mut self,
            port: u16,
            frames: &[Vec<u8>],
            dom: u16,
        ) -> Vec<Vec<Vec<u8>>> {
            self.run_full(port, frames, dom, None)
        }

        /// As `run`, with the packet uplink's NAT and neighbours.
        fn run_full(
            &mut self,
            port: u16,
            frames: &[Vec<u8>],
            dom: u16,
            nat: Option<(&Nat, &Neighbours)>,
        ) -> Vec<Vec<Vec<u8>>> {
            let mut batch = Batch::new(64, 2048);
            for f in frames {
                assert!(batch.push(f, dom));
            }
            let ctx = Context {
                snap: &self.snap,
                fdb: &self.fdb,
                counters: &self.counters,
                now: self.now,
                nat: nat.map(|n| n.0),
                neigh: nat.map(|n| n.1),
                service_room: self.room,
                gateway_share: self.share,
            };
            process(&ctx, port, &mut batch, &mut self.local);
            let out = &mut self.local.egress;
            for &p in out.touched() {
                let sel = out.queue(p);
                let n = self.ports[usize::from(p)].send(&batch, sel).unwrap();
                self.counters.tx(p, n as u64, 0);
            }
            out.clear();
            self.ports.iter_mut().map(|p| p.take_sent()).collect()
        }
    }

    fn who_got(sent: &[Vec<Vec<u8>>]) -> Vec<usize> {
        sent.iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn unknown_unicast_floods_within_domain_then_learned_goes_direct() {
        let mut r = Rig::new();
        let sent = r.run(2, &[frame(mac(3), mac(2), 0x0800, &[])]);
        // Ports of domain a: 3, 4 and trunk 6 (native, untagged); never 5 or 7.
        assert_eq!(who_got(&sent), vec![3, 4, 6]);
        assert_eq!(sent[6][0][12..14], [0x08, 0x00]);
        // The reply from 3 goes straight to 2, which was learned.
        let sent = r.run(3, &[frame(mac(2), mac(3), 0x0800, &[])]);
        assert_eq!(who_got(&sent), vec![2]);
        // And now 2 -> 3 is direct too.
        let sent = r.run(2, &[frame(mac(3), mac(2), 0x0800, &[])]);
        assert_eq!(who_got(&sent), vec![3]);
    }

    #[test]
    fn broadcast_reaches_gateway_and_domain_only() {
        let mut r = Rig::new();
        let sent = r.run(
            5,
            &[frame(
                MacAddr::BROADCAST,
                mac(5),
                0x0806,
                &arp(mac(5), [10, 2, 0, 5], [10, 2, 0, 1]),
            )],
        );
        // Domain b: the gateway (0) and the trunk (6, tagged 20).
        assert_eq!(who_got(&sent), vec![0, 6]);
        assert_eq!(&sent[6][0][12..16], &[0x81, 0x00, 0x00, 20]);
        // Multicast other than broadcast does not bother the gateway.
        let sent = r.run(
            5,
            &[frame(
                MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
                mac(5),
                0x0800,
                &[],
            )],
        );
        assert_eq!(who_got(&sent), vec![6]);
    }

    #[test]
    fn gateway_mac_goes_to_service_port() {
        let mut r = Rig::new();
        let sent = r.run(
            2,
            &[frame(
                GW1,
                mac(2),
                0x0800,
                &ipv4([10, 1, 0, 2], [10, 1, 0, 1]),
            )],
        );
        assert_eq!(who_got(&sent), vec![0]);
    }

    #[test]
    fn trunk_pops_tags_and_pushes_them_back() {
        let mut r = Rig::new();
        // From the trunk, tagged 20: belongs to domain b; reaches 5 untagged and the
        // gateway, nothing in domain a.
        let sent = r.run(6, &[tagged(MacAddr::BROADCAST, mac(60), 20, &[1, 2, 3])]);
        assert_eq!(who_got(&sent), vec![0, 5]);
        assert_eq!(sent[5][0][12..14], [0x08, 0x00]);
        assert_eq!(sent[5][0][14..17], [1, 2, 3]);
        assert_eq!(sent[5][0].len(), 60);
        // 5 answers unicast: goes back to the trunk with tag 20.
        let sent = r.run(5, &[frame(mac(60), mac(5), 0x0800, &[9])]);
        assert_eq!(who_got(&sent), vec![6]);
        assert_eq!(&sent[6][0][12..18], &[0x81, 0x00, 0x00, 20, 0x08, 0x00]);
        assert_eq!(sent[6][0][18], 9);
    }

    #[test]
    fn trunk_native_and_disallowed_tags() {
        let mut r = Rig::new();
        // Untagged from the trunk: native domain a.
        let sent = r.run(6, &[frame(MacAddr::BROADCAST, mac(61), 0x0800, &[])]);
        assert_eq!(who_got(&sent), vec![0, 2, 3, 4]);
        // Tag 10 is domain a too (the network's --vlan).
        let sent = r.run(6, &[tagged(mac(2), mac(62), 10, &[])]);
        assert_eq!(who_got(&sent), vec![2, 3, 4]);
        // Tag 40 is not carried: dropped. Tag 30 is carried but no network has it.
        let sent = r.run(
            6,
            &[
                tagged(MacAddr::BROADCAST, mac(61), 40, &[]),
                tagged(MacAddr::BROADCAST, mac(61), 30, &[]),
            ],
        );
        assert!(who_got(&sent).is_empty());
        let s = r.counters.read(6);
        assert_eq!(s.drop_count(DropReason::VlanNotAllowed), 1);
        assert_eq!(s.drop_count(DropReason::NoNetwork), 1);
    }

    #[test]
    fn access_port_drops_tagged_but_takes_priority_tag() {
        let mut r = Rig::new();
        let sent = r.run(2, &[tagged(MacAddr::BROADCAST, mac(2), 20, &[])]);
        assert!(who_got(&sent).is_empty());
        assert_eq!(r.counters.read(2).drop_count(DropReason::VlanNotAllowed), 1);
        let sent = r.run(2, &[tagged(MacAddr::BROADCAST, mac(2), 0, &[])]);
        assert_eq!(who_got(&sent), vec![0, 3, 4, 6]);
        assert_eq!(sent[3][0][12..14], [0x08, 0x00]);
    }

    /// Found by the `pipeline` fuzz target: a priority tag in front of another tag
    /// left the inner tag on the frame, so a trunk would have carried it into the
    /// network of that VLAN (double-tagging VLAN hopping).
    #[test]
    fn a_tag_behind_the_classified_one_is_dropped() {
        let mut r = Rig::new();
        // The fuzzer's input: priority tag, then another priority tag.
        let fuzzed = [
            0xff, 0xff, 0xff, 0x06, 0x00, 0x00, 0x06, 0x08, 0x3a, 0x8e, 0xb5, 0x55, 0x81, 0x00,
            0x00, 0x00, 0x81, 0x00, 0x00, 0x00, 0x55, 0x00, 0x00,
        ];
        assert!(who_got(&r.run(2, &[fuzzed.to_vec()])).is_empty());
        // Priority tag on an access port hiding VLAN 20 (network b).
        let mut hop = tagged(MacAddr::BROADCAST, mac(2), 0, &[]);
        hop.splice(16..16, [0x81, 0x00, 0x00, 20]);
        assert!(who_got(&r.run(2, &[hop.clone()])).is_empty());
        // The same behind VLAN 10 on the trunk, and an S-tag on an access port.
        hop[15] = 10;
        assert!(who_got(&r.run(6, &[hop])).is_empty());
        let mut stag = frame(MacAddr::BROADCAST, mac(3), 0x88a8, &[0x00, 20, 0x08, 0x00]);
        stag.resize(64, 0);
        assert!(who_got(&r.run(3, &[stag])).is_empty());
        // Access ports count them as double tags (first-hop security), the trunk as a
        // tag it does not carry.
        assert_eq!(r.counters.read(2).drop_count(DropReason::DoubleTag), 2);
        assert_eq!(r.counters.read(6).drop_count(DropReason::VlanNotAllowed), 1);
        assert_eq!(r.counters.read(3).drop_count(DropReason::DoubleTag), 1);
        // A single priority tag still passes.
        let ok = tagged(MacAddr::BROADCAST, mac(2), 0, &[]);
        assert_eq!(who_got(&r.run(2, &[ok])), vec![0, 3, 4, 6]);
    }

    #[test]
    fn mac_move_redirects_traffic() {
        let mut r = Rig::new();
        r.run(2, &[frame(mac(9), mac(1), 0x0800, &[])]);
        assert_eq!(
            who_got(&r.run(3, &[frame(mac(1), mac(3), 0x0800, &[])])),
            vec![2]
        );
        // mac(1) now shows up on port 4.
        r.run(4, &[frame(mac(9), mac(1), 0x0800, &[])]);
        assert_eq!(
            who_got(&r.run(3, &[frame(mac(1), mac(3), 0x0800, &[])])),
            vec![4]
        );
        assert_eq!(r.fdb.moves.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn aging_forgets_and_floods_again() {
        let mut r = Rig::new();
        r.now = 10;
        r.run(2, &[frame(mac(9), mac(1), 0x0800, &[])]);
        r.now = 200;
        assert_eq!(r.fdb.age(r.now, r.snap.aging_secs), 0);
        assert_eq!(
            who_got(&r.run(3, &[frame(mac(1), mac(3), 0x0800, &[])])),
            vec![2]
        );
        r.now = 311;
        assert_eq!(r.fdb.age(r.now, r.snap.aging_secs), 1);
        assert_eq!(
            who_got(&r.run(3, &[frame(mac(1), mac(3), 0x0800, &[])])),
            vec![2, 4, 6]
        );
    }

    #[test]
    fn per_port_limit_still_forwards() {
        let mut r = Rig::new();
        if let Some(Some(p)) = r.snap.ports.get_mut(2) {
            p.mac_limit = 2;
        }
        let frames: Vec<_> = (1..=4)
            .map(|i| frame(mac(99), mac(i), 0x0800, &[]))
            .collect();
        let sent = r.run(2, &frames);
        assert_eq!(sent[3].len(), 4); // all forwarded (flooded)
        assert_eq!(r.fdb.port_count(2), 2);
        assert_eq!(r.fdb.refused.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn port_security_drops_spoofed_sources() {
        let mut r = Rig::new();
        if let Some(Some(p)) = r.snap.ports.get_mut(2) {
            p.security = Some(Security {
                mac: mac(2),
                ip: Some(Ipv4Addr::new(10, 1, 0, 2)),
            });
        }
        let frames = vec![
            // Own MAC, own IP: passes.
            frame(GW1, mac(2), 0x0800, &ipv4([10, 1, 0, 2], [10, 1, 0, 1])),
            // DHCP from 0.0.0.0: passes.
            frame(
                MacAddr::BROADCAST,
                mac(2),
                0x0800,
                &ipv4([0, 0, 0, 0], [255, 255, 255, 255]),
            ),
            // Someone else's MAC.
            frame(GW1, mac(3), 0x0800, &ipv4([10, 1, 0, 2], [10, 1, 0, 1])),
            // Someone else's IP.
            frame(GW1, mac(2), 0x0800, &ipv4([10, 1, 0, 3], [10, 1, 0, 1])),
            // ARP claiming another IP.
            frame(
                MacAddr::BROADCAST,
                mac(2),
                0x0806,
                &arp(mac(2), [10, 1, 0, 3], [10, 1, 0, 1]),
            ),
            // ARP with another sender MAC.
            frame(
                MacAddr::BROADCAST,
                mac(2),
                0x0806,
                &arp(mac(3), [10, 1, 0, 2], [10, 1, 0, 1]),
            ),
            // Truncated IPv4.
            frame(GW1, mac(2), 0x0800, &[0x45])[..20].to_vec(),
        ];
        let sent = r.run(2, &frames);
        assert_eq!(sent[0].len(), 2);
        let s = r.counters.read(2);
        assert_eq!(s.drop_count(DropReason::MacSpoof), 2);
        assert_eq!(s.drop_count(DropReason::IpSpoof), 2);
        assert_eq!(s.drop_count(DropReason::Malformed), 1);
        assert_eq!(s.rx_packets, 7);
    }

    fn udp4(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = ipv4(src, [255, 255, 255, 255]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    fn ipv6(src_first: u16, next: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, rest.len() as u8, next, 255];
        p.extend_from_slice(&src_first.to_be_bytes());
        // fe80::1 and the like; `::` (not `::1`) when the first group is zero.
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.push(u8::from(src_first != 0));
        p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(rest);
        p
    }

    fn secure(r: &mut Rig, port: usize) {
        if let Some(Some(p)) = r.snap.ports.get_mut(port) {
            p.security = Some(Security {
                mac: mac(port as u8),
                ip: Some(Ipv4Addr::new(10, 1, 0, port as u8)),
            });
        }
    }

    #[test]
    fn first_hop_guard_drops_rogue_servers_and_routers() {
        let mut r = Rig::new();
        secure(&mut r, 2);
        let b = MacAddr::BROADCAST;
        let m6 = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
        let own = [10, 1, 0, 2];
        let frames = vec![
            // DHCP client (68 -> 67) and ordinary UDP pass.
            frame(b, mac(2), 0x0800, &udp4([0, 0, 0, 0], 68, 67)),
            frame(b, mac(2), 0x0800, &udp4(own, 5353, 53)),
            // Neighbour solicitation from fe80:: and DAD from :: pass.
            frame(m6, mac(2), 0x86dd, &ipv6(0xfe80, 58, &[135, 0, 0, 0])),
            frame(m6, mac(2), 0x86dd, &ipv6(0, 58, &[135, 0, 0, 0])),
            // A DHCP server's offer, a DHCPv6 server's advertise.
            frame(b, mac(2), 0x0800, &udp4(own, 67, 68)),
            frame(
                m6,
                mac(2),
                0x86dd,
                &ipv6(0xfe80, 17, &[2, 35, 2, 34, 0, 8, 0, 0]),
            ),
            // A router advertisement, a redirect, and an RA behind a destination option.
            frame(m6, mac(2), 0x86dd, &ipv6(0xfe80, 58, &[134, 0, 0, 0])),
            frame(m6, mac(2), 0x86dd, &ipv6(0xfe80, 58, &[137, 0, 0, 0])),
            frame(
                m6,
                mac(2),
                0x86dd,
                &ipv6(0xfe80, 60, &[58, 0, 1, 4, 0, 0, 0, 0, 134, 0, 0, 0]),
            ),
            // A global source; a chain pointing past the end.
            frame(m6, mac(2), 0x86dd, &ipv6(0x2001, 58, &[128, 0, 0, 0])),
            frame(
                m6,
                mac(2),
                0x86dd,
                &ipv6(0xfe80, 0, &[58, 40, 0, 0, 0, 0, 0, 0]),
            ),
        ];
        let sent = r.run(2, &frames);
        assert_eq!(sent[3].len(), 4);
        let s = r.counters.read(2);
        assert_eq!(s.drop_count(DropReason::DhcpGuard), 2);
        assert_eq!(s.drop_count(DropReason::RaGuard), 3);
        assert_eq!(s.drop_count(DropReason::IpSpoof), 1);
        assert_eq!(s.drop_count(DropReason::BadIpv6Chain), 1);
        // A port without port security (a VM, a nested bridge) is exempt.
        let sent = r.run(
            3,
            &[frame(
                m6,
                mac(3),
                0x86dd,
                &ipv6(0xfe80, 58, &[134, 0, 0, 0]),
            )],
        );
        assert_eq!(who_got(&sent), vec![2, 4, 6]);
    }

    #[test]
    fn access_port_drops_double_tags_and_qinq() {
        let mut r = Rig::new();
        let b = MacAddr::BROADCAST;
        // Priority tag with a VLAN-20 tag behind it.
        let mut hop = tagged(b, mac(2), 0, &[]);
        hop[16..18].copy_from_slice(&[0x81, 0x00]);
        hop[18..22].copy_from_slice(&[0x00, 20, 0x08, 0x00]);
        // An 802.1ad outer tag.
        let mut qinq = tagged(b, mac(2), 20, &[]);
        qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
        // A priority tag with an 802.1ad tag behind it.
        let mut prio_ad = hop.clone();
        prio_ad[16..18].copy_from_slice(&[0x88, 0xa8]);
        let sent = r.run(2, &[hop.clone(), qinq, prio_ad]);
        assert!(who_got(&sent).is_empty());
        assert_eq!(r.counters.read(2).drop_count(DropReason::DoubleTag), 3);
        // A trunk still takes a tagged frame (its tag is the one popped).
        let sent = r.run(6, &[tagged(b, mac(60), 10, &[])]);
        assert_eq!(who_got(&sent), vec![0, 2, 3, 4]);
    }

    #[test]
    fn gateway_share_keeps_room_for_quiet_ports() {
        let mut r = Rig::new();
        let gw_frames = |n: usize, src: MacAddr| -> Vec<Vec<u8>> {
            (0..n).map(|_| frame(GW1, src, 0x0800, &[])).collect()
        };
        // A busy ring (only the reserve left): a port past its light share is cut...
        r.room = GATEWAY_RESERVE;
        for _ in 0..4 {
            r.run(2, &gw_frames(64, mac(2)));
        }
        let cut = r.counters.read(2).drop_count(DropReason::ServiceQuota);
        assert_eq!(cut, 4 * 64 - u64::from(GATEWAY_LIGHT));
        // ...while a quiet port still gets its frames to the gateway.
        let sent = r.run(3, &gw_frames(2, mac(3)));
        assert_eq!(sent[0].len(), 2);
        assert_eq!(r.counters.read(3).drop_count(DropReason::ServiceQuota), 0);
        // With room, the busy port gets in again; a new second starts afresh.
        r.room = crate::port::service::SERVICE_RING;
        assert_eq!(r.run(2, &gw_frames(8, mac(2)))[0].len(), 8);
        // The hard share per second holds whatever the room.
        r.share = 10;
        r.now = 1;
        assert_eq!(r.run(2, &gw_frames(8, mac(2)))[0].len(), 8);
        assert_eq!(r.run(2, &gw_frames(8, mac(2)))[0].len(), 2);
        r.now = 2;
        assert_eq!(r.run(2, &gw_frames(8, mac(2)))[0].len(), 8);
    }

    #[test]
    fn no_icc_keeps_containers_apart_but_not_from_gateway() {
        let mut r = Rig::new();
        // 8 is learned first.
        r.run(8, &[frame(MacAddr::BROADCAST, mac(8), 0x0800, &[])]);
        let gw3 = MacAddr([0x02, 0x42, 10, 3, 0, 1]);
        let sent = r.run(
            7,
            &[
                frame(mac(8), mac(7), 0x0800, &[]),
                frame(MacAddr::BROADCAST, mac(7), 0x0806, &[]),
                frame(gw3, mac(7), 0x0800, &[]),
            ],
        );
        assert_eq!(who_got(&sent), vec![0]);
        assert_eq!(sent[0].len(), 2); // broadcast and gateway-MAC frame
        assert_eq!(r.counters.read(7).drop_count(DropReason::Icc), 1);
        // The gateway may still reach container 7.
        r.run(7, &[frame(gw3, mac(7), 0x0800, &[])]);
        let sent = r.run_with_domain(0, &[frame(mac(7), gw3, 0x0800, &[])], 2);
        assert_eq!(who_got(&sent), vec![7]);
    }

    #[test]
    fn gateway_frames_use_their_domain_and_are_not_learned() {
        let mut r = Rig::new();
        let gw2 = MacAddr([0x02, 0x42, 10, 2, 0, 1]);
        let sent = r.run_with_domain(0, &[frame(MacAddr::BROADCAST, gw2, 0x0806, &[])], 1);
        assert_eq!(who_got(&sent), vec![5, 6]);
        assert_eq!(r.fdb.len(), 0);
    }

    #[test]
    fn same_port_and_bad_source_dropped() {
        let mut r = Rig::new();
        r.run(2, &[frame(mac(9), mac(1), 0x0800, &[])]);
        let sent = r.run(
            2,
            &[
                frame(mac(1), mac(5), 0x0800, &[]),
                frame(mac(3), MacAddr::BROADCAST, 0x0800, &[]),
                vec![0u8; 13],
            ],
        );
        assert!(who_got(&sent).is_empty());
        let s = r.counters.read(2);
        assert_eq!(s.drop_count(DropReason::SamePort), 1);
        assert_eq!(s.drop_count(DropReason::BadSrcMac), 1);
        assert_eq!(s.drop_count(DropReason::Malformed), 1);
    }

    #[test]
    fn counters_count_rx_and_tx() {
        let mut r = Rig::new();
        r.run(
            2,
            &[
                frame(mac(3), mac(2), 0x0800, &[]),
                frame(mac(3), mac(2), 0x0800, &[]),
            ],
        );
        let s = r.counters.read(2);
        assert_eq!((s.rx_packets, s.rx_bytes), (2, 120));
        assert_eq!(r.counters.read(3).tx_packets, 2);
    }

    #[test]
    fn stale_generation_floods_instead_of_misdelivering() {
        let mut r = Rig::new();
        r.run(3, &[frame(mac(9), mac(1), 0x0800, &[])]);
        // Port 3 is re-created (new generation) in domain b.
        if let Some(Some(p)) = r.snap.ports.get_mut(3) {
            p.gen_ = 1;
            p.mode = PortMode::Access { domain: 1 };
        }
        r.snap.rebuild();
        let sent = r.run(2, &[frame(mac(1), mac(2), 0x0800, &[])]);
        assert_eq!(who_got(&sent), vec![4, 6]);
    }

    #[test]
    fn removed_ingress_port_drops_everything() {
        let mut r = Rig::new();
        r.snap.ports[4] = None;
        r.snap.rebuild();
        let sent = r.run(4, &[frame(MacAddr::BROADCAST, mac(4), 0x0800, &[])]);
        assert!(who_got(&sent).is_empty());
        assert_eq!(r.counters.read(4).drop_count(DropReason::NoNetwork), 1);
        let _ = FIRST_PORT;
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// The domain each port slot may carry frames of, for the isolation check.
        fn carried(r: &Rig, port: usize) -> Vec<u16> {
            (0..3u16)
                .filter(|d| {
                    r.snap.port(port as u16).is_some_and(|p| {
                        p.role == PortRole::Gateway
                            || p.egress_tag(*d, r.snap.domain(*d).and_then(|x| x.vlan))
                                .is_some()
                    })
                })
                .collect()
        }

        fn domain_of_output(r: &Rig, port: usize, bytes: &[u8]) -> Option<u16> {
            if port == 0 {
                return None; // the gateway takes any domain, checked by frame.domain
            }
            let p = r.snap.port(port as u16)?;
            let tagged = bytes.len() >= 16 && bytes[12..14] == [0x81, 0x00];
            match &p.mode {
                PortMode::Access { domain } => {
                    assert!(!tagged, "access port {port} sent a tagged frame");
                    Some(*domain)
                }
                PortMode::Trunk { native, .. } => {
                    if tagged {
                        r.snap
                            .vlan_to_domain(u16::from_be_bytes([bytes[14], bytes[15]]) & 0xfff)
                    } else {
                        *native
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Random bytes in on any port never panic, and whatever comes out leaves
            /// on a port of the domain the frame came in on.
            #[test]
            fn random_frames_never_panic_or_cross_domains(
                frames in proptest::collection::vec(
                    (2u16..9, proptest::collection::vec(any::<u8>(), 0..200), any::<bool>(), 0u16..40),
                    1..64)
            ) {
                let mut r = Rig::new();
                for (port, mut bytes, tag, vid) in frames {
                    // Bias towards plausible frames: known MACs and real tags.
                    if bytes.len() >= 14 {
                        bytes[0] &= 0x03;
                        if tag {
                            bytes[12] = 0x81;
                            bytes[13] = 0x00;
                            if bytes.len() >= 16 {
                                bytes[14] = 0;
                                bytes[15] = (vid as u8) % 40;
                            }
                        }
                    }
                    let Some(in_domain) = ({
                        // The domain this frame would classify into, if any.
                        let p = r.snap.port(port).unwrap();
                        let is_tagged = bytes.len() >= 16 && bytes[12..14] == [0x81, 0x00];
                        let vid = if bytes.len() >= 16 { u16::from_be_bytes([bytes[14], bytes[15]]) & 0xfff } else { 0 };
                        match &p.mode {
                            PortMode::Access { domain } => Some(*domain),
                            PortMode::Trunk { native, .. } => if is_tagged && vid != 0 { r.snap.vlan_to_domain(vid) } else { *native },
                        }
                    }) else {
                        r.run(port, &[bytes]);
                        continue;
                    };
                    let sent = r.run(port, &[bytes]);
                    for (out_port, frames) in sent.iter().enumerate() {
                        for f in frames {
                            prop_assert!(carried(&r, out_port).contains(&in_domain) || out_port == 0);
                            if let Some(d) = domain_of_output(&r, out_port, f) {
                                prop_assert_eq!(d, in_domain, "frame from port {} left on port {}", port, out_port);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn too_big_looks_at_df_and_at_segments_of_super_frames() {
        // IPv4 header: 1400 bytes total, DF, TCP; then a TCP header with doff 8 (32 B).
        let mut ip = vec![0u8; 60];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&1400u16.to_be_bytes());
        ip[6] = 0x40;
        ip[9] = 6;
        ip[20 + 12] = 8 << 4;
        let plain = VnetHdr::default();
        assert!(too_big(&ip, &plain, 1280));
        assert!(!too_big(&ip, &plain, 1400));
        // Without DF a router may fragment: not "too big".
        ip[6] = 0;
        assert!(!too_big(&ip, &plain, 1280));
        ip[6] = 0x40;
        // A 64 KB TCP super-frame whose segments are 20 + 32 + 1448 = 1500 bytes.
        ip[2..4].copy_from_slice(&65000u16.to_be_bytes());
        let tso = VnetHdr {
            gso_type: VnetHdr::GSO_TCPV4,
            gso_size: 1448,
            ..VnetHdr::default()
        };
        assert!(!too_big(&ip, &tso, 1500));
        assert!(too_big(&ip, &tso, 1499));
        // A super-frame holding one short segment is judged by its length.
        ip[2..4].copy_from_slice(&1000u16.to_be_bytes());
        assert!(!too_big(&ip, &tso, 1280));
        // Truncated headers are not judged here.
        assert!(!too_big(&ip[..4], &plain, 68));
    }

    mod nat_prop {
        use super::*;
        use crate::config::{UPLINK_DOMAIN, UplinkConf};
        use crate::nat::{DnatRule, DnatRules};
        use crate::wire::IpProtocol::Tcp as TCP;
        use proptest::prelude::*;

        const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
        const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

        /// The rig with a packet uplink on port 1: next hop resolved, port 2's address
        /// published as TCP 8080 -> 80.
        fn uplink_rig() -> (Rig, Nat, Neighbours) {
            let mut r = Rig::new();
            r.snap.ports[1] = Some(PortConf {
                name: "uplink".into(),
                gen_: 0,
                role: PortRole::Uplink,
                mode: PortMode::Access {
                    domain: UPLINK_DOMAIN,
                },
                security: None,
                mac_limit: 0,
            });
            r.snap.uplink = Some(UplinkConf {
                ext_ip: EXT,
                ext_mac: MacAddr::from_ipv4(EXT),
                subnet: Ipv4Addr::new(198, 51, 100, 0),
                prefix_len: 24,
                next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
                mtu: 1500,
                rules: DnatRules::new(vec![DnatRule {
                    proto: TCP,
                    ext_port: 8080,
                    domain: 0,
                    ip: INSIDE,
                    port: 80,
                }]),
                hosts: vec![(0, INSIDE, mac(2))],
            });
            r.snap.rebuild();
            let neigh = Neighbours::default();
            neigh.set_next_hop(Some(MacAddr([0x02, 0, 0, 0, 0, 0x99])));
            (r, Nat::new(64), neigh)
        }

        /// An Ethernet + IPv4 frame with a random rest, made plausible enough to reach
        /// the translation code: version/IHL, protocol, addresses and ports biased.
        fn packet(
            dst_mac: MacAddr,
            src: Ipv4Addr,
            dst: Ipv4Addr,
            proto: u8,
            mut rest: Vec<u8>,
        ) -> Vec<u8> {
            let mut f = Vec::with_capacity(34 + rest.len());
            f.extend_from_slice(&dst_mac.0);
            f.extend_from_slice(&mac(2).0);
            f.extend_from_slice(&[0x08, 0x00]);
            rest.resize(rest.len().max(28), 0);
            let total = (20 + rest.len()) as u16;
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let c = crate::wire::checksum::fold(crate::wire::checksum::sum(&ip));
            ip[10..12].copy_from_slice(&(!c).to_be_bytes());
            f.extend_from_slice(&ip);
            f.extend_from_slice(&rest);
            f
        }

        /// The rig and the packet builder do reach translation (so the property below
        /// is not vacuous): a UDP packet goes out translated, its reply comes back in.
        #[test]
        fn rig_translates_both_ways() {
            let (mut r, nat, neigh) = uplink_rig();
            let far = Ipv4Addr::new(203, 0, 113, 9);
            let mut udp = vec![0u8; 28];
            udp[0..2].copy_from_slice(&5000u16.to_be_bytes());
            udp[2..4].copy_from_slice(&53u16.to_be_bytes());
            udp[4..6].copy_from_slice(&28u16.to_be_bytes());
            let gw = MacAddr([0x02, 0x42, 10, 1, 0, 1]);
            let f = packet(gw, INSIDE, far, 17, udp.clone());
            let sent = r.run_full(2, &[f], 0, Some((&nat, &neigh)));
            assert_eq!(sent[1].len(), 1, "{sent:?}");
            let out = &sent[1][0];
            assert_eq!(out[26..30], EXT.octets());
            let eport = [out[34], out[35]];
            let mut back = udp;
            back[0..2].copy_from_slice(&53u16.to_be_bytes());
            back[2..4].copy_from_slice(&eport);
            let f = packet(MacAddr::from_ipv4(EXT), far, EXT, 17, back);
            let sent = r.run_full(1, &[f], 0, Some((&nat, &neigh)));
            assert_eq!(sent[2].len(), 1, "{sent:?}");
            assert_eq!(sent[2][0][30..34], INSIDE.octets());
            assert_eq!(sent[2][0][36..38], 5000u16.to_be_bytes());
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Random traffic both ways through the packet uplink never panics; what
            /// leaves on the uplink always carries the uplink's address as its source,
            /// and what comes in reaches only the published container's domain.
            #[test]
            fn nat_path_never_panics_and_always_translates(
                pkts in proptest::collection::vec(
                    (any::<bool>(), prop_oneof![Just(1u8), Just(6u8), Just(17u8), any::<u8>()],
                     any::<u32>(), proptest::collection::vec(any::<u8>(), 0..120), any::<bool>()),
                    1..48)
            ) {
                let (mut r, nat, neigh) = uplink_rig();
                for (outbound, proto, addr, mut rest, to_published) in pkts {
                    if to_published && rest.len() >= 4 {
                        rest[2..4].copy_from_slice(&8080u16.to_be_bytes());
                    }
                    let sent = if outbound {
                        let dst = Ipv4Addr::from(addr | 0x0100_0000);
                        let f = packet(MacAddr([0x02, 0x42, 10, 1, 0, 1]), INSIDE, dst, proto, rest);
                        r.run_full(2, &[f], 0, Some((&nat, &neigh)))
                    } else {
                        let f = packet(MacAddr::from_ipv4(EXT), Ipv4Addr::from(addr), EXT, proto, rest);
                        r.run_full(1, &[f], 0, Some((&nat, &neigh)))
                    };
                    for f in &sent[1] {
                        prop_assert_eq!(f.get(26..30), Some(&EXT.octets()[..]), "untranslated out");
                    }
                    for p in [5usize, 7, 8] {
                        prop_assert!(sent[p].is_empty(), "frame reached port {}", p);
                    }
                }
            }
        }
    }
}
