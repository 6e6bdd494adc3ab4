use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::*;
use crate::config::{DomainConf, Net4, PortRole, Security};

/// Filters as the kernel would hold them: (device, prio) -> (protocol, keys, to).
#[derive(Default)]
struct Fake {
    devices: BTreeMap<String, u32>,
    filters: BTreeMap<(u32, u16), (u16, Vec<U32Key>, u32)>,
    counted: BTreeMap<(u32, u16), (u64, u64)>,
    fail_adds: bool,
    fail_deletes: bool,
}

impl KernelOps for &mut Fake {
    fn ifindex(&mut self, name: &str) -> Option<u32> {
        self.devices.get(name).copied()
    }
    fn add_redirect(&mut self, r: &Redirect<'_>) -> io::Result<()> {
        if self.fail_adds {
            return Err(io::Error::other("refused"));
        }
        let f = (r.protocol, r.keys.to_vec(), r.to);
        assert!(self.filters.insert((r.ifindex, r.prio), f).is_none());
        Ok(())
    }
    fn delete_filter(&mut self, ifindex: u32, prio: u16, protocol: u16) -> io::Result<()> {
        if self.fail_deletes {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let f = self.filters.remove(&(ifindex, prio));
        assert_eq!(f.map(|f| f.0), Some(protocol));
        Ok(())
    }
    fn ingress_counters(&mut self, ifindex: u32) -> io::Result<Vec<PrioCounters>> {
        Ok((self.counted.iter())
            .filter(|((d, _), _)| *d == ifindex)
            .map(|((_, prio), (packets, bytes))| PrioCounters {
                prio: *prio,
                packets: *packets,
                bytes: *bytes,
            })
            .collect())
    }
}

fn mac(i: u16) -> MacAddr {
    MacAddr([2, 0x42, 10, 1, 0, i as u8])
}

fn key(i: u16, domain: u16) -> super::super::PortKey {
    super::super::PortKey {
        domain,
        mac: mac(i),
    }
}

fn port(i: u16, domain: u16) -> Option<PortConf> {
    Some(PortConf {
        name: format!("p{i}"),
        generation: Generation(1),
        role: PortRole::Container,
        mode: PortMode::Access {
            domain: DomainId(domain),
        },
        security: Some(Security {
            mac: mac(i),
            ip: Some(Ipv4Addr::new(10, 1, 0, i as u8)),
            ip6: None,
        }),
        mac_limit: 1,
        limits: Default::default(),
        kernel: true,
    })
}

fn domain(icc: bool) -> Option<DomainConf> {
    Some(DomainConf {
        name: "n".into(),
        vlan: None,
        gateway_mac: MacAddr([2, 0x42, 10, 1, 0, 1]),
        v4: Some(Net4::of(Ipv4Addr::new(10, 1, 0, 1), 24)),
        v6: None,
        icc,
        egress: true,
        members: vec![],
        owners: vec![],
        listeners: vec![],
    })
}

/// Ports 2..=5 in domain 0, port 6 in domain 1; their host ends are devices 102..=106.
fn world() -> (Snapshot, Fake) {
    let mut snap = Snapshot {
        domains: vec![domain(true), domain(true)],
        ports: vec![
            None,
            None,
            port(2, 0),
            port(3, 0),
            port(4, 0),
            port(5, 0),
            port(6, 1),
        ],
        ..Default::default()
    };
    snap.rebuild();
    let mut fake = Fake::default();
    for i in 2..=6 {
        let domain = if i == 6 { 1 } else { 0 };
        (fake.devices).insert(NAMES.host_end(key(i, domain)), 100 + u32::from(i));
    }
    (snap, fake)
}

const P: fn(u16) -> PortId = PortId;
const NAMES: super::super::Names = super::super::Names { salt: 7 };

#[test]
fn a_noted_pair_gets_one_ipv4_filter_from_its_source_to_its_peer() {
    let (snap, mut fake) = world();
    let mut pairs = Pairs::new(&mut fake, NAMES, Arc::default());
    pairs.scan(&snap, &[(P(2), P(3))], None, 0);
    assert!(pairs.carries(P(2), P(3)));
    assert!(!pairs.carries(P(3), P(2)));
    drop(pairs);
    let (&(dev, prio), (proto, keys, to)) = fake.filters.iter().next().unwrap();
    assert_eq!(
        (dev, prio, *proto, *to),
        (102, PAIR_PRIO_BASE, ETH_P_IP, 103)
    );
    let mut want = U32Key::macs(mac(3), mac(2)).to_vec();
    want.push(U32Key::ipv4_no_options());
    want.push(U32Key::ipv4_src(Ipv4Addr::new(10, 1, 0, 2)));
    assert_eq!(keys, &want);
    assert_eq!(fake.filters.len(), 1);
}

#[test]
fn ipv6_pairs_carry_only_tcp_and_udp_from_the_port_address() {
    let (mut snap, mut fake) = world();
    let a6: Ipv6Addr = "fd00::2".parse().unwrap();
    if let Some(Some(p)) = snap.ports.get_mut(2)
        && let Some(s) = p.security.as_mut()
    {
        s.ip6 = Some(a6);
    }
    snap.rebuild();
    Pairs::new(&mut fake, NAMES, Arc::default()).scan(&snap, &[(P(2), P(3))], None, 0);
    let v6: Vec<_> = (fake.filters.values())
        .filter(|f| f.0 == ETH_P_IPV6)
        .map(|f| f.1.clone())
        .collect();
    assert_eq!(v6.len(), 2);
    for (keys, nh) in v6.iter().zip([TCP, UDP]) {
        assert!(keys.contains(&U32Key::ipv6_next_header(nh)));
        assert!(U32Key::ipv6_src(a6).iter().all(|k| keys.contains(k)));
    }
}

#[test]
fn pairs_outside_one_network_or_without_the_kernel_path_are_not_installed() {
    let (mut snap, mut fake) = world();
    if let Some(Some(p)) = snap.ports.get_mut(4) {
        p.kernel = false;
    }
    if let Some(Some(p)) = snap.ports.get_mut(5) {
        p.security = None;
    }
    snap.rebuild();
    let noted = [
        (P(2), P(6)),
        (P(2), P(4)),
        (P(5), P(2)),
        (P(2), P(2)),
        (P(9), P(2)),
    ];
    let mut pairs = Pairs::new(&mut fake, NAMES, Arc::default());
    pairs.scan(&snap, &noted, None, 0);
    // Positive control: a pair that may be is, in the same scan.
    pairs.scan(&snap, &[(P(2), P(3))], None, 0);
    assert_eq!(pairs.len(), 1);
    drop(pairs);
    assert_eq!(fake.filters.len(), 1);
}

#[test]
fn a_network_without_inter_container_traffic_has_no_pairs() {
    let (mut snap, mut fake) = world();
    snap.domains = vec![domain(false)];
    snap.rebuild();
    let mut pairs = Pairs::new(&mut fake, NAMES, Arc::default());
    pairs.scan(&snap, &[(P(2), P(3))], None, 0);
    assert!(pairs.is_empty());
}

#[test]
fn a_changed_port_loses_its_pairs_both_ways_and_captured_ports_none_are_made() {
    let (mut snap, mut fake) = world();
    let mut pairs = Pairs::new(&mut fake, NAMES, Arc::default());
    let noted = [(P(2), P(3)), (P(3), P(2)), (P(4), P(5))];
    pairs.scan(&snap, &noted, None, 0);
    assert_eq!(pairs.len(), 3);
    // Port 3 re-attached (new generation): 2<->3 go, 4->5 stays.
    if let Some(Some(p)) = snap.ports.get_mut(3) {
        p.generation = Generation(2);
    }
    snap.rebuild();
    pairs.scan(&snap, &[], None, 1);
    assert_eq!(pairs.len(), 1);
    assert!(pairs.carries(P(4), P(5)));
    // A capture of 5 takes 4->5 out and keeps it out while it lasts.
    pairs.scan(&snap, &[(P(4), P(5))], Some(P(5)), 2);
    assert!(pairs.is_empty());
    pairs.scan(&snap, &[(P(4), P(5))], None, 3);
    assert!(pairs.carries(P(4), P(5)));
    pairs.clear();
    drop(pairs);
    assert!(fake.filters.is_empty());
}

#[test]
fn counters_move_to_the_ports_and_idle_pairs_go() {
    let (snap, mut fake) = world();
    let counters = Arc::new(CounterTable::default());
    // The kernel counted 10 frames on the pair's filter, and 99 on another device's.
    fake.counted.insert((102, PAIR_PRIO_BASE), (10, 15_000));
    fake.counted.insert((104, PAIR_PRIO_BASE), (99, 99));
    let mut pairs = Pairs::new(&mut fake, NAMES, counters.clone());
    pairs.scan(&snap, &[(P(2), P(3))], None, 0);
    pairs.count(5);
    let (a, b) = (counters.read(P(2)), counters.read(P(3)));
    assert_eq!(
        (a.rx_packets, a.rx_bytes, b.tx_packets, b.tx_bytes),
        (10, 15_140, 10, 15_140)
    );
    // The sender is kept learned in the FDB.
    let active = pairs.take_active();
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].port, active[0].mac, active[0].domain),
        (P(2), mac(2), DomainId(0))
    );
    // Read again with nothing new: counted once, nobody active.
    pairs.count(6);
    assert_eq!(counters.read(P(2)).rx_packets, 10);
    assert!(pairs.take_active().is_empty());
    // Nothing more for IDLE_SECS after the last movement: gone.
    pairs.count(5 + IDLE_SECS - 1);
    assert!(pairs.carries(P(2), P(3)));
    pairs.count(5 + IDLE_SECS);
    assert!(pairs.is_empty());
    drop(pairs);
    assert!(fake.filters.is_empty());
}

#[test]
fn a_port_sends_on_a_bounded_number_of_pairs_and_failures_wait() {
    let (mut snap, mut fake) = world();
    let n = PAIRS_PER_PORT as u16 + 4;
    snap.ports = (0..n + 3)
        .map(|i| if i < 2 { None } else { port(i, 0) })
        .collect();
    snap.rebuild();
    for i in 2..n + 3 {
        fake.devices
            .insert(NAMES.host_end(key(i, 0)), 100 + u32::from(i));
    }
    let noted: Vec<_> = (3..n + 3).map(|i| (P(2), P(i))).collect();
    let mut pairs = Pairs::new(&mut fake, NAMES, Arc::default());
    pairs.scan(&snap, &noted, None, 0);
    assert_eq!(pairs.len(), PAIRS_PER_PORT);
    // One of them goes (its peer re-attached): the next noted pair takes its place.
    let first = noted
        .iter()
        .copied()
        .find(|(a, b)| pairs.carries(*a, *b))
        .unwrap();
    let waiting = noted
        .iter()
        .copied()
        .find(|(a, b)| !pairs.carries(*a, *b))
        .unwrap();
    if let Some(Some(p)) = snap.ports.get_mut(first.1.index()) {
        p.generation = Generation(9);
    }
    snap.rebuild();
    pairs.scan(&snap, &[waiting], None, 20);
    assert_eq!(pairs.len(), PAIRS_PER_PORT);
    assert!(pairs.carries(waiting.0, waiting.1) && !pairs.carries(first.0, first.1));
    drop(pairs);
    fake.fail_adds = true;
    let mut pairs = Pairs::new(&mut fake, NAMES, Arc::default());
    pairs.scan(&snap, &[(P(3), P(2))], None, 0);
    assert!(pairs.is_empty());
}

#[test]
fn a_failed_add_gives_its_priority_back_and_a_failed_removal_is_tried_again() {
    let (mut snap, _) = world();
    let (snap2, mut fake2) = world();
    let mut pairs = Pairs::new(&mut fake2, NAMES, Arc::default());
    pairs.ops.fail_adds = true;
    pairs.scan(&snap2, &[(P(2), P(3))], None, 0);
    pairs.ops.fail_adds = false;
    pairs.scan(&snap2, &[(P(2), P(3))], None, RETRY_SECS);
    assert!(pairs.carries(P(2), P(3)));
    assert!(pairs.ops.filters.contains_key(&(102, PAIR_PRIO_BASE)));
    // Removal refused (busy): the filter stays listed and is removed on a later scan.
    pairs.ops.fail_deletes = true;
    if let Some(Some(p)) = snap.ports.get_mut(3) {
        p.generation = Generation(5);
    }
    snap.rebuild();
    pairs.scan(&snap, &[], None, 20);
    assert!(pairs.is_empty());
    assert_eq!(pairs.ops.filters.len(), 1);
    pairs.ops.fail_deletes = false;
    pairs.scan(&snap, &[], None, 21);
    assert!(pairs.ops.filters.is_empty());
}
