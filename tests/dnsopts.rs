//! What Docker and Podman users type: a network's own resolvers and search domains, a
//! container's DNS options, `network update` applied live, `network prune`, address
//! pools, `-P`. Each daemon runs in a namespace of its own standing for the host, with
//! its resolvers (dnsmasq) and listeners on that namespace's loopback and addresses.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

/// dnsmasq on the host namespace's 127.0.0.1:`port`, answering `names` (NAME=IP).
fn dnsmasq(host: &Netns, port: u16, names: &[(&str, &str)]) -> Proc {
    require(&["dnsmasq", "dig"]);
    let addrs: Vec<String> = names
        .iter()
        .map(|(n, ip)| format!("--address=/{n}/{ip}"))
        .collect();
    let p = host.spawn(&format!(
        "exec dnsmasq --keep-in-foreground --no-daemon --port {port} --listen-address=127.0.0.1 \
         --bind-interfaces --no-resolv --no-hosts {} --pid-file= --user=root 2>/dev/null",
        addrs.join(" ")
    ));
    let (first, ip) = names[0];
    let up = eventually(Duration::from_secs(5), || {
        host.sh(&format!(
            "dig @127.0.0.1 -p {port} +short +tries=1 +time=1 {first}"
        ))
        .stdout_text()
        .contains(ip)
    });
    assert!(up, "dnsmasq did not answer on 127.0.0.1:{port}");
    p
}

fn short(ns: &Netns, server: &str, name: &str) -> String {
    ns.must(&format!("dig @{server} +short +tries=2 +time=2 {name}"))
        .trim()
        .to_string()
}

/// Polls `f` until it gives `want` (a change the daemon applies reaches the gateway
/// thread as a message, a moment after `ctl` returns); asserts it did within 10 s.
fn becomes(what: &str, want: &str, mut f: impl FnMut() -> String) {
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(10), || {
        last = f();
        last == want
    });
    assert!(ok, "{what}: still {last:?}, not {want:?}");
}

/// `vswitch run` on `d`'s network with `args`, running `script` with sh; its output.
fn run(d: &Daemon, args: &[&str], script: &str) -> String {
    let sock = d.socket();
    let mut all = vec!["run", "--socket", sock.to_str().unwrap_or_default()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", script]);
    let o = vswitch(&all);
    assert!(
        o.status.success(),
        "run {args:?} {script:?} failed: {}{}\ndaemon log:\n{}",
        o.stdout_text(),
        o.stderr_text(),
        d.log()
    );
    o.stdout_text()
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_network_resolves_through_its_own_dns_while_another_uses_the_daemons() {
    let host = Netns::new("dnnh");
    let _daemons = dnsmasq(&host, 5301, &[("x.test", "192.0.2.1")]);
    let _own = dnsmasq(&host, 5302, &[("x.test", "192.0.2.2")]);
    let d = Daemon::start_in(&host, &["--upstream-dns", "127.0.0.1:5301"]);
    d.ctl_ok(&[
        "network",
        "create",
        "own",
        "--subnet",
        "10.211.0.0/24",
        "--dns",
        "127.0.0.1:5302",
    ]);
    d.ctl_ok(&["network", "create", "plain", "--subnet", "10.212.0.0/24"]);
    let a = Netns::new("dnna");
    let b = Netns::new("dnnb");
    d.ctl_ok(&["attach", "own", "--name", "a", "--netns", &a.path()]);
    d.ctl_ok(&["attach", "plain", "--name", "b", "--netns", &b.path()]);
    assert_eq!(short(&a, "10.211.0.1", "x.test"), "192.0.2.2");
    assert_eq!(short(&b, "10.212.0.1", "x.test"), "192.0.2.1");
    let inspect = d.ctl_json(&["network", "inspect", "own"]);
    assert_eq!(
        inspect[0]["Options"]["vswitch.dns_servers"],
        "127.0.0.1:5302"
    );
    // Live: the network forgets its resolver and uses the daemon's; the other network
    // takes one of its own.
    d.ctl_ok(&["network", "update", "own", "--clear-dns"]);
    d.ctl_ok(&["network", "update", "plain", "--dns", "127.0.0.1:5302"]);
    becomes("own after --clear-dns", "192.0.2.1", || {
        short(&a, "10.211.0.1", "x.test")
    });
    becomes("plain after --dns", "192.0.2.2", || {
        short(&b, "10.212.0.1", "x.test")
    });
    // A container's own --dns: only its queries go there.
    let c = Netns::new("dnnc");
    d.ctl_ok(&[
        "attach",
        "own",
        "--name",
        "c",
        "--netns",
        &c.path(),
        "--dns",
        "127.0.0.1:5302",
    ]);
    assert_eq!(short(&c, "10.211.0.1", "x.test"), "192.0.2.2");
    assert_eq!(short(&a, "10.211.0.1", "x.test"), "192.0.2.1");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn search_domains_hostname_and_extra_hosts_in_a_run_container() {
    require(&["getent", "ping", "dig"]);
    let host = Netns::new("dnnh");
    let _up = dnsmasq(&host, 5301, &[("db.corp.test", "192.0.2.9")]);
    let d = Daemon::start_in(&host, &["--upstream-dns", "127.0.0.1:5301"]);
    d.ctl_ok(&[
        "network",
        "create",
        "corp",
        "--subnet",
        "10.213.0.0/24",
        "--dns-search",
        "corp.test",
    ]);
    let web = Netns::new("dnnw");
    d.ctl_ok(&["attach", "corp", "--name", "web", "--netns", &web.path()]);
    // The embedded DNS answers a container's name under the search domain.
    assert_eq!(short(&web, "10.213.0.1", "web.corp.test"), "10.213.0.2");
    for alias in ["host.docker.internal", "host.containers.internal"] {
        assert_eq!(short(&web, "10.213.0.1", alias), "10.213.0.1", "{alias}");
    }
    let out = run(
        &d,
        &[
            "--network",
            "corp",
            "--name",
            "asker",
            "--hostname",
            "box1",
            "--add-host",
            "files:10.9.9.9",
            "--add-host",
            "gw:host-gateway",
            "--dns-option",
            "timeout:2",
        ],
        "cat /etc/resolv.conf; echo HOSTNAME $(hostname); getent hosts files gw; \
         getent hosts db; ping -c1 -W3 web >/dev/null && echo PINGED; \
         dig @10.213.0.1 +short files; dig @10.213.0.1 +short box1",
    );
    assert!(out.contains("search corp.test"), "{out}");
    assert!(out.contains("options timeout:2"), "{out}");
    assert!(out.contains("HOSTNAME box1"), "{out}");
    assert!(
        out.contains("10.9.9.9        files") || out.contains("10.9.9.9"),
        "{out}"
    );
    assert!(out.contains("10.213.0.1") && out.contains("gw"), "{out}");
    // `db` is searched as db.corp.test, which only the upstream knows.
    assert!(out.contains("192.0.2.9"), "{out}");
    // `ping web` resolved web.corp.test to the container and reached it.
    assert!(out.contains("PINGED"), "{out}");
    // The embedded DNS serves --add-host names to that container, and its hostname
    // to everyone on its network.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[lines.len() - 2], "10.9.9.9", "{out}");
    assert!(lines[lines.len() - 1].starts_with("10.213.0."), "{out}");
    // Another container does not get that container's --add-host name.
    assert_eq!(short(&web, "10.213.0.1", "files"), "");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn network_update_internal_cuts_egress_live_and_back() {
    require(&["socat"]);
    let host = Netns::new("dnnh");
    host.must("ip addr add 10.214.9.1/32 dev lo");
    let _srv = host
        .spawn("exec socat TCP-LISTEN:7000,bind=10.214.9.1,fork,reuseaddr SYSTEM:\"echo outside\"");
    listening(&host, 7000);
    let d = Daemon::start_in(&host, &["--upstream-dns", "127.0.0.1:5301"]);
    d.ctl_ok(&["network", "create", "egress", "--subnet", "10.214.0.0/24"]);
    let c = Netns::new("dnnc");
    d.ctl_ok(&["attach", "egress", "--name", "c", "--netns", &c.path()]);
    let reach = || {
        let o = c.sh("socat -T 3 - TCP:10.214.9.1:7000 </dev/null");
        o.stdout_text().trim().to_string()
    };
    // Positive control: the outside answers before the update.
    assert_eq!(reach(), "outside");
    let n = d.ctl_json(&["network", "update", "egress", "--internal"]);
    assert_eq!(n["Internal"], true);
    becomes("egress of an internal network", "", reach);
    // The gateway itself still answers (the network is alive, only egress is cut).
    c.must("ping -c1 -W2 10.214.0.1");
    d.ctl_ok(&["network", "update", "egress", "--internal=false"]);
    becomes("egress once not internal", "outside", reach);
    // ICC off live: the containers no longer reach each other, the gateway still.
    let e = Netns::new("dnne");
    d.ctl_ok(&["attach", "egress", "--name", "e", "--netns", &e.path()]);
    c.must("ping -c1 -W2 10.214.0.3");
    d.ctl_ok(&["network", "update", "egress", "--no-icc"]);
    let cut = eventually(Duration::from_secs(10), || {
        !c.sh("ping -c1 -W1 10.214.0.3").status.success()
    });
    assert!(cut, "--no-icc did not cut container to container traffic");
    c.must("ping -c1 -W2 10.214.0.1");
    // MTU only on an empty network, refused in one line otherwise.
    let err = d.ctl_err(&["network", "update", "egress", "--mtu", "1400"]);
    assert!(err.contains("endpoint"), "{err}");
}

/// A TCP server on `port` in `ns` answering `body` to anything (HTTP/0.9: curl takes
/// it with `--http0.9`).
fn http(ns: &Netns, port: u16, body: &str) -> Proc {
    let p = ns.spawn(&format!(
        "exec socat TCP-LISTEN:{port},fork,reuseaddr SYSTEM:\"read l; echo {body}\""
    ));
    listening(ns, port);
    p
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn publish_all_publishes_every_exposed_port_and_ranges_show_compactly() {
    require(&["socat", "curl"]);
    let host = Netns::new("dnnh");
    let d = Daemon::start_in(&host, &["--upstream-dns", "127.0.0.1:5301"]);
    d.ctl_ok(&["network", "create", "pub", "--subnet", "10.215.0.0/24"]);
    let c = Netns::new("dnnc");
    let _a = http(&c, 80, "eighty");
    let _b = http(&c, 8080, "eighty-eighty");
    d.ctl_ok(&[
        "attach",
        "pub",
        "--name",
        "web",
        "--netns",
        &c.path(),
        "-P",
        "--expose",
        "80",
        "--expose",
        "8080/tcp",
    ]);
    let got = d.ctl_json(&["port", "show", "web"]);
    let list = got.as_array().unwrap();
    assert_eq!(list.len(), 2, "{got}");
    for e in list {
        assert_eq!(e["auto"], true);
        let (hp, cp) = (
            e["host_port"].as_u64().unwrap(),
            e["container_port"].as_u64().unwrap(),
        );
        let body = host.must(&format!(
            "curl -s --http0.9 --max-time 5 http://127.0.0.1:{hp}/"
        ));
        let want = if cp == 80 { "eighty" } else { "eighty-eighty" };
        assert_eq!(body.trim(), want, "host port {hp} -> {cp}");
    }
    // `docker port` lines.
    let text = d.ctl_ok(&["port", "show", "web"]);
    assert!(text.contains("80/tcp -> 0.0.0.0:"), "{text}");
    // -P without --expose, and a bad --expose, are refused in one line.
    let o = Netns::new("dnno");
    let e = d.ctl_err(&["attach", "pub", "--name", "o", "--netns", &o.path(), "-P"]);
    assert!(e.contains("--expose"), "{e}");
    let e = d.ctl_err(&[
        "attach",
        "pub",
        "--name",
        "o",
        "--netns",
        &o.path(),
        "-P",
        "--expose",
        "1:80",
    ]);
    assert!(e.contains("invalid --expose"), "{e}");
    // A range of 1000 ports is one entry of `port ls`.
    d.ctl_ok(&["publish", "web", "-p", "20000-20999:20000-20999"]);
    let ls = d.ctl_ok(&["port", "ls"]);
    assert!(ls.contains("0.0.0.0:20000-20999->20000-20999/tcp"), "{ls}");
    assert!(ls.len() < 2000, "port ls is {} bytes", ls.len());
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn address_pools_prune_and_inspect_status() {
    let host = Netns::new("dnnh");
    let d = Daemon::start_in(
        &host,
        &[
            "--upstream-dns",
            "127.0.0.1:5301",
            "--default-address-pool",
            "base=10.216.0.0/23,size=24",
        ],
    );
    let a = d.ctl_json(&["network", "create", "a"]);
    assert_eq!(a["IPAM"]["Config"][0]["Subnet"], "10.216.0.0/24");
    let b = d.ctl_json(&["network", "create", "b"]);
    assert_eq!(b["IPAM"]["Config"][0]["Subnet"], "10.216.1.0/24");
    let e = d.ctl_err(&["network", "create", "c"]);
    assert!(e.contains("10.216.0.0/23"), "{e}");
    let sub =
        |n: &str| d.ctl_json(&["network", "inspect", n])[0]["Status"]["IPAM"]["Subnets"].clone();
    assert_eq!(sub("a")["10.216.0.0/24"]["IPsInUse"], 3);
    assert_eq!(sub("a")["10.216.0.0/24"]["DynamicIPsAvailable"], 253);
    let ns = Netns::new("dnna");
    d.ctl_ok(&["attach", "a", "--name", "x", "--netns", &ns.path()]);
    assert_eq!(sub("a")["10.216.0.0/24"]["IPsInUse"], 4);
    assert_eq!(sub("a")["10.216.0.0/24"]["DynamicIPsAvailable"], 252);
    // Prune: b (empty) goes; a (a container) and bridge stay.
    let pruned = d.ctl_ok(&["network", "prune"]);
    assert_eq!(pruned.trim(), "b");
    let names: Vec<String> = d
        .ctl_json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["a".to_string(), "bridge".to_string()]);
    // The pool has room again.
    let c = d.ctl_json(&["network", "create", "c"]);
    assert_eq!(c["IPAM"]["Config"][0]["Subnet"], "10.216.1.0/24");
    // Bad input: one line each.
    for args in [
        vec![
            "network",
            "create",
            "bad",
            "--subnet",
            "10.217.0.0/24",
            "--dns",
            "nope",
        ],
        vec![
            "network",
            "create",
            "bad",
            "--subnet",
            "10.217.0.0/24",
            "--dns-search",
            "a..b",
        ],
        vec!["network", "update", "bridge", "--internal"],
        vec![
            "attach",
            "a",
            "--name",
            "y",
            "--netns",
            "/proc/self/ns/net",
            "--add-host",
            "db",
        ],
    ] {
        let e = d.ctl_err(&args);
        assert!(
            e.contains("invalid") || e.contains("cannot"),
            "{args:?}: {e}"
        );
    }
    let o = vswitch(&["daemon", "--default-address-pool", "base=10.0.0.0/8"]);
    assert!(!o.status.success());
    assert_eq!(
        o.stderr_text().trim().lines().count(),
        1,
        "{}",
        o.stderr_text()
    );
}
