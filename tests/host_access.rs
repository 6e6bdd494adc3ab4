//! What GATEWAY:PORT reaches on the host. By default the host's main address (services
//! listening on every address answer, 127.0.0.1-only ones do not); a network created
//! with `--host-loopback` (and the default `bridge` with `vswitch daemon
//! --host-loopback`) reaches the host's loopback; port 53 of a `--no-dns` network is
//! closed. The daemon runs inside a namespace of the test's own that stands for the
//! host: a veth pair inside it carries its "main address" and default route, so no traffic
//! reaches the machine's real addresses.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const MAIN: &str = "198.18.77.1";

/// A namespace standing for the host: a main address on a veth (both ends inside), a
/// default route through it, and two listeners: one on 127.0.0.1 only, one on every address.
struct Host {
    ns: Netns,
    _lo_only: Proc,
    _all: Proc,
}

const LO_ONLY: u16 = 7301;
const ALL: u16 = 7302;

impl Host {
    fn new() -> Host {
        require(&["socat"]);
        let ns = Netns::new("host");
        ns.must(&format!(
            "ip link add d0 type veth peer name d1 && ip addr add {MAIN}/24 dev d0 \
             && ip link set d1 up && ip link set d0 up \
             && ip route add default via 198.18.77.254 dev d0"
        ));
        let lo_only = ns.spawn(&format!(
            "exec socat TCP-LISTEN:{LO_ONLY},bind=127.0.0.1,fork,reuseaddr SYSTEM:\"echo loopback-only\""
        ));
        let all = ns.spawn(&format!(
            "exec socat TCP-LISTEN:{ALL},fork,reuseaddr SYSTEM:\"echo every-address\""
        ));
        for port in [LO_ONLY, ALL] {
            let up = eventually(std::time::Duration::from_secs(5), || {
                ns.sh(&format!("socat -T 1 - TCP:127.0.0.1:{port} </dev/null"))
                    .status
                    .success()
            });
            assert!(up, "the host's listener on {port} did not start");
        }
        Host {
            ns,
            _lo_only: lo_only,
            _all: all,
        }
    }
}

/// One line from GATEWAY:PORT as container `c` sees it, or None when refused.
fn fetch(c: &Netns, gw: &str, port: u16) -> Option<String> {
    let o = c.sh(&format!("socat -T 3 - TCP:{gw}:{port} </dev/null"));
    let text = o.stdout_text().trim().to_string();
    (o.status.success() && !text.is_empty()).then_some(text)
}

fn attach(d: &Daemon, net: &str, name: &str) -> Netns {
    let c = Netns::new(name);
    d.ctl_ok(&["attach", net, "--name", name, "--netns", &c.path()]);
    c
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn the_gateway_reaches_the_hosts_main_address_not_its_loopback() {
    let h = Host::new();
    let d = Daemon::start_in(&h.ns, &[]);
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.191.0.0/24"]);
    let c = attach(&d, "front", "c1");
    let b = attach(&d, "bridge", "b1");
    // Services on every address answer; loopback-only ones are a closed port.
    assert_eq!(
        fetch(&c, "10.191.0.1", ALL).as_deref(),
        Some("every-address")
    );
    assert_eq!(fetch(&c, "10.191.0.1", LO_ONLY), None);
    // The default bridge too.
    assert_eq!(
        fetch(&b, "172.17.0.1", ALL).as_deref(),
        Some("every-address")
    );
    assert_eq!(fetch(&b, "172.17.0.1", LO_ONLY), None);
    // The refusal is an RST (a closed port), not a silent drop: socat says so at once.
    let o = c.sh(&format!("socat -T 3 - TCP:10.191.0.1:{LO_ONLY} </dev/null"));
    assert!(
        o.stderr_text().contains("Connection refused"),
        "{}",
        o.stderr_text()
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn host_loopback_is_an_opt_in_per_network_and_for_the_default_bridge() {
    let h = Host::new();
    let d = Daemon::start_in(&h.ns, &["--host-loopback"]);
    d.ctl_ok(&[
        "network",
        "create",
        "lo",
        "--subnet",
        "10.192.0.0/24",
        "--host-loopback",
    ]);
    d.ctl_ok(&["network", "create", "plain", "--subnet", "10.193.0.0/24"]);
    let opted = attach(&d, "lo", "c1");
    let plain = attach(&d, "plain", "c2");
    let b = attach(&d, "bridge", "b1");
    assert_eq!(
        fetch(&opted, "10.192.0.1", LO_ONLY).as_deref(),
        Some("loopback-only")
    );
    assert_eq!(
        fetch(&b, "172.17.0.1", LO_ONLY).as_deref(),
        Some("loopback-only")
    );
    // The control: the plain network reaches the host at its main address.
    assert_eq!(
        fetch(&plain, "10.193.0.1", ALL).as_deref(),
        Some("every-address")
    );
    assert_eq!(fetch(&plain, "10.193.0.1", LO_ONLY), None);
    let inspect = d.ctl_json(&["network", "inspect", "lo"]);
    assert_eq!(
        inspect[0]["Options"]["vswitch.host_loopback"], "true",
        "{inspect}"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn nothing_answers_on_port_53_of_a_network_without_dns() {
    require(&["dig"]);
    let h = Host::new();
    // A resolver on the host's loopback, port 53, which a --no-dns network must not reach
    // even when it opted in to the host's loopback.
    let _dns = h
        .ns
        .spawn("exec socat UDP-LISTEN:53,bind=127.0.0.1,fork,reuseaddr SYSTEM:\"echo not-dns\"");
    let _tcp = h
        .ns
        .spawn("exec socat TCP-LISTEN:53,bind=127.0.0.1,fork,reuseaddr SYSTEM:\"echo not-dns\"");
    let _udp = h.ns.spawn(
        "exec socat UDP-LISTEN:7303,bind=127.0.0.1,fork,reuseaddr SYSTEM:\"echo udp-loopback\"",
    );
    let d = Daemon::start_in(&h.ns, &[]);
    d.ctl_ok(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.194.0.0/24",
        "--no-dns",
        "--host-loopback",
    ]);
    let c = attach(&d, "quiet", "c1");
    // The control: this network does reach the host's loopback on other ports, over
    // TCP and UDP.
    assert_eq!(
        fetch(&c, "10.194.0.1", LO_ONLY).as_deref(),
        Some("loopback-only")
    );
    let udp_ok = eventually(std::time::Duration::from_secs(10), || {
        c.sh("echo hi | socat -T 1 -t 1 - UDP:10.194.0.1:7303")
            .stdout_text()
            .contains("udp-loopback")
    });
    assert!(udp_ok, "UDP to the host's loopback did not answer");
    let udp = c.sh("echo hi | socat -T 2 -t 2 - UDP:10.194.0.1:53");
    assert!(
        !udp.stdout_text().contains("not-dns"),
        "gateway:53 reached the host over UDP: {}",
        udp.stdout_text()
    );
    assert_eq!(fetch(&c, "10.194.0.1", 53), None);
    let dig = c.sh("dig @10.194.0.1 +short +tries=1 +time=1 example.test");
    assert!(!dig.status.success() || dig.stdout_text().trim().is_empty());
}
