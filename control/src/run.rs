//! `vswitch run`: a command in a fresh network namespace attached to a network.
//!
//! As root: new network, mount and UTS namespaces. As any other user: a user namespace
//! too, where the user is root, so nothing here needs privileges (only a
//! `/dev/net/tun` the user may open, mode 0666 on most distributions).
//!
//! Inside, the TAP `eth0` is created and its descriptor handed to the daemon over the
//! control socket (SCM_RIGHTS); the daemon answers with the address, MAC, MTU and
//! gateway, and eth0 is configured with them. `/etc/resolv.conf` (pointing at the
//! gateway) and `/etc/hosts` are bind-mounted over the host's in the private mount
//! namespace. Then the command runs as a child; this process stays to keep the
//! connection (the port lives as long as it), forward signals, re-attach when a
//! restarted daemon comes back, and exit with the command's status.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::api::{AttachReq, EndpointInfo, Hello, Request, SandboxInfo};
use crate::backend::IfConfig;
use crate::client::{Client, ClientError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{what}: {err}")]
    Sys { what: String, err: io::Error },
    #[error("{0}")]
    Usage(String),
    #[error("cannot run {0:?}: {1}")]
    Exec(String, io::Error),
}

fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> RunError {
    let what = what.into();
    move |err| RunError::Sys { what, err }
}

fn check(r: libc::c_int, what: &str) -> Result<(), RunError> {
    if r < 0 {
        Err(RunError::Sys {
            what: what.to_string(),
            err: io::Error::last_os_error(),
        })
    } else {
        Ok(())
    }
}

/// What `vswitch run` was asked.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub socket: PathBuf,
    pub network: String,
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<std::net::Ipv6Addr>,
    pub publish: Vec<String>,
    pub aliases: Vec<String>,
    /// `--dns`, `--dns-search`, `--dns-option`, `--hostname`, `--add-host`.
    pub dns: crate::state::DnsOpts,
    /// `-P` with the `--expose` ports.
    pub publish_all: bool,
    pub expose: Vec<String>,
    /// Bandwidth limits of its port.
    pub limits: crate::limit::PortLimits,
    pub command: Vec<String>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Enters new namespaces: network, mount, UTS, and a user namespace when not root
/// (mapping the caller to root inside).
fn unshare_all(with_net: bool) -> Result<(), RunError> {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS;
    if with_net {
        flags |= libc::CLONE_NEWNET;
    }
    let rootless = !is_root();
    if rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: unshare affects only this (single-threaded) process.
    let r = unsafe { libc::unshare(flags) };
    check(r, "cannot create namespaces (unshare)")?;
    if rootless {
        map_root(uid, gid)?;
    }
    Ok(())
}

fn map_root(uid: u32, gid: u32) -> Result<(), RunError> {
    std::fs::write("/proc/self/setgroups", "deny")
        .map_err(sys("cannot write /proc/self/setgroups"))?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))
        .map_err(sys("cannot write /proc/self/uid_map"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))
        .map_err(sys("cannot write /proc/self/gid_map"))?;
    Ok(())
}

fn cstr(s: &str) -> Result<CString, RunError> {
    CString::new(s).map_err(|_| RunError::Usage(format!("{s:?} contains a NUL byte")))
}

/// Makes the mount tree private and bind-mounts files over /etc/resolv.conf and
/// /etc/hosts (their contents given).
fn private_etc(resolv: Option<&str>, hosts: Option<&str>, hostname: &str) -> Result<(), RunError> {
    let root = cstr("/")?;
    // SAFETY: plain mount(2) calls with valid C strings; null for unused arguments.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    check(r, "cannot make mounts private")?;
    for (target, content) in [("/etc/resolv.conf", resolv), ("/etc/hosts", hosts)] {
        let Some(content) = content else { continue };
        let dir = std::env::temp_dir();
        let src = dir.join(format!(
            "vswitch-run-{}-{}",
            std::process::id(),
            target.replace('/', "_")
        ));
        std::fs::write(&src, content).map_err(sys(format!("cannot write {}", src.display())))?;
        let (s, t) = (cstr(&src.display().to_string())?, cstr(target)?);
        // SAFETY: as above.
        let r = unsafe {
            libc::mount(
                s.as_ptr(),
                t.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(&src);
        if r < 0 {
            return Err(RunError::Sys {
                what: format!("cannot bind-mount over {target}"),
                err: e,
            });
        }
    }
    let h = hostname.as_bytes();
    // SAFETY: sethostname reads `h.len()` bytes from `h`.
    unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) };
    Ok(())
}

/// Joins the namespaces of another container (`--network container:NAME`).
fn join(sandbox: &SandboxInfo) -> Result<(), RunError> {
    let open = |p: &str| -> Result<OwnedFd, RunError> {
        std::fs::File::open(p)
            .map(OwnedFd::from)
            .map_err(sys(format!("cannot open namespace {p}")))
    };
    let net = sandbox
        .netns
        .as_deref()
        .ok_or_else(|| RunError::Usage("that container has no network namespace to join".into()))?;
    let netfd = open(net)?;
    if !is_root() {
        let user = sandbox.userns.as_deref().ok_or_else(|| {
            RunError::Usage("that container has no user namespace to join".into())
        })?;
        let userfd = open(user)?;
        // SAFETY: setns on descriptors we own; this process is single-threaded.
        let r = unsafe { libc::setns(userfd.as_raw_fd(), libc::CLONE_NEWUSER) };
        check(r, "cannot join the container's user namespace")?;
    }
    // SAFETY: as above.
    let r = unsafe { libc::setns(netfd.as_raw_fd(), libc::CLONE_NEWNET) };
    check(r, "cannot join the container's network namespace")?;
    // SAFETY: unshare affects only this process.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) };
    check(r, "cannot create a mount namespace")?;
    Ok(())
}

/// The resolv.conf of a container: each gateway address its network has, when the
/// gateway answers DNS there.
fn resolv_for(ep: &EndpointInfo) -> Option<String> {
    if ep.dns != Some(true) || (ep.gateway.is_none() && ep.gateway6.is_none()) {
        return None;
    }
    Some(crate::net::resolv_conf(ep.gateway, ep.gateway6))
}

fn hosts_for(name: &str, ips: &[String]) -> String {
    let mut h = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for ip in ips {
        h.push_str(&format!("{ip}\t{name}\n"));
    }
    h
}

/// Starts the command as a child with the signal mask cleared; returns its pid.
fn spawn_child(cmd: &[String]) -> Result<libc::pid_t, RunError> {
    let prog = cmd
        .first()
        .ok_or_else(|| RunError::Usage("no command given after --".into()))?;
    let args: Vec<CString> = cmd.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // A pipe tells the parent whether exec failed (closed on exec by O_CLOEXEC).
    let mut p = [0; 2];
    // SAFETY: pipe2 fills two descriptors.
    let r = unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) };
    check(r, "cannot create a pipe")?;
    // SAFETY: the child only calls async-signal-safe functions before execvp.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(RunError::Sys {
            what: "cannot fork".into(),
            err: io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: in the child: async-signal-safe calls only, then exec or _exit.
        unsafe {
            libc::close(p[0]);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::execvp(argv[0], argv.as_ptr());
            let e = *libc::__errno_location();
            libc::write(p[1], (&e as *const i32).cast(), 4);
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copy of the write end; reading at most 4 bytes.
    unsafe { libc::close(p[1]) };
    let mut e = 0i32;
    // SAFETY: as above.
    let n = unsafe { libc::read(p[0], (&mut e as *mut i32).cast(), 4) };
    // SAFETY: closing the read end we own.
    unsafe { libc::close(p[0]) };
    if n == 4 {
        let mut st = 0;
        // SAFETY: reaping the failed child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        return Err(RunError::Exec(
            prog.clone(),
            io::Error::from_raw_os_error(e),
        ));
    }
    Ok(pid)
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set; blocks the signals for this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for the child, forwarding signals; calls `tick` about five times a second.
fn supervise(pid: libc::pid_t, set: &libc::sigset_t, mut tick: impl FnMut()) -> i32 {
    loop {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        // SAFETY: waiting on a signal set we built; info is plain data.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigtimedwait(set, &mut info, &ts)
        };
        if sig == libc::SIGTERM
            || sig == libc::SIGINT
            || sig == libc::SIGHUP
            || sig == libc::SIGQUIT
        {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, sig) };
        }
        let mut st = 0;
        // SAFETY: reaping our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(st) {
                return libc::WEXITSTATUS(st);
            }
            if libc::WIFSIGNALED(st) {
                return 128 + libc::WTERMSIG(st);
            }
        }
        tick();
    }
}

/// Runs `--network host` (no namespace) and `none` (loopback only).
fn run_plain(spec: &RunSpec, with_net: bool) -> Result<i32, RunError> {
    if with_net {
        unshare_all(true)?;
        crate::tap_backend::loopback_up().map_err(sys("cannot bring up loopback"))?;
        private_etc(None, Some(&hosts_for(&spec.name, &[])), &spec.name)?;
    }
    let set = block_signals();
    let pid = spawn_child(&spec.command)?;
    Ok(supervise(pid, &set, || {}))
}

/// Is the daemon's end of this connection gone?
fn hung_up(c: &Client) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a non-blocking peek into a one-byte buffer.
    let n = unsafe {
        libc::recv(
            c.stream().as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
}

pub fn run(spec: RunSpec) -> Result<i32, RunError> {
    if spec.command.is_empty() {
        return Err(RunError::Usage(
            "no command given: vswitch run ... -- CMD [ARGS...]".into(),
        ));
    }
    match spec.network.as_str() {
        "host" => return run_plain(&spec, false),
        "none" => return run_plain(&spec, true),
        _ => {}
    }
    let mut client = Client::connect(&spec.socket)?;
    if let Some(target) = spec.network.strip_prefix("container:") {
        return run_joined(&spec, client, target);
    }
    let hello: Hello = client.request(Request::Hello)?;
    let vnet = hello.offload;
    unshare_all(true)?;
    crate::tap_backend::loopback_up().map_err(sys("cannot bring up loopback"))?;
    let tap = crate::tap_backend::create_local_tap("eth0", vnet).map_err(sys(
        "cannot create the TAP eth0 (is /dev/net/tun readable and writable for this user?)",
    ))?;
    let req = AttachReq {
        network: spec.network.clone(),
        name: spec.name.clone(),
        ip: spec.ip,
        ip6: spec.ip6,
        aliases: spec.aliases.clone(),
        publish: spec.publish.clone(),
        dns_opts: spec.dns.clone(),
        publish_all: spec.publish_all,
        expose: spec.expose.clone(),
        limits: spec.limits,
        fd: true,
        run_pid: Some(std::process::id()),
        ..Default::default()
    };
    let ep: EndpointInfo =
        client.request_with_fds(Request::Attach(req.clone()), &[tap.as_fd().as_raw_fd()])?;
    let cfg = if_config(&ep)?;
    crate::tap_backend::configure_local(&cfg).map_err(sys("cannot configure eth0"))?;
    let hostname = ep.hostname.clone().unwrap_or_else(|| spec.name.clone());
    let mut hosts = hosts_for(&hostname, &endpoint_addrs(&ep));
    for h in &ep.extra_hosts {
        if let Some(ip) = h.ip {
            hosts.push_str(&format!("{ip}\t{}\n", h.name));
        }
    }
    let resolv = ep.resolv_conf.clone().or_else(|| resolv_for(&ep));
    private_etc(resolv.as_deref(), Some(&hosts), &hostname)?;
    let set = block_signals();
    let pid = spawn_child(&spec.command)?;
    let status = supervise_attached(&spec, client, &req, tap.as_fd().as_raw_fd(), pid, &set);
    Ok(status)
}

/// `--network container:NAME`: the command in that container's namespaces.
fn run_joined(spec: &RunSpec, mut client: Client, target: &str) -> Result<i32, RunError> {
    let sb: SandboxInfo = client.request(Request::Sandbox {
        name: target.to_string(),
    })?;
    join(&sb)?;
    private_etc(sb.resolv.as_deref(), None, &spec.name)?;
    drop(client);
    let set = block_signals();
    let pid = spawn_child(&spec.command)?;
    Ok(supervise(pid, &set, || {}))
}

/// Waits for the command, keeping the connection that holds the container; when the
/// daemon goes away, re-attaches (with the same TAP) once it is back. Detaches at the
/// end.
fn supervise_attached(
    spec: &RunSpec,
    client: Client,
    req: &AttachReq,
    tap: std::os::fd::RawFd,
    pid: libc::pid_t,
    set: &libc::sigset_t,
) -> i32 {
    let mut conn = Some(client);
    let mut next_try = Instant::now();
    let status = supervise(pid, set, || {
        if conn.as_ref().is_some_and(hung_up) {
            conn = None;
        }
        if conn.is_none() && Instant::now() >= next_try {
            next_try = Instant::now() + Duration::from_millis(500);
            if let Ok(mut c) = Client::connect(&spec.socket) {
                let r = AttachReq {
                    reattach: true,
                    ..req.clone()
                };
                if c.call_with_fds(Request::Attach(r), &[tap]).is_ok() {
                    conn = Some(c);
                }
            }
        }
    });
    if let Some(mut c) = conn {
        let _ = c.call(Request::Detach {
            name: spec.name.clone(),
            network: None,
        });
    }
    status
}

/// The endpoint's addresses, IPv4 first, as text.
fn endpoint_addrs(ep: &EndpointInfo) -> Vec<String> {
    let v4 = ep.ip.map(|a| a.to_string());
    v4.into_iter()
        .chain(ep.ip6.map(|a| a.to_string()))
        .collect()
}

fn if_config(ep: &EndpointInfo) -> Result<IfConfig, RunError> {
    let bad = || RunError::Usage(format!("the daemon's answer is incomplete: {ep:?}"));
    let addr = match ep.ip {
        Some(a) => Some((a, ep.prefix.ok_or_else(bad)?)),
        None => None,
    };
    let addr6 = match ep.ip6 {
        Some(a) => Some((a, ep.prefix6.ok_or_else(bad)?)),
        None => None,
    };
    if addr.is_none() && addr6.is_none() {
        return Err(bad());
    }
    Ok(IfConfig {
        ifname: "eth0".into(),
        mac: ep.mac,
        domain: 0,
        mtu: ep.mtu.ok_or_else(bad)?,
        addr,
        gateway: ep.gateway,
        addr6,
        gateway6: ep.gateway6,
    })
}

/// For tests: the resolv.conf a run container gets.
pub fn resolv_text(gateway: &str) -> String {
    format!("nameserver {gateway}\noptions ndots:0\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_and_hosts() {
        assert_eq!(
            resolv_text("172.18.0.1"),
            "nameserver 172.18.0.1\noptions ndots:0\n"
        );
        assert!(hosts_for("web", &["172.18.0.2".into()]).ends_with("172.18.0.2\tweb\n"));
    }

    #[test]
    fn if_config_from_answer() {
        let ep: EndpointInfo = serde_json::from_value(serde_json::json!({
            "name": "web", "port": "web", "network": "bridge", "ifname": "eth0",
            "ip": "172.18.0.2", "prefix": 16, "gateway": "172.18.0.1", "mtu": 1500,
            "dns": true, "mac": "02:42:ac:12:00:02", "aliases": [], "trunk": [],
            "port_security": true
        }))
        .unwrap();
        let c = if_config(&ep).unwrap();
        assert_eq!(c.addr, Some((Ipv4Addr::new(172, 18, 0, 2), 16)));
        assert_eq!(c.gateway, Some(Ipv4Addr::new(172, 18, 0, 1)));
        assert_eq!(
            resolv_for(&ep).as_deref(),
            Some(resolv_text("172.18.0.1").as_str())
        );
        assert!(
            resolv_for(&EndpointInfo {
                dns: Some(false),
                ..ep.clone()
            })
            .is_none()
        );
        // A dual-stack network: both addresses configured, both gateways named.
        let both = EndpointInfo {
            ip6: Some("fd00:1::2".parse().unwrap()),
            prefix6: Some(64),
            gateway6: Some("fd00:1::1".parse().unwrap()),
            ..ep.clone()
        };
        let c = if_config(&both).unwrap();
        assert_eq!(c.addr6, Some(("fd00:1::2".parse().unwrap(), 64)));
        assert_eq!(
            resolv_for(&both).as_deref(),
            Some("nameserver 172.18.0.1\nnameserver fd00:1::1\noptions ndots:0\n")
        );
        assert_eq!(endpoint_addrs(&both), ["172.18.0.2", "fd00:1::2"]);
        assert!(if_config(&EndpointInfo { mtu: None, ..ep }).is_err());
    }
}
