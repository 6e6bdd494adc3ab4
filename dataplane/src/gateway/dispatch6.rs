//! The IPv6 arm of [`Gateway::frame`]: neighbour discovery, router advertisements,
//! echo, DHCPv6 and DNS on the gateway's IPv6 addresses, and routed IPv6.
//!
//! Routed IPv6 (to the gateway's MAC, for an address that is not the gateway's; hop
//! limit exhausted: "time exceeded") goes to the socket uplink ([`Verdict::ToUplink`])
//! where that is the uplink, as IPv4 does; its packets for containers come back
//! through [`Gateway::deliver_ip_in_place`] and [`Gateway::deliver_ip_gso`] (either
//! family; [`Gateway::deliver_ip6`] frames the DNS server's answers). A packet uplink with an IPv6 address routes IPv6
//! on the workers; the frames they punt (packet too big, time exceeded, an unresolved
//! neighbour, the uplink's own address) are answered by `Gateway::packet_routed6`, and what else reaches the
//! gateway takes [`Gateway::not_yet_routed`], which answers ICMPv6 "no route to
//! destination". TCP and UDP to the gateway's IPv6 address other than DNS and DHCPv6
//! reach the host through the socket uplink as they do over IPv4, whatever uplink
//! routes (`gateway_target`: the host's main address or its loopback), or are refused
//! where that leads nowhere (UDP: "port unreachable" here; TCP: the uplink's RST).

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::action::Actions;
use super::config::UplinkMode;
use super::dispatch::{Gateway, Inbound, Verdict};
use super::{GatewayNet6, dhcp6, icmp6, ndp};
use crate::port::VnetHdr;
use crate::uplink::quota::ContainerId;
use crate::wire::icmpv6::Unreach6Code;
use crate::wire::ipv6::{ALL_NODES, Icmpv6Type, NextHeader, Upper, multicast_mac};
use crate::wire::{EtherType, EthernetFrame, Ipv6Packet, MacAddr, UdpPacket};

/// What dispatch reads of an IPv6 frame.
struct Frame6 {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hops: u8,
    /// The upper-layer protocol and, for UDP, the destination port.
    proto: Option<u8>,
    udp: Option<(u16, u16)>,
    icmp_type: Option<u8>,
}

impl Frame6 {
    fn parse(frame: &[u8]) -> Option<Frame6> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let (src_mac, dst_mac) = (eth.src(), eth.dst());
        let ip = Ipv6Packet::new_checked(eth.into_payload()).ok()?;
        let mut f = Frame6 {
            src_mac,
            dst_mac,
            src: ip.src(),
            dst: ip.dst(),
            hops: ip.hop_limit(),
            proto: None,
            udp: None,
            icmp_type: None,
        };
        if let Ok(Upper::At { proto, offset }) = ip.upper() {
            f.proto = Some(proto);
            let upper = ip.packet().get(offset..).unwrap_or_default();
            match proto {
                NextHeader::UDP => {
                    f.udp = UdpPacket::new_checked(upper)
                        .ok()
                        .map(|u| (u.src_port(), u.dst_port()))
                }
                NextHeader::ICMPV6 => f.icmp_type = upper.first().copied(),
                _ => {}
            }
        }
        Some(f)
    }
}

/// Where DNS listens and DHCPv6 serves.
const DNS_PORT: u16 = 53;

impl Gateway {
    /// Handles an IPv6 frame for the gateway of its network.
    pub(super) fn frame6(&mut self, f: Inbound<'_>, out: &mut Actions) -> Verdict {
        let net = self.nets6.get(usize::from(f.domain)).cloned().flatten();
        let (Some(net), Some(p)) = (net, Frame6::parse(f.data)) else {
            self.stats.unanswered += 1;
            return Verdict::Done;
        };
        self.learn6(f, &p);
        if self.local6(f, &net, &p, out) {
            return Verdict::Done;
        }
        if p.dst.is_multicast() || p.dst_mac != net.gateway_mac {
            self.stats.unanswered += 1;
            return Verdict::Done;
        }
        if net.is_gateway(&p.dst) {
            return self.for_gateway6(f, &net, &p, out);
        }
        // Punted by the workers on the way out the packet uplink.
        if self.packet_routed6(f, &net, out) {
            return Verdict::Done;
        }
        if p.hops <= 1 {
            self.icmp6_error(f, &net, (Icmpv6Type::TIME_EXCEEDED, 0), 0, out);
            return Verdict::Done;
        }
        if self.cfg.uplink == UplinkMode::Socket {
            self.stats.to_uplink += 1;
            return Verdict::ToUplink;
        }
        self.not_yet_routed(f, &net, out);
        Verdict::Done
    }

    /// TCP or UDP to another port of the gateway's IPv6 address: the host through the
    /// socket uplink whatever carries routed traffic, as over IPv4 (`for_gateway`).
    /// Where that leads nowhere (no host address, a network that may not leave, DNS
    /// off), UDP is refused here with "port unreachable" and TCP by the uplink with an
    /// RST, as over IPv4.
    fn for_gateway6(
        &mut self,
        f: Inbound<'_>,
        net: &GatewayNet6,
        p: &Frame6,
        out: &mut Actions,
    ) -> Verdict {
        match (p.proto, p.udp) {
            (Some(NextHeader::TCP), _) => {}
            (Some(NextHeader::UDP), Some((_, port))) => {
                if !self.gateway_open(f.domain, port, f.host) {
                    let kind = (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::PORT);
                    self.icmp6_error(f, net, kind, 0, out);
                    return Verdict::Done;
                }
            }
            _ => {
                self.stats.unanswered += 1;
                return Verdict::Done;
            }
        }
        self.stats.to_uplink += 1;
        Verdict::ToUplink
    }

    /// What the gateway answers itself: neighbour and router solicitations, echo,
    /// DHCPv6, DNS. Returns whether the frame was one of those.
    fn local6(&mut self, f: Inbound<'_>, net: &GatewayNet6, p: &Frame6, out: &mut Actions) -> bool {
        match (p.icmp_type, p.udp) {
            (Some(Icmpv6Type::NEIGHBOR_SOLICIT), _) => {
                if out.send_with(f.domain, |b| ndp::na_reply(f.data, net, b)) {
                    self.stats.nd_replies += 1;
                }
            }
            (Some(Icmpv6Type::ROUTER_SOLICIT), _) => {
                if out.send_with(f.domain, |b| ndp::solicited_ra(f.data, net, b)) {
                    self.stats.router_adverts += 1;
                }
            }
            (Some(Icmpv6Type::ECHO_REQUEST), _) if net.is_gateway(&p.dst) => {
                if out.send_with(f.domain, |b| icmp6::echo_reply(f.data, net, b)) {
                    self.stats.echo_replies += 1;
                }
            }
            (Some(Icmpv6Type::NEIGHBOR_ADVERT), _) => {}
            (_, Some((_, crate::wire::dhcpv6::SERVER_PORT))) => self.dhcp6(f, net, out),
            (_, Some((sport, DNS_PORT))) if net.is_gateway(&p.dst) && net.dns => {
                self.dns6(f, (p.src, sport, p.dst), out)
            }
            _ => return false,
        }
        true
    }

    /// Learns who has an address from neighbour discovery (with its link-layer option)
    /// or from any unicast source.
    fn learn6(&mut self, f: Inbound<'_>, p: &Frame6) {
        if let Some((a, mac)) = ndp::announced(f.data) {
            self.remember(f.domain, IpAddr::V6(a), mac);
        } else if !p.src.is_unspecified() && !p.src.is_multicast() {
            self.remember(f.domain, IpAddr::V6(p.src), p.src_mac);
        }
    }

    fn dhcp6(&mut self, f: Inbound<'_>, net: &GatewayNet6, out: &mut Actions) {
        let lease = (self.cfg.leases.get(&(f.domain, f.port))).and_then(|l| l.v6);
        let replied = out.send_with(f.domain, |b| dhcp6::handle(f.data, net, lease, b).replied());
        self.count_dhcp(replied);
    }

    /// A DNS query over UDP to the gateway's IPv6 address.
    fn dns6(
        &mut self,
        f: Inbound<'_>,
        (src, sport, dst): (Ipv6Addr, u16, Ipv6Addr),
        out: &mut Actions,
    ) {
        let Some(msg) = udp_payload(f.data) else {
            return;
        };
        let who = ContainerId {
            domain: f.domain,
            ip: IpAddr::V6(src),
        };
        let server = IpAddr::V6(dst);
        self.dns_udp((who, sport, server), f.port, &msg, f.now, out);
    }

    /// Routed IPv6 where the uplink is not the socket uplink (which carries it):
    /// "no route to destination" to the sender, within its port's error budget. The
    /// packet uplink's NAT66 and routed mode take over here.
    pub fn not_yet_routed(&mut self, f: Inbound<'_>, net: &GatewayNet6, out: &mut Actions) {
        let kind = (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::NO_ROUTE);
        self.icmp6_error(f, net, kind, 0, out);
    }

    /// Sends an ICMPv6 error about `f` back to its sender, within the port's budget
    /// (`word`: the MTU of packet too big, else 0).
    pub fn icmp6_error(
        &mut self,
        f: Inbound<'_>,
        net: &GatewayNet6,
        kind: (u8, u8),
        word: u32,
        out: &mut Actions,
    ) {
        if !self.limits.allow(f.port, f.now) {
            return;
        }
        if out.send_with(f.domain, |b| icmp6::error(f.data, net, kind, word, b)) {
            self.stats.icmp_errors += 1;
        }
    }

    /// Frames an IPv6 packet for the container it is addressed to in `domain` (the
    /// network its flow came from) and sends it there; counted as `no_neighbour` when
    /// nobody there has the address.
    pub fn deliver_ip6(&mut self, domain: u16, packet: &[u8], out: &mut Actions) {
        let Some((mac, gateway_mac, _)) = self.delivery6(domain, packet, 0) else {
            return;
        };
        out.send_with(domain, |b| {
            super::eth_header(b, mac, gateway_mac, EtherType::IPV6);
            b.extend_from_slice(packet);
            true
        });
    }

    /// Where an IPv6 packet for a container of `domain` goes: its MAC, the gateway's,
    /// and the frame's offload metadata (a non-zero `gso_size`: a TCP super-frame to
    /// cut at that size). None (counted) when nobody there has the address.
    pub(super) fn delivery6(
        &mut self,
        domain: u16,
        packet: &[u8],
        gso_size: u16,
    ) -> Option<(MacAddr, MacAddr, VnetHdr)> {
        let ip = Ipv6Packet::new_checked(packet).ok()?;
        let vnet = match gso_size {
            0 => VnetHdr::default(),
            _ => super::dispatch::super_frame_vnet6(&ip, gso_size)?,
        };
        let dst = ip.dst();
        let net = self.nets6.get(usize::from(domain)).cloned().flatten();
        let mac = self.neighbour(domain, IpAddr::V6(dst));
        let (Some(net), Some(mac)) = (net.filter(|n| n.subnet.contains(dst) || ipv6_ll(&dst)), mac)
        else {
            self.stats.no_neighbour += 1;
            return None;
        };
        Some((mac, net.gateway_mac, vnet))
    }

    /// Sends the periodic router advertisements when due; returns when next.
    pub(super) fn tick_ra(&mut self, now: Instant, out: &mut Actions) -> Option<Instant> {
        if self.nets6.iter().all(Option::is_none) {
            return None;
        }
        if self.next_ra.is_some_and(|t| now < t) {
            return self.next_ra;
        }
        let to = (multicast_mac(&ALL_NODES), ALL_NODES);
        for (d, n) in self.nets6.iter().enumerate() {
            let (Some(n), Ok(d)) = (n, u16::try_from(d)) else {
                continue;
            };
            if out.send_with(d, |b| ndp::router_advert(n, to, b)) {
                self.stats.router_adverts += 1;
            }
        }
        self.next_ra = Some(now + Duration::from_secs(ndp::RA_INTERVAL_SECS));
        self.next_ra
    }
}

fn ipv6_ll(a: &Ipv6Addr) -> bool {
    crate::wire::ipv6::is_link_local(a)
}

/// The UDP payload of an IPv6 frame.
fn udp_payload(frame: &[u8]) -> Option<Vec<u8>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv6Packet::new_checked(eth.into_payload()).ok()?;
    let Upper::At { offset, .. } = ip.upper().ok()? else {
        return None;
    };
    let udp = UdpPacket::new_checked(ip.packet().get(offset..)?).ok()?;
    Some(udp.payload().to_vec())
}

#[cfg(test)]
mod tests;
