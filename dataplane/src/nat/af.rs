//! The address family a flow table holds: how a tuple is packed into the words the
//! table stores, compares and hashes. [`V4`] packs a tuple into two words (addresses,
//! then ports and protocol), exactly as the table did before it had a parameter, so
//! IPv4 lookups cost what they did; [`V6`] into five (each address in two words).
//!
//! Everything else of the table (probing, creation, ports, quotas, TCP states,
//! timeouts) is the same code for both families.

use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::table::Tuple;
use crate::wire::IpProtocol;

/// An address family of the flow table.
pub trait Af: Copy + Eq + Debug + Hash + Send + Sync + 'static {
    type Addr: Copy + Eq + Ord + Debug + Display + Hash + Send + Sync;
    /// A tuple packed in words.
    type Key: Copy + Eq + Debug;
    /// Where a flow keeps a packed tuple: atomics, read without a lock.
    type Stored: Send + Sync + super::zeroed::Zeroed;
    /// Who a flow counts against: a network and an inside address.
    type Owner: Copy + Eq + Hash;
    /// The family's ICMP, whose echo identifier stands in a port.
    const ICMP: IpProtocol;

    fn pack(t: &Tuple<Self>) -> Self::Key;
    fn unpack(proto: IpProtocol, k: &Self::Key) -> Tuple<Self>;
    /// The protocol a packed key holds.
    fn proto_of(k: &Self::Key) -> IpProtocol;
    fn load(s: &Self::Stored) -> Self::Key;
    fn store(s: &Self::Stored, k: &Self::Key);
    /// Whether two packed tuples are the same (word by word, no call to `memcmp`).
    fn same(a: &Self::Key, b: &Self::Key) -> bool;
    /// A keyed hash of a packed tuple.
    fn fingerprint(k: &Self::Key, seed: u64) -> u64;
    fn owner(domain: u16, addr: Self::Addr) -> Self::Owner;
}

/// IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum V4 {}

/// IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum V6 {}

/// One multiply-xorshift round: the table's hash of a word.
#[inline]
pub(super) fn mix(mut h: u64) -> u64 {
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 32;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 29)
}

/// Ports and protocol in one word: source port, destination port, protocol.
#[inline(always)]
fn ports_word(proto: IpProtocol, sport: u16, dport: u16) -> u64 {
    (u64::from(sport) << 48) | (u64::from(dport) << 32) | u64::from(u8::from(proto))
}

impl Af for V4 {
    type Addr = Ipv4Addr;
    type Key = (u64, u64);
    type Stored = [AtomicU64; 2];
    type Owner = u64;
    const ICMP: IpProtocol = IpProtocol::Icmp;

    #[inline(always)]
    fn pack(t: &Tuple<V4>) -> (u64, u64) {
        (
            (u64::from(u32::from(t.src)) << 32) | u64::from(u32::from(t.dst)),
            ports_word(t.proto, t.sport, t.dport),
        )
    }

    #[inline(always)]
    fn unpack(proto: IpProtocol, &(a, b): &(u64, u64)) -> Tuple<V4> {
        Tuple {
            proto,
            src: Ipv4Addr::from((a >> 32) as u32),
            sport: (b >> 48) as u16,
            dst: Ipv4Addr::from(a as u32),
            dport: (b >> 32) as u16,
        }
    }

    #[inline(always)]
    fn proto_of(k: &(u64, u64)) -> IpProtocol {
        IpProtocol::from(k.1 as u8)
    }

    #[inline(always)]
    fn load([a, b]: &[AtomicU64; 2]) -> (u64, u64) {
        (a.load(Relaxed), b.load(Relaxed))
    }

    #[inline(always)]
    fn store([a, b]: &[AtomicU64; 2], k: &(u64, u64)) {
        a.store(k.0, Relaxed);
        b.store(k.1, Relaxed);
    }

    #[inline(always)]
    fn same(a: &(u64, u64), b: &(u64, u64)) -> bool {
        a == b
    }

    #[inline(always)]
    fn fingerprint(&(a, b): &(u64, u64), seed: u64) -> u64 {
        mix(a ^ seed) ^ mix(b.wrapping_add(seed.rotate_left(17)))
    }

    #[inline(always)]
    fn owner(domain: u16, addr: Ipv4Addr) -> u64 {
        (u64::from(domain) << 32) | u64::from(u32::from(addr))
    }
}

/// An IPv6 address as two words.
#[inline(always)]
fn halves(a: Ipv6Addr) -> (u64, u64) {
    let v = u128::from(a);
    ((v >> 64) as u64, v as u64)
}

#[inline(always)]
fn join(hi: u64, lo: u64) -> Ipv6Addr {
    Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo))
}

impl Af for V6 {
    type Addr = Ipv6Addr;
    /// Source (two words), destination (two), ports and protocol.
    type Key = [u64; 5];
    type Stored = [AtomicU64; 5];
    type Owner = (u16, u128);
    const ICMP: IpProtocol = IpProtocol::Icmpv6;

    #[inline(always)]
    fn pack(t: &Tuple<V6>) -> [u64; 5] {
        let (s0, s1) = halves(t.src);
        let (d0, d1) = halves(t.dst);
        [s0, s1, d0, d1, ports_word(t.proto, t.sport, t.dport)]
    }

    #[inline(always)]
    fn unpack(proto: IpProtocol, k: &[u64; 5]) -> Tuple<V6> {
        let [s0, s1, d0, d1, p] = *k;
        Tuple {
            proto,
            src: join(s0, s1),
            sport: (p >> 48) as u16,
            dst: join(d0, d1),
            dport: (p >> 32) as u16,
        }
    }

    #[inline(always)]
    fn proto_of(&[.., p]: &[u64; 5]) -> IpProtocol {
        IpProtocol::from(p as u8)
    }

    #[inline(always)]
    fn load(s: &[AtomicU64; 5]) -> [u64; 5] {
        let [a, b, c, d, e] = s;
        [a, b, c, d, e].map(|w| w.load(Relaxed))
    }

    #[inline(always)]
    fn store(s: &[AtomicU64; 5], k: &[u64; 5]) {
        for (s, v) in s.iter().zip(k) {
            s.store(*v, Relaxed);
        }
    }

    #[inline(always)]
    fn same(&[a0, a1, a2, a3, a4]: &[u64; 5], &[b0, b1, b2, b3, b4]: &[u64; 5]) -> bool {
        ((a0 ^ b0) | (a1 ^ b1) | (a2 ^ b2) | (a3 ^ b3) | (a4 ^ b4)) == 0
    }

    #[inline(always)]
    fn fingerprint(&[s0, s1, d0, d1, p]: &[u64; 5], seed: u64) -> u64 {
        // Each address folded to a word by a keyed round over its high word (the low
        // word enters after it, so no choice of both words cancels out without the
        // seed), then as IPv4's two words.
        let src = mix(s0 ^ seed) ^ s1;
        let dst = mix(d0 ^ seed.rotate_left(31)) ^ d1;
        mix(src ^ seed) ^ mix(dst.wrapping_add(seed.rotate_left(17)) ^ p.rotate_left(7))
    }

    #[inline(always)]
    fn owner(domain: u16, addr: Ipv6Addr) -> (u16, u128) {
        (domain, u128::from(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_pack_and_unpack_to_the_same_tuple() {
        let t4 = Tuple::<V4> {
            proto: IpProtocol::Udp,
            src: Ipv4Addr::new(10, 0, 0, 2),
            sport: 5353,
            dst: Ipv4Addr::new(203, 0, 113, 9),
            dport: 53,
        };
        let k = V4::pack(&t4);
        assert_eq!(V4::unpack(V4::proto_of(&k), &k), t4);
        let t6 = Tuple::<V6> {
            proto: IpProtocol::Icmpv6,
            src: "fd00:1::2".parse().unwrap(),
            sport: 7,
            dst: "2001:db8::9".parse().unwrap(),
            dport: 0,
        };
        let k = V6::pack(&t6);
        assert_eq!(V6::unpack(V6::proto_of(&k), &k), t6);
        let s: [AtomicU64; 5] = Default::default();
        V6::store(&s, &k);
        assert_eq!(V6::load(&s), k);
    }
}
