//! The socket uplink's own mio tokens: one range per kind of host socket, each holding
//! up to 2^20 sockets of its kind, indexed by their ids. The thread that polls the
//! uplink's sockets composes this space with its own tokens, kept below [`FIRST`].

use mio::Token;

/// The first token of the uplink's space: the poller's own sources stay below it.
pub const FIRST: usize = 1 << 20;
const TCP: usize = FIRST;
const UDP: usize = 2 << 20;
const PING: usize = 3 << 20;
const PUBLISHED: usize = 4 << 20;
const SPLICE: usize = 5 << 20;
/// One past the last token of the uplink's space.
pub const END: usize = 6 << 20;

/// A host socket of the uplink registered on the poll, with its index in its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkSource {
    /// A host TCP connection.
    Tcp(usize),
    /// A host UDP socket.
    Udp(usize),
    /// A ping socket.
    Ping(usize),
    /// A published port's listening or bound socket.
    Published(usize),
    /// Both sockets of a spliced published-port connection.
    Splice(usize),
}

impl UplinkSource {
    /// The token to register the source with.
    #[inline]
    pub const fn token(self) -> Token {
        Token(match self {
            UplinkSource::Tcp(i) => TCP + i,
            UplinkSource::Udp(i) => UDP + i,
            UplinkSource::Ping(i) => PING + i,
            UplinkSource::Published(i) => PUBLISHED + i,
            UplinkSource::Splice(i) => SPLICE + i,
        })
    }

    /// The source a token stands for (None: not one of the uplink's).
    #[inline]
    pub const fn of(t: Token) -> Option<UplinkSource> {
        let t = t.0;
        Some(match t {
            _ if t < TCP => return None,
            _ if t < UDP => UplinkSource::Tcp(t - TCP),
            _ if t < PING => UplinkSource::Udp(t - UDP),
            _ if t < PUBLISHED => UplinkSource::Ping(t - PING),
            _ if t < SPLICE => UplinkSource::Published(t - PUBLISHED),
            _ if t < END => UplinkSource::Splice(t - SPLICE),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_round_trips_and_the_rest_is_none() {
        for s in [
            UplinkSource::Tcp(0),
            UplinkSource::Tcp(12345),
            UplinkSource::Udp(9),
            UplinkSource::Ping(3),
            UplinkSource::Published((1 << 20) - 1),
            UplinkSource::Splice(0),
            UplinkSource::Splice((1 << 20) - 1),
        ] {
            assert_eq!(UplinkSource::of(s.token()), Some(s));
        }
        assert_eq!(UplinkSource::of(Token(FIRST - 1)), None);
        assert_eq!(UplinkSource::of(Token(END)), None);
        assert_eq!(UplinkSource::of(Token(usize::MAX)), None);
    }
}
