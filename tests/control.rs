//! The control plane through the real binary: networks, refusals, persistence.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Everything the daemon reports about networks and ports, to compare before/after.
fn snapshot(d: &Daemon) -> String {
    let nets = d.ctl_json(&["network", "ls"]);
    let mut all = vec![nets.clone()];
    for n in nets.as_array().expect("list") {
        let name = n["Name"].as_str().expect("name");
        all.push(d.ctl_json(&["network", "inspect", name]));
    }
    all.push(d.ctl_json(&["port", "ls"]));
    serde_json::to_string(&all).expect("json")
}

#[test]
fn networks_follow_docker_defaults() {
    let d = Daemon::start(&[]);
    let ls = d.ctl_json(&["network", "ls"]);
    assert_eq!(ls[0]["Name"], "bridge");
    assert_eq!(ls[0]["Subnet"], "172.17.0.0/16");
    assert_eq!(ls[0]["Gateway"], "172.17.0.1");
    let id = d.ctl_ok(&["network", "create", "front"]);
    assert_eq!(id.trim().len(), 64, "prints the id: {id}");
    d.ctl_ok(&[
        "network",
        "create",
        "back",
        "--internal",
        "--no-icc",
        "--vlan",
        "20",
        "--mtu",
        "9000",
    ]);
    let i = d.ctl_json(&["network", "inspect", "front"]);
    assert_eq!(i[0]["Name"], "front");
    assert_eq!(i[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    assert_eq!(i[0]["IPAM"]["Config"][0]["Gateway"], "172.18.0.1");
    assert_eq!(i[0]["Internal"], false);
    let b = d.ctl_json(&["network", "inspect", "back"]);
    assert_eq!(b[0]["IPAM"]["Config"][0]["Subnet"], "172.19.0.0/16");
    assert_eq!(b[0]["Internal"], true);
    assert_eq!(
        b[0]["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );
    assert_eq!(b[0]["Options"]["com.docker.network.driver.mtu"], "9000");
    assert_eq!(b[0]["Options"]["vswitch.vlan"], "20");
    d.ctl_ok(&[
        "network",
        "create",
        "custom",
        "--subnet",
        "10.77.0.0/24",
        "--gateway",
        "10.77.0.254",
        "--ip-range",
        "10.77.0.128/25",
    ]);
    let c = d.ctl_json(&["network", "inspect", "custom"]);
    assert_eq!(c[0]["IPAM"]["Config"][0]["Gateway"], "10.77.0.254");
    assert_eq!(c[0]["IPAM"]["Config"][0]["IPRange"], "10.77.0.128/25");
    d.ctl_ok(&["network", "rm", "custom"]);
    assert!(
        d.ctl_err(&["network", "inspect", "custom"])
            .contains("not found")
    );
}

#[test]
fn refused_requests_are_one_line_and_change_nothing() {
    let d = Daemon::start(&[]);
    d.ctl_ok(&[
        "network",
        "create",
        "front",
        "--subnet",
        "10.61.0.0/16",
        "--vlan",
        "10",
    ]);
    let before = snapshot(&d);
    let cases: &[(&[&str], &str)] = &[
        (&["network", "create", "front"], "already exists"),
        (
            &["network", "create", "x", "--subnet", "10.61.3.0/24"],
            "overlaps",
        ),
        (
            &["network", "create", "x", "--subnet", "10.62.0.1/16"],
            "host bits",
        ),
        (
            &["network", "create", "x", "--subnet", "banana"],
            "invalid CIDR",
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.62.0.0/16",
                "--gateway",
                "10.63.0.1",
            ],
            "not a usable address",
        ),
        (
            &["network", "create", "x", "--gateway", "10.63.0.1"],
            "needs --subnet",
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.62.0.0/16",
                "--ip-range",
                "10.63.0.0/24",
            ],
            "not inside",
        ),
        (&["network", "create", "x", "--vlan", "10"], "already used"),
        (&["network", "create", "x", "--vlan", "5000"], "1 to 4094"),
        (&["network", "create", "x", "--mtu", "10"], "68 to 65520"),
        (
            &["network", "create", "x", "--ipv6", "--mtu", "1000"],
            "too small for IPv6",
        ),
        (&["network", "create", "bad/name"], "invalid name"),
        (&["network", "rm", "nope"], "not found"),
        (&["network", "rm", "bridge"], "cannot be removed"),
        (&["network", "inspect", "nope"], "not found"),
        (
            &[
                "attach",
                "nope",
                "--name",
                "w",
                "--netns",
                "/proc/self/ns/net",
            ],
            "not found",
        ),
        (
            &["attach", "front", "--name", "w", "--netns", "/nonexistent"],
            "does not exist",
        ),
        (
            &["attach", "front", "--name", "w", "--pid", "999999999"],
            "no process",
        ),
        (
            &[
                "attach",
                "front",
                "--name",
                "w",
                "--netns",
                "/proc/self/ns/net",
                "--ip",
                "10.99.0.5",
            ],
            "not in subnet",
        ),
        (
            &[
                "attach",
                "front",
                "--name",
                "w",
                "--netns",
                "/proc/self/ns/net",
                "--ip",
                "10.61.0.1",
            ],
            "reserved",
        ),
        (
            &[
                "attach",
                "front",
                "--name",
                "w",
                "--netns",
                "/proc/self/ns/net",
                "--trunk",
                "1,x",
            ],
            "trunk",
        ),
        (
            &[
                "attach",
                "front",
                "--name",
                "w",
                "--netns",
                "/proc/self/ns/net",
                "--mac",
                "01:00:5e:00:00:01",
            ],
            "not a unicast",
        ),
        (&["detach", "nope"], "not found"),
        (&["connect", "front", "nope"], "not found"),
        (&["disconnect", "front", "nope"], "not found"),
        (&["fdb", "show", "--network", "nope"], "not found"),
        (&["fdb", "flush", "--network", "nope"], "not found"),
        (&["uplink", "set", "banana"], "unknown uplink mode"),
        (&["uplink", "set", "--tap", "x"], "--address"),
    ];
    for (args, want) in cases {
        let e = d.ctl_err(args);
        assert!(e.contains(want), "{args:?}: {e}");
        assert_eq!(snapshot(&d), before, "{args:?} changed the state");
    }
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let d = Daemon::start(&[]);
    // stdout a pipe whose reader is gone (`ctl … | head` once head has its lines).
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just made by pipe and are owned here alone.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd as _;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let sock = d.socket();
    for args in [&["network", "ls"][..], &["--json", "network", "ls"][..]] {
        let o = std::process::Command::new(bin())
            .args(["ctl", "--socket", sock.to_str().unwrap_or_default()])
            .args(args)
            .stdout(std::process::Stdio::from(write.try_clone().expect("dup")))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run ctl");
        assert!(o.status.success(), "ctl {args:?}: {}", o.stderr_text());
        assert!(
            o.stderr_text().is_empty(),
            "ctl {args:?}: {}",
            o.stderr_text()
        );
    }
}

#[test]
fn usage_errors_are_one_line_too() {
    let d = Daemon::start(&[]);
    let sock = d.socket();
    for args in [
        &["attach", "bridge", "--name", "x"][..],
        &["network", "frob"][..],
        &["publish", "x"][..],
    ] {
        let mut all = vec!["ctl", "--socket", sock.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        let o = vswitch(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = o.stderr_text();
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
    }
}

#[test]
fn no_daemon_is_one_clear_line() {
    let t = TempDir::new("nod");
    let sock = t.path().join("none.sock");
    let o = vswitch(&[
        "ctl",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "network",
        "ls",
    ]);
    assert!(!o.status.success());
    let e = o.stderr_text();
    assert!(e.contains("cannot reach the daemon"), "{e}");
    assert_eq!(e.trim().lines().count(), 1);
}

#[test]
fn state_survives_kill_9() {
    let mut d = Daemon::start(&[]);
    d.ctl_ok(&[
        "network",
        "create",
        "front",
        "--subnet",
        "10.64.0.0/16",
        "--no-icc",
    ]);
    let before = snapshot(&d);
    d.kill9();
    d.launch();
    assert_eq!(snapshot(&d), before);
}

#[test]
fn control_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(d.socket())
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn bip_and_default_mtu_shape_the_default_bridge() {
    let d = Daemon::start(&["--bip", "10.200.0.1/24", "--default-mtu", "1400"]);
    let b = d.ctl_json(&["network", "inspect", "bridge"]);
    assert_eq!(b[0]["IPAM"]["Config"][0]["Subnet"], "10.200.0.0/24");
    assert_eq!(b[0]["IPAM"]["Config"][0]["Gateway"], "10.200.0.1");
    assert_eq!(b[0]["Options"]["com.docker.network.driver.mtu"], "1400");
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let d = Daemon::start(&[]);
    let (sock, state) = (d.socket(), d.dir.path().join("s2"));
    let o = vswitch(&[
        "daemon",
        "--socket",
        sock.to_str().unwrap_or_default(),
        "--state-dir",
        state.to_str().unwrap_or_default(),
    ]);
    assert!(!o.status.success());
    assert!(
        o.stderr_text().contains("another vswitch daemon"),
        "{}",
        o.stderr_text()
    );
}
