//! IPv6 through the packet uplink, with real kernel stacks: a dual-stack network
//! masqueraded behind vswitch's IPv6 address on the segment (NAT66: TCP with its data
//! checked, UDP, ping6, `conntrack ls`), a network with masquerade off routed as it is
//! (the outside sees the container's address, and reaches it only in reply or on a
//! published port), published ports on vswitch's IPv6 address (DNAT66, the client's
//! address kept; hairpin from another container; closed for a container without IPv6),
//! and a segment with a smaller MTU whose packet too big reaches the container.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

struct Seg6 {
    d: Daemon,
    out: Netns,
    c: Netns,
    /// vswitch's IPv6 address on the segment, the outside host's, the container's.
    ext6: String,
    host6: String,
    c6: String,
}

/// A daemon with network `front` (IPv4 and IPv6 `fd00:66:N::/64`, `create` more
/// options) whose container `web` reaches an outside namespace through a packet
/// uplink with both families (`uplink` more options).
fn seg6(n: u8, create: &[&str], uplink: &[&str]) -> Seg6 {
    require(&["socat", "ping", "sha256sum"]);
    let d = Daemon::start(&[]);
    let (v4, v6) = (
        format!("10.{}.0.0/24", 220 + n),
        format!("fd00:66:{n}::/64"),
    );
    let mut args = vec!["network", "create", "front", "--subnet", &v4, "--ipv6"];
    args.extend_from_slice(&["--subnet", &v6]);
    args.extend_from_slice(create);
    d.ctl_ok(&args);
    let out = Netns::new("seg6");
    let (ext6, host6) = (format!("2001:db8:66:{n}::2"), format!("2001:db8:66:{n}::1"));
    let (ext, a6) = (format!("198.19.{}.2/24", 100 + n), format!("{ext6}/64"));
    let p = out.path();
    let mut args = vec!["uplink", "set", "--netns", &p, "--address", &ext];
    args.extend_from_slice(&["--address6", &a6]);
    args.extend_from_slice(uplink);
    d.ctl_ok(&args);
    out.must(&format!(
        "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.vswitch0.accept_dad=0 && \
         ip -6 addr add {host6}/64 dev vswitch0 nodad && \
         ip addr add 198.19.{}.1/24 dev vswitch0",
        100 + n
    ));
    let c = Netns::new("c6");
    d.ctl_ok(&["attach", "front", "--name", "web", "--netns", &c.path()]);
    let c6 = ip6_of(&d, "web");
    Seg6 {
        d,
        out,
        c,
        ext6,
        host6,
        c6,
    }
}

/// The IPv6 address IPAM gave container `name` (from `port ls`).
fn ip6_of(d: &Daemon, name: &str) -> String {
    let ports = d.ctl_json(&["port", "ls"]);
    let p = ports
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no port {name}: {ports}"));
    p["ip6"].as_str().expect("an IPv6 address").to_string()
}

/// Retries `cmd` in `ns` until it succeeds with output (the first packets may go while
/// vswitch solicits the neighbour).
fn retry(ns: &Netns, cmd: &str) -> String {
    let mut last = String::new();
    for _ in 0..8 {
        let o = ns.sh(cmd);
        if o.status.success() && !o.stdout_text().trim().is_empty() {
            return o.stdout_text();
        }
        last = format!("{}{}", o.stdout_text(), o.stderr_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("`{cmd}` in {} kept failing: {last}", ns.name);
}

/// A TCP listener on `port` answering each connection with the client's address and
/// the SHA-256 of what it sent.
fn tcp_digest(ns: &Netns, port: u16) -> Proc {
    let p = ns.spawn(&format!(
        "socat TCP6-LISTEN:{port},ipv6only=1,reuseaddr,fork \
         SYSTEM:'echo $SOCAT_PEERADDR; sha256sum'"
    ));
    listening(ns, port);
    p
}

/// A UDP listener on `port` answering each datagram with the client's address.
fn udp_whoami(ns: &Netns, port: u16) -> Proc {
    let p = ns.spawn(&format!(
        "socat UDP6-RECVFROM:{port},ipv6only=1,reuseaddr,fork SYSTEM:'echo $SOCAT_PEERADDR'"
    ));
    listening_udp(ns, port);
    p
}

/// Sends 300 KB of random bytes over TCP from `s.c` to the outside host; returns what
/// the listener saw (its first line: the client's address) and checks the digest.
fn tcp_through(s: &Seg6, port: u16) -> String {
    let file = std::env::temp_dir().join(format!("vswitch-t-nat66-{}-{port}", std::process::id()));
    let f = file.display();
    s.c.must(&format!("head -c 300000 /dev/urandom > {f}"));
    let want = sha256(&s.c.must(&format!("sha256sum {f}")));
    let got = retry(
        &s.c,
        &format!("socat -T 5 - TCP6:[{}]:{port} < {f}", s.host6),
    );
    let _ = std::fs::remove_file(&file);
    let mut lines = got.lines();
    let peer = lines.next().unwrap_or_default().to_string();
    assert_eq!(sha256(lines.next().unwrap_or_default()), want, "{got}");
    peer
}

/// Whether socat's `[2001:0db8:...]` (in `text`) is `want`.
fn saw(text: &str, want: &str) -> bool {
    let want: std::net::Ipv6Addr = want.parse().expect("an IPv6 address");
    let inner = text.trim().trim_start_matches('[');
    let addr = inner.split(']').next().unwrap_or_default();
    addr.parse::<std::net::Ipv6Addr>().is_ok_and(|a| a == want)
}

/// The packet uplink's IPv6 flows `conntrack ls` shows.
fn flows6(d: &Daemon) -> Vec<serde_json::Value> {
    let flows = d.ctl_json(&["conntrack", "ls"]);
    (flows.as_array().expect("list").iter())
        .filter(|f| {
            f["uplink"] == "packet" && f["inside"].as_str().is_some_and(|i| i.contains(']'))
        })
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn nat66_tcp_udp_ping6_leave_with_the_uplinks_address() {
    let s = seg6(1, &[], &[]);
    let _t = tcp_digest(&s.out, 7200);
    let peer = tcp_through(&s, 7200);
    assert!(
        saw(&peer, &s.ext6),
        "the outside saw {peer}, not {}",
        s.ext6
    );
    let _u = udp_whoami(&s.out, 7201);
    let got = retry(
        &s.c,
        &format!("echo hi | socat -T 3 -t 3 - UDP6:[{}]:7201", s.host6),
    );
    assert!(saw(&got, &s.ext6), "{got}");
    s.c.must(&format!("ping -6 -c 2 -W 2 {}", s.host6));
    // IPv4 still leaves beside it.
    retry(&s.c, "ping -c 1 -W 2 198.19.101.1");
    let rows = flows6(&s.d);
    for proto in ["tcp", "udp", "icmpv6"] {
        let row = rows.iter().find(|f| f["protocol"] == proto);
        let row = row.unwrap_or_else(|| panic!("no {proto} flow: {rows:?}"));
        assert!(row["inside"].as_str().unwrap().contains(&s.c6), "{row}");
        assert!(row["outside"].as_str().unwrap().contains(&s.ext6), "{row}");
    }
    // vswitch answers pings to its IPv6 address on the segment.
    s.out.must(&format!("ping -6 -c 1 -W 2 {}", s.ext6));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn routed_ipv6_keeps_the_containers_address_and_admits_only_replies() {
    let s = seg6(2, &["--no-masquerade"], &[]);
    // The outside routes the network's prefix to vswitch.
    s.out
        .must(&format!("ip -6 route add fd00:66:2::/64 via {}", s.ext6));
    let _t = tcp_digest(&s.out, 7202);
    let peer = tcp_through(&s, 7202);
    assert!(saw(&peer, &s.c6), "the outside saw {peer}, not {}", s.c6);
    let _u = udp_whoami(&s.out, 7203);
    let got = retry(
        &s.c,
        &format!("echo hi | socat -T 3 -t 3 - UDP6:[{}]:7203", s.host6),
    );
    assert!(saw(&got, &s.c6), "{got}");
    s.c.must(&format!("ping -6 -c 2 -W 2 {}", s.host6));
    let rows = flows6(&s.d);
    assert!(rows.iter().any(|f| f["protocol"] == "tcp"), "{rows:?}");
    // A connection the container did not start is not let in, while the container's
    // listener is alive (it answers inside).
    let _l =
        s.c.spawn("socat TCP6-LISTEN:7204,reuseaddr,fork SYSTEM:'echo inside'");
    listening(&s.c, 7204);
    let own =
        s.c.must(&format!("socat -T 2 - TCP6:[{}]:7204 </dev/null", s.c6));
    assert_eq!(own.trim(), "inside");
    let o = s.out.sh(&format!(
        "socat -T 2 - TCP6:[{}]:7204,connect-timeout=2 </dev/null",
        s.c6
    ));
    assert!(
        !o.status.success() || o.stdout_text().trim().is_empty(),
        "the outside reached the container: {}",
        o.stdout_text()
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn packet_too_big_from_a_smaller_uplink_mtu_reaches_the_container() {
    let s = seg6(3, &[], &["--mtu", "1280"]);
    // Small enough: through (the neighbour resolved first).
    retry(
        &s.c,
        &format!("ping -6 -c 1 -W 2 -M do -s 1200 {}", s.host6),
    );
    let o =
        s.c.sh(&format!("ping -6 -c 1 -W 2 -M do -s 1400 {}", s.host6));
    let text = format!("{}{}", o.stdout_text(), o.stderr_text());
    assert!(
        text.contains("Packet too big") && text.contains("1280"),
        "no packet too big: {text}"
    );
    let route = s.c.must(&format!("ip -6 route get {}", s.host6));
    assert!(route.contains("mtu 1280"), "path MTU not learnt: {route}");
    // TCP finds the path MTU and delivers everything.
    s.out.must("ip link set vswitch0 mtu 1500");
    s.c.must("ip -6 route flush cache");
    let _t = tcp_digest(&s.out, 7205);
    let peer = tcp_through(&s, 7205);
    assert!(saw(&peer, &s.ext6), "{peer}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn packet_too_big_from_a_router_beyond_is_translated_back_to_the_container() {
    // The outside host routes to a far host over a link of MTU 1300.
    let s = seg6(4, &[], &["--next-hop6", "2001:db8:66:4::1"]);
    let far = Netns::new("far6");
    s.out.must(&format!(
        "sysctl -qw net.ipv6.conf.all.forwarding=1 && \
         ip link add up0 mtu 1300 type veth peer name dn0 netns {} && \
         ip link set up0 up && ip -6 addr add 2001:db8:77:4::1/64 dev up0 nodad",
        far.name
    ));
    far.must(
        "ip link set dn0 up && ip -6 addr add 2001:db8:77:4::2/64 dev dn0 nodad && \
         ip -6 route add default via 2001:db8:77:4::1",
    );
    retry(&s.c, "ping -6 -c 1 -W 2 2001:db8:77:4::2");
    // Too big for the far link: the router's packet too big, about the translated
    // packet and sent to vswitch's address, reaches the container translated back.
    let o = s.c.sh("ping -6 -c 1 -W 2 -M do -s 1400 2001:db8:77:4::2");
    let text = format!("{}{}", o.stdout_text(), o.stderr_text());
    assert!(
        text.contains("Packet too big") && text.contains("1300"),
        "no packet too big from the router: {text}"
    );
    let route = s.c.must("ip -6 route get 2001:db8:77:4::2");
    assert!(route.contains("mtu 1300"), "path MTU not learnt: {route}");
    // And TCP over that path delivers everything.
    let _t = tcp_digest(&far, 7206);
    let file = std::env::temp_dir().join(format!("vswitch-t-nat66-far-{}", std::process::id()));
    let f = file.display();
    s.c.must(&format!("head -c 300000 /dev/urandom > {f}"));
    let want = sha256(&s.c.must(&format!("sha256sum {f}")));
    let got = retry(
        &s.c,
        &format!("socat -T 5 - TCP6:[2001:db8:77:4::2]:7206 < {f}"),
    );
    let _ = std::fs::remove_file(&file);
    let mut lines = got.lines();
    assert!(saw(lines.next().unwrap_or_default(), &s.ext6), "{got}");
    assert_eq!(sha256(lines.next().unwrap_or_default()), want, "{got}");
}

/// What `cmd` in `ns` printed on either stream.
fn said(ns: &Netns, cmd: &str) -> String {
    let o = ns.sh(cmd);
    format!("{}{}", o.stdout_text(), o.stderr_text())
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn closed_ports_on_the_uplinks_ipv6_address_are_refused_as_on_its_ipv4_one() {
    let s = seg6(5, &[], &[]);
    let ext4 = "198.19.105.2";
    // Both addresses answer pings (the neighbours resolved).
    retry(&s.out, &format!("ping -6 -c 1 -W 2 {}", s.ext6));
    retry(&s.out, &format!("ping -c 1 -W 2 {ext4}"));
    // Nothing listens there: TCP gets an RST and UDP port unreachable in both
    // families, so the client learns at once instead of timing out.
    for (family, addr) in [("TCP", ext4.to_string()), ("TCP6", format!("[{}]", s.ext6))] {
        let text = said(
            &s.out,
            &format!("socat -T 3 - {family}:{addr}:7300,connect-timeout=3 </dev/null"),
        );
        assert!(text.contains("Connection refused"), "{family}: {text}");
    }
    for (family, addr) in [("UDP", ext4.to_string()), ("UDP6", format!("[{}]", s.ext6))] {
        let text = said(
            &s.out,
            &format!("echo hi | socat -T 3 - {family}:{addr}:7301"),
        );
        assert!(text.contains("Connection refused"), "{family}: {text}");
    }
    // The container's own flows through that address still work beside the refusals.
    let _t = tcp_digest(&s.out, 7302);
    let peer = tcp_through(&s, 7302);
    assert!(saw(&peer, &s.ext6), "{peer}");
}

/// Sends one UDP datagram from `src`:9999 to `dst`:`dport` (either family) with hop
/// limit or TTL `hops` by scapy; prints "time-exceeded" and who said so when an ICMP or
/// ICMPv6 time exceeded comes back, else "silence".
const HOPS_PY: &str = r#"
import sys
from scapy.all import IP, IPv6, UDP, ICMP, Raw, ICMPv6TimeExceeded, sr1
src, dst, dport, hops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
l3 = IPv6(src=src, dst=dst, hlim=hops) if ":" in dst else IP(src=src, dst=dst, ttl=hops)
a = sr1(l3 / UDP(sport=9999, dport=dport) / Raw(b"in"), timeout=3, verbose=False)
if a is not None and a.haslayer(ICMPv6TimeExceeded):
    print("time-exceeded", a[IPv6].src)
elif a is not None and a.haslayer(ICMP) and a[ICMP].type == 11:
    print("time-exceeded", a[IP].src)
else:
    print("silence")
"#;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_flows_packet_out_of_hops_on_the_way_in_hears_time_exceeded_in_both_families() {
    require(&["python3"]);
    let s = seg6(6, &[], &[]);
    let (ext4, host4) = ("198.19.106.2", "198.19.106.1");
    let py = std::env::temp_dir().join(format!("vswitch-t-hops-{}.py", std::process::id()));
    std::fs::write(&py, HOPS_PY).unwrap();
    let families = [
        (
            "UDP6",
            format!("[{}]", s.host6),
            s.host6.clone(),
            s.ext6.clone(),
            40555,
        ),
        (
            "UDP4",
            host4.to_string(),
            host4.to_string(),
            ext4.to_string(),
            40556,
        ),
    ];
    for (socat, peer, host, ext, port) in families {
        // The container's UDP flow to the outside host's port 9999, from `port` (kept
        // on the uplink's address: it is free), printing what comes back.
        let mut c = s.c.spawn(&format!(
            "exec socat -T 20 -u {socat}-RECVFROM:{port},reuseaddr - & \
             sleep 0.2; echo out | socat -u - {socat}-SENDTO:{peer}:9999,sourceport={port},reuseaddr; \
             wait"
        ));
        let flowing = eventually(Duration::from_secs(10), || {
            let flows = s.d.ctl_json(&["conntrack", "ls"]);
            let rows = flows.as_array().cloned().unwrap_or_default();
            rows.iter().any(|f| {
                f["protocol"] == "udp" && f["outside"].as_str().is_some_and(|o| o.contains(&ext))
            })
        });
        assert!(flowing, "no {socat} flow");
        let send = |hops: u32| {
            let py = py.display();
            s.out
                .must(&format!("/usr/bin/python3 {py} {host} {ext} {port} {hops}"))
        };
        // Out of hops at vswitch: told so, from vswitch's address.
        let got = send(1);
        let mut words = got.split_whitespace();
        assert_eq!(words.next(), Some("time-exceeded"), "{socat}: {got}");
        let from: std::net::IpAddr = words.next().unwrap_or_default().parse().expect("addr");
        assert_eq!(from, ext.parse::<std::net::IpAddr>().unwrap(), "{socat}");
        // With hops to spare the same datagram reaches the container (the control).
        assert_eq!(send(64).trim(), "silence");
        assert_eq!(c.line().trim(), "in", "{socat}");
    }
    let _ = std::fs::remove_file(&py);
}

/// A one-line HTTP server on `port` of `ns` (`listen`: socat's listening address type,
/// `TCP6-LISTEN` or `TCP4-LISTEN`) whose page is the client's address as the
/// container sees it. The script is removed with the returned guard.
fn http_peer(ns: &Netns, listen: &str, port: u16) -> (Proc, TempDir) {
    let dir = TempDir::new("http-peer");
    let script = dir.path().join("peer.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         while IFS= read -r l; do case \"$l\" in \"\"|\"$(printf '\\r')\") break;; esac; done\n\
         printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\n\
         echo \"$SOCAT_PEERADDR\"\n",
    )
    .unwrap();
    let s = script.display();
    ns.must(&format!("chmod +x {s}"));
    let p = ns.spawn(&format!(
        "exec socat {listen}:{port},reuseaddr,fork EXEC:{s}"
    ));
    listening(ns, port);
    (p, dir)
}

/// What `curl` fetched from `url` in `ns` (retried while neighbours resolve).
fn curl(ns: &Netns, url: &str) -> String {
    retry(ns, &format!("curl -sS -m 5 --connect-timeout 3 '{url}'"))
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn published_ports_are_reached_on_the_uplinks_ipv6_address_with_the_clients_and_hairpin() {
    require(&["curl"]);
    let s = seg6(7, &[], &[]);
    let (ext4, host4) = ("198.19.107.2", "198.19.107.1");
    let _web = http_peer(&s.c, "TCP6-LISTEN", 80);
    let _u = udp_whoami(&s.c, 53);
    s.d.ctl_ok(&["publish", "web", "-p", "8080:80", "-p", "8053:53/udp"]);
    // From outside over IPv6: the page, and the container saw the real client.
    let page = curl(&s.out, &format!("http://[{}]:8080/", s.ext6));
    assert!(
        saw(&page, &s.host6),
        "the container saw {page}, not {}",
        s.host6
    );
    let got = retry(
        &s.out,
        &format!("echo hi | socat -T 3 -t 3 - UDP6:[{}]:8053", s.ext6),
    );
    assert!(saw(&got, &s.host6), "UDP: {got}");
    // The flows are the IPv6 table's: inside the container, outside the published port.
    let rows = flows6(&s.d);
    let dnat = rows.iter().find(|f| {
        f["protocol"] == "tcp" && f["outside"].as_str().is_some_and(|o| o.contains("]:8080"))
    });
    let dnat = dnat.unwrap_or_else(|| panic!("no DNAT66 flow: {rows:?}"));
    assert!(dnat["inside"].as_str().unwrap().contains(&s.c6), "{dnat}");
    // Hairpin: another container reaches web at the uplink's address, seen as it.
    let o = Netns::new("o6");
    s.d.ctl_ok(&["attach", "front", "--name", "api", "--netns", &o.path()]);
    let page = curl(&o, &format!("http://[{}]:8080/", s.ext6));
    assert!(
        saw(&page, &s.ext6),
        "hairpin seen as {page}, not {}",
        s.ext6
    );
    // A container without IPv6 (an IPv4-only network): its port is reached over IPv4
    // (the control: its server is up) and closed over IPv6 (refused at once).
    s.d.ctl_ok(&["network", "create", "back", "--subnet", "10.237.0.0/24"]);
    let v4 = Netns::new("v4");
    s.d.ctl_ok(&["attach", "back", "--name", "old", "--netns", &v4.path()]);
    let _old = http_peer(&v4, "TCP4-LISTEN", 80);
    s.d.ctl_ok(&["publish", "old", "-p", "8081:80"]);
    let page = curl(&s.out, &format!("http://{ext4}:8081/"));
    assert!(page.contains(host4), "over IPv4: {page}");
    let text = said(
        &s.out,
        &format!(
            "socat -T 3 - TCP6:[{}]:8081,connect-timeout=3 </dev/null",
            s.ext6
        ),
    );
    assert!(text.contains("Connection refused"), "over IPv6: {text}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_routed_networks_published_port_is_reached_at_the_container_and_on_the_uplink() {
    require(&["curl"]);
    let s = seg6(8, &["--no-masquerade"], &[]);
    s.out
        .must(&format!("ip -6 route add fd00:66:8::/64 via {}", s.ext6));
    let _web = http_peer(&s.c, "TCP6-LISTEN", 80);
    let _other = http_peer(&s.c, "TCP6-LISTEN", 81);
    s.d.ctl_ok(&["publish", "web", "-p", "8080:80"]);
    // At the container's own address (Docker's routed mode) and on the uplink's
    // (DNAT66), the container seeing the client either way.
    for url in [
        format!("http://[{}]:80/", s.c6),
        format!("http://[{}]:8080/", s.ext6),
    ] {
        let page = curl(&s.out, &url);
        assert!(saw(&page, &s.host6), "{url}: {page}");
    }
    // A port it does not publish stays shut from outside, while its server answers
    // inside (the control).
    let own = s.c.must(&format!("curl -sS -m 3 'http://[{}]:81/'", s.c6));
    assert!(saw(&own, &s.c6), "{own}");
    let o = s.out.sh(&format!(
        "curl -sS -m 3 --connect-timeout 2 'http://[{}]:81/'",
        s.c6
    ));
    assert!(!o.status.success(), "reached: {}", o.stdout_text());
}

/// A container reaching the uplink's IPv6 address on a port nothing publishes is
/// refused at once (an RST, port unreachable) and its ping answered, as by a host
/// owning the address; no flow is left behind. A published port on the same address
/// still hairpins (the positive control).
#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn the_uplinks_ipv6_address_from_inside_refuses_closed_ports_and_answers_pings() {
    require(&["curl"]);
    let s = seg6(9, &[], &[]);
    let _web = http_peer(&s.c, "TCP6-LISTEN", 80);
    s.d.ctl_ok(&["publish", "web", "-p", "8080:80"]);
    let o = Netns::new("o6");
    s.d.ctl_ok(&["attach", "front", "--name", "api", "--netns", &o.path()]);
    let page = curl(&o, &format!("http://[{}]:8080/", s.ext6));
    assert!(saw(&page, &s.ext6), "hairpin seen as {page}");
    let text = said(
        &o,
        &format!(
            "socat -T 3 - TCP6:[{}]:9,connect-timeout=20 </dev/null",
            s.ext6
        ),
    );
    assert!(text.contains("Connection refused"), "TCP: {text}");
    let text = said(&o, &format!("echo hi | socat -T 20 - UDP6:[{}]:9", s.ext6));
    assert!(text.contains("Connection refused"), "UDP: {text}");
    o.must(&format!("ping -6 -c 1 -W 5 {}", s.ext6));
    let rows = flows6(&s.d);
    assert!(
        rows.iter().any(|f| f["protocol"] == "tcp"),
        "the hairpin flow is listed: {rows:?}"
    );
    let closed = format!("[{}]:9", s.ext6);
    let left = rows.iter().find(|f| {
        f["remote"] == closed.as_str()
            || f["protocol"]
                .as_str()
                .is_some_and(|p| p.starts_with("icmp"))
    });
    assert!(
        left.is_none(),
        "a flow left by a refusal or a ping: {left:?}"
    );
}

/// Reads `p`'s stderr until tcpdump says it is listening.
fn until_listening(p: &mut Proc) {
    use std::io::Read;
    let err = p.child.stderr.as_mut().expect("piped stderr");
    let (mut seen, mut b) = (Vec::new(), [0u8; 1]);
    while let Ok(1) = err.read(&mut b) {
        seen.push(b[0]);
        if String::from_utf8_lossy(&seen).contains("listening on") {
            return;
        }
    }
    panic!("tcpdump did not start: {}", String::from_utf8_lossy(&seen));
}

/// A routed network routes only its own prefix: a container without port security
/// sending from a foreign address is not seen on the segment and the drop is counted,
/// while its own address is routed (the positive control).
#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_routed_network_routes_only_sources_of_its_own_prefix() {
    require(&["tcpdump"]);
    let s = seg6(10, &["--no-masquerade"], &[]);
    s.out
        .must(&format!("ip -6 route add fd00:66:10::/64 via {}", s.ext6));
    let loose = Netns::new("loose6");
    let p = loose.path();
    s.d.ctl_ok(&[
        "attach",
        "front",
        "--name",
        "loose",
        "--netns",
        &p,
        "--no-port-security",
    ]);
    let own = ip6_of(&s.d, "loose");
    let foreign = "2001:db8:bad::5";
    loose.must(&format!("ip -6 addr add {foreign}/128 dev eth0 nodad"));
    // The neighbours resolved before the capture.
    retry(&loose, &format!("ping -6 -c 1 -W 2 -I {own} {}", s.host6));
    // Echo requests (tcpdump joins the filter's words).
    let mut sniff = s
        .out
        .spawn("exec tcpdump -i vswitch0 -n -l -c 2 icmp6 and ip6[40] == 128");
    until_listening(&mut sniff);
    let o = loose.sh(&format!("ping -6 -c 1 -W 2 -I {foreign} {}", s.host6));
    assert!(!o.status.success(), "the foreign source got a reply");
    loose.must(&format!("ping -6 -c 2 -W 2 -I {own} {}", s.host6));
    let seen = sniff.wait(Duration::from_secs(10)).stdout_text();
    let own_short = own.parse::<std::net::Ipv6Addr>().unwrap().to_string();
    assert!(
        seen.contains(&own_short),
        "its own address not seen: {seen}"
    );
    assert!(!seen.contains(foreign), "the foreign source left: {seen}");
    let st = s.d.ctl_json(&["stats"]);
    let port = (st["ports"].as_array().unwrap().iter()).find(|p| p["name"] == "loose");
    let n = port.and_then(|p| p["drops"]["source_outside_network"].as_u64());
    assert!(n.unwrap_or(0) >= 1, "not counted: {port:?}");
}
