//! How many control connections the daemon serves at once. `ctl` clients and `vswitch
//! run` containers have separate pools, so hundreds of running containers cannot lock
//! `ctl` out, and one process may hold only a share of the `ctl` pool, so a client that
//! opens connections without end cannot either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `ctl` connections served at once.
pub const MAX_CTL: usize = 256;
/// `ctl` connections one process (by its pid) may hold at once.
pub const MAX_PER_PROCESS: usize = 32;
/// `vswitch run` containers connected at once.
pub const MAX_RUN: usize = 4096;

#[derive(Debug, Default)]
struct Counts {
    ctl: usize,
    run: usize,
    per_pid: HashMap<i32, usize>,
}

/// The shared counters.
#[derive(Debug, Clone, Default)]
pub struct Limits(Arc<Mutex<Counts>>);

/// One admitted connection; its slot is given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    limits: Limits,
    pid: i32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ctl,
    /// A `ctl` slot plus a reserved `run` slot (an attach with a descriptor under way).
    Reserving,
    Run,
}

impl Limits {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from process `pid` into the `ctl` pool, or says why not.
    pub fn admit(&self, pid: i32) -> Result<Ticket, String> {
        let mut c = self.counts();
        let mine = c.per_pid.get(&pid).copied().unwrap_or(0);
        if mine >= MAX_PER_PROCESS {
            return Err(format!(
                "too many connections from process {pid} ({MAX_PER_PROCESS} open): close some and retry"
            ));
        }
        if c.ctl >= MAX_CTL {
            return Err(format!(
                "too many connections ({MAX_CTL} ctl clients connected): retry shortly"
            ));
        }
        c.ctl += 1;
        *c.per_pid.entry(pid).or_insert(0) += 1;
        Ok(Ticket {
            limits: self.clone(),
            pid,
            kind: Kind::Ctl,
        })
    }
}

impl Ticket {
    /// Reserves a `run` slot before an attach that would make this a run connection.
    pub fn reserve_run(&mut self) -> Result<(), String> {
        if self.kind != Kind::Ctl {
            return Ok(());
        }
        let mut c = self.limits.counts();
        if c.run >= MAX_RUN {
            return Err(format!(
                "too many `vswitch run` containers connected (at most {MAX_RUN})"
            ));
        }
        c.run += 1;
        self.kind = Kind::Reserving;
        Ok(())
    }

    /// After the attach: a run connection leaves the `ctl` pool (`became_run`), or
    /// gives its reservation back.
    pub fn settle(&mut self, became_run: bool) {
        if self.kind != Kind::Reserving {
            return;
        }
        let mut c = self.limits.counts();
        if became_run {
            c.ctl = c.ctl.saturating_sub(1);
            release_pid(&mut c, self.pid);
            self.kind = Kind::Run;
        } else {
            c.run = c.run.saturating_sub(1);
            self.kind = Kind::Ctl;
        }
    }

    pub fn is_run(&self) -> bool {
        self.kind == Kind::Run
    }
}

fn release_pid(c: &mut Counts, pid: i32) {
    if let Some(n) = c.per_pid.get_mut(&pid) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            c.per_pid.remove(&pid);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.limits.counts();
        if matches!(self.kind, Kind::Run | Kind::Reserving) {
            c.run = c.run.saturating_sub(1);
        }
        if matches!(self.kind, Kind::Ctl | Kind::Reserving) {
            c.ctl = c.ctl.saturating_sub(1);
            release_pid(&mut c, self.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_separate_and_slots_come_back() {
        let l = Limits::default();
        let mut mine: Vec<Ticket> = (0..MAX_PER_PROCESS).map(|_| l.admit(7).unwrap()).collect();
        assert!(l.admit(7).unwrap_err().contains("process 7"));
        // Another process still gets in.
        let other = l.admit(8).unwrap();
        // Run connections leave the ctl pool (and the process's share).
        for t in mine.iter_mut().take(4) {
            t.reserve_run().unwrap();
            t.settle(true);
            assert!(t.is_run());
        }
        let more: Vec<Ticket> = (0..4).map(|_| l.admit(7).unwrap()).collect();
        assert!(l.admit(7).is_err());
        // A failed attach gives the reservation back.
        let mut t = l.admit(9).unwrap();
        t.reserve_run().unwrap();
        t.settle(false);
        assert!(!t.is_run());
        drop((mine, more, other, t));
        let c = l.counts();
        assert_eq!((c.ctl, c.run, c.per_pid.len()), (0, 0, 0));
    }

    #[test]
    fn the_ctl_pool_is_bounded() {
        let l = Limits::default();
        let all: Vec<Ticket> = (0..MAX_CTL as i32).map(|i| l.admit(i).unwrap()).collect();
        assert!(l.admit(-1).unwrap_err().contains("too many connections"));
        drop(all);
        assert!(l.admit(-1).is_ok());
    }
}
