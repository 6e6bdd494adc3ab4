//! The JSON of netavark's plugin protocol (API 1.0.0), field for field as netavark 1.6+
//! and 2.x write and read it (`network::types` in the netavark crate). Fields the plugin
//! does not use are kept as they came (`rest`), so a network goes back to podman whole.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A podman network (`create`'s input and output; part of `setup`'s input).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Network {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub dns_enabled: bool,
    #[serde(default)]
    pub subnets: Option<Vec<Subnet>>,
    /// IPv6 on (`podman network create --ipv6`): dual stack.
    #[serde(default)]
    pub ipv6_enabled: bool,
    #[serde(default)]
    pub options: Option<HashMap<String, String>>,
    /// The network's resolvers (`podman network create --dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_dns_servers: Option<Vec<IpAddr>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One subnet of a network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Subnet {
    /// CIDR, e.g. `10.89.0.0/24` or `fd00:89::/64`.
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `setup` and `teardown` input.
#[derive(Debug, Clone, Deserialize)]
pub struct PluginExec {
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
    pub network: Network,
    pub network_options: PerNetworkOptions,
}

/// What the container asks of this network.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PerNetworkOptions {
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    pub interface_name: String,
    #[serde(default)]
    pub static_ips: Option<Vec<IpAddr>>,
    #[serde(default)]
    pub static_mac: Option<String>,
}

/// One published port range.
#[derive(Debug, Clone, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    #[serde(default)]
    pub host_ip: String,
    pub host_port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub range: u16,
}

/// `setup`'s output.
#[derive(Debug, Clone, Serialize)]
pub struct StatusBlock {
    pub dns_search_domains: Option<Vec<String>>,
    pub dns_server_ips: Option<Vec<IpAddr>>,
    pub interfaces: Option<HashMap<String, NetInterface>>,
}

/// The interface `setup` made.
#[derive(Debug, Clone, Serialize)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Option<Vec<NetAddress>>,
}

/// An address of the interface, with its subnet's prefix, and the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct NetAddress {
    pub gateway: Option<IpAddr>,
    /// `10.89.0.2/24`, `fd00:89::2/64`.
    pub ipnet: String,
}

/// `info`'s output.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub version: String,
    pub api_version: String,
}

/// What a failing plugin prints (netavark reads `error`).
#[derive(Debug, Clone, Serialize)]
pub struct JsonError {
    pub error: String,
}
