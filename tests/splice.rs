//! Loopback clients of published ports are spliced into the container's namespace: the
//! container sees the same source as on the frame path (its gateway, the client's
//! port), the bytes arrive whole both ways, no frame crosses the container's port, and
//! what the container itself sends its gateway is untouched by the return rule. The
//! daemon runs inside a namespace standing for the host (a rootless daemon, which may
//! not enter namespaces, keeps the frame path: `tests/rootless.rs`).

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

struct Rig {
    host: Netns,
    d: Daemon,
    c: Netns,
    gw: String,
}

fn rig(subnet: u8) -> Rig {
    rig_with(subnet, false)
}

/// The rig, with the container's namespace as `ip netns add` leaves it (`lo` down)
/// when `fresh`.
fn rig_with(subnet: u8, fresh: bool) -> Rig {
    require(&["socat", "sha256sum", "head", "ip", "dig"]);
    let host = Netns::new("sph");
    let d = Daemon::start_in(&host, &[]);
    let subnet = format!("10.{subnet}.0.0/24");
    d.ctl_ok(&[
        "network",
        "create",
        "sp",
        "--subnet",
        &subnet,
        "--host-loopback",
    ]);
    let c = Netns::new("spc");
    if fresh {
        must(&format!("ip -n {} link set lo down", c.name));
    }
    let v = d.ctl_json(&["attach", "sp", "--name", "web", "--netns", &c.path()]);
    let gw = v["gateway"].as_str().expect("gateway").to_string();
    Rig { host, d, c, gw }
}

fn nat(r: &Rig) -> serde_json::Value {
    r.d.ctl_json(&["stats"])["nat"].clone()
}

/// Packets the container's port sent and received so far.
fn port_packets(r: &Rig) -> u64 {
    let stats = r.d.ctl_json(&["stats"]);
    let p = stats["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "web")
        .cloned()
        .unwrap_or_else(|| panic!("no port web: {stats}"));
    p["rx_packets"].as_u64().unwrap() + p["tx_packets"].as_u64().unwrap()
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn loopback_clients_are_spliced_with_the_gateway_as_source() {
    let r = rig(211);
    r.d.ctl_ok(&["publish", "web", "-p", "127.0.0.1:17501:80"]);
    let _srv = r.c.spawn(
        "exec socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:\"echo \\$SOCAT_PEERADDR \\$SOCAT_PEERPORT\"",
    );
    listening(&r.c, 80);
    let got = r
        .host
        .must("socat -T 5 - TCP:127.0.0.1:17501,sourceport=41234 </dev/null");
    assert_eq!(
        got.trim(),
        format!("{} 41234", r.gw),
        "the container saw another source"
    );
    let n = nat(&r);
    assert_eq!(n["tcp_spliced"], 1, "{n}");
    assert_eq!(n["splice_fallbacks"], 0, "{n}");
    // The return rule is in the container's namespace, for exactly that port.
    let rules = r.c.must("ip rule");
    assert!(
        rules.contains(&format!("to {} ipproto tcp sport 80 lookup 30323", r.gw)),
        "{rules}"
    );
    // The container still talks to its gateway: DNS, and the host through it.
    let name =
        r.c.must(&format!("dig +short +tries=2 +time=2 @{} web", r.gw));
    assert!(name.contains("10.211.0."), "{name}");
    let _h = r
        .host
        .spawn("exec socat TCP-LISTEN:7502,bind=127.0.0.1,reuseaddr SYSTEM:\"echo host\"");
    listening(&r.host, 7502);
    let got =
        r.c.must(&format!("socat -T 5 - TCP:{}:7502 </dev/null", r.gw));
    assert_eq!(got.trim(), "host");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn spliced_streams_arrive_whole_both_ways_without_frames() {
    let r = rig(212);
    r.d.ctl_ok(&[
        "publish",
        "web",
        "-p",
        "127.0.0.1:17503:80",
        "-p",
        "127.0.0.1:17504:81",
    ]);
    let dir = TempDir::new("sp");
    let file = dir.path().join("data").display().to_string();
    must(&format!("head -c 32M /dev/urandom > {file}"));
    let sum = sha256(&must(&format!("sha256sum < {file}")));
    let before = port_packets(&r);
    // Read: the container sends.
    let s = r.c.spawn(&format!(
        "exec socat -u FILE:{file} TCP-LISTEN:80,reuseaddr"
    ));
    listening(&r.c, 80);
    let got = r
        .host
        .must("timeout 60 sh -c 'socat -u TCP:127.0.0.1:17503 - | sha256sum'");
    drop(s);
    assert_eq!(sha256(&got), sum, "spliced read");
    // Written: the container reads.
    let s = r.c.spawn("socat -u TCP-LISTEN:81,reuseaddr - | sha256sum");
    listening(&r.c, 81);
    r.host.must(&format!(
        "timeout 60 socat -u FILE:{file} TCP:127.0.0.1:17504"
    ));
    let o = s.wait(Duration::from_secs(60));
    assert_eq!(sha256(&o.stdout_text()), sum, "spliced write");
    assert_eq!(nat(&r)["tcp_spliced"], 2);
    // 64 MiB crossed without frames: only the odd ARP or neighbour probe.
    let frames = port_packets(&r) - before;
    assert!(frames < 100, "{frames} frames crossed the port");
}

/// Whether `lo` is up in `ns`.
fn lo_up(ns: &Netns) -> bool {
    ns.must("ip -o link show lo").contains(",UP")
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_fresh_namespace_gets_its_loopback_up_and_its_port_spliced() {
    let r = rig_with(217, true);
    // `attach` brought lo up (as Docker and the CNI loopback plugin do).
    assert!(lo_up(&r.c), "{}", r.c.must("ip -o link show lo"));
    r.d.ctl_ok(&["publish", "web", "-p", "127.0.0.1:17517:80"]);
    let _srv =
        r.c.spawn("exec socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:\"echo \\$SOCAT_PEERADDR\"");
    listening(&r.c, 80);
    let got = r.host.must("socat -T 5 - TCP:127.0.0.1:17517 </dev/null");
    assert_eq!(got.trim(), r.gw, "the container saw another source");
    let n = nat(&r);
    assert_eq!(n["tcp_spliced"], 1, "{n}");
    assert_eq!(n["splice_fallbacks"], 0, "{n}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_splice_without_an_answer_inside_falls_back_to_frames() {
    let r = rig(218);
    r.d.ctl_ok(&["publish", "web", "-p", "127.0.0.1:17518:80"]);
    let _srv =
        r.c.spawn("exec socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:\"echo \\$SOCAT_PEERADDR\"");
    listening(&r.c, 80);
    // -t: a client waits for the answer after its own end (a fallback takes a second).
    let ask = || {
        r.host
            .must("socat -T 10 -t 10 - TCP:127.0.0.1:17518 </dev/null")
    };
    // Positive control: spliced while the container's loopback works.
    assert_eq!(ask().trim(), r.gw);
    let n = nat(&r);
    assert_eq!(
        (n["tcp_spliced"].as_u64(), n["splice_fallbacks"].as_u64()),
        (Some(1), Some(0)),
        "{n}"
    );
    // Its loopback down, the connect inside hangs: after the connect timeout the client
    // is answered through frames, from the same source, and the return rule is gone.
    r.c.must("ip link set lo down");
    let before = port_packets(&r);
    let got = ask();
    assert_eq!(
        got.trim(),
        r.gw,
        "the fallen-back client saw another source: {}\n{}",
        nat(&r),
        r.d.log()
    );
    let n = nat(&r);
    assert_eq!(
        (n["tcp_spliced"].as_u64(), n["splice_fallbacks"].as_u64()),
        (Some(2), Some(1)),
        "{n}"
    );
    assert!(
        port_packets(&r) > before,
        "no frame crossed the container's port"
    );
    let rules = r.c.must("ip rule");
    assert!(
        !rules.contains("lookup 30323"),
        "the return rule stayed: {rules}"
    );
    // The port takes frames from then on, at once.
    assert_eq!(ask().trim(), r.gw);
    let n = nat(&r);
    assert_eq!(
        (n["tcp_spliced"].as_u64(), n["splice_fallbacks"].as_u64()),
        (Some(2), Some(2)),
        "{n}"
    );
}

/// The address in socat's `SOCAT_PEERADDR` (IPv6 ones come in brackets, written out;
/// an IPv4 client of an IPv6 listener as IPv4-mapped).
fn peer_addr(text: &str) -> std::net::IpAddr {
    let a = text.trim().trim_start_matches('[').replace(']', "");
    let ip: std::net::IpAddr = a
        .parse()
        .unwrap_or_else(|_| panic!("not an address: {text}"));
    ip.to_canonical()
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn ipv6_loopback_clients_are_spliced_where_the_container_has_ipv6() {
    require(&["socat", "sha256sum", "head", "ip"]);
    let host = Netns::new("sph6");
    let d = Daemon::start_in(&host, &[]);
    d.ctl_ok(&[
        "network",
        "create",
        "sp6",
        "--subnet",
        "10.213.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:213::/64",
    ]);
    d.ctl_ok(&["network", "create", "sp4", "--subnet", "10.214.0.0/24"]);
    let c = Netns::new("spc6");
    d.ctl_ok(&["attach", "sp6", "--name", "web", "--netns", &c.path()]);
    let c4 = Netns::new("spc4");
    d.ctl_ok(&["attach", "sp4", "--name", "old", "--netns", &c4.path()]);
    let r = Rig {
        host,
        d,
        c,
        gw: "fd00:213::1".into(),
    };
    let echo = "SYSTEM:\"echo \\$SOCAT_PEERADDR \\$SOCAT_PEERPORT\"";
    let _srv =
        r.c.spawn(&format!("exec socat TCP6-LISTEN:80,reuseaddr,fork {echo}"));
    listening(&r.c, 80);
    r.d.ctl_ok(&["publish", "web", "-p", "17505:80", "-p", "17506:81"]);
    // A ::1 client appears from the gateway's IPv6 address and its own port, spliced.
    let got = r
        .host
        .must("socat -T 5 - TCP6:[::1]:17505,sourceport=41235 </dev/null");
    let (addr, port) = got.trim().split_once(' ').expect("address and port");
    assert_eq!(
        (peer_addr(addr), port),
        (r.gw.parse().unwrap(), "41235"),
        "{got}"
    );
    let n = nat(&r);
    assert_eq!(
        (n["tcp_spliced"].as_u64(), n["splice_fallbacks"].as_u64()),
        (Some(1), Some(0)),
        "{n}: {}",
        r.d.log()
    );
    let rules = r.c.must("ip -6 rule");
    assert!(
        rules.contains(&format!("to {} ipproto tcp sport 80 lookup 30323", r.gw)),
        "{rules}"
    );
    // The bytes arrive whole, both ways, without frames.
    let dir = TempDir::new("sp6");
    let file = dir.path().join("data").display().to_string();
    must(&format!("head -c 16M /dev/urandom > {file}"));
    let sum = sha256(&must(&format!("sha256sum < {file}")));
    let before = port_packets(&r);
    let s = r.c.spawn(&format!(
        "exec socat -u FILE:{file} TCP6-LISTEN:81,reuseaddr"
    ));
    listening(&r.c, 81);
    let got = r
        .host
        .must("timeout 60 sh -c 'socat -u TCP6:[::1]:17506 - | sha256sum'");
    drop(s);
    assert_eq!(sha256(&got), sum, "spliced read over IPv6");
    let s = r.c.spawn("socat -u TCP6-LISTEN:81,reuseaddr - | sha256sum");
    listening(&r.c, 81);
    r.host
        .must(&format!("timeout 60 socat -u FILE:{file} TCP6:[::1]:17506"));
    let o = s.wait(Duration::from_secs(60));
    assert_eq!(sha256(&o.stdout_text()), sum, "spliced write over IPv6");
    let frames = port_packets(&r) - before;
    assert!(frames < 100, "{frames} frames crossed the port");
    // 127.0.0.1 clients of the same port are spliced beside them, over IPv4.
    let got = r.host.must("socat -T 5 - TCP:127.0.0.1:17505 </dev/null");
    let addr = got.split_whitespace().next().unwrap_or_default();
    assert_eq!(peer_addr(addr).to_string(), "10.213.0.1", "{got}");
    assert_eq!(nat(&r)["tcp_spliced"].as_u64(), Some(4));
    // A container without IPv6: its ::1 clients reach its IPv4 address from its IPv4
    // gateway, spliced over IPv4 (a frame-path connection from that gateway could not
    // be answered once its port had spliced).
    let _old = c4.spawn(&format!("exec socat TCP-LISTEN:80,reuseaddr,fork {echo}"));
    listening(&c4, 80);
    r.d.ctl_ok(&["publish", "old", "-p", "[::1]:17507:80"]);
    let got = r.host.must("socat -T 5 - TCP6:[::1]:17507 </dev/null");
    assert!(got.contains("10.214.0.1"), "{got}");
    let n = nat(&r);
    assert_eq!(
        (n["tcp_spliced"].as_u64(), n["splice_fallbacks"].as_u64()),
        (Some(5), Some(0)),
        "{n}"
    );
}
