//! The CPU's retired-instruction counter for the calling thread (`perf_event_open`),
//! so that `vswitch bench --instructions` measures a change without the host's noise:
//! instructions per frame move by the work done, not by what else the machine runs.
//!
//! Many virtual machines do not expose the counters; opening one then fails with the
//! kernel's reason, which the bench reports instead of a figure (callgrind's counts,
//! as docs/benchmarks.md shows, are the fallback there).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The first 64 bytes of `struct perf_event_attr` (PERF_ATTR_SIZE_VER0): all a
/// counting (not sampling) event needs; the kernel reads `size` to know the layout.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit 0 disabled, bit 5 exclude_kernel, bit 6 exclude_hv.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
const FLAG_DISABLED: u64 = 1;
const FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
const FLAG_EXCLUDE_HV: u64 = 1 << 6;
const IOC_ENABLE: libc::c_ulong = 0x2400;
const IOC_DISABLE: libc::c_ulong = 0x2401;
const IOC_RESET: libc::c_ulong = 0x2403;

/// Counts the user-space instructions the calling thread retires while enabled.
pub struct Instructions {
    fd: OwnedFd,
}

impl Instructions {
    /// Opens a counter for this thread, stopped at zero; the error says why the CPU's
    /// counters cannot be read here.
    pub fn open() -> Result<Instructions, String> {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_HARDWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_HW_INSTRUCTIONS,
            flags: FLAG_DISABLED | FLAG_EXCLUDE_KERNEL | FLAG_EXCLUDE_HV,
            ..Default::default()
        };
        // SAFETY: `attr` is a valid perf_event_attr of the size it states, alive for the
        // call; pid 0 and cpu -1 mean this thread on any CPU; no group, no flags.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                0 as libc::pid_t,
                -1 as libc::c_int,
                -1 as libc::c_int,
                0 as libc::c_ulong,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "the CPU's instruction counter cannot be opened here (perf_event_open: {e})"
            ));
        }
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        Ok(Instructions { fd })
    }

    fn ioctl(&self, request: libc::c_ulong) {
        // SAFETY: a perf event descriptor of ours; these requests take no argument.
        unsafe {
            libc::ioctl(self.fd.as_raw_fd(), request as _, 0);
        }
    }

    /// Resets the count to zero and starts counting.
    pub fn start(&self) {
        self.ioctl(IOC_RESET);
        self.ioctl(IOC_ENABLE);
    }

    /// Stops counting and returns the instructions since [`Instructions::start`].
    pub fn stop(&self) -> u64 {
        self.ioctl(IOC_DISABLE);
        let mut v = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `v`, which is 8 bytes long.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), v.as_mut_ptr().cast(), v.len()) };
        if n == 8 { u64::from_ne_bytes(v) } else { 0 }
    }
}

/// Starts a counter on this thread when `want`; `None` (and the reason in `why`) when the
/// counters are not wanted or cannot be read.
pub fn start_if(want: bool, why: &mut Option<String>) -> Option<Instructions> {
    if !want {
        return None;
    }
    match Instructions::open() {
        Ok(c) => {
            c.start();
            Some(c)
        }
        Err(e) => {
            *why = Some(e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attribute_is_the_kernels_first_published_size() {
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 64);
    }

    /// Either the counter works and counts a loop's instructions, or it says why not.
    #[test]
    fn a_counter_counts_or_says_why_not() {
        match Instructions::open() {
            Ok(c) => {
                c.start();
                let mut x = 0u64;
                for i in 0..100_000u64 {
                    x = std::hint::black_box(x.wrapping_add(i));
                }
                let n = c.stop();
                assert!(n >= 100_000, "{n} instructions for 100000 additions");
            }
            Err(e) => assert!(e.contains("perf_event_open"), "{e}"),
        }
    }
}
