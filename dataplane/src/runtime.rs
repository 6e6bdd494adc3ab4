//! The threads: workers that move frames, and the gateway thread (named
//! `vswitch-gateway`) that answers for every network's gateway address.
//!
//! ```text
//!   control thread ──(snapshot swap, commands)──┐
//!        │                                       ▼
//!        │        ┌── worker 0 ── mio poll over its ports' fds ──┐
//!        │        ├── worker 1 ── ...                             ├─ any worker sends to any port
//!        │        └───────┬───────────────────────────────────────┘
//!        │                │ SPSC rings (frames to/from the gateway), one pair per worker
//!        └──(closures)──► gateway thread ── mio poll over host sockets, timers
//! ```
//!
//! A worker owns a [`Worker`] (ports, batch, pipeline state) and blocks in `mio::Poll`
//! until a port is readable or a waker fires (a command from the control thread, or
//! replies from the gateway thread). Readable ports are drained batch by batch,
//! round-robin, until each reports empty. The gateway thread runs a [`GatewayHandler`]
//! (in the daemon, [`crate::gateway::io::GatewayIo`]: the gateway's protocols and the
//! socket uplink); it is handed every frame the bridge sends to the gateway and answers
//! through the rings. The control thread reaches it with
//! closures run on the gateway thread ([`Runtime::gateway_call`]).

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::bridge::{CounterTable, Fdb, PortStats};
use crate::config::{GATEWAY_PORT, Snapshot, SnapshotCell};
use crate::fair::FairQueue;
use crate::port::ring::{RingEnd, RingFrame, Wake, ring_pair};
use crate::port::{MAX_BATCH, Port};
use crate::worker::{Clock, Worker};

use crate::gateway::io::token::WAKER;

/// How long a worker keeps polling without sleeping after it last moved a frame.
pub const SPIN_AFTER_WORK: Duration = Duration::from_micros(200);

/// Connection-tracking entries at most, by default.
pub const DEFAULT_MAX_FLOWS: usize = 65536;

struct MioWake(Arc<Waker>);
impl Wake for MioWake {
    fn wake(&self) {
        let _ = self.0.wake();
    }
}

enum WorkerCmd {
    Add {
        slot: u16,
        port: Box<dyn Port>,
        rx: bool,
    },
    Remove {
        slot: u16,
        done: mpsc::Sender<()>,
    },
    /// A closure run on the worker's thread between rounds.
    Run(Box<dyn FnOnce(&mut Worker) + Send>),
    Stop,
}

struct WorkerHandle {
    cmds: mpsc::Sender<WorkerCmd>,
    waker: Arc<Waker>,
    counters: Arc<CounterTable>,
    time: Arc<WorkerTime>,
    thread: Option<JoinHandle<()>>,
}

/// Where a worker's time went, in nanoseconds since it started: rounds that moved
/// frames (busy), and the rest (sleeping in its poll, or polling and finding nothing).
/// Written by the worker alone, once a round.
#[derive(Debug, Default)]
pub struct WorkerTime {
    busy_ns: std::sync::atomic::AtomicU64,
    idle_ns: std::sync::atomic::AtomicU64,
}

impl WorkerTime {
    /// Adds one round of `ns` nanoseconds.
    fn add(&self, busy: bool, ns: u64) {
        let c = if busy { &self.busy_ns } else { &self.idle_ns };
        c.fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// (busy, idle) nanoseconds so far.
    pub fn read(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.busy_ns.load(Relaxed), self.idle_ns.load(Relaxed))
    }
}

/// Settings of the threads.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub workers: usize,
    /// The largest frame a worker's buffers take (a super-frame with offloads).
    pub frame_cap: usize,
    /// Spin instead of sleeping in poll (lower latency, a core always busy).
    pub busy_poll: bool,
    /// Connection-tracking entries at most (packet uplink).
    pub max_flows: usize,
    /// Of those, what one container may hold (0: a quarter, at least 4,096).
    pub flows_per_container: usize,
    /// Frames the gateway thread holds waiting for all ports (its fair queue).
    pub gateway_queue: usize,
    /// Hand unicast between kernel-path ports, whose devices are so named, to the
    /// kernel (see [`crate::kernel`]).
    pub kernel_path: Option<crate::kernel::Names>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 1,
            frame_cap: crate::port::STD_FRAME_CAP,
            busy_poll: false,
            max_flows: DEFAULT_MAX_FLOWS,
            flows_per_container: 0,
            gateway_queue: crate::fair::DEFAULT_QUEUE_FRAMES,
            kernel_path: None,
        }
    }
}

/// What the gateway thread can do while handling an event.
pub struct GatewayCtx<'a> {
    ends: &'a mut [RingEnd],
    pub registry: &'a mio::Registry,
    /// The FDB (aging is the gateway thread's job).
    pub fdb: &'a Fdb,
    pub snapshot: &'a SnapshotCell,
    /// The clock the FDB ages by.
    pub epoch: Instant,
    /// The gateway thread's own per-port counters (it is their only writer): what the
    /// gateway refuses a port, added to the workers' on `stats`.
    pub counters: &'a CounterTable,
}

impl<'a> GatewayCtx<'a> {
    /// A context for driving a [`GatewayHandler`] outside the runtime (fuzz targets, tests):
    /// frames it sends go out through `ends[0]`.
    pub fn new(
        ends: &'a mut [RingEnd],
        registry: &'a mio::Registry,
        fdb: &'a Fdb,
        snapshot: &'a SnapshotCell,
        epoch: Instant,
        counters: &'a CounterTable,
    ) -> Self {
        GatewayCtx {
            ends,
            registry,
            fdb,
            snapshot,
            epoch,
            counters,
        }
    }
}

impl GatewayCtx<'_> {
    /// A buffer to build a frame in (recycled from the rings when possible).
    pub fn buffer(&mut self) -> Vec<u8> {
        self.ends
            .first_mut()
            .map(|e| e.buffer())
            .unwrap_or_default()
    }
    /// Sends a frame into `domain` (the bridge forwards it by destination MAC).
    pub fn send(&mut self, domain: u16, frame: Vec<u8>) -> bool {
        self.send_offload(domain, frame, crate::port::VnetHdr::default())
    }
    /// As [`GatewayCtx::send_offload`], the frame being `buf[..len]`.
    pub fn send_frame(
        &mut self,
        domain: u16,
        buf: Vec<u8>,
        len: usize,
        vnet: crate::port::VnetHdr,
    ) -> bool {
        match self.ends.first_mut() {
            Some(e) => e.send_frame(domain, buf, len, vnet),
            None => false,
        }
    }
    /// As [`GatewayCtx::send`], a super-frame with its offload metadata.
    pub fn send_offload(
        &mut self,
        domain: u16,
        frame: Vec<u8>,
        vnet: crate::port::VnetHdr,
    ) -> bool {
        match self.ends.first_mut() {
            Some(e) => e.send_offload(domain, frame, vnet),
            None => false,
        }
    }
    /// Returns a frame's buffer for reuse once handled.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if let Some(e) = self.ends.first_mut() {
            e.recycle(buf);
        }
    }
    /// Frees the spare frame buffers of every ring, the workers' sides included (see
    /// [`RingEnd::shed`]).
    pub fn shed_spares(&mut self) {
        for e in self.ends.iter_mut() {
            e.shed();
        }
    }
    /// Seconds on the FDB clock.
    pub fn now_secs(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }
}

/// What runs on the gateway thread: it is handed the frames the bridge sends to the
/// gateway, the readiness of the sources it registered, and a tick on every wake-up.
pub trait GatewayHandler: Send + 'static {
    /// Registers host sockets etc. (tokens must be below `usize::MAX`).
    fn setup(&mut self, _ctx: &mut GatewayCtx<'_>) -> io::Result<()> {
        Ok(())
    }
    /// Every frame the bridge sent to the gateway.
    fn frame(&mut self, ctx: &mut GatewayCtx<'_>, frame: RingFrame);
    /// One port's turn of the fair queue: up to [`crate::fair::QUANTUM`] of its frames,
    /// handled as one batch (by default, one by one).
    fn frames(&mut self, ctx: &mut GatewayCtx<'_>, frames: &mut dyn Iterator<Item = RingFrame>) {
        for f in frames {
            self.frame(ctx, f);
        }
    }
    /// A registered source is ready.
    fn event(&mut self, _ctx: &mut GatewayCtx<'_>, _token: Token, _ev: &mio::event::Event) {}
    /// Called on every wake-up; returns when it next needs to run.
    fn tick(&mut self, _ctx: &mut GatewayCtx<'_>, _now: Instant) -> Option<Instant> {
        None
    }
}

/// How long a control request waits for the gateway thread before it answers that the
/// daemon is busy (well inside the 10 s a request has).
pub const GATEWAY_CALL_DEADLINE: Duration = Duration::from_secs(2);

type GatewayJob<S> = Box<dyn FnOnce(&mut S, &mut GatewayCtx<'_>) + Send>;

struct GatewayThread<S> {
    jobs: mpsc::Sender<GatewayJob<S>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

pub struct Runtime<S: GatewayHandler> {
    /// A capture in progress, seen by every worker.
    pub capture: crate::capture::CaptureSlot,
    /// Connection tracking (used while a packet uplink is set).
    pub nat: Arc<crate::nat::Nat>,
    /// The packet uplink's neighbours.
    pub neigh: Arc<crate::uplink::packet::Neighbours>,
    pub cell: Arc<SnapshotCell>,
    pub fdb: Arc<Fdb>,
    workers: Vec<WorkerHandle>,
    gateway: GatewayThread<S>,
    gateway_counters: Arc<CounterTable>,
    pub epoch: Instant,
    /// The kernel path's pair manager, what it counted, how many pairs it holds.
    kernel: Option<KernelPath>,
}

/// Error starting the threads.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create an event loop: {0}")]
    Poll(io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    #[error("the gateway thread is gone")]
    GatewayGone,
    #[error("cannot start the kernel path's pair manager: {0}")]
    KernelPath(io::Error),
    #[error("the daemon is busy: its gateway thread did not answer within {0:?}; try again")]
    GatewayBusy(Duration),
}

impl<S: GatewayHandler> Runtime<S> {
    /// Starts the workers and the gateway thread on `snapshot`.
    pub fn start(
        cfg: RuntimeConfig,
        snapshot: Snapshot,
        fdb: Arc<Fdb>,
        gateway: S,
    ) -> Result<Runtime<S>, RuntimeError> {
        let cell = Arc::new(SnapshotCell::new(snapshot));
        let epoch = Instant::now();
        let spoll = Poll::new().map_err(RuntimeError::Poll)?;
        let swaker = Arc::new(Waker::new(spoll.registry(), WAKER).map_err(RuntimeError::Poll)?);
        let mut ends = Vec::new();
        let mut workers = Vec::new();
        let capture: crate::capture::CaptureSlot = Arc::new(arc_swap::ArcSwapOption::empty());
        let nat = Arc::new(crate::nat::Nat::with_quota(
            cfg.max_flows,
            cfg.flows_per_container,
        ));
        let neigh = Arc::new(crate::uplink::packet::Neighbours::default());
        let gateway_counters = Arc::new(CounterTable::default());
        let shared = WorkerShared {
            cell: &cell,
            fdb: &fdb,
            capture: &capture,
            nat: &nat,
            neigh: &neigh,
            tx_buckets: Arc::new(crate::shaper::SharedBuckets::default()),
            gateway_counters: &gateway_counters,
            epoch,
            kernel_pairs: cfg.kernel_path.map(|_| Default::default()),
        };
        for i in 0..cfg.workers.max(1) {
            let (handle, end) = spawn_worker(i, &cfg, &shared, &swaker)?;
            workers.push(handle);
            ends.push(end);
        }
        let hints = shared.kernel_pairs.clone();
        let kernel = start_kernel_path(cfg.kernel_path.zip(hints), &cell, &capture, (&fdb, epoch))?;
        let (jtx, jrx) = mpsc::channel::<GatewayJob<S>>();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shared = GatewayShared {
            cell: cell.clone(),
            fdb: fdb.clone(),
            counters: gateway_counters.clone(),
            epoch,
            queue_frames: cfg.gateway_queue,
        };
        let st2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vswitch-gateway".into())
            .spawn(move || gateway_loop(gateway, spoll, ends, jrx, shared, st2))
            .map_err(RuntimeError::Thread)?;
        Ok(Runtime {
            capture,
            nat,
            neigh,
            cell,
            fdb,
            workers,
            gateway: GatewayThread {
                jobs: jtx,
                waker: swaker,
                thread: Some(thread),
                stop,
            },
            gateway_counters,
            epoch,
            kernel,
        })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Publishes a new configuration; workers use it from their next batch.
    pub fn publish(&self, snap: Snapshot) {
        self.cell.store(snap);
    }

    /// Installs a port at `slot`: `handles[i]` goes to worker i (a queue of a
    /// multi-queue device, or a duplicate of one descriptor), receiving when its flag
    /// says so. Workers beyond the handles given get none (they cannot send to it).
    pub fn add_port(&self, slot: u16, handles: Vec<(Box<dyn Port>, bool)>) {
        for (w, (port, rx)) in self.workers.iter().zip(handles) {
            let _ = w.cmds.send(WorkerCmd::Add { slot, port, rx });
            let _ = w.waker.wake();
        }
        // The gateway thread zeroes its own counters of the slot.
        self.gateway_do(move |_, ctx| ctx.counters.reset(crate::ids::PortId(slot)));
        if let Some(k) = &self.kernel {
            k.counters.reset(crate::ids::PortId(slot));
        }
    }

    /// Removes the port at `slot` from every worker and waits until they let go of it.
    pub fn remove_port(&self, slot: u16) {
        let mut waits = Vec::new();
        for w in &self.workers {
            let (tx, rx) = mpsc::channel();
            if w.cmds.send(WorkerCmd::Remove { slot, done: tx }).is_ok() {
                let _ = w.waker.wake();
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Each worker's (busy, idle) nanoseconds, by worker index.
    pub fn worker_times(&self) -> Vec<(u64, u64)> {
        self.workers.iter().map(|w| w.time.read()).collect()
    }

    /// Has what the kernel path carried read into the ports' counters now (a moment at
    /// most), before a reading of them all.
    pub fn refresh_kernel_counters(&self) {
        if let Some(k) = &self.kernel {
            k.manager.refresh(Duration::from_millis(300));
        }
    }

    /// How many unicast pairs the kernel carries (None: no kernel path).
    pub fn kernel_pairs(&self) -> Option<usize> {
        (self.kernel.as_ref()).map(|k| k.pairs.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A port's counters, added up over the workers.
    pub fn stats(&self, slot: u16) -> PortStats {
        let mut s = self.gateway_counters.read(crate::ids::PortId(slot));
        if let Some(k) = &self.kernel {
            s.add(&k.counters.read(crate::ids::PortId(slot)));
        }
        for w in &self.workers {
            s.add(&w.counters.read(crate::ids::PortId(slot)));
        }
        s
    }

    /// Runs `f` on worker `i`'s thread between two rounds (fire and forget); nothing
    /// happens when there is no such worker.
    pub fn worker_do(&self, i: usize, f: impl FnOnce(&mut Worker) + Send + 'static) {
        if let Some(w) = self.workers.get(i)
            && w.cmds.send(WorkerCmd::Run(Box::new(f))).is_ok()
        {
            let _ = w.waker.wake();
        }
    }

    /// Runs `f` on the gateway thread (fire and forget).
    pub fn gateway_do(&self, f: impl FnOnce(&mut S, &mut GatewayCtx<'_>) + Send + 'static) {
        if self.gateway.jobs.send(Box::new(f)).is_ok() {
            let _ = self.gateway.waker.wake();
        }
    }

    /// Runs `f` on the gateway thread and returns its result, or
    /// [`RuntimeError::GatewayBusy`] when the thread does not get to it within
    /// [`GATEWAY_CALL_DEADLINE`] (it still runs, later; its result is dropped).
    pub fn gateway_call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S, &mut GatewayCtx<'_>) -> R + Send + 'static,
    ) -> Result<R, RuntimeError> {
        self.gateway_call_within(GATEWAY_CALL_DEADLINE, f)
    }

    /// As [`Runtime::gateway_call`], waiting at most `deadline`.
    pub fn gateway_call_within<R: Send + 'static>(
        &self,
        deadline: Duration,
        f: impl FnOnce(&mut S, &mut GatewayCtx<'_>) -> R + Send + 'static,
    ) -> Result<R, RuntimeError> {
        let (tx, rx) = mpsc::channel();
        self.gateway_do(move |s, c| {
            let _ = tx.send(f(s, c));
        });
        rx.recv_timeout(deadline).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => RuntimeError::GatewayBusy(deadline),
            mpsc::RecvTimeoutError::Disconnected => RuntimeError::GatewayGone,
        })
    }

    /// Stops every thread and waits for them.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        // The kernel stops carrying pairs first (the manager removes its filters).
        self.kernel = None;
        for w in &self.workers {
            let _ = w.cmds.send(WorkerCmd::Stop);
            let _ = w.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        self.gateway
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.gateway.waker.wake();
        if let Some(t) = self.gateway.thread.take() {
            let _ = t.join();
        }
    }
}

impl<S: GatewayHandler> Drop for Runtime<S> {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The port descriptors a worker's poll watches, by slot (the slot is the token).
struct Registered(Vec<(u16, RawFd)>);

impl Registered {
    fn add(&mut self, poll: &Poll, slot: u16, fd: RawFd) {
        let _ = poll.registry().register(
            &mut SourceFd(&fd),
            Token(usize::from(slot)),
            Interest::READABLE,
        );
        self.0.push((slot, fd));
    }

    fn remove(&mut self, poll: &Poll, slot: u16) {
        if let Some(i) = self.0.iter().position(|(s, _)| *s == slot) {
            let (_, fd) = self.0.swap_remove(i);
            let _ = poll.registry().deregister(&mut SourceFd(&fd));
        }
    }
}

/// The ports known to have frames waiting (edge-triggered: drained until a short
/// batch), each listed once, found in constant time however many ports a worker has.
struct Ready {
    list: Vec<u16>,
    listed: Vec<bool>,
}

impl Ready {
    fn new() -> Ready {
        Ready {
            list: Vec::new(),
            listed: vec![false; crate::bridge::fdb::MAX_PORT_SLOTS],
        }
    }

    fn insert(&mut self, slot: u16) {
        if let Some(m) = self.listed.get_mut(usize::from(slot))
            && !*m
        {
            *m = true;
            self.list.push(slot);
        }
    }

    fn get(&self, i: usize) -> Option<u16> {
        self.list.get(i).copied()
    }

    fn remove_at(&mut self, i: usize) {
        if i < self.list.len() {
            let slot = self.list.swap_remove(i);
            if let Some(m) = self.listed.get_mut(usize::from(slot)) {
                *m = false;
            }
        }
    }

    fn remove(&mut self, slot: u16) {
        if let Some(i) = self.list.iter().position(|s| *s == slot) {
            self.remove_at(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Carries out the control thread's commands; false on Stop.
fn worker_commands(
    w: &mut Worker,
    poll: &Poll,
    cmds: &mpsc::Receiver<WorkerCmd>,
    (registered, ready): (&mut Registered, &mut Ready),
) -> bool {
    while let Ok(c) = cmds.try_recv() {
        match c {
            WorkerCmd::Add { slot, port, rx } => {
                registered.remove(poll, slot);
                let fd = port.rx_fd();
                w.add_port(crate::ids::PortId(slot), port, rx);
                if rx && let Some(fd) = fd {
                    registered.add(poll, slot, fd);
                    // Frames may already wait: edge-triggered registration would
                    // not report them.
                    ready.insert(slot);
                }
            }
            WorkerCmd::Remove { slot, done } => {
                registered.remove(poll, slot);
                ready.remove(slot);
                drop(w.remove_port(crate::ids::PortId(slot)));
                let _ = done.send(());
            }
            WorkerCmd::Run(f) => f(w),
            WorkerCmd::Stop => return false,
        }
    }
    true
}

/// One batch per ready port per round, so a busy port cannot starve the others, then
/// the gateway's replies; returns the frames moved.
fn worker_round(w: &mut Worker, ready: &mut Ready) -> usize {
    let mut i = 0;
    let mut moved = 0;
    while let Some(slot) = ready.get(i) {
        let n = w.poll_port(crate::ids::PortId(slot));
        moved += n;
        if n < MAX_BATCH {
            ready.remove_at(i);
        } else {
            i += 1;
        }
    }
    // Replies from the gateway.
    loop {
        let n = w.poll_port(GATEWAY_PORT);
        moved += n;
        if n < MAX_BATCH {
            break;
        }
    }
    moved
}

/// The kernel path's pair manager, what it counted and how many pairs it holds.
struct KernelPath {
    manager: crate::kernel::manager::Manager,
    counters: Arc<CounterTable>,
    pairs: Arc<std::sync::atomic::AtomicUsize>,
}

/// The kernel path's pair manager, when the workers note pairs, and its counters.
fn start_kernel_path(
    with: Option<(crate::kernel::Names, Arc<crate::kernel::hints::PairHints>)>,
    cell: &Arc<SnapshotCell>,
    capture: &crate::capture::CaptureSlot,
    (fdb, epoch): (&Arc<Fdb>, Instant),
) -> Result<Option<KernelPath>, RuntimeError> {
    let Some((names, hints)) = with else {
        return Ok(None);
    };
    let counters = Arc::new(CounterTable::default());
    let pairs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shared = crate::kernel::manager::Shared {
        cell: cell.clone(),
        capture: capture.clone(),
        hints,
        counters: counters.clone(),
        names,
        pairs: pairs.clone(),
        fdb: (fdb.clone(), epoch),
    };
    let manager =
        crate::kernel::manager::Manager::start(shared).map_err(RuntimeError::KernelPath)?;
    Ok(Some(KernelPath {
        manager,
        counters,
        pairs,
    }))
}

/// What every worker shares.
struct WorkerShared<'a> {
    cell: &'a Arc<SnapshotCell>,
    fdb: &'a Arc<Fdb>,
    capture: &'a crate::capture::CaptureSlot,
    nat: &'a Arc<crate::nat::Nat>,
    neigh: &'a Arc<crate::uplink::packet::Neighbours>,
    /// What every worker sends to each port, charged to one bucket a port.
    tx_buckets: Arc<crate::shaper::SharedBuckets>,
    /// The gateway thread's counters: which ports it is refusing flows.
    gateway_counters: &'a Arc<CounterTable>,
    epoch: Instant,
    /// Where the workers note kernel-path pairs (a runtime with the kernel path).
    kernel_pairs: Option<Arc<crate::kernel::hints::PairHints>>,
}

/// Starts worker `i` with its ring pair to the gateway (whose waker is `gateway`);
/// returns its handle and the gateway's end of the rings.
fn spawn_worker(
    i: usize,
    cfg: &RuntimeConfig,
    sh: &WorkerShared<'_>,
    gateway: &Arc<Waker>,
) -> Result<(WorkerHandle, RingEnd), RuntimeError> {
    let poll = Poll::new().map_err(RuntimeError::Poll)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(RuntimeError::Poll)?);
    let (ring, end) = ring_pair(
        Arc::new(MioWake(gateway.clone())),
        Arc::new(MioWake(waker.clone())),
    );
    let counters = Arc::new(CounterTable::default());
    let mut w = Worker::with_frame_cap(sh.cell, sh.fdb.clone(), counters.clone(), cfg.frame_cap);
    w.clock = Clock::Real(sh.epoch);
    w.index = i;
    w.capture = Some(sh.capture.clone());
    w.nat = Some(sh.nat.clone());
    w.neigh = Some(sh.neigh.clone());
    w.tx_buckets = sh.tx_buckets.clone();
    w.set_refused(crate::worker::Refused::new(sh.gateway_counters.clone()));
    w.kernel_pairs = sh.kernel_pairs.clone();
    w.add_port(GATEWAY_PORT, Box::new(ring), true);
    let (tx, rx) = mpsc::channel();
    let busy = cfg.busy_poll;
    let time = Arc::new(WorkerTime::default());
    let t = time.clone();
    let thread = std::thread::Builder::new()
        .name(format!("vswitch-worker-{i}"))
        .spawn(move || worker_loop(w, poll, rx, (busy, &t)))
        .map_err(RuntimeError::Thread)?;
    let handle = WorkerHandle {
        cmds: tx,
        waker,
        counters,
        time,
        thread: Some(thread),
    };
    Ok((handle, end))
}

/// How long a worker may sleep: `idle`, or less when a port held to its rate is due
/// sooner.
fn held_timeout(w: &Worker, idle: Duration) -> Duration {
    match w.next_due() {
        Some(due) => Duration::from_nanos(due.saturating_sub(w.clock.nanos())).min(idle),
        None => idle,
    }
}

fn nanos_between(a: Instant, b: Instant) -> u64 {
    u64::try_from(b.saturating_duration_since(a).as_nanos()).unwrap_or(u64::MAX)
}

fn worker_loop(
    mut w: Worker,
    mut poll: Poll,
    cmds: mpsc::Receiver<WorkerCmd>,
    (busy, time): (bool, &WorkerTime),
) {
    let mut events = Events::with_capacity(256);
    let mut ready = Ready::new();
    let mut registered = Registered(Vec::new());
    // Hybrid polling: after forwarding something, keep polling without sleeping for a
    // short while, so the answer that usually follows within tens of microseconds
    // finds the worker awake instead of paying a sleep and a wake-up.
    let mut last_work = Instant::now() - SPIN_AFTER_WORK;
    let mut round_start = Instant::now();
    loop {
        let timeout = if busy || !ready.is_empty() || last_work.elapsed() < SPIN_AFTER_WORK {
            Some(Duration::ZERO)
        } else {
            Some(held_timeout(&w, Duration::from_millis(500)))
        };
        if let Err(e) = poll.poll(&mut events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return;
        }
        let woke = Instant::now();
        time.add(false, nanos_between(round_start, woke));
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            if let Ok(slot) = u16::try_from(ev.token().0) {
                ready.insert(slot);
            }
        }
        w.release_due(|slot| ready.insert(slot));
        w.send_held();
        // Commands (cheap to check every round).
        if !worker_commands(&mut w, &poll, &cmds, (&mut registered, &mut ready)) {
            return;
        }
        let moved = worker_round(&mut w, &mut ready) > 0;
        let now = Instant::now();
        // The poll's wait is idle; the round after it busy when it moved frames.
        time.add(moved, nanos_between(woke, now));
        round_start = now;
        // Polling after work only for frames whose answer is worth waiting for: not
        // those of a port the gateway is refusing flows (`worker::Refused`).
        if w.take_earned() > 0 {
            last_work = now;
        } else if !moved && !busy && ready.is_empty() {
            // Polling while idle: let a thread that has work on this core (the
            // sender or receiver of the traffic) go first.
            std::thread::yield_now();
        }
    }
}

/// What the gateway thread shares with the control thread and the workers.
struct GatewayShared {
    cell: Arc<SnapshotCell>,
    fdb: Arc<Fdb>,
    counters: Arc<CounterTable>,
    epoch: Instant,
    queue_frames: usize,
}

impl GatewayShared {
    fn ctx<'a>(&'a self, ends: &'a mut [RingEnd], registry: &'a mio::Registry) -> GatewayCtx<'a> {
        GatewayCtx {
            ends,
            registry,
            fdb: &self.fdb,
            snapshot: &self.cell,
            epoch: self.epoch,
            counters: &self.counters,
        }
    }
}

/// One wake-up's work after the poll: ready sources, the control thread's jobs, the
/// frames the rings hold moved into the fair queue, and one round of it (a quantum of
/// frames for each port that has some). True when frames are left for the next round.
fn gateway_round<S: GatewayHandler>(
    g: &mut S,
    ctx: &mut GatewayCtx<'_>,
    fair: &mut FairQueue,
    events: &Events,
    jobs: &mpsc::Receiver<GatewayJob<S>>,
) -> bool {
    for ev in events.iter() {
        if ev.token() != WAKER {
            g.event(ctx, ev.token(), ev);
        }
    }
    while let Ok(job) = jobs.try_recv() {
        job(g, ctx);
    }
    let counters = ctx.counters;
    for e in ctx.ends.iter_mut() {
        while let Some(f) = e.recv() {
            fair.push(f, counters, &mut |b| e.recycle(b));
        }
    }
    fair.round(|_, turn| g.frames(ctx, turn));
    !fair.is_empty()
}

fn gateway_loop<S: GatewayHandler>(
    mut g: S,
    mut poll: Poll,
    mut ends: Vec<RingEnd>,
    jobs: mpsc::Receiver<GatewayJob<S>>,
    shared: GatewayShared,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut events = Events::with_capacity(256);
    let mut next_age = Instant::now();
    let _ = g.setup(&mut shared.ctx(&mut ends, poll.registry()));
    let mut deadline: Option<Instant> = None;
    let mut fair = FairQueue::new(shared.queue_frames);
    let mut more = false;
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let until = [deadline, Some(next_age)]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(now));
        // Frames still queued: look at the sockets and jobs without sleeping.
        let until = if more { Some(Duration::ZERO) } else { until };
        if let Err(e) = poll.poll(&mut events, until)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return;
        }
        let mut ctx = shared.ctx(&mut ends, poll.registry());
        more = gateway_round(&mut g, &mut ctx, &mut fair, &events, &jobs);
        let now = Instant::now();
        if now >= next_age {
            let snap = shared.cell.load_full();
            shared.fdb.age(ctx.now_secs(), snap.aging_secs);
            next_age = now + Duration::from_secs(1);
        }
        deadline = g.tick(&mut ctx, now);
        for e in ctx.ends.iter_mut() {
            e.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DomainConf, Net4, PortConf, PortMode, PortRole};
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;
    use std::os::fd::{AsRawFd, OwnedFd};

    /// A port over one end of a socketpair (SOCK_SEQPACKET keeps frame boundaries).
    struct PairPort {
        fd: OwnedFd,
    }

    fn pair() -> (PairPort, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills two descriptors we then own.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: both descriptors were just created and are owned by nobody else.
        unsafe {
            use std::os::fd::FromRawFd;
            (
                PairPort {
                    fd: OwnedFd::from_raw_fd(fds[0]),
                },
                OwnedFd::from_raw_fd(fds[1]),
            )
        }
    }

    impl Port for PairPort {
        fn name(&self) -> &str {
            "pair"
        }
        fn recv(
            &mut self,
            batch: &mut crate::port::Batch,
        ) -> Result<usize, crate::port::PortError> {
            let mut n = 0;
            for f in batch.slots_mut() {
                let area = f.recv_area();
                // SAFETY: reading into a buffer we own, of its length.
                let r = unsafe {
                    libc::read(self.fd.as_raw_fd(), area.as_mut_ptr().cast(), area.len())
                };
                if r <= 0 {
                    break;
                }
                f.set_received(r as usize);
                n += 1;
            }
            batch.set_len(n);
            Ok(n)
        }
        fn send(
            &mut self,
            batch: &crate::port::Batch,
            sel: &[crate::port::TxSel],
        ) -> Result<usize, crate::port::PortError> {
            let mut n = 0;
            for s in sel {
                if let Some(f) = batch.get(usize::from(s.idx)) {
                    let d = f.data();
                    // SAFETY: writing from a buffer we own, of its length.
                    let r = unsafe { libc::write(self.fd.as_raw_fd(), d.as_ptr().cast(), d.len()) };
                    if r > 0 {
                        n += 1;
                    }
                }
            }
            Ok(n)
        }
        fn rx_fd(&self) -> Option<RawFd> {
            Some(self.fd.as_raw_fd())
        }
    }

    struct Counting(Arc<std::sync::atomic::AtomicUsize>);
    impl GatewayHandler for Counting {
        fn frame(&mut self, ctx: &mut GatewayCtx<'_>, f: RingFrame) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.recycle(f.data);
        }
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot {
            domains: vec![Some(DomainConf {
                name: "n".into(),
                vlan: None,
                gateway_mac: MacAddr([2, 0x42, 10, 0, 0, 1]),
                v4: Some(Net4::of(Ipv4Addr::new(10, 0, 0, 1), 24)),
                v6: None,
                icc: true,
                egress: true,
                members: vec![],
                owners: vec![],
                listeners: vec![],
            })],
            ports: vec![
                Some(PortConf {
                    name: "gateway".into(),
                    generation: crate::ids::Generation(0),
                    role: PortRole::Gateway,
                    mode: PortMode::Access {
                        domain: crate::ids::DomainId(0),
                    },
                    security: None,
                    mac_limit: 0,
                    kernel: false,
                    limits: Default::default(),
                }),
                None,
            ],
            ..Default::default()
        };
        for i in 0..2 {
            s.ports.push(Some(PortConf {
                name: format!("p{i}"),
                generation: crate::ids::Generation(0),
                role: PortRole::Container,
                mode: PortMode::Access {
                    domain: crate::ids::DomainId(0),
                },
                security: None,
                mac_limit: 1024,
                kernel: false,
                limits: Default::default(),
            }));
        }
        s.rebuild();
        s
    }

    fn read_timeout(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // SAFETY: reading into a buffer we own, of its length.
            let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                return Some(r as usize);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    #[test]
    fn threads_forward_between_fd_ports_and_feed_the_gateway() {
        for workers in [1, 2] {
            let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let rt = Runtime::start(
                RuntimeConfig {
                    workers,
                    ..Default::default()
                },
                snapshot(),
                Arc::new(Fdb::default()),
                Counting(count.clone()),
            )
            .unwrap();
            let (a, a_peer) = pair();
            let (b, b_peer) = pair();
            // Worker 0 receives a, the last worker receives b; every worker can send to both.
            let dup = |p: &PairPort| PairPort {
                fd: p.fd.try_clone().unwrap(),
            };
            let mut ha: Vec<(Box<dyn Port>, bool)> = vec![(Box::new(dup(&a)), true)];
            let mut hb: Vec<(Box<dyn Port>, bool)> = Vec::new();
            for i in 1..workers {
                ha.push((Box::new(dup(&a)), false));
                hb.push((Box::new(dup(&b)), i == workers - 1));
            }
            hb.insert(0, (Box::new(dup(&b)), workers == 1));
            rt.add_port(2, ha);
            rt.add_port(3, hb);
            // A broadcast from a: reaches b and the gateway.
            let mut f = vec![0xffu8; 6];
            f.extend_from_slice(&[2, 0, 0, 0, 0, 0xa, 0x08, 0x06]);
            f.resize(60, 0);
            // SAFETY: writing a buffer we own.
            unsafe { libc::write(a_peer.as_raw_fd(), f.as_ptr().cast(), f.len()) };
            let mut buf = [0u8; 2048];
            assert_eq!(read_timeout(&b_peer, &mut buf), Some(60));
            // b answers a by unicast (a was learned).
            let mut g = vec![2, 0, 0, 0, 0, 0xa, 2, 0, 0, 0, 0, 0xb, 0x08, 0x00];
            g.resize(60, 0);
            // SAFETY: writing a buffer we own.
            unsafe { libc::write(b_peer.as_raw_fd(), g.as_ptr().cast(), g.len()) };
            assert_eq!(read_timeout(&a_peer, &mut buf), Some(60));
            assert_eq!(&buf[..12], &g[..12]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while count.load(std::sync::atomic::Ordering::Relaxed) == 0 && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 1);
            assert_eq!(rt.stats(2).rx_packets, 1);
            assert_eq!(rt.stats(3).tx_packets, 1);
            // The entries themselves (the counter is recounted by the aging sweep and may
            // lag a learn that raced it by one sweep).
            let n = rt.gateway_call(|_s, ctx| ctx.fdb.rows().len()).unwrap();
            assert_eq!(n, 2);
            rt.remove_port(2);
            rt.shutdown();
        }
    }
}
