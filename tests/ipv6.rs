//! IPv6 inside the host, with real kernel stacks in namespaces: dual-stack and
//! IPv6-only networks (ping6, iperf3 -6), DNS (AAAA, ip6.arpa) on both gateway
//! addresses, a bare TAP that configures itself by SLAAC, a DHCPv6 client, the
//! router advertisement guard, addresses kept across a daemon restart, and `port ls`,
//! `fdb show` and `capture` on IPv6 traffic.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

/// A network's containers: (name, namespace).
struct Net {
    d: Daemon,
    ns: Vec<Netns>,
}

/// A daemon with network `net` created by `create` (extra arguments after the name)
/// and a container per name attached by namespace.
fn net(create: &[&str], names: &[&str]) -> Net {
    require(&["ping", "dig"]);
    let d = Daemon::start(&[]);
    let mut args = vec!["network", "create", "net"];
    args.extend_from_slice(create);
    d.ctl_ok(&args);
    let mut ns = Vec::new();
    for name in names {
        let n = Netns::new(name);
        d.ctl_ok(&["attach", "net", "--name", name, "--netns", &n.path()]);
        ns.push(n);
    }
    Net { d, ns }
}

/// The IPv6 address IPAM gave container `name` (from `port ls`).
fn ip6_of(d: &Daemon, name: &str) -> String {
    let ports = d.ctl_json(&["port", "ls"]);
    let p = ports
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no port {name}: {ports}"));
    p["ip6"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no IPv6 address: {p}"))
        .to_string()
}

/// The network's IPv6 gateway (from `network inspect`).
fn gateway6(d: &Daemon) -> String {
    let v = d.ctl_json(&["network", "inspect", "net"]);
    let cfg = v[0]["IPAM"]["Config"]
        .as_array()
        .expect("IPAM config")
        .clone();
    cfg.iter()
        .filter_map(|c| c["Gateway"].as_str())
        .find(|g| g.contains(':'))
        .unwrap_or_else(|| panic!("no IPv6 gateway: {v}"))
        .to_string()
}

/// A drop counter of port `name` (from `stats`).
fn drops(d: &Daemon, name: &str, reason: &str) -> u64 {
    let s = d.ctl_json(&["stats"]);
    let ports = s["ports"].as_array().cloned().unwrap_or_default();
    let p = ports.iter().find(|p| p["name"] == name);
    p.and_then(|p| p["drops"][reason].as_u64()).unwrap_or(0)
}

/// ping6 and a short iperf3 -6 from the first container to the second.
fn ping_and_iperf(n: &Net) {
    require(&["iperf3"]);
    let b6 = ip6_of(&n.d, "b");
    n.ns[0].must(&format!("ping -6 -c 2 -W 2 {b6}"));
    let _srv = n.ns[1].spawn("exec iperf3 -s -1 -6");
    listening(&n.ns[1], 5201);
    let out = n.ns[0].must(&format!("iperf3 -6 -c {b6} -t 1 -J"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 0, "iperf3 -6 moved nothing: {out}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn dual_stack_containers_ping6_iperf3_and_resolve_aaaa_on_both_gateways() {
    let n = net(
        &[
            "--subnet",
            "10.160.0.0/24",
            "--ipv6",
            "--subnet",
            "fd00:160::/64",
        ],
        &["a", "b"],
    );
    let b6 = ip6_of(&n.d, "b");
    // IPAM's address is the EUI-64 one, and eth0 has it (and the gateway as route).
    assert!(b6.starts_with("fd00:160::42:aff:fea0:"), "{b6}");
    assert!(n.ns[1].must("ip -6 addr show dev eth0").contains(&b6));
    assert!(
        n.ns[1]
            .must("ip -6 route show default")
            .contains("via fd00:160::1")
    );
    assert!(
        n.ns[1]
            .must("ip -4 addr show dev eth0")
            .contains("10.160.0.3")
    );
    ping_and_iperf(&n);
    n.ns[0].must("ping -6 -c 1 -W 2 fd00:160::1");
    // AAAA and ip6.arpa, asked of the IPv4 and of the IPv6 gateway.
    for gw in ["10.160.0.1", "fd00:160::1"] {
        let aaaa = n.ns[0].must(&format!("dig @{gw} +short +tries=2 +time=2 AAAA b"));
        assert_eq!(aaaa.trim(), b6, "AAAA b @{gw}");
        let a = n.ns[0].must(&format!("dig @{gw} +short +tries=2 +time=2 A b"));
        assert_eq!(a.trim(), "10.160.0.3", "A b @{gw}");
        let ptr = n.ns[0].must(&format!("dig @{gw} +short +tries=2 +time=2 -x {b6}"));
        assert_eq!(ptr.trim(), "b.net.", "PTR of {b6} @{gw}");
    }
    // Docker's inspect fields.
    let v = n.d.ctl_json(&["network", "inspect", "net"]);
    assert_eq!(v[0]["EnableIPv6"], true, "{v}");
    assert_eq!(v[0]["IPAM"]["Config"].as_array().map(|c| c.len()), Some(2));
    let members = v[0]["Containers"].as_object().expect("containers");
    assert!(
        members
            .values()
            .any(|m| m["IPv6Address"] == format!("{b6}/64")),
        "{v}"
    );
    // Routed IPv6 leaves through the socket uplink: tests/socket6.rs (from a daemon in
    // a namespace of its own; this one runs in the test's).
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn ipv6_only_containers_ping6_and_iperf3() {
    let n = net(&["--ipv6", "--ipv4=false"], &["a", "b"]);
    // No IPv4 at all on eth0; an address of the daemon's unique local prefix.
    assert!(!n.ns[0].must("ip -4 addr show dev eth0").contains("inet "));
    let b6 = ip6_of(&n.d, "b");
    assert!(b6.starts_with("fd"), "{b6}");
    ping_and_iperf(&n);
    let gw = gateway6(&n.d);
    let aaaa = n.ns[0].must(&format!("dig @{gw} +short +tries=2 +time=2 AAAA b"));
    assert_eq!(aaaa.trim(), b6);
    let v = n.d.ctl_json(&["network", "inspect", "net"]);
    assert_eq!(
        (&v[0]["EnableIPv4"], &v[0]["EnableIPv6"]),
        (&false.into(), &true.into())
    );
}

/// On an IPv6-only network (so every frame is IPv6): `port ls` shows each port's IPv6
/// address, `fdb show` the MACs its traffic taught the bridge, and `capture` lines the
/// echo requests and replies with their IPv6 addresses and protocol (58, ICMPv6).
#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn port_ls_fdb_show_and_capture_show_ipv6() {
    let n = net(&["--ipv6", "--ipv4=false"], &["a", "b"]);
    let (a6, b6) = (ip6_of(&n.d, "a"), ip6_of(&n.d, "b"));
    let cap = Proc::spawn(&format!(
        "{} ctl --socket {} capture b -c 8",
        bin(),
        n.d.socket().display()
    ));
    std::thread::sleep(Duration::from_millis(300));
    n.ns[0].must(&format!("ping -6 -c 12 -i 0.1 -W 2 {b6}"));
    let out = cap.wait(Duration::from_secs(10));
    assert!(out.status.success(), "{}", out.stderr_text());
    let lines = out.stdout_text();
    let to = format!("ethertype 0x86dd {a6} > {b6} proto 58 length");
    let back = format!("ethertype 0x86dd {b6} > {a6} proto 58 length");
    assert!(lines.contains(&to) && lines.contains(&back), "{lines}");
    let ports = n.d.ctl_ok(&["port", "ls"]);
    for (name, ip6) in [("a", &a6), ("b", &b6)] {
        let row = ports.lines().find(|l| l.starts_with(&format!("{name} ")));
        assert!(row.is_some_and(|r| r.contains(ip6.as_str())), "{ports}");
    }
    let fdb = n.d.ctl_ok(&["fdb", "show", "--network", "net"]);
    let listed = n.d.ctl_json(&["port", "ls"]);
    for p in listed.as_array().into_iter().flatten() {
        let (mac, name) = (p["mac"].as_str().unwrap(), p["name"].as_str().unwrap());
        let row = fdb.lines().find(|l| l.starts_with(mac));
        assert!(row.is_some_and(|r| r.contains(name)), "{mac} {name}: {fdb}");
    }
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_bare_tap_configures_itself_by_slaac_with_the_gateway_as_router_and_dns() {
    require(&["tcpdump"]);
    let host = Netns::new("h");
    let d = Daemon::start_in(&host, &[]);
    d.ctl_ok(&[
        "network",
        "create",
        "net",
        "--subnet",
        "10.161.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:161::/64",
    ]);
    let tap = unique("t");
    host.must(&format!(
        "ip tuntap add dev {tap} mode tap && ip link set {tap} address 02:42:0a:a1:00:09"
    ));
    // The TAP's kernel side does what a VM's would: SLAAC from router advertisements.
    for (k, v) in [("accept_ra", "1"), ("autoconf", "1"), ("forwarding", "0")] {
        host.must(&format!("sysctl -qw net.ipv6.conf.{tap}.{k}={v}"));
    }
    d.ctl_ok(&["attach", "net", "--name", "vm", "--tap", &tap]);
    host.must(&format!("ip link set {tap} up"));
    let want = ip6_of(&d, "vm");
    let got = eventually(Duration::from_secs(10), || {
        host.must(&format!(
            "ip -6 addr show dev {tap} scope global -tentative"
        ))
        .contains(&want)
    });
    assert!(
        got,
        "SLAAC did not form {want}: {}",
        host.must("ip -6 addr")
    );
    // The gateway is the default router.
    let route = host.must(&format!("ip -6 route show default dev {tap}"));
    assert!(route.contains("via fe80::42:aff:fea1:1"), "{route}");
    // What SLAAC formed is what port security lets through: the gateway answers it.
    host.must(&format!("ping -6 -c 1 -W 3 -I {want} fd00:161::1"));
    assert_eq!(drops(&d, "vm", "ip_spoof"), 0);
    // The advertisement names the gateway as DNS server (RDNSS) and the MTU: the
    // kernel solicits one again when the link comes back up.
    let cap = host.spawn(&format!(
        "exec tcpdump -i {tap} -n -vv -l -c 1 icmp6 and ip6[40] == 134"
    ));
    std::thread::sleep(Duration::from_millis(700));
    host.must(&format!("ip link set {tap} down && ip link set {tap} up"));
    let ra = cap.wait(Duration::from_secs(10)).stdout_text();
    assert!(
        ra.contains("rdnss option") && ra.contains("fd00:161::1"),
        "{ra}"
    );
    assert!(ra.contains("mtu option") && ra.contains("1500"), "{ra}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_rogue_router_advertisement_reaches_no_other_container() {
    require(&["tcpdump", "python3"]);
    let n = net(&["--ipv6", "--subnet", "fd00:162::/64"], &["a", "b"]);
    let b6 = ip6_of(&n.d, "b");
    // b listens for what comes from a's MAC: a rogue RA (prefix 2001:db8:bad::/64),
    // and an echo request to b (allowed: the sniffer's proof of life).
    let a_mac = n.ns[0]
        .must("cat /sys/class/net/eth0/address")
        .trim()
        .to_string();
    let sniff = n.ns[1].spawn(&format!(
        "exec tcpdump -i eth0 -n -vv -l ether src {a_mac} and icmp6"
    ));
    std::thread::sleep(Duration::from_millis(500));
    // From a's own MAC and link-local address: only the RA guard stops it.
    let ll = n.ns[0].must("ip -6 -o addr show dev eth0 scope link");
    let ll = ll
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default();
    let py = format!(
        "from scapy.all import *\n\
         ra = Ether(src='{a_mac}', dst='33:33:00:00:00:01')/IPv6(src='{ll}', dst='ff02::1', hlim=255)/ICMPv6ND_RA()/ICMPv6NDOptPrefixInfo(prefix='2001:db8:bad::', prefixlen=64)\n\
         sendp(ra, iface='eth0', count=3, verbose=False)\n"
    );
    n.ns[0].must(&format!("/usr/bin/python3 -c \"{py}\""));
    n.ns[0].must(&format!("ping -6 -c 2 -W 2 {b6}"));
    std::thread::sleep(Duration::from_millis(300));
    let seen = sniff.wait(Duration::from_millis(200)).stdout_text();
    assert!(
        seen.contains("echo request"),
        "the sniffer saw nothing at all: {seen}"
    );
    assert!(!seen.contains("router advertisement"), "{seen}");
    assert!(!seen.contains("2001:db8:bad"), "{seen}");
    assert!(drops(&n.d, "a", "ra_guard") >= 3);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_dhcpv6_client_gets_the_ipam_address() {
    require(&["dhclient"]);
    let n = net(&["--ipv6", "--subnet", "fd00:163::/64"], &["a"]);
    let want = ip6_of(&n.d, "a");
    let dir = TempDir::new("dh6");
    let lease = dir.path().join("leases");
    let pid = dir.path().join("pid");
    // -sf /bin/true: the client only records its lease (its script would change the
    // machine's resolv.conf).
    let _c = n.ns[0].spawn(&format!(
        "exec dhclient -6 -d -1 -sf /bin/true -lf {} -pf {} eth0",
        lease.display(),
        pid.display()
    ));
    let bound = eventually(Duration::from_secs(15), || {
        std::fs::read_to_string(&lease).is_ok_and(|l| l.contains("iaaddr"))
    });
    let text = std::fs::read_to_string(&lease).unwrap_or_default();
    assert!(bound, "no lease: {text}\n{}", n.d.log());
    assert!(text.contains(&format!("iaaddr {want}")), "{text}");
    assert!(text.contains("dhcp6.name-servers fd00:163::1"), "{text}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_restart_keeps_every_ipv6_address() {
    let mut n = net(&["--ipv6"], &["a", "b"]);
    let six = Netns::new("s");
    n.d.ctl_ok(&["network", "create", "six", "--ipv6", "--ipv4=false"]);
    n.d.ctl_ok(&["attach", "six", "--name", "c", "--netns", &six.path()]);
    let before = n.d.ctl_json(&["port", "ls"]);
    let gw_before = gateway6(&n.d);
    n.d.kill9();
    n.d.launch();
    let after = n.d.ctl_json(&["port", "ls"]);
    let addrs = |v: &serde_json::Value| {
        let mut a: Vec<(String, String)> = (v.as_array().cloned().unwrap_or_default())
            .iter()
            .map(|p| (p["name"].to_string(), p["ip6"].to_string()))
            .collect();
        a.sort();
        a
    };
    assert_eq!(addrs(&before), addrs(&after));
    assert_eq!(addrs(&after).len(), 3);
    assert_eq!(gateway6(&n.d), gw_before, "the unique local prefix is kept");
    let b6 = ip6_of(&n.d, "b");
    let up = eventually(Duration::from_secs(5), || {
        n.ns[0]
            .sh(&format!("ping -6 -c 1 -W 1 {b6}"))
            .status
            .success()
    });
    assert!(up, "a no longer reaches b over IPv6: {}", n.d.log());
    let c6 = ip6_of(&n.d, "c");
    assert!(six.must("ip -6 addr show dev eth0").contains(&c6));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_run_container_names_both_gateways_in_resolv_conf() {
    let n = net(
        &[
            "--subnet",
            "10.164.0.0/24",
            "--ipv6",
            "--subnet",
            "fd00:164::/64",
        ],
        &[],
    );
    let sock = n.d.socket();
    let o = vswitch(&[
        "run",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "--network",
        "net",
        "--name",
        "r",
        "--",
        "sh",
        "-c",
        "cat /etc/resolv.conf; ip -6 addr show dev eth0",
    ]);
    assert!(o.status.success(), "{}", o.stderr_text());
    let out = o.stdout_text();
    assert!(
        out.contains("nameserver 10.164.0.1\nnameserver fd00:164::1\n"),
        "{out}"
    );
    assert!(out.contains("fd00:164::"), "{out}");
}

/// dnsmasq on the host's IPv6 loopback answering example.test (A and AAAA): an
/// upstream resolver reached over IPv6.
fn upstream6() -> (Proc, u16) {
    require(&["dnsmasq"]);
    for _ in 0..5 {
        let port = {
            let s = std::net::UdpSocket::bind("[::1]:0").expect("the host has no IPv6 loopback");
            s.local_addr().expect("addr").port()
        };
        let p = Proc::spawn(&format!(
            "exec dnsmasq --keep-in-foreground --no-daemon --port {port} --listen-address=::1 \
             --bind-interfaces --no-resolv --no-hosts --address=/example.test/2001:db8::7 \
             --address=/example.test/192.0.2.7 --pid-file= --user=root 2>/dev/null"
        ));
        let ok = eventually(Duration::from_secs(5), || {
            sh(&format!(
                "dig @::1 -p {port} +short +tries=1 +time=1 AAAA a.example.test"
            ))
            .stdout_text()
            .contains("2001:db8::7")
        });
        if ok {
            return (p, port);
        }
    }
    panic!("dnsmasq did not start on ::1 (5 ports tried)");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn other_names_are_forwarded_to_an_upstream_resolver_over_ipv6() {
    require(&["dig"]);
    let (_up, port) = upstream6();
    let d = Daemon::start(&["--upstream-dns", &format!("[::1]:{port}")]);
    d.ctl_ok(&[
        "network",
        "create",
        "net",
        "--ipv6",
        "--subnet",
        "fd00:165::/64",
    ]);
    let a = Netns::new("a");
    d.ctl_ok(&["attach", "net", "--name", "a", "--netns", &a.path()]);
    let aaaa = a.must("dig @fd00:165::1 +short +tries=2 +time=2 AAAA x.example.test");
    assert_eq!(aaaa.trim(), "2001:db8::7", "{}", d.log());
    let a4 = a.must("dig @fd00:165::1 +short +tries=2 +time=2 A x.example.test");
    assert_eq!(a4.trim(), "192.0.2.7");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn the_default_bridge_gets_ipv6_with_daemon_ipv6_also_for_its_containers_from_before() {
    require(&["ping"]);
    let mut d = Daemon::start(&[]);
    let a = Netns::new("ba");
    d.ctl_ok(&["attach", "bridge", "--name", "ba", "--netns", &a.path()]);
    let before = d.ctl_json(&["port", "ls"]);
    assert!(before[0]["ip6"].is_null(), "no IPv6 yet: {before}");
    // Restarted as `dockerd --ipv6 --fixed-cidr-v6` would be.
    d.args
        .extend(["--ipv6", "--fixed-cidr-v6", "fd00:bb:1::/64"].map(String::from));
    d.kill9();
    d.launch();
    let b = Netns::new("bb");
    d.ctl_ok(&["attach", "bridge", "--name", "bb", "--netns", &b.path()]);
    let (a6, b6) = (ip6_of(&d, "ba"), ip6_of(&d, "bb"));
    for ip in [&a6, &b6] {
        let seg = ip.parse::<std::net::Ipv6Addr>().unwrap().segments();
        assert_eq!(seg[..4], [0xfd00, 0xbb, 1, 0], "{ip}");
    }
    let v = d.ctl_json(&["network", "inspect", "bridge"]);
    assert_eq!(v[0]["EnableIPv6"], true, "{v}");
    // The container from before has its address on eth0 and reaches the new one.
    let configured = eventually(Duration::from_secs(5), || {
        a.must("ip -6 addr show dev eth0").contains(&a6)
    });
    assert!(configured, "{}", a.must("ip -6 addr show dev eth0"));
    let up = eventually(Duration::from_secs(5), || {
        a.sh(&format!("ping -6 -c 1 -W 1 {b6}")).status.success()
    });
    assert!(up, "ba does not reach bb over IPv6: {}", d.log());
    // IPv4 as before: the control.
    b.must("ping -c 1 -W 2 172.17.0.2");
}
