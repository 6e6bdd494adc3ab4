//! Rootless: the daemon and `vswitch run` containers as an unprivileged user (`nobody`),
//! with `/dev/net/tun` opened to everyone as distributions ship it.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const NOBODY: u32 = 65534;

/// Makes /dev/net/tun usable by every user for the test's life (mode 0666, as on most
/// distributions), restoring the mode on drop.
struct TunOpen(u32);

impl TunOpen {
    fn new() -> TunOpen {
        require_root();
        let meta =
            std::fs::metadata("/dev/net/tun").expect("/dev/net/tun must exist for TAP devices");
        let old = meta.permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666))
            .expect("chmod /dev/net/tun");
        TunOpen(old)
    }
}

impl Drop for TunOpen {
    fn drop(&mut self) {
        // Other tests may rely on the open mode too; keep the most open of the two.
        let keep = self.0 | 0o666;
        let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(keep));
    }
}

fn as_nobody(cmd: &str) -> String {
    format!("exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups --inh-caps=-all {cmd}")
}

/// A daemon running as `nobody`, with its socket, state and log in a directory of its
/// own; killed on drop.
struct NobodyDaemon {
    daemon: Proc,
    sock: std::path::PathBuf,
    log: std::path::PathBuf,
    _t: TempDir,
    _tun: TunOpen,
}

impl NobodyDaemon {
    fn start() -> NobodyDaemon {
        let tun = TunOpen::new();
        let t = TempDir::new("rl");
        must(&format!(
            "chown -R {NOBODY}:{NOBODY} {}",
            t.path().display()
        ));
        must(&format!("chmod 0755 {}", t.path().display()));
        let sock = t.path().join("ctl.sock");
        let state = t.path().join("state");
        let log = t.path().join("daemon.log");
        let daemon = Proc::spawn(&as_nobody(&format!(
            "{} daemon --socket {} --state-dir {} {} 2>{}",
            bin(),
            sock.display(),
            state.display(),
            env_daemon_args().join(" "),
            log.display()
        )));
        let d = NobodyDaemon {
            daemon,
            sock,
            log,
            _t: t,
            _tun: tun,
        };
        assert!(
            eventually(Duration::from_secs(10), || {
                std::os::unix::net::UnixStream::connect(&d.sock).is_ok()
            }),
            "the daemon did not start as nobody: {}",
            d.log()
        );
        d
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// `vswitch ctl ARGS` as nobody.
    fn ctl(&self, args: &str) -> std::process::Output {
        sh(&as_nobody(&format!(
            "{} ctl --socket {} {args}",
            bin(),
            self.sock.display()
        )))
    }
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn heavy_unprivileged_daemon_and_two_run_containers() {
    require(&["setpriv", "iperf3", "ping"]);
    let nd = NobodyDaemon::start();
    let (sock, daemon) = (&nd.sock, &nd.daemon);
    // The daemon really runs without privileges.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap_or_default();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_string();
    let ctl = |args: &str| nd.ctl(args);
    let o = ctl("network create front --subnet 10.140.0.0/24");
    assert!(o.status.success(), "{}", o.stderr_text());

    let server = Proc::spawn(&as_nobody(&format!(
        "{} run --socket {} --network front --name srv -- iperf3 -s -1",
        bin(),
        sock.display()
    )));
    assert!(
        eventually(Duration::from_secs(10), || ctl("port ls")
            .stdout_text()
            .contains("srv")),
        "the server container did not attach: {}",
        nd.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let client = sh(&as_nobody(&format!(
        "{} run --socket {} --network front --name cli -- sh -c 'ping -c 2 -W 2 10.140.0.2 && iperf3 -c 10.140.0.2 -t 2'",
        bin(),
        sock.display()
    )));
    assert!(
        client.status.success(),
        "client container failed: {}{}\ndaemon: {}",
        client.stdout_text(),
        client.stderr_text(),
        nd.log()
    );
    assert!(
        client.stdout_text().contains("receiver"),
        "{}",
        client.stdout_text()
    );
    let s = server.wait(Duration::from_secs(10));
    assert!(s.status.success(), "server container: {}", s.stderr_text());
    // Both containers are gone with their commands.
    assert!(eventually(Duration::from_secs(5), || ctl("--json port ls")
        .stdout_text()
        .trim()
        == "[]"));
    assert!(
        uid_line.contains(&NOBODY.to_string()),
        "daemon not running as nobody: {uid_line}"
    );
}

#[test]
fn run_exit_status_is_the_commands() {
    let d = Daemon::start(&[]);
    let sock = d.socket();
    for (cmd, code) in [("true", 0), ("false", 1), ("sh -c 'exit 7'", 7)] {
        let o = sh(&format!(
            "{} run --socket {} --network bridge --name st -- {cmd}",
            bin(),
            sock.display()
        ));
        assert_eq!(o.status.code(), Some(code), "{cmd}: {}", o.stderr_text());
    }
    let o = vswitch(&[
        "run",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "--network",
        "bridge",
        "--name",
        "st",
        "--",
        "/nonexistent/cmd",
    ]);
    assert!(!o.status.success());
    assert!(
        o.stderr_text().contains("/nonexistent/cmd"),
        "{}",
        o.stderr_text()
    );
}

#[test]
fn run_network_none_has_loopback_only() {
    let o = vswitch(&[
        "run",
        "--network",
        "none",
        "--name",
        "n",
        "--",
        "ip",
        "-o",
        "link",
    ]);
    assert!(o.status.success(), "{}", o.stderr_text());
    let text = o.stdout_text();
    assert!(text.contains("lo:"), "{text}");
    assert_eq!(text.lines().count(), 1, "more than loopback: {text}");
    assert!(text.contains("UP"), "lo is down: {text}");
}

#[test]
fn run_network_host_sees_the_host() {
    let o = vswitch(&[
        "run",
        "--network",
        "host",
        "--name",
        "h",
        "--",
        "sh",
        "-c",
        "readlink /proc/self/ns/net",
    ]);
    assert!(o.status.success(), "{}", o.stderr_text());
    let mine = std::fs::read_link("/proc/self/ns/net").expect("ns");
    assert_eq!(o.stdout_text().trim(), mine.display().to_string());
}

#[test]
fn run_container_joins_another_containers_namespace() {
    let d = Daemon::start(&[]);
    let sock = d.socket();
    let _a = Proc::spawn(&format!(
        "{} run --socket {} --network bridge --name first -- sleep 30",
        bin(),
        sock.display()
    ));
    assert!(eventually(Duration::from_secs(10), || d
        .ctl_ok(&["port", "ls"])
        .contains("first")));
    let o = vswitch(&[
        "run",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "--network",
        "container:first",
        "--name",
        "second",
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(o.status.success(), "{}", o.stderr_text());
    assert!(
        o.stdout_text().contains("172.17.0.2"),
        "{}",
        o.stdout_text()
    );
}

#[test]
fn run_container_reattaches_after_daemon_restart() {
    let mut d = Daemon::start(&[]);
    let sock = d.socket();
    let _a = Proc::spawn(&format!(
        "{} run --socket {} --network bridge --name lives -- sleep 60",
        bin(),
        sock.display()
    ));
    assert!(eventually(Duration::from_secs(10), || d
        .ctl_ok(&["port", "ls"])
        .contains("lives")));
    d.kill9();
    d.launch();
    assert!(
        eventually(Duration::from_secs(10), || d
            .ctl_json(&["port", "ls"])
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == "lives"))),
        "the run container did not come back: {}",
        d.log()
    );
}

/// The daemon's `nat` counters.
fn nat(nd: &NobodyDaemon) -> serde_json::Value {
    let st = nd.ctl("--json stats").stdout_text();
    let v: serde_json::Value = serde_json::from_str(&st).expect("stats json");
    v["nat"].clone()
}

/// Packets the port of container `name` sent and received so far.
fn port_packets(nd: &NobodyDaemon, name: &str) -> u64 {
    let st = nd.ctl("--json stats").stdout_text();
    let v: serde_json::Value = serde_json::from_str(&st).expect("stats json");
    let p = v["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no port {name}: {st}"));
    p["rx_packets"].as_u64().unwrap_or(0) + p["tx_packets"].as_u64().unwrap_or(0)
}

/// What a loopback client of `port` reads (once something answers there).
fn answer(nd: &NobodyDaemon, port: u16) -> String {
    let mut got = String::new();
    let answered = eventually(Duration::from_secs(15), || {
        got = sh(&format!(
            "socat -T 5 -t 5 - TCP:127.0.0.1:{port} </dev/null"
        ))
        .stdout_text();
        !got.trim().is_empty()
    });
    assert!(answered, "nothing answered on {port}: {}", nd.log());
    got.trim().to_string()
}

/// `vswitch run` of a container answering each client with the source it sees.
fn echo_source(nd: &NobodyDaemon, name: &str, publish: &str) -> String {
    format!(
        "{} run --socket {} --network pub --name {name} -p {publish} -- \
         socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:\"echo \\$SOCAT_PEERADDR\"",
        bin(),
        nd.sock.display()
    )
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_rootless_daemon_splices_published_ports_byte_exact() {
    require(&["setpriv", "socat", "sha256sum", "head"]);
    let nd = NobodyDaemon::start();
    let o = nd.ctl("network create pub --subnet 10.141.0.0/24");
    assert!(o.status.success(), "{}", o.stderr_text());
    let dir = TempDir::new("rlx-data");
    let file = dir.path().join("data").display().to_string();
    must(&format!(
        "chmod 0755 {0} && head -c 16M /dev/urandom > {1} && chmod 0644 {1}",
        dir.path().display(),
        file
    ));
    let sum = sha256(&must(&format!("sha256sum < {file}")));
    // The daemon's helper joins the container's user and network namespaces (both
    // made by `vswitch run` as the daemon's user) and hands the daemon its sockets.
    let _run = Proc::spawn(&as_nobody(&format!(
        "{} run --socket {} --network pub --name rlx-web -p 127.0.0.1:18097:80 -p 127.0.0.1:18098:81 -- \
         sh -c 'socat -u FILE:{file} TCP-LISTEN:81,reuseaddr,fork & \
         exec socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:\"echo \\$SOCAT_PEERADDR\"'",
        bin(),
        nd.sock.display()
    )));
    // Same source as the root path and the frame path: the network's gateway.
    assert_eq!(answer(&nd, 18097), "10.141.0.1");
    let before = port_packets(&nd, "rlx-web");
    let got = must("timeout 60 sh -c 'socat -u TCP:127.0.0.1:18098 - | sha256sum'");
    assert_eq!(sha256(&got), sum, "spliced bytes differ: {}", nd.log());
    let n = nat(&nd);
    assert!(
        n["tcp_spliced"].as_u64().unwrap_or(0) >= 2,
        "{n}\n{}",
        nd.log()
    );
    assert_eq!(n["splice_fallbacks"], 0, "{n}\n{}", nd.log());
    // 16 MiB crossed without frames: only the odd ARP or neighbour probe.
    let frames = port_packets(&nd, "rlx-web") - before;
    assert!(frames < 100, "{frames} frames crossed the port");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_rootless_daemon_takes_frames_where_it_may_not_join_the_user_namespace() {
    require(&["setpriv", "socat", "unshare"]);
    let nd = NobodyDaemon::start();
    let o = nd.ctl("network create pub --subnet 10.141.0.0/24");
    assert!(o.status.success(), "{}", o.stderr_text());
    // Positive control: a container of the daemon's user is spliced.
    let _own = Proc::spawn(&as_nobody(&echo_source(
        &nd,
        "rlx-own",
        "127.0.0.1:18099:80",
    )));
    assert_eq!(answer(&nd, 18099), "10.141.0.1");
    let n = nat(&nd);
    assert_eq!(n["tcp_spliced"], 1, "{n}\n{}", nd.log());
    assert_eq!(n["splice_fallbacks"], 0, "{n}\n{}", nd.log());
    // The same user's container, but with its user namespace inside one that root
    // owns: the helper may not join it, so its loopback clients take frames.
    let run = echo_source(&nd, "rlx-nest", "127.0.0.1:18100:80");
    let inner = as_nobody(&run).replace('\'', r"'\''");
    let _nest = Proc::spawn(&format!(
        "unshare --user sh -c 'until grep -q . /proc/self/uid_map; do sleep 0.05; done; {inner}' & p=$!; \
         until [ \"$(readlink /proc/$p/ns/user)\" != \"$(readlink /proc/self/ns/user)\" ]; do sleep 0.05; done; \
         echo '0 0 65536' > /proc/$p/uid_map && echo '0 0 65536' > /proc/$p/gid_map; wait $p"
    ));
    assert_eq!(answer(&nd, 18100), "10.141.0.1");
    let n = nat(&nd);
    assert_eq!(n["tcp_spliced"], 1, "{n}\n{}", nd.log());
    assert!(
        n["splice_fallbacks"].as_u64().unwrap_or(0) >= 1,
        "{n}\n{}",
        nd.log()
    );
    // The kernel refuses the daemon's user both ways: opening the namespace of a
    // process whose user namespace it does not own (recent kernels), or the helper's
    // joining it.
    let log = nd.log();
    assert!(
        log.contains("rlx-nest take frames: cannot open")
            || log.contains("cannot join its user namespace"),
        "{log}"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn an_unprivileged_run_container_gets_its_ipv6_address_and_gateway() {
    require(&["setpriv", "ping"]);
    let nd = NobodyDaemon::start();
    let o = nd.ctl("network create six --ipv6 --ipv4=false --subnet fd00:166::/64");
    assert!(o.status.success(), "{}", o.stderr_text());
    // Configured inside its own user namespace: address, route, no DAD, ping at once.
    let c = sh(&as_nobody(&format!(
        "{} run --socket {} --network six --name r -- sh -c 'cat /etc/resolv.conf; ip -6 route show default; ping -6 -c 1 -W 2 fd00:166::1'",
        bin(),
        nd.sock.display()
    )));
    let out = c.stdout_text();
    assert!(
        c.status.success(),
        "{out}{}\ndaemon: {}",
        c.stderr_text(),
        nd.log()
    );
    assert!(out.contains("nameserver fd00:166::1\n"), "{out}");
    assert!(!out.contains("nameserver 1"), "an IPv4 nameserver: {out}");
    assert!(out.contains("default via fd00:166::1"), "{out}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_rootless_daemon_splices_ipv6_loopback_clients_too() {
    require(&["setpriv", "socat", "pgrep", "nsenter", "ss"]);
    let nd = NobodyDaemon::start();
    let o = nd.ctl("network create pub6 --subnet 10.142.0.0/24 --ipv6 --subnet fd00:142::/64");
    assert!(o.status.success(), "{}", o.stderr_text());
    let _run = Proc::spawn(&as_nobody(&format!(
        "{} run --socket {} --network pub6 --name rlx-six -p \\[::1\\]:18101:8061 -- \
         socat TCP6-LISTEN:8061,reuseaddr,fork SYSTEM:\"echo \\$SOCAT_PEERADDR\"",
        bin(),
        nd.sock.display()
    )));
    // The container set up and listening before the first client: a client that
    // comes earlier finds no listener (refused, passed on) or, before the namespace's
    // set-up, no answer (the port then falls back to frames).
    let ready = eventually(Duration::from_secs(15), || {
        sh("for p in $(pgrep -f 'TCP6-LISTEN:8061,reuseaddr'); do \
            nsenter -t $p -n ss -Hltn 'sport = :8061'; done")
        .stdout_text()
        .contains(":8061")
    });
    assert!(ready, "the container never listened: {}", nd.log());
    let mut got = String::new();
    let answered = eventually(Duration::from_secs(15), || {
        got = sh("socat -T 5 -t 5 - TCP6:[::1]:18101 </dev/null").stdout_text();
        !got.trim().is_empty()
    });
    assert!(answered, "nothing answered on [::1]:18101: {}", nd.log());
    // The helper's maker made the IPv6 socket: the container sees its IPv6 gateway.
    let seen: std::net::IpAddr = got
        .trim()
        .trim_matches(['[', ']'])
        .parse()
        .expect("an address");
    assert_eq!(seen, "fd00:142::1".parse::<std::net::IpAddr>().unwrap());
    let n = nat(&nd);
    assert!(
        n["tcp_spliced"].as_u64().unwrap_or(0) >= 1 && n["splice_fallbacks"] == 0,
        "{n}\n{}",
        nd.log()
    );
}
