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
use std::net::Ipv4Addr;
use std::time::Instant;

use crate::port::service::ServiceFrame;
use crate::runtime::{Service, ServiceCtx};
use crate::uplink::socket::{NetView, SocketUplink};
use crate::wire::{EtherType, EthernetFrame, Ipv4Packet, MacAddr};

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

/// Everything the service thread answers from; rebuilt by the control thread.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// By domain id.
    pub nets: Vec<Option<NetService>>,
    /// (domain, port slot) -> (MAC, address): what DHCP gives each port.
    pub leases: HashMap<(u16, u16), (MacAddr, Ipv4Addr)>,
    pub uplink: UplinkMode,
}

/// The most (domain, IPv4) -> MAC entries the gateway remembers beyond IPAM's.
const NEIGHBOURS: usize = 16384;

/// Counters of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub frames: u64,
    pub to_uplink: u64,
    pub unanswered: u64,
    pub no_neighbour: u64,
}

/// The gateway: ARP, ICMP, DHCP, DNS on each network's gateway address, and the
/// socket uplink behind it.
#[derive(Default)]
pub struct Gateway {
    cfg: ServiceConfig,
    views: Vec<Option<NetView>>,
    /// (domain, address) -> MAC, from IPAM and from what containers send.
    neighbours: HashMap<(u16, Ipv4Addr), MacAddr>,
    uplink: SocketUplink,
    pub stats: GatewayStats,
}

impl Gateway {
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
                })
            })
            .collect();
        self.neighbours.clear();
        for ((domain, _), (mac, ip)) in &cfg.leases {
            self.neighbours.insert((*domain, *ip), *mac);
        }
        self.cfg = cfg;
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    pub fn uplink(&self) -> &SocketUplink {
        &self.uplink
    }

    fn net(&self, domain: u16) -> Option<&NetService> {
        self.cfg.nets.get(usize::from(domain))?.as_ref()
    }

    /// The domain whose subnet holds `ip`.
    fn domain_of(&self, ip: Ipv4Addr) -> Option<u16> {
        self.cfg
            .nets
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.contains(ip)))
            .and_then(|i| u16::try_from(i).ok())
    }

    fn remember(&mut self, domain: u16, ip: Ipv4Addr, mac: MacAddr) {
        if ip.is_unspecified() || !mac.is_unicast() {
            return;
        }
        if self.neighbours.len() >= NEIGHBOURS && !self.neighbours.contains_key(&(domain, ip)) {
            return;
        }
        self.neighbours.insert((domain, ip), mac);
    }

    /// Frames an IPv4 packet for the container it is addressed to and sends it.
    fn deliver_ip(&mut self, ctx: &mut ServiceCtx<'_>, packet: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return;
        };
        let dst = ip.dst();
        let Some(domain) = self.domain_of(dst) else {
            self.stats.no_neighbour += 1;
            return;
        };
        let (Some(net), Some(mac)) = (
            self.net(domain),
            self.neighbours.get(&(domain, dst)).copied(),
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
        let out: Vec<Vec<u8>> = self.uplink.take_output().collect();
        for p in out {
            self.deliver_ip(ctx, &p);
        }
    }

    fn handle(&mut self, ctx: &mut ServiceCtx<'_>, domain: u16, data: &[u8]) {
        let Ok(eth) = EthernetFrame::new_checked(data) else {
            return;
        };
        let Some(net) = self.net(domain).cloned() else {
            return;
        };
        if eth.ethertype() != EtherType::IPV4 {
            self.stats.unanswered += 1;
            return;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return;
        };
        self.remember(domain, ip.src(), eth.src());
        let routed =
            eth.dst() == net.gateway_mac && ip.dst() != net.gateway_ip && !ip.dst().is_broadcast();
        let to_gateway_host = eth.dst() == net.gateway_mac && ip.dst() == net.gateway_ip;
        if routed || to_gateway_host {
            self.stats.to_uplink += 1;
            let pkt = eth.payload();
            self.uplink
                .from_container(ctx.registry, &self.views, domain, pkt);
            self.flush_uplink(ctx);
            return;
        }
        self.stats.unanswered += 1;
    }
}

impl Service for Gateway {
    fn frame(&mut self, ctx: &mut ServiceCtx<'_>, f: ServiceFrame) {
        self.stats.frames += 1;
        self.handle(ctx, f.domain, &f.data);
        ctx.recycle(f.data);
    }

    fn event(&mut self, ctx: &mut ServiceCtx<'_>, token: mio::Token, ev: &mio::event::Event) {
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
        let next = self.uplink.tick(ctx.registry, now);
        self.flush_uplink(ctx);
        next
    }
}
