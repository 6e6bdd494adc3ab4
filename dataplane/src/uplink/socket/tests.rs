use super::*;
use crate::wire::Ipv6Packet;
use crate::wire::tcp::TcpFlags;
use mio::{Events, Poll};
use std::os::fd::{FromRawFd, OwnedFd};

const C: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const GW: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 2);
const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 1);

pub(super) fn nets(egress: bool) -> Vec<Option<NetView>> {
    vec![
        Some(NetView {
            gateway: GW,
            subnet: Ipv4Addr::new(10, 9, 0, 0),
            prefix_len: 24,
            v6: Some(NetView6 {
                gateway: GW6,
                subnet: crate::wire::Ipv6Cidr::new("fd00:9::".parse().unwrap(), 64),
            }),
            egress,
            dns: true,
            host_loopback: true,
        }),
        Some(NetView {
            gateway: Ipv4Addr::new(10, 8, 0, 1),
            subnet: Ipv4Addr::new(10, 8, 0, 0),
            prefix_len: 24,
            v6: None,
            egress: true,
            dns: true,
            host_loopback: true,
        }),
    ]
}

pub(super) fn tcp_packet<A: Into<IpAddr> + Copy>(
    src: (A, u16),
    dst: (A, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let opts: &[u8] = if flags & TcpFlags::SYN != 0 {
        &[2, 4, 0x05, 0xb4]
    } else {
        &[]
    };
    let hl = 20 + opts.len();
    let mut seg = vec![0u8; hl + data.len()];
    seg[20..hl].copy_from_slice(opts);
    seg[hl..].copy_from_slice(data);
    {
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_src_port(src.1);
        t.set_dst_port(dst.1);
        t.set_seq(seq);
        t.set_ack(ack);
        t.set_header_len(hl);
        t.set_flags(flags);
        t.set_window(65535);
        family::fill_tcp_checksum(&mut t, src.0.into(), dst.0.into());
    }
    family::build(src.0.into(), dst.0.into(), family::TCP, &seg).unwrap()
}

struct Rig {
    up: SocketUplink,
    poll: Poll,
    nets: Vec<Option<NetView>>,
    /// The network packets come from (and every answer must go back to).
    domain: u16,
}

impl Rig {
    fn new(egress: bool) -> Rig {
        Rig::with_limits(egress, UplinkLimits::default())
    }
    fn with_limits(egress: bool, limits: UplinkLimits) -> Rig {
        Rig {
            up: SocketUplink::with_limits(limits),
            poll: Poll::new().unwrap(),
            nets: nets(egress),
            domain: 0,
        }
    }
    /// Publishes the container's port 80 on a free port of the host's loopback,
    /// which it returns.
    fn publish_tcp_80(&mut self) -> u16 {
        self.up.set_gateways(&self.nets);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let to = PublishTarget {
            domain: 0,
            container: Some(C),
            container6: None,
            port: 80,
        };
        let reg = self.poll.registry();
        self.up
            .publish(reg, PublishedSocket::Tcp(l), to, None)
            .unwrap();
        port
    }
    fn send(&mut self, pkt: &[u8]) {
        self.up
            .from_container(self.poll.registry(), &self.nets, self.domain, pkt);
    }
    /// A segment without data or acknowledgment from the container.
    fn send_bare<A: Into<IpAddr> + Copy>(
        &mut self,
        from: (A, u16),
        to: (A, u16),
        seq: u32,
        flags: u8,
    ) {
        self.send(&tcp_packet(from, to, seq, 0, flags, &[]));
    }
    /// Runs events until `want` matches an output packet (returned), or gives up.
    fn until(&mut self, mut want: impl FnMut(&[u8]) -> bool) -> Option<Vec<u8>> {
        let mut events = Events::with_capacity(64);
        for _ in 0..200 {
            for (d, p, _) in self.up.take_output() {
                assert_eq!(d, self.domain, "delivered into another network");
                if want(&p) {
                    return Some(p);
                }
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            for e in events.iter() {
                self.up.event(
                    self.poll.registry(),
                    e.token(),
                    e.is_readable(),
                    e.is_writable(),
                    e.is_error(),
                );
            }
            self.up.tick(self.poll.registry(), Instant::now());
        }
        None
    }
    /// Sends a SYN from `from` to `to` with sequence `seq`; returns the SYN-ACK.
    fn connect<A: Into<IpAddr> + Copy>(
        &mut self,
        from: (A, u16),
        to: (A, u16),
        seq: u32,
    ) -> Vec<u8> {
        self.send(&tcp_packet(from, to, seq, 0, TcpFlags::SYN, &[]));
        self.until(|p| {
            tcp6_of(p).is_some_and(|t| {
                t.2 & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN | TcpFlags::ACK
            })
        })
        .expect("SYN-ACK")
    }
}

pub(super) fn tcp_of(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, u32, u32, Vec<u8>)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.protocol() != IpProtocol::Tcp {
        return None;
    }
    let t = TcpPacket::new_checked(ip.payload()).ok()?;
    assert!(t.verify_checksum(ip.src(), ip.dst()), "bad TCP checksum");
    Some((
        ip.src(),
        ip.dst(),
        t.flags(),
        t.seq(),
        t.ack(),
        t.payload().to_vec(),
    ))
}

/// A TCP segment of either family: (source, destination, flags, seq, ack, data), its
/// checksum checked.
fn tcp6_of(p: &[u8]) -> Option<(IpAddr, IpAddr, u8, u32, u32, Vec<u8>)> {
    let l3 = family::L3::parse(p)?;
    if l3.proto != family::TCP {
        return None;
    }
    let t = TcpPacket::new_checked(l3.payload).ok()?;
    let mut copy = l3.payload.to_vec();
    let mut c = TcpPacket::new_unchecked(&mut copy[..]);
    family::fill_tcp_checksum(&mut c, l3.src, l3.dst);
    assert_eq!(c.checksum(), t.checksum(), "bad TCP checksum");
    let data = t.payload().to_vec();
    Some((l3.src, l3.dst, t.flags(), t.seq(), t.ack(), data))
}

#[test]
fn tcp_to_gateway_reaches_host_loopback_both_ways() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::new(true);
    // The SYN-ACK comes only once the host connection exists.
    let synack = r.connect((C, 40000), (GW, port), 1000);
    let (src, dst, _, sseq, sack, _) = tcp_of(&synack).unwrap();
    assert_eq!((src, dst, sack), (GW, C, 1001));
    let (mut server, _) = l.accept().unwrap();
    r.send(&tcp_packet(
        (C, 40000),
        (GW, port),
        1001,
        sseq + 1,
        TcpFlags::ACK | TcpFlags::PSH,
        b"hello",
    ));
    r.until(|_| false);
    let mut buf = [0u8; 5];
    use std::io::Read as _;
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    use std::io::Write as _;
    server.write_all(b"world").unwrap();
    let data = r
        .until(|p| tcp_of(p).is_some_and(|t| !t.5.is_empty()))
        .expect("data");
    assert_eq!(tcp_of(&data).unwrap().5, b"world");
    // The server closes: a FIN reaches the container.
    drop(server);
    r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::FIN != 0))
        .expect("FIN");
}

#[test]
fn a_frame_buffer_goes_to_smoltcp_whole_and_bounded_by_its_frame() {
    let mut r = Rig::new(true);
    let spare = vec![3u8; 10];
    r.up.pool.push(spare);
    // The packet claims 1000 bytes; the frame ends at 60: nothing past it is read.
    let mut frame = vec![0xaau8; 200];
    let pkt = r.up.rx_packet(Segment::Frame(&mut frame, 14..60), 1000);
    assert_eq!((pkt.start, pkt.end, pkt.buf.len()), (14, 60, 200));
    assert_eq!(frame, vec![3u8; 10], "a spare left in the frame's place");
    // Borrowed bytes are copied, up to the length asked.
    let pkt = r.up.rx_packet(Segment::Borrowed(&[1, 2, 3, 4]), 3);
    assert_eq!(pkt.buf.get(pkt.start..pkt.end), Some(&[1u8, 2, 3][..]));
    // Buffers smoltcp read, and packets delivered, come back to the pool, bounded.
    for _ in 0..2 * POOL_BUFFERS {
        give_back(&mut r.up.pool, vec![0u8; 8]);
    }
    assert_eq!(r.up.pool.len(), POOL_BUFFERS);
    assert!(r.up.offer_buffer(vec![0u8; 8]).is_some());
}

#[test]
fn super_frames_toward_the_container_are_cut_at_its_mss() {
    let (p, gso) = super_frame_of(C, GW);
    assert_eq!(gso, 1460);
    let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.payload().len() > 1460, "{}", t.payload().len());
    // Only the pseudo-header sum, as segmentation expects.
    let len = ip.payload().len() as u32;
    let pseudo = checksum::pseudo_header_v4(GW, C, u8::from(IpProtocol::Tcp), len);
    assert_eq!(t.checksum(), checksum::fold(pseudo));
}

#[test]
fn ipv6_super_frames_toward_the_container_are_cut_at_its_mss() {
    let (p, gso) = super_frame_of(C6, GW6);
    assert_eq!(gso, 1460);
    let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.payload().len() > 1460, "{}", t.payload().len());
    let len = ip.payload().len() as u32;
    let pseudo = crate::wire::ipv6::pseudo_header_sum(&GW6, &C6, 6, len);
    assert_eq!(t.checksum(), checksum::fold(pseudo));
}

/// The first super-frame smoltcp builds toward container `c` (MSS 1460) for a host
/// sending 60 KB through gateway `gw`, with its segment size.
fn super_frame_of<A: Into<IpAddr> + Copy>(c: A, gw: A) -> (Vec<u8>, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::new(true);
    r.up.set_super_frames(true);
    // The container announces MSS 1460; smoltcp is shown more.
    let synack = r.connect((c, 40001), (gw, port), 1000);
    let (_, _, _, sseq, _, _) = tcp6_of(&synack).unwrap();
    let (mut server, _) = l.accept().unwrap();
    let ack = tcp_packet((c, 40001), (gw, port), 1001, sseq + 1, TcpFlags::ACK, &[]);
    r.send(&ack);
    use std::io::Write as _;
    server.write_all(&vec![7u8; 60_000]).unwrap();
    let mut found = None;
    let mut events = Events::with_capacity(64);
    for _ in 0..100 {
        for (_, p, gso) in r.up.take_output() {
            if gso != 0 && found.is_none() {
                found = Some((p, gso));
            }
        }
        if found.is_some() {
            break;
        }
        r.poll
            .poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for e in events.iter() {
            let (rd, wr, er) = (e.is_readable(), e.is_writable(), e.is_error());
            r.up.event(r.poll.registry(), e.token(), rd, wr, er);
        }
    }
    found.expect("a super-frame")
}

#[test]
fn tcp_refused_on_host_is_reset_in_container() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut r = Rig::new(true);
    r.send_bare((C, 40001), (GW, port), 5, TcpFlags::SYN);
    // After the host refuses, the container's retransmitted SYN meets an RST.
    std::thread::sleep(Duration::from_millis(50));
    r.until(|_| false);
    r.send_bare((C, 40001), (GW, port), 5, TcpFlags::SYN);
    let rst = r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::RST != 0));
    assert!(rst.is_some(), "no RST");
}

#[test]
fn other_networks_and_internal_networks_are_not_reached() {
    let mut r = Rig::new(true);
    r.send(&tcp_packet(
        (C, 40002),
        (Ipv4Addr::new(10, 8, 0, 5), 80),
        5,
        0,
        TcpFlags::SYN,
        &[],
    ));
    assert!(
        r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::RST != 0))
            .is_some()
    );
    assert_eq!(r.up.stats.tcp_refused, 1);
    let mut r = Rig::new(false);
    r.send(&tcp_packet(
        (C, 40003),
        (Ipv4Addr::new(192, 0, 2, 1), 80),
        5,
        0,
        TcpFlags::SYN,
        &[],
    ));
    assert!(
        r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::RST != 0))
            .is_some()
    );
    assert_eq!(
        target(
            &nets(false),
            0,
            (Ipv4Addr::new(192, 0, 2, 1).into(), 80),
            None
        ),
        None
    );
    assert_eq!(
        target(
            &nets(true),
            0,
            (Ipv4Addr::new(127, 0, 0, 1).into(), 80),
            None
        ),
        None
    );
    assert_eq!(
        target(&nets(true), 0, (GW.into(), 80), None),
        Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 80)))
    );
    assert_eq!(target(&nets(true), 7, (GW.into(), 80), None), None);
}

#[test]
fn the_gateway_is_the_host_main_address_unless_loopback_is_opted_in() {
    let host = Some(Ipv4Addr::new(203, 0, 113, 5));
    let mut n = nets(true);
    if let Some(Some(v)) = n.get_mut(0) {
        v.host_loopback = false;
    }
    assert_eq!(
        target(&n, 0, (GW.into(), 8080), host),
        Some(SocketAddr::from((Ipv4Addr::new(203, 0, 113, 5), 8080)))
    );
    // No main address: closed, never the loopback.
    assert_eq!(target(&n, 0, (GW.into(), 8080), None), None);
    assert_eq!(
        target(&nets(true), 0, (GW.into(), 8080), host),
        Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)))
    );
    // Port 53 of a network without DNS is closed, loopback or not.
    for v in n.iter_mut().flatten() {
        v.dns = false;
    }
    assert_eq!(target(&n, 0, (GW.into(), 53), host), None);
    if let Some(Some(v)) = n.get_mut(0) {
        v.host_loopback = true;
    }
    assert_eq!(target(&n, 0, (GW.into(), 53), host), None);
}

#[test]
fn udp_flow_carries_both_ways() {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let mut r = Rig::new(true);
    r.send(&build_udp(C, 5000, GW, port, b"ping").unwrap());
    let mut buf = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    s.send_to(b"pong", from).unwrap();
    let p = r
        .until(|p| Ipv4Packet::new_checked(p).is_ok_and(|ip| ip.protocol() == IpProtocol::Udp))
        .expect("reply");
    let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (GW, C));
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (u.src_port(), u.dst_port(), u.payload()),
        (port, 5000, &b"pong"[..])
    );
    assert!(u.verify_checksum(ip.src(), ip.dst()));
    assert_eq!(r.up.counts().1, 1);
}

#[test]
fn a_published_port_out_of_descriptors_accepts_again_on_a_timer() {
    let mut r = Rig::new(true);
    let port = r.publish_tcp_80();
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // As after an accept that ran out of descriptors: the client waits in the
    // backlog and no readiness comes again (edge-triggered); the timer takes it.
    let i = r.up.published.iter().position(|p| p.is_some()).unwrap();
    r.up.accept_retry.push(i);
    let now = Instant::now();
    r.up.accept_retry_at = Some(now + ACCEPT_RETRY);
    // Not before its time (the gateway ticks on every wake-up)...
    let next = r.up.tick(r.poll.registry(), now);
    assert!(next.is_some_and(|t| t <= now + ACCEPT_RETRY));
    assert_eq!(r.up.accept_retry, [i]);
    assert!(r.up.take_output().is_empty());
    // ...then accepted.
    r.up.tick(r.poll.registry(), now + ACCEPT_RETRY);
    assert!(r.up.accept_retry.is_empty() && r.up.accept_retry_at.is_none());
    let out = r.up.take_output();
    let syn = out.iter().find_map(|(_, p, _)| tcp_of(p));
    assert!(
        syn.is_some_and(|t| t.2 & TcpFlags::SYN != 0),
        "no SYN toward the container"
    );
}

#[test]
fn published_tcp_port_reaches_the_container_from_the_gateway_address() {
    let mut r = Rig::new(true);
    let port = r.publish_tcp_80();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // smoltcp opens towards the container, from the gateway (a loopback client).
    let syn = r
        .until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::SYN != 0))
        .expect("SYN");
    let (src, dst, _, cseq, _, _) = tcp_of(&syn).unwrap();
    assert_eq!((src, dst), (GW, C));
    let cport = TcpPacket::new_checked(Ipv4Packet::new_checked(&syn[..]).unwrap().payload())
        .unwrap()
        .src_port();
    r.send(&tcp_packet(
        (C, 80),
        (GW, cport),
        7000,
        cseq + 1,
        TcpFlags::SYN | TcpFlags::ACK,
        &[],
    ));
    r.until(|p| tcp_of(p).is_some_and(|t| t.2 == TcpFlags::ACK));
    use std::io::{Read as _, Write as _};
    client.write_all(b"GET").unwrap();
    let req = r
        .until(|p| tcp_of(p).is_some_and(|t| !t.5.is_empty()))
        .expect("request");
    assert_eq!(tcp_of(&req).unwrap().5, b"GET");
    // The container answers and closes.
    r.send(&tcp_packet(
        (C, 80),
        (GW, cport),
        7001,
        cseq + 4,
        TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN,
        b"200 OK",
    ));
    r.until(|_| false);
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert_eq!(got, b"200 OK");
}

#[test]
fn dns_over_tcp_on_the_gateway_is_answered_locally() {
    let mut r = Rig::new(true);
    let synack = r.connect((C, 40100), (GW, 53), 100);
    let sseq = tcp_of(&synack).unwrap().3;
    r.send(&tcp_packet(
        (C, 40100),
        (GW, 53),
        101,
        sseq + 1,
        TcpFlags::ACK,
        &[],
    ));
    r.send(&tcp_packet(
        (C, 40100),
        (GW, 53),
        101,
        sseq + 1,
        TcpFlags::ACK | TcpFlags::PSH,
        &[0, 3, 7, 8, 9],
    ));
    r.until(|_| false);
    let reqs = r.up.take_dns_requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].msg, vec![7, 8, 9]);
    assert_eq!(
        reqs[0].from,
        ContainerId {
            domain: 0,
            ip: C.into()
        }
    );
    // An answer for another generation of the slot (a connection that ended and
    // whose slot was reused) goes nowhere.
    let stale = TcpConnId {
        generation: reqs[0].conn.generation.wrapping_sub(1),
        ..reqs[0].conn
    };
    r.up.dns_reply(r.poll.registry(), stale, &[6, 6]);
    assert!(
        r.until(|p| tcp_of(p).is_some_and(|t| !t.5.is_empty()))
            .is_none(),
        "a stale answer was sent"
    );
    r.up.dns_reply(r.poll.registry(), reqs[0].conn, &[1, 2]);
    let ans = r
        .until(|p| tcp_of(p).is_some_and(|t| !t.5.is_empty()))
        .expect("answer");
    assert_eq!(tcp_of(&ans).unwrap().5, vec![0, 2, 1, 2]);
}

#[test]
fn garbage_is_counted_not_fatal() {
    let mut r = Rig::new(true);
    for p in [&[][..], &[0x45, 0, 0, 10][..], &[0x45; 40][..]] {
        r.send(p);
    }
    assert!(r.up.stats.dropped >= 2);
}

fn short(handshake_ms: u64, idle_ms: u64) -> UplinkLimits {
    UplinkLimits {
        tcp_handshake: Duration::from_millis(handshake_ms),
        tcp_idle: Duration::from_millis(idle_ms),
        ..UplinkLimits::default()
    }
}

fn is_rst(p: &[u8]) -> bool {
    tcp_of(p).is_some_and(|t| t.2 & TcpFlags::RST != 0)
}

#[test]
fn a_handshake_the_container_never_finishes_ends() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::with_limits(true, short(300, 60_000));
    // SYN-ACK comes, the container never ACKs: the slot is freed with an RST.
    r.connect((C, 41000), (GW, port), 1);
    assert_eq!(r.up.counts().0, 1);
    assert!(
        r.until(is_rst).is_some(),
        "no RST after the handshake timeout"
    );
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 0);
    assert_eq!(r.up.stats.tcp_handshake_timeouts, 1);
    assert_eq!(r.up.quotas.fds(), 0);
}

/// The stacks with a smoltcp timer are exactly those in the timer index, once each.
fn timers_in_step(up: &SocketUplink) {
    let due: BTreeSet<_> = up
        .stacks
        .iter()
        .filter_map(|(who, st)| st.due.map(|at| (at, *who)))
        .collect();
    assert_eq!(due, up.timers);
}

#[test]
fn a_stacks_timer_alone_brings_its_retransmission() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::with_limits(true, short(1_800, 60_000));
    let synack = |p: &[u8]| {
        tcp_of(p)
            .is_some_and(|t| t.2 & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN | TcpFlags::ACK)
    };
    r.connect((C, 41002), (GW, port), 1);
    timers_in_step(&r.up);
    assert_eq!(r.up.timers.len(), 1, "the SYN-ACK's retransmission timer");
    // Nothing more from the container: only the timer brings the SYN-ACK again.
    assert!(r.until(synack).is_some(), "SYN-ACK not retransmitted");
    timers_in_step(&r.up);
    // The handshake timeout ends it; its stack and timer go with it.
    assert!(
        r.until(is_rst).is_some(),
        "no RST after the handshake timeout"
    );
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 0);
    assert!(r.up.stacks.is_empty() && r.up.timers.is_empty());
}

#[test]
fn a_handshake_the_container_resets_ends_at_once() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::with_limits(true, short(60_000, 60_000));
    // SYN, SYN-ACK, RST: what a SYN scan does to every port it finds open.
    r.connect((C, 41003), (GW, port), 1);
    r.send_bare((C, 41003), (GW, port), 2, TcpFlags::RST);
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 0, "the connection outlived its reset");
    assert_eq!(r.up.quotas.fds(), 0);
    assert!(r.up.stacks.is_empty() && r.up.timers.is_empty());
    // The host side was closed too.
    let (mut server, _) = l.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    use std::io::Read as _;
    assert!(matches!(server.read(&mut b), Ok(0) | Err(_)));
}

#[test]
fn shed_gives_back_the_tables_of_ended_connections() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::with_limits(true, short(60_000, 60_000));
    for i in 0..40u16 {
        r.connect((C, 42000 + i), (GW, port), 1);
    }
    // Positive control: the tables grew with the connections.
    assert_eq!(r.up.counts().0, 40);
    assert!(r.up.tcp.len() >= 40 && r.up.tcp_by_quad.capacity() >= 40);
    for i in 0..40u16 {
        r.send_bare((C, 42000 + i), (GW, port), 2, TcpFlags::RST);
    }
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 0);
    assert!(r.up.tcp.len() >= 40, "ended connections leave their slots");
    r.up.shed();
    assert_eq!((r.up.tcp.capacity(), r.up.tcp_by_quad.capacity()), (0, 0));
}

#[test]
fn an_inexact_rst_is_challenged_and_an_exact_one_resets() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::with_limits(true, short(60_000, 60_000));
    let (me, gw) = ((C, 41005), (GW, port));
    let synack = tcp_of(&r.connect(me, gw, 1000)).unwrap();
    let ours = synack.3.wrapping_add(1);
    r.send(&tcp_packet(me, gw, 1001, ours, TcpFlags::ACK, b"hello"));
    let (mut server, _) = l.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 5];
    use std::io::Read as _;
    server.read_exact(&mut b).unwrap();
    r.until(|_| false);
    // In the window, 100 bytes past the next expected (1006): a challenge ACK of
    // 1006, and the connection stays.
    r.send_bare(me, gw, 1106, TcpFlags::RST);
    let ack = r.until(|p| tcp_of(p).is_some_and(|t| t.2 == TcpFlags::ACK && t.4 == 1006));
    assert!(ack.is_some(), "no challenge ACK");
    assert_eq!(r.up.stats.challenge_acks, 1);
    assert_eq!(r.up.counts().0, 1, "an inexact RST ended the connection");
    // Outside the window: nothing, the connection stays.
    r.send_bare(me, gw, 1006u32.wrapping_sub(10), TcpFlags::RST);
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 1, "an RST outside the window ended it");
    // Exactly the next number: the connection ends (the positive control).
    r.send_bare(me, gw, 1006, TcpFlags::RST);
    r.until(|_| false);
    assert_eq!(
        r.up.counts().0,
        0,
        "the exact RST did not end the connection"
    );
}

#[test]
fn a_syn_carrying_data_is_answered_once_the_host_connect_finishes() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::new(true);
    // Held while the connect is pending: its headers only (the data is not taken,
    // so the container sends it again after the handshake).
    r.send(&tcp_packet(
        (C, 41004),
        (GW, port),
        500,
        0,
        TcpFlags::SYN,
        &[7u8; 3000],
    ));
    let synack = r
        .until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::SYN != 0))
        .expect("SYN-ACK");
    let (_, _, flags, _, ack, _) = tcp_of(&synack).unwrap();
    assert_eq!(flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(ack, 501, "the SYN's data was acknowledged");
    assert_eq!(r.up.counts().0, 1);
}

#[test]
fn an_idle_connection_ends_both_sides() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::with_limits(true, short(5_000, 400));
    let synack = r.connect((C, 41001), (GW, port), 10);
    let sseq = tcp_of(&synack).unwrap().3;
    r.send(&tcp_packet(
        (C, 41001),
        (GW, port),
        11,
        sseq + 1,
        TcpFlags::ACK,
        &[],
    ));
    let (mut server, _) = l.accept().unwrap();
    assert!(r.until(is_rst).is_some(), "no RST after the idle timeout");
    // The host side is closed too.
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    use std::io::Read as _;
    assert!(matches!(server.read(&mut b), Ok(0) | Err(_)));
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 0);
    assert_eq!(r.up.stats.tcp_idle_timeouts, 1);
}

#[test]
fn a_container_past_its_tcp_share_is_refused_and_others_are_not() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::with_limits(
        true,
        UplinkLimits {
            tcp_per_container: 2,
            ..UplinkLimits::default()
        },
    );
    r.connect((C, 42000), (GW, port), 1);
    r.connect((C, 42001), (GW, port), 1);
    r.send_bare((C, 42002), (GW, port), 1, TcpFlags::SYN);
    assert!(r.until(is_rst).is_some(), "third connection not refused");
    let refused: Vec<_> = r.up.take_refusals().collect();
    assert_eq!(
        refused,
        vec![(
            ContainerId {
                domain: 0,
                ip: C.into()
            },
            Refusal::TcpQuota
        )]
    );
    // A neighbour still connects.
    r.connect((Ipv4Addr::new(10, 9, 0, 3), 42000), (GW, port), 1);
    assert_eq!(r.up.counts().0, 3);
}

#[test]
fn a_port_without_port_security_is_one_tenant_whatever_its_sources() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::with_limits(
        true,
        UplinkLimits {
            tcp_per_container: 2,
            ..UplinkLimits::default()
        },
    );
    // The gateway says: these frames come from a port without port security whose
    // address is C. Three sources, one tenant.
    r.up.set_tenant(Some(C.into()));
    r.connect((Ipv4Addr::new(10, 9, 0, 50), 42000), (GW, port), 1);
    r.connect((Ipv4Addr::new(10, 9, 0, 51), 42000), (GW, port), 1);
    r.send_bare(
        (Ipv4Addr::new(10, 9, 0, 52), 42000),
        (GW, port),
        1,
        TcpFlags::SYN,
    );
    assert!(r.until(is_rst).is_some(), "third source not refused");
    let refused: Vec<_> = r.up.take_refusals().collect();
    assert_eq!(
        refused,
        vec![(
            ContainerId {
                domain: 0,
                ip: C.into()
            },
            Refusal::TcpQuota
        )]
    );
    // A secured neighbour (its source is itself) still connects: the control.
    r.up.set_tenant(None);
    r.connect((Ipv4Addr::new(10, 9, 0, 3), 42000), (GW, port), 1);
    assert_eq!(r.up.counts().0, 3);
}

#[test]
fn connections_past_a_containers_buffer_budget_get_small_buffers() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::new(true);
    let full = TCP_BUFFER_BUDGET / (2 * TCP_BUFFER);
    for i in 0..=full {
        r.connect((C, 42000 + i as u16), (GW, port), 1);
    }
    let mut sizes: Vec<usize> = r.up.tcp.iter().flatten().map(|c| c.buffers).collect();
    sizes.sort_unstable();
    assert_eq!(sizes[0], 2 * TCP_BUFFER_MIN);
    assert!(sizes[1..].iter().all(|&b| b == 2 * TCP_BUFFER));
    let who = ContainerId {
        domain: 0,
        ip: C.into(),
    };
    assert_eq!(r.up.buffers[&who], sizes.iter().sum::<usize>());
    // A neighbour has its own budget.
    r.connect((Ipv4Addr::new(10, 9, 0, 3), 42000), (GW, port), 1);
    let n =
        r.up.tcp
            .iter()
            .flatten()
            .filter(|c| c.buffers == 2 * TCP_BUFFER);
    assert_eq!(n.count(), full + 1);
    // Ended connections give their share back.
    r.up.flush(r.poll.registry());
    assert!(r.up.buffers.is_empty());
}

#[test]
fn replies_go_back_to_the_network_the_flow_came_from() {
    // Two networks with the same subnet: the address says nothing of the network.
    let mut r = Rig::new(true);
    if let Some(Some(n)) = r.nets.get_mut(1) {
        n.subnet = Ipv4Addr::new(10, 9, 0, 0);
        n.gateway = GW;
    }
    r.domain = 1;
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    r.send(&build_udp(C, 5001, GW, port, b"q").unwrap());
    let mut buf = [0u8; 8];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (_, from) = s.recv_from(&mut buf).unwrap();
    s.send_to(b"a", from).unwrap();
    // `until` asserts every packet goes to network 1.
    assert!(
        r.until(|p| Ipv4Packet::new_checked(p).is_ok_and(|ip| ip.protocol() == IpProtocol::Udp))
            .is_some()
    );
    // TCP: a connection of network 1; the same addresses from network 0 cannot
    // touch it (its RST meets network 0's own stack; nothing goes into network 0).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = l.local_addr().unwrap().port();
    r.connect((C, 43000), (GW, tport), 1);
    r.up.from_container(
        r.poll.registry(),
        &r.nets,
        0,
        &tcp_packet((C, 43000), (GW, tport), 2, 0, TcpFlags::RST, &[]),
    );
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 1);
    // A refused SYN's RST goes back to where the SYN came from.
    r.send(&tcp_packet(
        (C, 43001),
        (Ipv4Addr::new(10, 9, 0, 9), 80),
        1,
        0,
        TcpFlags::SYN,
        &[],
    ));
    assert!(r.until(is_rst).is_some());
}

/// A listener on 127.0.0.1 with backlog 0 and its queue full: further SYNs to it
/// are dropped, so connects to it stay pending. (listener, the queued client, port)
fn full_listener() -> (OwnedFd, std::net::TcpStream, u16) {
    // SAFETY: plain socket calls on a descriptor this function owns; the address
    // structure is fully initialised and its size is passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let owned = OwnedFd::from_raw_fd(fd);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        let mut got = len;
        libc::getsockname(fd, (&mut a as *mut libc::sockaddr_in).cast(), &mut got);
        let port = u16::from_be(a.sin_port);
        let first = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        (owned, first, port)
    }
}

#[test]
fn a_host_connect_that_never_completes_is_refused_after_the_handshake_timeout() {
    let (_l, _first, port) = full_listener();
    let mut r = Rig::with_limits(true, short(500, 60_000));
    r.send_bare((C, 44000), (GW, port), 77, TcpFlags::SYN);
    let rst = r.until(is_rst).expect("no RST after the handshake timeout");
    let (src, dst, flags, _, ack, _) = tcp_of(&rst).unwrap();
    assert_eq!((src, dst, ack), (GW, C, 78));
    assert_eq!(flags, TcpFlags::RST | TcpFlags::ACK);
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 0);
    assert_eq!(r.up.stats.tcp_handshake_timeouts, 1);
    assert_eq!(r.up.quotas.fds(), 0);
}

#[test]
fn a_pending_host_connect_leaves_the_uplink_asleep() {
    let (_l, _first, port) = full_listener();
    let mut r = Rig::with_limits(true, short(60_000, 60_000));
    r.send_bare((C, 44001), (GW, port), 77, TcpFlags::SYN);
    r.until(|_| false);
    assert_eq!(
        r.up.counts().0,
        1,
        "the connection is held, its connect pending"
    );
    // Its SYN-ACK held back, smoltcp asks for a poll at once after every poll: the
    // uplink must not wake the gateway thread for it on every round.
    let reg = r.poll.registry();
    for _ in 0..3 {
        let now = Instant::now();
        let next = r.up.tick(reg, now).expect("a next time");
        assert!(
            next >= now + POLL_AGAIN / 2,
            "next poll in {:?}",
            next.saturating_duration_since(now)
        );
    }
    timers_in_step(&r.up);
    // The container gives up: the connection ends at once, host socket and all.
    r.send_bare((C, 44001), (GW, port), 78, TcpFlags::RST);
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 0);
    assert_eq!(r.up.quotas.fds(), 0);
    assert!(r.up.stacks.is_empty() && r.up.timers.is_empty());
}

#[test]
fn a_published_connection_the_container_never_answers_ends() {
    let mut r = Rig::with_limits(true, short(300, 60_000));
    let port = r.publish_tcp_80();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    r.until(|p| tcp_of(p).is_some_and(|t| t.2 & TcpFlags::SYN != 0))
        .expect("SYN towards the container");
    // The container stays silent: the connection ends on both sides.
    r.until(is_rst).expect("no RST after the handshake timeout");
    r.until(|_| false);
    assert_eq!(r.up.counts().0, 0);
    assert_eq!(r.up.stats.tcp_handshake_timeouts, 1);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    use std::io::Read as _;
    assert!(matches!(client.read(&mut b), Ok(0) | Err(_)));
}

#[test]
fn tcp_over_ipv6_to_the_gateway_reaches_the_host_both_ways() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::new(true);
    let synack = r.connect((C6, 40000), (GW6, port), 1000);
    let (src, dst, _, sseq, sack, _) = tcp6_of(&synack).unwrap();
    assert_eq!((src, dst, sack), (GW6.into(), C6.into(), 1001));
    let (mut server, _) = l.accept().unwrap();
    let ack = TcpFlags::ACK | TcpFlags::PSH;
    r.send(&tcp_packet(
        (C6, 40000),
        (GW6, port),
        1001,
        sseq + 1,
        ack,
        b"hello",
    ));
    r.until(|_| false);
    let mut buf = [0u8; 5];
    use std::io::{Read as _, Write as _};
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    server.write_all(b"world").unwrap();
    let data = r
        .until(|p| tcp6_of(p).is_some_and(|t| !t.5.is_empty()))
        .expect("data");
    assert_eq!(tcp6_of(&data).unwrap().5, b"world");
    let quads = r.up.tcp_quads();
    assert_eq!(quads, vec![(C6.into(), 40000, GW6.into(), port)]);
    drop(server);
    r.until(|p| tcp6_of(p).is_some_and(|t| t.2 & TcpFlags::FIN != 0))
        .expect("FIN");
}

#[test]
fn udp_over_ipv6_carries_both_ways() {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let mut r = Rig::new(true);
    let p = family::build_udp((C6.into(), 5000), (GW6.into(), port), b"ping").unwrap();
    r.send(&p);
    let mut buf = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    s.send_to(b"pong", from).unwrap();
    let p = r
        .until(|p| family::L3::parse(p).is_some_and(|l| l.proto == family::UDP))
        .expect("reply");
    let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (GW6, C6));
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (u.src_port(), u.dst_port(), u.payload()),
        (port, 5000, &b"pong"[..])
    );
    let mut copy = ip.payload().to_vec();
    UdpPacket::new_unchecked(&mut copy[..]).fill_checksum_v6(&GW6, &C6);
    assert_eq!(copy, ip.payload(), "bad UDP checksum");
    assert_eq!(r.up.flows()[0].inside, SocketAddr::from((C6, 5000)));
}

#[test]
fn ipv6_destinations_that_are_the_host_or_no_ones_are_not_reached() {
    let n = nets(true);
    let to = |a: &str| target(&n, 0, (a.parse::<IpAddr>().unwrap(), 80), None);
    for a in [
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "fe80::1",
        "ff02::1",
    ] {
        assert_eq!(to(a), None, "{a}");
    }
    // Inside a vswitch network: never; elsewhere: the address itself (the control).
    assert_eq!(to("fd00:9::77"), None);
    assert_eq!(to("2001:db8::1"), Some("[2001:db8::1]:80".parse().unwrap()));
    // An internal network reaches nothing over IPv6 either.
    let n = nets(false);
    assert_eq!(
        target(&n, 0, ("2001:db8::1".parse().unwrap(), 80), None),
        None
    );
}

#[test]
fn a_published_port_takes_ipv6_clients_to_the_container_over_ipv6_or_ipv4() {
    let mut r = Rig::new(true);
    r.up.set_gateways(&r.nets);
    // Each case publishes another container port: its SYN is told from earlier ones'
    // retransmissions by that.
    let publish =
        |r: &mut Rig, host: &str, (v4, v6): (Option<Ipv4Addr>, Option<Ipv6Addr>), port| {
            let l = std::net::TcpListener::bind(host).unwrap();
            let local = l.local_addr().unwrap();
            let to = PublishTarget {
                domain: 0,
                container: v4,
                container6: v6,
                port,
            };
            let reg = r.poll.registry();
            r.up.publish(reg, PublishedSocket::Tcp(l), to, None)
                .unwrap();
            let client = std::net::TcpStream::connect(local).unwrap();
            let to_port = |p: &[u8]| {
                let l3 = family::L3::parse(p);
                l3.and_then(|l| TcpPacket::new_checked(l.payload).ok())
                    .is_some_and(|t| t.syn() && t.dst_port() == port)
            };
            let syn = r.until(to_port).expect("SYN into the container");
            let (src, dst, ..) = tcp6_of(&syn).unwrap();
            (src, dst, client)
        };
    // A dual-stack container: over IPv6, the loopback client seen as the gateway.
    let (src, dst, _c1) = publish(&mut r, "[::1]:0", (Some(C), Some(C6)), 80);
    assert_eq!((src, dst), (GW6.into(), C6.into()));
    // An IPv4-only container: the same client reaches it over IPv4 (as a proxy would).
    let (src, dst, _c2) = publish(&mut r, "[::1]:0", (Some(C), None), 81);
    assert_eq!((src, dst), (GW.into(), C.into()));
    // An IPv6-only container: an IPv4 client reaches it over IPv6, seen as the gateway.
    let (src, dst, _c3) = publish(&mut r, "127.0.0.1:0", (None, Some(C6)), 82);
    assert_eq!((src, dst), (GW6.into(), C6.into()));
    let addrs = r.up.published_addrs();
    assert_eq!(
        addrs.iter().filter(|(a, _)| a.is_ipv6()).count(),
        2,
        "{addrs:?}"
    );
}
