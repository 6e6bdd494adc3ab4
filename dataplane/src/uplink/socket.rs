//! The socket uplink: containers reach the outside (and the host) through the host's
//! own sockets, with the host's address, as slirp4netns and pasta do for one namespace.
//!
//! - **TCP** is terminated in userspace by smoltcp, one interface per container
//!   (`Medium::Ip`, any-IP: it answers for whatever address a container connects to).
//!   On a container's SYN the uplink opens a listening socket for exactly that
//!   destination with its SYN-ACK held back, and starts a non-blocking host `connect`;
//!   only when the host connection is up does the container get its SYN-ACK (refused
//!   or unreachable: an RST), so the container sees the real outcome. Data is relayed
//!   between smoltcp's buffers and the host socket without an intermediate copy
//!   (reads land in smoltcp's transmit ring, writes come from its receive ring).
//! - **UDP** needs no stack: each flow (container address and port, destination
//!   address and port) gets a connected host UDP socket; replies are built back into
//!   packets. Flows expire after [`UDP_IDLE`].
//! - **ICMP echo** goes out through ping sockets (`SOCK_DGRAM`/`IPPROTO_ICMP`) where the
//!   host's `net.ipv4.ping_group_range` allows them; otherwise the container is told
//!   the destination is administratively unreachable.
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
//! Sans-I/O towards the switch: IPv4 packets come in by [`SocketUplink::from_container`]
//! and go out through [`SocketUplink::take_output`]; the caller frames them.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, Ipv4Address};

use super::challenge;
use super::host::HostAddress;
use super::quota::{ContainerId, FlowKind, Quotas, Refusal, UplinkLimits};
use super::splice::{self, Pumped, SocketPool, Splice, SpliceError};
use crate::gateway::io::token::Source;
use crate::wire::icmp::{IcmpType, UnreachCode};
use crate::wire::{Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket, checksum};

/// Idle UDP flows are closed after this long.
pub const UDP_IDLE: Duration = Duration::from_secs(120);
/// Idle echo flows are closed after this long.
pub const PING_IDLE: Duration = Duration::from_secs(30);
/// Keep-alive on host sockets: first probe after this much silence, then every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] unanswered probes end the connection
/// (a dead peer is found in about two minutes of silence plus one).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_PROBES: u32 = 6;
/// Keep-alive towards containers (smoltcp), and how long unacknowledged data may wait
/// before the container is given up as dead.
pub const CONTAINER_KEEPALIVE: Duration = Duration::from_secs(120);
pub const CONTAINER_ACK_TIMEOUT: Duration = Duration::from_secs(300);
/// smoltcp buffer per direction of a connection, at most. It covers the hop between
/// the container and the uplink (beyond, the host's own socket buffers cover the path):
/// its bandwidth-delay product, some 10 Gbit/s over the round trip of about half a
/// millisecond that scheduling on a busy host stretches the hop to (40 µs at best):
/// about 512 KiB. Larger measured slower (data waits longer between its copy in and
/// its copy out, out of the cache); smaller stalls the sender.
pub const TCP_BUFFER: usize = 512 * 1024;
/// smoltcp buffer per direction of a connection opened while its container's
/// connections hold [`TCP_BUFFER_BUDGET`]: 64 KiB over that round trip still carries
/// a gigabit or more.
pub const TCP_BUFFER_MIN: usize = 64 * 1024;
/// The smoltcp buffer memory (both directions) a container's connections take at
/// [`TCP_BUFFER`] before further ones get [`TCP_BUFFER_MIN`]: 32 fast connections.
/// smoltcp's buffers are fixed when a socket is made, so the size is chosen at open.
pub const TCP_BUFFER_BUDGET: usize = 32 * 1024 * 1024;

/// How soon a stack that wants a poll at once right after one is polled again (see
/// [`poll_delay`]).
const POLL_AGAIN: Duration = Duration::from_millis(10);

/// How soon a published port that ran out of descriptors accepts again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The most inbound UDP conversations through published ports at once.
pub const MAX_INBOUND_UDP: usize = 4096;

/// What the uplink needs to know of each network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetView {
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    /// Traffic may leave (not internal, masquerade on).
    pub egress: bool,
    /// DNS is served on the gateway (TCP port 53 is answered locally).
    pub dns: bool,
    /// GATEWAY:PORT reaches the host's 127.0.0.1:PORT (`--host-loopback`), instead of
    /// the host's main address.
    pub host_loopback: bool,
}

impl NetView {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        crate::wire::Ipv4Cidr::new(self.subnet, self.prefix_len).contains(ip)
    }
}

/// Where a flow from a container goes on the host. `host` is the host's main address,
/// which GATEWAY:PORT stands for unless the network opted in to the host's loopback.
fn target(
    nets: &[Option<NetView>],
    domain: u16,
    (dst, port): (Ipv4Addr, u16),
    host: Option<Ipv4Addr>,
) -> Option<SocketAddrV4> {
    let own = nets.get(usize::from(domain))?.as_ref()?;
    if dst == own.gateway {
        return gateway_target(own, port, host);
    }
    if !own.egress {
        return None;
    }
    if nets.iter().flatten().any(|n| n.contains(dst)) {
        return None;
    }
    if dst.is_loopback() || dst.is_unspecified() || dst.is_broadcast() || dst.is_multicast() {
        return None;
    }
    Some(SocketAddrV4::new(dst, port))
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

struct QueueDevice {
    rx: std::collections::VecDeque<RxPacket>,
    /// Packets smoltcp built: each at [`LINK_HEADROOM`] of its buffer, up to the end
    /// given.
    tx: Vec<(Vec<u8>, usize)>,
    /// Spare buffers lent by the uplink for the length of a poll: transmitted packets
    /// are built in them.
    pool: Vec<Vec<u8>>,
    /// Buffers of received packets smoltcp has read, for the uplink to take back.
    done: Vec<Vec<u8>>,
    /// smoltcp leaves TCP checksums to the uplink (super-frames: most need only the
    /// pseudo-header sum).
    tcp_csum_here: bool,
}

/// The most spare packet buffers the uplink keeps (a received frame's buffer goes to
/// smoltcp as it is, and smoltcp's packets are built in recycled ones).
const POOL_BUFFERS: usize = 16;

/// Keeps `buf` for reuse while the pool has room.
fn give_back(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < POOL_BUFFERS {
        pool.push(buf);
    }
}

/// Room smoltcp leaves in front of each packet it builds: the gateway writes the
/// Ethernet header there and sends the frame from the same buffer.
pub const LINK_HEADROOM: usize = crate::wire::ethernet::HEADER_LEN;

/// A packet for a container: the IPv4 packet is `buf[start..end]`.
#[derive(Debug)]
pub struct OutPacket {
    /// The network (domain) of the flow it belongs to: where it must be delivered.
    pub domain: u16,
    pub buf: Vec<u8>,
    pub start: usize,
    pub end: usize,
    /// Non-zero for a TCP super-frame: the segment size (the container's MSS) to cut
    /// it into; its checksum field then holds only the pseudo-header sum.
    pub gso_size: u16,
}

impl OutPacket {
    /// A whole buffer as the packet.
    fn plain(domain: u16, buf: Vec<u8>) -> OutPacket {
        let end = buf.len();
        OutPacket {
            domain,
            buf,
            start: 0,
            end,
            gso_size: 0,
        }
    }
    /// The IPv4 packet.
    pub fn packet(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }
    fn packet_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.start..self.end).unwrap_or(&mut [])
    }
}

/// A container's TCP segment on its way into smoltcp's queue.
enum Segment<'a> {
    /// Bytes to copy.
    Borrowed(&'a [u8]),
    /// A frame's buffer and where its IPv4 packet lies in it: taken whole.
    Frame(&'a mut Vec<u8>, std::ops::Range<usize>),
}

impl Segment<'_> {
    /// The IPv4 packet.
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Borrowed(p) => p,
            Segment::Frame(f, ip) => f.get(ip.clone()).unwrap_or(&[]),
        }
    }
}

/// A packet queued for smoltcp: the IPv4 packet is `buf[start..end]` (a frame's buffer
/// taken whole, its Ethernet header left in front).
struct RxPacket {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

struct QRx<'a> {
    pkt: RxPacket,
    done: &'a mut Vec<Vec<u8>>,
}
struct QTx<'a> {
    tx: &'a mut Vec<(Vec<u8>, usize)>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for QRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let RxPacket { buf, start, end } = self.pkt;
        let r = f(buf.get(start..end).unwrap_or(&[]));
        give_back(self.done, buf);
        r
    }
}

impl phy::TxToken for QTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = self.pool.pop().unwrap_or_default();
        let end = LINK_HEADROOM + len;
        // A recycled buffer keeps its length: only growth is zeroed. A large packet
        // gets a buffer a worker can take as a frame buffer as it is.
        if b.len() < end {
            if end > crate::port::SUPER_FRAME_BUF / 2 {
                b.reserve_exact(crate::port::SUPER_FRAME_BUF.saturating_sub(b.len()));
            }
            b.resize(end, 0);
        }
        let r = f(b.get_mut(LINK_HEADROOM..end).unwrap_or(&mut []));
        self.tx.push((b, end));
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = QRx<'a>;
    type TxToken<'a> = QTx<'a>;
    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(QRx<'_>, QTx<'_>)> {
        let pkt = self.rx.pop_front()?;
        let rx = QRx {
            pkt,
            done: &mut self.done,
        };
        let tx = QTx {
            tx: &mut self.tx,
            pool: &mut self.pool,
        };
        Some((rx, tx))
    }
    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<QTx<'_>> {
        Some(QTx {
            tx: &mut self.tx,
            pool: &mut self.pool,
        })
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 65535;
        // Frames come from local TAPs, possibly with partial checksums (offloads):
        // compute on transmit, do not verify on receive.
        let mut cs = ChecksumCapabilities::default();
        cs.ipv4 = phy::Checksum::Tx;
        cs.tcp = if self.tcp_csum_here {
            phy::Checksum::None
        } else {
            phy::Checksum::Tx
        };
        cs.udp = phy::Checksum::Tx;
        cs.icmpv4 = phy::Checksum::Tx;
        c.checksum = cs;
        c
    }
}

/// (container address, container port, destination address, destination port)
type Quad = (Ipv4Addr, u16, Ipv4Addr, u16);

/// One container's userspace TCP: its own smoltcp interface and sockets, so what a
/// container holds costs only that container (smoltcp looks at every socket of an
/// interface on each poll), and networks never share a connection table.
struct Stack {
    iface: Interface,
    dev: QueueDevice,
    sockets: SocketSet<'static>,
    /// When smoltcp next wants a poll (a timer), as of the last one.
    due: Option<Instant>,
}

impl Stack {
    fn new(epoch: Instant, super_frames: bool) -> Stack {
        let mut dev = QueueDevice {
            rx: Default::default(),
            tx: Vec::new(),
            pool: Vec::new(),
            done: Vec::new(),
            tcp_csum_here: super_frames,
        };
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = crate::random::u64();
        let mut iface = Interface::new(cfg, &mut dev, smol_now(epoch));
        iface.set_any_ip(true);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::v4(169, 254, 0, 1), 32));
        });
        // Any destination is "on a route" (Medium::Ip needs no neighbour).
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(169, 254, 0, 1));
        Stack {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            due: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.sockets.iter().next().is_none() && self.dev.rx.is_empty() && self.dev.tx.is_empty()
    }

    fn state(&self, h: SocketHandle) -> tcp::State {
        self.sockets.get::<tcp::Socket>(h).state()
    }
}

/// A TCP connection's slot and the generation it had when it was handed out: a late
/// answer for a slot reused since finds another generation there and goes nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConnId {
    pub slot: usize,
    pub generation: u32,
}

/// A DNS message that arrived over TCP on a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTcpRequest {
    pub conn: TcpConnId,
    pub from: ContainerId,
    pub msg: Vec<u8>,
}

struct TcpConn {
    handle: SocketHandle,
    quad: Quad,
    /// The container (network and address) the connection belongs to.
    who: ContainerId,
    generation: u32,
    born: Instant,
    /// Last time data moved either way.
    last: Instant,
    /// Ended: removed once smoltcp has sent what the end needs (an RST, say).
    reap: bool,
    /// Waiting in the uplink's touched list.
    queued: bool,
    /// The container's SYN sequence number while its SYN-ACK is held back (the host
    /// connect pending): what an RST refusing it must acknowledge.
    syn_seq: Option<u32>,
    /// That SYN's headers, kept from smoltcp until the host connect finishes (smoltcp
    /// answers it then); data in the SYN is left out (unacknowledged, it is sent again).
    held_syn: Option<Vec<u8>>,
    host: Option<TcpStream>,
    /// The host connect finished.
    connected: bool,
    readable: bool,
    writable: bool,
    host_eof: bool,
    /// FIN passed on to the host.
    shut_host: bool,
    /// Published-port connection (the daemon accepted it on the host).
    inbound: bool,
    /// Answered locally (DNS over TCP on the gateway), no host socket.
    local: bool,
    /// Bytes of a local connection not yet a whole message.
    local_in: Vec<u8>,
    /// The MSS the container announced, when smoltcp was shown a larger one (its
    /// segments are then super-frames cut at this size); 0 otherwise.
    mss: u16,
    /// smoltcp buffer bytes (both directions), counted in the container's budget.
    buffers: usize,
    /// The container's initial sequence number (its first SYN or SYN-ACK), the bytes
    /// taken out of smoltcp's receive buffer since, and the last acknowledgement it
    /// sent: what an RST is judged by (RFC 5961, `challenge`).
    isn: Option<u32>,
    taken: u32,
    peer_ack: Option<u32>,
}

/// The most bytes a DNS-over-TCP message takes with its length prefix.
const DNS_TCP_MAX: usize = 65537;

struct UdpFlow {
    sock: UdpSocket,
    who: ContainerId,
    key: (u16, Quad),
    last: Instant,
}

/// A published port: a host socket and where its traffic goes.
pub enum PublishedSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Where a published port leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishTarget {
    pub domain: u16,
    pub container: Ipv4Addr,
    pub port: u16,
}

enum PubSock {
    Tcp(mio::net::TcpListener),
    Udp(UdpSocket),
}

struct Published {
    sock: PubSock,
    to: PublishTarget,
    /// The host address and port it listens on.
    local: SocketAddrV4,
    /// The container's network namespace, until its loopback clients are spliced.
    netns: Option<OwnedFd>,
    splice: Splicing,
}

/// Whether loopback clients of a published port are spliced into the container.
enum Splicing {
    /// Not yet: set up with the first loopback client.
    Untried,
    /// Sockets of the container's namespace, its return rule installed.
    Ready(SocketPool),
    /// The namespace cannot be entered or routed (or is not known): frames.
    Unavailable,
}

/// A published-port connection from the host's loopback, spliced into the container.
struct SplicedConn {
    s: Splice,
    who: ContainerId,
    /// The container's end, and the source it sees (the gateway, the client's port).
    inside: SocketAddrV4,
    from: SocketAddrV4,
    /// The client, and the published port it came through (for the frame path, when
    /// the inner connect fails).
    peer: SocketAddr,
    listener: (usize, PublishTarget),
    born: Instant,
    last: Instant,
}

/// A client talking UDP to a published port: (container side quad) -> (listener, client).
struct InboundUdp {
    listener: usize,
    who: ContainerId,
    client: SocketAddr,
    last: Instant,
}

struct PingFlow {
    sock: mio::net::UdpSocket,
    who: ContainerId,
    /// (domain, container address, container's echo id, destination)
    key: (u16, Ipv4Addr, u16, Ipv4Addr),
    last: Instant,
}

/// One flow of the uplink, for `conntrack ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub proto: &'static str,
    /// The container's address and port (for ICMP, the echo id as the port).
    pub inside: SocketAddrV4,
    /// The far end.
    pub outside: SocketAddrV4,
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
    ping_by_key: HashMap<(u16, Ipv4Addr, u16, Ipv4Addr), usize>,
    /// Packets for containers (IPv4, ready to be framed), the network each goes to and,
    /// for a TCP super-frame, the segment size it is to be cut into (else 0).
    out: Vec<OutPacket>,
    /// Spare packet buffers (at most [`POOL_BUFFERS`]): lent to a stack's device while
    /// it is polled, swapped for the buffers of frames handed over whole.
    pool: Vec<Vec<u8>>,
    /// Containers' ports take super-frames: their TCP gets segments up to 64 KB,
    /// marked for segmentation at the container's own MSS.
    super_frames: bool,
    /// The tenant the frame being handled counts as: the address of its port when the
    /// port has no port security (it may send from any address; all of them count as
    /// one container), else none (the source address is the container).
    tenant: Option<Ipv4Addr>,
    /// Frames from containers are queued into their stacks and the stacks polled by
    /// [`SocketUplink::end_batch`], once for a batch of frames, not after each.
    batching: bool,
    next_generation: u32,
    quotas: Quotas,
    /// Refused flows, for the caller to count on the container's port.
    refusals: Vec<(ContainerId, Refusal)>,
    epoch: Instant,
    scratch: Vec<u8>,
    pub stats: UplinkStats,
    ping_allowed: Option<bool>,
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
    gateways: Vec<Option<Ipv4Addr>>,
    /// DNS messages received over TCP on a gateway.
    dns_requests: Vec<DnsTcpRequest>,
    /// The host's main address, which GATEWAY:PORT reaches without `--host-loopback`.
    host: HostAddress,
    /// Connections something happened to since the last pump (a packet from the
    /// container, a host socket event): only these are looked at, so one container's
    /// idle connections cost the others nothing.
    touched: Vec<usize>,
    /// smoltcp buffer bytes each container's connections hold.
    buffers: HashMap<ContainerId, usize>,
}

fn smol_now(epoch: Instant) -> smoltcp::time::Instant {
    smol_at(epoch, Instant::now())
}

/// Where a container-side socket for `quad` listens: exactly its destination.
fn listen_endpoint(quad: Quad) -> IpListenEndpoint {
    IpListenEndpoint {
        addr: Some(IpAddress::Ipv4(v4(quad.2))),
        port: quad.3,
    }
}

/// A SYN's IPv4 and TCP headers as a packet of their own (at most 120 bytes), its data
/// left out. smoltcp verifies no checksum it receives, so only the length is fixed.
fn syn_headers(pkt: &[u8]) -> Option<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(pkt).ok()?;
    let tcp_len = TcpPacket::new_checked(ip.payload()).ok()?.header_len();
    let len = ip.header_len() + tcp_len;
    let mut headers = pkt.get(..len)?.to_vec();
    let mut ip = Ipv4Packet::new_unchecked(&mut headers[..]);
    ip.set_total_len(u16::try_from(len).ok()?);
    ip.fill_checksum();
    Some(headers)
}

/// `at` on smoltcp's clock, which starts at `epoch`.
fn smol_at(epoch: Instant, at: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(at.saturating_duration_since(epoch).as_micros() as i64)
}

/// How long after a poll a stack is polled again for its timers, from smoltcp's `delay`.
/// smoltcp asks for another poll at once, after one that did all it could, only for
/// what no poll can move (a socket told to hold its SYN-ACK back asked for it forever;
/// none is made now, the SYN itself is held): such a stack is polled again after
/// [`POLL_AGAIN`]. What can move it (a packet, a host event) polls it at once anyway.
fn poll_delay(delay: smoltcp::time::Duration) -> Duration {
    match delay.total_micros() {
        0 => POLL_AGAIN,
        us => Duration::from_micros(us),
    }
}

/// Sets when `st` (the stack of `who`) next wants a poll, keeping `timers` in step.
fn set_due(
    timers: &mut BTreeSet<(Instant, ContainerId)>,
    st: &mut Stack,
    who: ContainerId,
    due: Option<Instant>,
) {
    if st.due == due {
        return;
    }
    if let Some(old) = st.due {
        timers.remove(&(old, who));
    }
    if let Some(at) = due {
        timers.insert((at, who));
    }
    st.due = due;
}

fn v4(a: Ipv4Addr) -> Ipv4Address {
    Ipv4Address::from(a.octets())
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

/// Turns keep-alive on for a host TCP socket so a dead peer ends the connection.
fn keepalive(fd: std::os::fd::RawFd) {
    let set = |level, opt, v: libc::c_int| {
        let _ = splice::set_int(fd, level, opt, v);
    };
    let secs = |d: Duration| libc::c_int::try_from(d.as_secs()).unwrap_or(libc::c_int::MAX);
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(KEEPALIVE_IDLE));
    set(
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        secs(KEEPALIVE_INTERVAL),
    );
    let probes = libc::c_int::try_from(KEEPALIVE_PROBES).unwrap_or(9);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, probes);
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
            ping_allowed: None,
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
            host: HostAddress::default(),
            touched: Vec::new(),
            buffers: HashMap::new(),
        }
    }

    /// The host's main address, which GATEWAY:PORT stands for (looked up at most once
    /// a second).
    pub fn host_address(&mut self, now: Instant) -> Option<Ipv4Addr> {
        self.host.get(now)
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

    /// `who`'s stack, created on first use.
    fn stack(&mut self, who: ContainerId) -> &mut Stack {
        let (epoch, sf) = (self.epoch, self.super_frames);
        self.stacks
            .entry(who)
            .or_insert_with(|| Stack::new(epoch, sf))
    }

    fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// An IPv4 packet from a container of `domain` for somewhere outside its network
    /// (or for its gateway as the host).
    pub fn from_container(
        &mut self,
        reg: &Registry,
        nets: &[Option<NetView>],
        domain: u16,
        pkt: &[u8],
    ) {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
            self.stats.dropped += 1;
            return;
        };
        if ip.is_fragment() {
            self.stats.dropped += 1;
            return;
        }
        let (src, dst) = (ip.src(), ip.dst());
        match ip.protocol() {
            IpProtocol::Tcp => self.tcp_from_container(reg, nets, domain, Segment::Borrowed(pkt)),
            IpProtocol::Udp => {
                let Ok(u) = UdpPacket::new_checked(ip.payload()) else {
                    self.stats.dropped += 1;
                    return;
                };
                let quad = (src, u.src_port(), dst, u.dst_port());
                self.udp_out(reg, nets, domain, quad, u.payload());
            }
            IpProtocol::Icmp => {
                let Ok(i) = Icmpv4Packet::new_checked(ip.payload()) else {
                    self.stats.dropped += 1;
                    return;
                };
                if i.msg_type() == IcmpType::ECHO_REQUEST {
                    self.ping_out(reg, nets, domain, src, dst, &i, ip.header());
                }
            }
            _ => self.stats.dropped += 1,
        }
    }

    /// As [`SocketUplink::from_container`], for the IPv4 packet at `ip` of a frame's
    /// buffer: a TCP segment goes to smoltcp in that very buffer, and `frame` is left
    /// holding a spare one (possibly empty) for the caller to recycle.
    pub fn from_container_frame(
        &mut self,
        reg: &Registry,
        nets: &[Option<NetView>],
        domain: u16,
        frame: &mut Vec<u8>,
        ip: std::ops::Range<usize>,
    ) {
        let tcp = frame
            .get(ip.clone())
            .and_then(|p| Ipv4Packet::new_checked(p).ok())
            .is_some_and(|ip| !ip.is_fragment() && ip.protocol() == IpProtocol::Tcp);
        if tcp {
            self.tcp_from_container(reg, nets, domain, Segment::Frame(frame, ip));
        } else {
            let pkt = frame.get(ip).unwrap_or(&[]);
            self.from_container(reg, nets, domain, pkt);
        }
    }

    /// A TCP segment from a container: a new connection is opened (on the host, or
    /// answered here for DNS on the gateway); every segment goes into the sender's
    /// own stack.
    fn tcp_from_container(
        &mut self,
        reg: &Registry,
        nets: &[Option<NetView>],
        domain: u16,
        seg: Segment<'_>,
    ) {
        let Ok(ip) = Ipv4Packet::new_checked(seg.bytes()) else {
            return;
        };
        let (src, dst) = (ip.src(), ip.dst());
        let total = ip.total_len().min(seg.bytes().len());
        let Ok(t) = TcpPacket::new_checked(ip.payload()) else {
            self.stats.dropped += 1;
            return;
        };
        let quad = (src, t.src_port(), dst, t.dst_port());
        let (syn, opening, seq, rst) = (
            t.syn(),
            t.syn() && !t.ack_flag() && !t.rst(),
            t.seq(),
            t.rst(),
        );
        let t_ack = (t.ack_flag() && !t.rst()).then(|| t.ack());
        let known = self.tcp_by_quad.get(&(domain, quad)).copied();
        if opening && known.is_none() {
            let dns_here = nets
                .get(usize::from(domain))
                .and_then(|n| n.as_ref())
                .is_some_and(|n| n.dns && n.gateway == dst && quad.3 == 53);
            if dns_here {
                self.open_local(quad, domain);
            } else {
                self.open_tcp(reg, nets, domain, quad, seq);
            }
        }
        let conn = self.tcp_by_quad.get(&(domain, quad)).copied();
        if opening && known.is_none() && conn.is_none() {
            return self.refuse_syn(domain, quad, seq);
        }
        if let Some(i) = conn {
            self.touch(i);
        }
        // Into the sender's own stack: a packet for no connection there is answered
        // there (an RST) and reaches nobody else's.
        let who = self.tenant_of(domain, src);
        let mut pkt = self.rx_packet(seg, total);
        if syn
            && self.super_frames
            && let Some(i) = conn
            && let Some(bytes) = pkt.buf.get_mut(pkt.start..pkt.end)
        {
            self.widen_mss(i, bytes);
        }
        if let Some(i) = conn {
            self.note_segment(i, syn.then_some(seq), t_ack);
        }
        if let Some(i) = conn
            && self.held_back(reg, i, &pkt, opening, rst)
        {
            give_back(&mut self.pool, pkt.buf);
            return;
        }
        if rst
            && let Some(i) = conn
            && !self.challenge_rst(reg, i, seq, &mut pkt)
        {
            give_back(&mut self.pool, pkt.buf);
            return;
        }
        self.stack(who).dev.rx.push_back(pkt);
        self.active.insert(who);
        if !self.batching {
            self.poll(reg);
        }
    }

    /// Sets who the next frames count as ([`SocketUplink::tenant`]): `Some(port's
    /// address)` for a port without port security, None otherwise.
    pub fn set_tenant(&mut self, tenant: Option<Ipv4Addr>) {
        self.tenant = tenant;
    }

    /// The container a flow from `src` in `domain` belongs to.
    fn tenant_of(&self, domain: u16, src: Ipv4Addr) -> ContainerId {
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

    /// Ends a batch: every stack a frame went into is polled, once.
    pub fn end_batch(&mut self, reg: &Registry) {
        self.batching = false;
        if !self.active.is_empty() || !self.touched.is_empty() {
            self.poll(reg);
        }
    }

    /// A SYN refused (a quota, no listener): the RST is built here, not by smoltcp,
    /// which would look at every socket of the container to find none.
    fn refuse_syn(&mut self, domain: u16, quad: Quad, seq: u32) {
        let (src, sport, dst, dport) = quad;
        if let Some(p) = tcp_rst(dst, dport, src, sport, seq.wrapping_add(1)) {
            self.out.push(OutPacket::plain(domain, p));
        }
    }

    /// Remembers what an RST on connection `i` is judged by: the container's first SYN
    /// (or SYN-ACK), its latest acknowledgement.
    fn note_segment(&mut self, i: usize, syn_seq: Option<u32>, ack: Option<u32>) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        if c.isn.is_none() {
            c.isn = syn_seq;
        }
        if ack.is_some() {
            c.peer_ack = ack;
        }
    }

    /// An RST from the container on connection `i`, synchronized (RFC 5961 §3): at
    /// exactly the next sequence number it goes to smoltcp (the connection ends); inside
    /// the window, inexact, it becomes a probe smoltcp answers with a challenge ACK;
    /// outside, it is dropped (false). Before the handshake ends smoltcp's own rules
    /// apply (an RST puts a SYN-RECEIVED socket back to listening).
    fn challenge_rst(&mut self, reg: &Registry, i: usize, seq: u32, pkt: &mut RxPacket) -> bool {
        let Some(Some(c)) = self.tcp.get(i) else {
            return true;
        };
        let (who, handle) = (c.who, c.handle);
        // Segments of this batch still queued come before the RST.
        if self
            .stacks
            .get(&who)
            .is_some_and(|st| !st.dev.rx.is_empty())
        {
            self.poll(reg);
        }
        let (Some(Some(c)), Some(st)) = (self.tcp.get(i), self.stacks.get(&who)) else {
            return true;
        };
        let (Some(isn), Some(ack)) = (c.isn, c.peer_ack) else {
            return true;
        };
        if c.handle != handle {
            return true;
        }
        let sock = st.sockets.get::<tcp::Socket>(handle);
        let fin = matches!(
            sock.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        );
        let synced = fin
            || matches!(
                sock.state(),
                tcp::State::Established | tcp::State::FinWait1 | tcp::State::FinWait2
            );
        if !synced {
            return true;
        }
        let nxt = challenge::rcv_nxt(isn, c.taken, sock.recv_queue(), fin);
        let window = sock.recv_capacity() as u32;
        match challenge::judge(seq, nxt, window) {
            challenge::RstVerdict::Reset => true,
            challenge::RstVerdict::Outside => false,
            challenge::RstVerdict::Challenge => {
                self.stats.challenge_acks += 1;
                let ip = pkt.buf.get_mut(pkt.start..pkt.end).and_then(|p| {
                    let hl = Ipv4Packet::new_checked(&*p).ok()?.header_len();
                    p.get_mut(hl..)
                });
                ip.is_some_and(|tcp| challenge::into_probe(tcp, nxt, ack))
            }
        }
    }

    /// Keeps what the container sends on connection `i` from smoltcp while its host
    /// connect is pending (true: `pkt` was taken care of): its first SYN is kept for
    /// later, an RST (the container gave up) ends the connection, the rest (SYNs sent
    /// again) is dropped. smoltcp, shown a SYN it may not answer yet, would ask to be
    /// polled without end.
    fn held_back(
        &mut self,
        reg: &Registry,
        i: usize,
        pkt: &RxPacket,
        opening: bool,
        rst: bool,
    ) -> bool {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return false;
        };
        if c.connected || c.syn_seq.is_none() {
            return false;
        }
        if rst {
            self.abort_tcp(reg, i);
        } else if opening && c.held_syn.is_none() {
            c.held_syn = pkt.buf.get(pkt.start..pkt.end).and_then(syn_headers);
        }
        true
    }

    /// The first `len` bytes of `seg` as a packet for smoltcp's queue: a frame's buffer
    /// is taken as it is (and a spare one left in its place), a borrowed one copied.
    fn rx_packet(&mut self, seg: Segment<'_>, len: usize) -> RxPacket {
        let mut buf = self.pool.pop().unwrap_or_default();
        match seg {
            Segment::Frame(frame, ip) => {
                std::mem::swap(frame, &mut buf);
                let end = (ip.start + len).min(ip.end);
                RxPacket {
                    buf,
                    start: ip.start,
                    end,
                }
            }
            Segment::Borrowed(p) => {
                buf.clear();
                buf.extend_from_slice(p.get(..len).unwrap_or(p));
                let end = buf.len();
                RxPacket { buf, start: 0, end }
            }
        }
    }

    /// Shows smoltcp a SYN (or SYN-ACK) of connection `i` with the largest MSS, so it
    /// builds super-frames toward the container; keeps the container's own MSS to cut
    /// them at. A SYN without the option, or with one below the minimum, is left alone.
    fn widen_mss(&mut self, i: usize, pkt: &mut [u8]) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        let Ok(mut ip) = Ipv4Packet::new_checked(&mut pkt[..]) else {
            return;
        };
        let Ok(mut t) = TcpPacket::new_checked(ip.payload_mut()) else {
            return;
        };
        match t.mss_option() {
            Some(m) if m >= MIN_MSS && t.set_mss_option(SUPER_MSS) => c.mss = m,
            _ => c.mss = 0,
        }
    }

    /// A container-side socket, not listening yet.
    fn container_socket(rx: usize, tx: usize) -> tcp::Socket<'static> {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; rx]),
            tcp::SocketBuffer::new(vec![0u8; tx]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_keep_alive(Some(CONTAINER_KEEPALIVE.into()));
        sock.set_timeout(Some(CONTAINER_ACK_TIMEOUT.into()));
        sock
    }

    /// A container-side socket listening for exactly `quad`'s destination.
    fn listening_socket(quad: Quad, rx: usize, tx: usize) -> Option<tcp::Socket<'static>> {
        let mut sock = Self::container_socket(rx, tx);
        sock.listen(listen_endpoint(quad)).ok()?;
        Some(sock)
    }

    fn open_tcp(
        &mut self,
        reg: &Registry,
        nets: &[Option<NetView>],
        domain: u16,
        quad: Quad,
        syn_seq: u32,
    ) {
        let host = self.host.get(Instant::now());
        let Some(to) = target(nets, domain, (quad.2, quad.3), host) else {
            // No listener: smoltcp answers the SYN with an RST.
            self.stats.tcp_refused += 1;
            return;
        };
        let who = self.tenant_of(domain, quad.0);
        if !self.admit(who, FlowKind::Tcp, true) {
            self.stats.tcp_refused += 1;
            return;
        }
        let host = match TcpStream::connect(SocketAddr::V4(to)) {
            Ok(s) => s,
            Err(e) => {
                self.quotas.release(who, FlowKind::Tcp, true);
                if out_of_fds(&e) {
                    self.refuse(who, Refusal::FdLimit);
                }
                self.stats.tcp_refused += 1;
                return;
            }
        };
        keepalive(host.as_raw_fd());
        let size = self.buffer_size(who);
        // It listens once the host connect finishes (`answer_syn`): a listening socket
        // takes any SYN to its address and port, another connection's sent again included.
        let sock = Self::container_socket(size, size);
        let Some(i) = self.insert_tcp(Some(reg), sock, quad, who, Some(host), false) else {
            self.quotas.release(who, FlowKind::Tcp, true);
            self.stats.tcp_refused += 1;
            return;
        };
        if let Some(Some(c)) = self.tcp.get_mut(i) {
            c.syn_seq = Some(syn_seq);
        }
        self.stats.tcp_open += 1;
    }

    /// Puts a connection in a free slot (registering its host socket); its slot.
    fn insert_tcp(
        &mut self,
        reg: Option<&Registry>,
        sock: tcp::Socket<'static>,
        quad: Quad,
        who: ContainerId,
        host: Option<TcpStream>,
        inbound: bool,
    ) -> Option<usize> {
        let i = free_slot(&self.tcp);
        let mut host = host;
        if let Some(h) = host.as_mut() {
            reg?.register(
                h,
                Source::Tcp(i).token(),
                Interest::READABLE | Interest::WRITABLE,
            )
            .ok()?;
        }
        let buffers = sock.recv_capacity() + sock.send_capacity();
        let handle = self.stack(who).sockets.add(sock);
        *self.buffers.entry(who).or_default() += buffers;
        let now = Instant::now();
        let local = host.is_none();
        let conn = TcpConn {
            handle,
            quad,
            who,
            generation: self.generation(),
            born: now,
            last: now,
            reap: false,
            queued: false,
            syn_seq: None,
            held_syn: None,
            host,
            // Published connections are connected on the host; local ones need none.
            connected: inbound || local,
            readable: inbound,
            writable: inbound,
            host_eof: false,
            shut_host: false,
            inbound,
            local,
            local_in: Vec::new(),
            mss: 0,
            buffers,
            isn: None,
            taken: 0,
            peer_ack: None,
        };
        fill_slot(&mut self.tcp, i, conn);
        self.tcp_by_quad.insert((who.domain, quad), i);
        self.touch(i);
        Some(i)
    }

    /// A connection answered by the gateway itself (DNS over TCP).
    fn open_local(&mut self, quad: Quad, domain: u16) {
        let who = self.tenant_of(domain, quad.0);
        if !self.admit(who, FlowKind::Tcp, false) {
            self.stats.tcp_refused += 1;
            return;
        }
        let Some(sock) = Self::listening_socket(quad, 70_000, 140_000) else {
            self.quotas.release(who, FlowKind::Tcp, false);
            return;
        };
        if self
            .insert_tcp(None, sock, quad, who, None, false)
            .is_none()
        {
            self.quotas.release(who, FlowKind::Tcp, false);
        }
    }

    /// Answers the SYN of connection `i` with an RST while its SYN-ACK is still held
    /// back (smoltcp sends nothing for a socket that never answered).
    fn refuse_pending(&mut self, i: usize) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        let Some(seq) = c.syn_seq.take() else {
            return;
        };
        let (csrc, cport, dst, dport) = c.quad;
        if let Some(p) = tcp_rst(dst, dport, csrc, cport, seq.wrapping_add(1)) {
            self.out.push(OutPacket::plain(c.who.domain, p));
        }
    }

    /// Ends connection `i` now: the container gets an RST, the host socket is closed.
    fn abort_tcp(&mut self, reg: &Registry, i: usize) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        if let Some(st) = self.stacks.get_mut(&c.who) {
            st.sockets.get_mut::<tcp::Socket>(c.handle).abort();
        }
        if let Some(mut h) = c.host.take() {
            let _ = reg.deregister(&mut h);
        }
        c.reap = true;
        self.touch(i);
    }

    /// Removes connection `i` entirely: smoltcp socket, host socket, maps, quota.
    fn remove_tcp(&mut self, reg: &Registry, i: usize) {
        let Some(mut c) = self.tcp.get_mut(i).and_then(|s| s.take()) else {
            return;
        };
        if let Some(mut h) = c.host.take() {
            let _ = reg.deregister(&mut h);
        }
        if let Some(st) = self.stacks.get_mut(&c.who) {
            st.sockets.remove(c.handle);
            // An empty stack goes once polled (it may still owe a packet).
            self.active.insert(c.who);
        }
        self.tcp_by_quad.remove(&(c.who.domain, c.quad));
        self.quotas.release(c.who, FlowKind::Tcp, !c.local);
        if let Some(b) = self.buffers.get_mut(&c.who) {
            *b = b.saturating_sub(c.buffers);
            if *b == 0 {
                self.buffers.remove(&c.who);
            }
        }
    }

    /// The smoltcp buffer size (each direction) for a new connection of `who`: the
    /// full [`TCP_BUFFER`] while its connections stay within [`TCP_BUFFER_BUDGET`].
    fn buffer_size(&self, who: ContainerId) -> usize {
        let held = self.buffers.get(&who).copied().unwrap_or(0);
        if held + 2 * TCP_BUFFER <= TCP_BUFFER_BUDGET {
            TCP_BUFFER
        } else {
            TCP_BUFFER_MIN
        }
    }

    /// Whether DNS-over-TCP messages wait for [`SocketUplink::take_dns_requests`].
    pub fn pending_dns(&self) -> bool {
        !self.dns_requests.is_empty()
    }

    /// DNS messages that arrived over TCP on a gateway.
    pub fn take_dns_requests(&mut self) -> Vec<DnsTcpRequest> {
        std::mem::take(&mut self.dns_requests)
    }

    /// Answers a DNS-over-TCP message on connection `conn`; an answer for a connection
    /// that ended (its slot empty or reused: another generation) goes nowhere.
    pub fn dns_reply(&mut self, reg: &Registry, conn: TcpConnId, msg: &[u8]) {
        let Some(Some(c)) = self.tcp.get(conn.slot) else {
            return;
        };
        if !c.local || c.generation != conn.generation || c.reap {
            return;
        }
        let Ok(len) = u16::try_from(msg.len()) else {
            return;
        };
        let (handle, who) = (c.handle, c.who);
        self.touch(conn.slot);
        let Some(st) = self.stacks.get_mut(&who) else {
            return;
        };
        let sock = st.sockets.get_mut::<tcp::Socket>(handle);
        if sock.send_capacity() - sock.send_queue() >= msg.len() + 2 {
            let _ = sock.send_slice(&len.to_be_bytes());
            let _ = sock.send_slice(msg);
        }
        self.poll(reg);
    }

    /// A host socket of the uplink is ready. Returns false when the token is not ours.
    pub fn event(
        &mut self,
        reg: &Registry,
        token: Token,
        readable: bool,
        writable: bool,
        error: bool,
    ) -> bool {
        match Source::of(token) {
            Some(Source::Tcp(i)) => {
                self.tcp_ready(reg, i, (readable, writable, error));
                true
            }
            Some(Source::Udp(i)) => {
                self.udp_in(i);
                true
            }
            Some(Source::Ping(i)) => {
                self.ping_in(i);
                true
            }
            Some(Source::Published(i)) => {
                self.published_ready(reg, (), i);
                self.poll(reg);
                true
            }
            Some(Source::Splice(i)) => {
                self.splice_ready(reg, i);
                true
            }
            _ => false,
        }
    }

    /// A host TCP connection is ready: its connect finished (the container gets its
    /// SYN-ACK, or an RST), or it can be read or written.
    fn tcp_ready(
        &mut self,
        reg: &Registry,
        i: usize,
        (readable, writable, error): (bool, bool, bool),
    ) {
        let (mut answer, mut failed) = (false, false);
        if let Some(Some(c)) = self.tcp.get_mut(i) {
            c.readable |= readable || error;
            c.writable |= writable;
            if !c.connected && (writable || error) {
                let ok = c.host.as_ref().is_some_and(|h| {
                    h.take_error().ok().flatten().is_none() && h.peer_addr().is_ok()
                });
                if ok {
                    c.connected = true;
                    c.syn_seq = None;
                    answer = true;
                } else {
                    failed = true;
                }
            }
        }
        if answer {
            self.answer_syn(i);
        }
        if failed {
            // Refused or unreachable on the host: the container hears it at once.
            self.refuse_pending(i);
            self.abort_tcp(reg, i);
        }
        self.touch(i);
        self.poll(reg);
    }

    /// Connection `i`'s host connect finished: its socket listens and smoltcp is handed
    /// the SYN held back meanwhile, which it answers.
    fn answer_syn(&mut self, i: usize) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        let (who, handle, quad, syn) = (c.who, c.handle, c.quad, c.held_syn.take());
        let st = self.stack(who);
        let _ = st
            .sockets
            .get_mut::<tcp::Socket>(handle)
            .listen(listen_endpoint(quad));
        if let Some(buf) = syn {
            let end = buf.len();
            st.dev.rx.push_back(RxPacket { buf, start: 0, end });
        }
        self.active.insert(who);
    }

    /// Starts serving a published port. `gateways[domain]` is the address loopback
    /// clients appear from inside (Linux drops 127/8 sources arriving on eth0). With the
    /// container's namespace (`netns`), TCP clients on the host's loopback are spliced.
    pub fn publish(
        &mut self,
        reg: &Registry,
        sock: PublishedSocket,
        to: PublishTarget,
        netns: Option<OwnedFd>,
    ) -> io::Result<()> {
        let i = free_slot(&self.published);
        let (mut ps, local) = match sock {
            PublishedSocket::Tcp(l) => {
                l.set_nonblocking(true)?;
                let local = match l.local_addr()? {
                    SocketAddr::V4(a) => a,
                    SocketAddr::V6(_) => {
                        return Err(io::Error::other("IPv6 listeners are not published"));
                    }
                };
                (PubSock::Tcp(mio::net::TcpListener::from_std(l)), local)
            }
            PublishedSocket::Udp(u) => {
                u.set_nonblocking(true)?;
                let local = match u.local_addr()? {
                    SocketAddr::V4(a) => a,
                    SocketAddr::V6(_) => {
                        return Err(io::Error::other("IPv6 sockets are not published"));
                    }
                };
                (PubSock::Udp(UdpSocket::from_std(u)), local)
            }
        };
        let tok = Source::Published(i).token();
        match &mut ps {
            PubSock::Tcp(l) => reg.register(l, tok, Interest::READABLE)?,
            PubSock::Udp(u) => reg.register(u, tok, Interest::READABLE)?,
        }
        let p = Published {
            sock: ps,
            to,
            local,
            netns,
            splice: Splicing::Untried,
        };
        fill_slot(&mut self.published, i, p);
        Ok(())
    }

    /// Stops serving the published port listening on `local` (proto: tcp when true).
    /// Established connections stay until they close.
    pub fn unpublish(&mut self, reg: &Registry, local: SocketAddrV4, tcp: bool) -> bool {
        for (i, slot) in self.published.iter_mut().enumerate() {
            let Some(p) = slot else { continue };
            if p.local != local || matches!(p.sock, PubSock::Tcp(_)) != tcp {
                continue;
            }
            match &mut p.sock {
                PubSock::Tcp(l) => {
                    let _ = reg.deregister(l);
                }
                PubSock::Udp(u) => {
                    let _ = reg.deregister(u);
                }
            }
            *slot = None;
            let quotas = &mut self.quotas;
            self.inbound_udp.retain(|_, f| {
                let keep = f.listener != i;
                if !keep {
                    quotas.release(f.who, FlowKind::Udp, false);
                }
                keep
            });
            return true;
        }
        false
    }

    /// Where published ports listen: (host address, tcp?).
    pub fn published_addrs(&self) -> Vec<(SocketAddrV4, bool)> {
        self.published
            .iter()
            .flatten()
            .map(|p| (p.local, matches!(p.sock, PubSock::Tcp(_))))
            .collect()
    }

    fn published_ready(&mut self, reg: &Registry, _nets: (), i: usize) {
        loop {
            let Some(Some(p)) = self.published.get_mut(i) else {
                return;
            };
            let to = p.to;
            match &mut p.sock {
                PubSock::Tcp(l) => {
                    let (stream, peer) = match l.accept() {
                        Ok(a) => a,
                        Err(e) => {
                            if out_of_fds(&e) {
                                let who = ContainerId {
                                    domain: to.domain,
                                    ip: to.container,
                                };
                                if !self.accept_retrying {
                                    self.refuse(who, Refusal::FdLimit);
                                }
                                if !self.accept_retry.contains(&i) {
                                    self.accept_retry.push(i);
                                }
                                let at = Instant::now() + ACCEPT_RETRY;
                                self.accept_retry_at.get_or_insert(at);
                            }
                            return;
                        }
                    };
                    if let Some(stream) = self.try_splice(reg, i, stream, peer) {
                        self.accept_inbound(reg, stream, peer, to);
                    }
                }
                PubSock::Udp(u) => {
                    let Ok((n, peer)) = u.recv_from(&mut self.scratch) else {
                        return;
                    };
                    let src = self.inside_source(peer, to);
                    let key = (to.domain, (to.container, to.port, *src.ip(), src.port()));
                    let who = ContainerId {
                        domain: to.domain,
                        ip: to.container,
                    };
                    if let Some(f) = self.inbound_udp.get_mut(&key) {
                        f.last = Instant::now();
                        f.client = peer;
                    } else {
                        if self.inbound_udp.len() >= MAX_INBOUND_UDP
                            || !self.admit(who, FlowKind::Udp, false)
                        {
                            self.stats.dropped += 1;
                            continue;
                        }
                        let f = InboundUdp {
                            listener: i,
                            who,
                            client: peer,
                            last: Instant::now(),
                        };
                        self.inbound_udp.insert(key, f);
                    }
                    let data = self.scratch.get(..n).unwrap_or(&[]);
                    if let Some(pkt) = build_udp(*src.ip(), src.port(), to.container, to.port, data)
                    {
                        self.out.push(OutPacket::plain(to.domain, pkt));
                    }
                }
            }
        }
    }

    /// The address a client appears from inside: its own, except loopback clients,
    /// which appear as the network's gateway.
    fn inside_source(&self, peer: SocketAddr, to: PublishTarget) -> SocketAddrV4 {
        match peer {
            SocketAddr::V4(a) if !a.ip().is_loopback() => a,
            SocketAddr::V4(a) => SocketAddrV4::new(self.gateway_of(to.domain), a.port()),
            SocketAddr::V6(a) => SocketAddrV4::new(self.gateway_of(to.domain), a.port()),
        }
    }

    fn gateway_of(&self, domain: u16) -> Ipv4Addr {
        self.gateways
            .get(usize::from(domain))
            .copied()
            .flatten()
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Tells the uplink each network's gateway (for published ports' loopback clients).
    pub fn set_gateways(&mut self, nets: &[Option<NetView>]) {
        self.gateways = nets.iter().map(|n| n.map(|n| n.gateway)).collect();
    }

    /// Splices a loopback client into the container's namespace; gives the stream back
    /// when the connection is to take the frame path instead.
    fn try_splice(
        &mut self,
        reg: &Registry,
        i: usize,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TcpStream> {
        if !matches!(peer, SocketAddr::V4(a) if a.ip().is_loopback()) {
            return Some(stream);
        }
        let Some(Some(p)) = self.published.get(i) else {
            return Some(stream);
        };
        let to = p.to;
        let from = self.inside_source(peer, to);
        if !self.splice_ready_for(i) {
            self.stats.splice_fallbacks += 1;
            return Some(stream);
        }
        let who = ContainerId {
            domain: to.domain,
            ip: to.container,
        };
        if !self.admit(who, FlowKind::Tcp, true) {
            self.stats.tcp_refused += 1;
            return None;
        }
        let dst = SocketAddrV4::new(to.container, to.port);
        let inner = match self.published.get_mut(i) {
            Some(Some(Published {
                splice: Splicing::Ready(pool),
                ..
            })) => pool.take(),
            _ => Err(SpliceError::NoSocket),
        };
        let inner =
            inner.and_then(|fd| splice::connect(fd, from, dst).map_err(SpliceError::Socket));
        match inner {
            Ok(inner) => self.splice_opened(reg, (stream, peer), inner, (who, from, (i, to))),
            // The connect failed at once (no route inside): frames, from now on.
            Err(SpliceError::Socket(e)) if splice::falls_back(&e) => {
                self.quotas.release(who, FlowKind::Tcp, true);
                self.stop_splicing((i, to), &e);
                return Some(stream);
            }
            Err(e) => {
                // Once the rule is in, a frame-path reply would be routed to the
                // loopback too: the connection is refused.
                self.quotas.release(who, FlowKind::Tcp, true);
                self.stats.tcp_refused += 1;
                if matches!(e, SpliceError::NoSocket) {
                    self.refuse(who, Refusal::FdLimit);
                }
            }
        }
        None
    }

    /// Whether published port `i` splices: its pool is started on first use (its thread
    /// installs the rule); a namespace that cannot be entered or routed sends its
    /// loopback clients to the frame path from then on.
    fn splice_ready_for(&mut self, i: usize) -> bool {
        let Some(domain) = self
            .published
            .get(i)
            .and_then(Option::as_ref)
            .map(|p| p.to.domain)
        else {
            return false;
        };
        let gateway = self.gateway_of(domain);
        let Some(Some(p)) = self.published.get_mut(i) else {
            return false;
        };
        if matches!(p.splice, Splicing::Untried) {
            let to = SocketAddrV4::new(p.to.container, p.to.port);
            let started = match p.netns.take() {
                Some(ns) => SocketPool::start(ns.as_fd(), to, gateway),
                None => Err(SpliceError::NoSocket),
            };
            p.splice = match started {
                Ok(pool) => Splicing::Ready(pool),
                Err(e) => {
                    eprintln!("vswitch: published port {} takes frames: {e}", p.local);
                    Splicing::Unavailable
                }
            };
        }
        matches!(p.splice, Splicing::Ready(_))
    }

    /// Files a spliced connection (its inner socket connecting).
    fn splice_opened(
        &mut self,
        reg: &Registry,
        (stream, peer): (TcpStream, SocketAddr),
        inner: TcpStream,
        (who, from, listener): (ContainerId, SocketAddrV4, (usize, PublishTarget)),
    ) {
        let dst = SocketAddrV4::new(listener.1.container, listener.1.port);
        keepalive(stream.as_raw_fd());
        let slot = free_slot(&self.splices);
        let mut s = match Splice::new(stream, inner) {
            Ok(s) => s,
            Err(_) => {
                self.quotas.release(who, FlowKind::Tcp, true);
                self.refuse(who, Refusal::FdLimit);
                return;
            }
        };
        if s.register(reg, Source::Splice(slot).token()).is_err() {
            s.deregister(reg);
            self.quotas.release(who, FlowKind::Tcp, true);
            return;
        }
        let now = Instant::now();
        let c = SplicedConn {
            s,
            who,
            inside: dst,
            from,
            peer,
            listener,
            born: now,
            last: now,
        };
        fill_slot(&mut self.splices, slot, c);
        self.stats.tcp_open += 1;
        self.stats.tcp_spliced += 1;
    }

    /// Moves a spliced connection's bytes; ends it when both sides are done or failed.
    fn splice_ready(&mut self, reg: &Registry, i: usize) {
        let Some(Some(c)) = self.splices.get_mut(i) else {
            return;
        };
        match c.s.pump() {
            Ok(Pumped::Open(true)) => c.last = Instant::now(),
            Ok(Pumped::Open(false) | Pumped::Connecting) => {}
            Err(e) if !c.s.connected() && splice::falls_back(&e) => {
                self.splice_fallback(reg, i);
            }
            Ok(Pumped::Done) | Err(_) => self.end_splice(reg, i),
        }
    }

    /// A spliced connection whose connect inside the container failed or hung (its
    /// loopback down, a firewall inside): the client takes the frame path, and so does
    /// the port from now on (its pool ended, the return rule removed, so the
    /// container's replies leave by its interface again). Counted as a fallback.
    fn splice_fallback(&mut self, reg: &Registry, i: usize) {
        let Some(mut c) = self.splices.get_mut(i).and_then(Option::take) else {
            return;
        };
        c.s.deregister(reg);
        self.quotas.release(c.who, FlowKind::Tcp, true);
        let why = io::Error::from(io::ErrorKind::TimedOut);
        let why = c.s.inner.take_error().ok().flatten().unwrap_or(why);
        self.stop_splicing(c.listener, &why);
        self.accept_inbound(reg, c.s.into_host(), c.peer, c.listener.1);
    }

    /// Published port `listener` takes frames from now on: its pool ends and the
    /// return rule goes. Counts the client that falls back.
    fn stop_splicing(&mut self, (listener, to): (usize, PublishTarget), why: &io::Error) {
        self.stats.splice_fallbacks += 1;
        if let Some(Some(p)) = self.published.get_mut(listener)
            && p.to == to
            && let Splicing::Ready(pool) = std::mem::replace(&mut p.splice, Splicing::Unavailable)
        {
            eprintln!(
                "vswitch: published port {} takes frames: cannot connect inside the container: {why}",
                p.local
            );
            pool.abandon();
        }
    }

    fn end_splice(&mut self, reg: &Registry, i: usize) {
        if let Some(mut c) = self.splices.get_mut(i).and_then(Option::take) {
            c.s.deregister(reg);
            self.quotas.release(c.who, FlowKind::Tcp, true);
        }
    }

    fn accept_inbound(
        &mut self,
        reg: &Registry,
        stream: TcpStream,
        peer: SocketAddr,
        to: PublishTarget,
    ) {
        let who = ContainerId {
            domain: to.domain,
            ip: to.container,
        };
        let src = self.inside_source(peer, to);
        let quad = (to.container, to.port, *src.ip(), src.port());
        if self.tcp_by_quad.contains_key(&(to.domain, quad)) {
            self.stats.tcp_refused += 1;
            return;
        }
        // The accepted descriptor exists already; refused, it is closed at once.
        if !self.admit(who, FlowKind::Tcp, true) {
            self.stats.tcp_refused += 1;
            return;
        }
        keepalive(stream.as_raw_fd());
        let size = self.buffer_size(who);
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; size]),
            tcp::SocketBuffer::new(vec![0u8; size]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_keep_alive(Some(CONTAINER_KEEPALIVE.into()));
        sock.set_timeout(Some(CONTAINER_ACK_TIMEOUT.into()));
        let remote = (IpAddress::Ipv4(v4(to.container)), to.port);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(v4(*src.ip()))),
            port: src.port(),
        };
        let cx = self.stack(who).iface.context();
        let inserted = sock.connect(cx, remote, local).is_ok()
            && self
                .insert_tcp(Some(reg), sock, quad, who, Some(stream), true)
                .is_some();
        if !inserted {
            self.quotas.release(who, FlowKind::Tcp, true);
            self.stats.tcp_refused += 1;
            return;
        }
        self.stats.tcp_open += 1;
    }

    /// Runs smoltcp and moves data between it and the host sockets of the connections
    /// something happened to, until nothing moves.
    pub fn poll(&mut self, reg: &Registry) {
        self.poll_with(reg, false);
    }

    /// As [`SocketUplink::poll`]; `all` looks at every connection first (what smoltcp's
    /// timers did: retransmissions given up, keep-alives unanswered).
    fn poll_with(&mut self, reg: &Registry, all: bool) {
        if all {
            self.active.extend(self.stacks.keys().copied());
        }
        for round in 0..64 {
            let wall = Instant::now();
            let now = smol_at(self.epoch, wall);
            let active = std::mem::take(&mut self.active);
            for who in &active {
                if let Some(st) = self.stacks.get_mut(who) {
                    std::mem::swap(&mut st.dev.pool, &mut self.pool);
                    let _ = st.iface.poll(now, &mut st.dev, &mut st.sockets);
                    std::mem::swap(&mut st.dev.pool, &mut self.pool);
                    for b in st.dev.done.drain(..) {
                        give_back(&mut self.pool, b);
                    }
                    let due = st
                        .iface
                        .poll_delay(now, &st.sockets)
                        .map(|d| wall + poll_delay(d));
                    set_due(&mut self.timers, st, *who, due);
                    // What a container's stack sends goes into its network.
                    let from = self.out.len();
                    let built = st.dev.tx.drain(..).map(|(buf, end)| OutPacket {
                        domain: who.domain,
                        buf,
                        start: LINK_HEADROOM,
                        end,
                        gso_size: 0,
                    });
                    self.out.extend(built);
                    if self.super_frames {
                        for o in self.out.iter_mut().skip(from) {
                            let (tcp, by_quad) = (&self.tcp, &self.tcp_by_quad);
                            o.gso_size = super_frame(tcp, by_quad, o.domain, o.packet_mut());
                        }
                    }
                }
            }
            let moved = self.pump(reg, all && round == 0);
            for who in &active {
                if self.stacks.get(who).is_some_and(|s| s.is_empty())
                    && let Some(mut st) = self.stacks.remove(who)
                {
                    set_due(&mut self.timers, &mut st, *who, None);
                }
            }
            if !moved && self.active.is_empty() {
                break;
            }
        }
    }

    /// Marks connection `i` for the next pump.
    fn touch(&mut self, i: usize) {
        if let Some(Some(c)) = self.tcp.get_mut(i)
            && !c.queued
        {
            c.queued = true;
            self.touched.push(i);
            self.active.insert(c.who);
        }
    }

    /// Moves bytes both ways for the touched connections (or all); true when anything
    /// moved. A connection that moved is touched again: the next round looks at it.
    fn pump(&mut self, reg: &Registry, all: bool) -> bool {
        let mut list = std::mem::take(&mut self.touched);
        for &i in &list {
            if let Some(Some(c)) = self.tcp.get_mut(i) {
                c.queued = false;
            }
        }
        if all {
            list.clear();
            list.extend(0..self.tcp.len());
        }
        let mut moved = false;
        for &i in &list {
            if self.pump_one(reg, i) {
                moved = true;
                self.touch(i);
            }
        }
        list.clear();
        if self.touched.is_empty() {
            // Keep the allocation.
            self.touched = list;
        }
        moved
    }

    /// One connection's turn: bytes both ways, FINs passed on, an end noticed (or,
    /// once ended and polled, removal). True when anything moved.
    fn pump_one(&mut self, reg: &Registry, i: usize) -> bool {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return false;
        };
        if c.reap {
            // smoltcp has had its poll to send the RST or last ACK: done.
            self.remove_tcp(reg, i);
            return false;
        }
        let Some(st) = self.stacks.get_mut(&c.who) else {
            c.reap = true;
            return true;
        };
        let sock = st.sockets.get_mut::<tcp::Socket>(c.handle);
        let mut moved = false;
        if c.local {
            moved |= pump_local(c, sock, i, &mut self.dns_requests);
        }
        if c.connected && c.host.is_some() {
            moved |= pump_host(c, sock);
        }
        let st = sock.state();
        // Every connection is made on the container's SYN (smoltcp has processed it
        // by now, unless it is held back, its socket closed, while the host connect is
        // pending) or by smoltcp's own connect: back in Listen, the container reset the
        // handshake (a SYN scan does), so nothing will come of it.
        let pending = c.syn_seq.is_some();
        let gone = (!pending && matches!(st, tcp::State::Closed | tcp::State::Listen))
            || st == tcp::State::TimeWait
            || (c.host.is_none()
                && !c.local
                && !matches!(st, tcp::State::Listen | tcp::State::SynReceived)
                && !c.inbound);
        if gone {
            // Ended on one side or the other: close the host socket now, remove the
            // rest after smoltcp's next poll (which sends what is owed).
            if let Some(mut h) = c.host.take() {
                let _ = reg.deregister(&mut h);
            }
            c.reap = true;
            moved = true;
        }
        moved
    }

    fn udp_out(
        &mut self,
        reg: &Registry,
        nets: &[Option<NetView>],
        domain: u16,
        quad: Quad,
        payload: &[u8],
    ) {
        let key = (domain, quad);
        // A reply to a client of a published port leaves through that port's socket.
        if let Some(f) = self.inbound_udp.get_mut(&key) {
            f.last = Instant::now();
            if let Some(Some(Published {
                sock: PubSock::Udp(s),
                ..
            })) = self.published.get(f.listener)
            {
                let _ = s.send_to(payload, f.client);
            }
            return;
        }
        let i = match self.udp_by_key.get(&key) {
            Some(&i) => i,
            None => match self.open_udp(reg, nets, key) {
                Some(i) => i,
                None => {
                    self.stats.dropped += 1;
                    return;
                }
            },
        };
        if let Some(Some(f)) = self.udp.get_mut(i) {
            f.last = Instant::now();
            let _ = f.sock.send(payload);
        }
    }

    /// A new UDP flow with its connected host socket; its slot.
    fn open_udp(
        &mut self,
        reg: &Registry,
        nets: &[Option<NetView>],
        key: (u16, Quad),
    ) -> Option<usize> {
        let (domain, quad) = key;
        let host = self.host.get(Instant::now());
        let to = target(nets, domain, (quad.2, quad.3), host)?;
        let who = self.tenant_of(domain, quad.0);
        if !self.admit(who, FlowKind::Udp, true) {
            return None;
        }
        let Some(sock) = self.udp_socket(who, to) else {
            self.quotas.release(who, FlowKind::Udp, true);
            return None;
        };
        let mut sock = sock;
        let i = free_slot(&self.udp);
        if reg
            .register(&mut sock, Source::Udp(i).token(), Interest::READABLE)
            .is_err()
        {
            self.quotas.release(who, FlowKind::Udp, true);
            return None;
        }
        let f = UdpFlow {
            sock,
            who,
            key,
            last: Instant::now(),
        };
        fill_slot(&mut self.udp, i, f);
        self.udp_by_key.insert(key, i);
        self.stats.udp_flows += 1;
        Some(i)
    }

    /// A host UDP socket connected to `to` (out of descriptors: refused and counted).
    fn udp_socket(&mut self, who: ContainerId, to: SocketAddrV4) -> Option<UdpSocket> {
        let bind = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let sock = match UdpSocket::bind(bind) {
            Ok(s) => s,
            Err(e) => {
                if out_of_fds(&e) {
                    self.refuse(who, Refusal::FdLimit);
                }
                return None;
            }
        };
        sock.connect(SocketAddr::V4(to)).ok()?;
        Some(sock)
    }

    fn udp_in(&mut self, i: usize) {
        let Some(Some(f)) = self.udp.get_mut(i) else {
            return;
        };
        let (domain, (csrc, cport, dst, dport)) = f.key;
        loop {
            match f.sock.recv(&mut self.scratch) {
                Ok(n) => {
                    f.last = Instant::now();
                    let data = self.scratch.get(..n).unwrap_or(&[]);
                    if let Some(p) = build_udp(dst, dport, csrc, cport, data) {
                        self.out.push(OutPacket::plain(domain, p));
                    }
                }
                // The host answered "port unreachable": tell the container the same.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    if let Some(p) = udp_port_unreachable(dst, dport, csrc, cport) {
                        self.out.push(OutPacket::plain(domain, p));
                    }
                }
                Err(_) => break,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ping_out(
        &mut self,
        reg: &Registry,
        nets: &[Option<NetView>],
        domain: u16,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        echo: &Icmpv4Packet<&[u8]>,
        ip_header: &[u8],
    ) {
        let key = (domain, src, echo.echo_ident(), dst);
        let Some(to) = target(nets, domain, (dst, 0), self.host.get(Instant::now())) else {
            self.stats.dropped += 1;
            return;
        };
        let i = match self.ping_by_key.get(&key) {
            Some(&i) => Some(i),
            None if self.ping_allowed != Some(false) => self.open_ping(reg, key),
            None => None,
        };
        let Some(Some(f)) = i.and_then(|i| self.ping.get_mut(i)) else {
            // No way to ping from here: say so, as a router would.
            if let Some(p) =
                build_unreachable(dst, src, UnreachCode::ADMIN_PROHIBITED, ip_header, echo)
            {
                self.out.push(OutPacket::plain(domain, p));
            }
            return;
        };
        f.last = Instant::now();
        let target = SocketAddr::V4(SocketAddrV4::new(*to.ip(), 0));
        let _ = f.sock.send_to(echo.as_bytes(), target);
    }

    /// A new echo flow with its ping socket; its slot.
    fn open_ping(&mut self, reg: &Registry, key: (u16, Ipv4Addr, u16, Ipv4Addr)) -> Option<usize> {
        let who = self.tenant_of(key.0, key.1);
        if !self.admit(who, FlowKind::Ping, true) {
            return None;
        }
        let s = match ping_socket() {
            Ok(s) => s,
            Err(e) => {
                self.quotas.release(who, FlowKind::Ping, true);
                if out_of_fds(&e) {
                    self.refuse(who, Refusal::FdLimit);
                } else {
                    self.ping_allowed = Some(false);
                }
                return None;
            }
        };
        self.ping_allowed = Some(true);
        let mut sock = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(s));
        let i = free_slot(&self.ping);
        if reg
            .register(&mut sock, Source::Ping(i).token(), Interest::READABLE)
            .is_err()
        {
            self.quotas.release(who, FlowKind::Ping, true);
            return None;
        }
        let f = PingFlow {
            sock,
            who,
            key,
            last: Instant::now(),
        };
        fill_slot(&mut self.ping, i, f);
        self.ping_by_key.insert(key, i);
        self.stats.ping_flows += 1;
        Some(i)
    }

    fn ping_in(&mut self, i: usize) {
        let Some(Some(f)) = self.ping.get_mut(i) else {
            return;
        };
        let (domain, csrc, id, dst) = f.key;
        while let Ok((n, _)) = f.sock.recv_from(&mut self.scratch) {
            f.last = Instant::now();
            let Some(data) = self.scratch.get_mut(..n) else {
                break;
            };
            // The kernel gives the echo reply (ICMP header on); put the container's id back.
            let Ok(mut icmp) = Icmpv4Packet::new_checked(&mut *data) else {
                continue;
            };
            if icmp.msg_type() != IcmpType::ECHO_REPLY {
                continue;
            }
            icmp.set_echo_ident(id);
            icmp.fill_checksum();
            if let Some(p) = build_ip(dst, csrc, IpProtocol::Icmp, data) {
                self.out.push(OutPacket::plain(domain, p));
            }
        }
    }

    /// Closes idle UDP and echo flows, ends TCP connections whose handshake or idle
    /// time ran out; returns when to run next.
    pub fn tick(&mut self, reg: &Registry, now: Instant) -> Option<Instant> {
        // Housekeeping looks at every flow: at most once a second, not on every wake-up
        // (the gateway thread wakes for every batch of frames).
        let house = self.housekeeping_at.is_none_or(|t| now >= t);
        if house {
            self.expire_udp_and_ping(reg, now);
            self.expire_tcp(reg, now);
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
        self.retry_accepts(reg, now);
        self.poll_with(reg, house);
        let mut next = self.timers.first().map(|&(at, _)| at);
        if let Some(at) = self.accept_retry_at {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        let house_at = self.housekeeping_at.unwrap_or(now);
        Some(next.map_or(house_at, |n| n.min(house_at)))
    }

    /// Accepts again, once their time has come, on the published ports that ran out of
    /// descriptors (a port still out of them goes back on the list, not counted again).
    fn retry_accepts(&mut self, reg: &Registry, now: Instant) {
        if self.accept_retry_at.is_none_or(|at| now < at) {
            return;
        }
        self.accept_retry_at = None;
        self.accept_retrying = true;
        for i in std::mem::take(&mut self.accept_retry) {
            self.published_ready(reg, (), i);
        }
        self.accept_retrying = false;
    }

    /// Closes UDP and echo flows idle past their timeouts.
    fn expire_udp_and_ping(&mut self, reg: &Registry, now: Instant) {
        for slot in self.udp.iter_mut() {
            if let Some(f) = slot
                && now.duration_since(f.last) > UDP_IDLE
            {
                let _ = reg.deregister(&mut f.sock);
                self.udp_by_key.remove(&f.key);
                self.quotas.release(f.who, FlowKind::Udp, true);
                *slot = None;
            }
        }
        let quotas = &mut self.quotas;
        self.inbound_udp.retain(|_, f| {
            let keep = now.duration_since(f.last) <= UDP_IDLE;
            if !keep {
                quotas.release(f.who, FlowKind::Udp, false);
            }
            keep
        });
        for slot in self.ping.iter_mut() {
            if let Some(f) = slot
                && now.duration_since(f.last) > PING_IDLE
            {
                let _ = reg.deregister(&mut f.sock);
                self.ping_by_key.remove(&f.key);
                self.quotas.release(f.who, FlowKind::Ping, true);
                *slot = None;
            }
        }
    }

    /// Ends connections still in their handshake after the handshake timeout (a SYN
    /// whose host connect or whose container ACK never came, a published connection
    /// the container never answered), and established ones idle past the idle timeout.
    fn expire_tcp(&mut self, reg: &Registry, now: Instant) {
        let (handshake, idle) = (
            self.quotas.limits.tcp_handshake,
            self.quotas.limits.tcp_idle,
        );
        for i in 0..self.tcp.len() {
            let Some(Some(c)) = self.tcp.get(i) else {
                continue;
            };
            if c.reap {
                continue;
            }
            let Some(st) = self.stacks.get(&c.who).map(|s| s.state(c.handle)) else {
                continue;
            };
            let opening = matches!(
                st,
                tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived
            ) || !c.connected;
            if opening && now.duration_since(c.born) > handshake {
                self.stats.tcp_handshake_timeouts += 1;
                self.refuse_pending(i);
                self.abort_tcp(reg, i);
            } else if !opening && now.duration_since(c.last) > idle {
                self.stats.tcp_idle_timeouts += 1;
                self.abort_tcp(reg, i);
            }
        }
        for i in 0..self.splices.len() {
            let Some(Some(c)) = self.splices.get(i) else {
                continue;
            };
            if !c.s.connected() && now.duration_since(c.born) > splice::CONNECT_TIMEOUT {
                self.splice_fallback(reg, i);
            } else if !c.s.connected() && now.duration_since(c.born) > handshake {
                self.stats.tcp_handshake_timeouts += 1;
                self.end_splice(reg, i);
            } else if now.duration_since(c.last) > idle {
                self.stats.tcp_idle_timeouts += 1;
                self.end_splice(reg, i);
            }
        }
    }

    /// Every flow carried, for `conntrack ls`.
    pub fn flows(&self) -> Vec<FlowInfo> {
        let mut v = Vec::new();
        for c in self.tcp.iter().flatten() {
            let st = self
                .stacks
                .get(&c.who)
                .map_or(tcp::State::Closed, |s| s.state(c.handle));
            v.push(FlowInfo {
                proto: "tcp",
                inside: SocketAddrV4::new(c.quad.0, c.quad.1),
                outside: SocketAddrV4::new(c.quad.2, c.quad.3),
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
                inside: SocketAddrV4::new(q.0, q.1),
                outside: SocketAddrV4::new(q.2, q.3),
                state: "active".into(),
            });
        }
        for ((_, q), _) in self.inbound_udp.iter() {
            v.push(FlowInfo {
                proto: "udp",
                inside: SocketAddrV4::new(q.0, q.1),
                outside: SocketAddrV4::new(q.2, q.3),
                state: "published".into(),
            });
        }
        for p in self.ping.iter().flatten() {
            let (_, c, id, d) = p.key;
            v.push(FlowInfo {
                proto: "icmp",
                inside: SocketAddrV4::new(c, id),
                outside: SocketAddrV4::new(d, 0),
                state: "echo".into(),
            });
        }
        v
    }

    /// Drops every flow (TCP connections are reset).
    pub fn flush(&mut self, reg: &Registry) {
        for i in 0..self.tcp.len() {
            self.abort_tcp(reg, i);
        }
        for i in 0..self.splices.len() {
            self.end_splice(reg, i);
        }
        self.poll(reg);
        for f in self.udp.iter_mut().flatten() {
            let _ = reg.deregister(&mut f.sock);
            self.quotas.release(f.who, FlowKind::Udp, true);
        }
        self.udp.clear();
        self.udp_by_key.clear();
        for f in self.inbound_udp.values() {
            self.quotas.release(f.who, FlowKind::Udp, false);
        }
        self.inbound_udp.clear();
        for p in self.ping.iter_mut().flatten() {
            let _ = reg.deregister(&mut p.sock);
            self.quotas.release(p.who, FlowKind::Ping, true);
        }
        self.ping.clear();
        self.ping_by_key.clear();
    }

    /// Live TCP connections and UDP flows (for stats).
    /// Gives back what the tables and pools hold past their live entries, once flows
    /// have ended: a burst of thousands of connections leaves tables of thousands of
    /// free slots (and maps with their room) behind otherwise, which only ever grow.
    pub fn shed(&mut self) {
        self.pool = Vec::new();
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

    /// The addresses of a live TCP connection's container side, for tests.
    pub fn tcp_quads(&self) -> Vec<Quad> {
        self.tcp_by_quad.keys().map(|k| k.1).collect()
    }
}

/// A ping socket, if the host lets this process have one.
/// The smallest MSS a container may announce and still get super-frames (RFC 9293's
/// default); smoltcp builds no smaller segments.
const MIN_MSS: u16 = 536;
/// The MSS smoltcp is shown for a container that gets super-frames: as large as its
/// device's MTU (65535) allows, so a segment and its headers fit in one 64 KB frame.
const SUPER_MSS: u16 = 65535 - 40;

/// For a TCP packet smoltcp built toward a container in `domain` (without its checksum,
/// left to this): when it carries more than its connection's MSS, the segment size to
/// cut it into, its checksum field set to the pseudo-header sum (what segmentation
/// expects); else 0, its checksum computed in full.
fn super_frame(
    tcp: &[Option<TcpConn>],
    by_quad: &HashMap<(u16, Quad), usize>,
    domain: u16,
    pkt: &mut [u8],
) -> u16 {
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut pkt[..]) else {
        return 0;
    };
    if ip.protocol() != IpProtocol::Tcp {
        return 0;
    }
    let (src, dst) = (ip.src(), ip.dst());
    let Ok(mut t) = TcpPacket::new_checked(ip.payload_mut()) else {
        return 0;
    };
    let payload = t.payload().len();
    if payload <= usize::from(MIN_MSS) {
        t.fill_checksum(src, dst);
        return 0;
    }
    let quad = (dst, t.dst_port(), src, t.src_port());
    let mss = by_quad
        .get(&(domain, quad))
        .and_then(|&i| tcp.get(i))
        .and_then(|c| c.as_ref())
        .map_or(0, |c| c.mss);
    if mss == 0 || payload <= usize::from(mss) {
        t.fill_checksum(src, dst);
        return 0;
    }
    let len = t.as_bytes().len() as u32;
    t.set_checksum(checksum::fold(checksum::pseudo_header_v4(
        src,
        dst,
        u8::from(IpProtocol::Tcp),
        len,
    )));
    mss
}

fn ping_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = owned.as_raw_fd();
    Ok(owned)
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

/// Builds an IPv4 packet with a fresh header around `payload`.
pub fn build_ip(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let total = 20 + payload.len();
    let total16 = u16::try_from(total).ok()?;
    let mut p = vec![0u8; total];
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_version_and_header_len(20);
        ip.set_total_len(total16);
        ip.set_dont_fragment(true);
        ip.set_ttl(64);
        ip.set_protocol(proto);
        ip.set_src(src);
        ip.set_dst(dst);
        ip.fill_checksum();
    }
    p.get_mut(20..)?.copy_from_slice(payload);
    Some(p)
}

/// Builds an IPv4/UDP packet.
pub fn build_udp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    data: &[u8],
) -> Option<Vec<u8>> {
    let ulen = u16::try_from(8 + data.len()).ok()?;
    let mut seg = vec![0u8; 8 + data.len()];
    seg.get_mut(8..)?.copy_from_slice(data);
    {
        let mut u = UdpPacket::new_unchecked(&mut seg[..]);
        u.set_src_port(sport);
        u.set_dst_port(dport);
        u.set_len(ulen);
        u.fill_checksum(src, dst);
    }
    build_ip(src, dst, IpProtocol::Udp, &seg)
}

/// A DNS-over-TCP connection on a gateway: whole length-prefixed messages go to the
/// DNS server; closed by the container, closed here too. True when anything moved.
fn pump_local(
    c: &mut TcpConn,
    sock: &mut tcp::Socket<'static>,
    slot: usize,
    requests: &mut Vec<DnsTcpRequest>,
) -> bool {
    let mut moved = false;
    while sock.can_recv() && c.local_in.len() < DNS_TCP_MAX {
        let room = DNS_TCP_MAX - c.local_in.len();
        let buf = &mut c.local_in;
        let r = sock.recv(|d| {
            let n = d.len().min(room);
            buf.extend_from_slice(d.get(..n).unwrap_or(&[]));
            (n, n)
        });
        match r {
            Ok(n) if n > 0 => c.taken = c.taken.wrapping_add(n as u32),
            _ => break,
        }
        moved = true;
    }
    while let [a, b, ..] = c.local_in[..] {
        let len = usize::from(u16::from_be_bytes([a, b]));
        if c.local_in.len() < len + 2 {
            break;
        }
        let msg: Vec<u8> = c.local_in.drain(..len + 2).skip(2).collect();
        c.last = Instant::now();
        requests.push(DnsTcpRequest {
            conn: TcpConnId {
                slot,
                generation: c.generation,
            },
            from: c.who,
            msg,
        });
    }
    if !sock.may_recv() && sock.may_send() && sock.send_queue() == 0 {
        sock.close();
    }
    moved
}

/// Moves bytes between a connection's smoltcp buffers and its host socket with no
/// copy in between, and passes FINs on. True when anything moved.
fn pump_host(c: &mut TcpConn, sock: &mut tcp::Socket<'static>) -> bool {
    let Some(h) = c.host.as_mut() else {
        return false;
    };
    let mut moved = false;
    // Container -> host: write straight from smoltcp's receive buffer.
    while c.writable && sock.can_recv() {
        let r = sock.recv(|data| match h.write(data) {
            Ok(n) => (n, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, 0),
            Err(_) => (0, usize::MAX),
        });
        match r {
            Ok(0) => c.writable = false,
            Ok(usize::MAX) | Err(_) => {
                sock.abort();
                c.host_eof = true;
                break;
            }
            Ok(n) => {
                moved = true;
                c.taken = c.taken.wrapping_add(n as u32);
                c.last = Instant::now();
            }
        }
    }
    // Host -> container: read straight into smoltcp's transmit buffer.
    while c.readable && !c.host_eof && sock.can_send() {
        let r = sock.send(|buf| match h.read(buf) {
            Ok(0) => (0, Some(0)),
            Ok(n) => (n, Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, None),
            Err(_) => (0, Some(0)),
        });
        match r {
            Ok(Some(0)) => {
                c.host_eof = true;
                moved = true;
            }
            Ok(Some(_)) => {
                moved = true;
                c.last = Instant::now();
            }
            Ok(None) => c.readable = false,
            Err(_) => break,
        }
    }
    // The container closed its side (a FIN arrived) and everything reached the host.
    let fin_in = matches!(
        sock.state(),
        tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait
    );
    if fin_in && !sock.can_recv() && !c.shut_host {
        let _ = h.shutdown(std::net::Shutdown::Write);
        c.shut_host = true;
        moved = true;
    }
    // The host closed: a FIN follows the data already queued.
    if c.host_eof && sock.may_send() {
        sock.close();
        moved = true;
    }
    moved
}

/// An RST+ACK from `src` acknowledging `ack` (refusing a SYN).
fn tcp_rst(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, ack: u32) -> Option<Vec<u8>> {
    let mut seg = [0u8; 20];
    {
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_src_port(sport);
        t.set_dst_port(dport);
        t.set_seq(0);
        t.set_ack(ack);
        t.set_header_len(20);
        t.set_flags(crate::wire::tcp::TcpFlags::RST | crate::wire::tcp::TcpFlags::ACK);
        t.fill_checksum(src, dst);
    }
    build_ip(src, dst, IpProtocol::Tcp, &seg)
}

/// An ICMP port unreachable from `dst` to the container, quoting a UDP header of the
/// flow (enough for the container's stack to find its socket).
fn udp_port_unreachable(dst: Ipv4Addr, dport: u16, csrc: Ipv4Addr, cport: u16) -> Option<Vec<u8>> {
    let quoted_udp = build_udp(csrc, cport, dst, dport, &[])?;
    let mut m = vec![0u8; 8];
    m.extend_from_slice(quoted_udp.get(..28)?);
    {
        let mut i = Icmpv4Packet::new_unchecked(&mut m[..]);
        i.set_msg_type(IcmpType::DEST_UNREACHABLE);
        i.set_code(UnreachCode::PORT);
        i.fill_checksum();
    }
    build_ip(dst, csrc, IpProtocol::Icmp, &m)
}

fn build_unreachable(
    from: Ipv4Addr,
    to: Ipv4Addr,
    code: u8,
    ip_header: &[u8],
    icmp: &Icmpv4Packet<&[u8]>,
) -> Option<Vec<u8>> {
    let quoted: Vec<u8> = ip_header
        .iter()
        .chain(icmp.as_bytes().iter().take(8))
        .copied()
        .collect();
    let mut m = vec![0u8; 8 + quoted.len()];
    m.get_mut(8..)?.copy_from_slice(&quoted);
    {
        let mut i = Icmpv4Packet::new_unchecked(&mut m[..]);
        i.set_msg_type(IcmpType::DEST_UNREACHABLE);
        i.set_code(code);
        i.fill_checksum();
    }
    build_ip(from, to, IpProtocol::Icmp, &m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::TcpFlags;
    use mio::{Events, Poll};

    const C: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

    fn nets(egress: bool) -> Vec<Option<NetView>> {
        vec![
            Some(NetView {
                gateway: GW,
                subnet: Ipv4Addr::new(10, 9, 0, 0),
                prefix_len: 24,
                egress,
                dns: true,
                host_loopback: true,
            }),
            Some(NetView {
                gateway: Ipv4Addr::new(10, 8, 0, 1),
                subnet: Ipv4Addr::new(10, 8, 0, 0),
                prefix_len: 24,
                egress: true,
                dns: true,
                host_loopback: true,
            }),
        ]
    }

    fn tcp_packet(
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        seq: u32,
        ack: u32,
        flags: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let opts: &[u8] = if flags & TcpFlags::SYN != 0 {
            &[2, 4, 0x05, 0xb4]
        } else {
            &[]
        };
        let hl = 20 + opts.len();
        let mut seg = vec![0u8; hl + data.len()];
        seg[20..hl].copy_from_slice(opts);
        seg[hl..].copy_from_slice(data);
        {
            let mut t = TcpPacket::new_unchecked(&mut seg[..]);
            t.set_src_port(src.1);
            t.set_dst_port(dst.1);
            t.set_seq(seq);
            t.set_ack(ack);
            t.set_header_len(hl);
            t.set_flags(flags);
            t.set_window(65535);
            t.fill_checksum(src.0, dst.0);
        }
        build_ip(src.0, dst.0, IpProtocol::Tcp, &seg).unwrap()
    }

    struct Rig {
        up: SocketUplink,
        poll: Poll,
        nets: Vec<Option<NetView>>,
        /// The network packets come from (and every answer must go back to).
        domain: u16,
    }

    impl Rig {
        fn new(egress: bool) -> Rig {
            Rig::with_limits(egress, UplinkLimits::default())
        }
        fn with_limits(egress: bool, limits: UplinkLimits) -> Rig {
            Rig {
                up: SocketUplink::with_limits(limits),
                poll: Poll::new().unwrap(),
                nets: nets(egress),
                domain: 0,
            }
        }
        /// Publishes the container's port 80 on a free port of the host's loopback,
        /// which it returns.
        fn publish_tcp_80(&mut self) -> u16 {
            self.up.set_gateways(&self.nets);
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let to = PublishTarget {
                domain: 0,
                container: C,
                port: 80,
            };
            let reg = self.poll.registry();
            self.up
                .publish(reg, PublishedSocket::Tcp(l), to, None)
                .unwrap();
            port
        }
        fn send(&mut self, pkt: &[u8]) {
            self.up
                .from_container(self.poll.registry(), &self.nets, self.domain, pkt);
        }
        /// A segment without data or acknowledgment from the container.
        fn send_bare(&mut self, from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), seq: u32, flags: u8) {
            self.send(&tcp_packet(from, to, seq, 0, flags, &[]));
        }
        /// Runs events until `want` matches an output packet (returned), or gives up.
        fn until(&mut self, mut want: impl FnMut(&[u8]) -> bool) -> Option<Vec<u8>> {
            let mut events = Events::with_capacity(64);
            for _ in 0..200 {
                for (d, p, _) in self.up.take_output() {
                    assert_eq!(d, self.domain, "delivered into another network");
                    if want(&p) {
                        return Some(p);
                    }
                }
                self.poll
                    .poll(&mut events, Some(Duration::from_millis(10)))
                    .unwrap();
                for e in events.iter() {
                    self.up.event(
                        self.poll.registry(),
                        e.token(),
                        e.is_readable(),
                        e.is_writable(),
                        e.is_error(),
                    );
                }
                self.up.tick(self.poll.registry(), Instant::now());
            }
            None
        }
        /// Sends a SYN from `from` to `to` with sequence `seq`; returns the SYN-ACK.
        fn connect(&mut self, from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), seq: u32) -> Vec<u8> {
            self.send(&tcp_packet(from, to, seq, 0, TcpFlags::SYN, &[]));
            self.until(|p| {
                tcp_of(p).is_some_and(|t| {
                    t.2 & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN | TcpFlags::ACK
                })
            })
            .expect("SYN-ACK")
        }
    }

    fn tcp_of(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, u32, u32, Vec<u8>)> {
        let ip = Ipv4Packet::new_checked(p).ok()?;
        if ip.protocol() != IpProtocol::Tcp {
            return None;
        }
        let t = TcpPacket::new_checked(ip.payload()).ok()?;
        assert!(t.verify_checksum(ip.src(), ip.dst()), "bad TCP checksum");
        Some((
            ip.src(),
            ip.dst(),
            t.flags(),
            t.seq(),
            t.ack(),
            t.payload().to_vec(),
        ))
    }

    #[test]
    fn tcp_to_gateway_reaches_host_loopback_both_ways() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::new(true);
        // The SYN-ACK comes only once the host connection exists.
        let synack = r.connect((C, 40000), (GW, port), 1000);
        let (src, dst, _, sseq, sack, _) = tcp_of(&synack).unwrap();
        assert_eq!((src, dst, sack), (GW, C, 1001));
        let (mut server, _) = l.accept().unwrap();
        r.send(&tcp_packet(
            (C, 40000),
            (GW, port),
            1001,
            sseq + 1,
            TcpFlags::ACK | TcpFlags::PSH,
            b"hello",
        ));
        r.until(|_| false);
        let mut buf = [0u8; 5];
        use std::io::Read as _;
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        use std::io::Write as _;
        server.write_all(b"world").unwrap();
        let data = r
            .until(|p| tcp_of(p).is_some_and(|t| !t.5.is_empty()))
            .expect("data");
        assert_eq!(tcp_of(&data).unwrap().5, b"world");
        // The server closes: a FIN reaches the container.
        drop(server);
        r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::FIN != 0))
            .expect("FIN");
    }

    #[test]
    fn a_frame_buffer_goes_to_smoltcp_whole_and_bounded_by_its_frame() {
        let mut r = Rig::new(true);
        let spare = vec![3u8; 10];
        r.up.pool.push(spare);
        // The packet claims 1000 bytes; the frame ends at 60: nothing past it is read.
        let mut frame = vec![0xaau8; 200];
        let pkt = r.up.rx_packet(Segment::Frame(&mut frame, 14..60), 1000);
        assert_eq!((pkt.start, pkt.end, pkt.buf.len()), (14, 60, 200));
        assert_eq!(frame, vec![3u8; 10], "a spare left in the frame's place");
        // Borrowed bytes are copied, up to the length asked.
        let pkt = r.up.rx_packet(Segment::Borrowed(&[1, 2, 3, 4]), 3);
        assert_eq!(pkt.buf.get(pkt.start..pkt.end), Some(&[1u8, 2, 3][..]));
        // Buffers smoltcp read, and packets delivered, come back to the pool, bounded.
        for _ in 0..2 * POOL_BUFFERS {
            give_back(&mut r.up.pool, vec![0u8; 8]);
        }
        assert_eq!(r.up.pool.len(), POOL_BUFFERS);
        assert!(r.up.offer_buffer(vec![0u8; 8]).is_some());
    }

    #[test]
    fn super_frames_toward_the_container_are_cut_at_its_mss() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::new(true);
        r.up.set_super_frames(true);
        // The container announces MSS 1460; smoltcp is shown more.
        let synack = r.connect((C, 40001), (GW, port), 1000);
        let (_, _, _, sseq, _, _) = tcp_of(&synack).unwrap();
        let (mut server, _) = l.accept().unwrap();
        let ack = tcp_packet((C, 40001), (GW, port), 1001, sseq + 1, TcpFlags::ACK, &[]);
        r.send(&ack);
        use std::io::Write as _;
        server.write_all(&vec![7u8; 60_000]).unwrap();
        let mut found = None;
        let mut events = Events::with_capacity(64);
        for _ in 0..100 {
            for (_, p, gso) in r.up.take_output() {
                if gso != 0 && found.is_none() {
                    found = Some((p, gso));
                }
            }
            if found.is_some() {
                break;
            }
            r.poll
                .poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            for e in events.iter() {
                let (rd, wr, er) = (e.is_readable(), e.is_writable(), e.is_error());
                r.up.event(r.poll.registry(), e.token(), rd, wr, er);
            }
        }
        let (p, gso) = found.expect("a super-frame");
        assert_eq!(gso, 1460);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(t.payload().len() > 1460, "{}", t.payload().len());
        // Only the pseudo-header sum, as segmentation expects.
        let len = ip.payload().len() as u32;
        let pseudo = checksum::pseudo_header_v4(GW, C, u8::from(IpProtocol::Tcp), len);
        assert_eq!(t.checksum(), checksum::fold(pseudo));
    }

    #[test]
    fn tcp_refused_on_host_is_reset_in_container() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut r = Rig::new(true);
        r.send_bare((C, 40001), (GW, port), 5, TcpFlags::SYN);
        // After the host refuses, the container's retransmitted SYN meets an RST.
        std::thread::sleep(Duration::from_millis(50));
        r.until(|_| false);
        r.send_bare((C, 40001), (GW, port), 5, TcpFlags::SYN);
        let rst = r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::RST != 0));
        assert!(rst.is_some(), "no RST");
    }

    #[test]
    fn other_networks_and_internal_networks_are_not_reached() {
        let mut r = Rig::new(true);
        r.send(&tcp_packet(
            (C, 40002),
            (Ipv4Addr::new(10, 8, 0, 5), 80),
            5,
            0,
            TcpFlags::SYN,
            &[],
        ));
        assert!(
            r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::RST != 0))
                .is_some()
        );
        assert_eq!(r.up.stats.tcp_refused, 1);
        let mut r = Rig::new(false);
        r.send(&tcp_packet(
            (C, 40003),
            (Ipv4Addr::new(192, 0, 2, 1), 80),
            5,
            0,
            TcpFlags::SYN,
            &[],
        ));
        assert!(
            r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::RST != 0))
                .is_some()
        );
        assert_eq!(
            target(&nets(false), 0, (Ipv4Addr::new(192, 0, 2, 1), 80), None),
            None
        );
        assert_eq!(
            target(&nets(true), 0, (Ipv4Addr::new(127, 0, 0, 1), 80), None),
            None
        );
        assert_eq!(
            target(&nets(true), 0, (GW, 80), None),
            Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80))
        );
        assert_eq!(target(&nets(true), 7, (GW, 80), None), None);
    }

    #[test]
    fn the_gateway_is_the_host_main_address_unless_loopback_is_opted_in() {
        let host = Some(Ipv4Addr::new(203, 0, 113, 5));
        let mut n = nets(true);
        if let Some(Some(v)) = n.get_mut(0) {
            v.host_loopback = false;
        }
        assert_eq!(
            target(&n, 0, (GW, 8080), host),
            Some(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 8080))
        );
        // No main address: closed, never the loopback.
        assert_eq!(target(&n, 0, (GW, 8080), None), None);
        assert_eq!(
            target(&nets(true), 0, (GW, 8080), host),
            Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080))
        );
        // Port 53 of a network without DNS is closed, loopback or not.
        for v in n.iter_mut().flatten() {
            v.dns = false;
        }
        assert_eq!(target(&n, 0, (GW, 53), host), None);
        if let Some(Some(v)) = n.get_mut(0) {
            v.host_loopback = true;
        }
        assert_eq!(target(&n, 0, (GW, 53), host), None);
    }

    #[test]
    fn udp_flow_carries_both_ways() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let mut r = Rig::new(true);
        r.send(&build_udp(C, 5000, GW, port, b"ping").unwrap());
        let mut buf = [0u8; 64];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        s.send_to(b"pong", from).unwrap();
        let p = r
            .until(|p| Ipv4Packet::new_checked(p).is_ok_and(|ip| ip.protocol() == IpProtocol::Udp))
            .expect("reply");
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!((ip.src(), ip.dst()), (GW, C));
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (port, 5000, &b"pong"[..])
        );
        assert!(u.verify_checksum(ip.src(), ip.dst()));
        assert_eq!(r.up.counts().1, 1);
    }

    #[test]
    fn a_published_port_out_of_descriptors_accepts_again_on_a_timer() {
        let mut r = Rig::new(true);
        let port = r.publish_tcp_80();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // As after an accept that ran out of descriptors: the client waits in the
        // backlog and no readiness comes again (edge-triggered); the timer takes it.
        let i = r.up.published.iter().position(|p| p.is_some()).unwrap();
        r.up.accept_retry.push(i);
        let now = Instant::now();
        r.up.accept_retry_at = Some(now + ACCEPT_RETRY);
        // Not before its time (the gateway ticks on every wake-up)...
        let next = r.up.tick(r.poll.registry(), now);
        assert!(next.is_some_and(|t| t <= now + ACCEPT_RETRY));
        assert_eq!(r.up.accept_retry, [i]);
        assert!(r.up.take_output().is_empty());
        // ...then accepted.
        r.up.tick(r.poll.registry(), now + ACCEPT_RETRY);
        assert!(r.up.accept_retry.is_empty() && r.up.accept_retry_at.is_none());
        let out = r.up.take_output();
        let syn = out.iter().find_map(|(_, p, _)| tcp_of(p));
        assert!(
            syn.is_some_and(|t| t.2 & TcpFlags::SYN != 0),
            "no SYN toward the container"
        );
    }

    #[test]
    fn published_tcp_port_reaches_the_container_from_the_gateway_address() {
        let mut r = Rig::new(true);
        let port = r.publish_tcp_80();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // smoltcp opens towards the container, from the gateway (a loopback client).
        let syn = r
            .until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::SYN != 0))
            .expect("SYN");
        let (src, dst, _, cseq, _, _) = tcp_of(&syn).unwrap();
        assert_eq!((src, dst), (GW, C));
        let cport = TcpPacket::new_checked(Ipv4Packet::new_checked(&syn[..]).unwrap().payload())
            .unwrap()
            .src_port();
        r.send(&tcp_packet(
            (C, 80),
            (GW, cport),
            7000,
            cseq + 1,
            TcpFlags::SYN | TcpFlags::ACK,
            &[],
        ));
        r.until(|p| tcp_of(p).is_some_and(|t| t.2 == TcpFlags::ACK));
        use std::io::{Read as _, Write as _};
        client.write_all(b"GET").unwrap();
        let req = r
            .until(|p| tcp_of(p).is_some_and(|t| !t.5.is_empty()))
            .expect("request");
        assert_eq!(tcp_of(&req).unwrap().5, b"GET");
        // The container answers and closes.
        r.send(&tcp_packet(
            (C, 80),
            (GW, cport),
            7001,
            cseq + 4,
            TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN,
            b"200 OK",
        ));
        r.until(|_| false);
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got);
        assert_eq!(got, b"200 OK");
    }

    #[test]
    fn dns_over_tcp_on_the_gateway_is_answered_locally() {
        let mut r = Rig::new(true);
        let synack = r.connect((C, 40100), (GW, 53), 100);
        let sseq = tcp_of(&synack).unwrap().3;
        r.send(&tcp_packet(
            (C, 40100),
            (GW, 53),
            101,
            sseq + 1,
            TcpFlags::ACK,
            &[],
        ));
        r.send(&tcp_packet(
            (C, 40100),
            (GW, 53),
            101,
            sseq + 1,
            TcpFlags::ACK | TcpFlags::PSH,
            &[0, 3, 7, 8, 9],
        ));
        r.until(|_| false);
        let reqs = r.up.take_dns_requests();
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(reqs[0].msg, vec![7, 8, 9]);
        assert_eq!(reqs[0].from, ContainerId { domain: 0, ip: C });
        // An answer for another generation of the slot (a connection that ended and
        // whose slot was reused) goes nowhere.
        let stale = TcpConnId {
            generation: reqs[0].conn.generation.wrapping_sub(1),
            ..reqs[0].conn
        };
        r.up.dns_reply(r.poll.registry(), stale, &[6, 6]);
        assert!(
            r.until(|p| tcp_of(p).is_some_and(|t| !t.5.is_empty()))
                .is_none(),
            "a stale answer was sent"
        );
        r.up.dns_reply(r.poll.registry(), reqs[0].conn, &[1, 2]);
        let ans = r
            .until(|p| tcp_of(p).is_some_and(|t| !t.5.is_empty()))
            .expect("answer");
        assert_eq!(tcp_of(&ans).unwrap().5, vec![0, 2, 1, 2]);
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut r = Rig::new(true);
        for p in [&[][..], &[0x45, 0, 0, 10][..], &[0x45; 40][..]] {
            r.send(p);
        }
        assert!(r.up.stats.dropped >= 2);
    }

    fn short(handshake_ms: u64, idle_ms: u64) -> UplinkLimits {
        UplinkLimits {
            tcp_handshake: Duration::from_millis(handshake_ms),
            tcp_idle: Duration::from_millis(idle_ms),
            ..UplinkLimits::default()
        }
    }

    fn is_rst(p: &[u8]) -> bool {
        tcp_of(p).is_some_and(|t| t.2 & TcpFlags::RST != 0)
    }

    #[test]
    fn a_handshake_the_container_never_finishes_ends() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::with_limits(true, short(300, 60_000));
        // SYN-ACK comes, the container never ACKs: the slot is freed with an RST.
        r.connect((C, 41000), (GW, port), 1);
        assert_eq!(r.up.counts().0, 1);
        assert!(
            r.until(is_rst).is_some(),
            "no RST after the handshake timeout"
        );
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 0);
        assert_eq!(r.up.stats.tcp_handshake_timeouts, 1);
        assert_eq!(r.up.quotas.fds(), 0);
    }

    /// The stacks with a smoltcp timer are exactly those in the timer index, once each.
    fn timers_in_step(up: &SocketUplink) {
        let due: BTreeSet<_> = up
            .stacks
            .iter()
            .filter_map(|(who, st)| st.due.map(|at| (at, *who)))
            .collect();
        assert_eq!(due, up.timers);
    }

    #[test]
    fn a_stacks_timer_alone_brings_its_retransmission() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::with_limits(true, short(1_800, 60_000));
        let synack = |p: &[u8]| {
            tcp_of(p).is_some_and(|t| {
                t.2 & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN | TcpFlags::ACK
            })
        };
        r.connect((C, 41002), (GW, port), 1);
        timers_in_step(&r.up);
        assert_eq!(r.up.timers.len(), 1, "the SYN-ACK's retransmission timer");
        // Nothing more from the container: only the timer brings the SYN-ACK again.
        assert!(r.until(synack).is_some(), "SYN-ACK not retransmitted");
        timers_in_step(&r.up);
        // The handshake timeout ends it; its stack and timer go with it.
        assert!(
            r.until(is_rst).is_some(),
            "no RST after the handshake timeout"
        );
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 0);
        assert!(r.up.stacks.is_empty() && r.up.timers.is_empty());
    }

    #[test]
    fn a_handshake_the_container_resets_ends_at_once() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::with_limits(true, short(60_000, 60_000));
        // SYN, SYN-ACK, RST: what a SYN scan does to every port it finds open.
        r.connect((C, 41003), (GW, port), 1);
        r.send_bare((C, 41003), (GW, port), 2, TcpFlags::RST);
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 0, "the connection outlived its reset");
        assert_eq!(r.up.quotas.fds(), 0);
        assert!(r.up.stacks.is_empty() && r.up.timers.is_empty());
        // The host side was closed too.
        let (mut server, _) = l.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        use std::io::Read as _;
        assert!(matches!(server.read(&mut b), Ok(0) | Err(_)));
    }

    #[test]
    fn shed_gives_back_the_tables_of_ended_connections() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::with_limits(true, short(60_000, 60_000));
        for i in 0..40u16 {
            r.connect((C, 42000 + i), (GW, port), 1);
        }
        // Positive control: the tables grew with the connections.
        assert_eq!(r.up.counts().0, 40);
        assert!(r.up.tcp.len() >= 40 && r.up.tcp_by_quad.capacity() >= 40);
        for i in 0..40u16 {
            r.send_bare((C, 42000 + i), (GW, port), 2, TcpFlags::RST);
        }
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 0);
        assert!(r.up.tcp.len() >= 40, "ended connections leave their slots");
        r.up.shed();
        assert_eq!((r.up.tcp.capacity(), r.up.tcp_by_quad.capacity()), (0, 0));
    }

    #[test]
    fn an_inexact_rst_is_challenged_and_an_exact_one_resets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::with_limits(true, short(60_000, 60_000));
        let (me, gw) = ((C, 41005), (GW, port));
        let synack = tcp_of(&r.connect(me, gw, 1000)).unwrap();
        let ours = synack.3.wrapping_add(1);
        r.send(&tcp_packet(me, gw, 1001, ours, TcpFlags::ACK, b"hello"));
        let (mut server, _) = l.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 5];
        use std::io::Read as _;
        server.read_exact(&mut b).unwrap();
        r.until(|_| false);
        // In the window, 100 bytes past the next expected (1006): a challenge ACK of
        // 1006, and the connection stays.
        r.send_bare(me, gw, 1106, TcpFlags::RST);
        let ack = r.until(|p| tcp_of(p).is_some_and(|t| t.2 == TcpFlags::ACK && t.4 == 1006));
        assert!(ack.is_some(), "no challenge ACK");
        assert_eq!(r.up.stats.challenge_acks, 1);
        assert_eq!(r.up.counts().0, 1, "an inexact RST ended the connection");
        // Outside the window: nothing, the connection stays.
        r.send_bare(me, gw, 1006u32.wrapping_sub(10), TcpFlags::RST);
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 1, "an RST outside the window ended it");
        // Exactly the next number: the connection ends (the positive control).
        r.send_bare(me, gw, 1006, TcpFlags::RST);
        r.until(|_| false);
        assert_eq!(
            r.up.counts().0,
            0,
            "the exact RST did not end the connection"
        );
    }

    #[test]
    fn a_syn_carrying_data_is_answered_once_the_host_connect_finishes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::new(true);
        // Held while the connect is pending: its headers only (the data is not taken,
        // so the container sends it again after the handshake).
        r.send(&tcp_packet(
            (C, 41004),
            (GW, port),
            500,
            0,
            TcpFlags::SYN,
            &[7u8; 3000],
        ));
        let synack = r
            .until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::SYN != 0))
            .expect("SYN-ACK");
        let (_, _, flags, _, ack, _) = tcp_of(&synack).unwrap();
        assert_eq!(flags, TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(ack, 501, "the SYN's data was acknowledged");
        assert_eq!(r.up.counts().0, 1);
    }

    #[test]
    fn an_idle_connection_ends_both_sides() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::with_limits(true, short(5_000, 400));
        let synack = r.connect((C, 41001), (GW, port), 10);
        let sseq = tcp_of(&synack).unwrap().3;
        r.send(&tcp_packet(
            (C, 41001),
            (GW, port),
            11,
            sseq + 1,
            TcpFlags::ACK,
            &[],
        ));
        let (mut server, _) = l.accept().unwrap();
        assert!(r.until(is_rst).is_some(), "no RST after the idle timeout");
        // The host side is closed too.
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        use std::io::Read as _;
        assert!(matches!(server.read(&mut b), Ok(0) | Err(_)));
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 0);
        assert_eq!(r.up.stats.tcp_idle_timeouts, 1);
    }

    #[test]
    fn a_container_past_its_tcp_share_is_refused_and_others_are_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::with_limits(
            true,
            UplinkLimits {
                tcp_per_container: 2,
                ..UplinkLimits::default()
            },
        );
        r.connect((C, 42000), (GW, port), 1);
        r.connect((C, 42001), (GW, port), 1);
        r.send_bare((C, 42002), (GW, port), 1, TcpFlags::SYN);
        assert!(r.until(is_rst).is_some(), "third connection not refused");
        let refused: Vec<_> = r.up.take_refusals().collect();
        assert_eq!(
            refused,
            vec![(ContainerId { domain: 0, ip: C }, Refusal::TcpQuota)]
        );
        // A neighbour still connects.
        r.connect((Ipv4Addr::new(10, 9, 0, 3), 42000), (GW, port), 1);
        assert_eq!(r.up.counts().0, 3);
    }

    #[test]
    fn a_port_without_port_security_is_one_tenant_whatever_its_sources() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::with_limits(
            true,
            UplinkLimits {
                tcp_per_container: 2,
                ..UplinkLimits::default()
            },
        );
        // The gateway says: these frames come from a port without port security whose
        // address is C. Three sources, one tenant.
        r.up.set_tenant(Some(C));
        r.connect((Ipv4Addr::new(10, 9, 0, 50), 42000), (GW, port), 1);
        r.connect((Ipv4Addr::new(10, 9, 0, 51), 42000), (GW, port), 1);
        r.send_bare(
            (Ipv4Addr::new(10, 9, 0, 52), 42000),
            (GW, port),
            1,
            TcpFlags::SYN,
        );
        assert!(r.until(is_rst).is_some(), "third source not refused");
        let refused: Vec<_> = r.up.take_refusals().collect();
        assert_eq!(
            refused,
            vec![(ContainerId { domain: 0, ip: C }, Refusal::TcpQuota)]
        );
        // A secured neighbour (its source is itself) still connects: the control.
        r.up.set_tenant(None);
        r.connect((Ipv4Addr::new(10, 9, 0, 3), 42000), (GW, port), 1);
        assert_eq!(r.up.counts().0, 3);
    }

    #[test]
    fn connections_past_a_containers_buffer_budget_get_small_buffers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut r = Rig::new(true);
        let full = TCP_BUFFER_BUDGET / (2 * TCP_BUFFER);
        for i in 0..=full {
            r.connect((C, 42000 + i as u16), (GW, port), 1);
        }
        let mut sizes: Vec<usize> = r.up.tcp.iter().flatten().map(|c| c.buffers).collect();
        sizes.sort_unstable();
        assert_eq!(sizes[0], 2 * TCP_BUFFER_MIN);
        assert!(sizes[1..].iter().all(|&b| b == 2 * TCP_BUFFER));
        let who = ContainerId { domain: 0, ip: C };
        assert_eq!(r.up.buffers[&who], sizes.iter().sum::<usize>());
        // A neighbour has its own budget.
        r.connect((Ipv4Addr::new(10, 9, 0, 3), 42000), (GW, port), 1);
        let n =
            r.up.tcp
                .iter()
                .flatten()
                .filter(|c| c.buffers == 2 * TCP_BUFFER);
        assert_eq!(n.count(), full + 1);
        // Ended connections give their share back.
        r.up.flush(r.poll.registry());
        assert!(r.up.buffers.is_empty());
    }

    #[test]
    fn replies_go_back_to_the_network_the_flow_came_from() {
        // Two networks with the same subnet: the address says nothing of the network.
        let mut r = Rig::new(true);
        if let Some(Some(n)) = r.nets.get_mut(1) {
            n.subnet = Ipv4Addr::new(10, 9, 0, 0);
            n.gateway = GW;
        }
        r.domain = 1;
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        r.send(&build_udp(C, 5001, GW, port, b"q").unwrap());
        let mut buf = [0u8; 8];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (_, from) = s.recv_from(&mut buf).unwrap();
        s.send_to(b"a", from).unwrap();
        // `until` asserts every packet goes to network 1.
        assert!(r.until(|p| Ipv4Packet::new_checked(p).is_ok_and(|ip| ip.protocol() == IpProtocol::Udp)).is_some());
        // TCP: a connection of network 1; the same addresses from network 0 cannot
        // touch it (its RST meets network 0's own stack; nothing goes into network 0).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tport = l.local_addr().unwrap().port();
        r.connect((C, 43000), (GW, tport), 1);
        r.up.from_container(
            r.poll.registry(),
            &r.nets,
            0,
            &tcp_packet((C, 43000), (GW, tport), 2, 0, TcpFlags::RST, &[]),
        );
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 1);
        // A refused SYN's RST goes back to where the SYN came from.
        r.send(&tcp_packet(
            (C, 43001),
            (Ipv4Addr::new(10, 9, 0, 9), 80),
            1,
            0,
            TcpFlags::SYN,
            &[],
        ));
        assert!(r.until(is_rst).is_some());
    }

    /// A listener on 127.0.0.1 with backlog 0 and its queue full: further SYNs to it
    /// are dropped, so connects to it stay pending. (listener, the queued client, port)
    fn full_listener() -> (OwnedFd, std::net::TcpStream, u16) {
        // SAFETY: plain socket calls on a descriptor this function owns; the address
        // structure is fully initialised and its size is passed.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let owned = OwnedFd::from_raw_fd(fd);
            let mut a: libc::sockaddr_in = std::mem::zeroed();
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(
                libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len),
                0
            );
            assert_eq!(libc::listen(fd, 0), 0);
            let mut got = len;
            libc::getsockname(fd, (&mut a as *mut libc::sockaddr_in).cast(), &mut got);
            let port = u16::from_be(a.sin_port);
            let first = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            (owned, first, port)
        }
    }

    #[test]
    fn a_host_connect_that_never_completes_is_refused_after_the_handshake_timeout() {
        let (_l, _first, port) = full_listener();
        let mut r = Rig::with_limits(true, short(500, 60_000));
        r.send_bare((C, 44000), (GW, port), 77, TcpFlags::SYN);
        let rst = r.until(is_rst).expect("no RST after the handshake timeout");
        let (src, dst, flags, _, ack, _) = tcp_of(&rst).unwrap();
        assert_eq!((src, dst, ack), (GW, C, 78));
        assert_eq!(flags, TcpFlags::RST | TcpFlags::ACK);
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 0);
        assert_eq!(r.up.stats.tcp_handshake_timeouts, 1);
        assert_eq!(r.up.quotas.fds(), 0);
    }

    #[test]
    fn a_pending_host_connect_leaves_the_uplink_asleep() {
        let (_l, _first, port) = full_listener();
        let mut r = Rig::with_limits(true, short(60_000, 60_000));
        r.send_bare((C, 44001), (GW, port), 77, TcpFlags::SYN);
        r.until(|_| false);
        assert_eq!(
            r.up.counts().0,
            1,
            "the connection is held, its connect pending"
        );
        // Its SYN-ACK held back, smoltcp asks for a poll at once after every poll: the
        // uplink must not wake the gateway thread for it on every round.
        let reg = r.poll.registry();
        for _ in 0..3 {
            let now = Instant::now();
            let next = r.up.tick(reg, now).expect("a next time");
            assert!(
                next >= now + POLL_AGAIN / 2,
                "next poll in {:?}",
                next.saturating_duration_since(now)
            );
        }
        timers_in_step(&r.up);
        // The container gives up: the connection ends at once, host socket and all.
        r.send_bare((C, 44001), (GW, port), 78, TcpFlags::RST);
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 0);
        assert_eq!(r.up.quotas.fds(), 0);
        assert!(r.up.stacks.is_empty() && r.up.timers.is_empty());
    }

    #[test]
    fn a_published_connection_the_container_never_answers_ends() {
        let mut r = Rig::with_limits(true, short(300, 60_000));
        let port = r.publish_tcp_80();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::SYN != 0))
            .expect("SYN towards the container");
        // The container stays silent: the connection ends on both sides.
        r.until(is_rst).expect("no RST after the handshake timeout");
        r.until(|_| false);
        assert_eq!(r.up.counts().0, 0);
        assert_eq!(r.up.stats.tcp_handshake_timeouts, 1);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        use std::io::Read as _;
        assert!(matches!(client.read(&mut b), Ok(0) | Err(_)));
    }
}
