//! TCP through the socket uplink: each container's connections terminated by its own
//! smoltcp stack, relayed to host sockets (or answered here: DNS over TCP).

use super::*;

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

/// (container address, container port, destination address, destination port)
pub(super) type Quad = (IpAddr, u16, IpAddr, u16);

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

pub(super) struct TcpConn {
    pub(super) handle: SocketHandle,
    pub(super) quad: Quad,
    /// The container (network and address) the connection belongs to.
    pub(super) who: ContainerId,
    pub(super) generation: u32,
    pub(super) born: Instant,
    /// Last time data moved either way.
    pub(super) last: Instant,
    /// Ended: removed once smoltcp has sent what the end needs (an RST, say).
    pub(super) reap: bool,
    /// Waiting in the uplink's touched list.
    pub(super) queued: bool,
    /// The container's SYN sequence number while its SYN-ACK is held back (the host
    /// connect pending): what an RST refusing it must acknowledge.
    pub(super) syn_seq: Option<u32>,
    /// That SYN's headers, kept from smoltcp until the host connect finishes (smoltcp
    /// answers it then); data in the SYN is left out (unacknowledged, it is sent again).
    pub(super) held_syn: Option<Vec<u8>>,
    /// The host socket (none: answered locally, or closed).
    pub(super) host: Option<TcpSock>,
    /// The host connect finished.
    pub(super) connected: bool,
    pub(super) readable: bool,
    pub(super) writable: bool,
    pub(super) host_eof: bool,
    /// FIN passed on to the host.
    pub(super) shut_host: bool,
    /// Published-port connection (the daemon accepted it on the host).
    pub(super) inbound: bool,
    /// Answered locally (DNS over TCP on the gateway), no host socket.
    pub(super) local: bool,
    /// Bytes of a local connection not yet a whole message.
    pub(super) local_in: Vec<u8>,
    /// The MSS the container announced, when smoltcp was shown a larger one (its
    /// segments are then super-frames cut at this size); 0 otherwise.
    pub(super) mss: u16,
    /// smoltcp buffer bytes (both directions), counted in the container's budget.
    pub(super) buffers: usize,
    /// The container's initial sequence number (its first SYN or SYN-ACK), the bytes
    /// taken out of smoltcp's receive buffer since, and the last acknowledgement it
    /// sent: what an RST is judged by (RFC 5961, `challenge`).
    pub(super) isn: Option<u32>,
    pub(super) taken: u32,
    pub(super) peer_ack: Option<u32>,
}

/// The most bytes a DNS-over-TCP message takes with its length prefix.
pub(super) const DNS_TCP_MAX: usize = 65537;

/// Where a container-side socket for `quad` listens: exactly its destination.
pub(super) fn listen_endpoint(quad: Quad) -> IpListenEndpoint {
    IpListenEndpoint {
        addr: Some(IpAddress::from(quad.2)),
        port: quad.3,
    }
}

/// A SYN's IP and TCP headers as a packet of their own (at most 120 bytes), its data
/// left out. smoltcp verifies no checksum it receives, so only the length is fixed.
pub(super) fn syn_headers(pkt: &[u8]) -> Option<Vec<u8>> {
    let l3 = family::L3::parse(pkt)?;
    let tcp_len = TcpPacket::new_checked(l3.payload).ok()?.header_len();
    let mut headers = pkt.get(..l3.header.len() + tcp_len)?.to_vec();
    family::set_length(&mut headers)?;
    Some(headers)
}

/// The smallest MSS a container may announce and still get super-frames (RFC 9293's
/// default); smoltcp builds no smaller segments.
pub(super) const MIN_MSS: u16 = 536;
/// The MSS smoltcp is shown for a container that gets super-frames: as large as its
/// device's MTU (65535) allows, so a segment and its headers fit in one 64 KB frame
/// (IPv4's: 20 bytes of IP header; IPv6 takes 20 more).
pub(super) const SUPER_MSS: u16 = 65535 - 40;
const SUPER_MSS6: u16 = SUPER_MSS - 20;

/// For a TCP packet smoltcp built toward a container in `domain` (without its checksum,
/// left to this): when it carries more than its connection's MSS, the segment size to
/// cut it into, its checksum field set to the pseudo-header sum (what segmentation
/// expects); else 0, its checksum computed in full.
pub(super) fn super_frame(
    tcp: &[Option<TcpConn>],
    by_quad: &HashMap<(u16, Quad), usize>,
    domain: u16,
    pkt: &mut [u8],
) -> u16 {
    let Some(l3) = family::L3::parse(pkt).filter(|l3| l3.proto == family::TCP) else {
        return 0;
    };
    let (src, dst, hl) = (l3.src, l3.dst, l3.header.len());
    let end = hl + l3.payload.len();
    let Some(Ok(mut t)) = pkt.get_mut(hl..end).map(TcpPacket::new_checked) else {
        return 0;
    };
    let payload = t.payload().len();
    let quad = (dst, t.dst_port(), src, t.src_port());
    let mss = by_quad
        .get(&(domain, quad))
        .and_then(|&i| tcp.get(i))
        .and_then(|c| c.as_ref())
        .map_or(0, |c| c.mss);
    if payload <= usize::from(MIN_MSS) || mss == 0 || payload <= usize::from(mss) {
        family::fill_tcp_checksum(&mut t, src, dst);
        return 0;
    }
    let len = t.as_bytes().len() as u32;
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, family::TCP, len),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            crate::wire::ipv6::pseudo_header_sum(&s, &d, family::TCP, len)
        }
        _ => return 0,
    };
    t.set_checksum(checksum::fold(pseudo));
    mss
}

/// A DNS-over-TCP connection on a gateway: whole length-prefixed messages go to the
/// DNS server; closed by the container, closed here too. True when anything moved.
pub(super) fn pump_local(
    c: &mut TcpConn,
    sock: &mut smol_tcp::Socket<'static>,
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
pub(super) fn pump_host(
    io: &mut dyn HostSockets,
    c: &mut TcpConn,
    sock: &mut smol_tcp::Socket<'static>,
) -> bool {
    let Some(h) = c.host else {
        return false;
    };
    let mut moved = false;
    // Container -> host: write straight from smoltcp's receive buffer.
    while c.writable && sock.can_recv() {
        let r = sock.recv(|data| match io.tcp_write(h, data) {
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
        let r = sock.send(|buf| match io.tcp_read(h, buf) {
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
        smol_tcp::State::CloseWait
            | smol_tcp::State::LastAck
            | smol_tcp::State::Closing
            | smol_tcp::State::TimeWait
    );
    if fin_in && !sock.can_recv() && !c.shut_host {
        io.tcp_shutdown(h);
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
pub(super) fn tcp_rst(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    ack: u32,
) -> Option<Vec<u8>> {
    let mut seg = [0u8; 20];
    {
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_src_port(sport);
        t.set_dst_port(dport);
        t.set_seq(0);
        t.set_ack(ack);
        t.set_header_len(20);
        t.set_flags(crate::wire::tcp::TcpFlags::RST | crate::wire::tcp::TcpFlags::ACK);
        family::fill_tcp_checksum(&mut t, src, dst);
    }
    family::build(src, dst, family::TCP, &seg)
}
impl SocketUplink {
    /// A TCP segment from a container: a new connection is opened (on the host, or
    /// answered here for DNS on the gateway); every segment goes into the sender's
    /// own stack.
    pub(super) fn tcp_from_container(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        domain: u16,
        seg: Segment<'_>,
    ) {
        let Some(l3) = family::L3::parse(seg.bytes()) else {
            return;
        };
        let (src, dst) = (l3.src, l3.dst);
        let total = l3.header.len() + l3.payload.len();
        let Ok(t) = TcpPacket::new_checked(l3.payload) else {
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
        let conn = match self.tcp_by_quad.get(&(domain, quad)).copied() {
            None if opening => match self.open_for(io, nets, domain, &l3, seq) {
                Some(i) => Some(i),
                None => return,
            },
            known => known,
        };
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
            && self.held_back(io, i, &pkt, opening, rst)
        {
            give_back(&mut self.pool, pkt.buf);
            return;
        }
        if rst
            && let Some(i) = conn
            && !self.challenge_rst(io, i, seq, &mut pkt)
        {
            give_back(&mut self.pool, pkt.buf);
            return;
        }
        self.stack(who).dev.rx.push_back(pkt);
        self.active.insert(who);
        if !self.batching {
            self.poll(io);
        }
    }

    /// A container's SYN for a connection it does not have: the connection is opened
    /// (on the host, or answered here for DNS on the gateway); its slot, else None with
    /// the SYN answered (an RST, or unreachable where the host has no route).
    fn open_for(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        domain: u16,
        syn: &family::L3<'_>,
        seq: u32,
    ) -> Option<usize> {
        let t = TcpPacket::new_checked(syn.payload).ok()?;
        let (sport, dport) = (t.src_port(), t.dst_port());
        let quad = (syn.src, sport, syn.dst, dport);
        let dns_here = nets
            .get(usize::from(domain))
            .and_then(|n| n.as_ref())
            .is_some_and(|n| n.dns && n.is_gateway(syn.dst) && dport == 53);
        let unreachable = if dns_here {
            self.open_local(quad, domain);
            None
        } else {
            self.open_tcp(io, nets, domain, quad, seq)
        };
        let conn = self.tcp_by_quad.get(&(domain, quad)).copied();
        match (conn, unreachable) {
            (Some(i), _) => return Some(i),
            (None, Some(why)) => self.unreachable_to(domain, syn, why),
            (None, None) => self.refuse_syn(domain, quad, seq),
        }
        None
    }

    /// A SYN refused (a quota, no listener): the RST is built here, not by smoltcp,
    /// which would look at every socket of the container to find none.
    pub(super) fn refuse_syn(&mut self, domain: u16, quad: Quad, seq: u32) {
        let (src, sport, dst, dport) = quad;
        if let Some(p) = tcp_rst(dst, dport, src, sport, seq.wrapping_add(1)) {
            self.out.push(OutPacket::plain(domain, p));
        }
    }

    /// Remembers what an RST on connection `i` is judged by: the container's first SYN
    /// (or SYN-ACK), its latest acknowledgement.
    pub(super) fn note_segment(&mut self, i: usize, syn_seq: Option<u32>, ack: Option<u32>) {
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
    pub(super) fn challenge_rst(
        &mut self,
        io: &mut dyn HostSockets,
        i: usize,
        seq: u32,
        pkt: &mut RxPacket,
    ) -> bool {
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
            self.poll(io);
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
        let sock = st.sockets.get::<smol_tcp::Socket>(handle);
        let fin = matches!(
            sock.state(),
            smol_tcp::State::CloseWait
                | smol_tcp::State::LastAck
                | smol_tcp::State::Closing
                | smol_tcp::State::TimeWait
        );
        let synced = fin
            || matches!(
                sock.state(),
                smol_tcp::State::Established
                    | smol_tcp::State::FinWait1
                    | smol_tcp::State::FinWait2
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
                    let hl = family::L3::parse(p)?.header.len();
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
    pub(super) fn held_back(
        &mut self,
        io: &mut dyn HostSockets,
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
            self.abort_tcp(io, i);
        } else if opening && c.held_syn.is_none() {
            c.held_syn = pkt.buf.get(pkt.start..pkt.end).and_then(syn_headers);
        }
        true
    }

    /// The first `len` bytes of `seg` as a packet for smoltcp's queue: a frame's buffer
    /// is taken as it is (and a spare one left in its place), a borrowed one copied.
    pub(super) fn rx_packet(&mut self, seg: Segment<'_>, len: usize) -> RxPacket {
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
    pub(super) fn widen_mss(&mut self, i: usize, pkt: &mut [u8]) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        let Some(l3) = family::L3::parse(pkt) else {
            return;
        };
        let (hl, end) = (l3.header.len(), l3.header.len() + l3.payload.len());
        let widest = if l3.src.is_ipv4() {
            SUPER_MSS
        } else {
            SUPER_MSS6
        };
        let Some(Ok(mut t)) = pkt.get_mut(hl..end).map(TcpPacket::new_checked) else {
            return;
        };
        match t.mss_option() {
            Some(m) if m >= MIN_MSS && t.set_mss_option(widest) => c.mss = m,
            _ => c.mss = 0,
        }
    }

    /// A container-side socket, not listening yet.
    pub(super) fn container_socket(rx: usize, tx: usize) -> smol_tcp::Socket<'static> {
        let mut sock = smol_tcp::Socket::new(
            smol_tcp::SocketBuffer::new(vec![0u8; rx]),
            smol_tcp::SocketBuffer::new(vec![0u8; tx]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_keep_alive(Some(CONTAINER_KEEPALIVE.into()));
        sock.set_timeout(Some(CONTAINER_ACK_TIMEOUT.into()));
        sock
    }

    /// A container-side socket listening for exactly `quad`'s destination.
    pub(super) fn listening_socket(
        quad: Quad,
        rx: usize,
        tx: usize,
    ) -> Option<smol_tcp::Socket<'static>> {
        let mut sock = Self::container_socket(rx, tx);
        sock.listen(listen_endpoint(quad)).ok()?;
        Some(sock)
    }

    pub(super) fn open_tcp(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        domain: u16,
        quad: Quad,
        syn_seq: u32,
    ) -> Option<family::Unreachable> {
        let host = io.host_address(Instant::now());
        let Some(to) = target(nets, domain, (quad.2, quad.3), host) else {
            // No listener: the SYN is answered with an RST.
            self.stats.tcp_refused += 1;
            return None;
        };
        let who = self.tenant_of(domain, quad.0);
        if !self.admit(who, FlowKind::Tcp, true) {
            self.stats.tcp_refused += 1;
            return None;
        }
        let i = free_slot(&self.tcp);
        let host = TcpSock(i);
        if let Err(e) = io.tcp_connect(host, to) {
            self.quotas.release(who, FlowKind::Tcp, true);
            if out_of_fds(&e) {
                self.refuse(who, Refusal::FdLimit);
            }
            self.stats.tcp_refused += 1;
            return family::Unreachable::of(&e);
        }
        let size = self.buffer_size(who);
        // It listens once the host connect finishes (`answer_syn`): a listening socket
        // takes any SYN to its address and port, another connection's sent again included.
        let sock = Self::container_socket(size, size);
        self.insert_tcp(i, sock, (quad, who), Some(host), false);
        if let Some(Some(c)) = self.tcp.get_mut(i) {
            c.syn_seq = Some(syn_seq);
        }
        self.stats.tcp_open += 1;
        None
    }

    /// Puts a connection in free slot `i` (its host socket's id, if it has one).
    pub(super) fn insert_tcp(
        &mut self,
        i: usize,
        sock: smol_tcp::Socket<'static>,
        (quad, who): (Quad, ContainerId),
        host: Option<TcpSock>,
        inbound: bool,
    ) {
        debug_assert!(self.tcp.get(i).is_none_or(Option::is_none));
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
    }

    /// A connection answered by the gateway itself (DNS over TCP).
    pub(super) fn open_local(&mut self, quad: Quad, domain: u16) {
        let who = self.tenant_of(domain, quad.0);
        if !self.admit(who, FlowKind::Tcp, false) {
            self.stats.tcp_refused += 1;
            return;
        }
        let Some(sock) = Self::listening_socket(quad, 70_000, 140_000) else {
            self.quotas.release(who, FlowKind::Tcp, false);
            return;
        };
        let i = free_slot(&self.tcp);
        self.insert_tcp(i, sock, (quad, who), None, false);
    }

    /// Answers the SYN of connection `i` with an RST while its SYN-ACK is still held
    /// back (smoltcp sends nothing for a socket that never answered).
    pub(super) fn refuse_pending(&mut self, i: usize) {
        self.fail_pending(i, None);
    }

    /// As [`SocketUplink::refuse_pending`], for a host connect that failed with
    /// `why`: a destination the host has no route to is answered as a router would
    /// (ICMP or ICMPv6 unreachable, quoting the SYN held back), anything else with an
    /// RST.
    pub(super) fn fail_pending(&mut self, i: usize, why: Option<family::Unreachable>) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        let Some(seq) = c.syn_seq.take() else {
            return;
        };
        let (csrc, cport, dst, dport) = c.quad;
        let syn = c.held_syn.as_deref().and_then(family::L3::parse);
        let p = match (why, syn) {
            (Some(why), Some(syn)) => {
                let quoted = c.held_syn.as_deref().unwrap_or_default();
                let quoted = quoted.get(..syn.header.len() + 8).unwrap_or(quoted);
                family::unreachable(dst, csrc, why, quoted)
            }
            _ => tcp_rst(dst, dport, csrc, cport, seq.wrapping_add(1)),
        };
        if let Some(p) = p {
            self.out.push(OutPacket::plain(c.who.domain, p));
        }
    }

    /// Ends connection `i` now: the container gets an RST, the host socket is closed.
    pub(super) fn abort_tcp(&mut self, io: &mut dyn HostSockets, i: usize) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        if let Some(st) = self.stacks.get_mut(&c.who) {
            st.sockets.get_mut::<smol_tcp::Socket>(c.handle).abort();
        }
        if let Some(h) = c.host.take() {
            io.tcp_close(h);
        }
        c.reap = true;
        self.touch(i);
    }

    /// Removes connection `i` entirely: smoltcp socket, host socket, maps, quota.
    pub(super) fn remove_tcp(&mut self, io: &mut dyn HostSockets, i: usize) {
        let Some(mut c) = self.tcp.get_mut(i).and_then(|s| s.take()) else {
            return;
        };
        if let Some(h) = c.host.take() {
            io.tcp_close(h);
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
    pub(super) fn buffer_size(&self, who: ContainerId) -> usize {
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

    /// [`SocketUplink::dns_reply`], with the host's sockets at hand.
    pub(super) fn dns_reply_with(&mut self, io: &mut dyn HostSockets, conn: TcpConnId, msg: &[u8]) {
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
        let sock = st.sockets.get_mut::<smol_tcp::Socket>(handle);
        if sock.send_capacity() - sock.send_queue() >= msg.len() + 2 {
            let _ = sock.send_slice(&len.to_be_bytes());
            let _ = sock.send_slice(msg);
        }
        self.poll(io);
    }

    /// A host TCP connection is ready: its connect finished (the container gets its
    /// SYN-ACK, or an RST), or it can be read or written.
    pub(super) fn tcp_ready(
        &mut self,
        io: &mut dyn HostSockets,
        i: usize,
        (readable, writable, error): (bool, bool, bool),
    ) {
        let (mut answer, mut failed) = (false, None);
        if let Some(Some(c)) = self.tcp.get_mut(i) {
            c.readable |= readable || error;
            c.writable |= writable;
            if !c.connected && (writable || error) {
                match c.host.and_then(|h| io.tcp_connect_outcome(h)) {
                    Some(Ok(())) => {
                        c.connected = true;
                        c.syn_seq = None;
                        answer = true;
                    }
                    Some(Err(e)) => failed = Some(family::Unreachable::of(&e)),
                    None => failed = Some(None),
                }
            }
        }
        if answer {
            self.answer_syn(i);
        }
        if let Some(why) = failed {
            // Refused or unreachable on the host: the container hears it at once.
            self.fail_pending(i, why);
            self.abort_tcp(io, i);
        }
        self.touch(i);
        self.poll(io);
    }

    /// Connection `i`'s host connect finished: its socket listens and smoltcp is handed
    /// the SYN held back meanwhile, which it answers.
    pub(super) fn answer_syn(&mut self, i: usize) {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return;
        };
        let (who, handle, quad, syn) = (c.who, c.handle, c.quad, c.held_syn.take());
        let st = self.stack(who);
        let _ = st
            .sockets
            .get_mut::<smol_tcp::Socket>(handle)
            .listen(listen_endpoint(quad));
        if let Some(buf) = syn {
            let end = buf.len();
            st.dev.rx.push_back(RxPacket { buf, start: 0, end });
        }
        self.active.insert(who);
    }

    /// Marks connection `i` for the next pump.
    pub(super) fn touch(&mut self, i: usize) {
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
    pub(super) fn pump(&mut self, io: &mut dyn HostSockets, all: bool) -> bool {
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
            if self.pump_one(io, i) {
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
    pub(super) fn pump_one(&mut self, io: &mut dyn HostSockets, i: usize) -> bool {
        let Some(Some(c)) = self.tcp.get_mut(i) else {
            return false;
        };
        if c.reap {
            // smoltcp has had its poll to send the RST or last ACK: done.
            self.remove_tcp(io, i);
            return false;
        }
        let Some(st) = self.stacks.get_mut(&c.who) else {
            c.reap = true;
            return true;
        };
        let sock = st.sockets.get_mut::<smol_tcp::Socket>(c.handle);
        let mut moved = false;
        if c.local {
            moved |= pump_local(c, sock, i, &mut self.dns_requests);
        }
        if c.connected && c.host.is_some() {
            moved |= pump_host(io, c, sock);
        }
        let st = sock.state();
        // Every connection is made on the container's SYN (smoltcp has processed it
        // by now, unless it is held back, its socket closed, while the host connect is
        // pending) or by smoltcp's own connect: back in Listen, the container reset the
        // handshake (a SYN scan does), so nothing will come of it.
        let pending = c.syn_seq.is_some();
        let gone = (!pending && matches!(st, smol_tcp::State::Closed | smol_tcp::State::Listen))
            || st == smol_tcp::State::TimeWait
            || (c.host.is_none()
                && !c.local
                && !matches!(st, smol_tcp::State::Listen | smol_tcp::State::SynReceived)
                && !c.inbound);
        if gone {
            // Ended on one side or the other: close the host socket now, remove the
            // rest after smoltcp's next poll (which sends what is owed).
            if let Some(h) = c.host.take() {
                io.tcp_close(h);
            }
            c.reap = true;
            moved = true;
        }
        moved
    }

    /// Ends connections still in their handshake after the handshake timeout (a SYN
    /// whose host connect or whose container ACK never came, a published connection
    /// the container never answered), and established ones idle past the idle timeout.
    pub(super) fn expire_tcp(&mut self, io: &mut dyn HostSockets, now: Instant) {
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
                smol_tcp::State::Listen | smol_tcp::State::SynSent | smol_tcp::State::SynReceived
            ) || !c.connected;
            if opening && now.duration_since(c.born) > handshake {
                self.stats.tcp_handshake_timeouts += 1;
                self.refuse_pending(i);
                self.abort_tcp(io, i);
            } else if !opening && now.duration_since(c.last) > idle {
                self.stats.tcp_idle_timeouts += 1;
                self.abort_tcp(io, i);
            }
        }
        for i in 0..self.splices.len() {
            let Some(Some(c)) = self.splices.get(i) else {
                continue;
            };
            if !io.splice_connected(SpliceId(i))
                && now.duration_since(c.born) > splice::CONNECT_TIMEOUT
            {
                self.splice_fallback(io, i);
            } else if !io.splice_connected(SpliceId(i)) && now.duration_since(c.born) > handshake {
                self.stats.tcp_handshake_timeouts += 1;
                self.end_splice(io, i);
            } else if now.duration_since(c.last) > idle {
                self.stats.tcp_idle_timeouts += 1;
                self.end_splice(io, i);
            }
        }
    }

    /// The addresses of a live TCP connection's container side, for tests.
    pub fn tcp_quads(&self) -> Vec<Quad> {
        self.tcp_by_quad.keys().map(|k| k.1).collect()
    }
}
