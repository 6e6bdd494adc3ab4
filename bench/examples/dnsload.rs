//! A DNS load client in the manner of dnsperf: a fixed number of queries in flight
//! over one UDP socket, each answered one replaced at once, for a number of seconds.
//! Used by `bench/dns/run.sh` where dnsperf is not installed, and by
//! `bench/flood/run` for the DNS client beside a flooding neighbour.
//!
//! Run: `cargo run --release -p vswitch-bench --example dnsload -- SERVER:PORT NAMES_FILE
//! [SECONDS] [IN_FLIGHT]` (defaults 10 s, 200 in flight). `NAMES_FILE` has one name a
//! line (dnsperf's "name TYPE" lines are accepted; only A is asked). A query without an
//! answer after 1 s is counted lost and its slot reused.
//!
//! Prints one JSON line: `{"qps": .., "sent": .., "answered": .., "lost": ..}`.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A query for `name`, type A, class IN, recursion desired, with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

struct Args {
    server: SocketAddr,
    names: Vec<String>,
    secs: u64,
    in_flight: usize,
}

fn args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: dnsload SERVER:PORT NAMES_FILE [SECONDS] [IN_FLIGHT]";
    let server = a
        .first()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| usage.to_string())?;
    let file = a.get(1).ok_or_else(|| usage.to_string())?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(format!("{file}: no names"));
    }
    let num = |i: usize, d: u64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    Ok(Args {
        server,
        names,
        secs: num(2, 10),
        in_flight: num(3, 200) as usize,
    })
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dnsload: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&a) {
        eprintln!("dnsload: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> std::io::Result<()> {
    let bind: SocketAddr = if a.server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(std::io::Error::other)?;
    let sock = UdpSocket::bind(bind)?;
    sock.connect(a.server)?;
    sock.set_read_timeout(Some(Duration::from_millis(5)))?;
    let (start, end) = (Instant::now(), Instant::now() + Duration::from_secs(a.secs));
    let mut out: HashMap<u16, Instant> = HashMap::new();
    let (mut next_id, mut next_name) = (0u16, 0usize);
    let (mut sent, mut answered, mut lost) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 4096];
    let mut last_sweep = Instant::now();
    while Instant::now() < end {
        while out.len() < a.in_flight {
            next_id = next_id.wrapping_add(1);
            if out.contains_key(&next_id) {
                continue;
            }
            let name = &a.names[next_name % a.names.len()];
            next_name += 1;
            if sock.send(&query(next_id, name)).is_ok() {
                out.insert(next_id, Instant::now());
                sent += 1;
            }
        }
        match sock.recv(&mut buf) {
            Ok(n) if n >= 2 => {
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                if out.remove(&id).is_some() {
                    answered += 1;
                }
            }
            _ => {}
        }
        if last_sweep.elapsed() >= Duration::from_millis(100) {
            last_sweep = Instant::now();
            let before = out.len();
            out.retain(|_, t| t.elapsed() < Duration::from_secs(1));
            lost += (before - out.len()) as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"qps\": {:.0}, \"sent\": {sent}, \"answered\": {answered}, \"lost\": {lost}}}",
        answered as f64 / secs
    );
    Ok(())
}
