//! Networks at the sizes users reach: a thousand containers on one network (every one
//! reachable, a broadcast reaching every member, then all detached and attached again),
//! a hundred networks of ten (each a broadcast domain of its own), and attach / detach
//! churn while traffic runs between two containers.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// Creates and deletes many namespaces in one `ip -batch` each (not a process per
/// namespace): `<prefix>-<i>` for i in 0..n.
struct Many {
    prefix: String,
    n: usize,
}

impl Many {
    fn new(tag: &str, n: usize) -> Many {
        require_root();
        require(&["ip", "ping", "python3"]);
        let m = Many {
            prefix: unique(tag),
            n,
        };
        m.batch("add");
        m
    }

    fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    fn path(&self, i: usize) -> String {
        format!("/run/netns/{}", self.name(i))
    }

    fn batch(&self, verb: &str) {
        let dir = TempDir::new("batch");
        let file = dir.path().join("cmds");
        let cmds: String = (0..self.n)
            .map(|i| format!("netns {verb} {}\n", self.name(i)))
            .collect();
        std::fs::write(&file, cmds).unwrap();
        let o = sh(&format!("ip -force -batch {}", file.display()));
        assert!(
            verb == "delete" || o.status.success(),
            "ip netns {verb}: {}",
            o.stderr_text()
        );
    }

    /// Lets every namespace answer pings to its broadcast address (the kernel ignores
    /// them by default), from one process entering each namespace in turn.
    fn answer_broadcasts(&self) {
        let paths: Vec<String> = (0..self.n).map(|i| self.path(i)).collect();
        let dir = TempDir::new("bsys");
        let list = dir.path().join("paths");
        std::fs::write(&list, paths.join("\n")).unwrap();
        let py = dir.path().join("sysctl.py");
        std::fs::write(&py, SYSCTL_PY).unwrap();
        must(&format!(
            "/usr/bin/python3 {} {}",
            py.display(),
            list.display()
        ));
    }

    /// Runs `cmd` in namespace `i`; its output.
    fn sh(&self, i: usize, cmd: &str) -> std::process::Output {
        sh(&format!("ip netns exec {} {cmd}", self.name(i)))
    }
}

impl Drop for Many {
    fn drop(&mut self) {
        self.batch("delete");
    }
}

/// In every namespace listed in argv[1]: answer pings to the broadcast address
/// (icmp_echo_ignore_broadcasts 0) and take a neighbour's gratuitous ARP into the ARP
/// cache (arp_accept 1).
const SYSCTL_PY: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for path in open(sys.argv[1]).read().split():
    fd = os.open(path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        sys.exit("setns %s: errno %d" % (path, ctypes.get_errno()))
    os.close(fd)
    for key, value in (("ipv4/icmp_echo_ignore_broadcasts", "0"), ("ipv4/conf/all/arp_accept", "1")):
        with open("/proc/sys/net/" + key, "w") as f:
            f.write(value)
"#;

/// Announces this namespace's eth0 address by gratuitous ARP, then sends ICMP echo
/// requests to a broadcast address (argv[1]) and prints every source that answered, one
/// per line: up to argv[3] rounds of 3 s, or until argv[2] distinct sources answered.
///
/// Two limits of the kernel, not of any switch, are kept out of the way: an echo reply
/// waiting for ARP is charged to the ICMP socket of the CPU that made it, which all
/// namespaces share (a thousand replies waiting at once overflow it and most are never
/// sent), hence the announcement first (taken into each ARP cache with arp_accept);
/// and ping's receive buffer drops most of a thousand answers arriving at once, hence a
/// socket with a large one.
const BCAST_PY: &str = r#"
import fcntl, os, socket, struct, sys, time
dst, want, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
own = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", b"eth0"))[20:24])
ip = socket.inet_aton(own)
mac = fcntl.ioctl(probe.fileno(), 0x8927, struct.pack("256s", b"eth0"))[18:24]
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind(("eth0", 0))
garp = b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\0" * 6 + ip
raw.send(garp)
time.sleep(0.5)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 32 << 20)
ident = os.getpid() & 0xFFFF
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
seen = set()
for r in range(rounds):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, r) + b"vswitch-scale"
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    s.sendto(body, (dst, 0))
    end = time.time() + 3
    while len(seen) < want and time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            data, (src, _) = s.recvfrom(4096)
        except socket.timeout:
            break
        hl = (data[0] & 15) * 4
        t, _, _, i = struct.unpack("!BBHH", data[hl:hl + 6])
        # The sender's own kernel answers the broadcast too (over loopback): not a member.
        if t == 0 and i == ident and src != own:
            seen.add(src)
    if len(seen) >= want:
        break
for a in sorted(seen):
    print(a)
"#;

/// Fails with what to do when the host's neighbour tables (shared by every namespace)
/// cannot hold an entry or two per container: past them the kernel refuses new ARP
/// entries ("neighbor table overflow") whatever switch carries the frames.
fn require_neighbour_room(containers: usize) {
    require_root();
    let read = |p: &str| -> usize {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let t3 = read("/proc/sys/net/ipv4/neigh/default/gc_thresh3");
    let t2 = read("/proc/sys/net/ipv4/neigh/default/gc_thresh2");
    assert!(
        t3 >= 4 * containers && t2 >= 2 * containers,
        "the host's ARP table holds {t3} entries in all namespaces (gc_thresh3; gc_thresh2 \
         {t2}): too few for {containers} containers. Raise them as root, e.g. `sysctl -w \
         net.ipv4.neigh.default.gc_thresh2=32768 net.ipv4.neigh.default.gc_thresh3=65536` \
         (`bash scripts/test` does)"
    );
}

/// Attaches namespace i of `many` as container `<name><i>` to `net`, four requests at
/// a time; returns each container's address.
fn attach_all(
    d: &Daemon,
    many: &Many,
    net: &str,
    name: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let idx: Vec<usize> = range.collect();
    let mut ips = vec![String::new(); idx.len()];
    std::thread::scope(|s| {
        for (chunk, out) in idx
            .chunks(idx.len().div_ceil(4).max(1))
            .zip(ips.chunks_mut(idx.len().div_ceil(4).max(1)))
        {
            s.spawn(move || {
                for (i, slot) in chunk.iter().zip(out.iter_mut()) {
                    let v = d.ctl_json(&[
                        "attach",
                        net,
                        "--name",
                        &format!("{name}{i}"),
                        "--netns",
                        &many.path(*i),
                    ]);
                    *slot = v["ip"].as_str().expect("ip").to_string();
                }
            });
        }
    });
    ips
}

/// Detaches containers `<name><i>`, four requests at a time.
fn detach_all(d: &Daemon, name: &str, range: std::ops::Range<usize>) {
    let idx: Vec<usize> = range.collect();
    std::thread::scope(|s| {
        for chunk in idx.chunks(idx.len().div_ceil(4).max(1)) {
            s.spawn(move || {
                for i in chunk {
                    d.ctl_ok(&["detach", &format!("{name}{i}")]);
                }
            });
        }
    });
}

/// Pings each (from, to address) pair, eight at a time; the pairs that got no answer.
fn ping_pairs(many: &Many, pairs: &[(usize, String)]) -> Vec<String> {
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for chunk in pairs.chunks(pairs.len().div_ceil(8).max(1)) {
            let failed = &failed;
            s.spawn(move || {
                for (from, to) in chunk {
                    let o = many.sh(*from, &format!("ping -c 1 -W 5 -q {to}"));
                    if !o.status.success() {
                        failed
                            .lock()
                            .unwrap()
                            .push(format!("{} -> {to}", many.name(*from)));
                    }
                }
            });
        }
    });
    failed.into_inner().unwrap()
}

/// The addresses that answered a ping to `bcast` sent from namespace `from`.
fn broadcast_answers(many: &Many, from: usize, bcast: &str, want: usize) -> BTreeSet<String> {
    let dir = TempDir::new("bcast");
    let py = dir.path().join("bcast.py");
    std::fs::write(&py, BCAST_PY).unwrap();
    let o = many.sh(
        from,
        &format!("/usr/bin/python3 {} {bcast} {want} 5", py.display()),
    );
    assert!(o.status.success(), "broadcast echo: {}", o.stderr_text());
    o.stdout_text().lines().map(String::from).collect()
}

/// Every container pinged by another one (a spread of pingers), and a broadcast from
/// the first one answered by every other member.
fn all_reachable(many: &Many, ips: &[String], bcast: &str) {
    let n = ips.len();
    let pairs: Vec<(usize, String)> = (0..n)
        .map(|i| {
            let from = (i * 7 + 3) % n;
            let from = if from == i { (i + 1) % n } else { from };
            (from, ips[i].clone())
        })
        .collect();
    let failed = ping_pairs(many, &pairs);
    assert!(
        failed.is_empty(),
        "{} of {n} unreachable: {failed:?}",
        failed.len()
    );
    let others: BTreeSet<String> = ips.iter().skip(1).cloned().collect();
    let got = broadcast_answers(many, 0, bcast, others.len());
    let missing: Vec<&String> = others.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "a broadcast reached {} of {} members; missing {missing:?}",
        got.len(),
        others.len()
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_thousand_containers_on_one_network() {
    const N: usize = 1000;
    require_neighbour_room(N);
    let d = Daemon::start(&[]);
    d.ctl_ok(&["network", "create", "big", "--subnet", "10.96.0.0/16"]);
    let many = Many::new("k", N);
    many.answer_broadcasts();
    let ips = attach_all(&d, &many, "big", "m", 0..N);
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), N, "addresses given twice");
    all_reachable(&many, &ips, "10.96.255.255");
    let ports = d.ctl_json(&["port", "ls"]);
    assert_eq!(ports.as_array().map(Vec::len), Some(N));
    // Every port sent and received: none was left out of the send lists.
    let stats = d.ctl_json(&["stats"]);
    let silent: Vec<&str> = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with('m')))
        .filter(|p| p["tx_packets"].as_u64() == Some(0) || p["rx_packets"].as_u64() == Some(0))
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(silent.is_empty(), "ports that moved nothing: {silent:?}");
    // All detached, then attached again (new slots' generations, addresses given anew).
    detach_all(&d, "m", 0..N);
    assert_eq!(
        d.ctl_json(&["port", "ls"]).as_array().map(Vec::len),
        Some(0)
    );
    let ips = attach_all(&d, &many, "big", "again", 0..N);
    all_reachable(&many, &ips, "10.96.255.255");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_hundred_networks_of_ten() {
    const NETS: usize = 100;
    const EACH: usize = 10;
    require_neighbour_room(NETS * EACH);
    let d = Daemon::start(&[]);
    let many = Many::new("h", NETS * EACH);
    many.answer_broadcasts();
    let mut ips = Vec::new();
    for k in 0..NETS {
        let net = format!("n{k}");
        d.ctl_ok(&[
            "network",
            "create",
            &net,
            "--subnet",
            &format!("10.97.{k}.0/24"),
        ]);
        ips.push(attach_all(
            &d,
            &many,
            &net,
            &format!("n{k}c"),
            k * EACH..(k + 1) * EACH,
        ));
    }
    // Within each network: everyone reachable from its first member.
    let pairs: Vec<(usize, String)> = (0..NETS)
        .flat_map(|k| ips[k].iter().skip(1).map(move |ip| (k * EACH, ip.clone())))
        .collect();
    let failed = ping_pairs(&many, &pairs);
    assert!(
        failed.is_empty(),
        "unreachable within a network: {failed:?}"
    );
    // A broadcast reaches exactly its own network's members: the positive control and
    // the isolation in one answer set.
    for k in [0, 37, NETS - 1] {
        let want: BTreeSet<String> = ips[k].iter().skip(1).cloned().collect();
        let got = broadcast_answers(&many, k * EACH, &format!("10.97.{k}.255"), EACH - 1);
        assert_eq!(got, want, "network n{k}'s broadcast");
    }
    // Across networks nothing: the first member of each network pings a member of the
    // next (its own network's answered above, from the same namespace).
    let across: Vec<(usize, String)> = (0..NETS)
        .step_by(10)
        .map(|k| (k * EACH, ips[(k + 1) % NETS][1].clone()))
        .collect();
    for (from, to) in &across {
        let o = many.sh(*from, &format!("ping -c 1 -W 1 -q {to}"));
        assert!(
            !o.status.success(),
            "{} reached {to} on another network",
            many.name(*from)
        );
    }
    let fdb = d.ctl_json(&["fdb", "show", "--network", "n37"]);
    assert_eq!(fdb.as_array().map(Vec::len), Some(EACH), "n37's FDB: {fdb}");
}

/// The traffic that runs through the churn. `sink PORT`: one TCP connection read to
/// its end, then "<bytes> <sha256>". `send IP PORT STOP`: random bytes in 64 KiB
/// chunks every 10 ms until the file STOP exists, then "<bytes> <sha256>". `echo PORT`:
/// a UDP echo server. `ping IP PORT STOP`: a datagram every 20 ms, each waiting up to
/// 2 s for its echo, until STOP exists; then "<sent> <answered>".
const CHURN_PY: &str = r#"
import hashlib, os, socket, sys, time
mode = sys.argv[1]
if mode == "sink":
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", int(sys.argv[2]))); l.listen(1)
    c, _ = l.accept(); h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(1 << 16)
        if not b: break
        h.update(b); n += len(b)
    print(n, h.hexdigest())
elif mode == "send":
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=30)
    h = hashlib.sha256(); n = 0
    while not os.path.exists(sys.argv[4]):
        b = os.urandom(1 << 16); c.sendall(b); h.update(b); n += len(b)
        time.sleep(0.01)
    c.shutdown(socket.SHUT_WR); c.recv(1)
    print(n, h.hexdigest())
elif mode == "echo":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", int(sys.argv[2])))
    while True:
        b, a = u.recvfrom(2048); u.sendto(b, a)
elif mode == "ping":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((sys.argv[2], int(sys.argv[3]))); u.settimeout(2)
    sent = answered = 0
    while not os.path.exists(sys.argv[4]):
        sent += 1; u.send(str(sent).encode())
        try:
            while u.recv(64) != str(sent).encode(): pass
            answered += 1
        except socket.timeout:
            pass
        time.sleep(0.02)
    print(sent, answered)
"#;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn attach_and_detach_churn_leaves_running_traffic_whole() {
    const CHURN: usize = 100;
    require_neighbour_room(CHURN + 2);
    let d = Daemon::start(&[]);
    d.ctl_ok(&["network", "create", "churn", "--subnet", "10.98.0.0/16"]);
    let many = Many::new("c", CHURN + 2);
    let ips = attach_all(&d, &many, "churn", "s", 0..2);
    let dir = TempDir::new("churn");
    let py = dir.path().join("churn.py");
    std::fs::write(&py, CHURN_PY).unwrap();
    let stop = dir.path().join("stop");
    let run = |i: usize, args: &str| {
        Proc::spawn(&format!(
            "exec ip netns exec {} /usr/bin/python3 {} {args}",
            many.name(i),
            py.display()
        ))
    };
    let sink = run(1, "sink 7100");
    let _echo = run(1, "echo 7101");
    assert!(
        eventually(Duration::from_secs(5), || many
            .sh(1, "ss -Htuln")
            .stdout_text()
            .contains(":7101")
            && many.sh(1, "ss -Htln").stdout_text().contains(":7100")),
        "the sink and echo server did not start"
    );
    let (b, stop_s) = (&ips[1], stop.display());
    let sender = run(0, &format!("send {b} 7100 {stop_s}"));
    let pinger = run(0, &format!("ping {b} 7101 {stop_s}"));
    // 100 containers come and go three times while the stream and the pings run.
    for round in 0..3 {
        let churned = attach_all(&d, &many, "churn", &format!("r{round}x"), 2..CHURN + 2);
        // The churned containers work too: a sample answers.
        let sample: Vec<(usize, String)> = (0..CHURN)
            .step_by(17)
            .map(|i| (0, churned[i].clone()))
            .collect();
        let failed = ping_pairs(&many, &sample);
        assert!(failed.is_empty(), "round {round}: {failed:?}");
        detach_all(&d, &format!("r{round}x"), 2..CHURN + 2);
    }
    std::fs::write(&stop, "").unwrap();
    let pings = pinger.wait(Duration::from_secs(30)).stdout_text();
    let counts: Vec<u64> = pings
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        matches!(counts[..], [s, a] if s == a && s > 100),
        "datagrams sent and answered during the churn: {pings}"
    );
    let sent = sender.wait(Duration::from_secs(60)).stdout_text();
    let got = sink.wait(Duration::from_secs(30)).stdout_text();
    assert!(
        sent.split_whitespace().next().unwrap_or("0") != "0",
        "nothing sent: {sent}"
    );
    assert_eq!(
        got.trim(),
        sent.trim(),
        "the stream's bytes (count, sha256) across the churn"
    );
}
