//! `vswitch daemon`: parses the options, starts the dataplane, serves the socket.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dataplane::uplink::quota::{self, UplinkLimits};

use crate::cli::{CliError, DaemonArgs};
use crate::daemon::{self, Daemon, DaemonConfig};

fn parse_upstream(s: &str) -> Result<SocketAddr, CliError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            CliError::Usage(format!(
                "invalid --upstream-dns {s:?}: expected ADDR or ADDR:PORT"
            ))
        })
}

fn range(opt: &str, v: u64, lo: u64, hi: u64) -> Result<(), CliError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{opt} {v} is out of range: use {lo} to {hi}"
        )))
    }
}

pub fn run(a: DaemonArgs) -> Result<(), CliError> {
    let metrics = a.metrics;
    crate::logging::init(a.log_level.as_deref());
    let pools = pools(&a.default_address_pool)?;
    let cfg = DaemonConfig {
        pools,
        ..config(a)?
    };
    start_splice_helper();
    install_panic_exit();
    let listener = daemon::bind(&cfg.socket)?;
    let metrics = metrics
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .map_err(|e| CliError::Usage(format!("--metrics {addr}: cannot listen there: {e}")))
        })
        .transpose()?;
    let socket = cfg.socket.clone();
    install_signal_exit(socket.clone());
    let backend = crate::tap_backend::backend(cfg.offload, cfg.kernel_names());
    let d = Daemon::start(cfg, backend)?;
    eprintln!("vswitch: daemon listening on {}", socket.display());
    if let Some(m) = &metrics {
        eprintln!(
            "vswitch: metrics on http://{}/metrics",
            m.local_addr().map_err(|e| CliError::Usage(e.to_string()))?
        );
    }
    daemon::serve_with_metrics(d, listener, metrics)?;
    Ok(())
}

/// Without root, spliced published ports need the splice helper (it joins the
/// containers' user namespaces, which only a single-threaded process may): forked here,
/// before any thread starts. Where it cannot start, loopback clients take frames.
fn start_splice_helper() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return;
    }
    if let Err(e) = dataplane::uplink::splice_helper::start() {
        eprintln!("vswitch: loopback clients of published ports take frames: {e}");
    }
}

/// `--default-mtu`, checked: 68 to 65520, and 1280 at least for the IPv6 of `--ipv6`.
fn default_mtu(mtu: Option<u32>, ipv6: bool) -> Result<Option<u16>, CliError> {
    match mtu {
        Some(m) if !(68..=65520).contains(&m) => Err(CliError::Usage(format!(
            "--default-mtu {m} is out of range: use 68 to 65520"
        ))),
        Some(m) if ipv6 && m < crate::state::IPV6_MIN_MTU => Err(CliError::Usage(format!(
            "--default-mtu {m} is too small for --ipv6: use 1280 or more"
        ))),
        m => Ok(m.map(|m| m as u16)),
    }
}

/// Whether containers get the kernel path: as asked, else when the daemon is root (in
/// its namespace: a rootless daemon in a user namespace of its own is too, and gets it
/// for the containers whose namespaces that user namespace owns).
fn kernel_path(a: &DaemonArgs) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    a.kernel_path || (root && !a.no_kernel_path)
}

/// The daemon's configuration from its flags, each checked.
fn config(a: DaemonArgs) -> Result<DaemonConfig, CliError> {
    if !(1..=64).contains(&a.workers) {
        return Err(CliError::Usage(format!(
            "--workers {} is out of range: use 1 to 64",
            a.workers
        )));
    }
    let bip = a
        .bip
        .as_deref()
        .map(|b| {
            b.parse()
                .map_err(|e: crate::net::CidrError| CliError::Usage(format!("--bip: {e}")))
        })
        .transpose()?;
    let fixed_v6 = a
        .fixed_cidr_v6
        .as_deref()
        .map(|b| {
            b.parse().map_err(|e: crate::net::Cidr6Error| {
                CliError::Usage(format!("--fixed-cidr-v6: {e}"))
            })
        })
        .transpose()?;
    let default_mtu = default_mtu(a.default_mtu, a.ipv6)?;
    let upstream_dns = a
        .upstream_dns
        .iter()
        .map(|s| parse_upstream(s))
        .collect::<Result<Vec<_>, _>>()?;
    range("--fdb-aging", u64::from(a.fdb_aging), 1, 1_000_000)?;
    range("--mac-limit", u64::from(a.mac_limit), 1, 1 << 22)?;
    range("--fdb-limit", u64::from(a.fdb_limit), 16, 1 << 22)?;
    range("--max-flows", a.max_flows as u64, 16, 1 << 22)?;
    let uplink = uplink_limits(&a)?;
    if let Some(n) = a.max_flows_per_container {
        range("--max-flows-per-container", n as u64, 1, a.max_flows as u64)?;
    }
    range(
        "--icmp-errors-per-sec",
        u64::from(a.icmp_errors_per_sec),
        1,
        100_000,
    )?;
    range(
        "--gateway-queue",
        a.gateway_queue as u64,
        dataplane::fair::QUANTUM as u64,
        1_000_000,
    )?;
    Ok(DaemonConfig {
        workers: a.workers,
        upstream_dns,
        bip,
        bridge_ipv6: a.ipv6.then_some(fixed_v6),
        default_mtu,
        offload: !a.no_offload,
        busy_poll: a.busy_poll,
        kernel_path: kernel_path(&a),
        fdb_aging: a.fdb_aging,
        mac_limit: a.mac_limit,
        fdb_limit: a.fdb_limit,
        max_flows: a.max_flows,
        bridge_host_loopback: a.host_loopback,
        uplink,
        flows_per_container: a.max_flows_per_container.unwrap_or(0),
        icmp_errors_per_sec: a.icmp_errors_per_sec,
        gateway_queue: a.gateway_queue,
        ..DaemonConfig::new(
            a.socket.unwrap_or_else(crate::paths::default_socket),
            a.state_dir.unwrap_or_else(crate::paths::default_state_dir),
        )
    })
}

/// `--default-address-pool` values.
fn pools(v: &[String]) -> Result<Vec<crate::state::AddressPool>, CliError> {
    (v.iter())
        .map(|s| s.parse::<crate::state::AddressPool>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// The socket uplink's limits from the options, its descriptor budget from the
/// process's `RLIMIT_NOFILE` (raised to the hard limit first).
fn uplink_limits(a: &DaemonArgs) -> Result<UplinkLimits, CliError> {
    let counts = [
        ("--uplink-max-tcp", a.uplink_max_tcp),
        (
            "--uplink-max-tcp-per-container",
            a.uplink_max_tcp_per_container,
        ),
        ("--uplink-max-udp", a.uplink_max_udp),
        (
            "--uplink-max-udp-per-container",
            a.uplink_max_udp_per_container,
        ),
        ("--uplink-max-ping", a.uplink_max_ping),
        (
            "--uplink-max-ping-per-container",
            a.uplink_max_ping_per_container,
        ),
        ("--uplink-max-dns", a.uplink_max_dns),
        (
            "--uplink-max-dns-per-container",
            a.uplink_max_dns_per_container,
        ),
    ];
    for (opt, v) in counts {
        range(opt, v as u64, 1, 1 << 20)?;
    }
    let day = 24 * 3600;
    range(
        "--uplink-tcp-handshake-timeout",
        a.uplink_tcp_handshake_timeout,
        1,
        day,
    )?;
    range(
        "--uplink-tcp-idle-timeout",
        a.uplink_tcp_idle_timeout,
        1,
        30 * day,
    )?;
    let nofile = quota::raise_nofile().unwrap_or(1024);
    let fds = quota::fd_budget(nofile);
    Ok(UplinkLimits {
        tcp_per_container: a.uplink_max_tcp_per_container,
        tcp_total: a.uplink_max_tcp,
        udp_per_container: a.uplink_max_udp_per_container,
        udp_total: a.uplink_max_udp,
        ping_per_container: a.uplink_max_ping_per_container,
        ping_total: a.uplink_max_ping,
        dns_per_container: a.uplink_max_dns_per_container,
        dns_total: a.uplink_max_dns,
        fds,
        tcp_handshake: Duration::from_secs(a.uplink_tcp_handshake_timeout),
        tcp_idle: Duration::from_secs(a.uplink_tcp_idle_timeout),
    })
}

/// On SIGTERM or SIGINT: remove the socket and exit. Everything else is already safe on
/// disk (state saved after each change, TAPs persistent), so exiting at once is a clean
/// stop, as a kill -9 is a recoverable one.
fn install_signal_exit(socket: std::path::PathBuf) {
    // SAFETY: blocking the signals in this (the main) thread before any other thread
    // starts makes every later thread inherit the mask; the waiter thread takes them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let _ = std::thread::Builder::new()
            .name("vswitch-signals".into())
            .spawn(move || {
                let mut sig = 0;
                libc::sigwait(&set, &mut sig);
                let _ = std::fs::remove_file(&socket);
                std::process::exit(0);
            });
    }
}

/// The exit status after a panic (EX_SOFTWARE): a supervisor (`Restart=on-failure`)
/// starts the daemon again, which restores the saved state as after a `kill -9`.
pub const PANIC_EXIT: i32 = 70;

/// Crash-only: a panic on any thread prints one line and ends the whole process at
/// once, rather than leaving it running with a thread missing.
fn install_panic_exit() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let line = format!(
            "vswitch: fatal: thread {} panicked{at}: {}; exiting with status {PANIC_EXIT} (a restart restores the saved state)\n",
            thread.name().unwrap_or("unnamed"),
            msg.replace('\n', " ")
        );
        // One write(2), so lines of two panicking threads do not interleave.
        // SAFETY: writing a valid buffer to stderr, then ending the process without
        // running destructors or atexit handlers (other threads are mid-flight).
        unsafe {
            libc::write(2, line.as_ptr().cast(), line.len());
            libc::_exit(PANIC_EXIT);
        }
    }));
}
