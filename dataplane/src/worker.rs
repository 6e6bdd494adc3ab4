//! A worker: owns ports, receives batches, runs the pipeline, sends.
//!
//! Each worker receives from its own ports and may send to every port (a TAP
//! descriptor, or one queue of a multi-queue TAP, accepts writes from any thread), so no
//! frame crosses between workers through a queue. What workers share is read-mostly
//! and lock-free: the configuration snapshot (arc-swap) and the FDB (a lock-free
//! open-addressing table). Counters are per worker.

use std::sync::Arc;
use std::time::Instant;

use crate::bridge::{CounterTable, DropReason, Fdb};
use crate::config::{GATEWAY_PORT, SnapshotCache, SnapshotCell};
use crate::ids::PortId;
use crate::pipeline::{self, Context, Local};
use crate::port::{Batch, MAX_BATCH, Port, STD_FRAME_CAP, TxSel};
use crate::shaper::queue::{Held, queue_limit};
use crate::shaper::{Rate, Shaper, SharedBuckets, frames_for};
use crate::wire::vlan::TAG_LEN;

mod refused;
pub use refused::{REFUSED_FOR_SECS, Refused};

/// The coarse clock the FDB ages by: whole seconds since the worker started, or a
/// value set by hand (tests).
pub enum Clock {
    Real(Instant),
    Manual(u32),
}

impl Clock {
    #[inline]
    pub fn now(&self) -> u32 {
        match self {
            Clock::Real(t) => t.elapsed().as_secs() as u32,
            Clock::Manual(s) => *s,
        }
    }

    /// Nanoseconds since the start (the shaper's clock).
    #[inline]
    pub fn nanos(&self) -> u64 {
        match self {
            Clock::Real(t) => u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Clock::Manual(s) => u64::from(*s) * 1_000_000_000,
        }
    }
}

pub struct Worker {
    /// This worker's index (its ring in a capture).
    pub index: usize,
    /// Where a capture in progress is published.
    pub capture: Option<crate::capture::CaptureSlot>,
    /// Connection tracking for the packet uplink.
    pub nat: Option<Arc<crate::nat::Nat>>,
    /// The packet uplink's neighbours.
    pub neigh: Option<Arc<crate::uplink::packet::Neighbours>>,
    ports: Vec<Option<Box<dyn Port>>>,
    rx: Vec<PortId>,
    batch: Batch,
    local: Local,
    snap: SnapshotCache,
    fdb: Arc<Fdb>,
    counters: Arc<CounterTable>,
    pub clock: Clock,
    /// Token buckets of the ports with bandwidth limits.
    shaper: Shaper,
    /// The buckets of what workers send to each port (`rate_in`): shared by every
    /// worker of a runtime, since any of them may send to a port.
    pub tx_buckets: Arc<SharedBuckets>,
    /// Frames into ports held to their rate, waiting for their buckets.
    held: Held,
    /// The send list of a pass over [`Worker::held`] (room for a batch).
    held_sel: Vec<TxSel>,
    /// Ports the gateway is refusing flows (None: every frame earns polling).
    refused: Option<Refused>,
    /// Frames moved since [`Worker::take_earned`] that earn polling after work.
    earned: usize,
    /// Where unicast between kernel-path ports is noted (a runtime with the kernel path).
    pub kernel_pairs: Option<Arc<crate::kernel::hints::PairHints>>,
}

/// Hands port `p` the frames of `sel` and counts them (bytes and capture first: the
/// gateway's port, the last one served, may take the frames' buffers).
fn send_port(
    ports: &mut [Option<Box<dyn Port>>],
    batch: &mut Batch,
    counters: &CounterTable,
    (worker, cap): (usize, Option<&crate::capture::CaptureTap>),
    p: PortId,
    sel: &[TxSel],
) {
    let Some(Some(port)) = ports.get_mut(p.index()) else {
        counters.count_drop(p, DropReason::TxError, sel.len() as u64);
        return;
    };
    if let Some(c) = cap
        && c.slot == p.0
    {
        record_sent(c, worker, batch, sel);
    }
    let mut bytes = 0u64;
    for s in sel {
        bytes += batch
            .get(usize::from(s.idx))
            .map_or(0, |f| wire_len(f.len(), s.vlan));
    }
    let sent = if p == GATEWAY_PORT {
        port.send_last(batch, sel)
    } else {
        port.send(batch, sel)
    };
    let Ok(sent) = sent else {
        counters.count_drop(p, DropReason::TxError, sel.len() as u64);
        return;
    };
    if let Some(o) = port.offload_counts() {
        counters.set_offloads(p, &o);
    }
    counters.tx(p, sent as u64, bytes);
    if sent < sel.len() {
        counters.count_drop(p, DropReason::TxFull, (sel.len() - sent) as u64);
    }
}

/// The bytes a frame of `len` takes on the way out, with its tag when `vlan` is set.
#[inline]
fn wire_len(len: usize, vlan: u16) -> u64 {
    let tag = if vlan != 0 { TAG_LEN } else { 0 };
    (len + tag) as u64
}

/// Whether a port held to `rate` may be read now; if so, how many frames the batch
/// takes (about what its bucket holds). When it may not, it is held until its bucket
/// refills.
#[inline]
fn admit_rx(shaper: &mut Shaper, batch: &mut Batch, (slot, r): (PortId, Rate), now: u64) -> bool {
    let b = shaper.rx(slot.0);
    b.fill(r, now);
    if b.tokens() <= 0 {
        let due = now.saturating_add(b.wait_ns(r));
        shaper.hold(slot.0, due);
        return false;
    }
    batch.set_limit(frames_for(b.tokens(), MAX_BATCH));
    true
}

/// Charges a held-to-rate port's bucket for the batch it gave, and holds the port
/// when it may have more waiting (it filled the batch it was allowed).
#[inline]
fn charge_rx(shaper: &mut Shaper, batch: &mut Batch, (slot, r): (PortId, Rate), now: u64) {
    let bytes: usize = batch.frames().iter().map(|f| f.len()).sum();
    let b = shaper.rx(slot.0);
    b.charge(bytes as u64);
    if batch.len() >= batch.capacity() {
        let due = now.saturating_add(b.wait_ns(r));
        shaper.hold(slot.0, due);
    }
    batch.set_limit(MAX_BATCH);
}

/// Records the frames of `sel` as they went out (tagged) into a capture.
#[cold]
fn record_sent(c: &crate::capture::CaptureTap, worker: usize, batch: &Batch, sel: &[TxSel]) {
    let mut buf = vec![0u8; 65536 + 4];
    for s in sel {
        if let Some(f) = batch.get(usize::from(s.idx))
            && let Some(len) = crate::port::write_tagged(f.data(), s.vlan, &mut buf)
        {
            c.record(worker, buf.get(..len).unwrap_or(&[]));
        }
    }
}

impl Worker {
    pub fn new(cell: &Arc<SnapshotCell>, fdb: Arc<Fdb>, counters: Arc<CounterTable>) -> Worker {
        Worker::with_frame_cap(cell, fdb, counters, STD_FRAME_CAP)
    }

    /// A worker whose batch buffers take frames up to `frame_cap` bytes (a super-frame
    /// for ports with offloads).
    pub fn with_frame_cap(
        cell: &Arc<SnapshotCell>,
        fdb: Arc<Fdb>,
        counters: Arc<CounterTable>,
        frame_cap: usize,
    ) -> Worker {
        Worker {
            index: 0,
            capture: None,
            nat: None,
            neigh: None,
            ports: Vec::new(),
            rx: Vec::new(),
            batch: Batch::new(crate::port::MAX_BATCH, frame_cap),
            local: Local::default(),
            snap: cell.cache(),
            fdb,
            counters,
            clock: Clock::Real(Instant::now()),
            shaper: Shaper::default(),
            tx_buckets: Arc::new(SharedBuckets::default()),
            held: Held::default(),
            held_sel: Vec::with_capacity(MAX_BATCH),
            refused: None,
            earned: 0,
            kernel_pairs: None,
        }
    }

    /// Tells this worker which ports the gateway is refusing flows (from the gateway
    /// thread's counters), so their frames earn no polling after work.
    pub fn set_refused(&mut self, mut r: Refused) {
        r.fit(self.ports.len());
        self.refused = Some(r);
    }

    /// The frames moved since the last call that earn polling after work: all of them
    /// but those from a port the gateway refused a flow within the last second and
    /// those the gateway sent to such a port (see [`Refused`]).
    pub fn take_earned(&mut self) -> usize {
        std::mem::take(&mut self.earned)
    }

    /// The frames of the batch just processed (`n` from `src`) that earn polling.
    fn earning(&mut self, src: PortId, n: usize) -> usize {
        let Some(r) = self.refused.as_mut() else {
            return n;
        };
        let now = self.clock.now();
        if src != GATEWAY_PORT {
            return if r.recent(src, now) { 0 } else { n };
        }
        let egress = &self.local.egress;
        egress
            .touched()
            .iter()
            .filter(|&&p| !r.recent(p, now))
            .map(|&p| egress.queue(p).len())
            .sum()
    }

    pub fn counters(&self) -> &Arc<CounterTable> {
        &self.counters
    }

    /// Installs `port` at `slot`; `receive` makes this worker read from it.
    pub fn add_port(&mut self, slot: PortId, port: Box<dyn Port>, receive: bool) {
        let i = slot.index();
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        if let Some(s) = self.ports.get_mut(i) {
            *s = Some(port);
        }
        self.rx.retain(|&p| p != slot);
        if receive {
            self.rx.push(slot);
        }
        self.local.egress.fit(self.ports.len());
        if let Some(r) = &mut self.refused {
            r.fit(self.ports.len());
        }
        // Buckets sized with the port table, so a limit set later allocates nothing.
        self.shaper.fit(slot.0);
        self.held.fit(slot.0);
        self.counters.reset(slot);
    }

    /// Removes the port at `slot`, returning it.
    pub fn remove_port(&mut self, slot: PortId) -> Option<Box<dyn Port>> {
        self.rx.retain(|&p| p != slot);
        self.shaper.forget(slot.0);
        self.tx_buckets.get(slot.0).reset();
        self.held.forget(slot.0);
        self.ports.get_mut(slot.index())?.take()
    }

    pub fn port_mut(&mut self, slot: PortId) -> Option<&mut Box<dyn Port>> {
        self.ports.get_mut(slot.index())?.as_mut()
    }

    /// The slots this worker receives from.
    pub fn rx_slots(&self) -> &[PortId] {
        &self.rx
    }

    /// Receives one batch from `slot` and forwards it. Returns the frames received
    /// (none from a port held to its rate: it is read again when it may send).
    pub fn poll_port(&mut self, slot: PortId) -> usize {
        let snap = self.snap.load();
        let rate_out = if snap.shaped {
            snap.port(slot).and_then(|p| p.limits.rate_out)
        } else {
            None
        };
        if let Some(r) = rate_out
            && !admit_rx(
                &mut self.shaper,
                &mut self.batch,
                (slot, r),
                self.clock.nanos(),
            )
        {
            return 0;
        }
        let Some(Some(port)) = self.ports.get_mut(slot.index()) else {
            return 0;
        };
        // A failed receive (the device went away) is the port owner's business: it
        // sees the error on its own next poll; here the port is simply idle.
        let n = port.recv(&mut self.batch).unwrap_or(0);
        if let Some(r) = rate_out {
            charge_rx(
                &mut self.shaper,
                &mut self.batch,
                (slot, r),
                self.clock.nanos(),
            );
        }
        // A peer that connected, or was cut off, may have sent no frame.
        if let Some(p) = port.peer_counts() {
            self.counters.set_peer(slot, &p);
        }
        if n == 0 {
            return 0;
        }
        if let Some(o) = port.offload_counts() {
            self.counters.set_offloads(slot, &o);
        }
        let cap = self.capture.as_ref().and_then(|c| c.load_full());
        if let Some(c) = &cap
            && c.slot == slot.0
        {
            for f in self.batch.frames() {
                c.record(self.index, f.data());
            }
        }
        let service_room = self
            .ports
            .get(GATEWAY_PORT.index())
            .and_then(|p| p.as_ref())
            .and_then(|p| p.room())
            .unwrap_or(usize::MAX);
        let shaped = snap.shaped;
        let ctx = Context {
            snap,
            fdb: &self.fdb,
            counters: &self.counters,
            now: self.clock.now(),
            nat: self.nat.as_deref(),
            neigh: self.neigh.as_deref(),
            service_room,
            kernel_pairs: self.kernel_pairs.as_deref(),
        };
        pipeline::process(&ctx, slot, &mut self.batch, &mut self.local);
        if shaped {
            self.police_tx();
        }
        self.earned += self.earning(slot, n);
        self.send_all(cap.as_deref());
        self.local.egress.clear();
        n
    }

    /// The earliest time (the clock's nanoseconds) a port held to its rate is due, or
    /// frames waiting for a port's bucket may leave.
    pub fn next_due(&self) -> Option<u64> {
        match (self.shaper.next_due(), self.held.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands `ready` the ports held to their rate that are due now.
    pub fn release_due(&mut self, ready: impl FnMut(u16)) {
        if self.shaper.next_due().is_none() {
            return;
        }
        let now = self.clock.nanos();
        self.shaper.release(now, ready);
    }

    /// Holds the send lists of ports with a limit into the container to their buckets:
    /// each list keeps the frames the bucket passes; the rest wait in the port's queue
    /// (behind any frames already waiting there), and what overflows it is counted as
    /// `rate_limit`.
    #[cold]
    fn police_tx(&mut self) {
        let now = self.clock.nanos();
        let touched = self.local.egress.touched().len();
        for i in 0..touched {
            let Some(&p) = self.local.egress.touched().get(i) else {
                break;
            };
            let Some(r) = self.snap.load().port(p).and_then(|c| c.limits.rate_in) else {
                continue;
            };
            self.police_port(p, r, now);
        }
    }

    /// [`Worker::police_tx`] for port `p`, held to `r`.
    fn police_port(&mut self, p: PortId, r: Rate, now: u64) {
        let Worker {
            tx_buckets,
            held,
            local,
            batch,
            counters,
            ..
        } = self;
        let b = tx_buckets.get(p.0);
        b.fill(r, now);
        let sel = local.egress.queue(p);
        let listed = sel.len();
        let mut keep = 0;
        if !held.holds(p.0) {
            for s in sel {
                if b.tokens() <= 0 {
                    break;
                }
                let len = batch.get(usize::from(s.idx)).map_or(0, |f| f.len());
                b.charge(wire_len(len, s.vlan));
                keep += 1;
            }
        }
        let limit = queue_limit(r);
        let mut cut = 0u64;
        for s in sel.get(keep..).unwrap_or(&[]) {
            let queued = batch
                .get(usize::from(s.idx))
                .is_some_and(|f| held.push(p.0, limit, f.data(), (s.vlan, f.vnet, f.domain)));
            cut += u64::from(!queued);
        }
        if keep < listed {
            local.egress.truncate(p, keep);
            held.due_by(now.saturating_add(b.wait_ns(r)));
        }
        if cut > 0 {
            counters.count_drop(p, DropReason::RateLimit, cut);
        }
    }

    /// Sends the frames waiting for ports' buckets that may leave now (every one of a
    /// port whose limit was cleared), and sets when to look again.
    pub fn send_held(&mut self) {
        let now = self.clock.nanos();
        if self.held.next_due().is_none_or(|d| d > now) {
            return;
        }
        self.held.clear_due();
        let active = self.held.take_active();
        for &slot in &active {
            if let Some(due) = self.send_held_port(PortId(slot), now) {
                self.held.due_by(due);
            }
        }
        self.held.restore_active(active);
    }

    /// One batch of the frames waiting for `p`, as many as its bucket passes; when some
    /// are left, the time to send more.
    fn send_held_port(&mut self, p: PortId, now: u64) -> Option<u64> {
        if self.ports.get(p.index()).is_none_or(|x| x.is_none()) {
            self.held.forget(p.0);
            return None;
        }
        let rate = self.snap.load().port(p).and_then(|c| c.limits.rate_in);
        let Worker {
            tx_buckets,
            held,
            batch,
            held_sel: sel,
            ..
        } = self;
        let b = tx_buckets.get(p.0);
        batch.clear();
        sel.clear();
        while sel.len() < MAX_BATCH {
            if let Some(r) = rate {
                b.fill(r, now);
                if b.tokens() <= 0 {
                    break;
                }
            }
            let Some(f) = held.pop(p.0) else { break };
            let idx = batch.len();
            if batch.push(&f.buf, f.domain) {
                if let Some(last) = batch.frames_mut().last_mut() {
                    last.vnet = f.vnet;
                }
                b.charge(wire_len(f.buf.len(), f.vlan));
                sel.push(TxSel {
                    idx: u8::try_from(idx).unwrap_or(u8::MAX),
                    vlan: f.vlan,
                });
            }
            held.recycle(f.buf);
        }
        let cap = self.capture.as_ref().and_then(|c| c.load_full());
        let (ports, batch, counters) = (&mut self.ports, &mut self.batch, &self.counters);
        send_port(
            ports,
            batch,
            counters,
            (self.index, cap.as_deref()),
            p,
            &self.held_sel,
        );
        if !self.held.holds(p.0) {
            return None;
        }
        let wait = rate.map_or(0, |r| self.tx_buckets.get(p.0).wait_ns(r));
        Some(now.saturating_add(wait))
    }

    /// Hands each port the frames the pipeline left for it, and counts what went out.
    /// The gateway's ring goes last: it may take the frames' buffers.
    fn send_all(&mut self, cap: Option<&crate::capture::CaptureTap>) {
        let Worker {
            ports,
            batch,
            local,
            counters,
            index,
            ..
        } = self;
        let egress = &local.egress;
        let others = egress.touched().iter().filter(|&&p| p != GATEWAY_PORT);
        for &p in others {
            send_port(ports, batch, counters, (*index, cap), p, egress.queue(p));
        }
        let sel = egress.queue(GATEWAY_PORT);
        if !sel.is_empty() {
            send_port(ports, batch, counters, (*index, cap), GATEWAY_PORT, sel);
        }
    }

    /// One pass over every port this worker receives from. Returns frames received.
    pub fn poll_all(&mut self) -> usize {
        let mut total = 0;
        for i in 0..self.rx.len() {
            if let Some(&slot) = self.rx.get(i) {
                total += self.poll_port(slot);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DomainConf, Net4, PortConf, PortMode, PortRole, Snapshot};
    use crate::ids::{DomainId, Generation};
    use crate::port::MemoryPort;
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    pub(super) fn domain() -> DomainConf {
        DomainConf {
            name: "n".into(),
            vlan: None,
            gateway_mac: MacAddr([2, 0x42, 10, 0, 0, 1]),
            v4: Some(Net4::of(Ipv4Addr::new(10, 0, 0, 1), 16)),
            v6: None,
            icc: true,
            egress: true,
            members: vec![],
            owners: vec![],
            listeners: vec![],
        }
    }

    pub(super) fn container(i: usize) -> PortConf {
        PortConf {
            name: format!("p{i}"),
            generation: Generation(0),
            role: PortRole::Container,
            mode: PortMode::Access {
                domain: DomainId(0),
            },
            security: None,
            mac_limit: 1024,
            kernel: false,
            limits: Default::default(),
        }
    }

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    fn mac_of(slot: usize) -> MacAddr {
        let b = (slot as u16).to_be_bytes();
        MacAddr([2, 0x10, 0, 0, b[0], b[1]])
    }

    /// A worker over `slots` port slots, every container slot a memory port on one
    /// network (the gateway's slot and the uplink's empty), attached one at a time as
    /// the daemon attaches them.
    fn network_of(slots: usize) -> Worker {
        let mut snap = Snapshot {
            domains: vec![Some(domain())],
            ports: vec![None, None],
            ..Default::default()
        };
        snap.ports.extend((2..slots).map(|i| Some(container(i))));
        snap.rebuild();
        let cell = Arc::new(SnapshotCell::new(snap));
        let mut w = Worker::new(
            &cell,
            Arc::new(Fdb::default()),
            Arc::new(CounterTable::default()),
        );
        for i in 2..slots {
            w.add_port(PortId(i as u16), Box::new(MemoryPort::new("m")), true);
        }
        w
    }

    fn tx_of(w: &Worker, slot: usize) -> u64 {
        w.counters().read(PortId(slot as u16)).tx_packets
    }

    /// Every per-port table a worker keeps (send lists, the gateway share, its port
    /// table, the counters, the FDB's per-port counts) serves every port, for port
    /// counts on both sides of each power of two they are sized by, up to the daemon's
    /// limit: a broadcast from the last port reaches every other port, and a unicast
    /// to the last port reaches it alone.
    #[test]
    fn every_port_table_serves_every_slot_across_powers_of_two() {
        let mut sizes = vec![4usize, 4095, 4096];
        for k in 2..12 {
            sizes.extend([(1 << k) - 1, 1 << k, (1 << k) + 1]);
        }
        for slots in sizes.into_iter().filter(|s| (4..=4096).contains(s)) {
            let mut w = network_of(slots);
            let (last, first) = (slots - 1, 2usize);
            let bcast = frame(MacAddr::BROADCAST, mac_of(last));
            inject(&mut w, last, &bcast);
            assert_eq!(w.poll_all(), 1, "{slots} slots");
            let missed: Vec<usize> = (first..last).filter(|&p| tx_of(&w, p) != 1).collect();
            assert!(
                missed.is_empty(),
                "{slots} slots: broadcast missed {missed:?}"
            );
            assert_eq!(tx_of(&w, last), 0, "{slots} slots: echoed to its sender");
            // The first port answers the last by unicast: learned, so no flood.
            inject(&mut w, first, &frame(mac_of(last), mac_of(first)));
            assert_eq!(w.poll_all(), 1);
            assert_eq!(
                tx_of(&w, last),
                1,
                "{slots} slots: unicast to the last port"
            );
            assert!(
                (first + 1..last).all(|p| tx_of(&w, p) == 1),
                "{slots}: flooded"
            );
            assert_eq!(w.counters().read(PortId(last as u16)).rx_packets, 1);
        }
    }

    /// Frames from a port the gateway refused a flow within the last second, and the
    /// gateway's frames to it, are forwarded as ever but earn no polling after work;
    /// a neighbour's frames, and the gateway's to the neighbour, do (the control).
    #[test]
    fn a_refused_port_earns_no_polling_and_its_frames_still_go_through() {
        let mut snap = Snapshot {
            domains: vec![Some(domain())],
            ports: vec![
                Some(PortConf {
                    role: PortRole::Gateway,
                    mac_limit: 0,
                    kernel: false,
                    ..container(0)
                }),
                None,
            ],
            ..Default::default()
        };
        snap.ports.extend((2..5).map(|i| Some(container(i))));
        snap.rebuild();
        let cell = Arc::new(SnapshotCell::new(snap));
        let mut w = Worker::new(
            &cell,
            Arc::new(Fdb::default()),
            Arc::new(CounterTable::default()),
        );
        let gateway = Arc::new(CounterTable::default());
        w.set_refused(Refused::new(gateway.clone()));
        w.clock = Clock::Manual(100);
        let gw_mac = domain().gateway_mac;
        let (evil, nb) = (3usize, 4usize);
        let to_gw = |from: usize| frame(gw_mac, mac_of(from));
        // Both ports send to the gateway before any refusal: both earn.
        inject(&mut w, evil, &to_gw(evil));
        inject(&mut w, nb, &to_gw(nb));
        assert_eq!(w.poll_all(), 2);
        assert_eq!(w.take_earned(), 2);
        // The gateway refuses `evil` a flow: its frames go on to the gateway (the
        // gateway answers them) but earn nothing; its neighbour's still do.
        gateway.count_drop(PortId(evil as u16), DropReason::TcpQuota, 1);
        inject(&mut w, evil, &to_gw(evil));
        assert_eq!(w.poll_all(), 1);
        assert_eq!(w.take_earned(), 0, "a refused port's frame earned polling");
        inject(&mut w, nb, &to_gw(nb));
        assert_eq!(w.poll_all(), 1);
        assert_eq!(w.take_earned(), 1, "its neighbour's frame earned none");
        // The gateway's answers: to `evil` they earn nothing, to `nb` they do, and
        // both are delivered.
        let mut ring = MemoryPort::new("gateway");
        ring.inject(&frame(mac_of(evil), gw_mac));
        ring.inject(&frame(mac_of(nb), gw_mac));
        w.add_port(GATEWAY_PORT, Box::new(ring), true);
        let (e0, n0) = (tx_of(&w, evil), tx_of(&w, nb));
        assert_eq!(w.poll_port(GATEWAY_PORT), 2);
        assert_eq!((tx_of(&w, evil) - e0, tx_of(&w, nb) - n0), (1, 1));
        assert_eq!(w.take_earned(), 1);
        // Two seconds on, with no new refusal, `evil` earns again.
        w.clock = Clock::Manual(100 + REFUSED_FOR_SECS + 1);
        inject(&mut w, evil, &to_gw(evil));
        assert_eq!(w.poll_all(), 1);
        assert_eq!(w.take_earned(), 1);
    }

    fn inject(w: &mut Worker, slot: usize, f: &[u8]) {
        let mut p = MemoryPort::new("m");
        p.inject(f);
        w.add_port(PortId(slot as u16), Box::new(p), true);
    }

    #[test]
    fn worker_forwards_between_memory_ports_and_counts() {
        let mut snap = Snapshot {
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
            ports: vec![None, None],
            ..Default::default()
        };
        for i in 0..2 {
            snap.ports.push(Some(PortConf {
                name: format!("p{i}"),
                generation: Generation(0),
                role: PortRole::Container,
                mode: PortMode::Access {
                    domain: DomainId(0),
                },
                security: None,
                mac_limit: 1024,
                kernel: false,
                limits: Default::default(),
            }));
        }
        snap.rebuild();
        let cell = Arc::new(SnapshotCell::new(snap));
        let mut w = Worker::new(
            &cell,
            Arc::new(Fdb::default()),
            Arc::new(CounterTable::default()),
        );
        let mut a = MemoryPort::new("a");
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.resize(60, 0);
        a.inject(&f);
        w.add_port(PortId(2), Box::new(a), true);
        w.add_port(PortId(3), Box::new(MemoryPort::new("b")), true);
        assert_eq!(w.poll_all(), 1);
        let c = w.counters().read(PortId(3));
        assert_eq!((c.tx_packets, c.tx_bytes), (1, 60));
        assert_eq!(w.counters().read(PortId(2)).rx_packets, 1);
    }
}

#[cfg(test)]
#[path = "worker_shaping_tests.rs"]
mod shaping_tests;
