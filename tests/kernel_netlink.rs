//! The kernel path's netlink (`dataplane::kernel::netlink`) against the real kernel:
//! veth pairs created with their peers in other namespaces, clsact qdiscs, u32 redirects
//! between host ends that carry traffic, their counters, their removal, and the pairs'
//! removal. No `tc` or `ip` builds anything the switch side owns; the tools only set up
//! the containers' side and check what the kernel shows.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use dataplane::kernel::netlink::{
    ETH_P_ALL, ETH_P_IP, ETH_P_IPV6, PrioCounters, Redirect, Rtnl, U32Key,
};
use dataplane::netns::{IfSocket, in_netns};
use dataplane::wire::MacAddr;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

const MATCH_ALL_PRIO: u16 = 200;
const PAIR_PRIO: u16 = 100;
const A_MAC: MacAddr = MacAddr([0x02, 0x77, 0, 0, 0, 0x0a]);
const B_MAC: MacAddr = MacAddr([0x02, 0x77, 0, 0, 0, 0x0b]);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const A_IP2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// Runs `f` with a netlink socket inside the switch's namespace.
fn on_sw<T: Send>(sw: &Netns, f: impl FnOnce(&mut Rtnl) -> T + Send) -> T {
    in_netns(sw.path().as_str(), || f(&mut Rtnl::open().unwrap())).unwrap()
}

fn ns_fd(ns: &Netns) -> OwnedFd {
    OwnedFd::from(std::fs::File::open(ns.path()).unwrap())
}

/// Packets and bytes the redirects at `prio` on `ifindex`'s ingress counted.
fn counted(sw: &Netns, ifindex: u32, prio: u16) -> (u64, u64) {
    let all: Vec<PrioCounters> = on_sw(sw, |r| r.ingress_counters(ifindex).unwrap());
    all.iter()
        .find(|c| c.prio == prio)
        .map(|c| (c.packets, c.bytes))
        .unwrap_or_default()
}

fn ping_from(a: &Netns, src: Ipv4Addr) -> bool {
    a.sh(&format!("ping -c 1 -W 2 -I {src} {B_IP}"))
        .status
        .success()
}

/// The pairs vha/eth0@a and vhb/eth0@b, up, addressed, with permanent neighbours.
fn pairs(sw: &Netns, a: &Netns, b: &Netns) -> (u32, u32) {
    let (fa, fb) = (ns_fd(a), ns_fd(b));
    on_sw(sw, |r| {
        r.create_veth("vha", "eth0", fa.as_fd(), A_MAC, 1500)
            .unwrap();
        r.create_veth("vhb", "eth0", fb.as_fd(), B_MAC, 1500)
            .unwrap();
        // A second pair of the same name is refused, and says which.
        let e = r.create_veth("vha", "eth1", fa.as_fd(), A_MAC, 1500);
        assert!(format!("{}", e.unwrap_err()).contains("vha"));
    });
    let idx = in_netns(sw.path().as_str(), || {
        let s = IfSocket::new().unwrap();
        s.set_up("vha", true).unwrap();
        s.set_up("vhb", true).unwrap();
        (
            s.index("vha").unwrap().unwrap(),
            s.index("vhb").unwrap().unwrap(),
        )
    })
    .unwrap();
    assert!(
        a.must("cat /sys/class/net/eth0/address")
            .contains("02:77:00:00:00:0a")
    );
    assert!(a.must("cat /sys/class/net/eth0/mtu").trim() == "1500");
    a.must(&format!(
        "ip link set eth0 up && ip addr add {A_IP}/24 dev eth0"
    ));
    a.must(&format!("ip addr add {A_IP2}/24 dev eth0"));
    a.must(&format!(
        "ip neigh replace {B_IP} lladdr {B_MAC} dev eth0 nud permanent"
    ));
    b.must(&format!(
        "ip link set eth0 up && ip addr add {B_IP}/24 dev eth0"
    ));
    for ip in [A_IP, A_IP2] {
        b.must(&format!(
            "ip neigh replace {ip} lladdr {A_MAC} dev eth0 nud permanent"
        ));
    }
    idx
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn redirects_between_veth_host_ends_carry_count_and_go() {
    require(&["ip", "ping", "tc"]);
    let (sw, a, b) = (Netns::new("ksw"), Netns::new("ka"), Netns::new("kb"));
    let (ha, hb) = pairs(&sw, &a, &b);

    // Nothing joins the host ends yet.
    assert!(!ping_from(&a, A_IP), "a reached b with no redirect");
    on_sw(&sw, |r| {
        for (from, to) in [(ha, hb), (hb, ha)] {
            r.replace_clsact(from).unwrap();
            // Again: the old one (and its filters) goes, a new one comes.
            r.replace_clsact(from).unwrap();
            let all = Redirect {
                ifindex: from,
                prio: MATCH_ALL_PRIO,
                protocol: ETH_P_ALL,
                keys: &[],
                to,
            };
            r.add_redirect(&all).unwrap();
        }
    });
    assert!(
        ping_from(&a, A_IP),
        "a does not reach b through the match-all redirects"
    );
    let (p, bytes) = counted(&sw, ha, MATCH_ALL_PRIO);
    // Bytes as ingress sees them: from the network header (84 for a default ping).
    assert!(p >= 1 && bytes >= 84 * p, "match-all counters {p} {bytes}");
    let shown = must(&format!(
        "ip netns exec {} tc -d filter show dev vha ingress",
        sw.name
    ));
    assert!(shown.contains("Egress Redirect to device vhb"), "{shown}");

    // The pair rule, above the match-all: a's traffic from A_IP to b only.
    let mut keys = U32Key::macs(B_MAC, A_MAC).to_vec();
    keys.push(U32Key::ipv4_src(A_IP));
    on_sw(&sw, |r| {
        let pair = Redirect {
            ifindex: ha,
            prio: PAIR_PRIO,
            protocol: ETH_P_IP,
            keys: &keys,
            to: hb,
        };
        r.add_redirect(&pair).unwrap();
    });
    let shown = must(&format!(
        "ip netns exec {} tc -d filter show dev vha ingress",
        sw.name
    ));
    for key in [
        "match 02770000/ffffffff at -14",
        "match 000b0277/ffffffff at -10",
        "match 0000000a/ffffffff at -6",
        "match 0a4d0001/ffffffff at 12",
    ] {
        assert!(shown.contains(key), "{key} not in {shown}");
    }
    for line in [
        "protocol ip pref 100 u32",
        "protocol all pref 200 u32",
        "terminal",
        "stolen",
    ] {
        assert!(shown.contains(line), "{line} not in {shown}");
    }
    let (pair0, all0) = (
        counted(&sw, ha, PAIR_PRIO),
        counted(&sw, ha, MATCH_ALL_PRIO),
    );
    assert!(ping_from(&a, A_IP));
    let (pair1, all1) = (
        counted(&sw, ha, PAIR_PRIO),
        counted(&sw, ha, MATCH_ALL_PRIO),
    );
    assert!(
        pair1.0 > pair0.0,
        "the pair rule counted nothing: {pair0:?} {pair1:?}"
    );
    assert_eq!(all1, all0, "the match-all counted the pair's traffic");
    assert!(ping_from(&a, A_IP2));
    let (pair2, all2) = (
        counted(&sw, ha, PAIR_PRIO),
        counted(&sw, ha, MATCH_ALL_PRIO),
    );
    assert_eq!(pair2, pair1, "the pair rule counted another source");
    assert!(
        all2.0 > all1.0,
        "the match-all did not count the other source"
    );

    // An IPv6 pair rule (b's ICMPv6 to a): the kernel takes its keys as meant.
    let v6: std::net::Ipv6Addr = "fd77::b".parse().unwrap();
    let mut keys6 = U32Key::macs(A_MAC, B_MAC).to_vec();
    keys6.extend(U32Key::ipv6_src(v6));
    keys6.push(U32Key::ipv6_next_header(58));
    on_sw(&sw, |r| {
        let pair6 = Redirect {
            ifindex: hb,
            prio: PAIR_PRIO,
            protocol: ETH_P_IPV6,
            keys: &keys6,
            to: ha,
        };
        r.add_redirect(&pair6).unwrap();
    });
    let shown = must(&format!(
        "ip netns exec {} tc -d filter show dev vhb ingress",
        sw.name
    ));
    for key in [
        "protocol ipv6 pref 100 u32",
        "match 0000000b/ffffffff at -6",
        "match fd770000/ffffffff at 8",
        "match 0000000b/ffffffff at 20",
        "match 00003a00/0000ff00 at 4",
        "Egress Redirect to device vha",
    ] {
        assert!(shown.contains(key), "{key} not in {shown}");
    }

    // Without the match-all, only the pair's traffic crosses (twice: idempotent).
    on_sw(&sw, |r| {
        r.delete_filter(ha, MATCH_ALL_PRIO, ETH_P_ALL).unwrap();
        r.delete_filter(ha, MATCH_ALL_PRIO, ETH_P_ALL).unwrap();
    });
    assert!(!ping_from(&a, A_IP2), "the other source still reaches b");
    assert!(
        ping_from(&a, A_IP),
        "the pair rule no longer passes traffic"
    );
    assert!(counted(&sw, ha, PAIR_PRIO).0 > pair2.0);
    assert_eq!(counted(&sw, ha, MATCH_ALL_PRIO), (0, 0));

    // Deleting the host end removes the pair: the peer in a is gone too.
    assert!(a.sh("ip link show eth0").status.success());
    on_sw(&sw, |r| {
        assert!(r.delete_link("vha").unwrap());
        assert!(!r.delete_link("vha").unwrap());
        // A name the kernel would read otherwise is refused before it is sent.
        let e = r.delete_link("vhb\0x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        // A refusal says what failed, and the kernel's reason.
        let e = r.add_redirect(&Redirect {
            ifindex: ha,
            prio: 1,
            protocol: ETH_P_ALL,
            keys: &[],
            to: hb,
        });
        let e = e.unwrap_err().to_string();
        assert!(e.contains(&format!("ingress redirect of link {ha}")), "{e}");
        let clash = Redirect {
            ifindex: hb,
            prio: MATCH_ALL_PRIO,
            protocol: ETH_P_IP,
            keys: &[],
            to: ha,
        };
        let e = r.add_redirect(&clash).unwrap_err().to_string();
        // The kernel's extended ack, beside the code.
        assert!(
            e.contains("Invalid argument") && e.contains("Protocol mismatch"),
            "{e}"
        );
    });
    assert!(
        !a.sh("ip link show eth0").status.success(),
        "a's end outlived its pair"
    );

    // A dump longer than one datagram: a hundred more priorities (never matching) on
    // b's host end, each read back, beside the match-all's counted replies.
    on_sw(&sw, |r| {
        for p in 0..100u16 {
            let never = [U32Key::ipv4_src(Ipv4Addr::new(0, 0, 0, p as u8))];
            let quiet = Redirect {
                ifindex: hb,
                prio: 1000 + p,
                protocol: ETH_P_IP,
                keys: &never,
                to: hb,
            };
            r.add_redirect(&quiet).unwrap();
        }
        let all = r.ingress_counters(hb).unwrap();
        assert_eq!(all.len(), 102, "{all:?}");
        assert!(
            all.iter()
                .any(|c| c.prio == MATCH_ALL_PRIO && c.packets > 0),
            "{all:?}"
        );
        assert!(
            all.iter()
                .filter(|c| c.prio >= 1000)
                .all(|c| c.packets == 0)
        );
    });
    assert!(
        b.sh("ip link show eth0").status.success(),
        "b's pair went too"
    );
}
