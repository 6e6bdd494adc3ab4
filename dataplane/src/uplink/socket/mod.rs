//! The socket uplink: containers reach the outside (and the host) through the host's
//! own sockets, with the host's address, as slirp4netns and pasta do for one namespace.
//!
//! - **TCP** is terminated in userspace by smoltcp, one interface per container
//!   (`Medium::Ip`, any-IP: it answers for whatever address a container connects to).
//!   On a container's SYN the uplink opens a listening socket for exactly that
//!   destination with its SYN-ACK held back, and starts a non-blocking host `connect`;
//!   only when the host connection is up does the container get its SYN-ACK (refused:
//!   an RST; no route on the host: ICMP unreachable), so the container sees the real
//!   outcome. Data is relayed
//!   between smoltcp's buffers and the host socket without an intermediate copy
//!   (reads land in smoltcp's transmit ring, writes come from its receive ring).
//! - **UDP** needs no stack: each flow (container address and port, destination
//!   address and port) gets a connected host UDP socket; replies are built back into
//!   packets. Flows expire after [`UDP_IDLE`].
//! - **ICMP echo** goes out through ping sockets (`SOCK_DGRAM`/`IPPROTO_ICMP`, or
//!   `IPPROTO_ICMPV6`) where the host's `net.ipv4.ping_group_range` allows them;
//!   otherwise the container is told the destination is administratively unreachable.
//! - **IPv6** is one more arm of each (`family`): flows are keyed by `IpAddr`, host
//!   sockets are of the destination's family, smoltcp speaks both.
//! - The gateway address stands for the host: a connection to GATEWAY:PORT reaches the
//!   host at its main address ([`host`](super::host)), so services bound to 127.0.0.1
//!   only are not reachable; a network created with `--host-loopback` reaches the
//!   host's 127.0.0.1:PORT instead. Port 53 of a network without DNS is closed.
//!
//! Destinations inside any vswitch network are never reached this way (networks stay
//! isolated), nor is anything from an internal network.
//!
//! Every connection ends: handshakes and idle time are bounded ([`UplinkLimits`]), host
//! sockets have keep-alive, and whatever ended a connection releases all of it. What
//! each container may hold is bounded by [`Quotas`]; refusals are handed to the caller
//! ([`SocketUplink::take_refusals`]) to be counted on the container's port.
//!
//! The code is split by protocol: `tcp` (smoltcp stacks in `stack`), `udp`,
//! `ping`, `published` ports and their loopback clients `spliced` into the
//! container; this module holds the flow tables, dispatch and housekeeping. Those are
//! the core: they hold flow state and socket ids, and ask for I/O through
//! `sockets::HostSockets`; `sockets` is the one module with host sockets, their
//! poll registrations and tokens, and the system calls on them.
//!
//! Sans-I/O towards the switch: IP packets of either family come in by
//! [`SocketUplink::from_container`] and go out through [`SocketUplink::drain_output`];
//! the caller frames them.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp as smol_tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, Ipv4Address};

use super::challenge;
use super::quota::{FlowKind, Quotas, Refusal, UplinkLimits};
use super::splice::{self, NetnsRef, Pumped, SpliceError};
use crate::wire::{IpProtocol, Ipv4Packet, TcpPacket, UdpPacket, checksum};

#[cfg(test)]
mod core_tests;
mod family;
mod ping;
mod published;
mod sockets;
mod spliced;
mod stack;
mod tcp;
#[cfg(test)]
mod tests;
mod udp;

pub use self::ping::PING_IDLE;
use self::ping::*;
use self::published::*;
pub use self::published::{MAX_INBOUND_UDP, PublishTarget};
use self::sockets::token::UplinkSource;
use self::sockets::{
    HostSockets, ListenSock, PingSock, PoolStart, Sockets, SpliceId, TcpSock, UdpSock,
};
pub use self::sockets::{PublishedSocket, token};
use self::spliced::*;
use self::stack::*;
pub use self::stack::{LINK_HEADROOM, OutPacket};
use self::tcp::*;
pub use self::tcp::{
    CONTAINER_ACK_TIMEOUT, CONTAINER_KEEPALIVE, DnsTcpRequest, TCP_BUFFER, TCP_BUFFER_BUDGET,
    TCP_BUFFER_MIN, TcpConnId,
};
use self::udp::*;
pub use self::udp::{UDP_IDLE, build_ip, build_udp};

/// Keep-alive on host sockets: first probe after this much silence, then every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] unanswered probes end the connection
/// (a dead peer is found in about two minutes of silence plus one).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_PROBES: u32 = 6;

/// A container, as the uplink sees it: its network and its address, of either family
/// (the gateway names a port's IPAM address, its IPv4 one first, as the tenant of all
/// its flows: a dual-stack container's flows of both families count together).
pub type ContainerId = super::quota::ContainerId<IpAddr>;

/// What the uplink needs to know of each network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetView {
    /// The IPv4 gateway and subnet (0.0.0.0/32 on an IPv6-only network: nothing is in
    /// it and nothing is for it).
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    /// The IPv6 gateway and prefix (None: no IPv6).
    pub v6: Option<NetView6>,
    /// Traffic may leave (not internal, masquerade on).
    pub egress: bool,
    /// DNS is served on the gateway (TCP port 53 is answered locally).
    pub dns: bool,
    /// GATEWAY:PORT reaches the host's 127.0.0.1:PORT (`--host-loopback`), instead of
    /// the host's main address.
    pub host_loopback: bool,
}

/// A network's IPv6, as the uplink sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetView6 {
    pub gateway: Ipv6Addr,
    pub subnet: crate::wire::Ipv6Cidr,
}

impl NetView {
    /// Whether `ip` is in the network (of either family).
    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => crate::wire::Ipv4Cidr::new(self.subnet, self.prefix_len).contains(a),
            IpAddr::V6(a) => self.v6.is_some_and(|n| n.subnet.contains(a)),
        }
    }

    /// Whether `ip` is the network's gateway (of either family).
    pub fn is_gateway(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a == self.gateway && !a.is_unspecified(),
            IpAddr::V6(a) => self.v6.is_some_and(|n| n.gateway == a),
        }
    }

    /// The gateway of `ip`'s family, if the network has that family.
    fn gateway_for(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) if !self.gateway.is_unspecified() => Some(self.gateway.into()),
            IpAddr::V4(_) => None,
            IpAddr::V6(_) => self.v6.map(|n| n.gateway.into()),
        }
    }
}

/// Whether the host's sockets may be asked to reach `dst`: not the host itself (a
/// loopback or IPv4-mapped address), not a multicast, broadcast or link-local one.
fn routable(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_unspecified() || a.is_broadcast() || a.is_multicast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || crate::wire::ipv6::is_link_local(&a)
                || a.to_ipv4_mapped().is_some()
                || matches!(a.segments(), [0, 0, 0, 0, 0, 0, _, _]))
        }
    }
}

/// Where a flow from a container goes on the host. `host` is the host's main address,
/// which GATEWAY:PORT stands for unless the network opted in to the host's loopback.
fn target(
    nets: &[Option<NetView>],
    domain: u16,
    (dst, port): (IpAddr, u16),
    host: Option<Ipv4Addr>,
) -> Option<SocketAddr> {
    let own = nets.get(usize::from(domain))?.as_ref()?;
    if own.is_gateway(dst) {
        return gateway_target(own, port, host).map(SocketAddr::V4);
    }
    if !own.egress {
        return None;
    }
    if nets.iter().flatten().any(|n| n.contains(dst)) {
        return None;
    }
    routable(dst).then_some(SocketAddr::new(dst, port))
}

/// What GATEWAY:PORT reaches: nothing from a network that may not leave, nothing on
/// port 53 of a network without DNS, the host's loopback where the network opted in,
/// else the host's main address (none: closed).
pub(crate) fn gateway_target(
    net: &NetView,
    port: u16,
    host: Option<Ipv4Addr>,
) -> Option<SocketAddrV4> {
    if !net.egress || (port == 53 && !net.dns) {
        return None;
    }
    let ip = if net.host_loopback {
        Ipv4Addr::LOCALHOST
    } else {
        host?
    };
    Some(SocketAddrV4::new(ip, port))
}

/// One flow of the uplink, for `conntrack ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub proto: &'static str,
    /// The container's address and port (for ICMP, the echo id as the port).
    pub inside: SocketAddr,
    /// The far end.
    pub outside: SocketAddr,
    pub state: String,
}

/// Counters of the socket uplink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkStats {
    pub tcp_open: u64,
    pub tcp_refused: u64,
    pub udp_flows: u64,
    pub ping_flows: u64,
    pub dropped: u64,
    /// TCP connections ended for a handshake that did not finish in time.
    pub tcp_handshake_timeouts: u64,
    /// Established TCP connections ended for idling too long.
    pub tcp_idle_timeouts: u64,
    /// Flows refused by a quota or the descriptor budget.
    pub refused_quota: u64,
    /// Published-port connections from the host's loopback spliced into the container.
    pub tcp_spliced: u64,
    /// Loopback clients that took the frame path because splicing was not possible.
    pub splice_fallbacks: u64,
    /// RSTs from containers inside the window but not at its start, answered with a
    /// challenge ACK instead of ending the connection (RFC 5961).
    pub challenge_acks: u64,
    /// IP fragments from containers, dropped: the uplink reassembles nothing.
    pub fragments: u64,
}

pub struct SocketUplink {
    /// Each container's TCP stack (while it has connections).
    stacks: HashMap<ContainerId, Stack>,
    /// Stacks to poll: a packet arrived, or a connection of theirs moved.
    active: std::collections::HashSet<ContainerId>,
    /// Every stack with a smoltcp timer, by when it is due (each stack's `due`, once):
    /// a wake-up finds the due ones without looking at the others.
    timers: BTreeSet<(Instant, ContainerId)>,
    /// When every flow is next looked at (timeouts).
    housekeeping_at: Option<Instant>,
    tcp: Vec<Option<TcpConn>>,
    tcp_by_quad: HashMap<(u16, Quad), usize>,
    udp: Vec<Option<UdpFlow>>,
    udp_by_key: HashMap<(u16, Quad), usize>,
    ping: Vec<Option<PingFlow>>,
    ping_by_key: HashMap<PingKey, usize>,
    /// Packets for containers (IPv4, ready to be framed), the network each goes to and,
    /// for a TCP super-frame, the segment size it is to be cut into (else 0).
    out: Vec<OutPacket>,
    /// Spare packet buffers (at most [`POOL_BUFFERS`]): lent to a stack's device while
    /// it is polled, swapped for the buffers of frames handed over whole.
    pool: Vec<Vec<u8>>,
    /// Containers' ports take super-frames: their TCP gets segments up to 64 KB,
    /// marked for segmentation at the container's own MSS.
    super_frames: bool,
    /// The tenant the frame being handled counts as: the address IPAM gave its port
    /// (a port without port security may send from any address, a dual-stack one from
    /// both families: all of them count as one container), else none (the source
    /// address is the container).
    tenant: Option<IpAddr>,
    /// Frames from containers are queued into their stacks and the stacks polled by
    /// [`SocketUplink::end_batch`], once for a batch of frames, not after each.
    batching: bool,
    next_generation: u32,
    quotas: Quotas<IpAddr>,
    /// Refused flows, for the caller to count on the container's port.
    refusals: Vec<(ContainerId, Refusal)>,
    epoch: Instant,
    scratch: Vec<u8>,
    pub stats: UplinkStats,
    /// Whether the host lets this process have ping sockets, by family (IPv4, IPv6).
    ping_allowed: [Option<bool>; 2],
    published: Vec<Option<Published>>,
    /// Published ports whose accept ran out of descriptors: their listeners are
    /// edge-triggered, so the waiting clients are accepted again on a timer, not only
    /// when the next one arrives.
    accept_retry: Vec<usize>,
    /// When they are tried again.
    accept_retry_at: Option<Instant>,
    /// A retry is running: its failures were counted already.
    accept_retrying: bool,
    splices: Vec<Option<SplicedConn>>,
    inbound_udp: HashMap<(u16, Quad), InboundUdp>,
    /// Each network's view (its gateways: what published ports' loopback clients
    /// appear as inside).
    gateways: Vec<Option<NetView>>,
    /// DNS messages received over TCP on a gateway.
    dns_requests: Vec<DnsTcpRequest>,
    /// Connections something happened to since the last pump (a packet from the
    /// container, a host socket event): only these are looked at, so one container's
    /// idle connections cost the others nothing.
    touched: Vec<usize>,
    /// smoltcp buffer bytes each container's connections hold.
    buffers: HashMap<ContainerId, usize>,
    /// The host sockets of all of the above, lent to the core for each call that
    /// takes the poll ([`sockets`]).
    sockets: Sockets,
}

impl Default for SocketUplink {
    fn default() -> Self {
        SocketUplink::new()
    }
}

/// Whether an I/O error means this process (or the host) is out of descriptors.
fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Drops the free slots at a table's end and the room past them.
fn shrink_table<T>(table: &mut Vec<Option<T>>) {
    while table.last().is_some_and(Option::is_none) {
        table.pop();
    }
    table.shrink_to_fit();
}

/// The first free slot of a table of flows (its end when none is free).
fn free_slot<T>(table: &[Option<T>]) -> usize {
    table
        .iter()
        .position(Option::is_none)
        .unwrap_or(table.len())
}

/// Puts `x` into slot `i`, as given by [`free_slot`] (growing the table at its end).
fn fill_slot<T>(table: &mut Vec<Option<T>>, i: usize, x: T) {
    if i == table.len() {
        table.push(Some(x));
    } else if let Some(s) = table.get_mut(i) {
        *s = Some(x);
    }
}
impl SocketUplink {
    pub fn new() -> SocketUplink {
        SocketUplink::with_limits(UplinkLimits::default())
    }

    /// An uplink that holds its flows to `limits`.
    pub fn with_limits(limits: UplinkLimits) -> SocketUplink {
        let epoch = Instant::now();
        SocketUplink {
            stacks: HashMap::new(),
            active: Default::default(),
            timers: BTreeSet::new(),
            housekeeping_at: None,
            tcp: Vec::new(),
            tcp_by_quad: HashMap::new(),
            udp: Vec::new(),
            udp_by_key: HashMap::new(),
            ping: Vec::new(),
            ping_by_key: HashMap::new(),
            out: Vec::new(),
            pool: Vec::new(),
            super_frames: false,
            batching: false,
            tenant: None,
            epoch,
            scratch: vec![0u8; 65536],
            stats: UplinkStats::default(),
            ping_allowed: [None; 2],
            published: Vec::new(),
            accept_retry: Vec::new(),
            accept_retry_at: None,
            accept_retrying: false,
            splices: Vec::new(),
            inbound_udp: HashMap::new(),
            gateways: Vec::new(),
            dns_requests: Vec::new(),
            next_generation: 0,
            quotas: Quotas::new(limits),
            refusals: Vec::new(),
            touched: Vec::new(),
            buffers: HashMap::new(),
            sockets: Sockets::default(),
        }
    }

    /// The host's main address, which GATEWAY:PORT stands for (looked up at most once
    /// a second).
    pub fn host_address(&mut self, now: Instant) -> Option<Ipv4Addr> {
        self.sockets.host_address(now)
    }

    /// The limits in force.
    pub fn limits(&self) -> &UplinkLimits {
        &self.quotas.limits
    }

    /// Sends containers TCP in super-frames (up to 64 KB, cut at each connection's MSS
    /// where they are delivered): for ports that take offloads. Applies to connections
    /// opened from then on.
    pub fn set_super_frames(&mut self, on: bool) {
        self.super_frames = on;
    }

    /// Packets ready for containers (IPv4, addressed to them), each with the network
    /// (domain) of the flow it belongs to: that is where it must be delivered. The third
    /// member is non-zero for a TCP super-frame: the segment size (the container's MSS)
    /// to cut it into; its checksum field then holds only the pseudo-header sum.
    #[cfg(test)]
    pub fn take_output(&mut self) -> Vec<(u16, Vec<u8>, u16)> {
        let out = self.out.drain(..);
        out.map(|o| (o.domain, o.packet().to_vec(), o.gso_size))
            .collect()
    }

    /// Hands each packet for a container to `each`, which takes its buffer (to send
    /// the frame from it) or gives it back for reuse.
    pub fn drain_output(&mut self, mut each: impl FnMut(OutPacket) -> Option<Vec<u8>>) {
        for o in self.out.drain(..) {
            if let Some(b) = each(o) {
                give_back(&mut self.pool, b);
            }
        }
    }

    /// Offers a spare buffer (one the workers gave back); returned when not kept.
    pub fn offer_buffer(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        if self.pool.len() < POOL_BUFFERS && buf.capacity() > 0 {
            self.pool.push(buf);
            None
        } else {
            Some(buf)
        }
    }

    /// Flows refused since the last call, with who asked and why.
    pub fn take_refusals(&mut self) -> std::vec::Drain<'_, (ContainerId, Refusal)> {
        self.refusals.drain(..)
    }

    fn refuse(&mut self, who: ContainerId, why: Refusal) {
        self.stats.refused_quota += 1;
        // Bounded: the caller drains after every call.
        if self.refusals.len() < 65536 {
            self.refusals.push((who, why));
        }
    }

    /// Takes one flow of `kind` for `who`, or records the refusal.
    fn admit(&mut self, who: ContainerId, kind: FlowKind, fd: bool) -> bool {
        match self.quotas.admit(who, kind, fd) {
            Ok(()) => true,
            Err(r) => {
                self.refuse(who, r);
                false
            }
        }
    }

    fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// [`SocketUplink::from_container`], with the host's sockets at hand.
    pub(super) fn container_packet(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        domain: u16,
        pkt: &[u8],
    ) {
        let Some(l3) = family::L3::parse(pkt) else {
            self.not_carried(pkt);
            return;
        };
        match l3.proto {
            // Extension headers in front: smoltcp reads none of them but hop-by-hop.
            family::TCP if l3.has_extensions() => {
                let mut owned = pkt.to_vec();
                let ip = 0..owned.len();
                self.tcp_from_container_frame(io, nets, domain, &mut owned, (ip, true));
            }
            family::TCP => self.tcp_from_container(io, nets, domain, Segment::Borrowed(pkt)),
            family::UDP => {
                let Ok(u) = UdpPacket::new_checked(l3.payload) else {
                    self.stats.dropped += 1;
                    return;
                };
                let quad = (l3.src, u.src_port(), l3.dst, u.dst_port());
                self.udp_out(io, nets, domain, quad, u.payload());
            }
            p if p == family::icmp_proto(l3.src) => {
                let ty = l3.payload.first().copied().unwrap_or(0);
                if family::is_echo_request(l3.src, ty) && l3.payload.len() >= 8 {
                    self.ping_out(io, nets, domain, &l3);
                }
            }
            _ => self.stats.dropped += 1,
        }
    }

    /// [`SocketUplink::from_container_frame`], with the host's sockets at hand.
    pub(super) fn container_frame(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        domain: u16,
        frame: &mut Vec<u8>,
        ip: std::ops::Range<usize>,
    ) {
        let tcp = frame
            .get(ip.clone())
            .and_then(family::L3::parse)
            .filter(|l3| l3.proto == family::TCP)
            .map(|l3| l3.has_extensions());
        if let Some(strip) = tcp {
            self.tcp_from_container_frame(io, nets, domain, frame, (ip, strip));
        } else {
            let pkt = frame.get(ip).unwrap_or(&[]);
            self.container_packet(io, nets, domain, pkt);
        }
    }

    /// A TCP segment at `ip` of `frame` to smoltcp, its IPv6 extension headers
    /// removed first where it has some (`strip`: smoltcp reads none but hop-by-hop).
    fn tcp_from_container_frame(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        domain: u16,
        frame: &mut Vec<u8>,
        (mut ip, strip): (std::ops::Range<usize>, bool),
    ) {
        if strip && let Some(pkt) = frame.get_mut(ip.clone()) {
            let Some(skip) = crate::wire::ipv6::strip_extension_headers(pkt) else {
                self.stats.dropped += 1;
                return;
            };
            ip.start += skip;
        }
        self.tcp_from_container(io, nets, domain, Segment::Frame(frame, ip));
    }

    /// Counts a packet the uplink does not carry: a fragment, or anything else.
    fn not_carried(&mut self, pkt: &[u8]) {
        if family::is_fragment(pkt) {
            self.stats.fragments += 1;
        } else {
            self.stats.dropped += 1;
        }
    }

    /// Sets who the next frames count as ([`SocketUplink::tenant`]): `Some(port's
    /// address)`, None for a port IPAM gave none.
    pub fn set_tenant(&mut self, tenant: Option<IpAddr>) {
        self.tenant = tenant;
    }

    /// The container a flow from `src` in `domain` belongs to.
    fn tenant_of(&self, domain: u16, src: IpAddr) -> ContainerId {
        ContainerId {
            domain,
            ip: self.tenant.unwrap_or(src),
        }
    }

    /// Starts a batch of frames from containers: their TCP segments wait in their
    /// stacks' queues until [`SocketUplink::end_batch`] polls each stack once (smoltcp
    /// looks at every socket of an interface on each poll: once per batch, not per
    /// frame).
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// [`SocketUplink::end_batch`], with the host's sockets at hand.
    pub(super) fn end_batch_with(&mut self, io: &mut dyn HostSockets) {
        self.batching = false;
        if !self.active.is_empty() || !self.touched.is_empty() {
            self.poll(io);
        }
    }

    /// A host socket of the uplink is ready.
    pub(super) fn ready(
        &mut self,
        io: &mut dyn HostSockets,
        src: UplinkSource,
        (readable, writable, error): (bool, bool, bool),
    ) {
        match src {
            UplinkSource::Tcp(i) => self.tcp_ready(io, i, (readable, writable, error)),
            UplinkSource::Udp(i) => self.udp_in(io, i),
            UplinkSource::Ping(i) => self.ping_in(io, i),
            UplinkSource::Published(i) => {
                self.published_ready(io, i);
                self.poll(io);
            }
            UplinkSource::Splice(i) => self.splice_ready(io, i),
        }
    }

    /// [`SocketUplink::tick`], with the host's sockets at hand.
    pub(super) fn tick_with(&mut self, io: &mut dyn HostSockets, now: Instant) -> Option<Instant> {
        // Housekeeping looks at every flow: at most once a second, not on every wake-up
        // (the gateway thread wakes for every batch of frames).
        let house = self.housekeeping_at.is_none_or(|t| now >= t);
        if house {
            self.expire_udp_and_ping(io, now);
            self.expire_tcp(io, now);
            let period = Duration::from_secs(1).min(self.quotas.limits.tcp_handshake);
            self.housekeeping_at = Some(now + period);
        }
        // Stacks whose smoltcp timers are due (retransmissions, keep-alives): polled,
        // which sets their next time.
        while let Some(&(at, who)) = self.timers.first()
            && at <= now
        {
            self.timers.pop_first();
            if let Some(st) = self.stacks.get_mut(&who) {
                st.due = None;
            }
            self.active.insert(who);
        }
        self.retry_accepts(io, now);
        self.poll_with(io, house);
        let mut next = self.timers.first().map(|&(at, _)| at);
        if let Some(at) = self.accept_retry_at {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        let house_at = self.housekeeping_at.unwrap_or(now);
        Some(next.map_or(house_at, |n| n.min(house_at)))
    }

    /// Every flow carried, for `conntrack ls`.
    pub fn flows(&self) -> Vec<FlowInfo> {
        let mut v = Vec::new();
        for c in self.tcp.iter().flatten() {
            let st = self
                .stacks
                .get(&c.who)
                .map_or(smol_tcp::State::Closed, |s| s.state(c.handle));
            v.push(FlowInfo {
                proto: "tcp",
                inside: SocketAddr::new(c.quad.0, c.quad.1),
                outside: SocketAddr::new(c.quad.2, c.quad.3),
                state: if c.local {
                    "local".to_string()
                } else if c.inbound {
                    format!("published {st}")
                } else {
                    st.to_string()
                },
            });
        }
        for c in self.splices.iter().flatten() {
            v.push(FlowInfo {
                proto: "tcp",
                inside: c.inside,
                outside: c.from,
                state: "published spliced".into(),
            });
        }
        for f in self.udp.iter().flatten() {
            let (_, q) = f.key;
            v.push(FlowInfo {
                proto: "udp",
                inside: SocketAddr::new(q.0, q.1),
                outside: SocketAddr::new(q.2, q.3),
                state: "active".into(),
            });
        }
        for ((_, q), _) in self.inbound_udp.iter() {
            v.push(FlowInfo {
                proto: "udp",
                inside: SocketAddr::new(q.0, q.1),
                outside: SocketAddr::new(q.2, q.3),
                state: "published".into(),
            });
        }
        for p in self.ping.iter().flatten() {
            let (_, c, id, d) = p.key;
            v.push(FlowInfo {
                proto: "icmp",
                inside: SocketAddr::new(c, id),
                outside: SocketAddr::new(d, 0),
                state: "echo".into(),
            });
        }
        v
    }

    /// [`SocketUplink::flush`], with the host's sockets at hand.
    pub(super) fn flush_with(&mut self, io: &mut dyn HostSockets) {
        for i in 0..self.tcp.len() {
            self.abort_tcp(io, i);
        }
        for i in 0..self.splices.len() {
            self.end_splice(io, i);
        }
        self.poll(io);
        for (i, f) in self.udp.iter().enumerate() {
            if let Some(f) = f {
                io.udp_close(UdpSock(i));
                self.quotas.release(f.who, FlowKind::Udp, true);
            }
        }
        self.udp.clear();
        self.udp_by_key.clear();
        for f in self.inbound_udp.values() {
            self.quotas.release(f.who, FlowKind::Udp, false);
        }
        self.inbound_udp.clear();
        for (i, p) in self.ping.iter().enumerate() {
            if let Some(p) = p {
                io.ping_close(PingSock(i));
                self.quotas.release(p.who, FlowKind::Ping, true);
            }
        }
        self.ping.clear();
        self.ping_by_key.clear();
    }

    /// Gives back what the tables and pools hold past their live entries, once flows
    /// have ended: a burst of thousands of connections leaves tables of thousands of
    /// free slots (and maps with their room) behind otherwise, which only ever grow.
    pub fn shed(&mut self) {
        self.pool = Vec::new();
        self.sockets.shed();
        shrink_table(&mut self.tcp);
        shrink_table(&mut self.udp);
        shrink_table(&mut self.ping);
        shrink_table(&mut self.splices);
        self.tcp_by_quad.shrink_to_fit();
        self.udp_by_key.shrink_to_fit();
        self.ping_by_key.shrink_to_fit();
        self.inbound_udp.shrink_to_fit();
        self.stacks.shrink_to_fit();
        self.active.shrink_to_fit();
        self.buffers.shrink_to_fit();
        self.touched.shrink_to_fit();
        self.out.shrink_to_fit();
        self.refusals.shrink_to_fit();
    }

    /// TCP connections, UDP and echo flows open (a few loads: for every wake-up).
    pub fn flow_count(&self) -> usize {
        self.tcp_by_quad.len() + self.udp_by_key.len() + self.ping_by_key.len()
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.tcp_by_quad.len() + self.splices.iter().flatten().count(),
            self.udp_by_key.len(),
            self.ping_by_key.len(),
        )
    }
}
