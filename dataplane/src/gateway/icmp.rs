//! ICMP on the gateway: echo replies, and the errors a router sends (RFC 792, RFC 1812).

use std::net::Ipv4Addr;
use std::time::Instant;

use super::{GatewayNet, eth_header, ipv4_header};
use crate::wire::icmp::{IcmpType, is_error};
use crate::wire::{EtherType, EthernetFrame, Icmpv4Packet, IpProtocol, Ipv4Packet, MacAddr};

/// Answers an echo request to the gateway's address with an echo reply in `out`.
pub fn echo_reply(frame: &[u8], net: &GatewayNet, out: &mut Vec<u8>) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.ethertype() != EtherType::IPV4 {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    if ip.dst() != net.gateway_ip || ip.protocol() != IpProtocol::Icmp || ip.is_fragment() {
        return false;
    }
    let Ok(req) = Icmpv4Packet::new_checked(ip.payload()) else {
        return false;
    };
    if req.msg_type() != IcmpType::ECHO_REQUEST || req.code() != 0 {
        return false;
    }
    let src = ip.src();
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() {
        return false;
    }
    let msg = ip.payload();
    eth_header(out, eth.src(), net.gateway_mac, EtherType::IPV4);
    if !ipv4_header(out, net.gateway_ip, src, IpProtocol::Icmp, msg.len()) {
        return false;
    }
    let at = out.len();
    out.extend_from_slice(msg);
    let Some(b) = out.get_mut(at..) else {
        return false;
    };
    let mut rep = Icmpv4Packet::new_unchecked(b);
    rep.set_msg_type(IcmpType::ECHO_REPLY);
    rep.set_code(0);
    rep.fill_checksum();
    true
}

/// Builds an ICMP error (`ty`, `code`, and for "fragmentation needed" the next-hop MTU)
/// about the IPv4 packet in `frame`, from the gateway back to its sender, into `out`.
/// Quotes the offending header and as much of its data as keeps the error within 576
/// bytes. Returns false where RFC 1812 says not to send one: about an ICMP error, a
/// non-first fragment, or a packet from or to a broadcast or multicast address.
pub fn error(
    frame: &[u8],
    net: &GatewayNet,
    ty: u8,
    code: u8,
    mtu: u16,
    out: &mut Vec<u8>,
) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.ethertype() != EtherType::IPV4 || eth.dst().is_multicast() || !eth.src().is_unicast() {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    let (src, dst) = (ip.src(), ip.dst());
    if src.is_unspecified()
        || src.is_broadcast()
        || src.is_multicast()
        || dst.is_broadcast()
        || dst.is_multicast()
        || dst == net.broadcast()
    {
        return false;
    }
    if ip.frag_offset() != 0 {
        return false;
    }
    if ip.protocol() == IpProtocol::Icmp
        && let Ok(inner) = Icmpv4Packet::new_checked(ip.payload())
        && is_error(inner.msg_type())
    {
        return false;
    }
    // 576 - 20 (IP) - 8 (ICMP) = 548 bytes of quote at most.
    let whole = eth.payload().get(..ip.total_len()).unwrap_or(eth.payload());
    let quote = whole.get(..whole.len().min(548)).unwrap_or(whole);
    eth_header(out, eth.src(), net.gateway_mac, EtherType::IPV4);
    if !ipv4_header(out, net.gateway_ip, src, IpProtocol::Icmp, 8 + quote.len()) {
        return false;
    }
    let at = out.len();
    out.resize(at + 8, 0);
    out.extend_from_slice(quote);
    let Some(b) = out.get_mut(at..) else {
        return false;
    };
    let mut m = Icmpv4Packet::new_unchecked(b);
    m.set_msg_type(ty);
    m.set_code(code);
    if ty == IcmpType::DEST_UNREACHABLE && code == crate::wire::icmp::UnreachCode::FRAG_NEEDED {
        m.set_next_hop_mtu(mtu);
    }
    m.fill_checksum();
    true
}

/// A token bucket limiting the ICMP errors a gateway sends.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_sec: u32,
    burst: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    pub fn new(per_sec: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_sec,
            burst,
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Takes a token if one is left at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(l) = self.last {
            let dt = now.saturating_duration_since(l).as_secs_f64();
            self.tokens = (self.tokens + dt * f64::from(self.per_sec)).min(f64::from(self.burst));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for RateLimit {
    /// 100 errors a second, bursts of 50 (Linux's icmp_ratelimit is 1 per ms).
    fn default() -> Self {
        RateLimit::new(100, 50)
    }
}

/// ICMP errors a gateway sends to one container each second by default.
pub const DEFAULT_ERRORS_PER_SEC: u32 = 100;

/// The gateway's ICMP error budget: one token bucket per port slot, so a container
/// that keeps triggering errors spends only its own budget, never its neighbours'.
/// The buckets are allocated once, for every slot.
#[derive(Debug, Clone)]
pub struct ErrorBudget {
    ports: Box<[RateLimit]>,
}

impl ErrorBudget {
    /// `per_sec` errors a second per port, in bursts of up to half that (at least 1).
    pub fn new(per_sec: u32) -> ErrorBudget {
        let bucket = RateLimit::new(per_sec, (per_sec / 2).max(1));
        ErrorBudget {
            ports: vec![bucket; crate::bridge::fdb::MAX_PORT_SLOTS].into_boxed_slice(),
        }
    }

    /// Takes a token from `port`'s bucket if one is left at `now`.
    pub fn allow(&mut self, port: u16, now: Instant) -> bool {
        self.ports
            .get_mut(usize::from(port))
            .is_some_and(|b| b.allow(now))
    }
}

impl Default for ErrorBudget {
    fn default() -> Self {
        ErrorBudget::new(DEFAULT_ERRORS_PER_SEC)
    }
}

/// The MAC an Ethernet frame came from, if it carries one worth answering.
pub fn source_mac(frame: &[u8]) -> Option<MacAddr> {
    let e = EthernetFrame::new_checked(frame).ok()?;
    e.src().is_unicast().then_some(e.src())
}

/// The sender of an IPv4 frame.
pub fn source_ip(frame: &[u8]) -> Option<Ipv4Addr> {
    let e = EthernetFrame::new_checked(frame).ok()?;
    Ipv4Packet::new_checked(e.payload()).ok().map(|p| p.src())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::icmp::UnreachCode;
    use std::time::Duration;

    fn net() -> GatewayNet {
        GatewayNet {
            gateway_ip: Ipv4Addr::new(172, 17, 0, 1),
            gateway_mac: MacAddr([0x02, 0x42, 0xac, 0x11, 0, 1]),
            subnet: Ipv4Addr::new(172, 17, 0, 0),
            prefix_len: 16,
            mtu: 1500,
            dns: true,
            lease_secs: 3600,
            domain_name: String::new(),
        }
    }

    /// An echo request from 172.17.0.2 (ping's usual 56 data bytes, shortened to 8).
    fn ping() -> Vec<u8> {
        let mut f = vec![
            0x02, 0x42, 0xac, 0x11, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x00,
        ];
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0x00, 0x07, 1, 2, 3, 4, 5, 6, 7, 8];
        let c = crate::wire::checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut ip = vec![
            0x45, 0, 0, 0, 0xab, 0xcd, 0x40, 0, 64, 1, 0, 0, 172, 17, 0, 2, 172, 17, 0, 1,
        ];
        let tl = (20 + icmp.len()) as u16;
        ip[2..4].copy_from_slice(&tl.to_be_bytes());
        let c = crate::wire::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn echo_reply_mirrors_id_seq_data() {
        let mut out = Vec::new();
        assert!(echo_reply(&ping(), &net(), &mut out));
        let e = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(e.dst(), MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]));
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src(), ip.dst()),
            (net().gateway_ip, Ipv4Addr::new(172, 17, 0, 2))
        );
        let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum());
        assert_eq!((i.msg_type(), i.echo_ident(), i.echo_seq()), (0, 0x1234, 7));
        assert_eq!(i.data(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        let s = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
        assert!(matches!(
            s.transport,
            Some(etherparse::TransportSlice::Icmpv4(_))
        ));
    }

    #[test]
    fn echo_to_others_or_broken_is_not_answered() {
        let mut out = Vec::new();
        let mut p = ping();
        p[33] = 9; // to 172.17.0.9
        assert!(!echo_reply(&p, &net(), &mut out));
        assert!(!echo_reply(&ping()[..40], &net(), &mut out));
        let mut frag = ping();
        frag[20] = 0x20; // more fragments
        assert!(!echo_reply(&frag, &net(), &mut out));
    }

    #[test]
    fn port_unreachable_quotes_the_packet() {
        let mut out = Vec::new();
        let udp = {
            let mut p = ping();
            p[23] = 17; // pretend UDP
            p
        };
        assert!(error(
            &udp,
            &net(),
            IcmpType::DEST_UNREACHABLE,
            UnreachCode::PORT,
            0,
            &mut out
        ));
        let e = EthernetFrame::new_checked(&out[..]).unwrap();
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert!(ip.verify_checksum());
        let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum());
        assert_eq!((i.msg_type(), i.code()), (3, 3));
        assert_eq!(i.data(), &udp[14..]);
    }

    #[test]
    fn frag_needed_carries_mtu_and_errors_follow_rfc1812() {
        let mut out = Vec::new();
        assert!(error(
            &ping(),
            &net(),
            IcmpType::DEST_UNREACHABLE,
            UnreachCode::FRAG_NEEDED,
            1400,
            &mut out
        ));
        let i = Icmpv4Packet::new_checked(&out[34..]).unwrap();
        assert_eq!(i.next_hop_mtu(), 1400);
        // Not about an ICMP error.
        let err = out.clone();
        let mut o2 = Vec::new();
        let mut fwd = err.clone();
        fwd[0..6].copy_from_slice(&[0x02, 0x42, 0xac, 0x11, 0, 1]);
        fwd[6..12].copy_from_slice(&[0x02, 0x42, 0xac, 0x11, 0, 2]);
        assert!(!error(&fwd, &net(), 3, 1, 0, &mut o2));
        // Not to broadcast destinations.
        let mut b = ping();
        b[30..34].copy_from_slice(&[255, 255, 255, 255]);
        assert!(!error(&b, &net(), 3, 3, 0, &mut o2));
    }

    #[test]
    fn error_budget_is_per_port() {
        let mut b = ErrorBudget::new(4);
        let t0 = Instant::now();
        // Port 5 spends its burst of 2...
        assert!(b.allow(5, t0));
        assert!(b.allow(5, t0));
        assert!(!b.allow(5, t0));
        // ...and port 6 still has all of its own.
        assert!(b.allow(6, t0));
        assert!(b.allow(6, t0));
        // A quarter second later port 5 has one again (4 a second).
        assert!(b.allow(5, t0 + std::time::Duration::from_millis(250)));
        // Out of range: never.
        assert!(!b.allow(u16::MAX, t0));
    }

    #[test]
    fn rate_limit_with_injected_clock() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 2);
        assert!(r.allow(t0));
        assert!(r.allow(t0));
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + Duration::from_millis(150)));
        assert!(!r.allow(t0 + Duration::from_millis(160)));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let mut out = Vec::new();
            let _ = echo_reply(&b, &net(), &mut out);
            let _ = error(&b, &net(), 3, 3, 0, &mut out);
        }
    }
}
