//! The packet uplink: vswitch owns an address on an outside segment (a namespace whose
//! end of the segment is the TAP vswitch creates there) and translates packets itself:
//! masquerade, published ports (DNAT), hairpin, ICMP.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

struct Seg {
    d: Daemon,
    out: Netns,
    c: Netns,
    /// vswitch's address on the segment, the outside host's, and a host beyond it.
    ext: String,
    host: String,
    far: String,
}

fn seg(n: u8, next_hop: bool) -> Seg {
    seg_with(n, next_hop, &[])
}

fn seg_with(n: u8, next_hop: bool, daemon_args: &[&str]) -> Seg {
    seg_full(n, next_hop, daemon_args, &[])
}

/// `uplink_args`: more options for `uplink set`.
fn seg_full(n: u8, next_hop: bool, daemon_args: &[&str], uplink_args: &[&str]) -> Seg {
    require(&["socat", "ping"]);
    let d = Daemon::start(daemon_args);
    d.ctl_ok(&[
        "network",
        "create",
        "front",
        "--subnet",
        &format!("10.{}.0.0/24", 200 + n),
    ]);
    let out = Netns::new("seg");
    let ext = format!("198.19.{n}.2");
    let host = format!("198.19.{n}.1");
    let far = format!("198.20.{n}.1");
    let mut args = vec![
        "uplink".to_string(),
        "set".into(),
        "--netns".into(),
        out.path(),
        "--address".into(),
        format!("{ext}/24"),
    ];
    if next_hop {
        args.push("--next-hop".into());
        args.push(host.clone());
    }
    args.extend(uplink_args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    d.ctl_ok(&a);
    out.must(&format!(
        "ip addr add {host}/24 dev vswitch0 && ip addr add {far}/32 dev lo"
    ));
    let c = Netns::new("c");
    d.ctl_ok(&["attach", "front", "--name", "web", "--netns", &c.path()]);
    Seg {
        d,
        out,
        c,
        ext,
        host,
        far,
    }
}

fn whoami(ns: &Netns, port: u16, udp: bool) -> Proc {
    let p = if udp {
        ns.spawn(&format!(
            "socat UDP-RECVFROM:{port},reuseaddr,fork SYSTEM:'echo $SOCAT_PEERADDR'"
        ))
    } else {
        ns.spawn(&format!(
            "socat TCP-LISTEN:{port},reuseaddr,fork SYSTEM:'echo $SOCAT_PEERADDR'"
        ))
    };
    if udp {
        listening_udp(ns, port);
    } else {
        listening(ns, port);
    }
    p
}

/// Retries `cmd` in `ns` (the first packets may go while the neighbour is resolved).
fn retry(ns: &Netns, cmd: &str) -> String {
    let mut last = String::new();
    for _ in 0..5 {
        let o = ns.sh(cmd);
        if o.status.success() && !o.stdout_text().trim().is_empty() {
            return o.stdout_text();
        }
        last = format!("{}{}", o.stdout_text(), o.stderr_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("`{cmd}` in {} kept failing: {last}", ns.name);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn masquerade_tcp_udp_icmp_on_the_segment() {
    let s = seg(1, false);
    s.out.must("ip link show vswitch0");
    let _t = whoami(&s.out, 7100, false);
    let got = retry(
        &s.c,
        &format!("socat -T 3 - TCP:{}:7100 </dev/null", s.host),
    );
    assert_eq!(got.trim(), s.ext, "the outside host saw another source");
    let _u = whoami(&s.out, 7101, true);
    let got = retry(
        &s.c,
        &format!("echo hi | socat -T 3 -t 3 - UDP:{}:7101", s.host),
    );
    assert_eq!(got.trim(), s.ext);
    s.c.must(&format!("ping -c 2 -W 2 {}", s.host));
    let flows = s.d.ctl_json(&["conntrack", "ls"]);
    let packet: Vec<&serde_json::Value> = flows
        .as_array()
        .expect("list")
        .iter()
        .filter(|f| f["uplink"] == "packet")
        .collect();
    assert!(packet.iter().any(|f| f["protocol"] == "tcp"), "{flows}");
    assert!(packet.iter().any(|f| f["protocol"] == "udp"), "{flows}");
    assert!(packet.iter().any(|f| f["protocol"] == "icmp"), "{flows}");
    let st = s.d.ctl_json(&["stats"]);
    assert!(
        st["packet_nat"]["created"].as_u64().unwrap_or(0) >= 3,
        "{st}"
    );
    // vswitch answers pings to its own address on the segment.
    s.out.must(&format!("ping -c 1 -W 2 {}", s.ext));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_full_table_refuses_new_flows_while_existing_ones_keep_working() {
    let s = seg_with(6, false, &["--max-flows", "16"]);
    let _u = whoami(&s.out, 7106, true);
    let send = |sport: u16| {
        s.c.sh(&format!(
            "echo hi | socat -T 1 -t 1 - UDP:{}:7106,sourceport={sport},reuseaddr",
            s.host
        ))
        .stdout_text()
    };
    // A flow that must go through: a lost reply (the first waits for the neighbour to
    // be resolved; a busy machine, a server still starting: refused at once) is retried
    // from the same port, which reuses the flow.
    let through = |sport: u16| {
        let mut got = String::new();
        for _ in 0..10 {
            got = send(sport);
            if !got.trim().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        got
    };
    for sport in 40000..40016 {
        assert_eq!(through(sport).trim(), s.ext, "flow from port {sport}");
    }
    let st = s.d.ctl_json(&["stats"]);
    assert_eq!(st["packet_nat"]["flows"], 16, "{st}");
    assert_eq!(st["packet_nat"]["limit"], 16, "{st}");
    // The table is full: a 17th flow gets no answer and is counted.
    for _ in 0..2 {
        assert_eq!(send(40016).trim(), "", "a flow past the limit went through");
    }
    let st = s.d.ctl_json(&["stats"]);
    assert!(
        st["packet_nat"]["refused_full"].as_u64().unwrap_or(0) >= 2,
        "{st}"
    );
    assert_eq!(st["packet_nat"]["flows"], 16, "{st}");
    // Live flows were not evicted to make room: the first and the last still work.
    assert_eq!(through(40000).trim(), s.ext);
    assert_eq!(through(40015).trim(), s.ext);
    // Freeing the table lets new flows in again.
    s.d.ctl_ok(&["conntrack", "flush"]);
    assert_eq!(through(40016).trim(), s.ext);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn packets_over_the_uplink_mtu_get_fragmentation_needed() {
    let s = seg_full(7, false, &[], &["--mtu", "1280"]);
    let show = s.d.ctl_json(&["uplink", "show"]);
    assert_eq!(show["mtu"], 1280, "{show}");
    s.out.must("ip link show vswitch0 | grep -q 'mtu 1280'");
    // Small enough: through.
    retry(&s.c, &format!("ping -c 1 -W 2 -M do -s 1200 {}", s.host));
    // Too big with DF: the gateway says so, with the segment's MTU.
    let o = s.c.sh(&format!("ping -c 1 -W 2 -M do -s 1400 {}", s.host));
    let text = format!("{}{}", o.stdout_text(), o.stderr_text());
    assert!(
        text.contains("Frag needed") && text.contains("1280"),
        "no fragmentation needed: {text}"
    );
    // The kernel learnt the path MTU from it.
    let route = s.c.sh(&format!("ip route get {}", s.host)).stdout_text();
    assert!(route.contains("mtu 1280"), "{route}");
    // TCP finds the path MTU and delivers everything. The listener's side advertises
    // a 1460-byte MSS (its link says 1500) and the container forgets the learnt MTU, so
    // its first full segments (with offloads: super-frames of 1448-byte segments) are
    // too big and must be answered.
    s.out.must("ip link set vswitch0 mtu 1500");
    s.c.must("ip route flush cache");
    let errors = |s: &Seg| {
        s.d.ctl_json(&["stats"])["gateway"]["icmp_errors"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = errors(&s);
    let count = std::env::temp_dir().join(format!("vswitch-t-mtu-{}", std::process::id()));
    let _srv = s.out.spawn(&format!(
        "socat -u TCP-LISTEN:7107,reuseaddr SYSTEM:'wc -c >{}.part && mv {}.part {}'",
        count.display(),
        count.display(),
        count.display()
    ));
    let sent = eventually(Duration::from_secs(10), || {
        s.c.sh(&format!(
            "head -c 300000 /dev/zero | socat -u - TCP:{}:7107",
            s.host
        ))
        .status
        .success()
    });
    assert!(sent, "could not connect to the outside listener");
    let ok = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&count).is_ok_and(|n| n.trim() == "300000")
    });
    let n = std::fs::read_to_string(&count).unwrap_or_default();
    let _ = std::fs::remove_file(&count);
    assert!(ok, "the listener got {n:?} bytes of 300000");
    assert!(errors(&s) > before, "TCP never needed fragmentation-needed");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn next_hop_routes_what_is_not_on_the_segment() {
    let s = seg(2, true);
    let _t = s.out.spawn(&format!(
        "socat TCP-LISTEN:7102,bind={},reuseaddr,fork SYSTEM:'echo $SOCAT_PEERADDR'",
        s.far
    ));
    listening(&s.out, 7102);
    let got = retry(&s.c, &format!("socat -T 3 - TCP:{}:7102 </dev/null", s.far));
    assert_eq!(got.trim(), s.ext);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn published_ports_dnat_with_the_clients_address_and_hairpin() {
    let s = seg(3, false);
    let _t = whoami(&s.c, 80, false);
    let _u = whoami(&s.c, 53, true);
    s.d.ctl_ok(&["publish", "web", "-p", "8080:80", "-p", "5353:53/udp"]);
    let got = retry(
        &s.out,
        &format!("socat -T 3 - TCP:{}:8080 </dev/null", s.ext),
    );
    assert_eq!(
        got.trim(),
        s.host,
        "the container did not see the real client"
    );
    let got = retry(
        &s.out,
        &format!("echo hi | socat -T 3 -t 3 - UDP:{}:5353", s.ext),
    );
    assert_eq!(got.trim(), s.host);
    // Hairpin: another container of the network reaches web through the external address.
    let o = Netns::new("o");
    s.d.ctl_ok(&["attach", "front", "--name", "other", "--netns", &o.path()]);
    let got = retry(&o, &format!("socat -T 3 - TCP:{}:8080 </dev/null", s.ext));
    assert_eq!(
        got.trim(),
        s.ext,
        "hairpin answers come from the external address"
    );
    // Published on the host's loopback only: nothing on the segment, while 8080 (the
    // control) answers in the same breath.
    s.d.ctl_ok(&["publish", "web", "-p", "127.0.0.1:8082:80"]);
    let lo = s
        .out
        .sh(&format!("socat -T 2 - TCP:{}:8082 </dev/null", s.ext));
    assert!(
        lo.stderr_text().contains("Connection refused"),
        "127.0.0.1:8082 is open on the segment: {}{}",
        lo.stdout_text(),
        lo.stderr_text()
    );
    let got = retry(
        &s.out,
        &format!("socat -T 3 - TCP:{}:8080 </dev/null", s.ext),
    );
    assert_eq!(got.trim(), s.host);
    // Unpublished: closed.
    s.d.ctl_ok(&["unpublish", "web", "-p", "8080:80"]);
    let o2 = s
        .out
        .sh(&format!("socat -T 2 - TCP:{}:8080 </dev/null", s.ext));
    assert!(!o2.status.success() || o2.stdout_text().trim().is_empty());
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn uplink_survives_kill_9_and_can_be_switched_back() {
    let mut s = seg(4, false);
    let _t = whoami(&s.out, 7103, false);
    retry(
        &s.c,
        &format!("socat -T 3 - TCP:{}:7103 </dev/null", s.host),
    );
    s.d.kill9();
    s.d.launch();
    let got = retry(
        &s.c,
        &format!("socat -T 3 - TCP:{}:7103 </dev/null", s.host),
    );
    assert_eq!(got.trim(), s.ext);
    let show = s.d.ctl_json(&["uplink", "show"]);
    assert_eq!(show["kind"], "packet", "{show}");
    s.d.ctl_ok(&["uplink", "set", "socket"]);
    assert!(
        eventually(Duration::from_secs(5), || !s
            .out
            .sh("ip link show vswitch0")
            .status
            .success()),
        "the uplink TAP stayed"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn uplink_refusals() {
    let d = Daemon::start(&[]);
    let out = Netns::new("seg");
    let p = out.path();
    for (args, msg) in [
        (vec!["uplink", "set", "--netns", &p], "--address"),
        (
            vec!["uplink", "set", "--netns", &p, "--address", "198.19.9.0/24"],
            "not a usable address",
        ),
        (
            vec!["uplink", "set", "--netns", &p, "--address", "172.17.5.2/24"],
            "overlaps",
        ),
        (
            vec![
                "uplink",
                "set",
                "--netns",
                &p,
                "--address",
                "198.19.9.2/24",
                "--next-hop",
                "10.0.0.1",
            ],
            "next hop",
        ),
        (
            vec![
                "uplink",
                "set",
                "--netns",
                "/nonexistent",
                "--address",
                "198.19.9.2/24",
            ],
            "does not exist",
        ),
        (
            vec![
                "uplink",
                "set",
                "--netns",
                &p,
                "--address",
                "198.19.9.2/24",
                "--mtu",
                "100",
            ],
            "out of range",
        ),
        (
            vec![
                "uplink",
                "set",
                "--netns",
                &p,
                "--address",
                "198.19.9.2/24",
                "--address6",
                "2001:db8:99::2/64",
                "--mtu",
                "1000",
            ],
            "too small for --address6",
        ),
        (
            vec!["uplink", "set", "socket", "--mtu", "1400"],
            "packet uplink",
        ),
    ] {
        let e = d.ctl_err(&args);
        assert!(e.contains(msg), "{args:?}: {e}");
    }
    let show = d.ctl_json(&["uplink", "show"]);
    assert_eq!(show["kind"], "socket");
}

/// A container reaching the uplink's own address on a port nothing publishes is
/// refused at once, as by a host owning the address (an RST, port unreachable), and
/// its pings are answered; no flow is left behind. A published port on the same
/// address still hairpins (the positive control).
#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn the_uplink_address_from_inside_refuses_closed_ports_and_answers_pings() {
    let s = seg(5, false);
    let _t = whoami(&s.c, 80, false);
    s.d.ctl_ok(&["publish", "web", "-p", "8080:80"]);
    let o = Netns::new("o");
    s.d.ctl_ok(&["attach", "front", "--name", "other", "--netns", &o.path()]);
    let got = retry(&o, &format!("socat -T 3 - TCP:{}:8080 </dev/null", s.ext));
    assert_eq!(got.trim(), s.ext, "the published port hairpins");
    let tcp = o.sh(&format!(
        "socat -T 3 - TCP:{}:9,connect-timeout=20 </dev/null",
        s.ext
    ));
    assert!(!tcp.status.success());
    assert!(
        tcp.stderr_text().contains("Connection refused"),
        "TCP to a closed port: {}",
        tcp.stderr_text()
    );
    let udp = o.sh(&format!("echo hi | socat -T 20 - UDP:{}:9", s.ext));
    assert!(
        udp.stderr_text().contains("Connection refused"),
        "UDP to a closed port: {}",
        udp.stderr_text()
    );
    o.must(&format!("ping -c 1 -W 5 {}", s.ext));
    let flows = s.d.ctl_json(&["conntrack", "ls"]);
    let packet: Vec<&serde_json::Value> = (flows.as_array().expect("list").iter())
        .filter(|f| f["uplink"] == "packet")
        .collect();
    let published = format!("{}:8080", s.ext);
    assert!(
        packet.iter().any(|f| f["remote"] == published.as_str()),
        "the hairpin flow is listed: {flows}"
    );
    let closed = format!("{}:9", s.ext);
    assert!(
        !packet
            .iter()
            .any(|f| f["remote"] == closed.as_str() || f["protocol"] == "icmp"),
        "a flow left by a refused attempt or a ping: {flows}"
    );
}
