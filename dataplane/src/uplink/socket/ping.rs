//! ICMP echo through the socket uplink's ping sockets.

use super::*;

/// Idle echo flows are closed after this long.
pub const PING_IDLE: Duration = Duration::from_secs(30);

/// (domain, container address, container's echo id, destination)
pub(super) type PingKey = (u16, IpAddr, u16, IpAddr);

pub(super) struct PingFlow {
    pub(super) who: ContainerId,
    pub(super) key: PingKey,
    pub(super) last: Instant,
}

/// Whether a ping socket that could not be opened tells that the host lets this process
/// have none: refused by `net.ipv4.ping_group_range` (EACCES, EPERM) or a family or
/// protocol the kernel lacks. Anything else (out of descriptors or memory, a poll
/// registration that failed) may pass and is tried again with the next echo.
fn ping_denied(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT)
    )
}

/// Which of [`SocketUplink::ping_allowed`] a family uses.
fn family_slot(ip: IpAddr) -> usize {
    usize::from(ip.is_ipv6())
}

impl SocketUplink {
    /// An echo request from a container (`l3`: its packet, ICMP or ICMPv6 by family).
    pub(super) fn ping_out(
        &mut self,
        io: &mut dyn HostSockets,
        nets: &[Option<NetView>],
        domain: u16,
        l3: &family::L3<'_>,
    ) {
        let (src, dst, echo) = (l3.src, l3.dst, l3.payload);
        let id = family::echo_ident(echo);
        let key = (domain, src, id, dst);
        let to = target(nets, domain, (dst, 0), io.host_address(Instant::now()));
        let Some(to) = to.filter(|t| t.is_ipv4() == src.is_ipv4()) else {
            self.stats.dropped += 1;
            return;
        };
        let i = match self.ping_by_key.get(&key) {
            Some(&i) => Some(i),
            None if self.ping_allowed[family_slot(src)] != Some(false) => self.open_ping(io, key),
            None => None,
        };
        let Some(Some(f)) = i.and_then(|i| self.ping.get_mut(i)) else {
            // No way to ping from here: say so, as a router would.
            return self.unreachable_to(domain, l3, family::Unreachable::Prohibited);
        };
        f.last = Instant::now();
        if let Some(i) = i
            && let Err(e) = io.ping_send(PingSock(i), echo, to.ip())
            && let Some(why) = family::Unreachable::of(&e)
        {
            self.unreachable_to(domain, l3, why);
        }
    }

    /// Tells the sender of `l3` its destination is unreachable, quoting the packet's
    /// header and the start of what it carried.
    pub(super) fn unreachable_to(
        &mut self,
        domain: u16,
        l3: &family::L3<'_>,
        why: family::Unreachable,
    ) {
        let quoted: Vec<u8> = (l3.header.iter())
            .chain(l3.payload.iter().take(8))
            .copied()
            .collect();
        if let Some(p) = family::unreachable(l3.dst, l3.src, why, &quoted) {
            self.out.push(OutPacket::plain(domain, p));
        }
    }

    /// A new echo flow with its ping socket; its slot.
    pub(super) fn open_ping(&mut self, io: &mut dyn HostSockets, key: PingKey) -> Option<usize> {
        let who = self.tenant_of(key.0, key.1);
        if !self.admit(who, FlowKind::Ping, true) {
            return None;
        }
        let allowed = self.ping_allowed.get_mut(family_slot(key.1))?;
        let i = free_slot(&self.ping);
        if let Err(e) = io.ping_open(PingSock(i), key.1) {
            if ping_denied(&e) {
                *allowed = Some(false);
            }
            self.quotas.release(who, FlowKind::Ping, true);
            if out_of_fds(&e) {
                self.refuse(who, Refusal::FdLimit);
            }
            return None;
        }
        *allowed = Some(true);
        let f = PingFlow {
            who,
            key,
            last: Instant::now(),
        };
        fill_slot(&mut self.ping, i, f);
        self.ping_by_key.insert(key, i);
        self.stats.ping_flows += 1;
        Some(i)
    }

    pub(super) fn ping_in(&mut self, io: &mut dyn HostSockets, i: usize) {
        let Some(Some(f)) = self.ping.get_mut(i) else {
            return;
        };
        let (domain, csrc, id, dst) = f.key;
        while let Ok(n) = io.ping_recv(PingSock(i), &mut self.scratch) {
            f.last = Instant::now();
            let Some(data) = self.scratch.get_mut(..n) else {
                break;
            };
            // The kernel gives the echo reply (ICMP header on); put the container's id
            // back.
            if data.first().copied() != Some(family::echo_reply_type(csrc)) {
                continue;
            }
            if !family::fix_echo_reply(data, id, dst, csrc) {
                continue;
            }
            if let Some(p) = family::build(dst, csrc, family::icmp_proto(csrc), data) {
                self.out.push(OutPacket::plain(domain, p));
            }
        }
    }
}
