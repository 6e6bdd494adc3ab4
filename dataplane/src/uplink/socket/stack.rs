//! One container's userspace TCP stack: smoltcp over a queue of packets, polled by
//! the uplink, and the packets it builds toward containers.

use super::*;

/// How soon a stack that wants a poll at once right after one is polled again (see
/// [`poll_delay`]).
pub(super) const POLL_AGAIN: Duration = Duration::from_millis(10);

pub(super) struct QueueDevice {
    pub(super) rx: std::collections::VecDeque<RxPacket>,
    /// Packets smoltcp built: each at [`LINK_HEADROOM`] of its buffer, up to the end
    /// given.
    pub(super) tx: Vec<(Vec<u8>, usize)>,
    /// Spare buffers lent by the uplink for the length of a poll: transmitted packets
    /// are built in them.
    pub(super) pool: Vec<Vec<u8>>,
    /// Buffers of received packets smoltcp has read, for the uplink to take back.
    pub(super) done: Vec<Vec<u8>>,
    /// smoltcp leaves TCP checksums to the uplink (super-frames: most need only the
    /// pseudo-header sum).
    pub(super) tcp_csum_here: bool,
}

/// The most spare packet buffers the uplink keeps (a received frame's buffer goes to
/// smoltcp as it is, and smoltcp's packets are built in recycled ones).
pub(super) const POOL_BUFFERS: usize = 16;

/// Keeps `buf` for reuse while the pool has room.
pub(super) fn give_back(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
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
    pub(super) fn plain(domain: u16, buf: Vec<u8>) -> OutPacket {
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
    pub(super) fn packet_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.start..self.end).unwrap_or(&mut [])
    }
}

/// A container's TCP segment on its way into smoltcp's queue.
pub(super) enum Segment<'a> {
    /// Bytes to copy.
    Borrowed(&'a [u8]),
    /// A frame's buffer and where its IPv4 packet lies in it: taken whole.
    Frame(&'a mut Vec<u8>, std::ops::Range<usize>),
}

impl Segment<'_> {
    /// The IPv4 packet.
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Segment::Borrowed(p) => p,
            Segment::Frame(f, ip) => f.get(ip.clone()).unwrap_or(&[]),
        }
    }
}

/// A packet queued for smoltcp: the IPv4 packet is `buf[start..end]` (a frame's buffer
/// taken whole, its Ethernet header left in front).
pub(super) struct RxPacket {
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) struct QRx<'a> {
    pub(super) pkt: RxPacket,
    pub(super) done: &'a mut Vec<Vec<u8>>,
}
pub(super) struct QTx<'a> {
    pub(super) tx: &'a mut Vec<(Vec<u8>, usize)>,
    pub(super) pool: &'a mut Vec<Vec<u8>>,
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

/// One container's userspace TCP: its own smoltcp interface and sockets, so what a
/// container holds costs only that container (smoltcp looks at every socket of an
/// interface on each poll), and networks never share a connection table.
pub(super) struct Stack {
    pub(super) iface: Interface,
    pub(super) dev: QueueDevice,
    pub(super) sockets: SocketSet<'static>,
    /// When smoltcp next wants a poll (a timer), as of the last one.
    pub(super) due: Option<Instant>,
}

impl Stack {
    pub(super) fn new(epoch: Instant, super_frames: bool) -> Stack {
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
        let (own4, own6) = (Ipv4Address::new(169, 254, 0, 1), STACK_V6);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(own4), 32));
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(own6), 128));
        });
        // Any destination of either family is "on a route" (Medium::Ip needs no
        // neighbour).
        let routes = iface.routes_mut();
        let _ = routes.add_default_ipv4_route(own4);
        let _ = routes.add_default_ipv6_route(own6);
        Stack {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            due: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.sockets.iter().next().is_none() && self.dev.rx.is_empty() && self.dev.tx.is_empty()
    }

    pub(super) fn state(&self, h: SocketHandle) -> smol_tcp::State {
        self.sockets.get::<smol_tcp::Socket>(h).state()
    }
}

pub(super) fn smol_now(epoch: Instant) -> smoltcp::time::Instant {
    smol_at(epoch, Instant::now())
}

/// `at` on smoltcp's clock, which starts at `epoch`.
pub(super) fn smol_at(epoch: Instant, at: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(at.saturating_duration_since(epoch).as_micros() as i64)
}

/// How long after a poll a stack is polled again for its timers, from smoltcp's `delay`.
/// smoltcp asks for another poll at once, after one that did all it could, only for
/// what no poll can move (a socket told to hold its SYN-ACK back asked for it forever;
/// none is made now, the SYN itself is held): such a stack is polled again after
/// [`POLL_AGAIN`]. What can move it (a packet, a host event) polls it at once anyway.
pub(super) fn poll_delay(delay: smoltcp::time::Duration) -> Duration {
    match delay.total_micros() {
        0 => POLL_AGAIN,
        us => Duration::from_micros(us),
    }
}

/// Sets when `st` (the stack of `who`) next wants a poll, keeping `timers` in step.
pub(super) fn set_due(
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

/// The IPv6 address a stack owns itself (a link-local one: no packet of a container
/// is from or to it); its IPv4 one is 169.254.0.1.
const STACK_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
impl SocketUplink {
    /// `who`'s stack, created on first use.
    pub(super) fn stack(&mut self, who: ContainerId) -> &mut Stack {
        let (epoch, sf) = (self.epoch, self.super_frames);
        self.stacks
            .entry(who)
            .or_insert_with(|| Stack::new(epoch, sf))
    }

    /// Runs smoltcp and moves data between it and the host sockets of the connections
    /// something happened to, until nothing moves.
    pub(super) fn poll(&mut self, io: &mut dyn HostSockets) {
        self.poll_with(io, false);
    }

    /// As [`SocketUplink::poll`]; `all` looks at every connection first (what smoltcp's
    /// timers did: retransmissions given up, keep-alives unanswered).
    pub(super) fn poll_with(&mut self, io: &mut dyn HostSockets, all: bool) {
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
            let moved = self.pump(io, all && round == 0);
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
}
