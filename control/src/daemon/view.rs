//! Command results built from the state (`network inspect` shaped like Docker's): pure
//! functions of what they are given.

use crate::api::{
    ContainerEndpoint, ContainerRow, EndpointInfo, Ipam, IpamConfig, Named, NetworkInspect,
    NetworkMember, NetworkOptions, NetworkRow, OffloadCounters, OrderedMap, PeerCounters,
    PortCounters, PortRow, PublishedEntry, Reply, SandboxInfo,
};
use crate::api::{IpamStatus, NetworkStatus, SubnetStatus};

use crate::state::{Container, DnsMode, Endpoint, Network, Sandbox, State};
use dataplane::bridge::{DropReason, PortStats};

fn rfc3339(secs: u64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm), UTC.
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// One network as `docker network inspect` shows it.
pub fn network_inspect(state: &State, n: &Network) -> NetworkInspect {
    let containers = state
        .endpoints_on(&n.name)
        .map(|(c, e)| {
            let m = NetworkMember {
                name: c.name.clone(),
                endpoint_id: e.id.clone(),
                mac_address: e.mac,
                ipv4_address: with_prefix(e.ip, n.subnet.map(|s| s.prefix_len())),
                ipv6_address: with_prefix(e.ip6, n.ipv6.map(|v| v.subnet.prefix_len())),
                aliases: e.aliases.clone(),
            };
            (c.id.clone(), m)
        })
        .collect();
    NetworkInspect {
        name: n.name.clone(),
        id: n.id.clone(),
        created: rfc3339(n.created),
        scope: "local".into(),
        driver: "vswitch".into(),
        enable_ipv4: n.subnet.is_some(),
        enable_ipv6: n.ipv6.is_some(),
        ipam: Ipam {
            driver: "default".into(),
            options: OrderedMap::default(),
            config: ipam_configs(n),
        },
        internal: n.internal,
        attachable: true,
        ingress: false,
        containers: OrderedMap(containers),
        options: network_options(n),
        labels: OrderedMap::default(),
        status: Some(network_status(state, n)),
    }
}

/// Docker's `Status.IPAM.Subnets`: each prefix's addresses in use and still free.
fn network_status(state: &State, n: &Network) -> NetworkStatus {
    let v4 = (n.subnet.zip(state.use_v4(n))).map(|(p, u)| (p.to_string(), u));
    let v6 = (n.ipv6.zip(state.use_v6(n))).map(|(v, u)| (v.subnet.to_string(), u));
    let subnets = (v4.into_iter().chain(v6))
        .map(|(p, u)| {
            let s = SubnetStatus {
                ips_in_use: u.in_use,
                dynamic_ips_available: u.available,
            };
            (p, s)
        })
        .collect();
    NetworkStatus {
        ipam: IpamStatus {
            subnets: OrderedMap(subnets),
        },
    }
}

/// `ADDR/PREFIX`, or "" without an address (as Docker shows a family a container does
/// not have).
fn with_prefix(a: Option<impl std::fmt::Display>, prefix: Option<u8>) -> String {
    match (a, prefix) {
        (Some(a), Some(p)) => format!("{a}/{p}"),
        _ => String::new(),
    }
}

/// One IPAM entry per address family, IPv4 first.
fn ipam_configs(n: &Network) -> Vec<IpamConfig> {
    let v4 = n.v4().map(|(subnet, gateway)| IpamConfig {
        subnet: subnet.to_string(),
        gateway: gateway.into(),
        ip_range: n.ip_range,
    });
    let v6 = n.ipv6.map(|v| IpamConfig {
        subnet: v.subnet.to_string(),
        gateway: v.gateway.into(),
        ip_range: None,
    });
    v4.into_iter().chain(v6).collect()
}

fn network_options(n: &Network) -> NetworkOptions {
    NetworkOptions {
        enable_icc: n.icc.to_string(),
        enable_ip_masquerade: n.masquerade.to_string(),
        mtu: n.mtu.to_string(),
        host_loopback: n.host_loopback.to_string(),
        dns: match n.dns {
            DnsMode::Names => "names",
            DnsMode::ForwardOnly => "forward-only",
            DnsMode::Off => "off",
        }
        .into(),
        vlan: n.vlan.map(|v| v.to_string()),
        dns_servers: join_nonempty(n.dns_servers.iter().map(|a| a.to_string())),
        dns_search: join_nonempty(n.dns_search.iter().cloned()),
        slaac: (n.ipv6.is_some() && n.no_slaac).then(|| "false".into()),
    }
}

/// The items joined by commas, or None when there are none.
fn join_nonempty(items: impl Iterator<Item = String>) -> Option<String> {
    let v: Vec<String> = items.collect();
    (!v.is_empty()).then(|| v.join(","))
}

pub fn network_ls(state: &State) -> Vec<NetworkRow> {
    state
        .networks
        .values()
        .map(|n| NetworkRow {
            name: n.name.clone(),
            id: n.id.clone(),
            driver: "vswitch".into(),
            scope: "local".into(),
            subnet: n.subnet,
            gateway: n.gateway,
            subnet6: n.ipv6.map(|v| v.subnet),
            gateway6: n.ipv6.map(|v| v.gateway),
            internal: n.internal,
            vlan: n.vlan,
            containers: state.endpoints_on(&n.name).count(),
        })
        .collect()
}

pub fn endpoint_info(state: &State, c: &Container, e: &Endpoint, i: usize) -> EndpointInfo {
    let n = state.networks.get(&e.network);
    EndpointInfo {
        name: c.name.clone(),
        port: c.port_name(i),
        network: e.network.clone(),
        ifname: e.ifname.clone(),
        ip: e.ip,
        prefix: n.and_then(|n| n.subnet).map(|s| s.prefix_len()),
        gateway: n.and_then(|n| n.gateway),
        ip6: e.ip6,
        prefix6: n.and_then(|n| n.ipv6).map(|v| v.subnet.prefix_len()),
        gateway6: n.and_then(|n| n.ipv6).map(|v| v.gateway),
        mtu: n.map(|n| n.mtu),
        dns: n.map(|n| n.dns != DnsMode::Off),
        mac: e.mac,
        aliases: e.aliases.clone(),
        trunk: e.trunk.clone(),
        port_security: e.port_security,
        resolv_conf: n.and_then(|n| container_resolv(c, n)),
        hostname: c.dns.hostname.clone(),
        extra_hosts: n.map(|n| extra_hosts(c, n)).unwrap_or_default(),
    }
}

/// The resolv.conf of container `c` on network `n`: the gateway where it answers DNS
/// (forwarding to the container's or the network's resolvers), else the container's
/// own resolvers; the container's search domains, then the network's; its options.
pub fn container_resolv(c: &Container, n: &Network) -> Option<String> {
    let servers: Vec<std::net::IpAddr> = if n.dns != DnsMode::Off {
        let gws = [n.gateway.map(Into::into), n.ipv6.map(|v| v.gateway.into())];
        gws.into_iter().flatten().collect()
    } else {
        c.dns.servers.iter().map(|s| s.ip()).collect()
    };
    if servers.is_empty() {
        return None;
    }
    let mut search = c.dns.search.clone();
    search.extend(
        n.dns_search
            .iter()
            .filter(|d| !c.dns.search.contains(d))
            .cloned(),
    );
    Some(crate::net::resolv_conf_with(
        &servers,
        &search,
        &c.dns.options,
    ))
}

/// The container's `--add-host` entries with `host-gateway` resolved to `n`'s gateway
/// (IPv4, else IPv6; left out on a network with neither).
pub fn extra_hosts(c: &Container, n: &Network) -> Vec<crate::state::ExtraHost> {
    let gw = (n.gateway.map(std::net::IpAddr::V4)).or(n.ipv6.map(|v| v.gateway.into()));
    (c.dns.hosts.iter())
        .filter_map(|h| {
            Some(crate::state::ExtraHost {
                name: h.name.clone(),
                ip: Some(h.ip.or(gw)?),
            })
        })
        .collect()
}

pub fn attached(state: &State, c: &Container) -> Reply {
    match c.endpoints.first() {
        Some(e) => Reply::Endpoint(Box::new(endpoint_info(state, c, e, 0))),
        None => Reply::Named(Named {
            name: c.name.clone(),
        }),
    }
}

pub fn sandbox(state: &State, c: &Container) -> SandboxInfo {
    let mut v = sandbox_paths(c);
    // What a container joining this one's namespace should use as resolver.
    if let Some(e) = c.endpoints.first()
        && let Some(n) = state.networks.get(&e.network)
    {
        v.resolv = container_resolv(c, n);
    }
    v
}

fn sandbox_paths(c: &Container) -> SandboxInfo {
    match &c.sandbox {
        Sandbox::Netns { path }
        | Sandbox::Handoff {
            netns: path,
            host: _,
        } => SandboxInfo {
            netns: Some(path.clone()),
            ..Default::default()
        },
        Sandbox::Pid { pid, .. } | Sandbox::Run { pid } => SandboxInfo {
            netns: Some(format!("/proc/{pid}/ns/net")),
            userns: Some(format!("/proc/{pid}/ns/user")),
            pid: Some(*pid),
            ..Default::default()
        },
        Sandbox::Tap { ifname } => SandboxInfo {
            tap: Some(ifname.clone()),
            ..Default::default()
        },
        Sandbox::Vm { socket } => SandboxInfo {
            vm_socket: Some(socket.clone()),
            ..Default::default()
        },
    }
}

/// `container_ls`: every container of the state, with its endpoints and whether each
/// endpoint's port is open now.
pub fn containers(state: &State, open: impl Fn(&str) -> bool) -> Vec<ContainerRow> {
    state
        .containers
        .values()
        .map(|c| ContainerRow {
            name: c.name.clone(),
            id: c.id.clone(),
            owner: c.owner.clone(),
            sandbox: sandbox_path(&c.sandbox),
            endpoints: c
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| ContainerEndpoint {
                    network: e.network.clone(),
                    ifname: e.ifname.clone(),
                    ip: e.ip,
                    ip6: e.ip6,
                    mac: e.mac,
                    port: c.port_name(i),
                    open: open(&c.port_name(i)),
                })
                .collect(),
        })
        .collect()
}

/// Where a container's interfaces are, as one string.
fn sandbox_path(s: &Sandbox) -> String {
    match s {
        Sandbox::Tap { ifname } => format!("tap:{ifname}"),
        Sandbox::Netns { path } => path.clone(),
        Sandbox::Handoff { netns, .. } => netns.clone(),
        Sandbox::Pid { pid, .. } | Sandbox::Run { pid } => format!("/proc/{pid}/ns/net"),
        Sandbox::Vm { socket } => format!("vm:{socket}"),
    }
}

pub fn port_row(name: &str, slot: u16, c: &Container, e: &Endpoint) -> PortRow {
    let kind = match &c.sandbox {
        Sandbox::Tap { .. } => "tap",
        Sandbox::Netns { .. } => "netns",
        Sandbox::Pid { .. } => "pid",
        Sandbox::Run { .. } => "run",
        Sandbox::Handoff { .. } => "handoff",
        Sandbox::Vm { .. } => "vm",
    };
    PortRow {
        name: name.to_string(),
        container: c.name.clone(),
        network: e.network.clone(),
        ifname: e.ifname.clone(),
        kind: kind.into(),
        slot,
        ip: e.ip,
        ip6: e.ip6,
        mac: e.mac,
        trunk: e.trunk.clone(),
        port_security: e.port_security,
        published: c.published.iter().map(published_entry).collect(),
        not_restored: None,
    }
}

pub fn published_entry(p: &crate::state::Published) -> PublishedEntry {
    PublishedEntry {
        proto: p.proto,
        host_ip: p.host_ip,
        host_port: p.host_port,
        container_port: p.container_port,
        auto: p.auto,
    }
}

pub fn port_counters(name: &str, s: &PortStats) -> PortCounters {
    let drops = DropReason::ALL
        .iter()
        .map(|&r| (r.name().to_string(), s.drop_count(r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    PortCounters {
        name: name.to_string(),
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        drops: OrderedMap(drops),
        offload: OffloadCounters {
            rx_super: s.offload.rx_super,
            tx_super: s.offload.tx_super,
            tx_sw_segments: s.offload.tx_sw_segments,
            tx_udp_merged: s.offload.tx_udp_merged,
            tx_merge_refused: s.offload.tx_merge_refused,
        },
        peer: PeerCounters {
            connects: s.peer.connects,
            cut_off: s.peer.cut_off,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_392_000), "2026-11-23T00:00:00Z");
    }
}
