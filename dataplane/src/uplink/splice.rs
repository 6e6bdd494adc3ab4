//! Loopback clients of published ports, spliced: no frames at all.
//!
//! A client on the host's loopback (127.0.0.1 or ::1) reaches a published port; the
//! container sees it coming from its network's gateway of the client's family (Linux
//! drops 127/8 and ::1 sources arriving on eth0). On
//! the frame path every byte then crosses smoltcp, the gateway ring, a worker and the
//! container's TAP. Spliced, the daemon opens a socket inside the container's
//! namespace, bound with `IP_TRANSPARENT` (IPv6: `IPV6_TRANSPARENT`) to
//! GATEWAY:CLIENT_PORT (what the frame path shows the container), connects it to
//! CONTAINER:PORT of the same family, and moves bytes between the
//! two sockets with `splice(2)` through two pipes, as pasta does. The container's
//! replies are kept on its loopback by one policy rule per published container port
//! ([`rtnl`](crate::rtnl)), installed with the first spliced connection.
//!
//! Where the namespace cannot be entered, the rule not installed or the socket not
//! bound (no privileges over the namespace, a port taken inside), the connection takes
//! the frame path instead; the container sees the same either way.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::netns::NetnsError;

/// Bytes a pipe of a spliced connection holds, per direction.
pub const PIPE_SIZE: usize = 1 << 20;

/// Why a connection could not be spliced (it then takes the frame path).
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("cannot enter the container's network namespace: {0}")]
    Netns(#[from] NetnsError),
    #[error("cannot route the gateway back to the loopback inside the container: {0}")]
    Rules(#[source] io::Error),
    #[error("cannot open a socket inside the container's namespace: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot open the container's network namespace {}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("cannot make the pipes of a spliced connection (out of descriptors?): {0}")]
    Pipes(#[source] io::Error),
    #[error("cannot register a spliced connection's sockets on the poll: {0}")]
    Poll(#[source] io::Error),
    #[error("no socket ready inside the container's namespace (out of descriptors?)")]
    NoSocket,
    #[error("the container shares the daemon's own network namespace: not spliced")]
    OwnNamespace,
    #[error("the port has no network namespace to splice into (a VM or a bare TAP)")]
    NoNamespace,
    #[error("the splice helper: {stage}{}", errno.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Helper {
        stage: super::splice_helper::JoinStage,
        errno: Option<io::Error>,
    },
}

/// Where a container's network namespace is, for splicing its published ports.
#[derive(Debug)]
pub enum NetnsRef {
    /// Opened when the port was published.
    Open(OwnedFd),
    /// A path opened with the first loopback client: an engine may name a namespace
    /// before it exists (Docker asks for a container's published ports before it binds
    /// the sandbox's namespace at the container's start).
    Path(std::path::PathBuf),
}

/// What a [`NetnsRef`] gives when a client comes.
pub(crate) enum Resolved {
    Ready(OwnedFd),
    /// The path does not exist yet: kept for the next client.
    NotYet(NetnsRef),
    Failed(SpliceError),
}

impl NetnsRef {
    pub(crate) fn resolve(self) -> Resolved {
        match self {
            NetnsRef::Open(fd) => Resolved::Ready(fd),
            NetnsRef::Path(path) => match std::fs::File::open(&path) {
                Ok(f) => Resolved::Ready(f.into()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Resolved::NotYet(NetnsRef::Path(path))
                }
                Err(source) => Resolved::Failed(SpliceError::Open { path, source }),
            },
        }
    }
}

/// Whether `netns` is the network namespace the daemon itself runs in. A container's
/// return rule is never installed there: it would route the host's own traffic.
fn is_own_namespace(netns: BorrowedFd<'_>) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/net")?;
    // SAFETY: fstat on a descriptor we borrow, into a zeroed stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the descriptor stays valid for the call.
    check(unsafe { libc::fstat(netns.as_raw_fd(), &mut st) })?;
    Ok(st.st_dev == own.dev() && st.st_ino == own.ino())
}

pub(crate) fn last_error() -> io::Error {
    io::Error::last_os_error()
}

pub(crate) fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(last_error()) } else { Ok(r) }
}

/// A TCP socket of the calling thread's namespace, non-blocking, IPv6 when `v6`.
fn tcp_socket(v6: bool) -> io::Result<OwnedFd> {
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the descriptor is owned at once below.
    let fd = check(unsafe { libc::socket(family, kind, 0) })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets an integer socket option.
pub(crate) fn set_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v lives across the call and len is its size.
    check(unsafe { libc::setsockopt(fd, level, opt, (&raw const v).cast(), len) }).map(|_| ())
}

/// A socket address as the kernel takes it, of either family.
enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    fn of(a: SocketAddr) -> RawAddr {
        match a {
            SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            }),
        }
    }

    /// The address and its length, for bind(2) and connect(2).
    fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            RawAddr::V4(a) => (
                (&raw const *a).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawAddr::V6(a) => (
                (&raw const *a).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// Binds `fd` (an [`inner_socket`]: transparent, so any address will do) to `from`
/// (another port of it where that one is taken) and starts connecting to `to`.
fn bind_and_connect(fd: &OwnedFd, from: SocketAddr, to: SocketAddr) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let bind = |a: SocketAddr| {
        let f = RawAddr::of(a);
        let (ptr, len) = f.as_ptr();
        // SAFETY: ptr points at a valid socket address of `len` bytes, alive in `f`.
        check(unsafe { libc::bind(raw, ptr, len) })
    };
    // The client's port is taken inside (a socket of the container's own, a connection
    // still in TIME-WAIT): any other port of the gateway will do.
    if let Err(e) = bind(from) {
        if e.raw_os_error() != Some(libc::EADDRINUSE) {
            return Err(e);
        }
        bind(SocketAddr::new(from.ip(), 0))?;
    }
    let t = RawAddr::of(to);
    let (ptr, len) = t.as_ptr();
    // SAFETY: ptr points at a valid socket address of `len` bytes, alive in `t`.
    match check(unsafe { libc::connect(raw, ptr, len) }) {
        Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => Err(e),
        _ => Ok(()),
    }
}

/// Sockets made ahead inside a container's namespace, so a connection costs no thread
/// and no namespace switch: something living in the namespace keeps [`POOL_DEPTH`]
/// fresh sockets queued; it ends when the pool is dropped (the port unpublished). That
/// is a thread of the daemon where the daemon may enter the namespace, else a process
/// of the splice helper ([`splice_helper`](super::splice_helper)) in the container's
/// user and network namespaces.
pub struct SocketPool {
    source: PoolSource,
    spare: Option<OwnedFd>,
}

enum PoolSource {
    Thread(ThreadPool),
    Helper(super::splice_helper::HelperPool),
}

/// A daemon thread in the namespace, handing sockets over a channel.
struct ThreadPool {
    rx: std::sync::mpsc::Receiver<OwnedFd>,
    /// Set before the pool is dropped when the port falls back to frames: the thread
    /// then removes the return rule.
    abandon: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Signalled by the thread when it has ended (the rule removed where asked).
    done: std::sync::mpsc::Receiver<()>,
}

/// Sockets a pool holds ready.
pub const POOL_DEPTH: usize = 4;

/// How long a spliced connection's connect inside the container may take before the
/// client is handed to the frame path (a namespace whose loopback is down, a firewall
/// inside dropping it). A local connect that is answered at all takes microseconds.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long removing the return rule may hold the caller when a port falls back.
const ABANDON_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether an inner connect that failed sends its client to the frame path: anything
/// but the container's own answer (a refusal or a reset, which the frame path would
/// get as well).
pub fn falls_back(e: &io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ECONNRESET)
    )
}

/// What a pool's maker is told: the container's end and the gateway it sees, of one
/// family (the pool's sockets are of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolTarget {
    pub container: SocketAddr,
    pub gateway: IpAddr,
}

impl SocketPool {
    /// Starts the pool in `netns`: its maker installs the return rule for
    /// CONTAINER:PORT → GATEWAY first. Waits for the first socket, so a namespace that
    /// cannot be entered or routed is known at once.
    pub fn start(
        netns: BorrowedFd<'_>,
        container: SocketAddr,
        gateway: IpAddr,
    ) -> Result<SocketPool, SpliceError> {
        if is_own_namespace(netns).map_err(SpliceError::Socket)? {
            return Err(SpliceError::OwnNamespace);
        }
        let to = PoolTarget { container, gateway };
        if super::splice_helper::running() {
            let (pool, first) = super::splice_helper::HelperPool::start(netns, to)?;
            return Ok(SocketPool {
                source: PoolSource::Helper(pool),
                spare: Some(first),
            });
        }
        let (pool, first) = ThreadPool::start(netns, to)?;
        Ok(SocketPool {
            source: PoolSource::Thread(pool),
            spare: Some(first),
        })
    }

    /// A fresh socket of the namespace (waits a moment for one when the queue ran dry).
    pub fn take(&mut self) -> Result<OwnedFd, SpliceError> {
        if let Some(s) = self.spare.take() {
            return Ok(s);
        }
        match &mut self.source {
            PoolSource::Thread(t) => t.take(),
            PoolSource::Helper(h) => h.take(),
        }
    }

    /// Ends the pool and removes the return rule (waiting briefly for it), so the
    /// container's replies to the gateway leave by its interface again: the port takes
    /// frames from now on.
    pub fn abandon(self) {
        match self.source {
            PoolSource::Thread(t) => t.abandon(),
            PoolSource::Helper(h) => h.abandon(),
        }
    }
}

impl ThreadPool {
    fn start(netns: BorrowedFd<'_>, to: PoolTarget) -> Result<(ThreadPool, OwnedFd), SpliceError> {
        use std::sync::atomic::AtomicBool;
        let ns = netns.try_clone_to_owned().map_err(SpliceError::Socket)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(POOL_DEPTH);
        let (first_tx, first_rx) = std::sync::mpsc::sync_channel(1);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let abandon = std::sync::Arc::new(AtomicBool::new(false));
        let flag = abandon.clone();
        std::thread::Builder::new()
            .name("vswitch-splice".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                fill(ns, to, first_tx, tx);
                if flag.load(std::sync::atomic::Ordering::Acquire) {
                    let c = to.container;
                    let _ = crate::rtnl::remove_splice_rule(c.ip(), to.gateway, c.port());
                }
                let _ = done_tx.send(());
            })
            .map_err(|source| SpliceError::Netns(NetnsError::Thread { source }))?;
        let first = first_rx
            .recv()
            .map_err(|_| SpliceError::Netns(NetnsError::Panicked))??;
        Ok((ThreadPool { rx, abandon, done }, first))
    }

    fn take(&mut self) -> Result<OwnedFd, SpliceError> {
        match self.rx.try_recv() {
            Ok(s) => Ok(s),
            Err(_) => self
                .rx
                .recv_timeout(std::time::Duration::from_millis(20))
                .map_err(|_| SpliceError::NoSocket),
        }
    }

    fn abandon(self) {
        self.abandon
            .store(true, std::sync::atomic::Ordering::Release);
        let ThreadPool { rx, done, .. } = self;
        drop(rx);
        let _ = done.recv_timeout(ABANDON_WAIT);
    }
}

/// A TCP socket of the calling thread's namespace made ready for a spliced connection,
/// IPv6 when `v6`: `IP_TRANSPARENT` or `IPV6_TRANSPARENT` (it binds to the gateway's
/// address, not one of the namespace's), `SO_REUSEADDR`, `TCP_NODELAY`. Set where the
/// socket is made, by a thread or process privileged in the namespace, so the daemon
/// needs no privilege to bind it.
pub(super) fn inner_socket(v6: bool) -> io::Result<OwnedFd> {
    let fd = tcp_socket(v6)?;
    let raw = fd.as_raw_fd();
    if v6 {
        set_int(raw, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?;
    } else {
        set_int(raw, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
    }
    set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    Ok(fd)
}

/// The pool's thread: enters the namespace, installs the rule, then makes sockets
/// until the pool is gone. The first outcome goes to `first`.
fn fill(
    ns: OwnedFd,
    to: PoolTarget,
    first: std::sync::mpsc::SyncSender<Result<OwnedFd, SpliceError>>,
    rest: std::sync::mpsc::SyncSender<OwnedFd>,
) {
    // SAFETY: setns on a valid descriptor; it changes only this thread's network
    // namespace, and this thread serves only that namespace until it ends.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let source = last_error();
        let _ = first.send(Err(SpliceError::Netns(NetnsError::Enter { source })));
        return;
    }
    drop(ns);
    let c = to.container;
    let routed = crate::rtnl::splice_rules(c.ip(), to.gateway, c.port());
    let made = routed
        .map_err(SpliceError::Rules)
        .and_then(|()| inner_socket(c.is_ipv6()).map_err(SpliceError::Socket));
    let ok = made.is_ok();
    if first.send(made).is_err() || !ok {
        return;
    }
    loop {
        match inner_socket(c.is_ipv6()) {
            Ok(s) => {
                if rest.send(s).is_err() {
                    return;
                }
            }
            // Out of descriptors: try again later (the pool waits only briefly).
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// Binds a socket of the container's namespace to `from` and starts connecting it to
/// `to` (both of the socket's family).
pub fn connect(fd: OwnedFd, from: SocketAddr, to: SocketAddr) -> io::Result<OwnedFd> {
    bind_and_connect(&fd, from, to)?;
    Ok(fd)
}

/// Where a spliced connection stands after a pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    /// Still connecting to the container.
    Connecting,
    /// Open; whether bytes moved.
    Open(bool),
    /// Both directions ended.
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A namespace named before it exists is kept for the next client, then opened
    /// once it is there; an opened one is given as it is.
    #[test]
    fn a_namespace_path_is_opened_once_it_exists() {
        let dir = std::env::temp_dir().join(format!("vsw-nsref-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("netns");
        let kept = match NetnsRef::Path(path.clone()).resolve() {
            Resolved::NotYet(r) => r,
            _ => panic!("a missing path must be kept for later"),
        };
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(kept.resolve(), Resolved::Ready(_)));
        let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
        assert!(matches!(NetnsRef::Open(fd).resolve(), Resolved::Ready(_)));
        let under_a_file = path.join("x");
        assert!(matches!(
            NetnsRef::Path(under_a_file).resolve(),
            Resolved::Failed(SpliceError::Open { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A "container" in the daemon's own namespace is never spliced: its return rule
    /// would route the host's own traffic.
    #[test]
    fn the_daemons_own_namespace_is_refused() {
        let own = std::fs::File::open("/proc/self/ns/net").unwrap();
        let to = SocketAddr::from(([172, 17, 0, 2], 80));
        let r = SocketPool::start(own.as_fd(), to, IpAddr::from([172, 17, 0, 1]));
        assert!(matches!(r, Err(SpliceError::OwnNamespace)), "{:?}", r.err());
        // The check itself: the own namespace is recognised, another descriptor not.
        assert!(is_own_namespace(own.as_fd()).unwrap());
        let other = std::fs::File::open("/proc/self/ns/user").unwrap();
        assert!(!is_own_namespace(other.as_fd()).unwrap());
    }
}
