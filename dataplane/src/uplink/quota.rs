//! Limits of the socket uplink: how many flows of each kind one container and all of
//! them together may hold, how many host descriptors the flows may take, and how long
//! a connection may wait or idle.
//!
//! A container is its (network, address) ([`ContainerId`], IPv4 unless its address
//! family parameter says otherwise): port security ties an addressed port to its own. [`Quotas`] counts what each container holds and
//! refuses a new flow past its share, past the global limit, or past the descriptor
//! budget, naming the reason ([`Refusal`]) so it can be counted on the container's port.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// A container, as the uplink sees it: its network (domain) and address, of family
/// `A` (`Ipv4Addr` by default; `IpAddr` where both families count, as DNS does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId<A = Ipv4Addr> {
    pub domain: u16,
    pub ip: A,
}

impl From<ContainerId> for ContainerId<IpAddr> {
    fn from(c: ContainerId) -> Self {
        ContainerId {
            domain: c.domain,
            ip: IpAddr::V4(c.ip),
        }
    }
}

/// What a flow is, for its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum FlowKind {
    Tcp = 0,
    Udp,
    Ping,
    Dns,
}

const KINDS: usize = 4;

/// Why a new flow was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The container holds its share of TCP connections (or all are taken).
    TcpQuota,
    UdpQuota,
    PingQuota,
    /// DNS queries in flight (forwarded upstream).
    DnsQuota,
    /// The descriptors the uplink may hold are all in use (or the host ran out).
    FdLimit,
}

impl Refusal {
    fn of(kind: FlowKind) -> Refusal {
        match kind {
            FlowKind::Tcp => Refusal::TcpQuota,
            FlowKind::Udp => Refusal::UdpQuota,
            FlowKind::Ping => Refusal::PingQuota,
            FlowKind::Dns => Refusal::DnsQuota,
        }
    }
}

/// The TCP connections one container may hold by default: a busy container (a build
/// fetching in parallel, a proxy) works, and four containers cannot take them all.
pub const DEFAULT_TCP_PER_CONTAINER: usize = 4096;
pub const DEFAULT_TCP_TOTAL: usize = 16384;
pub const DEFAULT_UDP_PER_CONTAINER: usize = 4096;
pub const DEFAULT_UDP_TOTAL: usize = 16384;
pub const DEFAULT_PING_PER_CONTAINER: usize = 64;
pub const DEFAULT_PING_TOTAL: usize = 1024;
pub const DEFAULT_DNS_PER_CONTAINER: usize = 256;
pub const DEFAULT_DNS_TOTAL: usize = 1024;
/// A connection whose handshake has not finished by then is dropped (conntrack waits
/// 60 s in SYN_RECV).
pub const DEFAULT_TCP_HANDSHAKE: Duration = Duration::from_secs(60);
/// An established connection that moved no data for this long is reset (conntrack's
/// established timeout: five days).
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(432_000);
/// Descriptors kept for everything else (control connections, state saves, TAPs,
/// upstream DNS) when the uplink's budget is derived from `RLIMIT_NOFILE`.
pub const FD_RESERVE: usize = 512;

/// The limits the daemon starts the socket uplink with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkLimits {
    pub tcp_per_container: usize,
    pub tcp_total: usize,
    pub udp_per_container: usize,
    pub udp_total: usize,
    pub ping_per_container: usize,
    pub ping_total: usize,
    pub dns_per_container: usize,
    pub dns_total: usize,
    /// Host descriptors the uplink's flows may hold at once.
    pub fds: usize,
    pub tcp_handshake: Duration,
    pub tcp_idle: Duration,
}

impl Default for UplinkLimits {
    fn default() -> Self {
        UplinkLimits {
            tcp_per_container: DEFAULT_TCP_PER_CONTAINER,
            tcp_total: DEFAULT_TCP_TOTAL,
            udp_per_container: DEFAULT_UDP_PER_CONTAINER,
            udp_total: DEFAULT_UDP_TOTAL,
            ping_per_container: DEFAULT_PING_PER_CONTAINER,
            ping_total: DEFAULT_PING_TOTAL,
            dns_per_container: DEFAULT_DNS_PER_CONTAINER,
            dns_total: DEFAULT_DNS_TOTAL,
            fds: usize::MAX,
            tcp_handshake: DEFAULT_TCP_HANDSHAKE,
            tcp_idle: DEFAULT_TCP_IDLE,
        }
    }
}

impl UplinkLimits {
    fn per_container(&self, k: FlowKind) -> usize {
        match k {
            FlowKind::Tcp => self.tcp_per_container,
            FlowKind::Udp => self.udp_per_container,
            FlowKind::Ping => self.ping_per_container,
            FlowKind::Dns => self.dns_per_container,
        }
    }
    fn total(&self, k: FlowKind) -> usize {
        match k {
            FlowKind::Tcp => self.tcp_total,
            FlowKind::Udp => self.udp_total,
            FlowKind::Ping => self.ping_total,
            FlowKind::Dns => self.dns_total,
        }
    }
}

/// What every container holds, and the totals.
#[derive(Debug)]
pub struct Quotas<A = Ipv4Addr> {
    pub limits: UplinkLimits,
    held: HashMap<ContainerId<A>, [u32; KINDS]>,
    totals: [usize; KINDS],
    fds: usize,
}

impl<A> Default for Quotas<A> {
    fn default() -> Self {
        Quotas {
            limits: UplinkLimits::default(),
            held: HashMap::new(),
            totals: [0; KINDS],
            fds: 0,
        }
    }
}

impl<A: Copy + Eq + Hash> Quotas<A> {
    pub fn new(limits: UplinkLimits) -> Quotas<A> {
        Quotas {
            limits,
            ..Quotas::default()
        }
    }

    /// Takes one flow of `kind` for `who` (and a descriptor when `fd`), or says why not.
    pub fn admit(&mut self, who: ContainerId<A>, kind: FlowKind, fd: bool) -> Result<(), Refusal> {
        let k = kind as usize;
        let total = self.totals.get(k).copied().unwrap_or(usize::MAX);
        let mine = self
            .held
            .get(&who)
            .and_then(|h| h.get(k))
            .map_or(0, |&n| n as usize);
        if mine >= self.limits.per_container(kind) || total >= self.limits.total(kind) {
            return Err(Refusal::of(kind));
        }
        if fd && self.fds >= self.limits.fds {
            return Err(Refusal::FdLimit);
        }
        if let Some(n) = self.held.entry(who).or_default().get_mut(k) {
            *n = n.saturating_add(1);
        }
        if let Some(t) = self.totals.get_mut(k) {
            *t += 1;
        }
        self.fds += usize::from(fd);
        Ok(())
    }

    /// Gives back what [`Quotas::admit`] took.
    pub fn release(&mut self, who: ContainerId<A>, kind: FlowKind, fd: bool) {
        let k = kind as usize;
        if let Some(h) = self.held.get_mut(&who) {
            if let Some(n) = h.get_mut(k) {
                *n = n.saturating_sub(1);
            }
            if h.iter().all(|&n| n == 0) {
                self.held.remove(&who);
            }
        }
        if let Some(t) = self.totals.get_mut(k) {
            *t = t.saturating_sub(1);
        }
        if fd {
            self.fds = self.fds.saturating_sub(1);
        }
    }

    /// Flows of `kind` `who` holds.
    pub fn held(&self, who: ContainerId<A>, kind: FlowKind) -> usize {
        self.held
            .get(&who)
            .and_then(|h| h.get(kind as usize))
            .map_or(0, |&n| n as usize)
    }

    /// Descriptors held by flows.
    pub fn fds(&self) -> usize {
        self.fds
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the new
/// soft limit (the old one when it cannot be raised).
pub fn raise_nofile() -> std::io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Ok(r.rlim_max);
        }
    }
    Ok(r.rlim_cur)
}

/// The descriptors the uplink's flows may take under a `nofile` limit: all but
/// [`FD_RESERVE`], and at least a few so the uplink works at all.
pub fn fd_budget(nofile: u64) -> usize {
    let n = usize::try_from(nofile).unwrap_or(usize::MAX);
    n.saturating_sub(FD_RESERVE).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ContainerId = ContainerId {
        domain: 1,
        ip: Ipv4Addr::new(10, 0, 0, 2),
    };
    const B: ContainerId = ContainerId {
        domain: 1,
        ip: Ipv4Addr::new(10, 0, 0, 3),
    };

    #[test]
    fn a_container_gets_its_share_and_the_others_theirs() {
        let mut q = Quotas::new(UplinkLimits {
            tcp_per_container: 2,
            tcp_total: 3,
            ..UplinkLimits::default()
        });
        assert_eq!(q.admit(A, FlowKind::Tcp, true), Ok(()));
        assert_eq!(q.admit(A, FlowKind::Tcp, true), Ok(()));
        assert_eq!(q.admit(A, FlowKind::Tcp, true), Err(Refusal::TcpQuota));
        assert_eq!(q.admit(B, FlowKind::Tcp, true), Ok(()));
        // The global limit.
        assert_eq!(q.admit(B, FlowKind::Tcp, true), Err(Refusal::TcpQuota));
        // Other kinds count apart.
        assert_eq!(q.admit(A, FlowKind::Udp, true), Ok(()));
        q.release(A, FlowKind::Tcp, true);
        assert_eq!(q.held(A, FlowKind::Tcp), 1);
        assert_eq!(q.admit(B, FlowKind::Tcp, true), Ok(()));
        assert_eq!(q.fds(), 4);
    }

    #[test]
    fn descriptors_are_a_budget_of_their_own() {
        let mut q = Quotas::new(UplinkLimits {
            fds: 1,
            ..UplinkLimits::default()
        });
        assert_eq!(q.admit(A, FlowKind::Udp, true), Ok(()));
        assert_eq!(q.admit(B, FlowKind::Udp, true), Err(Refusal::FdLimit));
        // A flow without its own descriptor is not refused for descriptors.
        assert_eq!(q.admit(B, FlowKind::Dns, false), Ok(()));
        q.release(A, FlowKind::Udp, true);
        assert_eq!(q.admit(B, FlowKind::Udp, true), Ok(()));
        assert_eq!(fd_budget(1024), 512);
        assert_eq!(fd_budget(10), 16);
    }
}
