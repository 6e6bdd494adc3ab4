//! Bandwidth limits per port and direction: token buckets a worker keeps.
//!
//! A port's [`Limits`] come in its `PortConf` (the snapshot); the buckets are the
//! worker's own plain structs, indexed by port slot, so nothing is shared or locked.
//! A bucket holds bytes: it fills at the rate up to its depth (the burst), and a frame
//! is charged its whole length after it passed (a 64 KB super-frame costs 64 KB), so
//! the balance may go below zero; the port then waits until it is paid back.
//!
//! - **From the container** (`rate_out`, what the switch receives on the port): the
//!   worker does not read the port while its bucket is empty. The frames wait in the
//!   port's own queue (the TAP's), which is pacing: TCP sees a slower link, not losses,
//!   and a UDP sender above the rate loses what overflows that queue.
//! - **To the container** (`rate_in`, what the switch sends to the port): any worker
//!   may send to the port, so its bucket is one [`SharedBucket`] every worker charges
//!   (atomics, no lock); the frames of a send list past an empty bucket wait in the
//!   sending worker's [`queue`] for the port and leave as the bucket refills (pacing
//!   again); what overflows the queue is dropped (counted as `rate_limit` on the shaped
//!   port).
//!
//! Everything here is sans-I/O: the time is passed in (nanoseconds of a monotonic
//! clock).

pub mod queue;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One direction's limit: bytes a second, and how many bytes may pass at once after a
/// quiet spell (the bucket's depth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub bytes_per_sec: u64,
    pub burst: u64,
}

/// The fewest bytes a bucket holds: a whole super-frame must fit.
pub const MIN_BURST: u64 = 64 * 1024;
/// The default depth: this much of the rate (and at least [`MIN_BURST`]).
pub const DEFAULT_BURST_MS: u64 = 50;
/// A held port is looked at again at least this often, whatever its balance (a limit
/// raised or cleared takes effect within it).
pub const MAX_HOLD_NS: u64 = 50_000_000;

impl Rate {
    /// `bits_per_sec` with `burst` bytes (None: [`DEFAULT_BURST_MS`] of the rate), the
    /// depth never below [`MIN_BURST`]. None for a rate of zero.
    pub fn from_bits(bits_per_sec: u64, burst: Option<u64>) -> Option<Rate> {
        let bytes_per_sec = bits_per_sec / 8;
        if bytes_per_sec == 0 {
            return None;
        }
        let burst = burst.unwrap_or(bytes_per_sec.saturating_mul(DEFAULT_BURST_MS) / 1000);
        Some(Rate {
            bytes_per_sec,
            burst: burst.max(MIN_BURST),
        })
    }
}

/// A port's limits in both directions (seen from the container).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Into the container: what the switch sends to the port.
    pub rate_in: Option<Rate>,
    /// Out of the container: what the switch receives from the port.
    pub rate_out: Option<Rate>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        self.rate_in.is_none() && self.rate_out.is_none()
    }
}

/// A token bucket in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    tokens: i64,
    stamp: u64,
    /// The rate it was filled at (a new rate starts it full).
    rate: Option<Rate>,
}

impl Bucket {
    /// Adds what `rate` gave since the last fill, up to the depth; a bucket seeing a
    /// rate for the first time (or a changed one) starts full.
    #[inline]
    pub fn fill(&mut self, rate: Rate, now: u64) {
        if self.rate != Some(rate) {
            self.rate = Some(rate);
            self.tokens = clamp_i64(rate.burst);
            self.stamp = now;
            return;
        }
        let dt = now.saturating_sub(self.stamp);
        let rate_ns = u128::from(rate.bytes_per_sec);
        let add = u128::from(dt) * rate_ns / 1_000_000_000;
        let burst = clamp_i64(rate.burst);
        let add = i64::try_from(add).unwrap_or(i64::MAX);
        if self.tokens.saturating_add(add) >= burst {
            self.tokens = burst;
            self.stamp = now;
            return;
        }
        self.tokens += add;
        // Only the time the whole bytes took: the rest carries to the next fill, so
        // fills every microsecond add up.
        let used = u128::from(add.unsigned_abs()) * 1_000_000_000 / rate_ns.max(1);
        self.stamp = self
            .stamp
            .saturating_add(u64::try_from(used).unwrap_or(u64::MAX));
    }

    /// The balance in bytes (below zero: owed).
    #[inline]
    pub fn tokens(&self) -> i64 {
        self.tokens
    }

    /// Charges `bytes` that passed.
    #[inline]
    pub fn charge(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(clamp_i64(bytes));
    }

    /// Nanoseconds until the balance is above zero at `rate` (0 when it is), at most
    /// [`MAX_HOLD_NS`].
    pub fn wait_ns(&self, rate: Rate) -> u64 {
        if self.tokens > 0 {
            return 0;
        }
        let owed = u128::from(self.tokens.unsigned_abs()) + 1;
        let ns = owed * 1_000_000_000 / u128::from(rate.bytes_per_sec.max(1));
        u64::try_from(ns).unwrap_or(u64::MAX).min(MAX_HOLD_NS)
    }
}

/// A bucket several workers fill and charge at once: [`Bucket`]'s arithmetic on
/// atomics. Filling is claimed by moving the stamp (compare and exchange), so each
/// interval of time is added once whoever fills; charges subtract at once. Races cost
/// at most one frame's overdraw, never a lock.
#[derive(Debug, Default)]
pub struct SharedBucket {
    tokens: AtomicI64,
    stamp: AtomicU64,
    /// The rate it was filled at ([`rate_key`]; 0: none yet).
    rate: AtomicU64,
}

/// A rate as one word, never 0 (a changed rate or burst gives another word).
fn rate_key(r: Rate) -> u64 {
    (r.bytes_per_sec ^ r.burst.rotate_left(32)) | 1
}

impl SharedBucket {
    /// Adds what `rate` gave since the last fill, up to the depth; a bucket meeting a
    /// rate for the first time (or a changed one) starts full.
    pub fn fill(&self, rate: Rate, now: u64) {
        let burst = clamp_i64(rate.burst);
        let key = rate_key(rate);
        if self.rate.load(Ordering::Acquire) != key {
            self.tokens.store(burst, Ordering::Relaxed);
            self.stamp.store(now, Ordering::Relaxed);
            self.rate.store(key, Ordering::Release);
            return;
        }
        let stamp = self.stamp.load(Ordering::Acquire);
        let dt = now.saturating_sub(stamp);
        let rate_ns = u128::from(rate.bytes_per_sec.max(1));
        let add = i64::try_from(u128::from(dt) * rate_ns / 1_000_000_000).unwrap_or(i64::MAX);
        if add == 0 {
            return;
        }
        // Only the time the whole bytes took: the rest carries to the next fill.
        let used = u128::from(add.unsigned_abs()) * 1_000_000_000 / rate_ns;
        let to = stamp.saturating_add(u64::try_from(used).unwrap_or(u64::MAX));
        let claimed = self
            .stamp
            .compare_exchange(stamp, to, Ordering::AcqRel, Ordering::Relaxed);
        if claimed.is_ok() {
            let _ = self
                .tokens
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                    Some(t.saturating_add(add).min(burst))
                });
        }
    }

    /// The balance in bytes (below zero: owed).
    pub fn tokens(&self) -> i64 {
        self.tokens.load(Ordering::Acquire)
    }

    /// Charges `bytes` that passed.
    pub fn charge(&self, bytes: u64) {
        self.tokens.fetch_sub(clamp_i64(bytes), Ordering::AcqRel);
    }

    /// Nanoseconds until the balance is above zero at `rate` (0 when it is), at most
    /// [`MAX_HOLD_NS`].
    pub fn wait_ns(&self, rate: Rate) -> u64 {
        Bucket {
            tokens: self.tokens(),
            ..Bucket::default()
        }
        .wait_ns(rate)
    }

    /// Forgets the rate (the port's slot is free again): the next fill starts full.
    pub fn reset(&self) {
        self.rate.store(0, Ordering::Release);
    }
}

/// The buckets of what the workers send to each port slot, shared by all of them.
#[derive(Debug)]
pub struct SharedBuckets(Box<[SharedBucket]>);

impl SharedBuckets {
    /// One bucket for each of `slots` port slots.
    pub fn new(slots: usize) -> SharedBuckets {
        SharedBuckets((0..slots).map(|_| SharedBucket::default()).collect())
    }

    /// The bucket of slot `slot` (the last one for a slot past the table, which holds
    /// every slot a port can have).
    pub fn get(&self, slot: u16) -> &SharedBucket {
        let i = usize::from(slot).min(self.0.len().saturating_sub(1));
        static NONE: SharedBucket = SharedBucket {
            tokens: AtomicI64::new(0),
            stamp: AtomicU64::new(0),
            rate: AtomicU64::new(0),
        };
        self.0.get(i).unwrap_or(&NONE)
    }
}

impl Default for SharedBuckets {
    fn default() -> SharedBuckets {
        SharedBuckets::new(crate::bridge::fdb::MAX_PORT_SLOTS)
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// How many frames to read from a port whose bucket holds `tokens` bytes: about one
/// per 16 KB of balance (a super-frame or a dozen full-size frames), 1 to `max`, so
/// a batch overdraws the bucket by little.
#[inline]
pub fn frames_for(tokens: i64, max: usize) -> usize {
    let n = usize::try_from(tokens.max(0) / 16_384).unwrap_or(usize::MAX);
    n.saturating_add(1).min(max).max(1)
}

/// A worker's buckets of what it receives from its ports (`rate_out`), by port slot,
/// and the ports it stopped reading until a time. (What workers send to a port is
/// charged to its [`SharedBucket`].)
#[derive(Debug, Default)]
pub struct Shaper {
    rx: Vec<Bucket>,
    /// (slot, when to read it again).
    held: Vec<(u16, u64)>,
}

fn bucket(v: &mut Vec<Bucket>, slot: u16) -> &mut Bucket {
    let i = usize::from(slot);
    if v.len() <= i {
        v.resize(i + 1, Bucket::default());
    }
    // Just sized to hold `i`.
    let last = v.len() - 1;
    let i = i.min(last);
    &mut v[i]
}

impl Shaper {
    /// The bucket of what the worker receives from `slot`.
    pub fn rx(&mut self, slot: u16) -> &mut Bucket {
        bucket(&mut self.rx, slot)
    }

    /// Sizes the bucket table to hold `slot` (when a port is added: never while
    /// frames are forwarded).
    pub fn fit(&mut self, slot: u16) {
        bucket(&mut self.rx, slot);
    }

    /// Stops reading `slot` until `until` (once: a slot held already keeps its time).
    pub fn hold(&mut self, slot: u16, until: u64) {
        if !self.held.iter().any(|(s, _)| *s == slot) {
            self.held.push((slot, until));
        }
    }

    /// The earliest time a held port is due, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.held.iter().map(|(_, t)| *t).min()
    }

    /// Hands `ready` every held port due at `now` and forgets them.
    pub fn release(&mut self, now: u64, mut ready: impl FnMut(u16)) {
        self.held.retain(|&(slot, t)| {
            if t <= now {
                ready(slot);
                false
            } else {
                true
            }
        });
    }

    /// Forgets a port (removed from the worker).
    pub fn forget(&mut self, slot: u16) {
        self.held.retain(|(s, _)| *s != slot);
        if let Some(b) = self.rx.get_mut(usize::from(slot)) {
            *b = Bucket::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn mbit(n: u64) -> Rate {
        Rate::from_bits(n * 1_000_000, None).unwrap()
    }

    #[test]
    fn rate_from_bits_has_a_burst_of_a_few_ms_and_at_least_a_super_frame() {
        let r = mbit(100);
        assert_eq!(r.bytes_per_sec, 12_500_000);
        assert_eq!(r.burst, 625_000);
        assert_eq!(
            Rate::from_bits(8_000_000_000, None).unwrap().burst,
            50_000_000
        );
        assert_eq!(Rate::from_bits(8_000_000, None).unwrap().burst, MIN_BURST);
        assert_eq!(Rate::from_bits(7, None), None);
        assert_eq!(Rate::from_bits(8_000, Some(10)).unwrap().burst, MIN_BURST);
    }

    #[test]
    fn a_bucket_passes_the_rate_over_time_whatever_the_frame_sizes() {
        let r = mbit(100);
        let mut b = Bucket::default();
        let mut now = 0;
        let mut passed = 0u64;
        // A sender that always has a frame: 64 KB and 1514-byte frames alternating.
        let sizes = [65_536u64, 1514, 1514, 9000];
        let mut i = 0;
        while now < 2_000 * MS {
            b.fill(r, now);
            if b.tokens() > 0 {
                let s = sizes[i % sizes.len()];
                b.charge(s);
                passed += s;
                i += 1;
            } else {
                now += b.wait_ns(r).max(1);
            }
        }
        let want = 2 * r.bytes_per_sec + r.burst;
        let err = passed.abs_diff(want) as f64 / want as f64;
        assert!(err < 0.01, "passed {passed}, want {want}");
    }

    #[test]
    fn a_bucket_never_holds_more_than_its_burst_and_a_new_rate_starts_full() {
        let r = mbit(10);
        let mut b = Bucket::default();
        b.fill(r, 0);
        assert_eq!(b.tokens(), r.burst as i64);
        b.fill(r, 60_000 * MS);
        assert_eq!(b.tokens(), r.burst as i64);
        b.charge(10 * r.burst);
        assert!(b.wait_ns(r) > 0 && b.wait_ns(r) <= MAX_HOLD_NS);
        let r2 = mbit(20);
        b.fill(r2, 60_001 * MS);
        assert_eq!(b.tokens(), r2.burst as i64);
    }

    #[test]
    fn fills_every_microsecond_add_up() {
        let r = mbit(1);
        let mut b = Bucket::default();
        b.fill(r, 0);
        b.charge(r.burst);
        for t in 0..=500_000u64 {
            b.fill(r, t * 1000);
        }
        // Half a second at 125,000 bytes a second.
        assert!((62_000..=62_500).contains(&b.tokens()), "{}", b.tokens());
    }

    #[test]
    fn frames_for_bounds_the_read() {
        assert_eq!(frames_for(-5, 64), 1);
        assert_eq!(frames_for(0, 64), 1);
        assert_eq!(frames_for(100_000, 64), 7);
        assert_eq!(frames_for(i64::MAX, 64), 64);
    }

    #[test]
    fn a_shared_bucket_passes_the_rate_to_two_threads_together() {
        use std::sync::Arc;
        let r = mbit(100);
        let b = Arc::new(SharedBucket::default());
        b.fill(r, 0);
        // Two senders that always have a frame, on a clock they share: each step
        // both fill and send while the balance allows.
        let passed: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || {
                        let mut sent = 0u64;
                        for ms in 0..2_000u64 {
                            b.fill(r, ms * MS);
                            while b.tokens() > 0 {
                                b.charge(1514);
                                sent += 1514;
                            }
                        }
                        sent
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        // Two seconds of the rate and the first burst, not twice that.
        let want = 2 * r.bytes_per_sec + r.burst;
        let err = passed.abs_diff(want) as f64 / want as f64;
        assert!(err < 0.05, "passed {passed}, want {want}");
        assert!(b.wait_ns(r) <= MAX_HOLD_NS);
        b.reset();
        b.fill(r, 3_000 * MS);
        assert_eq!(b.tokens(), r.burst as i64, "a reset bucket starts full");
    }

    #[test]
    fn held_ports_come_back_when_due_once() {
        let mut s = Shaper::default();
        s.hold(5, 100);
        s.hold(5, 50);
        s.hold(7, 200);
        assert_eq!(s.next_due(), Some(100));
        let mut got = vec![];
        s.release(150, |p| got.push(p));
        assert_eq!(got, vec![5]);
        s.forget(7);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.rx(4000).tokens(), 0);
    }
}
