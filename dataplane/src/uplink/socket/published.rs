//! Published ports: host sockets whose clients reach a container through the uplink.

use super::*;

/// How soon a published port that ran out of descriptors accepts again.
pub(super) const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The most inbound UDP conversations through published ports at once.
pub const MAX_INBOUND_UDP: usize = 4096;

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

pub(super) struct Published {
    /// TCP (a listener), else UDP; its socket is [`ListenSock`] of its slot.
    pub(super) tcp: bool,
    pub(super) to: PublishTarget,
    /// The host address and port it listens on.
    pub(super) local: SocketAddr,
    /// The container's network namespace, until its splice pool starts.
    pub(super) netns: Option<NetnsRef>,
    /// Whether its clients the container sees as its gateway (loopback ones, and those
    /// of the family the container lacks) are spliced: only where the container has an
    /// address they reach.
    pub(super) splice: Splicing,
}

/// Whether loopback clients of a published port are spliced into the container.
pub(super) enum Splicing {
    /// Not yet: set up with the first loopback client.
    Untried,
    /// Sockets of the container's namespace come from a pool (the I/O module's, by the
    /// port's [`ListenSock`]), its return rule installed.
    Ready,
    /// The namespace cannot be entered or routed (or is not known): frames.
    Unavailable,
}
impl SocketUplink {
    /// [`SocketUplink::publish`], with the host's sockets at hand.
    pub(super) fn publish_with(
        &mut self,
        io: &mut dyn HostSockets,
        sock: PublishedSocket,
        to: PublishTarget,
        netns: Option<NetnsRef>,
    ) -> io::Result<()> {
        if to.who().is_none() {
            return Err(io::Error::other("the container has no address to publish"));
        }
        let i = free_slot(&self.published);
        let tcp = matches!(sock, PublishedSocket::Tcp(_));
        let local = io.listen(ListenSock(i), sock)?;
        let p = Published {
            tcp,
            to,
            local,
            netns,
            splice: if to.inside(local.ip()).is_some() {
                Splicing::Untried
            } else {
                Splicing::Unavailable
            },
        };
        fill_slot(&mut self.published, i, p);
        Ok(())
    }

    /// [`SocketUplink::unpublish`], with the host's sockets at hand.
    pub(super) fn unpublish_with(
        &mut self,
        io: &mut dyn HostSockets,
        local: SocketAddr,
        tcp: bool,
    ) -> bool {
        for (i, slot) in self.published.iter_mut().enumerate() {
            let Some(p) = slot else { continue };
            if p.local != local || p.tcp != tcp {
                continue;
            }
            io.unlisten(ListenSock(i));
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
            .map(|p| (p.local, p.tcp))
            .collect()
    }

    /// Published port `i` is readable: its clients are accepted (TCP) or its
    /// datagrams carried in (UDP), as many as are waiting.
    pub(super) fn published_ready(&mut self, io: &mut dyn HostSockets, i: usize) {
        loop {
            let Some(Some(p)) = self.published.get(i) else {
                return;
            };
            let (to, tcp) = (p.to, p.tcp);
            if !tcp {
                let Ok((n, peer)) = io.recv_from(ListenSock(i), &mut self.scratch) else {
                    return;
                };
                if !self.inbound_datagram(i, peer, n) {
                    self.stats.dropped += 1;
                }
                continue;
            }
            let host = TcpSock(free_slot(&self.tcp));
            let peer = match io.accept(ListenSock(i), host) {
                Ok(peer) => peer,
                Err(e) => return self.accept_failed(i, to, &e),
            };
            if self.try_splice(io, i, host, peer) {
                self.accept_inbound(io, host, peer, to);
            }
        }
    }

    /// An accept on published port `i` failed: out of descriptors, the port is tried
    /// again on a timer (its listener is edge-triggered), the refusal counted once.
    fn accept_failed(&mut self, i: usize, to: PublishTarget, e: &io::Error) {
        if out_of_fds(e)
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

    /// A client of a published TCP port, accepted into `host`, reaches the container
    /// through its stack (its connection is filed at `host`'s slot); refused, the
    /// client's socket is closed.
    pub(super) fn accept_inbound(
        &mut self,
        io: &mut dyn HostSockets,
        host: TcpSock,
        peer: SocketAddr,
        to: PublishTarget,
    ) {
        if !self.inbound_tcp(io, host, peer, to) {
            io.tcp_close(host);
            self.stats.tcp_refused += 1;
        }
    }

    /// As [`SocketUplink::accept_inbound`]; false when refused.
    fn inbound_tcp(
        &mut self,
        io: &mut dyn HostSockets,
        host: TcpSock,
        peer: SocketAddr,
        to: PublishTarget,
    ) -> bool {
        let (Some((inside, src)), Some(who)) = (self.inside_source(peer, to), to.who()) else {
            return false;
        };
        let quad = (inside, to.port, src.ip(), src.port());
        if self.tcp_by_quad.contains_key(&(to.domain, quad)) {
            return false;
        }
        // The accepted descriptor exists already; refused, it is closed at once.
        if !self.admit(who, FlowKind::Tcp, true) {
            return false;
        }
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
        if sock.connect(cx, remote, local).is_err() || io.tcp_adopt(host).is_err() {
            self.quotas.release(who, FlowKind::Tcp, true);
            return false;
        }
        self.insert_tcp(host.0, sock, (quad, who), Some(host), true);
        self.stats.tcp_open += 1;
        true
    }

    /// Accepts again, once their time has come, on the published ports that ran out of
    /// descriptors (a port still out of them goes back on the list, not counted again).
    pub(super) fn retry_accepts(&mut self, io: &mut dyn HostSockets, now: Instant) {
        if self.accept_retry_at.is_none_or(|at| now < at) {
            return;
        }
        self.accept_retry_at = None;
        self.accept_retrying = true;
        for i in std::mem::take(&mut self.accept_retry) {
            self.published_ready(io, i);
        }
        self.accept_retrying = false;
    }
}
