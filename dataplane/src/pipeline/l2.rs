//! The bridge stage: learn the source, then deliver by destination MAC: flood,
//! the gateway (or a route out), or the port the destination was learned on.

use super::classify::classify;
use super::security::port_security;
use super::{Egress, Ingress, route, route6};
use crate::bridge::DropReason;
use crate::config::{DomainConf, GATEWAY_PORT, PortRole, UPLINK_DOMAIN, UPLINK_PORT};
use crate::ids::{DomainId, Encap, PortId};
use crate::port::Frame;
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::{ArpOp, ArpPacket, EtherType, EthernetFrame, Ipv4Packet, MacAddr};

/// Forwards one frame of a port other than the uplink.
#[inline(always)]
pub(super) fn forward_one(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
) -> Result<(), DropReason> {
    if f.len() < HEADER_LEN {
        return Err(DropReason::Malformed);
    }
    f.in_port = ing.in_port.0;
    let Some((domain, ethertype)) = ingress_domain(ing, i, f, out)? else {
        return Ok(());
    };
    f.domain = domain.0;
    let dconf = ing.ctx.snap.domain(domain).ok_or(DropReason::NoNetwork)?;
    let eth = EthernetFrame::new_checked(f.data()).map_err(|_| DropReason::Malformed)?;
    let (dst, src) = (eth.dst(), eth.src());
    if !ing.trusted {
        admit(ing, domain, src, ethertype, eth.payload())?;
    }
    let from_container = ing.port.role == PortRole::Container;
    if dst.is_multicast() {
        forward_group(ing, (dconf, ethertype), (dst, eth.payload()), i, out);
        return Ok(());
    }
    if dst == dconf.gateway_mac {
        return to_gateway(ing, i, f, out, (domain, dconf), ethertype);
    }
    match known_port(ing, domain, dconf, dst) {
        Some(to) if to.port == ing.in_port => Err(DropReason::SamePort),
        Some(to) if !dconf.icc && from_container && to.role == PortRole::Container => {
            Err(DropReason::Icc)
        }
        Some(to) => {
            if to.kernel
                && ing.port.kernel
                && let Some(h) = ing.ctx.kernel_pairs
            {
                h.note(ing.in_port, to.port);
            }
            out.push(to.port, i, to.encap);
            Ok(())
        }
        None => {
            flood(dconf, ing.in_port, from_container, i, out);
            Ok(())
        }
    }
}

/// A broadcast or multicast frame: to every other member of the network, but what
/// only routers or one known host need (router solicitations, MLD reports, directed
/// ARP requests) not to the other hosts. Broadcasts also reach the gateway (ARP for it,
/// DHCP), and so do the IPv6 groups it listens to (`DomainConf::gateway_listens`);
/// other multicast does not.
#[inline(always)]
fn forward_group(
    ing: &Ingress<'_>,
    (dconf, ethertype): (&DomainConf, u16),
    (dst, l3): (MacAddr, &[u8]),
    i: usize,
    out: &mut Egress,
) {
    let from_container = ing.port.role == PortRole::Container;
    // Broadcasts reach the gateway (ARP for it, DHCP), and so do the IPv6 groups it
    // listens to on a network with IPv6 (router and neighbour solicitations, DHCPv6).
    if !ing.trusted && (dst.is_broadcast() || dconf.gateway_listens(dst)) {
        out.push(GATEWAY_PORT, i, Encap::None);
    }
    let hosts_need_not = dst.is_ipv6_router_group()
        || (dst.is_broadcast()
            && ethertype == EtherType::ARP
            && directed_arp(ing, dconf, from_container, i, l3, out))
        || directed_nd(ing, dconf, from_container, dst, i, out);
    if hosts_need_not {
        flood_to_non_hosts(dconf, ing.in_port, from_container, i, out);
    } else {
        flood(dconf, ing.in_port, from_container, i, out);
    }
}

/// The domain of a frame and the EtherType behind its tag: classified for an untrusted
/// port; carried by the frame for the gateway's, whose frames for the uplink segment go
/// straight out there (None: already queued).
#[inline(always)]
fn ingress_domain(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
) -> Result<Option<(DomainId, u16)>, DropReason> {
    if !ing.trusted {
        return classify(ing.ctx.snap, ing.port, f).map(Some);
    }
    if f.domain == UPLINK_DOMAIN.0 {
        out.push(UPLINK_PORT, i, Encap::None);
        return Ok(None);
    }
    let eth = EthernetFrame::new_checked(f.data()).map_err(|_| DropReason::Malformed)?;
    Ok(Some((DomainId(f.domain), eth.ethertype())))
}

/// What an untrusted port may send from (a unicast source, port security), and the
/// learning of its source MAC. `l3` is what follows the Ethernet header.
#[inline(always)]
fn admit(
    ing: &Ingress<'_>,
    domain: DomainId,
    src: MacAddr,
    ethertype: u16,
    l3: &[u8],
) -> Result<(), DropReason> {
    if src.is_multicast() || src.is_zero() {
        return Err(DropReason::BadSrcMac);
    }
    if let Some(sec) = &ing.port.security {
        port_security(sec, l3, src, ethertype)?;
    }
    let p = ing.port;
    ing.fdb.learn(
        domain,
        src,
        ing.in_port,
        p.generation,
        ing.ctx.now,
        p.mac_limit,
    );
    Ok(())
}

/// A frame for the gateway's MAC: routed out through the packet uplink when it is IPv4
/// or IPv6 bound outside, else for the gateway itself.
#[inline(always)]
fn to_gateway(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    (domain, dconf): (DomainId, &DomainConf),
    ethertype: u16,
) -> Result<(), DropReason> {
    if ing.trusted {
        return Err(DropReason::SamePort);
    }
    if ethertype == EtherType::IPV4 && bound_outside(ing, dconf, f.data()) {
        if !dconf.egress {
            return Err(DropReason::NoRoute);
        }
        return route::route_out(ing, i, f, out, domain);
    }
    if ethertype == EtherType::IPV6
        && let Some(to) = route6::bound_outside6(ing, dconf, f.data())
    {
        return route6::route_out6(ing, i, f, out, (domain, dconf, to));
    }
    out.push(GATEWAY_PORT, i, Encap::None);
    Ok(())
}

/// Whether an IPv4 frame for the gateway's MAC is for somewhere outside every network
/// (and a packet uplink is there to take it).
#[inline(always)]
fn bound_outside(ing: &Ingress<'_>, dconf: &DomainConf, frame: &[u8]) -> bool {
    let snap = ing.ctx.snap;
    if snap.uplink.is_none() || ing.ctx.nat.is_none() {
        return false;
    }
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    let dip = ip.dst();
    Some(dip) != dconf.gateway_ip()
        && !dip.is_broadcast()
        && !dip.is_multicast()
        && !snap.is_inside(dip)
}

/// A port the FDB knows a destination on, still carrying its domain.
pub(super) struct Known {
    pub port: PortId,
    pub encap: Encap,
    pub role: PortRole,
    /// On the kernel path (see [`crate::kernel`]).
    pub kernel: bool,
}

/// Where `mac` was learned in `domain`, when that port (the same generation of it)
/// still carries the domain.
#[inline(always)]
pub(super) fn known_port(
    ing: &Ingress<'_>,
    domain: DomainId,
    dconf: &DomainConf,
    mac: MacAddr,
) -> Option<Known> {
    let (port, generation) = ing.fdb.lookup(domain, mac)?;
    let p = ing.ctx.snap.port(port)?;
    if p.generation != generation {
        return None;
    }
    let encap = p.egress_encap(domain, dconf.vlan)?;
    Some(Known {
        port,
        encap,
        role: p.role,
        kernel: p.kernel,
    })
}

/// Queues a frame for every member of its domain but the port it came in on (and, in
/// a network without inter-container traffic, no container port for a container's).
#[inline]
pub(super) fn flood(
    dconf: &DomainConf,
    in_port: PortId,
    from_container: bool,
    i: usize,
    out: &mut Egress,
) {
    let isolate = !dconf.icc && from_container;
    for m in &dconf.members {
        if m.port == in_port || (isolate && m.role == PortRole::Container) {
            continue;
        }
        out.push(m.port, i, m.encap);
    }
}

/// An ARP request for an address the switch knows the owner of: the gateway's (which
/// has the frame already), or one IPAM gave a secured port, queued for that port alone.
/// True when it was such a request: the rest of the network's hosts need not see it
/// (the ports that may be anything, trunks and ports without port security, still
/// do). Flooded to every port of a network of N containers, the ARP requests of N
/// containers cost N^2 deliveries.
#[inline(always)]
fn directed_arp(
    ing: &Ingress<'_>,
    dconf: &DomainConf,
    from_container: bool,
    i: usize,
    l3: &[u8],
    out: &mut Egress,
) -> bool {
    let Ok(arp) = ArpPacket::new_checked(l3) else {
        return false;
    };
    if arp.operation() != ArpOp::REQUEST {
        return false;
    }
    let target = arp.target_ip();
    if Some(target) == dconf.gateway_ip() {
        return true;
    }
    let Some(owner) = dconf.owner(target) else {
        return false;
    };
    // A port asking for its own address (a probe, an announcement) asks everyone.
    if owner == ing.in_port {
        return false;
    }
    if dconf.icc || !from_container {
        out.push(owner, i, Encap::None);
    }
    true
}

/// A frame to an IPv6 solicited-node group (neighbour solicitations, duplicate address
/// detection): queued for the secured ports listening to it alone, as ARP requests are
/// (`directed_arp`). True when it was one: the other hosts need not see it.
#[inline(always)]
fn directed_nd(
    ing: &Ingress<'_>,
    dconf: &DomainConf,
    from_container: bool,
    dst: MacAddr,
    i: usize,
    out: &mut Egress,
) -> bool {
    let Some(key) = dst.solicited_node_key() else {
        return false;
    };
    if dconf.icc || !from_container {
        for &(_, port) in dconf.listeners_of(key) {
            if port != ing.in_port {
                out.push(port, i, Encap::None);
            }
        }
    }
    true
}

/// Floods a frame to the members that are not secured hosts (trunks, ports without
/// port security, the uplink): what is for routers alone (router solicitations, MLD
/// reports) or for one known host (a directed ARP request). Every container sends a
/// few of the former when its interface comes up; flooded to every port of a network
/// of N containers they cost N^2 deliveries, each a pass of the receiving kernel's
/// input only to be dropped.
#[inline]
fn flood_to_non_hosts(
    dconf: &DomainConf,
    in_port: PortId,
    from_container: bool,
    i: usize,
    out: &mut Egress,
) {
    let isolate = !dconf.icc && from_container;
    for m in &dconf.members {
        if m.port == in_port || m.host || (isolate && m.role == PortRole::Container) {
            continue;
        }
        out.push(m.port, i, m.encap);
    }
}
