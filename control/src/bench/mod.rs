//! The `vswitch bench` scenarios, built on the dataplane's public API from outside the
//! forwarding core: the daemon's own workers and pipeline on in-memory
//! ports, in process, no I/O.
//!
//! Each worker thread gets its own ports (cycling memory ports that copy every frame in
//! on receive and out on send, as a TAP read and write would) and shares the FDB and
//! the configuration snapshot with the others, as in the daemon. The FDB is filled
//! before the clock starts, so the measured path is learned unicast: classify, learn
//! (refresh), lookup, egress.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::bridge::{CounterTable, Fdb, VlanSet};
use dataplane::config::{
    DomainConf, FIRST_PORT, PortConf, PortMode, PortRole, Snapshot, SnapshotCell,
};
use dataplane::ids::{DomainId, Generation, PortId, VlanId};
use dataplane::port::MemoryPort;
use dataplane::wire::MacAddr;
use dataplane::worker::Worker;

mod counter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    L2,
    /// As `L2`, the frames IPv6/UDP (switching is the same path for either family:
    /// the figure shows it).
    L2v6,
    Vlan,
    Nat,
    /// As `Nat`, the frames IPv6/UDP: NAT66 through the IPv6 flow table.
    Nat66,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::L2 => "l2",
            Scenario::L2v6 => "l2v6",
            Scenario::Vlan => "vlan",
            Scenario::Nat => "nat",
            Scenario::Nat66 => "nat66",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Params {
    pub scenario: Scenario,
    /// Bytes per frame (Ethernet header included, no FCS).
    pub frame_size: usize,
    /// MAC addresses in the FDB.
    pub macs: usize,
    /// Flows (the NAT scenario).
    pub flows: usize,
    pub seconds: f64,
    pub workers: usize,
    /// The l2 scenario's ports in all (split over the workers), each sending to every
    /// other port of its worker in turn; None: four per worker, each sending to the next.
    pub ports: Option<usize>,
    /// Port security on the containers' ports: in the NAT scenario each container port
    /// sends from one MAC and address; in l2 and l2v6 each port gets one MAC and that
    /// host's IPv4 and IPv6 addresses. Every frame goes through the source checks and
    /// first-hop guards of its family, as a container's frames do.
    pub port_security: bool,
    /// Count the CPU's retired instructions per frame (and per new flow).
    pub instructions: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            scenario: Scenario::L2,
            frame_size: 64,
            macs: 1024,
            flows: 1024,
            seconds: 3.0,
            workers: 1,
            ports: None,
            port_security: false,
            instructions: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub scenario: &'static str,
    pub mpps_per_core: f64,
    pub ns_per_frame: f64,
    pub frames: u64,
    pub workers: usize,
    pub frame_size: usize,
    pub fdb_entries: usize,
    /// Ports in all (every worker's).
    pub ports: usize,
    /// Frames that left on a port (equal to `frames` when nothing was flooded or dropped).
    pub sent: u64,
    /// NAT: new flows per second (first packet and reply of each).
    pub new_flows_per_sec: Option<f64>,
    pub port_security: bool,
    /// Instructions retired per frame, from the CPU's counters (`--instructions`).
    pub instructions_per_frame: Option<f64>,
    /// NAT: instructions per new flow (its first packet and its reply).
    pub instructions_per_new_flow: Option<f64>,
    /// Why the instruction counts are missing when they were asked for.
    pub counters_unavailable: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("frame size {0} is out of range: use 60 to 1514 bytes")]
    FrameSize(usize),
    #[error("--macs {0} is out of range: use 8 to 4194304")]
    Macs(usize),
    #[error("--workers {0} is out of range: use 1 to 64")]
    Workers(usize),
    #[error("--seconds must be positive and at most 3600")]
    Seconds,
    #[error("the {0} scenario is not available in this build")]
    Unavailable(&'static str),
    #[error("--flows {0} is out of range: use 1 to 1048576")]
    Flows(usize),
    #[error("--ports {0} is out of range: use 2 per worker up to {MAX_BENCH_PORTS} in all")]
    Ports(usize),
    #[error(
        "--port-security needs the nat, l2 or l2v6 scenario (the vlan scenario's ports send from many MACs)"
    )]
    PortSecurity,
}

/// The most ports a scenario may have: every slot the daemon can give containers.
pub const MAX_BENCH_PORTS: usize =
    dataplane::bridge::fdb::MAX_PORT_SLOTS - dataplane::config::FIRST_PORT.index();

const PORTS_L2: usize = 4;
/// Template frames kept per port (they cycle); with more MACs than this per port, the
/// port's frames cover a spread sample of its MACs.
const TEMPLATES_PER_PORT: usize = 32768;

fn mac(i: usize) -> MacAddr {
    let b = (i as u32).to_be_bytes();
    MacAddr([0x02, 0x10, b[0], b[1], b[2], b[3]])
}

/// The fields of a test UDP frame.
#[derive(Debug, Clone, Copy)]
pub struct UdpSpec {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub vlan: Option<u16>,
    /// Frame size in bytes (at least the headers).
    pub size: usize,
    pub sip: Ipv4Addr,
    pub dip: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// An Ethernet + IPv6 + UDP frame (untagged) from `sip` to `dip`, with a valid
/// checksum.
pub fn udp6_frame(spec: &UdpSpec, (sip, dip): (Ipv6Addr, Ipv6Addr)) -> Vec<u8> {
    let mut f = Vec::with_capacity(spec.size);
    f.extend_from_slice(&spec.dst.0);
    f.extend_from_slice(&spec.src.0);
    f.extend_from_slice(&[0x86, 0xdd]);
    let payload = spec.size.saturating_sub(f.len() + 48);
    let body = vec![0u8; payload];
    if let Some(p) = dataplane::gateway::udp6_packet((sip, spec.sport), (dip, spec.dport), &body) {
        f.extend_from_slice(&p);
    }
    f
}

/// An Ethernet + IPv4 + UDP frame, optionally tagged, with valid checksums.
pub fn udp_frame(spec: &UdpSpec) -> Vec<u8> {
    let UdpSpec {
        dst,
        src,
        vlan,
        size,
        sip,
        dip,
        sport,
        dport,
    } = *spec;
    let mut f = Vec::with_capacity(size);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let l3 = f.len();
    let ip_len = size.saturating_sub(l3).max(28);
    f.resize(l3 + ip_len, 0);
    {
        let mut ip = dataplane::wire::Ipv4Packet::new_unchecked(&mut f[l3..]);
        ip.set_version_and_header_len(20);
        ip.set_total_len(ip_len as u16);
        ip.set_ttl(64);
        ip.set_protocol(dataplane::wire::IpProtocol::Udp);
        ip.set_src(sip);
        ip.set_dst(dip);
        ip.fill_checksum();
    }
    {
        let mut u = dataplane::wire::UdpPacket::new_unchecked(&mut f[l3 + 20..]);
        u.set_src_port(sport);
        u.set_dst_port(dport);
        u.set_len((ip_len - 20) as u16);
        u.fill_checksum(sip, dip);
    }
    f
}

fn domain(name: &str, vlan: Option<u16>, third: u8) -> Option<DomainConf> {
    let gw = Ipv4Addr::new(172, 16 + third, 0, 1);
    Some(DomainConf {
        name: name.into(),
        vlan: vlan.and_then(VlanId::new),
        gateway_mac: MacAddr::from_ipv4(gw),
        v4: Some(dataplane::config::Net4::of(gw, 16)),
        v6: None,
        icc: true,
        egress: true,
        members: vec![],
        owners: vec![],
        listeners: vec![],
    })
}

fn port(name: String, mode: PortMode, limit: u32) -> Option<PortConf> {
    Some(PortConf {
        name,
        generation: Generation::default(),
        role: PortRole::Container,
        mode,
        security: None,
        mac_limit: limit,
        kernel: false,
        limits: Default::default(),
    })
}

/// A planned port: its mode, the VLAN tag its own frames carry, and its MACs.
struct PlannedPort {
    mode: PortMode,
    tag: Option<u16>,
    domain: u16,
    macs: Vec<usize>,
}

fn plan(p: &Params) -> (Vec<Option<DomainConf>>, Vec<Vec<PlannedPort>>) {
    let w = p.workers;
    match p.scenario {
        Scenario::Vlan => {
            // Per worker: access a0 a1 (VLAN 10, domain 0), b0 b1 (VLAN 20, domain 1),
            // trunks t0 t1 carrying 10 and 20. MACs of domain 0 live on a* and t*(tag 10),
            // of domain 1 on b* and t*(tag 20).
            let per = 6;
            let mut workers = Vec::new();
            let mut next = 0usize;
            let each = (p.macs / (w * 8)).max(1);
            for _ in 0..w {
                let mut ports = Vec::new();
                for (d, count) in [(0u16, 2), (1u16, 2)] {
                    for _ in 0..count {
                        ports.push(PlannedPort {
                            mode: PortMode::Access {
                                domain: DomainId(d),
                            },
                            tag: None,
                            domain: d,
                            macs: (next..next + each).collect(),
                        });
                        next += each;
                    }
                }
                for _ in 0..2 {
                    for (d, v) in [(0u16, 10u16), (1, 20)] {
                        ports.push(PlannedPort {
                            mode: PortMode::Trunk {
                                native: None,
                                vlans: VlanSet::from_ids([10, 20]),
                            },
                            tag: Some(v),
                            domain: d,
                            macs: (next..next + each).collect(),
                        });
                        next += each;
                    }
                }
                let _ = per;
                workers.push(ports);
            }
            (
                vec![domain("ten", Some(10), 1), domain("twenty", Some(20), 2)],
                workers,
            )
        }
        _ => {
            let per = p.ports.map_or(PORTS_L2, |n| n / w);
            let each = if p.port_security && p.scenario != Scenario::Vlan {
                1
            } else {
                (p.macs / (w * per)).max(1)
            };
            let mut workers = Vec::new();
            let mut next = 0usize;
            for _ in 0..w {
                let mut ports = Vec::new();
                for _ in 0..per {
                    ports.push(PlannedPort {
                        mode: PortMode::Access {
                            domain: DomainId(0),
                        },
                        tag: None,
                        domain: 0,
                        macs: (next..next + each).collect(),
                    });
                    next += each;
                }
                workers.push(ports);
            }
            (vec![domain("bench", None, 1)], workers)
        }
    }
}

/// A scenario ready to run: one worker per thread-to-be, sharing an FDB.
pub struct Setup {
    pub workers: Vec<Worker>,
    pub fdb: Arc<Fdb>,
    pub counters: Vec<Arc<CounterTable>>,
    /// The port slots of each worker.
    pub slots: Vec<Vec<u16>>,
    /// NAT: flows created per second while setting up (each with its reply).
    pub new_flows_per_sec: Option<f64>,
    /// NAT: instructions per new flow, when counted.
    pub instructions_per_new_flow: Option<f64>,
    /// Why the instructions were not counted, when they were asked for.
    pub counters_unavailable: Option<String>,
}

fn validate(p: &Params) -> Result<(), BenchError> {
    if !(60..=1514).contains(&p.frame_size) {
        return Err(BenchError::FrameSize(p.frame_size));
    }
    if !(8..=4 << 20).contains(&p.macs) {
        return Err(BenchError::Macs(p.macs));
    }
    if !(1..=64).contains(&p.workers) {
        return Err(BenchError::Workers(p.workers));
    }
    if !(p.seconds > 0.0 && p.seconds <= 3600.0) {
        return Err(BenchError::Seconds);
    }
    if !(1..=1 << 20).contains(&p.flows) {
        return Err(BenchError::Flows(p.flows));
    }
    if let Some(n) = p.ports
        && !(2 * p.workers..=MAX_BENCH_PORTS).contains(&n)
    {
        return Err(BenchError::Ports(n));
    }
    if p.port_security && p.scenario == Scenario::Vlan {
        return Err(BenchError::PortSecurity);
    }
    Ok(())
}

/// The addresses of the NAT scenario: the containers (one per worker, 172.17.0.<2+w>),
/// the uplink's address and next hop, the remote ends.
struct NatPlan {
    ext: Ipv4Addr,
    ext_mac: MacAddr,
    hop_mac: MacAddr,
    gw_mac: MacAddr,
    frame_size: usize,
    /// NAT66: the same flows over IPv6 (the addresses' IPv6 twins).
    v6: bool,
}

/// The uplink's IPv6 address in the NAT66 scenario, and its next hop.
const EXT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
const HOP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);

impl NatPlan {
    fn container(w: usize) -> Ipv4Addr {
        Ipv4Addr::new(172, 17, 0, 2 + w as u8)
    }

    fn container6(w: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 2 + w as u16)
    }

    fn remote(k: usize) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, (113 + (k >> 16) % 8) as u8, ((k >> 8) & 0xff) as u8)
    }

    fn remote6(k: usize) -> Ipv6Addr {
        let k = k as u32;
        Ipv6Addr::new(0x2001, 0xdb8, 113, 0, 0, 0, (k >> 16) as u16, k as u16)
    }

    /// A UDP frame of the plan's family (`v6`: the IPv6 addresses given).
    fn frame(&self, spec: UdpSpec, v6: (Ipv6Addr, Ipv6Addr)) -> Vec<u8> {
        if self.v6 {
            udp6_frame(&spec, v6)
        } else {
            udp_frame(&spec)
        }
    }

    /// Container `w`'s frame of flow `k` toward the remote end.
    fn outbound(&self, w: usize, k: usize, sport: u16) -> Vec<u8> {
        let spec = UdpSpec {
            dst: self.gw_mac,
            src: MacAddr::from_ipv4(Self::container(w)),
            vlan: None,
            size: self.frame_size,
            sip: Self::container(w),
            dip: Self::remote(k),
            sport,
            dport: 5201,
        };
        self.frame(spec, (Self::container6(w), Self::remote6(k)))
    }

    /// The remote end's answer of flow `k`, to the external port it got.
    fn inbound(&self, k: usize, eport: u16) -> Vec<u8> {
        let spec = UdpSpec {
            dst: self.ext_mac,
            src: self.hop_mac,
            vlan: None,
            size: self.frame_size,
            sip: Self::remote(k),
            dip: self.ext,
            sport: 5201,
            dport: eport,
        };
        self.frame(spec, (Self::remote6(k), EXT6))
    }

    /// Translates a packet from a container (NAT or NAT66).
    fn translate_out(&self, nat: &dataplane::nat::Nat, ip: &mut [u8]) {
        let rules = dataplane::nat::DnatRules::default();
        let _ = if self.v6 {
            let none = &dataplane::nat::DnatRules::EMPTY;
            nat.outbound6(ip, 0, Some(EXT6), none, false, 0).map(|_| ())
        } else {
            nat.outbound(ip, 0, self.ext, &rules, false, 0).map(|_| ())
        };
    }

    /// Translates a packet from the outside (NAT or NAT66).
    fn translate_in(&self, nat: &dataplane::nat::Nat, ip: &mut [u8]) {
        let rules = dataplane::nat::DnatRules::default();
        let _ = if self.v6 {
            let none = &dataplane::nat::DnatRules::EMPTY;
            nat.inbound6(ip, Some(EXT6), none, false, 0).map(|_| ())
        } else {
            nat.inbound(ip, self.ext, &rules, false, 0).map(|_| ())
        };
    }
}

/// The IPv4 packet of a frame built by [`udp_frame`] (untagged), as an owned buffer.
fn l3_of(frame: &[u8]) -> Vec<u8> {
    dataplane::wire::EthernetFrame::new_checked(frame)
        .map(|e| e.payload().to_vec())
        .unwrap_or_default()
}

/// The source port of a UDP packet of either family (0 when it is not one).
fn udp_src_port(ip: &[u8]) -> u16 {
    let payload = match ip.first().map(|b| b >> 4) {
        Some(6) => dataplane::wire::Ipv6Packet::new_checked(ip).map(|p| p.payload().to_vec()),
        _ => dataplane::wire::Ipv4Packet::new_checked(ip).map(|p| p.payload().to_vec()),
    };
    let Ok(payload) = payload else {
        return 0;
    };
    dataplane::wire::UdpPacket::new_checked(&payload[..])
        .map(|u| u.src_port())
        .unwrap_or(0)
}

/// The NAT66 scenario's uplink: its address, next hop, the network's prefix, each
/// worker's container.
fn nat_uplink6(workers: usize) -> dataplane::config::Uplink6 {
    let hosts: Vec<_> = (0..workers)
        .map(|w| {
            (
                DomainId(0),
                NatPlan::container6(w),
                MacAddr::from_ipv4(NatPlan::container(w)),
            )
        })
        .collect();
    dataplane::config::Uplink6::new(
        dataplane::wire::Ipv6Cidr::new(EXT6, 64),
        Some(HOP6),
        &[dataplane::wire::Ipv6Cidr::new(NatPlan::container6(0), 64).network()],
        Vec::new(),
        &hosts,
    )
}

/// The snapshot of the NAT scenario: one network with egress, the uplink port, one
/// container port per worker; and each worker's slots (its container's, the uplink's).
fn nat_snapshot(p: &Params, plan: &NatPlan) -> (Snapshot, Vec<Vec<u16>>) {
    use dataplane::config::{UPLINK_DOMAIN, UPLINK_PORT, UplinkConf};
    let mut dom = domain("nat", None, 1);
    if let Some(d) = dom.as_mut() {
        d.egress = true;
        if plan.v6 {
            d.v6 = Some(dataplane::config::Net6::of(
                Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 1),
                64,
            ));
        }
    }
    let mut snap = Snapshot {
        domains: vec![dom],
        ports: vec![None; FIRST_PORT.index()],
        ..Default::default()
    };
    if let Some(slot) = snap.ports.get_mut(UPLINK_PORT.index()) {
        *slot = port(
            "uplink".into(),
            PortMode::Access {
                domain: UPLINK_DOMAIN,
            },
            0,
        );
        if let Some(pc) = slot.as_mut() {
            pc.role = PortRole::Uplink;
        }
    }
    let (mut slots, mut hosts) = (Vec::new(), Vec::new());
    for w in 0..p.workers {
        let slot = snap.ports.len() as u16;
        let mode = PortMode::Access {
            domain: DomainId(0),
        };
        let c = NatPlan::container(w);
        let mut pc = port(format!("c{w}"), mode, u32::MAX);
        if let Some(pc) = pc.as_mut().filter(|_| p.port_security) {
            pc.security = Some(dataplane::config::Security {
                mac: MacAddr::from_ipv4(c),
                ip: Some(c),
                ip6: Some(NatPlan::container6(w)),
            });
        }
        snap.ports.push(pc);
        slots.push(vec![slot, UPLINK_PORT.0]);
        hosts.push((DomainId(0), c, MacAddr::from_ipv4(c)));
    }
    hosts.sort_by_key(|h| (h.0, h.1));
    let v6 = plan.v6.then(|| nat_uplink6(p.workers));
    snap.uplink = Some(UplinkConf {
        ext_ip: plan.ext,
        ext_mac: plan.ext_mac,
        subnet: Ipv4Addr::new(198, 51, 100, 0),
        prefix_len: 24,
        next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
        mtu: 1500,
        rules: dataplane::nat::DnatRules::default(),
        v6,
        hosts,
    });
    snap.rebuild();
    (snap, slots)
}

/// What establishing the NAT scenario's flows measured.
struct Established {
    /// Per worker, each flow's (source port, external port).
    ext_ports: Vec<Vec<(u16, u16)>>,
    /// New flows per second (the slow path of the first packet, then the reply).
    rate: f64,
    /// Instructions per new flow, when counted.
    instructions: Option<f64>,
    /// Why they were not counted, when asked for.
    unavailable: Option<String>,
}

/// Time (and instructions, when counted) spent translating.
#[derive(Default)]
struct Spent {
    time: Duration,
    instructions: u64,
}

impl Spent {
    /// Runs `f`, adding its time and instructions.
    fn add(&mut self, counter: Option<&counter::Instructions>, f: impl FnOnce()) {
        if let Some(c) = counter {
            c.start();
        }
        let t = Instant::now();
        f();
        self.time += t.elapsed();
        self.instructions += counter.map_or(0, counter::Instructions::stop);
    }
}

/// Establishes `per` flows per worker (each answered, as established traffic would be).
/// Only the translations are measured: the packets are built before (first packets) or
/// between (the replies, which need the port chosen) the measured loops.
fn establish_flows(nat: &dataplane::nat::Nat, plan: &NatPlan, p: &Params) -> Established {
    let (workers, per) = (p.workers, p.flows.div_ceil(p.workers).max(1));
    let mut unavailable = None;
    let counter = counter::start_if(p.instructions, &mut unavailable);
    let mut ext_ports = Vec::new();
    let mut spent = Spent::default();
    for w in 0..workers {
        let sports: Vec<u16> = (0..per).map(|k| 1024 + (k % 60000) as u16).collect();
        let mut out: Vec<Vec<u8>> = (0..per)
            .map(|k| l3_of(&plan.outbound(w, k, sports[k])))
            .collect();
        spent.add(counter.as_ref(), || {
            for ip in &mut out {
                plan.translate_out(nat, ip);
            }
        });
        let eports: Vec<u16> = out.iter().map(|ip| udp_src_port(ip)).collect();
        let mut back: Vec<Vec<u8>> = (0..per)
            .map(|k| l3_of(&plan.inbound(k, eports[k])))
            .collect();
        spent.add(counter.as_ref(), || {
            for ip in &mut back {
                plan.translate_in(nat, ip);
            }
        });
        ext_ports.push(sports.into_iter().zip(eports).collect());
    }
    let flows = (per * workers) as f64;
    Established {
        ext_ports,
        rate: flows / spent.time.as_secs_f64().max(1e-9),
        instructions: counter.map(|_| spent.instructions as f64 / flows),
        unavailable,
    }
}

/// The NAT scenario: per worker a container port and the uplink port; `flows`
/// established UDP flows, each frame translated one way or the other.
fn setup_nat(p: &Params) -> Result<Setup, BenchError> {
    use dataplane::config::UPLINK_PORT;
    use dataplane::nat::Nat;
    use dataplane::uplink::packet::Neighbours;
    let plan = NatPlan {
        ext: Ipv4Addr::new(198, 51, 100, 2),
        ext_mac: MacAddr::from_ipv4(Ipv4Addr::new(198, 51, 100, 2)),
        hop_mac: MacAddr([0x02, 0, 0, 0, 0, 0x01]),
        gw_mac: domain("nat", None, 1)
            .map(|d| d.gateway_mac)
            .unwrap_or_default(),
        frame_size: p.frame_size,
        v6: p.scenario == Scenario::Nat66,
    };
    let per = p.flows.div_ceil(p.workers).max(1);
    let (snap, slots) = nat_snapshot(p, &plan);
    // One container per worker holds every flow of the run: its quota is the table's.
    let max = p.flows * 2 + 1024;
    let nat = Arc::new(Nat::with_quota(max, max));
    let neigh = Arc::new(Neighbours::default());
    neigh.set_next_hop(Some(plan.hop_mac));
    neigh.v6.set_next_hop(Some(plan.hop_mac));
    let fdb = Arc::new(Fdb::new(1024));
    {
        let r = fdb.pin();
        for (w, s) in slots.iter().enumerate() {
            let (d, g, c) = (DomainId(0), Generation::default(), NatPlan::container(w));
            let slot = PortId(s.first().copied().unwrap_or(0));
            r.learn(d, MacAddr::from_ipv4(c), slot, g, 0, u32::MAX);
        }
    }
    // Flows are created in a table whose pages are resident, as a running daemon's
    // are once it has seen some thousands of flows.
    nat.table.touch_all();
    nat.table6.touch_all();
    let est = establish_flows(&nat, &plan, p);
    let cell = Arc::new(SnapshotCell::new(snap));
    let counters: Vec<Arc<CounterTable>> = (0..p.workers)
        .map(|_| Arc::new(CounterTable::default()))
        .collect();
    let mut built = Vec::new();
    for (w, flows) in est.ext_ports.iter().enumerate() {
        let n = per.min(TEMPLATES_PER_PORT);
        let flows = flows.iter().enumerate().take(n);
        let (out_frames, in_frames): (Vec<_>, Vec<_>) = flows
            .map(|(k, (sport, eport))| (plan.outbound(w, k, *sport), plan.inbound(k, *eport)))
            .unzip();
        let mut wk = Worker::new(&cell, fdb.clone(), counters[w].clone());
        wk.nat = Some(nat.clone());
        wk.neigh = Some(neigh.clone());
        let slot = PortId(slots[w].first().copied().unwrap_or(0));
        let c = MemoryPort::cycling(format!("c{w}"), out_frames);
        wk.add_port(slot, Box::new(c), true);
        let up = MemoryPort::cycling(format!("up{w}"), in_frames);
        wk.add_port(UPLINK_PORT, Box::new(up), true);
        built.push(wk);
    }
    Ok(Setup {
        workers: built,
        fdb,
        counters,
        slots,
        new_flows_per_sec: Some(est.rate),
        instructions_per_new_flow: est.instructions,
        counters_unavailable: est.unavailable,
    })
}

/// Builds the ports, snapshot, FDB (filled) and workers of a scenario.
pub fn setup(p: &Params) -> Result<Setup, BenchError> {
    validate(p)?;
    if matches!(p.scenario, Scenario::Nat | Scenario::Nat66) {
        return setup_nat(p);
    }
    let (domains, workers) = plan(p);
    let secure = p.port_security && p.scenario != Scenario::Vlan;
    let (snap, slot_of) = l2_snapshot(domains, &workers, secure);
    let total_macs: usize = workers.iter().flatten().map(|pp| pp.macs.len()).sum();
    let fdb = Arc::new(Fdb::new((total_macs as u32).max(1024)));
    {
        let r = fdb.pin();
        for (ports, slots) in workers.iter().zip(&slot_of) {
            for (pp, slot) in ports.iter().zip(slots) {
                let (d, g) = (DomainId(pp.domain), Generation::default());
                for &m in &pp.macs {
                    r.learn(d, mac(m), PortId(*slot), g, 0, u32::MAX);
                }
            }
        }
    }
    let cell = Arc::new(SnapshotCell::new(snap));
    let counters: Vec<Arc<CounterTable>> = (0..p.workers)
        .map(|_| Arc::new(CounterTable::default()))
        .collect();
    let mut built = Vec::new();
    for ((ports, slots), c) in workers.iter().zip(&slot_of).zip(&counters) {
        let mut w = Worker::new(&cell, fdb.clone(), c.clone());
        for (pi, slot) in slots.iter().enumerate() {
            let name = format!("w{}p{pi}", built.len());
            let frames = l2_frames(p, ports, pi);
            w.add_port(
                PortId(*slot),
                Box::new(MemoryPort::cycling(name, frames)),
                true,
            );
        }
        built.push(w);
    }
    Ok(Setup {
        workers: built,
        fdb,
        counters,
        slots: slot_of,
        new_flows_per_sec: None,
        instructions_per_new_flow: None,
        counters_unavailable: None,
    })
}

/// The snapshot of the switching scenarios, and each worker's port slots.
/// The IPv4 and IPv6 addresses of the host with MAC number `m`.
fn host_ips(m: usize) -> (Ipv4Addr, Ipv6Addr) {
    let b = (m as u32).to_be_bytes();
    let v6 = Ipv6Addr::new(
        0xfd00,
        0x17,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    );
    (Ipv4Addr::new(172, 17 + (b[1] & 7), b[2], b[3]), v6)
}

/// Port security for a planned port: its one MAC and that host's addresses.
fn security_of(pp: &PlannedPort) -> Option<dataplane::config::Security> {
    let m = *pp.macs.first()?;
    let (ip, ip6) = host_ips(m);
    Some(dataplane::config::Security {
        mac: mac(m),
        ip: Some(ip),
        ip6: Some(ip6),
    })
}

fn l2_snapshot(
    domains: Vec<Option<DomainConf>>,
    workers: &[Vec<PlannedPort>],
    secure: bool,
) -> (Snapshot, Vec<Vec<u16>>) {
    let mut snap = Snapshot {
        domains,
        ports: vec![None; FIRST_PORT.index()],
        ..Default::default()
    };
    let mut slot_of = Vec::new();
    for (wi, ports) in workers.iter().enumerate() {
        let mut slots = Vec::new();
        for (pi, pp) in ports.iter().enumerate() {
            let slot = snap.ports.len() as u16;
            let name = format!("w{wi}p{pi}");
            let mut conf = port(name, pp.mode.clone(), u32::MAX);
            if let Some(c) = conf.as_mut().filter(|_| secure) {
                c.security = security_of(pp);
            }
            snap.ports.push(conf);
            slots.push(slot);
        }
        slot_of.push(slots);
    }
    snap.rebuild();
    (snap, slot_of)
}

/// Port `pi`'s frames: from its MACs to MACs of another port of the same worker and
/// domain (for VLANs, across the access/trunk boundary: a tag op per frame). With
/// `--ports`, frame k goes to the (k mod (n-1))+1-th port after this one, so a batch
/// reaches up to 64 ports.
fn l2_frames(p: &Params, ports: &[PlannedPort], pi: usize) -> Vec<Vec<u8>> {
    let Some(pp) = ports.get(pi) else {
        return Vec::new();
    };
    let peer = (1..ports.len())
        .filter_map(|k| ports.get((pi + k) % ports.len()))
        .find(|q| {
            q.domain == pp.domain
                && (q.tag.is_none() != pp.tag.is_none()
                    || matches!(p.scenario, Scenario::L2 | Scenario::L2v6))
        })
        .unwrap_or(pp);
    let spread = p.ports.is_some() && ports.len() > 1;
    let n = if spread {
        pp.macs.len().max(ports.len() - 1)
    } else {
        pp.macs.len()
    }
    .min(TEMPLATES_PER_PORT);
    let step = (pp.macs.len() / n.max(1)).max(1);
    (0..n)
        .map(|k| {
            let to = if spread {
                ports.get((pi + 1 + k % (ports.len() - 1)) % ports.len())
            } else {
                Some(peer)
            };
            let to = to.unwrap_or(peer);
            let s = pp.macs[(k * step) % pp.macs.len()];
            let d = to.macs[(k * step + k / 7) % to.macs.len()];
            let ((sip, sip6), (dip, dip6)) = (host_ips(s), host_ips(d));
            let spec = UdpSpec {
                dst: mac(d),
                src: mac(s),
                vlan: pp.tag,
                size: p.frame_size,
                sip,
                dip,
                sport: 40000 + (k % 1000) as u16,
                dport: 5201,
            };
            if p.scenario == Scenario::L2v6 {
                udp6_frame(&spec, (sip6, dip6))
            } else {
                udp_frame(&spec)
            }
        })
        .collect()
}

/// What the worker threads of a run report together.
struct Joined {
    frames: u64,
    core_time: f64,
    warm: u64,
    /// Instructions in all, when every worker counted them.
    instructions: Option<u64>,
    unavailable: Option<String>,
}

/// One worker thread's frames, time, warm-up frames and instructions (or why none).
type WorkerRun = (u64, Duration, u64, Result<u64, Option<String>>);

fn join_workers(
    handles: Vec<std::thread::JoinHandle<WorkerRun>>,
    unavailable: Option<String>,
) -> Joined {
    let mut j = Joined {
        frames: 0,
        core_time: 0.0,
        warm: 0,
        instructions: Some(0),
        unavailable,
    };
    for h in handles {
        let (f, el, wf, ins) = h
            .join()
            .unwrap_or((0, Duration::from_secs(1), 0, Err(None)));
        j.frames += f;
        j.warm += wf;
        j.core_time += el.as_secs_f64();
        match ins {
            Ok(n) => j.instructions = j.instructions.map(|t| t + n),
            Err(why) => {
                j.instructions = None;
                j.unavailable = j.unavailable.take().or(why);
            }
        }
    }
    j
}

/// Runs one scenario and reports it.
pub fn run(p: &Params) -> Result<Outcome, BenchError> {
    let Setup {
        workers,
        fdb,
        counters,
        slots: slot_of,
        new_flows_per_sec,
        instructions_per_new_flow,
        counters_unavailable,
    } = setup(p)?;
    let want = p.instructions;
    let stop = Arc::new(AtomicBool::new(false));
    let start_line = Arc::new(std::sync::Barrier::new(p.workers + 1));
    let mut handles = Vec::new();
    for (wi, mut w) in workers.into_iter().enumerate() {
        let stop = stop.clone();
        let line = start_line.clone();
        handles.push(std::thread::spawn(move || {
            pin_to_cpu(wi);
            // Warm up caches and the branch predictor: some 8000 batches.
            let mut warm = 0u64;
            let rounds = (8000 / w.rx_slots().len().max(1)).max(2);
            for _ in 0..rounds {
                warm += w.poll_all() as u64;
            }
            line.wait();
            let mut why = None;
            let counter = counter::start_if(want, &mut why);
            let t = Instant::now();
            let mut frames = 0u64;
            // The stop flag read every 256 batches or so, whatever the port count.
            let inner = (256 / w.rx_slots().len().max(1)).max(1);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..inner {
                    frames += w.poll_all() as u64;
                }
            }
            let el = t.elapsed();
            let instructions = counter.map(|c| c.stop());
            (frames, el, warm, instructions.ok_or(why))
        }));
    }
    start_line.wait();
    std::thread::sleep(Duration::from_secs_f64(p.seconds));
    stop.store(true, Ordering::Relaxed);
    let Joined {
        frames,
        core_time,
        warm,
        instructions,
        unavailable,
    } = join_workers(handles, counters_unavailable);
    let sent = sum_tx(&counters, &slot_of).saturating_sub(warm);
    let per_core_secs = core_time / p.workers as f64;
    let mpps_per_core = frames as f64 / per_core_secs / p.workers as f64 / 1e6;
    Ok(Outcome {
        scenario: p.scenario.name(),
        mpps_per_core,
        ns_per_frame: if frames > 0 {
            core_time * 1e9 / frames as f64
        } else {
            0.0
        },
        frames,
        workers: p.workers,
        frame_size: p.frame_size,
        fdb_entries: fdb.len(),
        ports: slot_of.iter().map(Vec::len).sum(),
        sent,
        new_flows_per_sec,
        port_security: p.port_security,
        instructions_per_frame: instructions
            .filter(|_| want && frames > 0)
            .map(|n| n as f64 / frames as f64),
        instructions_per_new_flow,
        counters_unavailable: unavailable,
    })
}

fn sum_tx(counters: &[Arc<CounterTable>], slots: &[Vec<u16>]) -> u64 {
    let mut all: Vec<u16> = slots.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    let mut t = 0;
    for c in counters {
        for s in &all {
            t += c.read(PortId(*s)).tx_packets;
        }
    }
    t
}

/// Pins the calling thread to one CPU (best effort; benchmarks only).
fn pin_to_cpu(i: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for this thread (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_scenario_forwards_every_frame_by_unicast() {
        let o = run(&Params {
            seconds: 0.2,
            ..Default::default()
        })
        .unwrap();
        assert!(o.frames > 0);
        assert_eq!(o.fdb_entries, 1024);
        // Learned unicast: every frame leaves exactly once.
        assert_eq!(o.sent, o.frames);
    }

    /// A thousand ports, each sending to every other in turn: every frame still leaves
    /// once (learned unicast), through up to 64 ports per batch.
    #[test]
    fn l2_scenario_with_a_thousand_ports_forwards_every_frame() {
        let o = run(&Params {
            seconds: 0.2,
            ports: Some(1000),
            macs: 1000,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(o.ports, 1000);
        assert_eq!(o.fdb_entries, 1000);
        assert!(o.frames > 0);
        assert_eq!(o.sent, o.frames);
    }

    #[test]
    fn l2v6_scenario_forwards_ipv6_frames_by_unicast() {
        let o = run(&Params {
            scenario: Scenario::L2v6,
            seconds: 0.2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(o.scenario, "l2v6");
        assert!(o.frames > 0);
        assert_eq!(o.sent, o.frames);
        let f = udp6_frame(
            &UdpSpec {
                dst: mac(1),
                src: mac(2),
                vlan: None,
                size: 64,
                sip: Ipv4Addr::UNSPECIFIED,
                dip: Ipv4Addr::UNSPECIFIED,
                sport: 1,
                dport: 2,
            },
            ("fd00::2".parse().unwrap(), "fd00::3".parse().unwrap()),
        );
        assert_eq!(f.len(), 64);
        let ip = dataplane::wire::Ipv6Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.next_header(), ip.payload_len()), (17, 10));
    }

    #[test]
    fn secured_ports_pass_their_own_frames_of_either_family() {
        for scenario in [Scenario::L2, Scenario::L2v6] {
            let o = run(&Params {
                scenario,
                port_security: true,
                seconds: 0.2,
                ..Default::default()
            })
            .unwrap();
            assert!(o.frames > 0 && o.port_security);
            assert_eq!(o.fdb_entries, 4);
            // Nothing refused by port security: every frame leaves once.
            assert_eq!(o.sent, o.frames, "{scenario:?}");
        }
    }

    #[test]
    fn vlan_scenario_runs_two_workers() {
        let o = run(&Params {
            scenario: Scenario::Vlan,
            seconds: 0.2,
            workers: 2,
            ..Default::default()
        })
        .unwrap();
        assert!(o.frames > 0);
        assert_eq!(o.workers, 2);
    }

    #[test]
    fn bad_parameters_refused() {
        for p in [
            Params {
                frame_size: 10,
                ..Default::default()
            },
            Params {
                macs: 1,
                ..Default::default()
            },
            Params {
                workers: 0,
                ..Default::default()
            },
            Params {
                seconds: 0.0,
                ..Default::default()
            },
            Params {
                flows: 0,
                ..Default::default()
            },
            Params {
                ports: Some(1),
                ..Default::default()
            },
            Params {
                ports: Some(MAX_BENCH_PORTS + 1),
                ..Default::default()
            },
            Params {
                scenario: Scenario::Vlan,
                port_security: true,
                ..Default::default()
            },
        ] {
            assert!(run(&p).is_err());
        }
    }

    #[test]
    fn nat_scenario_translates_every_frame_both_ways() {
        for scenario in [Scenario::Nat, Scenario::Nat66] {
            for port_security in [false, true] {
                let o = run(&Params {
                    scenario,
                    seconds: 0.2,
                    flows: 4096,
                    port_security,
                    ..Default::default()
                })
                .unwrap();
                assert!(o.frames > 0, "{scenario:?}");
                assert_eq!(
                    o.sent, o.frames,
                    "{scenario:?}: every frame translated and sent"
                );
            }
        }
    }

    #[test]
    fn frame_builder_makes_valid_udp() {
        let f = udp_frame(&UdpSpec {
            dst: mac(1),
            src: mac(2),
            vlan: Some(10),
            size: 64,
            sip: Ipv4Addr::new(1, 1, 1, 1),
            dip: Ipv4Addr::new(2, 2, 2, 2),
            sport: 1,
            dport: 2,
        });
        assert_eq!(f.len(), 64);
        let l2 = dataplane::wire::parse_l2(&f).unwrap();
        let ip = dataplane::wire::Ipv4Packet::new_checked(&f[l2.l3_offset..]).unwrap();
        assert!(ip.verify_checksum());
        let u = dataplane::wire::UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(ip.src(), ip.dst()));
    }
}
