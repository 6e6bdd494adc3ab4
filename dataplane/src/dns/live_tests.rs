//! The server driven by real sockets on 127.0.0.1: `dig` as the client, `dnsmasq` as
//! the upstream resolver, and a silent socket as a resolver that never answers. Skipped
//! (with a note on stderr) when `dig` or `dnsmasq` is not installed.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{Action, ClientRef, DnsConfig, DnsServer, Names, NamesBuilder, Transport};

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A child process killed (by its own pid) and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind((LO, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// dnsmasq on 127.0.0.1:`port`: example.test -> 192.0.2.7, nx.test -> NXDOMAIN.
fn start_dnsmasq(port: u16) -> Reaped {
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--address=/example.test/192.0.2.7",
            "--address=/nx.test/",
        ])
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Reaped(child);
    // Ready when it answers.
    let probe = UdpSocket::bind((LO, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 512];
    for _ in 0..50 {
        probe
            .send_to(&super::fixtures::DIG_APP, (LO, port))
            .unwrap();
        if probe.recv_from(&mut buf).is_ok() {
            return guard;
        }
    }
    panic!("dnsmasq did not start on port {port}");
}

enum Peer {
    Udp(SocketAddr),
    Tcp(TcpStream),
}

/// Reads one length-prefixed message from a blocking stream.
fn read_tcp_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).ok()?;
    Some(msg)
}

fn write_tcp_message(s: &mut TcpStream, msg: &[u8]) {
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    let _ = s.write_all(&framed);
}

/// The I/O loop a caller would run: one client socket (UDP and TCP on the same port),
/// one upstream socket; upstream TCP is done inline.
struct Harness {
    server: DnsServer,
    names: Names,
    udp: UdpSocket,
    tcp: TcpListener,
    upstream_sock: UdpSocket,
    upstreams: Vec<SocketAddr>,
    peers: HashMap<u64, Peer>,
    next_peer: u64,
}

impl Harness {
    fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 65535];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut actions = Vec::new();
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let c = self.peer(Peer::Udp(from));
                    actions.push(
                        self.server
                            .query(&self.names, &buf[..n], Transport::Udp, c, now),
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            match self.tcp.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    if let Some(msg) = read_tcp_message(&mut s) {
                        let c = self.peer(Peer::Tcp(s));
                        actions.push(self.server.query(&self.names, &msg, Transport::Tcp, c, now));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            match self.upstream_sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(i) = self.upstreams.iter().position(|u| *u == from) {
                        actions.extend(self.server.upstream_reply(i, &buf[..n], now));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            self.server.poll(now, &mut actions);
            while let Some(a) = actions.pop() {
                if let Some(more) = self.perform(a) {
                    actions.push(more);
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn peer(&mut self, p: Peer) -> ClientRef {
        self.next_peer += 1;
        self.peers.insert(self.next_peer, p);
        ClientRef(self.next_peer)
    }

    fn perform(&mut self, a: Action) -> Option<Action> {
        match a {
            Action::Reply { client, bytes, .. } => {
                match self.peers.remove(&client.0) {
                    Some(Peer::Udp(to)) => {
                        assert!(bytes.len() <= 1232);
                        self.udp.send_to(&bytes, to).unwrap();
                    }
                    Some(Peer::Tcp(mut s)) => write_tcp_message(&mut s, &bytes),
                    None => panic!("reply to an unknown client"),
                }
                None
            }
            Action::Forward {
                upstream,
                transport: Transport::Udp,
                bytes,
                ..
            } => {
                self.upstream_sock
                    .send_to(&bytes, self.upstreams[upstream])
                    .unwrap();
                None
            }
            Action::Forward {
                upstream,
                transport: Transport::Tcp,
                id,
                bytes,
            } => {
                let answer = TcpStream::connect(self.upstreams[upstream])
                    .ok()
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                        write_tcp_message(&mut s, &bytes);
                        read_tcp_message(&mut s)
                    });
                let now = Instant::now();
                match answer {
                    Some(msg) => self.server.upstream_reply(upstream, &msg, now),
                    None => self.server.upstream_failed(upstream, id, now),
                }
            }
            Action::Nothing => None,
        }
    }
}

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg("@127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(["+tries=1", "+timeout=3"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn dig_against_the_server_with_dnsmasq_upstream() {
    assert!(
        installed("dig") && installed("dnsmasq"),
        "this test drives dig and dnsmasq: run `bash scripts/test`, which installs them (dnsutils, dnsmasq-base)"
    );
    let dnsmasq_port = free_udp_port();
    let _dnsmasq = start_dnsmasq(dnsmasq_port);
    // A resolver that never answers (its socket is kept open, so no ICMP either).
    let silent = UdpSocket::bind((LO, 0)).unwrap();

    let (udp, tcp) = (0..20)
        .find_map(|_| {
            let udp = UdpSocket::bind((LO, 0)).ok()?;
            let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
            Some((udp, tcp))
        })
        .unwrap();
    let port = udp.local_addr().unwrap().port();
    udp.set_nonblocking(true).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let upstream_sock = UdpSocket::bind((LO, 0)).unwrap();
    upstream_sock.set_nonblocking(true).unwrap();

    let mut b = NamesBuilder::new();
    b.gateway(Ipv4Addr::new(172, 18, 0, 1))
        .search_domain("mynet")
        .unwrap();
    b.container("web", Ipv4Addr::new(172, 18, 0, 2)).unwrap();
    b.container("db", Ipv4Addr::new(172, 18, 0, 3)).unwrap();
    b.alias("api", Ipv4Addr::new(172, 18, 0, 2)).unwrap();
    b.alias("api", Ipv4Addr::new(172, 18, 0, 3)).unwrap();
    let cfg = DnsConfig {
        upstream_timeout: Duration::from_millis(300),
        ..DnsConfig::default()
    };
    let harness = Harness {
        server: DnsServer::new(cfg, 2),
        names: b.build(),
        udp,
        tcp,
        upstream_sock,
        upstreams: vec![
            silent.local_addr().unwrap(),
            SocketAddr::from((LO, dnsmasq_port)),
        ],
        peers: HashMap::new(),
        next_peer: 0,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let thread = thread::spawn(move || harness.run(&stop2));

    assert_eq!(dig(port, &["+short", "web"]).trim(), "172.18.0.2");
    assert_eq!(dig(port, &["+short", "+tcp", "web"]).trim(), "172.18.0.2");
    assert_eq!(
        dig(port, &["+short", "+noedns", "db.mynet"]).trim(),
        "172.18.0.3"
    );
    let first = dig(port, &["+short", "api"]);
    let second = dig(port, &["+short", "api"]);
    let lines = |s: &str| s.lines().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(lines(&first).len(), 2, "{first}");
    assert_ne!(lines(&first)[0], lines(&second)[0], "round robin");
    let answer = dig(port, &["+noall", "+answer", "WeB.MyNet"]);
    assert!(answer.starts_with("WeB.MyNet."), "{answer}");
    assert!(answer.contains("\t10\tIN\tA\t172.18.0.2"), "{answer}");
    assert_eq!(
        dig(port, &["+short", "-x", "172.18.0.2"]).trim(),
        "web.mynet."
    );
    assert_eq!(
        dig(port, &["+short", "host.vswitch.internal"]).trim(),
        "172.18.0.1"
    );
    let aaaa = dig(port, &["web", "AAAA"]);
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"),
        "{aaaa}"
    );
    // Forwarded: the first resolver is silent, dnsmasq answers after the failover.
    let started = Instant::now();
    assert_eq!(
        dig(port, &["+short", "app.example.test"]).trim(),
        "192.0.2.7"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        dig(port, &["+short", "+tcp", "app.example.test"]).trim(),
        "192.0.2.7"
    );
    let nx = dig(port, &["www.nx.test"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");

    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}
