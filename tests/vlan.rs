//! 802.1Q through real TAPs: a trunk port carries two networks' VLANs tagged and its
//! own network untagged; frames are crafted and captured with scapy (no 8021q module
//! is needed).

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Sends `frames` (scapy expressions) out of eth0 in `ns` and returns a summary line per
/// frame received on eth0 meanwhile: "vlan=<id or none> <src ip> > <dst ip> <proto>".
fn exchange(ns: &Netns, frames: &[String]) -> Vec<String> {
    let script = format!(
        r#"
import sys, time
from scapy.all import Ether, Dot1Q, ARP, IP, ICMP, sendp, AsyncSniffer, conf
conf.verb = 0
s = AsyncSniffer(iface="eth0", store=True)
s.start()
time.sleep(0.5)
for f in [{frames}]:
    sendp(f, iface="eth0")
    time.sleep(0.2)
time.sleep(1.0)
pkts = s.stop()
for p in pkts:
    if p.haslayer(Ether) and p[Ether].src.startswith("02:42"):
        vid = p[Dot1Q].vlan if p.haslayer(Dot1Q) else "none"
        if p.haslayer(ARP):
            print(f"vlan={{vid}} arp op={{p[ARP].op}} {{p[ARP].psrc}} > {{p[ARP].pdst}}")
        elif p.haslayer(ICMP):
            print(f"vlan={{vid}} icmp type={{p[ICMP].type}} {{p[IP].src}} > {{p[IP].dst}}")
"#,
        frames = frames.join(", ")
    );
    let path = std::env::temp_dir().join(format!("{}.py", unique("scapy")));
    std::fs::write(&path, script).expect("script");
    let out = ns.must(&format!("/usr/bin/python3 {}", path.display()));
    let _ = std::fs::remove_file(&path);
    out.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn arp_who_has(vlan: Option<u16>, src_mac: &str, src_ip: &str, dst_ip: &str) -> String {
    let tag = vlan
        .map(|v| format!("/Dot1Q(vlan={v})"))
        .unwrap_or_default();
    format!(
        r#"Ether(src="{src_mac}", dst="ff:ff:ff:ff:ff:ff"){tag}/ARP(op=1, hwsrc="{src_mac}", psrc="{src_ip}", pdst="{dst_ip}")"#
    )
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn trunk_carries_listed_vlans_tagged_and_native_untagged() {
    require(&["ip"]);
    let py = sh("/usr/bin/python3 -c 'import scapy.all'");
    assert!(
        py.status.success(),
        "this test needs scapy (Debian python3-scapy): run `bash scripts/test`"
    );
    let d = Daemon::start(&[]);
    d.ctl_ok(&["network", "create", "native", "--subnet", "10.130.0.0/24"]);
    d.ctl_ok(&[
        "network",
        "create",
        "v10",
        "--subnet",
        "10.131.0.0/24",
        "--vlan",
        "10",
    ]);
    d.ctl_ok(&[
        "network",
        "create",
        "v20",
        "--subnet",
        "10.132.0.0/24",
        "--vlan",
        "20",
    ]);
    let a10 = Netns::new("a10");
    let a20 = Netns::new("a20");
    let t = Netns::new("tr");
    d.ctl_ok(&["attach", "v10", "--name", "a10", "--netns", &a10.path()]);
    d.ctl_ok(&["attach", "v20", "--name", "a20", "--netns", &a20.path()]);
    d.ctl_ok(&[
        "attach",
        "native",
        "--name",
        "tr",
        "--netns",
        &t.path(),
        "--trunk",
        "10,20",
    ]);
    // The trunk's own (native) frames carry its eth0 MAC; tagged ones come from hosts
    // behind it, with MACs of their own.
    let behind = "02:00:00:00:0a:0a";
    let got = exchange(
        &t,
        &[
            // VLAN 10: a host behind the trunk asks for a10 (10.131.0.2).
            arp_who_has(Some(10), behind, "10.131.0.99", "10.131.0.2"),
            // VLAN 20: asks for a20 (10.132.0.2).
            arp_who_has(Some(20), "02:00:00:00:14:14", "10.132.0.99", "10.132.0.2"),
            // VLAN 30 is not carried: dropped, no answer.
            arp_who_has(Some(30), "02:00:00:00:1e:1e", "10.131.0.98", "10.131.0.2"),
            // VLAN 20 frame asking for the VLAN-10 host: never crosses.
            arp_who_has(Some(20), "02:00:00:00:14:15", "10.131.0.97", "10.131.0.2"),
        ],
    );
    assert!(
        got.iter()
            .any(|l| l == "vlan=10 arp op=2 10.131.0.2 > 10.131.0.99"),
        "no tagged reply from VLAN 10: {got:?}\n{}",
        d.log()
    );
    assert!(
        got.iter()
            .any(|l| l == "vlan=20 arp op=2 10.132.0.2 > 10.132.0.99"),
        "no tagged reply from VLAN 20: {got:?}"
    );
    assert!(
        !got.iter()
            .any(|l| l.contains("10.131.0.98") || l.contains("10.131.0.97")),
        "{got:?}"
    );
    // Access ports never see tags: a10 sees the request untagged (its ARP cache learned
    // the asker), and nothing from VLAN 20.
    let neigh = a10.must("ip neigh show");
    assert!(neigh.contains("10.131.0.99"), "{neigh}");
    assert!(!neigh.contains("10.131.0.97"), "{neigh}");
    let stats = d.ctl_json(&["stats"]);
    let tr = stats["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "tr")
        .expect("tr")
        .clone();
    assert!(
        tr["drops"]["vlan_not_allowed"].as_u64().unwrap_or(0) >= 1,
        "{tr}"
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn access_port_drops_tagged_frames() {
    let py = sh("/usr/bin/python3 -c 'import scapy.all'");
    assert!(
        py.status.success(),
        "this test needs scapy (Debian python3-scapy): run `bash scripts/test`"
    );
    let d = Daemon::start(&[]);
    d.ctl_ok(&[
        "network",
        "create",
        "v10",
        "--subnet",
        "10.133.0.0/24",
        "--vlan",
        "10",
    ]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    let va = d.ctl_json(&[
        "attach",
        "v10",
        "--name",
        "a",
        "--netns",
        &a.path(),
        "--no-port-security",
    ]);
    d.ctl_ok(&["attach", "v10", "--name", "b", "--netns", &b.path()]);
    let mac = va["mac"].as_str().expect("mac").to_string();
    // The tagged request asks for b's own address, the untagged one (the control) for
    // the gateway's: only the untagged one is answered.
    let got = exchange(
        &a,
        &[
            arp_who_has(Some(10), &mac, "10.133.0.2", "10.133.0.3"),
            arp_who_has(None, &mac, "10.133.0.2", "10.133.0.1"),
        ],
    );
    assert!(
        got.iter()
            .any(|l| l == "vlan=none arp op=2 10.133.0.1 > 10.133.0.2"),
        "the untagged control was not answered: {got:?}"
    );
    assert!(
        !got.iter().any(|l| l.contains("op=2 10.133.0.3")),
        "a tagged frame on an access port was answered: {got:?}"
    );
    let stats = d.ctl_json(&["stats"]);
    let pa = stats["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "a")
        .expect("a")
        .clone();
    assert!(
        pa["drops"]["vlan_not_allowed"].as_u64().unwrap_or(0) >= 1,
        "{pa}"
    );
}
