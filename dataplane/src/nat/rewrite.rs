//! Translating packets in place: parse the tuple, find or create the flow, rewrite
//! addresses, ports or echo identifiers with RFC 1624 incremental checksum updates.
//!
//! A frame from an offloading TAP may carry a *partial* transport checksum (the
//! pseudo-header sum, not inverted, to be completed later by the kernel or the
//! segmenter): the caller says so and the rewrites use [`Checksum::Partial`], which
//! `wire` applies (an address change updates the field as a plain sum, a port change
//! leaves it alone).

use std::net::Ipv4Addr;

use super::af::{Af, V4, V6};
use super::table::{FlowTable, Hit, Refusal, Side, Tuple};
use super::{DnatRule, DnatRules};
use crate::wire::icmp::{IcmpType, is_error};
use crate::wire::ipv4::{split_quote, split_quote_mut};
use crate::wire::{Checksum, Icmpv4Packet, IpProtocol, Ipv4Packet, PortsHeader};

/// Why a packet was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatDrop {
    /// Too short or inconsistent.
    Malformed,
    /// A non-first fragment (no ports to match).
    Fragment,
    /// Arrived on the uplink for no known flow and no published port.
    NoFlow,
    /// The table is full: a new flow was refused.
    TableFull,
    /// The container holds its quota of flows: a new flow was refused.
    Quota,
    /// A protocol the NAT does not carry.
    Unsupported,
    /// Addressed to the uplink's own address but not a flow's (ping to it, ARP...): for
    /// the gateway service.
    Local,
    /// A packet of a flow whose TTL or hop limit runs out here, left untranslated: the
    /// gateway tells its sender (time exceeded), quoting it as it was sent.
    HopLimit,
}

/// What happened to a translated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatVerdict<A: Af = V4> {
    /// Rewritten to leave through the uplink (destination `dst`).
    Out { dst: A::Addr },
    /// Rewritten towards container `ip` in `domain`.
    In { domain: u16, ip: A::Addr },
}

/// The NAT: a flow table per address family and the rules of translation.
pub struct Nat {
    pub table: FlowTable,
    /// IPv6 flows: NAT66 masquerade, and the routed mode's tracking.
    pub table6: FlowTable<V6>,
}

/// Which address of a packet a translation rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The source address and port (or echo identifier): leaving through the uplink.
    Src,
    /// The destination address and port: arriving for a container.
    Dst,
}

/// An ICMP echo message of either family: a request or a reply.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Echo {
    Request,
    Reply,
}

/// The flow key of an ICMP echo: the identifier stands in the port of the side that
/// chose it (the source of a request, the destination of a reply).
#[inline(always)]
pub(super) fn echo_tuple<A: Af>(echo: Echo, id: u16, src: A::Addr, dst: A::Addr) -> Tuple<A> {
    let (sport, dport) = match echo {
        Echo::Request => (id, 0),
        Echo::Reply => (0, id),
    };
    Tuple {
        proto: A::ICMP,
        src,
        sport,
        dst,
        dport,
    }
}

/// An ICMPv4 type as an echo message.
#[inline(always)]
fn echo_of(ty: u8) -> Option<Echo> {
    match ty {
        IcmpType::ECHO_REQUEST => Some(Echo::Request),
        IcmpType::ECHO_REPLY => Some(Echo::Reply),
        _ => None,
    }
}

/// The flow key of a TCP or UDP packet and its TCP flags.
#[inline(always)]
fn ports_tuple(ip: &Ipv4Packet<&mut [u8]>, proto: IpProtocol) -> Result<(Tuple, u8), NatDrop> {
    let t = PortsHeader::new_checked(proto, ip.payload()).map_err(|_| NatDrop::Malformed)?;
    let key = Tuple {
        proto,
        src: ip.src(),
        sport: t.src_port(),
        dst: ip.dst(),
        dport: t.dst_port(),
    };
    Ok((key, t.tcp_flags()))
}

/// Rewrites one end of a translated packet: the address (IPv4 header checksum updated)
/// and the port or echo identifier, with the transport checksum kept right for `csum`.
#[inline(always)]
fn translate(
    ip: &mut Ipv4Packet<&mut [u8]>,
    proto: IpProtocol,
    end: End,
    addr: Ipv4Addr,
    port: u16,
    csum: Checksum,
) {
    let old = match end {
        End::Src => ip.rewrite_src(addr),
        End::Dst => ip.rewrite_dst(addr),
    };
    let payload = ip.payload_mut();
    if proto == IpProtocol::Icmp {
        // No pseudo-header: only the identifier.
        if let Ok(mut m) = Icmpv4Packet::new_checked(payload) {
            m.rewrite_echo_ident(port);
        }
        return;
    }
    if let Ok(mut t) = PortsHeader::new_checked(proto, payload) {
        t.translate(old, addr, end == End::Src, port, csum);
    }
}

/// A refused new flow as a drop.
pub(super) fn refused(r: Refusal) -> NatDrop {
    match r {
        Refusal::Quota => NatDrop::Quota,
        Refusal::Full | Refusal::NoPort => NatDrop::TableFull,
    }
}

/// The tuple of the packet the ICMP error `msg` quotes (its header and 8 bytes at
/// least), read before anything is rewritten.
fn quoted_tuple(msg: &[u8]) -> Result<Tuple, NatDrop> {
    let quote = msg.get(8..).ok_or(NatDrop::Malformed)?;
    let (inner, rest) = split_quote(quote).map_err(|_| NatDrop::Malformed)?;
    let proto = inner.protocol();
    let (sport, dport) = match proto {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let t = PortsHeader::new_checked(proto, rest).map_err(|_| NatDrop::Malformed)?;
            (t.src_port(), t.dst_port())
        }
        IpProtocol::Icmp => {
            let m = Icmpv4Packet::new_checked(rest).map_err(|_| NatDrop::Malformed)?;
            (m.echo_ident(), 0)
        }
        _ => return Err(NatDrop::Unsupported),
    };
    Ok(Tuple {
        proto,
        src: inner.src(),
        sport,
        dst: inner.dst(),
        dport,
    })
}

/// The key of the flow a quoted packet `q` belongs to, as seen from `from` (the quote
/// went the other way).
pub(super) fn quoted_flow_key<A: Af>(q: &Tuple<A>, from: Side) -> Result<Tuple<A>, NatDrop> {
    match from {
        // A quoted echo request we sent out: the flow's outside key is
        // (dst, 0) -> (ext, id).
        Side::Outside if q.proto == A::ICMP => Ok(Tuple {
            proto: A::ICMP,
            src: q.dst,
            sport: 0,
            dst: q.src,
            dport: q.sport,
        }),
        Side::Inside if q.proto == A::ICMP => Err(NatDrop::Unsupported),
        _ => Ok(q.reversed()),
    }
}

/// The flow of a packet from a container (`inside`, with its TCP `flags`): found, or
/// created with its external port on `ext` (never one `reserved` says is published),
/// and touched. Returns it with the packet's new source port (or echo identifier).
#[inline(always)]
pub(super) fn flow_out<A: Af>(
    table: &FlowTable<A>,
    (inside, flags): (&Tuple<A>, u8),
    (ext, domain): (A::Addr, u16),
    now: u32,
    reserved: impl Fn(IpProtocol, u16) -> bool,
) -> Result<(Hit<A>, u16), NatDrop> {
    let hit = match table.lookup(inside, Side::Inside, now) {
        Some(h) => h,
        None => table
            .create_outbound(*inside, ext, domain, now, reserved)
            .map_err(refused)?,
    };
    table.touch(&hit, inside.proto, flags, now);
    // New source: the outside tuple's destination.
    let port = if inside.proto == A::ICMP && inside.dport != 0 {
        hit.other.sport
    } else {
        hit.other.dport
    };
    Ok((hit, port))
}

/// The flow of a packet from outside (`outside`, with its TCP `flags`): found, or made
/// by `new` (a published port), and touched. Returns it with the packet's new
/// destination port (or echo identifier).
#[inline(always)]
pub(super) fn flow_in<A: Af>(
    table: &FlowTable<A>,
    (outside, flags): (&Tuple<A>, u8),
    now: u32,
    new: impl FnOnce() -> Result<Hit<A>, NatDrop>,
) -> Result<(Hit<A>, u16), NatDrop> {
    let hit = match table.lookup(outside, Side::Outside, now) {
        Some(h) => h,
        None => new()?,
    };
    table.touch(&hit, outside.proto, flags, now);
    // New destination: the inside tuple's source.
    let port = if outside.proto == A::ICMP && outside.sport != 0 {
        hit.other.dport
    } else {
        hit.other.sport
    };
    Ok((hit, port))
}

/// A flow for a packet from outside (`outside`, with its TCP `flags`) that matched
/// none: only a new connection to a published port (for TCP only a SYN; `rule`, the
/// port's rule, found by the caller) makes one, to the rule's container (DNAT, or
/// DNAT66: the client's address kept). Both families.
pub(super) fn published_flow<A: Af>(
    table: &FlowTable<A>,
    (outside, flags): (&Tuple<A>, u8),
    rule: Option<&DnatRule<A>>,
    now: u32,
) -> Result<Hit<A>, NatDrop> {
    // Echo requests to the uplink's address are the gateway's to answer.
    if outside.proto == A::ICMP {
        return Err(NatDrop::Local);
    }
    let rule = rule.ok_or(NatDrop::NoFlow)?;
    if outside.proto == IpProtocol::Tcp && flags & 0x12 != 0x02 {
        return Err(NatDrop::NoFlow);
    }
    table
        .create_inbound(*outside, (rule.ip, rule.port), rule.domain, now)
        .map_err(refused)
}

/// Whether a TCP or UDP packet from a container (`inside`) to the uplink's address is
/// taken by nothing there: neither a flow of its own (a hairpin connection's reply,
/// say) nor a published port. Both families.
pub(super) fn unclaimed<A: Af>(
    table: &FlowTable<A>,
    inside: &Tuple<A>,
    rules: &DnatRules<A>,
    now: u32,
) -> bool {
    rules.find(inside.proto, inside.dport).is_none()
        && table.lookup(inside, Side::Inside, now).is_none()
}

/// Rewrites an ICMP error about a flow: the outer address at `end` becomes `addr`, and
/// the quoted packet's opposite end becomes `addr` and `port`; the ICMP checksum is
/// recomputed (errors are small).
fn translate_error(ip: &mut Ipv4Packet<&mut [u8]>, end: End, addr: Ipv4Addr, port: u16) {
    match end {
        End::Src => ip.rewrite_src(addr),
        End::Dst => ip.rewrite_dst(addr),
    };
    let msg = ip.payload_mut();
    if let Some(quote) = msg.get_mut(8..)
        && let Ok((mut inner, rest)) = split_quote_mut(quote)
    {
        let proto = inner.protocol();
        // The quote went the other way: our destination was its source.
        let (old, inner_end) = match end {
            End::Dst => (inner.rewrite_src(addr), End::Src),
            End::Src => (inner.rewrite_dst(addr), End::Dst),
        };
        if proto == IpProtocol::Icmp {
            if let Ok(mut m) = Icmpv4Packet::new_checked(rest) {
                m.set_echo_ident(port);
            }
        } else if let Ok(mut t) = PortsHeader::new_checked(proto, rest) {
            t.update_for_address(old, addr, Checksum::Full);
            match inner_end {
                End::Src => t.rewrite_src_port(port, Checksum::Full),
                End::Dst => t.rewrite_dst_port(port, Checksum::Full),
            }
        }
    }
    if let Ok(mut m) = Icmpv4Packet::new_checked(msg) {
        m.fill_checksum();
    }
}

impl Nat {
    pub fn new(max_flows: usize) -> Nat {
        Self::with_quota(max_flows, 0)
    }

    /// Tables of `max_flows` each, `quota` of them per container (0: the default
    /// share).
    pub fn with_quota(max_flows: usize, quota: usize) -> Nat {
        Nat {
            table: FlowTable::with_quota(max_flows, quota),
            table6: FlowTable::with_quota(max_flows, quota),
        }
    }

    /// The IPv4 view of a packet the NAT can translate: whole or first fragment, TCP,
    /// UDP or ICMP, with the transport header's fixed part present.
    #[inline]
    fn parse(pkt: &mut [u8]) -> Result<Ipv4Packet<&mut [u8]>, NatDrop> {
        Ipv4Packet::new_checked(pkt).map_err(|_| NatDrop::Malformed)
    }

    /// What translation needs of a checked IPv4 packet: not a fragment, a protocol NAT
    /// knows, its ports (or echo identifier) inside the packet.
    #[inline(always)]
    fn translatable(ip: &Ipv4Packet<&mut [u8]>) -> Result<(), NatDrop> {
        if ip.frag_offset() != 0 {
            return Err(NatDrop::Fragment);
        }
        let need = match ip.protocol() {
            IpProtocol::Tcp => 20,
            IpProtocol::Udp | IpProtocol::Icmp => 8,
            _ => return Err(NatDrop::Unsupported),
        };
        if ip.payload().len() < need {
            return Err(NatDrop::Malformed);
        }
        Ok(())
    }

    /// A packet from a container of `domain`, leaving through the uplink whose address
    /// is `ext`. The source becomes `ext` and the flow's external port.
    pub fn outbound(
        &self,
        pkt: &mut [u8],
        domain: u16,
        ext: Ipv4Addr,
        rules: &DnatRules,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict, NatDrop> {
        let ip = Self::parse(pkt)?;
        self.outbound_ip(ip, domain, ext, rules, partial, now)
    }

    /// [`Nat::outbound`] on a packet the caller already holds a checked view of.
    #[inline]
    pub fn outbound_ip(
        &self,
        mut ip: Ipv4Packet<&mut [u8]>,
        domain: u16,
        ext: Ipv4Addr,
        rules: &DnatRules,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict, NatDrop> {
        Self::translatable(&ip)?;
        let (dst, proto) = (ip.dst(), ip.protocol());
        let (inside, flags) = if proto == IpProtocol::Icmp {
            let (ty, id) = echo_fields(&ip);
            if is_error(ty) {
                return self
                    .icmp_error(ip, Side::Inside, now)
                    .map(|_| NatVerdict::Out { dst });
            }
            let echo = echo_of(ty).ok_or(NatDrop::Unsupported)?;
            (echo_tuple(echo, id, ip.src(), dst), 0)
        } else {
            ports_tuple(&ip, proto)?
        };
        let (hit, port) = flow_out(
            &self.table,
            (&inside, flags),
            (ext, domain),
            now,
            |p, port| rules.find(p, port).is_some(),
        )?;
        let csum = Checksum::partial_if(partial);
        translate(&mut ip, proto, End::Src, hit.other.dst, port, csum);
        Ok(NatVerdict::Out { dst })
    }

    /// Whether a packet from a container to the uplink's own address is for that
    /// address itself: an echo request (or a reply of no flow), or TCP or UDP that no
    /// flow and no published port takes (a closed port). The gateway answers it as
    /// the address's owner would, and no flow is made. ICMP errors and what the NAT
    /// does not carry are left to the translation (which makes no flow of them). Off the fast path: the caller asks only
    /// for a packet to the uplink's address.
    #[cold]
    #[inline(never)]
    pub fn for_uplink_address(
        &self,
        ip: &Ipv4Packet<&mut [u8]>,
        rules: &DnatRules,
        now: u32,
    ) -> bool {
        if Self::translatable(ip).is_err() {
            return false;
        }
        let proto = ip.protocol();
        if proto == IpProtocol::Icmp {
            let (ty, id) = echo_fields(ip);
            return match echo_of(ty) {
                Some(Echo::Request) => true,
                Some(Echo::Reply) => {
                    let key = echo_tuple(Echo::Reply, id, ip.src(), ip.dst());
                    self.table.lookup(&key, Side::Inside, now).is_none()
                }
                None => false,
            };
        }
        ports_tuple(ip, proto).is_ok_and(|(key, _)| unclaimed(&self.table, &key, rules, now))
    }

    /// A packet for `ext` translated back in at once (hairpin: it left a container and
    /// its TTL was stepped on the way out, so it is not looked at again). The
    /// destination becomes the container's address and port; a new connection to a
    /// published port creates its flow.
    pub fn inbound(
        &self,
        pkt: &mut [u8],
        ext: Ipv4Addr,
        rules: &DnatRules,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict, NatDrop> {
        let ip = Self::parse(pkt)?;
        self.inbound_view(ip, (ext, false), rules, partial, now)
    }

    /// A packet that arrived on the uplink for `ext`, as [`Nat::inbound`], on a
    /// checked view; one of a flow at TTL 1 is left untranslated
    /// ([`NatDrop::HopLimit`]: forwarding it would take it to 0).
    #[inline]
    pub fn inbound_ip(
        &self,
        ip: Ipv4Packet<&mut [u8]>,
        ext: Ipv4Addr,
        rules: &DnatRules,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict, NatDrop> {
        self.inbound_view(ip, (ext, true), rules, partial, now)
    }

    /// [`Nat::inbound_ip`], checking the TTL where `hops` says.
    #[inline(always)]
    fn inbound_view(
        &self,
        mut ip: Ipv4Packet<&mut [u8]>,
        (ext, hops): (Ipv4Addr, bool),
        rules: &DnatRules,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict, NatDrop> {
        Self::translatable(&ip)?;
        if ip.dst() != ext {
            return Err(NatDrop::Local);
        }
        let proto = ip.protocol();
        let (outside, flags) = if proto == IpProtocol::Icmp {
            let (ty, id) = echo_fields(&ip);
            if is_error(ty) {
                return self.icmp_error(ip, Side::Outside, now);
            }
            let echo = echo_of(ty).ok_or(NatDrop::Unsupported)?;
            (echo_tuple(echo, id, ip.src(), ext), 0)
        } else {
            ports_tuple(&ip, proto)?
        };
        let (hit, port) = flow_in(&self.table, (&outside, flags), now, || {
            let rule = rules.find(outside.proto, outside.dport);
            published_flow(&self.table, (&outside, flags), rule, now)
        })?;
        // Forwarded to the container: a router would decrement the TTL to 0.
        if hops && ip.ttl() <= 1 {
            return Err(NatDrop::HopLimit);
        }
        let csum = Checksum::partial_if(partial);
        translate(&mut ip, proto, End::Dst, hit.other.src, port, csum);
        Ok(NatVerdict::In {
            domain: hit.domain,
            ip: hit.other.src,
        })
    }

    /// Translates an ICMP error about a tracked flow: the outer address on our side and
    /// the quoted packet's matching address and port, with every checksum made right.
    fn icmp_error(
        &self,
        mut ip: Ipv4Packet<&mut [u8]>,
        from: Side,
        now: u32,
    ) -> Result<NatVerdict, NatDrop> {
        let key = quoted_flow_key(&quoted_tuple(ip.payload())?, from)?;
        let hit = self.table.lookup(&key, from, now).ok_or(NatDrop::NoFlow)?;
        match from {
            Side::Outside => {
                // Outer destination (us) and quoted source (ext:port) -> the container.
                let (cip, cport) = (hit.other.src, hit.other.sport);
                translate_error(&mut ip, End::Dst, cip, cport);
                Ok(NatVerdict::In {
                    domain: hit.domain,
                    ip: cip,
                })
            }
            Side::Inside => {
                // Outer source (the container) and quoted destination -> ext:port.
                let (eip, eport) = (hit.other.dst, hit.other.dport);
                translate_error(&mut ip, End::Src, eip, eport);
                Ok(NatVerdict::Out { dst: hit.other.src })
            }
        }
    }

    /// Prefetches the flow-table slot of a packet's key (for a batch's first pass; both
    /// sides' keys live in one index).
    #[inline]
    pub fn prefetch(&self, pkt: &[u8]) {
        // A hint, not a decision: only the fixed header's length is checked (what its
        // accessors read), the rest is left to the translation proper.
        if pkt.len() < crate::wire::ipv4::MIN_HEADER_LEN {
            return;
        }
        let ip = Ipv4Packet::new_unchecked(pkt);
        let proto = ip.protocol();
        // ICMP and other protocols key differently; prefetching them is not worth it.
        let Some(l4) = pkt.get(ip.header_len()..) else {
            return;
        };
        let Ok(t) = PortsHeader::new_checked(proto, l4) else {
            return;
        };
        self.table.prefetch(&Tuple {
            proto,
            src: ip.src(),
            sport: t.src_port(),
            dst: ip.dst(),
            dport: t.dst_port(),
        });
    }
}

/// The type and identifier of an ICMP message (the parse guaranteed its 8 bytes).
#[inline(always)]
fn echo_fields(ip: &Ipv4Packet<&mut [u8]>) -> (u8, u16) {
    match Icmpv4Packet::new_checked(ip.payload()) {
        Ok(m) => (m.msg_type(), m.echo_ident()),
        Err(_) => (0xff, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::DnatRule;
    use crate::uplink::socket::{build_ip, build_udp};
    use crate::wire::checksum;
    use crate::wire::{TcpPacket, UdpPacket};

    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const R: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
    const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, data: &[u8]) -> Vec<u8> {
        let mut seg = vec![0u8; 20 + data.len()];
        seg[20..].copy_from_slice(data);
        {
            let mut t = TcpPacket::new_unchecked(&mut seg[..]);
            t.set_src_port(src.1);
            t.set_dst_port(dst.1);
            t.set_seq(1000);
            t.set_header_len(20);
            t.set_flags(flags);
            t.set_window(65535);
            t.fill_checksum(src.0, dst.0);
        }
        build_ip(src.0, dst.0, IpProtocol::Tcp, &seg).unwrap()
    }

    fn valid(pkt: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
        let ip = Ipv4Packet::new_checked(pkt).unwrap();
        assert!(ip.verify_checksum(), "IP checksum");
        match ip.protocol() {
            IpProtocol::Tcp => assert!(
                TcpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(ip.src(), ip.dst()),
                "TCP checksum"
            ),
            IpProtocol::Udp => assert!(
                UdpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(ip.src(), ip.dst()),
                "UDP checksum"
            ),
            IpProtocol::Icmp => assert!(
                Icmpv4Packet::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(),
                "ICMP checksum"
            ),
            _ => {}
        }
        // etherparse agrees on the IPv4 header.
        let h = etherparse::Ipv4HeaderSlice::from_slice(pkt).unwrap();
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        (ip.src(), ip.dst())
    }

    fn ports(pkt: &[u8]) -> (u16, u16) {
        let ip = Ipv4Packet::new_checked(pkt).unwrap();
        let p = ip.payload();
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    }

    #[test]
    fn tcp_handshake_both_ways_with_valid_checksums() {
        let nat = Nat::new(64);
        let rules = DnatRules::default();
        let mut syn = tcp((C, 40000), (R, 80), 0x02, &[]);
        assert_eq!(
            nat.outbound(&mut syn, 1, EXT, &rules, false, 0),
            Ok(NatVerdict::Out { dst: R })
        );
        assert_eq!(valid(&syn), (EXT, R));
        assert_eq!(ports(&syn), (40000, 80));
        let mut synack = tcp((R, 80), (EXT, 40000), 0x12, &[]);
        assert_eq!(
            nat.inbound(&mut synack, EXT, &rules, false, 0),
            Ok(NatVerdict::In { domain: 1, ip: C })
        );
        assert_eq!(valid(&synack), (R, C));
        assert_eq!(ports(&synack), (80, 40000));
        let mut data = tcp((C, 40000), (R, 80), 0x18, b"GET /");
        nat.outbound(&mut data, 1, EXT, &rules, false, 0).unwrap();
        valid(&data);
        assert_eq!(nat.table.list(0)[0].state, "ESTABLISHED");
        let mut rst = tcp((R, 80), (EXT, 40000), 0x04, &[]);
        nat.inbound(&mut rst, EXT, &rules, false, 0).unwrap();
        assert_eq!(nat.table.list(0)[0].state, "CLOSE");
    }

    #[test]
    fn udp_and_colliding_ports() {
        let nat = Nat::new(64);
        let rules = DnatRules::default();
        let mut a = build_udp(C, 5353, R, 53, b"q").unwrap();
        let mut b = build_udp(Ipv4Addr::new(10, 0, 0, 3), 5353, R, 53, b"q").unwrap();
        nat.outbound(&mut a, 0, EXT, &rules, false, 0).unwrap();
        nat.outbound(&mut b, 0, EXT, &rules, false, 0).unwrap();
        valid(&a);
        valid(&b);
        assert_eq!(ports(&a).0, 5353);
        let pb = ports(&b).0;
        assert_ne!(pb, 5353);
        let mut reply = build_udp(R, 53, EXT, pb, b"a").unwrap();
        assert_eq!(
            nat.inbound(&mut reply, EXT, &rules, false, 0),
            Ok(NatVerdict::In {
                domain: 0,
                ip: Ipv4Addr::new(10, 0, 0, 3)
            })
        );
        valid(&reply);
        assert_eq!(ports(&reply), (53, 5353));
        // At TTL 1 a flow's packet from the uplink stays as it came (time exceeded is
        // due); hairpinned (`inbound`), its TTL was stepped on the way out already.
        let mut late = build_udp(R, 53, EXT, pb, b"a").unwrap();
        late[8] = 1;
        let before = late.clone();
        let view = Ipv4Packet::new_checked(&mut late[..]).unwrap();
        assert_eq!(
            nat.inbound_ip(view, EXT, &rules, false, 0),
            Err(NatDrop::HopLimit)
        );
        assert_eq!(late, before);
        assert!(matches!(
            nat.inbound(&mut late, EXT, &rules, false, 0),
            Ok(NatVerdict::In { .. })
        ));
        // A zero UDP checksum stays zero.
        let mut z = build_udp(C, 6000, R, 53, b"z").unwrap();
        z[26] = 0;
        z[27] = 0;
        nat.outbound(&mut z, 0, EXT, &rules, false, 0).unwrap();
        assert_eq!(&z[26..28], &[0, 0]);
    }

    #[test]
    fn echo_ids_are_mapped() {
        let nat = Nat::new(64);
        let rules = DnatRules::default();
        let mk = |src: Ipv4Addr, dst: Ipv4Addr, ty: u8, id: u16| {
            let mut m = vec![ty, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1, 9, 9];
            let c = checksum::checksum(&m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            build_ip(src, dst, IpProtocol::Icmp, &m).unwrap()
        };
        let mut a = mk(C, R, 8, 7);
        let mut b = mk(Ipv4Addr::new(10, 0, 0, 3), R, 8, 7);
        nat.outbound(&mut a, 0, EXT, &rules, false, 0).unwrap();
        nat.outbound(&mut b, 0, EXT, &rules, false, 0).unwrap();
        valid(&a);
        valid(&b);
        let id_b = u16::from_be_bytes([b[24], b[25]]);
        assert_ne!(id_b, 7);
        let mut reply = mk(R, EXT, 0, id_b);
        assert_eq!(
            nat.inbound(&mut reply, EXT, &rules, false, 0),
            Ok(NatVerdict::In {
                domain: 0,
                ip: Ipv4Addr::new(10, 0, 0, 3)
            })
        );
        valid(&reply);
        assert_eq!(u16::from_be_bytes([reply[24], reply[25]]), 7);
        // A ping to the uplink's own address is the gateway's.
        let mut to_us = mk(R, EXT, 8, 1);
        assert_eq!(
            nat.inbound(&mut to_us, EXT, &rules, false, 0),
            Err(NatDrop::Local)
        );
    }

    #[test]
    fn icmp_errors_are_translated_back_to_the_inner_flow() {
        let nat = Nat::new(64);
        let rules = DnatRules::default();
        let mut out = build_udp(C, 5000, R, 33434, b"probe").unwrap();
        nat.outbound(&mut out, 4, EXT, &rules, false, 0).unwrap();
        // A router answers "port unreachable" quoting what we sent (header + 8 bytes).
        let router = Ipv4Addr::new(192, 0, 2, 1);
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&out[..28]);
        let c = checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut err = build_ip(router, EXT, IpProtocol::Icmp, &m).unwrap();
        assert_eq!(
            nat.inbound(&mut err, EXT, &rules, false, 0),
            Ok(NatVerdict::In { domain: 4, ip: C })
        );
        assert_eq!(valid(&err), (router, C));
        let inner = Ipv4Packet::new_checked(&err[28..48])
            .unwrap_or_else(|_| Ipv4Packet::new_unchecked(&err[28..48]));
        assert!(
            checksum::checksum(&err[28..48]) == 0,
            "inner header checksum"
        );
        assert_eq!(inner.src(), C);
        assert_eq!(u16::from_be_bytes([err[48], err[49]]), 5000);
    }

    /// What a container sends to the uplink's own address: a ping or a closed port is
    /// the address's own (no flow made); a published port, a published flow's reply
    /// (from its container, to the uplink's address) and an ICMP error are the
    /// translation's.
    #[test]
    fn the_uplink_address_itself_is_told_from_published_ports_and_flows() {
        let nat = Nat::new(64);
        let rules = DnatRules::new(vec![DnatRule {
            proto: IpProtocol::Tcp,
            ext_port: 8080,
            domain: 0,
            ip: C,
            port: 80,
        }]);
        let mine = |pkt: &mut Vec<u8>| {
            let ip = Ipv4Packet::new_checked(&mut pkt[..]).unwrap();
            nat.for_uplink_address(&ip, &rules, 0)
        };
        let other = Ipv4Addr::new(10, 0, 0, 3);
        assert!(
            mine(&mut tcp((other, 40000), (EXT, 9), 0x02, &[])),
            "closed TCP"
        );
        let udp = build_udp(other, 5000, EXT, 53, b"q").unwrap();
        assert!(mine(&mut udp.clone()), "closed UDP");
        let ping = build_ip(other, EXT, IpProtocol::Icmp, &[8, 0, 0, 0, 0, 7, 0, 1]).unwrap();
        assert!(mine(&mut ping.clone()), "ping");
        let reply = build_ip(other, EXT, IpProtocol::Icmp, &[0, 0, 0, 0, 0, 7, 0, 1]).unwrap();
        assert!(mine(&mut reply.clone()), "an echo reply of no flow");
        let mut err = build_ip(other, EXT, IpProtocol::Icmp, &[3, 3, 0, 0, 0, 0, 0, 0]).unwrap();
        err.extend_from_slice(&udp[..28]);
        assert!(!mine(&mut err), "an ICMP error is the translation's");
        assert!(nat.table.is_empty(), "asking makes no flow");
        // A published port: hairpinned. Its container's reply to the uplink's address
        // belongs to the flow the first packet made.
        let mut syn = tcp((other, 40001), (EXT, 8080), 0x02, &[]);
        assert!(!mine(&mut syn));
        assert!(nat.outbound(&mut syn, 0, EXT, &rules, false, 0).is_ok());
        let back = ports(&syn).0;
        assert!(nat.inbound(&mut syn, EXT, &rules, false, 0).is_ok());
        assert!(
            !mine(&mut tcp((C, 80), (EXT, back), 0x12, &[])),
            "the reply"
        );
        assert!(
            mine(&mut tcp((C, 80), (EXT, back + 1), 0x12, &[])),
            "no flow's"
        );
    }

    #[test]
    fn published_port_dnat_and_reply() {
        let nat = Nat::new(64);
        let rules = DnatRules::new(vec![DnatRule {
            proto: IpProtocol::Tcp,
            ext_port: 8080,
            domain: 2,
            ip: C,
            port: 80,
        }]);
        let client = Ipv4Addr::new(192, 0, 2, 50);
        // Not a SYN: no flow.
        let mut ack = tcp((client, 50000), (EXT, 8080), 0x10, &[]);
        assert_eq!(
            nat.inbound(&mut ack, EXT, &rules, false, 0),
            Err(NatDrop::NoFlow)
        );
        let mut syn = tcp((client, 50000), (EXT, 8080), 0x02, &[]);
        assert_eq!(
            nat.inbound(&mut syn, EXT, &rules, false, 0),
            Ok(NatVerdict::In { domain: 2, ip: C })
        );
        assert_eq!(
            valid(&syn),
            (client, C),
            "the container sees the real client"
        );
        assert_eq!(ports(&syn), (50000, 80));
        let mut synack = tcp((C, 80), (client, 50000), 0x12, &[]);
        assert_eq!(
            nat.outbound(&mut synack, 2, EXT, &rules, false, 0),
            Ok(NatVerdict::Out { dst: client })
        );
        assert_eq!(valid(&synack), (EXT, client));
        assert_eq!(ports(&synack), (8080, 50000));
        // Unpublished ports are closed.
        let mut other = tcp((client, 50001), (EXT, 9090), 0x02, &[]);
        assert_eq!(
            nat.inbound(&mut other, EXT, &rules, false, 0),
            Err(NatDrop::NoFlow)
        );
    }

    #[test]
    fn hairpin_composes_out_then_in() {
        let nat = Nat::new(64);
        let b = Ipv4Addr::new(10, 0, 0, 7);
        let rules = DnatRules::new(vec![DnatRule {
            proto: IpProtocol::Tcp,
            ext_port: 8080,
            domain: 2,
            ip: b,
            port: 80,
        }]);
        let mut syn = tcp((C, 41000), (EXT, 8080), 0x02, &[]);
        assert_eq!(
            nat.outbound(&mut syn, 2, EXT, &rules, false, 0),
            Ok(NatVerdict::Out { dst: EXT })
        );
        assert_eq!(
            nat.inbound(&mut syn, EXT, &rules, false, 0),
            Ok(NatVerdict::In { domain: 2, ip: b })
        );
        let (src, dst) = valid(&syn);
        assert_eq!((src, dst), (EXT, b));
        let sp = ports(&syn).0;
        // B answers to EXT:sp; out then in again reaches A.
        let mut synack = tcp((b, 80), (EXT, sp), 0x12, &[]);
        assert!(
            matches!(nat.outbound(&mut synack, 2, EXT, &rules, false, 0), Ok(NatVerdict::Out { dst }) if dst == EXT)
        );
        assert_eq!(
            nat.inbound(&mut synack, EXT, &rules, false, 0),
            Ok(NatVerdict::In { domain: 2, ip: C })
        );
        assert_eq!(valid(&synack), (EXT, C));
        assert_eq!(ports(&synack), (8080, 41000));
    }

    #[test]
    fn partial_checksums_are_updated_as_sums() {
        let nat = Nat::new(64);
        let rules = DnatRules::default();
        let mut p = tcp((C, 40000), (R, 80), 0x02, b"x");
        // Make the checksum partial: the folded pseudo-header sum, not inverted.
        let pseudo = checksum::fold(checksum::pseudo_header_v4(C, R, 6, 21));
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        nat.outbound(&mut p, 0, EXT, &rules, true, 0).unwrap();
        let expect = checksum::fold(checksum::pseudo_header_v4(EXT, R, 6, 21));
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), expect);
        // Completing it gives a valid segment.
        let c = !checksum::fold(checksum::sum(&p[20..]));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        valid(&p);
    }

    #[test]
    fn fragments_and_garbage() {
        let nat = Nat::new(64);
        let rules = DnatRules::default();
        let mut f = build_udp(C, 1, R, 2, b"abc").unwrap();
        f[6] = 0x00;
        f[7] = 0x10; // offset 128
        assert_eq!(
            nat.outbound(&mut f, 0, EXT, &rules, false, 0),
            Err(NatDrop::Fragment)
        );
        assert_eq!(
            nat.outbound(&mut [0u8; 10], 0, EXT, &rules, false, 0),
            Err(NatDrop::Malformed)
        );
        let mut gre = build_ip(C, R, IpProtocol::from(47), &[0; 8]).unwrap();
        assert_eq!(
            nat.outbound(&mut gre, 0, EXT, &rules, false, 0),
            Err(NatDrop::Unsupported)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn random_and_mutated_packets_never_panic_and_translate_validly(
            flips in proptest::collection::vec((0usize..60, proptest::prelude::any::<u8>()), 0..6),
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            inbound in proptest::prelude::any::<bool>(),
        ) {
            let nat = Nat::new(64);
            let rules = DnatRules::new(vec![DnatRule { proto: IpProtocol::Udp, ext_port: 53, domain: 0, ip: C, port: 53 }]);
            let mut r = raw.clone();
            let _ = nat.outbound(&mut r, 0, EXT, &rules, false, 0);
            let mut r = raw;
            let _ = nat.inbound(&mut r, EXT, &rules, false, 0);
            let mut p = if inbound { build_udp(R, 999, EXT, 53, b"hello").unwrap() } else { tcp((C, 1234), (R, 80), 0x02, b"hi") };
            for (i, v) in flips {
                if let Some(x) = p.get_mut(i) { *x = v; }
            }
            // Keep the checksums right for the mutated bytes, then translate.
            if let Ok(mut ip) = Ipv4Packet::new_checked(&mut p[..]) {
                ip.fill_checksum();
            }
            let before = p.clone();
            let v = if inbound { nat.inbound(&mut p, EXT, &rules, false, 0) } else { nat.outbound(&mut p, 0, EXT, &rules, false, 0) };
            if v.is_ok() {
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                proptest::prop_assert!(ip.verify_checksum());
                // Transport checksums stay as valid (or invalid) as they were.
                let ok_before = {
                    let b = Ipv4Packet::new_checked(&before[..]).unwrap();
                    match b.protocol() {
                        IpProtocol::Tcp => TcpPacket::new_checked(b.payload()).map(|t| t.verify_checksum(b.src(), b.dst())).unwrap_or(false),
                        IpProtocol::Udp => UdpPacket::new_checked(b.payload()).map(|u| u.verify_checksum(b.src(), b.dst())).unwrap_or(false),
                        _ => false,
                    }
                };
                if ok_before {
                    let ok_after = match ip.protocol() {
                        IpProtocol::Tcp => TcpPacket::new_checked(ip.payload()).map(|t| t.verify_checksum(ip.src(), ip.dst())).unwrap_or(false),
                        IpProtocol::Udp => UdpPacket::new_checked(ip.payload()).map(|u| u.verify_checksum(ip.src(), ip.dst())).unwrap_or(false),
                        _ => true,
                    };
                    proptest::prop_assert!(ok_after);
                }
            }
        }
    }
}
