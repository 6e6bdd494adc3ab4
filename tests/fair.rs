//! The gateway's fair share, with real kernels in namespaces: a lone container's burst
//! to the gateway loses nothing; a container flooding the socket uplink with SYNs
//! (its TCP quota full of half-open handshakes, then one quad again and again) slows
//! only itself: a DNS client beside it gets its answers and `ctl stats` answers
//! throughout, and its refused SYNs are still answered with RSTs.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Runs a python script inside `ns` in the background, with `args`.
fn spawn_py(ns: &Netns, script: &str, args: &str) -> (Proc, TempDir) {
    let dir = TempDir::new("py");
    let path = dir.path().join("s.py");
    std::fs::write(&path, script).expect("script");
    let p = ns.spawn(&format!("exec /usr/bin/python3 {} {args}", path.display()));
    (p, dir)
}

/// A DNS client: N queries for NAME to SERVER:53, at most INFLIGHT unanswered, each
/// given 2 s; prints "sent answered".
const DNS_CLIENT: &str = r#"
import socket, struct, sys, time
server, name, n, inflight = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: the burst's answers fit
s.connect((server, 53))
s.settimeout(0.05)
q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\1\0\1"
out = {}
sent = answered = 0
while sent < n or out:
    while sent < n and len(out) < inflight:
        i = sent & 0xffff
        try:
            s.send(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + q)
        except (socket.timeout, BlockingIOError):
            break  # the socket's send buffer is full (a busy host): read answers first
        out[i] = time.time()
        sent += 1
    try:
        b = s.recv(4096)
        i = struct.unpack("!H", b[:2])[0]
        if out.pop(i, None) is not None:
            answered += 1
    except socket.timeout:
        pass
    now = time.time()
    for i in [i for i, t in out.items() if now - t > 2]:
        del out[i]
print(sent, answered, flush=True)
"#;

/// The flooder (args: GW PORT HALF SECS OWN_IP): HALF SYNs from distinct ports to GW:PORT (the container's kernel drops
/// its RSTs, so they stay half-open), then SYNs on one quad for SECS seconds as fast
/// as it can; prints "ready" between the two and the SYNs sent at the end.
const SYN_FLOOD: &str = r#"
import socket, struct, sys, time
gw, port, half, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
mac = bytes(int(x, 16) for x in open("/sys/class/net/eth0/address").read().strip().split(":"))
gw_mac = bytes([2, 0x42] + [int(x) for x in gw.split(".")])
me = socket.inet_aton(sys.argv[5])
dst = socket.inet_aton(gw)
def syn(sport, seq):
    tcp = struct.pack("!HHIIBBHHH", sport, port, seq, 0, 6 << 4, 2, 64240, 0, 0) + struct.pack("!BBH", 2, 4, 1460)
    tcp = tcp[:16] + struct.pack("!H", csum(me + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, me, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return gw_mac + mac + b"\x08\x00" + ip + tcp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for i in range(half):
    s.send(syn(10000 + i, 1000 + i))
    if i % 100 == 99: time.sleep(0.05)
print("ready", flush=True)
f = syn(4444, 1)
n, t0 = 0, time.time()
while time.time() - t0 < secs:
    for _ in range(200):
        try: s.send(f)
        except OSError: pass
    n += 200
print(n, flush=True)
"#;

/// A listener that never accepts: the kernel completes the uplink's host connects
/// into its backlog.
const LISTEN_ONLY: &str = r#"
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
print("up", flush=True)
time.sleep(600)
"#;

fn port_stat(st: &serde_json::Value, port: &str, path: &[&str]) -> u64 {
    let p = st["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == port).cloned())
        .unwrap_or_else(|| panic!("no port {port} in {st}"));
    path.iter().fold(&p, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_lone_burst_to_the_gateway_loses_nothing() {
    require_root();
    require(&["ip"]);
    let d = Daemon::start(&[]);
    d.ctl_ok(&[
        "network",
        "create",
        "lone",
        "--subnet",
        "10.172.0.0/24",
        "--internal",
    ]);
    let ns = Netns::new("lone");
    d.ctl_ok(&["attach", "lone", "--name", "burst", "--netns", &ns.path()]);
    // 3000 queries with 500 in flight: bursts past what the share of old let a port
    // hand a busy ring (256 frames a second).
    let (p, _dir) = spawn_py(&ns, DNS_CLIENT, "10.172.0.1 burst 3000 500");
    let out = p.wait(Duration::from_secs(60)).stdout_text();
    // The client ran and was answered (the positive control), every query of it.
    assert_eq!(out.trim(), "3000 3000", "{}", d.ctl_ok(&["stats"]));
    let st = d.ctl_json(&["stats"]);
    assert!(port_stat(&st, "burst", &["rx_packets"]) >= 3000, "{st}");
    assert_eq!(
        port_stat(&st, "burst", &["drops", "service_quota"]),
        0,
        "{st}"
    );
}

#[test]
#[ignore = "needs root, namespaces, iptables and python3: `bash scripts/test` runs it"]
fn a_syn_flooding_neighbour_slows_only_itself() {
    require_root();
    require(&["ip", "iptables", "python3"]);
    let host = Netns::new("host");
    let (mut hold, _h) = spawn_py(&host, LISTEN_ONLY, "7209");
    assert_eq!(hold.line().trim(), "up");
    let d = Daemon::start_in(&host, &["--uplink-max-tcp-per-container", "1024"]);
    d.ctl_ok(&[
        "network",
        "create",
        "fair",
        "--subnet",
        "10.173.0.0/24",
        "--host-loopback",
    ]);
    let (evil, good) = (Netns::new("evil"), Netns::new("good"));
    let v = d.ctl_json(&["attach", "fair", "--name", "evil", "--netns", &evil.path()]);
    let evil_ip = v["ip"].as_str().expect("ip").to_string();
    d.ctl_ok(&["attach", "fair", "--name", "good", "--netns", &good.path()]);
    evil.must("iptables -A OUTPUT -p tcp --tcp-flags RST RST -j DROP");
    // A rule that only counts the RSTs the gateway answers refused SYNs with.
    evil.must("iptables -A INPUT -p tcp --tcp-flags RST RST");
    let (mut flood, _f) = spawn_py(
        &evil,
        SYN_FLOOD,
        &format!("10.173.0.1 7209 1024 10 {evil_ip}"),
    );
    assert_eq!(flood.line().trim(), "ready");
    let (dns, _g) = spawn_py(&good, DNS_CLIENT, "10.173.0.1 good 4000 200");
    // `stats` asked one after the other while the flood runs: every one answered.
    let (t0, mut asked) = (Instant::now(), 0);
    while t0.elapsed() < Duration::from_secs(8) {
        let st = d.ctl_json(&["stats"]);
        assert!(st["ports"].is_array(), "{st}");
        asked += 1;
    }
    let sent: u64 = flood
        .wait(Duration::from_secs(30))
        .stdout_text()
        .trim()
        .parse()
        .unwrap_or(0);
    let out = dns.wait(Duration::from_secs(180)).stdout_text();
    let st = d.ctl_json(&["stats"]);
    // Positive controls: the flood reached the gateway and its handshakes the uplink.
    assert!(sent > 10_000, "the flooder sent {sent} SYNs only");
    assert!(port_stat(&st, "evil", &["rx_packets"]) > 10_000, "{st}");
    assert!(
        st["nat"]["tcp_opened_total"].as_u64().unwrap_or(0) >= 1000,
        "{st}"
    );
    // The neighbour's DNS was answered, nearly all of it, and `ctl` kept answering (a
    // stall of seconds a request, as before the fair queue, leaves a handful).
    let v: Vec<u64> = out
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(v.len(), 2, "dns client: {out}");
    assert!(
        v[1] * 100 >= v[0] * 95,
        "dns answered {} of {}: {st}",
        v[1],
        v[0]
    );
    assert!(asked >= 8, "only {asked} stats answered in 8 s of flood");
    // The flooder was refused (over its TCP quota: what makes a worker give its frames
    // no polling after work) and still answered: each refused SYN gets its RST, which
    // reached its kernel.
    assert!(
        port_stat(&st, "evil", &["drops", "tcp_quota"]) > 10_000,
        "{st}"
    );
    let rsts: u64 = evil
        .must("iptables -L INPUT -v -x -n")
        .lines()
        .find(|l| l.contains("0x04/0x04"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(rsts > 10_000, "the flooder got {rsts} RSTs");
    // What was cut was the flooder's (the neighbour may lose a few frames only when the
    // gateway thread is kept off the CPU long enough for a worker's ring to fill).
    let good_cut = port_stat(&st, "good", &["drops", "service_quota"]);
    assert!(
        port_stat(&st, "evil", &["drops", "service_quota"]) > 10 * good_cut,
        "{st}"
    );
}
