//! IPv6 through the NAT: masquerade (NAT66, as Docker's default ip6tables rules) and
//! the routed mode's connection tracking, on the same flow logic as IPv4
//! ([`flow_out`], [`flow_in`], the generic [`FlowTable`](super::FlowTable)). What
//! differs is only the packet: no header checksum, the upper layer found behind the
//! extension headers, an ICMPv6 checksum that covers the pseudo-header (so an echo's
//! identifier and address change together), and errors quoting an IPv6 packet.
//!
//! Published ports (DNAT66): a new TCP SYN or UDP datagram to the uplink's address on a
//! published port makes a flow to the container's IPv6 address and port (the client's
//! address kept), as IPv4's DNAT does; hairpin (a container reaching the uplink's
//! address) goes out masqueraded and comes back in at once.
//!
//! Routed mode (`ext` None): the flow is tracked with the container's own address as
//! its outside address, nothing is rewritten, and a packet from outside to the
//! container's address passes for a flow the container started, or as a new
//! connection to a port the container publishes (Docker's routed mode: the container
//! port, at its address, untranslated). A routed network's published ports are also
//! reached on the uplink's address as a masqueraded one's are: such a flow is
//! translated both ways whatever the network's mode.

use std::net::Ipv6Addr;

use super::DnatRules;
use super::af::V6;
use super::rewrite::{
    Echo, End, echo_tuple, flow_in, flow_out, published_flow, quoted_flow_key, unclaimed,
};
use super::table::{Hit, Side, Tuple};
use super::{Nat, NatDrop, NatVerdict};
use crate::wire::icmpv6::{Icmpv6Packet, is_error};
use crate::wire::ipv6::{HEADER_LEN, Icmpv6Type, NextHeader, Upper};
use crate::wire::{Checksum, IpProtocol, Ipv6Packet, PortsHeader};

/// The upper-layer protocol of a packet the NAT translates and where its header
/// starts: TCP, UDP or ICMPv6, first fragments and whole packets only.
#[inline(always)]
fn upper_of(ip: &Ipv6Packet<&mut [u8]>) -> Result<(IpProtocol, usize), NatDrop> {
    let (proto, offset) = match ip.next_header() {
        // Right behind the fixed header (nearly every packet): no walk.
        NextHeader::TCP | NextHeader::UDP | NextHeader::ICMPV6 => {
            (IpProtocol::from(ip.next_header()), HEADER_LEN)
        }
        _ => match ip.upper() {
            Ok(Upper::At { proto, offset }) => (IpProtocol::from(proto), offset),
            Ok(Upper::LaterFragment) => return Err(NatDrop::Fragment),
            Ok(Upper::Opaque) => return Err(NatDrop::Unsupported),
            Err(_) => return Err(NatDrop::Malformed),
        },
    };
    let need = match proto {
        IpProtocol::Tcp => crate::wire::tcp::MIN_HEADER_LEN,
        IpProtocol::Udp => crate::wire::ports::MIN_LEN,
        IpProtocol::Icmpv6 => crate::wire::icmpv6::HEADER_LEN,
        _ => return Err(NatDrop::Unsupported),
    };
    if ip.packet().len() < offset + need {
        return Err(NatDrop::Malformed);
    }
    Ok((proto, offset))
}

/// The flow key of a packet (and its TCP flags), or, for an ICMPv6 error, None.
#[inline(always)]
fn key_of(
    ip: &Ipv6Packet<&mut [u8]>,
    (proto, offset): (IpProtocol, usize),
    dst: Ipv6Addr,
) -> Result<Option<(Tuple<V6>, u8)>, NatDrop> {
    let upper = ip.packet().get(offset..).ok_or(NatDrop::Malformed)?;
    if proto == IpProtocol::Icmpv6 {
        let m = Icmpv6Packet::new_checked(upper).map_err(|_| NatDrop::Malformed)?;
        let echo = match m.msg_type() {
            Icmpv6Type::ECHO_REQUEST => Echo::Request,
            Icmpv6Type::ECHO_REPLY => Echo::Reply,
            ty if is_error(ty) => return Ok(None),
            _ => return Err(NatDrop::Unsupported),
        };
        return Ok(Some((echo_tuple(echo, m.echo_ident(), ip.src(), dst), 0)));
    }
    let t = PortsHeader::new_checked(proto, upper).map_err(|_| NatDrop::Malformed)?;
    let key = Tuple {
        proto,
        src: ip.src(),
        sport: t.src_port(),
        dst,
        dport: t.dst_port(),
    };
    Ok(Some((key, t.tcp_flags())))
}

/// Rewrites one end of a translated packet from `old` (the address the flow key read
/// there) to `addr`, and the port or echo identifier, the upper layer's checksum kept
/// right for `csum`.
#[inline(always)]
fn translate(
    ip: &mut Ipv6Packet<&mut [u8]>,
    (proto, offset): (IpProtocol, usize),
    (end, old, addr, port): (End, Ipv6Addr, Ipv6Addr, u16),
    csum: Checksum,
) {
    match end {
        End::Src => ip.set_src(addr),
        End::Dst => ip.set_dst(addr),
    }
    let upper = ip.upper_mut(offset);
    if proto == IpProtocol::Icmpv6 {
        if let Ok(mut m) = Icmpv6Packet::new_checked(upper) {
            m.translate_echo(old, addr, port);
        }
        return;
    }
    if let Ok(mut t) = PortsHeader::new_checked(proto, upper) {
        t.translate(old, addr, end == End::Src, port, csum);
    }
}

/// The tuple of the packet an ICMPv6 error quotes (its fixed header, extension headers
/// and the first 8 bytes of its upper layer at least).
fn quoted_tuple(quote: &[u8]) -> Result<Tuple<V6>, NatDrop> {
    let inner = Ipv6Packet::new_checked(quote).map_err(|_| NatDrop::Malformed)?;
    let Ok(Upper::At { proto, offset }) = inner.upper() else {
        return Err(NatDrop::Unsupported);
    };
    let proto = IpProtocol::from(proto);
    let rest = quote.get(offset..).ok_or(NatDrop::Malformed)?;
    let (sport, dport) = match proto {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let t = PortsHeader::new_checked(proto, rest).map_err(|_| NatDrop::Malformed)?;
            (t.src_port(), t.dst_port())
        }
        IpProtocol::Icmpv6 => {
            let m = Icmpv6Packet::new_checked(rest).map_err(|_| NatDrop::Malformed)?;
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

/// Rewrites the packet an error quotes: its `end` (the opposite of the outer one's)
/// becomes `addr` and `port`, the quoted upper layer's checksum updated as far as the
/// quote holds it.
fn translate_quote(quote: &mut [u8], end: End, addr: Ipv6Addr, port: u16) {
    let Ok(mut inner) = Ipv6Packet::new_checked(quote) else {
        return;
    };
    let Ok(Upper::At { proto, offset }) = inner.upper() else {
        return;
    };
    let old = match end {
        End::Src => inner.rewrite_src(addr),
        End::Dst => inner.rewrite_dst(addr),
    };
    let rest = inner.upper_mut(offset);
    match IpProtocol::from(proto) {
        IpProtocol::Icmpv6 => {
            if let Ok(mut m) = Icmpv6Packet::new_checked(rest) {
                m.translate_echo(old, addr, port);
            }
        }
        p => {
            if let Ok(mut t) = PortsHeader::new_checked(p, rest) {
                t.translate(old, addr, end == End::Src, port, Checksum::Full);
            }
        }
    }
}

impl Nat {
    /// An IPv6 packet from a container of `domain` leaving through the uplink: with
    /// `ext`, masqueraded behind it (NAT66, never on a port `rules` publishes);
    /// without, tracked as it is (routed mode). A reply of a published port's flow
    /// leaves from the uplink's address and published port either way.
    pub fn outbound6(
        &self,
        pkt: &mut [u8],
        domain: u16,
        ext: Option<Ipv6Addr>,
        rules: &DnatRules<V6>,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict<V6>, NatDrop> {
        let mut ip = Ipv6Packet::new_checked(pkt).map_err(|_| NatDrop::Malformed)?;
        let upper = upper_of(&ip)?;
        let dst = ip.dst();
        let Some((inside, flags)) = key_of(&ip, upper, dst)? else {
            return self
                .icmp_error6(ip, upper.1, Side::Inside, ext, now)
                .map(|_| NatVerdict::Out { dst });
        };
        let outside_addr = ext.unwrap_or(inside.src);
        let (hit, port) = flow_out(
            &self.table6,
            (&inside, flags),
            (outside_addr, domain),
            now,
            |p, port| ext.is_some() && rules.find(p, port).is_some(),
        )?;
        // Masqueraded, or a published port's flow (its outside end is the uplink's).
        if ext.is_some() || hit.other.dst != inside.src {
            let csum = Checksum::partial_if(partial);
            let to = (End::Src, inside.src, hit.other.dst, port);
            translate(&mut ip, upper, to, csum);
        }
        Ok(NatVerdict::Out { dst })
    }

    /// Whether an IPv6 packet from a container to the uplink's own address is for that
    /// address itself, as [`Nat::for_uplink_address`]: an echo request (or a reply of
    /// no flow), or TCP or UDP that no flow and no published port takes.
    #[cold]
    #[inline(never)]
    pub fn for_uplink_address6(
        &self,
        ip: &Ipv6Packet<&mut [u8]>,
        rules: &DnatRules<V6>,
        now: u32,
    ) -> bool {
        let Ok(upper) = upper_of(ip) else {
            return false;
        };
        if upper.0 == IpProtocol::Icmpv6
            && ip.packet().get(upper.1) == Some(&Icmpv6Type::ECHO_REQUEST)
        {
            return true;
        }
        match key_of(ip, upper, ip.dst()) {
            // An echo reply: the address's own unless a flow takes it.
            Ok(Some((key, _))) if key.proto == IpProtocol::Icmpv6 => {
                self.table6.lookup(&key, Side::Inside, now).is_none()
            }
            Ok(Some((key, _))) => unclaimed(&self.table6, &key, rules, now),
            _ => false,
        }
    }

    /// An IPv6 packet that arrived on the uplink: for `ext` (masquerade, or a new
    /// connection to a port `rules` publishes: DNAT66), or for a container of a routed
    /// network (`ext` None: only packets of a flow the container started pass). One of
    /// a flow at hop limit 1 is left untranslated ([`NatDrop::HopLimit`]).
    pub fn inbound6(
        &self,
        pkt: &mut [u8],
        ext: Option<Ipv6Addr>,
        rules: &DnatRules<V6>,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict<V6>, NatDrop> {
        let ip = Ipv6Packet::new_checked(pkt).map_err(|_| NatDrop::Malformed)?;
        self.inbound6_view::<true>(ip, ext, rules, partial, now)
    }

    /// A packet from a container for the uplink's address `ext`, masqueraded behind it
    /// by [`Nat::outbound6`], translated back in at once (hairpin): as
    /// [`Nat::inbound6`], its hop limit not looked at again (stepped on the way out).
    pub fn hairpin6(
        &self,
        pkt: &mut [u8],
        ext: Ipv6Addr,
        rules: &DnatRules<V6>,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict<V6>, NatDrop> {
        let ip = Ipv6Packet::new_checked(pkt).map_err(|_| NatDrop::Malformed)?;
        self.inbound6_view::<false>(ip, Some(ext), rules, partial, now)
    }

    /// [`Nat::inbound6`], checking the hop limit where `HOPS` says.
    #[inline(always)]
    fn inbound6_view<const HOPS: bool>(
        &self,
        mut ip: Ipv6Packet<&mut [u8]>,
        ext: Option<Ipv6Addr>,
        rules: &DnatRules<V6>,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict<V6>, NatDrop> {
        let upper = upper_of(&ip)?;
        let dst = ip.dst();
        if ext.is_some_and(|e| e != dst) {
            return Err(NatDrop::Local);
        }
        let Some((outside, flags)) = key_of(&ip, upper, dst)? else {
            return self.icmp_error6(ip, upper.1, Side::Outside, ext, now);
        };
        let (hit, port) = flow_in(&self.table6, (&outside, flags), now, || {
            self.published6((&outside, flags), ext.is_some(), rules, now)
        })?;
        // Forwarded to the container: a router would decrement the hop limit to 0.
        if HOPS && ip.hop_limit() <= 1 {
            return Err(NatDrop::HopLimit);
        }
        if ext.is_some() {
            let csum = Checksum::partial_if(partial);
            let to = (End::Dst, dst, hit.other.src, port);
            translate(&mut ip, upper, to, csum);
        }
        Ok(NatVerdict::In {
            domain: hit.domain,
            ip: hit.other.src,
        })
    }

    /// The flow of a packet from outside that matched none: a new connection to a port
    /// published on the uplink's address (`on_ext`), or, on a routed network's
    /// container, at its own address (echo requests: the gateway's). Off the fast
    /// path: the first packet of a flow, or one of none.
    #[cold]
    #[inline(never)]
    fn published6(
        &self,
        (outside, flags): (&Tuple<V6>, u8),
        on_ext: bool,
        rules: &DnatRules<V6>,
        now: u32,
    ) -> Result<Hit<V6>, NatDrop> {
        let rule = if on_ext {
            rules.find(outside.proto, outside.dport)
        } else {
            rules.find_direct(outside.proto, outside.dst, outside.dport)
        };
        published_flow(&self.table6, (outside, flags), rule, now)
    }

    /// Translates an ICMPv6 error about a tracked flow: the outer address on our side
    /// and the quoted packet's matching address and port; the checksum recomputed
    /// (errors fit the minimum MTU).
    fn icmp_error6(
        &self,
        mut ip: Ipv6Packet<&mut [u8]>,
        offset: usize,
        from: Side,
        ext: Option<Ipv6Addr>,
        now: u32,
    ) -> Result<NatVerdict<V6>, NatDrop> {
        let quote = Icmpv6Packet::new_checked(ip.packet().get(offset..).unwrap_or_default())
            .map_err(|_| NatDrop::Malformed)?;
        let key = quoted_flow_key(&quoted_tuple(quote.data())?, from)?;
        let hit = self.table6.lookup(&key, from, now).ok_or(NatDrop::NoFlow)?;
        // Routed: an error for one container never reaches another with it.
        if ext.is_none() && from == Side::Outside && hit.other.src != ip.dst() {
            return Err(NatDrop::NoFlow);
        }
        let (verdict, outer, inner, addr, port) = match from {
            // Outer destination (us) and quoted source (ext:port) -> the container.
            Side::Outside => (
                NatVerdict::In {
                    domain: hit.domain,
                    ip: hit.other.src,
                },
                End::Dst,
                End::Src,
                hit.other.src,
                hit.other.sport,
            ),
            // Outer source (the container) and quoted destination -> ext:port.
            Side::Inside => (
                NatVerdict::Out { dst: hit.other.src },
                End::Src,
                End::Dst,
                hit.other.dst,
                hit.other.dport,
            ),
        };
        // Translated unless the flow's two ends are the same (routed mode's own flows;
        // a published port's flow is translated whatever the network's mode).
        let here = match outer {
            End::Src => ip.src(),
            End::Dst => ip.dst(),
        };
        if ext.is_some() || here != addr {
            match outer {
                End::Src => ip.rewrite_src(addr),
                End::Dst => ip.rewrite_dst(addr),
            };
            let (src, dst) = (ip.src(), ip.dst());
            if let Ok(mut m) = Icmpv6Packet::new_checked(ip.upper_mut(offset)) {
                translate_quote(m.data_mut(), inner, addr, port);
                m.fill_checksum(&src, &dst);
            }
        }
        Ok(verdict)
    }

    /// Prefetches the flow-table slot of an IPv6 TCP or UDP packet right behind the
    /// fixed header (for a batch's first pass).
    #[inline]
    pub fn prefetch6(&self, pkt: &[u8]) {
        let Ok(ip) = Ipv6Packet::new_checked(pkt) else {
            return;
        };
        let proto = IpProtocol::from(ip.next_header());
        let Ok(t) = PortsHeader::new_checked(proto, ip.payload()) else {
            return;
        };
        self.table6.prefetch(&Tuple {
            proto,
            src: ip.src(),
            sport: t.src_port(),
            dst: ip.dst(),
            dport: t.dst_port(),
        });
    }
}

#[cfg(test)]
mod tests;
