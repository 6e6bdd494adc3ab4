use super::*;
use crate::bridge::VlanSet;
use crate::config::{DomainConf, FIRST_PORT, Net4, PortConf, Security};
use crate::ids::{DomainId, Generation, VlanId};
use crate::nat::Nat;
use crate::port::{MemoryPort, Port, VnetHdr};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

const GW1: MacAddr = MacAddr([0x02, 0x42, 10, 1, 0, 1]);

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

fn frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&dst.0);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v.resize(v.len().max(60), 0);
    v
}

fn tagged(dst: MacAddr, src: MacAddr, vid: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&dst.0);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&[0x81, 0x00]);
    v.extend_from_slice(&vid.to_be_bytes());
    v.extend_from_slice(&[0x08, 0x00]);
    v.extend_from_slice(payload);
    v.resize(v.len().max(64), 0);
    v
}

fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p
}

fn arp(sha: MacAddr, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&sha.0);
    p.extend_from_slice(&spa);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tpa);
    p
}

fn domain(name: &str, vlan: Option<u16>, third: u8, icc: bool) -> Option<DomainConf> {
    Some(DomainConf {
        name: name.into(),
        vlan: vlan.and_then(VlanId::new),
        gateway_mac: MacAddr([0x02, 0x42, 10, third, 0, 1]),
        v4: Some(Net4::of(Ipv4Addr::new(10, third, 0, 1), 24)),
        v6: None,
        icc,
        egress: true,
        members: vec![],
        owners: vec![],
        listeners: vec![],
    })
}

fn access(name: &str, domain: u16) -> Option<PortConf> {
    Some(PortConf {
        name: name.into(),
        generation: Generation(0),
        role: PortRole::Container,
        mode: PortMode::Access {
            domain: DomainId(domain),
        },
        security: None,
        mac_limit: 1024,
        kernel: false,
        limits: Default::default(),
    })
}

/// Ports: 0 gateway, 1 none, 2..=4 access domain 0 (vlan 10 on trunks), 5 access
/// domain 1 (vlan 20), 6 trunk (native 0, vlans 10 20 30), 7 access domain 2 (no icc).
struct Rig {
    snap: Snapshot,
    fdb: Fdb,
    counters: CounterTable,
    ports: Vec<MemoryPort>,
    now: u32,
    local: Local,
    room: usize,
    pairs: crate::kernel::hints::PairHints,
}

impl Rig {
    fn new() -> Rig {
        let gw = Some(PortConf {
            name: "gateway".into(),
            generation: Generation(0),
            role: PortRole::Gateway,
            mode: PortMode::Access {
                domain: DomainId(0),
            },
            security: None,
            mac_limit: 0,
            kernel: false,
            limits: Default::default(),
        });
        let mut snap = Snapshot {
            domains: vec![
                domain("a", Some(10), 1, true),
                domain("b", Some(20), 2, true),
                domain("c", None, 3, false),
            ],
            ports: vec![
                gw,
                None,
                access("p2", 0),
                access("p3", 0),
                access("p4", 0),
                access("p5", 1),
                Some(PortConf {
                    name: "t6".into(),
                    generation: Generation(0),
                    role: PortRole::Container,
                    mode: PortMode::Trunk {
                        native: Some(DomainId(0)),
                        vlans: VlanSet::from_ids([10, 20, 30]),
                    },
                    security: None,
                    mac_limit: 1024,
                    kernel: false,
                    limits: Default::default(),
                }),
                access("p7", 2),
                access("p8", 2),
            ],
            ..Default::default()
        };
        snap.rebuild();
        Rig {
            snap,
            fdb: Fdb::default(),
            counters: CounterTable::default(),
            ports: (0..9).map(|i| MemoryPort::new(format!("m{i}"))).collect(),
            now: 0,
            local: Local::default(),
            room: crate::port::ring::RING_SLOTS,
            pairs: Default::default(),
        }
    }

    /// Sends `frames` in on `port`; returns what each port sent.
    fn run(&mut self, port: u16, frames: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
        self.run_with_domain(port, frames, 0)
    }

    fn run_with_domain(&mut self, port: u16, frames: &[Vec<u8>], dom: u16) -> Vec<Vec<Vec<u8>>> {
        self.run_full(port, frames, dom, None)
    }

    /// As `run`, with the packet uplink's NAT and neighbours.
    fn run_full(
        &mut self,
        port: u16,
        frames: &[Vec<u8>],
        dom: u16,
        nat: Option<(&Nat, &Neighbours)>,
    ) -> Vec<Vec<Vec<u8>>> {
        let mut batch = Batch::new(64, 2048);
        for f in frames {
            assert!(batch.push(f, dom));
        }
        let ctx = Context {
            snap: &self.snap,
            fdb: &self.fdb,
            counters: &self.counters,
            now: self.now,
            nat: nat.map(|n| n.0),
            neigh: nat.map(|n| n.1),
            service_room: self.room,
            kernel_pairs: Some(&self.pairs),
        };
        process(&ctx, PortId(port), &mut batch, &mut self.local);
        let out = &mut self.local.egress;
        for &p in out.touched() {
            let sel = out.queue(p);
            let n = self.ports[p.index()].send(&batch, sel).unwrap();
            self.counters.tx(p, n as u64, 0);
        }
        out.clear();
        self.ports.iter_mut().map(|p| p.take_sent()).collect()
    }
}

fn who_got(sent: &[Vec<Vec<u8>>]) -> Vec<usize> {
    sent.iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn unknown_unicast_floods_within_domain_then_learned_goes_direct() {
    let mut r = Rig::new();
    let sent = r.run(2, &[frame(mac(3), mac(2), 0x0800, &[])]);
    // Ports of domain a: 3, 4 and trunk 6 (native, untagged); never 5 or 7.
    assert_eq!(who_got(&sent), vec![3, 4, 6]);
    assert_eq!(sent[6][0][12..14], [0x08, 0x00]);
    // The reply from 3 goes straight to 2, which was learned.
    let sent = r.run(3, &[frame(mac(2), mac(3), 0x0800, &[])]);
    assert_eq!(who_got(&sent), vec![2]);
    // And now 2 -> 3 is direct too.
    let sent = r.run(2, &[frame(mac(3), mac(2), 0x0800, &[])]);
    assert_eq!(who_got(&sent), vec![3]);
}

#[test]
fn unicast_between_kernel_path_ports_is_noted_for_the_manager_and_no_other() {
    let mut r = Rig::new();
    for p in [2, 3] {
        if let Some(Some(c)) = r.snap.ports.get_mut(p) {
            c.kernel = true;
        }
    }
    r.snap.rebuild();
    let noted = |r: &Rig| {
        let mut v = Vec::new();
        r.pairs.drain(|a, b| v.push((a.0, b.0)));
        v
    };
    // Unknown unicast floods: not a pair yet. Port 4 (not on the kernel path) learned.
    r.run(2, &[frame(mac(3), mac(2), 0x0800, &[])]);
    r.run(4, &[frame(mac(2), mac(4), 0x0800, &[])]);
    assert_eq!(noted(&r), vec![]);
    let sent = r.run(3, &[frame(mac(2), mac(3), 0x0800, &[])]);
    assert_eq!(who_got(&sent), vec![2]);
    assert_eq!(noted(&r), vec![(3, 2)]);
    // 2 -> 4 goes direct but 4 is not on the kernel path; 2 -> 3 is.
    let sent = r.run(2, &[frame(mac(4), mac(2), 0x0800, &[])]);
    assert_eq!(who_got(&sent), vec![4]);
    assert_eq!(noted(&r), vec![]);
    r.run(2, &[frame(mac(3), mac(2), 0x0800, &[])]);
    assert_eq!(noted(&r), vec![(2, 3)]);
}

#[test]
fn broadcast_reaches_gateway_and_domain_only() {
    let mut r = Rig::new();
    let sent = r.run(
        5,
        &[frame(
            MacAddr::BROADCAST,
            mac(5),
            0x0806,
            &arp(mac(5), [10, 2, 0, 5], [10, 2, 0, 1]),
        )],
    );
    // Domain b: the gateway (0) and the trunk (6, tagged 20).
    assert_eq!(who_got(&sent), vec![0, 6]);
    assert_eq!(&sent[6][0][12..16], &[0x81, 0x00, 0x00, 20]);
    // Multicast other than broadcast does not bother the gateway.
    let sent = r.run(
        5,
        &[frame(
            MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
            mac(5),
            0x0800,
            &[],
        )],
    );
    assert_eq!(who_got(&sent), vec![6]);
}

#[test]
fn gateway_mac_goes_to_service_port() {
    let mut r = Rig::new();
    let sent = r.run(
        2,
        &[frame(
            GW1,
            mac(2),
            0x0800,
            &ipv4([10, 1, 0, 2], [10, 1, 0, 1]),
        )],
    );
    assert_eq!(who_got(&sent), vec![0]);
}

#[test]
fn trunk_pops_tags_and_pushes_them_back() {
    let mut r = Rig::new();
    // From the trunk, tagged 20: belongs to domain b; reaches 5 untagged and the
    // gateway, nothing in domain a.
    let sent = r.run(6, &[tagged(MacAddr::BROADCAST, mac(60), 20, &[1, 2, 3])]);
    assert_eq!(who_got(&sent), vec![0, 5]);
    assert_eq!(sent[5][0][12..14], [0x08, 0x00]);
    assert_eq!(sent[5][0][14..17], [1, 2, 3]);
    assert_eq!(sent[5][0].len(), 60);
    // 5 answers unicast: goes back to the trunk with tag 20.
    let sent = r.run(5, &[frame(mac(60), mac(5), 0x0800, &[9])]);
    assert_eq!(who_got(&sent), vec![6]);
    assert_eq!(&sent[6][0][12..18], &[0x81, 0x00, 0x00, 20, 0x08, 0x00]);
    assert_eq!(sent[6][0][18], 9);
}

#[test]
fn trunk_native_and_disallowed_tags() {
    let mut r = Rig::new();
    // Untagged from the trunk: native domain a.
    let sent = r.run(6, &[frame(MacAddr::BROADCAST, mac(61), 0x0800, &[])]);
    assert_eq!(who_got(&sent), vec![0, 2, 3, 4]);
    // Tag 10 is domain a too (the network's --vlan).
    let sent = r.run(6, &[tagged(mac(2), mac(62), 10, &[])]);
    assert_eq!(who_got(&sent), vec![2, 3, 4]);
    // Tag 40 is not carried: dropped. Tag 30 is carried but no network has it.
    let sent = r.run(
        6,
        &[
            tagged(MacAddr::BROADCAST, mac(61), 40, &[]),
            tagged(MacAddr::BROADCAST, mac(61), 30, &[]),
        ],
    );
    assert!(who_got(&sent).is_empty());
    let s = r.counters.read(PortId(6));
    assert_eq!(s.drop_count(DropReason::VlanNotAllowed), 1);
    assert_eq!(s.drop_count(DropReason::NoNetwork), 1);
}

#[test]
fn access_port_drops_tagged_but_takes_priority_tag() {
    let mut r = Rig::new();
    let sent = r.run(2, &[tagged(MacAddr::BROADCAST, mac(2), 20, &[])]);
    assert!(who_got(&sent).is_empty());
    assert_eq!(
        r.counters
            .read(PortId(2))
            .drop_count(DropReason::VlanNotAllowed),
        1
    );
    let sent = r.run(2, &[tagged(MacAddr::BROADCAST, mac(2), 0, &[])]);
    assert_eq!(who_got(&sent), vec![0, 3, 4, 6]);
    assert_eq!(sent[3][0][12..14], [0x08, 0x00]);
}

/// Found by the `pipeline` fuzz target: a priority tag in front of another tag
/// left the inner tag on the frame, so a trunk would have carried it into the
/// network of that VLAN (double-tagging VLAN hopping).
#[test]
fn a_tag_behind_the_classified_one_is_dropped() {
    let mut r = Rig::new();
    // The fuzzer's input: priority tag, then another priority tag.
    let fuzzed = [
        0xff, 0xff, 0xff, 0x06, 0x00, 0x00, 0x06, 0x08, 0x3a, 0x8e, 0xb5, 0x55, 0x81, 0x00, 0x00,
        0x00, 0x81, 0x00, 0x00, 0x00, 0x55, 0x00, 0x00,
    ];
    assert!(who_got(&r.run(2, &[fuzzed.to_vec()])).is_empty());
    // Priority tag on an access port hiding VLAN 20 (network b).
    let mut hop = tagged(MacAddr::BROADCAST, mac(2), 0, &[]);
    hop.splice(16..16, [0x81, 0x00, 0x00, 20]);
    assert!(who_got(&r.run(2, &[hop.clone()])).is_empty());
    // The same behind VLAN 10 on the trunk, and an S-tag on an access port.
    hop[15] = 10;
    assert!(who_got(&r.run(6, &[hop])).is_empty());
    let mut stag = frame(MacAddr::BROADCAST, mac(3), 0x88a8, &[0x00, 20, 0x08, 0x00]);
    stag.resize(64, 0);
    assert!(who_got(&r.run(3, &[stag])).is_empty());
    // Access ports count them as double tags (first-hop security), the trunk as a
    // tag it does not carry.
    assert_eq!(
        r.counters.read(PortId(2)).drop_count(DropReason::DoubleTag),
        2
    );
    assert_eq!(
        r.counters
            .read(PortId(6))
            .drop_count(DropReason::VlanNotAllowed),
        1
    );
    assert_eq!(
        r.counters.read(PortId(3)).drop_count(DropReason::DoubleTag),
        1
    );
    // A single priority tag still passes.
    let ok = tagged(MacAddr::BROADCAST, mac(2), 0, &[]);
    assert_eq!(who_got(&r.run(2, &[ok])), vec![0, 3, 4, 6]);
}

#[test]
fn mac_move_redirects_traffic() {
    let mut r = Rig::new();
    r.run(2, &[frame(mac(9), mac(1), 0x0800, &[])]);
    assert_eq!(
        who_got(&r.run(3, &[frame(mac(1), mac(3), 0x0800, &[])])),
        vec![2]
    );
    // mac(1) now shows up on port 4.
    r.run(4, &[frame(mac(9), mac(1), 0x0800, &[])]);
    assert_eq!(
        who_got(&r.run(3, &[frame(mac(1), mac(3), 0x0800, &[])])),
        vec![4]
    );
    assert_eq!(r.fdb.moves.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn aging_forgets_and_floods_again() {
    let mut r = Rig::new();
    r.now = 10;
    r.run(2, &[frame(mac(9), mac(1), 0x0800, &[])]);
    r.now = 200;
    assert_eq!(r.fdb.age(r.now, r.snap.aging_secs), 0);
    assert_eq!(
        who_got(&r.run(3, &[frame(mac(1), mac(3), 0x0800, &[])])),
        vec![2]
    );
    r.now = 311;
    assert_eq!(r.fdb.age(r.now, r.snap.aging_secs), 1);
    assert_eq!(
        who_got(&r.run(3, &[frame(mac(1), mac(3), 0x0800, &[])])),
        vec![2, 4, 6]
    );
}

#[test]
fn per_port_limit_still_forwards() {
    let mut r = Rig::new();
    if let Some(Some(p)) = r.snap.ports.get_mut(2) {
        p.mac_limit = 2;
    }
    let frames: Vec<_> = (1..=4)
        .map(|i| frame(mac(99), mac(i), 0x0800, &[]))
        .collect();
    let sent = r.run(2, &frames);
    assert_eq!(sent[3].len(), 4); // all forwarded (flooded)
    assert_eq!(r.fdb.port_count(PortId(2)), 2);
    assert_eq!(r.fdb.refused.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn port_security_drops_spoofed_sources() {
    let mut r = Rig::new();
    if let Some(Some(p)) = r.snap.ports.get_mut(2) {
        p.security = Some(Security {
            mac: mac(2),
            ip: Some(Ipv4Addr::new(10, 1, 0, 2)),
            ip6: None,
        });
    }
    let frames = vec![
        // Own MAC, own IP: passes.
        frame(GW1, mac(2), 0x0800, &ipv4([10, 1, 0, 2], [10, 1, 0, 1])),
        // DHCP from 0.0.0.0: passes.
        frame(
            MacAddr::BROADCAST,
            mac(2),
            0x0800,
            &ipv4([0, 0, 0, 0], [255, 255, 255, 255]),
        ),
        // Someone else's MAC.
        frame(GW1, mac(3), 0x0800, &ipv4([10, 1, 0, 2], [10, 1, 0, 1])),
        // Someone else's IP.
        frame(GW1, mac(2), 0x0800, &ipv4([10, 1, 0, 3], [10, 1, 0, 1])),
        // ARP claiming another IP.
        frame(
            MacAddr::BROADCAST,
            mac(2),
            0x0806,
            &arp(mac(2), [10, 1, 0, 3], [10, 1, 0, 1]),
        ),
        // ARP with another sender MAC.
        frame(
            MacAddr::BROADCAST,
            mac(2),
            0x0806,
            &arp(mac(3), [10, 1, 0, 2], [10, 1, 0, 1]),
        ),
        // Truncated IPv4.
        frame(GW1, mac(2), 0x0800, &[0x45])[..20].to_vec(),
    ];
    let sent = r.run(2, &frames);
    assert_eq!(sent[0].len(), 2);
    let s = r.counters.read(PortId(2));
    assert_eq!(s.drop_count(DropReason::MacSpoof), 2);
    assert_eq!(s.drop_count(DropReason::IpSpoof), 2);
    assert_eq!(s.drop_count(DropReason::Malformed), 1);
    assert_eq!(s.rx_packets, 7);
}

fn udp4(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut p = ipv4(src, [255, 255, 255, 255]);
    p[3] = 28; // the IPv4 total length covers the UDP header
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

fn ipv6(src_first: u16, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, rest.len() as u8, next, 255];
    // mac(2)'s link-local for fe80; `::` when the first group is zero; else that
    // group and the same interface id.
    let mut src = crate::wire::ipv6::link_local(mac(2)).octets();
    src[..2].copy_from_slice(&src_first.to_be_bytes());
    if src_first == 0 {
        src = [0; 16];
    }
    p.extend_from_slice(&src);
    p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(rest);
    p
}

fn secure(r: &mut Rig, port: usize) {
    if let Some(Some(p)) = r.snap.ports.get_mut(port) {
        p.security = Some(Security {
            mac: mac(port as u8),
            ip: Some(Ipv4Addr::new(10, 1, 0, port as u8)),
            ip6: None,
        });
    }
}

#[test]
fn first_hop_guard_drops_rogue_servers_and_routers() {
    let mut r = Rig::new();
    secure(&mut r, 2);
    let b = MacAddr::BROADCAST;
    let m6 = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    let own = [10, 1, 0, 2];
    let frames = vec![
        // DHCP client (68 -> 67) and ordinary UDP pass.
        frame(b, mac(2), 0x0800, &udp4([0, 0, 0, 0], 68, 67)),
        frame(b, mac(2), 0x0800, &udp4(own, 5353, 53)),
        // Neighbour solicitation from fe80:: and DAD from :: pass.
        frame(m6, mac(2), 0x86dd, &ipv6(0xfe80, 58, &[135, 0, 0, 0])),
        frame(m6, mac(2), 0x86dd, &ipv6(0, 58, &[135, 0, 0, 0])),
        // A DHCP server's offer, a DHCPv6 server's advertise.
        frame(b, mac(2), 0x0800, &udp4(own, 67, 68)),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6(0xfe80, 17, &[2, 35, 2, 34, 0, 8, 0, 0]),
        ),
        // A router advertisement, a redirect, and an RA behind a destination option.
        frame(m6, mac(2), 0x86dd, &ipv6(0xfe80, 58, &[134, 0, 0, 0])),
        frame(m6, mac(2), 0x86dd, &ipv6(0xfe80, 58, &[137, 0, 0, 0])),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6(0xfe80, 60, &[58, 0, 1, 4, 0, 0, 0, 0, 134, 0, 0, 0]),
        ),
        // A global source; a chain pointing past the end.
        frame(m6, mac(2), 0x86dd, &ipv6(0x2001, 58, &[128, 0, 0, 0])),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6(0xfe80, 0, &[58, 40, 0, 0, 0, 0, 0, 0]),
        ),
    ];
    let sent = r.run(2, &frames);
    assert_eq!(sent[3].len(), 4);
    let s = r.counters.read(PortId(2));
    assert_eq!(s.drop_count(DropReason::DhcpGuard), 2);
    assert_eq!(s.drop_count(DropReason::RaGuard), 3);
    assert_eq!(s.drop_count(DropReason::IpSpoof), 1);
    assert_eq!(s.drop_count(DropReason::BadIpv6Chain), 1);
    // A port without port security (a VM, a nested bridge) is exempt.
    let sent = r.run(
        3,
        &[frame(
            m6,
            mac(3),
            0x86dd,
            &ipv6(0xfe80, 58, &[134, 0, 0, 0]),
        )],
    );
    assert_eq!(who_got(&sent), vec![2, 4, 6]);
}

/// IPv4 UDP from `src` with `payload`; `more` sets the more-fragments bit.
fn udp4_payload(src: [u8; 4], sport: u16, dport: u16, payload: &[u8], more: bool) -> Vec<u8> {
    let mut p = ipv4(src, [255, 255, 255, 255]);
    let total = (28 + payload.len()) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    if more {
        p[6] = 0x20;
    }
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A DHCP message with `op` and message type `t`.
fn dhcp_msg(op: u8, t: u8) -> Vec<u8> {
    use crate::wire::dhcp::{DhcpOption, DhcpPacket, HEADER_LEN, push_option};
    let mut m = vec![0u8; HEADER_LEN];
    let mut d = DhcpPacket::new_unchecked(&mut m[..]);
    d.set_op(op);
    d.set_ethernet();
    d.set_magic();
    push_option(&mut m, DhcpOption::MSG_TYPE, &[t]);
    m.push(DhcpOption::END);
    m
}

/// IPv6 UDP from fe80:: with a DHCPv6 message of type `t`.
fn udp6(sport: u16, dport: u16, t: u8) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 12, 0, 0, t, 1, 2, 3]);
    ipv6(0xfe80, 17, &u)
}

#[test]
fn dhcp_guard_knows_server_messages_by_meaning_from_any_port() {
    use crate::wire::dhcp::{MsgType, Op};
    use crate::wire::dhcpv6::MsgType as V6;
    let mut r = Rig::new();
    secure(&mut r, 2);
    let (b, m6) = (MacAddr::BROADCAST, MacAddr([0x33, 0x33, 0, 1, 0, 2]));
    let own = [10, 1, 0, 2];
    let v4 = |sport, dport, body: &[u8], more| {
        frame(
            b,
            mac(2),
            0x0800,
            &udp4_payload(own, sport, dport, body, more),
        )
    };
    let allowed = vec![
        // A client's DISCOVER and REQUEST, ordinary UDP that happens to start like a
        // BOOTREPLY on another port, a DHCPv6 SOLICIT, and UDP to 546 that is a
        // client's message.
        v4(68, 67, &dhcp_msg(Op::BOOTREQUEST, MsgType::DISCOVER), false),
        v4(68, 67, &dhcp_msg(Op::BOOTREQUEST, MsgType::REQUEST), false),
        v4(9999, 9999, &dhcp_msg(Op::BOOTREPLY, MsgType::OFFER), false),
        v4(9999, 53, &[2, 0, 0, 0], true),
        frame(m6, mac(2), 0x86dd, &udp6(546, 547, V6::SOLICIT)),
        frame(m6, mac(2), 0x86dd, &udp6(9999, 9999, V6::ADVERTISE)),
    ];
    let sent = r.run(2, &allowed);
    assert_eq!(sent[3].len(), allowed.len(), "allowed frames were dropped");
    let rogue = vec![
        // Offers, acks and naks from any port to a client (68) or relay (67).
        v4(9999, 68, &dhcp_msg(Op::BOOTREPLY, MsgType::OFFER), false),
        v4(9999, 68, &dhcp_msg(Op::BOOTREQUEST, MsgType::ACK), false),
        v4(9999, 67, &dhcp_msg(Op::BOOTREPLY, MsgType::NAK), false),
        // A BOOTREPLY without options (plain BOOTP), and one cut to its op byte.
        v4(9999, 68, &[Op::BOOTREPLY; 240], false),
        v4(9999, 68, &[Op::BOOTREPLY], false),
        // A first fragment to the client port: its options could hide further on.
        v4(
            9999,
            68,
            &dhcp_msg(Op::BOOTREQUEST, MsgType::DISCOVER),
            true,
        ),
        // From the server port, whatever it says.
        v4(67, 68, &dhcp_msg(Op::BOOTREQUEST, MsgType::DISCOVER), false),
        // DHCPv6 server messages from any port to a client (546) or relay (547).
        frame(m6, mac(2), 0x86dd, &udp6(9999, 546, V6::ADVERTISE)),
        frame(m6, mac(2), 0x86dd, &udp6(9999, 546, V6::REPLY)),
        frame(m6, mac(2), 0x86dd, &udp6(9999, 546, V6::RECONFIGURE)),
        frame(m6, mac(2), 0x86dd, &udp6(9999, 547, V6::RELAY_REPL)),
        frame(m6, mac(2), 0x86dd, &udp6(547, 9999, V6::SOLICIT)),
    ];
    let sent = r.run(2, &rogue);
    assert!(who_got(&sent).is_empty(), "a server message got through");
    let s = r.counters.read(PortId(2));
    assert_eq!(s.drop_count(DropReason::DhcpGuard), rogue.len() as u64);
}

#[test]
fn access_port_drops_double_tags_and_qinq() {
    let mut r = Rig::new();
    let b = MacAddr::BROADCAST;
    // Priority tag with a VLAN-20 tag behind it.
    let mut hop = tagged(b, mac(2), 0, &[]);
    hop[16..18].copy_from_slice(&[0x81, 0x00]);
    hop[18..22].copy_from_slice(&[0x00, 20, 0x08, 0x00]);
    // An 802.1ad outer tag.
    let mut qinq = tagged(b, mac(2), 20, &[]);
    qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
    // A priority tag with an 802.1ad tag behind it.
    let mut prio_ad = hop.clone();
    prio_ad[16..18].copy_from_slice(&[0x88, 0xa8]);
    let sent = r.run(2, &[hop.clone(), qinq, prio_ad]);
    assert!(who_got(&sent).is_empty());
    assert_eq!(
        r.counters.read(PortId(2)).drop_count(DropReason::DoubleTag),
        3
    );
    // A trunk still takes a tagged frame (its tag is the one popped).
    let sent = r.run(6, &[tagged(b, mac(60), 10, &[])]);
    assert_eq!(who_got(&sent), vec![0, 2, 3, 4]);
}

#[test]
fn gateway_share_keeps_room_for_quiet_ports() {
    let mut r = Rig::new();
    let gw_frames = |n: usize, src: MacAddr| -> Vec<Vec<u8>> {
        (0..n).map(|_| frame(GW1, src, 0x0800, &[])).collect()
    };
    // A busy ring (only the reserve left), two ports sending: a port past its light
    // share, the heaviest, is cut...
    r.room = GATEWAY_RESERVE;
    r.run(3, &gw_frames(1, mac(3)));
    for _ in 0..6 {
        r.run(2, &gw_frames(64, mac(2)));
    }
    let cut = r
        .counters
        .read(PortId(2))
        .drop_count(DropReason::ServiceQuota);
    assert_eq!(cut, 6 * 64 - u64::from(GATEWAY_LIGHT));
    // ...while a quiet port still gets its frames to the gateway, and so does a busy
    // one lighter than the heaviest (past its own light share).
    let sent = r.run(3, &gw_frames(2, mac(3)));
    assert_eq!(sent[0].len(), 2);
    for _ in 0..3 {
        r.run(4, &gw_frames(64, mac(4)));
    }
    assert_eq!(r.run(4, &gw_frames(10, mac(4)))[0].len(), 10);
    assert_eq!(
        r.counters
            .read(PortId(4))
            .drop_count(DropReason::ServiceQuota),
        0
    );
    assert_eq!(
        r.counters
            .read(PortId(3))
            .drop_count(DropReason::ServiceQuota),
        0
    );
    // With room, the busy port gets in again; a new second starts afresh.
    r.room = crate::port::ring::RING_SLOTS;
    assert_eq!(r.run(2, &gw_frames(8, mac(2)))[0].len(), 8);
    // A lone port (nobody else this second or the last) may fill the ring.
    r.now = 10;
    r.room = GATEWAY_RESERVE;
    for _ in 0..6 {
        assert_eq!(r.run(2, &gw_frames(64, mac(2)))[0].len(), 64);
    }
    // Work-conserving: with room, a lone port's burst of any size is never cut.
    for _ in 0..100 {
        assert_eq!(r.run(2, &gw_frames(64, mac(2)))[0].len(), 64);
    }
    assert_eq!(
        r.counters
            .read(PortId(2))
            .drop_count(DropReason::ServiceQuota),
        cut
    );
}

#[test]
fn no_icc_keeps_containers_apart_but_not_from_gateway() {
    let mut r = Rig::new();
    // 8 is learned first.
    r.run(8, &[frame(MacAddr::BROADCAST, mac(8), 0x0800, &[])]);
    let gw3 = MacAddr([0x02, 0x42, 10, 3, 0, 1]);
    let sent = r.run(
        7,
        &[
            frame(mac(8), mac(7), 0x0800, &[]),
            frame(MacAddr::BROADCAST, mac(7), 0x0806, &[]),
            frame(gw3, mac(7), 0x0800, &[]),
        ],
    );
    assert_eq!(who_got(&sent), vec![0]);
    assert_eq!(sent[0].len(), 2); // broadcast and gateway-MAC frame
    assert_eq!(r.counters.read(PortId(7)).drop_count(DropReason::Icc), 1);
    // The gateway may still reach container 7.
    r.run(7, &[frame(gw3, mac(7), 0x0800, &[])]);
    let sent = r.run_with_domain(0, &[frame(mac(7), gw3, 0x0800, &[])], 2);
    assert_eq!(who_got(&sent), vec![7]);
}

#[test]
fn gateway_frames_use_their_domain_and_are_not_learned() {
    let mut r = Rig::new();
    let gw2 = MacAddr([0x02, 0x42, 10, 2, 0, 1]);
    let sent = r.run_with_domain(0, &[frame(MacAddr::BROADCAST, gw2, 0x0806, &[])], 1);
    assert_eq!(who_got(&sent), vec![5, 6]);
    assert_eq!(r.fdb.len(), 0);
}

#[test]
fn same_port_and_bad_source_dropped() {
    let mut r = Rig::new();
    r.run(2, &[frame(mac(9), mac(1), 0x0800, &[])]);
    let sent = r.run(
        2,
        &[
            frame(mac(1), mac(5), 0x0800, &[]),
            frame(mac(3), MacAddr::BROADCAST, 0x0800, &[]),
            vec![0u8; 13],
        ],
    );
    assert!(who_got(&sent).is_empty());
    let s = r.counters.read(PortId(2));
    assert_eq!(s.drop_count(DropReason::SamePort), 1);
    assert_eq!(s.drop_count(DropReason::BadSrcMac), 1);
    assert_eq!(s.drop_count(DropReason::Malformed), 1);
}

#[test]
fn counters_count_rx_and_tx() {
    let mut r = Rig::new();
    r.run(
        2,
        &[
            frame(mac(3), mac(2), 0x0800, &[]),
            frame(mac(3), mac(2), 0x0800, &[]),
        ],
    );
    let s = r.counters.read(PortId(2));
    assert_eq!((s.rx_packets, s.rx_bytes), (2, 120));
    assert_eq!(r.counters.read(PortId(3)).tx_packets, 2);
}

#[test]
fn stale_generation_floods_instead_of_misdelivering() {
    let mut r = Rig::new();
    r.run(3, &[frame(mac(9), mac(1), 0x0800, &[])]);
    // Port 3 is re-created (new generation) in domain b.
    if let Some(Some(p)) = r.snap.ports.get_mut(3) {
        p.generation = Generation(1);
        p.mode = PortMode::Access {
            domain: DomainId(1),
        };
    }
    r.snap.rebuild();
    let sent = r.run(2, &[frame(mac(1), mac(2), 0x0800, &[])]);
    assert_eq!(who_got(&sent), vec![4, 6]);
}

#[test]
fn removed_ingress_port_drops_everything() {
    let mut r = Rig::new();
    r.snap.ports[4] = None;
    r.snap.rebuild();
    let sent = r.run(4, &[frame(MacAddr::BROADCAST, mac(4), 0x0800, &[])]);
    assert!(who_got(&sent).is_empty());
    assert_eq!(
        r.counters.read(PortId(4)).drop_count(DropReason::NoNetwork),
        1
    );
    let _ = FIRST_PORT;
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    /// The domain each port slot may carry frames of, for the isolation check.
    fn carried(r: &Rig, port: usize) -> Vec<DomainId> {
        (0..3u16)
            .map(DomainId)
            .filter(|d| {
                r.snap.port(PortId(port as u16)).is_some_and(|p| {
                    p.role == PortRole::Gateway
                        || p.egress_encap(*d, r.snap.domain(*d).and_then(|x| x.vlan))
                            .is_some()
                })
            })
            .collect()
    }

    fn domain_of_output(r: &Rig, port: usize, bytes: &[u8]) -> Option<DomainId> {
        if port == 0 {
            return None; // the gateway takes any domain, checked by frame.domain
        }
        let p = r.snap.port(PortId(port as u16))?;
        let tagged = bytes.len() >= 16 && bytes[12..14] == [0x81, 0x00];
        match &p.mode {
            PortMode::Access { domain } => {
                assert!(!tagged, "access port {port} sent a tagged frame");
                Some(*domain)
            }
            PortMode::Trunk { native, .. } => {
                if tagged {
                    VlanId::new(u16::from_be_bytes([bytes[14], bytes[15]]) & 0xfff)
                        .and_then(|v| r.snap.vlan_to_domain(v))
                } else {
                    *native
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random bytes in on any port never panic, and whatever comes out leaves
        /// on a port of the domain the frame came in on.
        #[test]
        fn random_frames_never_panic_or_cross_domains(
            frames in proptest::collection::vec(
                (2u16..9, proptest::collection::vec(any::<u8>(), 0..200), any::<bool>(), 0u16..40),
                1..64)
        ) {
            let mut r = Rig::new();
            for (port, mut bytes, tag, vid) in frames {
                // Bias towards plausible frames: known MACs and real tags.
                if bytes.len() >= 14 {
                    bytes[0] &= 0x03;
                    if tag {
                        bytes[12] = 0x81;
                        bytes[13] = 0x00;
                        if bytes.len() >= 16 {
                            bytes[14] = 0;
                            bytes[15] = (vid as u8) % 40;
                        }
                    }
                }
                let Some(in_domain) = ({
                    // The domain this frame would classify into, if any.
                    let p = r.snap.port(PortId(port)).unwrap();
                    let is_tagged = bytes.len() >= 16 && bytes[12..14] == [0x81, 0x00];
                    let vid = if bytes.len() >= 16 { u16::from_be_bytes([bytes[14], bytes[15]]) & 0xfff } else { 0 };
                    match &p.mode {
                        PortMode::Access { domain } => Some(*domain),
                        PortMode::Trunk { native, .. } => if is_tagged && vid != 0 { VlanId::new(vid).and_then(|v| r.snap.vlan_to_domain(v)) } else { *native },
                    }
                }) else {
                    r.run(port, &[bytes]);
                    continue;
                };
                let sent = r.run(port, &[bytes]);
                for (out_port, frames) in sent.iter().enumerate() {
                    for f in frames {
                        prop_assert!(carried(&r, out_port).contains(&in_domain) || out_port == 0);
                        if let Some(d) = domain_of_output(&r, out_port, f) {
                            prop_assert_eq!(d, in_domain, "frame from port {} left on port {}", port, out_port);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn too_big_looks_at_df_and_at_segments_of_super_frames() {
    use super::route::{punt_before_nat, too_big};
    use crate::wire::Ipv4Packet;
    // IPv4 header: 1400 bytes total, DF, TCP; then a TCP header with doff 8 (32 B).
    // The buffer holds the largest length used below.
    let mut ip = vec![0u8; 65000];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&1400u16.to_be_bytes());
    ip[6] = 0x40;
    ip[9] = 6;
    ip[20 + 12] = 8 << 4;
    let v = |ip: &[u8]| Ipv4Packet::new_checked(ip.to_vec()).unwrap();
    let plain = VnetHdr::default();
    assert!(too_big(&v(&ip), &plain, 1280));
    assert!(!too_big(&v(&ip), &plain, 1400));
    // Without DF a router may fragment: not "too big".
    ip[6] = 0;
    assert!(!too_big(&v(&ip), &plain, 1280));
    ip[6] = 0x40;
    // A 64 KB TCP super-frame whose segments are 20 + 32 + 1448 = 1500 bytes.
    ip[2..4].copy_from_slice(&65000u16.to_be_bytes());
    let tso = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: 1448,
        ..VnetHdr::default()
    };
    assert!(!too_big(&v(&ip), &tso, 1500));
    assert!(too_big(&v(&ip), &tso, 1499));
    // A super-frame holding one short segment is judged by its length.
    ip[2..4].copy_from_slice(&1000u16.to_be_bytes());
    assert!(!too_big(&v(&ip), &tso, 1280));
    // Truncated headers are not judged: they fail the view the route stage checks
    // first (and are dropped as malformed there), so they never reach the judgement.
    assert!(Ipv4Packet::new_checked(&mut ip[..4]).is_err());
    let ext = Ipv4Addr::new(198, 51, 100, 2);
    let mut whole = Ipv4Packet::new_checked(&mut ip[..]).unwrap();
    assert_eq!(
        punt_before_nat(&mut whole, &plain, 68, ext),
        Ok(Some(crate::port::Punt::TooBig))
    );
}

mod nat_prop {
    use super::*;
    use crate::config::{UPLINK_DOMAIN, UplinkConf};
    use crate::nat::{DnatRule, DnatRules};
    use crate::wire::IpProtocol::Tcp as TCP;
    use proptest::prelude::*;

    const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

    /// The rig with a packet uplink on port 1: next hop resolved, port 2's address
    /// published as TCP 8080 -> 80.
    fn uplink_rig() -> (Rig, Nat, Neighbours) {
        let mut r = Rig::new();
        r.snap.ports[1] = Some(PortConf {
            name: "uplink".into(),
            generation: Generation(0),
            role: PortRole::Uplink,
            mode: PortMode::Access {
                domain: UPLINK_DOMAIN,
            },
            security: None,
            mac_limit: 0,
            kernel: false,
            limits: Default::default(),
        });
        r.snap.uplink = Some(UplinkConf {
            ext_ip: EXT,
            ext_mac: MacAddr::from_ipv4(EXT),
            subnet: Ipv4Addr::new(198, 51, 100, 0),
            prefix_len: 24,
            next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
            mtu: 1500,
            rules: DnatRules::new(vec![DnatRule {
                proto: TCP,
                ext_port: 8080,
                domain: 0,
                ip: INSIDE,
                port: 80,
            }]),
            v6: None,
            hosts: vec![(DomainId(0), INSIDE, mac(2))],
        });
        r.snap.rebuild();
        let neigh = Neighbours::default();
        neigh.set_next_hop(Some(MacAddr([0x02, 0, 0, 0, 0, 0x99])));
        (r, Nat::new(64), neigh)
    }

    /// An Ethernet + IPv4 frame with a random rest, made plausible enough to reach
    /// the translation code: version/IHL, protocol, addresses and ports biased.
    fn packet(
        dst_mac: MacAddr,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        mut rest: Vec<u8>,
    ) -> Vec<u8> {
        let mut f = Vec::with_capacity(34 + rest.len());
        f.extend_from_slice(&dst_mac.0);
        f.extend_from_slice(&mac(2).0);
        f.extend_from_slice(&[0x08, 0x00]);
        rest.resize(rest.len().max(28), 0);
        let total = (20 + rest.len()) as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        let c = crate::wire::checksum::fold(crate::wire::checksum::sum(&ip));
        ip[10..12].copy_from_slice(&(!c).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&rest);
        f
    }

    /// The rig and the packet builder do reach translation (so the property below
    /// is not vacuous): a UDP packet goes out translated, its reply comes back in.
    #[test]
    fn rig_translates_both_ways() {
        let (mut r, nat, neigh) = uplink_rig();
        let far = Ipv4Addr::new(203, 0, 113, 9);
        let mut udp = vec![0u8; 28];
        udp[0..2].copy_from_slice(&5000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        udp[4..6].copy_from_slice(&28u16.to_be_bytes());
        let gw = MacAddr([0x02, 0x42, 10, 1, 0, 1]);
        let f = packet(gw, INSIDE, far, 17, udp.clone());
        let sent = r.run_full(2, &[f], 0, Some((&nat, &neigh)));
        assert_eq!(sent[1].len(), 1, "{sent:?}");
        let out = &sent[1][0];
        assert_eq!(out[26..30], EXT.octets());
        let eport = [out[34], out[35]];
        let mut back = udp;
        back[0..2].copy_from_slice(&53u16.to_be_bytes());
        back[2..4].copy_from_slice(&eport);
        let f = packet(MacAddr::from_ipv4(EXT), far, EXT, 17, back);
        let sent = r.run_full(1, &[f], 0, Some((&nat, &neigh)));
        assert_eq!(sent[2].len(), 1, "{sent:?}");
        assert_eq!(sent[2][0][30..34], INSIDE.octets());
        assert_eq!(sent[2][0][36..38], 5000u16.to_be_bytes());
    }

    /// A TCP header from `sport` to `dport` with `flags`.
    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        t
    }

    /// A container reaching the uplink's own address: a closed port or a ping is the
    /// gateway's to answer, untranslated and with no flow made; a published port is
    /// hairpinned (the positive control).
    #[test]
    fn the_uplink_address_from_inside_is_the_gateways_but_for_published_ports() {
        let (mut r, nat, neigh) = uplink_rig();
        let gw = MacAddr([0x02, 0x42, 10, 1, 0, 1]);
        let closed = packet(gw, INSIDE, EXT, 6, tcp(40000, 9, 0x02));
        let ping = packet(gw, INSIDE, EXT, 1, vec![8, 0, 0, 0, 0, 7, 0, 1]);
        let udp = packet(
            gw,
            INSIDE,
            EXT,
            17,
            udp4(INSIDE.octets(), 5000, 53)[20..].to_vec(),
        );
        for f in [closed, ping, udp] {
            let sent = r.run_full(2, std::slice::from_ref(&f), 0, Some((&nat, &neigh)));
            assert_eq!(who_got(&sent), vec![0], "{sent:?}");
            assert_eq!(sent[0][0], f, "untranslated, TTL untouched");
        }
        assert!(nat.table.is_empty(), "no flow made");
        let published = packet(gw, INSIDE, EXT, 6, tcp(40001, 8080, 0x02));
        let sent = r.run_full(2, &[published], 0, Some((&nat, &neigh)));
        assert_eq!(who_got(&sent), vec![2], "hairpinned: {sent:?}");
        assert_eq!(sent[2][0][26..30], EXT.octets());
        assert_eq!(sent[2][0][30..34], INSIDE.octets());
        assert_eq!(sent[2][0][36..38], 80u16.to_be_bytes());
        // The published port's reply (to the uplink's address too) takes its flow.
        let back_port = u16::from_be_bytes([sent[2][0][34], sent[2][0][35]]);
        let reply = packet(gw, INSIDE, EXT, 6, tcp(80, back_port, 0x12));
        let sent = r.run_full(2, &[reply], 0, Some((&nat, &neigh)));
        assert_eq!(who_got(&sent), vec![2], "the reply hairpinned: {sent:?}");
        assert_eq!(sent[2][0][36..38], 40001u16.to_be_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Random traffic both ways through the packet uplink never panics; what
        /// leaves on the uplink always carries the uplink's address as its source,
        /// and what comes in reaches only the published container's domain.
        #[test]
        fn nat_path_never_panics_and_always_translates(
            pkts in proptest::collection::vec(
                (any::<bool>(), prop_oneof![Just(1u8), Just(6u8), Just(17u8), any::<u8>()],
                 any::<u32>(), proptest::collection::vec(any::<u8>(), 0..120), any::<bool>()),
                1..48)
        ) {
            let (mut r, nat, neigh) = uplink_rig();
            for (outbound, proto, addr, mut rest, to_published) in pkts {
                if to_published && rest.len() >= 4 {
                    rest[2..4].copy_from_slice(&8080u16.to_be_bytes());
                }
                let sent = if outbound {
                    let dst = Ipv4Addr::from(addr | 0x0100_0000);
                    let f = packet(MacAddr([0x02, 0x42, 10, 1, 0, 1]), INSIDE, dst, proto, rest);
                    r.run_full(2, &[f], 0, Some((&nat, &neigh)))
                } else {
                    let f = packet(MacAddr::from_ipv4(EXT), Ipv4Addr::from(addr), EXT, proto, rest);
                    r.run_full(1, &[f], 0, Some((&nat, &neigh)))
                };
                for f in &sent[1] {
                    prop_assert_eq!(f.get(26..30), Some(&EXT.octets()[..]), "untranslated out");
                }
                for p in [5usize, 7, 8] {
                    prop_assert!(sent[p].is_empty(), "frame reached port {}", p);
                }
            }
        }
    }
}

/// An IPv6 packet from `src` to ff02::1 carrying `next` and `rest`.
fn ipv6_from(src: std::net::Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = ipv6(0, next, rest);
    p[8..24].copy_from_slice(&src.octets());
    p
}

/// A neighbour advertisement (or solicitation, `ty` 135) for `target` with a
/// link-layer address option `ll`.
fn nd(ty: u8, target: std::net::Ipv6Addr, ll: MacAddr) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0, 0x20, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[if ty == 136 { 2 } else { 1 }, 1]);
    m.extend_from_slice(&ll.0);
    m
}

fn secure6(r: &mut Rig, port: usize, ip6: &str) {
    if let Some(Some(p)) = r.snap.ports.get_mut(port) {
        p.security = Some(Security {
            mac: mac(port as u8),
            ip: None,
            ip6: Some(ip6.parse().unwrap()),
        });
    }
}

#[test]
fn ipv6_port_security_allows_own_link_local_and_address_only() {
    use crate::wire::ipv6::link_local;
    let mut r = Rig::new();
    secure6(&mut r, 2, "2001:db8:1::2");
    let m6 = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    let own: std::net::Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    let udp = [0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0];
    let frames = vec![
        // Its address, its link-local, :: pass.
        frame(m6, mac(2), 0x86dd, &ipv6_from(own, 17, &udp)),
        frame(m6, mac(2), 0x86dd, &ipv6_from(link_local(mac(2)), 17, &udp)),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from("::".parse().unwrap(), 58, &[143, 0, 0, 0]),
        ),
        // Another port's address, another MAC's link-local, a made-up link-local.
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from("2001:db8:1::3".parse().unwrap(), 17, &udp),
        ),
        frame(m6, mac(2), 0x86dd, &ipv6_from(link_local(mac(3)), 17, &udp)),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from("fe80::1".parse().unwrap(), 17, &udp),
        ),
        // IPv4 from a port IPAM gave only IPv6: only 0.0.0.0 passes.
        frame(GW1, mac(2), 0x0800, &ipv4([10, 1, 0, 2], [10, 1, 0, 1])),
    ];
    let sent = r.run(2, &frames);
    assert_eq!(sent[3].len(), 3);
    let s = r.counters.read(PortId(2));
    assert_eq!(s.drop_count(DropReason::IpSpoof), 4);
}

#[test]
fn neighbour_discovery_guard_holds_a_port_to_its_own_addresses() {
    use crate::wire::ipv6::link_local;
    let mut r = Rig::new();
    secure6(&mut r, 2, "2001:db8:1::2");
    let m6 = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    let ll = link_local(mac(2));
    let own: std::net::Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    let other: std::net::Ipv6Addr = "2001:db8:1::3".parse().unwrap();
    let frames = vec![
        // Advertisements of its own addresses with its MAC; a solicitation with it.
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from(ll, 58, &nd(136, own, mac(2))),
        ),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from(own, 58, &nd(136, ll, mac(2))),
        ),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from(ll, 58, &nd(135, other, mac(2))),
        ),
        // Advertising another's address; its own with another's MAC; soliciting with
        // another's MAC (neighbour cache poisoning, all three).
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from(ll, 58, &nd(136, other, mac(2))),
        ),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from(ll, 58, &nd(136, own, mac(3))),
        ),
        frame(
            m6,
            mac(2),
            0x86dd,
            &ipv6_from(ll, 58, &nd(135, other, mac(3))),
        ),
    ];
    let sent = r.run(2, &frames);
    assert_eq!(sent[3].len(), 3);
    assert_eq!(
        r.counters.read(PortId(2)).drop_count(DropReason::NdSpoof),
        3
    );
}

#[test]
fn from_the_unspecified_address_only_probes_of_its_own_addresses_solicitations_and_reports() {
    use crate::wire::ipv6::link_local;
    let mut r = Rig::new();
    secure6(&mut r, 2, "2001:db8:1::2");
    let m6 = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    let any: std::net::Ipv6Addr = "::".parse().unwrap();
    let own: std::net::Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    let other: std::net::Ipv6Addr = "2001:db8:1::3".parse().unwrap();
    let udp = [0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0];
    let v6 = |payload: Vec<u8>| frame(m6, mac(2), 0x86dd, &payload);
    let frames = vec![
        // Duplicate address detection of its address and its link-local, a router
        // solicitation, an MLDv2 report: pass.
        v6(ipv6_from(any, 58, &nd(135, own, mac(2)))),
        v6(ipv6_from(any, 58, &nd(135, link_local(mac(2)), mac(2)))),
        v6(ipv6_from(any, 58, &[133, 0, 0, 0, 0, 0, 0, 0])),
        v6(ipv6_from(any, 58, &[143, 0, 0, 0])),
        // A probe of another port's address (a duplicate address detection attack).
        v6(ipv6_from(any, 58, &nd(135, other, mac(2)))),
        // Anything else from :: is a spoof: UDP, an echo request.
        v6(ipv6_from(any, 17, &udp)),
        v6(ipv6_from(any, 58, &[128, 0, 0, 0, 0, 1, 0, 1])),
    ];
    let sent = r.run(2, &frames);
    assert_eq!(sent[3].len(), 4);
    let s = r.counters.read(PortId(2));
    assert_eq!(s.drop_count(DropReason::NdSpoof), 1);
    assert_eq!(s.drop_count(DropReason::IpSpoof), 2);
}

#[test]
fn the_gateway_hears_the_ipv6_groups_it_listens_to() {
    use crate::config::Net6;
    let mut r = Rig::new();
    if let Some(Some(d)) = r.snap.domains.get_mut(0) {
        d.v6 = Some(Net6::of("2001:db8:1::1".parse().unwrap(), 64));
    }
    r.snap.rebuild();
    let ll = crate::wire::ipv6::link_local(GW1);
    let groups = [
        // All routers (router solicitation), all DHCPv6 agents, the solicited-node
        // groups of ::1 and of the gateway's link-local.
        MacAddr([0x33, 0x33, 0, 0, 0, 2]),
        MacAddr([0x33, 0x33, 0, 1, 0, 2]),
        MacAddr([0x33, 0x33, 0xff, 0, 0, 1]),
        MacAddr([
            0x33,
            0x33,
            0xff,
            ll.octets()[13],
            ll.octets()[14],
            ll.octets()[15],
        ]),
    ];
    for g in groups {
        let sent = r.run(2, &[frame(g, mac(2), 0x86dd, &ipv6(0xfe80, 59, &[]))]);
        assert_eq!(who_got(&sent), vec![0, 3, 4, 6], "{g}");
    }
    // mDNS and all nodes: flooded, not the gateway's.
    for g in [
        MacAddr([0x33, 0x33, 0, 0, 0, 0xfb]),
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
    ] {
        let sent = r.run(2, &[frame(g, mac(2), 0x86dd, &ipv6(0xfe80, 59, &[]))]);
        assert_eq!(who_got(&sent), vec![3, 4, 6], "{g}");
    }
    // A network without IPv6 keeps them from the gateway.
    let sent = r.run(
        5,
        &[frame(groups[0], mac(5), 0x86dd, &ipv6(0xfe80, 59, &[]))],
    );
    assert!(!who_got(&sent).contains(&0));
}

/// Router solicitations and MLD reports (for routers alone) skip containers' secured
/// access ports, which are hosts; other IPv6 multicast still reaches every member.
#[test]
fn ipv6_router_groups_skip_secured_hosts() {
    let mut r = Rig::new();
    if let Some(Some(p)) = r.snap.ports.get_mut(3) {
        p.security = Some(Security {
            mac: mac(3),
            ip: Some(Ipv4Addr::new(10, 1, 0, 3)),
            ip6: None,
        });
    }
    r.snap.rebuild();
    let six = |dst| frame(MacAddr(dst), mac(2), 0x86dd, &[0x60, 0, 0, 0]);
    // The positive control: all-nodes multicast reaches the secured port 3 too.
    let sent = r.run(2, &[six([0x33, 0x33, 0, 0, 0, 1])]);
    assert_eq!(who_got(&sent), vec![3, 4, 6]);
    for group in [MacAddr::IPV6_ALL_ROUTERS, MacAddr::IPV6_MLDV2_ROUTERS] {
        let sent = r.run(2, &[six(group.0)]);
        // Port 4 (no port security) and the trunk may be routers; 3 is a host.
        assert_eq!(who_got(&sent), vec![4, 6], "{group}");
    }
}

fn secure_at(r: &mut Rig, port: usize, ip: [u8; 4]) {
    if let Some(Some(p)) = r.snap.ports.get_mut(port) {
        p.security = Some(Security {
            mac: mac(port as u8),
            ip: Some(Ipv4Addr::from(ip)),
            ip6: None,
        });
    }
    r.snap.rebuild();
}

fn arp_request(from: u8, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    frame(
        MacAddr::BROADCAST,
        mac(from),
        0x0806,
        &arp(mac(from), spa, tpa),
    )
}

/// An ARP request for an address IPAM gave a secured port goes to that port (and the
/// gateway, and the members that may be anything) instead of every host of the network;
/// one for an unknown address is flooded as before.
#[test]
fn arp_requests_for_known_owners_are_directed() {
    let mut r = Rig::new();
    secure_at(&mut r, 3, [10, 1, 0, 3]);
    secure_at(&mut r, 4, [10, 1, 0, 4]);
    // The positive control: an unknown address reaches every member.
    let sent = r.run(2, &[arp_request(2, [10, 1, 0, 2], [10, 1, 0, 99])]);
    assert_eq!(who_got(&sent), vec![0, 3, 4, 6]);
    // Port 3's address: port 3, the gateway and the trunk; not port 4.
    let sent = r.run(2, &[arp_request(2, [10, 1, 0, 2], [10, 1, 0, 3])]);
    assert_eq!(who_got(&sent), vec![0, 3, 6]);
    // The gateway's address: the gateway (and the trunk) alone.
    let sent = r.run(2, &[arp_request(2, [10, 1, 0, 2], [10, 1, 0, 1])]);
    assert_eq!(who_got(&sent), vec![0, 6]);
    // A port probing its own address asks everyone.
    let sent = r.run(3, &[arp_request(3, [0, 0, 0, 0], [10, 1, 0, 3])]);
    assert_eq!(who_got(&sent), vec![0, 2, 4, 6]);
    // Replies are unicast, as before.
    let reply = frame(
        mac(2),
        mac(3),
        0x0806,
        &arp(mac(3), [10, 1, 0, 3], [10, 1, 0, 2]),
    );
    assert_eq!(who_got(&r.run(3, &[reply])), vec![2]);
}

/// With inter-container traffic off, a directed request reaches no other container.
#[test]
fn directed_arp_keeps_no_icc_isolation() {
    let mut r = Rig::new();
    secure_at(&mut r, 7, [10, 3, 0, 7]);
    secure_at(&mut r, 8, [10, 3, 0, 8]);
    let sent = r.run_with_domain(7, &[arp_request(7, [10, 3, 0, 7], [10, 3, 0, 8])], 2);
    assert_eq!(who_got(&sent), vec![0]);
}

/// Two ports claiming one address: neither owns it, requests for it are flooded.
#[test]
fn a_doubly_claimed_address_is_flooded() {
    let mut r = Rig::new();
    secure_at(&mut r, 3, [10, 1, 0, 9]);
    secure_at(&mut r, 4, [10, 1, 0, 9]);
    let sent = r.run(2, &[arp_request(2, [10, 1, 0, 2], [10, 1, 0, 9])]);
    assert_eq!(who_got(&sent), vec![0, 3, 4, 6]);
}

/// A neighbour solicitation goes to the secured ports listening to its solicited-node
/// group (their EUI-64 link-local, their IPv6 address) and to the members that may be
/// anything, not to every host of the network.
#[test]
fn neighbour_solicitations_are_directed_to_their_group() {
    use crate::wire::ipv6;
    let mut r = Rig::new();
    secure_at(&mut r, 3, [10, 1, 0, 3]);
    secure_at(&mut r, 4, [10, 1, 0, 4]);
    let ip6 = "fd00::4:77".parse::<std::net::Ipv6Addr>().unwrap();
    if let Some(Some(p)) = r.snap.ports.get_mut(4)
        && let Some(s) = p.security.as_mut()
    {
        s.ip6 = Some(ip6);
    }
    r.snap.rebuild();
    let ns = |target: std::net::Ipv6Addr| {
        let group = ipv6::multicast_mac(&ipv6::solicited_node(&target));
        frame(group, mac(2), 0x86dd, &[0x60, 0, 0, 0])
    };
    // The positive control: all-nodes multicast reaches every member.
    let all = frame(MacAddr([0x33, 0x33, 0, 0, 0, 1]), mac(2), 0x86dd, &[0x60]);
    assert_eq!(who_got(&r.run(2, &[all])), vec![3, 4, 6]);
    // Port 3's link-local: port 3 and the trunk.
    assert_eq!(
        who_got(&r.run(2, &[ns(ipv6::link_local(mac(3)))])),
        vec![3, 6]
    );
    // Port 4's IPv6 address: port 4 and the trunk.
    assert_eq!(who_got(&r.run(2, &[ns(ip6)])), vec![4, 6]);
    // An address no secured port may use: only the members that may be anything.
    let nobody = "fd00::dead:beef".parse().unwrap();
    assert_eq!(who_got(&r.run(2, &[ns(nobody)])), vec![6]);
}

/// IPv6 through the packet uplink: NAT66 and the routed mode on the fast path, and
/// what is punted to the gateway.
mod nat6 {
    use super::*;
    use crate::config::{UPLINK_DOMAIN, Uplink6, UplinkConf};
    use crate::nat::{DnatRule, DnatRules};
    use crate::wire::Ipv6Cidr;
    use std::net::Ipv6Addr;

    const EXT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
    const INSIDE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
    const FAR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9);
    /// A second container (port 3), without a published port.
    const OTHER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3);
    const HOP: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
    const GW: MacAddr = MacAddr([0x02, 0x42, 10, 1, 0, 1]);

    /// The rig with a packet uplink carrying IPv6 on port 1 (next hop resolved);
    /// network 0's IPv6 routed as it is when `routed`, else masqueraded; port 2's
    /// container publishes UDP port 80 as 8080 (DNAT66).
    fn rig6(routed: bool, mtu: u16) -> (Rig, Nat, Neighbours) {
        let mut r = Rig::new();
        r.snap.ports[1] = Some(PortConf {
            name: "uplink".into(),
            generation: Generation(0),
            role: PortRole::Uplink,
            mode: PortMode::Access {
                domain: UPLINK_DOMAIN,
            },
            security: None,
            mac_limit: 0,
            kernel: false,
            limits: Default::default(),
        });
        let ext = Ipv4Addr::new(198, 51, 100, 2);
        r.snap.uplink = Some(UplinkConf {
            ext_ip: ext,
            ext_mac: MacAddr::from_ipv4(ext),
            subnet: Ipv4Addr::new(198, 51, 100, 0),
            prefix_len: 24,
            next_hop: None,
            mtu,
            rules: Default::default(),
            v6: Some(
                Uplink6::new(
                    Ipv6Cidr::new(EXT6, 64),
                    Some(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1)),
                    &[Ipv6Cidr::new(INSIDE6, 64).network()],
                    if routed { vec![DomainId(0)] } else { vec![] },
                    &[
                        (DomainId(0), INSIDE6, mac(2)),
                        (DomainId(0), OTHER6, mac(3)),
                    ],
                )
                .with_rules(DnatRules::new(vec![DnatRule {
                    proto: crate::wire::IpProtocol::Udp,
                    ext_port: 8080,
                    domain: 0,
                    ip: INSIDE6,
                    port: 80,
                }])),
            ),
            hosts: vec![],
        });
        if let Some(Some(d)) = r.snap.domains.get_mut(0) {
            d.egress = !routed;
            d.v6 = Some(crate::config::Net6::of(
                Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1),
                64,
            ));
        }
        r.snap.rebuild();
        let neigh = Neighbours::default();
        neigh.v6.set_next_hop(Some(HOP));
        (r, Nat::new(64), neigh)
    }

    /// An Ethernet frame of an IPv6/UDP packet of `len` payload bytes.
    fn udp6(
        macs: (MacAddr, MacAddr),
        src: (Ipv6Addr, u16),
        dst: (Ipv6Addr, u16),
        len: usize,
    ) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&macs.0.0);
        f.extend_from_slice(&macs.1.0);
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&crate::gateway::udp6_packet(src, dst, &vec![7u8; len]).unwrap());
        f
    }

    fn addrs(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, u8) {
        let ip = crate::wire::Ipv6Packet::new_checked(&f[14..]).unwrap();
        (ip.src(), ip.dst(), ip.hop_limit())
    }

    #[test]
    fn nat66_out_and_back_in_on_the_fast_path() {
        let (mut r, nat, neigh) = rig6(false, 1500);
        let f = udp6((GW, mac(2)), (INSIDE6, 5000), (FAR, 53), 10);
        let sent = r.run_full(2, &[f], 0, Some((&nat, &neigh)));
        assert_eq!(who_got(&sent), vec![1], "{sent:?}");
        let out = &sent[1][0];
        assert_eq!(out[0..6], HOP.0);
        let (src, dst, hops) = addrs(out);
        assert_eq!((src, dst), (EXT6, FAR));
        assert_eq!(hops, 63, "hop limit stepped");
        let eport = u16::from_be_bytes([out[54], out[55]]);
        let ext_mac = MacAddr::from_ipv4(Ipv4Addr::new(198, 51, 100, 2));
        let back = udp6((ext_mac, HOP), (FAR, 53), (EXT6, eport), 10);
        let sent = r.run_full(1, &[back], 0, Some((&nat, &neigh)));
        assert_eq!(who_got(&sent), vec![2], "{sent:?}");
        assert_eq!(addrs(&sent[2][0]).1, INSIDE6);
        assert_eq!(sent[2][0][0..6], mac(2).0);
        // Nothing known: dropped on the way in, but for the uplink's own address it is
        // the gateway's (a closed port, a ping).
        let stray = udp6((ext_mac, HOP), (FAR, 53), (INSIDE6, 5000), 10);
        assert!(who_got(&r.run_full(1, &[stray], 0, Some((&nat, &neigh)))).is_empty());
        let to_us = udp6((ext_mac, HOP), (FAR, 53), (EXT6, 9), 10);
        assert_eq!(
            who_got(&r.run_full(1, &[to_us], 0, Some((&nat, &neigh)))),
            vec![0]
        );
    }

    #[test]
    fn routed_ipv6_passes_as_it_is_and_lets_only_replies_in() {
        let (mut r, nat, neigh) = rig6(true, 1500);
        let ext_mac = MacAddr::from_ipv4(Ipv4Addr::new(198, 51, 100, 2));
        let probe = udp6((ext_mac, HOP), (FAR, 53), (INSIDE6, 5000), 10);
        assert!(
            who_got(&r.run_full(1, std::slice::from_ref(&probe), 0, Some((&nat, &neigh))))
                .is_empty()
        );
        let f = udp6((GW, mac(2)), (INSIDE6, 5000), (FAR, 53), 10);
        let sent = r.run_full(2, &[f], 0, Some((&nat, &neigh)));
        assert_eq!(addrs(&sent[1][0]).0, INSIDE6, "not rewritten");
        let sent = r.run_full(1, &[probe], 0, Some((&nat, &neigh)));
        assert_eq!(who_got(&sent), vec![2], "the reply comes in");
    }

    /// A routed network routes only its own prefix's sources: a foreign source (a
    /// port without port security may send one) is dropped and counted, untracked;
    /// the network's own address passes (the positive control). A masqueraded
    /// network translates any source.
    #[test]
    fn routed_ipv6_drops_sources_outside_the_networks_prefix() {
        let foreign = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 2);
        let (mut r, nat, neigh) = rig6(true, 1500);
        let f = udp6((GW, mac(2)), (foreign, 5000), (FAR, 53), 10);
        assert!(who_got(&r.run_full(2, &[f], 0, Some((&nat, &neigh)))).is_empty());
        let drops = r.counters.read(PortId(2));
        assert_eq!(drops.drop_count(DropReason::SourceOutsideNetwork), 1);
        assert!(nat.table6.is_empty(), "not tracked");
        let f = udp6((GW, mac(2)), (INSIDE6, 5000), (FAR, 53), 10);
        let sent = r.run_full(2, &[f], 0, Some((&nat, &neigh)));
        assert_eq!(who_got(&sent), vec![1], "its own address is routed");
        assert_eq!(addrs(&sent[1][0]).0, INSIDE6);
        let (mut r, nat, neigh) = rig6(false, 1500);
        let f = udp6((GW, mac(2)), (foreign, 5000), (FAR, 53), 10);
        let sent = r.run_full(2, &[f], 0, Some((&nat, &neigh)));
        assert_eq!(addrs(&sent[1][0]).0, EXT6, "masqueraded");
    }

    #[test]
    fn too_big_and_last_hop_go_to_the_gateway_and_link_local_is_not_routed() {
        let (mut r, nat, neigh) = rig6(false, 1280);
        let big = udp6((GW, mac(2)), (INSIDE6, 5000), (FAR, 53), 1300);
        assert_eq!(
            who_got(&r.run_full(2, &[big], 0, Some((&nat, &neigh)))),
            vec![0]
        );
        let mut last = udp6((GW, mac(2)), (INSIDE6, 5000), (FAR, 53), 10);
        last[21] = 1;
        assert_eq!(
            who_got(&r.run_full(2, &[last], 0, Some((&nat, &neigh)))),
            vec![0]
        );
        let ll = crate::wire::ipv6::link_local(mac(2));
        let f = udp6((GW, mac(2)), (ll, 5000), (FAR, 53), 10);
        assert_eq!(
            who_got(&r.run_full(2, &[f], 0, Some((&nat, &neigh)))),
            vec![0]
        );
        assert!(nat.table6.is_empty(), "nothing tracked");
    }

    fn src_port(f: &[u8]) -> u16 {
        u16::from_be_bytes([f[54], f[55]])
    }

    /// Sends `frames` in on `port` through the NAT; returns what each port sent.
    fn through(
        r: &mut Rig,
        (nat, neigh): (&Nat, &Neighbours),
        port: u16,
        f: Vec<u8>,
    ) -> Vec<Vec<Vec<u8>>> {
        r.run_full(port, &[f], 0, Some((nat, neigh)))
    }

    #[test]
    fn dnat66_from_outside_reaches_the_container_and_the_reply_leaves_from_the_port() {
        for routed in [false, true] {
            let (mut r, nat, neigh) = rig6(routed, 1500);
            let nn = (&nat, &neigh);
            let ext_mac = MacAddr::from_ipv4(Ipv4Addr::new(198, 51, 100, 2));
            // The container's MAC learned (else the first frame floods its network).
            through(&mut r, nn, 2, udp6((GW, mac(2)), (INSIDE6, 1), (FAR, 9), 1));
            let q = udp6((ext_mac, HOP), (FAR, 4000), (EXT6, 8080), 10);
            let sent = through(&mut r, nn, 1, q);
            assert_eq!(who_got(&sent), vec![2], "routed {routed}: {sent:?}");
            let (src, dst, _) = addrs(&sent[2][0]);
            assert_eq!((src, dst), (FAR, INSIDE6), "the client's address kept");
            let a = udp6((GW, mac(2)), (INSIDE6, 80), (FAR, 4000), 10);
            let sent = through(&mut r, nn, 2, a);
            assert_eq!(who_got(&sent), vec![1]);
            let out = &sent[1][0];
            assert_eq!((addrs(out).0, addrs(out).1), (EXT6, FAR));
            assert_eq!(src_port(out), 8080, "from the published port");
            // A closed port: the gateway's to refuse (port unreachable).
            let closed = udp6((ext_mac, HOP), (FAR, 4000), (EXT6, 8081), 10);
            assert_eq!(who_got(&through(&mut r, nn, 1, closed)), vec![0]);
            // The container port at the container's address: open on a routed network
            // (Docker's routed mode), only replies on a masqueraded one.
            let direct = udp6((ext_mac, HOP), (FAR, 4001), (INSIDE6, 80), 10);
            let want: Vec<usize> = if routed { vec![2] } else { vec![] };
            assert_eq!(who_got(&through(&mut r, nn, 1, direct)), want);
        }
    }

    #[test]
    fn hairpin6_reaches_a_published_port_from_another_container_and_back() {
        for routed in [false, true] {
            hairpin6_on(routed);
        }
    }

    /// Hairpin on a masqueraded or a routed network: masqueraded behind the uplink's
    /// address either way.
    fn hairpin6_on(routed: bool) {
        let (mut r, nat, neigh) = rig6(routed, 1500);
        let nn = (&nat, &neigh);
        through(&mut r, nn, 2, udp6((GW, mac(2)), (INSIDE6, 1), (FAR, 9), 1));
        let q = udp6((GW, mac(3)), (OTHER6, 6000), (EXT6, 8080), 10);
        let sent = through(&mut r, nn, 3, q);
        assert_eq!(who_got(&sent), vec![2], "{sent:?}");
        let (src, dst, _) = addrs(&sent[2][0]);
        assert_eq!((src, dst), (EXT6, INSIDE6), "masqueraded as the uplink's");
        let back_port = src_port(&sent[2][0]);
        let a = udp6((GW, mac(2)), (INSIDE6, 80), (EXT6, back_port), 10);
        let sent = through(&mut r, nn, 2, a);
        assert_eq!(who_got(&sent), vec![3], "{sent:?}");
        let (src, dst, _) = addrs(&sent[3][0]);
        assert_eq!((src, dst, src_port(&sent[3][0])), (EXT6, OTHER6, 8080));
        // A port nothing publishes, or a ping: the gateway's to answer, untranslated,
        // no flow made.
        let flows = nat.table6.len();
        let closed = udp6((GW, mac(3)), (OTHER6, 6001), (EXT6, 8081), 10);
        let mut ping = closed.clone();
        ping[20] = 58;
        ping[54..62].copy_from_slice(&[128, 0, 0, 0, 0, 7, 0, 1]);
        for f in [closed, ping] {
            let sent = through(&mut r, nn, 3, f.clone());
            assert_eq!(who_got(&sent), vec![0], "routed {routed}: {sent:?}");
            assert_eq!(sent[0][0], f, "untranslated, hop limit untouched");
        }
        assert_eq!(nat.table6.len(), flows, "no flow made");
    }
}
