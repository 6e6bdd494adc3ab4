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

use std::time::{Duration, Instant};

/// The least time between two trims.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// When to trim: after flows ended.
#[derive(Debug)]
pub struct Trimmer {
    /// The most flows open since the last trim.
    peak: usize,
    next: Instant,
    /// Trims done (for tests and counters).
    pub trims: u64,
}

impl Default for Trimmer {
    fn default() -> Self {
        Trimmer {
            peak: 0,
            next: Instant::now(),
            trims: 0,
        }
    }
}

impl Trimmer {
    /// Called on every wake-up with the flows open now; trims when due. Returns when
    /// it next wants to run (a trim still owed), if at all.
    pub fn tick(&mut self, flows: usize, now: Instant) -> Option<Instant> {
        self.peak = self.peak.max(flows);
        if flows >= self.peak {
            return None;
        }
        if now < self.next {
            return Some(self.next);
        }
        trim();
        self.trims += 1;
        self.peak = flows;
        self.next = now + TRIM_EVERY;
        None
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
        let t0 = Instant::now();
        assert_eq!(t.tick(100, t0), None);
        assert_eq!(t.tick(100, t0), None);
        assert_eq!(t.trims, 0, "nothing ended: no trim");
        assert_eq!(t.tick(10, t0), None);
        assert_eq!(t.trims, 1);
        // More ended at once: owed, not before the interval.
        assert_eq!(t.tick(5, t0), Some(t0 + TRIM_EVERY));
        assert_eq!(t.trims, 1);
        assert_eq!(t.tick(5, t0 + TRIM_EVERY), None);
        assert_eq!(t.trims, 2);
    }
}
