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
use crate::api::{Envelope, PROTOCOL_VERSION, Response};
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
        let Ok(stream) = stream else { continue };
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
