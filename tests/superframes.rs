//! Large TCP streams through the socket uplink arrive byte for byte, both ways, at MTU
//! 1500 and 9000: a container's upload to the host and download from it, and a
//! published port read and written from another namespace (a remote client, on the
//! frame path: loopback clients are spliced, `tests/splice.rs`). With offloads the
//! container's TCP comes in super-frames (cut at its MSS by its kernel, or in software
//! for a port without offloads) and its port counts them; with `--no-offload` (the
//! suite's second pass) nothing is a super-frame, and only MTU 1500 runs (the workers'
//! buffers then hold standard frames only). The daemon runs inside a namespace
//! standing for the host, whose loopback the network reaches (`--host-loopback`).

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

/// The host's address on the link to the remote client.
const HOST_LAN: &str = "192.168.203.1";

/// Megabytes each stream carries.
const MIB: usize = 64;

struct Rig {
    host: Netns,
    /// A client beyond the host, reaching it at [`HOST_LAN`] through a veth pair.
    remote: Netns,
    d: Daemon,
    c: Netns,
    gw: String,
    file: String,
    sum: String,
    _dir: TempDir,
}

fn rig(mtu: u16, subnet: u8) -> Rig {
    require(&["socat", "sha256sum", "head"]);
    let host = Netns::new("sfh");
    let d = Daemon::start_in(&host, &[]);
    let subnet = format!("10.{subnet}.0.0/24");
    let mtu_text = mtu.to_string();
    d.ctl_ok(&[
        "network",
        "create",
        "sf",
        "--subnet",
        &subnet,
        "--mtu",
        &mtu_text,
        "--host-loopback",
    ]);
    let remote = Netns::new("sfr");
    host.must(&format!(
        "ip link add r0 type veth peer name r1 netns {} && ip addr add {HOST_LAN}/24 dev r0 \
         && ip link set r0 up",
        remote.name
    ));
    remote.must("ip addr add 192.168.203.2/24 dev r1 && ip link set r1 up");
    let c = Netns::new("sfc");
    let v = d.ctl_json(&["attach", "sf", "--name", "c", "--netns", &c.path()]);
    let gw = v["gateway"].as_str().expect("gateway").to_string();
    let dir = TempDir::new("sf");
    let file = dir.path().join("data").display().to_string();
    must(&format!("head -c {MIB}M /dev/urandom > {file}"));
    let sum = sha256(&must(&format!("sha256sum < {file}")));
    Rig {
        host,
        remote,
        d,
        c,
        gw,
        file,
        sum,
        _dir: dir,
    }
}

/// Runs `server` in `srv` (it prints a checksum or sends the file), then `client` in
/// `cli`; returns the checksum whichever side printed it.
fn transfer(srv: &Netns, port: u16, server: &str, cli: &Netns, client: &str) -> String {
    let s = srv.spawn(server);
    listening(srv, port);
    let out = cli.must(&format!("timeout 60 sh -c '{client}'"));
    let o = s.wait(Duration::from_secs(60));
    let printed = format!("{}{}", out, o.stdout_text());
    sha256(&printed)
}

/// The container's port counters, `offload` part.
fn offload(r: &Rig) -> serde_json::Value {
    let stats = r.d.ctl_json(&["stats"]);
    stats["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "c")
        .map(|p| p["offload"].clone())
        .unwrap_or_else(|| panic!("no port c: {stats}"))
}

fn streams_arrive_whole(mtu: u16, subnet: u8) {
    let offloads = !env_daemon_args().iter().any(|a| a == "--no-offload");
    if !offloads && mtu > 1500 {
        // Without offloads the workers' frame buffers hold standard frames only
        // (`STD_FRAME_CAP`): jumbo frames need offloads on.
        eprintln!("skipped: MTU {mtu} needs offloads");
        return;
    }
    let r = rig(mtu, subnet);
    let (f, gw) = (&r.file, &r.gw);
    // Download: the host sends, the container reads.
    let got = transfer(
        &r.host,
        7401,
        &format!("exec socat -u FILE:{f} TCP-LISTEN:7401,bind=127.0.0.1,reuseaddr"),
        &r.c,
        &format!("socat -u TCP:{gw}:7401 - | sha256sum"),
    );
    assert_eq!(got, r.sum, "download at MTU {mtu}");
    // Upload: the container sends, the host reads.
    let got = transfer(
        &r.host,
        7402,
        "socat -u TCP-LISTEN:7402,bind=127.0.0.1,reuseaddr - | sha256sum",
        &r.c,
        &format!("socat -u FILE:{f} TCP:{gw}:7402"),
    );
    assert_eq!(got, r.sum, "upload at MTU {mtu}");
    // A published port, read by a remote client: the container sends.
    r.d.ctl_ok(&["publish", "c", "-p", "17403:80", "-p", "17404:81"]);
    let got = transfer(
        &r.c,
        80,
        &format!("exec socat -u FILE:{f} TCP-LISTEN:80,reuseaddr"),
        &r.remote,
        &format!("socat -u TCP:{HOST_LAN}:17403 - | sha256sum"),
    );
    assert_eq!(got, r.sum, "published port read at MTU {mtu}");
    // ... and written: the container reads.
    let got = transfer(
        &r.c,
        81,
        "socat -u TCP-LISTEN:81,reuseaddr - | sha256sum",
        &r.remote,
        &format!("socat -u FILE:{f} TCP:{HOST_LAN}:17404"),
    );
    assert_eq!(got, r.sum, "published port written at MTU {mtu}");
    let o = offload(&r);
    let n = |k: &str| o[k].as_u64().unwrap_or_else(|| panic!("no {k} in {o}"));
    if !offloads {
        assert_eq!(
            n("rx_super") + n("tx_super") + n("tx_sw_segments"),
            0,
            "{o}"
        );
    } else {
        // Both directions moved in super-frames: the container's own (TSO) and the
        // uplink's toward it.
        assert!(n("rx_super") > 0, "{o}");
        assert!(n("tx_super") > 0, "{o}");
    }
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn streams_arrive_whole_both_ways_at_mtu_1500() {
    streams_arrive_whole(1500, 201);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn streams_arrive_whole_both_ways_at_mtu_9000() {
    streams_arrive_whole(9000, 202);
}
