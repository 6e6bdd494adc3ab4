//! Every mio token the threads use, in one place.
//!
//! A worker's poll has one token per port (the port's slot) and [`WAKER`]. The gateway
//! thread's poll has [`WAKER`], the upstream resolvers' sockets below, and the socket
//! uplink's own space ([`UplinkSource`], from [`uplink::FIRST`]) above them.

use mio::Token;

use crate::uplink::socket::token::{self as uplink, UplinkSource};

/// The waker of every poll (a worker's and the gateway thread's).
pub const WAKER: Token = Token(usize::MAX);

const DNS_UDP: usize = 16;
const DNS_TCP: usize = 64;
/// TCP connections to upstream resolvers open at once, at most.
pub const MAX_DNS_TCP: usize = 256;

// One UDP socket per upstream resolver fits below the TCP range.
const _: () = assert!(DNS_UDP + crate::dns::MAX_UPSTREAMS <= DNS_TCP);
const _: () = assert!(DNS_TCP + MAX_DNS_TCP <= uplink::FIRST);
// The waker stays out of the uplink's space.
const _: () = assert!(uplink::END < usize::MAX);

/// A source registered on the gateway thread's poll, with its index in its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The UDP socket of upstream resolver number i.
    DnsUdp(usize),
    /// A TCP connection to an upstream resolver.
    DnsTcp(usize),
    /// A host socket of the socket uplink.
    Uplink(UplinkSource),
}

impl Source {
    /// The token to register the source with.
    #[inline]
    pub const fn token(self) -> Token {
        Token(match self {
            Source::DnsUdp(i) => DNS_UDP + i,
            Source::DnsTcp(i) => DNS_TCP + i,
            Source::Uplink(u) => return u.token(),
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
            _ if t < uplink::FIRST => return None,
            _ => match UplinkSource::of(Token(t)) {
                Some(u) => Source::Uplink(u),
                None => return None,
            },
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
            Source::Uplink(UplinkSource::Tcp(0)),
            Source::Uplink(UplinkSource::Tcp(12345)),
            Source::Uplink(UplinkSource::Udp(9)),
            Source::Uplink(UplinkSource::Ping(3)),
            Source::Uplink(UplinkSource::Published((1 << 20) - 1)),
            Source::Uplink(UplinkSource::Splice(0)),
            Source::Uplink(UplinkSource::Splice((1 << 20) - 1)),
        ] {
            assert_eq!(Source::of(s.token()), Some(s));
        }
        assert_eq!(Source::of(WAKER), None);
        assert_eq!(Source::of(Token(DNS_TCP + MAX_DNS_TCP)), None);
    }
}
