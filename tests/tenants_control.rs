//! The control plane under failure and abuse: a panic ends the daemon and a restart
//! restores it; restores never touch the wrong process; a damaged state file is refused
//! for the last good one; the control socket holds up against oversized, numerous,
//! slow and descriptor-laden clients while `ctl` keeps answering.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

/// Starts a daemon with `env` (`VAR=value ...`) in its environment.
fn start_with_env(env: &str) -> Daemon {
    let mut d = Daemon {
        dir: TempDir::new("d"),
        proc: None,
        args: env_daemon_args(),
        netns: None,
    };
    let sock = d.socket();
    let cmd = format!(
        "{env} exec {} daemon --socket {} --state-dir {} {} 2>>{}",
        bin(),
        sock.display(),
        d.dir.path().join("state").display(),
        d.args.join(" "),
        d.dir.path().join("daemon.log").display()
    );
    d.proc = Some(Proc::spawn(&cmd));
    let up = eventually(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    assert!(up, "the daemon did not start: {}", d.log());
    d
}

/// The ports as `port ls --json` shows them, without the slot numbers (which may
/// differ after a restart).
fn ports(d: &Daemon) -> Vec<serde_json::Value> {
    let mut v = d
        .ctl_json(&["port", "ls"])
        .as_array()
        .cloned()
        .expect("list");
    for p in &mut v {
        if let Some(o) = p.as_object_mut() {
            o.remove("slot");
        }
    }
    v
}

/// A process living in `ns` (its network namespace is what `attach --pid` takes).
fn sleeper(ns: &Netns) -> Proc {
    let p = ns.spawn("exec sleep 1000");
    let pid = p.pid();
    let inside = eventually(Duration::from_secs(5), || {
        netns_of(pid).is_some() && netns_of(pid) == netns_of_path(&ns.path())
    });
    assert!(inside, "process {pid} did not enter {}", ns.name);
    p
}

fn netns_of(pid: u32) -> Option<u64> {
    netns_of_path(&format!("/proc/{pid}/ns/net"))
}

fn netns_of_path(p: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_panic_ends_the_daemon_and_a_restart_restores_it() {
    require_root();
    require(&["ping"]);
    let mut d = start_with_env("VSWITCH_TEST_PANIC=gateway");
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let p = sleeper(&b);
    let pid = p.pid().to_string();
    d.ctl_ok(&[
        "attach",
        "bridge",
        "--name",
        "web",
        "--netns",
        &a.path(),
        "-p",
        "80",
    ]);
    d.ctl_ok(&["attach", "bridge", "--name", "db", "--pid", &pid]);
    let before = ports(&d);
    assert_eq!(before.len(), 2, "{before:?}");
    let db_ip = before[0]["ip"].as_str().expect("ip").to_string();
    a.must(&format!("ping -c1 -W2 {db_ip}"));

    d.ctl(&["network", "create", "vswitch-test-panic"]);
    let out = d
        .proc
        .take()
        .expect("running")
        .wait(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(70), "exit status: {:?}", out.status);
    let log = d.log();
    let fatal: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert_eq!(fatal.len(), 1, "one line about the panic: {log}");
    assert!(
        fatal[0].starts_with("vswitch: fatal: thread vswitch-gateway panicked"),
        "{log}"
    );
    assert!(!log.contains("RUST_BACKTRACE"), "no backtrace hint: {log}");
    assert!(d.ctl(&["network", "ls"]).status.code() != Some(0));

    // What a supervisor does: start it again, here without the test switch.
    d.launch();
    assert_eq!(ports(&d), before, "log: {}", d.log());
    a.must(&format!("ping -c1 -W2 {db_ip}"));
    b.must("ping -c1 -W2 172.17.0.1");
    let web_port = before[1]["published"][0]["host_port"].clone();
    assert!(web_port.as_u64().is_some_and(|p| p > 0), "{before:?}");
    drop(p);
}

/// A panic on a worker or on a connection thread ends the daemon as one on the gateway
/// thread does: status 70, one line naming the thread, and a restart serves again.
#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_panic_on_a_worker_or_a_connection_thread_ends_the_daemon() {
    require_root();
    require(&["ping"]);
    for (site, thread) in [
        ("worker", "vswitch-worker-0"),
        ("connection", "vswitch-conn"),
    ] {
        let mut d = start_with_env(&format!("VSWITCH_TEST_PANIC={site}"));
        let a = Netns::new("a");
        d.ctl_ok(&["attach", "bridge", "--name", "web", "--netns", &a.path()]);
        // Alive: the worker forwards the container's frames to the gateway and back.
        a.must("ping -c1 -W2 172.17.0.1");
        let _ = d.ctl(&["network", "create", "vswitch-test-panic"]);
        let out = d
            .proc
            .take()
            .expect("running")
            .wait(Duration::from_secs(10));
        let log = d.log();
        assert_eq!(
            out.status.code(),
            Some(70),
            "{site}: {:?}: {log}",
            out.status
        );
        let fatal: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        assert_eq!(fatal.len(), 1, "{site}: one line about the panic: {log}");
        assert!(
            fatal[0].starts_with(&format!("vswitch: fatal: thread {thread} panicked at ")),
            "{site}: {log}"
        );
        d.launch();
        assert_eq!(ports(&d).len(), 1, "{site}: {}", d.log());
        a.must("ping -c1 -W2 172.17.0.1");
    }
}

/// Starts `ip netns exec NS sleep` as process `pid` (a pid freed just before), by
/// setting the kernel's last pid; other processes on the machine may race for it, so
/// this tries a number of times.
fn sleeper_with_pid(ns: &Netns, pid: u32) -> Option<Proc> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let p = Proc {
            child: std::process::Command::new("ip")
                .args(["netns", "exec", &ns.name, "sleep", "1000"])
                .spawn()
                .ok()?,
        };
        if p.pid() == pid {
            return Some(p);
        }
    }
    None
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_pid_container_whose_pid_is_another_process_is_not_restored() {
    require_root();
    let mut d = Daemon::start(&[]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let first = sleeper(&a);
    let pid = first.pid();
    d.ctl_ok(&[
        "attach",
        "bridge",
        "--name",
        "db",
        "--pid",
        &pid.to_string(),
    ]);
    a.must("ip link show eth0");
    d.kill9();
    drop(first);
    let second = sleeper_with_pid(&b, pid).expect("could not start a process with the freed pid");
    assert!(eventually(Duration::from_secs(5), || netns_of(pid)
        == netns_of_path(&b.path())));

    d.launch();
    // The socket accepts before the restore is done: `ctl` waits for it.
    d.ctl_ok(&["network", "ls"]);
    let log = d.log();
    let line: Vec<&str> = log.lines().filter(|l| l.contains("not restored")).collect();
    assert_eq!(line.len(), 1, "{log}");
    assert!(
        line[0].starts_with("vswitch: container db not restored: pid")
            && line[0].contains("another process"),
        "{log}"
    );
    let ls = d.ctl_json(&["port", "ls"]);
    assert_eq!(ls[0]["name"], "db", "{ls}");
    assert!(
        ls[0]["not_restored"]
            .as_str()
            .is_some_and(|w| w.contains("another process")),
        "{ls}"
    );
    assert!(d.ctl_ok(&["port", "ls"]).contains("NOT RESTORED"));
    // Nothing was created in the other process's namespace, and nothing is deleted
    // there when the stale container goes.
    b.must("ip link add mine0 type veth peer name mine1");
    assert!(
        !b.sh("ip link show eth0").status.success(),
        "eth0 in the wrong process"
    );
    d.ctl_ok(&["network", "create", "front"]);
    let e = d.ctl_err(&["connect", "front", "db"]);
    assert!(e.contains("another process"), "{e}");
    d.ctl_ok(&["detach", "db"]);
    b.must("ip link show mine0");
    // The same pid attached afresh is the new process's.
    d.ctl_ok(&[
        "attach",
        "bridge",
        "--name",
        "db2",
        "--pid",
        &pid.to_string(),
    ]);
    b.must("ip link show eth0");
    drop(second);
}

/// A process that moves into the network namespace at argv[1] on SIGUSR1 (same pid,
/// same start time: only its namespace changes).
const MOVER: &str = r#"
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
def move(*_):
    fd = os.open(sys.argv[1], os.O_RDONLY)
    r = libc.setns(fd, 0x40000000)
    print("moved" if r == 0 else "setns failed %d" % ctypes.get_errno(), flush=True)
signal.signal(signal.SIGUSR1, move)
print("ready", flush=True)
while True:
    time.sleep(1)
"#;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_pid_container_whose_process_changed_namespace_is_not_restored() {
    require_root();
    require(&["python3", "ping"]);
    let mut d = Daemon::start(&[]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let dir = TempDir::new("mv");
    let script = dir.path().join("mover.py");
    std::fs::write(&script, MOVER).expect("script");
    let mut p = a.spawn(&format!("exec python3 {} {}", script.display(), b.path()));
    assert_eq!(p.line(), "ready", "the mover did not start");
    let pid = p.pid();
    assert!(
        eventually(Duration::from_secs(5), || netns_of(pid)
            == netns_of_path(&a.path())),
        "process {pid} did not enter {}",
        a.name
    );
    d.ctl_ok(&[
        "attach",
        "bridge",
        "--name",
        "db",
        "--pid",
        &pid.to_string(),
    ]);
    a.must("ping -c1 -W2 172.17.0.1");
    d.kill9();
    // The same process (pid and start time unchanged) moves to another namespace.
    must(&format!("kill -USR1 {pid}"));
    if !eventually(Duration::from_secs(5), || {
        netns_of(pid) == netns_of_path(&b.path())
    }) {
        let out = p.wait(Duration::from_secs(1));
        panic!(
            "process {pid} did not move to {}: {}{}",
            b.name,
            out.stdout_text(),
            out.stderr_text()
        );
    }
    d.launch();
    d.ctl_ok(&["network", "ls"]);
    let log = d.log();
    let line: Vec<&str> = log.lines().filter(|l| l.contains("not restored")).collect();
    assert_eq!(line.len(), 1, "{log}");
    assert!(
        line[0].starts_with("vswitch: container db not restored: process")
            && line[0].contains("another network namespace"),
        "{log}"
    );
    assert!(d.ctl_ok(&["port", "ls"]).contains("NOT RESTORED"));
    assert!(
        !b.sh("ip link show eth0").status.success(),
        "eth0 created in the namespace the process moved to"
    );
    // The process itself can be attached afresh where it is now.
    d.ctl_ok(&["detach", "db"]);
    d.ctl_ok(&[
        "attach",
        "bridge",
        "--name",
        "db",
        "--pid",
        &pid.to_string(),
    ]);
    b.must("ping -c1 -W2 172.17.0.1");
    drop(p);
}

fn state_path(d: &Daemon) -> std::path::PathBuf {
    d.dir.path().join("state").join("state.json")
}

fn edit_state(d: &Daemon, f: impl FnOnce(&mut serde_json::Value)) {
    let p = state_path(d);
    let text = std::fs::read_to_string(&p).expect("state.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
}

/// Refusals of a state file the daemon would never have written, one edit each.
type Edit = fn(&mut serde_json::Value);
const BAD_STATES: &[(Edit, &str)] = &[
    (
        |v| v["networks"]["back"]["vlan"] = 10.into(),
        "both use VLAN 10",
    ),
    (
        |v| v["networks"]["back"]["vlan"] = 4095.into(),
        "VLAN 4095 is out of 1-4094",
    ),
    (
        |v| {
            v["networks"]["back"]["subnet"] = v["networks"]["front"]["subnet"].clone();
            v["networks"]["back"]["gateway"] = v["networks"]["front"]["gateway"].clone();
        },
        "overlap",
    ),
    (
        |v| v["networks"]["back"]["subnet"] = "10.99.0.0/31".into(),
        "/8 to /30",
    ),
    (
        |v| v["networks"]["back"]["domain"] = v["networks"]["front"]["domain"].clone(),
        "same bridge domain",
    ),
    (
        |v| v["networks"]["back"]["name"] = "front".into(),
        "stored under the name",
    ),
    (
        |v| v["containers"]["web"]["endpoints"][0]["network"] = "gone".into(),
        "does not exist",
    ),
    (
        |v| {
            v["containers"]["db"]["endpoints"][0]["ip"] =
                v["containers"]["web"]["endpoints"][0]["ip"].clone()
        },
        "both have address",
    ),
    (
        |v| {
            v["containers"]["db"]["endpoints"][0]["mac"] =
                v["containers"]["web"]["endpoints"][0]["mac"].clone()
        },
        "both have MAC",
    ),
    (
        |v| *v = serde_json::json!({"version": 1, "networks": 7}),
        "is damaged",
    ),
];

fn fallbacks(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("starting from the last good state"))
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn an_inconsistent_state_is_refused_for_the_last_good_one() {
    require_root();
    let mut d = Daemon::start(&[]);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    d.ctl_ok(&["network", "create", "front", "--vlan", "10"]);
    d.ctl_ok(&["network", "create", "back", "--vlan", "20"]);
    d.ctl_ok(&["attach", "front", "--name", "web", "--netns", &a.path()]);
    d.ctl_ok(&["attach", "front", "--name", "db", "--netns", &b.path()]);
    let good = (d.ctl_json(&["network", "ls"]), ports(&d));
    let state_dir = d.dir.path().join("state");
    assert!(state_dir.join("state.json.good").exists());
    for (n, (edit, want)) in BAD_STATES.iter().enumerate() {
        d.kill9();
        edit_state(&d, *edit);
        d.launch();
        d.ctl_ok(&["network", "ls"]);
        let lines = fallbacks(&d.log());
        assert_eq!(lines.len(), n + 1, "case {want:?}: {}", d.log());
        let last = lines.last().map(String::as_str).unwrap_or_default();
        assert!(
            last.starts_with("vswitch: state ") && last.contains(want),
            "case {want:?}: {last}"
        );
        assert!(state_dir.join("state.json.refused").exists());
        assert_eq!(
            (d.ctl_json(&["network", "ls"]), ports(&d)),
            good,
            "case {want:?}"
        );
    }
    a.must("ping -c1 -W2 172.18.0.1");

    // A name written twice (JSON keeps only one of them when read naively).
    d.kill9();
    let text = std::fs::read_to_string(state_path(&d)).expect("state");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let twice = format!(
        "\"networks\": {{\"back\": {},",
        serde_json::to_string(&v["networks"]["front"]).expect("json")
    );
    std::fs::write(state_path(&d), text.replacen("\"networks\": {", &twice, 1)).expect("write");
    d.launch();
    d.ctl_ok(&["network", "ls"]);
    let lines = fallbacks(&d.log());
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(
        last.contains("the name \"back\" appears twice"),
        "{}",
        d.log()
    );
    assert_eq!((d.ctl_json(&["network", "ls"]), ports(&d)), good);

    // Without a last good state there is nothing to fall back to: one line, no start.
    d.kill9();
    std::fs::remove_file(state_dir.join("state.json.good")).expect("rm good");
    std::fs::write(state_path(&d), "{\"version\": 1,").expect("write");
    let sock = d.socket();
    let o = vswitch(&[
        "daemon",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "--state-dir",
        state_dir.to_str().unwrap_or_default(),
    ]);
    assert!(!o.status.success());
    let e = o.stderr_text();
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("is damaged") && e.contains("no usable last good state"),
        "{e}"
    );
}

// ---- the control socket under abuse ---------------------------------------------

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `ctl network ls` and `ctl stats` over and over in the background while an
/// abuse goes on; `stop` returns how many rounds ran and the failures seen.
struct Watch {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Watch {
    fn start(d: &Daemon) -> Watch {
        require(&["timeout"]);
        let sock = d.socket().display().to_string();
        let (stop, rounds) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !s.load(Ordering::Relaxed) {
                for cmd in ["network ls", "stats"] {
                    let o = sh(&format!("timeout 10 {} ctl --socket {sock} {cmd}", bin()));
                    if !o.status.success() {
                        failures.push(format!("ctl {cmd}: {}", o.stderr_text().trim()));
                    }
                }
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            failures
        });
        Watch {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Waits for at least `n` more rounds, then stops; fails the test on any failure.
    fn finish(mut self, n: usize) {
        let base = self.rounds.load(Ordering::Relaxed);
        let ran = eventually(Duration::from_secs(60), || {
            self.rounds.load(Ordering::Relaxed) >= base + n
        });
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .thread
            .take()
            .map(|t| t.join().expect("watch"))
            .unwrap_or_default();
        assert!(ran, "ctl did not keep answering: {failures:?}");
        assert!(failures.is_empty(), "ctl failed meanwhile: {failures:?}");
    }
}

fn daemon_pid(d: &Daemon) -> u32 {
    d.proc.as_ref().expect("running").pid()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// The daemon's next line on `s` (or what ended the connection), waiting up to `t`.
fn answer(s: &UnixStream, t: Duration) -> String {
    s.set_read_timeout(Some(t)).expect("timeout");
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(0) => "<closed>".into(),
        Ok(_) => line,
        Err(e) => format!("<{:?}>", e.kind()),
    }
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

#[test]
fn a_5_mib_line_is_refused_and_ctl_keeps_answering() {
    let d = Daemon::start(&[]);
    let watch = Watch::start(&d);
    let s = UnixStream::connect(d.socket()).expect("connect");
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 16];
        let mut sent = 0usize;
        while sent < 5 << 20 && w.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let a = answer(&s, Duration::from_secs(20));
    assert!(
        a.contains("longer than") || a == "<closed>" || a.contains("ConnectionReset"),
        "{a}"
    );
    let sent = writer.join().expect("writer");
    assert!(sent < 5 << 20, "the daemon read all {sent} bytes");
    watch.finish(3);
}

#[test]
fn a_thousand_connections_do_not_lock_out_ctl() {
    raise_fd_limit();
    let d = Daemon::start(&[]);
    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(UnixStream::connect(d.socket()).expect("connect"));
    }
    let watch = Watch::start(&d);
    watch.finish(3);
    // The ones past the limit were told why and closed.
    let last = answer(held.last().expect("one"), Duration::from_secs(5));
    assert!(last.contains("too many connections"), "{last}");
    drop(held);
    d.ctl_ok(&["network", "ls"]);
}

#[test]
fn slow_and_silent_clients_are_cut_off() {
    let d = Daemon::start(&[]);
    let watch = Watch::start(&d);
    let mut silent = Vec::new();
    let mut partial = Vec::new();
    // 31 connections: within one process's share (32).
    for _ in 0..15 {
        silent.push(UnixStream::connect(d.socket()).expect("connect"));
        let mut p = UnixStream::connect(d.socket()).expect("connect");
        p.write_all(br#"{"v": 1, "cmd": "#).expect("write");
        partial.push(p);
    }
    // One byte every second: never a whole request.
    let drip = UnixStream::connect(d.socket()).expect("connect");
    let mut dw = drip.try_clone().expect("clone");
    let dripping = std::thread::spawn(move || {
        for _ in 0..40 {
            if dw.write_all(b" ").is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        false
    });
    for s in silent.iter().chain(partial.iter()).chain([&drip]) {
        let a = answer(s, Duration::from_secs(30));
        assert!(a.contains("not complete within"), "{a}");
        assert_eq!(answer(s, Duration::from_secs(5)), "<closed>");
    }
    assert!(
        dripping.join().expect("drip"),
        "the dripping client was never cut off"
    );
    watch.finish(3);
}

/// Sends `data` with `fds` attached (SCM_RIGHTS) in one sendmsg.
fn send_fds(s: &UnixStream, data: &[u8], fds: &[i32]) -> std::io::Result<()> {
    let bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr points at buffers that outlive the call; the control buffer holds
    // one SCM_RIGHTS message with `fds`.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut i32, fds.len());
        libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn descriptor_spam_changes_nothing() {
    let d = Daemon::start(&[]);
    let pid = daemon_pid(&d);
    d.ctl_ok(&["network", "ls"]);
    let base = open_fds(pid);
    let watch = Watch::start(&d);
    let null = std::fs::File::open("/dev/null").expect("null");
    let fds = vec![null.as_raw_fd(); 200];
    let ls = br#"{"v": 1, "cmd": "network_ls"}"#;

    // Descriptors on a request that takes none.
    let s = UnixStream::connect(d.socket()).expect("connect");
    send_fds(&s, &[ls.as_slice(), b"\n"].concat(), &fds[..4]).expect("send");
    let a = answer(&s, Duration::from_secs(10));
    assert!(a.contains("takes no descriptors"), "{a}");
    // More than one message may carry, at once.
    send_fds(&s, &[ls.as_slice(), b"\n"].concat(), &fds).expect("send");
    let a = answer(&s, Duration::from_secs(10));
    assert!(a.contains("too many descriptors"), "{a}");
    // Many small pieces of one request, each with descriptors.
    let s2 = UnixStream::connect(d.socket()).expect("connect");
    for b in ls.iter() {
        if send_fds(&s2, &[*b], &fds[..8]).is_err() {
            break;
        }
    }
    let _ = send_fds(&s2, b"\n", &fds[..8]);
    let a = answer(&s2, Duration::from_secs(10));
    assert!(a.contains("too many descriptors"), "{a}");
    // The same connection still answers a clean request.
    (&s2)
        .write_all(&[ls.as_slice(), b"\n"].concat())
        .expect("write");
    let a = answer(&s2, Duration::from_secs(10));
    assert!(a.contains(r#""ok":true"#), "{a}");
    drop((s, s2));
    watch.finish(2);
    assert!(
        eventually(Duration::from_secs(10), || open_fds(pid) <= base + 2),
        "descriptors left open in the daemon: {} before, {} after",
        base,
        open_fds(pid)
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn three_hundred_run_containers_do_not_lock_out_ctl() {
    require_root();
    require(&["sleep"]);
    raise_fd_limit();
    let d = Daemon::start(&[]);
    let sock = d.socket().display().to_string();
    let mut runs = Vec::new();
    for i in 0..300 {
        runs.push(Proc::spawn(&format!(
            "exec {} run --socket {sock} --network bridge --name r{i} -- sleep 1000",
            bin()
        )));
        if i % 50 == 49 {
            // Let the batch attach before the next (the machine is small).
            let n = i + 1;
            let up = eventually(Duration::from_secs(60), || {
                d.ctl_json(&["port", "ls"]).as_array().map_or(0, Vec::len) >= n
            });
            assert!(up, "{n} run containers did not attach: {}", d.log());
        }
    }
    let ls = d.ctl_json(&["port", "ls"]);
    assert_eq!(ls.as_array().map_or(0, Vec::len), 300);
    // Every run connection is open and ctl still has its whole pool.
    let watch = Watch::start(&d);
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(UnixStream::connect(d.socket()).expect("connect"));
    }
    watch.finish(3);
    let s = UnixStream::connect(d.socket()).expect("connect");
    (&s).write_all(b"{\"v\": 1, \"cmd\": \"hello\"}\n")
        .expect("write");
    let a = answer(&s, Duration::from_secs(10));
    assert!(a.contains(r#""ok":true"#), "{a}");
    drop(runs);
    let gone = eventually(Duration::from_secs(60), || {
        d.ctl_json(&["port", "ls"])
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    assert!(gone, "run containers were not detached when they ended");
}

/// Holds control connections from one process: opens N, asks `hello` on each, then
/// opens EXTRA more and prints what each of those was told; keeps the first N alive
/// (a `hello` on each every 2 s, within the 10 s idle limit) until killed.
const HOLDER: &str = r#"
import socket, sys, time
path, n, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def line(s):
    b = b""
    while not b.endswith(b"\n"):
        c = s.recv(4096)
        if not c:
            return "<closed>"
        b += c
    return b.decode().strip()
def hello(s):
    s.sendall(b'{"v": 1, "cmd": "hello"}\n')
    return line(s)
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    held.append(s)
ok = sum('"ok":true' in hello(s) for s in held)
told = []
for _ in range(extra):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    told.append(line(s))
print("ok=%d" % ok, flush=True)
for t in told:
    print("told", t, flush=True)
while True:
    time.sleep(2)
    for s in held:
        hello(s)
"#;

/// Starts a holder; returns it and its report (the `ok=` line, then one line per
/// extra connection).
fn holder(d: &Daemon, script: &std::path::Path, n: usize, extra: usize) -> (Proc, Vec<String>) {
    let mut p = Proc::spawn(&format!(
        "exec python3 {} {} {n} {extra}",
        script.display(),
        d.socket().display()
    ));
    let out = p.child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let report: Vec<String> = (0..=extra)
        .map(|_| lines.next().and_then(Result::ok).unwrap_or_default())
        .collect();
    (p, report)
}

#[test]
fn the_ctl_pool_holds_256_connections_and_32_per_process() {
    require(&["python3"]);
    let d = Daemon::start(&[]);
    let dir = TempDir::new("hold");
    let script = dir.path().join("holder.py");
    std::fs::write(&script, HOLDER).expect("script");
    // One process: 32 connections served, the 33rd told why and closed.
    let (first, report) = holder(&d, &script, 32, 1);
    assert_eq!(report[0], "ok=32", "{report:?}\n{}", d.log());
    assert!(
        report[1].contains("too many connections from process"),
        "{report:?}"
    );
    // Seven more processes fill the pool to 256, every connection served.
    let mut all = vec![first];
    for _ in 0..7 {
        let (p, report) = holder(&d, &script, 32, 0);
        assert_eq!(report[0], "ok=32", "{report:?}");
        all.push(p);
    }
    // The 257th, from a process of its own, is refused for the pool.
    let (_p, report) = holder(&d, &script, 0, 1);
    assert!(
        report[1].contains("too many connections (256 ctl clients connected)"),
        "{report:?}"
    );
    // Slots come back when a process goes.
    drop(all.pop());
    let admitted = eventually(Duration::from_secs(10), || {
        holder(&d, &script, 1, 0).1[0] == "ok=1"
    });
    assert!(admitted, "the freed slots were not given back");
}

/// Sends `{"v": 1, "cmd": "hello"}` one byte at a time over `spread`, then returns the
/// answer and when it came.
fn dripped_hello(sock: &std::path::Path, spread: Duration) -> (String, Duration) {
    let s = UnixStream::connect(sock).expect("connect");
    let t0 = std::time::Instant::now();
    let req = b"{\"v\": 1, \"cmd\": \"hello\"}\n";
    let gap = spread / req.len() as u32;
    for b in req {
        (&s).write_all(&[*b]).expect("write");
        std::thread::sleep(gap);
    }
    let a = answer(&s, Duration::from_secs(20));
    (a, t0.elapsed())
}

#[test]
fn a_request_has_ten_seconds_to_arrive() {
    let d = Daemon::start(&[]);
    // A silent connection is cut at the deadline, not before...
    let silent = UnixStream::connect(d.socket()).expect("connect");
    let t0 = std::time::Instant::now();
    // ...while a request sent slowly over 7 s is served.
    let sock = d.socket();
    let slow = std::thread::spawn(move || dripped_hello(&sock, Duration::from_secs(7)));
    let a = answer(&silent, Duration::from_secs(30));
    let cut = t0.elapsed();
    assert!(a.contains("not complete within 10s"), "{a}");
    assert!(
        cut >= Duration::from_millis(9900),
        "cut after {cut:?}, before the 10 s deadline"
    );
    let (got, took) = slow.join().expect("slow client");
    assert!(
        got.contains(r#""ok":true"#),
        "a request sent over {took:?} was not served: {got}"
    );
}

#[test]
fn a_request_may_be_64_kib_and_not_a_byte_more() {
    let d = Daemon::start(&[]);
    // `hello` padded with spaces to exactly N bytes before its newline.
    let padded = |n: usize| {
        let mut r = b"{\"v\": 1, \"cmd\": \"hello\"".to_vec();
        r.resize(n - 1, b' ');
        r.extend_from_slice(b"}\n");
        r
    };
    for (len, served) in [(65536, true), (65537, false), (70000, false)] {
        let s = UnixStream::connect(d.socket()).expect("connect");
        // One write: the daemon reads it 16 KiB at a time, so the end of the line
        // arrives in the read that crosses the limit.
        let _ = (&s).write_all(&padded(len));
        let a = answer(&s, Duration::from_secs(10));
        if served {
            assert!(a.contains(r#""ok":true"#), "{len} bytes: {a}");
        } else {
            assert!(a.contains("longer than 65536 bytes"), "{len} bytes: {a}");
            assert_eq!(answer(&s, Duration::from_secs(5)), "<closed>");
        }
    }
    d.ctl_ok(&["network", "ls"]);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn only_the_daemons_user_is_served() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    require(&["setpriv", "socat"]);
    let d = Daemon::start(&[]);
    let sock = d.socket().display().to_string();
    let hello = |who: &str| {
        let o = sh(&format!(
            "echo '{{\"v\": 1, \"cmd\": \"hello\"}}' | {who} socat -t 5 - UNIX-CONNECT:{sock}"
        ));
        (o.stdout_text(), o.stderr_text())
    };
    let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    // Root is served (the control), nobody cannot even open the socket (mode 0600)...
    assert!(hello("").0.contains(r#""ok":true"#), "{:?}", hello(""));
    let (out, err) = hello(nobody);
    assert!(
        out.is_empty() && err.contains("Permission denied"),
        "{out}{err}"
    );
    // ...and with the socket opened to everyone, the daemon itself refuses the peer
    // (SO_PEERCRED): the connection closes without an answer.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("dir");
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).expect("sock");
    let (out, err) = hello(nobody);
    assert!(out.trim().is_empty(), "nobody was answered: {out}");
    assert!(!err.contains("Permission denied"), "{err}");
    assert!(hello("").0.contains(r#""ok":true"#));
    d.ctl_ok(&["network", "ls"]);
}
