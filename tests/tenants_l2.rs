//! Tenants against each other on layer 2: a hostile container beside innocent ones.
//! Rogue routers and DHCP servers, VLAN hopping with double tags, and per-container
//! shares of what the switch holds (NAT flows), with real clients and kernels inside
//! namespaces and frames crafted with scapy.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

fn require_scapy() {
    let py = sh("/usr/bin/python3 -c 'import scapy.all'");
    assert!(
        py.status.success(),
        "this test needs scapy (Debian python3-scapy): run `bash scripts/test`"
    );
}

/// Runs a python script (scapy) inside `ns` in the background.
fn spawn_py(ns: &Netns, script: &str) -> (Proc, TempDir) {
    let dir = TempDir::new("py");
    let path = dir.path().join("s.py");
    std::fs::write(&path, script).expect("script");
    let p = ns.spawn(&format!("exec /usr/bin/python3 {}", path.display()));
    (p, dir)
}

/// One port's drop counter from `ctl --json stats` (a reason the daemon knows; only
/// those counted are listed per port).
fn drops(d: &Daemon, port: &str, reason: &str) -> u64 {
    let stats = d.ctl_json(&["stats"]);
    assert!(
        stats["drop_reasons"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r == reason)),
        "no drop reason {reason}: {stats}"
    );
    stats["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == port)
        .unwrap_or_else(|| panic!("no port {port}: {stats}"))["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Runs busybox udhcpc on eth0 of `ns`; returns the "bound ..." line of its script.
fn udhcpc(ns: &Netns) -> String {
    udhcpc_on(ns, "eth0")
}

/// Runs busybox udhcpc on `ifname` of `ns`; returns the "bound ..." line of its script.
fn udhcpc_on(ns: &Netns, ifname: &str) -> String {
    let dir = TempDir::new("dhcp");
    let script = dir.path().join("s.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$1 ip=$ip router=$router server=$serverid\"\n",
    )
    .expect("script");
    must(&format!("chmod +x {}", script.display()));
    let out = ns.must(&format!(
        "busybox udhcpc -i {ifname} -f -q -n -t 5 -T 1 -s {}",
        script.display()
    ));
    out.lines()
        .find(|l| l.starts_with("bound"))
        .unwrap_or_else(|| panic!("no lease: {out}"))
        .to_string()
}

/// A rogue IPv6 router (RAs with a prefix and a redirect) and DHCPv6 server, sending
/// from the container's own MAC and link-local address for `secs` seconds.
const ROGUE_V6: &str = r#"
import time
from scapy.all import *
conf.verb = 0
mac = get_if_hwaddr("eth0")
ll = "fe80::" + in6_mactoifaceid(mac)
ra = (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=ll, dst="ff02::1")
      / ICMPv6ND_RA(routerlifetime=1800)
      / ICMPv6NDOptPrefixInfo(prefix="2001:db8:66::", prefixlen=64, L=1, A=1,
                              validlifetime=3600, preferredlifetime=3600)
      / ICMPv6NDOptSrcLLAddr(lladdr=mac))
ra_ext = (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=ll, dst="ff02::1")
      / IPv6ExtHdrDestOpt() / ICMPv6ND_RA(routerlifetime=1800))
redirect = (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=ll, dst="ff02::1")
      / ICMPv6ND_Redirect(tgt="fe80::66", dst="2001:db8:77::1"))
adv = (Ether(src=mac, dst="33:33:00:01:00:02") / IPv6(src=ll, dst="ff02::1:2")
      / UDP(sport=547, dport=546) / DHCP6_Advertise())
end = time.time() + SECS
while time.time() < end:
    sendp([ra, ra_ext, redirect, adv], iface="eth0")
    time.sleep(0.3)
"#;

/// A rogue DHCP and DHCPv6 server answering from any port (9999) for `secs` seconds:
/// offers, acks and naks to the client port (68) and a relay's (67), DHCPv6 advertise,
/// reply and reconfigure to 546 and a relay-reply to 547; between them, the controls: UDP
/// broadcasts from its own address that port security lets through.
const ROGUE_ANY_PORT: &str = r#"
import time
from scapy.all import *
conf.verb = 0
mac, ip = get_if_hwaddr("eth0"), get_if_addr("eth0")
ll = "fe80::" + in6_mactoifaceid(mac)
def v4(dport, op, t):
    return (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=ip, dst="255.255.255.255")
            / UDP(sport=9999, dport=dport)
            / BOOTP(op=op, chaddr=b"\x02\x42\x0a\xa0\x00\x03", yiaddr="10.160.0.125", siaddr=ip)
            / DHCP(options=[("message-type", t), ("server_id", ip),
                            ("router", "10.160.0.66"), ("lease_time", 3600), "end"]))
def v6(dport, msg):
    return (Ether(src=mac, dst="33:33:00:01:00:02") / IPv6(src=ll, dst="ff02::1:2")
            / UDP(sport=9999, dport=dport) / msg)
rogue = [v4(68, 2, "offer"), v4(68, 1, "ack"), v4(67, 2, "nak"),
         v6(546, DHCP6_Advertise()), v6(546, DHCP6_Reply()), v6(546, DHCP6_Reconf()),
         v6(547, DHCP6_RelayReply())]
alive = [Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=ip, dst="255.255.255.255")
         / UDP(sport=9999, dport=9999) / Raw(b"alive4"),
         Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=ll, dst="ff02::1")
         / UDP(sport=9999, dport=9999) / Raw(b"alive6")]
end = time.time() + SECS
while time.time() < end:
    sendp(alive + rogue, iface="eth0")
    time.sleep(0.3)
"#;

/// What IFACE carries from MAC for SECS seconds: "alive4"/"alive6" for the rogue's
/// control frames, a line for every DHCP/DHCPv6 message (by its ports, whatever they
/// are), RA or redirect; "listening" first, once the sniffer runs.
const GOOD_SNIFF: &str = r#"
import time
from scapy.all import *
conf.verb = 0
def seen(p):
    if not p.haslayer(Ether) or p[Ether].src != "MAC":
        return None
    if p.haslayer(UDP):
        u = p[UDP]
        if bytes(u.payload) in (b"alive4", b"alive6"):
            return bytes(u.payload).decode()
        if u.sport in (67, 547) or u.dport in (67, 68, 546, 547):
            return "server %d>%d %s" % (u.sport, u.dport, bytes(u.payload)[:1].hex())
    if p.haslayer(ICMPv6ND_RA) or p.haslayer(ICMPv6ND_Redirect):
        return "router " + p.summary()
    return None
s = AsyncSniffer(iface="IFACE", store=False, prn=lambda p: (lambda b: b and print(b, flush=True))(seen(p)))
s.start()
time.sleep(0.3)
print("listening", flush=True)
time.sleep(SECS)
s.stop()
"#;

/// A sniffer for `mac`'s frames on `iface` of `ns`, running once this returns.
fn sniffer(ns: &Netns, iface: &str, mac: &str, secs: u32) -> (Proc, TempDir) {
    let script = GOOD_SNIFF
        .replace("IFACE", iface)
        .replace("MAC", mac)
        .replace("SECS", &secs.to_string());
    let (mut p, dir) = spawn_py(ns, &script);
    let first = p.line();
    assert_eq!(
        first.trim(),
        "listening",
        "the sniffer in {} did not start",
        ns.name
    );
    (p, dir)
}

/// The sniffer's lines: the controls seen, and anything else it reported.
fn sniffed(p: Proc, secs: u32) -> (Vec<String>, Vec<String>) {
    let out = p.wait(Duration::from_secs(u64::from(secs) + 10));
    let lines: Vec<String> = out
        .stdout_text()
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    lines.into_iter().partition(|l| l.starts_with("alive"))
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn rogue_router_and_dhcp_server_never_reach_the_neighbours() {
    require_root();
    require(&["busybox", "dnsmasq", "ip"]);
    require_scapy();
    let d = Daemon::start(&[]);
    d.ctl_ok(&["network", "create", "n", "--subnet", "10.160.0.0/24"]);
    let rogue = Netns::new("rogue");
    let good = Netns::new("good");
    let r = d.ctl_json(&["attach", "n", "--name", "rogue", "--netns", &rogue.path()]);
    let rogue_mac = r["mac"].as_str().expect("mac").to_string();
    let v = d.ctl_json(&["attach", "n", "--name", "good", "--netns", &good.path()]);
    let good_ip = v["ip"].as_str().expect("ip").to_string();
    // A bare TAP (`--tap`, no MAC given) in a namespace of its own: a DHCP client too.
    let bare = Netns::new("bare");
    let tap = HostTap {
        name: unique("t"),
        ns: bare.name.clone(),
    };
    must(&format!("ip tuntap add dev {} mode tap", tap.name));
    let b = d.ctl_json(&["attach", "n", "--name", "bare", "--tap", &tap.name]);
    let bare_ip = b["ip"].as_str().expect("ip").to_string();
    must(&format!("ip link set {} netns {}", tap.name, bare.name));
    bare.must(&format!("ip link set {} up", tap.name));
    // The innocent one takes router advertisements, as a host does.
    good.must("sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0 net.ipv6.conf.eth0.accept_ra=1");

    // What the neighbours' wires carry from the rogue.
    let secs = 12;
    let (sniff, _sdir) = sniffer(&good, "eth0", &rogue_mac, secs);
    let (sniff_bare, _bdir) = sniffer(&bare, &tap.name, &rogue_mac, secs);
    // A real DHCP server in the rogue container, a rogue answering from any port, and a
    // rogue IPv6 router.
    let leases = TempDir::new("leases");
    let _dnsmasq = rogue.spawn(&format!(
        "exec dnsmasq --keep-in-foreground --no-daemon --port=0 --interface=eth0 --bind-interfaces \
         --dhcp-range=10.160.0.100,10.160.0.150,1h --dhcp-authoritative --no-ping --dhcp-option=3,10.160.0.66 \
         --dhcp-leasefile={} --pid-file= --user=root 2>/dev/null",
        leases.path().join("l").display()
    ));
    let (_any, _adir) = spawn_py(&rogue, &ROGUE_ANY_PORT.replace("SECS", "7"));
    let (_v6, _dir) = spawn_py(&rogue, &ROGUE_V6.replace("SECS", "6"));
    std::thread::sleep(Duration::from_millis(500));

    // udhcpc takes the first offer that comes: every one must be the gateway's.
    good.must("ip addr flush dev eth0");
    for _ in 0..3 {
        let bound = udhcpc(&good);
        assert!(
            bound.contains(&format!("ip={good_ip} "))
                && bound.contains("router=10.160.0.1")
                && bound.contains("server=10.160.0.1"),
            "a lease not from the gateway: {bound}\n{}",
            d.log()
        );
    }
    let bound = udhcpc_on(&bare, &tap.name);
    assert!(
        bound.contains(&format!("ip={bare_ip} ")) && bound.contains("server=10.160.0.1"),
        "the bare TAP's lease: {bound}"
    );
    for (name, p) in [("good", sniff), ("bare", sniff_bare)] {
        let (alive, bad) = sniffed(p, secs);
        // The control: the rogue's allowed broadcasts reached this neighbour.
        assert!(
            alive.iter().any(|l| l == "alive4") && alive.iter().any(|l| l == "alive6"),
            "{name}: the rogue's allowed frames did not arrive: {alive:?}"
        );
        let kinds: std::collections::BTreeSet<&String> = bad.iter().collect();
        assert!(
            bad.is_empty(),
            "{name}: the rogue's server messages reached its neighbour: {kinds:?}"
        );
    }
    let addrs = good.must("ip -6 addr show dev eth0");
    assert!(
        !addrs.contains("2001:db8:66"),
        "SLAAC from a rogue RA: {addrs}"
    );
    let routes = good.must("ip -6 route show");
    assert!(
        !routes.contains("default"),
        "a rogue default route: {routes}"
    );
    assert!(
        !routes.contains("2001:db8:77"),
        "a rogue redirect: {routes}"
    );

    // dnsmasq's answers, the 7 any-port messages about 20 times, and the DHCPv6
    // advertise of the IPv6 rogue.
    assert!(
        drops(&d, "rogue", "dhcp_guard") >= 60,
        "{}",
        d.ctl_ok(&["stats"])
    );
    assert!(
        drops(&d, "rogue", "ra_guard") >= 6,
        "{}",
        d.ctl_ok(&["stats"])
    );
    assert_eq!(drops(&d, "good", "dhcp_guard"), 0);
    assert_eq!(drops(&d, "bare", "dhcp_guard"), 0);
    let text = d.ctl_ok(&["stats"]);
    assert!(
        text.contains("ra_guard") && text.contains("dhcp_guard"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn port_without_port_security_may_still_send_router_advertisements() {
    require_root();
    require(&["ip"]);
    require_scapy();
    let d = Daemon::start(&[]);
    d.ctl_ok(&["network", "create", "n", "--subnet", "10.161.0.0/24"]);
    let vm = Netns::new("vm");
    let good = Netns::new("good");
    d.ctl_ok(&[
        "attach",
        "n",
        "--name",
        "vm",
        "--netns",
        &vm.path(),
        "--no-port-security",
    ]);
    d.ctl_ok(&["attach", "n", "--name", "good", "--netns", &good.path()]);
    good.must("sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0 net.ipv6.conf.eth0.accept_ra=1");
    let (_v6, _dir) = spawn_py(&vm, &ROGUE_V6.replace("SECS", "3"));
    let ok = eventually(Duration::from_secs(6), || {
        good.must("ip -6 addr show dev eth0")
            .contains("2001:db8:66")
    });
    assert!(ok, "an RA from a trusted port did not arrive");
    assert_eq!(drops(&d, "vm", "ra_guard"), 0);
}

/// Sends frames out of an access port while a trunk listens; returns what the trunk saw
/// from `src` as "<outer type> <vlan ids...>" lines.
const DOUBLE_TAG: &str = r#"
import time, sys
from scapy.all import *
conf.verb = 0
SRC = "MAC"
arp = ARP(op=1, hwsrc=SRC, psrc="10.162.0.2", pdst="10.162.0.77")
frames = [
    Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=0) / Dot1Q(vlan=20) / arp,
    Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff", type=0x88a8) / Dot1AD(vlan=20) / Dot1Q(vlan=20) / arp,
    Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff", type=0x88a8) / Dot1Q(vlan=20) / arp,
    Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=0) / Dot1AD(vlan=20) / arp,
    # The control: plain and priority-tagged frames do cross.
    Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff") / arp,
    Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=0) / arp,
]
for _ in range(3):
    sendp(frames, iface="eth0")
    time.sleep(0.3)
"#;

const TRUNK_SNIFF: &str = r#"
from scapy.all import *
conf.verb = 0
pkts = sniff(iface="eth0", timeout=SECS, started_callback=lambda: print("ready", flush=True))
for p in pkts:
    if p.haslayer(Ether) and p[Ether].src == "MAC" and p.haslayer(ARP) and p[ARP].pdst == "10.162.0.77":
        vids = []
        l = p[Ether].payload
        while isinstance(l, (Dot1Q, Dot1AD)):
            vids.append(str(l.vlan))
            l = l.payload
        print(hex(p[Ether].type), " ".join(vids), flush=True)
"#;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn double_tagged_frames_from_an_access_port_never_leave_a_trunk() {
    require_root();
    require(&["ip"]);
    require_scapy();
    let d = Daemon::start(&[]);
    d.ctl_ok(&["network", "create", "native", "--subnet", "10.162.0.0/24"]);
    d.ctl_ok(&[
        "network",
        "create",
        "v20",
        "--subnet",
        "10.163.0.0/24",
        "--vlan",
        "20",
    ]);
    let a = Netns::new("a");
    let t = Netns::new("t");
    let va = d.ctl_json(&["attach", "native", "--name", "a", "--netns", &a.path()]);
    d.ctl_ok(&[
        "attach",
        "native",
        "--name",
        "t",
        "--netns",
        &t.path(),
        "--trunk",
        "20",
    ]);
    let mac = va["mac"].as_str().expect("mac").to_string();
    let (mut sniff, _sdir) = spawn_py(&t, &TRUNK_SNIFF.replace("SECS", "8").replace("MAC", &mac));
    // Sent only once the sniffer listens (starting scapy takes seconds on a busy host).
    assert_eq!(sniff.line(), "ready", "the sniffer did not start");
    let (sender, _dir) = spawn_py(&a, &DOUBLE_TAG.replace("MAC", &mac));
    let _ = sender.wait(Duration::from_secs(10));
    let out = sniff.wait(Duration::from_secs(10));
    let seen = out.stdout_text();
    let lines: Vec<&str> = seen.lines().map(str::trim).collect();
    // The control frames arrive, untagged (the trunk's native network).
    assert!(
        lines.iter().filter(|l| **l == "0x806").count() >= 2,
        "the plain frames did not cross: {lines:?}\n{}",
        out.stderr_text()
    );
    // Nothing else: no tag at all, so no VLAN 20 behind the trunk.
    assert!(
        lines.iter().all(|l| *l == "0x806"),
        "a tagged frame crossed: {lines:?}"
    );
    assert!(
        drops(&d, "a", "double_tag") >= 12,
        "{}",
        d.ctl_ok(&["stats"])
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn trunk_listing_its_own_networks_vlan_is_refused() {
    let d = Daemon::start(&[]);
    d.ctl_ok(&[
        "network",
        "create",
        "v10",
        "--subnet",
        "10.164.0.0/24",
        "--vlan",
        "10",
    ]);
    let t = Netns::new("t");
    let e = d.ctl_err(&[
        "attach",
        "v10",
        "--name",
        "t",
        "--netns",
        &t.path(),
        "--trunk",
        "20,10",
    ]);
    assert!(
        e.contains("VLAN 10") && e.contains("--trunk"),
        "not an actionable refusal: {e}"
    );
    // Nothing was attached; the same trunk without its own VLAN is taken.
    d.ctl_ok(&[
        "attach",
        "v10",
        "--name",
        "t",
        "--netns",
        &t.path(),
        "--trunk",
        "20",
    ]);
}

/// A TAP created in the host's namespace for `--tap`, deleted on drop wherever it is.
struct HostTap {
    name: String,
    ns: String,
}

impl Drop for HostTap {
    fn drop(&mut self) {
        let _ = sh(&format!("ip link del {} 2>/dev/null", self.name));
        let _ = sh(&format!(
            "ip -n {} link del {} 2>/dev/null",
            self.ns, self.name
        ));
    }
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn tap_without_mac_keeps_its_own_mac_and_gets_a_lease() {
    require_root();
    require(&["busybox", "ip"]);
    let d = Daemon::start(&[]);
    d.ctl_ok(&["network", "create", "n", "--subnet", "10.165.0.0/24"]);
    let ns = Netns::new("c");
    let tap = HostTap {
        name: unique("t"),
        ns: ns.name.clone(),
    };
    must(&format!("ip tuntap add dev {} mode tap", tap.name));
    let own = must(&format!("cat /sys/class/net/{}/address", tap.name))
        .trim()
        .to_string();
    let v = d.ctl_json(&["attach", "n", "--name", "c", "--tap", &tap.name]);
    assert_eq!(v["mac"].as_str(), Some(own.as_str()), "{v}");
    let ip = v["ip"].as_str().expect("ip").to_string();
    // Into a namespace of its own, as a container's interface; a DHCP client there.
    must(&format!("ip link set {} netns {}", tap.name, ns.name));
    ns.must(&format!("ip link set {} up", tap.name));
    let dir = TempDir::new("dhcp");
    let script = dir.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"$1 ip=$ip router=$router\"\n").expect("script");
    must(&format!("chmod +x {}", script.display()));
    let out = ns.must(&format!(
        "busybox udhcpc -i {} -f -q -n -t 5 -T 1 -s {}",
        tap.name,
        script.display()
    ));
    let bound = out
        .lines()
        .find(|l| l.starts_with("bound"))
        .unwrap_or_else(|| panic!("no lease: {out}\n{}", d.ctl_ok(&["stats"])));
    assert!(
        bound.contains(&format!("ip={ip} ")) && bound.contains("router=10.165.0.1"),
        "{bound}"
    );
    assert_eq!(drops(&d, "c", "mac_spoof"), 0);
}

/// UDP from `ns` port `sport` to `host:7166` through the packet uplink; returns what
/// the outside server answered (the source address it saw), retried a few times (the
/// first packet waits for the next hop to be resolved).
fn udp_through(ns: &Netns, host: &str, sport: u16, tries: usize) -> String {
    let mut got = String::new();
    for _ in 0..tries {
        got = ns
            .sh(&format!(
                "echo hi | socat -T 1 -t 1 - UDP:{host}:7166,sourceport={sport},reuseaddr"
            ))
            .stdout_text();
        if !got.trim().is_empty() {
            break;
        }
    }
    got.trim().to_string()
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn nat_quota_per_container_keeps_room_for_the_neighbours() {
    require_root();
    require(&["socat", "ip"]);
    let d = Daemon::start(&["--max-flows", "64", "--max-flows-per-container", "8"]);
    d.ctl_ok(&["network", "create", "n", "--subnet", "10.166.0.0/24"]);
    let out = Netns::new("seg");
    let (ext, host) = ("198.19.66.2", "198.19.66.1");
    d.ctl_ok(&[
        "uplink",
        "set",
        "--netns",
        &out.path(),
        "--address",
        &format!("{ext}/24"),
    ]);
    out.must(&format!("ip addr add {host}/24 dev vswitch0"));
    let _server = out.spawn("socat UDP-RECVFROM:7166,reuseaddr,fork SYSTEM:'echo $SOCAT_PEERADDR'");
    std::thread::sleep(Duration::from_millis(300));
    let greedy = Netns::new("greedy");
    let good = Netns::new("good");
    d.ctl_ok(&["attach", "n", "--name", "greedy", "--netns", &greedy.path()]);
    d.ctl_ok(&["attach", "n", "--name", "good", "--netns", &good.path()]);
    let st = d.ctl_json(&["stats"]);
    assert_eq!(st["packet_nat"]["per_container"], 8, "{st}");

    // The greedy container takes its share...
    for sport in 41000..41008 {
        assert_eq!(
            udp_through(&greedy, host, sport, 4),
            ext,
            "flow from {sport}"
        );
    }
    // ...and no more: new flows are refused and counted on its port.
    for sport in 41008..41012 {
        assert_eq!(udp_through(&greedy, host, sport, 1), "", "past its quota");
    }
    assert!(
        drops(&d, "greedy", "nat_quota") >= 4,
        "{}",
        d.ctl_ok(&["stats"])
    );
    // The neighbour still opens flows of its own, and the greedy one's live flows work.
    for sport in 42000..42004 {
        assert_eq!(
            udp_through(&good, host, sport, 4),
            ext,
            "neighbour flow {sport}"
        );
    }
    assert_eq!(udp_through(&greedy, host, 41000, 4), ext);
    assert_eq!(drops(&d, "good", "nat_quota"), 0);
    let st = d.ctl_json(&["stats"]);
    assert_eq!(st["packet_nat"]["flows"], 12, "{st}");
    assert!(
        st["packet_nat"]["refused_quota"].as_u64().unwrap_or(0) >= 4,
        "{st}"
    );
    assert_eq!(st["packet_nat"]["refused_full"], 0, "{st}");
}

#[test]
fn daemon_refuses_a_per_container_flow_quota_above_the_table() {
    let dir = TempDir::new("q");
    let o = vswitch(&[
        "daemon",
        "--socket",
        dir.path().join("s").to_str().unwrap_or_default(),
        "--state-dir",
        dir.path().join("st").to_str().unwrap_or_default(),
        "--max-flows",
        "64",
        "--max-flows-per-container",
        "65",
    ]);
    assert!(!o.status.success());
    let e = o.stderr_text();
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("--max-flows-per-container 65 is out of range"),
        "{e}"
    );
}

/// Floods UDP to a closed port of the gateway for SECS seconds.
const ERROR_FLOOD: &str = r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + SECS
n = 0
while time.time() < end:
    for p in range(1000, 1100):
        try:
            s.sendto(b"x", ("GW", p))
        except OSError:
            pass
        n += 1
print(n, flush=True)
"#;

/// Asks a closed UDP port of the gateway 10 times; prints how often the answer (port
/// unreachable, seen as ECONNREFUSED) came.
const ERROR_PROBE: &str = r#"
import socket, time
ok = 0
for i in range(10):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("GW", 9))
    s.settimeout(1.0)
    s.send(b"x")
    try:
        s.recv(16)
    except ConnectionRefusedError:
        ok += 1
    except socket.timeout:
        pass
    s.close()
    time.sleep(0.1)
print(ok, flush=True)
"#;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn icmp_errors_of_one_container_do_not_use_up_its_neighbours_budget() {
    require_root();
    require(&["ip"]);
    let d = Daemon::start(&["--icmp-errors-per-sec", "20"]);
    d.ctl_ok(&[
        "network",
        "create",
        "iso",
        "--subnet",
        "10.167.0.0/24",
        "--internal",
    ]);
    let noisy = Netns::new("noisy");
    let good = Netns::new("good");
    d.ctl_ok(&["attach", "iso", "--name", "noisy", "--netns", &noisy.path()]);
    d.ctl_ok(&["attach", "iso", "--name", "good", "--netns", &good.path()]);
    let gw = "10.167.0.1";
    let (flood, _fdir) = spawn_py(&noisy, &ERROR_FLOOD.replace("SECS", "5").replace("GW", gw));
    std::thread::sleep(Duration::from_millis(1000));
    let (probe, _pdir) = spawn_py(&good, &ERROR_PROBE.replace("GW", gw));
    let out = probe.wait(Duration::from_secs(20));
    let answered: u32 = out.stdout_text().trim().parse().unwrap_or(0);
    let sent = flood.wait(Duration::from_secs(20)).stdout_text();
    // Every probe of the neighbour is answered although the noisy one asked far more
    // than the 20 a second each container gets.
    assert_eq!(
        answered,
        10,
        "the neighbour's errors were eaten by the flood ({} datagrams): {}{}",
        sent.trim(),
        out.stdout_text(),
        out.stderr_text()
    );
    let st = d.ctl_json(&["stats"]);
    let errors = st["gateway"]["icmp_errors"].as_u64().unwrap_or(0);
    // 5 s of flood at 20 a second (plus a burst of 10) and the probes: far below what
    // was asked, so the noisy container was limited.
    assert!(errors < 150, "the noisy container was not limited: {st}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_port_flooding_the_gateway_is_held_to_its_share() {
    require_root();
    require(&["busybox", "ping", "ip"]);
    let d = Daemon::start(&["--gateway-queue", "64"]);
    d.ctl_ok(&[
        "network",
        "create",
        "iso",
        "--subnet",
        "10.168.0.0/24",
        "--internal",
    ]);
    let noisy = Netns::new("noisy");
    let good = Netns::new("good");
    d.ctl_ok(&["attach", "iso", "--name", "noisy", "--netns", &noisy.path()]);
    let v = d.ctl_json(&["attach", "iso", "--name", "good", "--netns", &good.path()]);
    let good_ip = v["ip"].as_str().expect("ip").to_string();
    let gw = "10.168.0.1";
    let (flood, _fdir) = spawn_py(&noisy, &ERROR_FLOOD.replace("SECS", "6").replace("GW", gw));
    std::thread::sleep(Duration::from_millis(1000));
    // The neighbour's DHCP and pings to the gateway are all answered meanwhile.
    good.must("ip addr flush dev eth0");
    let bound = udhcpc(&good);
    assert!(bound.contains(&format!("ip={good_ip} ")), "{bound}");
    good.must(&format!("ip addr add {good_ip}/24 dev eth0"));
    good.must(&format!("ping -c 5 -i 0.2 -W 2 {gw}"));
    let sent = flood.wait(Duration::from_secs(20)).stdout_text();
    let n: u64 = sent.trim().parse().unwrap_or(0);
    // The positive control: the flood ran and reached the gateway (a queue of 64
    // frames: what did not fit was cut from the flooder's own).
    let st = d.ctl_json(&["stats"]);
    let noisy = st["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "noisy").cloned())
        .expect("noisy");
    let rx = noisy["rx_packets"].as_u64().unwrap_or(0);
    assert!(
        n > 1000 && rx * 2 > n,
        "the flood ({n} datagrams, {rx} received): {st}"
    );
    assert_eq!(drops(&d, "good", "service_quota"), 0);
}
