//! `vswitch daemon --metrics ADDR`: the counters `ctl stats` shows, as Prometheus text
//! on `GET /metrics`.
//!
//! One thread serves the listener, one connection at a time, each bounded (a request
//! head of at most 8 KiB, read and write deadlines of 2 s), so scrapers cannot pile up
//! threads or descriptors. A scrape gathers the counters the way `ctl stats` does (the
//! control mutex for a moment, the workers' counter tables read without a lock); the
//! dataplane never waits for it.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::Stats;

/// The Content-Type of the text exposition format (Prometheus 3 refuses a scrape
/// without a valid one).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The longest request head read.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request or read the answer.
const DEADLINE: Duration = Duration::from_secs(2);

/// What a port is, for its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortLabels {
    pub port: String,
    pub network: String,
    pub container: String,
    /// Bandwidth limits (bits a second) into and out of the container.
    pub rate_in: Option<u64>,
    pub rate_out: Option<u64>,
}

/// A network's addresses of one family: those leased (to containers, by IPAM, which
/// DHCP and DHCPv6 serve) and those still free for dynamic leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkAddresses {
    pub network: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    pub in_use: u64,
    pub available: u64,
}

/// Everything one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub stats: Stats,
    pub ports: Vec<PortLabels>,
    pub networks: Vec<NetworkAddresses>,
}

/// Prometheus text, family by family.
struct Text(String);

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {v}");
    }

    /// A sample with a fractional value (seconds).
    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.0, "{name}{{{}}} {v:.6}", l.join(","));
    }

    /// A family of one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], v);
    }
}

/// The exposition of `s`.
pub fn render(s: &Scrape) -> String {
    let mut t = Text(String::with_capacity(4096));
    t.one(
        "vswitch_build_info",
        "gauge",
        &format!(
            "The running vswitch (version {}).",
            env!("CARGO_PKG_VERSION")
        ),
        1,
    );
    ports(&mut t, s);
    fdb(&mut t, &s.stats);
    gateway(&mut t, &s.stats);
    dns(&mut t, &s.stats);
    addresses(&mut t, s);
    workers(&mut t, &s.stats);
    socket_uplink(&mut t, &s.stats);
    packet_nat(&mut t, &s.stats);
    t.0
}

fn labels_of<'a>(s: &'a Scrape, port: &'a str) -> [(&'static str, &'a str); 3] {
    let l = s.ports.iter().find(|p| p.port == port);
    [
        ("port", port),
        ("network", l.map_or("", |l| l.network.as_str())),
        ("container", l.map_or("", |l| l.container.as_str())),
    ]
}

fn ports(t: &mut Text, s: &Scrape) {
    type Get = fn(&crate::api::PortCounters) -> u64;
    let plain: [(&str, &str, Get); 9] = [
        ("rx_packets", "Frames received from the port.", |p| {
            p.rx_packets
        }),
        ("rx_bytes", "Bytes received from the port.", |p| p.rx_bytes),
        ("tx_packets", "Frames sent to the port.", |p| p.tx_packets),
        ("tx_bytes", "Bytes sent to the port.", |p| p.tx_bytes),
        (
            "offload_rx_super_frames",
            "Super-frames received (segmentation metadata).",
            |p| p.offload.rx_super,
        ),
        (
            "offload_tx_super_frames",
            "Super-frames handed to the kernel whole.",
            |p| p.offload.tx_super,
        ),
        (
            "offload_tx_sw_segments",
            "Frames written for super-frames segmented in software.",
            |p| p.offload.tx_sw_segments,
        ),
        (
            "offload_tx_udp_merged",
            "Datagrams written merged with others of their flow.",
            |p| p.offload.tx_udp_merged,
        ),
        (
            "offload_tx_merge_refused",
            "Merged writes the kernel refused.",
            |p| p.offload.tx_merge_refused,
        ),
    ];
    for (what, help, get) in plain {
        let name = format!("vswitch_port_{what}_total");
        t.family(&name, "counter", help);
        for p in &s.stats.ports {
            t.sample(&name, &labels_of(s, &p.name), get(p));
        }
    }
    let name = "vswitch_port_drops_total";
    t.family(
        name,
        "counter",
        "Frames dropped, by port and reason (container quota refusals among them).",
    );
    for p in &s.stats.ports {
        let [a, b, c] = labels_of(s, &p.name);
        for (reason, n) in &p.drops.0 {
            t.sample(name, &[a, b, c, ("reason", reason.as_str())], *n);
        }
    }
    let name = "vswitch_port_rate_limit_bytes_per_second";
    t.family(
        name,
        "gauge",
        "A port's bandwidth limit (direction in: into the container).",
    );
    for l in &s.ports {
        for (dir, r) in [("in", l.rate_in), ("out", l.rate_out)] {
            if let Some(r) = r {
                let [a, b, c] = labels_of(s, &l.port);
                t.sample(name, &[a, b, c, ("direction", dir)], r / 8);
            }
        }
    }
}

fn fdb(t: &mut Text, s: &Stats) {
    t.one(
        "vswitch_fdb_entries",
        "gauge",
        "MAC addresses learned.",
        s.fdb.entries as u64,
    );
    t.one(
        "vswitch_fdb_limit",
        "gauge",
        "MAC addresses the FDB holds at most.",
        u64::from(s.fdb.limit),
    );
    t.one(
        "vswitch_fdb_moves_total",
        "counter",
        "MAC addresses seen moving to another port.",
        s.fdb.moves,
    );
    t.one(
        "vswitch_fdb_learn_refused_total",
        "counter",
        "MAC addresses not learned (a port's or the FDB's limit).",
        s.fdb.learn_refused,
    );
    if let Some(n) = s.kernel_pairs {
        t.one(
            "vswitch_kernel_pairs",
            "gauge",
            "Unicast pairs of containers the kernel carries (the kernel path).",
            n,
        );
    }
}

fn gateway(t: &mut Text, s: &Stats) {
    let Some(g) = &s.gateway else {
        return;
    };
    let rows = [
        ("frames", "Frames the gateway received.", g.frames),
        ("arp_replies", "ARP replies sent.", g.arp_replies),
        ("echo_replies", "ICMP echo replies sent.", g.echo_replies),
        ("dhcp_replies", "DHCP replies sent.", g.dhcp_replies),
        ("dhcp_ignored", "DHCP messages ignored.", g.dhcp_ignored),
        ("icmp_errors", "ICMP errors sent.", g.icmp_errors),
        ("routed", "Packets handed to the uplink.", g.routed),
        (
            "unanswered",
            "Frames for the gateway it did not answer.",
            g.unanswered,
        ),
        (
            "no_neighbour",
            "Frames for containers with no known MAC.",
            g.no_neighbour,
        ),
        ("nd_replies", "Neighbour advertisements sent.", g.nd_replies),
        (
            "router_adverts",
            "Router advertisements sent.",
            g.router_adverts,
        ),
    ];
    for (what, help, v) in rows {
        t.one(&format!("vswitch_gateway_{what}_total"), "counter", help, v);
    }
}

/// Each network's leased and free addresses, per family.
fn addresses(t: &mut Text, s: &Scrape) {
    if s.networks.is_empty() {
        return;
    }
    let rows: [(&str, &str, AddrField); 2] = [
        (
            "in_use",
            "Addresses leased to containers (IPAM, served by DHCP and DHCPv6).",
            |n| n.in_use,
        ),
        (
            "available",
            "Addresses still free for dynamic leases.",
            |n| n.available,
        ),
    ];
    for (what, help, get) in rows {
        let name = format!("vswitch_network_addresses_{what}");
        t.family(&name, "gauge", help);
        for n in &s.networks {
            t.sample(
                &name,
                &[("network", &n.network), ("family", n.family)],
                get(n),
            );
        }
    }
}

/// One count of a network's addresses.
type AddrField = fn(&NetworkAddresses) -> u64;

/// One of a worker's times.
type WorkerField = fn(&crate::api::WorkerTimes) -> u64;

/// Each worker thread's busy and idle seconds.
fn workers(t: &mut Text, s: &Stats) {
    let rows: [(&str, &str, WorkerField); 2] = [
        (
            "busy",
            "Seconds a worker spent in rounds that moved frames.",
            |w| w.busy_ns,
        ),
        (
            "idle",
            "Seconds a worker waited in its poll or found nothing to move.",
            |w| w.idle_ns,
        ),
    ];
    for (what, help, get) in rows {
        let name = format!("vswitch_worker_{what}_seconds_total");
        t.family(&name, "counter", help);
        for w in &s.workers {
            let index = w.worker.to_string();
            t.sample_f64(&name, &[("worker", &index)], get(w) as f64 / 1e9);
        }
    }
}

/// One counter of a network's DNS row.
type DnsField = fn(&crate::api::DnsCounters) -> u64;

/// The embedded DNS, one sample per network it has served.
fn dns(t: &mut Text, s: &Stats) {
    if s.dns.is_empty() {
        return;
    }
    let rows: [(&str, &str, DnsField); 4] = [
        (
            "queries",
            "DNS queries from the network's containers.",
            |d| d.queries,
        ),
        ("answers", "DNS answers sent to them.", |d| d.answers),
        (
            "forwarded",
            "Their queries sent to an upstream resolver.",
            |d| d.forwarded,
        ),
        (
            "failures",
            "Their queries answered SERVFAIL or REFUSED, or refused by their share.",
            |d| d.failures,
        ),
    ];
    for (what, help, get) in rows {
        let name = format!("vswitch_dns_{what}_total");
        t.family(&name, "counter", help);
        for d in &s.dns {
            t.sample(&name, &[("network", &d.network)], get(d));
        }
    }
}

fn socket_uplink(t: &mut Text, s: &Stats) {
    let Some(n) = &s.nat else {
        return;
    };
    let gauges = [
        (
            "tcp_connections",
            "TCP connections open through the socket uplink.",
            n.tcp_open,
        ),
        (
            "udp_flows",
            "UDP flows open through the socket uplink.",
            n.udp_flows,
        ),
        (
            "echo_flows",
            "ICMP echo flows open through the socket uplink.",
            n.echo_flows,
        ),
    ];
    for (what, help, v) in gauges {
        t.one(&format!("vswitch_uplink_{what}"), "gauge", help, v as u64);
    }
    let counters = [
        ("tcp_opened", "TCP connections opened.", n.tcp_opened_total),
        ("tcp_refused", "TCP connections refused.", n.tcp_refused),
        ("udp_flows_created", "UDP flows created.", n.udp_flows_total),
        (
            "echo_flows_created",
            "ICMP echo flows created.",
            n.echo_flows_total,
        ),
        ("dropped", "Packets the socket uplink dropped.", n.dropped),
        (
            "tcp_handshake_timeouts",
            "Connections ended in their handshake.",
            n.tcp_handshake_timeouts,
        ),
        (
            "tcp_idle_timeouts",
            "Connections ended idle.",
            n.tcp_idle_timeouts,
        ),
        (
            "refused_quota",
            "Flows refused by a container's or the total quota.",
            n.refused_quota,
        ),
        (
            "tcp_spliced",
            "Loopback connections spliced into containers.",
            n.tcp_spliced,
        ),
        (
            "splice_fallbacks",
            "Loopback clients that took the frame path.",
            n.splice_fallbacks,
        ),
        (
            "fragments",
            "IP fragments from containers dropped (nothing is reassembled).",
            n.fragments,
        ),
    ];
    for (what, help, v) in counters {
        t.one(&format!("vswitch_uplink_{what}_total"), "counter", help, v);
    }
}

fn packet_nat(t: &mut Text, s: &Stats) {
    let n = &s.packet_nat;
    t.one(
        "vswitch_nat_flows",
        "gauge",
        "Flows in the packet uplink's NAT table.",
        n.flows as u64,
    );
    t.one(
        "vswitch_nat_flows_limit",
        "gauge",
        "Flows the NAT table holds at most.",
        n.limit as u64,
    );
    t.one(
        "vswitch_nat_flows_created_total",
        "counter",
        "NAT flows created.",
        n.created,
    );
    t.one(
        "vswitch_nat_flows_expired_total",
        "counter",
        "NAT flows expired.",
        n.expired,
    );
    let name = "vswitch_nat_refused_total";
    t.family(name, "counter", "New NAT flows refused, by reason.");
    for (reason, v) in [
        ("full", n.refused_full),
        ("ports", n.refused_ports),
        ("quota", n.refused_quota),
    ] {
        t.sample(name, &[("reason", reason)], v);
    }
}

/// What the daemon hands the metrics thread: a fresh scrape on demand.
pub type Source = Arc<dyn Fn() -> Scrape + Send + Sync>;

/// Serves `listener` on a thread of its own.
pub fn spawn(listener: TcpListener, source: Source) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vswitch-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        let _ = answer(c, &source);
                    }
                    // Out of descriptors: wait rather than spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map(|_| ())
}

/// Reads one request head and answers it; the connection closes after.
fn answer(mut c: TcpStream, source: &Source) -> std::io::Result<()> {
    c.set_read_timeout(Some(DEADLINE))?;
    c.set_write_timeout(Some(DEADLINE))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = c.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return reply(&mut c, "400 Bad Request", "text/plain", "bad request\n");
        }
        head.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = render(&source());
            reply(&mut c, "200 OK", CONTENT_TYPE, &body)
        }
        ("GET", _) => reply(&mut c, "404 Not Found", "text/plain", "see /metrics\n"),
        _ => reply(
            &mut c,
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n",
        ),
    }
}

fn reply(c: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(body.as_bytes())
}

/// A scrape source reading the daemon behind its control mutex.
pub fn source_of(d: Arc<Mutex<crate::daemon::Daemon>>) -> Source {
    Arc::new(move || {
        let d = d.lock().unwrap_or_else(|p| p.into_inner());
        Scrape {
            stats: d.stats_now(),
            ports: d.port_labels(),
            networks: d.network_addresses(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PortCounters;

    #[test]
    fn the_text_has_a_help_and_type_per_family_and_escaped_labels() {
        let mut stats = Stats::default();
        let mut p = PortCounters {
            name: "web\"1".into(),
            rx_bytes: 1234,
            ..Default::default()
        };
        p.drops.0.push(("mac_spoof".into(), 3));
        stats.ports.push(p);
        let s = Scrape {
            stats,
            ports: vec![PortLabels {
                port: "web\"1".into(),
                network: "front".into(),
                container: "web".into(),
                rate_out: Some(100_000_000),
                rate_in: None,
            }],
            networks: vec![NetworkAddresses {
                network: "front".into(),
                family: "ipv6",
                in_use: 4,
                available: 100,
            }],
        };
        let text = render(&s);
        assert!(text.contains(
            "vswitch_port_rx_bytes_total{port=\"web\\\"1\",network=\"front\",container=\"web\"} 1234\n"
        ));
        assert!(text.contains("reason=\"mac_spoof\"} 3\n"), "{text}");
        assert!(text.contains("direction=\"out\"} 12500000\n"), "{text}");
        assert!(text.contains("# TYPE vswitch_port_rx_bytes_total counter\n"));
        assert!(text.contains("vswitch_nat_refused_total{reason=\"quota\"} 0\n"));
        assert!(
            text.contains(
                "vswitch_network_addresses_in_use{network=\"front\",family=\"ipv6\"} 4\n"
            )
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.rsplit(' ').next().unwrap().parse::<u64>().is_ok(),
                "{line}"
            );
        }
    }
}
