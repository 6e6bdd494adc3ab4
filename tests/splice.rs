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
