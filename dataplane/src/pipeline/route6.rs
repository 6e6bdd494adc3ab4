//! IPv6 through the packet uplink: each network's IPv6 masqueraded behind the uplink's
//! address (NAT66) or routed as it is (a network with masquerade off), tracked by the
//! IPv6 flow table either way; published ports reached on the uplink's address
//! (DNAT66), from outside and from the containers (hairpin); the hop limit stepped,
//! the MACs rewritten for the next hop. What the workers cannot finish (packet too
//! big, hop limit exceeded, an unresolved neighbour) is punted to the gateway, as for
//! IPv4.

use std::net::Ipv6Addr;

use super::route::{nat_drop, segment_l4_len, set_macs, to_next_hop};
use super::{Egress, Ingress, l2};
use crate::bridge::DropReason;
use crate::config::{DomainConf, GATEWAY_PORT, UPLINK_PORT, Uplink6};
use crate::ids::{DomainId, Encap};
use crate::nat::{NatDrop, NatVerdict};
use crate::port::{Frame, Punt, VnetHdr};
use crate::wire::ipv6::{HEADER_LEN, Icmpv6Type, NextHeader, is_link_local};
use crate::wire::{EthernetFrame, Ipv6Packet, MacAddr};

/// Where an IPv6 frame bound outside is for: beyond the packet uplink, or the uplink's
/// own address (hairpin, or the gateway's to answer for it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Outside6 {
    Beyond,
    UplinkAddress,
}

/// Whether an IPv6 frame for the gateway's MAC is for somewhere outside every network
/// (or the uplink's own address), from an address that may be routed, with a packet
/// uplink carrying IPv6 to take it; and which of the two, read from the destination
/// here once.
#[inline(always)]
pub(super) fn bound_outside6(
    ing: &Ingress<'_>,
    dconf: &DomainConf,
    frame: &[u8],
) -> Option<Outside6> {
    let up6 = ing.ctx.snap.uplink.as_ref().and_then(|u| u.v6.as_ref())?;
    ing.ctx.nat?;
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
    let (src, dst) = (ip.src(), ip.dst());
    let routable = |a: &Ipv6Addr| !a.is_unspecified() && !a.is_multicast() && !is_link_local(a);
    let outside = routable(&src)
        && routable(&dst)
        && dconf.v6.is_none_or(|v| v.gateway != dst)
        && !up6.is_inside(dst);
    match (outside, dst == up6.ext_ip) {
        (false, _) => None,
        (true, false) => Some(Outside6::Beyond),
        (true, true) => Some(Outside6::UplinkAddress),
    }
}

/// The uplink's IPv6 and the NAT, when both are there.
#[inline(always)]
fn uplink6<'a>(ing: &Ingress<'a>) -> Result<(&'a Uplink6, &'a crate::nat::Nat), DropReason> {
    let up6 = (ing.ctx.snap.uplink.as_ref()).and_then(|u| u.v6.as_ref());
    up6.zip(ing.ctx.nat).ok_or(DropReason::NoRoute)
}

/// An IPv6 frame from a container bound outside: checked against the segment's MTU
/// and its hop limit, tracked (and masqueraded, unless its network is routed: then
/// only from the network's own prefix), sent out the packet uplink; for the uplink's
/// own address, masqueraded whatever the network's mode and translated back in at
/// once (hairpin), or, what nothing there takes, answered by the gateway.
#[inline(always)]
pub(super) fn route_out6(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    (domain, dconf, to): (DomainId, &DomainConf, Outside6),
) -> Result<(), DropReason> {
    let ctx = ing.ctx;
    let (up6, nat) = uplink6(ing)?;
    let to_ext = to == Outside6::UplinkAddress;
    let mtu = ctx.snap.uplink.as_ref().map_or(0, |u| u.mtu);
    let partial = f.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0;
    let vnet = f.vnet;
    let mut eth = EthernetFrame::new_checked(f.data_mut()).map_err(|_| DropReason::Malformed)?;
    let mut ip = Ipv6Packet::new_checked(eth.payload_mut()).map_err(|_| DropReason::Malformed)?;
    // Masqueraded where masquerade is on (and for hairpin: for the uplink's address),
    // else routed as it is where the network may reach the outside at all.
    let ext = if dconf.egress {
        Some(up6.ext_ip)
    } else if up6.routes(domain) {
        // Routed as it is: only the network's own prefix (reverse path filtering).
        if !dconf.v6.is_some_and(|v| v.subnet.contains(ip.src())) {
            return Err(DropReason::SourceOutsideNetwork);
        }
        to_ext.then_some(up6.ext_ip)
    } else {
        return Err(DropReason::NoRoute);
    };
    // For the uplink's own address and nothing there takes it (a ping, a closed
    // port): the gateway answers as its owner, untranslated and with no flow made.
    if to_ext && nat.for_uplink_address6(&ip, &up6.rules, ctx.now) {
        f.punt = Punt::UplinkAddress;
        out.push(GATEWAY_PORT, i, Encap::None);
        return Ok(());
    }
    // IPv6 routers never fragment: too big is always answered (packet too big); not
    // for hairpin traffic, which never crosses the segment.
    let punt = if too_big6(&ip, &vnet, mtu) && !to_ext {
        Some(Punt::TooBig)
    } else if !ip.step_hop_limit() {
        Some(Punt::TimeExceeded)
    } else {
        None
    };
    if let Some(p) = punt {
        f.punt = p;
        out.push(GATEWAY_PORT, i, Encap::None);
        return Ok(());
    }
    let rules = &up6.rules;
    let dst = match nat.outbound6(eth.payload_mut(), domain.0, ext, rules, partial, ctx.now) {
        Ok(NatVerdict::Out { dst }) => dst,
        Ok(NatVerdict::In { .. }) => return Err(DropReason::NoRoute),
        Err(d) => return Err(nat_drop(d)),
    };
    if dst == up6.ext_ip {
        // Hairpin: masqueraded behind the uplink's address, back in at once.
        return match nat.hairpin6(eth.payload_mut(), dst, rules, partial, ctx.now) {
            Ok(NatVerdict::In { domain, ip: to }) => {
                deliver_in6(ing, i, f, out, (up6, DomainId(domain), to))
            }
            Ok(NatVerdict::Out { .. }) => Err(DropReason::NoRoute),
            Err(d) => Err(nat_drop(d)),
        };
    }
    send_out6(ing, i, f, out, (up6, dst))
}

/// Sends a packet for `dst` out the packet uplink: to `dst` on the segment, or to the
/// next hop; not resolved yet, the gateway solicits it.
#[inline(always)]
fn send_out6(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    (up6, dst): (&Uplink6, Ipv6Addr),
) -> Result<(), DropReason> {
    let up = ing.ctx.snap.uplink.as_ref().ok_or(DropReason::NoRoute)?;
    let neigh = ing.ctx.neigh.ok_or(DropReason::NoRoute)?;
    let mac = if up6.on_link(dst) {
        neigh.v6.lookup(dst)
    } else {
        neigh.v6.next_hop()
    };
    to_next_hop(i, f, out, (mac, up.ext_mac));
    Ok(())
}

/// Whether an IPv6 packet is larger than `mtu` (a super-frame: its segments).
#[inline(always)]
fn too_big6<T: AsRef<[u8]>>(ip: &Ipv6Packet<T>, vnet: &VnetHdr, mtu: u16) -> bool {
    let total = HEADER_LEN + ip.payload().len();
    let gso = vnet.gso_type & !VnetHdr::GSO_ECN;
    if gso == VnetHdr::GSO_NONE {
        return total > usize::from(mtu);
    }
    let tcp = (ip.next_header() == NextHeader::TCP).then(|| ip.payload());
    let l4 = segment_l4_len(gso == VnetHdr::GSO_TCPV6, tcp);
    (HEADER_LEN + l4 + usize::from(vnet.gso_size)).min(total) > usize::from(mtu)
}

/// Whether an IPv6 packet is neighbour or router discovery (the gateway's to answer).
/// Discovery has no extension headers (RFC 4861 sends it bare, hop limit 255): only
/// ICMPv6 right behind the fixed header is looked at.
#[inline(always)]
fn discovery<T: AsRef<[u8]>>(ip: &Ipv6Packet<T>) -> bool {
    ip.next_header() == NextHeader::ICMPV6
        && crate::wire::ipv6::icmpv6_type(ip.payload())
            .is_some_and(|t| (Icmpv6Type::ROUTER_SOLICIT..=Icmpv6Type::REDIRECT).contains(&t))
}

/// An IPv6 frame arriving on the packet uplink: neighbour discovery and multicast go to
/// the gateway; a packet of a tracked flow (for the uplink's address, translated back,
/// or for a routed network's container) is delivered to its container.
#[inline(always)]
pub(super) fn from_uplink6(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    ext_mac: MacAddr,
) -> Result<(), DropReason> {
    let (up6, nat) = uplink6(ing)?;
    let partial = f.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0;
    let mut eth = EthernetFrame::new_checked(f.data_mut()).map_err(|_| DropReason::Malformed)?;
    let dst_mac = eth.dst();
    let ip = Ipv6Packet::new_checked(eth.payload_mut()).map_err(|_| DropReason::Malformed)?;
    if dst_mac.is_multicast() || discovery(&ip) {
        out.push(GATEWAY_PORT, i, Encap::None);
        return Ok(());
    }
    if dst_mac != ext_mac {
        return Err(DropReason::NoNetwork);
    }
    let ext = (ip.dst() == up6.ext_ip).then_some(up6.ext_ip);
    match nat.inbound6(eth.payload_mut(), ext, &up6.rules, partial, ing.ctx.now) {
        Ok(NatVerdict::In { domain, ip: to }) => {
            let stepped =
                Ipv6Packet::new_checked(eth.payload_mut()).is_ok_and(|mut p| p.step_hop_limit());
            if !stepped {
                return Err(DropReason::NoRoute);
            }
            deliver_in6(ing, i, f, out, (up6, DomainId(domain), to))
        }
        Ok(NatVerdict::Out { .. }) => Err(DropReason::NoRoute),
        // For the uplink's address itself (ping, a closed port): the gateway's.
        Err(NatDrop::Local | NatDrop::NoFlow) if ext.is_some() => {
            out.push(GATEWAY_PORT, i, Encap::None);
            Ok(())
        }
        // A flow's packet out of hops: the gateway answers time exceeded.
        Err(NatDrop::HopLimit) => {
            f.punt = Punt::TimeExceeded;
            out.push(GATEWAY_PORT, i, Encap::None);
            Ok(())
        }
        Err(d) => Err(nat_drop(d)),
    }
}

/// Delivers an IPv6 packet to container `ip` of `domain`.
#[inline(always)]
fn deliver_in6(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    (up6, domain, ip): (&Uplink6, DomainId, Ipv6Addr),
) -> Result<(), DropReason> {
    let dconf = ing.ctx.snap.domain(domain).ok_or(DropReason::NoNetwork)?;
    let mac = up6.host_mac(domain, ip).ok_or(DropReason::NoRoute)?;
    set_macs(f, mac, dconf.gateway_mac);
    f.domain = domain.0;
    match l2::known_port(ing, domain, dconf, mac) {
        Some(to) => out.push(to.port, i, to.encap),
        None => l2::flood(dconf, UPLINK_PORT, false, i, out),
    }
    Ok(())
}
