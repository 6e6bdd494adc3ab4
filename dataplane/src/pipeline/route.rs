//! Routing through the packet uplink: translated on the fast path (NAT), the TTL
//! stepped, the MACs rewritten for the next hop; what the workers cannot finish (an
//! unresolved neighbour, an ICMP error to send) is punted to the gateway.

use std::net::Ipv4Addr;

use super::{Egress, Ingress, l2};
use crate::bridge::DropReason;
use crate::config::{GATEWAY_PORT, UPLINK_DOMAIN, UPLINK_PORT};
use crate::ids::{DomainId, Encap};
use crate::nat::{NatDrop, NatVerdict};
use crate::port::{Frame, Punt, VnetHdr};
use crate::wire::{EtherType, EthernetFrame, Ipv4Packet, MacAddr, TcpPacket};

/// UDP header length, the L4 header of a UDP super-frame's segments.
const UDP_HEADER_LEN: usize = crate::wire::udp::HEADER_LEN;

/// Writes an Ethernet header's MAC addresses in place.
#[inline(always)]
pub(super) fn set_macs(f: &mut Frame, dst: MacAddr, src: MacAddr) {
    if let Ok(mut eth) = EthernetFrame::new_checked(f.data_mut()) {
        eth.set_dst(dst);
        eth.set_src(src);
    }
}

/// Decrements an IPv4 TTL in place (incremental checksum). False when it ran out.
#[inline(always)]
fn ttl_step(ip: &mut Ipv4Packet<&mut [u8]>) -> bool {
    if ip.ttl() <= 1 {
        return false;
    }
    ip.decrement_ttl();
    true
}

pub(super) fn nat_drop(d: NatDrop) -> DropReason {
    match d {
        NatDrop::TableFull => DropReason::NatFull,
        NatDrop::Quota => DropReason::NatQuota,
        NatDrop::Malformed => DropReason::Malformed,
        _ => DropReason::NoRoute,
    }
}

/// Delivers a translated packet to container `ip` of `domain`.
#[inline(always)]
fn deliver_in(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    to: (DomainId, Ipv4Addr),
) -> Result<(), DropReason> {
    let (domain, ip) = to;
    let snap = ing.ctx.snap;
    let up = snap.uplink.as_ref().ok_or(DropReason::NoRoute)?;
    let dconf = snap.domain(domain).ok_or(DropReason::NoNetwork)?;
    let mac = up.host_mac(domain, ip).ok_or(DropReason::NoRoute)?;
    set_macs(f, mac, dconf.gateway_mac);
    f.domain = domain.0;
    match l2::known_port(ing, domain, dconf, mac) {
        Some(to) => out.push(to.port, i, to.encap),
        None => l2::flood(dconf, UPLINK_PORT, false, i, out),
    }
    Ok(())
}

/// What the gateway must do for a routed packet before it may be translated: answer
/// "fragmentation needed" or "time exceeded". Steps the TTL when neither.
#[inline(always)]
pub(super) fn punt_before_nat(
    p: &mut Ipv4Packet<&mut [u8]>,
    vnet: &VnetHdr,
    mtu: u16,
    ext_ip: Ipv4Addr,
) -> Result<Option<Punt>, DropReason> {
    // Larger than the segment takes, with DF (not for hairpin traffic, which never
    // crosses it): the gateway answers fragmentation needed.
    if too_big(p, vnet, mtu) && p.dst() != ext_ip {
        return Ok(Some(Punt::TooBig));
    }
    if !ttl_step(p) {
        return Ok(Some(Punt::TimeExceeded));
    }
    Ok(None)
}

/// A frame from a container to the gateway, bound outside: translated and sent out the
/// packet uplink (or, for its own external address, looped back in: hairpin; what
/// nothing takes there, to the gateway, which answers for the address).
#[inline(always)]
pub(super) fn route_out(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    domain: DomainId,
) -> Result<(), DropReason> {
    let ctx = ing.ctx;
    let (Some(up), Some(nat)) = (ctx.snap.uplink.as_ref(), ctx.nat) else {
        return Err(DropReason::NoRoute);
    };
    let partial = f.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0;
    let vnet = f.vnet;
    let mut eth = EthernetFrame::new_checked(f.data_mut()).map_err(|_| DropReason::Malformed)?;
    let mut ip = Ipv4Packet::new_checked(eth.payload_mut()).map_err(|_| DropReason::Malformed)?;
    // For the uplink's own address and nothing there takes it (a ping, a closed
    // port): the gateway answers as its owner, untranslated and with no flow made.
    if ip.dst() == up.ext_ip && nat.for_uplink_address(&ip, &up.rules, ctx.now) {
        f.punt = Punt::UplinkAddress;
        out.push(GATEWAY_PORT, i, Encap::None);
        return Ok(());
    }
    if let Some(punt) = punt_before_nat(&mut ip, &vnet, up.mtu, up.ext_ip)? {
        f.punt = punt;
        out.push(GATEWAY_PORT, i, Encap::None);
        return Ok(());
    }
    let dst = match nat.outbound_ip(ip, domain.0, up.ext_ip, &up.rules, partial, ctx.now) {
        Ok(NatVerdict::Out { dst }) => dst,
        Ok(NatVerdict::In { .. }) => return Err(DropReason::NoRoute),
        Err(d) => return Err(nat_drop(d)),
    };
    if dst == up.ext_ip {
        // Hairpin: the destination is our own external address.
        let ip = eth.payload_mut();
        return match nat.inbound(ip, up.ext_ip, &up.rules, partial, ctx.now) {
            Ok(NatVerdict::In { domain, ip }) => deliver_in(ing, i, f, out, (DomainId(domain), ip)),
            Ok(NatVerdict::Out { .. }) => Err(DropReason::NoRoute),
            Err(d) => Err(nat_drop(d)),
        };
    }
    send_out(ing, i, f, out, dst)
}

/// Sends a translated packet for `dst` out the packet uplink, to `dst` itself on the
/// segment or to the next hop.
#[inline(always)]
fn send_out(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    dst: Ipv4Addr,
) -> Result<(), DropReason> {
    let up = ing.ctx.snap.uplink.as_ref().ok_or(DropReason::NoRoute)?;
    let neigh = ing.ctx.neigh.ok_or(DropReason::NoRoute)?;
    let mac = if up.on_link(dst) {
        neigh.lookup(dst)
    } else {
        neigh.next_hop()
    };
    to_next_hop(i, f, out, (mac, up.ext_mac));
    Ok(())
}

/// Hands frame `i`, bound out the packet uplink, to the MAC of its next hop (from the
/// uplink's MAC `ext_mac`); not resolved yet, to the gateway, which asks (ARP or
/// neighbour solicitation) while this packet is lost, as a router without a
/// neighbour entry does. Both families.
#[inline(always)]
pub(super) fn to_next_hop(
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
    (mac, ext_mac): (Option<MacAddr>, MacAddr),
) {
    match mac {
        Some(m) => {
            set_macs(f, m, ext_mac);
            out.push(UPLINK_PORT, i, Encap::None);
        }
        None => {
            f.punt = Punt::Unresolved;
            out.push(GATEWAY_PORT, i, Encap::None);
        }
    }
}

/// The transport header a segment of a super-frame repeats: for TCP segmentation
/// (`tcp_gso`) the TCP header's length, read from `tcp` where the packet holds TCP
/// (the minimum where it cannot be read); UDP's header otherwise. Both families.
#[inline(always)]
pub(super) fn segment_l4_len(tcp_gso: bool, tcp: Option<&[u8]>) -> usize {
    if !tcp_gso {
        return UDP_HEADER_LEN;
    }
    tcp.and_then(|p| TcpPacket::new_checked(p).ok())
        .map_or(crate::wire::tcp::MIN_HEADER_LEN, |t| t.header_len())
}

/// Whether an IPv4 packet with DF set is larger than `mtu` (for a super-frame: whether
/// its segments are).
#[inline(always)]
pub(super) fn too_big<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>, vnet: &VnetHdr, mtu: u16) -> bool {
    if !ip.dont_fragment() {
        return false;
    }
    let total = ip.total_len();
    let gso = vnet.gso_type & !VnetHdr::GSO_ECN;
    if gso == VnetHdr::GSO_NONE {
        return total > usize::from(mtu);
    }
    let l4 = segment_l4_len(gso == VnetHdr::GSO_TCPV4, Some(ip.payload()));
    // A super-frame holding one short segment is that segment.
    (ip.header_len() + l4 + usize::from(vnet.gso_size)).min(total) > usize::from(mtu)
}

/// A frame arriving on the packet uplink's port: ARP goes to the gateway, IPv4 for
/// the uplink's address is translated back in, IPv6 takes `route6`.
#[inline(always)]
pub(super) fn from_uplink(
    ing: &Ingress<'_>,
    i: usize,
    f: &mut Frame,
    out: &mut Egress,
) -> Result<(), DropReason> {
    let ctx = ing.ctx;
    let (Some(up), Some(nat)) = (ctx.snap.uplink.as_ref(), ctx.nat) else {
        return Err(DropReason::NoNetwork);
    };
    f.domain = UPLINK_DOMAIN.0;
    let partial = f.vnet.flags & VnetHdr::F_NEEDS_CSUM != 0;
    let mut eth = EthernetFrame::new_checked(f.data_mut()).map_err(|_| DropReason::Malformed)?;
    let (ethertype, dst) = (eth.ethertype(), eth.dst());
    if ethertype == EtherType::ARP {
        out.push(GATEWAY_PORT, i, Encap::None);
        return Ok(());
    }
    if ethertype == EtherType::IPV6 {
        return super::route6::from_uplink6(ing, i, f, out, up.ext_mac);
    }
    if ethertype != EtherType::IPV4 || (dst != up.ext_mac && !dst.is_broadcast()) {
        return Err(DropReason::NoNetwork);
    }
    let ip = Ipv4Packet::new_checked(eth.payload_mut()).map_err(|_| DropReason::Malformed)?;
    if ip.dst() != up.ext_ip {
        return Err(DropReason::NoRoute);
    }
    match nat.inbound_ip(ip, up.ext_ip, &up.rules, partial, ctx.now) {
        Ok(NatVerdict::In { domain, ip: to }) => {
            let ip = eth.payload_mut();
            let stepped = Ipv4Packet::new_checked(ip).is_ok_and(|mut p| ttl_step(&mut p));
            if !stepped {
                return Err(DropReason::NoRoute);
            }
            deliver_in(ing, i, f, out, (DomainId(domain), to))
        }
        Ok(NatVerdict::Out { .. }) => Err(DropReason::NoRoute),
        // For the uplink's address itself (ping), or a closed port there (an RST or
        // port unreachable is due): the gateway answers.
        Err(NatDrop::Local) | Err(NatDrop::NoFlow) => {
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
