//! The `vswitch bench` scenarios: the daemon's own workers and pipeline on in-memory
//! ports, in process, no I/O.
//!
//! Each worker thread gets its own ports (cycling memory ports that copy every frame in
//! on receive and out on send, as a TAP read and write would) and shares the FDB and
//! the configuration snapshot with the others, as in the daemon. The FDB is filled
//! before the clock starts, so the measured path is learned unicast: classify, learn
//! (refresh), lookup, egress.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bridge::{CounterTable, Fdb, VlanSet};
use crate::config::{DomainConf, FIRST_PORT, PortConf, PortMode, PortRole, Snapshot, SnapshotCell};
use crate::port::MemoryPort;
use crate::wire::MacAddr;
use crate::worker::Worker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    L2,
    Vlan,
    Nat,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::L2 => "l2",
            Scenario::Vlan => "vlan",
            Scenario::Nat => "nat",
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
    /// Frames that left on a port (equal to `frames` when nothing was flooded or dropped).
    pub sent: u64,
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
}

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
        let mut ip = crate::wire::Ipv4Packet::new_unchecked(&mut f[l3..]);
        ip.set_version_and_header_len(20);
        ip.set_total_len(ip_len as u16);
        ip.set_ttl(64);
        ip.set_protocol(17);
        ip.set_src(sip);
        ip.set_dst(dip);
        ip.fill_checksum();
    }
    {
        let mut u = crate::wire::UdpPacket::new_unchecked(&mut f[l3 + 20..]);
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
        vlan,
        gateway_mac: MacAddr::from_ipv4(gw),
        gateway_ip: gw,
        subnet: Ipv4Addr::new(172, 16 + third, 0, 0),
        prefix_len: 16,
        icc: true,
        members: vec![],
    })
}

fn port(name: String, mode: PortMode, limit: u32) -> Option<PortConf> {
    Some(PortConf {
        name,
        gen_: 0,
        role: PortRole::Container,
        mode,
        security: None,
        mac_limit: limit,
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
                            mode: PortMode::Access { domain: d },
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
            let each = (p.macs / (w * PORTS_L2)).max(1);
            let mut workers = Vec::new();
            let mut next = 0usize;
            for _ in 0..w {
                let mut ports = Vec::new();
                for _ in 0..PORTS_L2 {
                    ports.push(PlannedPort {
                        mode: PortMode::Access { domain: 0 },
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
    if p.scenario == Scenario::Nat {
        return Err(BenchError::Unavailable("nat"));
    }
    Ok(())
}

/// Builds the ports, snapshot, FDB (filled) and workers of a scenario.
pub fn setup(p: &Params) -> Result<Setup, BenchError> {
    validate(p)?;
    let (domains, workers) = plan(p);
    let limit = u32::MAX;
    let mut snap = Snapshot {
        domains,
        ports: vec![None; usize::from(FIRST_PORT)],
        ..Default::default()
    };
    let mut slot_of = Vec::new();
    for (wi, ports) in workers.iter().enumerate() {
        let mut slots = Vec::new();
        for (pi, pp) in ports.iter().enumerate() {
            let slot = snap.ports.len() as u16;
            snap.ports
                .push(port(format!("w{wi}p{pi}"), pp.mode.clone(), limit));
            slots.push(slot);
        }
        slot_of.push(slots);
    }
    snap.rebuild();
    let total_macs: usize = workers.iter().flatten().map(|pp| pp.macs.len()).sum();
    let fdb = Arc::new(Fdb::new((total_macs as u32).max(1024)));
    {
        let r = fdb.pin();
        for (wi, ports) in workers.iter().enumerate() {
            for (pi, pp) in ports.iter().enumerate() {
                for &m in &pp.macs {
                    r.learn(pp.domain, mac(m), slot_of[wi][pi], 0, 0, limit);
                }
            }
        }
    }
    let cell = Arc::new(SnapshotCell::new(snap));
    let counters: Vec<Arc<CounterTable>> = (0..p.workers)
        .map(|_| Arc::new(CounterTable::default()))
        .collect();
    let mut built = Vec::new();
    // Frames: each port sends from its MACs to MACs of another port of the same worker
    // and domain (for VLANs, across the access/trunk boundary: a tag op per frame).
    for (wi, ports) in workers.iter().enumerate() {
        let mut w = Worker::new(&cell, fdb.clone(), counters[wi].clone());
        for (pi, pp) in ports.iter().enumerate() {
            let peer = (1..ports.len())
                .map(|k| &ports[(pi + k) % ports.len()])
                .find(|q| {
                    q.domain == pp.domain
                        && (q.tag.is_none() != pp.tag.is_none() || p.scenario == Scenario::L2)
                })
                .unwrap_or(pp);
            let n = pp.macs.len().min(TEMPLATES_PER_PORT);
            let step = (pp.macs.len() / n).max(1);
            let frames: Vec<Vec<u8>> = (0..n)
                .map(|k| {
                    let s = pp.macs[(k * step) % pp.macs.len()];
                    let d = peer.macs[(k * step + k / 7) % peer.macs.len()];
                    udp_frame(&UdpSpec {
                        dst: mac(d),
                        src: mac(s),
                        vlan: pp.tag,
                        size: p.frame_size,
                        sip: Ipv4Addr::new(172, 17, 0, 2),
                        dip: Ipv4Addr::new(172, 17, 0, 3),
                        sport: 40000 + (k % 1000) as u16,
                        dport: 5201,
                    })
                })
                .collect();
            w.add_port(
                slot_of[wi][pi],
                Box::new(MemoryPort::cycling(format!("w{wi}p{pi}"), frames)),
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
    })
}

/// Runs one scenario and reports it.
pub fn run(p: &Params) -> Result<Outcome, BenchError> {
    let Setup {
        workers,
        fdb,
        counters,
        slots: slot_of,
    } = setup(p)?;
    let stop = Arc::new(AtomicBool::new(false));
    let start_line = Arc::new(std::sync::Barrier::new(p.workers + 1));
    let mut handles = Vec::new();
    for (wi, mut w) in workers.into_iter().enumerate() {
        let stop = stop.clone();
        let line = start_line.clone();
        handles.push(std::thread::spawn(move || {
            pin_to_cpu(wi);
            // Warm up caches and the branch predictor.
            let mut warm = 0u64;
            for _ in 0..2000 {
                warm += w.poll_all() as u64;
            }
            line.wait();
            let t = Instant::now();
            let mut frames = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    frames += w.poll_all() as u64;
                }
            }
            (frames, t.elapsed(), warm)
        }));
    }
    start_line.wait();
    std::thread::sleep(Duration::from_secs_f64(p.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut frames = 0u64;
    let mut core_time = 0f64;
    let mut warm = 0u64;
    for h in handles {
        let (f, el, wf) = h.join().unwrap_or((0, Duration::from_secs(1), 0));
        frames += f;
        warm += wf;
        core_time += el.as_secs_f64();
    }
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
        sent,
    })
}

fn sum_tx(counters: &[Arc<CounterTable>], slots: &[Vec<u16>]) -> u64 {
    let mut t = 0;
    for c in counters {
        for s in slots.iter().flatten() {
            t += c.read(*s).tx_packets;
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
                scenario: Scenario::Nat,
                ..Default::default()
            },
        ] {
            assert!(run(&p).is_err());
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
        let l2 = crate::wire::parse_l2(&f).unwrap();
        let ip = crate::wire::Ipv4Packet::new_checked(&f[l2.l3_offset..]).unwrap();
        assert!(ip.verify_checksum());
        let u = crate::wire::UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(ip.src(), ip.dst()));
    }
}
