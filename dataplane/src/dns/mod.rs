//! The embedded DNS server of a network's gateway, without I/O.
//!
//! What Docker's embedded DNS (127.0.0.11) and Podman's aardvark-dns do for
//! user-defined networks: answer container names and aliases from the network's
//! [`Names`] table, and forward everything else to the host's resolvers.
//!
//! The caller owns every socket. It hands [`DnsServer::query`] each query (a UDP
//! payload, or a TCP message without its two-byte length prefix) with an opaque
//! [`ClientRef`], sends the [`Action`]s it gets back (adding the length prefix on TCP),
//! gives upstream answers to [`DnsServer::upstream_reply`], and calls
//! [`DnsServer::poll`] at [`DnsServer::next_deadline`]. Time is injected: every call
//! takes `now: std::time::Instant`, and nothing reads a clock. One server serves every
//! network: the table is passed with each query.
//!
//! # Behaviour
//!
//! - **Local names.** A queries for a container name or alias answer every address of
//!   the name, rotated by one per query (round robin; the rotation counters are per
//!   name, one each for A, AAAA and ANY, in a table of at most [`MAX_ROTATION_NAMES`]
//!   names, cleared when full; networks with a name in common share its counters,
//!   which only shifts where they start). Any other
//!   type for a local name is NODATA (NOERROR, no answer), never forwarded; ANY gets the
//!   A and AAAA records. `d.c.b.a.in-addr.arpa` PTR queries for a container's address answer its
//!   name(s). Matching ignores case and the trailing dot; the answer's owner name is the
//!   question's own name, so mixed-case (0x20) questions get their case back. Local
//!   answers are authoritative (AA) and offer recursion (RA).
//! - **TTL.** [`DnsConfig::ttl`] defaults to 10 s, not Docker's 600 s: a container
//!   replaced under the same name (new address) is seen by clients that cache within
//!   10 s, and a query costs the container a round trip to its own gateway only.
//! - **`host.vswitch.internal`** resolves to the gateway on every network that has DNS,
//!   including the default `bridge` network (which otherwise resolves no container
//!   names and forwards everything) and internal networks; the gateway's reverse name
//!   answers `host.vswitch.internal.`.
//! - **Forwarding.** Other names go to the upstream resolvers in order, each given
//!   [`DnsConfig::upstream_timeout`] (2 s); a timeout, a SERVFAIL or REFUSED answer (as
//!   Docker does), an answer that does not parse, or a send failure the caller reports
//!   moves on to the next resolver. The first other answer (NOERROR, NXDOMAIN, ...) is
//!   relayed as it is, with the client's id put back. The client gets SERVFAIL only when
//!   every resolver failed, or when there are none. Each attempt uses a fresh random id;
//!   an answer is taken only from the resolver asked, with that id and the same
//!   question, so off-path spoofing has to guess 16 bits per attempt and the question.
//! - **Internal networks** ([`NamesBuilder::forward`] `false`) forward nothing: other
//!   names get SERVFAIL, which is what Docker's embedded DNS answers there.
//! - **Truncated upstream answers.** A UDP answer with TC set is relayed as it is to a
//!   UDP client (which then retries over TCP); for a TCP client the query is sent again
//!   to the same resolver over TCP ([`Action::Forward`] with [`Transport::Tcp`]).
//! - **Limits.** At most [`DnsConfig::max_in_flight`] forwarded queries at once (1024);
//!   past that, new ones are answered REFUSED at once and old ones are kept. Local
//!   answers are never limited.
//! - **Reply sizes.** A UDP reply fits in 512 bytes, or in the query's EDNS payload size
//!   capped at [`DnsConfig::max_udp_payload`] (1232, which fits any 1280-byte MTU
//!   without IP fragmentation); TCP replies in 65535. A local answer that does not fit
//!   keeps as many records as fit and sets TC; a relayed one that does not fit is cut to
//!   its header and question with TC set. Queries with EDNS get an OPT record in local
//!   answers; EDNS versions above 0 get BADVERS.
//! - **Bad input.** Shorter than a header, or a response (QR set): dropped. Opcode
//!   other than QUERY: NOTIMP. QDCOUNT other than 1, counts that cannot fit the length,
//!   or anything the parser rejects: FORMERR (header only). Nothing panics.

mod message;
mod names;
mod resolv;
mod server;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod live_tests;

use std::time::Duration;

pub use names::{
    HOST_ALIASES, HOST_NAME, Local, MAX_ENTRIES, MAX_ROUTE, MAX_SEARCH_DOMAINS, Names,
    NamesBuilder, NamesError,
};
pub use resolv::{MAX_UPSTREAMS, UpstreamError, parse_resolv_conf, parse_upstream};
pub use server::{DnsServer, DnsStats, MAX_IN_FLIGHT_LIMIT, MAX_ROTATION_NAMES};

/// Tunables of a [`DnsServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsConfig {
    /// TTL of local answers, in seconds.
    pub ttl: u32,
    /// How long one upstream resolver gets before the next is asked.
    pub upstream_timeout: Duration,
    /// Forwarded queries waiting for an answer, at most (capped at
    /// [`MAX_IN_FLIGHT_LIMIT`]).
    pub max_in_flight: usize,
    /// Largest UDP reply, whatever the client's EDNS size (at least 512). Set it to the
    /// network's MTU minus 28 if that is smaller than the default.
    pub max_udp_payload: u16,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            ttl: 10,
            upstream_timeout: Duration::from_secs(2),
            max_in_flight: 1024,
            max_udp_payload: 1232,
        }
    }
}

/// How a message travels between the server and a client or resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One datagram per message.
    Udp,
    /// A stream; each message is preceded by its length (two bytes, big endian), which
    /// the caller strips and adds.
    Tcp,
}

/// The caller's handle for where a reply goes (a client address and port, a TCP
/// connection); the server only hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientRef(pub u64);

/// What the caller sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `bytes` to `client` over `transport` (the transport its query came on).
    /// A UDP reply is never larger than the client may receive.
    Reply {
        client: ClientRef,
        transport: Transport,
        bytes: Vec<u8>,
    },
    /// Send `bytes` to upstream resolver number `upstream` over `transport`, and give
    /// its answer to [`DnsServer::upstream_reply`]. `id` is the message's id (the first
    /// two bytes). If the message cannot be sent, or a TCP connection to the resolver
    /// fails or closes before answering, call [`DnsServer::upstream_failed`] with
    /// `upstream` and `id` so the next resolver is asked at once.
    Forward {
        upstream: usize,
        transport: Transport,
        id: u16,
        bytes: Vec<u8>,
    },
    /// Nothing to send (the message was dropped).
    Nothing,
}
