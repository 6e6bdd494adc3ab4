//! VM ports: a Unix stream socket that QEMU connects to with `-netdev
//! stream,server=off,addr.type=unix,addr.path=PATH` (QEMU 7.2 and later), each frame on
//! the byte stream behind its length (4 bytes, big-endian: `wire::stream`).
//!
//! # Receive
//!
//! The port listens on PATH. Its descriptor for the worker's poll is an epoll instance of
//! its own holding the listener and the current connection, so the worker's registration
//! stays the same across reconnections. A receive reads what the connection holds into a
//! 64 KiB staging buffer with one `read` and cuts as many frames out of it as the batch
//! takes (one copy each, into the batch's buffer); a frame split across reads waits in
//! the buffer for the rest. When the connection has nothing more, pending connections are
//! accepted: the newest one replaces the one before it (a rebooted or migrated VM's QEMU
//! reconnects, and the port, its slot, address and published ports stay as they are).
//!
//! A peer that announces a frame shorter than an Ethernet header or longer than the port
//! takes is out of step, or hostile: it is cut off (its connection shut down and closed,
//! counted in [`PeerCounts::cut_off`]), the frames it sent before stay delivered, and the
//! port goes on listening.
//!
//! # Send
//!
//! Every worker holds a handle ([`StreamPort::sender`]) that writes to the current
//! connection (an `ArcSwapOption`, loaded once per send call). Frames go out gathered,
//! several per `sendmsg`: for each, its prefix (and, when tagged, its addresses and tag)
//! copied into a scratch arena, its bytes taken where they lie. Two workers' writes must
//! never interleave on the stream; Linux queues a write on a Unix stream socket of up to
//! 36 KiB or so (`SKB_MAX_HEAD(0) + 32 KiB`, and half the send buffer) as one buffer,
//! all or nothing, so each `sendmsg` is kept under [`ATOMIC_WRITE`] bytes and is atomic:
//! written whole, or refused (EAGAIN: the rest of the batch is dropped, as a full TAP
//! queue drops it). A network whose frames could be longer is refused a VM port
//! ([`MAX_FRAME`]). Should a write ever be cut short all the same, the stream is out of
//! step: the connection is shut down and QEMU reconnects or the VM's link is gone (it is
//! counted, `torn`). Frames with offload metadata (a container TAP's super-frames) are
//! segmented and checksummed in software first (`port/gso.rs`): QEMU's stream carries
//! plain frames only.

use super::gso::{MAX_HEADER, Segmenter};
use super::tap::tag_for;
use super::{Batch, PeerCounts, Port, PortCaps, PortError, TxSel};
use crate::wire::stream::{PREFIX_LEN, frame_len, prefix};
use arc_swap::ArcSwapOption;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The most bytes one `sendmsg` carries: under what Linux queues as one buffer.
pub const ATOMIC_WRITE: usize = 32 * 1024;
/// The longest frame a stream port carries (its prefix and it in one write).
pub const MAX_FRAME: usize = ATOMIC_WRITE - PREFIX_LEN;
/// The shortest frame a peer may announce: an Ethernet header.
const MIN_FRAME: usize = crate::wire::ethernet::HEADER_LEN;
/// The staging buffer a receive reads into (at least two of the longest frames).
const RX_BUF: usize = 64 * 1024;
/// Frames gathered into one `sendmsg` at most.
const CHUNK_FRAMES: usize = 128;
/// Arena bytes one frame may need: prefix, addresses and tag, or a segment's headers.
const SLOT: usize = PREFIX_LEN + 4 + MAX_HEADER;
/// The send buffer asked for on each connection (the kernel caps it at `wmem_max`).
const SNDBUF: libc::c_int = 1 << 20;
/// Connections accepted per receive at most (the newest wins).
const ACCEPT_BUDGET: usize = 8;

/// Why a VM socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0} exists and is not a socket; remove it or choose another --vm-socket path")]
    NotASocket(PathBuf),
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot poll {path}: {source}")]
    Poll {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One connection from the VM's QEMU.
struct Conn {
    stream: UnixStream,
    /// The longest write that stays atomic on it (its send buffer may shorten it).
    chunk: usize,
}

/// What every handle of one port shares: the current connection.
struct Shared {
    conn: ArcSwapOption<Conn>,
    /// Writes cut short (the connection was shut down each time).
    torn: AtomicU64,
}

/// A VM's stream socket as a [`Port`]: the handle that listens and receives, or a
/// send-only handle for another worker.
pub struct StreamPort {
    name: String,
    shared: Arc<Shared>,
    rx: Option<Box<Receiver>>,
    tx: Gather,
    seg: Segmenter,
    max_frame: usize,
}

/// The receiving side: listener, poll set, staging buffer.
struct Receiver {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's device and inode, so only our own file is removed.
    file: (u64, u64),
    epoll: OwnedFd,
    conn: Option<Arc<Conn>>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    counts: PeerCounts,
}

/// What the staging buffer holds at its start.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A whole frame of this length behind its prefix.
    Frame(usize),
    /// Not yet a whole frame.
    More,
    /// A length no frame has: the peer is out of step.
    Bad,
}

fn next(buf: &[u8], max_frame: usize) -> Next {
    match frame_len(buf) {
        None => Next::More,
        Some(l) if !(MIN_FRAME..=max_frame).contains(&l) => Next::Bad,
        Some(l) if buf.len() >= PREFIX_LEN + l => Next::Frame(l),
        Some(_) => Next::More,
    }
}

impl StreamPort {
    /// Listens on `path` (a stale socket there, from an earlier run, is replaced; any
    /// other file is refused), mode 0600, for frames up to `max_frame` bytes (at most
    /// [`MAX_FRAME`]).
    pub fn listen(path: &Path, name: &str, max_frame: usize) -> Result<StreamPort, StreamError> {
        let listen_err = |source| StreamError::Listen {
            path: path.to_path_buf(),
            source,
        };
        let poll_err = |source| StreamError::Poll {
            path: path.to_path_buf(),
            source,
        };
        let epoll = new_epoll().map_err(poll_err)?;
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_socket() {
                return Err(StreamError::NotASocket(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(listen_err)?;
        }
        let listener = UnixListener::bind(path).map_err(listen_err)?;
        let file = match std::fs::symlink_metadata(path) {
            Ok(m) => (m.dev(), m.ino()),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(listen_err(e));
            }
        };
        // From here on a failure removes the socket file again (the receiver's Drop).
        let rx = Receiver {
            listener,
            path: path.to_path_buf(),
            file,
            epoll,
            conn: None,
            buf: vec![0u8; RX_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            counts: PeerCounts::default(),
        };
        rx.listener.set_nonblocking(true).map_err(listen_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(listen_err)?;
        epoll_ctl(&rx.epoll, libc::EPOLL_CTL_ADD, rx.listener.as_raw_fd()).map_err(poll_err)?;
        Ok(StreamPort {
            name: name.to_string(),
            shared: Arc::new(Shared {
                conn: ArcSwapOption::empty(),
                torn: AtomicU64::new(0),
            }),
            rx: Some(Box::new(rx)),
            tx: Gather::new(),
            seg: Segmenter::new(),
            max_frame: max_frame.clamp(MIN_FRAME, MAX_FRAME),
        })
    }

    /// A send-only handle on the same connection, for another worker.
    pub fn sender(&self) -> StreamPort {
        StreamPort {
            name: self.name.clone(),
            shared: self.shared.clone(),
            rx: None,
            tx: Gather::new(),
            seg: Segmenter::new(),
            max_frame: self.max_frame,
        }
    }

    /// Whether a peer is connected now.
    pub fn connected(&self) -> bool {
        self.shared.conn.load().is_some()
    }

    /// Writes cut short since the port was opened.
    pub fn torn(&self) -> u64 {
        self.shared.torn.load(Relaxed)
    }

    fn error(&self, source: io::Error) -> PortError {
        PortError::Io {
            port: self.name.clone(),
            source,
        }
    }
}

/// An empty epoll instance (the listener and each connection are added to it).
fn new_epoll() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn epoll_ctl(ep: &OwnedFd, op: libc::c_int, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: fd as u64,
    };
    // SAFETY: `ev` is a valid event for the call's duration.
    let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for a send buffer large enough that a write of [`ATOMIC_WRITE`] bytes is one
/// buffer, and returns the longest atomic write the buffer it got allows.
fn atomic_chunk(s: &UnixStream) -> usize {
    let fd = s.as_raw_fd();
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let want: libc::c_int = SNDBUF;
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: a c_int option value of its size.
        let r =
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&raw const want).cast(), size) };
        if r == 0 {
            break;
        }
    }
    let mut got: libc::c_int = 0;
    let mut len = size;
    // SAFETY: `got` and `len` are valid for writing, `len` its size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw mut got).cast(),
            &mut len,
        )
    };
    let half = if r == 0 { (got.max(0) as usize) / 2 } else { 0 };
    // Linux splits a write at half the send buffer less 64 bytes.
    half.saturating_sub(128).min(ATOMIC_WRITE)
}

impl Receiver {
    /// Cuts frames out of the staging buffer and reads more until `batch` is full or the
    /// connection has nothing more. Returns the frames in the batch.
    fn fill(&mut self, batch: &mut Batch, mut n: usize, max_frame: usize, sh: &Shared) -> usize {
        let cap = batch.capacity();
        while n < cap {
            let held = self.buf.get(self.start..self.end).unwrap_or(&[]);
            match next(held, max_frame) {
                Next::Frame(len) => {
                    let body = held.get(PREFIX_LEN..PREFIX_LEN + len).unwrap_or(&[]);
                    if let Some(slot) = batch.slots_mut().get_mut(n)
                        && slot.load(body)
                    {
                        n += 1;
                    }
                    self.start += PREFIX_LEN + len;
                    continue;
                }
                Next::Bad => {
                    self.counts.cut_off += 1;
                    self.drop_conn(sh);
                    break;
                }
                Next::More => {}
            }
            if !self.read_more(sh) {
                break;
            }
        }
        n
    }

    /// One read from the connection after the held bytes. False when nothing came (it
    /// would block, or the peer is gone).
    fn read_more(&mut self, sh: &Shared) -> bool {
        let Some(conn) = self.conn.clone() else {
            return false;
        };
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            let room = self.buf.get_mut(self.end..).unwrap_or(&mut []);
            match (&conn.stream).read(room) {
                Ok(0) => {
                    self.drop_conn(sh);
                    return false;
                }
                Ok(k) => {
                    self.end += k;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.drop_conn(sh);
                    return false;
                }
            }
        }
    }

    /// Closes the current connection (shut down first, so a sender still holding it
    /// fails at once), and forgets what it left in the buffer.
    fn drop_conn(&mut self, sh: &Shared) {
        if let Some(c) = self.conn.take() {
            let _ = epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, c.stream.as_raw_fd());
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        sh.conn.store(None);
        (self.start, self.end) = (0, 0);
    }

    /// Takes pending connections, the newest replacing the current one. True when one
    /// was taken.
    fn accept(&mut self, sh: &Shared) -> bool {
        let mut took = false;
        for _ in 0..ACCEPT_BUDGET {
            let Ok((stream, _)) = self.listener.accept() else {
                break;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let chunk = atomic_chunk(&stream);
            self.drop_conn(sh);
            if epoll_ctl(&self.epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd()).is_err() {
                continue;
            }
            let c = Arc::new(Conn { stream, chunk });
            sh.conn.store(Some(c.clone()));
            self.conn = Some(c);
            self.counts.connects += 1;
            took = true;
        }
        took
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Only the socket file this port made (a later one at the path is someone's).
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.file
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One frame waiting in the gather: its prefix (and rewritten bytes) in the arena, the
/// rest where it lies in the batch.
#[derive(Clone, Copy)]
struct Entry {
    head: (usize, usize),
    frame: u8,
    body: (usize, usize),
    /// The last piece of its selection: the selection counts as sent with it.
    last: bool,
}

/// The frames of one `sendmsg`.
struct Gather {
    arena: Box<[u8]>,
    used: usize,
    bytes: usize,
    entries: Vec<Entry>,
}

/// What a write did.
enum Flush {
    /// Written whole: this many selections completed.
    Sent(usize),
    /// The socket is full, or the write was cut short: drop the rest.
    Full,
    /// The peer is gone or the socket failed.
    Failed(io::Error),
}

impl Gather {
    fn new() -> Gather {
        Gather {
            arena: vec![0u8; CHUNK_FRAMES * SLOT].into_boxed_slice(),
            used: 0,
            bytes: 0,
            entries: Vec::with_capacity(CHUNK_FRAMES),
        }
    }

    fn clear(&mut self) {
        (self.used, self.bytes) = (0, 0);
        self.entries.clear();
    }

    fn fits(&self, len: usize, chunk: usize) -> bool {
        self.entries.len() < CHUNK_FRAMES
            && self.used + SLOT <= self.arena.len()
            && self.bytes + PREFIX_LEN + len <= chunk
    }

    /// Queues frame `frame` as `head` (copied, `tag` inserted after its 12 address
    /// bytes) followed by `body` (bytes `body.0..body.1` of the frame, in place).
    fn push(&mut self, frame: u8, head: &[u8], tag: Option<[u8; 4]>, body: (usize, usize)) {
        let taglen = if tag.is_some() { 4 } else { 0 };
        let len = head.len() + taglen + body.1.saturating_sub(body.0);
        let start = self.used;
        let mut at = start;
        let mut put = |bytes: &[u8]| {
            if let Some(d) = self.arena.get_mut(at..at + bytes.len()) {
                d.copy_from_slice(bytes);
                at += bytes.len();
            }
        };
        put(&prefix(len));
        match (tag, head.split_at_checked(12)) {
            (Some(t), Some((macs, rest))) => {
                put(macs);
                put(&t);
                put(rest);
            }
            _ => put(head),
        }
        self.used = at;
        self.bytes += PREFIX_LEN + len;
        self.entries.push(Entry {
            head: (start, at),
            frame,
            body,
            last: false,
        });
    }

    fn mark_last(&mut self) {
        if let Some(e) = self.entries.last_mut() {
            e.last = true;
        }
    }

    /// Writes the gathered frames with one `sendmsg` and empties the gather.
    fn flush(&mut self, conn: &Conn, batch: &Batch, sh: &Shared) -> Flush {
        if self.entries.is_empty() {
            return Flush::Sent(0);
        }
        let mut iov = [IoSlice::new(&[]); 2 * CHUNK_FRAMES];
        let mut k = 0;
        let mut done = 0;
        for e in &self.entries {
            let head = self.arena.get(e.head.0..e.head.1).unwrap_or(&[]);
            let data = batch
                .get(usize::from(e.frame))
                .map_or(&[][..], |f| f.data());
            let body = data.get(e.body.0..e.body.1).unwrap_or(&[]);
            for p in [head, body] {
                if !p.is_empty()
                    && let Some(v) = iov.get_mut(k)
                {
                    *v = IoSlice::new(p);
                    k += 1;
                }
            }
            done += usize::from(e.last);
        }
        let total = self.bytes;
        let r = sendmsg(conn.stream.as_raw_fd(), iov.get(..k).unwrap_or(&[]));
        self.clear();
        match r {
            Ok(n) if n == total => Flush::Sent(done),
            Ok(_) => {
                // Cut short: the stream is out of step for good.
                sh.torn.fetch_add(1, Relaxed);
                let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                Flush::Full
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Flush::Full,
            Err(e) => Flush::Failed(e),
        }
    }
}

/// One `sendmsg` of the slices, never raising SIGPIPE, never blocking.
fn sendmsg(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix; sendmsg only reads them.
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    loop {
        // SAFETY: `msg` points at `iov`, alive for the call.
        let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl StreamPort {
    /// Queues selection `s` (segmented first when it carries offload metadata), writing
    /// the gather out whenever it is full. Err when the rest of the batch is dropped.
    fn queue(
        &mut self,
        conn: &Conn,
        batch: &Batch,
        s: TxSel,
        sent: &mut usize,
    ) -> Result<(), Flush> {
        let Some(f) = batch.get(usize::from(s.idx)) else {
            return Ok(());
        };
        let tag = tag_for(s.vlan);
        let extra = if tag.is_some() { 4 } else { 0 };
        let data = f.data();
        let StreamPort {
            tx,
            seg,
            shared,
            max_frame,
            ..
        } = self;
        let limit = (*max_frame).min(conn.chunk.saturating_sub(PREFIX_LEN));
        let mut outcome = Ok(());
        let mut emit = |head: &[u8], body: &[u8]| {
            let len = head.len() + extra + body.len();
            if len > limit {
                return true; // too long for this port: dropped
            }
            if !tx.fits(len, conn.chunk) {
                match tx.flush(conn, batch, shared) {
                    Flush::Sent(n) => *sent += n,
                    other => {
                        outcome = Err(other);
                        return false;
                    }
                }
            }
            let off = (body.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
            let (head, body_range) = if head.is_empty() {
                // A frame passed through whole: its addresses go with the prefix.
                (body.get(..12).unwrap_or(&[]), (off + 12, off + body.len()))
            } else {
                (head, (off, off + body.len()))
            };
            tx.push(s.idx, head, tag, body_range);
            true
        };
        if f.vnet.is_plain() {
            emit(&[], data);
        } else if seg.segment(data, &f.vnet, &mut emit).is_err() {
            return outcome;
        }
        tx.mark_last();
        outcome
    }
}

impl Port for StreamPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv(&mut self, batch: &mut Batch) -> Result<usize, PortError> {
        let StreamPort {
            rx,
            shared,
            max_frame,
            ..
        } = self;
        let Some(rx) = rx.as_deref_mut() else {
            batch.set_len(0);
            return Ok(0);
        };
        let mut n = rx.fill(batch, 0, *max_frame, shared);
        // Drained: a new connection may be waiting (its frames are read at once).
        if n < batch.capacity() && rx.accept(shared) {
            n = rx.fill(batch, n, *max_frame, shared);
        }
        batch.set_len(n);
        Ok(n)
    }

    fn send(&mut self, batch: &Batch, sel: &[TxSel]) -> Result<usize, PortError> {
        let Some(conn) = self.shared.conn.load_full() else {
            return Err(self.error(io::Error::from(io::ErrorKind::NotConnected)));
        };
        self.tx.clear();
        let mut sent = 0;
        for &s in sel {
            match self.queue(&conn, batch, s, &mut sent) {
                Ok(()) => {}
                Err(Flush::Failed(e)) if sent == 0 => return Err(self.error(e)),
                Err(_) => {
                    self.tx.clear();
                    return Ok(sent);
                }
            }
        }
        match self.tx.flush(&conn, batch, &self.shared) {
            Flush::Sent(n) => Ok(sent + n),
            Flush::Failed(e) if sent == 0 => Err(self.error(e)),
            _ => Ok(sent),
        }
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            offloads: false,
            max_frame: self.max_frame,
        }
    }

    fn rx_fd(&self) -> Option<RawFd> {
        self.rx.as_ref().map(|r| r.epoll.as_raw_fd())
    }

    fn peer_counts(&self) -> Option<PeerCounts> {
        self.rx.as_ref().map(|r| r.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::gso::fixtures::{TCP4_HEADERS, pattern, tcp4_super};
    use std::io::Write;
    use std::sync::atomic::AtomicUsize;

    static N: AtomicUsize = AtomicUsize::new(0);

    fn path() -> PathBuf {
        let n = N.fetch_add(1, Relaxed);
        std::env::temp_dir().join(format!("vmx-{}-{n}.sock", std::process::id()))
    }

    fn frame(src: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0xaa, 0x02, 0, 0, 0, 0, src, 0x08, 0x00];
        f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(src)));
        f
    }

    fn framed(f: &[u8]) -> Vec<u8> {
        let mut v = prefix(f.len()).to_vec();
        v.extend_from_slice(f);
        v
    }

    /// Receives until `want` frames came (or a second passed).
    fn recv_n(p: &mut StreamPort, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut b = Batch::new(64, 2048);
        for _ in 0..200 {
            p.recv(&mut b).unwrap();
            got.extend(b.frames().iter().map(|f| f.data().to_vec()));
            if got.len() >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        got
    }

    fn read_frame(c: &mut UnixStream) -> Vec<u8> {
        let mut p = [0u8; 4];
        c.read_exact(&mut p).unwrap();
        let mut f = vec![0u8; frame_len(&p).unwrap()];
        c.read_exact(&mut f).unwrap();
        f
    }

    #[test]
    fn frames_split_across_reads_arrive_whole_and_batched() {
        let at = path();
        let mut p = StreamPort::listen(&at, "vm", 1518).unwrap();
        let mut c = UnixStream::connect(&at).unwrap();
        let frames: Vec<Vec<u8>> = (1..=40).map(|i| frame(i, 60 + i as usize * 30)).collect();
        let bytes: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
        // Written in uneven pieces: prefixes and frames split anywhere.
        for piece in bytes.chunks(777) {
            c.write_all(piece).unwrap();
        }
        assert_eq!(recv_n(&mut p, 40), frames);
        assert_eq!(p.peer_counts().unwrap().connects, 1);
        assert_eq!(p.peer_counts().unwrap().cut_off, 0);
    }

    #[test]
    fn over_long_or_garbage_lengths_cut_the_peer_off_and_the_port_listens_on() {
        let at = path();
        let mut p = StreamPort::listen(&at, "vm", 1518).unwrap();
        for bad in [
            prefix(1519).to_vec(),
            prefix(13).to_vec(),
            b"GET / HTTP/1.1\r\n".to_vec(),
        ] {
            let mut c = UnixStream::connect(&at).unwrap();
            let good = frame(7, 100);
            c.write_all(&framed(&good)).unwrap();
            c.write_all(&bad).unwrap();
            c.write_all(&framed(&good)).unwrap();
            // The frame before the bad length is delivered, nothing after it.
            assert_eq!(recv_n(&mut p, 1), vec![good.clone()]);
            let mut rest = Vec::new();
            c.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            assert_eq!(c.read_to_end(&mut rest).unwrap(), 0, "the peer is closed");
            assert!(!p.connected());
        }
        assert_eq!(p.peer_counts().unwrap().cut_off, 3);
        // Positive control: a well-behaved peer connecting after is served.
        let mut c = UnixStream::connect(&at).unwrap();
        c.write_all(&framed(&frame(9, 64))).unwrap();
        assert_eq!(recv_n(&mut p, 1), vec![frame(9, 64)]);
        assert_eq!(p.peer_counts().unwrap().connects, 4);
    }

    #[test]
    fn the_newest_connection_replaces_the_old_one() {
        let at = path();
        let mut p = StreamPort::listen(&at, "vm", 1518).unwrap();
        let mut a = UnixStream::connect(&at).unwrap();
        a.write_all(&framed(&frame(1, 60))).unwrap();
        assert_eq!(recv_n(&mut p, 1).len(), 1);
        let mut b = UnixStream::connect(&at).unwrap();
        b.write_all(&framed(&frame(2, 60))).unwrap();
        assert_eq!(recv_n(&mut p, 1), vec![frame(2, 60)]);
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the old connection is closed");
        // Sends go to the new one, from any handle.
        let mut s = p.sender();
        let mut batch = Batch::new(4, 2048);
        batch.push(&frame(3, 80), 0);
        assert_eq!(s.send(&batch, &[TxSel { idx: 0, vlan: 0 }]).unwrap(), 1);
        assert_eq!(read_frame(&mut b), frame(3, 80));
        assert_eq!(p.peer_counts().unwrap().connects, 2);
    }

    #[test]
    fn sends_prefix_each_frame_and_push_tags() {
        let at = path();
        let mut p = StreamPort::listen(&at, "vm", 1518).unwrap();
        let mut c = UnixStream::connect(&at).unwrap();
        assert_eq!(recv_n(&mut p, 0).len(), 0);
        assert!(p.connected());
        let mut batch = Batch::new(4, 2048);
        batch.push(&frame(1, 100), 0);
        batch.push(&frame(2, 1514), 0);
        let sel = [
            TxSel { idx: 0, vlan: 0 },
            TxSel { idx: 1, vlan: 10 },
            TxSel { idx: 0, vlan: 0 },
        ];
        assert_eq!(p.send(&batch, &sel).unwrap(), 3);
        assert_eq!(read_frame(&mut c), frame(1, 100));
        let mut tagged = frame(2, 1514);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
        assert_eq!(read_frame(&mut c), tagged);
        assert_eq!(read_frame(&mut c), frame(1, 100));
    }

    #[test]
    fn super_frames_go_out_as_segments() {
        let at = path();
        let mut p = StreamPort::listen(&at, "vm", 1518).unwrap();
        let mut c = UnixStream::connect(&at).unwrap();
        recv_n(&mut p, 0);
        let payload = pattern(20_000);
        let (f, vnet) = tcp4_super(&payload, 0x18, 1448);
        let mut batch = Batch::new(1, super::super::SUPER_FRAME_CAP);
        batch.push(&f, 0);
        batch.frames_mut()[0].vnet = vnet;
        assert_eq!(p.send(&batch, &[TxSel { idx: 0, vlan: 0 }]).unwrap(), 1);
        let mut got = Vec::new();
        while got.len() < payload.len() {
            let s = read_frame(&mut c);
            assert!(s.len() <= 1514);
            got.extend_from_slice(&s[TCP4_HEADERS.len()..]);
        }
        assert_eq!(got, payload);
    }

    #[test]
    fn writes_of_two_workers_never_interleave() {
        let at = path();
        let mut p = StreamPort::listen(&at, "vm", 1518).unwrap();
        let mut c = UnixStream::connect(&at).unwrap();
        recv_n(&mut p, 0);
        const EACH: usize = 3000;
        let writers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|src| {
                let mut s = p.sender();
                std::thread::spawn(move || {
                    let mut batch = Batch::new(64, 2048);
                    for i in 0..64 {
                        batch.push(&frame(src, 60 + (i * 23) % 1450), 0);
                    }
                    let sel: Vec<TxSel> = (0..64).map(|i| TxSel { idx: i, vlan: 0 }).collect();
                    let mut sent = 0;
                    while sent < EACH {
                        let n = s.send(&batch, &sel[..(EACH - sent).min(64)]).unwrap();
                        sent += n;
                        if n == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut counts = [0usize; 3];
        for _ in 0..2 * EACH {
            let f = read_frame(&mut c);
            let src = f[11];
            assert_eq!(f, frame(src, f.len()), "a frame arrived whole");
            counts[usize::from(src)] += 1;
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(counts, [0, EACH, EACH]);
    }

    #[test]
    fn a_stale_socket_is_replaced_other_files_refused_and_ours_removed() {
        let at = path();
        drop(UnixListener::bind(&at).unwrap()); // left behind by an earlier run
        let p = StreamPort::listen(&at, "vm", 1518).unwrap();
        let mode = std::fs::metadata(&at).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let s = p.sender();
        drop(s);
        assert!(at.exists(), "a sender's drop leaves the socket");
        drop(p);
        assert!(!at.exists(), "the port's drop removes it");
        std::fs::write(&at, b"x").unwrap();
        assert!(matches!(
            StreamPort::listen(&at, "vm", 1518),
            Err(StreamError::NotASocket(_))
        ));
        assert!(at.exists());
        std::fs::remove_file(&at).unwrap();
    }

    #[test]
    fn no_peer_is_a_send_error() {
        let at = path();
        let mut p = StreamPort::listen(&at, "vm", 1518).unwrap();
        let mut batch = Batch::new(1, 2048);
        batch.push(&frame(1, 60), 0);
        assert!(p.send(&batch, &[TxSel { idx: 0, vlan: 0 }]).is_err());
    }

    #[test]
    fn next_reads_lengths_within_limits() {
        assert_eq!(next(&[], 1518), Next::More);
        assert_eq!(next(&[0, 0, 0], 1518), Next::More);
        assert_eq!(next(&[0, 0, 0, 14], 1518), Next::More);
        assert_eq!(next(&[0, 0, 0, 13], 1518), Next::Bad);
        assert_eq!(next(&[0, 0, 5, 0xef], 1518), Next::Bad);
        let mut b = vec![0, 0, 0, 14];
        b.extend([0u8; 14]);
        assert_eq!(next(&b, 1518), Next::Frame(14));
    }
}
