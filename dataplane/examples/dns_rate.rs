//! Queries per second through the embedded DNS server's sans-I/O core, one thread, no
//! sockets: local answers, NODATA, FORMERR, and a forward plus its relayed answer.
//!
//! Run: `cargo run --release -p vswitch-dataplane --example dns_rate [SECONDS_PER_CASE]`

// A measurement with fixed inputs: a failure here is a bug of the example, fine to panic on.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::dns::{Action, ClientRef, DnsConfig, DnsServer, Names, Transport};

/// `dig web` (EDNS, cookie), as captured.
const DIG_WEB: [u8; 44] = [
    0x50, 0xd6, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x77, 0x65, 0x62,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,
    0x00, 0x0a, 0x00, 0x08, 0x99, 0x6b, 0x19, 0xb0, 0xe9, 0xa6, 0x22, 0xe8,
];

/// `dig +noedns api`: a name with several addresses (round robin).
const DIG_API: [u8; 21] = [
    0x12, 0x34, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, b'a', b'p', b'i',
    0x00, 0x00, 0x01, 0x00, 0x01,
];

/// `dig web AAAA` (EDNS).
const DIG_AAAA: [u8; 44] = [
    0x00, 0x72, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x77, 0x65, 0x62,
    0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,
    0x00, 0x0a, 0x00, 0x08, 0xc0, 0xac, 0x14, 0xb6, 0x0e, 0x2e, 0x82, 0x7c,
];

/// `dig app.example.test` (EDNS), forwarded.
const DIG_APP: [u8; 57] = [
    0x00, 0x48, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x61, 0x70, 0x70,
    0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00,
    0x08, 0x12, 0x47, 0xdb, 0x00, 0x84, 0x9c, 0x11, 0x54,
];

/// dnsmasq's answer to `DIG_APP` (192.0.2.7).
const DNSMASQ_APP: [u8; 61] = [
    0x00, 0x48, 0x85, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x03, 0x61, 0x70, 0x70,
    0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00, 0x01,
    0x00, 0x01, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0xc0, 0x00,
    0x02, 0x07, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

fn table() -> Names {
    let mut b = Names::builder();
    b.gateway(Ipv4Addr::new(172, 18, 0, 1));
    for i in 0..250u8 {
        b.container(&format!("c{i}"), Ipv4Addr::new(172, 18, 1, i))
            .expect("valid name");
    }
    b.container("web", Ipv4Addr::new(172, 18, 0, 2))
        .expect("valid name");
    for i in 2..6u8 {
        b.alias("api", Ipv4Addr::new(172, 18, 0, i))
            .expect("valid name");
    }
    b.build()
}

fn rate(what: &str, secs: f64, mut one: impl FnMut() -> usize) {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut n, mut bytes) = (0u64, 0usize);
    while start.elapsed() < budget {
        for _ in 0..1000 {
            bytes += one();
        }
        n += 1000;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "{what:<40} {:>10.0} /s  {:>7.2} us each  ({} bytes out per op)",
        n as f64 / el,
        el * 1e6 / n as f64,
        bytes / n as usize
    );
}

fn out_len(a: &Action) -> usize {
    match a {
        Action::Reply { bytes, .. } | Action::Forward { bytes, .. } => bytes.len(),
        Action::Nothing => 0,
    }
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let names = table();
    let mut s = DnsServer::new(DnsConfig::default(), 1);
    let c = ClientRef(1);
    let now = Instant::now();

    rate("local A (dig web, EDNS)", secs, || {
        out_len(&black_box(s.query(
            &names,
            &DIG_WEB,
            Transport::Udp,
            c,
            now,
        )))
    });
    rate("local A, 4 addresses round robin", secs, || {
        out_len(&black_box(s.query(
            &names,
            &DIG_API,
            Transport::Udp,
            c,
            now,
        )))
    });
    rate("local NODATA (AAAA)", secs, || {
        out_len(&black_box(s.query(
            &names,
            &DIG_AAAA,
            Transport::Udp,
            c,
            now,
        )))
    });
    rate("FORMERR (header only)", secs, || {
        out_len(&black_box(s.query(
            &names,
            &DIG_WEB[..20],
            Transport::Udp,
            c,
            now,
        )))
    });
    rate("forward + relay upstream answer", secs, || {
        let a = s.query(&names, &DIG_APP, Transport::Udp, c, now);
        let Action::Forward { id, .. } = a else {
            panic!("not forwarded: {a:?}");
        };
        let mut answer = DNSMASQ_APP;
        answer[..2].copy_from_slice(&id.to_be_bytes());
        let r = s.upstream_reply(0, &answer, now);
        r.as_ref().map_or(0, out_len)
    });
    println!("stats: {:?}", s.stats());
}
