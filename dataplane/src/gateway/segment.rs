//! vswitch on a packet uplink's segment: it answers ARP and pings for its outside
//! address, refuses what else is sent there as a host with nothing listening would,
//! learns the segment's neighbours for the workers, and answers what the workers punt
//! on the way out (time exceeded, fragmentation needed, next hop unresolved).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::action::Actions;
use super::dispatch::{Gateway, Inbound};
use super::{GatewayNet, arp, icmp};
use crate::config::UPLINK_DOMAIN;
use crate::port::Punt;
use crate::wire::icmp::{IcmpType, UnreachCode};
use crate::wire::tcp::TcpFlags;
use crate::wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket};

/// How often an unresolved next hop is asked for, and flows are swept.
const SEGMENT_TICK: Duration = Duration::from_secs(1);

/// Builds the RST a host sends for a TCP segment to a closed port (RFC 9293 3.10.7.1).
fn tcp_reset(frame: &[u8], net: &GatewayNet, out: &mut Vec<u8>) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    let Ok(t) = TcpPacket::new_checked(ip.payload()) else {
        return false;
    };
    if t.rst() || !eth.src().is_unicast() {
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
        let mut r = TcpPacket::new_unchecked(&mut seg[..]);
        r.set_src_port(t.dst_port());
        r.set_dst_port(t.src_port());
        r.set_seq(seq);
        r.set_ack(ack);
        r.set_header_len(20);
        r.set_flags(flags);
        r.fill_checksum(net.gateway_ip, ip.src());
    }
    super::eth_header(out, eth.src(), net.gateway_mac, EtherType::IPV4);
    if !super::ipv4_header(out, net.gateway_ip, ip.src(), IpProtocol::Tcp, seg.len()) {
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
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return;
        };
        if ip.dst() != up.ext_ip || ip.is_fragment() {
            return;
        }
        self.refuse_on_segment(f, &net, &ip, out);
    }

    /// Nothing listens on vswitch's outside address: refuse as a host would (RST, or
    /// port unreachable within the segment's rate).
    fn refuse_on_segment(
        &mut self,
        f: Inbound<'_>,
        net: &GatewayNet,
        ip: &Ipv4Packet<&[u8]>,
        out: &mut Actions,
    ) {
        if ip.protocol() == IpProtocol::Tcp {
            out.send_with(UPLINK_DOMAIN.0, |b| tcp_reset(f.data, net, b));
        } else if ip.protocol() == IpProtocol::Udp && self.uplink_limit.allow(f.now) {
            let (ty, code) = (IcmpType::DEST_UNREACHABLE, UnreachCode::PORT);
            if out.send_with(UPLINK_DOMAIN.0, |b| {
                icmp::error(f.data, net, ty, code, 0, b)
            }) {
                self.stats.icmp_errors += 1;
            }
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
