//! Published-port clients that the container sees as its gateway spliced into the
//! container's namespace, socket to socket: those on the host's loopback (127.0.0.1 or
//! ::1), and those of the family the container lacks (an IPv6 client of an IPv4-only
//! container, and the reverse), in the family of the container's address they reach.
//! Once a port spliced, the return rule inside keeps every reply from that container
//! port to that gateway on the container's loopback, so a connection from that gateway
//! on the frame path could not be answered: every such client is spliced.

use super::*;

/// A published-port connection from the host's loopback, spliced into the container.
pub(super) struct SplicedConn {
    pub(super) who: ContainerId,
    /// The container's end, and the source it sees (the gateway, the client's port),
    /// of the client's family.
    pub(super) inside: SocketAddr,
    pub(super) from: SocketAddr,
    /// The client, and the published port it came through (for the frame path, when
    /// the inner connect fails).
    pub(super) peer: SocketAddr,
    pub(super) listener: (usize, PublishTarget),
    pub(super) born: Instant,
    pub(super) last: Instant,
}
impl SocketUplink {
    /// Splices a client the container sees as its gateway (on the host's loopback, or
    /// of the family the container lacks), accepted into `host`, into the container's
    /// namespace; true when the connection is to take the frame path instead (the
    /// client left at `host`): a client the container sees with its own address, or a
    /// namespace that cannot be entered or routed.
    pub(super) fn try_splice(
        &mut self,
        io: &mut dyn HostSockets,
        i: usize,
        host: TcpSock,
        peer: SocketAddr,
    ) -> bool {
        let Some(Some(p)) = self.published.get(i) else {
            return true;
        };
        let to = p.to;
        // The container's address the client reaches (of the client's family where it
        // has one), seen from its gateway of that family.
        let (Some(container), Some(who)) = (to.inside(peer.ip()), to.who()) else {
            return true;
        };
        if !peer.ip().is_loopback() && container.is_ipv6() == peer.is_ipv6() {
            return true;
        }
        let Some(gateway) = self.gateway_of(to.domain, container) else {
            return true;
        };
        let from = SocketAddr::new(gateway, peer.port());
        if !self.splice_ready_for(io, i, container.is_ipv6()) {
            // Counted for loopback clients, as ever (those of the other family from
            // outside took frames before they could be spliced).
            if peer.ip().is_loopback() {
                self.stats.splice_fallbacks += 1;
            }
            return true;
        }
        if !self.admit(who, FlowKind::Tcp, true) {
            io.tcp_close(host);
            self.stats.tcp_refused += 1;
            return false;
        }
        let dst = SocketAddr::new(container, to.port);
        let slot = SpliceId(free_slot(&self.splices));
        let spliced = io.splice(slot, host, ListenSock(i), (from, dst));
        match spliced {
            Ok(()) => self.splice_opened(slot, peer, (who, from, dst, (i, to))),
            // The connect failed at once (no route inside): frames, from now on.
            Err(SpliceError::Socket(e)) if splice::falls_back(&e) => {
                self.quotas.release(who, FlowKind::Tcp, true);
                self.stop_splicing(io, (i, to), &e);
                return true;
            }
            Err(e) => {
                // Once the rule is in, a frame-path reply would be routed to the
                // loopback too: the connection is refused.
                io.tcp_close(host);
                self.quotas.release(who, FlowKind::Tcp, true);
                match e {
                    SpliceError::Pipes(_) => self.refuse(who, Refusal::FdLimit),
                    SpliceError::Poll(_) => {}
                    SpliceError::NoSocket => {
                        self.stats.tcp_refused += 1;
                        self.refuse(who, Refusal::FdLimit);
                    }
                    _ => self.stats.tcp_refused += 1,
                }
            }
        }
        false
    }

    /// Whether published port `i` splices: its pool, of the family of the container's
    /// address its clients reach (IPv6 when `v6`), is started on first use (its maker installs the rule); a
    /// namespace that cannot be entered or routed sends its loopback clients to the
    /// frame path from then on.
    pub(super) fn splice_ready_for(
        &mut self,
        io: &mut dyn HostSockets,
        i: usize,
        v6: bool,
    ) -> bool {
        let Some(Some(p)) = self.published.get(i) else {
            return false;
        };
        let container = p.to.of_family(v6);
        let gateway = container.and_then(|c| self.gateway_of(p.to.domain, c));
        let Some(Some(p)) = self.published.get_mut(i) else {
            return false;
        };
        if matches!(p.splice, Splicing::Untried) {
            let ends = container
                .zip(gateway)
                .map(|(c, g)| (SocketAddr::new(c, p.to.port), g));
            let started = match p.netns.take() {
                Some(ns) => io.splice_start(ListenSock(i), ns, ends),
                None => PoolStart::Failed(SpliceError::NoNamespace),
            };
            p.splice = match started {
                PoolStart::Started => Splicing::Ready,
                PoolStart::NotYet(ns) => {
                    // Frames for this client; the next one tries again.
                    p.netns = Some(ns);
                    return false;
                }
                PoolStart::Failed(e) => {
                    eprintln!("vswitch: published port {} takes frames: {e}", p.local);
                    Splicing::Unavailable
                }
            };
        }
        matches!(p.splice, Splicing::Ready)
    }

    /// Files a spliced connection (its inner socket connecting).
    pub(super) fn splice_opened(
        &mut self,
        slot: SpliceId,
        peer: SocketAddr,
        (who, from, dst, listener): (ContainerId, SocketAddr, SocketAddr, (usize, PublishTarget)),
    ) {
        let now = Instant::now();
        let c = SplicedConn {
            who,
            inside: dst,
            from,
            peer,
            listener,
            born: now,
            last: now,
        };
        fill_slot(&mut self.splices, slot.0, c);
        self.stats.tcp_open += 1;
        self.stats.tcp_spliced += 1;
    }

    /// Moves a spliced connection's bytes; ends it when both sides are done or failed.
    pub(super) fn splice_ready(&mut self, io: &mut dyn HostSockets, i: usize) {
        let Some(Some(c)) = self.splices.get_mut(i) else {
            return;
        };
        match io.splice_pump(SpliceId(i)) {
            Ok(Pumped::Open(true)) => c.last = Instant::now(),
            Ok(Pumped::Open(false) | Pumped::Connecting) => {}
            Err(e) if !io.splice_connected(SpliceId(i)) && splice::falls_back(&e) => {
                self.splice_fallback(io, i);
            }
            Ok(Pumped::Done) | Err(_) => self.end_splice(io, i),
        }
    }

    /// A spliced connection whose connect inside the container failed or hung (its
    /// loopback down, a firewall inside): the client takes the frame path, and so does
    /// the port from now on (its pool ended, the return rule removed, so the
    /// container's replies leave by its interface again). Counted as a fallback.
    pub(super) fn splice_fallback(&mut self, io: &mut dyn HostSockets, i: usize) {
        let Some(c) = self.splices.get_mut(i).and_then(Option::take) else {
            return;
        };
        let host = TcpSock(free_slot(&self.tcp));
        let why = io.unsplice(SpliceId(i), host);
        self.quotas.release(c.who, FlowKind::Tcp, true);
        let why = why.unwrap_or_else(|| io::Error::from(io::ErrorKind::TimedOut));
        self.stop_splicing(io, c.listener, &why);
        self.accept_inbound(io, host, c.peer, c.listener.1);
    }

    /// Published port `listener` takes frames from now on: its pool ends and the
    /// return rule goes. Counts the client that falls back.
    pub(super) fn stop_splicing(
        &mut self,
        io: &mut dyn HostSockets,
        (listener, to): (usize, PublishTarget),
        why: &io::Error,
    ) {
        self.stats.splice_fallbacks += 1;
        let family = |p: &Published| to.inside(p.local.ip()).map(|a| a.is_ipv6());
        let Some(Some(first)) = self.published.get(listener) else {
            return;
        };
        if first.to != to {
            return;
        }
        // Every published socket splicing into the same container port in the same
        // family shares the return rule the abandoned pool removes (the IPv4 and IPv6
        // sockets of `-p P:80` for an IPv4-only container; two host ports of one
        // container port): they all take frames from now on, or one of them would
        // install the rule again and leave the others' frame-path clients unanswered.
        let fam = family(first);
        for (j, slot) in self.published.iter_mut().enumerate() {
            let Some(p) = slot else { continue };
            if p.to != to || family(p) != fam || !p.tcp {
                continue;
            }
            if let Splicing::Ready = std::mem::replace(&mut p.splice, Splicing::Unavailable) {
                eprintln!(
                    "vswitch: published port {} takes frames: cannot connect inside the container: {why}",
                    p.local
                );
                io.splice_abandon(ListenSock(j));
            }
        }
    }

    pub(super) fn end_splice(&mut self, io: &mut dyn HostSockets, i: usize) {
        if let Some(c) = self.splices.get_mut(i).and_then(Option::take) {
            io.splice_close(SpliceId(i));
            self.quotas.release(c.who, FlowKind::Tcp, true);
        }
    }
}
