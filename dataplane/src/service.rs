//! The gateway service: what the service thread does with the frames the bridge sends
//! to the gateway, and the tables it answers from.
//!
//! Every network's gateway address belongs to vswitch. Frames for it arrive here
//! (untagged, with their network's domain id) and are dispatched by protocol: ARP,
//! ICMP echo, DHCP and DNS are answered on the spot; anything else addressed to the
//! gateway's MAC is routed traffic and goes to the uplink. Answers are framed with the
//! gateway's MAC and the container's (from the address table) and sent back into the
//! domain, where the bridge forwards them like any frame.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mio::{Interest, Registry, Token};

use crate::bridge::DropReason;
use crate::dns::{Action, ClientRef, DnsConfig, DnsServer, Names, Transport};
use crate::gateway::{GatewayNet, arp, dhcp, icmp};
use crate::port::Punt;
use crate::port::service::ServiceFrame;
use crate::runtime::{Service, ServiceCtx};
use crate::uplink::quota::{ContainerId, FlowKind, Quotas, Refusal, UplinkLimits};
use crate::uplink::socket::{NetView, SocketUplink, TcpConnId, build_udp};
use crate::wire::icmp::{IcmpType, UnreachCode};
use crate::wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, MacAddr, UdpPacket};

/// Tokens of the upstream resolvers' UDP sockets (one each) on the service poll.
const TOKEN_DNS_UDP: usize = 16;
/// Tokens of TCP connections to upstream resolvers.
const TOKEN_DNS_TCP: usize = 64;
const MAX_DNS_TCP: usize = 256;

/// How a network's gateway answers DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsService {
    /// Container names, then forwarding.
    #[default]
    Names,
    /// Forwarding only (the default bridge).
    ForwardOnly,
    /// Nothing on port 53.
    Off,
}

/// The gateway's view of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetService {
    pub name: String,
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: MacAddr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
    pub internal: bool,
    /// Masquerade on (traffic may leave through the uplink).
    pub masquerade: bool,
    pub dns: DnsService,
    /// GATEWAY:PORT reaches the host's loopback (else the host's main address).
    pub host_loopback: bool,
}

impl NetService {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len.min(32)))
        };
        u32::from(ip) & m == u32::from(self.subnet) & m
    }
}

/// Where routed traffic leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UplinkMode {
    /// The host's sockets.
    #[default]
    Socket,
    /// Nothing leaves.
    None,
    /// A packet uplink port (translated on the workers' fast path).
    Packet,
}

/// vswitch's presence on a packet uplink's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketUplink {
    pub ext_ip: Ipv4Addr,
    pub ext_mac: MacAddr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub next_hop: Option<Ipv4Addr>,
    pub mtu: u16,
}

/// Everything the service thread answers from; rebuilt by the control thread.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// By domain id.
    pub nets: Vec<Option<NetService>>,
    /// (domain, port slot) -> (MAC, address): what DHCP gives each port.
    pub leases: HashMap<(u16, u16), (MacAddr, Ipv4Addr)>,
    pub uplink: UplinkMode,
    /// DNS names per domain (None: no DNS on that network).
    pub names: Vec<Option<Arc<Names>>>,
    /// The packet uplink, when set.
    pub packet: Option<PacketUplink>,
    /// Upstream resolvers, in order.
    pub upstreams: Vec<SocketAddr>,
}

/// The most (domain, IPv4) -> MAC entries the gateway remembers beyond IPAM's.
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
}

/// How long a DHCP lease lasts (clients renew at half; the address never changes).
pub const DHCP_LEASE_SECS: u32 = 3600;

/// Where a DNS reply goes.
#[derive(Debug, Clone, Copy)]
enum DnsClient {
    Udp { who: ContainerId, port: u16 },
    Tcp { who: ContainerId, conn: TcpConnId },
}

impl DnsClient {
    fn who(&self) -> ContainerId {
        match self {
            DnsClient::Udp { who, .. } | DnsClient::Tcp { who, .. } => *who,
        }
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

/// A TCP connection to an upstream resolver carrying one query.
struct UpstreamTcp {
    stream: mio::net::TcpStream,
    upstream: usize,
    id: u16,
    out: Vec<u8>,
    inb: Vec<u8>,
}

/// The gateway: ARP, ICMP, DHCP, DNS on each network's gateway address, and the
/// socket uplink behind it.
pub struct Gateway {
    cfg: ServiceConfig,
    views: Vec<Option<NetView>>,
    /// The sans-I/O responders' view of each network, by domain.
    gnets: Vec<Option<GatewayNet>>,
    /// ICMP error budgets, by port slot.
    limits: icmp::ErrorBudget,
    reply: Vec<u8>,
    /// (domain, address) -> MAC, from IPAM: never overwritten by what a port sends.
    leased: HashMap<(u16, Ipv4Addr), MacAddr>,
    /// (domain, address) -> port slot, from IPAM: where a container's refusals count.
    lease_ports: HashMap<(u16, Ipv4Addr), u16>,
    /// (domain, address) -> MAC learned from what ports without an IPAM address send.
    neighbours: HashMap<(u16, Ipv4Addr), MacAddr>,
    /// DNS queries each container has in flight.
    dns_quota: Quotas,
    /// The port of the frame being handled (refusals of unknown senders count there).
    cur_port: u16,
    uplink: SocketUplink,
    dns: DnsServer,
    dns_clients: HashMap<u64, DnsClient>,
    dns_next: u64,
    upstream_udp: Vec<Option<mio::net::UdpSocket>>,
    upstream_tcp: Vec<Option<UpstreamTcp>>,
    registered: bool,
    scratch: Vec<u8>,
    /// Shared with the workers: connection tracking and the segment's neighbours.
    nat: Option<Arc<crate::nat::Nat>>,
    neigh: Option<Arc<crate::uplink::packet::Neighbours>>,
    next_arp: Option<Instant>,
    uplink_limit: icmp::RateLimit,
    pub stats: GatewayStats,
}

/// Builds the RST a host sends for a TCP segment to a closed port (RFC 9293 3.10.7.1).
fn tcp_reset(frame: &[u8], net: &GatewayNet, out: &mut Vec<u8>) -> bool {
    use crate::wire::TcpPacket;
    use crate::wire::tcp::TcpFlags;
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
    crate::gateway::eth_header(out, eth.src(), net.gateway_mac, EtherType::IPV4);
    if !crate::gateway::ipv4_header(out, net.gateway_ip, ip.src(), IpProtocol::Tcp, seg.len()) {
        return false;
    }
    out.extend_from_slice(&seg);
    true
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            cfg: ServiceConfig::default(),
            views: Vec::new(),
            gnets: Vec::new(),
            limits: icmp::ErrorBudget::default(),
            reply: Vec::new(),
            leased: HashMap::new(),
            lease_ports: HashMap::new(),
            neighbours: HashMap::new(),
            dns_quota: Quotas::new(UplinkLimits::default()),
            cur_port: crate::config::SERVICE_PORT,
            uplink: SocketUplink::new(),
            dns: DnsServer::new(DnsConfig::default(), 0),
            dns_clients: HashMap::new(),
            dns_next: 1,
            upstream_udp: Vec::new(),
            upstream_tcp: Vec::new(),
            registered: false,
            scratch: vec![0u8; 65536],
            nat: None,
            neigh: None,
            next_arp: None,
            uplink_limit: icmp::RateLimit::default(),
            stats: GatewayStats::default(),
        }
    }
}

impl Gateway {
    /// A gateway whose socket uplink and DNS forwarding hold flows to `limits`.
    pub fn with_limits(limits: UplinkLimits) -> Gateway {
        Gateway {
            uplink: SocketUplink::with_limits(limits),
            dns_quota: Quotas::new(limits),
            ..Gateway::default()
        }
    }

    /// Counts what the uplink refused on each container's port.
    fn count_refusals(&mut self, ctx: &mut ServiceCtx<'_>) {
        for (who, why) in self.uplink.take_refusals() {
            let port = self
                .lease_ports
                .get(&(who.domain, who.ip))
                .copied()
                .unwrap_or(self.cur_port);
            ctx.counters.count_drop(port, drop_reason(why), 1);
        }
    }

    /// Sets the ICMP errors the gateway sends each container per second.
    pub fn set_icmp_error_rate(&mut self, per_sec: u32) {
        self.limits = icmp::ErrorBudget::new(per_sec);
    }

    pub fn configure(&mut self, cfg: ServiceConfig) {
        self.views = cfg
            .nets
            .iter()
            .map(|n| {
                n.as_ref().map(|n| NetView {
                    gateway: n.gateway_ip,
                    subnet: n.subnet,
                    prefix_len: n.prefix_len,
                    egress: !n.internal && n.masquerade && cfg.uplink == UplinkMode::Socket,
                    dns: n.dns != DnsService::Off,
                    host_loopback: n.host_loopback,
                })
            })
            .collect();
        self.gnets = cfg
            .nets
            .iter()
            .map(|n| {
                n.as_ref().map(|n| GatewayNet {
                    gateway_ip: n.gateway_ip,
                    gateway_mac: n.gateway_mac,
                    subnet: n.subnet,
                    prefix_len: n.prefix_len,
                    mtu: n.mtu,
                    dns: n.dns != DnsService::Off,
                    lease_secs: DHCP_LEASE_SECS,
                    domain_name: n.name.clone(),
                })
            })
            .collect();
        self.leased.clear();
        self.lease_ports.clear();
        for ((domain, slot), (mac, ip)) in &cfg.leases {
            self.leased.insert((*domain, *ip), *mac);
            self.lease_ports.insert((*domain, *ip), *slot);
        }
        let leased = &self.leased;
        self.neighbours.retain(|k, _| !leased.contains_key(k));
        self.uplink.set_gateways(&self.views);
        let upstreams_changed = cfg.upstreams != self.cfg.upstreams;
        self.cfg = cfg;
        if upstreams_changed {
            self.dns.set_upstreams(self.cfg.upstreams.len());
            self.upstream_udp.clear();
            self.registered = false;
        }
    }

    /// Opens the upstream resolvers' sockets (on the service thread, with its registry).
    fn ensure_upstreams(&mut self, reg: &Registry) {
        if self.registered {
            return;
        }
        self.registered = true;
        for s in self.upstream_udp.iter_mut().flatten() {
            let _ = reg.deregister(s);
        }
        self.upstream_udp = self
            .cfg
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let bind: SocketAddr = match addr {
                    SocketAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
                    SocketAddr::V6(_) => "[::]:0".parse().ok()?,
                };
                let mut s = mio::net::UdpSocket::bind(bind).ok()?;
                s.connect(*addr).ok()?;
                reg.register(&mut s, Token(TOKEN_DNS_UDP + i), Interest::READABLE)
                    .ok()?;
                Some(s)
            })
            .collect();
    }

    /// A handle for a query in flight, or None (refused and counted: the container has
    /// its share of queries in flight, or everyone together the global limit).
    fn dns_client(&mut self, ctx: &mut ServiceCtx<'_>, c: DnsClient) -> Option<ClientRef> {
        let who = c.who();
        if self.dns_clients.len() >= crate::dns::MAX_IN_FLIGHT_LIMIT
            || self.dns_quota.admit(who, FlowKind::Dns, false).is_err()
        {
            let port = self
                .lease_ports
                .get(&(who.domain, who.ip))
                .copied()
                .unwrap_or(self.cur_port);
            ctx.counters.count_drop(port, DropReason::DnsQuota, 1);
            return None;
        }
        let id = self.dns_next;
        self.dns_next = self.dns_next.wrapping_add(1);
        self.dns_clients.insert(id, c);
        Some(ClientRef(id))
    }

    /// Carries out what the DNS server decided.
    fn dns_act(&mut self, ctx: &mut ServiceCtx<'_>, a: Action) {
        match a {
            Action::Nothing => {}
            Action::Reply { client, bytes, .. } => {
                let Some(c) = self.forget_dns_client(client) else {
                    return;
                };
                match c {
                    DnsClient::Udp { who, port } => {
                        let Some(gw) = self.net(who.domain).map(|n| n.gateway_ip) else {
                            return;
                        };
                        if let Some(p) = build_udp(gw, 53, who.ip, port, &bytes) {
                            self.deliver_ip(ctx, who.domain, &p);
                        }
                    }
                    DnsClient::Tcp { conn, .. } => {
                        self.uplink.dns_reply(ctx.registry, conn, &bytes);
                        self.flush_uplink(ctx);
                    }
                }
            }
            Action::Forward {
                upstream,
                transport,
                id,
                bytes,
            } => {
                self.ensure_upstreams(ctx.registry);
                let sent = match transport {
                    Transport::Udp => self
                        .upstream_udp
                        .get(upstream)
                        .and_then(|s| s.as_ref())
                        .is_some_and(|s| s.send(&bytes).is_ok()),
                    Transport::Tcp => self.forward_tcp(ctx.registry, upstream, id, &bytes),
                };
                if !sent && let Some(next) = self.dns.upstream_failed(upstream, id, Instant::now())
                {
                    self.dns_act(ctx, next);
                }
            }
        }
    }

    /// Ends a query's life: its client, and its place in the container's quota.
    fn forget_dns_client(&mut self, client: ClientRef) -> Option<DnsClient> {
        let c = self.dns_clients.remove(&client.0)?;
        self.dns_quota.release(c.who(), FlowKind::Dns, false);
        Some(c)
    }

    fn forward_tcp(&mut self, reg: &Registry, upstream: usize, id: u16, msg: &[u8]) -> bool {
        let Some(addr) = self.cfg.upstreams.get(upstream).copied() else {
            return false;
        };
        let Ok(len) = u16::try_from(msg.len()) else {
            return false;
        };
        let i = self
            .upstream_tcp
            .iter()
            .position(|c| c.is_none())
            .unwrap_or(self.upstream_tcp.len());
        if i >= MAX_DNS_TCP {
            return false;
        }
        let Ok(mut stream) = mio::net::TcpStream::connect(addr) else {
            return false;
        };
        if reg
            .register(
                &mut stream,
                Token(TOKEN_DNS_TCP + i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return false;
        }
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(msg);
        let c = UpstreamTcp {
            stream,
            upstream,
            id,
            out,
            inb: Vec::new(),
        };
        if i == self.upstream_tcp.len() {
            self.upstream_tcp.push(Some(c));
        } else if let Some(s) = self.upstream_tcp.get_mut(i) {
            *s = Some(c);
        }
        true
    }

    fn upstream_tcp_ready(&mut self, ctx: &mut ServiceCtx<'_>, i: usize) {
        let mut done: Option<Result<Vec<u8>, ()>> = None;
        if let Some(Some(c)) = self.upstream_tcp.get_mut(i) {
            while !c.out.is_empty() {
                match c.stream.write(&c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        done = Some(Err(()));
                        break;
                    }
                }
            }
            loop {
                match c.stream.read(&mut self.scratch) {
                    Ok(0) => {
                        done.get_or_insert(Err(()));
                        break;
                    }
                    Ok(n) => c
                        .inb
                        .extend_from_slice(self.scratch.get(..n).unwrap_or(&[])),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        done.get_or_insert(Err(()));
                        break;
                    }
                }
                if c.inb.len() > 65537 {
                    break;
                }
            }
            if c.inb.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([c.inb[0], c.inb[1]]));
                if c.inb.len() >= len + 2 {
                    done = Some(Ok(c.inb.get(2..len + 2).unwrap_or(&[]).to_vec()));
                }
            }
        }
        let Some(result) = done else { return };
        let Some(Some(mut c)) = self.upstream_tcp.get_mut(i).map(|s| s.take()) else {
            return;
        };
        let _ = ctx.registry.deregister(&mut c.stream);
        let now = Instant::now();
        let next = match result {
            Ok(msg) => self.dns.upstream_reply(c.upstream, &msg, now),
            Err(()) => self.dns.upstream_failed(c.upstream, c.id, now),
        };
        if let Some(a) = next {
            self.dns_act(ctx, a);
        }
    }

    fn upstream_udp_ready(&mut self, ctx: &mut ServiceCtx<'_>, i: usize) {
        loop {
            let n = match self.upstream_udp.get(i).and_then(|s| s.as_ref()) {
                Some(s) => match s.recv(&mut self.scratch) {
                    Ok(n) => n,
                    Err(_) => return,
                },
                None => return,
            };
            let msg = self.scratch.get(..n).unwrap_or(&[]).to_vec();
            if let Some(a) = self.dns.upstream_reply(i, &msg, Instant::now()) {
                self.dns_act(ctx, a);
            }
        }
    }

    /// A UDP DNS query to a gateway.
    fn dns_udp(
        &mut self,
        ctx: &mut ServiceCtx<'_>,
        domain: u16,
        src: Ipv4Addr,
        port: u16,
        msg: &[u8],
    ) {
        let Some(names) = self.cfg.names.get(usize::from(domain)).cloned().flatten() else {
            return;
        };
        let who = ContainerId { domain, ip: src };
        let Some(client) = self.dns_client(ctx, DnsClient::Udp { who, port }) else {
            return;
        };
        let a = self
            .dns
            .query(&names, msg, Transport::Udp, client, Instant::now());
        if matches!(a, Action::Nothing) {
            self.forget_dns_client(client);
        }
        self.dns_act(ctx, a);
    }

    /// DNS-over-TCP messages the uplink collected.
    fn dns_tcp(&mut self, ctx: &mut ServiceCtx<'_>) {
        for r in self.uplink.take_dns_requests() {
            let domain = usize::from(r.from.domain);
            let Some(names) = self.cfg.names.get(domain).cloned().flatten() else {
                continue;
            };
            let c = DnsClient::Tcp {
                who: r.from,
                conn: r.conn,
            };
            let Some(client) = self.dns_client(ctx, c) else {
                continue;
            };
            let a = self
                .dns
                .query(&names, &r.msg, Transport::Tcp, client, Instant::now());
            if matches!(a, Action::Nothing) {
                self.forget_dns_client(client);
            }
            self.dns_act(ctx, a);
        }
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
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

    /// A frame from the packet uplink's segment: ARP and pings for vswitch's address.
    fn handle_uplink(&mut self, ctx: &mut ServiceCtx<'_>, data: &[u8]) {
        let Some(up) = self.cfg.packet else { return };
        let Ok(eth) = EthernetFrame::new_checked(data) else {
            return;
        };
        let gnet = GatewayNet {
            gateway_ip: up.ext_ip,
            gateway_mac: up.ext_mac,
            subnet: up.subnet,
            prefix_len: up.prefix_len,
            mtu: 1500,
            dns: false,
            lease_secs: 0,
            domain_name: String::new(),
        };
        if eth.ethertype() == EtherType::ARP {
            if let Some((ip, mac)) = arp::sender(data)
                && let Some(n) = &self.neigh
            {
                n.learn(ip, mac);
                if Some(ip) == up.next_hop {
                    n.set_next_hop(Some(mac));
                }
            }
            let mut out = std::mem::take(&mut self.reply);
            let answered = arp::reply(data, &gnet, &mut out);
            self.reply = out;
            if answered {
                self.stats.arp_replies += 1;
                self.send_reply(ctx, crate::config::UPLINK_DOMAIN);
            }
            return;
        }
        let mut out = std::mem::take(&mut self.reply);
        let answered = icmp::echo_reply(data, &gnet, &mut out);
        self.reply = out;
        if answered {
            self.stats.echo_replies += 1;
            self.send_reply(ctx, crate::config::UPLINK_DOMAIN);
            return;
        }
        // Nothing listens there: refuse as a host would (RST, or port unreachable).
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return;
        };
        if ip.dst() != up.ext_ip || ip.is_fragment() {
            return;
        }
        if ip.protocol() == IpProtocol::Tcp {
            let mut out = std::mem::take(&mut self.reply);
            let built = tcp_reset(data, &gnet, &mut out);
            self.reply = out;
            if built {
                self.send_reply(ctx, crate::config::UPLINK_DOMAIN);
            }
        } else if ip.protocol() == IpProtocol::Udp && self.uplink_limit.allow(Instant::now()) {
            let mut out = std::mem::take(&mut self.reply);
            let built = icmp::error(
                data,
                &gnet,
                IcmpType::DEST_UNREACHABLE,
                UnreachCode::PORT,
                0,
                &mut out,
            );
            self.reply = out;
            if built {
                self.stats.icmp_errors += 1;
                self.send_reply(ctx, crate::config::UPLINK_DOMAIN);
            }
        }
    }

    /// Asks the uplink segment who has `ip`.
    fn arp_uplink(&mut self, ctx: &mut ServiceCtx<'_>, ip: Ipv4Addr) {
        let Some(up) = self.cfg.packet else { return };
        let mut out = std::mem::take(&mut self.reply);
        arp::request(up.ext_mac, up.ext_ip, ip, &mut out);
        self.reply = out;
        self.send_reply(ctx, crate::config::UPLINK_DOMAIN);
    }

    /// A routed frame the workers could not send out the packet uplink, for the reason
    /// they give: its TTL ran out (time exceeded), it is larger than the segment's MTU
    /// with DF set (fragmentation needed), or its next hop is not resolved yet (ask for
    /// it; this frame is lost, as a router without the neighbour loses it).
    fn packet_routed(
        &mut self,
        ctx: &mut ServiceCtx<'_>,
        (domain, port): (u16, u16),
        data: &[u8],
        gnet: &GatewayNet,
        punt: Punt,
    ) {
        let Some(up) = self.cfg.packet else { return };
        match punt {
            Punt::TimeExceeded => {
                let kind = (IcmpType::TIME_EXCEEDED, 0);
                self.icmp_error(ctx, (domain, port), data, gnet, kind, 0);
                return;
            }
            Punt::TooBig => {
                let kind = (IcmpType::DEST_UNREACHABLE, UnreachCode::FRAG_NEEDED);
                self.icmp_error(ctx, (domain, port), data, gnet, kind, up.mtu);
                return;
            }
            Punt::Unresolved => {}
            // Not routed by the workers (e.g. to another network): nothing to do.
            Punt::None => return,
        }
        let Some(dst) = EthernetFrame::new_checked(data)
            .ok()
            .and_then(|e| Ipv4Packet::new_checked(e.payload()).ok().map(|p| p.dst()))
        else {
            return;
        };
        let target = if Self::on_link(&up, dst) {
            Some(dst)
        } else {
            up.next_hop
        };
        if let Some(t) = target {
            self.arp_uplink(ctx, t);
        }
    }

    fn on_link(up: &PacketUplink, ip: Ipv4Addr) -> bool {
        let m = if up.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(up.prefix_len.min(32)))
        };
        u32::from(ip) & m == u32::from(up.subnet) & m
    }

    pub fn uplink(&self) -> &SocketUplink {
        &self.uplink
    }

    /// Drops every uplink flow; returns how many there were.
    pub fn flush_uplink_flows(&mut self, reg: &Registry) -> usize {
        let n = self.uplink.flows().len();
        self.uplink.flush(reg);
        n
    }

    /// Starts serving a published port through the socket uplink.
    pub fn publish(
        &mut self,
        reg: &Registry,
        sock: crate::uplink::socket::PublishedSocket,
        to: crate::uplink::socket::PublishTarget,
    ) -> std::io::Result<()> {
        self.uplink.publish(reg, sock, to)
    }

    /// Stops serving a published port.
    pub fn unpublish(&mut self, reg: &Registry, local: std::net::SocketAddrV4, tcp: bool) -> bool {
        self.uplink.unpublish(reg, local, tcp)
    }

    fn net(&self, domain: u16) -> Option<&NetService> {
        self.cfg.nets.get(usize::from(domain))?.as_ref()
    }

    /// Learns who has `ip` in `domain` from what a port sent. An address IPAM gave out
    /// is never re-learned: a port without port security cannot take it over.
    fn remember(&mut self, domain: u16, ip: Ipv4Addr, mac: MacAddr) {
        if ip.is_unspecified() || !mac.is_unicast() || self.leased.contains_key(&(domain, ip)) {
            return;
        }
        if self.neighbours.len() >= NEIGHBOURS && !self.neighbours.contains_key(&(domain, ip)) {
            return;
        }
        self.neighbours.insert((domain, ip), mac);
    }

    /// The MAC of `ip` in `domain`: IPAM's, else learned.
    fn neighbour(&self, domain: u16, ip: Ipv4Addr) -> Option<MacAddr> {
        let k = (domain, ip);
        self.leased
            .get(&k)
            .or_else(|| self.neighbours.get(&k))
            .copied()
    }

    /// Frames an IPv4 packet for the container it is addressed to in `domain` (the
    /// network its flow came from, never guessed from the address: networks may
    /// overlap) and sends it there.
    fn deliver_ip(&mut self, ctx: &mut ServiceCtx<'_>, domain: u16, packet: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return;
        };
        let dst = ip.dst();
        let (Some(net), Some(mac)) = (
            self.net(domain).filter(|n| n.contains(dst)),
            self.neighbour(domain, dst),
        ) else {
            self.stats.no_neighbour += 1;
            return;
        };
        let gw = net.gateway_mac;
        let mut frame = ctx.buffer();
        frame.clear();
        frame.extend_from_slice(&mac.0);
        frame.extend_from_slice(&gw.0);
        frame.extend_from_slice(&EtherType::IPV4.to_be_bytes());
        frame.extend_from_slice(packet);
        ctx.send(domain, frame);
    }

    fn flush_uplink(&mut self, ctx: &mut ServiceCtx<'_>) {
        let out: Vec<(u16, Vec<u8>)> = self.uplink.take_output().collect();
        for (domain, p) in out {
            self.deliver_ip(ctx, domain, &p);
        }
        self.count_refusals(ctx);
        if !self.uplink.pending_dns() {
            return;
        }
        self.dns_tcp(ctx);
    }

    /// Sends the frame in `self.reply` into `domain`.
    fn send_reply(&mut self, ctx: &mut ServiceCtx<'_>, domain: u16) {
        let mut buf = ctx.buffer();
        buf.clear();
        buf.extend_from_slice(&self.reply);
        ctx.send(domain, buf);
    }

    fn handle(
        &mut self,
        ctx: &mut ServiceCtx<'_>,
        domain: u16,
        (port, punt): (u16, Punt),
        data: &[u8],
    ) {
        let Ok(eth) = EthernetFrame::new_checked(data) else {
            return;
        };
        self.cur_port = port;
        let Some(net) = self.net(domain).cloned() else {
            return;
        };
        let Some(gnet) = self.gnets.get(usize::from(domain)).cloned().flatten() else {
            return;
        };
        if eth.ethertype() == EtherType::ARP {
            if let Some((ip, mac)) = arp::sender(data) {
                self.remember(domain, ip, mac);
            }
            let mut out = std::mem::take(&mut self.reply);
            let answered = arp::reply(data, &gnet, &mut out);
            self.reply = out;
            if answered {
                self.stats.arp_replies += 1;
                self.send_reply(ctx, domain);
            }
            return;
        }
        if eth.ethertype() != EtherType::IPV4 {
            self.stats.unanswered += 1;
            return;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return;
        };
        self.remember(domain, ip.src(), eth.src());
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
            let leases = &self.cfg.leases;
            let mut out = std::mem::take(&mut self.reply);
            let outcome = dhcp::handle(
                data,
                &gnet,
                |_| leases.get(&(domain, port)).map(|(_, ip)| *ip),
                &mut out,
            );
            self.reply = out;
            if outcome.replied() {
                self.stats.dhcp_replies += 1;
                self.send_reply(ctx, domain);
            } else {
                self.stats.dhcp_ignored += 1;
            }
            return;
        }
        if !to_gw && eth.dst() != net.gateway_mac {
            // A broadcast or multicast not for the gateway.
            self.stats.unanswered += 1;
            return;
        }
        if to_gw && ip.protocol() == IpProtocol::Icmp {
            let mut out = std::mem::take(&mut self.reply);
            let answered = icmp::echo_reply(data, &gnet, &mut out);
            self.reply = out;
            if answered {
                self.stats.echo_replies += 1;
                self.send_reply(ctx, domain);
            }
            return;
        }
        // DNS over UDP on the gateway.
        if to_gw && udp_dport == Some(53) && net.dns != DnsService::Off {
            if let Ok(u) = UdpPacket::new_checked(ip.payload()) {
                let (src, sport) = (ip.src(), u.src_port());
                let msg = u.payload().to_vec();
                self.dns_udp(ctx, domain, src, sport, &msg);
            }
            return;
        }
        // Another UDP port of the gateway: the host's loopback through the socket
        // uplink, or closed (port unreachable) when nothing may leave.
        if let (true, Some(dport)) = (to_gw, udp_dport) {
            if !self.uplink.gateway_open(&self.views, domain, dport) {
                let kind = (IcmpType::DEST_UNREACHABLE, UnreachCode::PORT);
                self.icmp_error(ctx, (domain, port), data, &gnet, kind, 0);
                return;
            }
        }
        // Routed traffic with a packet uplink: the workers translate it; what reaches
        // the gateway needs a neighbour resolved or a TTL answered.
        if !to_gw && self.cfg.uplink == UplinkMode::Packet {
            self.packet_routed(ctx, (domain, port), data, &gnet, punt);
            return;
        }
        // Routed traffic, and TCP/UDP to the gateway as the host: the uplink.
        self.stats.to_uplink += 1;
        self.uplink
            .from_container(ctx.registry, &self.views, domain, eth.payload());
        self.flush_uplink(ctx);
    }

    fn icmp_error(
        &mut self,
        ctx: &mut ServiceCtx<'_>,
        (domain, port): (u16, u16),
        data: &[u8],
        gnet: &GatewayNet,
        (ty, code): (u8, u8),
        next_hop_mtu: u16,
    ) {
        let allowed = self.limits.allow(port, Instant::now());
        if !allowed {
            return;
        }
        let mut out = std::mem::take(&mut self.reply);
        let built = icmp::error(data, gnet, ty, code, next_hop_mtu, &mut out);
        self.reply = out;
        if built {
            self.stats.icmp_errors += 1;
            self.send_reply(ctx, domain);
        }
    }
}

impl Service for Gateway {
    fn frame(&mut self, ctx: &mut ServiceCtx<'_>, f: ServiceFrame) {
        self.stats.frames += 1;
        if f.domain == crate::config::UPLINK_DOMAIN {
            self.handle_uplink(ctx, &f.data);
        } else {
            self.handle(ctx, f.domain, (f.port, f.punt), &f.data);
            self.cur_port = crate::config::SERVICE_PORT;
        }
        ctx.recycle(f.data);
    }

    fn event(&mut self, ctx: &mut ServiceCtx<'_>, token: mio::Token, ev: &mio::event::Event) {
        let t = token.0;
        if (TOKEN_DNS_UDP..TOKEN_DNS_TCP).contains(&t) {
            self.upstream_udp_ready(ctx, t - TOKEN_DNS_UDP);
            return;
        }
        if (TOKEN_DNS_TCP..TOKEN_DNS_TCP + MAX_DNS_TCP).contains(&t) {
            self.upstream_tcp_ready(ctx, t - TOKEN_DNS_TCP);
            return;
        }
        if self.uplink.event(
            ctx.registry,
            token,
            ev.is_readable(),
            ev.is_writable(),
            ev.is_error() || ev.is_read_closed(),
        ) {
            self.flush_uplink(ctx);
        }
    }

    fn tick(&mut self, ctx: &mut ServiceCtx<'_>, now: Instant) -> Option<Instant> {
        // The packet uplink: expire flows, keep asking for an unresolved next hop.
        if let Some(up) = self.cfg.packet
            && self.next_arp.is_none_or(|t| now >= t)
        {
            self.next_arp = Some(now + std::time::Duration::from_secs(1));
            if let Some(nat) = &self.nat {
                nat.table.sweep(ctx.now_secs());
            }
            if let (Some(hop), Some(n)) = (up.next_hop, &self.neigh)
                && n.next_hop().is_none()
            {
                self.arp_uplink(ctx, hop);
            }
        }
        let next = self.uplink.tick(ctx.registry, now);
        self.flush_uplink(ctx);
        let mut actions = Vec::new();
        self.dns.poll(now, &mut actions);
        for a in actions {
            self.dns_act(ctx, a);
        }
        [
            next,
            self.dns.next_deadline(),
            self.next_arp.filter(|_| self.cfg.packet.is_some()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_cannot_take_over_an_address_ipam_gave_out() {
        let mut g = Gateway::default();
        let ip = Ipv4Addr::new(10, 9, 0, 2);
        let mine = MacAddr([2, 0, 0, 0, 0, 2]);
        let evil = MacAddr([2, 0, 0, 0, 0, 66]);
        let mut leases = HashMap::new();
        leases.insert((1, 5), (mine, ip));
        g.configure(ServiceConfig {
            leases,
            ..ServiceConfig::default()
        });
        // An ARP or IPv4 packet from another port claiming the address changes nothing.
        g.remember(1, ip, evil);
        assert_eq!(g.neighbour(1, ip), Some(mine));
        // The same address in another network is another neighbour.
        assert_eq!(g.neighbour(2, ip), None);
        // Addresses IPAM did not give out are learned.
        let other = Ipv4Addr::new(10, 9, 0, 77);
        g.remember(1, other, evil);
        assert_eq!(g.neighbour(1, other), Some(evil));
        assert_eq!(g.lease_ports.get(&(1, ip)), Some(&5));
    }
}
