//! The gateway's decisions: a frame in, [`Action`]s out.
//!
//! Frames for a network's gateway arrive untagged with their domain and the port they
//! came in on, and are dispatched by address family (IPv6 in `dispatch6`), then by
//! protocol: ARP, ICMP echo, DHCP and DNS are
//! answered on the spot; a UDP port of the gateway that leads nowhere on the host is
//! refused; anything else addressed to the gateway's MAC is routed traffic, which the
//! caller hands to the socket uplink ([`Verdict::ToUplink`]) unless a packet uplink
//! carries it (the workers translate that; what they punt is answered here). Answers
//! are framed with the gateway's MAC and the container's (from the address table) and
//! sent back into the domain, where the bridge forwards them like any frame.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use super::action::{Action, Actions};
use super::config::{DHCP_LEASE_SECS, GatewayConfig, NetDns, UplinkMode};
use super::resolver::Resolver;
use super::{GatewayNet, GatewayNet6, arp, dhcp, icmp};
use crate::bridge::DropReason;
use crate::port::{Punt, VnetHdr};
use crate::uplink::quota::{ContainerId, Refusal, UplinkLimits};
use crate::uplink::socket::{NetView, NetView6, gateway_target};
use crate::wire::ethernet::HEADER_LEN as ETH_HEADER_LEN;
use crate::wire::icmp::{IcmpType, UnreachCode};
use crate::wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, MacAddr, TcpPacket, UdpPacket,
};

/// The most (domain, address) -> MAC entries the gateway remembers beyond IPAM's.
const NEIGHBOURS: usize = 16384;

/// Counters of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub frames: u64,
    pub arp_replies: u64,
    pub echo_replies: u64,
    pub dhcp_replies: u64,
    pub dhcp_ignored: u64,
    pub icmp_errors: u64,
    pub to_uplink: u64,
    pub unanswered: u64,
    pub no_neighbour: u64,
    /// Neighbour advertisements for the gateway's IPv6 addresses.
    pub nd_replies: u64,
    /// Router advertisements, solicited and periodic.
    pub router_adverts: u64,
    /// The embedded DNS's counts, by domain (network).
    pub dns: Vec<DnsNetCounts>,
}

/// What the embedded DNS did for one network's containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsNetCounts {
    /// Queries received (refused ones included).
    pub queries: u64,
    /// Answers sent, whatever their code.
    pub answers: u64,
    /// Queries sent to an upstream resolver (first attempts).
    pub forwarded: u64,
    /// Queries that failed: answered SERVFAIL or REFUSED, or refused by the container's
    /// share of queries in flight.
    pub failures: u64,
}

impl GatewayStats {
    /// The DNS counts of `domain`, the table grown to hold it (once per new network).
    pub(super) fn dns_of(&mut self, domain: u16) -> &mut DnsNetCounts {
        let i = usize::from(domain);
        if self.dns.len() <= i {
            self.dns.resize(i + 1, DnsNetCounts::default());
        }
        let last = self.dns.len() - 1;
        &mut self.dns[i.min(last)]
    }
}

/// A frame the bridge sent to the gateway, and what the gateway is told with it.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The frame's network ([`crate::config::UPLINK_DOMAIN`]: the packet uplink's
    /// segment).
    pub domain: u16,
    /// The port slot it came in on.
    pub port: u16,
    /// Why the workers handed a routed frame over.
    pub punt: Punt,
    /// The untagged Ethernet frame.
    pub data: &'a [u8],
    pub now: Instant,
    /// The host's main address, which GATEWAY:PORT stands for (None: unknown).
    pub host: Option<Ipv4Addr>,
}

/// What became of a frame besides the actions it queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answered, refused or dropped here.
    Done,
    /// Routed traffic, or TCP/UDP to the gateway as the host: the frame's IPv4 or IPv6
    /// packet goes to the socket uplink.
    ToUplink,
}

/// The gateway: ARP, ICMP, DHCP and DNS on each network's gateway address, and the
/// tables it answers from. It performs no I/O: see [`super::io`].
pub struct Gateway {
    pub(super) cfg: GatewayConfig,
    /// The socket uplink's view of each network, by domain.
    views: Vec<Option<NetView>>,
    /// The IPv4 responders' view of each network, by domain (None: no IPv4).
    pub(super) nets: Vec<Option<Arc<GatewayNet>>>,
    /// The IPv6 responders' view of each network, by domain (None: no IPv6).
    pub(super) nets6: Vec<Option<Arc<GatewayNet6>>>,
    /// ICMP and ICMPv6 error budgets, by port slot.
    pub(super) limits: icmp::ErrorBudget,
    /// (domain, address) -> MAC, from IPAM: never overwritten by what a port sends.
    leased: HashMap<(u16, IpAddr), MacAddr>,
    /// (domain, address) -> port slot, from IPAM: where a container's refusals count.
    lease_ports: HashMap<(u16, IpAddr), u16>,
    /// (domain, address) -> MAC learned from what ports without an IPAM address send.
    neighbours: HashMap<(u16, IpAddr), MacAddr>,
    /// When the next unsolicited router advertisements go out (None: at once).
    pub(super) next_ra: Option<Instant>,
    pub(super) resolver: Resolver,
    /// Shared with the workers: connection tracking and the segment's neighbours.
    pub(super) nat: Option<Arc<crate::nat::Nat>>,
    pub(super) neigh: Option<Arc<crate::uplink::packet::Neighbours>>,
    pub(super) next_arp: Option<Instant>,
    pub(super) uplink_limit: icmp::RateLimit,
    pub stats: GatewayStats,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway::with_limits(UplinkLimits::default())
    }
}

/// The port a refusal is counted on.
fn drop_reason(r: Refusal) -> DropReason {
    match r {
        Refusal::TcpQuota => DropReason::TcpQuota,
        Refusal::UdpQuota => DropReason::UdpQuota,
        Refusal::PingQuota => DropReason::PingQuota,
        Refusal::DnsQuota => DropReason::DnsQuota,
        Refusal::FdLimit => DropReason::FdLimit,
    }
}

impl Gateway {
    /// A gateway whose DNS forwarding holds each container to `limits`.
    pub fn with_limits(limits: UplinkLimits) -> Gateway {
        Gateway {
            cfg: GatewayConfig::default(),
            views: Vec::new(),
            nets: Vec::new(),
            nets6: Vec::new(),
            limits: icmp::ErrorBudget::default(),
            leased: HashMap::new(),
            lease_ports: HashMap::new(),
            neighbours: HashMap::new(),
            resolver: Resolver::new(limits),
            nat: None,
            neigh: None,
            next_arp: None,
            next_ra: None,
            uplink_limit: icmp::RateLimit::default(),
            stats: GatewayStats::default(),
        }
    }

    /// Sets the ICMP errors the gateway sends each container per second.
    pub fn set_icmp_error_rate(&mut self, per_sec: u32) {
        self.limits = icmp::ErrorBudget::new(per_sec);
    }

    /// Hands the gateway the state it shares with the workers for a packet uplink.
    pub fn set_packet_state(
        &mut self,
        nat: Arc<crate::nat::Nat>,
        neigh: Arc<crate::uplink::packet::Neighbours>,
    ) {
        self.nat = Some(nat);
        self.neigh = Some(neigh);
    }

    /// Takes a new configuration; returns whether the upstream resolvers changed (their
    /// sockets must be opened anew).
    pub fn configure(&mut self, cfg: GatewayConfig) -> bool {
        self.views = cfg
            .nets
            .iter()
            .map(|n| n.as_ref().and_then(|n| uplink_view(n, cfg.uplink)))
            .collect();
        self.nets = cfg
            .nets
            .iter()
            .map(|n| n.as_ref().and_then(responder_view).map(Arc::new))
            .collect();
        let nets6: Vec<_> = (cfg.nets.iter())
            .map(|n| n.as_ref().and_then(responder_view6).map(Arc::new))
            .collect();
        if nets6 != self.nets6 {
            // New or changed IPv6 networks hear from their router at once.
            self.next_ra = None;
        }
        self.nets6 = nets6;
        self.set_leases(&cfg);
        let upstreams_changed = cfg.upstreams != self.cfg.upstreams;
        self.cfg = cfg;
        if upstreams_changed {
            self.resolver.set_upstreams(self.cfg.upstreams.len());
        }
        upstreams_changed
    }

    /// Rebuilds the address tables from IPAM's leases; learned neighbours that IPAM
    /// now gave out are forgotten.
    fn set_leases(&mut self, cfg: &GatewayConfig) {
        self.leased.clear();
        self.lease_ports.clear();
        for ((domain, slot), lease) in &cfg.leases {
            let addrs = [lease.v4.map(IpAddr::V4), lease.v6.map(IpAddr::V6)];
            for ip in addrs.into_iter().flatten() {
                self.leased.insert((*domain, ip), lease.mac);
                self.lease_ports.insert((*domain, ip), *slot);
            }
        }
        let leased = &self.leased;
        self.neighbours.retain(|k, _| !leased.contains_key(k));
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// The socket uplink's view of each network, by domain.
    pub fn views(&self) -> &[Option<NetView>] {
        &self.views
    }

    /// The port a container's refusals count on: the one IPAM gave its address, else
    /// `fallback` (the port of the frame being handled).
    pub(super) fn port_of(&self, who: ContainerId<IpAddr>, fallback: u16) -> u16 {
        self.lease_ports
            .get(&(who.domain, who.ip))
            .copied()
            .unwrap_or(fallback)
    }

    /// Counts a flow the socket uplink refused `who`.
    pub fn refused(
        &self,
        who: ContainerId<IpAddr>,
        why: Refusal,
        fallback: u16,
        out: &mut Actions,
    ) {
        out.push(Action::Drop {
            port: self.port_of(who, fallback),
            reason: drop_reason(why),
        });
    }

    /// Handles one frame the bridge sent to the gateway.
    pub fn frame(&mut self, f: Inbound<'_>, out: &mut Actions) -> Verdict {
        self.stats.frames += 1;
        if f.domain == crate::config::UPLINK_DOMAIN.0 {
            self.segment_frame(f, out);
            return Verdict::Done;
        }
        let Ok(eth) = EthernetFrame::new_checked(f.data) else {
            return Verdict::Done;
        };
        if eth.ethertype() == EtherType::IPV6 {
            return self.frame6(f, out);
        }
        let Some(net) = self.nets.get(usize::from(f.domain)).cloned().flatten() else {
            self.stats.unanswered += 1;
            return Verdict::Done;
        };
        if eth.ethertype() == EtherType::ARP {
            self.arp(f, &net, out);
            return Verdict::Done;
        }
        if eth.ethertype() != EtherType::IPV4 {
            self.stats.unanswered += 1;
            return Verdict::Done;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return Verdict::Done;
        };
        self.remember(f.domain, ip.src().into(), eth.src());
        let to_gw = ip.dst() == net.gateway_ip;
        let udp_dport = if ip.protocol() == IpProtocol::Udp && !ip.is_fragment() {
            UdpPacket::new_checked(ip.payload())
                .ok()
                .map(|u| u.dst_port())
        } else {
            None
        };
        // DHCP: to the gateway or the limited broadcast, port 67.
        if udp_dport == Some(dhcp::SERVER_PORT) && (to_gw || ip.dst().is_broadcast()) {
            self.dhcp(f, &net, out);
            return Verdict::Done;
        }
        if to_gw {
            return self.for_gateway(f, &net, (&ip, udp_dport), out);
        }
        if eth.dst() != net.gateway_mac {
            // A broadcast or multicast not for the gateway.
            self.stats.unanswered += 1;
            return Verdict::Done;
        }
        self.routed(f, &net, ip.ttl(), out)
    }

    /// An IPv4 packet for the gateway's own address: ping, DNS, a closed UDP port, or
    /// the host behind it.
    fn for_gateway(
        &mut self,
        f: Inbound<'_>,
        net: &GatewayNet,
        (ip, udp_dport): (&Ipv4Packet<&[u8]>, Option<u16>),
        out: &mut Actions,
    ) -> Verdict {
        if ip.protocol() == IpProtocol::Icmp {
            if out.send_with(f.domain, |b| icmp::echo_reply(f.data, net, b)) {
                self.stats.echo_replies += 1;
            }
            return Verdict::Done;
        }
        if udp_dport == Some(53) && net.dns {
            if let Ok(u) = UdpPacket::new_checked(ip.payload()) {
                let who = ContainerId {
                    domain: f.domain,
                    ip: IpAddr::V4(ip.src()),
                };
                let (sport, msg) = (u.src_port(), u.payload().to_vec());
                let server = IpAddr::V4(net.gateway_ip);
                self.dns_udp((who, sport, server), f.port, &msg, f.now, out);
            }
            return Verdict::Done;
        }
        // Another UDP port of the gateway: the host through the socket uplink, or
        // closed (port unreachable) when it leads nowhere.
        if let Some(dport) = udp_dport
            && !self.gateway_open(f.domain, dport, f.host)
        {
            let kind = (IcmpType::DEST_UNREACHABLE, UnreachCode::PORT);
            self.icmp_error(f, net, kind, 0, out);
            return Verdict::Done;
        }
        self.stats.to_uplink += 1;
        Verdict::ToUplink
    }

    /// Routed traffic: the packet uplink's (the workers translate it; what reaches the
    /// gateway needs a neighbour resolved or a TTL answered), else the socket uplink's,
    /// which the gateway forwards as a router would: at TTL 1 (`ttl`) it answers "time
    /// exceeded" instead, as for IPv6 at hop limit 1.
    fn routed(&mut self, f: Inbound<'_>, net: &GatewayNet, ttl: u8, out: &mut Actions) -> Verdict {
        if self.cfg.uplink == UplinkMode::Packet {
            self.packet_routed(f, net, out);
            return Verdict::Done;
        }
        if ttl <= 1 {
            self.icmp_error(f, net, (IcmpType::TIME_EXCEEDED, 0), 0, out);
            return Verdict::Done;
        }
        self.stats.to_uplink += 1;
        Verdict::ToUplink
    }

    /// Whether GATEWAY:`port` of `domain` leads anywhere on the host (else it is a
    /// closed port).
    pub(super) fn gateway_open(&self, domain: u16, port: u16, host: Option<Ipv4Addr>) -> bool {
        self.views
            .get(usize::from(domain))
            .and_then(|n| n.as_ref())
            .is_some_and(|n| gateway_target(n, port, host).is_some())
    }

    fn arp(&mut self, f: Inbound<'_>, net: &GatewayNet, out: &mut Actions) {
        if let Some((ip, mac)) = arp::sender(f.data) {
            self.remember(f.domain, ip.into(), mac);
        }
        if out.send_with(f.domain, |b| arp::reply(f.data, net, b)) {
            self.stats.arp_replies += 1;
        }
    }

    fn dhcp(&mut self, f: Inbound<'_>, net: &GatewayNet, out: &mut Actions) {
        let leases = &self.cfg.leases;
        let lease = |_| leases.get(&(f.domain, f.port)).and_then(|l| l.v4);
        let replied = out.send_with(f.domain, |b| dhcp::handle(f.data, net, lease, b).replied());
        self.count_dhcp(replied);
    }

    /// Counts a DHCP or DHCPv6 message answered or not.
    pub(super) fn count_dhcp(&mut self, replied: bool) {
        if replied {
            self.stats.dhcp_replies += 1;
        } else {
            self.stats.dhcp_ignored += 1;
        }
    }

    /// Sends an ICMP error about `f` back to its sender, within the port's budget.
    pub(super) fn icmp_error(
        &mut self,
        f: Inbound<'_>,
        net: &GatewayNet,
        (ty, code): (u8, u8),
        next_hop_mtu: u16,
        out: &mut Actions,
    ) {
        if !self.limits.allow(f.port, f.now) {
            return;
        }
        if out.send_with(f.domain, |b| {
            icmp::error(f.data, net, ty, code, next_hop_mtu, b)
        }) {
            self.stats.icmp_errors += 1;
        }
    }

    /// Learns who has `ip` in `domain` from what a port sent. An address IPAM gave out
    /// is never re-learned: a port without port security cannot take it over.
    pub(super) fn remember(&mut self, domain: u16, ip: IpAddr, mac: MacAddr) {
        if ip.is_unspecified() || !mac.is_unicast() || self.leased.contains_key(&(domain, ip)) {
            return;
        }
        if self.neighbours.len() >= NEIGHBOURS && !self.neighbours.contains_key(&(domain, ip)) {
            return;
        }
        self.neighbours.insert((domain, ip), mac);
    }

    /// The MAC of `ip` in `domain`: IPAM's, else learned.
    pub(super) fn neighbour(&self, domain: u16, ip: IpAddr) -> Option<MacAddr> {
        let k = (domain, ip);
        self.leased
            .get(&k)
            .or_else(|| self.neighbours.get(&k))
            .copied()
    }

    /// Frames an IPv4 packet for the container it is addressed to in `domain` (the
    /// network its flow came from, never guessed from the address: networks may
    /// overlap) and sends it there.
    pub fn deliver_ip(&mut self, domain: u16, packet: &[u8], out: &mut Actions) {
        self.deliver_ip_gso(domain, packet, 0, out);
    }

    /// As [`Gateway::deliver_ip`]; a non-zero `gso_size` makes the packet a TCP
    /// super-frame (its checksum field holding the pseudo-header sum) to be cut into
    /// segments of that size where it is delivered.
    pub fn deliver_ip_gso(&mut self, domain: u16, packet: &[u8], gso_size: u16, out: &mut Actions) {
        let Some((dst, src, vnet, ty)) = self.delivery(domain, packet, gso_size) else {
            return;
        };
        out.send_offload_with(domain, vnet, |b| {
            super::eth_header(b, dst, src, ty);
            b.extend_from_slice(packet);
            true
        });
    }

    /// As [`Gateway::deliver_ip_gso`], for the packet at `buf[ETH_HEADER_LEN..end]`:
    /// the Ethernet header is written in front of it and the frame (`buf[..end]`) sent
    /// from `buf`, not copied. Gives `buf` back when nothing was sent.
    pub fn deliver_ip_in_place(
        &mut self,
        domain: u16,
        mut buf: Vec<u8>,
        end: usize,
        gso_size: u16,
        out: &mut Actions,
    ) -> Option<Vec<u8>> {
        let packet = buf.get(ETH_HEADER_LEN..end).unwrap_or(&[]);
        let Some((dst, src, vnet, ty)) = self.delivery(domain, packet, gso_size) else {
            return Some(buf);
        };
        let mut eth = EthernetFrame::new_checked(buf.get_mut(..end)?).ok()?;
        eth.set_dst(dst);
        eth.set_src(src);
        eth.set_ethertype(ty);
        out.push(Action::Send {
            domain,
            frame: buf,
            len: end,
            vnet,
        });
        None
    }

    /// Where an IP packet (of either family) for a container of `domain` goes: the
    /// container's MAC, the gateway's, the frame's offload metadata and EtherType.
    /// None (counted) when it has no neighbour there.
    fn delivery(
        &mut self,
        domain: u16,
        packet: &[u8],
        gso_size: u16,
    ) -> Option<(MacAddr, MacAddr, VnetHdr, u16)> {
        if Ipv6Packet::new_checked(packet).is_ok() {
            let (mac, gw, vnet) = self.delivery6(domain, packet, gso_size)?;
            return Some((mac, gw, vnet, EtherType::IPV6));
        }
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        let vnet = if gso_size == 0 {
            VnetHdr::default()
        } else {
            super_frame_vnet(&ip, gso_size)?
        };
        let dst = ip.dst();
        let net = self
            .cfg
            .nets
            .get(usize::from(domain))
            .and_then(|n| n.as_ref());
        let (Some(net), Some(mac)) = (
            net.filter(|n| n.contains(dst)),
            self.neighbour(domain, dst.into()),
        ) else {
            self.stats.no_neighbour += 1;
            return None;
        };
        Some((mac, net.gateway_mac, vnet, EtherType::IPV4))
    }
}

/// The offload metadata of a TCP/IPv6 packet (no extension headers) sent as a
/// super-frame behind an Ethernet header; None when it is not TCP.
pub(super) fn super_frame_vnet6(ip: &Ipv6Packet<&[u8]>, gso_size: u16) -> Option<VnetHdr> {
    if ip.next_header() != crate::wire::ipv6::NextHeader::TCP {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let l4 = ETH_HEADER_LEN + crate::wire::ipv6::HEADER_LEN;
    let l4_start = u16::try_from(l4).ok()?;
    let hdr_len = u16::try_from(l4 + tcp.header_len()).ok()?;
    Some(VnetHdr::tcpv6(l4_start, hdr_len, gso_size))
}

/// The offload metadata of a TCP/IPv4 packet sent as a super-frame behind an Ethernet
/// header; None when it is not TCP.
fn super_frame_vnet(ip: &Ipv4Packet<&[u8]>, gso_size: u16) -> Option<VnetHdr> {
    if ip.protocol() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let l4 = ETH_HEADER_LEN + ip.header_len();
    let l4_start = u16::try_from(l4).ok()?;
    let hdr_len = u16::try_from(l4 + tcp.header_len()).ok()?;
    Some(VnetHdr::tcpv4(l4_start, hdr_len, gso_size))
}

/// What the socket uplink needs of a network, of both families (an IPv6-only network
/// has 0.0.0.0/32 for its IPv4).
fn uplink_view(n: &super::NetConfig, uplink: UplinkMode) -> Option<NetView> {
    let (gateway, subnet, prefix_len) = match n.v4 {
        Some(v4) => (
            v4.gateway,
            v4.subnet.network().addr(),
            v4.subnet.prefix_len(),
        ),
        None => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 32),
    };
    let v6 = n.v6.map(|v6| NetView6 {
        gateway: v6.gateway,
        subnet: v6.subnet,
    });
    Some(NetView {
        gateway,
        subnet,
        prefix_len,
        v6,
        egress: !n.internal && n.masquerade && uplink == UplinkMode::Socket,
        dns: n.dns != NetDns::Off,
        host_loopback: n.host_loopback,
    })
}

/// What the IPv4 responders need of a network.
fn responder_view(n: &super::NetConfig) -> Option<GatewayNet> {
    let v4 = n.v4?;
    Some(GatewayNet {
        gateway_ip: v4.gateway,
        gateway_mac: n.gateway_mac,
        subnet: v4.subnet.network().addr(),
        prefix_len: v4.subnet.prefix_len(),
        mtu: n.mtu,
        dns: n.dns != NetDns::Off,
        lease_secs: DHCP_LEASE_SECS,
        domain_name: n.name.clone(),
    })
}

/// What the IPv6 responders need of a network.
fn responder_view6(n: &super::NetConfig) -> Option<GatewayNet6> {
    let v6 = n.v6?;
    Some(GatewayNet6 {
        gateway: v6.gateway,
        link_local: crate::wire::ipv6::link_local(n.gateway_mac),
        gateway_mac: n.gateway_mac,
        subnet: v6.subnet,
        mtu: n.mtu,
        dns: n.dns != NetDns::Off,
        router: !n.internal,
        lease_secs: DHCP_LEASE_SECS,
        autonomous: n.slaac,
        domain_name: n.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{Lease, Net4};

    fn lease(mac: MacAddr, ip: Ipv4Addr) -> Lease {
        Lease {
            mac,
            v4: Some(ip),
            v6: None,
        }
    }

    #[test]
    fn a_port_cannot_take_over_an_address_ipam_gave_out() {
        let mut g = Gateway::default();
        let ip = Ipv4Addr::new(10, 9, 0, 2);
        let mine = MacAddr([2, 0, 0, 0, 0, 2]);
        let evil = MacAddr([2, 0, 0, 0, 0, 66]);
        let mut leases = HashMap::new();
        leases.insert((1, 5), lease(mine, ip));
        g.configure(GatewayConfig {
            leases,
            ..GatewayConfig::default()
        });
        // An ARP or IPv4 packet from another port claiming the address changes nothing.
        let ip = IpAddr::V4(ip);
        g.remember(1, ip, evil);
        assert_eq!(g.neighbour(1, ip), Some(mine));
        // The same address in another network is another neighbour.
        assert_eq!(g.neighbour(2, ip), None);
        // Addresses IPAM did not give out are learned.
        let other = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 77));
        g.remember(1, other, evil);
        assert_eq!(g.neighbour(1, other), Some(evil));
        assert_eq!(g.lease_ports.get(&(1, ip)), Some(&5));
    }

    #[test]
    fn a_packet_built_with_headroom_leaves_in_its_own_buffer() {
        let (gw_mac, ctr_mac) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let ctr = Ipv4Addr::new(10, 9, 0, 2);
        let mut leases = HashMap::new();
        leases.insert((0, 5), lease(ctr_mac, ctr));
        let mut g = Gateway::default();
        g.configure(GatewayConfig {
            nets: vec![Some(super::super::NetConfig {
                name: "n".into(),
                gateway_mac: gw_mac,
                v4: Some(Net4::of(Ipv4Addr::new(10, 9, 0, 1), 24)),
                v6: None,
                mtu: 1500,
                internal: false,
                masquerade: true,
                dns: NetDns::Off,
                host_loopback: false,
                slaac: true,
            })],
            leases,
            ..GatewayConfig::default()
        });
        // 14 bytes of room, a 20-byte IPv4 header to the container, stale bytes after.
        let mut buf = vec![0xeeu8; 100];
        let ip = [
            0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 9, 0, 1, 10, 9, 0, 2,
        ];
        buf[ETH_HEADER_LEN..ETH_HEADER_LEN + 20].copy_from_slice(&ip);
        let mut out = Actions::default();
        assert!(g.deliver_ip_in_place(0, buf, 34, 0, &mut out).is_none());
        let Some(Action::Send { frame, len, .. }) = out.pop() else {
            panic!("nothing sent");
        };
        assert_eq!((len, frame.len()), (34, 100), "the buffer keeps its length");
        let eth = EthernetFrame::new_checked(&frame[..len]).unwrap();
        assert_eq!((eth.dst(), eth.src()), (ctr_mac, gw_mac));
        assert_eq!(eth.ethertype(), EtherType::IPV4);
        assert_eq!(eth.payload(), &ip[..]);
        // To nobody known: the buffer comes back.
        let mut buf = vec![0u8; 34];
        buf[ETH_HEADER_LEN..].copy_from_slice(&ip);
        buf[33] = 99;
        assert!(g.deliver_ip_in_place(0, buf, 34, 0, &mut out).is_some());
        assert!(out.pop().is_none());
    }
}
