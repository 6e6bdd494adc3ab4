//! The JSON of Docker's plugin protocol (libnetwork's remote network driver and remote
//! IPAM driver, as Docker 20.10 sends and reads it). Docker writes Go's nil maps and
//! slices as `null`: every such field is an `Option`. Fields the plugin does not use are
//! left out (serde ignores them).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Docker's option maps (`com.docker.network.generic`, ...).
pub type Options = Option<Map<String, Value>>;

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(default)]
    pub options: Options,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// One subnet of a network, as Docker's IPAM gave it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub address_space: String,
    /// The subnet, CIDR.
    #[serde(default)]
    pub pool: String,
    /// The gateway with the subnet's prefix, `10.1.0.1/24`.
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub aux_addresses: Option<HashMap<String, String>>,
}

/// `DeleteNetwork`.
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// `DeleteEndpoint`, `Leave`, `EndpointOperInfo`, `RevokeExternalConnectivity`.
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `CreateEndpoint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default)]
    pub interface: Option<EndpointInterface>,
}

/// The endpoint's addresses (CIDR) and MAC, as Docker asks for them or the plugin
/// answers them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

/// `Join`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The container's network namespace file (it exists once the container starts).
    pub sandbox_key: String,
}

/// What `Join` answers: the interface Docker moves into the container, and its gateway.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Joined {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    pub disable_gateway_service: bool,
}

/// The interface to move (`SrcName`, in Docker's namespace) and the prefix of its name
/// in the container (Docker adds the index: eth0, eth1, ...).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// `ProgramExternalConnectivity`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExternalConnectivity {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default)]
    pub options: Options,
}

/// One `-p` of a container (`com.docker.network.portmap`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP.
    pub proto: u8,
    /// The container port.
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    /// 0: any free port (`-P`, `-p 80`).
    #[serde(default)]
    pub host_port: u16,
    /// Past `HostPort` for `-p 8000-8010:80`: any free port of the range.
    #[serde(default)]
    pub host_port_end: u16,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPool {
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub sub_pool: String,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReleasePool {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress`, `ReleaseAddress`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// Empty: any free address.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub options: Option<HashMap<String, String>>,
}

/// `RequestAddress`'s option saying the address is the network's gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_2010s_requests_parse() {
        let c: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"325a","Options":{"com.docker.network.enable_ipv6":false,
            "com.docker.network.generic":{"com.docker.network.driver.mtu":"1400","vswitch.vlan":"5"},
            "com.docker.network.internal":true},
            "IPv4Data":[{"AddressSpace":"vswitch","Gateway":"10.77.0.1/24","Pool":"10.77.0.0/24"}],"IPv6Data":[]}"#,
        )
        .unwrap();
        assert_eq!(c.ipv4_data.unwrap()[0].gateway, "10.77.0.1/24");
        let e: CreateEndpoint = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.77.0.2/24","AddressIPv6":"","MacAddress":""},
            "Options":{"com.docker.network.endpoint.macaddress":"AhEiM0RV"}}"#,
        )
        .unwrap();
        assert_eq!(e.interface.unwrap().address, "10.77.0.2/24");
        let p: ExternalConnectivity = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}],
            "com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}"#,
        )
        .unwrap();
        let map = &p.options.unwrap()["com.docker.network.portmap"];
        let b: Vec<PortBinding> = serde_json::from_value(map.clone()).unwrap();
        assert_eq!((b[0].port, b[0].host_port), (80, 8080));
        let a: AddressRequest =
            serde_json::from_str(r#"{"PoolID":"p1","Address":"10.77.0.130","Options":null}"#)
                .unwrap();
        assert!(a.options.is_none());
    }

    #[test]
    fn join_answers_the_interface_to_move() {
        let j = Joined {
            interface_name: InterfaceName {
                src_name: "vsw0123456789ab".into(),
                dst_prefix: "eth".into(),
            },
            gateway: String::new(),
            gateway_ipv6: String::new(),
            disable_gateway_service: false,
        };
        assert_eq!(
            serde_json::to_string(&j).unwrap(),
            r#"{"InterfaceName":{"SrcName":"vsw0123456789ab","DstPrefix":"eth"},"DisableGatewayService":false}"#
        );
    }
}
