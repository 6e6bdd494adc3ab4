//! The splice helper: spliced published ports for a daemon without privileges.
//!
//! A spliced connection needs sockets made inside the container's network namespace
//! ([`splice`](super::splice)). A root daemon enters the namespace from a thread. An
//! unprivileged daemon may not: entering a network namespace needs `CAP_SYS_ADMIN` in
//! the user namespace the caller is in, which it has only after joining the user
//! namespace that owns the container's (allowed to that namespace's owner, the user
//! who made the container), and `setns(2)` refuses `CLONE_NEWUSER` to a process with
//! more than one thread. So the daemon forks a helper before it starts any thread
//! ([`start`]), a single-threaded process that holds nothing but its end of a
//! `SOCK_SEQPACKET` socket pair, and asks it for each spliced published port.
//!
//! **Requests** (daemon → helper): [`REQUEST_LEN`] bytes (magic `VSH2`, the family,
//! 4 or 6, container address and gateway in 16 bytes each, an IPv4 one in the first
//! 4, container port) with exactly two descriptors (`SCM_RIGHTS`): the
//! container's network namespace and the daemon's end of a fresh socket pair for that
//! port. Anything else is closed and ignored. The helper forks a *maker* per request
//! and goes back to waiting; it ends when the daemon's end closes (or the daemon dies:
//! `PR_SET_PDEATHSIG`).
//!
//! **A maker** checks that the descriptor is a network namespace, joins the user
//! namespace owning it (unless it is the helper's own), then the network namespace,
//! installs the return rule ([`rtnl::splice_rules`](crate::rtnl::splice_rules)) and
//! sends sockets over the pair: `S` with a socket ([`splice::inner_socket`]:
//! `IP_TRANSPARENT` set there, so the daemon binds it to the gateway's address without
//! privileges), or once `E`, a stage and an errno when it could not. It makes one more
//! socket per `C` (credit) the daemon sends, so at most [`POOL_DEPTH`] wait; `X` makes
//! it remove the rule (the port falls back to frames), answer `R` and end. It ends when
//! the pair closes (the port unpublished, the daemon gone).
//!
//! The kernel decides what a maker may join: a user namespace owned by the daemon's
//! user (what `vswitch run` and rootless engines make), nothing of another user's or
//! of the initial namespace. Where it cannot, the port takes frames, as before.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::splice::{POOL_DEPTH, PoolTarget, SpliceError, inner_socket};

/// A request's length and its first bytes.
pub const REQUEST_LEN: usize = 39;
const MAGIC: &[u8; 4] = b"VSH2";

/// `NS_GET_USERNS`, `NS_GET_NSTYPE` (linux/nsfs.h: `_IO(0xb7, 1)`, `_IO(0xb7, 3)`).
const NS_GET_USERNS: libc::c_ulong = 0xb701;
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// How long the daemon waits for a maker's first answer.
const FIRST_WAIT: Duration = Duration::from_secs(2);
/// How long `take` waits for a socket when none is queued.
const TAKE_WAIT: Duration = Duration::from_millis(20);
/// How long `abandon` waits for the rule's removal.
const ABANDON_WAIT: Duration = Duration::from_millis(200);

/// The daemon's end of the helper's socket (requests are sent whole under the lock).
static HELPER: OnceLock<Mutex<OwnedFd>> = OnceLock::new();

/// Why the helper could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(
        "the splice helper must be started before any thread ({0} running): start it first in main"
    )]
    Threads(usize),
    #[error("cannot start the splice helper: {0}")]
    Sys(#[source] io::Error),
    #[error("the splice helper is already running")]
    Started,
}

/// The step of joining a container's namespaces that failed (`E` answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinStage {
    #[error("the descriptor is not a network namespace")]
    NotNetns,
    #[error("cannot find the user namespace owning it")]
    Owner,
    #[error("cannot join its user namespace (not owned by the daemon's user?)")]
    UserNs,
    #[error("cannot enter the network namespace")]
    NetNs,
    #[error("cannot route the gateway back to the loopback inside the container")]
    Rules,
    #[error("cannot open a socket inside the container's namespace")]
    Socket,
    #[error("the helper answered something else")]
    Protocol,
}

impl JoinStage {
    const ALL: [JoinStage; 7] = [
        JoinStage::NotNetns,
        JoinStage::Owner,
        JoinStage::UserNs,
        JoinStage::NetNs,
        JoinStage::Rules,
        JoinStage::Socket,
        JoinStage::Protocol,
    ];
    fn code(self) -> u8 {
        JoinStage::ALL
            .iter()
            .position(|s| *s == self)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX)
    }
    fn from_code(c: u8) -> JoinStage {
        JoinStage::ALL
            .get(usize::from(c))
            .copied()
            .unwrap_or(JoinStage::Protocol)
    }
}

/// Whether the helper runs (the daemon started it: it is not root).
pub fn running() -> bool {
    HELPER.get().is_some()
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Threads of this process (from /proc/self/task).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    // SAFETY: fds has room for the two descriptors socketpair writes.
    check(unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) })?;
    // SAFETY: both were just returned by socketpair and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks the helper. Call before the process starts any thread (checked).
pub fn start() -> Result<(), HelperError> {
    if HELPER.get().is_some() {
        return Err(HelperError::Started);
    }
    let n = threads();
    if n != 1 {
        return Err(HelperError::Threads(n));
    }
    let (mine, theirs) = seqpacket_pair().map_err(HelperError::Sys)?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the process has one thread (checked above), so the child may do anything.
    let pid = check(unsafe { libc::fork() }).map_err(HelperError::Sys)?;
    if pid == 0 {
        drop(mine);
        helper_main(theirs, parent);
    }
    drop(theirs);
    HELPER
        .set(Mutex::new(mine))
        .map_err(|_| HelperError::Started)
}

/// The helper process: serves requests until the daemon's end closes. Never returns.
fn helper_main(ctl: OwnedFd, parent: libc::pid_t) -> ! {
    // SAFETY: prctl, getppid and signal take no pointers; SIG_IGN for SIGCHLD makes
    // the kernel reap the makers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    let ctl = keep_only(ctl);
    let mut buf = [0u8; REQUEST_LEN + 1];
    loop {
        match recv_fds::<2>(ctl.as_raw_fd(), &mut buf, 0) {
            Ok((0, _)) => break,
            Ok((n, [Some(ns), Some(pool)])) if n == REQUEST_LEN => {
                if let Some(to) = buf.get(..n).and_then(parse_request) {
                    spawn_maker(&ctl, ns, pool, to);
                }
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => break,
        }
    }
    // SAFETY: _exit ends the process without running the daemon's destructors.
    unsafe { libc::_exit(0) }
}

/// Closes every descriptor but stdin, stdout, stderr and `ctl` (moved to 3).
fn keep_only(ctl: OwnedFd) -> OwnedFd {
    let raw = ctl.as_raw_fd();
    let ctl = if raw == 3 {
        ctl
    } else {
        // SAFETY: dup2 onto 3 (whatever it was is the daemon's, not ours to keep).
        let r = unsafe { libc::dup2(raw, 3) };
        drop(ctl);
        if r != 3 {
            // SAFETY: nothing to clean up in the helper.
            unsafe { libc::_exit(1) };
        }
        // SAFETY: 3 is now our socket, owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(3) }
    };
    // SAFETY: close_range on descriptors the helper does not use.
    unsafe { libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) };
    ctl
}

/// The request's target: None when it is not one.
fn parse_request(b: &[u8]) -> Option<PoolTarget> {
    let (magic, rest) = b.split_first_chunk::<4>()?;
    let (family, rest) = rest.split_first()?;
    let (c, rest) = rest.split_first_chunk::<16>()?;
    let (g, rest) = rest.split_first_chunk::<16>()?;
    let (p, _) = rest.split_first_chunk::<2>()?;
    if magic != MAGIC {
        return None;
    }
    let addr = |a: &[u8; 16]| -> Option<IpAddr> {
        match family {
            4 => {
                let (v4, _) = a.split_first_chunk::<4>()?;
                Some(Ipv4Addr::from(*v4).into())
            }
            6 => Some(Ipv6Addr::from(*a).into()),
            _ => None,
        }
    };
    Some(PoolTarget {
        container: SocketAddr::new(addr(c)?, u16::from_be_bytes(*p)),
        gateway: addr(g)?,
    })
}

/// An address in a request's 16 bytes (IPv4 in the first 4).
fn wide(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut w = [0u8; 16];
            if let Some(head) = w.first_chunk_mut::<4>() {
                *head = a.octets();
            }
            w
        }
        IpAddr::V6(a) => a.octets(),
    }
}

fn request(to: PoolTarget) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    let c = to.container;
    let family = [if c.is_ipv4() { 4 } else { 6 }];
    let parts: [&[u8]; 5] = [
        MAGIC,
        &family,
        &wide(c.ip()),
        &wide(to.gateway),
        &c.port().to_be_bytes(),
    ];
    let mut at = 0;
    for p in parts {
        if let Some(dst) = b.get_mut(at..at + p.len()) {
            dst.copy_from_slice(p);
        }
        at += p.len();
    }
    b
}

/// Forks a maker for one port; the helper keeps none of its descriptors.
fn spawn_maker(ctl: &OwnedFd, ns: OwnedFd, pool: OwnedFd, to: PoolTarget) {
    // SAFETY: the helper is single-threaded; the child only runs `maker`.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: as in helper_main.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::close(ctl.as_raw_fd());
            }
            maker(&ns, &pool, to);
            // SAFETY: ends the maker without the daemon's destructors.
            unsafe { libc::_exit(0) }
        }
        _ => {
            // Failed or forked: the descriptors are the maker's (or nobody's) now; the
            // daemon sees the pair close and takes frames.
            drop((ns, pool));
        }
    }
}

/// Whether `a` and `b` are the same namespace.
fn same_ns(a: RawFd, b: RawFd) -> bool {
    // SAFETY: fstat into zeroed stats we own.
    unsafe {
        let (mut x, mut y): (libc::stat, libc::stat) = (std::mem::zeroed(), std::mem::zeroed());
        libc::fstat(a, &mut x) == 0
            && libc::fstat(b, &mut y) == 0
            && (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
    }
}

/// Joins the namespaces `ns` belongs to, installs the rule and makes the first socket.
fn join(ns: &OwnedFd, to: PoolTarget) -> Result<OwnedFd, (JoinStage, io::Error)> {
    let raw = ns.as_raw_fd();
    // SAFETY: ioctls on a descriptor we hold; they take no argument.
    let kind = unsafe { libc::ioctl(raw, NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err((
            JoinStage::NotNetns,
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    // SAFETY: as above; a new descriptor is returned, owned at once.
    let owner = check(unsafe { libc::ioctl(raw, NS_GET_USERNS) })
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .map_err(|e| (JoinStage::Owner, e))?;
    let own = std::fs::File::open("/proc/self/ns/user").map_err(|e| (JoinStage::Owner, e))?;
    if !same_ns(owner.as_raw_fd(), own.as_raw_fd()) {
        // SAFETY: setns on a user namespace descriptor; this process is single-threaded.
        check(unsafe { libc::setns(owner.as_raw_fd(), libc::CLONE_NEWUSER) })
            .map_err(|e| (JoinStage::UserNs, e))?;
    }
    // SAFETY: setns on the network namespace descriptor we hold.
    check(unsafe { libc::setns(raw, libc::CLONE_NEWNET) }).map_err(|e| (JoinStage::NetNs, e))?;
    let c = to.container;
    crate::rtnl::splice_rules(c.ip(), to.gateway, c.port()).map_err(|e| (JoinStage::Rules, e))?;
    inner_socket(c.is_ipv6()).map_err(|e| (JoinStage::Socket, e))
}

/// A maker: joins, then hands sockets over `pool` as the daemon's credits come.
fn maker(ns: &OwnedFd, pool: &OwnedFd, to: PoolTarget) {
    let p = pool.as_raw_fd();
    let first = match join(ns, to) {
        Ok(s) => s,
        Err((stage, e)) => {
            let errno = e.raw_os_error().unwrap_or(0).to_ne_bytes();
            let msg = [b'E', stage.code(), errno[0], errno[1], errno[2], errno[3]];
            let _ = send_fds(p, &msg, &[]);
            return;
        }
    };
    let mut next = Some(first);
    loop {
        let sent = match next.take() {
            Some(s) => send_fds(p, b"S", &[s.as_raw_fd()]),
            // Out of descriptors: an empty answer (the daemon counts it, frames).
            None => send_fds(p, b"N", &[]),
        };
        if sent.is_err() {
            return;
        }
        let mut b = 0u8;
        // SAFETY: reads one byte into a byte we own.
        let n = unsafe { libc::recv(p, (&raw mut b).cast(), 1, 0) };
        match (n, b) {
            (1, b'C') => next = inner_socket(to.container.is_ipv6()).ok(),
            (1, b'X') => {
                let c = to.container;
                let _ = crate::rtnl::remove_splice_rule(c.ip(), to.gateway, c.port());
                let _ = send_fds(p, b"R", &[]);
                return;
            }
            _ => return,
        }
    }
}

/// Sends `bytes` with `fds` (SCM_RIGHTS) as one message.
fn send_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // Room for up to 2 descriptors, aligned as cmsghdr wants.
    let mut space = [0u64; 4];
    // SAFETY: zeroed msghdr, then pointers into buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    let fds = fds.get(..fds.len().min(2)).unwrap_or(&[]);
    if !fds.is_empty() {
        let len = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the header and data fit `space`
        // (32 bytes: a 16-byte header and two 4-byte descriptors).
        unsafe {
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(len) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        }
    }
    // SAFETY: msg points at live buffers; MSG_NOSIGNAL: a closed peer is an error.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message into `buf` with up to `N` descriptors (close-on-exec), the
/// rest of any closed. A truncated message (bytes or descriptors) counts as none: its
/// descriptors are closed and the length returned is `buf.len()`, which no valid
/// message has.
fn recv_fds<const N: usize>(
    sock: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, [Option<OwnedFd>; N])> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut space = [0u64; 16];
    // SAFETY: zeroed msghdr, then pointers into buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space);
    // SAFETY: msg points at live buffers of the lengths it says.
    let n = unsafe { libc::recvmsg(sock, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out: [Option<OwnedFd>; N] = std::array::from_fn(|_| None);
    let mut k = 0;
    // SAFETY: walks the control messages the kernel wrote within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for j in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = OwnedFd::from_raw_fd(data.add(j).read_unaligned());
                    if let Some(slot) = out.get_mut(k) {
                        *slot = Some(fd);
                    }
                    k += 1;
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || k > N;
    if truncated {
        return Ok((buf.len(), std::array::from_fn(|_| None)));
    }
    Ok((n as usize, out))
}

/// Waits up to `wait` for `sock` to be readable.
fn readable(sock: RawFd, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: sock,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// The daemon's side of one port's maker.
pub struct HelperPool {
    sock: OwnedFd,
}

impl HelperPool {
    /// Asks the helper for a maker in `netns`; waits for its first answer.
    pub fn start(
        netns: BorrowedFd<'_>,
        to: PoolTarget,
    ) -> Result<(HelperPool, OwnedFd), SpliceError> {
        let helper = HELPER.get().ok_or(SpliceError::Helper {
            stage: JoinStage::Protocol,
            errno: None,
        })?;
        let gone = |e: io::Error| SpliceError::Helper {
            stage: JoinStage::Protocol,
            errno: Some(e),
        };
        let (mine, theirs) = seqpacket_pair().map_err(gone)?;
        {
            let ctl = helper
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let fds = [netns.as_raw_fd(), theirs.as_raw_fd()];
            send_fds(ctl.as_raw_fd(), &request(to), &fds).map_err(gone)?;
        }
        drop(theirs);
        let pool = HelperPool { sock: mine };
        let first = pool.answer(FIRST_WAIT)?;
        for _ in 0..POOL_DEPTH {
            pool.credit();
        }
        Ok((pool, first))
    }

    /// The maker's next answer: a socket, or why not (`NoSocket`: none yet, or the
    /// maker out of descriptors: `N`).
    fn answer(&self, wait: Duration) -> Result<OwnedFd, SpliceError> {
        let raw = self.sock.as_raw_fd();
        if !readable(raw, wait) {
            return Err(SpliceError::NoSocket);
        }
        self.read_answer()
    }

    fn read_answer(&self) -> Result<OwnedFd, SpliceError> {
        let raw = self.sock.as_raw_fd();
        let mut b = [0u8; 8];
        let (n, [fd]) =
            recv_fds::<1>(raw, &mut b, libc::MSG_DONTWAIT).map_err(|e| SpliceError::Helper {
                stage: JoinStage::Protocol,
                errno: Some(e),
            })?;
        match (b.get(..n), fd) {
            (Some(b"S"), Some(fd)) => Ok(fd),
            (Some(b"N"), None) => Err(SpliceError::NoSocket),
            (Some([b'E', stage, e @ ..]), None) if e.len() == 4 => {
                let errno = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
                let source = io::Error::from_raw_os_error(errno);
                Err(SpliceError::Helper {
                    stage: JoinStage::from_code(*stage),
                    errno: Some(source),
                })
            }
            _ => Err(SpliceError::Helper {
                stage: JoinStage::Protocol,
                errno: None,
            }),
        }
    }

    fn credit(&self) {
        // SAFETY: one byte from a buffer we own; MSG_NOSIGNAL: a gone maker is an error.
        unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                b"C".as_ptr().cast(),
                1,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
    }

    /// A socket the maker made (waits a moment when none is queued).
    pub fn take(&mut self) -> Result<OwnedFd, SpliceError> {
        if !readable(self.sock.as_raw_fd(), TAKE_WAIT) {
            return Err(SpliceError::NoSocket);
        }
        // An answer was used up (a socket, or `N`): the maker may make the next.
        let got = self.read_answer();
        if !matches!(got, Err(SpliceError::Helper { .. })) {
            self.credit();
        }
        got
    }

    /// Has the maker remove the rule (waiting briefly), then ends it.
    pub fn abandon(self) {
        let raw = self.sock.as_raw_fd();
        // Sockets still queued are read and closed on the way to the `R`.
        // SAFETY: one byte from a buffer we own.
        unsafe { libc::send(raw, b"X".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
        let until = std::time::Instant::now() + ABANDON_WAIT;
        let mut b = [0u8; 8];
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            if !readable(raw, left) {
                return;
            }
            match recv_fds::<1>(raw, &mut b, libc::MSG_DONTWAIT) {
                Ok((1, _)) if b.first() == Some(&b'R') => return,
                Ok((0, _)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_others_are_refused() {
        let to = PoolTarget {
            container: SocketAddr::from(([10, 0, 0, 2], 8080)),
            gateway: IpAddr::from([10, 0, 0, 1]),
        };
        let r = request(to);
        assert_eq!(parse_request(&r), Some(to));
        let to6 = PoolTarget {
            container: "[fd00::2]:8080".parse().unwrap(),
            gateway: "fd00::1".parse().unwrap(),
        };
        assert_eq!(parse_request(&request(to6)), Some(to6));
        let mut bad = r;
        bad[0] = b'X';
        assert_eq!(parse_request(&bad), None);
        let mut bad = r;
        bad[4] = 5;
        assert_eq!(parse_request(&bad), None);
        assert_eq!(parse_request(&r[..10]), None);
    }

    #[test]
    fn stages_round_trip_and_unknown_codes_are_protocol_errors() {
        for s in JoinStage::ALL {
            assert_eq!(JoinStage::from_code(s.code()), s);
        }
        assert_eq!(JoinStage::from_code(200), JoinStage::Protocol);
    }

    /// Descriptors pass over a pair; more than asked for, or a truncated message,
    /// count as nothing (and are closed).
    #[test]
    fn descriptors_pass_and_extra_ones_are_refused() {
        let (a, b) = seqpacket_pair().unwrap();
        let f = std::fs::File::open("/proc/self/ns/net").unwrap();
        send_fds(a.as_raw_fd(), b"S", &[f.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 4];
        let (n, [fd]) = recv_fds::<1>(b.as_raw_fd(), &mut buf, 0).unwrap();
        assert_eq!((n, &buf[..1]), (1, &b"S"[..]));
        assert!(same_ns(fd.unwrap().as_raw_fd(), f.as_raw_fd()));
        send_fds(a.as_raw_fd(), b"S", &[f.as_raw_fd(), f.as_raw_fd()]).unwrap();
        let (n, [fd]) = recv_fds::<1>(b.as_raw_fd(), &mut buf, 0).unwrap();
        assert_eq!(n, buf.len());
        assert!(fd.is_none());
        send_fds(a.as_raw_fd(), b"0123456789", &[]).unwrap();
        let (n, _) = recv_fds::<1>(b.as_raw_fd(), &mut buf, 0).unwrap();
        assert_eq!(n, buf.len());
    }
}
