//! The DHCP server of every gateway (RFC 2131, options RFC 2132).
//!
//! IPAM decided each port's address when the port was attached; DHCP only tells the
//! client. A client gets exactly the address of the port it asks from (looked up by the
//! caller per (network, port)), never another port's; a port without a reservation gets
//! no offer and a NAK for any request.
//!
//! Replies go to the client's MAC (so only its port sees them) with the IP destination
//! the RFC asks for: the client's address once it has one (renewing, INFORM), else the
//! limited broadcast address, which a client without an address accepts.

use std::net::Ipv4Addr;

use super::{GatewayNet, eth_header, ipv4_header};
use crate::wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, MacAddr, UdpPacket};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP part before the magic cookie.
const FIXED: usize = 236;
/// BOOTP's minimum message.
const MIN_REPLY: usize = 300;

pub struct MsgType;
impl MsgType {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;
}

mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MSG_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const RENEWAL: u8 = 58;
    pub const REBINDING: u8 = 59;
    pub const END: u8 = 255;
}

/// A view of a DHCP message (the UDP payload). The checked length guarantees the fixed
/// part and the magic cookie are there; options are read with bounds checks.
#[derive(Debug, Clone)]
pub struct DhcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// Why a message was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not an Ethernet/IPv4/UDP message to port 67.
    NotDhcp,
    /// Truncated, wrong cookie, not a BOOTREQUEST, not Ethernet addresses, bad options.
    Malformed,
    /// Through a relay (giaddr set): not served.
    Relayed,
    /// No address reserved for the port.
    NoReservation,
    /// A REQUEST for another server.
    OtherServer,
    /// A message type the server does not answer.
    Unsupported,
}

/// What the server did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Offer(Ipv4Addr),
    Ack(Ipv4Addr),
    Nak,
    /// INFORM answered (options only).
    Informed,
    Released(Ipv4Addr),
    Declined(Ipv4Addr),
    Ignored(Ignored),
}

impl Outcome {
    /// Whether a reply frame was written.
    pub fn replied(&self) -> bool {
        matches!(
            self,
            Outcome::Offer(_) | Outcome::Ack(_) | Outcome::Nak | Outcome::Informed
        )
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    match b.get(at..at + 4) {
        Some(s) => Ipv4Addr::new(s[0], s[1], s[2], s[3]),
        None => Ipv4Addr::UNSPECIFIED,
    }
}

impl<T: AsRef<[u8]>> DhcpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Ignored> {
        let b = buffer.as_ref();
        if b.len() < FIXED + 4 || b.get(FIXED..FIXED + 4) != Some(&MAGIC[..]) {
            return Err(Ignored::Malformed);
        }
        Ok(DhcpPacket { buffer })
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn op(&self) -> u8 {
        self.b().first().copied().unwrap_or(0)
    }
    pub fn htype(&self) -> u8 {
        self.b().get(1).copied().unwrap_or(0)
    }
    pub fn hlen(&self) -> u8 {
        self.b().get(2).copied().unwrap_or(0)
    }
    pub fn xid(&self) -> [u8; 4] {
        let b = self.b();
        [b[4], b[5], b[6], b[7]]
    }
    pub fn flags(&self) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[10], b[11]])
    }
    pub fn broadcast_flag(&self) -> bool {
        self.flags() & 0x8000 != 0
    }
    pub fn ciaddr(&self) -> Ipv4Addr {
        ip_at(self.b(), 12)
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        ip_at(self.b(), 24)
    }
    pub fn chaddr(&self) -> MacAddr {
        MacAddr::from_slice(self.b().get(28..34).unwrap_or(&[])).unwrap_or_default()
    }
    /// The value of option `code`, the first time it appears (None when absent or when
    /// the options are malformed before it).
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        let mut o = self.b().get(FIXED + 4..)?;
        while let Some((&c, rest)) = o.split_first() {
            match c {
                opt::PAD => o = rest,
                opt::END => return None,
                _ => {
                    let (&len, rest) = rest.split_first()?;
                    let v = rest.get(..usize::from(len))?;
                    if c == code {
                        return Some(v);
                    }
                    o = rest.get(usize::from(len)..)?;
                }
            }
        }
        None
    }
    pub fn msg_type(&self) -> Option<u8> {
        self.option(opt::MSG_TYPE).and_then(|v| v.first().copied())
    }
    fn option_ip(&self, code: u8) -> Option<Ipv4Addr> {
        let v = self.option(code)?;
        (v.len() == 4).then(|| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
    }
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.option_ip(opt::REQUESTED_IP)
    }
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.option_ip(opt::SERVER_ID)
    }
}

fn push_opt(out: &mut Vec<u8>, code: u8, v: &[u8]) {
    let len = v.len().min(255);
    out.push(code);
    out.push(len as u8);
    out.extend_from_slice(v.get(..len).unwrap_or(&[]));
}

/// Handles a frame sent to the DHCP server from port `port`. `reserved()` gives the
/// address reserved for that port (the caller's IPAM, by network and port). A reply, if
/// any, is written into `out`.
pub fn handle(
    frame: &[u8],
    net: &GatewayNet,
    reserved: impl FnOnce(MacAddr) -> Option<Ipv4Addr>,
    out: &mut Vec<u8>,
) -> Outcome {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Outcome::Ignored(Ignored::NotDhcp);
    };
    if eth.ethertype() != EtherType::IPV4 {
        return Outcome::Ignored(Ignored::NotDhcp);
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Outcome::Ignored(Ignored::NotDhcp);
    };
    if ip.protocol() != IpProtocol::Udp || ip.is_fragment() {
        return Outcome::Ignored(Ignored::NotDhcp);
    }
    let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
        return Outcome::Ignored(Ignored::NotDhcp);
    };
    if udp.dst_port() != SERVER_PORT {
        return Outcome::Ignored(Ignored::NotDhcp);
    }
    let Ok(d) = DhcpPacket::new_checked(udp.payload()) else {
        return Outcome::Ignored(Ignored::Malformed);
    };
    if d.op() != 1 || d.htype() != 1 || d.hlen() != 6 {
        return Outcome::Ignored(Ignored::Malformed);
    }
    if !d.giaddr().is_unspecified() {
        return Outcome::Ignored(Ignored::Relayed);
    }
    let chaddr = d.chaddr();
    if !chaddr.is_unicast() || chaddr.is_zero() {
        return Outcome::Ignored(Ignored::Malformed);
    }
    let Some(ty) = d.msg_type() else {
        return Outcome::Ignored(Ignored::Malformed);
    };
    let lease = reserved(chaddr);
    match ty {
        MsgType::DISCOVER => match lease {
            Some(a) => {
                build(&d, net, MsgType::OFFER, a, None, out);
                Outcome::Offer(a)
            }
            None => Outcome::Ignored(Ignored::NoReservation),
        },
        MsgType::REQUEST => {
            if let Some(sid) = d.server_id()
                && sid != net.gateway_ip
            {
                return Outcome::Ignored(Ignored::OtherServer);
            }
            // SELECTING and INIT-REBOOT name the address in option 50; RENEWING and
            // REBINDING in ciaddr.
            let asked = d.requested_ip().unwrap_or(d.ciaddr());
            match lease {
                Some(a) if a == asked => {
                    let to = (!d.ciaddr().is_unspecified()).then_some(d.ciaddr());
                    build(&d, net, MsgType::ACK, a, to, out);
                    Outcome::Ack(a)
                }
                _ => {
                    build(&d, net, MsgType::NAK, Ipv4Addr::UNSPECIFIED, None, out);
                    Outcome::Nak
                }
            }
        }
        MsgType::INFORM => {
            let to = (!d.ciaddr().is_unspecified()).then_some(d.ciaddr());
            build(&d, net, MsgType::ACK, Ipv4Addr::UNSPECIFIED, to, out);
            Outcome::Informed
        }
        MsgType::RELEASE => Outcome::Released(d.ciaddr()),
        MsgType::DECLINE => Outcome::Declined(d.requested_ip().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        _ => Outcome::Ignored(Ignored::Unsupported),
    }
}

/// Writes the reply frame: BOOTREPLY with `yiaddr`, options for `ty`, from the gateway
/// to the client's MAC, IP destination `to` or the limited broadcast.
fn build(
    d: &DhcpPacket<&[u8]>,
    net: &GatewayNet,
    ty: u8,
    yiaddr: Ipv4Addr,
    to: Option<Ipv4Addr>,
    out: &mut Vec<u8>,
) {
    let mut m = vec![0u8; FIXED];
    m[0] = 2; // BOOTREPLY
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&d.xid());
    m[10..12].copy_from_slice(&(d.flags() & 0x8000).to_be_bytes());
    if ty != MsgType::NAK {
        m[12..16].copy_from_slice(&d.ciaddr().octets());
    }
    m[16..20].copy_from_slice(&yiaddr.octets());
    m[28..34].copy_from_slice(&d.chaddr().0);
    m.extend_from_slice(&MAGIC);
    push_opt(&mut m, opt::MSG_TYPE, &[ty]);
    push_opt(&mut m, opt::SERVER_ID, &net.gateway_ip.octets());
    if ty != MsgType::NAK {
        if !yiaddr.is_unspecified() {
            let lease = net.lease_secs;
            push_opt(&mut m, opt::LEASE_TIME, &lease.to_be_bytes());
            push_opt(&mut m, opt::RENEWAL, &(lease / 2).to_be_bytes());
            push_opt(&mut m, opt::REBINDING, &(lease / 8 * 7).to_be_bytes());
        }
        push_opt(&mut m, opt::SUBNET_MASK, &net.netmask().octets());
        push_opt(&mut m, opt::BROADCAST, &net.broadcast().octets());
        push_opt(&mut m, opt::ROUTER, &net.gateway_ip.octets());
        if net.dns {
            push_opt(&mut m, opt::DNS, &net.gateway_ip.octets());
        }
        push_opt(&mut m, opt::MTU, &net.mtu.to_be_bytes());
        if !net.domain_name.is_empty() {
            push_opt(&mut m, opt::DOMAIN_NAME, net.domain_name.as_bytes());
        }
    }
    m.push(opt::END);
    if m.len() < MIN_REPLY {
        m.resize(MIN_REPLY, 0);
    }
    let dst_ip = to.unwrap_or(Ipv4Addr::BROADCAST);
    eth_header(out, d.chaddr(), net.gateway_mac, EtherType::IPV4);
    if !ipv4_header(out, net.gateway_ip, dst_ip, IpProtocol::Udp, 8 + m.len()) {
        out.clear();
        return;
    }
    let at = out.len();
    out.resize(at + 8, 0);
    out.extend_from_slice(&m);
    if let Some(b) = out.get_mut(at..) {
        let mut u = UdpPacket::new_unchecked(b);
        u.set_src_port(SERVER_PORT);
        u.set_dst_port(CLIENT_PORT);
        u.set_len((8 + m.len()) as u16);
        u.fill_checksum(net.gateway_ip, dst_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> GatewayNet {
        GatewayNet {
            gateway_ip: Ipv4Addr::new(10, 150, 0, 1),
            gateway_mac: MacAddr([0x02, 0x42, 10, 150, 0, 1]),
            subnet: Ipv4Addr::new(10, 150, 0, 0),
            prefix_len: 24,
            mtu: 1500,
            dns: true,
            lease_secs: 3600,
            domain_name: "front".into(),
        }
    }

    const CLIENT: MacAddr = MacAddr([0x02, 0x42, 10, 150, 0, 4]);
    const MINE: Ipv4Addr = Ipv4Addr::new(10, 150, 0, 4);

    /// A busybox udhcpc message as it sends them (BOOTREQUEST, no broadcast flag,
    /// client id, parameter request list), wrapped in Ethernet/IPv4/UDP from 0.0.0.0.
    fn client_msg(ty: u8, ciaddr: Ipv4Addr, extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut m = vec![0u8; FIXED];
        m[0] = 1;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        m[12..16].copy_from_slice(&ciaddr.octets());
        m[28..34].copy_from_slice(&CLIENT.0);
        m.extend_from_slice(&MAGIC);
        push_opt(&mut m, opt::MSG_TYPE, &[ty]);
        let mut cid = vec![1u8];
        cid.extend_from_slice(&CLIENT.0);
        push_opt(&mut m, 61, &cid);
        for (c, v) in extra {
            push_opt(&mut m, *c, v);
        }
        push_opt(&mut m, 55, &[1, 3, 6, 12, 15, 28, 42, 26]);
        m.push(opt::END);
        let src = if ciaddr.is_unspecified() {
            Ipv4Addr::UNSPECIFIED
        } else {
            ciaddr
        };
        let dst = if ciaddr.is_unspecified() {
            Ipv4Addr::BROADCAST
        } else {
            net().gateway_ip
        };
        let mut udp = vec![0u8; 8];
        udp.extend_from_slice(&m);
        {
            let mut u = UdpPacket::new_unchecked(&mut udp[..]);
            u.set_src_port(CLIENT_PORT);
            u.set_dst_port(SERVER_PORT);
            u.set_len((8 + m.len()) as u16);
            u.fill_checksum(src, dst);
        }
        let mut f = Vec::new();
        eth_header(&mut f, MacAddr::BROADCAST, CLIENT, EtherType::IPV4);
        ipv4_header(&mut f, src, dst, IpProtocol::Udp, udp.len());
        f.extend_from_slice(&udp);
        f
    }

    fn reply_of(out: &[u8]) -> (Ipv4Addr, MacAddr, Vec<u8>) {
        let e = EthernetFrame::new_checked(out).unwrap();
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert!(ip.verify_checksum());
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(ip.src(), ip.dst()));
        assert_eq!((u.src_port(), u.dst_port()), (67, 68));
        (ip.dst(), e.dst(), u.payload().to_vec())
    }

    fn mine(_: MacAddr) -> Option<Ipv4Addr> {
        Some(MINE)
    }

    #[test]
    fn discover_gets_the_ports_address_with_options() {
        let mut out = Vec::new();
        let o = handle(
            &client_msg(MsgType::DISCOVER, Ipv4Addr::UNSPECIFIED, &[]),
            &net(),
            mine,
            &mut out,
        );
        assert_eq!(o, Outcome::Offer(MINE));
        let (dst, mac, payload) = reply_of(&out);
        assert_eq!((dst, mac), (Ipv4Addr::BROADCAST, CLIENT));
        let d = DhcpPacket::new_checked(&payload[..]).unwrap();
        assert_eq!(d.op(), 2);
        assert_eq!(d.xid(), [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(ip_at(&payload, 16), MINE);
        assert_eq!(d.msg_type(), Some(MsgType::OFFER));
        assert_eq!(d.server_id(), Some(net().gateway_ip));
        assert_eq!(d.option(opt::SUBNET_MASK), Some(&[255, 255, 255, 0][..]));
        assert_eq!(d.option(opt::ROUTER), Some(&[10, 150, 0, 1][..]));
        assert_eq!(d.option(opt::DNS), Some(&[10, 150, 0, 1][..]));
        assert_eq!(d.option(opt::MTU), Some(&[0x05, 0xdc][..]));
        assert_eq!(d.option(opt::LEASE_TIME), Some(&3600u32.to_be_bytes()[..]));
        assert_eq!(d.option(opt::DOMAIN_NAME), Some(&b"front"[..]));
        assert!(payload.len() >= MIN_REPLY);
    }

    #[test]
    fn request_for_the_reservation_is_acked_anything_else_nakked() {
        let mut out = Vec::new();
        let sel = client_msg(
            MsgType::REQUEST,
            Ipv4Addr::UNSPECIFIED,
            &[
                (opt::REQUESTED_IP, &MINE.octets()),
                (opt::SERVER_ID, &[10, 150, 0, 1]),
            ],
        );
        assert_eq!(handle(&sel, &net(), mine, &mut out), Outcome::Ack(MINE));
        let (_, _, p) = reply_of(&out);
        assert_eq!(
            DhcpPacket::new_checked(&p[..]).unwrap().msg_type(),
            Some(MsgType::ACK)
        );
        // Asking for another port's address: NAK, broadcast.
        let other = client_msg(
            MsgType::REQUEST,
            Ipv4Addr::UNSPECIFIED,
            &[(opt::REQUESTED_IP, &[10, 150, 0, 2])],
        );
        assert_eq!(handle(&other, &net(), mine, &mut out), Outcome::Nak);
        let (dst, _, p) = reply_of(&out);
        assert_eq!(dst, Ipv4Addr::BROADCAST);
        assert_eq!(ip_at(&p, 16), Ipv4Addr::UNSPECIFIED);
        // Renewing: unicast to ciaddr.
        let renew = client_msg(MsgType::REQUEST, MINE, &[]);
        assert_eq!(handle(&renew, &net(), mine, &mut out), Outcome::Ack(MINE));
        assert_eq!(reply_of(&out).0, MINE);
        // Another server's REQUEST is not ours to answer.
        let theirs = client_msg(
            MsgType::REQUEST,
            Ipv4Addr::UNSPECIFIED,
            &[
                (opt::REQUESTED_IP, &MINE.octets()),
                (opt::SERVER_ID, &[9, 9, 9, 9]),
            ],
        );
        assert_eq!(
            handle(&theirs, &net(), mine, &mut out),
            Outcome::Ignored(Ignored::OtherServer)
        );
    }

    #[test]
    fn no_reservation_no_offer_and_nak() {
        let mut out = Vec::new();
        let none = |_: MacAddr| None;
        assert_eq!(
            handle(
                &client_msg(MsgType::DISCOVER, Ipv4Addr::UNSPECIFIED, &[]),
                &net(),
                none,
                &mut out
            ),
            Outcome::Ignored(Ignored::NoReservation)
        );
        let req = client_msg(
            MsgType::REQUEST,
            Ipv4Addr::UNSPECIFIED,
            &[(opt::REQUESTED_IP, &MINE.octets())],
        );
        assert_eq!(handle(&req, &net(), none, &mut out), Outcome::Nak);
    }

    #[test]
    fn inform_release_decline() {
        let mut out = Vec::new();
        assert_eq!(
            handle(
                &client_msg(MsgType::INFORM, MINE, &[]),
                &net(),
                mine,
                &mut out
            ),
            Outcome::Informed
        );
        let (dst, _, p) = reply_of(&out);
        assert_eq!(dst, MINE);
        let d = DhcpPacket::new_checked(&p[..]).unwrap();
        assert!(d.option(opt::LEASE_TIME).is_none());
        assert_eq!(ip_at(&p, 16), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            handle(
                &client_msg(MsgType::RELEASE, MINE, &[]),
                &net(),
                mine,
                &mut out
            ),
            Outcome::Released(MINE)
        );
        assert_eq!(
            handle(
                &client_msg(
                    MsgType::DECLINE,
                    Ipv4Addr::UNSPECIFIED,
                    &[(opt::REQUESTED_IP, &MINE.octets())]
                ),
                &net(),
                mine,
                &mut out
            ),
            Outcome::Declined(MINE)
        );
    }

    #[test]
    fn hostile_messages_are_ignored() {
        let mut out = Vec::new();
        let good = client_msg(MsgType::DISCOVER, Ipv4Addr::UNSPECIFIED, &[]);
        let mut cookie = good.clone();
        cookie[42 + FIXED] = 0; // break the magic cookie
        assert!(!handle(&cookie, &net(), mine, &mut out).replied());
        let mut reply_op = good.clone();
        reply_op[42] = 2;
        assert!(!handle(&reply_op, &net(), mine, &mut out).replied());
        let mut relayed = good.clone();
        relayed[42 + 24] = 10;
        assert_eq!(
            handle(&relayed, &net(), mine, &mut out),
            Outcome::Ignored(Ignored::Relayed)
        );
        assert!(!handle(&good[..200], &net(), mine, &mut out).replied());
        // Options running past the end: no message type found, not answered.
        let mut bad_opts = good.clone();
        let at = 42 + FIXED + 4;
        bad_opts[at + 1] = 250;
        assert!(!handle(&bad_opts, &net(), mine, &mut out).replied());
    }

    proptest::proptest! {
        #[test]
        fn random_and_mutated_messages_never_panic(
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..20)
        ) {
            let mut out = Vec::new();
            let _ = handle(&b, &net(), mine, &mut out);
            let mut m = client_msg(MsgType::REQUEST, Ipv4Addr::UNSPECIFIED, &[(opt::REQUESTED_IP, &MINE.octets())]);
            for (i, v) in flips {
                if let Some(x) = m.get_mut(i) { *x = v; }
            }
            let o = handle(&m, &net(), mine, &mut out);
            if o.replied() {
                let _ = reply_of(&out);
            }
        }
    }
}
