//! UDP through the socket uplink: a connected host socket per flow, replies built
//! back into packets.

use super::*;

/// Idle UDP flows are closed after this long.
pub const UDP_IDLE: Duration = Duration::from_secs(120);

pub(super) struct UdpFlow {
    pub(super) who: ContainerId,
    pub(super) key: (u16, Quad),
    pub(super) last: Instant,
}

/// A client talking UDP to a published port: (container side quad) -> (listener, client).
pub(super) struct InboundUdp {
    pub(super) listener: usize,
    pub(super) who: ContainerId,
    pub(super) client: SocketAddr,
    pub(super) last: Instant,
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

/// An ICMP (or ICMPv6) unreachable to the container about its UDP flow `quad`,
/// quoting the flow's headers (enough for the container's stack to find its socket).
pub(super) fn udp_unreachable(quad: Quad, why: family::Unreachable) -> Option<Vec<u8>> {
    let (csrc, cport, dst, dport) = quad;
    let quoted = family::build_udp((csrc, cport), (dst, dport), &[])?;
    family::unreachable(dst, csrc, why, &quoted)
}

impl SocketUplink {
    pub(super) fn udp_out(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        domain: u16,
        quad: Quad,
        payload: &[u8],
    ) {
        let key = (domain, quad);
        // A reply to a client of a published port leaves through that port's socket.
        if let Some(f) = self.inbound_udp.get_mut(&key) {
            f.last = Instant::now();
            let _ = io.send_to(ListenSock(f.listener), payload, f.client);
            return;
        }
        let i = match self.udp_by_key.get(&key) {
            Some(&i) => i,
            None => match self.open_udp(io, nets, key) {
                Some(i) => i,
                None => {
                    self.stats.dropped += 1;
                    return;
                }
            },
        };
        if let Some(Some(f)) = self.udp.get_mut(i) {
            f.last = Instant::now();
            let _ = io.udp_send(UdpSock(i), payload);
        }
    }

    /// A new UDP flow with its connected host socket; its slot.
    pub(super) fn open_udp(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        key: (u16, Quad),
    ) -> Option<usize> {
        let (domain, quad) = key;
        let host = io.host_address(Instant::now());
        let to = target(nets, domain, (quad.2, quad.3), host)?;
        let who = self.tenant_of(domain, quad.0);
        if !self.admit(who, FlowKind::Udp, true) {
            return None;
        }
        let i = free_slot(&self.udp);
        if let Err(e) = io.udp_open(UdpSock(i), to) {
            self.quotas.release(who, FlowKind::Udp, true);
            if out_of_fds(&e) {
                self.refuse(who, Refusal::FdLimit);
            } else if let Some(why) = family::Unreachable::of(&e) {
                // No route on the host (no IPv6 there, say): the container hears so.
                let p = udp_unreachable(quad, why);
                self.out.extend(p.map(|p| OutPacket::plain(domain, p)));
            }
            return None;
        }
        let f = UdpFlow {
            who,
            key,
            last: Instant::now(),
        };
        fill_slot(&mut self.udp, i, f);
        self.udp_by_key.insert(key, i);
        self.stats.udp_flows += 1;
        Some(i)
    }

    pub(super) fn udp_in(&mut self, io: &mut dyn HostSockets, i: usize) {
        let Some(Some(f)) = self.udp.get_mut(i) else {
            return;
        };
        let (domain, (csrc, cport, dst, dport)) = f.key;
        loop {
            match io.udp_recv(UdpSock(i), &mut self.scratch) {
                Ok(n) => {
                    f.last = Instant::now();
                    let data = self.scratch.get(..n).unwrap_or(&[]);
                    if let Some(p) = family::build_udp((dst, dport), (csrc, cport), data) {
                        self.out.push(OutPacket::plain(domain, p));
                    }
                }
                // The host answered "port unreachable": tell the container the same.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    let quad = (csrc, cport, dst, dport);
                    if let Some(p) = udp_unreachable(quad, family::Unreachable::Port) {
                        self.out.push(OutPacket::plain(domain, p));
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// Closes UDP and echo flows idle past their timeouts.
    pub(super) fn expire_udp_and_ping(&mut self, io: &mut dyn HostSockets, now: Instant) {
        for (i, slot) in self.udp.iter_mut().enumerate() {
            if let Some(f) = slot
                && now.duration_since(f.last) > UDP_IDLE
            {
                io.udp_close(UdpSock(i));
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
        for (i, slot) in self.ping.iter_mut().enumerate() {
            if let Some(f) = slot
                && now.duration_since(f.last) > PING_IDLE
            {
                io.ping_close(PingSock(i));
                self.ping_by_key.remove(&f.key);
                self.quotas.release(f.who, FlowKind::Ping, true);
                *slot = None;
            }
        }
    }
}
