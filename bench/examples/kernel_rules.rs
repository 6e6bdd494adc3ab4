//! What programming the kernel path costs: the netlink calls of
//! `dataplane::kernel::netlink` timed against the kernel, in a network namespace of the
//! process's own (gone when it exits; nothing else is touched).
//!
//! Run (root): `cargo run -p vswitch-bench --example kernel_rules -- [RULES] [RUNS]`
//!
//! Per run: a veth pair (both ends in the namespace), up, a clsact qdisc on one end,
//! RULES (1000) pair rules (two MACs and an IPv4 source, one priority each, as the
//! daemon would add for RULES learned pairs), one dump of their counters, their
//! removal one priority at a time, the pair's removal. Prints each step's time per call
//! (wall clock: label figures with the machine's load).

use dataplane::kernel::netlink::{ETH_P_IP, Redirect, Rtnl, U32Key};
use dataplane::netns::IfSocket;
use dataplane::wire::MacAddr;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn per_call(d: Duration, n: u32) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6 / f64::from(n.max(1)))
}

fn run(rules: u16) -> Res<()> {
    let mut nl = Rtnl::open()?;
    let own = std::fs::File::open("/proc/thread-self/ns/net")?;
    let mac = MacAddr([0x02, 0x6b, 0, 0, 0, 1]);
    let t = Instant::now();
    nl.create_veth("kr0", "kr1", own.as_fd(), mac, 1500)?;
    let veth = t.elapsed();
    let s = IfSocket::new()?;
    s.set_up("kr0", true)?;
    s.set_up("kr1", true)?;
    let (from, to) = (s.index("kr0")?.unwrap_or(0), s.index("kr1")?.unwrap_or(0));
    let t = Instant::now();
    nl.replace_clsact(from)?;
    let clsact = t.elapsed();
    let t = Instant::now();
    for p in 0..rules {
        let mut keys = U32Key::macs(mac, MacAddr([0x02, 0x6b, 0, 0, 0, 2])).to_vec();
        let [hi, lo] = p.to_be_bytes();
        keys.push(U32Key::ipv4_src(Ipv4Addr::new(10, 107, hi, lo)));
        let r = Redirect {
            ifindex: from,
            prio: 1000 + p,
            protocol: ETH_P_IP,
            keys: &keys,
            to,
        };
        nl.add_redirect(&r)?;
    }
    let add = t.elapsed();
    let t = Instant::now();
    let counted = nl.ingress_counters(from)?.len();
    let dump = t.elapsed();
    let t = Instant::now();
    for p in 0..rules {
        nl.delete_filter(from, 1000 + p, ETH_P_IP)?;
    }
    let del = t.elapsed();
    let t = Instant::now();
    nl.delete_link("kr0")?;
    let unlink = t.elapsed();
    let n = u32::from(rules);
    println!(
        "create_veth {}  replace_clsact {}  add_redirect {}  ingress_counters ({counted} priorities) {:.2} ms  delete_filter {}  delete_link {}",
        per_call(veth, 1),
        per_call(clsact, 1),
        per_call(add, n),
        dump.as_secs_f64() * 1e3,
        per_call(del, n),
        per_call(unlink, 1),
    );
    Ok(())
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let rules: u16 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let runs: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    // SAFETY: unshare on this (so far single) thread: the process leaves the host's
    // network namespace for a new one, which goes when it exits.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare: {} (run as root)", std::io::Error::last_os_error()).into());
    }
    println!(
        "# {rules} rules, load {}",
        std::fs::read_to_string("/proc/loadavg")?
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    for _ in 0..runs {
        run(rules)?;
    }
    Ok(())
}
