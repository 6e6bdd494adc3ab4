//! Masquerade and published ports through the socket uplink (the default): a container
//! reaches an "outside" host (its own namespace behind a veth from the host) with the
//! host's address, and published ports reach containers with the client's address.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

/// A host outside every vswitch network: namespace `ns` at 198.18.<n>.2, reached from
/// the host over a veth whose host end is 198.18.<n>.1.
struct Outside {
    ns: Netns,
    veth: String,
    host_ip: String,
    ip: String,
}

impl Outside {
    fn new(n: u8) -> Outside {
        let ns = Netns::new("out");
        let veth = unique("v");
        let host_ip = format!("198.18.{n}.1");
        let ip = format!("198.18.{n}.2");
        must(&format!(
            "ip link add {veth} type veth peer name eth0 netns {}",
            ns.name
        ));
        must(&format!(
            "ip addr add {host_ip}/24 dev {veth} && ip link set {veth} up"
        ));
        ns.must(&format!("ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via {host_ip}"));
        Outside {
            ns,
            veth,
            host_ip,
            ip,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = sh(&format!("ip link del {}", self.veth));
    }
}

/// Lets ping sockets be opened by every group for the test's life (as Podman's docs ask
/// of rootless hosts), restoring the range on drop.
struct PingRange(String);

impl PingRange {
    fn open() -> PingRange {
        let old =
            std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")
            .expect("ping_group_range");
        PingRange(old.trim().replace('\t', " "))
    }
}

impl Drop for PingRange {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::fs::write("/proc/sys/net/ipv4/ping_group_range", &self.0);
        }
    }
}

/// A TCP server in `ns` on `port` answering each connection with the peer's address.
fn tcp_whoami(ns: &Netns, port: u16) -> Proc {
    let p = ns.spawn(&format!(
        "socat TCP-LISTEN:{port},reuseaddr,fork SYSTEM:'echo $SOCAT_PEERADDR'"
    ));
    listening(ns, port);
    p
}

/// A UDP server in `ns` answering each datagram with the peer's address.
fn udp_whoami(ns: &Netns, port: u16) -> Proc {
    let p = ns.spawn(&format!(
        "socat UDP-RECVFROM:{port},reuseaddr,fork SYSTEM:'echo $SOCAT_PEERADDR'"
    ));
    listening_udp(ns, port);
    p
}

/// Runs `cmd` (on the host, or in `ns`) until it prints something, a few times.
fn retry(ns: Option<&Netns>, cmd: &str) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        let o = match ns {
            Some(n) => n.sh(cmd),
            None => sh(cmd),
        };
        if o.status.success() && !o.stdout_text().trim().is_empty() {
            return o.stdout_text();
        }
        last = format!("{}{}", o.stdout_text(), o.stderr_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("`{cmd}` kept failing: {last}");
}

struct Setup {
    d: Daemon,
    c: Netns,
    out: Outside,
}

fn setup(n: u8) -> Setup {
    require(&["socat", "ping", "curl"]);
    let out = Outside::new(n);
    let d = Daemon::start(&[]);
    d.ctl_ok(&[
        "network",
        "create",
        "front",
        "--subnet",
        &format!("10.{}.0.0/24", 170 + n),
    ]);
    let c = Netns::new("c");
    d.ctl_ok(&["attach", "front", "--name", "web", "--netns", &c.path()]);
    Setup { d, c, out }
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn tcp_and_udp_leave_with_the_hosts_address() {
    let s = setup(1);
    let _t = tcp_whoami(&s.out.ns, 7001);
    let got =
        s.c.must(&format!("socat -T 5 - TCP:{}:7001 </dev/null", s.out.ip));
    assert_eq!(
        got.trim(),
        s.out.host_ip,
        "the outside host saw another source"
    );
    let _u = udp_whoami(&s.out.ns, 7002);
    let got = s.c.must(&format!(
        "echo hi | socat -T 3 -t 3 - UDP:{}:7002",
        s.out.ip
    ));
    assert_eq!(got.trim(), s.out.host_ip);
    let flows = s.d.ctl_json(&["conntrack", "ls"]);
    assert!(
        flows.as_array().is_some_and(|a| a
            .iter()
            .any(|f| f["protocol"] == "udp" && f["outside"] == format!("{}:7002", s.out.ip))),
        "{flows}"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn ping_leaves_through_ping_sockets() {
    let _r = PingRange::open();
    let s = setup(2);
    s.c.must(&format!("ping -c 2 -W 2 {}", s.out.ip));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn gateway_stands_for_the_hosts_loopback() {
    let s = setup(3);
    // The host's loopback is reached only by a network that opted in.
    s.d.ctl_ok(&[
        "network",
        "create",
        "lo",
        "--subnet",
        "10.183.0.0/24",
        "--host-loopback",
    ]);
    let c = Netns::new("lo");
    s.d.ctl_ok(&["attach", "lo", "--name", "lo1", "--netns", &c.path()]);
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    let t = std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(b"from the host\n");
        }
    });
    let got = c.must(&format!("socat -T 5 - TCP:10.183.0.1:{port} </dev/null"));
    assert_eq!(got.trim(), "from the host");
    let _ = t.join();
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn published_ports_keep_the_clients_address() {
    let s = setup(4);
    let _t = tcp_whoami(&s.c, 80);
    let _u = udp_whoami(&s.c, 53);
    s.d.ctl_ok(&["publish", "web", "-p", "18080:80", "-p", "18053:53/udp"]);
    // From the host's loopback: the container sees its gateway.
    assert_eq!(
        retry(None, "socat -T 5 - TCP:127.0.0.1:18080 </dev/null").trim(),
        "10.174.0.1"
    );
    assert_eq!(
        retry(None, "echo hi | socat -T 3 -t 3 - UDP:127.0.0.1:18053").trim(),
        "10.174.0.1"
    );
    // From the outside host: the container sees the outside host's own address.
    let got = retry(
        Some(&s.out.ns),
        &format!("socat -T 5 - TCP:{}:18080 </dev/null", s.out.host_ip),
    );
    assert_eq!(got.trim(), s.out.ip, "the client's address was lost");
    let got = retry(
        Some(&s.out.ns),
        &format!("echo hi | socat -T 3 -t 3 - UDP:{}:18053", s.out.host_ip),
    );
    assert_eq!(got.trim(), s.out.ip);
    // Unpublishing stops listening at once.
    s.d.ctl_ok(&["unpublish", "web", "-p", "18080:80"]);
    assert!(
        !sh("socat -T 2 - TCP:127.0.0.1:18080 </dev/null")
            .status
            .success()
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn hairpin_reaches_a_published_port_through_the_hosts_address() {
    let s = setup(5);
    let other = Netns::new("o");
    s.d.ctl_ok(&["attach", "front", "--name", "api", "--netns", &other.path()]);
    let _t = tcp_whoami(&other, 80);
    s.d.ctl_ok(&["publish", "api", "-p", "18081:80"]);
    let got = s.c.must(&format!(
        "socat -T 5 - TCP:{}:18081 </dev/null",
        s.out.host_ip
    ));
    // The uplink's connect to the host's own address leaves from that address, and the
    // published port shows the container the client as it is.
    assert_eq!(
        got.trim(),
        s.out.host_ip,
        "the hairpin reached the container from another source"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn publish_refuses_taken_ports_and_picks_free_ones() {
    let s = setup(6);
    let held = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    let taken = held.local_addr().expect("addr").port().to_string();
    let e =
        s.d.ctl_err(&["publish", "web", "-p", &format!("{taken}:80")]);
    assert!(e.contains("already in use"), "{e}");
    let v = s.d.ctl_json(&["publish", "web", "-p", "80"]);
    let port = v[0]["host_port"].as_u64().expect("port");
    let ports = s.d.ctl_json(&["port", "ls"]);
    assert_eq!(ports[0]["published"][0]["host_port"].as_u64(), Some(port));
    assert_eq!(ports[0]["published"][0]["auto"], true);
    let e =
        s.d.ctl_err(&["publish", "web", "-p", &format!("{port}:81")]);
    assert!(e.contains("already published"), "{e}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn published_ports_come_back_after_kill_9() {
    let mut s = setup(7);
    let _t = tcp_whoami(&s.c, 80);
    s.d.ctl_ok(&["publish", "web", "-p", "18082:80"]);
    s.d.kill9();
    s.d.launch();
    let ok = eventually(Duration::from_secs(10), || {
        sh("socat -T 2 - TCP:127.0.0.1:18082 </dev/null")
            .stdout_text()
            .trim()
            == "10.177.0.1"
    });
    assert!(ok, "published port not back: {}", s.d.log());
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn internal_networks_reach_nothing_outside() {
    let s = setup(8);
    s.d.ctl_ok(&[
        "network",
        "create",
        "iso",
        "--subnet",
        "10.190.0.0/24",
        "--internal",
    ]);
    let i = Netns::new("i");
    s.d.ctl_ok(&["attach", "iso", "--name", "inner", "--netns", &i.path()]);
    let _t = tcp_whoami(&s.out.ns, 7009);
    // The control: a container of a masquerading network reaches the same server.
    let got =
        s.c.must(&format!("socat -T 5 - TCP:{}:7009 </dev/null", s.out.ip));
    assert_eq!(got.trim(), s.out.host_ip);
    let o = i.sh(&format!("socat -T 3 - TCP:{}:7009 </dev/null", s.out.ip));
    assert!(
        !o.status.success() || o.stdout_text().trim().is_empty(),
        "an internal network reached outside"
    );
}

#[test]
fn run_publishes_ports_for_as_long_as_its_command_runs() {
    require(&["socat"]);
    let d = Daemon::start(&[]);
    // The container serves one connection, then its command (and the run) ends.
    let run = Proc::spawn(&format!(
        "exec {} run --socket {} --network bridge --name pubrun -p 127.0.0.1:18090:80 \
         -- socat TCP-LISTEN:80,reuseaddr 'SYSTEM:echo $SOCAT_PEERADDR'",
        bin(),
        d.socket().display()
    ));
    let published = || {
        d.ctl_json(&["port", "ls"]).as_array().is_some_and(|a| {
            a.iter().any(|p| {
                p["name"] == "pubrun" && p["published"][0]["host_port"].as_u64() == Some(18090)
            })
        })
    };
    assert!(
        eventually(Duration::from_secs(10), published),
        "run -p did not publish: {}",
        d.log()
    );
    // From the host's loopback: the container sees its gateway.
    let got = retry(None, "socat -T 5 - TCP:127.0.0.1:18090 </dev/null");
    assert_eq!(got.trim(), "172.17.0.1");
    let out = run.wait(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_text());
    // The command ended: its port and its published port are gone.
    assert!(eventually(Duration::from_secs(5), || !d
        .ctl_ok(&["port", "ls"])
        .contains("pubrun")));
    assert!(
        !sh("socat -T 2 - TCP:127.0.0.1:18090 </dev/null")
            .status
            .success()
    );
}
