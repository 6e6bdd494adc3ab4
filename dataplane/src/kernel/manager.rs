//! The pair manager's thread: every [`SCAN`] it takes the pairs the workers noted and
//! the current snapshot to [`Pairs::scan`]; every [`COUNT`] it reads the filters'
//! counters into its own [`CounterTable`] (added to the ports' by the runtime). On
//! stop it removes every pair's filters.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::hints::PairHints;
use super::netlink::{PrioCounters, Redirect, Rtnl};
use super::pairs::{KernelOps, Pairs};
use crate::bridge::CounterTable;
use crate::capture::CaptureSlot;
use crate::config::SnapshotCell;
use crate::ids::PortId;

/// How often noted pairs are installed and changed ones removed.
const SCAN: Duration = Duration::from_millis(100);
/// How often the filters' counters are read besides when `stats` asks (a dump per host
/// end with pairs: a millisecond or so each), for idle pairs, the metrics and the FDB:
/// a quarter of the FDB's aging time, 10 s at most, 1 s at least.
fn count_every(aging_secs: u32) -> Duration {
    Duration::from_secs(u64::from((aging_secs / 4).clamp(1, 10)))
}

/// The kernel, through routing netlink, in the namespace the manager started in.
struct Netlink(Rtnl);

impl KernelOps for Netlink {
    fn ifindex(&mut self, name: &str) -> Option<u32> {
        super::link::ifindex(name).ok()
    }
    fn add_redirect(&mut self, r: &Redirect<'_>) -> io::Result<()> {
        self.0.add_redirect(r)
    }
    fn delete_filter(&mut self, ifindex: u32, prio: u16, protocol: u16) -> io::Result<()> {
        self.0.delete_filter(ifindex, prio, protocol)
    }
    fn ingress_counters(&mut self, ifindex: u32) -> io::Result<Vec<PrioCounters>> {
        self.0.ingress_counters(ifindex)
    }
}

/// What the workers and the runtime share with the manager.
pub struct Shared {
    pub cell: Arc<SnapshotCell>,
    pub capture: CaptureSlot,
    /// Where the workers note pairs.
    pub hints: Arc<PairHints>,
    /// What the kernel carried, per port.
    pub counters: Arc<CounterTable>,
    /// How the daemon named the ports' devices.
    pub names: super::Names,
    /// How many pairs the kernel carries now.
    pub pairs: Arc<AtomicUsize>,
    /// The FDB, whose entries for the senders of pairs are kept fresh, and the
    /// workers' clock's epoch (its ages are seconds since then).
    pub fdb: (Arc<crate::bridge::Fdb>, Instant),
}

/// The running manager; stopping it (or dropping it) removes its filters.
pub struct Manager {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    reads: Arc<Reads>,
}

/// Counter reads asked for (`stats`) and done, so a reader sees what the kernel
/// carried up to its request.
#[derive(Default)]
struct Reads {
    asked: AtomicU64,
    done: AtomicU64,
}

impl Manager {
    /// Starts the manager thread in the caller's network namespace.
    pub fn start(shared: Shared) -> io::Result<Manager> {
        let rtnl = Rtnl::open()?;
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(Reads::default());
        let (s2, r2) = (stop.clone(), reads.clone());
        let thread = std::thread::Builder::new()
            .name("vswitch-kernel".into())
            .spawn(move || {
                run(
                    Pairs::new(Netlink(rtnl), shared.names, shared.counters.clone()),
                    &shared,
                    (&s2, &r2),
                )
            })?;
        Ok(Manager {
            stop,
            thread: Some(thread),
            reads,
        })
    }

    /// Has the filters' counters read now, waiting for it `within` at most.
    pub fn refresh(&self, within: Duration) {
        let want = self.reads.asked.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        let deadline = Instant::now() + within;
        while self.reads.done.load(Ordering::SeqCst) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Learns again the MACs that sent through the kernel since the last reading, so that
/// they do not age out of the FDB while their traffic bypasses the workers.
fn refresh_fdb(
    pairs: &mut Pairs<Netlink>,
    snap: &crate::config::Snapshot,
    (fdb, epoch): &(Arc<crate::bridge::Fdb>, Instant),
) {
    let now = epoch.elapsed().as_secs() as u32;
    let pinned = fdb.pin();
    for s in pairs.take_active() {
        if let Some(p) = snap.port(s.port) {
            pinned.learn(s.domain, s.mac, s.port, s.generation, now, p.mac_limit);
        }
    }
}

fn run(mut pairs: Pairs<Netlink>, sh: &Shared, (stop, reads): (&AtomicBool, &Reads)) {
    let epoch = Instant::now();
    let mut counted = Instant::now();
    let mut noted = Vec::new();
    let mut last: Option<(Arc<crate::config::Snapshot>, Option<PortId>)> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(SCAN);
        noted.clear();
        sh.hints.drain(|a, b| noted.push((a, b)));
        let snap = sh.cell.load_full();
        let captured = sh.capture.load().as_ref().map(|c| PortId(c.slot));
        let now = epoch.elapsed().as_secs() as u32;
        // Nothing noted and nothing changed: nothing to do.
        let same = (last.as_ref()).is_some_and(|(s, c)| Arc::ptr_eq(s, &snap) && *c == captured);
        if !(same && noted.is_empty()) {
            pairs.scan(&snap, &noted, captured, now);
            last = Some((snap.clone(), captured));
        }
        sh.pairs.store(pairs.len(), Ordering::Relaxed);
        let asked = reads.asked.load(Ordering::SeqCst);
        let every = count_every(snap.aging_secs);
        if asked > reads.done.load(Ordering::SeqCst) || counted.elapsed() >= every {
            if !pairs.is_empty() {
                pairs.count(now);
                refresh_fdb(&mut pairs, &snap, &sh.fdb);
            }
            counted = Instant::now();
            reads.done.store(asked, Ordering::SeqCst);
        }
    }
    pairs.count(epoch.elapsed().as_secs() as u32);
    pairs.clear();
    sh.pairs.store(0, Ordering::Relaxed);
}
