//! `vswitch-netavark`: a netavark plugin (API 1.0.0), so podman 5+ (netavark 1.6+) runs
//! containers on vswitch networks: `podman network create -d vswitch-netavark` and
//! `podman run --network`. The plugin's file name is the driver's name. A thin client of
//! the daemon's control socket, as `vswitch-cni` is:
//!
//! - `create` (the network JSON on stdin and stdout): creates the vswitch network of the
//!   same name from its subnets, one per family (and gateways, `ipv6_enabled`,
//!   `internal`, options `mtu`, `vlan`) when the daemon does not have it, and fills in
//!   its subnets and gateways;
//! - `setup NETNS`: attaches NETNS as the asked interface (static IPs of either family and
//!   MAC, aliases, port mappings published by vswitch) and prints the status block (the
//!   interface, its addresses, the gateway's addresses as DNS servers);
//! - `teardown NETNS`: detaches (nothing attached is success);
//! - `info`: the plugin's and the API's versions.
//!
//! The daemon is found through the network's `options.socket`, else `$VSWITCH_SOCKET`,
//! else the default socket.

pub mod types;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::api::{AttachReq, NetworkInspect, Request};
use crate::client::{Client, ClientError};
use crate::engines as engine;
use crate::state::NetworkSpec;
use types::{NetAddress, NetInterface, Network, PluginExec, StatusBlock, Subnet};

/// The plugin API netavark speaks.
pub const API_VERSION: &str = "1.0.0";

/// The most bytes read from standard input.
const MAX_INPUT: u64 = 1 << 20;

/// Why a plugin call failed: one line for netavark to show.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{} ({why})", engine::daemon_down(.socket))]
    Daemon { socket: PathBuf, why: String },
    #[error("{0}")]
    Refused(String),
    #[error("the input is not the JSON netavark sends: {0}")]
    Input(#[from] serde_json::Error),
    #[error("cannot read standard input: {0}")]
    Io(#[from] std::io::Error),
    #[error("usage: vswitch-netavark create | setup NETNS | teardown NETNS | info")]
    Usage,
}

impl From<ClientError> for PluginError {
    fn from(e: ClientError) -> PluginError {
        PluginError::Refused(e.to_string())
    }
}

/// The daemon's socket for `network`.
fn socket(network: &Network) -> PathBuf {
    network
        .options
        .as_ref()
        .and_then(|o| o.get("socket"))
        .map(PathBuf::from)
        .unwrap_or_else(crate::paths::default_socket)
}

fn connect(network: &Network) -> Result<Client, PluginError> {
    let s = socket(network);
    Client::connect(&s).map_err(|e| PluginError::Daemon {
        why: e.to_string(),
        socket: s,
    })
}

/// The network's subnets and gateways in `spec`, as podman means them: one subnet per
/// family; `ipv6_enabled` is dual stack (an IPv4 pool taken when only an IPv6 subnet is
/// given), and IPv6 subnets alone without it an IPv6-only network.
fn subnets_by_family(network: &Network, spec: &mut NetworkSpec) -> Result<(), PluginError> {
    let subnets = network.subnets.as_deref().unwrap_or_default();
    let nets: Vec<String> = subnets.iter().map(|s| s.subnet.clone()).collect();
    let gateways: Vec<std::net::IpAddr> = subnets.iter().filter_map(|s| s.gateway).collect();
    spec.ipv6 = network.ipv6_enabled;
    engine::by_family(spec, &nets, &gateways).map_err(|e| PluginError::Refused(e.to_string()))?;
    spec.no_ipv4 = spec.subnet.is_none() && spec.subnet6.is_some() && !network.ipv6_enabled;
    Ok(())
}

fn option_u32(network: &Network, key: &str) -> Result<Option<u32>, PluginError> {
    match network.options.as_ref().and_then(|o| o.get(key)) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| PluginError::Refused(format!("option {key}={v:?} is not a number"))),
    }
}

/// The vswitch network as `network_inspect` shows it, creating it when missing.
fn ensure(client: &mut Client, network: &Network) -> Result<NetworkInspect, PluginError> {
    let mut spec = NetworkSpec {
        name: network.name.clone(),
        internal: network.internal,
        no_dns: !network.dns_enabled,
        mtu: option_u32(network, "mtu")?,
        vlan: option_u32(network, "vlan")?,
        dns: (network.network_dns_servers.iter().flatten())
            .map(|a| a.to_string())
            .collect(),
        ..Default::default()
    };
    subnets_by_family(network, &mut spec)?;
    Ok(engine::ensure_network(client, &spec)?)
}

/// `create`: the network as podman will store it (a subnet per family the vswitch
/// network has, IPv4 first).
pub fn create(mut network: Network) -> Result<Network, PluginError> {
    if network.name.is_empty() {
        return Err(PluginError::Refused("the network has no name".into()));
    }
    let mut client = connect(&network)?;
    let n = ensure(&mut client, &network)?;
    network.subnets = Some(
        (n.ipam.config.iter())
            .map(|cfg| Subnet {
                subnet: cfg.subnet.to_string(),
                gateway: Some(cfg.gateway),
                rest: Default::default(),
            })
            .collect(),
    );
    network.ipv6_enabled = n.enable_ipv6;
    Ok(network)
}

/// The `-p` specs of the port mappings (ranges as `A-B:C-D`).
fn publish_specs(exec: &PluginExec) -> Result<Vec<String>, PluginError> {
    let mut v = Vec::new();
    for m in exec.port_mappings.as_deref().unwrap_or_default() {
        for proto in m.protocol.split(',').filter(|p| !p.is_empty()) {
            let map = engine::PortMap {
                host_ip: &m.host_ip,
                host_port: Some(m.host_port),
                container_port: m.container_port,
                count: m.range,
                proto,
            };
            v.push(
                map.spec()
                    .map_err(|e| PluginError::Refused(e.to_string()))?,
            );
        }
    }
    Ok(v)
}

/// What `attach` answers.
type Attached = crate::api::EndpointInfo;

/// `setup NETNS`: attaches the namespace; the status block.
pub fn setup(netns: &str, exec: &PluginExec) -> Result<StatusBlock, PluginError> {
    let mut client = connect(&exec.network)?;
    ensure(&mut client, &exec.network)?;
    let opts = &exec.network_options;
    let statics = opts.static_ips.as_deref().unwrap_or_default();
    let ip = statics.iter().find_map(|a| match a {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    });
    let ip6 = statics.iter().find_map(|a| match a {
        std::net::IpAddr::V6(v6) => Some(*v6),
        std::net::IpAddr::V4(_) => None,
    });
    let name = if crate::state::valid_name(&exec.container_name) {
        exec.container_name.clone()
    } else {
        engine::short_id(&exec.container_id)
    };
    let req = AttachReq {
        network: exec.network.name.clone(),
        name,
        netns: Some(netns.to_string()),
        ifname: Some(opts.interface_name.clone()),
        ip,
        ip6,
        mac: opts.static_mac.clone(),
        aliases: opts.aliases.clone().unwrap_or_default(),
        publish: publish_specs(exec)?,
        id: Some(exec.container_id.clone()),
        owner: Some("netavark".into()),
        ..Default::default()
    };
    let reply = client.call(Request::Attach(req))?;
    let a: Attached = serde_json::from_value(reply)?;
    Ok(status_block(&a))
}

/// The status block: the interface with an address per family and its gateway, and the
/// gateway's addresses as DNS servers where it answers DNS.
fn status_block(a: &Attached) -> StatusBlock {
    use std::net::IpAddr;
    let v4 = a.ip.map(|ip| NetAddress {
        gateway: a.gateway.map(IpAddr::V4),
        ipnet: format!("{ip}/{}", a.prefix.unwrap_or(32)),
    });
    let v6 = a.ip6.map(|ip| NetAddress {
        gateway: a.gateway6.map(IpAddr::V6),
        ipnet: format!("{ip}/{}", a.prefix6.unwrap_or(128)),
    });
    let iface = NetInterface {
        mac_address: a.mac.to_string(),
        subnets: Some(v4.into_iter().chain(v6).collect()),
    };
    let gateways: Vec<IpAddr> = (a.gateway.map(IpAddr::V4).into_iter())
        .chain(a.gateway6.map(IpAddr::V6))
        .collect();
    StatusBlock {
        dns_search_domains: Some(Vec::new()),
        dns_server_ips: (a.dns == Some(true) && !gateways.is_empty()).then_some(gateways),
        interfaces: Some(HashMap::from([(a.ifname.clone(), iface)])),
    }
}

/// `teardown NETNS`: detaches the container's interface on this network.
pub fn teardown(exec: &PluginExec) -> Result<(), PluginError> {
    let mut client = connect(&exec.network)?;
    let list = engine::containers(&mut client).map_err(|e| PluginError::Refused(e.to_string()))?;
    let at = (
        exec.network.name.as_str(),
        exec.network_options.interface_name.as_str(),
    );
    match engine::find(&list, "netavark", &exec.container_id, at) {
        Some((c, i)) => Ok(engine::detach(&mut client, c, i)?),
        None => Ok(()),
    }
}

fn read_stdin() -> Result<Vec<u8>, PluginError> {
    let mut b = Vec::new();
    std::io::stdin().take(MAX_INPUT).read_to_end(&mut b)?;
    Ok(b)
}

/// Runs the command `args` names; the JSON to print.
pub fn run(args: &[String]) -> Result<Value, PluginError> {
    match args {
        [cmd] if cmd == "create" => {
            let n: Network = serde_json::from_slice(&read_stdin()?)?;
            Ok(serde_json::to_value(create(n)?)?)
        }
        [cmd, netns] if cmd == "setup" => {
            let e: PluginExec = serde_json::from_slice(&read_stdin()?)?;
            Ok(serde_json::to_value(setup(netns, &e)?)?)
        }
        [cmd, _netns] if cmd == "teardown" => {
            let e: PluginExec = serde_json::from_slice(&read_stdin()?)?;
            teardown(&e)?;
            Ok(Value::Null)
        }
        [] => info(),
        [cmd] if cmd == "info" => info(),
        _ => Err(PluginError::Usage),
    }
}

fn info() -> Result<Value, PluginError> {
    Ok(serde_json::to_value(types::Info {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
    })?)
}

/// The binary's entry: the exit status.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::stdout();
    match run(&args) {
        Ok(Value::Null) => 0,
        Ok(v) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Err(e) => {
            let j = types::JsonError {
                error: e.to_string(),
            };
            let _ = writeln!(out, "{}", serde_json::to_string(&j).unwrap_or_default());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(json: &str) -> PluginExec {
        serde_json::from_str(json).unwrap()
    }

    const EXEC: &str = r#"{"container_id":"abc123","container_name":"web",
      "port_mappings":[{"host_ip":"","container_port":80,"host_port":8080,"range":1,"protocol":"tcp"},
                       {"host_ip":"127.0.0.1","container_port":53,"host_port":5353,"range":2,"protocol":"tcp,udp"}],
      "network":{"name":"front","id":"x","driver":"vswitch-netavark","network_interface":"","subnets":[{"subnet":"10.89.1.0/24","gateway":"10.89.1.1"}],
                 "ipv6_enabled":false,"internal":false,"dns_enabled":true,"ipam_options":{"driver":"host-local"}},
      "network_options":{"interface_name":"eth0","static_ips":["10.89.1.5"],"aliases":["w"]}}"#;

    #[test]
    fn netavarks_setup_input_is_understood_and_ports_expand() {
        let e = exec(EXEC);
        assert_eq!(
            e.network.subnets.as_ref().unwrap()[0].subnet,
            "10.89.1.0/24"
        );
        assert_eq!(
            publish_specs(&e).unwrap(),
            vec![
                "8080:80/tcp",
                "127.0.0.1:5353-5354:53-54/tcp",
                "127.0.0.1:5353-5354:53-54/udp"
            ]
        );
        // Unknown fields survive a round trip.
        let v = serde_json::to_value(&e.network).unwrap();
        assert_eq!(v["ipam_options"]["driver"], "host-local");
    }

    fn subnet(s: &str, gw: Option<&str>) -> Subnet {
        Subnet {
            subnet: s.into(),
            gateway: gw.map(|g| g.parse().unwrap()),
            ..Default::default()
        }
    }

    fn spec_of(subnets: Vec<Subnet>, ipv6_enabled: bool) -> Result<NetworkSpec, PluginError> {
        let n = Network {
            subnets: Some(subnets),
            ipv6_enabled,
            ..Default::default()
        };
        let mut spec = NetworkSpec::default();
        subnets_by_family(&n, &mut spec).map(|_| spec)
    }

    #[test]
    fn podmans_subnets_go_to_their_family() {
        let dual = vec![
            subnet("10.89.1.0/24", Some("10.89.1.1")),
            subnet("fd00:89::/64", Some("fd00:89::1")),
        ];
        let s = spec_of(dual, true).unwrap();
        assert_eq!(s.subnet.as_deref(), Some("10.89.1.0/24"));
        assert_eq!(s.subnet6.as_deref(), Some("fd00:89::/64"));
        assert_eq!(s.gateway6, Some("fd00:89::1".parse().unwrap()));
        assert!(s.ipv6 && !s.no_ipv4);
        // --ipv6 alone: dual stack, both prefixes taken by the daemon.
        let s = spec_of(Vec::new(), true).unwrap();
        assert!(s.ipv6 && !s.no_ipv4 && s.subnet.is_none());
        // An IPv6 subnet alone: IPv6-only, as podman makes it; with --ipv6, dual stack.
        let s = spec_of(vec![subnet("fd00:89::/64", None)], false).unwrap();
        assert!(s.ipv6 && s.no_ipv4);
        let s = spec_of(vec![subnet("fd00:89::/64", None)], true).unwrap();
        assert!(s.ipv6 && !s.no_ipv4);
        let s = spec_of(vec![subnet("10.89.1.0/24", None)], false).unwrap();
        assert!(!s.ipv6 && !s.no_ipv4);
        let two = vec![subnet("fd00:1::/64", None), subnet("fd00:2::/64", None)];
        assert!(spec_of(two, true).is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        let n = Network {
            options: Some(HashMap::from([("mtu".to_string(), "big".to_string())])),
            ..Default::default()
        };
        assert!(option_u32(&n, "mtu").is_err());
    }

    #[test]
    fn the_status_block_has_the_interface_and_the_gateway_as_dns() {
        let a = Attached {
            name: "web".into(),
            port: "web".into(),
            network: "podman".into(),
            ifname: "eth0".into(),
            ip: Some("10.89.1.5".parse().unwrap()),
            prefix: Some(24),
            ip6: None,
            prefix6: None,
            gateway6: None,
            gateway: Some("10.89.1.1".parse().unwrap()),
            mtu: Some(1500),
            dns: Some(true),
            mac: "02:42:0a:59:01:05".parse().unwrap(),
            aliases: Vec::new(),
            trunk: Vec::new(),
            port_security: true,
            resolv_conf: None,
            hostname: None,
            extra_hosts: Vec::new(),
        };
        let v = serde_json::to_value(status_block(&a)).unwrap();
        assert_eq!(
            v["interfaces"]["eth0"]["subnets"][0]["ipnet"],
            "10.89.1.5/24"
        );
        assert_eq!(v["dns_server_ips"], serde_json::json!(["10.89.1.1"]));
        // Dual stack: an address per family, each with its gateway, both as DNS servers.
        let dual = Attached {
            ip6: Some("fd00:89::5".parse().unwrap()),
            prefix6: Some(64),
            gateway6: Some("fd00:89::1".parse().unwrap()),
            ..a
        };
        let v = serde_json::to_value(status_block(&dual)).unwrap();
        let subnets = &v["interfaces"]["eth0"]["subnets"];
        assert_eq!(subnets[1]["ipnet"], "fd00:89::5/64");
        assert_eq!(subnets[1]["gateway"], "fd00:89::1");
        assert_eq!(subnets[0]["gateway"], "10.89.1.1");
        assert_eq!(
            v["dns_server_ips"],
            serde_json::json!(["10.89.1.1", "fd00:89::1"])
        );
    }

    #[test]
    fn a_missing_daemon_is_one_actionable_line() {
        let mut e = exec(EXEC);
        e.network.options = Some(HashMap::from([(
            "socket".to_string(),
            "/nonexistent/s.sock".to_string(),
        )]));
        let err = setup("/proc/self/ns/net", &e).unwrap_err().to_string();
        assert!(err.contains("start it with `vswitch daemon`"), "{err}");
        assert!(matches!(run(&["bogus".into()]), Err(PluginError::Usage)));
    }
}
