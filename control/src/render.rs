//! Human output of `ctl` commands (`--json` prints the data as is).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{
    ConntrackRow, EndpointInfo, FdbRow, NetworkInspect, NetworkPruned, NetworkRemoved, NetworkRow,
    PortRow, PublishedEntry, Stats,
};

/// How a command's answer is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// Nothing (the command's success is its output).
    Nothing,
    /// The data as indented JSON.
    Pretty,
    /// A created network's id.
    NetworkId,
    /// A removed network's name.
    Removed,
    NetworkLs,
    Endpoint,
    PortLs,
    Fdb,
    Stats,
    Conntrack,
    /// A container's published ports, as `docker port`.
    Ports,
    /// What `network prune` removed.
    Pruned,
    /// A port's bandwidth limits, one line.
    Limits,
}

impl Render {
    /// Every way, for the fuzzer.
    pub const ALL: [Render; 13] = [
        Render::Nothing,
        Render::Pretty,
        Render::NetworkId,
        Render::Removed,
        Render::NetworkLs,
        Render::Endpoint,
        Render::PortLs,
        Render::Fdb,
        Render::Stats,
        Render::Conntrack,
        Render::Ports,
        Render::Pruned,
        Render::Limits,
    ];

    /// The text for `v`, read as the type this rendering expects.
    pub fn text(self, v: &Value) -> Result<String, serde_json::Error> {
        Ok(match self {
            Render::Nothing => String::new(),
            Render::Pretty => pretty(v),
            Render::NetworkId => typed::<NetworkInspect>(v)?.id,
            Render::Removed => typed::<NetworkRemoved>(v)?.removed,
            Render::NetworkLs => network_ls(&typed::<Vec<NetworkRow>>(v)?),
            Render::Endpoint => endpoint(&typed::<EndpointInfo>(v)?),
            Render::PortLs => port_ls(&typed::<Vec<PortRow>>(v)?),
            Render::Fdb => fdb(&typed::<Vec<FdbRow>>(v)?),
            Render::Stats => stats(&typed::<Stats>(v)?),
            Render::Conntrack => conntrack(&typed::<Vec<ConntrackRow>>(v)?),
            Render::Ports => ports(&typed::<Vec<PublishedEntry>>(v)?),
            Render::Pruned => typed::<NetworkPruned>(v)?.removed.join("\n"),
            Render::Limits => limits(&typed::<crate::api::LimitInfo>(v)?),
        })
    }
}

fn limits(l: &crate::api::LimitInfo) -> String {
    let burst = l.burst.map_or_else(String::new, |b| format!(" burst {b}"));
    format!(
        "{}: in {} out {}{burst}",
        l.port,
        l.rate_in.as_deref().unwrap_or("unlimited"),
        l.rate_out.as_deref().unwrap_or("unlimited")
    )
}

fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(v)
}

/// An optional cell: `-` when absent.
fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<width$}", c, width = w.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub fn network_ls(v: &[NetworkRow]) -> String {
    let rows = v
        .iter()
        .map(|n| {
            vec![
                n.id.chars().take(12).collect(),
                n.name.clone(),
                n.driver.clone(),
                n.scope.clone(),
                both(&n.subnet, &n.subnet6),
                both(&n.gateway, &n.gateway6),
                opt(&n.vlan),
                n.containers.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NETWORK ID",
            "NAME",
            "DRIVER",
            "SCOPE",
            "SUBNET",
            "GATEWAY",
            "VLAN",
            "CONTAINERS",
        ],
        rows,
    )
}

/// `A,B` of two optional values (one per address family), the one there is, or `-`.
fn both<A: std::fmt::Display, B: std::fmt::Display>(a: &Option<A>, b: &Option<B>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{a},{b}"),
        (Some(a), None) => a.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) => "-".into(),
    }
}

pub fn endpoint(v: &EndpointInfo) -> String {
    let with = |a: Option<String>, p: &Option<u8>| a.map(|a| format!("{a}/{}", opt(p)));
    format!(
        "{} {} {} {} via {}",
        v.port,
        v.network,
        both(
            &with(v.ip.map(|a| a.to_string()), &v.prefix),
            &with(v.ip6.map(|a| a.to_string()), &v.prefix6)
        ),
        v.mac,
        both(&v.gateway, &v.gateway6)
    )
}

pub fn port_ls(v: &[PortRow]) -> String {
    let rows = v
        .iter()
        .map(|p| {
            let mut published = compact_published(&p.published);
            if let Some(why) = &p.not_restored {
                published.push(format!("NOT RESTORED: {why}"));
            }
            vec![
                p.name.clone(),
                p.network.clone(),
                p.kind.clone(),
                p.ifname.clone(),
                opt(&p.ip),
                opt(&p.ip6),
                p.mac.to_string(),
                published.join(", "),
            ]
        })
        .collect();
    table(
        &[
            "PORT",
            "NETWORK",
            "KIND",
            "IFNAME",
            "IP",
            "IPV6",
            "MAC",
            "PUBLISHED",
        ],
        rows,
    )
}

/// Published ports as `docker ps` shows them: a run of consecutive ports (host and
/// container both counting up, one protocol and host address) as one range,
/// `0.0.0.0:20000-20999->20000-20999/tcp`.
pub fn compact_published(v: &[PublishedEntry]) -> Vec<String> {
    let mut sorted: Vec<&PublishedEntry> = v.iter().collect();
    sorted.sort_by_key(|x| (x.proto, x.host_ip, x.container_port, x.host_port));
    let mut runs: Vec<(&PublishedEntry, u16)> = Vec::new();
    for x in sorted {
        if let Some((first, n)) = runs.last_mut() {
            let next = |a: u16| u32::from(a) + u32::from(*n);
            let follows = first.proto == x.proto
                && first.host_ip == x.host_ip
                && next(first.host_port) == u32::from(x.host_port)
                && next(first.container_port) == u32::from(x.container_port);
            if follows {
                *n += 1;
                continue;
            }
        }
        runs.push((x, 1));
    }
    (runs.into_iter())
        .map(|(x, n)| {
            let span = |a: u16| match n {
                1 => a.to_string(),
                _ => format!("{a}-{}", a.saturating_add(n - 1)),
            };
            let host_ip = match x.host_ip {
                std::net::IpAddr::V6(a) => format!("[{a}]"),
                a => a.to_string(),
            };
            format!(
                "{}:{}->{}/{}",
                host_ip,
                span(x.host_port),
                span(x.container_port),
                x.proto
            )
        })
        .collect()
}

/// `docker port NAME`: one line per published port (ranges compacted).
pub fn ports(v: &[PublishedEntry]) -> String {
    let lines: Vec<String> = compact_published(v)
        .into_iter()
        .filter_map(|s| {
            let (host, rest) = s.split_once("->")?;
            Some(format!("{rest} -> {host}"))
        })
        .collect();
    lines.join("\n")
}

pub fn fdb(v: &[FdbRow]) -> String {
    let rows = v
        .iter()
        .map(|r| {
            vec![
                r.mac.to_string(),
                opt(&r.vlan),
                opt(&r.network),
                r.port.clone(),
                r.age_secs.to_string(),
            ]
        })
        .collect();
    table(&["MAC", "VLAN", "NETWORK", "PORT", "AGE"], rows)
}

pub fn stats(v: &Stats) -> String {
    let rows = v
        .ports
        .iter()
        .map(|p| {
            let drops = p
                .drops
                .0
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                p.name.clone(),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                if drops.is_empty() { "-".into() } else { drops },
            ]
        })
        .collect();
    let mut out = table(
        &[
            "PORT", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "DROPS",
        ],
        rows,
    );
    let f = &v.fdb;
    out.push_str(&format!(
        "\nfdb: {} entries (limit {}), {} moves, {} refused",
        f.entries, f.limit, f.moves, f.learn_refused
    ));
    if let Some(n) = v.kernel_pairs {
        out.push_str(&format!("\nkernel path: {n} pairs carried by the kernel"));
    }
    for w in &v.workers {
        out.push_str(&format!(
            "\nworker {}: {:.1} s busy, {:.1} s idle",
            w.worker,
            w.busy_ns as f64 / 1e9,
            w.idle_ns as f64 / 1e9
        ));
    }
    for d in &v.dns {
        out.push_str(&format!(
            "\ndns {}: {} queries, {} answers, {} forwarded, {} failed",
            d.network, d.queries, d.answers, d.forwarded, d.failures
        ));
    }
    out
}

pub fn conntrack(v: &[ConntrackRow]) -> String {
    let rows = v
        .iter()
        .map(|f| {
            vec![
                f.protocol.clone(),
                f.inside.clone(),
                f.outside.clone(),
                f.state.clone(),
            ]
        })
        .collect();
    table(&["PROTO", "INSIDE", "OUTSIDE", "STATE"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Proto;

    fn entry(proto: Proto, host_port: u16, container_port: u16) -> PublishedEntry {
        PublishedEntry {
            proto,
            host_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
            host_port,
            container_port,
            auto: false,
        }
    }

    #[test]
    fn consecutive_ports_show_as_one_range_as_docker_ps_does() {
        let mut v: Vec<PublishedEntry> = (0..1000)
            .map(|i| entry(Proto::Tcp, 20000 + i, 20000 + i))
            .collect();
        v.push(entry(Proto::Udp, 20000, 20000));
        v.push(entry(Proto::Tcp, 8080, 80));
        v.push(entry(Proto::Tcp, 9000, 81)); // host port not following: its own entry
        v.reverse();
        assert_eq!(
            compact_published(&v),
            vec![
                "0.0.0.0:8080->80/tcp",
                "0.0.0.0:9000->81/tcp",
                "0.0.0.0:20000-20999->20000-20999/tcp",
                "0.0.0.0:20000->20000/udp",
            ]
        );
        assert_eq!(
            ports(&v[..2]),
            "80/tcp -> 0.0.0.0:8080\n81/tcp -> 0.0.0.0:9000"
        );
    }
}
