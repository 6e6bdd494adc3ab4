//! The two sockets of a spliced published-port connection and the pipes between
//! them: bytes move with `splice(2)`, never through userspace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::uplink::splice::{PIPE_SIZE, Pumped, check, last_error};

/// One direction: a pipe and what went through it.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Bytes in the pipe.
    held: usize,
    cap: usize,
    /// The source ended.
    eof: bool,
    /// The end was passed on (`shutdown(SHUT_WR)` of the destination).
    shut: bool,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        // SAFETY: both were just returned by pipe2 and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A smaller pipe (the system's limit) still works: fewer bytes per call.
        // SAFETY: F_SETPIPE_SZ on a pipe we own.
        let size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as i32) };
        let cap = usize::try_from(size).unwrap_or(16 * 4096);
        Ok(Pipe {
            r,
            w,
            held: 0,
            cap,
            eof: false,
            shut: false,
        })
    }
}

/// Moves up to `len` bytes from `from` to `to` without copying them to userspace.
/// Ok(None): nothing to move now.
fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    let null = std::ptr::null_mut();
    loop {
        // SAFETY: both descriptors are open; no offsets (sockets and pipes).
        let n = unsafe { libc::splice(from, null, to, null, len, flags) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(Some(n));
        }
        let e = last_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// One direction as far as it goes: source into the pipe, pipe into the destination,
/// until neither moves; then the source's end is passed on. Returns whether anything
/// moved.
fn flow(from: &TcpStream, p: &mut Pipe, to: &TcpStream) -> io::Result<bool> {
    let mut moved = false;
    loop {
        let mut step = false;
        if !p.eof && p.held < p.cap {
            match splice_once(from.as_raw_fd(), p.w.as_raw_fd(), p.cap - p.held)? {
                Some(0) => p.eof = true,
                Some(n) => (p.held, step) = (p.held + n, true),
                None => {}
            }
        }
        if p.held > 0
            && let Some(n) = splice_once(p.r.as_raw_fd(), to.as_raw_fd(), p.held)?
        {
            p.held -= n;
            step |= n > 0;
        }
        moved |= step;
        if !step {
            break;
        }
    }
    if p.eof && p.held == 0 && !p.shut {
        p.shut = true;
        to.shutdown(std::net::Shutdown::Write)?;
    }
    Ok(moved)
}

/// A spliced connection: the client's socket on the host, one inside the container.
pub struct Splice {
    pub host: TcpStream,
    pub inner: TcpStream,
    up: Pipe,
    down: Pipe,
    connected: bool,
}

impl Splice {
    /// The client's socket, for the frame path when the inner connect failed.
    pub fn into_host(self) -> TcpStream {
        self.host
    }

    /// The pipes between `host` and `inner`; none to be had (out of descriptors), the
    /// client is given back.
    pub fn new(host: TcpStream, inner: TcpStream) -> Result<Splice, (TcpStream, io::Error)> {
        let pipes = Pipe::new().and_then(|up| Ok((up, Pipe::new()?)));
        match pipes {
            Ok((up, down)) => Ok(Splice {
                host,
                inner,
                up,
                down,
                connected: false,
            }),
            Err(e) => Err((host, e)),
        }
    }

    /// Both sockets on `reg`, under one token.
    pub fn register(&mut self, reg: &Registry, token: Token) -> io::Result<()> {
        let both = Interest::READABLE | Interest::WRITABLE;
        reg.register(&mut self.host, token, both)?;
        reg.register(&mut self.inner, token, both)
    }

    pub fn deregister(&mut self, reg: &Registry) {
        let _ = reg.deregister(&mut self.host);
        let _ = reg.deregister(&mut self.inner);
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Moves what can move both ways. An error (the container refused, a reset) ends
    /// the connection.
    pub fn pump(&mut self) -> io::Result<Pumped> {
        if !self.connected {
            if let Some(e) = self.inner.take_error()? {
                return Err(e);
            }
            if self.inner.peer_addr().is_err() {
                return Ok(Pumped::Connecting);
            }
            self.connected = true;
        }
        let a = flow(&self.host, &mut self.up, &self.inner)?;
        let b = flow(&self.inner, &mut self.down, &self.host)?;
        if self.up.shut && self.down.shut {
            return Ok(Pumped::Done);
        }
        Ok(Pumped::Open(a || b))
    }
}
