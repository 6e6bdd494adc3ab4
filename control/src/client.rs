//! The `ctl` side of the control socket.

use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::api::{Envelope, PROTOCOL_VERSION, Request, Response};
use crate::framing::{Conn, FramingError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the daemon at {0}: {1} (is `vswitch daemon` running? --socket or VSWITCH_SOCKET choose another)"
    )]
    Connect(PathBuf, std::io::Error),
    #[error("lost the daemon at {0}: {1}")]
    Lost(PathBuf, FramingError),
    #[error("the daemon's answer is not understood: {0}")]
    Garbled(String),
    /// The daemon refused: its one-line reason.
    #[error("{0}")]
    Refused(String),
}

pub struct Client {
    conn: Conn,
    path: PathBuf,
}

/// The other end closed the connection (a write found it gone).
fn closed_by_peer(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    )
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let s =
            UnixStream::connect(path).map_err(|e| ClientError::Connect(path.to_path_buf(), e))?;
        Ok(Client {
            conn: Conn::new(s),
            path: path.to_path_buf(),
        })
    }

    /// Sends a request (with descriptors) and waits for its answer.
    pub fn call_with_fds(
        &mut self,
        req: Request,
        fds: &[RawFd],
    ) -> Result<serde_json::Value, ClientError> {
        let msg = serde_json::to_vec(&Envelope {
            v: PROTOCOL_VERSION,
            req,
        })
        .map_err(|e| ClientError::Garbled(e.to_string()))?;
        let (line, _) = match self.conn.send(&msg, fds) {
            Ok(()) => self.conn.recv(),
            // The daemon refuses a connection over its limits before reading anything
            // and closes it: its answer may be waiting although the send failed.
            Err(FramingError::Io(e)) if closed_by_peer(&e) => {
                self.conn.recv().map_err(|_| FramingError::Io(e))
            }
            Err(e) => Err(e),
        }
        .map_err(|e| ClientError::Lost(self.path.clone(), e))?;
        let r: Response =
            serde_json::from_slice(&line).map_err(|e| ClientError::Garbled(e.to_string()))?;
        if r.ok {
            Ok(r.data.unwrap_or(serde_json::Value::Null))
        } else {
            Err(ClientError::Refused(
                r.error.unwrap_or_else(|| "refused".into()),
            ))
        }
    }

    pub fn call(&mut self, req: Request) -> Result<serde_json::Value, ClientError> {
        self.call_with_fds(req, &[])
    }

    /// As [`Client::call_with_fds`], the answer read as the type `req` answers with
    /// (see [`crate::api::Reply`]).
    pub fn request_with_fds<T: serde::de::DeserializeOwned>(
        &mut self,
        req: Request,
        fds: &[RawFd],
    ) -> Result<T, ClientError> {
        let v = self.call_with_fds(req, fds)?;
        serde_json::from_value(v).map_err(|e| ClientError::Garbled(e.to_string()))
    }

    /// As [`Client::call`], the answer read as the type `req` answers with.
    pub fn request<T: serde::de::DeserializeOwned>(
        &mut self,
        req: Request,
    ) -> Result<T, ClientError> {
        self.request_with_fds(req, &[])
    }

    /// The connection, for callers that keep it open (a `run` container lives as long).
    pub fn stream(&self) -> &UnixStream {
        &self.conn.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_refusal_before_the_request_is_read_is_what_the_caller_sees() {
        let dir = std::env::temp_dir().join(format!("vswitch-client-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        // A daemon over its connection limit: answers at once and closes.
        let daemon = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"{\"ok\":false,\"error\":\"too many connections: retry shortly\"}\n")
                .unwrap();
        });
        let mut c = Client::connect(&path).unwrap();
        daemon.join().unwrap();
        // The daemon has closed: the send fails, the refusal is still there to read.
        match c.call(Request::Hello) {
            Err(ClientError::Refused(why)) => assert!(why.contains("too many connections")),
            other => panic!("expected the refusal, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
