//! `vswitch daemon --metrics ADDR`: Prometheus text that `promtool check metrics`
//! accepts, with the Content-Type Prometheus asks for, and a port's counters moving
//! with its traffic.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The address the daemon says it serves metrics on (it was given port 0).
fn metrics_addr(d: &Daemon) -> String {
    let mut addr = String::new();
    let found = eventually(Duration::from_secs(5), || {
        let log = d.log();
        let line = log.lines().find(|l| l.contains("metrics on http://"));
        if let Some(l) = line {
            addr = l
                .split("http://")
                .nth(1)
                .unwrap()
                .trim_end_matches("/metrics")
                .into();
        }
        line.is_some()
    });
    assert!(found, "no metrics address in the log: {}", d.log());
    addr
}

/// One GET: (head, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// The value of the sample `name{labels}` with all of `labels` in its label set.
fn sample(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
}

#[test]
#[ignore = "needs root, namespaces and promtool: `bash scripts/test` runs it"]
fn promtool_accepts_the_metrics_and_a_ports_counters_move_with_traffic() {
    require(&["ip", "ping", "dig", "promtool"]);
    let d = Daemon::start(&["--metrics", "127.0.0.1:0"]);
    // Names the network does not know go to a closed port on the loopback: refused,
    // answered SERVFAIL.
    d.ctl_ok(&[
        "network",
        "create",
        "mtr",
        "--subnet",
        "10.126.0.0/24",
        "--dns",
        "127.0.0.1:9",
    ]);
    let a = Netns::new("shpma");
    let b = Netns::new("shpmb");
    d.ctl_ok(&[
        "attach",
        "mtr",
        "--name",
        "a",
        "--netns",
        &a.path(),
        "--rate-in",
        "1gbit",
    ]);
    let ip_b = d.ctl_json(&["attach", "mtr", "--name", "b", "--netns", &b.path()])["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = metrics_addr(&d);
    let (head, before) = get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let port_a = ["port=\"a\"", "network=\"mtr\"", "container=\"a\""];
    let rx0 = sample(&before, "vswitch_port_rx_packets_total", &port_a);
    a.must(&format!("ping -c 5 -i 0.2 -W 2 {ip_b}"));
    // The embedded DNS counts per network: b's name asked twice, answered from the
    // names table.
    for _ in 0..2 {
        let got = a.must("dig +short +tries=1 +time=3 @10.126.0.1 b");
        assert_eq!(got.trim(), ip_b, "dig b");
    }
    let failed = a.must("dig +tries=1 +time=3 @10.126.0.1 nosuch.example");
    assert!(failed.contains("SERVFAIL"), "{failed}");
    let (_, after) = get(&addr, "/metrics");
    let net = ["network=\"mtr\""];
    assert_eq!(sample(&after, "vswitch_dns_queries_total", &net), 3);
    assert_eq!(sample(&after, "vswitch_dns_answers_total", &net), 3);
    assert_eq!(sample(&after, "vswitch_dns_forwarded_total", &net), 1);
    assert_eq!(sample(&after, "vswitch_dns_failures_total", &net), 1);
    let rx1 = sample(&after, "vswitch_port_rx_packets_total", &port_a);
    assert!(rx1 >= rx0 + 5, "a's rx_packets went from {rx0} to {rx1}");
    let tx = sample(&after, "vswitch_port_tx_bytes_total", &["port=\"b\""]);
    assert!(tx > 0, "b's tx_bytes is 0");
    let limit = sample(
        &after,
        "vswitch_port_rate_limit_bytes_per_second",
        &["direction=\"in\""],
    );
    assert_eq!(limit, 125_000_000);
    assert!(sample(&after, "vswitch_fdb_entries", &[]) >= 2);
    // Two containers leased on mtr, beside the network's, broadcast and gateway
    // addresses (counted as Docker's IPsInUse counts them).
    let v4 = ["network=\"mtr\"", "family=\"ipv4\""];
    assert_eq!(sample(&after, "vswitch_network_addresses_in_use", &v4), 5);
    assert_eq!(
        sample(&after, "vswitch_network_addresses_available", &v4),
        256 - 5
    );
    // The workers' time: some of it moved the pings' frames (seconds, fractional).
    let busy = after
        .lines()
        .find(|l| l.starts_with("vswitch_worker_busy_seconds_total{worker=\"0\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no worker 0 busy time in\n{after}"));
    assert!(busy > 0.0, "worker 0 was never busy: {busy}");
    // promtool reads the scrape from standard input: no complaint, status 0.
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(after.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The failed query is a notable event: one log line within the timer's period,
    // with its count (the daemon logs at info, so its control lines are there too).
    let logged = eventually(Duration::from_secs(12), || {
        d.log().contains("event network=mtr: 1 DNS queries failed")
    });
    assert!(logged, "no DNS event in the log:\n{}", d.log());
    assert!(
        d.log().contains("network_create name=mtr"),
        "the log is alive: {}",
        d.log()
    );
    let (head, _) = get(&addr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}
