//! Translating packets in place: parse the tuple, find or create the flow, rewrite
//! addresses, ports or echo identifiers with RFC 1624 incremental checksum updates.
//!
//! A frame from an offloading TAP may carry a *partial* transport checksum (the
//! pseudo-header sum, not inverted, to be completed later by the kernel or the
//! segmenter). For those, an address change updates the field as a plain sum and a port
//! change leaves it alone (ports are in the summed bytes, completed later).

use std::net::Ipv4Addr;

use super::table::{FlowTable, Refusal, Side, Tuple};
use super::{DnatRules, ICMP, TCP, UDP};
use crate::wire::checksum;
use crate::wire::icmp::{IcmpType, is_error};
use crate::wire::{Icmpv4Packet, Ipv4Packet};

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
}

/// What happened to a translated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatVerdict {
    /// Rewritten to leave through the uplink (destination `dst`).
    Out { dst: Ipv4Addr },
    /// Rewritten towards container `ip` in `domain`.
    In { domain: u16, ip: Ipv4Addr },
}

/// The NAT: a flow table and the rules of translation.
pub struct Nat {
    pub table: FlowTable,
}

/// Where a packet's transport header starts and what it is.
struct L4 {
    proto: u8,
    off: usize,
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
fn put_ip(b: &mut [u8], at: usize, ip: Ipv4Addr) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&ip.octets());
    }
}

/// An IPv4 address being rewritten: where it sits, what it was, what it becomes.
#[derive(Clone, Copy)]
struct AddrChange {
    at: usize,
    old: Ipv4Addr,
    new: Ipv4Addr,
}

/// Where a transport protocol keeps its checksum, relative to its header.
#[inline]
fn csum_at(proto: u8) -> Option<usize> {
    match proto {
        TCP => Some(16),
        UDP => Some(6),
        _ => None,
    }
}

/// Updates the IPv4 header checksum and the transport checksum at `l4` for an address
/// change `old` -> `new` (the pseudo-header), then a port change at `port_at`.
#[inline]
fn rewrite_addr_port(
    pkt: &mut [u8],
    addr: AddrChange,
    l4: &L4,
    port_at: Option<usize>,
    new_port: u16,
    partial: bool,
) {
    let AddrChange {
        at: addr_at,
        old,
        new,
    } = addr;
    // IPv4 header checksum.
    if let Some(c) = be16(pkt, 10) {
        put16(
            pkt,
            10,
            checksum::update32(c, u32::from(old), u32::from(new)),
        );
    }
    put_ip(pkt, addr_at, new);
    let Some(ck) = csum_at(l4.proto).map(|o| l4.off + o) else {
        // ICMP: no pseudo-header; only the identifier below.
        if let (Some(p), Some(c)) = (port_at, be16(pkt, l4.off + 2))
            && let Some(old_p) = be16(pkt, p)
        {
            put16(pkt, l4.off + 2, checksum::update16(c, old_p, new_port));
            put16(pkt, p, new_port);
        }
        return;
    };
    let Some(c) = be16(pkt, ck) else { return };
    let old_p = port_at.and_then(|p| be16(pkt, p)).unwrap_or(new_port);
    let c = if partial {
        // A partial checksum is a plain sum of the pseudo-header: ports are completed
        // later with the data.
        !checksum::update32(!c, u32::from(old), u32::from(new))
    } else if l4.proto == UDP {
        let c = checksum::update32_udp(c, u32::from(old), u32::from(new));
        checksum::update16_udp(c, old_p, new_port)
    } else {
        let c = checksum::update32(c, u32::from(old), u32::from(new));
        checksum::update16(c, old_p, new_port)
    };
    put16(pkt, ck, c);
    if let Some(p) = port_at {
        put16(pkt, p, new_port);
    }
}

fn tcp_flags(pkt: &[u8], l4: &L4) -> u8 {
    if l4.proto == TCP {
        pkt.get(l4.off + 13).copied().unwrap_or(0)
    } else {
        0
    }
}

/// A refused new flow as a drop.
fn refused(r: Refusal) -> NatDrop {
    match r {
        Refusal::Quota => NatDrop::Quota,
        Refusal::Full | Refusal::NoPort => NatDrop::TableFull,
    }
}

impl Nat {
    pub fn new(max_flows: usize) -> Nat {
        Nat {
            table: FlowTable::new(max_flows),
        }
    }

    /// A table of `max_flows`, `quota` of them per container (0: the default share).
    pub fn with_quota(max_flows: usize, quota: usize) -> Nat {
        Nat {
            table: FlowTable::with_quota(max_flows, quota),
        }
    }

    fn parse(pkt: &[u8]) -> Result<(Ipv4Packet<&[u8]>, L4), NatDrop> {
        let ip = Ipv4Packet::new_checked(pkt).map_err(|_| NatDrop::Malformed)?;
        if ip.frag_offset() != 0 {
            return Err(NatDrop::Fragment);
        }
        let off = ip.header_len();
        let proto = ip.protocol();
        let need = match proto {
            TCP => 20,
            UDP => 8,
            ICMP => 8,
            _ => return Err(NatDrop::Unsupported),
        };
        if pkt.len() < off + need || ip.total_len() < off + need {
            return Err(NatDrop::Malformed);
        }
        Ok((ip, L4 { proto, off }))
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
        let (ip, l4) = Self::parse(pkt)?;
        let (src, dst) = (ip.src(), ip.dst());
        let off = l4.off;
        let inside = match l4.proto {
            ICMP => {
                let ty = pkt.get(off).copied().unwrap_or(0);
                if is_error(ty) {
                    return self
                        .icmp_error(pkt, &l4, Side::Inside, ext, now)
                        .map(|_| NatVerdict::Out { dst });
                }
                if ty != IcmpType::ECHO_REQUEST && ty != IcmpType::ECHO_REPLY {
                    return Err(NatDrop::Unsupported);
                }
                let id = be16(pkt, off + 4).ok_or(NatDrop::Malformed)?;
                if ty == IcmpType::ECHO_REQUEST {
                    Tuple {
                        proto: ICMP,
                        src,
                        sport: id,
                        dst,
                        dport: 0,
                    }
                } else {
                    Tuple {
                        proto: ICMP,
                        src,
                        sport: 0,
                        dst,
                        dport: id,
                    }
                }
            }
            p => Tuple {
                proto: p,
                src,
                sport: be16(pkt, off).ok_or(NatDrop::Malformed)?,
                dst,
                dport: be16(pkt, off + 2).ok_or(NatDrop::Malformed)?,
            },
        };
        let flags = tcp_flags(pkt, &l4);
        let hit = match self.table.lookup(&inside, Side::Inside, now) {
            Some(h) => h,
            None => self
                .table
                .create_outbound(inside, ext, domain, now, |p, port| {
                    rules.find(p, port).is_some()
                })
                .map_err(refused)?,
        };
        self.table.touch(&hit, l4.proto, flags, now);
        // New source: the outside tuple's destination.
        let (new_src, new_port, port_at) = match l4.proto {
            ICMP if inside.dport == 0 => (hit.other.dst, hit.other.dport, Some(off + 4)),
            ICMP => (hit.other.dst, hit.other.sport, Some(off + 4)),
            _ => (hit.other.dst, hit.other.dport, Some(off)),
        };
        rewrite_addr_port(
            pkt,
            AddrChange {
                at: 12,
                old: src,
                new: new_src,
            },
            &l4,
            port_at,
            new_port,
            partial,
        );
        Ok(NatVerdict::Out { dst })
    }

    /// A packet that arrived on the uplink for `ext`. The destination becomes the
    /// container's address and port; a new connection to a published port creates its
    /// flow.
    pub fn inbound(
        &self,
        pkt: &mut [u8],
        ext: Ipv4Addr,
        rules: &DnatRules,
        partial: bool,
        now: u32,
    ) -> Result<NatVerdict, NatDrop> {
        let (ip, l4) = Self::parse(pkt)?;
        let (src, dst) = (ip.src(), ip.dst());
        if dst != ext {
            return Err(NatDrop::Local);
        }
        let off = l4.off;
        let outside = match l4.proto {
            ICMP => {
                let ty = pkt.get(off).copied().unwrap_or(0);
                if is_error(ty) {
                    return self.icmp_error(pkt, &l4, Side::Outside, ext, now);
                }
                let id = be16(pkt, off + 4).ok_or(NatDrop::Malformed)?;
                match ty {
                    IcmpType::ECHO_REPLY => Tuple {
                        proto: ICMP,
                        src,
                        sport: 0,
                        dst,
                        dport: id,
                    },
                    IcmpType::ECHO_REQUEST => Tuple {
                        proto: ICMP,
                        src,
                        sport: id,
                        dst,
                        dport: 0,
                    },
                    _ => return Err(NatDrop::Unsupported),
                }
            }
            p => Tuple {
                proto: p,
                src,
                sport: be16(pkt, off).ok_or(NatDrop::Malformed)?,
                dst,
                dport: be16(pkt, off + 2).ok_or(NatDrop::Malformed)?,
            },
        };
        let flags = tcp_flags(pkt, &l4);
        let hit = match self.table.lookup(&outside, Side::Outside, now) {
            Some(h) => h,
            None => {
                // Echo requests to the uplink's address are the gateway's to answer.
                if l4.proto == ICMP {
                    return Err(NatDrop::Local);
                }
                // A new connection: only to a published port, and for TCP only a SYN.
                let rule = rules.find(l4.proto, outside.dport).ok_or(NatDrop::NoFlow)?;
                if l4.proto == TCP && flags & 0x12 != 0x02 {
                    return Err(NatDrop::NoFlow);
                }
                self.table
                    .create_inbound(outside, (rule.ip, rule.port), rule.domain, now)
                    .map_err(refused)?
            }
        };
        self.table.touch(&hit, l4.proto, flags, now);
        // New destination: the inside tuple's source.
        let (new_dst, new_port, port_at) = match l4.proto {
            ICMP if outside.sport == 0 => (hit.other.src, hit.other.sport, Some(off + 4)),
            ICMP => (hit.other.src, hit.other.dport, Some(off + 4)),
            _ => (hit.other.src, hit.other.sport, Some(off + 2)),
        };
        rewrite_addr_port(
            pkt,
            AddrChange {
                at: 16,
                old: dst,
                new: new_dst,
            },
            &l4,
            port_at,
            new_port,
            partial,
        );
        Ok(NatVerdict::In {
            domain: hit.domain,
            ip: new_dst,
        })
    }

    /// Translates an ICMP error about a tracked flow: the outer address on our side and
    /// the quoted packet's matching address and port, with every checksum made right.
    fn icmp_error(
        &self,
        pkt: &mut [u8],
        l4: &L4,
        from: Side,
        ext: Ipv4Addr,
        now: u32,
    ) -> Result<NatVerdict, NatDrop> {
        let inner_at = l4.off + 8;
        let inner = Ipv4Packet::new_checked(pkt.get(inner_at..).ok_or(NatDrop::Malformed)?)
            .or_else(|_| {
                // Quotes are often cut: accept a header whose total length runs past.
                let b = pkt.get(inner_at..).ok_or(NatDrop::Malformed)?;
                let hl = usize::from(*b.first().ok_or(NatDrop::Malformed)? & 0x0f) * 4;
                if b.len() < hl + 8 || hl < 20 {
                    return Err(NatDrop::Malformed);
                }
                Ok(Ipv4Packet::new_unchecked(b))
            })?;
        let hl = inner.header_len();
        let (isrc, idst, iproto) = (inner.src(), inner.dst(), inner.protocol());
        let ports_at = inner_at + hl;
        let (sp, dp) = match iproto {
            TCP | UDP => (
                be16(pkt, ports_at).ok_or(NatDrop::Malformed)?,
                be16(pkt, ports_at + 2).ok_or(NatDrop::Malformed)?,
            ),
            ICMP => {
                let id = be16(pkt, ports_at + 4).ok_or(NatDrop::Malformed)?;
                (id, 0)
            }
            _ => return Err(NatDrop::Unsupported),
        };
        // The quoted packet went the other way: its reverse is the flow's key on our side.
        let quoted = Tuple {
            proto: iproto,
            src: isrc,
            sport: sp,
            dst: idst,
            dport: dp,
        };
        let key = match (from, iproto) {
            // Quoted echo request we sent out: the flow's outside key is (dst, 0) -> (ext, id).
            (Side::Outside, ICMP) => Tuple {
                proto: ICMP,
                src: idst,
                sport: 0,
                dst: isrc,
                dport: sp,
            },
            (Side::Inside, ICMP) => return Err(NatDrop::Unsupported),
            _ => quoted.reversed(),
        };
        let hit = self.table.lookup(&key, from, now).ok_or(NatDrop::NoFlow)?;
        let ihl_csum = inner_at + 10;
        let outer_src = Ipv4Packet::new_checked(&pkt[..])
            .map_err(|_| NatDrop::Malformed)?
            .src();
        match from {
            Side::Outside => {
                // Outer destination (us) -> the container; quoted source (ext:port) ->
                // the container's address and port.
                let (cip, cport) = (hit.other.src, hit.other.sport);
                let outer_dst = ext;
                if let Some(c) = be16(pkt, 10) {
                    put16(
                        pkt,
                        10,
                        checksum::update32(c, u32::from(outer_dst), u32::from(cip)),
                    );
                }
                put_ip(pkt, 16, cip);
                if let Some(c) = be16(pkt, ihl_csum) {
                    put16(
                        pkt,
                        ihl_csum,
                        checksum::update32(c, u32::from(isrc), u32::from(cip)),
                    );
                }
                put_ip(pkt, inner_at + 12, cip);
                match iproto {
                    ICMP => put16(pkt, ports_at + 4, cport),
                    _ => {
                        if let Some(o) = csum_at(iproto)
                            && let Some(c) = be16(pkt, ports_at + o)
                        {
                            let c = checksum::update32(c, u32::from(isrc), u32::from(cip));
                            put16(pkt, ports_at + o, checksum::update16(c, sp, cport));
                        }
                        put16(pkt, ports_at, cport);
                    }
                }
                fill_icmp(pkt, l4.off);
                Ok(NatVerdict::In {
                    domain: hit.domain,
                    ip: cip,
                })
            }
            Side::Inside => {
                // Outer source (the container) -> ext; quoted destination -> ext:port.
                let (eip, eport) = (hit.other.dst, hit.other.dport);
                if let Some(c) = be16(pkt, 10) {
                    put16(
                        pkt,
                        10,
                        checksum::update32(c, u32::from(outer_src), u32::from(eip)),
                    );
                }
                put_ip(pkt, 12, eip);
                if let Some(c) = be16(pkt, ihl_csum) {
                    put16(
                        pkt,
                        ihl_csum,
                        checksum::update32(c, u32::from(idst), u32::from(eip)),
                    );
                }
                put_ip(pkt, inner_at + 16, eip);
                if let Some(o) = csum_at(iproto)
                    && let Some(c) = be16(pkt, ports_at + o)
                {
                    let c = checksum::update32(c, u32::from(idst), u32::from(eip));
                    put16(pkt, ports_at + o, checksum::update16(c, dp, eport));
                }
                put16(pkt, ports_at + 2, eport);
                fill_icmp(pkt, l4.off);
                Ok(NatVerdict::Out { dst: hit.other.src })
            }
        }
    }

    /// Prefetches the flow-table slot of a packet's key (for a batch's first pass; both
    /// sides' keys live in one index).
    #[inline]
    pub fn prefetch(&self, pkt: &[u8]) {
        let Some(&vihl) = pkt.first() else { return };
        let off = usize::from(vihl & 0x0f) * 4;
        let (Some(proto), Some(s), Some(d)) = (pkt.get(9), pkt.get(12..16), pkt.get(16..20)) else {
            return;
        };
        let (Some(sp), Some(dp)) = (be16(pkt, off), be16(pkt, off + 2)) else {
            return;
        };
        let t = Tuple {
            proto: *proto,
            src: Ipv4Addr::new(s[0], s[1], s[2], s[3]),
            sport: sp,
            dst: Ipv4Addr::new(d[0], d[1], d[2], d[3]),
            dport: dp,
        };
        // ICMP and other protocols key differently; prefetching them is not worth it.
        if t.proto == TCP || t.proto == UDP {
            self.table.prefetch(&t);
        }
    }
}

/// Recomputes the ICMP checksum of the message starting at `off` (errors are small).
fn fill_icmp(pkt: &mut [u8], off: usize) {
    let total = Ipv4Packet::new_checked(&pkt[..])
        .map(|p| p.total_len())
        .unwrap_or(pkt.len());
    if let Some(m) = pkt.get_mut(off..total.min(pkt.len()))
        && m.len() >= 8
    {
        Icmpv4Packet::new_unchecked(m).fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::DnatRule;
    use crate::uplink::socket::{build_ip, build_udp};
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
        build_ip(src.0, dst.0, TCP, &seg).unwrap()
    }

    fn valid(pkt: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
        let ip = Ipv4Packet::new_checked(pkt).unwrap();
        assert!(ip.verify_checksum(), "IP checksum");
        match ip.protocol() {
            TCP => assert!(
                TcpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(ip.src(), ip.dst()),
                "TCP checksum"
            ),
            UDP => assert!(
                UdpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(ip.src(), ip.dst()),
                "UDP checksum"
            ),
            ICMP => assert!(
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
            build_ip(src, dst, ICMP, &m).unwrap()
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
        let mut err = build_ip(router, EXT, ICMP, &m).unwrap();
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

    #[test]
    fn published_port_dnat_and_reply() {
        let nat = Nat::new(64);
        let rules = DnatRules::new(vec![DnatRule {
            proto: TCP,
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
            proto: TCP,
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
        let mut gre = build_ip(C, R, 47, &[0; 8]).unwrap();
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
            let rules = DnatRules::new(vec![DnatRule { proto: UDP, ext_port: 53, domain: 0, ip: C, port: 53 }]);
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
                        TCP => TcpPacket::new_checked(b.payload()).map(|t| t.verify_checksum(b.src(), b.dst())).unwrap_or(false),
                        UDP => UdpPacket::new_checked(b.payload()).map(|u| u.verify_checksum(b.src(), b.dst())).unwrap_or(false),
                        _ => false,
                    }
                };
                if ok_before {
                    let ok_after = match ip.protocol() {
                        TCP => TcpPacket::new_checked(ip.payload()).map(|t| t.verify_checksum(ip.src(), ip.dst())).unwrap_or(false),
                        UDP => UdpPacket::new_checked(ip.payload()).map(|u| u.verify_checksum(ip.src(), ip.dst())).unwrap_or(false),
                        _ => true,
                    };
                    proptest::prop_assert!(ok_after);
                }
            }
        }
    }
}
