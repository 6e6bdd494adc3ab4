//! What the integration tests share: the binary under test, a daemon per test in a
//! private directory, network namespaces, and running real tools inside them.
//!
//! Everything a test creates carries a unique prefix (`vt<pid>x<n>`) and is removed on
//! drop, also when the test fails: namespaces (with the TAPs inside them), daemons
//! (killed by pid), temporary directories.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `vswitch` binary cargo built for this test run.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vswitch")
}

pub trait OutputText {
    fn stdout_text(&self) -> String;
    fn stderr_text(&self) -> String;
}

impl OutputText for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `vswitch ARGS...` to completion.
pub fn vswitch(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin()))
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call: `vt<pid>x<n>` plus a tag.
pub fn unique(tag: &str) -> String {
    format!(
        "vt{}x{}{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

/// Fails the test with a clear message when a tool it drives is missing.
pub fn require(tools: &[&str]) {
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            found,
            "this test needs `{t}` on PATH: run `bash scripts/test`, which installs it"
        );
    }
}

/// Fails the test with a clear message unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this test creates network namespaces and TAP devices: run it as root (CI does)"
    );
}

/// Runs a command and returns its output; panics if it cannot start.
pub fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// Runs a command that must succeed.
pub fn must(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        o.stdout_text(),
        o.stderr_text()
    );
    o.stdout_text()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A named network namespace (`ip netns add`), deleted on drop with everything in it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        require(&["ip"]);
        let name = unique(tag);
        must(&format!("ip netns add {name}"));
        must(&format!("ip -n {name} link set lo up"));
        Netns { name }
    }
    /// The namespace file, for `ctl attach --netns`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
    /// Runs a shell command inside the namespace.
    pub fn sh(&self, cmd: &str) -> Output {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', r"'\''")
        ))
    }
    /// Runs a command inside the namespace that must succeed; returns its stdout.
    pub fn must(&self, cmd: &str) -> String {
        let o = self.sh(cmd);
        assert!(
            o.status.success(),
            "in {}: `{cmd}` failed: {}{}",
            self.name,
            o.stdout_text(),
            o.stderr_text()
        );
        o.stdout_text()
    }
    /// Starts a command inside the namespace in the background.
    pub fn spawn(&self, cmd: &str) -> Proc {
        Proc::spawn(&format!(
            "exec ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', r"'\''")
        ))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns delete {}", self.name));
    }
}

/// CPU time (user and system) the threads named `name` of process `pid` have used.
pub fn thread_cpu(pid: u32, name: &str) -> Duration {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("threads of {pid}: {e}"));
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: state is the 3rd field of
        // the line, utime and stime the 14th and 15th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        for i in [11, 12] {
            ticks += f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 1000 / hz)
}

/// A background process, killed (by pid) on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(cmd: &str) -> Proc {
        // Its own process group, so dropping it ends what the shell started too.
        let child = Command::new("sh")
            .args(["-c", cmd])
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd}: {e}"));
        Proc { child }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The next line of the process's stdout (without its newline; empty at the end),
    /// read a byte at a time so that what follows stays for whoever reads the rest.
    pub fn line(&mut self) -> String {
        use std::io::Read;
        let Some(out) = self.child.stdout.as_mut() else {
            return String::new();
        };
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while let Ok(1) = out.read(&mut b) {
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    }
    /// Waits for the process to end (up to `timeout`) and returns its output.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                self.kill_group();
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // What it left running in the background would hold its output open.
        self.kill_group();
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().expect("true"));
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait: {e}"))
    }
}

impl Proc {
    /// Kills the process group this process leads (the shell and its children).
    fn kill_group(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A vswitch daemon with its own socket and state directory, killed on drop.
pub struct Daemon {
    pub dir: TempDir,
    pub proc: Option<Proc>,
    pub args: Vec<String>,
    /// The namespace the daemon runs in (its "host"), when not the test's own.
    pub netns: Option<String>,
}

impl Daemon {
    /// Starts a daemon with `extra` options, plus those in `$VSWITCH_TEST_DAEMON_ARGS`
    /// (how the suite runs a second time with `--no-offload`).
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_with(None, extra)
    }

    /// Starts a daemon inside `host`, a namespace standing for the host (its own
    /// addresses and loopback), so traffic to "the host" stays in the test's namespaces.
    pub fn start_in(host: &Netns, extra: &[&str]) -> Daemon {
        Daemon::start_with(Some(host.name.clone()), extra)
    }

    fn start_with(netns: Option<String>, extra: &[&str]) -> Daemon {
        let dir = TempDir::new("d");
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for a in env_daemon_args() {
            if !args.contains(&a) {
                args.push(a);
            }
        }
        let mut d = Daemon {
            dir,
            proc: None,
            args,
            netns,
        };
        d.launch();
        d
    }

    /// (Re)starts the daemon process on the same socket and state.
    pub fn launch(&mut self) {
        let sock = self.socket();
        let enter = match &self.netns {
            Some(ns) => format!("ip netns exec {ns} "),
            None => String::new(),
        };
        let mut cmd = format!(
            "exec {enter}{} daemon --socket {} --state-dir {}",
            bin(),
            sock.display(),
            self.dir.path().join("state").display()
        );
        for a in &self.args {
            cmd.push(' ');
            cmd.push_str(a);
        }
        self.proc = Some(Proc::spawn(&format!(
            "{cmd} 2>>{}",
            self.dir.path().join("daemon.log").display()
        )));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon did not start: {}", self.log());
    }

    /// Kills the daemon with SIGKILL (a crash), leaving its state and TAPs behind.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("ctl.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `vswitch ctl --socket S ARGS...`
    pub fn ctl(&self, args: &[&str]) -> Output {
        let sock = self.socket();
        let mut all = vec!["ctl", "--socket", sock.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        vswitch(&all)
    }

    /// A ctl command that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "ctl {args:?} failed: {}\ndaemon log:\n{}",
            o.stderr_text(),
            self.log()
        );
        o.stdout_text()
    }

    /// A ctl command with --json that must succeed; returns the parsed document.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(&a);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("ctl {args:?}: not JSON ({e}): {out}"))
    }

    /// A ctl command that must fail with one line on stderr; returns that line.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            !o.status.success(),
            "ctl {args:?} succeeded: {}",
            o.stdout_text()
        );
        let e = o.stderr_text();
        assert_eq!(
            e.trim().lines().count(),
            1,
            "ctl {args:?}: not one line: {e}"
        );
        assert!(e.starts_with("vswitch: "), "ctl {args:?}: {e}");
        assert!(!e.contains("panicked"), "ctl {args:?}: {e}");
        e.trim().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Extra daemon options for the whole suite (`VSWITCH_TEST_DAEMON_ARGS`).
pub fn env_daemon_args() -> Vec<String> {
    std::env::var("VSWITCH_TEST_DAEMON_ARGS")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits until something listens on TCP `port` in namespace `ns`.
pub fn listening(ns: &Netns, port: u16) {
    let up = eventually(Duration::from_secs(5), || {
        ns.sh(&format!("ss -Htln sport = :{port} | grep -q LISTEN"))
            .status
            .success()
    });
    assert!(up, "nothing listens on {port} in {}", ns.name);
}

/// Waits until something listens on UDP `port` in namespace `ns`.
pub fn listening_udp(ns: &Netns, port: u16) {
    let up = eventually(Duration::from_secs(5), || {
        ns.sh(&format!("ss -Huln sport = :{port} | grep -q ."))
            .status
            .success()
    });
    assert!(up, "nothing listens on UDP {port} in {}", ns.name);
}

/// The checksum `sha256sum` printed (its first word).
pub fn sha256(out: &str) -> String {
    out.split_whitespace().next().unwrap_or("").to_string()
}
