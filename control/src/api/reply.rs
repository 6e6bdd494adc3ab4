//! What each command answers with (the `data` of an `ok` response). Field order is the
//! order on the wire. The daemon builds these; `ctl`, `run` and the engine plugins read
//! them back, so renaming a field is a compile error on both sides.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::net::{Ipv4Cidr, Ipv6Cidr};
use crate::state::{Proto, Uplink};
use dataplane::wire::MacAddr;

/// Any command's answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Reply {
    Hello(Hello),
    /// `network_create`.
    Network(Box<NetworkInspect>),
    /// `network_inspect`: a list of one, as Docker's.
    Networks(Vec<NetworkInspect>),
    NetworkLs(Vec<NetworkRow>),
    NetworkRemoved(NetworkRemoved),
    /// `attach`, `connect`.
    Endpoint(Box<EndpointInfo>),
    /// `attach` of a container without endpoints.
    Named(Named),
    Detached(Detached),
    Disconnected(Disconnected),
    ContainerLs(Vec<ContainerRow>),
    PortLs(Vec<PortRow>),
    /// `publish`, `unpublish`.
    Published(Vec<PublishedEntry>),
    FdbShow(Vec<FdbRow>),
    /// `fdb_flush`, `conntrack_flush`.
    Flushed(Flushed),
    Stats(Box<Stats>),
    /// `uplink_set`, `uplink_show`.
    Uplink(Uplink),
    Sandbox(SandboxInfo),
    ConntrackLs(Vec<ConntrackRow>),
    /// `capture`: the line before the pcap stream.
    Capturing(Capturing),
    AddressReserved(AddressReserved),
    AddressReleased(AddressReleased),
    Ula(Ula),
    NetworkPruned(NetworkPruned),
    /// `limit`.
    Limits(LimitInfo),
}

/// `limit`: a port's bandwidth limits after the change (rates as `100mbit`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitInfo {
    pub port: String,
    #[serde(default)]
    pub rate_in: Option<String>,
    #[serde(default)]
    pub rate_out: Option<String>,
    /// The buckets' depth in bytes, when given (else 5 ms of the rate, at least 64 KiB).
    #[serde(default)]
    pub burst: Option<u64>,
}

/// `hello`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u32,
    pub version: String,
    pub workers: usize,
    /// The daemon's ports use TAP offloads (a `run` TAP needs vnet headers then).
    pub offload: bool,
}

/// A JSON object whose keys keep the order they were inserted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

/// One network as `docker network inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    pub name: String,
    pub id: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv4", default = "yes")]
    pub enable_ipv4: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    /// Container id -> its endpoint on this network.
    pub containers: OrderedMap<NetworkMember>,
    pub options: NetworkOptions,
    pub labels: OrderedMap<String>,
    /// How much of each prefix is in use (Docker's `Status.IPAM.Subnets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NetworkStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkStatus {
    #[serde(rename = "IPAM")]
    pub ipam: IpamStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamStatus {
    /// Prefix -> its use, IPv4 first.
    #[serde(rename = "Subnets")]
    pub subnets: OrderedMap<SubnetStatus>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubnetStatus {
    /// The network and broadcast addresses, the gateway, endpoints, reservations.
    #[serde(rename = "IPsInUse")]
    pub ips_in_use: u64,
    /// Addresses IPAM may still give (in the `--ip-range`), at most `u64::MAX`.
    #[serde(rename = "DynamicIPsAvailable")]
    pub dynamic_ips_available: u64,
}

/// What `network prune` removed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkPruned {
    pub removed: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: String,
    pub options: OrderedMap<String>,
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamConfig {
    /// An IPv4 or IPv6 prefix (one entry per family, IPv4 first, as Docker lists them).
    #[serde(rename = "Subnet")]
    pub subnet: String,
    #[serde(rename = "Gateway")]
    pub gateway: IpAddr,
    #[serde(
        rename = "IPRange",
        default,
        with = "crate::net::cidr_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_range: Option<Ipv4Cidr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkMember {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "MacAddress", with = "crate::state::mac_text")]
    pub mac_address: MacAddr,
    /// Address and prefix, `172.18.0.2/16`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
    #[serde(rename = "Aliases")]
    pub aliases: Vec<String>,
}

/// Docker's option names, values as text ("true", "1500").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkOptions {
    #[serde(rename = "com.docker.network.bridge.enable_icc")]
    pub enable_icc: String,
    #[serde(rename = "com.docker.network.bridge.enable_ip_masquerade")]
    pub enable_ip_masquerade: String,
    #[serde(rename = "com.docker.network.driver.mtu")]
    pub mtu: String,
    #[serde(rename = "vswitch.host_loopback")]
    pub host_loopback: String,
    /// `names`, `forward-only` or `off`.
    #[serde(rename = "vswitch.dns")]
    pub dns: String,
    #[serde(
        rename = "vswitch.vlan",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vlan: Option<String>,
    /// The network's own resolvers (`--dns`), comma separated.
    #[serde(
        rename = "vswitch.dns_servers",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dns_servers: Option<String>,
    /// Its search domains (`--dns-search`), comma separated.
    #[serde(
        rename = "vswitch.dns_search",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dns_search: Option<String>,
    /// `false` when router advertisements let no host form its address (the engine
    /// configures them: Docker's networks); absent otherwise.
    #[serde(
        rename = "vswitch.slaac",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub slaac: Option<String>,
}

/// One row of `network_ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRow {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub scope: String,
    /// The IPv4 prefix and gateway (None: IPv6-only).
    #[serde(default, with = "crate::net::cidr_opt")]
    pub subnet: Option<Ipv4Cidr>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 prefix and gateway (None: no IPv6).
    #[serde(
        default,
        with = "crate::net::cidr_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet6: Option<Ipv6Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub internal: bool,
    #[serde(rename = "VLAN")]
    pub vlan: Option<u16>,
    pub containers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRemoved {
    pub removed: String,
    pub containers_removed: Vec<String>,
}

/// A container's endpoint on one network (what `attach` and `connect` answer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    pub name: String,
    pub port: String,
    pub network: String,
    pub ifname: String,
    pub ip: Option<Ipv4Addr>,
    pub prefix: Option<u8>,
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 address, its prefix length and the gateway's IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: Option<u16>,
    /// The gateway answers DNS on this network.
    pub dns: Option<bool>,
    #[serde(with = "crate::state::mac_text")]
    pub mac: MacAddr,
    pub aliases: Vec<String>,
    pub trunk: Vec<u16>,
    pub port_security: bool,
    /// The resolv.conf the container should have (its resolvers, search domains and
    /// options), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `--add-host` entries, `host-gateway` given as the gateway's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<crate::state::ExtraHost>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Named {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Detached {
    pub detached: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disconnected {
    pub disconnected: String,
    pub network: String,
}

/// One container of `container_ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerRow {
    pub name: String,
    pub id: String,
    pub owner: Option<String>,
    /// Where its interfaces are: a namespace path, or `tap:NAME`.
    pub sandbox: String,
    pub endpoints: Vec<ContainerEndpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerEndpoint {
    pub network: String,
    pub ifname: String,
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(with = "crate::state::mac_text")]
    pub mac: MacAddr,
    pub port: String,
    /// The port is open in the dataplane now.
    pub open: bool,
}

/// One port of `port_ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortRow {
    pub name: String,
    pub container: String,
    pub network: String,
    pub ifname: String,
    /// `tap`, `netns`, `pid`, `run` or `handoff` (a TAP its engine moves, Docker's).
    pub kind: String,
    pub slot: u16,
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(with = "crate::state::mac_text")]
    pub mac: MacAddr,
    pub trunk: Vec<u16>,
    pub port_security: bool,
    pub published: Vec<PublishedEntry>,
    /// Why the port was not opened at start (its container's pid names another process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_restored: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedEntry {
    pub proto: Proto,
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    /// The host port was chosen by the daemon.
    pub auto: bool,
}

/// One row of `fdb_show`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbRow {
    #[serde(with = "crate::state::mac_text")]
    pub mac: MacAddr,
    pub vlan: Option<u16>,
    pub network: Option<String>,
    /// The port's name (`?` when it is gone).
    pub port: String,
    pub age_secs: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flushed {
    pub flushed: usize,
}

/// `address_reserve`: the address held, with its network's prefix and gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddressReserved {
    pub network: String,
    pub ip: std::net::IpAddr,
    pub prefix: u8,
    pub gateway: std::net::IpAddr,
}

/// `ula`: the daemon's unique local IPv6 prefix (RFC 4193).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ula {
    #[serde(with = "crate::net::cidr")]
    pub ula: Ipv6Cidr,
}

/// `address_release`: whether a reservation was given back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddressReleased {
    pub network: String,
    pub ip: std::net::IpAddr,
    pub released: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Capturing {
    pub capturing: String,
}

/// `stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// `null` when the gateway thread did not answer.
    pub gateway: Option<GatewayCounters>,
    /// The socket uplink; `null` as `gateway`.
    pub nat: Option<SocketNatCounters>,
    pub packet_nat: PacketNatCounters,
    pub ports: Vec<PortCounters>,
    pub fdb: FdbCounters,
    /// Every drop reason's name, in order.
    pub drop_reasons: Vec<String>,
    /// The embedded DNS, per network (networks it has served); empty when the gateway
    /// thread did not answer.
    #[serde(default)]
    pub dns: Vec<DnsCounters>,
    /// Each worker thread's time: rounds that moved frames, and the rest.
    #[serde(default)]
    pub workers: Vec<WorkerTimes>,
    /// Unicast pairs of containers the kernel carries (`null`: no kernel path).
    #[serde(default)]
    pub kernel_pairs: Option<u64>,
}

/// Where one worker thread's time went since the daemon started, in nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerTimes {
    pub worker: usize,
    /// Rounds that moved frames.
    pub busy_ns: u64,
    /// Waiting in its poll, or rounds that found nothing.
    pub idle_ns: u64,
}

/// What the embedded DNS did for one network's containers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsCounters {
    pub network: String,
    /// Queries received, refused ones included.
    pub queries: u64,
    /// Answers sent, whatever their code.
    pub answers: u64,
    /// Queries sent to an upstream resolver (first attempts).
    pub forwarded: u64,
    /// Answered SERVFAIL or REFUSED, or refused by the container's share of queries in
    /// flight.
    pub failures: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayCounters {
    pub frames: u64,
    pub arp_replies: u64,
    pub echo_replies: u64,
    pub dhcp_replies: u64,
    pub dhcp_ignored: u64,
    pub icmp_errors: u64,
    pub routed: u64,
    pub unanswered: u64,
    pub no_neighbour: u64,
    /// Neighbour advertisements for the gateways' IPv6 addresses.
    #[serde(default)]
    pub nd_replies: u64,
    /// Router advertisements sent, solicited and periodic.
    #[serde(default)]
    pub router_adverts: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SocketNatCounters {
    /// Always `socket`.
    pub uplink: String,
    pub tcp_open: usize,
    pub udp_flows: usize,
    pub echo_flows: usize,
    pub tcp_opened_total: u64,
    pub tcp_refused: u64,
    pub udp_flows_total: u64,
    pub echo_flows_total: u64,
    pub dropped: u64,
    pub tcp_handshake_timeouts: u64,
    pub tcp_idle_timeouts: u64,
    pub refused_quota: u64,
    /// Published-port connections from the host's loopback spliced into the container.
    #[serde(default)]
    pub tcp_spliced: u64,
    /// Loopback clients that took the frame path (the namespace could not be entered).
    #[serde(default)]
    pub splice_fallbacks: u64,
    /// RSTs from containers inside the window but inexact, answered with a challenge
    /// ACK instead of ending the connection (RFC 5961).
    #[serde(default)]
    pub challenge_acks: u64,
    /// IP fragments from containers, dropped (the socket uplink reassembles nothing).
    #[serde(default)]
    pub fragments: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PacketNatCounters {
    pub flows: usize,
    pub limit: usize,
    pub created: u64,
    pub refused_full: u64,
    pub refused_ports: u64,
    pub refused_quota: u64,
    pub per_container: usize,
    pub expired: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortCounters {
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Reason name -> frames dropped, reasons with none left out.
    pub drops: OrderedMap<u64>,
    /// What a TAP with offloads did with super-frames (zero on other ports).
    #[serde(default)]
    pub offload: OffloadCounters,
    /// A VM socket's peer: connections taken, peers cut off (zero on other ports).
    #[serde(default)]
    pub peer: PeerCounters,
}

/// A VM socket's peer counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerCounters {
    /// Connections taken: the first and every reconnection (a rebooted VM's QEMU).
    pub connects: u64,
    /// Peers cut off for sending a length over the frame limit or bytes no frame has.
    pub cut_off: u64,
}

/// A port's super-frame counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OffloadCounters {
    /// Super-frames received (frames with segmentation metadata).
    pub rx_super: u64,
    /// Super-frames passed to the kernel as they are (merged datagrams included).
    pub tx_super: u64,
    /// Frames written for super-frames segmented in software.
    pub tx_sw_segments: u64,
    /// Datagrams written merged with others of their flow.
    pub tx_udp_merged: u64,
    /// Merged writes the kernel refused.
    pub tx_merge_refused: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbCounters {
    pub entries: usize,
    pub limit: u32,
    pub moves: u64,
    pub learn_refused: u64,
}

/// `sandbox`: where a container's namespaces are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// A VM's socket (`attach --vm-socket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_socket: Option<String>,
    /// The resolv.conf a container joining these namespaces should use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv: Option<String>,
}

/// One flow of `conntrack_ls`: the socket uplink's or the packet uplink's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackRow {
    pub protocol: String,
    /// `IP:PORT` as the container sees it.
    pub inside: String,
    /// `IP:PORT` as the outside sees it.
    pub outside: String,
    /// The far end (packet uplink only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u32>,
    /// `socket` or `packet`.
    pub uplink: String,
}
