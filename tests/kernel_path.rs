//! The kernel path (`vswitch daemon --kernel-path`): containers on veth pairs, the
//! unicast pairs the bridge has seen carried by the kernel, what it carried counted in
//! `stats`, the first-hop guards still in force, pairs taken back when a port changes,
//! a hundred containers, and a restart. The daemon runs in a namespace of the test's
//! own (its "host"), where the host ends and its TAPs live.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

struct Net {
    host: Netns,
    d: Daemon,
    ns: Vec<Netns>,
    ips: Vec<String>,
    ip6s: Vec<String>,
}

fn net(n: usize) -> Net {
    require_root();
    require(&["ip", "ping", "tc"]);
    let host = Netns::new("kph");
    host.must("ip link set lo up");
    let d = Daemon::start_in(&host, &["--kernel-path"]);
    d.ctl_ok(&[
        "network",
        "create",
        "kp",
        "--subnet",
        "10.131.0.0/22",
        "--ipv6",
        "--subnet",
        "fd00:131::/64",
    ]);
    let mut ns = Vec::new();
    let mut ips = Vec::new();
    let mut ip6s = Vec::new();
    for i in 0..n {
        let x = Netns::new(&format!("k{i}"));
        let name = format!("k{i}");
        let v = d.ctl_json(&["attach", "kp", "--name", &name, "--netns", &x.path()]);
        ips.push(v["ip"].as_str().expect("ip").to_string());
        ip6s.push(v["ip6"].as_str().expect("ip6").to_string());
        ns.push(x);
    }
    Net {
        host,
        d,
        ns,
        ips,
        ip6s,
    }
}

/// The daemon's devices: (name, rx packets, tx packets) of every `vh…` and `vt…`.
fn devices(host: &Netns) -> Vec<(String, u64, u64)> {
    let out = host.must("ip -s -j link show");
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    let mut d = Vec::new();
    for l in v.as_array().cloned().unwrap_or_default() {
        let name = l["ifname"].as_str().unwrap_or("").to_string();
        if name.starts_with("vh") || name.starts_with("vt") {
            let s = &l["stats64"];
            let n = |k: &str| s[k]["packets"].as_u64().unwrap_or(0);
            d.push((name, n("rx"), n("tx")));
        }
    }
    d
}

/// Frames the daemon's TAPs moved (to and from the daemon), in all.
fn through_daemon(host: &Netns) -> u64 {
    (devices(host).iter())
        .filter(|d| d.0.starts_with("vt"))
        .map(|d| d.1 + d.2)
        .sum()
}

/// The pair filters (priorities below the steering's) on every host end.
fn pair_filters(host: &Netns) -> usize {
    let mut n = 0;
    for (dev, _, _) in devices(host).iter().filter(|d| d.0.starts_with("vh")) {
        let out = host.must(&format!("tc filter show dev {dev} ingress"));
        n += out
            .lines()
            .filter(|l| l.contains("Egress Redirect to device vh"))
            .count();
    }
    n
}

/// Packets the pair filters of every host end redirected (`tc -s`).
fn pair_packets(host: &Netns) -> u64 {
    let mut n = 0;
    for (dev, _, _) in devices(host).iter().filter(|d| d.0.starts_with("vh")) {
        let out = host.must(&format!("tc -s filter show dev {dev} ingress"));
        let mut pair = false;
        for l in out.lines() {
            if l.contains("Egress Redirect to device") {
                pair = l.contains("device vh");
            } else if pair && l.trim_start().starts_with("Sent ") {
                let w: Vec<&str> = l.split_whitespace().collect();
                n += w.get(3).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0);
                pair = false;
            }
        }
    }
    n
}

fn port_stat(d: &Daemon, port: &str, path: &[&str]) -> u64 {
    let st = d.ctl_json(&["stats"]);
    let p = st["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == port).cloned())
        .unwrap_or_else(|| panic!("no port {port} in {st}"));
    path.iter().fold(&p, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

fn mac_of(ns: &Netns) -> String {
    ns.must("cat /sys/class/net/eth0/address")
        .trim()
        .to_string()
}

/// Pings until the pair both ways is in the kernel.
fn pair_up(n: &Net, a: usize, b: usize) {
    n.ns[a].must(&format!("ping -c 2 -i 0.2 -W 2 {}", n.ips[b]));
    let ok = eventually(Duration::from_secs(5), || pair_filters(&n.host) >= 2);
    assert!(ok, "no pair filters: {}", n.d.log());
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn the_kernel_carries_a_pair_the_bridge_saw_and_stats_count_it() {
    let n = net(2);
    // The containers see a veth named eth0; the daemon's namespace holds the host ends
    // and its TAPs, nothing with an address.
    let link = n.ns[0].must("ip -d -o link show dev eth0");
    assert!(link.contains("veth"), "{link}");
    assert_eq!(devices(&n.host).len(), 4, "{:?}", devices(&n.host));
    let addrs = n.host.must("ip -o addr show");
    assert!(addrs.lines().all(|l| l.contains(" lo ")), "{addrs}");
    pair_up(&n, 0, 1);
    let (before, rx0) = (
        through_daemon(&n.host),
        port_stat(&n.d, "k0", &["rx_packets"]),
    );
    let carried = pair_packets(&n.host);
    n.ns[0].must(&format!("ping -c 300 -i 0.002 -q -W 2 {}", n.ips[1]));
    // The kernel carried the requests and the replies.
    assert!(pair_packets(&n.host) >= carried + 600);
    // `stats` reads what it carried.
    let counted = eventually(Duration::from_secs(4), || {
        port_stat(&n.d, "k0", &["rx_packets"]) >= rx0 + 300
    });
    assert!(counted, "{}", n.d.ctl_ok(&["stats"]));
    assert!(port_stat(&n.d, "k1", &["tx_packets"]) >= 300);
    // Only a few frames (neighbour refreshes) went by the daemon's TAPs.
    let moved = through_daemon(&n.host) - before;
    assert!(moved < 60, "{moved} frames through the daemon");
    // TCP and IPv6 too.
    n.ns[0].must(&format!("ping -6 -c 2 -W 2 {}", n.ip6s[1]));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn spoofed_sources_meet_the_guards_while_the_pair_is_in_the_kernel() {
    let n = net(2);
    pair_up(&n, 0, 1);
    let b_mac = mac_of(&n.ns[1]);
    // Container 0 takes another address and sends from it straight to 1's MAC.
    n.ns[0].must("ip addr add 10.131.3.99/32 dev eth0");
    n.ns[0].must(&format!(
        "ip neigh replace {} lladdr {b_mac} dev eth0 nud permanent",
        n.ips[1]
    ));
    let rx = |ns: &Netns| -> u64 {
        let s = ns.must("cat /sys/class/net/eth0/statistics/rx_packets");
        s.trim().parse().unwrap_or(0)
    };
    let (spoofs, got) = (port_stat(&n.d, "k0", &["drops", "ip_spoof"]), rx(&n.ns[1]));
    let out = n.ns[0].sh(&format!(
        "ping -c 5 -i 0.1 -W 1 -I 10.131.3.99 {}",
        n.ips[1]
    ));
    assert!(!out.status.success(), "a spoofed ping was answered");
    assert_eq!(rx(&n.ns[1]), got, "container 1 received spoofed frames");
    assert!(port_stat(&n.d, "k0", &["drops", "ip_spoof"]) >= spoofs + 5);
    // Positive control, in the same run: from its own address it still goes.
    n.ns[0].must(&format!("ping -c 3 -i 0.1 -W 2 {}", n.ips[1]));
    assert!(rx(&n.ns[1]) >= got + 3);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_limit_or_a_detach_takes_the_pairs_out_of_the_kernel() {
    let n = net(3);
    pair_up(&n, 0, 1);
    let filters = pair_filters(&n.host);
    // A bandwidth limit is the daemon's to enforce: k0's pairs leave the kernel.
    n.d.ctl_ok(&["limit", "k0", "--rate-out", "50mbit"]);
    let gone = eventually(Duration::from_secs(3), || pair_filters(&n.host) < filters);
    assert!(gone, "pairs still in the kernel under a limit");
    n.ns[0].must(&format!("ping -c 2 -W 2 {}", n.ips[1]));
    // Detaching k1 removes its devices and every pair towards it.
    n.ns[2].must(&format!("ping -c 2 -W 2 {}", n.ips[1]));
    assert!(eventually(Duration::from_secs(5), || pair_filters(&n.host) >= 2));
    n.d.ctl_ok(&["detach", "k1"]);
    let ok = eventually(Duration::from_secs(3), || {
        devices(&n.host).len() == 4 && pair_filters(&n.host) == 0
    });
    assert!(
        ok,
        "{:?} / {} filters",
        devices(&n.host),
        pair_filters(&n.host)
    );
    // The others still talk (positive control).
    n.ns[2].must(&format!("ping -c 2 -W 2 {}", n.ips[0]));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_hundred_containers_reach_their_neighbours_through_the_kernel() {
    let count = 100;
    let n = net(count);
    for i in 0..count {
        let next = (i + 1) % count;
        n.ns[i].must(&format!("ping -c 1 -W 2 {}", n.ips[next]));
    }
    // Every container sent to its neighbour and answered its other neighbour.
    let ok = eventually(Duration::from_secs(5), || {
        pair_filters(&n.host) >= 2 * count
    });
    assert!(ok, "{} pair filters", pair_filters(&n.host));
    let (before, carried) = (through_daemon(&n.host), pair_packets(&n.host));
    for i in 0..count {
        let next = (i + 1) % count;
        n.ns[i].must(&format!("ping -c 3 -i 0.01 -q -W 2 {}", n.ips[next]));
    }
    // 300 requests and 300 replies in the kernel; through the daemon no more than
    // neighbour refreshes (a unicast ARP probe and its answer per neighbour gone stale).
    let carried = pair_packets(&n.host) - carried;
    let moved = through_daemon(&n.host) - before;
    assert!(carried >= 600, "{carried} packets carried by the kernel");
    assert!(
        moved <= 4 * count as u64,
        "{moved} frames through the daemon"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_restarted_daemon_steers_its_containers_again() {
    let mut n = net(2);
    pair_up(&n, 0, 1);
    n.d.kill9();
    // The daemon's TAPs went with it; the veth pairs stay with the containers.
    let left = devices(&n.host);
    assert!(
        left.iter().all(|d| d.0.starts_with("vh")) && left.len() == 2,
        "{left:?}"
    );
    n.d.launch();
    assert!(eventually(Duration::from_secs(5), || devices(&n.host)
        .len()
        == 4));
    // The old pairs were flushed; frames reach the daemon again, then the kernel.
    assert_eq!(pair_filters(&n.host), 0);
    pair_up(&n, 0, 1);
    n.ns[1].must(&format!("ping -c 2 -W 2 {}", n.ips[0]));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_dhcp_server_message_over_a_pair_in_the_kernel_meets_the_guard() {
    require(&["/usr/bin/python3"]);
    let n = net(2);
    pair_up(&n, 0, 1);
    let (a_mac, b_mac) = (mac_of(&n.ns[0]), mac_of(&n.ns[1]));
    let rx = |ns: &Netns| -> u64 {
        let s = ns.must("cat /sys/class/net/eth0/statistics/rx_packets");
        s.trim().parse().unwrap_or(0)
    };
    // From container 0's own MAC and address to container 1's: UDP from port `sport`.
    let send = |sport: u16, dport: u16| {
        let py = format!(
            "from scapy.all import *; sendp(Ether(src='{a_mac}', dst='{b_mac}')/IP(src='{}', \
             dst='{}')/UDP(sport={sport}, dport={dport})/BOOTP(op=2), iface='eth0', count=5, \
             verbose=0)",
            n.ips[0], n.ips[1]
        );
        n.ns[0].must(&format!("/usr/bin/python3 -c \"{py}\""));
    };
    let (guarded, got) = (
        port_stat(&n.d, "k0", &["drops", "dhcp_guard"]),
        rx(&n.ns[1]),
    );
    send(67, 68);
    assert!(
        eventually(Duration::from_secs(2), || {
            port_stat(&n.d, "k0", &["drops", "dhcp_guard"]) >= guarded + 5
        }),
        "{}",
        n.d.ctl_ok(&["stats"])
    );
    assert_eq!(rx(&n.ns[1]), got, "an OFFER reached container 1");
    // Positive control: the same datagram between other ports goes, by the kernel.
    let carried = pair_packets(&n.host);
    send(5067, 5068);
    assert!(eventually(Duration::from_secs(2), || rx(&n.ns[1]) >= got + 5));
    assert!(pair_packets(&n.host) >= carried + 5);
}
