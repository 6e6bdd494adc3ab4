//! The socket uplink's I/O: every host socket it holds (published ports' splice pools
//! included), every registration of them on the poll, and every system call on them
//! (the host's main address looked up too). The protocol modules (the core) hold flow
//! state and the ids of their sockets only, and ask for I/O through [`HostSockets`]:
//! implemented here by [`HostIo`] with real sockets, and by a fake in unit tests.
//!
//! A socket's id is the slot of the flow (or published port, or spliced connection)
//! it belongs to in the core's table, so a token names the flow without a lookup;
//! each kind of socket has its own token range ([`token`]).
//!
//! TCP data keeps its single copy: the core lends [`HostSockets::tcp_read`] smoltcp's
//! transmit ring and [`HostSockets::tcp_write`] its receive ring.

mod listen;
mod splice;
pub mod token;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};

pub use self::listen::PublishedSocket;
use self::splice::Splice;
use self::token::UplinkSource;
use super::{KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, SocketUplink};
use crate::uplink::host::HostAddress;
use crate::uplink::splice::{NetnsRef, Pumped, Resolved, SocketPool, SpliceError, set_int};

/// A host TCP connection: the slot of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSock(pub usize);
/// A UDP flow's connected host socket: the slot of its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSock(pub usize);
/// An echo flow's ping socket: the slot of its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingSock(pub usize);
/// A published port's listening (TCP) or bound (UDP) socket: the port's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSock(pub usize);
/// Both sockets of a spliced connection: its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceId(pub usize);

/// What the core asks of the host's sockets. Every call is non-blocking; a socket
/// that is not there (closed, never opened) answers `NotFound`.
pub trait HostSockets {
    /// The host's main address, which GATEWAY:PORT reaches without `--host-loopback`
    /// (looked up at most once a second).
    fn host_address(&mut self, now: Instant) -> Option<Ipv4Addr>;

    /// Opens a host TCP connection to `to` (keep-alive on), registered for both
    /// directions; the connect finishes later ([`HostSockets::tcp_connect_outcome`]).
    fn tcp_connect(&mut self, id: TcpSock, to: SocketAddr) -> io::Result<()>;
    /// How the connect went: None while there is no socket, else Ok once connected.
    fn tcp_connect_outcome(&mut self, id: TcpSock) -> Option<io::Result<()>>;
    fn tcp_read(&mut self, id: TcpSock, buf: &mut [u8]) -> io::Result<usize>;
    fn tcp_write(&mut self, id: TcpSock, data: &[u8]) -> io::Result<usize>;
    /// Passes the end of the container's data on (`shutdown(SHUT_WR)`).
    fn tcp_shutdown(&mut self, id: TcpSock);
    /// Registers a connection accepted (or taken back from a splice) at `id`.
    fn tcp_adopt(&mut self, id: TcpSock) -> io::Result<()>;
    fn tcp_close(&mut self, id: TcpSock);

    /// Opens a UDP socket of `to`'s family connected to `to`, registered for reading.
    fn udp_open(&mut self, id: UdpSock, to: SocketAddr) -> io::Result<()>;
    fn udp_send(&mut self, id: UdpSock, data: &[u8]) -> io::Result<usize>;
    fn udp_recv(&mut self, id: UdpSock, buf: &mut [u8]) -> io::Result<usize>;
    fn udp_close(&mut self, id: UdpSock);

    /// Opens a ping socket of `family`'s family, registered for reading.
    fn ping_open(&mut self, id: PingSock, family: IpAddr) -> io::Result<()>;
    fn ping_send(&mut self, id: PingSock, echo: &[u8], to: IpAddr) -> io::Result<usize>;
    fn ping_recv(&mut self, id: PingSock, buf: &mut [u8]) -> io::Result<usize>;
    fn ping_close(&mut self, id: PingSock);

    /// Serves a published port's socket (registered for reading); where it is bound.
    fn listen(&mut self, id: ListenSock, sock: PublishedSocket) -> io::Result<SocketAddr>;
    fn unlisten(&mut self, id: ListenSock);
    /// Accepts a client of a TCP port into `into` (keep-alive on, not registered:
    /// adopted, spliced or closed next); the client's address.
    fn accept(&mut self, id: ListenSock, into: TcpSock) -> io::Result<SocketAddr>;
    fn recv_from(&mut self, id: ListenSock, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    fn send_to(&mut self, id: ListenSock, data: &[u8], to: SocketAddr) -> io::Result<usize>;

    /// Starts published port `id`'s pool of sockets inside the container's namespace
    /// `netns` (its maker installs the return rule), for `ends`: the container's end
    /// and the gateway it sees (none: nothing to splice to).
    fn splice_start(
        &mut self,
        id: ListenSock,
        netns: NetnsRef,
        ends: Option<(SocketAddr, IpAddr)>,
    ) -> PoolStart;
    /// Ends port `id`'s pool and has its return rule removed (the port takes frames).
    fn splice_abandon(&mut self, id: ListenSock);
    /// Splices the accepted client at `host` into a socket of port `pool`'s pool,
    /// bound to `from` and connecting to `to`. On failure the client stays at `host`
    /// (for the frame path, or to be closed).
    fn splice(
        &mut self,
        id: SpliceId,
        host: TcpSock,
        pool: ListenSock,
        ends: (SocketAddr, SocketAddr),
    ) -> Result<(), SpliceError>;
    fn splice_pump(&mut self, id: SpliceId) -> io::Result<Pumped>;
    fn splice_connected(&self, id: SpliceId) -> bool;
    /// Undoes a splice whose inner connect failed: the client goes back to `into`
    /// (not registered), the inner socket is closed; why it failed, if known.
    fn unsplice(&mut self, id: SpliceId, into: TcpSock) -> Option<io::Error>;
    fn splice_close(&mut self, id: SpliceId);
}

/// How starting a published port's splice pool went.
pub enum PoolStart {
    Started,
    /// The namespace's file is not there yet: kept for the next client.
    NotYet(NetnsRef),
    Failed(SpliceError),
}

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The uplink's host sockets, each in the slab of its kind at its id.
#[derive(Default)]
pub struct Sockets {
    tcp: Vec<Option<TcpStream>>,
    udp: Vec<Option<UdpSocket>>,
    ping: Vec<Option<UdpSocket>>,
    listen: Vec<Option<Listener>>,
    splice: Vec<Option<Splice>>,
    /// Published ports' splice pools, by the port's id.
    pools: Vec<Option<SocketPool>>,
    host: HostAddress,
}

impl Sockets {
    /// The host's main address ([`HostSockets::host_address`]).
    pub fn host_address(&mut self, now: Instant) -> Option<Ipv4Addr> {
        self.host.get(now)
    }

    /// Drops the free slots at each slab's end and the room past them.
    pub fn shed(&mut self) {
        shrink(&mut self.tcp);
        shrink(&mut self.udp);
        shrink(&mut self.ping);
        shrink(&mut self.listen);
        shrink(&mut self.splice);
        shrink(&mut self.pools);
    }
}

fn shrink<T>(slab: &mut Vec<Option<T>>) {
    while slab.last().is_some_and(Option::is_none) {
        slab.pop();
    }
    slab.shrink_to_fit();
}

/// Puts `x` at `i`, growing the slab; what was there is closed.
fn put<T>(slab: &mut Vec<Option<T>>, i: usize, x: T) {
    if slab.len() <= i {
        slab.resize_with(i + 1, || None);
    }
    if let Some(s) = slab.get_mut(i) {
        *s = Some(x);
    }
}

fn get<T>(slab: &mut [Option<T>], i: usize) -> io::Result<&mut T> {
    slab.get_mut(i)
        .and_then(Option::as_mut)
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

fn take<T>(slab: &mut [Option<T>], i: usize) -> Option<T> {
    slab.get_mut(i).and_then(Option::take)
}

/// Turns keep-alive on for a host TCP socket so a dead peer ends the connection.
fn keepalive(fd: RawFd) {
    let set = |level, opt, v: libc::c_int| {
        let _ = set_int(fd, level, opt, v);
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

/// A ping socket of `ip`'s family, if the host lets this process have one
/// (`net.ipv4.ping_group_range` covers both).
fn ping_socket(ip: IpAddr) -> io::Result<UdpSocket> {
    let (domain, proto) = match ip {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    let kind = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, kind, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(UdpSocket::from_std(std::net::UdpSocket::from(owned)))
}

/// A host UDP socket of `to`'s family connected to it.
fn udp_socket(to: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::new(super::family::unspecified(to.ip()), 0))?;
    sock.connect(to)?;
    Ok(sock)
}

/// The uplink's sockets on the poll they are registered with: [`HostSockets`] for real.
pub struct HostIo<'a> {
    reg: &'a Registry,
    socks: &'a mut Sockets,
}

impl HostIo<'_> {
    /// Registers `s` under `src`'s token and files it at `i` of `slab`.
    fn file<S: mio::event::Source>(
        reg: &Registry,
        slab: &mut Vec<Option<S>>,
        i: usize,
        mut s: S,
        (src, interest): (UplinkSource, Interest),
    ) -> io::Result<()> {
        reg.register(&mut s, src.token(), interest)?;
        put(slab, i, s);
        Ok(())
    }

    fn close<S: mio::event::Source>(reg: &Registry, slab: &mut [Option<S>], i: usize) {
        if let Some(mut s) = take(slab, i) {
            let _ = reg.deregister(&mut s);
        }
    }
}

const BOTH: Interest = Interest::READABLE.add(Interest::WRITABLE);

impl HostSockets for HostIo<'_> {
    fn host_address(&mut self, now: Instant) -> Option<Ipv4Addr> {
        self.socks.host_address(now)
    }

    fn tcp_connect(&mut self, id: TcpSock, to: SocketAddr) -> io::Result<()> {
        let s = TcpStream::connect(to)?;
        keepalive(s.as_raw_fd());
        let src = (UplinkSource::Tcp(id.0), BOTH);
        Self::file(self.reg, &mut self.socks.tcp, id.0, s, src)
    }

    fn tcp_connect_outcome(&mut self, id: TcpSock) -> Option<io::Result<()>> {
        let h = get(&mut self.socks.tcp, id.0).ok()?;
        Some(match h.take_error() {
            Ok(None) => h.peer_addr().map(|_| ()),
            Ok(Some(e)) | Err(e) => Err(e),
        })
    }

    fn tcp_read(&mut self, id: TcpSock, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(get(&mut self.socks.tcp, id.0)?, buf)
    }

    fn tcp_write(&mut self, id: TcpSock, data: &[u8]) -> io::Result<usize> {
        io::Write::write(get(&mut self.socks.tcp, id.0)?, data)
    }

    fn tcp_shutdown(&mut self, id: TcpSock) {
        if let Ok(h) = get(&mut self.socks.tcp, id.0) {
            let _ = h.shutdown(std::net::Shutdown::Write);
        }
    }

    fn tcp_adopt(&mut self, id: TcpSock) -> io::Result<()> {
        let h = get(&mut self.socks.tcp, id.0)?;
        self.reg.register(h, UplinkSource::Tcp(id.0).token(), BOTH)
    }

    fn tcp_close(&mut self, id: TcpSock) {
        Self::close(self.reg, &mut self.socks.tcp, id.0);
    }

    fn udp_open(&mut self, id: UdpSock, to: SocketAddr) -> io::Result<()> {
        let s = udp_socket(to)?;
        let src = (UplinkSource::Udp(id.0), Interest::READABLE);
        Self::file(self.reg, &mut self.socks.udp, id.0, s, src)
    }

    fn udp_send(&mut self, id: UdpSock, data: &[u8]) -> io::Result<usize> {
        get(&mut self.socks.udp, id.0)?.send(data)
    }

    fn udp_recv(&mut self, id: UdpSock, buf: &mut [u8]) -> io::Result<usize> {
        get(&mut self.socks.udp, id.0)?.recv(buf)
    }

    fn udp_close(&mut self, id: UdpSock) {
        Self::close(self.reg, &mut self.socks.udp, id.0);
    }

    fn ping_open(&mut self, id: PingSock, family: IpAddr) -> io::Result<()> {
        let s = ping_socket(family)?;
        let src = (UplinkSource::Ping(id.0), Interest::READABLE);
        Self::file(self.reg, &mut self.socks.ping, id.0, s, src)
    }

    fn ping_send(&mut self, id: PingSock, echo: &[u8], to: IpAddr) -> io::Result<usize> {
        get(&mut self.socks.ping, id.0)?.send_to(echo, SocketAddr::new(to, 0))
    }

    fn ping_recv(&mut self, id: PingSock, buf: &mut [u8]) -> io::Result<usize> {
        get(&mut self.socks.ping, id.0)?
            .recv_from(buf)
            .map(|(n, _)| n)
    }

    fn ping_close(&mut self, id: PingSock) {
        Self::close(self.reg, &mut self.socks.ping, id.0);
    }

    fn listen(&mut self, id: ListenSock, sock: PublishedSocket) -> io::Result<SocketAddr> {
        let (mut l, local) = match sock {
            PublishedSocket::Tcp(l) => {
                l.set_nonblocking(true)?;
                let local = l.local_addr()?;
                (Listener::Tcp(TcpListener::from_std(l)), local)
            }
            PublishedSocket::Udp(u) => {
                u.set_nonblocking(true)?;
                let local = u.local_addr()?;
                (Listener::Udp(UdpSocket::from_std(u)), local)
            }
        };
        let tok = UplinkSource::Published(id.0).token();
        match &mut l {
            Listener::Tcp(l) => self.reg.register(l, tok, Interest::READABLE)?,
            Listener::Udp(u) => self.reg.register(u, tok, Interest::READABLE)?,
        }
        put(&mut self.socks.listen, id.0, l);
        Ok(local)
    }

    fn unlisten(&mut self, id: ListenSock) {
        // Dropped, the pool's maker ends.
        drop(take(&mut self.socks.pools, id.0));
        match take(&mut self.socks.listen, id.0) {
            Some(Listener::Tcp(mut l)) => {
                let _ = self.reg.deregister(&mut l);
            }
            Some(Listener::Udp(mut u)) => {
                let _ = self.reg.deregister(&mut u);
            }
            None => {}
        }
    }

    fn accept(&mut self, id: ListenSock, into: TcpSock) -> io::Result<SocketAddr> {
        let Listener::Tcp(l) = get(&mut self.socks.listen, id.0)? else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let (s, peer) = l.accept()?;
        keepalive(s.as_raw_fd());
        put(&mut self.socks.tcp, into.0, s);
        Ok(peer)
    }

    fn recv_from(&mut self, id: ListenSock, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match get(&mut self.socks.listen, id.0)? {
            Listener::Udp(u) => u.recv_from(buf),
            Listener::Tcp(_) => Err(io::ErrorKind::InvalidInput.into()),
        }
    }

    fn send_to(&mut self, id: ListenSock, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match get(&mut self.socks.listen, id.0)? {
            Listener::Udp(u) => u.send_to(data, to),
            Listener::Tcp(_) => Err(io::ErrorKind::InvalidInput.into()),
        }
    }

    fn splice_start(
        &mut self,
        id: ListenSock,
        netns: NetnsRef,
        ends: Option<(SocketAddr, IpAddr)>,
    ) -> PoolStart {
        let ns = match netns.resolve() {
            Resolved::NotYet(r) => return PoolStart::NotYet(r),
            Resolved::Ready(fd) => fd,
            Resolved::Failed(e) => return PoolStart::Failed(e),
        };
        let Some((container, gateway)) = ends else {
            return PoolStart::Failed(SpliceError::NoSocket);
        };
        match SocketPool::start(ns.as_fd(), container, gateway) {
            Ok(pool) => {
                put(&mut self.socks.pools, id.0, pool);
                PoolStart::Started
            }
            Err(e) => PoolStart::Failed(e),
        }
    }

    fn splice_abandon(&mut self, id: ListenSock) {
        if let Some(pool) = take(&mut self.socks.pools, id.0) {
            pool.abandon();
        }
    }

    fn splice(
        &mut self,
        id: SpliceId,
        host: TcpSock,
        pool: ListenSock,
        (from, to): (SocketAddr, SocketAddr),
    ) -> Result<(), SpliceError> {
        let pool = self.socks.pools.get_mut(pool.0).and_then(Option::as_mut);
        let inner = pool.ok_or(SpliceError::NoSocket)?.take()?;
        let inner = crate::uplink::splice::connect(inner, from, to).map_err(SpliceError::Socket)?;
        let inner = TcpStream::from_std(std::net::TcpStream::from(inner));
        let client = take(&mut self.socks.tcp, host.0).ok_or(SpliceError::NoSocket)?;
        let mut s = match Splice::new(client, inner) {
            Ok(s) => s,
            Err((client, e)) => {
                put(&mut self.socks.tcp, host.0, client);
                return Err(SpliceError::Pipes(e));
            }
        };
        if let Err(e) = s.register(self.reg, UplinkSource::Splice(id.0).token()) {
            s.deregister(self.reg);
            put(&mut self.socks.tcp, host.0, s.into_host());
            return Err(SpliceError::Poll(e));
        }
        put(&mut self.socks.splice, id.0, s);
        Ok(())
    }

    fn splice_pump(&mut self, id: SpliceId) -> io::Result<Pumped> {
        get(&mut self.socks.splice, id.0)?.pump()
    }

    fn splice_connected(&self, id: SpliceId) -> bool {
        let s = self.socks.splice.get(id.0).and_then(Option::as_ref);
        s.is_some_and(Splice::connected)
    }

    fn unsplice(&mut self, id: SpliceId, into: TcpSock) -> Option<io::Error> {
        let mut s = take(&mut self.socks.splice, id.0)?;
        s.deregister(self.reg);
        let why = s.inner.take_error().ok().flatten();
        put(&mut self.socks.tcp, into.0, s.into_host());
        why
    }

    fn splice_close(&mut self, id: SpliceId) {
        if let Some(mut s) = take(&mut self.socks.splice, id.0) {
            s.deregister(self.reg);
        }
    }
}

/// The uplink's entry points that take the poll: each lends the uplink's sockets, on
/// `reg`, to the core for the call.
impl SocketUplink {
    fn with_host<R>(
        &mut self,
        reg: &Registry,
        f: impl FnOnce(&mut SocketUplink, &mut dyn HostSockets) -> R,
    ) -> R {
        let mut socks = std::mem::take(&mut self.sockets);
        let r = f(
            self,
            &mut HostIo {
                reg,
                socks: &mut socks,
            },
        );
        self.sockets = socks;
        r
    }

    /// An IP packet (of either family) from a container of `domain` for somewhere
    /// outside its network (or for its gateway as the host).
    pub fn from_container(
        &mut self,
        reg: &Registry,
        nets: &[Option<super::NetView>],
        domain: u16,
        pkt: &[u8],
    ) {
        self.with_host(reg, |up, io| up.container_packet(io, nets, domain, pkt));
    }

    /// As [`SocketUplink::from_container`], for the IP packet at `ip` of a frame's
    /// buffer: a TCP segment goes to smoltcp in that very buffer, and `frame` is left
    /// holding a spare one (possibly empty) for the caller to recycle.
    pub fn from_container_frame(
        &mut self,
        reg: &Registry,
        nets: &[Option<super::NetView>],
        domain: u16,
        frame: &mut Vec<u8>,
        ip: std::ops::Range<usize>,
    ) {
        self.with_host(reg, |up, io| {
            up.container_frame(io, nets, domain, frame, ip)
        });
    }

    /// Ends a batch: every stack a frame went into is polled, once.
    pub fn end_batch(&mut self, reg: &Registry) {
        self.with_host(reg, |up, io| up.end_batch_with(io));
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
        let Some(src) = UplinkSource::of(token) else {
            return false;
        };
        self.with_host(reg, |up, io| {
            up.ready(io, src, (readable, writable, error));
        });
        true
    }

    /// Closes idle UDP and echo flows, ends TCP connections whose handshake or idle
    /// time ran out; returns when to run next.
    pub fn tick(&mut self, reg: &Registry, now: std::time::Instant) -> Option<std::time::Instant> {
        self.with_host(reg, |up, io| up.tick_with(io, now))
    }

    /// Drops every flow (TCP connections are reset).
    pub fn flush(&mut self, reg: &Registry) {
        self.with_host(reg, |up, io| up.flush_with(io));
    }

    /// Starts serving a published port. `gateways[domain]` is the address loopback
    /// clients appear from inside (Linux drops 127/8 sources arriving on eth0). With the
    /// container's namespace (`netns`), TCP clients on the host's loopback are spliced.
    pub fn publish(
        &mut self,
        reg: &Registry,
        sock: PublishedSocket,
        to: super::PublishTarget,
        netns: Option<crate::uplink::splice::NetnsRef>,
    ) -> io::Result<()> {
        self.with_host(reg, |up, io| up.publish_with(io, sock, to, netns))
    }

    /// Stops serving the published port listening on `local` (proto: tcp when true).
    /// Established connections stay until they close.
    pub fn unpublish(&mut self, reg: &Registry, local: SocketAddr, tcp: bool) -> bool {
        self.with_host(reg, |up, io| up.unpublish_with(io, local, tcp))
    }

    /// Answers a DNS-over-TCP message on connection `conn`; an answer for a connection
    /// that ended (its slot empty or reused: another generation) goes nowhere.
    pub fn dns_reply(&mut self, reg: &Registry, conn: super::TcpConnId, msg: &[u8]) {
        self.with_host(reg, |up, io| up.dns_reply_with(io, conn, msg));
    }
}
