//! Giving freed memory back to the system.
//!
//! What a container's flows hold (smoltcp sockets and their buffers, host sockets'
//! bookkeeping, frame buffers) is freed when they close, but glibc's allocator keeps
//! freed memory in its arenas: after thousands of connections closed the daemon's
//! resident size stayed near its peak (235 MB peak, 221 MB 20 s after the last
//! closed). [`Trimmer`] calls `malloc_trim(0)` on the gateway thread, which returns
//! the free memory of every arena (whole free pages inside the heaps too, by
//! `madvise`), once flows have ended: at most every [`TRIM_EVERY`], and only when
//! fewer flows are open than at the peak since the last trim, so a steady daemon never
//! pays for it. An allocator with decay (jemalloc, mimalloc) would do the same by
//! itself at the cost of a dependency; this is one libc call.
//!
//! Trimming gives back only what is free. Before each trim the gateway frees what its
//! pools and tables hold past their live entries (the rings' spare frame buffers on
//! both sides, the uplink's tables of free slots): those only ever grew to the most a
//! burst needed, and after three cycles of 2000 connections held 8 to 16 MB that no
//! trim could return (glibc's `malloc_stats`: in use, not free).

use std::time::{Duration, Instant};

/// The least time between two trims.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// How long after a trim a second one follows: what other threads freed when asked
/// to (the workers' spare buffers, on their next round) is given back too.
pub const FOLLOW_UP: Duration = Duration::from_millis(200);

/// When to trim: after flows ended.
#[derive(Debug)]
pub struct Trimmer {
    /// The most flows open since the last trim.
    peak: usize,
    next: Instant,
    /// A follow-up trim is owed at `follow_up_at`.
    follow_up_at: Option<Instant>,
    /// Trims done (for tests and counters).
    pub trims: u64,
}

impl Default for Trimmer {
    fn default() -> Self {
        Trimmer {
            peak: 0,
            next: Instant::now(),
            follow_up_at: None,
            trims: 0,
        }
    }
}

impl Trimmer {
    /// Called on every wake-up with the flows open now; when flows have ended, calls
    /// `shed` (which frees what pools and tables hold past their live entries) and
    /// trims, then trims once more [`FOLLOW_UP`] later. Returns when it next wants to
    /// run (a trim still owed), if at all.
    pub fn tick(&mut self, flows: usize, now: Instant, shed: impl FnOnce()) -> Option<Instant> {
        if let Some(at) = self.follow_up_at {
            if now < at {
                return Some(at);
            }
            self.follow_up_at = None;
            self.trim();
        }
        self.peak = self.peak.max(flows);
        if flows >= self.peak {
            return None;
        }
        if now < self.next {
            return Some(self.next);
        }
        shed();
        self.trim();
        self.peak = flows;
        self.next = now + TRIM_EVERY;
        self.follow_up_at = Some(now + FOLLOW_UP);
        self.follow_up_at
    }

    fn trim(&mut self) {
        trim();
        self.trims += 1;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointer and only reorganises the allocator's own
    // free lists; it is thread-safe (it locks each arena in turn).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_flows_ended_and_not_more_often_than_its_interval() {
        let mut t = Trimmer::default();
        let mut sheds = 0;
        let t0 = Instant::now();
        assert_eq!(t.tick(100, t0, || sheds += 1), None);
        assert_eq!(t.tick(100, t0, || sheds += 1), None);
        assert_eq!((t.trims, sheds), (0, 0), "nothing ended: no trim");
        // Ended: shed and trimmed, a follow-up owed.
        assert_eq!(t.tick(10, t0, || sheds += 1), Some(t0 + FOLLOW_UP));
        assert_eq!((t.trims, sheds), (1, 1));
        assert_eq!(t.tick(10, t0 + FOLLOW_UP, || sheds += 1), None);
        assert_eq!(
            (t.trims, sheds),
            (2, 1),
            "the follow-up trims, sheds nothing"
        );
        // More ended at once: owed, not before the interval.
        assert_eq!(
            t.tick(5, t0 + FOLLOW_UP, || sheds += 1),
            Some(t0 + TRIM_EVERY)
        );
        assert_eq!(t.trims, 2);
        assert_eq!(
            t.tick(5, t0 + TRIM_EVERY, || sheds += 1),
            Some(t0 + TRIM_EVERY + FOLLOW_UP)
        );
        assert_eq!((t.trims, sheds), (3, 2));
    }
}
