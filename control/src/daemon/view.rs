//! JSON shapes of command results (`network inspect` shaped like Docker's).

use serde_json::{Value, json};

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
pub fn network_inspect(state: &State, n: &Network) -> Value {
    let mut containers = serde_json::Map::new();
    for (c, e) in state.endpoints_on(&n.name) {
        containers.insert(
            c.id.clone(),
            json!({
                "Name": c.name,
                "EndpointID": e.id,
                "MacAddress": e.mac.to_string(),
                "IPv4Address": format!("{}/{}", e.ip, n.subnet.prefix_len()),
                "IPv6Address": "",
                "Aliases": e.aliases,
            }),
        );
    }
    let mut cfg = json!({"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()});
    if let Some(r) = n.ip_range {
        cfg["IPRange"] = json!(r.to_string());
    }
    let mut options = json!({
        "com.docker.network.bridge.enable_icc": n.icc.to_string(),
        "com.docker.network.bridge.enable_ip_masquerade": n.masquerade.to_string(),
        "com.docker.network.driver.mtu": n.mtu.to_string(),
        "vswitch.host_loopback": n.host_loopback.to_string(),
        "vswitch.dns": match n.dns { DnsMode::Names => "names", DnsMode::ForwardOnly => "forward-only", DnsMode::Off => "off" },
    });
    if let Some(v) = n.vlan {
        options["vswitch.vlan"] = json!(v.to_string());
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created),
        "Scope": "local",
        "Driver": "vswitch",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [cfg]},
        "Internal": n.internal,
        "Attachable": true,
        "Ingress": false,
        "Containers": containers,
        "Options": options,
        "Labels": {},
    })
}

pub fn network_ls(state: &State) -> Value {
    Value::Array(
        state
            .networks
            .values()
            .map(|n| {
                json!({
                    "Name": n.name,
                    "Id": n.id,
                    "Driver": "vswitch",
                    "Scope": "local",
                    "Subnet": n.subnet.to_string(),
                    "Gateway": n.gateway.to_string(),
                    "Internal": n.internal,
                    "VLAN": n.vlan,
                    "Containers": state.endpoints_on(&n.name).count(),
                })
            })
            .collect(),
    )
}

pub fn endpoint_json(state: &State, c: &Container, e: &Endpoint, i: usize) -> Value {
    let n = state.networks.get(&e.network);
    json!({
        "name": c.name,
        "port": c.port_name(i),
        "network": e.network,
        "ifname": e.ifname,
        "ip": e.ip.to_string(),
        "prefix": n.map(|n| n.subnet.prefix_len()),
        "gateway": n.map(|n| n.gateway.to_string()),
        "mtu": n.map(|n| n.mtu),
        "dns": n.map(|n| n.dns != DnsMode::Off),
        "mac": e.mac.to_string(),
        "aliases": e.aliases,
        "trunk": e.trunk,
        "port_security": e.port_security,
    })
}

pub fn attached(state: &State, c: &Container) -> Value {
    match c.endpoints.first() {
        Some(e) => endpoint_json(state, c, e, 0),
        None => json!({"name": c.name}),
    }
}

pub fn sandbox(state: &State, c: &Container) -> Value {
    let mut v = sandbox_paths(c);
    // What a container joining this one's namespace should use as resolver.
    if let Some(e) = c.endpoints.first()
        && let Some(n) = state.networks.get(&e.network)
        && n.dns != DnsMode::Off
    {
        v["resolv"] = json!(format!("nameserver {}\noptions ndots:0\n", n.gateway));
    }
    v
}

fn sandbox_paths(c: &Container) -> Value {
    match &c.sandbox {
        Sandbox::Netns { path } => json!({"netns": path}),
        Sandbox::Pid { pid, .. } | Sandbox::Run { pid } => json!({
            "netns": format!("/proc/{pid}/ns/net"),
            "userns": format!("/proc/{pid}/ns/user"),
            "pid": pid,
        }),
        Sandbox::Tap { ifname } => json!({"tap": ifname}),
    }
}

/// `container_ls`: every container of the state, with its endpoints and whether each
/// endpoint's port is open now.
pub fn containers(state: &State, open: impl Fn(&str) -> bool) -> Value {
    let v: Vec<Value> = state
        .containers
        .values()
        .map(|c| {
            let eps: Vec<Value> = c
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    json!({
                        "network": e.network,
                        "ifname": e.ifname,
                        "ip": e.ip.to_string(),
                        "mac": e.mac.to_string(),
                        "port": c.port_name(i),
                        "open": open(&c.port_name(i)),
                    })
                })
                .collect();
            json!({
                "name": c.name,
                "id": c.id,
                "owner": c.owner,
                "sandbox": sandbox_path(&c.sandbox),
                "endpoints": eps,
            })
        })
        .collect();
    Value::Array(v)
}

/// Where a container's interfaces are, as one string.
fn sandbox_path(s: &Sandbox) -> String {
    match s {
        Sandbox::Tap { ifname } => format!("tap:{ifname}"),
        Sandbox::Netns { path } => path.clone(),
        Sandbox::Pid { pid, .. } | Sandbox::Run { pid } => format!("/proc/{pid}/ns/net"),
    }
}

pub fn port_json(name: &str, slot: u16, c: &Container, e: &Endpoint) -> Value {
    let kind = match &c.sandbox {
        Sandbox::Tap { .. } => "tap",
        Sandbox::Netns { .. } => "netns",
        Sandbox::Pid { .. } => "pid",
        Sandbox::Run { .. } => "run",
    };
    json!({
        "name": name,
        "container": c.name,
        "network": e.network,
        "ifname": e.ifname,
        "kind": kind,
        "slot": slot,
        "ip": e.ip.to_string(),
        "mac": e.mac.to_string(),
        "trunk": e.trunk,
        "port_security": e.port_security,
        "published": c.published.iter().map(published_json).collect::<Vec<_>>(),
    })
}

pub fn published_json(p: &crate::state::Published) -> Value {
    json!({
        "proto": p.proto.to_string(),
        "host_ip": p.host_ip.to_string(),
        "host_port": p.host_port,
        "container_port": p.container_port,
        "auto": p.auto,
    })
}

pub fn stats_json(name: &str, s: &PortStats) -> Value {
    let mut drops = serde_json::Map::new();
    for r in DropReason::ALL {
        let n = s.drop_count(r);
        if n > 0 {
            drops.insert(r.name().to_string(), json!(n));
        }
    }
    json!({
        "name": name,
        "rx_packets": s.rx_packets,
        "rx_bytes": s.rx_bytes,
        "tx_packets": s.tx_packets,
        "tx_bytes": s.tx_bytes,
        "drops": drops,
    })
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
