//! Message framing on the control socket: newline-terminated JSON, with file
//! descriptors passed alongside (SCM_RIGHTS), and the peer's credentials.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::api::MAX_MESSAGE;

/// The most descriptors one message carries; more are closed and the message refused.
pub const MAX_FDS: usize = 8;
/// The longest request the daemon reads (every request is far shorter).
pub const MAX_REQUEST: usize = 64 << 10;

/// How long a message may take to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// No limit (the `ctl` side, waiting for the daemon).
    None,
    /// From the moment `recv` is called: a connection may not sit idle either.
    FromCall(Duration),
    /// From the message's first byte: idle between messages is fine (a `vswitch run`
    /// connection, open as long as its container), a message sent slowly is not.
    FromFirstByte(Duration),
}

/// One end of a control connection.
pub struct Conn {
    pub stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    /// Descriptors past [`MAX_FDS`] (or cut off by the kernel) came with this message.
    fds_overflow: bool,
    limit: usize,
    deadline: Deadline,
}

/// The process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("connection closed")]
    Closed,
    #[error("message longer than {0} bytes")]
    TooLong(usize),
    #[error("too many descriptors on one message (at most {MAX_FDS}); they were closed")]
    TooManyFds,
    #[error("request not complete within {0:?}: the connection is closed")]
    TimedOut(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Conn {
    pub fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
            scanned: 0,
            fds_overflow: false,
            limit: MAX_MESSAGE,
            deadline: Deadline::None,
        }
    }

    /// The daemon's side: requests up to `limit` bytes, arriving within `deadline`.
    pub fn limited(stream: UnixStream, limit: usize, deadline: Deadline) -> Conn {
        Conn {
            limit,
            deadline,
            ..Conn::new(stream)
        }
    }

    pub fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = deadline;
    }

    /// The peer's pid, uid and gid (SO_PEERCRED), as the kernel recorded them at connect.
    pub fn peer(&self) -> io::Result<Peer> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`.
        let r = unsafe {
            libc::getsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Peer {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
        })
    }

    /// Reads one message (without its newline) and the descriptors that came with it.
    /// A message over the limit or past its deadline ends the connection; one with too
    /// many descriptors is consumed and refused (`TooManyFds`), the connection goes on.
    pub fn recv(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>), FramingError> {
        let called = Instant::now();
        let mut first_byte = (!self.buf.is_empty()).then_some(called);
        loop {
            if let Some(line) = self.take_line() {
                // A read takes up to 16 KiB, so a line may end past the limit in the
                // same read that crossed it: it is as long as if it had not ended.
                if line.len() > self.limit {
                    return Err(FramingError::TooLong(self.limit));
                }
                return self.finish(line);
            }
            if self.buf.len() > self.limit {
                return Err(FramingError::TooLong(self.limit));
            }
            let timeout = self.timeout(called, first_byte)?;
            self.stream.set_read_timeout(timeout)?;
            let mut chunk = [0u8; 16384];
            let (n, truncated) =
                match recv_with_fds(self.stream.as_raw_fd(), &mut chunk, &mut self.fds) {
                    Ok(r) => r,
                    Err(e) if is_timeout(&e) => return Err(self.timed_out()),
                    Err(e) => return Err(e.into()),
                };
            self.fds_overflow |= truncated || self.fds.len() > MAX_FDS;
            self.fds.truncate(MAX_FDS);
            if n == 0 {
                return Err(FramingError::Closed);
            }
            first_byte.get_or_insert_with(Instant::now);
            self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        }
    }

    /// The next whole line in the buffer, searching only bytes not searched before.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.get(self.scanned..).unwrap_or(&[]);
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                Some(line)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    fn finish(&mut self, line: Vec<u8>) -> Result<(Vec<u8>, Vec<OwnedFd>), FramingError> {
        let fds = std::mem::take(&mut self.fds);
        if std::mem::take(&mut self.fds_overflow) {
            return Err(FramingError::TooManyFds);
        }
        Ok((line, fds))
    }

    /// The read timeout for the next read, or the error when the deadline has passed.
    fn timeout(
        &self,
        called: Instant,
        first_byte: Option<Instant>,
    ) -> Result<Option<Duration>, FramingError> {
        let (limit, since) = match (self.deadline, first_byte) {
            (Deadline::None, _) | (Deadline::FromFirstByte(_), None) => return Ok(None),
            (Deadline::FromCall(l), _) => (l, called),
            (Deadline::FromFirstByte(l), Some(t)) => (l, t),
        };
        match limit.checked_sub(since.elapsed()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> FramingError {
        match self.deadline {
            Deadline::FromCall(l) | Deadline::FromFirstByte(l) => FramingError::TimedOut(l),
            Deadline::None => FramingError::Closed,
        }
    }

    /// Bytes received after the last message, not yet returned (a stream that follows a
    /// message, such as a capture, starts there).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// Sends one message (a newline is added), with descriptors when given.
    pub fn send(&mut self, msg: &[u8], fds: &[RawFd]) -> Result<(), FramingError> {
        let mut data = Vec::with_capacity(msg.len() + 1);
        data.extend_from_slice(msg);
        data.push(b'\n');
        let mut off = 0;
        let mut first = true;
        while off < data.len() {
            let part = data.get(off..).unwrap_or(&[]);
            let n = send_with_fds(self.stream.as_raw_fd(), part, if first { fds } else { &[] })?;
            first = false;
            off += n;
        }
        Ok(())
    }
}

fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) as usize }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One recvmsg: the bytes read, and whether the kernel cut descriptors off (more than
/// the control buffer holds; it closes those itself).
fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<(usize, bool)> {
    let mut cbuf = vec![0u64; cmsg_space().div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; we point it at buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len() * 8;
    let n = loop {
        // SAFETY: recvmsg writes into the buffers msg points at, within their lengths.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: walking the control messages the kernel wrote, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

fn send_with_fds(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let fds = fds.get(..fds.len().min(MAX_FDS)).unwrap_or(&[]);
    let mut cbuf = vec![0u64; cmsg_space().div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; we point it at buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        // SAFETY: the control buffer is large enough for one SCM_RIGHTS message with
        // `fds.len()` descriptors (MAX_FDS at most).
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: sendmsg reads the buffers msg points at, within their lengths.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn messages_and_descriptors_cross() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Conn::new(a), Conn::new(b));
        let mut f = tempfile_in_tmp();
        f.write_all(b"hello").unwrap();
        a.send(br#"{"x":1}"#, &[f.as_raw_fd()]).unwrap();
        a.send(b"second", &[]).unwrap();
        let (m, fds) = b.recv().unwrap();
        assert_eq!(m, br#"{"x":1}"#);
        assert_eq!(fds.len(), 1);
        let mut g = std::fs::File::from(fds.into_iter().next().unwrap());
        g.rewind().unwrap();
        let mut s = String::new();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert_eq!(b.recv().unwrap().0, b"second");
        let me = b.peer().unwrap();
        assert_eq!(me.pid as u32, std::process::id());
        drop(a);
        assert!(matches!(b.recv(), Err(FramingError::Closed)));
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let p = std::env::temp_dir().join(format!("vswitch-framing-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    #[test]
    fn deadlines_from_the_call_or_from_the_first_byte() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = Duration::from_millis(200);
        let mut b = Conn::limited(b, MAX_REQUEST, Deadline::FromCall(t));
        assert!(matches!(b.recv(), Err(FramingError::TimedOut(_))));
        // Idle is fine from the first byte; a message begun and not finished is not.
        b.set_deadline(Deadline::FromFirstByte(t));
        let mut a2 = a.try_clone().unwrap();
        let w = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            a2.write_all(b"ok\npart").unwrap();
        });
        assert_eq!(b.recv().unwrap().0, b"ok");
        assert!(matches!(b.recv(), Err(FramingError::TimedOut(_))));
        w.join().unwrap();
        drop(a);
    }

    #[test]
    fn descriptors_past_the_limit_refuse_the_message_only() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Conn::new(a), Conn::limited(b, MAX_REQUEST, Deadline::None));
        let f = tempfile_in_tmp();
        for _ in 0..3 {
            a.send_raw(b"x", &[f.as_raw_fd(); MAX_FDS]);
        }
        a.send(b"", &[]).unwrap();
        assert!(matches!(b.recv(), Err(FramingError::TooManyFds)));
        a.send(b"next", &[f.as_raw_fd()]).unwrap();
        let (m, fds) = b.recv().unwrap();
        assert_eq!((m.as_slice(), fds.len()), (b"next".as_slice(), 1));
    }

    impl Conn {
        fn send_raw(&mut self, data: &[u8], fds: &[RawFd]) {
            send_with_fds(self.stream.as_raw_fd(), data, fds).unwrap();
        }
    }

    #[test]
    fn overlong_message_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut b = Conn::new(b);
        let t = std::thread::spawn(move || {
            let mut a = a;
            let chunk = vec![b'x'; 1 << 16];
            for _ in 0..(MAX_MESSAGE >> 16) + 2 {
                if a.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        assert!(matches!(b.recv(), Err(FramingError::TooLong(_))));
        drop(b);
        t.join().unwrap();
    }

    #[test]
    fn the_limit_is_exact_whatever_the_reads() {
        // A line of exactly the limit is taken; one byte more is refused, also when
        // its end arrives in the read that crossed the limit.
        for (len, ok) in [
            (MAX_REQUEST, true),
            (MAX_REQUEST + 1, false),
            (MAX_REQUEST + 9000, false),
        ] {
            let (a, b) = UnixStream::pair().unwrap();
            let mut b = Conn::limited(b, MAX_REQUEST, Deadline::None);
            let mut line = vec![b' '; len];
            line.push(b'\n');
            let t = std::thread::spawn(move || {
                let mut a = a;
                let _ = a.write_all(&line);
                a
            });
            match b.recv() {
                Ok((l, _)) => assert!(ok && l.len() == len, "a line of {len} bytes was taken"),
                Err(FramingError::TooLong(n)) => assert!(!ok && n == MAX_REQUEST, "{len}"),
                Err(e) => panic!("{len}: {e}"),
            }
            drop(t.join().unwrap());
        }
    }
}
