//! The DHCPv6 server of every gateway (RFC 8415, stateful, one IA_NA per client).
//!
//! As for DHCP, IPAM decided each port's IPv6 address when the port was attached; the
//! server only tells the client. A client gets exactly the address of the port it asks
//! from, whatever address it names; a port without one gets "no addresses available".
//! The server's DUID is DUID-LL of the gateway's MAC. Replies go from the gateway's
//! link-local address to the client's address and MAC, so only its port sees them.

use std::net::Ipv6Addr;

use super::{GatewayNet6, eth_header, udp6_append};
use crate::wire::dhcpv6::{
    self, CLIENT_PORT, Dhcpv6Packet, IaAddr, IaNa, MsgType, Opt6, SERVER_PORT, Status6,
};
use crate::wire::ipv6::{ALL_DHCP_AGENTS, NextHeader};
use crate::wire::{EtherType, EthernetFrame, Ipv6Packet, MacAddr, UdpPacket};

/// Longest client DUID accepted (RFC 8415: at most 128 bytes of DUID).
const MAX_DUID: usize = 130;

/// What the server did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome6 {
    Advertised(Option<Ipv6Addr>),
    Replied(Option<Ipv6Addr>),
    Ignored,
}

impl Outcome6 {
    pub fn replied(&self) -> bool {
        !matches!(self, Outcome6::Ignored)
    }
}

/// A DHCPv6 request as it arrived: the client's MAC and address, the message.
struct Request<'a> {
    mac: MacAddr,
    from: Ipv6Addr,
    msg: Dhcpv6Packet<&'a [u8]>,
}

/// The server's DUID: DUID-LL (type 3) with hardware type Ethernet and the MAC.
pub fn server_duid(mac: MacAddr) -> [u8; 10] {
    let m = mac.0;
    [0, 3, 0, 1, m[0], m[1], m[2], m[3], m[4], m[5]]
}

/// The DHCPv6 client message a frame carries: UDP to port 547, to the gateway or all
/// DHCPv6 agents, from a unicast MAC and a non-multicast address.
fn request<'a>(frame: &'a [u8], net: &GatewayNet6) -> Option<Request<'a>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::IPV6 || !eth.src().is_unicast() {
        return None;
    }
    let mac = eth.src();
    let ip = Ipv6Packet::new_checked(eth.into_payload()).ok()?;
    let (from, to) = (ip.src(), ip.dst());
    if ip.next_header() != NextHeader::UDP || from.is_multicast() || from.is_unspecified() {
        return None;
    }
    if to != ALL_DHCP_AGENTS && !net.is_gateway(&to) {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.into_payload()).ok()?;
    if udp.dst_port() != SERVER_PORT || udp.src_port() != CLIENT_PORT {
        return None;
    }
    let msg = Dhcpv6Packet::new_checked(udp.into_payload()).ok()?;
    Some(Request { mac, from, msg })
}

/// Handles a frame sent to the DHCPv6 server from a port IPAM gave `lease` (None: no
/// IPv6 address). A reply, if any, is written into `out`.
pub fn handle(
    frame: &[u8],
    net: &GatewayNet6,
    lease: Option<Ipv6Addr>,
    out: &mut Vec<u8>,
) -> Outcome6 {
    let Some(r) = request(frame, net) else {
        return Outcome6::Ignored;
    };
    let m = &r.msg;
    let Ok(Some(client)) = m.option(Opt6::CLIENTID) else {
        return Outcome6::Ignored;
    };
    if client.is_empty() || client.len() > MAX_DUID {
        return Outcome6::Ignored;
    }
    let ours = server_duid(net.gateway_mac);
    let server = m.option(Opt6::SERVERID);
    let for_us = matches!(server, Ok(Some(s)) if s == ours);
    let rapid = matches!(m.option(Opt6::RAPID_COMMIT), Ok(Some(_)));
    let (reply, ia) = match m.msg_type() {
        MsgType::SOLICIT if server == Ok(None) => {
            let ty = if rapid {
                MsgType::REPLY
            } else {
                MsgType::ADVERTISE
            };
            (ty, true)
        }
        MsgType::REQUEST | MsgType::RENEW if for_us => (MsgType::REPLY, true),
        MsgType::REBIND | MsgType::CONFIRM if server == Ok(None) => (MsgType::REPLY, true),
        MsgType::RELEASE | MsgType::DECLINE if for_us => (MsgType::REPLY, false),
        MsgType::INFORMATION_REQUEST if matches!(server, Ok(None)) || for_us => {
            (MsgType::REPLY, false)
        }
        _ => return Outcome6::Ignored,
    };
    let body = reply_body(&r, net, (reply, ia, rapid), lease, client);
    if !frame_reply(&r, net, &body, out) {
        return Outcome6::Ignored;
    }
    let given = lease.filter(|_| ia);
    if reply == MsgType::ADVERTISE {
        Outcome6::Advertised(given)
    } else {
        Outcome6::Replied(given)
    }
}

/// The reply message: header, client and server ids, the IA_NA with the port's
/// address (when `ia`), a status, DNS.
fn reply_body(
    r: &Request<'_>,
    net: &GatewayNet6,
    (ty, ia, rapid): (u8, bool, bool),
    lease: Option<Ipv6Addr>,
    client: &[u8],
) -> Vec<u8> {
    let mut b = vec![ty];
    b.extend_from_slice(&r.msg.transaction_id().to_be_bytes()[1..]);
    dhcpv6::push_option(&mut b, Opt6::CLIENTID, client);
    dhcpv6::push_option(&mut b, Opt6::SERVERID, &server_duid(net.gateway_mac));
    if ia {
        let iaid = match r.msg.option(Opt6::IA_NA) {
            Ok(Some(body)) => IaNa::parse(body).map_or(0, |i| i.iaid),
            _ => 0,
        };
        let secs = net.lease_secs;
        let addr = lease.map(|addr| IaAddr {
            addr,
            preferred: secs,
            valid: secs,
        });
        let times = (iaid, secs / 2, secs / 5 * 4);
        dhcpv6::push_ia_na(&mut b, times, addr);
    }
    if rapid && ty == MsgType::REPLY {
        dhcpv6::push_option(&mut b, Opt6::RAPID_COMMIT, &[]);
    }
    dhcpv6::push_status(&mut b, Status6::SUCCESS, "success");
    if net.dns {
        dhcpv6::push_dns(&mut b, &[net.gateway]);
    }
    dhcpv6::push_domain_list(&mut b, &[&net.domain_name]);
    b
}

/// Frames `body` from the gateway's link-local address, port 547, to the client.
fn frame_reply(r: &Request<'_>, net: &GatewayNet6, body: &[u8], out: &mut Vec<u8>) -> bool {
    eth_header(out, r.mac, net.gateway_mac, EtherType::IPV6);
    udp6_append(
        out,
        (net.link_local, SERVER_PORT),
        (r.from, CLIENT_PORT),
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ndp::tests::net;
    use crate::wire::captured::{self, bytes};
    use crate::wire::dhcpv6::find;

    fn leased() -> Ipv6Addr {
        "2001:db8:1:0:42:acff:fe11:2".parse().unwrap()
    }

    fn reply_of(out: &[u8]) -> (Ipv6Packet<&[u8]>, Dhcpv6Packet<&[u8]>) {
        let ip = Ipv6Packet::new_checked(&out[14..]).unwrap();
        let udp = UdpPacket::new_checked(&out[54..]).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (547, 546));
        (ip, Dhcpv6Packet::new_checked(&out[62..]).unwrap())
    }

    fn address_of(m: &Dhcpv6Packet<&[u8]>) -> Option<Ipv6Addr> {
        let ia = IaNa::parse(m.option(Opt6::IA_NA).unwrap().unwrap()).unwrap();
        ia.addresses().next()
    }

    /// The server id the capture's request names, replaced with ours.
    fn request_to_us() -> Vec<u8> {
        let mut f = bytes(captured::REQUEST);
        let duid = server_duid(net().gateway_mac);
        // The server id option (14 bytes: DUID-LLT) becomes DUID-LL (10): rebuild the
        // message with our id.
        let msg = f[62..].to_vec();
        let m = Dhcpv6Packet::new_checked(&msg[..]).unwrap();
        let mut b = msg[..4].to_vec();
        for o in m.options() {
            let (c, body) = o.unwrap();
            let body = if c == Opt6::SERVERID { &duid[..] } else { body };
            dhcpv6::push_option(&mut b, c, body);
        }
        f.truncate(54);
        let len = (8 + b.len()) as u16;
        f[18..20].copy_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[2, 0x22, 2, 0x23, 0, 0, 0, 0]);
        f[58..60].copy_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&b);
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        let (s, d) = (ip.src(), ip.dst());
        UdpPacket::new_unchecked(&mut f[54..]).fill_checksum_v6(&s, &d);
        f
    }

    #[test]
    fn dhclient_solicit_is_advertised_the_ipam_address() {
        let mut out = Vec::new();
        let r = handle(&bytes(captured::SOLICIT), &net(), Some(leased()), &mut out);
        assert_eq!(r, Outcome6::Advertised(Some(leased())));
        let (ip, m) = reply_of(&out);
        assert_eq!(ip.src(), net().link_local);
        assert_eq!(
            ip.dst(),
            "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(m.msg_type(), MsgType::ADVERTISE);
        assert_eq!(m.transaction_id(), 0xace506);
        assert_eq!(address_of(&m), Some(leased()));
        let sid = m.option(Opt6::SERVERID).unwrap().unwrap();
        assert_eq!(sid, &server_duid(net().gateway_mac)[..]);
        let dns = m.option(Opt6::DNS_SERVERS).unwrap().unwrap();
        assert_eq!(dns, &net().gateway.octets()[..]);
        // The network's name as the search list (as DHCPv4's domain name).
        let search = m.option(Opt6::DOMAIN_LIST).unwrap().unwrap();
        assert_eq!(search, b"\x05front\x00");
        // The client id comes back as it was.
        let sol = bytes(captured::SOLICIT);
        let q = Dhcpv6Packet::new_checked(&sol[62..]).unwrap();
        assert_eq!(m.option(Opt6::CLIENTID), q.option(Opt6::CLIENTID));
        let ia = IaNa::parse(m.option(Opt6::IA_NA).unwrap().unwrap()).unwrap();
        assert_eq!(ia.iaid, 0xac11_0002);
    }

    #[test]
    fn request_to_us_is_answered_to_another_server_is_not() {
        let mut out = Vec::new();
        // The captured request names dnsmasq's id: not ours.
        let r = handle(&bytes(captured::REQUEST), &net(), Some(leased()), &mut out);
        assert_eq!(r, Outcome6::Ignored);
        // The same request to us gets the port's address, not the one it named.
        let r = handle(&request_to_us(), &net(), Some(leased()), &mut out);
        assert_eq!(r, Outcome6::Replied(Some(leased())));
        let (_, m) = reply_of(&out);
        assert_eq!(m.msg_type(), MsgType::REPLY);
        assert_eq!(address_of(&m), Some(leased()));
    }

    #[test]
    fn a_port_without_address_gets_no_address_status() {
        let mut out = Vec::new();
        let r = handle(&bytes(captured::SOLICIT), &net(), None, &mut out);
        assert_eq!(r, Outcome6::Advertised(None));
        let (_, m) = reply_of(&out);
        let ia = IaNa::parse(m.option(Opt6::IA_NA).unwrap().unwrap()).unwrap();
        let status = find(ia.options.clone(), Opt6::STATUS_CODE)
            .unwrap()
            .unwrap();
        assert_eq!(status[..2], Status6::NO_ADDRS_AVAIL.to_be_bytes());
    }

    #[test]
    fn server_messages_and_garbage_are_ignored() {
        let mut out = Vec::new();
        for f in [
            captured::ADVERTISE,
            captured::REPLY,
            captured::RS,
            captured::ECHO,
        ] {
            assert_eq!(
                handle(&bytes(f), &net(), Some(leased()), &mut out),
                Outcome6::Ignored
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            let _ = handle(&b, &net(), Some(leased()), &mut out);
        }
    }
}
