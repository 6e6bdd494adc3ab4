//! The gateway's I/O: everything the gateway thread reads or writes besides the rings.
//!
//! [`GatewayIo`] is what the runtime runs on the gateway thread. It hands each frame
//! from the bridge to the sans-I/O [`Gateway`] and performs the [`Action`]s it returns:
//! frames go to the workers through the rings, DNS queries to the upstream resolvers'
//! sockets ([`upstream`]), DNS answers over TCP and routed packets to the socket uplink
//! (the host's sockets, [`SocketUplink`]), refusals to the per-port counters. Every
//! source on the gateway thread's poll has its token from [`token`].

pub mod token;
mod trim;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mio::{Registry, Token};

use self::token::Source;
use self::upstream::{TcpDone, UdpRecv, Upstreams};
use super::action::{Action, Actions};
use super::config::GatewayConfig;
use super::dispatch::{Gateway, GatewayStats, Inbound, Verdict};
use crate::config::{GATEWAY_PORT, UPLINK_DOMAIN};
use crate::port::ring::RingFrame;
use crate::runtime::{GatewayCtx, GatewayHandler};
use crate::uplink::quota::UplinkLimits;
use crate::uplink::socket::{LINK_HEADROOM, PublishTarget, PublishedSocket, SocketUplink};
use crate::wire::EthernetFrame;

/// The gateway with its sockets: what the gateway thread runs.
pub struct GatewayIo {
    gateway: Gateway,
    uplink: SocketUplink,
    upstreams: Upstreams,
    actions: Actions,
    /// The port refusals of senders IPAM does not know count on: the port of the
    /// frame being handled, else the gateway's own.
    cur_port: u16,
    scratch: Vec<u8>,
    trimmer: trim::Trimmer,
}

impl Default for GatewayIo {
    fn default() -> Self {
        GatewayIo::with_limits(UplinkLimits::default())
    }
}

impl GatewayIo {
    /// A gateway whose socket uplink and DNS forwarding hold flows to `limits`.
    pub fn with_limits(limits: UplinkLimits) -> GatewayIo {
        GatewayIo {
            gateway: Gateway::with_limits(limits),
            uplink: SocketUplink::with_limits(limits),
            upstreams: Upstreams::default(),
            actions: Actions::default(),
            cur_port: GATEWAY_PORT.0,
            scratch: vec![0u8; 65536],
            trimmer: trim::Trimmer::default(),
        }
    }

    /// Lets the socket uplink send containers TCP in super-frames (their ports take
    /// offloads; software segmentation covers a port that does not).
    pub fn set_super_frames(&mut self, on: bool) {
        self.uplink.set_super_frames(on);
    }

    /// Sets the ICMP errors the gateway sends each container per second.
    pub fn set_icmp_error_rate(&mut self, per_sec: u32) {
        self.gateway.set_icmp_error_rate(per_sec);
    }

    /// Hands the gateway the state it shares with the workers for a packet uplink.
    pub fn set_packet_state(
        &mut self,
        nat: Arc<crate::nat::Nat>,
        neigh: Arc<crate::uplink::packet::Neighbours>,
    ) {
        self.gateway.set_packet_state(nat, neigh);
    }

    /// Takes a new configuration (new resolvers get new sockets).
    pub fn configure(&mut self, cfg: GatewayConfig) {
        if self.gateway.configure(cfg) {
            self.upstreams.set(&self.gateway.config().upstreams);
        }
        self.uplink.set_gateways(self.gateway.views());
    }

    pub fn config(&self) -> &GatewayConfig {
        self.gateway.config()
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    pub fn stats(&self) -> &GatewayStats {
        &self.gateway.stats
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
        sock: PublishedSocket,
        to: PublishTarget,
        netns: Option<crate::uplink::splice::NetnsRef>,
    ) -> std::io::Result<()> {
        self.uplink.publish(reg, sock, to, netns)
    }

    /// Stops serving a published port.
    pub fn unpublish(&mut self, reg: &Registry, local: SocketAddr, tcp: bool) -> bool {
        self.uplink.unpublish(reg, local, tcp)
    }

    /// Performs every queued action (performing one may queue more).
    fn perform(&mut self, ctx: &mut GatewayCtx<'_>) {
        while let Some(a) = self.actions.pop() {
            match a {
                Action::Send {
                    domain,
                    frame,
                    len,
                    vnet,
                } => {
                    ctx.send_frame(domain, frame, len, vnet);
                    // A buffer back from the workers for one sent: the uplink's
                    // packets leave in theirs.
                    if let Some(b) = self.uplink.offer_buffer(ctx.buffer()) {
                        self.actions.recycle(b);
                    }
                }
                Action::Drop { port, reason } => {
                    ctx.counters.count_drop(crate::ids::PortId(port), reason, 1)
                }
                Action::DnsTcpReply { conn, bytes } => {
                    self.uplink.dns_reply(ctx.registry, conn, &bytes);
                    self.collect_uplink();
                }
                Action::Forward {
                    upstream,
                    transport,
                    id,
                    bytes,
                } => {
                    let to = (upstream, transport);
                    if !self.upstreams.send(ctx.registry, to, id, &bytes) {
                        let now = Instant::now();
                        let out = &mut self.actions;
                        self.gateway.upstream_failed(upstream, id, now, out);
                    }
                }
            }
        }
    }

    /// Takes what the socket uplink produced: packets for containers, refusals, DNS
    /// messages that came over TCP.
    fn collect_uplink(&mut self) {
        let out = &mut self.actions;
        let gateway = &mut self.gateway;
        self.uplink.drain_output(|o| {
            if o.start == LINK_HEADROOM {
                // Built with room for the Ethernet header: sent from its own buffer.
                gateway.deliver_ip_in_place(o.domain, o.buf, o.end, o.gso_size, out)
            } else {
                gateway.deliver_ip_gso(o.domain, o.packet(), o.gso_size, out);
                Some(o.buf)
            }
        });
        for (who, why) in self.uplink.take_refusals() {
            self.gateway.refused(who, why, self.cur_port, out);
        }
        if !self.uplink.pending_dns() {
            return;
        }
        let now = Instant::now();
        for r in self.uplink.take_dns_requests() {
            self.gateway.dns_tcp_query(r, self.cur_port, now, out);
        }
    }

    /// A frame's IP packet (of either family) for the socket uplink. The uplink may keep the frame's
    /// buffer (a TCP segment goes to its stack as it is) and leave a spare one in its
    /// place.
    fn send_to_uplink(
        &mut self,
        reg: &Registry,
        domain: u16,
        buf: &mut Vec<u8>,
        frame: std::ops::Range<usize>,
    ) {
        let Some(eth) = buf.get(frame.clone()) else {
            return;
        };
        let Ok(eth) = EthernetFrame::new_checked(eth) else {
            return;
        };
        let ip = frame.end - eth.payload().len()..frame.end;
        let views = self.gateway.views();
        self.uplink
            .from_container_frame(reg, views, domain, buf, ip);
        self.collect_uplink();
    }

    /// Who a frame from `port` counts as in the socket uplink's quotas: the address
    /// IPAM gave the port (its IPv4 one, else its IPv6 one), so all of a port's flows
    /// count as one container whichever family they use, and whatever source a port
    /// without port security sends from (None: no IPAM address, the source address
    /// counts, which port security ties to the port).
    fn tenant(&self, domain: u16, port: u16) -> Option<IpAddr> {
        self.gateway
            .config()
            .leases
            .get(&(domain, port))
            .and_then(|l| l.v4.map(IpAddr::V4).or(l.v6.map(IpAddr::V6)))
    }

    /// Answers from resolver `i` over UDP.
    fn upstream_udp_ready(&mut self, i: usize) {
        loop {
            let now = Instant::now();
            match self.upstreams.recv_udp(i, &mut self.scratch) {
                UdpRecv::Msg(msg) => self.gateway.upstream_reply(i, msg, now, &mut self.actions),
                UdpRecv::Refused => self.gateway.upstream_refused(i, now, &mut self.actions),
                UdpRecv::Empty => break,
            }
        }
    }

    /// A TCP connection to a resolver is ready.
    fn upstream_tcp_ready(&mut self, reg: &Registry, i: usize) {
        let now = Instant::now();
        let out = &mut self.actions;
        match self.upstreams.tcp_ready(reg, i, &mut self.scratch) {
            Some(TcpDone::Answer { upstream, msg }) => {
                self.gateway.upstream_reply(upstream, &msg, now, out)
            }
            Some(TcpDone::Failed { upstream, id }) => {
                self.gateway.upstream_failed(upstream, id, now, out)
            }
            None => {}
        }
    }
}

impl GatewayHandler for GatewayIo {
    fn frame(&mut self, ctx: &mut GatewayCtx<'_>, f: RingFrame) {
        let now = Instant::now();
        let inbound = Inbound {
            domain: f.domain,
            port: f.port,
            punt: f.punt,
            data: f.frame(),
            now,
            host: self.uplink.host_address(now),
        };
        if f.domain != UPLINK_DOMAIN.0 {
            self.cur_port = f.port;
        }
        let verdict = self.gateway.frame(inbound, &mut self.actions);
        let (start, end) = (f.start, f.end);
        let mut data = f.data;
        if verdict == Verdict::ToUplink {
            self.uplink.set_tenant(self.tenant(f.domain, f.port));
            self.send_to_uplink(ctx.registry, f.domain, &mut data, start..end);
            self.uplink.set_tenant(None);
        }
        self.perform(ctx);
        self.cur_port = GATEWAY_PORT.0;
        ctx.recycle(data);
    }

    /// One port's turn: its TCP segments for the socket uplink go into its stack's
    /// queue, and the stack is polled once when the turn ends.
    fn frames(&mut self, ctx: &mut GatewayCtx<'_>, frames: &mut dyn Iterator<Item = RingFrame>) {
        self.uplink.begin_batch();
        for f in frames {
            self.frame(ctx, f);
        }
        self.uplink.end_batch(ctx.registry);
        self.collect_uplink();
        self.perform(ctx);
    }

    fn event(&mut self, ctx: &mut GatewayCtx<'_>, token: Token, ev: &mio::event::Event) {
        match Source::of(token) {
            Some(Source::DnsUdp(i)) => self.upstream_udp_ready(i),
            Some(Source::DnsTcp(i)) => self.upstream_tcp_ready(ctx.registry, i),
            _ => {
                let (r, w) = (ev.is_readable(), ev.is_writable());
                let err = ev.is_error() || ev.is_read_closed();
                if self.uplink.event(ctx.registry, token, r, w, err) {
                    self.collect_uplink();
                }
            }
        }
        self.perform(ctx);
    }

    fn tick(&mut self, ctx: &mut GatewayCtx<'_>, now: Instant) -> Option<Instant> {
        let gateway = self.gateway.tick(now, ctx.now_secs(), &mut self.actions);
        let uplink = self.uplink.tick(ctx.registry, now);
        self.collect_uplink();
        self.perform(ctx);
        let (uplink_, actions) = (&mut self.uplink, &mut self.actions);
        let trim = self.trimmer.tick(uplink_.flow_count(), now, || {
            uplink_.shed();
            actions.shed();
            ctx.shed_spares();
        });
        [gateway, uplink, trim].into_iter().flatten().min()
    }
}
