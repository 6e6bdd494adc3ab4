//! ICMP echo through the socket uplink's ping sockets.

use super::*;

/// Idle echo flows are closed after this long.
pub const PING_IDLE: Duration = Duration::from_secs(30);

pub(super) struct PingFlow {
    pub(super) sock: mio::net::UdpSocket,
    pub(super) who: ContainerId,
    /// (domain, container address, container's echo id, destination)
    pub(super) key: (u16, Ipv4Addr, u16, Ipv4Addr),
    pub(super) last: Instant,
}
/// A ping socket, if the host lets this process have one.
pub(super) fn ping_socket() -> io::Result<OwnedFd> {
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

pub(super) fn build_unreachable(
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
impl SocketUplink {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ping_out(
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
    pub(super) fn open_ping(
        &mut self,
        reg: &Registry,
        key: (u16, Ipv4Addr, u16, Ipv4Addr),
    ) -> Option<usize> {
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

    pub(super) fn ping_in(&mut self, i: usize) {
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
}
