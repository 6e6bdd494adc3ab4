//! What a container talks to first: the gateway's ARP, ICMP, DHCP and DNS, with real
//! clients (ping, dig, busybox udhcpc, getent) inside namespaces.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

/// dnsmasq on the host's loopback, answering example.test names: the "upstream".
struct Upstream {
    _p: Proc,
    port: u16,
}

fn upstream() -> Upstream {
    require(&["dnsmasq"]);
    // A free port is only free until someone else takes it (other tests start servers
    // at the same time): try a few.
    for _ in 0..5 {
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("port");
            s.local_addr().expect("addr").port()
        };
        let p = Proc::spawn(&format!(
            "exec dnsmasq --keep-in-foreground --no-daemon --port {port} --listen-address=127.0.0.1 --bind-interfaces \
             --no-resolv --no-hosts --address=/example.test/192.0.2.7 --address=/invalid/ --pid-file= --user=root 2>/dev/null"
        ));
        let ok = eventually(Duration::from_secs(5), || {
            sh(&format!(
                "dig @127.0.0.1 -p {port} +short +tries=1 +time=1 a.example.test"
            ))
            .stdout_text()
            .contains("192.0.2.7")
        });
        if ok {
            return Upstream { _p: p, port };
        }
    }
    panic!("dnsmasq did not start on 127.0.0.1 (5 ports tried)");
}

struct Site {
    d: Daemon,
    ns: Vec<Netns>,
    _up: Upstream,
}

/// A daemon forwarding to a local dnsmasq, network `front` (10.150.0.0/24) with
/// containers web (alias www, api), db (alias api) and a client.
fn site() -> Site {
    require(&["dig", "ping"]);
    let up = upstream();
    let d = Daemon::start(&["--upstream-dns", &format!("127.0.0.1:{}", up.port)]);
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.150.0.0/24"]);
    let mut ns = Vec::new();
    for (name, aliases) in [
        ("web", vec!["www", "api"]),
        ("db", vec!["api"]),
        ("client", vec![]),
    ] {
        let n = Netns::new(name);
        let mut args = vec!["attach", "front", "--name", name, "--netns"];
        let p = n.path();
        args.push(&p);
        for a in &aliases {
            args.push("--alias");
            args.push(a);
        }
        d.ctl_ok(&args);
        ns.push(n);
    }
    Site { d, ns, _up: up }
}

fn dig(ns: &Netns, args: &str) -> String {
    ns.must(&format!("dig @10.150.0.1 +tries=2 +time=2 {args}"))
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn gateway_answers_arp_and_ping() {
    let s = site();
    s.ns[2].must("ping -c 3 -i 0.2 -W 2 10.150.0.1");
    let neigh = s.ns[2].must("ip neigh show 10.150.0.1");
    assert!(neigh.contains("02:42:0a:96:00:01"), "{neigh}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn dns_names_aliases_round_robin_ptr_case_and_tcp() {
    let s = site();
    let c = &s.ns[2];
    assert_eq!(dig(c, "+short web").trim(), "10.150.0.2");
    assert_eq!(dig(c, "+short db").trim(), "10.150.0.3");
    assert_eq!(dig(c, "+short www").trim(), "10.150.0.2");
    assert_eq!(dig(c, "+short WeB").trim(), "10.150.0.2", "mixed case");
    assert_eq!(dig(c, "+short +tcp web").trim(), "10.150.0.2", "over TCP");
    // Round robin over a shared alias: both addresses, first one rotating.
    let firsts: Vec<String> = (0..4)
        .map(|_| {
            dig(c, "+short api")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let all = dig(c, "+short api");
    assert!(
        all.contains("10.150.0.2") && all.contains("10.150.0.3"),
        "{all}"
    );
    assert!(
        firsts.iter().any(|f| f == "10.150.0.2") && firsts.iter().any(|f| f == "10.150.0.3"),
        "no rotation: {firsts:?}"
    );
    // Reverse.
    let ptr = dig(c, "+short -x 10.150.0.3");
    assert!(ptr.trim().starts_with("db."), "{ptr}");
    // AAAA of a known name: NOERROR, empty.
    let aaaa = dig(c, "web AAAA");
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"),
        "{aaaa}"
    );
    assert!(dig(c, "+short host.vswitch.internal").contains("10.150.0.1"));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn unknown_names_are_forwarded_and_nxdomain_relayed() {
    let s = site();
    let c = &s.ns[2];
    assert_eq!(dig(c, "+short foo.example.test").trim(), "192.0.2.7");
    let nx = dig(c, "nothing.invalid");
    assert!(
        nx.contains("status: NXDOMAIN"),
        "the upstream's NXDOMAIN was not relayed: {nx}"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn default_bridge_resolves_no_container_names_but_forwards() {
    let up = upstream();
    let d = Daemon::start(&["--upstream-dns", &format!("127.0.0.1:{}", up.port)]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    d.ctl_ok(&["attach", "bridge", "--name", "alpha", "--netns", &a.path()]);
    d.ctl_ok(&["attach", "bridge", "--name", "beta", "--netns", &b.path()]);
    let o = a.must("dig @172.17.0.1 +tries=2 +time=2 beta");
    assert!(
        !o.contains("172.17.0.3"),
        "the default bridge resolved a container name: {o}"
    );
    let o = a.must("dig @172.17.0.1 +short +tries=2 +time=2 x.example.test");
    assert_eq!(o.trim(), "192.0.2.7");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn names_of_another_network_do_not_resolve() {
    let s = site();
    s.d.ctl_ok(&["network", "create", "back", "--subnet", "10.151.0.0/24"]);
    let b = Netns::new("bk");
    s.d.ctl_ok(&["attach", "back", "--name", "hidden", "--netns", &b.path()]);
    // The control: each network resolves its own names.
    let own = b.must("dig @10.151.0.1 +short +tries=2 +time=2 hidden");
    assert_eq!(own.trim(), "10.151.0.2", "{own}");
    assert_eq!(dig(&s.ns[2], "+short web").trim(), "10.150.0.2");
    let o = dig(&s.ns[2], "hidden");
    assert!(!o.contains("10.151.0.2"), "{o}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_resolver_whose_port_is_closed_gets_servfail_without_waiting() {
    require(&["dig"]);
    // A port nothing listens on: the resolver's host answers ICMP port unreachable.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let d = Daemon::start(&["--upstream-dns", &format!("127.0.0.1:{closed}")]);
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.152.0.0/24"]);
    let c = Netns::new("rc");
    d.ctl_ok(&["attach", "front", "--name", "rc", "--netns", &c.path()]);
    // The daemon waits 2 s for a resolver that says nothing; this one said no at once,
    // so the answer comes within dig's 1 s.
    let o = c.sh("dig @10.152.0.1 +tries=1 +time=1 x.example.test");
    let text = o.stdout_text();
    assert!(
        text.contains("status: SERVFAIL"),
        "no SERVFAIL from a refusing resolver: {text}{}",
        o.stderr_text()
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn closed_udp_port_on_the_gateway_is_refused() {
    let s = site();
    let o = s.ns[2].sh("dig @10.150.0.1 -p 9999 +tries=1 +time=2 web");
    let text = format!("{}{}", o.stdout_text(), o.stderr_text());
    assert!(text.contains("refused"), "no ICMP port unreachable: {text}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn udhcpc_on_a_bare_interface_gets_its_port_address() {
    require(&["busybox"]);
    let s = site();
    let c = &s.ns[2];
    // Strip eth0 of its configuration; DHCP must give it back.
    c.must("ip addr flush dev eth0");
    let script = std::env::temp_dir().join(format!("{}.sh", unique("dhcp")));
    std::fs::write(&script, "#!/bin/sh\necho \"$1 ip=$ip mask=$subnet router=$router dns=$dns mtu=$mtu lease=$lease\"\n").expect("script");
    must(&format!("chmod +x {}", script.display()));
    let out = c.must(&format!(
        "busybox udhcpc -i eth0 -f -q -n -t 5 -T 1 -s {}",
        script.display()
    ));
    let _ = std::fs::remove_file(&script);
    let bound = out
        .lines()
        .find(|l| l.starts_with("bound"))
        .unwrap_or_else(|| panic!("no lease: {out}"));
    assert!(bound.contains("ip=10.150.0.4"), "{bound}");
    assert!(bound.contains("mask=255.255.255.0"), "{bound}");
    assert!(bound.contains("router=10.150.0.1"), "{bound}");
    assert!(bound.contains("dns=10.150.0.1"), "{bound}");
    assert!(bound.contains("mtu=1500"), "{bound}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn getent_resolves_names_inside_a_run_container() {
    let s = site();
    let sock = s.d.socket();
    let o = vswitch(&[
        "run",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "--network",
        "front",
        "--name",
        "asker",
        "--",
        "getent",
        "hosts",
        "web",
    ]);
    assert!(o.status.success(), "{}", o.stderr_text());
    assert!(
        o.stdout_text().contains("10.150.0.2"),
        "{}",
        o.stdout_text()
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn internal_networks_do_not_forward_or_leave() {
    let up = upstream();
    let d = Daemon::start(&["--upstream-dns", &format!("127.0.0.1:{}", up.port)]);
    // Both networks opt in to the host's loopback, where the listener below is: only
    // the internal one must not reach it.
    d.ctl_ok(&[
        "network",
        "create",
        "iso",
        "--subnet",
        "10.152.0.0/24",
        "--internal",
        "--host-loopback",
    ]);
    d.ctl_ok(&[
        "network",
        "create",
        "open",
        "--subnet",
        "10.153.0.0/24",
        "--host-loopback",
    ]);
    let a = Netns::new("i");
    let b = Netns::new("o");
    d.ctl_ok(&["attach", "iso", "--name", "inner", "--netns", &a.path()]);
    d.ctl_ok(&["attach", "open", "--name", "outer", "--netns", &b.path()]);
    let o = a.must("dig @10.152.0.1 +tries=1 +time=2 x.example.test");
    assert!(
        !o.contains("192.0.2.7"),
        "an internal network forwarded: {o}"
    );
    assert!(
        a.must("dig @10.152.0.1 +short +tries=1 +time=2 inner")
            .contains("10.152.0.2")
    );
    // The gateway (host) is not reachable over TCP from an internal network either,
    // while the same listener answers the other network (the control).
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    b.must(&format!(
        "timeout 5 bash -c 'echo > /dev/tcp/10.153.0.1/{port}'"
    ));
    let o = a.sh(&format!(
        "timeout 3 bash -c 'echo > /dev/tcp/10.152.0.1/{port}'"
    ));
    assert!(!o.status.success(), "an internal network reached the host");
}
