//! A worker holding ports to their bandwidth limits (manual clock).

use super::*;
use crate::config::{PortConf, Snapshot};
use crate::port::MemoryPort;
use crate::shaper::{Limits, Rate};
use crate::wire::MacAddr;

/// 8 Mbit/s: a megabyte a second, the smallest bucket (64 KiB).
fn one_mb() -> Rate {
    Rate::from_bits(8_000_000, None).unwrap()
}

fn port(i: usize, limits: Limits) -> Option<PortConf> {
    Some(PortConf {
        limits,
        ..super::tests::container(i)
    })
}

/// Ports 2 (with `a`'s limits) and 3 (with `b`'s) on one network; port 2 has `frames`
/// frames of 1000 bytes to port 3's MAC waiting, port 3 has sent once (learned).
fn pair(a: Limits, b: Limits, frames: usize) -> Worker {
    let mut snap = Snapshot {
        domains: vec![Some(super::tests::domain())],
        ports: vec![None, None, port(2, a), port(3, b)],
        ..Default::default()
    };
    snap.rebuild();
    assert!(snap.shaped);
    let cell = Arc::new(SnapshotCell::new(snap));
    let mut w = Worker::new(
        &cell,
        Arc::new(Fdb::default()),
        Arc::new(CounterTable::default()),
    );
    w.clock = Clock::Manual(0);
    let (m2, m3) = (MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 3]));
    let mut p3 = MemoryPort::new("p3");
    p3.inject(&frame(m2, m3, 60));
    w.add_port(PortId(3), Box::new(p3), true);
    w.poll_port(PortId(3));
    let mut p2 = MemoryPort::new("p2");
    for _ in 0..frames {
        p2.inject(&frame(m3, m2, 1000));
    }
    w.add_port(PortId(2), Box::new(p2), true);
    w
}

fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len, 0);
    f
}

/// Sends what waits for port buckets until nothing more may leave at this time (a
/// batch at a time).
fn flush(w: &mut Worker) {
    for _ in 0..100 {
        w.send_held();
    }
}

/// Polls port 2 until it gives nothing more at this time.
fn drain(w: &mut Worker) {
    for _ in 0..1000 {
        w.release_due(|_| {});
        if w.poll_port(PortId(2)) == 0 {
            break;
        }
    }
}

#[test]
fn a_port_limited_out_of_the_container_is_read_only_as_its_bucket_allows() {
    let limits = Limits {
        rate_out: Some(one_mb()),
        rate_in: None,
    };
    let mut w = pair(limits, Limits::default(), 1500);
    drain(&mut w);
    // A full bucket (65,536 bytes) lets 66 frames of 1000 bytes through, the last
    // one overdrawing it; the rest wait in the port.
    let rx = |w: &Worker| w.counters().read(PortId(2)).rx_packets;
    assert_eq!(rx(&w), 66);
    assert!(w.next_due().is_some(), "the port is held");
    // One second later the bucket is full again (its depth, not a second's worth).
    w.clock = Clock::Manual(1);
    drain(&mut w);
    assert_eq!(rx(&w), 66 + 66);
    assert_eq!(w.counters().read(PortId(3)).tx_packets, rx(&w));
    // Nothing is dropped: the frames wait.
    assert_eq!(
        w.counters()
            .read(PortId(2))
            .drop_count(DropReason::RateLimit),
        0
    );
}

#[test]
fn a_port_limited_into_the_container_queues_past_its_bucket_and_paces_them_out() {
    let limits = Limits {
        rate_in: Some(one_mb()),
        rate_out: None,
    };
    let mut w = pair(Limits::default(), limits, 200);
    drain(&mut w);
    let tx = |w: &Worker| w.counters().read(PortId(3)).tx_packets;
    let cut = |w: &Worker| {
        w.counters()
            .read(PortId(3))
            .drop_count(DropReason::RateLimit)
    };
    assert_eq!(w.counters().read(PortId(2)).rx_packets, 200);
    // The bucket (65,536 bytes) passes 66 frames of 1000; the other 134 wait.
    assert_eq!(tx(&w), 66);
    assert_eq!(cut(&w), 0);
    let due = w.next_due().expect("frames wait for the bucket");
    // Not before they are due...
    flush(&mut w);
    assert_eq!(tx(&w), 66);
    assert!(due > 0 && due <= crate::shaper::MAX_HOLD_NS, "{due}");
    // ...and a second later as much as the bucket holds, in order, then the rest.
    w.clock = Clock::Manual(1);
    flush(&mut w);
    assert_eq!(tx(&w), 66 + 66);
    w.clock = Clock::Manual(2);
    flush(&mut w);
    assert_eq!(tx(&w), 66 * 3);
    w.clock = Clock::Manual(3);
    flush(&mut w);
    assert_eq!(tx(&w), 200);
    assert_eq!(cut(&w), 0);
    assert_eq!(w.next_due(), None, "nothing left waiting");
}

#[test]
fn what_overflows_the_queue_of_a_limited_port_is_dropped_and_counted() {
    let limits = Limits {
        rate_in: Some(one_mb()),
        rate_out: None,
    };
    let mut w = pair(Limits::default(), limits, 400);
    drain(&mut w);
    let c3 = w.counters().read(PortId(3));
    // 66 pass, the queue takes 262 of 1000 bytes (256 KiB), 72 are cut.
    assert_eq!(c3.tx_packets, 66);
    assert_eq!(c3.drop_count(DropReason::RateLimit), 400 - 66 - 262);
    // The port going away drops what waited for it (262 frames were waiting).
    assert_eq!(w.held.bytes(3), 262 * 1000);
    w.remove_port(PortId(3));
    assert_eq!(w.held.bytes(3), 0);
    w.clock = Clock::Manual(1);
    flush(&mut w);
    assert_eq!(w.counters().read(PortId(3)).tx_packets, 66);
}

#[test]
fn frames_waiting_for_a_cleared_limit_leave_at_once() {
    let limits = Limits {
        rate_in: Some(one_mb()),
        rate_out: None,
    };
    let mut w = pair(Limits::default(), limits, 200);
    drain(&mut w);
    assert_eq!(w.counters().read(PortId(3)).tx_packets, 66);
    let mut snap = (**w.snap.load()).clone();
    if let Some(Some(p)) = snap.ports.get_mut(3) {
        p.limits = Limits::default();
    }
    snap.rebuild();
    let cell = Arc::new(SnapshotCell::new(snap));
    w.snap = cell.cache();
    w.clock = Clock::Manual(1);
    // Every waiting frame, a batch at a time, with no bucket to wait for.
    flush(&mut w);
    assert_eq!(w.counters().read(PortId(3)).tx_packets, 200);
}

#[test]
fn an_unlimited_port_is_never_held() {
    let limits = Limits {
        rate_in: Some(one_mb()),
        rate_out: None,
    };
    // Port 3 is limited; port 2, the sender, reads on as if there were no shaper.
    let mut w = pair(Limits::default(), limits, 1500);
    drain(&mut w);
    assert_eq!(w.counters().read(PortId(2)).rx_packets, 1500);
    assert_eq!(w.shaper.next_due(), None, "the sender is never held");
    assert!(
        w.held.next_due().is_some(),
        "while frames wait for the limited port"
    );
}
