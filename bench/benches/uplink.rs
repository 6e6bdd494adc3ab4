//! The socket uplink's wake-up: what `SocketUplink::tick` costs the gateway thread on
//! every wake-up when nothing is due, beside N containers that each hold one idle,
//! established connection (to a listener on this process's loopback;
//! each container's stack has a timer: its keep-alive).
//! The gateway thread runs it once per batch of frames: tens of thousands of times a
//! second under a bulk transfer.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dataplane::uplink::socket::{NetView, SocketUplink};
use dataplane::wire::{IpProtocol, Ipv4Packet, TcpPacket};
use mio::{Events, Poll};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const NETS: [Option<NetView>; 1] = [Some(NetView {
    gateway: GW,
    subnet: Ipv4Addr::new(10, 1, 0, 0),
    prefix_len: 16,
    v6: None,
    egress: true,
    dns: false,
    host_loopback: true,
})];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A segment without data from `src:41000` to the gateway's `port`.
fn segment(src: Ipv4Addr, port: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut pkt = vec![0u8; 40];
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    ip.set_version_and_header_len(20);
    ip.set_total_len(40);
    ip.set_ttl(64);
    ip.set_protocol(IpProtocol::Tcp);
    ip.set_src(src);
    ip.set_dst(GW);
    ip.fill_checksum();
    let mut tcp = TcpPacket::new_unchecked(&mut pkt[20..]);
    tcp.set_src_port(41000);
    tcp.set_dst_port(port);
    tcp.set_seq(seq);
    tcp.set_ack(ack);
    tcp.set_header_len(20);
    tcp.set_flags(flags);
    tcp.set_window(65535);
    tcp.fill_checksum(src, GW);
    pkt
}

/// The container address and sequence number of each SYN-ACK the uplink sent.
fn syn_acks(up: &mut SocketUplink) -> Vec<(Ipv4Addr, u32)> {
    let mut got = Vec::new();
    up.drain_output(|o| {
        let pkt = o.buf.get(o.start..o.end).unwrap_or_default();
        if let Ok(ip) = Ipv4Packet::new_checked(pkt)
            && let Ok(t) = TcpPacket::new_checked(ip.payload())
            && t.flags() & (SYN | ACK) == SYN | ACK
        {
            got.push((ip.dst(), t.seq()));
        }
        Some(o.buf)
    });
    got
}

/// `n` containers, each with one established, idle connection to `listener`, whose
/// ends on the host are kept in `accepted`.
fn containers(
    up: &mut SocketUplink,
    poll: &mut Poll,
    n: u32,
    listener: &TcpListener,
    accepted: &mut Vec<TcpStream>,
) {
    let Ok(port) = listener.local_addr().map(|a| a.port()) else {
        panic!("no listener port");
    };
    let mut events = Events::with_capacity(1024);
    for i in 0..n {
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 1, 0)) + i);
        up.from_container(poll.registry(), &NETS, 0, &segment(src, port, 1, 0, SYN));
    }
    let mut established = 0;
    for _ in 0..1000 {
        if established == n {
            return;
        }
        while let Ok((s, _)) = listener.accept() {
            accepted.push(s);
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(1)))
            .is_err()
        {
            continue;
        }
        for e in events.iter() {
            let (r, w, x) = (e.is_readable(), e.is_writable(), e.is_error());
            up.event(poll.registry(), e.token(), r, w, x);
        }
        up.tick(poll.registry(), Instant::now());
        for (src, seq) in syn_acks(up) {
            let ack = segment(src, port, 2, seq.wrapping_add(1), ACK);
            up.from_container(poll.registry(), &NETS, 0, &ack);
            established += 1;
        }
    }
    panic!("{established} of {n} connections established");
}

fn tick(c: &mut Criterion) {
    let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
        panic!("no loopback listener");
    };
    if listener.set_nonblocking(true).is_err() {
        panic!("listener not made non-blocking");
    }
    let mut accepted = Vec::new();
    let mut g = c.benchmark_group("uplink_tick");
    for n in [1u32, 100, 500] {
        let Ok(mut poll) = Poll::new() else {
            panic!("no poll");
        };
        let mut up = SocketUplink::new();
        containers(&mut up, &mut poll, n, &listener, &mut accepted);
        let reg = poll.registry();
        g.bench_with_input(BenchmarkId::from_parameter(n), &(), |b, _| {
            b.iter(|| {
                let next = up.tick(reg, Instant::now());
                up.drain_output(|o| Some(o.buf));
                next
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
