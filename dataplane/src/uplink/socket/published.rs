//! Published ports: host sockets whose clients reach a container through the uplink.

use super::*;

/// How soon a published port that ran out of descriptors accepts again.
pub(super) const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The most inbound UDP conversations through published ports at once.
pub const MAX_INBOUND_UDP: usize = 4096;

/// A published port: a host socket and where its traffic goes.
pub enum PublishedSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl PublishedSocket {
    /// Binds a published port's host socket on `addr`. An IPv6 one takes IPv6 clients
    /// only (`IPV6_V6ONLY`), so one on `[::]` and one on `0.0.0.0` share a port, as
    /// Docker's do; a listener reuses the address as `std`'s do.
    pub fn bind(tcp: bool, addr: SocketAddr) -> io::Result<PublishedSocket> {
        match addr {
            SocketAddr::V4(_) if tcp => {
                Ok(PublishedSocket::Tcp(std::net::TcpListener::bind(addr)?))
            }
            SocketAddr::V4(_) => Ok(PublishedSocket::Udp(std::net::UdpSocket::bind(addr)?)),
            SocketAddr::V6(a) => bind6(tcp, a),
        }
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            PublishedSocket::Tcp(l) => l.local_addr(),
            PublishedSocket::Udp(u) => u.local_addr(),
        }
    }
}

/// An IPv6-only socket bound on `a` (listening, for TCP).
fn bind6(tcp: bool, a: std::net::SocketAddrV6) -> io::Result<PublishedSocket> {
    let ty = if tcp {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: socket(2) returns a new descriptor or -1.
    let raw = unsafe { libc::socket(libc::AF_INET6, ty | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    splice::set_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    if tcp {
        splice::set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    }
    let sa = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: a.port().to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: a.ip().octets(),
        },
        sin6_scope_id: a.scope_id(),
    };
    let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: `sa` lives across the call and `len` is its size.
    if unsafe { libc::bind(raw, (&raw const sa).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on a descriptor this function owns.
    if tcp && unsafe { libc::listen(raw, 1024) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if tcp {
        PublishedSocket::Tcp(std::net::TcpListener::from(fd))
    } else {
        PublishedSocket::Udp(std::net::UdpSocket::from(fd))
    })
}

/// Where a published port leads: a container's port, at its IPv4 address, its IPv6
/// one, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishTarget {
    pub domain: u16,
    pub container: Option<Ipv4Addr>,
    pub container6: Option<Ipv6Addr>,
    pub port: u16,
}

impl PublishTarget {
    /// The container address a client at `client` reaches: of the client's family
    /// where the container has it, else the other (as Docker's proxy does: an IPv6
    /// client reaches an IPv4-only container over IPv4).
    pub fn inside(&self, client: IpAddr) -> Option<IpAddr> {
        let v4 = self.container.map(IpAddr::V4);
        let v6 = self.container6.map(IpAddr::V6);
        match client {
            IpAddr::V4(_) => v4.or(v6),
            IpAddr::V6(_) => v6.or(v4),
        }
    }

    /// The container's address of one family (IPv6 when `v6`).
    pub(super) fn of_family(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.container6.map(IpAddr::V6)
        } else {
            self.container.map(IpAddr::V4)
        }
    }

    /// The container its quotas count on: its IPv4 address, else its IPv6 one (as the
    /// gateway counts a port's outbound flows of both families).
    pub(super) fn who(&self) -> Option<ContainerId> {
        let ip = self.inside(Ipv4Addr::UNSPECIFIED.into())?;
        Some(ContainerId {
            domain: self.domain,
            ip,
        })
    }
}

pub(super) enum PubSock {
    Tcp(mio::net::TcpListener),
    Udp(UdpSocket),
}

pub(super) struct Published {
    pub(super) sock: PubSock,
    pub(super) to: PublishTarget,
    /// The host address and port it listens on.
    pub(super) local: SocketAddr,
    /// The container's network namespace, until its loopback clients are spliced.
    pub(super) netns: Option<NetnsRef>,
    /// Whether its loopback clients (127.0.0.1, or ::1 on an IPv6 socket) are spliced:
    /// only where the container has the socket's family.
    pub(super) splice: Splicing,
}

/// Whether loopback clients of a published port are spliced into the container.
pub(super) enum Splicing {
    /// Not yet: set up with the first loopback client.
    Untried,
    /// Sockets of the container's namespace, its return rule installed.
    Ready(SocketPool),
    /// The namespace cannot be entered or routed (or is not known): frames.
    Unavailable,
}
impl SocketUplink {
    /// Starts serving a published port. `gateways[domain]` is the address loopback
    /// clients appear from inside (Linux drops 127/8 sources arriving on eth0). With the
    /// container's namespace (`netns`), TCP clients on the host's loopback are spliced.
    pub fn publish(
        &mut self,
        reg: &Registry,
        sock: PublishedSocket,
        to: PublishTarget,
        netns: Option<NetnsRef>,
    ) -> io::Result<()> {
        let i = free_slot(&self.published);
        let (mut ps, local) = match sock {
            PublishedSocket::Tcp(l) => {
                l.set_nonblocking(true)?;
                let local = l.local_addr()?;
                (PubSock::Tcp(mio::net::TcpListener::from_std(l)), local)
            }
            PublishedSocket::Udp(u) => {
                u.set_nonblocking(true)?;
                let local = u.local_addr()?;
                (PubSock::Udp(UdpSocket::from_std(u)), local)
            }
        };
        if to.who().is_none() {
            return Err(io::Error::other("the container has no address to publish"));
        }
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
            splice: if to.of_family(local.is_ipv6()).is_some() {
                Splicing::Untried
            } else {
                Splicing::Unavailable
            },
        };
        fill_slot(&mut self.published, i, p);
        Ok(())
    }

    /// Stops serving the published port listening on `local` (proto: tcp when true).
    /// Established connections stay until they close.
    pub fn unpublish(&mut self, reg: &Registry, local: SocketAddr, tcp: bool) -> bool {
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
    pub fn published_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.published
            .iter()
            .flatten()
            .map(|p| (p.local, matches!(p.sock, PubSock::Tcp(_))))
            .collect()
    }

    pub(super) fn published_ready(&mut self, reg: &Registry, _nets: (), i: usize) {
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
                            if out_of_fds(&e)
                                && let Some(who) = to.who()
                            {
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
                    if !self.inbound_datagram(i, peer, n) {
                        self.stats.dropped += 1;
                    }
                }
            }
        }
    }

    /// A datagram of `n` bytes (in the scratch buffer) from `peer` to published UDP
    /// port `i`: into the container, from the client's conversation. False when it was
    /// refused (no room for another conversation).
    fn inbound_datagram(&mut self, i: usize, peer: SocketAddr, n: usize) -> bool {
        let Some(Some(p)) = self.published.get(i) else {
            return false;
        };
        let to = p.to;
        let (Some((inside, src)), Some(who)) = (self.inside_source(peer, to), to.who()) else {
            return false;
        };
        let key = (to.domain, (inside, to.port, src.ip(), src.port()));
        if let Some(f) = self.inbound_udp.get_mut(&key) {
            f.last = Instant::now();
            f.client = peer;
        } else {
            if self.inbound_udp.len() >= MAX_INBOUND_UDP || !self.admit(who, FlowKind::Udp, false) {
                return false;
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
        if let Some(pkt) = family::build_udp((src.ip(), src.port()), (inside, to.port), data) {
            self.out.push(OutPacket::plain(to.domain, pkt));
        }
        true
    }

    /// The container address a client reaches and the source it appears from there:
    /// its own where the families agree, except loopback clients, which appear as the
    /// network's gateway (Linux drops 127/8 and ::1 sources arriving on eth0); a client
    /// of the other family appears as the gateway too. None: the container has no
    /// address, or its network no gateway of that family.
    pub(super) fn inside_source(
        &self,
        peer: SocketAddr,
        to: PublishTarget,
    ) -> Option<(IpAddr, SocketAddr)> {
        let inside = to.inside(peer.ip())?;
        let own = peer.ip().is_ipv4() == inside.is_ipv4() && !peer.ip().is_loopback();
        if own {
            return Some((inside, peer));
        }
        let gateway = self.gateway_of(to.domain, inside)?;
        Some((inside, SocketAddr::new(gateway, peer.port())))
    }

    /// The gateway of `domain` of `ip`'s family.
    pub(super) fn gateway_of(&self, domain: u16, ip: IpAddr) -> Option<IpAddr> {
        let net = self.gateways.get(usize::from(domain))?.as_ref()?;
        net.gateway_for(ip)
    }

    /// Tells the uplink each network's gateway (for published ports' loopback clients).
    pub fn set_gateways(&mut self, nets: &[Option<NetView>]) {
        self.gateways = nets.to_vec();
    }

    pub(super) fn accept_inbound(
        &mut self,
        reg: &Registry,
        stream: TcpStream,
        peer: SocketAddr,
        to: PublishTarget,
    ) {
        let (Some((inside, src)), Some(who)) = (self.inside_source(peer, to), to.who()) else {
            self.stats.tcp_refused += 1;
            return;
        };
        let quad = (inside, to.port, src.ip(), src.port());
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
        let mut sock = smol_tcp::Socket::new(
            smol_tcp::SocketBuffer::new(vec![0u8; size]),
            smol_tcp::SocketBuffer::new(vec![0u8; size]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_keep_alive(Some(CONTAINER_KEEPALIVE.into()));
        sock.set_timeout(Some(CONTAINER_ACK_TIMEOUT.into()));
        let remote = (IpAddress::from(inside), to.port);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::from(src.ip())),
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

    /// Accepts again, once their time has come, on the published ports that ran out of
    /// descriptors (a port still out of them goes back on the list, not counted again).
    pub(super) fn retry_accepts(&mut self, reg: &Registry, now: Instant) {
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
}
