//! The control socket: a Unix socket reachable by its owner only (mode 0600), each
//! peer's credentials checked (the daemon's own uid, or root), one thread per
//! connection, requests applied one at a time. Connections are counted in pools
//! (`limits.rs`); a request must arrive whole within [`REQUEST_DEADLINE`] (a `vswitch
//! run` connection may stay idle between requests, never mid-request), be at most
//! [`MAX_REQUEST`] bytes and carry descriptors only where it takes them.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::limits::{Limits, Ticket};
use super::{Daemon, DaemonError};
use crate::api::{Envelope, PROTOCOL_VERSION, Request, Response};
use crate::framing::{Conn, Deadline, FramingError, MAX_REQUEST};

/// How long a request may take to arrive (and a `ctl` connection stay idle).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long an answer may wait for a client that does not read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn lock(d: &Mutex<Daemon>) -> std::sync::MutexGuard<'_, Daemon> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds the control socket (refusing to take over one a live daemon answers on).
pub fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |e| DaemonError::Socket(path.to_path_buf(), e);
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another vswitch daemon is listening there",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let l = l.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// Serves requests until the process ends.
pub fn serve(daemon: Daemon, listener: UnixListener) -> Result<(), DaemonError> {
    serve_with_metrics(daemon, listener, None)
}

/// As [`serve`], with Prometheus metrics served on `metrics` from a thread of their own.
pub fn serve_with_metrics(
    daemon: Daemon,
    listener: UnixListener,
    metrics: Option<std::net::TcpListener>,
) -> Result<(), DaemonError> {
    let daemon = Arc::new(Mutex::new(daemon));
    if let Some(m) = metrics {
        crate::metrics::spawn(m, crate::metrics::source_of(daemon.clone()))
            .map_err(DaemonError::Thread)?;
    }
    // Run containers whose process did not come back after a restart.
    {
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("vswitch-timer".into())
            .spawn(move || {
                let mut ticks = 0u64;
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    lock(&d).expire_awaiting();
                    ticks += 1;
                    if ticks % crate::events::PERIOD.as_secs() == 0 {
                        let lines = lock(&d).take_events();
                        for (level, line) in lines {
                            log::log!(level, "{line}");
                        }
                    }
                }
            })
            .map_err(DaemonError::Thread)?;
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let limits = Limits::default();
    let ids = AtomicU64::new(1);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors (or memory): the connection waits in the backlog;
                // retrying at once would spin a core until one is free.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
        };
        let mut conn = Conn::limited(stream, MAX_REQUEST, Deadline::FromCall(REQUEST_DEADLINE));
        let pid = match conn.peer() {
            Ok(p) if p.uid == me || p.uid == 0 => p.pid,
            _ => continue, // dropped: not the daemon's user
        };
        let ticket = match limits.admit(pid) {
            Ok(t) => t,
            Err(why) => {
                let _ = conn
                    .stream
                    .set_write_timeout(Some(Duration::from_millis(100)));
                reply(&mut conn, &Response::err(why));
                continue;
            }
        };
        let _ = conn.stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let d = daemon.clone();
        let _ = std::thread::Builder::new()
            .name("vswitch-conn".into())
            .spawn(move || connection(&d, conn, id, ticket));
    }
    Ok(())
}

/// What each connection thread runs: the connection's requests, one reply each, then
/// what the daemon forgets about the connection.
fn connection(d: &Mutex<Daemon>, conn: Conn, id: u64, ticket: Ticket) {
    client(d, conn, id, ticket);
    lock(d).connection_closed(id);
}

/// Serves `stream` on the calling thread as a `ctl` connection admitted by the accept
/// loop would be served (same framing, limits, deadlines and replies), until it ends:
/// how the `control` fuzz target drives the daemon without a listening socket.
pub fn serve_stream(d: &Mutex<Daemon>, stream: UnixStream, id: u64) {
    let conn = Conn::limited(stream, MAX_REQUEST, Deadline::FromCall(REQUEST_DEADLINE));
    let _ = conn.stream.set_write_timeout(Some(WRITE_TIMEOUT));
    if let Ok(ticket) = Limits::default().admit(0) {
        connection(d, conn, id, ticket);
    }
}

fn reply(conn: &mut Conn, r: &Response) -> bool {
    let text = serde_json::to_vec(r)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"internal error"}"#.to_vec());
    conn.send(&text, &[]).is_ok()
}

/// Does this request take descriptors (the TAP of a `vswitch run` attach)?
fn takes_fds(req: &Request) -> bool {
    matches!(req, Request::Attach(a) if a.fd)
}

fn client(d: &Mutex<Daemon>, mut conn: Conn, id: u64, mut ticket: Ticket) {
    loop {
        let (msg, fds) = match conn.recv() {
            Ok(m) => m,
            Err(e @ FramingError::TooManyFds) => {
                if reply(&mut conn, &Response::err(e)) {
                    continue;
                }
                return;
            }
            Err(e @ (FramingError::TooLong(_) | FramingError::TimedOut(_))) => {
                reply(&mut conn, &Response::err(e));
                return;
            }
            Err(_) => return,
        };
        let env = match serde_json::from_slice::<Envelope>(&msg) {
            Ok(env) if env.v != PROTOCOL_VERSION => Err(format!(
                "protocol version {} is not spoken here (this daemon speaks {PROTOCOL_VERSION}); use a matching vswitch",
                env.v
            )),
            Ok(env) if !fds.is_empty() && !takes_fds(&env.req) => Err(format!(
                "this request takes no descriptors ({} were sent and closed)",
                fds.len()
            )),
            Ok(env) => Ok(env.req),
            Err(e) => Err(format!("bad request: {e}")),
        };
        let resp = match env {
            Ok(Request::Capture { port, count }) => {
                capture(d, conn, &port, count);
                return;
            }
            Ok(req) if takes_fds(&req) => run_attach(d, req, fds, id, &mut ticket, &mut conn),
            Ok(req) => lock(d).handle(req, fds, id),
            Err(e) => Response::err(e),
        };
        if !reply(&mut conn, &resp) {
            return;
        }
    }
}

/// An attach with a descriptor: the connection becomes a `vswitch run` container's,
/// counted in the run pool, idle between requests for as long as the container lives.
fn run_attach(
    d: &Mutex<Daemon>,
    req: Request,
    fds: Vec<std::os::fd::OwnedFd>,
    id: u64,
    ticket: &mut Ticket,
    conn: &mut Conn,
) -> Response {
    if let Err(why) = ticket.reserve_run() {
        return Response::err(why);
    }
    let (resp, owner) = {
        let mut g = lock(d);
        let r = g.handle(req, fds, id);
        (r, g.owns_connection(id))
    };
    ticket.settle(owner);
    if ticket.is_run() {
        conn.set_deadline(Deadline::FromFirstByte(REQUEST_DEADLINE));
    }
    resp
}

/// Streams a port's frames as pcap after an OK line, until `count` frames went out or
/// the client goes away.
fn capture(d: &Mutex<Daemon>, mut conn: Conn, port: &str, count: Option<u64>) {
    use std::io::Write;
    let rings = match lock(d).start_capture(port) {
        Ok(r) => r,
        Err(e) => {
            let _ = conn.send(
                &serde_json::to_vec(&Response::err(e)).unwrap_or_default(),
                &[],
            );
            return;
        }
    };
    let ok = Response::ok(crate::api::Reply::Capturing(crate::api::Capturing {
        capturing: port.to_string(),
    }));
    let mut rings = rings;
    let mut sent = 0u64;
    let mut out = Vec::new();
    let stream_ok = conn
        .send(&serde_json::to_vec(&ok).unwrap_or_default(), &[])
        .is_ok()
        && conn
            .stream
            .write_all(&dataplane::capture::pcap_header())
            .is_ok();
    let _ = conn.stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut idle = 0u32;
    while stream_ok && count.is_none_or(|c| sent < c) {
        out.clear();
        for r in rings.iter_mut() {
            while let Ok(f) = r.pop() {
                if count.is_some_and(|c| sent >= c) {
                    break;
                }
                dataplane::capture::pcap_record(&f, &mut out);
                sent += 1;
            }
        }
        if out.is_empty() {
            idle += 1;
            // Notice a client that went away even when nothing is captured.
            if idle % 50 == 0 && peer_gone(&conn) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        idle = 0;
        if conn.stream.write_all(&out).is_err() {
            break;
        }
    }
    lock(d).stop_capture();
}

fn peer_gone(conn: &Conn) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: a non-blocking peek into a one-byte buffer.
    let n = unsafe {
        libc::recv(
            conn.stream.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
}
