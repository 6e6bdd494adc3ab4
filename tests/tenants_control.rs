//! The control plane under failure and abuse: a panic ends the daemon and a restart
//! restores it; restores never touch the wrong process; a damaged state file is refused
//! for the last good one; the control socket holds up against oversized, numerous,
//! slow and descriptor-laden clients while `ctl` keeps answering.

mod common;

use std::time::Duration;

use common::*;

/// Starts a daemon with `env` (`VAR=value ...`) in its environment.
fn start_with_env(env: &str) -> Daemon {
    let mut d = Daemon {
        dir: TempDir::new("d"),
        proc: None,
        args: env_daemon_args(),
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
fn a_panic_ends_the_daemon_and_a_restart_restores_it() {
    require_root();
    require(&["ping"]);
    let mut d = start_with_env("VSWITCH_TEST_PANIC=service");
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
        fatal[0].starts_with("vswitch: fatal: thread vswitch-service panicked"),
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
