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
pub use crate::wire::dhcp::{CLIENT_PORT, DhcpPacket, MsgType, SERVER_PORT};
use crate::wire::dhcp::{DhcpOption as opt, FLAG_BROADCAST, HEADER_LEN, Op, push_option};
use crate::wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, MacAddr, UdpPacket};

/// BOOTP's minimum message.
const MIN_REPLY: usize = 300;

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

/// Handles a frame sent to the DHCP server from port `port`. `reserved()` gives the
/// address reserved for that port (the caller's IPAM, by network and port). A reply, if
/// any, is written into `out`.
pub fn handle(
    frame: &[u8],
    net: &GatewayNet,
    reserved: impl FnOnce(MacAddr) -> Option<Ipv4Addr>,
    out: &mut Vec<u8>,
) -> Outcome {
    let d = match request(frame) {
        Ok(d) => d,
        Err(why) => return Outcome::Ignored(why),
    };
    let Some(ty) = d.msg_type() else {
        return Outcome::Ignored(Ignored::Malformed);
    };
    let lease = reserved(d.chaddr());
    match ty {
        MsgType::DISCOVER => match lease {
            Some(a) => {
                build(&d, net, MsgType::OFFER, a, None, out);
                Outcome::Offer(a)
            }
            None => Outcome::Ignored(Ignored::NoReservation),
        },
        MsgType::REQUEST => answer_request(&d, net, lease, out),
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

/// The DHCP request a frame carries: a BOOTREQUEST to the server port from an Ethernet
/// client, not through a relay.
fn request(frame: &[u8]) -> Result<DhcpPacket<&[u8]>, Ignored> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Ignored::NotDhcp)?;
    if eth.ethertype() != EtherType::IPV4 {
        return Err(Ignored::NotDhcp);
    }
    let ip = Ipv4Packet::new_checked(eth.into_payload()).map_err(|_| Ignored::NotDhcp)?;
    if ip.protocol() != IpProtocol::Udp || ip.is_fragment() {
        return Err(Ignored::NotDhcp);
    }
    let udp = UdpPacket::new_checked(ip.into_payload()).map_err(|_| Ignored::NotDhcp)?;
    if udp.dst_port() != SERVER_PORT {
        return Err(Ignored::NotDhcp);
    }
    let d = DhcpPacket::new_checked(udp.into_payload()).map_err(|_| Ignored::Malformed)?;
    if d.op() != Op::BOOTREQUEST || !d.is_ethernet() {
        return Err(Ignored::Malformed);
    }
    if !d.giaddr().is_unspecified() {
        return Err(Ignored::Relayed);
    }
    let chaddr = d.chaddr();
    if !chaddr.is_unicast() || chaddr.is_zero() {
        return Err(Ignored::Malformed);
    }
    Ok(d)
}

/// A REQUEST: ACK for the port's reservation, NAK for anything else.
fn answer_request(
    d: &DhcpPacket<&[u8]>,
    net: &GatewayNet,
    lease: Option<Ipv4Addr>,
    out: &mut Vec<u8>,
) -> Outcome {
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
            build(d, net, MsgType::ACK, a, to, out);
            Outcome::Ack(a)
        }
        _ => {
            build(d, net, MsgType::NAK, Ipv4Addr::UNSPECIFIED, None, out);
            Outcome::Nak
        }
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
    let mut m = vec![0u8; HEADER_LEN];
    {
        let mut r = DhcpPacket::new_unchecked(&mut m[..]);
        r.set_op(Op::BOOTREPLY);
        r.set_ethernet();
        r.set_xid(d.xid());
        r.set_flags(d.flags() & FLAG_BROADCAST);
        if ty != MsgType::NAK {
            r.set_ciaddr(d.ciaddr());
        }
        r.set_yiaddr(yiaddr);
        r.set_chaddr(d.chaddr());
        r.set_magic();
    }
    reply_options(&mut m, net, ty, yiaddr);
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

/// Appends the options of a reply of type `ty` (and the end option) to `m`.
fn reply_options(m: &mut Vec<u8>, net: &GatewayNet, ty: u8, yiaddr: Ipv4Addr) {
    push_option(m, opt::MSG_TYPE, &[ty]);
    push_option(m, opt::SERVER_ID, &net.gateway_ip.octets());
    if ty != MsgType::NAK {
        if !yiaddr.is_unspecified() {
            let lease = net.lease_secs;
            push_option(m, opt::LEASE_TIME, &lease.to_be_bytes());
            push_option(m, opt::RENEWAL, &(lease / 2).to_be_bytes());
            push_option(m, opt::REBINDING, &(lease / 8 * 7).to_be_bytes());
        }
        push_option(m, opt::SUBNET_MASK, &net.netmask().octets());
        push_option(m, opt::BROADCAST, &net.broadcast().octets());
        push_option(m, opt::ROUTER, &net.gateway_ip.octets());
        if net.dns {
            push_option(m, opt::DNS, &net.gateway_ip.octets());
        }
        push_option(m, opt::MTU, &net.mtu.to_be_bytes());
        if !net.domain_name.is_empty() {
            push_option(m, opt::DOMAIN_NAME, net.domain_name.as_bytes());
        }
    }
    m.push(opt::END);
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
        let mut m = vec![0u8; HEADER_LEN];
        {
            let mut d = DhcpPacket::new_unchecked(&mut m[..]);
            d.set_op(Op::BOOTREQUEST);
            d.set_ethernet();
            d.set_xid(0xdead_beef);
            d.set_ciaddr(ciaddr);
            d.set_chaddr(CLIENT);
            d.set_magic();
        }
        push_option(&mut m, opt::MSG_TYPE, &[ty]);
        let mut cid = vec![1u8];
        cid.extend_from_slice(&CLIENT.0);
        push_option(&mut m, opt::CLIENT_ID, &cid);
        for (c, v) in extra {
            push_option(&mut m, *c, v);
        }
        push_option(&mut m, opt::PARAMETER_LIST, &[1, 3, 6, 12, 15, 28, 42, 26]);
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
        assert_eq!(d.xid(), 0xdead_beef);
        assert_eq!(d.yiaddr(), MINE);
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
        assert_eq!(
            DhcpPacket::new_checked(&p[..]).unwrap().yiaddr(),
            Ipv4Addr::UNSPECIFIED
        );
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
        assert_eq!(d.yiaddr(), Ipv4Addr::UNSPECIFIED);
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
        cookie[42 + crate::wire::dhcp::FIXED_LEN] = 0; // break the magic cookie
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
        let at = 42 + HEADER_LEN;
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
