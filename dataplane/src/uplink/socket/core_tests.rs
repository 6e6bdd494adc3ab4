//! The core driven with a fake of the host's sockets: what it asks of the host for
//! what containers send, and what containers hear of what the host answers, with no
//! socket at all.

use std::collections::VecDeque;

use super::tests::{nets, tcp_of, tcp_packet};
use super::*;
use crate::wire::tcp::TcpFlags;

const C: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const FAR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// What the core asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    TcpConnect(TcpSock, SocketAddr),
    TcpClose(TcpSock),
    UdpOpen(UdpSock, SocketAddr),
    UdpSend(UdpSock, Vec<u8>),
    UdpClose(UdpSock),
    PingOpen(PingSock, IpAddr),
    Listen(ListenSock),
    Accept(ListenSock, TcpSock),
    TcpAdopt(TcpSock),
    SpliceStart(ListenSock),
    Splice(ListenSock),
    SpliceAbandon(ListenSock),
}

/// Host sockets that only record what they are asked and answer as told.
#[derive(Default)]
struct Fake {
    ops: Vec<Op>,
    /// A connect that fails at once, with this errno.
    connect_fails: Option<i32>,
    /// How a connect under way ends: None still connecting, else Ok or this errno.
    outcome: Option<Result<(), i32>>,
    /// Datagrams waiting on host UDP sockets.
    udp_in: VecDeque<Vec<u8>>,
    /// Clients waiting on published TCP ports.
    clients: VecDeque<SocketAddr>,
    /// The addresses published sockets listen on, in order (else 127.0.0.1:8080).
    listen_at: VecDeque<SocketAddr>,
    /// Splice pools start and splices open (else as a namespace not to be entered).
    splices: bool,
}

fn would_block<T>() -> io::Result<T> {
    Err(io::ErrorKind::WouldBlock.into())
}

impl HostSockets for Fake {
    fn host_address(&mut self, _: Instant) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(198, 51, 100, 9))
    }
    fn tcp_connect(&mut self, id: TcpSock, to: SocketAddr) -> io::Result<()> {
        self.ops.push(Op::TcpConnect(id, to));
        match self.connect_fails {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }
    fn tcp_connect_outcome(&mut self, _: TcpSock) -> Option<io::Result<()>> {
        Some(match self.outcome? {
            Ok(()) => Ok(()),
            Err(errno) => Err(io::Error::from_raw_os_error(errno)),
        })
    }
    fn tcp_read(&mut self, _: TcpSock, _: &mut [u8]) -> io::Result<usize> {
        would_block()
    }
    fn tcp_write(&mut self, _: TcpSock, data: &[u8]) -> io::Result<usize> {
        Ok(data.len())
    }
    fn tcp_shutdown(&mut self, _: TcpSock) {}
    fn tcp_adopt(&mut self, id: TcpSock) -> io::Result<()> {
        self.ops.push(Op::TcpAdopt(id));
        Ok(())
    }
    fn tcp_close(&mut self, id: TcpSock) {
        self.ops.push(Op::TcpClose(id));
    }
    fn udp_open(&mut self, id: UdpSock, to: SocketAddr) -> io::Result<()> {
        self.ops.push(Op::UdpOpen(id, to));
        Ok(())
    }
    fn udp_send(&mut self, id: UdpSock, data: &[u8]) -> io::Result<usize> {
        self.ops.push(Op::UdpSend(id, data.to_vec()));
        Ok(data.len())
    }
    fn udp_recv(&mut self, _: UdpSock, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.udp_in.pop_front() else {
            return would_block();
        };
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }
    fn udp_close(&mut self, id: UdpSock) {
        self.ops.push(Op::UdpClose(id));
    }
    fn ping_open(&mut self, id: PingSock, family: IpAddr) -> io::Result<()> {
        self.ops.push(Op::PingOpen(id, family));
        // As a host whose `ping_group_range` leaves this process out.
        Err(io::Error::from_raw_os_error(libc::EACCES))
    }
    fn ping_send(&mut self, _: PingSock, _: &[u8], _: IpAddr) -> io::Result<usize> {
        would_block()
    }
    fn ping_recv(&mut self, _: PingSock, _: &mut [u8]) -> io::Result<usize> {
        would_block()
    }
    fn ping_close(&mut self, _: PingSock) {}
    fn listen(&mut self, id: ListenSock, _: PublishedSocket) -> io::Result<SocketAddr> {
        self.ops.push(Op::Listen(id));
        let at = self.listen_at.pop_front();
        Ok(at.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))))
    }
    fn unlisten(&mut self, _: ListenSock) {}
    fn accept(&mut self, id: ListenSock, into: TcpSock) -> io::Result<SocketAddr> {
        let Some(peer) = self.clients.pop_front() else {
            return would_block();
        };
        self.ops.push(Op::Accept(id, into));
        Ok(peer)
    }
    fn recv_from(&mut self, _: ListenSock, _: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        would_block()
    }
    fn send_to(&mut self, _: ListenSock, _: &[u8], _: SocketAddr) -> io::Result<usize> {
        would_block()
    }
    fn splice_start(
        &mut self,
        id: ListenSock,
        _: NetnsRef,
        _: Option<(SocketAddr, IpAddr)>,
    ) -> PoolStart {
        self.ops.push(Op::SpliceStart(id));
        if self.splices {
            return PoolStart::Started;
        }
        // As a namespace the daemon may not enter.
        PoolStart::Failed(SpliceError::OwnNamespace)
    }
    fn splice_abandon(&mut self, id: ListenSock) {
        self.ops.push(Op::SpliceAbandon(id));
    }
    fn splice(
        &mut self,
        _: SpliceId,
        _: TcpSock,
        id: ListenSock,
        _: (SocketAddr, SocketAddr),
    ) -> Result<(), SpliceError> {
        if self.splices {
            self.ops.push(Op::Splice(id));
            return Ok(());
        }
        Err(SpliceError::NoSocket)
    }
    fn splice_pump(&mut self, _: SpliceId) -> io::Result<Pumped> {
        Ok(Pumped::Done)
    }
    fn splice_connected(&self, _: SpliceId) -> bool {
        false
    }
    fn unsplice(&mut self, _: SpliceId, _: TcpSock) -> Option<io::Error> {
        None
    }
    fn splice_close(&mut self, _: SpliceId) {}
}

const SEQ: u32 = 1000;

/// A container's SYN to FAR:80 handed to the core.
fn syn(up: &mut SocketUplink, host: &mut Fake) {
    let syn = tcp_packet((C, 40000), (FAR, 80), SEQ, 0, TcpFlags::SYN, &[]);
    up.container_packet(host, &nets(true), 0, &syn);
}

fn tcp_out(up: &mut SocketUplink) -> Vec<(u8, u32, u32)> {
    let out = up.take_output();
    let segs = out.iter().filter_map(|(_, p, _)| tcp_of(p));
    segs.map(|(_, _, flags, seq, ack, _)| (flags, seq, ack))
        .collect()
}

#[test]
fn a_container_syn_asks_for_a_connect_to_its_destination_and_waits_for_it() {
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    syn(&mut up, &mut host);
    let to = SocketAddr::from((FAR, 80));
    assert_eq!(host.ops, vec![Op::TcpConnect(TcpSock(0), to)]);
    // The SYN-ACK waits for the host connect.
    assert!(tcp_out(&mut up).is_empty());
    host.outcome = Some(Ok(()));
    up.ready(&mut host, UplinkSource::Tcp(0), (false, true, false));
    let out = tcp_out(&mut up);
    let synack = TcpFlags::SYN | TcpFlags::ACK;
    assert!(
        out.iter().any(|&(f, _, ack)| f == synack && ack == SEQ + 1),
        "{out:?}"
    );
}

#[test]
fn a_refused_connect_is_an_rst_and_closes_the_host_socket() {
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    syn(&mut up, &mut host);
    host.outcome = Some(Err(libc::ECONNREFUSED));
    up.ready(&mut host, UplinkSource::Tcp(0), (false, true, true));
    let out = tcp_out(&mut up);
    assert!(
        out.iter()
            .any(|&(f, _, ack)| f & TcpFlags::RST != 0 && ack == SEQ + 1),
        "{out:?}"
    );
    assert!(
        host.ops.contains(&Op::TcpClose(TcpSock(0))),
        "{:?}",
        host.ops
    );
    assert_eq!(up.stats.tcp_open, 1);
}

#[test]
fn a_connect_without_a_route_is_answered_with_icmp_unreachable() {
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    host.connect_fails = Some(libc::ENETUNREACH);
    syn(&mut up, &mut host);
    let out = up.take_output();
    let icmp = out
        .iter()
        .filter_map(|(_, p, _)| Ipv4Packet::new_checked(&p[..]).ok());
    let types: Vec<(IpProtocol, u8)> = icmp
        .map(|ip| (ip.protocol(), ip.payload().first().copied().unwrap_or(0)))
        .collect();
    // ICMP destination unreachable (type 3), nothing else.
    assert_eq!(types, vec![(IpProtocol::Icmp, 3)]);
    assert_eq!(up.stats.tcp_refused, 1);
    assert!(up.tcp_quads().is_empty());
}

#[test]
fn a_udp_flow_opens_sends_carries_replies_and_closes_when_idle() {
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    let dgram = family::build_udp((C.into(), 5000), (FAR.into(), 53), b"ask").unwrap();
    up.container_packet(&mut host, &nets(true), 0, &dgram);
    let to = SocketAddr::from((FAR, 53));
    let sent = vec![
        Op::UdpOpen(UdpSock(0), to),
        Op::UdpSend(UdpSock(0), b"ask".to_vec()),
    ];
    assert_eq!(host.ops, sent);
    host.udp_in.push_back(b"answer".to_vec());
    up.ready(&mut host, UplinkSource::Udp(0), (true, false, false));
    let out = up.take_output();
    let [(0, reply, 0)] = &out[..] else {
        panic!("one reply: {out:?}")
    };
    let ip = Ipv4Packet::new_checked(&reply[..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (FAR, C));
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (u.src_port(), u.dst_port(), u.payload()),
        (53, 5000, &b"answer"[..])
    );
    // Still in use: not closed; idle past UDP_IDLE: closed.
    up.tick_with(&mut host, Instant::now());
    assert!(!host.ops.contains(&Op::UdpClose(UdpSock(0))));
    up.tick_with(
        &mut host,
        Instant::now() + UDP_IDLE + Duration::from_secs(2),
    );
    assert_eq!(host.ops.last(), Some(&Op::UdpClose(UdpSock(0))));
    assert_eq!(up.flow_count(), 0);
}

#[test]
fn the_gateway_stands_for_the_hosts_main_address_the_host_side_names() {
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    let mut n = nets(true);
    if let Some(Some(v)) = n.get_mut(0) {
        v.host_loopback = false;
    }
    let gw = Ipv4Addr::new(10, 9, 0, 1);
    let syn = tcp_packet((C, 40000), (gw, 8080), SEQ, 0, TcpFlags::SYN, &[]);
    up.container_packet(&mut host, &n, 0, &syn);
    let to = SocketAddr::from(([198, 51, 100, 9], 8080));
    assert_eq!(host.ops, vec![Op::TcpConnect(TcpSock(0), to)]);
}

#[test]
fn echo_without_ping_sockets_is_prohibited_and_not_tried_again() {
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    let echo = [8u8, 0, 0, 0, 0, 7, 0, 1];
    let pkt = family::build(C.into(), FAR.into(), family::icmp_proto(C.into()), &echo);
    let pkt = pkt.unwrap();
    for _ in 0..2 {
        up.container_packet(&mut host, &nets(true), 0, &pkt);
    }
    // One try; each echo answered "administratively prohibited" (type 3, code 13).
    assert_eq!(host.ops, vec![Op::PingOpen(PingSock(0), C.into())]);
    let out = up.take_output();
    let answers: Vec<(u8, u8)> = (out.iter())
        .filter_map(|(_, p, _)| Ipv4Packet::new_checked(&p[..]).ok())
        .map(|ip| (ip.payload()[0], ip.payload()[1]))
        .collect();
    assert_eq!(answers, vec![(3, 13), (3, 13)]);
    assert_eq!(up.counts().2, 0);
}

/// Port 80 of the IPv4-only container C.
const C80: PublishTarget = PublishTarget {
    domain: 0,
    container: Some(C),
    container6: None,
    port: 80,
};

/// Publishes a TCP port to `to`, with a namespace to splice into when `ns`. The socket
/// is only a placeholder: the fake never uses it.
fn publish_tcp(up: &mut SocketUplink, host: &mut Fake, to: PublishTarget, ns: bool) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ns = ns.then(|| NetnsRef::Path("/nonexistent".into()));
    up.publish_with(host, PublishedSocket::Tcp(l), to, ns)
        .unwrap();
}

#[test]
fn a_loopback_client_that_cannot_be_spliced_enters_through_smoltcp_from_the_gateway() {
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    up.set_gateways(&nets(true));
    publish_tcp(&mut up, &mut host, C80, true);
    host.clients
        .push_back(SocketAddr::from(([127, 0, 0, 1], 5555)));
    up.ready(&mut host, UplinkSource::Published(0), (true, false, false));
    let want = vec![
        Op::Listen(ListenSock(0)),
        Op::Accept(ListenSock(0), TcpSock(0)),
        Op::SpliceStart(ListenSock(0)),
        Op::TcpAdopt(TcpSock(0)),
    ];
    assert_eq!(host.ops, want);
    assert_eq!((up.stats.splice_fallbacks, up.stats.tcp_spliced), (1, 0));
    // The container is asked to accept a connection from its gateway, client's port.
    let out = up.take_output();
    let syns: Vec<_> = (out.iter().filter_map(|(_, p, _)| tcp_of(p)))
        .filter(|s| s.2 == TcpFlags::SYN)
        .map(|s| (s.0, s.1))
        .collect();
    assert_eq!(syns, vec![(Ipv4Addr::new(10, 9, 0, 1), C)]);
}

#[test]
fn clients_seen_as_the_gateway_are_spliced_and_a_fallback_ends_every_pool_of_the_same_rule() {
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    host.splices = true;
    up.set_gateways(&nets(true));
    // `-p 8080:80` of an IPv4-only container: an IPv4 and an IPv6 socket.
    host.listen_at = [
        SocketAddr::from(([0, 0, 0, 0], 8080)),
        "[::]:8080".parse().unwrap(),
    ]
    .into();
    let to = C80;
    for _ in 0..2 {
        publish_tcp(&mut up, &mut host, to, true);
    }
    // A 127.0.0.1 client, then an IPv6 one from outside (the container has no IPv6:
    // it sees its IPv4 gateway): both spliced, each by its socket's pool.
    host.clients
        .push_back(SocketAddr::from(([127, 0, 0, 1], 5555)));
    up.ready(&mut host, UplinkSource::Published(0), (true, false, false));
    host.clients
        .push_back("[2001:db8::7]:6666".parse().unwrap());
    up.ready(&mut host, UplinkSource::Published(1), (true, false, false));
    assert_eq!(up.stats.tcp_spliced, 2, "{:?}", host.ops);
    for l in [ListenSock(0), ListenSock(1)] {
        assert!(host.ops.contains(&Op::Splice(l)), "{:?}", host.ops);
    }
    // One socket falls back: both pools end (they share the return rule), and the next
    // client of either takes frames.
    let e = io::Error::from(io::ErrorKind::TimedOut);
    up.stop_splicing(&mut host, (0, to), &e);
    for l in [ListenSock(0), ListenSock(1)] {
        assert!(host.ops.contains(&Op::SpliceAbandon(l)), "{:?}", host.ops);
    }
    host.ops.clear();
    host.clients.push_back("[::1]:7777".parse().unwrap());
    up.ready(&mut host, UplinkSource::Published(1), (true, false, false));
    assert!(
        host.ops.iter().any(|o| matches!(o, Op::TcpAdopt(_))),
        "{:?}",
        host.ops
    );
    assert!(!host.ops.iter().any(|o| matches!(o, Op::Splice(_))));
    // A client seen with its own address is not spliced: the control.
    let (mut up, mut host) = (SocketUplink::new(), Fake::default());
    host.splices = true;
    up.set_gateways(&nets(true));
    publish_tcp(&mut up, &mut host, to, false);
    host.clients
        .push_back(SocketAddr::from(([192, 0, 2, 9], 5555)));
    up.ready(&mut host, UplinkSource::Published(0), (true, false, false));
    assert!(!host.ops.iter().any(|o| matches!(o, Op::SpliceStart(_))));
    assert_eq!(up.stats.tcp_spliced, 0);
}
