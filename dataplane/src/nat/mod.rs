//! Connection tracking and NAT for the packet uplink: masquerade (SNAT) of everything a
//! network sends out, DNAT of published ports, hairpin, as iptables MASQUERADE/DNAT
//! with nf_conntrack do, in userspace; for IPv6, NAT66 masquerade or the routed mode's
//! tracking (a flow table per address family, one code for both).
//!
//! A flow has two keys: its **inside** tuple (as the container sees it: container
//! address and port, remote address and port) and its **outside** tuple (remote address
//! and port, the uplink's external address and the flow's external port). Packets from
//! containers are looked up by the inside tuple and get their source rewritten to the
//! external address and port; packets arriving on the uplink are looked up by the
//! outside tuple and get their destination rewritten back. A flow a container starts
//! (masquerade) and a flow a client starts on a published port (DNAT) are the same
//! thing seen from the two ends, and are rewritten the same way.
//!
//! - [`table`]: the flow table (lock-free lookups, bounded, never evicting live flows).
//! - [`af`]: the address family a table holds ([`V4`], [`V6`]): how tuples are packed.
//! - [`rewrite`]: header parsing and in-place rewrites with incremental checksums, and
//!   the flow logic both families share; `rewrite6`: the IPv6 packet's side of it
//!   (NAT66 masquerade, and the routed mode's tracking).
//!
//! Timeouts (seconds; Linux's defaults, except established TCP which follows OVS's
//! 24 hours so a full table drains in a day rather than five):
//!
//! | state | timeout |
//! |---|---|
//! | TCP SYN sent | 120 |
//! | TCP SYN received | 60 |
//! | TCP established | 86400 |
//! | TCP FIN seen (one side) | 120 |
//! | TCP closing (both FINs) / TIME_WAIT | 120 |
//! | TCP closed (RST) | 10 |
//! | UDP, one direction only | 30 |
//! | UDP, replies seen | 120 |
//! | ICMP (and ICMPv6) echo | 30 |

pub mod af;
pub mod rewrite;
mod rewrite6;
pub mod table;
mod zeroed;

pub use af::{Af, V4, V6};
pub use rewrite::{Nat, NatDrop, NatVerdict};
pub use table::{FlowInfo, FlowTable, NatCounters, Tuple};

use crate::wire::IpProtocol;

/// A published port on the packet uplink: (protocol, external port) -> container, in
/// one address family (IPv4 on `--address`, IPv6 on `--address6`: DNAT66).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnatRule<A: Af = V4> {
    pub proto: IpProtocol,
    pub ext_port: u16,
    pub domain: u16,
    pub ip: A::Addr,
    pub port: u16,
}

/// The published ports of one family, built at configuration time, read per packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatRules<A: Af = V4> {
    /// By (protocol, external port).
    rules: Vec<DnatRule<A>>,
    /// The rules of routed networks' containers, by (protocol, container address and
    /// port): reached at the container's own address too (Docker's routed mode).
    direct: Vec<DnatRule<A>>,
}

impl<A: Af> Default for DnatRules<A> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<A: Af> DnatRules<A> {
    /// No published ports.
    pub const EMPTY: DnatRules<A> = DnatRules {
        rules: Vec::new(),
        direct: Vec::new(),
    };

    pub fn new(mut rules: Vec<DnatRule<A>>) -> DnatRules<A> {
        rules.sort_by_key(|r| (r.proto, r.ext_port));
        rules.dedup_by_key(|r| (r.proto, r.ext_port));
        DnatRules {
            rules,
            direct: Vec::new(),
        }
    }

    /// The same, the rules of the networks `routed` says are routed also reached at
    /// the container's own address and port.
    pub fn routed(mut self, routed: impl Fn(u16) -> bool) -> DnatRules<A> {
        let mut direct: Vec<_> = self
            .rules
            .iter()
            .filter(|r| routed(r.domain))
            .copied()
            .collect();
        direct.sort_by_key(|r| (r.proto, r.ip, r.port));
        direct.dedup_by_key(|r| (r.proto, r.ip, r.port));
        self.direct = direct;
        self
    }

    /// The rule of a routed network's container publishing `port` of `ip`.
    #[inline]
    pub fn find_direct(&self, proto: IpProtocol, ip: A::Addr, port: u16) -> Option<&DnatRule<A>> {
        self.direct
            .binary_search_by_key(&(proto, ip, port), |r| (r.proto, r.ip, r.port))
            .ok()
            .and_then(|i| self.direct.get(i))
    }

    #[inline]
    pub fn find(&self, proto: IpProtocol, ext_port: u16) -> Option<&DnatRule<A>> {
        self.rules
            .binary_search_by_key(&(proto, ext_port), |r| (r.proto, r.ext_port))
            .ok()
            .and_then(|i| self.rules.get(i))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[DnatRule<A>] {
        &self.rules
    }
}

/// Timeouts in seconds (see the module table).
pub mod timeout {
    pub const TCP_SYN_SENT: u32 = 120;
    pub const TCP_SYN_RECV: u32 = 60;
    pub const TCP_ESTABLISHED: u32 = 86400;
    pub const TCP_FIN_WAIT: u32 = 120;
    pub const TCP_TIME_WAIT: u32 = 120;
    pub const TCP_CLOSE: u32 = 10;
    pub const UDP_UNREPLIED: u32 = 30;
    pub const UDP_REPLIED: u32 = 120;
    pub const ICMP: u32 = 30;
}
