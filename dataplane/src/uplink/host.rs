//! The host's main address: what GATEWAY:PORT reaches on a network without
//! `--host-loopback`.
//!
//! As Podman with pasta does, a container reaching its gateway reaches the host at the
//! host's own address, not at its loopback: services listening on every address answer,
//! services bound to 127.0.0.1 only do not. The main address is the preferred source of
//! the default route (found by connecting a UDP socket, which sends nothing, and
//! reading its local address), else the first global IPv4 address of an interface
//! that is up. It is looked up again at most once a second, so a host whose address
//! changes is followed.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// How long a looked-up main address is trusted.
const REFRESH: Duration = Duration::from_secs(1);

/// An address outside every network a host would hold routes for (TEST-NET-1, RFC
/// 5737): the route the kernel picks to it is the default route.
const PROBE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 9);

/// The host's main address, cached.
#[derive(Debug, Default)]
pub struct HostAddress {
    cached: Option<(Instant, Option<Ipv4Addr>)>,
}

impl HostAddress {
    /// The main address (looked up when the cached one is older than a second).
    pub fn get(&mut self, now: Instant) -> Option<Ipv4Addr> {
        if let Some((at, addr)) = self.cached
            && now.saturating_duration_since(at) < REFRESH
        {
            return addr;
        }
        let addr = main_address();
        self.cached = Some((now, addr));
        addr
    }
}

/// Whether `ip` can stand for the host to a container.
fn is_global(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast())
}

/// Looks the main address up now.
pub fn main_address() -> Option<Ipv4Addr> {
    default_route_source()
        .filter(|ip| is_global(*ip))
        .or_else(first_global_address)
}

/// The source the kernel would choose for a packet on the default route. Connecting a
/// UDP socket only selects a route: no packet leaves.
fn default_route_source() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect(PROBE).ok()?;
    match s.local_addr().ok()? {
        std::net::SocketAddr::V4(a) => Some(*a.ip()),
        std::net::SocketAddr::V6(_) => None,
    }
}

/// The first global IPv4 address of an interface that is up, in the kernel's order.
fn first_global_address() -> Option<Ipv4Addr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own and free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() && found.is_none() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freed.
        let ifa = unsafe { &*cur };
        found = ifaddr_v4(ifa).filter(|ip| is_global(*ip));
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The IPv4 address of one interface address entry, if it is IPv4 and the interface is up.
fn ifaddr_v4(ifa: &libc::ifaddrs) -> Option<Ipv4Addr> {
    let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
    if !up || ifa.ifa_addr.is_null() {
        return None;
    }
    // SAFETY: ifa_addr is non-null and points to a sockaddr of at least its family's size.
    let family = unsafe { (*ifa.ifa_addr).sa_family };
    if i32::from(family) != libc::AF_INET {
        return None;
    }
    // SAFETY: the family is AF_INET, so the address is a sockaddr_in.
    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
    Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_never_stand_for_the_host() {
        assert!(!is_global(Ipv4Addr::LOCALHOST));
        assert!(!is_global(Ipv4Addr::new(169, 254, 1, 1)));
        assert!(!is_global(Ipv4Addr::UNSPECIFIED));
        assert!(is_global(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn the_lookup_is_cached_for_a_second() {
        let mut h = HostAddress::default();
        let t = Instant::now();
        let first = h.get(t);
        assert_eq!(h.cached.map(|c| c.1), Some(first));
        h.cached = Some((t, Some(Ipv4Addr::new(203, 0, 113, 7))));
        assert_eq!(h.get(t), Some(Ipv4Addr::new(203, 0, 113, 7)));
    }
}
