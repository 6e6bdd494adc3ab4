//! IPv6 through the socket uplink, with real kernel stacks in namespaces. The daemon
//! runs inside a namespace of the test's own standing for the host; a veth pair leads
//! from it to an "outside" namespace holding the servers (2001:db8:5::2 and
//! 198.18.5.2), so no traffic reaches the machine's real addresses. The host has no
//! IPv6 default route: anything past the outside prefix is unreachable from it, and
//! containers are told so.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

const OUT6: &str = "2001:db8:5::2";
const HOST6: &str = "2001:db8:5::1";
const OUT4: &str = "198.18.5.2";
const HOST4: &str = "198.18.5.1";

/// The host namespace (the daemon's), the outside one, and a daemon with a dual-stack
/// network `net` and an IPv4-only one `v4`.
struct Rig {
    host: Netns,
    out: Netns,
    d: Daemon,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(&[])
    }

    fn with(daemon_args: &[&str]) -> Rig {
        require(&["socat", "curl", "ping", "python3"]);
        let host = Netns::new("s6h");
        let out = Netns::new("s6o");
        host.must(&format!(
            "ip link add s6a type veth peer name s6b netns {} \
             && ip addr add {HOST6}/64 dev s6a nodad && ip addr add {HOST4}/24 dev s6a \
             && ip link set s6a up \
             && sysctl -qw net.ipv4.ping_group_range=\"0 2147483647\"",
            out.name
        ));
        out.must(&format!(
            "ip addr add {OUT6}/64 dev s6b nodad && ip addr add {OUT4}/24 dev s6b \
             && ip link set s6b up"
        ));
        let d = Daemon::start_in(&host, daemon_args);
        d.ctl_ok(&[
            "network",
            "create",
            "net",
            "--subnet",
            "10.170.0.0/24",
            "--ipv6",
            "--subnet",
            "fd00:170::/64",
        ]);
        d.ctl_ok(&["network", "create", "v4", "--subnet", "10.171.0.0/24"]);
        Rig { host, out, d }
    }

    fn attach(&self, net: &str, name: &str) -> Netns {
        let c = Netns::new(name);
        let p = c.path();
        self.d
            .ctl_ok(&["attach", net, "--name", name, "--netns", &p]);
        c
    }
}

/// A file of `n` pseudo-random bytes served over HTTP on every address of `ns` (port
/// 8080); its sha256.
fn serve(ns: &Netns, dir: &TempDir, n: usize) -> (Proc, String) {
    let f = dir.path().join("blob");
    must(&format!("head -c {n} /dev/urandom > {}", f.display()));
    let sum = sha256(&must(&format!("sha256sum {}", f.display())));
    let p = ns.spawn(&format!(
        "exec python3 -m http.server 8080 --bind :: --directory {}",
        dir.path().display()
    ));
    listening(ns, 8080);
    (p, sum)
}

/// A server on every address of `ns` (both families) that answers each client with
/// the address it sees it come from: over TCP as an HTTP response, over UDP as
/// "pong-ADDRESS".
const PEER_PY: &str = r#"
import socket, sys, threading
def addr(a):
    return a[0][7:] if a[0].startswith("::ffff:") else a[0]
def tcp(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(16)
    while True:
        c, a = s.accept()
        try:
            c.recv(4096)
            c.sendall(("HTTP/1.0 200 OK\r\n\r\n" + addr(a)).encode())
        finally:
            c.close()
def udp(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(("pong-" + addr(a) + "\n").encode(), a)
threading.Thread(target=udp, args=(int(sys.argv[1]),), daemon=True).start()
tcp(int(sys.argv[1]))
"#;

/// Starts [`PEER_PY`] on `port` (TCP and UDP) in `ns`.
fn peer_server(ns: &Netns, dir: &TempDir, port: u16) -> Proc {
    let f = dir.path().join("peer.py");
    std::fs::write(&f, PEER_PY).unwrap();
    let p = ns.spawn(&format!("exec python3 {} {port}", f.display()));
    listening(ns, port);
    p
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn tcp_udp_and_ping_over_ipv6_leave_through_the_hosts_ipv6_sockets() {
    let r = Rig::new();
    let c = r.attach("net", "s6c");
    // TCP: a download and an upload over IPv6, the bytes checked.
    let dir = TempDir::new("s6www");
    let (_http, sum) = serve(&r.out, &dir, 3_000_000);
    let got = c.must(&format!(
        "curl -6 -sS --max-time 20 http://[{OUT6}]:8080/blob | sha256sum"
    ));
    assert_eq!(sha256(&got), sum, "the download over IPv6 differs");
    let up = dir.path().join("up");
    let _sink = r.out.spawn(&format!(
        "exec socat -u TCP6-LISTEN:8081,reuseaddr CREATE:{}",
        up.display()
    ));
    listening(&r.out, 8081);
    let blob = dir.path().join("blob");
    c.must(&format!(
        "socat -u FILE:{} TCP6:[{OUT6}]:8081",
        blob.display()
    ));
    let uploaded = eventually(Duration::from_secs(10), || {
        sha256(&must(&format!("sha256sum {}", up.display()))) == sum
    });
    assert!(uploaded, "the upload over IPv6 differs");
    // UDP over IPv6: the server sees the host's IPv6 address (masqueraded).
    let _peer = peer_server(&r.out, &dir, 9000);
    let pong = c.must(&format!("echo ping | socat -T 3 - UDP6:[{OUT6}]:9000"));
    assert_eq!(pong.trim(), format!("pong-{HOST6}"), "the UDP reply");
    let seen = c.must(&format!("curl -6 -sS --max-time 10 http://[{OUT6}]:9000/"));
    assert_eq!(seen.trim(), HOST6, "the TCP peer");
    // ICMPv6 echo through a ping socket.
    c.must(&format!("ping -6 -c 2 -W 3 {OUT6}"));
    let flows = r.d.ctl_ok(&["conntrack", "ls"]);
    assert!(flows.contains(OUT6), "{flows}");
    // IPv4 still leaves as it did: the control.
    let got = c.must(&format!(
        "curl -4 -sS --max-time 20 http://{OUT4}:8080/blob | sha256sum"
    ));
    assert_eq!(sha256(&got), sum);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn where_the_host_has_no_ipv6_route_the_container_hears_unreachable() {
    let r = Rig::new();
    let c = r.attach("net", "s6u");
    // TCP: the connect fails at once with the router's answer (no hang, no RST).
    let o = c.sh(
        "python3 -c \"import socket; s = socket.socket(socket.AF_INET6); s.settimeout(10); \
         s.connect((\\\"2001:db8:99::1\\\", 80))\"",
    );
    let text = o.stderr_text();
    assert!(text.contains("Network is unreachable"), "connect: {text}");
    // ICMPv6 echo: "destination unreachable".
    let o = c.sh("ping -6 -c 1 -W 3 2001:db8:99::1");
    let text = o.stdout_text() + &o.stderr_text();
    assert!(text.contains("nreachable"), "ping: {text}");
    // UDP: the socket sees the error on its next receive.
    let o = c.sh("echo x | socat -T 2 - UDP6:[2001:db8:99::1]:9");
    assert!(!o.status.success() || o.stdout_text().is_empty());
    // The reachable prefix works from the same container: the positive control.
    c.must(&format!("ping -6 -c 1 -W 3 {OUT6}"));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn the_gateways_ipv6_address_stands_for_the_host() {
    let r = Rig::new();
    let c = r.attach("net", "s6g");
    let _srv = r
        .host
        .spawn("exec socat TCP-LISTEN:7401,fork,reuseaddr SYSTEM:\"echo the-host\"");
    listening(&r.host, 7401);
    // GATEWAY6:PORT reaches the host's main address, as GATEWAY:PORT does.
    let v4 = c.must("socat -T 3 - TCP:10.170.0.1:7401 </dev/null");
    assert_eq!(v4.trim(), "the-host");
    let v6 = c.must("socat -T 3 - TCP6:[fd00:170::1]:7401 </dev/null");
    assert_eq!(v6.trim(), "the-host");
}

/// The address the container's server saw a client come from (`url`: curl's
/// arguments).
fn peer_seen(client: &Netns, url: &str) -> String {
    client.must(&format!("curl -sS --max-time 10 {url}"))
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_published_port_listens_on_both_families_and_keeps_ipv6_clients_addresses() {
    let mut r = Rig::new();
    let c = r.attach("net", "s6p");
    let c4 = r.attach("v4", "s6q");
    // Each container answers HTTP with the client address it sees.
    let dir = TempDir::new("s6pub");
    let _s = peer_server(&c, &dir, 80);
    let _s4 = peer_server(&c4, &dir, 80);
    r.d.ctl_ok(&["publish", "s6p", "-p", "8080:80"]);
    r.d.ctl_ok(&["publish", "s6q", "-p", "8090:80"]);
    r.d.ctl_ok(&["publish", "s6p", "-p", "[::1]:8070:80"]);
    // From the host (the daemon's namespace): curl -6 on its loopback and its address.
    let seen = peer_seen(&r.host, "-6 http://[::1]:8080/");
    assert_eq!(
        seen.trim(),
        "fd00:170::1",
        "a loopback client appears as the gateway"
    );
    let seen = peer_seen(&r.host, "-4 http://127.0.0.1:8080/");
    assert_eq!(seen.trim(), "10.170.0.1");
    // From outside, over IPv6: the client's own address reaches a dual-stack container.
    let seen = peer_seen(&r.out, &format!("-6 http://[{HOST6}]:8080/"));
    assert_eq!(seen.trim(), OUT6, "the client's address is kept");
    let seen = peer_seen(&r.out, &format!("-4 http://{HOST4}:8080/"));
    assert_eq!(seen.trim(), OUT4);
    // An IPv4-only container is reached by IPv6 clients over IPv4 (as Docker's proxy).
    let seen = peer_seen(&r.out, &format!("-6 http://[{HOST6}]:8090/"));
    assert_eq!(seen.trim(), "10.171.0.1");
    let seen = peer_seen(&r.host, "-4 http://127.0.0.1:8090/");
    assert_eq!(seen.trim(), "10.171.0.1");
    let seen = peer_seen(&r.host, "-6 http://[::1]:8090/");
    assert_eq!(seen.trim(), "10.171.0.1", "::1 after a spliced 127.0.0.1");
    let seen = peer_seen(&r.out, &format!("-6 http://[{HOST6}]:8090/"));
    assert_eq!(
        seen.trim(),
        "10.171.0.1",
        "outside IPv6 after a spliced 127.0.0.1"
    );
    // [::1]:8070 listens on the host's IPv6 loopback only.
    let seen = peer_seen(&r.host, "-6 http://[::1]:8070/");
    assert_eq!(seen.trim(), "fd00:170::1");
    let o = r.host.sh("curl -4 -sS --max-time 3 http://127.0.0.1:8070/");
    assert!(!o.status.success(), "8070 listens on IPv4 too");
    let ls = r.d.ctl_ok(&["port", "show", "s6p"]);
    assert!(ls.contains("80/tcp -> [::1]:8070"), "{ls}");
    // Unpublished, both sockets of the default go.
    r.d.ctl_ok(&["unpublish", "s6p", "-p", "8080:80"]);
    for url in ["-6 http://[::1]:8080/", "-4 http://127.0.0.1:8080/"] {
        let o = r.host.sh(&format!("curl -sS --max-time 3 {url}"));
        assert!(!o.status.success(), "{url} still answers");
    }
    assert_eq!(
        peer_seen(&r.host, "-6 http://[::1]:8070/").trim(),
        "fd00:170::1"
    );
    // A restarted daemon listens on both families again.
    r.d.ctl_ok(&["publish", "s6p", "-p", "8080:80"]);
    r.d.kill9();
    r.d.launch();
    for url in ["-6 http://[::1]:8080/", "-4 http://127.0.0.1:8080/"] {
        let back = eventually(Duration::from_secs(10), || {
            r.host
                .sh(&format!("curl -sS --max-time 3 {url}"))
                .status
                .success()
        });
        assert!(back, "{url} after a restart: {}", r.d.log());
    }
    let seen = peer_seen(&r.out, &format!("-6 http://[{HOST6}]:8080/"));
    assert_eq!(seen.trim(), OUT6);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_dual_stack_containers_two_families_share_one_quota() {
    let r = Rig::with(&["--uplink-max-ping-per-container", "1"]);
    let c = r.attach("net", "s6t");
    // Its IPv4 echo flow takes the one it may hold (the positive control)...
    c.must(&format!("ping -4 -c 1 -W 3 {OUT4}"));
    // ...so its IPv6 one is refused while that lasts, and counted on its port.
    let o = c.sh(&format!("ping -6 -c 1 -W 3 {OUT6}"));
    assert!(!o.status.success(), "{}", o.stdout_text());
    let s = r.d.ctl_json(&["stats"]);
    let ports = s["ports"].as_array().cloned().unwrap_or_default();
    let p = ports.iter().find(|p| p["name"] == "s6t").expect("port");
    assert!(p["drops"]["ping_quota"].as_u64().unwrap_or(0) >= 1, "{p}");
}

/// Sends one UDP datagram ("ping") from the container's address to a server with
/// scapy, built as `mode` says: `plain`, `dstopt` (behind a destination-options
/// header), or `fragment` (2000 bytes in two fragments); prints the answer the
/// container's socket on the source port gets, or "silence".
const UDP_EXT_PY: &str = r#"
import socket, sys
from scapy.all import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, UDP, Raw, send, fragment6
src, dst, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(3)
udp = UDP(sport=s.getsockname()[1], dport=port)
if mode == "plain":
    pkts = [IPv6(src=src, dst=dst) / udp / Raw(b"ping")]
elif mode == "dstopt":
    pkts = [IPv6(src=src, dst=dst) / IPv6ExtHdrDestOpt() / udp / Raw(b"ping")]
else:
    whole = IPv6(src=src, dst=dst) / IPv6ExtHdrFragment(id=7) / udp / Raw(b"p" * 2000)
    pkts = fragment6(whole, 1280)
for p in pkts:
    send(p, verbose=False)
try:
    print(s.recv(2048).decode().strip())
except socket.timeout:
    print("silence")
"#;

/// Downloads /blob from `OUT6`:8080 over a TCP socket whose every packet carries a
/// destination-options header (`IPV6_DSTOPTS`); prints the body's sha256.
const TCP_EXT_PY: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, 59, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
s.settimeout(10)
s.connect((sys.argv[1], 8080))
s.sendall(b"GET /blob HTTP/1.0\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
print(hashlib.sha256(data.split(b"\r\n\r\n", 1)[1]).hexdigest())
"#;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn extension_headers_are_stepped_over_and_fragments_dropped_and_counted() {
    let r = Rig::new();
    let c = r.attach("net", "s6x");
    let dir = TempDir::new("s6ext");
    let _peer = peer_server(&r.out, &dir, 9000);
    let py = dir.path().join("udp_ext.py");
    std::fs::write(&py, UDP_EXT_PY).unwrap();
    let ports = r.d.ctl_json(&["port", "ls"]);
    let me = (ports.as_array().unwrap().iter())
        .find(|p| p["name"] == "s6x")
        .and_then(|p| p["ip6"].as_str())
        .expect("an IPv6 address")
        .to_string();
    let send = |mode: &str| {
        c.must(&format!(
            "/usr/bin/python3 {} {me} {OUT6} 9000 {mode}",
            py.display()
        ))
    };
    let pong = format!("pong-{HOST6}");
    // The same datagram, plain (the control) and behind destination options.
    assert_eq!(send("plain").trim(), pong);
    assert_eq!(send("dstopt").trim(), pong, "behind destination options");
    // TCP whose every segment carries destination options: the bytes arrive whole.
    let (_http, sum) = serve(&r.out, &dir, 1_000_000);
    let tcp = dir.path().join("tcp_ext.py");
    std::fs::write(&tcp, TCP_EXT_PY).unwrap();
    let got = c.must(&format!("/usr/bin/python3 {} {OUT6}", tcp.display()));
    assert_eq!(got.trim(), sum, "TCP behind destination options");
    // Fragments are not reassembled: dropped, and counted as such.
    let before = r.d.ctl_json(&["stats"])["nat"]["fragments"].as_u64();
    assert_eq!(before, Some(0));
    assert_eq!(send("fragment").trim(), "silence");
    let after = r.d.ctl_json(&["stats"])["nat"]["fragments"].as_u64();
    assert_eq!(after, Some(2), "both fragments counted");
    // The path is alive after them.
    assert_eq!(send("dstopt").trim(), pong);
}

/// Sends a TCP SYN to `dst`:`port` (either family) with scapy; prints what came back:
/// "rst", "unreachable" (ICMP or ICMPv6 destination unreachable), "synack" or
/// "silence".
const SYN_PY: &str = r#"
import sys
from scapy.all import IP, IPv6, TCP, ICMP, ICMPv6DestUnreach, sr1
dst, port = sys.argv[1], int(sys.argv[2])
ip = IPv6(dst=dst) if ":" in dst else IP(dst=dst)
a = sr1(ip / TCP(sport=40001, dport=port, flags="S"), timeout=3, verbose=False)
if a is None:
    print("silence")
elif a.haslayer(ICMPv6DestUnreach) or (a.haslayer(ICMP) and a[ICMP].type == 3):
    print("unreachable")
elif "R" in str(a[TCP].flags):
    print("rst")
else:
    print("synack")
"#;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn the_gateways_ipv6_ports_are_refused_as_its_ipv4_ones_where_they_lead_nowhere() {
    let r = Rig::new();
    let dir = TempDir::new("s6gw");
    let syn = dir.path().join("syn.py");
    std::fs::write(&syn, SYN_PY).unwrap();
    let _srv = r
        .host
        .spawn("exec socat TCP-LISTEN:7401,fork,reuseaddr SYSTEM:\"echo the-host\"");
    listening(&r.host, 7401);
    // A network that may not leave: GATEWAY:PORT leads nowhere, and TCP is refused
    // with an RST in both families.
    r.d.ctl_ok(&[
        "network",
        "create",
        "shut",
        "--subnet",
        "10.172.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:172::/64",
        "--no-masquerade",
    ]);
    let s = r.attach("shut", "s6n");
    for gw in ["10.172.0.1", "fd00:172::1"] {
        let got = s.must(&format!("/usr/bin/python3 {} {gw} 7401", syn.display()));
        assert_eq!(got.trim(), "rst", "a SYN to {gw}:7401");
    }
    // The host's listener is alive, reached through the gateway of a network that
    // leaves (the positive control)...
    let c = r.attach("net", "s6k");
    let v6 = c.must("socat -T 3 - TCP6:[fd00:170::1]:7401 </dev/null");
    assert_eq!(v6.trim(), "the-host");
    // ...until a packet uplink routes that network: its gateway no longer stands for
    // the host, and both families are refused alike.
    let p = r.out.path();
    r.d.ctl_ok(&[
        "uplink",
        "set",
        "--netns",
        &p,
        "--address",
        "198.18.7.2/24",
        "--address6",
        "2001:db8:7::2/64",
    ]);
    for gw in ["10.170.0.1", "fd00:170::1"] {
        let got = c.must(&format!("/usr/bin/python3 {} {gw} 7401", syn.display()));
        assert_eq!(got.trim(), "rst", "a SYN to {gw}:7401 with a packet uplink");
    }
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_packet_out_of_hops_hears_time_exceeded_in_both_families() {
    let r = Rig::new();
    let c = r.attach("net", "s6h");
    // One hop more: through (the control).
    c.must(&format!("ping -4 -c 1 -W 3 -t 2 {OUT4}"));
    c.must(&format!("ping -6 -c 1 -W 3 -t 2 {OUT6}"));
    // Out of hops at the gateway: the router's answer, from the gateway.
    for (family, to, gw) in [("-4", OUT4, "10.170.0.1"), ("-6", OUT6, "fd00:170::1")] {
        let o = c.sh(&format!("ping {family} -c 1 -W 3 -t 1 {to}"));
        let text = o.stdout_text();
        assert!(
            text.contains(&format!("From {gw}")) && text.to_lowercase().contains("exceeded"),
            "ping {family} -t 1: {text}"
        );
    }
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn an_ipv6_only_network_leaves_and_is_reached_through_the_socket_uplink() {
    let r = Rig::new();
    r.d.ctl_ok(&[
        "network",
        "create",
        "only6",
        "--ipv6",
        "--ipv4=false",
        "--subnet",
        "fd00:173::/64",
    ]);
    let c = r.attach("only6", "s6o6");
    let dir = TempDir::new("s6only");
    // TCP out: a download, the bytes checked; UDP out: the server sees the host.
    let (_http, sum) = serve(&r.out, &dir, 1_000_000);
    let got = c.must(&format!(
        "curl -6 -sS --max-time 20 http://[{OUT6}]:8080/blob | sha256sum"
    ));
    assert_eq!(sha256(&got), sum, "the download from an IPv6-only network");
    let _peer = peer_server(&r.out, &dir, 9000);
    let pong = c.must(&format!("echo ping | socat -T 3 - UDP6:[{OUT6}]:9000"));
    assert_eq!(pong.trim(), format!("pong-{HOST6}"), "the UDP reply");
    // Echo through a ping socket; the gateway's address stands for the host.
    c.must(&format!("ping -6 -c 2 -W 3 {OUT6}"));
    let _srv = r
        .host
        .spawn("exec socat TCP6-LISTEN:7402,fork,reuseaddr SYSTEM:\"echo the-host\"");
    listening(&r.host, 7402);
    let v6 = c.must("socat -T 3 - TCP6:[fd00:173::1]:7402 </dev/null");
    assert_eq!(v6.trim(), "the-host");
    // Published: an IPv6 client outside keeps its address; a loopback one comes from
    // the gateway.
    let _s = peer_server(&c, &dir, 80);
    r.d.ctl_ok(&["publish", "s6o6", "-p", "8060:80"]);
    let seen = peer_seen(&r.out, &format!("-6 http://[{HOST6}]:8060/"));
    assert_eq!(seen.trim(), OUT6, "the client's address is kept");
    let seen = peer_seen(&r.host, "-6 http://[::1]:8060/");
    assert_eq!(seen.trim(), "fd00:173::1");
    // IPv4 clients reach it over IPv6, from its gateway (as Docker's proxy), from
    // outside and from the loopback, after an IPv6 one was spliced.
    let seen = peer_seen(&r.out, &format!("-4 http://{HOST4}:8060/"));
    assert_eq!(seen.trim(), "fd00:173::1");
    let seen = peer_seen(&r.host, "-4 http://127.0.0.1:8060/");
    assert_eq!(seen.trim(), "fd00:173::1");
    // The container has no IPv4 at all, and its flows are listed.
    let v4 = c.must("ip -4 -o addr show dev eth0");
    assert!(v4.trim().is_empty(), "{v4}");
    let flows = r.d.ctl_ok(&["conntrack", "ls"]);
    assert!(flows.contains(OUT6), "{flows}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_published_udp_port_answers_ipv6_clients_keeping_their_address() {
    let r = Rig::new();
    let c = r.attach("net", "s6d");
    let dir = TempDir::new("s6udp");
    let _s = peer_server(&c, &dir, 9000);
    r.d.ctl_ok(&["publish", "s6d", "-p", "9010:9000/udp"]);
    // From outside over IPv6: the container sees the client's own address.
    let pong = r
        .out
        .must(&format!("echo ping | socat -T 3 - UDP6:[{HOST6}]:9010"));
    assert_eq!(pong.trim(), format!("pong-{OUT6}"));
    // From the host's ::1: the container sees its IPv6 gateway.
    let pong = r.host.must("echo ping | socat -T 3 - UDP6:[::1]:9010");
    assert_eq!(pong.trim(), "pong-fd00:170::1");
    // IPv4 as before: the control.
    let pong = r
        .out
        .must(&format!("echo ping | socat -T 3 - UDP4:{HOST4}:9010"));
    assert_eq!(pong.trim(), format!("pong-{OUT4}"));
}
