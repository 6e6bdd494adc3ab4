//! Published ports' host sockets, as the daemon binds them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::uplink::splice;

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
