//! Every mio token the threads use, in one place.
//!
//! A worker's poll has one token per port (the port's slot) and [`WAKER`]. The gateway
//! thread's poll has [`WAKER`] and one range per kind of source below; a range holds
//! up to 2^20 sources of its kind, indexed from 0.

use mio::Token;

/// The waker of every poll (a worker's and the gateway thread's).
pub const WAKER: Token = Token(usize::MAX);

const DNS_UDP: usize = 16;
const DNS_TCP: usize = 64;
/// TCP connections to upstream resolvers open at once, at most.
pub const MAX_DNS_TCP: usize = 256;
const TCP: usize = 1 << 20;
const UDP: usize = 2 << 20;
const PING: usize = 3 << 20;
const PUBLISHED: usize = 4 << 20;
const SPLICE: usize = 5 << 20;
const END: usize = 6 << 20;

// One UDP socket per upstream resolver fits below the TCP range.
const _: () = assert!(DNS_UDP + crate::dns::MAX_UPSTREAMS <= DNS_TCP);
const _: () = assert!(DNS_TCP + MAX_DNS_TCP <= TCP);

/// A source registered on the gateway thread's poll, with its index in its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The UDP socket of upstream resolver number i.
    DnsUdp(usize),
    /// A TCP connection to an upstream resolver.
    DnsTcp(usize),
    /// A host TCP connection of the socket uplink.
    Tcp(usize),
    /// A host UDP socket of the socket uplink.
    Udp(usize),
    /// A ping socket of the socket uplink.
    Ping(usize),
    /// A published port's listening or bound socket.
    Published(usize),
    /// Both sockets of a spliced published-port connection.
    Splice(usize),
}

impl Source {
    /// The token to register the source with.
    #[inline]
    pub const fn token(self) -> Token {
        Token(match self {
            Source::DnsUdp(i) => DNS_UDP + i,
            Source::DnsTcp(i) => DNS_TCP + i,
            Source::Tcp(i) => TCP + i,
            Source::Udp(i) => UDP + i,
            Source::Ping(i) => PING + i,
            Source::Published(i) => PUBLISHED + i,
            Source::Splice(i) => SPLICE + i,
        })
    }

    /// The source a token stands for (None: the waker, or not a gateway source).
    #[inline]
    pub const fn of(t: Token) -> Option<Source> {
        let t = t.0;
        Some(match t {
            _ if t < DNS_UDP => return None,
            _ if t < DNS_TCP => Source::DnsUdp(t - DNS_UDP),
            _ if t < DNS_TCP + MAX_DNS_TCP => Source::DnsTcp(t - DNS_TCP),
            _ if t < TCP => return None,
            _ if t < UDP => Source::Tcp(t - TCP),
            _ if t < PING => Source::Udp(t - UDP),
            _ if t < PUBLISHED => Source::Ping(t - PING),
            _ if t < SPLICE => Source::Published(t - PUBLISHED),
            _ if t < END => Source::Splice(t - SPLICE),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_round_trips_and_the_waker_is_none() {
        for s in [
            Source::DnsUdp(0),
            Source::DnsUdp(7),
            Source::DnsTcp(MAX_DNS_TCP - 1),
            Source::Tcp(0),
            Source::Tcp(12345),
            Source::Udp(9),
            Source::Ping(3),
            Source::Published((1 << 20) - 1),
            Source::Splice(0),
            Source::Splice((1 << 20) - 1),
        ] {
            assert_eq!(Source::of(s.token()), Some(s));
        }
        assert_eq!(Source::of(WAKER), None);
        assert_eq!(Source::of(Token(DNS_TCP + MAX_DNS_TCP)), None);
    }
}
