//! Container traffic into the socket uplink (`SocketUplink::from_container`): arbitrary
//! packets, mostly IPv4 TCP into smoltcp (what is not IPv4 goes in as it is: IPv6 is
//! answered too, and what the uplink sends of it is checked), with the host side real but on loopback only.
//!
//! The network in front of the uplink spans 0.0.0.0/0, so nothing but the gateway is
//! "outside": every flow the fuzzer opens goes to 127.0.0.1, and to sockets this
//! target owns (TCP to the gateway's port 53 is the gateway's own DNS over TCP, other
//! TCP goes to a loopback listener, UDP to a loopback socket, pings to 127.0.0.1). A
//! published port leads in from a loopback client.
//!
//! Input: records (see the crate docs); tag bits 5-7 the kind:
//! - 0: a packet from the container. Bit 0: TCP goes to the host listener instead of
//!   DNS; bit 1: UDP and ICMP are left out (dropped before the uplink); bit 2: its ACK
//!   number counts from what the uplink sent last on that connection; bit 3: its
//!   sequence number counts from what the uplink acknowledged last; bit 4: a TCP
//!   segment goes to the peer the uplink last sent from to that container address
//!   and port (answers to the uplink's own connections: published ports).
//! - 1: every DNS-over-TCP message waiting is answered with the body.
//! - 2: the host listener accepts; accepted connections get the body (bit 0: are closed).
//! - 3: a loopback client connects to the published port and sends the body.
//! - 4: the uplink's timers run, body[0] * 10 s later.
#![no_main]

use dataplane::uplink::socket::{NetView, PublishTarget, PublishedSocket, SocketUplink};
use dataplane::wire::ipv6::NextHeader;
use dataplane::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};
use libfuzzer_sys::fuzz_target;
use mio::{Events, Poll};
use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const NETS: [Option<NetView>; 1] = [Some(NetView {
    gateway: GW,
    subnet: Ipv4Addr::UNSPECIFIED,
    prefix_len: 0,
    v6: None,
    egress: true,
    dns: true,
    // The gateway stands for 127.0.0.1, never for the machine's own address.
    host_loopback: true,
})];

/// What the uplink last sent to a container's connection.
#[derive(Clone, Copy)]
struct Sent {
    /// The next sequence number it sends.
    nxt: u32,
    /// The last acknowledgment number it sent.
    ack: u32,
    /// Where it sent from.
    peer: (Ipv4Addr, u16),
}

/// (container address, container port) -> what the uplink last sent there.
type Seqs = HashMap<(Ipv4Addr, u16), Sent>;

struct Host {
    listener: TcpListener,
    udp: UdpSocket,
    accepted: Vec<TcpStream>,
    published: SocketAddr,
    clients: Vec<TcpStream>,
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn host(uplink: &mut SocketUplink, poll: &Poll) -> Option<Host> {
    let listener = TcpListener::bind(loopback()).ok()?;
    listener.set_nonblocking(true).ok()?;
    let udp = UdpSocket::bind(loopback()).ok()?;
    let pubsock = TcpListener::bind(loopback()).ok()?;
    let published = pubsock.local_addr().ok()?;
    let to = PublishTarget {
        container6: None,
        domain: 0,
        container: Some(Ipv4Addr::new(10, 1, 0, 2)),
        port: 80,
    };
    uplink
        .publish(poll.registry(), PublishedSocket::Tcp(pubsock), to, None)
        .ok()?;
    Some(Host {
        listener,
        udp,
        accepted: Vec::new(),
        published,
        clients: Vec::new(),
    })
}

/// Points the packet at a socket of this target and applies the relative numbers.
fn aim(pkt: &mut [u8], tag: u8, h: &Host, seqs: &Seqs) -> bool {
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut *pkt) else {
        return true;
    };
    let proto = ip.protocol();
    if proto != IpProtocol::Tcp && tag & 2 != 0 {
        return false;
    }
    let src = ip.src();
    let sent = TcpPacket::new_checked(ip.payload())
        .ok()
        .filter(|_| proto == IpProtocol::Tcp)
        .and_then(|t| seqs.get(&(src, t.src_port())).copied());
    let (dst, port) = match (proto, tag & 1, sent) {
        (IpProtocol::Tcp, _, Some(s)) if tag & 0x10 != 0 => s.peer,
        (IpProtocol::Tcp, 0, _) => (GW, 53),
        (IpProtocol::Tcp, _, _) => (GW, h.listener.local_addr().map_or(0, |a| a.port())),
        (IpProtocol::Udp, _, _) => (GW, h.udp.local_addr().map_or(0, |a| a.port())),
        _ => (GW, 0),
    };
    ip.set_dst(dst);
    let payload = ip.payload_mut();
    if (proto == IpProtocol::Tcp || proto == IpProtocol::Udp)
        && let Some(p) = payload.get_mut(2..4)
    {
        p.copy_from_slice(&port.to_be_bytes());
    }
    if let (Some(s), Ok(mut t)) = (sent, TcpPacket::new_checked(payload)) {
        if tag & 4 != 0 {
            t.set_ack(s.nxt.wrapping_add(t.ack()));
        }
        if tag & 8 != 0 {
            t.set_seq(s.ack.wrapping_add(t.seq()));
        }
    }
    true
}

/// Hands the uplink `pkt` as the gateway does: in a frame's buffer, after 14 bytes of
/// Ethernet header and before stale bytes the packet's own length may claim (packets
/// of even length), or borrowed.
fn in_frame(uplink: &mut SocketUplink, poll: &Poll, pkt: &[u8]) {
    if pkt.len() % 2 == 1 {
        uplink.from_container(poll.registry(), &NETS, 0, pkt);
        return;
    }
    let mut frame = vec![0xa5u8; 14 + pkt.len() + 64];
    let ip = 14..14 + pkt.len();
    if let Some(dst) = frame.get_mut(ip.clone()) {
        dst.copy_from_slice(pkt);
    }
    uplink.from_container_frame(poll.registry(), &NETS, 0, &mut frame, ip);
}

/// Takes what the uplink sent and remembers its sequence numbers per connection.
fn drain(uplink: &mut SocketUplink, seqs: &mut Seqs) {
    uplink.drain_output(|o| {
        check_sent(o.packet(), seqs);
        Some(o.buf)
    });
}

/// Checks one packet the uplink sent and remembers its sequence numbers.
fn check_sent(out: &[u8], seqs: &mut Seqs) {
    // The uplink carries IPv6 too: what it answers to an IPv6 packet (an RST, an
    // unreachable) must be well formed as well.
    if out.first().map(|b| b >> 4) == Some(6) {
        check_sent6(out);
        return;
    }
    {
        let Ok(ip) = Ipv4Packet::new_checked(out) else {
            panic!("the uplink sent a packet that is not IPv4");
        };
        if ip.protocol() != IpProtocol::Tcp {
            return;
        }
        let Ok(t) = TcpPacket::new_checked(ip.payload()) else {
            panic!("the uplink sent a malformed TCP segment");
        };
        let len = t.payload().len() as u32 + u32::from(t.syn()) + u32::from(t.fin());
        let sent = Sent {
            nxt: t.seq().wrapping_add(len),
            ack: t.ack(),
            peer: (ip.src(), t.src_port()),
        };
        seqs.insert((ip.dst(), t.dst_port()), sent);
    }
}

/// Checks one IPv6 packet the uplink sent (sequence numbers are followed for IPv4 only).
fn check_sent6(out: &[u8]) {
    let Ok(ip) = Ipv6Packet::new_checked(out) else {
        panic!("the uplink sent an IPv6 packet that does not parse");
    };
    if ip.next_header() == NextHeader::TCP && TcpPacket::new_checked(ip.payload()).is_err() {
        panic!("the uplink sent a malformed TCP segment over IPv6");
    }
}

fn events(uplink: &mut SocketUplink, poll: &mut Poll, ev: &mut Events) {
    if poll.poll(ev, Some(Duration::ZERO)).is_err() {
        return;
    }
    for e in ev.iter() {
        uplink.event(
            poll.registry(),
            e.token(),
            e.is_readable(),
            e.is_writable(),
            e.is_error(),
        );
    }
}

fn host_side(h: &mut Host, tag: u8, body: &[u8]) {
    while let Ok((s, _)) = h.listener.accept() {
        h.accepted.push(s);
    }
    if tag & 1 != 0 {
        h.accepted.clear();
    }
    for s in &mut h.accepted {
        let _ = s.set_nonblocking(true);
        let _ = s.write(body);
    }
}

fn client(h: &mut Host, body: &[u8]) {
    if h.clients.len() >= 4 {
        return;
    }
    if let Ok(mut c) = TcpStream::connect(h.published) {
        let _ = c.set_nonblocking(true);
        let _ = c.write(body);
        h.clients.push(c);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut poll) = Poll::new() else { return };
    let mut ev = Events::with_capacity(64);
    let mut uplink = SocketUplink::new();
    uplink.set_gateways(&NETS);
    let Some(mut h) = host(&mut uplink, &poll) else {
        return;
    };
    let mut seqs = Seqs::new();
    let start = Instant::now();
    for (tag, body) in vswitch_fuzz::records(data) {
        match tag >> 5 {
            0 => {
                let mut pkt = body.to_vec();
                if aim(&mut pkt, tag, &h, &seqs) {
                    in_frame(&mut uplink, &poll, &pkt);
                }
            }
            1 => {
                for r in uplink.take_dns_requests() {
                    uplink.dns_reply(poll.registry(), r.conn, body);
                }
            }
            2 => host_side(&mut h, tag, body),
            3 => client(&mut h, body),
            _ => {
                let later = Duration::from_secs(10 * u64::from(body.first().copied().unwrap_or(0)));
                let _ = uplink.tick(poll.registry(), start + later);
            }
        }
        events(&mut uplink, &mut poll, &mut ev);
        drain(&mut uplink, &mut seqs);
    }
});
