//! Frames per second through two TAPs, forwarded by one thread: the epoll + readv/writev
//! loop of the workers against io_uring variants (how io_uring was measured before
//! deciding not to adopt it; docs/benchmarks.md).
//!
//! Run (root): `cargo run --release -p vswitch-dataplane --example tap_pps -- [OPTIONS]`
//!
//! Two network namespaces, a TAP in each (10.77.0.1/24 in A, 10.77.0.2/24 in B), one
//! thread moving frames between them in batches of up to 64 (receive a batch, send it
//! to the other TAP), and traffic from A to B:
//!
//! - `udp`: `iperf3 -u -b 0 -l 18 -t SECS` (64-byte frames on the wire): frames
//!   forwarded per second (A to B, over the middle of the run), iperf3's loss, the
//!   sender TAP's TX drops (`ip -s link`), the receiver's UDP buffer errors;
//! - `tcp`: `iperf3 -t SECS`, Gbit/s at the receiver;
//! - `ping`: `ping -c 200 -i 0.005 -q`, RTT.
//!
//! Also the forwarding thread's CPU time (user + system, including io_uring task work
//! run in its context; not an SQPOLL kernel thread's) and the whole machine's busy CPUs.
//!
//! Options:
//!
//! - `--mode epoll|multishot|pending` (repeatable, default all):
//!   - `epoll`: `TapPort::recv` (one `readv` per frame until EAGAIN) and `TapPort::send`
//!     (one `writev` per frame), waiting in epoll (mio) with the workers' hybrid
//!     polling: no sleep for 200 us after moving frames;
//!   - `multishot`: one `IORING_OP_READ_MULTISHOT` per TAP with a provided-buffer ring
//!     (frames copied from the ring's buffers into the batch), writes as one `Writev`
//!     SQE per frame and one enter per batch, waiting
//!     in the ring (`io_uring_enter` with GETEVENTS) instead of epoll;
//!   - `pending`: blocking descriptors with 64 `Read` SQEs in flight per TAP (the kernel
//!     completes them as frames arrive), otherwise as `multishot`.
//! - `--secs N` (5), `--runs N` (1), `--test udp,tcp,ping` (all);
//! - `--busy`: never sleep (spin on epoll or the ring);
//! - `--txqueuelen N`: the TAPs' queue length (the tun driver's ring; default 500);
//! - `--plain`: TAPs without vnet header and offloads;
//! - `--taskrun defer|coop|default` (defer): io_uring task-work mode
//!   (IORING_SETUP_DEFER_TASKRUN with SINGLE_ISSUER, COOP_TASKRUN, or neither);
//! - `--sqpoll`: an SQPOLL ring (a kernel thread submits; it burns a core);
//! - `--fixed-files`: the TAP descriptors registered with the ring;
//! - `--bufs N` (128): provided buffers per TAP for `multishot`;
//! - `--pin`: the forwarding thread on CPU 1, iperf3 and ping on CPU 0.

// A measurement harness with fixed set-up: a failed step ends the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dataplane::netns::{IfConfig, configure, create_tap_in, in_netns};
use dataplane::port::tap::{TapOptions, TapPort};
use dataplane::port::{Batch, MAX_BATCH, Port, STD_FRAME_CAP, SUPER_FRAME_CAP, TxSel, VnetHdr};
use dataplane::runtime::SPIN_AFTER_WORK;
use dataplane::wire::MacAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Epoll,
    Multishot,
    Pending,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "epoll" => Mode::Epoll,

            "multishot" => Mode::Multishot,
            "pending" => Mode::Pending,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taskrun {
    Defer,
    Coop,
    Default,
}

#[derive(Debug, Clone)]
struct Opts {
    modes: Vec<Mode>,
    secs: u32,
    runs: u32,
    tests: Vec<String>,
    busy: bool,
    txqueuelen: Option<u32>,
    plain: bool,
    taskrun: Taskrun,
    sqpoll: bool,
    fixed_files: bool,
    bufs: u16,
    pin: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: tap_pps [--mode epoll|multishot|pending]... [--secs N] [--runs N] \
         [--test udp,tcp,ping] [--busy] [--txqueuelen N] [--plain] \
         [--taskrun defer|coop|default] [--sqpoll] [--fixed-files] [--bufs N] [--pin]"
    );
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        modes: Vec::new(),
        secs: 5,
        runs: 1,
        tests: vec!["udp".into(), "tcp".into(), "ping".into()],
        busy: false,
        txqueuelen: None,
        plain: false,
        taskrun: Taskrun::Defer,
        sqpoll: false,
        fixed_files: false,
        bufs: 128,
        pin: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--mode" => o.modes.push(Mode::parse(&val()).unwrap_or_else(|| usage())),
            "--secs" => o.secs = val().parse().unwrap_or_else(|_| usage()),
            "--runs" => o.runs = val().parse().unwrap_or_else(|_| usage()),
            "--test" => o.tests = val().split(',').map(String::from).collect(),
            "--busy" => o.busy = true,
            "--txqueuelen" => o.txqueuelen = Some(val().parse().unwrap_or_else(|_| usage())),
            "--plain" => o.plain = true,
            "--taskrun" => {
                o.taskrun = match val().as_str() {
                    "defer" => Taskrun::Defer,
                    "coop" => Taskrun::Coop,
                    "default" => Taskrun::Default,
                    _ => usage(),
                }
            }
            "--sqpoll" => o.sqpoll = true,
            "--fixed-files" => o.fixed_files = true,
            "--bufs" => o.bufs = val().parse().unwrap_or_else(|_| usage()),
            "--pin" => o.pin = true,
            _ => usage(),
        }
    }
    if o.modes.is_empty() {
        o.modes = vec![Mode::Epoll, Mode::Multishot, Mode::Pending];
    }
    o
}

// ---------------------------------------------------------------------------------
// Namespaces and processes, removed on drop.

struct Ns {
    name: String,
    path: PathBuf,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("vtp-{}-{tag}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} (run as root)");
        Ns {
            path: PathBuf::from(format!("/run/netns/{name}")),
            name,
        }
    }

    fn cmd(&self, prog: &str, cpu: Option<u32>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]);
        if let Some(cpu) = cpu {
            c.args(["taskset", "-c", &cpu.to_string()]);
        }
        c.arg(prog);
        c
    }

    fn read_proc(&self, file: &str) -> String {
        in_netns(&self.path, || {
            std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default()
        })
        .unwrap_or_default()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Kills and reaps a child (by its pid) on drop.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sets the flag when dropped, so the forwarder stops even when the run fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn wait_listening(ns: &Ns, port: u16) {
    let needle = format!(":{port:04X} 00000000:0000 0A");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if ns.read_proc("tcp").contains(&needle) || ns.read_proc("tcp6").contains(&needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("iperf3 does not listen on {port}");
}

/// TX dropped of `ifname` in /proc/net/dev (what `ip -s link` shows).
fn tx_dropped(ns: &Ns, ifname: &str) -> u64 {
    let dev = ns.read_proc("dev");
    for line in dev.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == ifname {
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            return f.get(11).copied().unwrap_or(0);
        }
    }
    0
}

/// Udp RcvbufErrors in /proc/net/snmp.
fn udp_rcvbuf_errors(ns: &Ns) -> u64 {
    let snmp = ns.read_proc("snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (udp.next(), udp.next()) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// (busy, total) jiffies over all CPUs.
fn cpu_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn thread_cpu(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a live timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn pin_self(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the set is initialised before use.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

// ---------------------------------------------------------------------------------
// The baseline: TapPort, epoll, hybrid polling, as the worker loop does it.

#[derive(Default)]
struct Count {
    /// Frames moved A to B and B to A.
    ab: AtomicU64,
    ba: AtomicU64,
    /// Receive or send errors (io_uring completions with an error).
    errors: AtomicU64,
    /// Frames the kernel refused or that did not fit.
    dropped: AtomicU64,
}

fn frame_cap(plain: bool) -> usize {
    if plain {
        STD_FRAME_CAP
    } else {
        SUPER_FRAME_CAP
    }
}

struct Waiter {
    poll: mio::Poll,
    events: mio::Events,
}

impl Waiter {
    fn new(fds: [RawFd; 2]) -> Waiter {
        let poll = mio::Poll::new().expect("epoll");
        for (i, fd) in fds.iter().enumerate() {
            poll.registry()
                .register(
                    &mut mio::unix::SourceFd(fd),
                    mio::Token(i),
                    mio::Interest::READABLE,
                )
                .expect("register");
        }
        Waiter {
            poll,
            events: mio::Events::with_capacity(8),
        }
    }

    /// Adds the ports that became readable to `ready`.
    fn wait(&mut self, timeout: Duration, ready: &mut Vec<usize>) {
        let _ = self.poll.poll(&mut self.events, Some(timeout));
        for ev in self.events.iter() {
            let p = ev.token().0;
            if !ready.contains(&p) {
                ready.push(p);
            }
        }
    }
}

fn counter(count: &Count, from: usize) -> &AtomicU64 {
    if from == 0 { &count.ab } else { &count.ba }
}

fn fwd_epoll(ports: &mut [TapPort; 2], o: &Opts, stop: &AtomicBool, count: &Count) {
    let mut batch = Batch::new(MAX_BATCH, frame_cap(o.plain));
    let sel: Vec<TxSel> = (0..MAX_BATCH as u8)
        .map(|idx| TxSel { idx, vlan: 0 })
        .collect();
    let mut w = Waiter::new([ports[0].as_fd().as_raw_fd(), ports[1].as_fd().as_raw_fd()]);
    let mut ready = vec![0, 1];
    let mut last_work = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let spin = o.busy || !ready.is_empty() || last_work.elapsed() < SPIN_AFTER_WORK;
        let timeout = if spin {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        w.wait(timeout, &mut ready);
        let mut i = 0;
        while i < ready.len() {
            let p = ready[i];
            let n = ports[p].recv(&mut batch).unwrap_or(0);
            if n > 0 {
                let sent = ports[1 - p].send(&batch, &sel[..n]).unwrap_or(0);
                counter(count, p).fetch_add(n as u64, Ordering::Relaxed);
                count
                    .dropped
                    .fetch_add((n - sent) as u64, Ordering::Relaxed);
                last_work = Instant::now();
            }
            if n < MAX_BATCH {
                ready.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// io_uring.

mod ring {
    use super::*;
    use io_uring::{IoUring, cqueue, opcode, squeue, types};

    /// user_data: kind in the top byte, port in the next, slot in the low 16 bits.
    const KIND_WRITE: u64 = 1 << 56;
    const KIND_READ: u64 = 2 << 56;
    const KIND_CANCEL: u64 = 3 << 56;

    fn ud(kind: u64, port: usize, slot: usize) -> u64 {
        kind | ((port as u64) << 16) | slot as u64
    }

    pub fn build(o: &Opts) -> io::Result<IoUring> {
        let mut b = IoUring::builder();
        match o.taskrun {
            Taskrun::Defer => {
                b.setup_single_issuer().setup_defer_taskrun();
            }
            Taskrun::Coop => {
                b.setup_coop_taskrun();
            }
            Taskrun::Default => {}
        }
        if o.sqpoll {
            b.setup_sqpoll(50);
        }
        b.setup_cqsize(4096);
        let ring = b.build(512)?;
        let _ = ring.submitter().register_ring_fd();
        Ok(ring)
    }

    /// A descriptor in an SQE: registered (index) or plain.
    #[derive(Clone, Copy)]
    pub struct Target {
        fd: RawFd,
        fixed: Option<u32>,
    }

    macro_rules! with_target {
        ($t:expr, $op:ident :: new ( _ $(, $arg:expr)* )) => {
            match $t.fixed {
                Some(i) => opcode::$op::new(types::Fixed(i) $(, $arg)*).build(),
                None => opcode::$op::new(types::Fd($t.fd) $(, $arg)*).build(),
            }
        };
    }

    pub fn targets(ring: &IoUring, fds: [RawFd; 2], fixed: bool) -> [Target; 2] {
        let fixed = fixed && ring.submitter().register_files(&fds).is_ok();
        [0, 1].map(|i| Target {
            fd: fds[i],
            fixed: fixed.then_some(i as u32),
        })
    }

    /// Pushes `e`, submitting first when the queue is full.
    fn push(ring: &mut IoUring, e: &squeue::Entry) {
        loop {
            // SAFETY: every buffer and iovec the entry points to is kept alive by the
            // caller until its completion has been reaped (see each caller).
            if unsafe { ring.submission().push(e) }.is_ok() {
                return;
            }
            let _ = ring.submit();
        }
    }

    /// Writes of one batch: one `Writev` of [vnet header, frame] per frame.
    pub struct Writer {
        iov: Vec<[libc::iovec; 2]>,
        hdr: Vec<[u8; VnetHdr::LEN]>,
    }

    impl Writer {
        pub fn new() -> Writer {
            Writer {
                iov: vec![
                    [libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0
                    }; 2];
                    MAX_BATCH
                ],
                hdr: vec![[0; VnetHdr::LEN]; MAX_BATCH],
            }
        }

        /// Queues frames 0..n of `batch` for `to`. The caller must reap every write
        /// completion (see [`Writer::complete`]) before touching `batch` or `self`.
        pub fn queue(
            &mut self,
            ring: &mut IoUring,
            to: Target,
            port: usize,
            vnet_len: usize,
            batch: &Batch,
        ) -> usize {
            let mut n = 0;
            for (i, f) in batch.frames().iter().enumerate() {
                let (Some(iov), Some(h)) = (self.iov.get_mut(i), self.hdr.get_mut(i)) else {
                    break;
                };
                *h = f.vnet.to_bytes();
                let data = f.data();
                *iov = [
                    libc::iovec {
                        iov_base: h.as_mut_ptr().cast(),
                        iov_len: vnet_len.min(VnetHdr::LEN),
                    },
                    libc::iovec {
                        iov_base: data.as_ptr() as *mut libc::c_void,
                        iov_len: data.len(),
                    },
                ];
                let (ptr, cnt) = if vnet_len > 0 {
                    (iov.as_ptr(), 2)
                } else {
                    (iov[1..].as_ptr(), 1)
                };
                let e =
                    with_target!(to, Writev::new(_, ptr, cnt)).user_data(ud(KIND_WRITE, port, i));
                push(ring, &e);
                n += 1;
            }
            n
        }
    }

    /// The outcome of one completion.
    pub enum Done {
        Write {
            ok: bool,
        },
        Read {
            port: usize,
            slot: usize,
            res: i32,
            flags: u32,
        },
        Other,
    }

    pub fn classify(c: &cqueue::Entry) -> Done {
        let u = c.user_data();
        let port = ((u >> 16) & 0xff) as usize;
        let slot = (u & 0xffff) as usize;
        match u & (0xff << 56) {
            KIND_WRITE => Done::Write {
                ok: c.result() >= 0,
            },
            KIND_READ => Done::Read {
                port,
                slot,
                res: c.result(),
                flags: c.flags(),
            },
            _ => Done::Other,
        }
    }

    /// Submits and waits until `want` more completions are there (retrying on EINTR and
    /// a full completion queue: completions are never lost, IORING_FEAT_NODROP).
    pub fn submit_wait(ring: &IoUring, want: usize) {
        loop {
            match ring.submit_and_wait(want) {
                Ok(_) => return,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return,
                Err(_) => return,
            }
        }
    }

    /// Runs deferred task work and returns without waiting.
    pub fn get_events(ring: &IoUring) {
        // SAFETY: no argument is passed; GETEVENTS with min_complete 0 only runs task
        // work and flushes completions.
        let _ = unsafe {
            ring.submitter()
                .enter::<libc::sigset_t>(0, 0, 1u32 /* IORING_ENTER_GETEVENTS */, None)
        };
    }

    /// Waits for one completion at most `timeout`.
    pub fn wait_one(ring: &IoUring, timeout: Duration) {
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        let _ = ring.submitter().submit_with_args(1, &args);
    }

    // --- multishot and pending: waiting in the ring --------------------------------

    /// A provided-buffer ring (one buffer group) and its buffers.
    struct BufRing {
        mem: *mut types::BufRingEntry,
        map_len: usize,
        entries: u16,
        tail: u16,
        bufs: Box<[u8]>,
        buf_len: usize,
    }

    impl BufRing {
        fn new(ring: &IoUring, bgid: u16, entries: u16, buf_len: usize) -> io::Result<BufRing> {
            let map_len = usize::from(entries) * std::mem::size_of::<types::BufRingEntry>();
            // SAFETY: an anonymous private mapping; checked below.
            let mem = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                    -1,
                    0,
                )
            };
            if mem == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let mut br = BufRing {
                mem: mem.cast(),
                map_len,
                entries,
                tail: 0,
                bufs: vec![0u8; usize::from(entries) * buf_len].into_boxed_slice(),
                buf_len,
            };
            // SAFETY: the mapping is page aligned, `entries` long, and lives (with the
            // buffers) until after the ring is dropped (the forwarder drops the ring
            // first).
            unsafe {
                ring.submitter()
                    .register_buf_ring_with_flags(br.mem as u64, entries, bgid, 0)?
            };
            for bid in 0..entries {
                br.put(bid);
            }
            br.publish();
            Ok(br)
        }

        fn buf(&self, bid: u16) -> &[u8] {
            let s = usize::from(bid) * self.buf_len;
            &self.bufs[s..s + self.buf_len]
        }

        /// Gives buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
        fn put(&mut self, bid: u16) {
            let i = usize::from(self.tail & (self.entries - 1));
            let addr = self.bufs.as_ptr() as u64 + u64::from(bid) * self.buf_len as u64;
            // SAFETY: `i` is within the mapping; the kernel does not read entries past
            // the published tail.
            let e = unsafe { &mut *self.mem.add(i) };
            e.set_addr(addr);
            e.set_len(self.buf_len as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
        }

        fn publish(&self) {
            // SAFETY: the tail is the u16 that overlays the first entry's reserved
            // field, shared with the kernel; it is written atomically with release
            // ordering so the entries are visible first.
            unsafe {
                let tail =
                    types::BufRingEntry::tail(self.mem) as *const std::sync::atomic::AtomicU16;
                (*tail).store(self.tail, Ordering::Release);
            }
        }
    }

    impl Drop for BufRing {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`; the ring that used it is gone.
            unsafe { libc::munmap(self.mem.cast(), self.map_len) };
        }
    }

    /// How a port receives: a multishot read over a buffer ring, or one read in flight
    /// per slot buffer.
    enum RxKind {
        Multi { br: BufRing, armed: bool },
        Slots { bufs: Vec<Box<[u8]>> },
    }

    struct Rx {
        kind: RxKind,
        /// Frames read and not yet forwarded: (buffer id or slot, length read).
        pending: VecDeque<(u16, u32)>,
        /// Reads in flight (multishot: 0 or 1).
        inflight: usize,
        vnet_len: usize,
    }

    impl Rx {
        fn buf(&self, id: u16) -> &[u8] {
            match &self.kind {
                RxKind::Multi { br, .. } => br.buf(id),
                RxKind::Slots { bufs } => &bufs[usize::from(id)],
            }
        }
    }

    fn arm(ring: &mut IoUring, rx: &mut Rx, t: Target, port: usize) {
        match &mut rx.kind {
            RxKind::Multi { armed, .. } => {
                if !*armed {
                    let e = with_target!(t, ReadMulti::new(_, 0, port as u16))
                        .user_data(ud(KIND_READ, port, 0));
                    push(ring, &e);
                    *armed = true;
                    rx.inflight = 1;
                }
            }
            RxKind::Slots { .. } => {}
        }
    }

    fn read_slot(ring: &mut IoUring, rx: &mut Rx, t: Target, port: usize, slot: u16) {
        if let RxKind::Slots { bufs } = &mut rx.kind {
            let b = &mut bufs[usize::from(slot)];
            let e = with_target!(t, Read::new(_, b.as_mut_ptr(), b.len() as u32)).user_data(ud(
                KIND_READ,
                port,
                usize::from(slot),
            ));
            push(ring, &e);
            rx.inflight += 1;
        }
    }

    /// Sorts completions: reads into their port's pending list, writes counted.
    fn harvest(ring: &mut IoUring, rx: &mut [Rx; 2], writes: &mut usize, count: &Count) {
        for c in ring.completion() {
            match classify(&c) {
                Done::Write { ok } => {
                    *writes -= 1;
                    if !ok {
                        count.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Done::Read {
                    port,
                    slot,
                    res,
                    flags,
                } => {
                    let r = &mut rx[port];
                    let id = match &mut r.kind {
                        RxKind::Multi { armed, .. } => {
                            if !cqueue::more(flags) {
                                *armed = false;
                                r.inflight = 0;
                            }
                            cqueue::buffer_select(flags)
                        }
                        RxKind::Slots { .. } => {
                            r.inflight -= 1;
                            Some(slot as u16)
                        }
                    };
                    match id {
                        Some(id) if res > 0 => r.pending.push_back((id, res as u32)),
                        Some(id) => {
                            // A buffer came back without a frame: give it back (the
                            // reads cancelled at the end are no error).
                            r.pending.push_back((id, 0));
                            if res != -libc::ECANCELED {
                                count.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        None if res == -libc::ENOBUFS || res == -libc::ECANCELED => {}
                        None => {
                            count.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Done::Other => {}
            }
        }
    }

    /// Moves up to a batch of pending frames of `rx` into `batch`, giving the buffers
    /// back (multishot) or reading into them again (slots).
    fn fill(
        ring: &mut IoUring,
        rx: &mut Rx,
        t: Target,
        port: usize,
        batch: &mut Batch,
        count: &Count,
    ) -> usize {
        let mut n = 0;
        let cap = batch.capacity();
        let mut given = false;
        while n < cap {
            let Some((id, len)) = rx.pending.pop_front() else {
                break;
            };
            let buf = rx.buf(id);
            let len = len as usize;
            // A read filling the whole buffer may have been cut short: dropped.
            let ok = len > rx.vnet_len && len < buf.len();
            if ok {
                let slot = &mut batch.slots_mut()[n];
                let flen = len - rx.vnet_len;
                let area = slot.recv_area();
                if flen <= area.len() {
                    area[..flen].copy_from_slice(&buf[rx.vnet_len..len]);
                    slot.set_received(flen);
                    if rx.vnet_len > 0 {
                        slot.vnet = VnetHdr::parse(buf).unwrap_or_default();
                    }
                    n += 1;
                } else {
                    count.dropped.fetch_add(1, Ordering::Relaxed);
                }
            } else if len > 0 {
                count.dropped.fetch_add(1, Ordering::Relaxed);
            }
            match &mut rx.kind {
                RxKind::Multi { br, .. } => {
                    br.put(id);
                    given = true;
                }
                RxKind::Slots { .. } => read_slot(ring, rx, t, port, id),
            }
        }
        if given && let RxKind::Multi { br, .. } = &rx.kind {
            br.publish();
        }
        batch.set_len(n);
        n
    }

    /// Each port's receive side: a buffer ring (multishot) or a batch of slot buffers.
    fn new_rx(ring: &IoUring, ports: &[TapPort; 2], o: &Opts, multishot: bool) -> [Rx; 2] {
        let cap = frame_cap(o.plain);
        [0, 1].map(|p| {
            let vnet_len = ports[p].vnet_hdr_len();
            let buf_len = vnet_len + cap + 1;
            let kind = if multishot {
                let entries = o.bufs.next_power_of_two();
                RxKind::Multi {
                    br: BufRing::new(ring, p as u16, entries, buf_len).expect("buffer ring"),
                    armed: false,
                }
            } else {
                RxKind::Slots {
                    bufs: (0..MAX_BATCH)
                        .map(|_| vec![0u8; buf_len].into_boxed_slice())
                        .collect(),
                }
            };
            Rx {
                kind,
                pending: VecDeque::new(),
                inflight: 0,
                vnet_len,
            }
        })
    }

    /// The forwarder's ring with what its reads and writes use.
    struct RingFwd<'a> {
        ring: IoUring,
        rx: [Rx; 2],
        t: [Target; 2],
        vnet: [usize; 2],
        /// Writes in flight.
        writes: usize,
        count: &'a Count,
    }

    impl RingFwd<'_> {
        /// Puts the first reads in flight: the multishot reads, or a read per slot.
        fn start(&mut self, multishot: bool) {
            for p in 0..2 {
                arm(&mut self.ring, &mut self.rx[p], self.t[p], p);
                if !multishot {
                    for s in 0..MAX_BATCH as u16 {
                        read_slot(&mut self.ring, &mut self.rx[p], self.t[p], p, s);
                    }
                }
            }
            let _ = self.ring.submit();
        }

        fn harvest(&mut self) {
            harvest(&mut self.ring, &mut self.rx, &mut self.writes, self.count);
        }

        /// Sends each port's pending frames (a batch at most) to the other port and
        /// waits for the writes; returns the frames moved.
        fn forward(&mut self, batch: &mut Batch, writer: &mut Writer) -> usize {
            let mut moved = 0;
            for p in 0..2 {
                if self.rx[p].pending.is_empty() {
                    continue;
                }
                let n = fill(
                    &mut self.ring,
                    &mut self.rx[p],
                    self.t[p],
                    p,
                    batch,
                    self.count,
                );
                if n == 0 {
                    continue;
                }
                self.writes += writer.queue(
                    &mut self.ring,
                    self.t[1 - p],
                    1 - p,
                    self.vnet[1 - p],
                    batch,
                );
                // The batch and the writer's iovecs stay untouched until every write
                // has completed.
                while self.writes > 0 {
                    submit_wait(&self.ring, 1);
                    self.harvest();
                }
                counter(self.count, p).fetch_add(n as u64, Ordering::Relaxed);
                moved += n;
            }
            for p in 0..2 {
                arm(&mut self.ring, &mut self.rx[p], self.t[p], p);
            }
            moved
        }

        /// Cancels the reads and waits for them (and the writes) before the buffers go.
        fn finish(mut self) {
            for tp in &self.t {
                let e = opcode::AsyncCancel2::new(match tp.fixed {
                    Some(i) => types::CancelBuilder::fd(types::Fixed(i)).all(),
                    None => types::CancelBuilder::fd(types::Fd(tp.fd)).all(),
                })
                .build()
                .user_data(KIND_CANCEL);
                push(&mut self.ring, &e);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while (self.rx[0].inflight > 0 || self.rx[1].inflight > 0 || self.writes > 0)
                && Instant::now() < deadline
            {
                wait_one(&self.ring, Duration::from_millis(50));
                self.harvest();
            }
            // The ring goes first: nothing refers to the buffers after it.
            drop(self.ring);
            drop(self.rx);
        }
    }

    pub fn fwd_ring(
        ports: &mut [TapPort; 2],
        o: &Opts,
        stop: &AtomicBool,
        count: &Count,
        multishot: bool,
    ) {
        let ring = build(o).expect("io_uring");
        let fds = [ports[0].as_fd().as_raw_fd(), ports[1].as_fd().as_raw_fd()];
        let t = targets(&ring, fds, o.fixed_files);
        let rx = new_rx(&ring, ports, o, multishot);
        let vnet = [ports[0].vnet_hdr_len(), ports[1].vnet_hdr_len()];
        let mut f = RingFwd {
            ring,
            rx,
            t,
            vnet,
            writes: 0,
            count,
        };
        f.start(multishot);
        let mut batch = Batch::new(MAX_BATCH, frame_cap(o.plain));
        let mut writer = Writer::new();
        let mut last_work = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            f.harvest();
            if f.forward(&mut batch, &mut writer) > 0 {
                last_work = Instant::now();
                let _ = f.ring.submit();
                continue;
            }
            if o.busy || last_work.elapsed() < SPIN_AFTER_WORK {
                let _ = f.ring.submit();
                get_events(&f.ring);
            } else {
                wait_one(&f.ring, Duration::from_millis(100));
            }
        }
        f.finish();
    }
}

// ---------------------------------------------------------------------------------
// Runs.

#[derive(Debug, Default, Clone)]
struct Result_ {
    udp_fps: f64,
    udp_sent_pps: f64,
    udp_loss: f64,
    tx_drops: u64,
    rcvbuf_errors: u64,
    udp_cpu: f64,
    udp_busy_cpus: f64,
    tcp_gbits: f64,
    tcp_cpu: f64,
    rtt_avg_ms: f64,
    rtt_max_ms: f64,
    errors: u64,
    dropped: u64,
}

const B_IP: &str = "10.77.0.2";

fn setup_ns(o: &Opts) -> (Ns, Ns, [TapPort; 2]) {
    let (na, nb) = (Ns::new("a"), Ns::new("b"));
    let topts = if o.plain {
        TapOptions::plain()
    } else {
        TapOptions::default()
    };
    let mut ports = Vec::new();
    for (i, ns) in [&na, &nb].into_iter().enumerate() {
        let p = create_tap_in(&ns.path, "vtp0", &topts).expect("create TAP");
        configure(
            &ns.path,
            "vtp0",
            &IfConfig {
                mac: Some(MacAddr([0x02, 0x42, 10, 77, 0, i as u8 + 1])),
                mtu: Some(1500),
                addr: Some((Ipv4Addr::new(10, 77, 0, i as u8 + 1), 24)),
                gateway: None,
                up: true,
                ..IfConfig::default()
            },
        )
        .expect("configure");
        if let Some(q) = o.txqueuelen {
            let st = Command::new("ip")
                .args([
                    "-n",
                    &ns.name,
                    "link",
                    "set",
                    "vtp0",
                    "txqueuelen",
                    &q.to_string(),
                ])
                .status()
                .expect("ip link set");
            assert!(st.success());
        }
        ports.push(p);
    }
    let b = ports.pop().unwrap();
    let a = ports.pop().unwrap();
    (na, nb, [a, b])
}

fn set_blocking(p: &TapPort, blocking: bool) {
    let fd = p.as_fd().as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor the port owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        let fl = if blocking {
            fl & !libc::O_NONBLOCK
        } else {
            fl | libc::O_NONBLOCK
        };
        libc::fcntl(fd, libc::F_SETFL, fl);
    }
}

fn iperf(
    na: &Ns,
    nb: &Ns,
    port: u16,
    client_args: &[&str],
    pin: bool,
    during: impl FnOnce(Instant),
) -> String {
    let _server = Reap(
        nb.cmd("iperf3", pin.then_some(0))
            .args(["-s", "-1", "-B", B_IP, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    );
    wait_listening(nb, port);
    let mut client = Reap(
        na.cmd("iperf3", pin.then_some(0))
            .args(["-c", B_IP, "-p", &port.to_string()])
            .args(client_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iperf3 client"),
    );
    during(Instant::now());
    let mut out = String::new();
    if let Some(mut s) = client.0.stdout.take() {
        use std::io::Read;
        let _ = s.read_to_string(&mut out);
    }
    let _ = client.0.wait();
    out
}

fn receiver_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| l.contains("receiver"))
        .unwrap_or("")
}

/// Starts the forwarding thread over `ports`; returns it and its CPU-time clock.
fn spawn_forwarder(
    mode: Mode,
    mut ports: [TapPort; 2],
    o: &Opts,
    stop: &Arc<AtomicBool>,
    count: &Arc<Count>,
) -> (std::thread::JoinHandle<[TapPort; 2]>, libc::clockid_t) {
    let fwd = {
        let (stop, count, o) = (stop.clone(), count.clone(), o.clone());
        std::thread::spawn(move || {
            if o.pin {
                pin_self(1);
            }
            match mode {
                Mode::Epoll => fwd_epoll(&mut ports, &o, &stop, &count),

                Mode::Multishot => ring::fwd_ring(&mut ports, &o, &stop, &count, true),
                Mode::Pending => ring::fwd_ring(&mut ports, &o, &stop, &count, false),
            }
            ports
        })
    };
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive (joined by the caller); a valid out pointer.
    unsafe { libc::pthread_getcpuclockid(fwd.as_pthread_t(), &mut clock) };
    (fwd, clock)
}

/// Sleeps until 1 s after `t0` and returns the end of the run's middle, 1 s before the
/// end of a run of `secs` seconds.
fn sleep_to_middle(t0: Instant, secs: u32) -> Instant {
    let from = t0 + Duration::from_secs(1);
    let to = t0 + Duration::from_secs(u64::from(secs.max(3)) - 1);
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    to
}

/// Over the middle of a UDP run: frames forwarded A to B per second, the forwarder's
/// CPU use and the machine's busy CPUs.
fn udp_window(count: &Count, clock: libc::clockid_t, t0: Instant, secs: u32) -> (f64, f64, f64) {
    let to = sleep_to_middle(t0, secs);
    let (f0, c0, j0) = (
        count.ab.load(Ordering::Relaxed),
        thread_cpu(clock),
        cpu_jiffies(),
    );
    let s0 = Instant::now();
    std::thread::sleep(to.saturating_duration_since(Instant::now()));
    let el = s0.elapsed().as_secs_f64();
    let (f1, c1, j1) = (
        count.ab.load(Ordering::Relaxed),
        thread_cpu(clock),
        cpu_jiffies(),
    );
    let busy = (j1.0 - j0.0) as f64 / (j1.1 - j0.1).max(1) as f64;
    (
        (f1 - f0) as f64 / el,
        (c1 - c0).as_secs_f64() / el,
        busy * 2.0,
    )
}

/// The forwarder's CPU use over the middle of a TCP run.
fn tcp_window(clock: libc::clockid_t, t0: Instant, secs: u32) -> f64 {
    let to = sleep_to_middle(t0, secs);
    let c0 = thread_cpu(clock);
    let s0 = Instant::now();
    std::thread::sleep(to.saturating_duration_since(Instant::now()));
    (thread_cpu(clock) - c0).as_secs_f64() / s0.elapsed().as_secs_f64()
}

/// (avg, max) RTT in ms from ping's summary line.
fn parse_rtt(text: &str) -> Option<(f64, f64)> {
    let l = text.lines().find(|l| l.contains("min/avg/max"))?;
    let v: Vec<f64> = l
        .split('=')
        .nth(1)
        .unwrap_or("")
        .trim()
        .trim_end_matches(" ms")
        .split('/')
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((
        v.get(1).copied().unwrap_or(0.0),
        v.get(2).copied().unwrap_or(0.0),
    ))
}

/// (loss %, datagrams sent per second) from iperf3's UDP receiver line.
fn parse_udp_loss(text: &str, secs: u32) -> Option<(f64, f64)> {
    let line = receiver_line(text);
    // "... 0.004 ms  1234/5678 (22%)  receiver"
    let w = line
        .split_whitespace()
        .find(|w| w.contains('/') && !w.contains("bits"))?;
    let (lost, total) = w.split_once('/')?;
    let (lost, total): (f64, f64) = (lost.parse().unwrap_or(0.0), total.parse().unwrap_or(0.0));
    let loss = if total > 0.0 {
        100.0 * lost / total
    } else {
        0.0
    };
    Some((loss, total / f64::from(secs)))
}

/// Gbit/s from iperf3's TCP receiver line.
fn parse_tcp_gbits(text: &str) -> f64 {
    let line = receiver_line(text);
    let w: Vec<&str> = line.split_whitespace().collect();
    w.iter()
        .position(|x| *x == "Gbits/sec")
        .and_then(|i| w.get(i - 1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0)
}

/// The traffic tests of one run, with the running forwarder.
struct Tests<'a> {
    na: &'a Ns,
    nb: &'a Ns,
    o: &'a Opts,
    count: &'a Count,
    /// The forwarder's CPU-time clock.
    clock: libc::clockid_t,
    /// The first iperf3 port of the run.
    base: u16,
}

impl Tests<'_> {
    fn warm_up(&self) {
        // Warm-up: ARP, and the forwarder's first frames.
        let _ = self
            .na
            .cmd("ping", None)
            .args(["-c", "3", "-i", "0.05", "-q", B_IP])
            .output();
    }

    fn ping(&self, r: &mut Result_) {
        let out = self
            .na
            .cmd("ping", self.o.pin.then_some(0))
            .args(["-c", "200", "-i", "0.005", "-q", B_IP])
            .output()
            .expect("ping");
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some((avg, max)) = parse_rtt(&text) {
            r.rtt_avg_ms = avg;
            r.rtt_max_ms = max;
        }
    }

    fn udp(&self, r: &mut Result_) {
        let (na, nb, secs) = (self.na, self.nb, self.o.secs);
        let drops0 = tx_dropped(na, "vtp0");
        let rcv0 = udp_rcvbuf_errors(nb);
        let mut window = (0.0, 0.0, 0.0);
        let text = iperf(
            na,
            nb,
            self.base,
            &[
                "-u",
                "-b",
                "0",
                "-l",
                "18",
                "-t",
                &secs.to_string(),
                "-f",
                "m",
            ],
            self.o.pin,
            |t0| window = udp_window(self.count, self.clock, t0, secs),
        );
        (r.udp_fps, r.udp_cpu, r.udp_busy_cpus) = window;
        r.tx_drops = tx_dropped(na, "vtp0") - drops0;
        r.rcvbuf_errors = udp_rcvbuf_errors(nb) - rcv0;
        if let Some((loss, sent_pps)) = parse_udp_loss(&text, secs) {
            r.udp_loss = loss;
            r.udp_sent_pps = sent_pps;
        } else {
            eprintln!("no UDP receiver line in iperf3 output:\n{text}");
        }
    }

    fn tcp(&self, r: &mut Result_) {
        let secs = self.o.secs;
        let mut cpu = 0.0;
        let text = iperf(
            self.na,
            self.nb,
            self.base + 1,
            &["-t", &secs.to_string(), "-f", "g"],
            self.o.pin,
            |t0| cpu = tcp_window(self.clock, t0, secs),
        );
        r.tcp_cpu = cpu;
        r.tcp_gbits = parse_tcp_gbits(&text);
    }
}

fn run_mode(mode: Mode, o: &Opts, run: u32) -> Result_ {
    let (na, nb, ports) = setup_ns(o);
    if mode == Mode::Pending {
        for p in &ports {
            set_blocking(p, true);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(Count::default());
    let mut r = Result_::default();
    let (fwd, clock) = spawn_forwarder(mode, ports, o, &stop, &count);
    let stopper = StopOnDrop(stop.clone());
    let tests = Tests {
        na: &na,
        nb: &nb,
        o,
        count: &count,
        clock,
        base: 5201 + (run as u16) * 10,
    };
    tests.warm_up();
    if o.tests.iter().any(|t| t == "ping") {
        tests.ping(&mut r);
    }
    if o.tests.iter().any(|t| t == "udp") {
        tests.udp(&mut r);
    }
    if o.tests.iter().any(|t| t == "tcp") {
        tests.tcp(&mut r);
    }
    drop(stopper);
    let ports = fwd.join().expect("forwarder");
    drop(ports);
    r.errors = count.errors.load(Ordering::Relaxed);
    r.dropped = count.dropped.load(Ordering::Relaxed);
    drop((na, nb));
    r
}

fn main() {
    let o = parse_args();
    if !o.tests.is_empty() && o.pin {
        pin_self(0);
    }
    println!(
        "{:<10} {:>4} {:>10} {:>10} {:>7} {:>9} {:>8} {:>6} {:>6} {:>7} {:>6} {:>8} {:>8} {:>6}",
        "mode",
        "run",
        "udp fps",
        "sent pps",
        "loss%",
        "txdrops",
        "rcvbuf",
        "cpu",
        "busy",
        "Gbit/s",
        "cpu",
        "rtt avg",
        "rtt max",
        "err"
    );
    for run in 0..o.runs {
        for &mode in &o.modes {
            let r = run_mode(mode, &o, run);
            println!(
                "{:<10} {:>4} {:>10.0} {:>10.0} {:>7.1} {:>9} {:>8} {:>6.2} {:>6.2} {:>7.2} {:>6.2} {:>8.3} {:>8.3} {:>6}",
                format!("{mode:?}").to_lowercase(),
                run,
                r.udp_fps,
                r.udp_sent_pps,
                r.udp_loss,
                r.tx_drops,
                r.rcvbuf_errors,
                r.udp_cpu,
                r.udp_busy_cpus,
                r.tcp_gbits,
                r.tcp_cpu,
                r.rtt_avg_ms,
                r.rtt_max_ms,
                r.errors + r.dropped
            );
        }
    }
}
