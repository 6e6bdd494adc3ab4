//! vswitch on a packet uplink's segment: it answers ARP and pings for its outside
//! address, refuses what else is sent there as a host with nothing listening would,
//! learns the segment's neighbours for the workers, and answers what the workers punt
//! on the way out (time exceeded, fragmentation needed, next hop unresolved, the
//! uplink's own address from inside: `own_address.rs`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::action::Actions;
use super::dispatch::{Gateway, Inbound};
use super::{GatewayNet, arp, icmp, icmp6};
use crate::config::UPLINK_DOMAIN;
use crate::port::Punt;
use crate::wire::icmp::{IcmpType, UnreachCode};
use crate::wire::icmpv6::Unreach6Code;
use crate::wire::ipv6::{HEADER_LEN, Icmpv6Type, NextHeader, Upper};
use crate::wire::tcp::TcpFlags;
use crate::wire::{EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, MacAddr, TcpPacket};

/// How often an unresolved next hop is asked for, and flows are swept.
const SEGMENT_TICK: Duration = Duration::from_secs(1);

/// A packet to one of vswitch's outside addresses that nothing listens for, in either
/// family: who sent it (MAC and address), where to, and its upper-layer protocol and
/// header. A fragment is not refused (a host answers only the reassembled datagram).
pub(super) struct Refused<'a> {
    mac: MacAddr,
    src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) proto: u8,
    upper: &'a [u8],
}

impl<'a> Refused<'a> {
    /// The refusal's view of `frame`: None for what is not a whole IP packet from a
    /// unicast MAC.
    pub(super) fn parse(frame: &'a [u8]) -> Option<Refused<'a>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let (mac, ethertype) = (eth.src(), eth.ethertype());
        if !mac.is_unicast() {
            return None;
        }
        let pkt = eth.into_payload();
        match ethertype {
            EtherType::IPV4 => {
                let ip = Ipv4Packet::new_checked(pkt).ok()?;
                if ip.is_fragment() {
                    return None;
                }
                let (hl, end) = (ip.header_len(), ip.total_len().min(pkt.len()));
                Some(Refused {
                    mac,
                    src: ip.src().into(),
                    dst: ip.dst().into(),
                    proto: u8::from(ip.protocol()),
                    upper: pkt.get(hl..end)?,
                })
            }
            EtherType::IPV6 => {
                let ip = Ipv6Packet::new_checked(pkt).ok()?;
                let walk = ip.walk().ok()?;
                let Upper::At { proto, offset } = walk.upper else {
                    return None;
                };
                if walk.fragment {
                    return None;
                }
                let end = (HEADER_LEN + ip.payload_len()).min(pkt.len());
                Some(Refused {
                    mac,
                    src: ip.src().into(),
                    dst: ip.dst().into(),
                    proto,
                    upper: pkt.get(offset..end)?,
                })
            }
            _ => None,
        }
    }
}

/// Builds the RST a host sends for a TCP segment to a closed port (RFC 9293 3.10.7.1),
/// in the segment's family, from `mac` and the address it was sent to.
pub(super) fn tcp_reset(r: &Refused<'_>, mac: MacAddr, out: &mut Vec<u8>) -> bool {
    let Ok(t) = TcpPacket::new_checked(r.upper) else {
        return false;
    };
    if t.rst() {
        return false;
    }
    let (seq, ack, flags) = if t.ack_flag() {
        (t.ack(), 0, TcpFlags::RST)
    } else {
        let len = t.payload().len() as u32 + u32::from(t.syn()) + u32::from(t.fin());
        (0, t.seq().wrapping_add(len), TcpFlags::RST | TcpFlags::ACK)
    };
    let mut seg = [0u8; 20];
    {
        let mut rst = TcpPacket::new_unchecked(&mut seg[..]);
        rst.set_src_port(t.dst_port());
        rst.set_dst_port(t.src_port());
        rst.set_seq(seq);
        rst.set_ack(ack);
        rst.set_header_len(20);
        rst.set_flags(flags);
        rst.fill_checksum_ip(r.dst, r.src);
    }
    let ethertype = if r.src.is_ipv4() {
        EtherType::IPV4
    } else {
        EtherType::IPV6
    };
    super::eth_header(out, r.mac, mac, ethertype);
    if !super::ip_header(out, (r.dst, r.src), NextHeader::TCP, seg.len()) {
        return false;
    }
    out.extend_from_slice(&seg);
    true
}

impl Gateway {
    /// vswitch's address on the segment, as the responders see a network.
    fn segment_net(&self) -> Option<GatewayNet> {
        let up = self.cfg.packet?;
        Some(GatewayNet {
            gateway_ip: up.ext_ip,
            gateway_mac: up.ext_mac,
            subnet: up.subnet,
            prefix_len: up.prefix_len,
            mtu: 1500,
            dns: false,
            lease_secs: 0,
            domain_name: String::new(),
        })
    }

    /// A frame from the packet uplink's segment: ARP and pings for vswitch's address.
    pub(super) fn segment_frame(&mut self, f: Inbound<'_>, out: &mut Actions) {
        let (Some(up), Some(net)) = (self.cfg.packet, self.segment_net()) else {
            return;
        };
        let Ok(eth) = EthernetFrame::new_checked(f.data) else {
            return;
        };
        if eth.ethertype() == EtherType::IPV6 {
            self.segment_frame6(f, out);
            return;
        }
        // A flow's packet whose TTL ran out on the way in (the workers left it
        // untranslated): its sender hears time exceeded from vswitch's address.
        if f.punt == Punt::TimeExceeded {
            let ty = IcmpType::TIME_EXCEEDED;
            if self.uplink_limit.allow(f.now)
                && out.send_with(UPLINK_DOMAIN.0, |b| icmp::error(f.data, &net, ty, 0, 0, b))
            {
                self.stats.icmp_errors += 1;
            }
            return;
        }
        if eth.ethertype() == EtherType::ARP {
            if let Some((ip, mac)) = arp::sender(f.data)
                && let Some(n) = &self.neigh
            {
                n.learn(ip, mac);
                if Some(ip) == up.next_hop {
                    n.set_next_hop(Some(mac));
                }
            }
            if out.send_with(UPLINK_DOMAIN.0, |b| arp::reply(f.data, &net, b)) {
                self.stats.arp_replies += 1;
            }
            return;
        }
        if out.send_with(UPLINK_DOMAIN.0, |b| icmp::echo_reply(f.data, &net, b)) {
            self.stats.echo_replies += 1;
            return;
        }
        self.refuse_on_segment(f, out);
    }

    /// Nothing listens on vswitch's outside addresses: refuse a packet to one of them
    /// as a host would, in its family (RST, or port unreachable within the segment's
    /// rate).
    pub(super) fn refuse_on_segment(&mut self, f: Inbound<'_>, out: &mut Actions) {
        let Some(up) = self.cfg.packet else { return };
        let Some(r) = Refused::parse(f.data) else {
            return;
        };
        let ours = match r.dst {
            IpAddr::V4(d) => d == up.ext_ip,
            IpAddr::V6(d) => up.v6.is_some_and(|v6| v6.ext_ip == d),
        };
        if !ours {
            return;
        }
        match r.proto {
            NextHeader::TCP => {
                out.send_with(UPLINK_DOMAIN.0, |b| tcp_reset(&r, up.ext_mac, b));
            }
            NextHeader::UDP
                if self.uplink_limit.allow(f.now)
                    && self.port_unreachable_on_segment(f.data, r.dst, out) =>
            {
                self.stats.icmp_errors += 1;
            }
            _ => {}
        }
    }

    /// Sends "port unreachable" about the packet in `frame`, to `dst`, one of vswitch's
    /// outside addresses, from it: ICMP or ICMPv6 by its family.
    fn port_unreachable_on_segment(&self, frame: &[u8], dst: IpAddr, out: &mut Actions) -> bool {
        if dst.is_ipv4() {
            let Some(net) = self.segment_net() else {
                return false;
            };
            let (ty, code) = (IcmpType::DEST_UNREACHABLE, UnreachCode::PORT);
            out.send_with(UPLINK_DOMAIN.0, |b| {
                icmp::error(frame, &net, ty, code, 0, b)
            })
        } else {
            let Some((_, net)) = self.segment_net6() else {
                return false;
            };
            let kind = (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::PORT);
            out.send_with(UPLINK_DOMAIN.0, |b| icmp6::error(frame, &net, kind, 0, b))
        }
    }

    /// Asks the uplink segment who has `ip`.
    fn arp_segment(&mut self, ip: Ipv4Addr, out: &mut Actions) {
        let Some(up) = self.cfg.packet else { return };
        out.send_with(UPLINK_DOMAIN.0, |b| {
            arp::request(up.ext_mac, up.ext_ip, ip, b);
            true
        });
    }

    /// A routed frame the workers could not send out the packet uplink, for the reason
    /// they give: its TTL ran out (time exceeded), it is larger than the segment's MTU
    /// with DF set (fragmentation needed), or its next hop is not resolved yet (ask for
    /// it; this frame is lost, as a router without the neighbour loses it).
    pub(super) fn packet_routed(&mut self, f: Inbound<'_>, net: &GatewayNet, out: &mut Actions) {
        let Some(up) = self.cfg.packet else { return };
        match f.punt {
            Punt::TimeExceeded => {
                let kind = (IcmpType::TIME_EXCEEDED, 0);
                self.icmp_error(f, net, kind, 0, out);
                return;
            }
            Punt::TooBig => {
                let kind = (IcmpType::DEST_UNREACHABLE, UnreachCode::FRAG_NEEDED);
                self.icmp_error(f, net, kind, up.mtu, out);
                return;
            }
            Punt::UplinkAddress => {
                self.for_uplink_address(f, net, out);
                return;
            }
            Punt::Unresolved => {}
            // Not routed by the workers (e.g. to another network): nothing to do.
            Punt::None => return,
        }
        let Some(dst) = EthernetFrame::new_checked(f.data)
            .ok()
            .and_then(|e| Ipv4Packet::new_checked(e.payload()).ok().map(|p| p.dst()))
        else {
            return;
        };
        let target = if up.on_link(dst) {
            Some(dst)
        } else {
            up.next_hop
        };
        if let Some(t) = target {
            self.arp_segment(t, out);
        }
    }

    /// Once a second with a packet uplink: expires flows (`now_secs` on the flows'
    /// clock) and keeps asking for an unresolved next hop. Returns when it next needs
    /// to run.
    pub(super) fn tick_segment(
        &mut self,
        now: Instant,
        now_secs: u32,
        out: &mut Actions,
    ) -> Option<Instant> {
        let up = self.cfg.packet?;
        if self.next_arp.is_none_or(|t| now >= t) {
            self.next_arp = Some(now + SEGMENT_TICK);
            if let Some(nat) = &self.nat {
                nat.table.sweep(now_secs);
                nat.table6.sweep(now_secs);
            }
            if let (Some(hop), Some(n)) = (up.next_hop, &self.neigh)
                && n.next_hop().is_none()
            {
                self.arp_segment(hop, out);
            }
            self.tick_segment6(out);
        }
        self.next_arp
    }

    /// Runs the gateway's timers: the segment's, the DNS server's retries, the periodic
    /// router advertisements. Returns when they next need to run.
    pub fn tick(&mut self, now: Instant, now_secs: u32, out: &mut Actions) -> Option<Instant> {
        let segment = self.tick_segment(now, now_secs, out);
        self.poll_dns(now, out);
        let ra = self.tick_ra(now, out);
        [segment, self.resolver.next_deadline(), ra]
            .into_iter()
            .flatten()
            .min()
    }
}
