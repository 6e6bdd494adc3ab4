//! Message framing on the control socket: newline-terminated JSON, with file
//! descriptors passed alongside (SCM_RIGHTS), and the peer's credentials.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::api::MAX_MESSAGE;

/// The most descriptors one message carries.
const MAX_FDS: usize = 8;

/// One end of a control connection.
pub struct Conn {
    pub stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// The process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Conn {
    pub fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
        }
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
    pub fn recv(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>), WireError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                return Ok((line, std::mem::take(&mut self.fds)));
            }
            if self.buf.len() > MAX_MESSAGE {
                return Err(WireError::TooLong);
            }
            let mut chunk = [0u8; 16384];
            let n = recv_with_fds(self.stream.as_raw_fd(), &mut chunk, &mut self.fds)?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        }
    }

    /// Bytes received after the last message, not yet returned (a stream that follows a
    /// message, such as a capture, starts there).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Sends one message (a newline is added), with descriptors when given.
    pub fn send(&mut self, msg: &[u8], fds: &[RawFd]) -> Result<(), WireError> {
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

fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
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
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n)
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
        assert!(matches!(b.recv(), Err(WireError::Closed)));
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let p = std::env::temp_dir().join(format!("vswitch-wire-{}", std::process::id()));
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
        assert!(matches!(b.recv(), Err(WireError::TooLong)));
        drop(b);
        t.join().unwrap();
    }
}
