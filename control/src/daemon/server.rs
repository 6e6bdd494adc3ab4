//! The control socket: a Unix socket reachable by its owner only (mode 0600), each
//! peer's credentials checked (the daemon's own uid, or root), one thread per
//! connection, requests applied one at a time.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Daemon, DaemonError};
use crate::api::{Envelope, PROTOCOL_VERSION, Request, Response};
use crate::wire::{Conn, WireError};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

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
    let daemon = Arc::new(Mutex::new(daemon));
    // Run containers whose process did not come back after a restart.
    {
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("vswitch-timer".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    lock(&d).expire_awaiting();
                }
            })
            .map_err(|e| DaemonError::Refused(format!("cannot start a thread: {e}")))?;
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let active = Arc::new(AtomicUsize::new(0));
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
        let conn = Conn::new(stream);
        match conn.peer() {
            Ok(p) if p.uid == me || p.uid == 0 => {}
            _ => continue, // dropped: not the daemon's user
        }
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (d, a) = (daemon.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("vswitch-conn".into())
            .spawn(move || {
                client(&d, conn, id);
                lock(&d).connection_closed(id);
                a.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn client(d: &Mutex<Daemon>, mut conn: Conn, id: u64) {
    loop {
        let (msg, fds) = match conn.recv() {
            Ok(m) => m,
            Err(WireError::TooLong) => {
                let r = Response::err(WireError::TooLong);
                let _ = conn.send(&serde_json::to_vec(&r).unwrap_or_default(), &[]);
                return;
            }
            Err(_) => return,
        };
        if let Ok(Envelope {
            v: PROTOCOL_VERSION,
            req: Request::Capture { port, count },
        }) = serde_json::from_slice::<Envelope>(&msg)
        {
            capture(d, conn, &port, count);
            return;
        }
        let resp = match serde_json::from_slice::<Envelope>(&msg) {
            Ok(env) if env.v != PROTOCOL_VERSION => Response::err(format!(
                "protocol version {} is not spoken here (this daemon speaks {PROTOCOL_VERSION}); use a matching vswitch",
                env.v
            )),
            Ok(env) => lock(d).handle(env.req, fds, id),
            Err(e) => Response::err(format!("bad request: {e}")),
        };
        let text = serde_json::to_vec(&resp)
            .unwrap_or_else(|_| br#"{"ok":false,"error":"internal error"}"#.to_vec());
        if conn.send(&text, &[]).is_err() {
            return;
        }
    }
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
    let ok = Response::ok(serde_json::json!({"capturing": port}));
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
