//! What the daemon knows and keeps across restarts: networks, containers and their
//! endpoints (one per network they are on), addresses, published ports, the uplink.
//!
//! Every change is validated in full before anything is modified, so a refused request
//! leaves the state exactly as it was. The state is saved atomically (temporary file,
//! fsync, rename, fsync of the directory) after every change.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use dataplane::wire::MacAddr;
use serde::{Deserialize, Serialize};

use crate::net::{Ipv4Cidr, Ipv6Cidr};

pub mod dnsopts;
pub mod lifecycle;
pub use dnsopts::{AddressPool, ContainerDns, DnsOpts, ExtraHost};
pub use lifecycle::{NetworkUpdate, SubnetUse};

/// The name of the network the daemon creates on first start.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE_SUBNET: &str = "172.17.0.0/16";
pub const DEFAULT_MTU: u16 = 1500;
/// The least MTU of a link carrying IPv6 (RFC 8200).
pub const IPV6_MIN_MTU: u32 = 1280;
pub const STATE_FILE: &str = "state.json";
const STATE_VERSION: u32 = 1;

/// How a network's gateway answers DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsMode {
    /// Container names and aliases, then forwarding (user-defined networks).
    Names,
    /// Forwarding only, no container names (the default bridge, as docker0).
    ForwardOnly,
    /// Nothing on port 53 (`--no-dns`).
    Off,
}

/// A network's IPv6: its prefix and the gateway's address in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net6 {
    #[serde(with = "crate::net::cidr")]
    pub subnet: Ipv6Cidr,
    pub gateway: Ipv6Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// The bridge domain id of the network in the dataplane.
    pub domain: u16,
    /// The IPv4 prefix (None: an IPv6-only network, `--ipv4=false`).
    #[serde(default, with = "crate::net::cidr_opt")]
    pub subnet: Option<Ipv4Cidr>,
    /// The gateway's IPv4 address (None exactly when `subnet` is).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 (`--ipv6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Net6>,
    #[serde(default, with = "crate::net::cidr_opt")]
    pub ip_range: Option<Ipv4Cidr>,
    pub vlan: Option<u16>,
    pub internal: bool,
    pub dns: DnsMode,
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: u16,
    /// GATEWAY:PORT reaches the host's 127.0.0.1 (`--host-loopback`); otherwise the
    /// host's main address.
    #[serde(default)]
    pub host_loopback: bool,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Addresses held for an engine's IPAM (`address_reserve`) until an endpoint takes
    /// them or they are released; never given to anyone else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<Ipv4Addr>,
    /// The IPv6 addresses held the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved6: Vec<Ipv6Addr>,
    /// Router advertisements do not let hosts form addresses (SLAAC): the engine
    /// configures them (Docker).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_slaac: bool,
    /// The network's own upstream resolvers (`--dns`), instead of the daemon's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<SocketAddr>,
    /// Search domains (`--dns-search`): `NAME.DOMAIN` is answered as `NAME`, and `run`
    /// containers get them in resolv.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
}

impl Network {
    /// 02:42 and the gateway's IPv4 address (Docker's scheme); on an IPv6-only network
    /// 02:42 and the first four bytes of the network's id.
    pub fn gateway_mac(&self) -> MacAddr {
        match self.gateway {
            Some(g) => MacAddr::from_ipv4(g),
            None => {
                let hex = |i: usize| {
                    (self.id.get(2 * i..2 * i + 2))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .unwrap_or(0)
                };
                MacAddr([0x02, 0x42, hex(0), hex(1), hex(2), hex(3)])
            }
        }
    }

    /// The IPv4 prefix and gateway, when the network has IPv4.
    pub fn v4(&self) -> Option<(Ipv4Cidr, Ipv4Addr)> {
        self.subnet.zip(self.gateway)
    }

    /// Whether a prefix of either family of `self` overlaps one of `o`.
    pub fn overlaps(&self, o: &Network) -> bool {
        let v4 = matches!((self.subnet, o.subnet), (Some(a), Some(b)) if a.overlaps(&b));
        let v6 = matches!((self.ipv6, o.ipv6), (Some(a), Some(b)) if a.subnet.overlaps(&b.subnet));
        v4 || v6
    }
}

/// How a container's interfaces reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sandbox {
    /// An existing TAP in the daemon's namespace (`attach --tap`).
    Tap { ifname: String },
    /// A network namespace file (`attach --netns`).
    Netns { path: String },
    /// The network namespace of a process (`attach --pid`), with what tells that
    /// process from a later one given the same pid.
    Pid {
        pid: u32,
        #[serde(default)]
        identity: Option<crate::procid::ProcIdentity>,
    },
    /// A `vswitch run` container: its TAPs arrive as descriptors from the run process.
    Run { pid: u32 },
    /// A TAP the daemon creates in `host` (the engine's own namespace) with only its MAC
    /// and MTU set; the engine moves it into the container's namespace `netns`, renames
    /// and configures it there (Docker's `Join`), and moves it back when the container
    /// leaves.
    Handoff { host: String, netns: String },
    /// A VM: the daemon listens on the Unix socket `socket` for its QEMU's `-netdev
    /// stream`; the VM configures its interface itself (DHCP).
    Vm { socket: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub id: String,
    /// The interface inside the container (eth0, eth1, ...) or the TAP's own name.
    pub ifname: String,
    /// The IPv4 address (None on an IPv6-only network).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address (on a network with IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(with = "mac_text")]
    pub mac: MacAddr,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// VLANs carried tagged (a trunk port); empty for an access port.
    #[serde(default)]
    pub trunk: Vec<u16>,
    pub port_security: bool,
    /// Bandwidth limits of the port (none: unlimited).
    #[serde(default, skip_serializing_if = "crate::limit::PortLimits::is_none")]
    pub limits: crate::limit::PortLimits,
}

/// A published port: host side and container side, as `-p` describes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub proto: Proto,
    pub host_ip: std::net::IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    /// The host port was picked by the daemon (`-p CPORT`).
    #[serde(default)]
    pub auto: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub id: String,
    pub sandbox: Sandbox,
    /// In attachment order: endpoints[0] is eth0 (the port named after the container).
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub published: Vec<Published>,
    /// Who manages it (`cni`, `netavark`), when a container engine attached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its own DNS settings (`--dns`, `--dns-search`, `--add-host`, ...).
    #[serde(default, skip_serializing_if = "ContainerDns::is_empty")]
    pub dns: ContainerDns,
}

impl Container {
    /// The port name of endpoint `i`: the container's name, then `name/eth1`, ...
    pub fn port_name(&self, i: usize) -> String {
        match self.endpoints.get(i) {
            Some(e) if i > 0 => format!("{}/{}", self.name, e.ifname),
            _ => self.name.clone(),
        }
    }

    pub fn endpoint(&self, network: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.network == network)
    }
}

/// Where masqueraded traffic leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Uplink {
    /// The host's own sockets (no privileges needed).
    #[default]
    Socket,
    /// Nothing leaves.
    None,
    /// A port on the outside segment; vswitch owns `address` there.
    Packet {
        tap: Option<String>,
        netns: Option<String>,
        #[serde(with = "crate::net::cidr")]
        address: Ipv4Cidr,
        next_hop: Option<Ipv4Addr>,
        /// The segment's MTU (default [`DEFAULT_UPLINK_MTU`]).
        #[serde(default)]
        mtu: Option<u16>,
        /// vswitch's IPv6 address on the segment (none: IPv6 does not leave).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::net::cidr_opt"
        )]
        address6: Option<Ipv6Cidr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_hop6: Option<Ipv6Addr>,
    },
}

/// The packet uplink's MTU when `uplink set` gives none.
pub const DEFAULT_UPLINK_MTU: u16 = 1500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    #[serde(deserialize_with = "unique_keys::map")]
    pub networks: BTreeMap<String, Network>,
    #[serde(deserialize_with = "unique_keys::map")]
    pub containers: BTreeMap<String, Container>,
    #[serde(default)]
    pub uplink: Uplink,
    /// The unique local /48 (RFC 4193) IPv6 networks without `--subnet` take their /64
    /// from: generated once, with a random global id, and kept.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::net::cidr_opt"
    )]
    pub ula: Option<Ipv6Cidr>,
    /// Where networks without `--subnet` take their prefix (`vswitch daemon
    /// --default-address-pool`; none: Docker's pools). The daemon's setting, not saved.
    #[serde(skip)]
    pub pools: Vec<AddressPool>,
}

/// Why a request was refused. Each message names what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("network {0:?} not found")]
    NoNetwork(String),
    #[error("at most {0} networks per daemon: remove one first (`network rm`)")]
    TooManyNetworks(usize),
    #[error("network {0:?} already exists")]
    NetworkExists(String),
    #[error("container {0:?} not found")]
    NoContainer(String),
    #[error("container {0:?} already exists")]
    ContainerExists(String),
    #[error(
        "invalid name {0:?}: use letters, digits, '_', '.' and '-' (1-63 characters, starting with a letter or digit)"
    )]
    BadName(String),
    #[error(transparent)]
    Cidr(#[from] crate::net::CidrError),
    #[error(transparent)]
    Cidr6(#[from] crate::net::Cidr6Error),
    #[error("a network needs IPv4 or IPv6: --ipv4=false goes with --ipv6")]
    NoFamily,
    #[error("--ipv4=false leaves no IPv4: drop the IPv4 --subnet, --gateway or --ip-range")]
    Ipv4Disabled,
    #[error("invalid IPv6 subnet {0}: the prefix must be /32 to /124")]
    Subnet6Size(String),
    #[error("gateway {0} is not a usable address of IPv6 subnet {1}")]
    Gateway6Outside(Ipv6Addr, String),
    #[error("IPv6 --gateway needs an IPv6 --subnet")]
    Gateway6WithoutSubnet,
    #[error("more than one {0} --subnet or --gateway: give at most one of each family")]
    TwoOfAFamily(&'static str),
    #[error("network {0:?} has no IPv6: create it with --ipv6 to give --ip6")]
    NoIpv6(String),
    #[error("network {0:?} is IPv6-only: it has no IPv4 address to give with --ip")]
    NoIpv4(String),
    #[error("address {0} is not in IPv6 subnet {1} of network {2:?}")]
    Ip6Outside(Ipv6Addr, String, String),
    #[error("address {0} is already in use on network {1:?}")]
    Ip6Taken(Ipv6Addr, String),
    #[error("address {0} is reserved (the subnet-router anycast or the gateway address)")]
    Ip6Reserved(Ipv6Addr),
    #[error("no free IPv6 subnet left in the unique local prefix {0}: give --subnet")]
    Pool6Exhausted(String),
    #[error("invalid subnet {given}: it has host bits set; use {canonical}")]
    NotCanonical { given: String, canonical: String },
    #[error("invalid subnet {0}: the prefix must be /8 to /30")]
    SubnetSize(String),
    #[error("subnet {0} overlaps network {1:?} ({2})")]
    Overlap(String, String, String),
    #[error(
        "no free subnet left in the default pools (172.18.0.0/16-172.31.0.0/16, 192.168.0.0/20 blocks); give --subnet"
    )]
    PoolsExhausted,
    #[error("gateway {0} is not a usable address of subnet {1}")]
    GatewayOutside(Ipv4Addr, String),
    #[error("--gateway needs --subnet")]
    GatewayWithoutSubnet,
    #[error("ip range {0} is not inside subnet {1}")]
    RangeOutside(String, String),
    #[error("invalid VLAN id {0}: use 1 to 4094")]
    BadVlan(u32),
    #[error("VLAN {0} is already used by network {1:?}")]
    VlanTaken(u16, String),
    #[error("invalid MTU {0}: use 68 to 65520")]
    BadMtu(u32),
    #[error("MTU {0} is too small for IPv6: use 1280 or more, or a network without IPv6")]
    Ipv6Mtu(u32),
    #[error("network {0:?} has {1} endpoint(s) attached: detach them first or use --force")]
    NetworkInUse(String, usize),
    #[error("the default network {0:?} cannot be removed")]
    DefaultNetwork(String),
    #[error("address {0} is not in subnet {1} of network {2:?}")]
    IpOutside(Ipv4Addr, String, String),
    #[error("address {0} is already in use on network {1:?}")]
    IpTaken(Ipv4Addr, String),
    #[error("address {0} is reserved (network, broadcast or gateway address)")]
    IpReserved(Ipv4Addr),
    #[error("network {0:?} has no free address left")]
    NetworkFull(String),
    #[error("container {0:?} is already on network {1:?}")]
    AlreadyConnected(String, String),
    #[error("container {0:?} is not on network {1:?}")]
    NotConnected(String, String),
    #[error(
        "container {0:?} was attached by TAP name or VM socket; only containers with a namespace can join more networks"
    )]
    NoSandbox(String),
    #[error("MAC address {0} is not a unicast address")]
    BadMac(MacAddr),
    #[error("MAC address {0} is already used by {1:?}")]
    MacTaken(MacAddr, String),
    #[error("invalid trunk VLAN list {0:?}: give VLAN ids 1-4094 separated by commas")]
    BadTrunk(String),
    #[error(
        "VLAN {0} is network {1:?} itself, which the trunk carries untagged: leave it out of --trunk"
    )]
    TrunkOwnVlan(u16, String),
    #[error("{0:?} is the only network of container {1:?}: use detach to remove the container")]
    LastNetwork(String, String),
    #[error(
        "invalid network id {0:?}: use 1 to 64 letters, digits, '_', '.' or '-' (a container engine's network id)"
    )]
    BadNetworkId(String),
    #[error(
        "container {0:?} has an interface its engine moves and configures: connect it to more networks through the engine"
    )]
    EngineMoves(String),
    #[error("network id {0} is already network {1:?}'s")]
    NetworkIdTaken(String, String),
    #[error("{0}")]
    BadDnsServer(String),
    #[error(
        "invalid DNS search domain {0:?}: use labels of letters, digits and '-' separated by dots"
    )]
    BadSearchDomain(String),
    #[error("invalid DNS option {0:?}: give one resolv.conf option such as ndots:2 or timeout:1")]
    BadDnsOption(String),
    #[error("invalid hostname {0:?}: use letters, digits and '-' (at most 63 characters)")]
    BadHostname(String),
    #[error("invalid --add-host {0:?}: give NAME:IP or NAME:host-gateway")]
    BadAddHost(String),
    #[error("too many {0} values: at most {1}")]
    TooManyDns(&'static str, usize),
    #[error("at most {0} distinct DNS resolvers across networks and containers: reuse one")]
    TooManyResolvers(usize),
    #[error(
        "invalid --default-address-pool {0:?}: give base=CIDR,size=N (a canonical /8 to /30 base, N from its prefix to 30, at most 65536 subnets)"
    )]
    BadPool(String),
    #[error("no free subnet left in the address pools ({0}); give --subnet")]
    OwnPoolsExhausted(String),
    #[error(
        "network {0:?} has {1} endpoint(s): its MTU changes only when it has none (their interfaces keep the MTU they were made with)"
    )]
    MtuInUse(String, usize),
    #[error("the default network {0:?} cannot be made internal")]
    DefaultInternal(String),
}

/// Maps read from JSON with every key once: a name written twice is an error, not a
/// silent overwrite of the first entry.
mod unique_keys {
    use std::collections::BTreeMap;
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};

    pub fn map<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, V>, D::Error> {
        d.deserialize_map(Unique(PhantomData))
    }

    struct Unique<V>(PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of names")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = m.next_entry::<String, V>()? {
                if out.contains_key(&k) {
                    return Err(A::Error::custom(format!("the name {k:?} appears twice")));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
}

/// MAC addresses as text in JSON ("02:42:ac:11:00:02").
pub mod mac_text {
    use dataplane::wire::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(m)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Docker-style 64-hex-digit id, from the kernel's random source.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if !dataplane::random::fill(&mut b) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b[..16].copy_from_slice(&t.to_le_bytes());
        b[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Names of networks, containers and aliases: Docker's rule.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// Docker's pools: the next /16 of 172.18-31, then /20 of 192.168.0.0/16, that
/// overlaps none of `used`.
pub fn free_pool(used: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
    let sixteens = (18..=31u8).map(|b| Ipv4Cidr::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let twenties = (0..16u8).map(|i| Ipv4Cidr::new(Ipv4Addr::new(192, 168, i * 16, 0), 20));
    sixteens
        .chain(twenties)
        .find(|c| !used.iter().any(|u| u.overlaps(c)))
}

/// A network id an engine may give: 1 to 64 letters, digits, `_`, `.` or `-`.
pub fn valid_network_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 on (`--ipv6`; also implied by an IPv6 subnet).
    #[serde(default)]
    pub ipv6: bool,
    /// IPv4 off (`--ipv4=false`): an IPv6-only network.
    #[serde(default)]
    pub no_ipv4: bool,
    /// The IPv6 prefix (else a /64 of the daemon's unique local /48).
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    pub ip_range: Option<String>,
    pub vlan: Option<u32>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub no_dns: bool,
    #[serde(default)]
    pub no_icc: bool,
    #[serde(default)]
    pub no_masquerade: bool,
    pub mtu: Option<u32>,
    /// GATEWAY:PORT reaches the host's loopback.
    #[serde(default)]
    pub host_loopback: bool,
    /// The network's id when a container engine names it (Docker's network id); a new
    /// random one otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The gateway forwards DNS queries but answers no container names: the engine
    /// resolves its containers itself (Docker's resolver at 127.0.0.11).
    #[serde(default)]
    pub dns_forward_only: bool,
    /// The network's upstream resolvers, `IP[:PORT]` (`--dns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Router advertisements without the autonomous flag: the engine configures the
    /// containers' IPv6 addresses (Docker), so SLAAC must not add a second one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_slaac: bool,
    /// Search domains (`--dns-search`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
}

/// What `attach` / `connect` ask for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSpec {
    pub network: String,
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub mac: Option<MacAddr>,
    pub aliases: Vec<String>,
    pub trunk: Vec<u16>,
    pub port_security: bool,
    pub ifname: Option<String>,
    /// `ip` and `ip6` may be ones reserved with `address_reserve`: the endpoint takes
    /// them.
    pub claim: bool,
    /// Bandwidth limits of the port.
    pub limits: crate::limit::PortLimits,
}

/// Parses `--trunk 10,20,30`.
pub fn parse_trunk(s: &str) -> Result<Vec<u16>, StateError> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let id: u16 = part
            .trim()
            .parse()
            .map_err(|_| StateError::BadTrunk(s.to_string()))?;
        if !(1..=4094).contains(&id) {
            return Err(StateError::BadTrunk(s.to_string()));
        }
        if !v.contains(&id) {
            v.push(id);
        }
    }
    Ok(v)
}

impl State {
    /// A fresh state with the default `bridge` network (`bip`: Docker's daemon.json
    /// `bip`, the gateway address with its prefix; `mtu`: the default MTU).
    pub fn new(bip: Option<Ipv4Cidr>, mtu: Option<u16>) -> Result<State, StateError> {
        let mut s = State {
            version: STATE_VERSION,
            networks: BTreeMap::new(),
            containers: BTreeMap::new(),
            uplink: Uplink::Socket,
            ula: None,
            pools: Vec::new(),
        };
        s.ensure_default(bip, mtu)?;
        Ok(s)
    }

    /// Creates the default network when missing (first start), with `bip`/`mtu`.
    pub fn ensure_default(
        &mut self,
        bip: Option<Ipv4Cidr>,
        mtu: Option<u16>,
    ) -> Result<(), StateError> {
        if self.networks.contains_key(DEFAULT_NETWORK) {
            return Ok(());
        }
        let (subnet, gateway) = match bip {
            Some(b) => (
                b.network(),
                Some(b.addr()).filter(|a| *a != b.network().addr()),
            ),
            None => (DEFAULT_BRIDGE_SUBNET.parse::<Ipv4Cidr>()?, None),
        };
        let spec = NetworkSpec {
            name: DEFAULT_NETWORK.into(),
            subnet: Some(subnet.to_string()),
            gateway,
            mtu: mtu.map(u32::from),
            ..Default::default()
        };
        let mut n = self.check_network(&spec)?;
        n.dns = DnsMode::ForwardOnly;
        self.networks.insert(n.name.clone(), n);
        Ok(())
    }

    /// The default network's GATEWAY:PORT reaches the host's loopback or not, as the
    /// daemon was started (`vswitch daemon --host-loopback`).
    pub fn set_default_host_loopback(&mut self, on: bool) {
        if let Some(n) = self.networks.get_mut(DEFAULT_NETWORK) {
            n.host_loopback = on;
        }
    }

    /// The default network gets IPv6 as the daemon was started (`--ipv6`, with
    /// `--fixed-cidr-v6` or a /64 of the unique local prefix), when it has none yet;
    /// its endpoints get their IPv6 addresses. Returns whether anything changed.
    pub fn set_default_ipv6(&mut self, fixed: Option<Ipv6Cidr>) -> Result<bool, StateError> {
        let Some(bridge) = self.networks.get(DEFAULT_NETWORK) else {
            return Ok(false);
        };
        if bridge.ipv6.is_some() {
            return Ok(false);
        }
        if u32::from(bridge.mtu) < IPV6_MIN_MTU {
            return Err(StateError::Ipv6Mtu(bridge.mtu.into()));
        }
        if fixed.is_none() {
            self.ensure_ula();
        }
        let spec = NetworkSpec {
            ipv6: true,
            subnet6: fixed.map(|f| f.to_string()),
            ..Default::default()
        };
        let v6 = self.check_v6(&spec)?;
        if let Some(n) = self.networks.get_mut(DEFAULT_NETWORK) {
            n.ipv6 = v6;
        }
        let Some(net) = self.networks.get(DEFAULT_NETWORK).cloned() else {
            return Ok(false);
        };
        let mut given: Vec<(String, usize, Ipv6Addr)> = Vec::new();
        for (c, i, e) in self.endpoint_slots(DEFAULT_NETWORK) {
            let taken = |a: Ipv6Addr| given.iter().any(|g| g.2 == a);
            let ip6 = self.pick_ip6_avoiding(&net, Some(e.mac), None, &taken)?;
            given.push((c, i, ip6));
        }
        for (c, i, ip6) in given {
            if let Some(e) = self
                .containers
                .get_mut(&c)
                .and_then(|c| c.endpoints.get_mut(i))
            {
                e.ip6 = Some(ip6);
            }
        }
        Ok(true)
    }

    /// (container, endpoint index, endpoint) of every endpoint on `network`.
    fn endpoint_slots(&self, network: &str) -> Vec<(String, usize, Endpoint)> {
        let mut v = Vec::new();
        for c in self.containers.values() {
            for (i, e) in c.endpoints.iter().enumerate() {
                if e.network == network {
                    v.push((c.name.clone(), i, e.clone()));
                }
            }
        }
        v
    }

    /// Generates the unique local /48 once: fd00::/8 and a random 40-bit global id.
    pub fn ensure_ula(&mut self) -> Ipv6Cidr {
        if let Some(u) = self.ula {
            return u;
        }
        let mut g = [0u8; 5];
        if !dataplane::random::fill(&mut g) {
            let t = now_secs().to_le_bytes();
            g.copy_from_slice(&t[..5]);
        }
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[1..6].copy_from_slice(&g);
        let u = Ipv6Cidr::new(Ipv6Addr::from(a), 48);
        self.ula = Some(u);
        u
    }

    /// Validates `spec` against the current state and returns the network it would
    /// create, without changing anything.
    pub fn check_network(&self, spec: &NetworkSpec) -> Result<Network, StateError> {
        if !valid_name(&spec.name) {
            return Err(StateError::BadName(spec.name.clone()));
        }
        if self.networks.contains_key(&spec.name) {
            return Err(StateError::NetworkExists(spec.name.clone()));
        }
        if self.networks.len() >= MAX_NETWORKS {
            return Err(StateError::TooManyNetworks(MAX_NETWORKS));
        }
        let v4 = self.check_v4(spec)?;
        let ipv6 = self.check_v6(spec)?;
        if v4.is_none() && ipv6.is_none() {
            return Err(StateError::NoFamily);
        }
        let ip_range = match (&spec.ip_range, v4) {
            (Some(r), Some((subnet, _))) => {
                let n: Ipv4Cidr = r.parse()?;
                if !subnet.covers(&n) {
                    return Err(StateError::RangeOutside(r.clone(), subnet.to_string()));
                }
                Some(n.network())
            }
            (Some(_), None) => return Err(StateError::Ipv4Disabled),
            (None, _) => None,
        };
        let vlan = spec.vlan.map(|v| self.check_vlan(v)).transpose()?;
        let mtu = match spec.mtu {
            Some(m) if !(68..=65520).contains(&m) => return Err(StateError::BadMtu(m)),
            // IPv6 links carry 1280 bytes at least (RFC 8200): hosts ignore a smaller
            // "packet too big", so IPv6 on a smaller MTU would black-hole.
            Some(m) if ipv6.is_some() && m < IPV6_MIN_MTU => return Err(StateError::Ipv6Mtu(m)),
            Some(m) => m as u16,
            None => DEFAULT_MTU,
        };
        let id = match &spec.id {
            Some(id) => self.check_network_id(id)?,
            None => new_id(),
        };
        let dns_servers = dnsopts::parse_servers(&spec.dns)?;
        self.check_resolvers(&dns_servers)?;
        Ok(Network {
            name: spec.name.clone(),
            id,
            domain: self.free_domain(),
            subnet: v4.map(|v| v.0),
            gateway: v4.map(|v| v.1),
            ipv6,
            ip_range,
            vlan,
            internal: spec.internal,
            dns: match (spec.no_dns, spec.dns_forward_only) {
                (true, _) => DnsMode::Off,
                (false, true) => DnsMode::ForwardOnly,
                (false, false) => DnsMode::Names,
            },
            icc: !spec.no_icc,
            masquerade: !spec.no_masquerade && !spec.internal,
            mtu,
            host_loopback: spec.host_loopback,
            created: now_secs(),
            reserved: Vec::new(),
            reserved6: Vec::new(),
            no_slaac: spec.no_slaac,
            dns_servers,
            dns_search: dnsopts::parse_search(&spec.dns_search)?,
        })
    }

    /// The IPv4 of a new network: prefix and gateway, or None with `--ipv4=false`.
    fn check_v4(&self, spec: &NetworkSpec) -> Result<Option<(Ipv4Cidr, Ipv4Addr)>, StateError> {
        if spec.no_ipv4 {
            if spec.subnet.is_some() || spec.gateway.is_some() || spec.ip_range.is_some() {
                return Err(StateError::Ipv4Disabled);
            }
            return Ok(None);
        }
        let subnet = self.check_subnet(spec)?;
        let gateway = match spec.gateway {
            Some(g) => {
                if !subnet.contains(g) || g == subnet.network().addr() || g == subnet.broadcast() {
                    return Err(StateError::GatewayOutside(g, subnet.to_string()));
                }
                g
            }
            None => Ipv4Addr::from(subnet.first() + 1),
        };
        Ok(Some((subnet, gateway)))
    }

    /// The IPv6 of a new network (with `--ipv6` or an IPv6 subnet): the prefix given
    /// (canonical, /32 to /124, apart from the others) or the next free /64 of the
    /// unique local /48, and the gateway (given, or the prefix's first address after
    /// the subnet-router anycast one).
    fn check_v6(&self, spec: &NetworkSpec) -> Result<Option<Net6>, StateError> {
        if !spec.ipv6 && spec.subnet6.is_none() {
            if spec.gateway6.is_some() {
                return Err(StateError::Gateway6WithoutSubnet);
            }
            return Ok(None);
        }
        let subnet = match &spec.subnet6 {
            Some(s) => self.check_subnet6(s)?,
            None => {
                if spec.gateway6.is_some() {
                    return Err(StateError::Gateway6WithoutSubnet);
                }
                self.free_subnet6()?
            }
        };
        let first = subnet.network().addr();
        let gateway = match spec.gateway6 {
            Some(g) if !subnet.contains(g) || g == first => {
                return Err(StateError::Gateway6Outside(g, subnet.to_string()));
            }
            Some(g) => g,
            None => Ipv6Addr::from(u128::from(first) + 1),
        };
        Ok(Some(Net6 { subnet, gateway }))
    }

    fn check_subnet6(&self, s: &str) -> Result<Ipv6Cidr, StateError> {
        let n: Ipv6Cidr = s.parse()?;
        if !n.is_canonical() {
            return Err(StateError::NotCanonical {
                given: s.to_string(),
                canonical: n.network().to_string(),
            });
        }
        if !(32..=124).contains(&n.prefix_len()) {
            return Err(StateError::Subnet6Size(s.to_string()));
        }
        let other = (self.networks.values())
            .find_map(|o| o.ipv6.filter(|v| v.subnet.overlaps(&n)).map(|v| (o, v)));
        if let Some((o, v)) = other {
            return Err(StateError::Overlap(
                n.to_string(),
                o.name.clone(),
                v.subnet.to_string(),
            ));
        }
        Ok(n)
    }

    /// The first /64 of the unique local /48 no network uses.
    fn free_subnet6(&self) -> Result<Ipv6Cidr, StateError> {
        let ula = self
            .ula
            .ok_or(StateError::Pool6Exhausted("(none yet)".into()))?;
        let base = u128::from(ula.network().addr());
        (0..=u128::from(u16::MAX))
            .map(|i| Ipv6Cidr::new(Ipv6Addr::from(base | (i << 64)), 64))
            .find(|c| {
                !(self.networks.values()).any(|n| n.ipv6.is_some_and(|v| v.subnet.overlaps(c)))
            })
            .ok_or_else(|| StateError::Pool6Exhausted(ula.to_string()))
    }

    /// An engine's id for a new network: valid, and no other network's.
    fn check_network_id(&self, id: &str) -> Result<String, StateError> {
        if !valid_network_id(id) {
            return Err(StateError::BadNetworkId(id.to_string()));
        }
        match self.networks.values().find(|n| n.id == id) {
            Some(n) => Err(StateError::NetworkIdTaken(id.to_string(), n.name.clone())),
            None => Ok(id.to_string()),
        }
    }

    /// The subnet a new network asks for (canonical, /8 to /30, apart from the others),
    /// or a free one from the pools.
    fn check_subnet(&self, spec: &NetworkSpec) -> Result<Ipv4Cidr, StateError> {
        let Some(s) = &spec.subnet else {
            if spec.gateway.is_some() {
                return Err(StateError::GatewayWithoutSubnet);
            }
            return self.free_subnet();
        };
        let n: Ipv4Cidr = s.parse()?;
        if !n.is_canonical() {
            return Err(StateError::NotCanonical {
                given: s.clone(),
                canonical: n.network().to_string(),
            });
        }
        if !(8..=30).contains(&n.prefix_len()) {
            return Err(StateError::SubnetSize(s.clone()));
        }
        let other = (self.networks.values())
            .find_map(|o| o.subnet.filter(|v| v.overlaps(&n)).map(|v| (o, v)));
        if let Some((o, v)) = other {
            return Err(StateError::Overlap(
                n.to_string(),
                o.name.clone(),
                v.to_string(),
            ));
        }
        Ok(n)
    }

    /// A VLAN id for a new network: 1 to 4094, no other network's.
    fn check_vlan(&self, v: u32) -> Result<u16, StateError> {
        if !(1..=4094).contains(&v) {
            return Err(StateError::BadVlan(v));
        }
        let v = v as u16;
        if let Some(o) = self.networks.values().find(|o| o.vlan == Some(v)) {
            return Err(StateError::VlanTaken(v, o.name.clone()));
        }
        Ok(v)
    }

    pub fn create_network(&mut self, spec: &NetworkSpec) -> Result<&Network, StateError> {
        if spec.ipv6 && spec.subnet6.is_none() {
            self.ensure_ula();
        }
        let n = self.check_network(spec)?;
        let name = n.name.clone();
        self.networks.insert(name.clone(), n);
        self.networks.get(&name).ok_or(StateError::NoNetwork(name))
    }

    /// The lowest domain id no network has (there are at most [`MAX_NETWORKS`]).
    fn free_domain(&self) -> u16 {
        let mut used: Vec<u16> = self.networks.values().map(|n| n.domain).collect();
        used.sort_unstable();
        used.dedup();
        let mut want = 0u16;
        for d in used {
            if d != want {
                break;
            }
            want = want.saturating_add(1);
        }
        want
    }

    /// The first free prefix of the daemon's pools (Docker's when none were given).
    fn free_subnet(&self) -> Result<Ipv4Cidr, StateError> {
        let used: Vec<Ipv4Cidr> = self.networks.values().filter_map(|n| n.subnet).collect();
        if self.pools.is_empty() {
            return free_pool(&used).ok_or(StateError::PoolsExhausted);
        }
        let mut ranges: Vec<(u32, u32)> = used.iter().map(|c| (c.first(), c.last())).collect();
        ranges.sort_unstable();
        (self.pools.iter())
            .find_map(|p| p.free_block(&ranges))
            .ok_or_else(|| {
                let all: Vec<String> = self.pools.iter().map(|p| p.base.to_string()).collect();
                StateError::OwnPoolsExhausted(all.join(", "))
            })
    }

    /// Every resolver networks and containers name, each once, in a fixed order
    /// (networks by name, then containers by name).
    pub fn named_resolvers(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::new();
        let nets = self.networks.values().flat_map(|n| n.dns_servers.iter());
        let cts = self.containers.values().flat_map(|c| c.dns.servers.iter());
        for a in nets.chain(cts) {
            if !v.contains(a) {
                v.push(*a);
            }
        }
        v
    }

    /// Refuses `more` resolvers when they would take the distinct ones past
    /// [`dnsopts::MAX_RESOLVERS`].
    pub fn check_resolvers(&self, more: &[SocketAddr]) -> Result<(), StateError> {
        let mut all = self.named_resolvers();
        for a in more {
            if !all.contains(a) {
                all.push(*a);
            }
        }
        if all.len() > dnsopts::MAX_RESOLVERS {
            return Err(StateError::TooManyResolvers(dnsopts::MAX_RESOLVERS));
        }
        Ok(())
    }

    /// Endpoints on `network`: (container name, endpoint).
    pub fn endpoints_on<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = (&'a Container, &'a Endpoint)> + 'a {
        self.containers.values().flat_map(move |c| {
            c.endpoints
                .iter()
                .filter(move |e| e.network == network)
                .map(move |e| (c, e))
        })
    }

    /// Removes a network; with `force`, its endpoints go too (and containers left with
    /// none). Returns the names of containers removed entirely.
    pub fn remove_network(&mut self, name: &str, force: bool) -> Result<Vec<String>, StateError> {
        if !self.networks.contains_key(name) {
            return Err(StateError::NoNetwork(name.to_string()));
        }
        if name == DEFAULT_NETWORK {
            return Err(StateError::DefaultNetwork(name.to_string()));
        }
        let n = self.endpoints_on(name).count();
        if n > 0 && !force {
            return Err(StateError::NetworkInUse(name.to_string(), n));
        }
        let mut gone = Vec::new();
        for c in self.containers.values_mut() {
            c.endpoints.retain(|e| e.network != name);
            if c.endpoints.is_empty() {
                gone.push(c.name.clone());
            }
        }
        for g in &gone {
            self.containers.remove(g);
        }
        self.networks.remove(name);
        Ok(gone)
    }

    /// The IPv4 address to give a new endpoint on `net` (`want`: asked with --ip;
    /// `claim`: `want` may be one of the network's reservations); None on an IPv6-only
    /// network.
    fn pick_ip(
        &self,
        net: &Network,
        want: Option<Ipv4Addr>,
        claim: bool,
    ) -> Result<Option<Ipv4Addr>, StateError> {
        let Some((subnet, gateway)) = net.v4() else {
            return match want {
                Some(_) => Err(StateError::NoIpv4(net.name.clone())),
                None => Ok(None),
            };
        };
        let reserved_set: std::collections::HashSet<Ipv4Addr> =
            net.reserved.iter().copied().collect();
        let held = |ip: Ipv4Addr| reserved_set.contains(&ip);
        // One pass over the network's endpoints, not one per candidate address (a
        // network of thousands made that quadratic: 400 ms an attach at 4000).
        let used: std::collections::HashSet<Ipv4Addr> = self
            .endpoints_on(&net.name)
            .filter_map(|(_, e)| e.ip)
            .collect();
        let taken = |ip: Ipv4Addr| used.contains(&ip);
        let reserved = |ip: Ipv4Addr| {
            ip == subnet.network().addr() || ip == subnet.broadcast() || ip == gateway
        };
        if let Some(ip) = want {
            if !subnet.contains(ip) {
                return Err(StateError::IpOutside(
                    ip,
                    subnet.to_string(),
                    net.name.clone(),
                ));
            }
            if reserved(ip) {
                return Err(StateError::IpReserved(ip));
            }
            if taken(ip) || (held(ip) && !claim) {
                return Err(StateError::IpTaken(ip, net.name.clone()));
            }
            return Ok(Some(ip));
        }
        let range = net.ip_range.unwrap_or(subnet);
        let (lo, hi) = (
            range.first().max(subnet.first() + 1),
            range.last().min(subnet.last() - 1),
        );
        (lo..=hi)
            .map(Ipv4Addr::from)
            .find(|ip| !reserved(*ip) && !held(*ip) && !taken(*ip))
            .map(Some)
            .ok_or_else(|| StateError::NetworkFull(net.name.clone()))
    }

    /// The IPv6 address to give a new endpoint with MAC `mac` on `net` (`want`: asked
    /// with --ip6); None on a network without IPv6. The policy, so that SLAAC and
    /// DHCPv6 agree with IPAM: on a /64, the EUI-64 address of the MAC (what SLAAC
    /// forms); on other prefixes, or when that address is taken, the lowest free one.
    /// Reservations (`address_reserve`) are taken, but for `want` with `claim`.
    fn pick_ip6(
        &self,
        net: &Network,
        mac: MacAddr,
        want: Option<Ipv6Addr>,
        claim: bool,
    ) -> Result<Option<Ipv6Addr>, StateError> {
        let Some(_) = net.ipv6 else {
            return match want {
                Some(_) => Err(StateError::NoIpv6(net.name.clone())),
                None => Ok(None),
            };
        };
        let held = |ip: Ipv6Addr| net.reserved6.contains(&ip) && !(claim && want == Some(ip));
        self.pick_ip6_avoiding(net, Some(mac), want, &held)
            .map(Some)
    }

    /// As [`State::pick_ip6`] for a network with IPv6, also avoiding what `also`
    /// says is taken; without a MAC, the lowest free address.
    fn pick_ip6_avoiding(
        &self,
        net: &Network,
        mac: Option<MacAddr>,
        want: Option<Ipv6Addr>,
        also: &dyn Fn(Ipv6Addr) -> bool,
    ) -> Result<Ipv6Addr, StateError> {
        let v6 = net
            .ipv6
            .ok_or_else(|| StateError::NoIpv6(net.name.clone()))?;
        let subnet = v6.subnet;
        let taken =
            |ip: Ipv6Addr| also(ip) || self.endpoints_on(&net.name).any(|(_, e)| e.ip6 == Some(ip));
        let reserved = |ip: Ipv6Addr| ip == subnet.network().addr() || ip == v6.gateway;
        if let Some(ip) = want {
            if !subnet.contains(ip) {
                return Err(StateError::Ip6Outside(
                    ip,
                    subnet.to_string(),
                    net.name.clone(),
                ));
            }
            if reserved(ip) {
                return Err(StateError::Ip6Reserved(ip));
            }
            if taken(ip) {
                return Err(StateError::Ip6Taken(ip, net.name.clone()));
            }
            return Ok(ip);
        }
        if let Some(mac) = mac.filter(|_| subnet.prefix_len() == 64) {
            let ip = dataplane::wire::ipv6::with_eui64(subnet.network().addr(), mac);
            if !reserved(ip) && !taken(ip) {
                return Ok(ip);
            }
        }
        let first = subnet.first();
        (1..=u128::from(u32::MAX))
            .map_while(|i| first.checked_add(i).filter(|a| *a <= subnet.last()))
            .map(Ipv6Addr::from)
            .find(|ip| !reserved(*ip) && !taken(*ip))
            .ok_or_else(|| StateError::NetworkFull(net.name.clone()))
    }

    /// A MAC for an endpoint on `net` with IPv4 `ip`: Docker's 02:42 + the address;
    /// without IPv4, 02:42 and four random bytes no endpoint there has.
    fn new_mac(&self, net: &Network, ip: Option<Ipv4Addr>) -> MacAddr {
        if let Some(ip) = ip {
            return MacAddr::from_ipv4(ip);
        }
        let taken = |m: MacAddr| self.endpoints_on(&net.name).any(|(_, e)| e.mac == m);
        let mut last = MacAddr([0x02, 0x42, 0, 0, 0, 2]);
        for _ in 0..16 {
            let mut b = [0u8; 4];
            if !dataplane::random::fill(&mut b) {
                break;
            }
            last = MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]]);
            if !taken(last) && last != net.gateway_mac() {
                return last;
            }
        }
        last
    }

    /// Holds an IPv6 address of `network` for an engine's IPAM (`want`, else the lowest
    /// free one: the engine knows no MAC yet) until an endpoint claims it or
    /// [`State::release6`] gives it back.
    pub fn reserve6(
        &mut self,
        network: &str,
        want: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, StateError> {
        let net = self
            .networks
            .get(network)
            .ok_or_else(|| StateError::NoNetwork(network.to_string()))?;
        if net.ipv6.is_none() {
            return Err(StateError::NoIpv6(network.to_string()));
        }
        let held = |ip: Ipv6Addr| net.reserved6.contains(&ip);
        let ip = self.pick_ip6_avoiding(net, None, want, &held)?;
        if let Some(n) = self.networks.get_mut(network) {
            n.reserved6.push(ip);
        }
        Ok(ip)
    }

    /// Gives an IPv6 reservation back; false when `ip` was not reserved.
    pub fn release6(&mut self, network: &str, ip: Ipv6Addr) -> Result<bool, StateError> {
        let n = self
            .networks
            .get_mut(network)
            .ok_or_else(|| StateError::NoNetwork(network.to_string()))?;
        let before = n.reserved6.len();
        n.reserved6.retain(|r| *r != ip);
        Ok(n.reserved6.len() != before)
    }

    /// Holds an address of `network` for an engine's IPAM (`want`, else the next free
    /// one) until an endpoint claims it or [`State::release`] gives it back.
    pub fn reserve(
        &mut self,
        network: &str,
        want: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, StateError> {
        let net = self
            .networks
            .get(network)
            .ok_or_else(|| StateError::NoNetwork(network.to_string()))?;
        let ip = self
            .pick_ip(net, want, false)?
            .ok_or_else(|| StateError::NoIpv4(network.to_string()))?;
        if let Some(n) = self.networks.get_mut(network) {
            n.reserved.push(ip);
        }
        Ok(ip)
    }

    /// Gives a reservation back; false when `ip` was not reserved (an endpoint's
    /// address is never touched).
    pub fn release(&mut self, network: &str, ip: Ipv4Addr) -> Result<bool, StateError> {
        let n = self
            .networks
            .get_mut(network)
            .ok_or_else(|| StateError::NoNetwork(network.to_string()))?;
        let before = n.reserved.len();
        n.reserved.retain(|r| *r != ip);
        Ok(n.reserved.len() != before)
    }

    /// Endpoints take the reservations of their addresses.
    fn claim(&mut self, eps: &[Endpoint]) {
        for e in eps {
            if let Some(n) = self.networks.get_mut(&e.network) {
                n.reserved.retain(|r| Some(*r) != e.ip);
                n.reserved6.retain(|r| Some(*r) != e.ip6);
            }
        }
    }

    /// Validates one endpoint for container `cname` and returns it, changing nothing.
    fn check_endpoint(
        &self,
        cname: &str,
        spec: &EndpointSpec,
        ifname: String,
    ) -> Result<Endpoint, StateError> {
        let net = self
            .networks
            .get(&spec.network)
            .ok_or_else(|| StateError::NoNetwork(spec.network.clone()))?;
        for a in &spec.aliases {
            if !valid_name(a) {
                return Err(StateError::BadName(a.clone()));
            }
        }
        let ip = self.pick_ip(net, spec.ip, spec.claim)?;
        let mac = spec.mac.unwrap_or_else(|| self.new_mac(net, ip));
        if !mac.is_unicast() || mac.is_zero() {
            return Err(StateError::BadMac(mac));
        }
        if let Some((c, _)) = self.endpoints_on(&net.name).find(|(_, e)| e.mac == mac) {
            return Err(StateError::MacTaken(mac, c.name.clone()));
        }
        let ip6 = self.pick_ip6(net, mac, spec.ip6, spec.claim)?;
        for v in &spec.trunk {
            if !(1..=4094).contains(v) {
                return Err(StateError::BadVlan(u32::from(*v)));
            }
            if net.vlan == Some(*v) {
                return Err(StateError::TrunkOwnVlan(*v, net.name.clone()));
            }
        }
        let _ = cname;
        Ok(Endpoint {
            network: net.name.clone(),
            id: new_id(),
            ifname,
            ip,
            ip6,
            mac,
            aliases: spec.aliases.clone(),
            trunk: spec.trunk.clone(),
            port_security: spec.port_security && spec.trunk.is_empty(),
            limits: spec.limits.normalized(),
        })
    }

    /// Validates a new container with its first endpoint; changes nothing.
    pub fn check_attach(
        &self,
        name: &str,
        sandbox: &Sandbox,
        spec: &EndpointSpec,
    ) -> Result<Container, StateError> {
        if !valid_name(name) {
            return Err(StateError::BadName(name.to_string()));
        }
        if self.containers.contains_key(name) {
            return Err(StateError::ContainerExists(name.to_string()));
        }
        let ifname = match (sandbox, &spec.ifname) {
            (Sandbox::Tap { ifname }, _) => ifname.clone(),
            (_, Some(i)) => i.clone(),
            (_, None) => "eth0".to_string(),
        };
        let ep = self.check_endpoint(name, spec, ifname)?;
        Ok(Container {
            name: name.to_string(),
            id: new_id(),
            sandbox: sandbox.clone(),
            endpoints: vec![ep],
            published: Vec::new(),
            owner: None,
            dns: ContainerDns::default(),
        })
    }

    pub fn attach(&mut self, c: Container) {
        self.claim(&c.endpoints);
        self.containers.insert(c.name.clone(), c);
    }

    /// The container named `name`, or the refusal naming it.
    pub fn container(&self, name: &str) -> Result<&Container, StateError> {
        self.containers
            .get(name)
            .ok_or_else(|| StateError::NoContainer(name.to_string()))
    }

    /// Validates one more endpoint for an existing container; changes nothing.
    pub fn check_connect(&self, name: &str, spec: &EndpointSpec) -> Result<Endpoint, StateError> {
        let c = self.container(name)?;
        if matches!(c.sandbox, Sandbox::Tap { .. } | Sandbox::Vm { .. }) {
            return Err(StateError::NoSandbox(name.to_string()));
        }
        if matches!(c.sandbox, Sandbox::Handoff { .. }) {
            return Err(StateError::EngineMoves(name.to_string()));
        }
        if c.endpoint(&spec.network).is_some() {
            return Err(StateError::AlreadyConnected(
                name.to_string(),
                spec.network.clone(),
            ));
        }
        let ifname = spec.ifname.clone().unwrap_or_else(|| {
            (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| !c.endpoints.iter().any(|e| &e.ifname == n))
                .unwrap_or_else(|| "eth9".into())
        });
        self.check_endpoint(name, spec, ifname)
    }

    pub fn connect(&mut self, name: &str, ep: Endpoint) {
        self.claim(std::slice::from_ref(&ep));
        if let Some(c) = self.containers.get_mut(name) {
            c.endpoints.push(ep);
        }
    }

    /// Takes a container off one network (not its last: that is a detach).
    pub fn disconnect(&mut self, name: &str, network: &str) -> Result<Endpoint, StateError> {
        let c = self
            .containers
            .get_mut(name)
            .ok_or_else(|| StateError::NoContainer(name.to_string()))?;
        let i = c
            .endpoints
            .iter()
            .position(|e| e.network == network)
            .ok_or_else(|| StateError::NotConnected(name.to_string(), network.to_string()))?;
        if c.endpoints.len() == 1 {
            return Err(StateError::LastNetwork(
                network.to_string(),
                name.to_string(),
            ));
        }
        Ok(c.endpoints.remove(i))
    }

    pub fn detach(&mut self, name: &str) -> Result<Container, StateError> {
        self.containers
            .remove(name)
            .ok_or_else(|| StateError::NoContainer(name.to_string()))
    }

    /// Loads the state from `dir`, or None when there is none yet. A file that does not
    /// parse or is inconsistent (see `state_check`) is refused.
    pub fn load(dir: &Path) -> Result<Option<State>, PersistError> {
        Self::load_file(&dir.join(STATE_FILE))
    }

    fn load_file(path: &Path) -> Result<Option<State>, PersistError> {
        use std::io::Read;
        let path = path.to_path_buf();
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PersistError::Read(path, e)),
        };
        let mut text = String::new();
        f.take(MAX_STATE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| PersistError::Read(path.clone(), e))?;
        if text.len() as u64 > MAX_STATE_BYTES {
            return Err(PersistError::TooLarge(path, MAX_STATE_BYTES));
        }
        let s: State = serde_json::from_str(&text)
            .map_err(|e| PersistError::Parse(path.clone(), e.to_string()))?;
        if s.version != STATE_VERSION {
            return Err(PersistError::Version(path, s.version));
        }
        crate::state_check::check(&s).map_err(|e| PersistError::Inconsistent(path, e))?;
        Ok(Some(s))
    }

    /// Loads the state, falling back to the last good one beside it when the current
    /// file is refused. The refused file is moved to `state.json.refused` (kept for the
    /// operator); the returned error says why it was refused.
    pub fn load_or_last_good(dir: &Path) -> Result<Loaded, PersistError> {
        let refused = match Self::load(dir) {
            Ok(state) => {
                return Ok(Loaded {
                    state,
                    refused: None,
                });
            }
            Err(e @ PersistError::Read(..)) => return Err(e),
            Err(e) => e,
        };
        let good = dir.join(GOOD_FILE);
        match Self::load_file(&good) {
            Ok(Some(s)) => {
                let kept = dir.join(REFUSED_FILE);
                std::fs::rename(dir.join(STATE_FILE), &kept)
                    .map_err(|e| PersistError::Write(kept, e))?;
                Ok(Loaded {
                    state: Some(s),
                    refused: Some(refused),
                })
            }
            Ok(None) | Err(_) => Err(PersistError::NoGood(Box::new(refused), good)),
        }
    }

    /// Writes the state atomically (temporary file, fsync, rename, fsync of the
    /// directory), then the same bytes as the last good state beside it.
    pub fn save(&self, dir: &Path) -> Result<(), PersistError> {
        let path = dir.join(STATE_FILE);
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| PersistError::Parse(path.clone(), e.to_string()))?;
        write_atomic(dir, STATE_FILE, &text)?;
        write_atomic(dir, GOOD_FILE, &text)
    }
}

/// What `load_or_last_good` found.
#[derive(Debug)]
pub struct Loaded {
    pub state: Option<State>,
    /// Why the current file was refused, when the last good state was used instead.
    pub refused: Option<PersistError>,
}

/// The last state that was loaded or saved whole, beside the current one.
pub const GOOD_FILE: &str = "state.json.good";
/// Where a refused state file is moved when the last good one is used instead.
pub const REFUSED_FILE: &str = "state.json.refused";
/// The largest state file read (far beyond any real one).
const MAX_STATE_BYTES: u64 = 64 << 20;

/// The most networks a daemon holds (each a bridge domain; the FDB keys domains in 16
/// bits, and every change rebuilds what the dataplane reads of each).
pub const MAX_NETWORKS: usize = 4094;

fn write_atomic(dir: &Path, name: &str, text: &[u8]) -> Result<(), PersistError> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| PersistError::Write(path.clone(), e))
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read state {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write state {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("state {0} is damaged: {1}")]
    Parse(PathBuf, String),
    #[error("state {0} has version {1}, which this vswitch does not read")]
    Version(PathBuf, u32),
    #[error("state {0} is inconsistent: {1}")]
    Inconsistent(PathBuf, crate::state_check::Inconsistency),
    #[error("state {0} is larger than {1} bytes")]
    TooLarge(PathBuf, u64),
    #[error("{0}; no usable last good state at {1}: fix the file or move it away to start afresh")]
    NoGood(Box<PersistError>, PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    pub(super) fn ep(network: &str) -> EndpointSpec {
        EndpointSpec {
            network: network.into(),
            port_security: true,
            ..Default::default()
        }
    }

    pub(super) fn ns(p: &str) -> Sandbox {
        Sandbox::Netns { path: p.into() }
    }

    #[test]
    fn default_network_is_docker0() {
        let s = State::new(None, None).unwrap();
        let b = &s.networks["bridge"];
        assert_eq!(b.subnet.unwrap().to_string(), "172.17.0.0/16");
        assert_eq!(b.gateway, Some(Ipv4Addr::new(172, 17, 0, 1)));
        assert_eq!(b.dns, DnsMode::ForwardOnly);
        assert_eq!(b.mtu, 1500);
        assert_eq!(b.domain, 0);
    }

    #[test]
    fn bip_and_default_mtu() {
        let s = State::new(Some("10.10.0.1/24".parse().unwrap()), Some(9000)).unwrap();
        let b = &s.networks["bridge"];
        assert_eq!(b.subnet.unwrap().to_string(), "10.10.0.0/24");
        assert_eq!(b.gateway, Some(Ipv4Addr::new(10, 10, 0, 1)));
        assert_eq!(b.mtu, 9000);
        let s = State::new(Some("10.20.0.254/24".parse().unwrap()), None).unwrap();
        assert_eq!(
            s.networks["bridge"].gateway,
            Some(Ipv4Addr::new(10, 20, 0, 254))
        );
    }

    #[test]
    fn pools_in_docker_order() {
        let mut s = State::new(None, None).unwrap();
        let a = s.create_network(&spec("a")).unwrap().subnet;
        assert_eq!(a.unwrap().to_string(), "172.18.0.0/16");
        let b = s.create_network(&spec("b")).unwrap();
        assert_eq!(b.subnet.unwrap().to_string(), "172.19.0.0/16");
        assert_eq!(b.gateway, Some(Ipv4Addr::new(172, 19, 0, 1)));
        assert_eq!(b.domain, 2);
        for i in 0..12 {
            s.create_network(&spec(&format!("n{i}"))).unwrap();
        }
        // 172.18..172.31 are used: next come /20s of 192.168.
        assert_eq!(
            s.create_network(&spec("x"))
                .unwrap()
                .subnet
                .unwrap()
                .to_string(),
            "192.168.0.0/20"
        );
        assert_eq!(
            s.create_network(&spec("y"))
                .unwrap()
                .subnet
                .unwrap()
                .to_string(),
            "192.168.16.0/20"
        );
    }

    /// The limit on networks holds and is refused clearly; domain ids are reused once
    /// freed, lowest first.
    #[test]
    fn networks_are_refused_past_the_limit() {
        let mut s = State::new(None, None).unwrap();
        for i in 1..MAX_NETWORKS {
            let (hi, lo) = (i / 256, i % 256);
            s.create_network(&NetworkSpec {
                name: format!("n{i}"),
                subnet: Some(format!("10.{hi}.{lo}.0/24")),
                ..Default::default()
            })
            .unwrap();
        }
        assert_eq!(s.networks.len(), MAX_NETWORKS);
        let e = s
            .create_network(&NetworkSpec {
                name: "one-more".into(),
                subnet: Some("11.0.0.0/24".into()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 4094 networks"), "{e}");
        let freed = s.networks["n77"].domain;
        s.remove_network("n77", false).unwrap();
        let again = s.create_network(&NetworkSpec {
            name: "one-more".into(),
            subnet: Some("11.0.0.0/24".into()),
            ..Default::default()
        });
        assert_eq!(again.unwrap().domain, freed);
    }

    #[test]
    fn refusals_change_nothing() {
        let mut s = State::new(None, None).unwrap();
        s.create_network(&NetworkSpec {
            name: "a".into(),
            subnet: Some("10.1.0.0/16".into()),
            vlan: Some(10),
            ..Default::default()
        })
        .unwrap();
        let before = s.clone();
        let cases = [
            (spec("a"), "already exists"),
            (spec("bad name"), "invalid name"),
            (
                NetworkSpec {
                    subnet: Some("10.1.5.0/24".into()),
                    ..spec("b")
                },
                "overlaps",
            ),
            (
                NetworkSpec {
                    subnet: Some("10.2.0.1/16".into()),
                    ..spec("b")
                },
                "host bits",
            ),
            (
                NetworkSpec {
                    subnet: Some("10.2.0.0/31".into()),
                    ..spec("b")
                },
                "/8 to /30",
            ),
            (
                NetworkSpec {
                    subnet: Some("nonsense".into()),
                    ..spec("b")
                },
                "invalid CIDR",
            ),
            (
                NetworkSpec {
                    subnet: Some("10.2.0.0/16".into()),
                    gateway: Some(Ipv4Addr::new(10, 3, 0, 1)),
                    ..spec("b")
                },
                "not a usable address",
            ),
            (
                NetworkSpec {
                    subnet: Some("10.2.0.0/16".into()),
                    gateway: Some(Ipv4Addr::new(10, 2, 255, 255)),
                    ..spec("b")
                },
                "not a usable address",
            ),
            (
                NetworkSpec {
                    gateway: Some(Ipv4Addr::new(10, 3, 0, 1)),
                    ..spec("b")
                },
                "needs --subnet",
            ),
            (
                NetworkSpec {
                    subnet: Some("10.2.0.0/16".into()),
                    ip_range: Some("10.3.0.0/24".into()),
                    ..spec("b")
                },
                "not inside",
            ),
            (
                NetworkSpec {
                    vlan: Some(10),
                    ..spec("b")
                },
                "already used",
            ),
            (
                NetworkSpec {
                    vlan: Some(4095),
                    ..spec("b")
                },
                "1 to 4094",
            ),
            (
                NetworkSpec {
                    mtu: Some(20),
                    ..spec("b")
                },
                "68 to 65520",
            ),
        ];
        for (sp, msg) in cases {
            let e = s.create_network(&sp).unwrap_err().to_string();
            assert!(e.contains(msg), "{sp:?}: {e}");
            assert_eq!(s, before);
        }
        assert!(
            s.remove_network("nope", false)
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        assert!(s.remove_network("bridge", true).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn addresses_from_two_up_and_ip_honoured_or_refused() {
        let mut s = State::new(None, None).unwrap();
        let c = s.check_attach("web", &ns("/x"), &ep("bridge")).unwrap();
        assert_eq!(c.endpoints[0].ip, Some(Ipv4Addr::new(172, 17, 0, 2)));
        assert_eq!(c.endpoints[0].mac.to_string(), "02:42:ac:11:00:02");
        assert_eq!(c.endpoints[0].ifname, "eth0");
        s.attach(c);
        let c = s.check_attach("db", &ns("/y"), &ep("bridge")).unwrap();
        assert_eq!(c.endpoints[0].ip, Some(Ipv4Addr::new(172, 17, 0, 3)));
        s.attach(c);
        let want = |ip| EndpointSpec {
            ip: Some(ip),
            ..ep("bridge")
        };
        let c = s
            .check_attach("x", &ns("/z"), &want(Ipv4Addr::new(172, 17, 9, 9)))
            .unwrap();
        assert_eq!(c.endpoints[0].ip, Some(Ipv4Addr::new(172, 17, 9, 9)));
        let before = s.clone();
        for (ip, msg) in [
            (Ipv4Addr::new(172, 17, 0, 2), "already in use"),
            (Ipv4Addr::new(172, 17, 0, 1), "reserved"),
            (Ipv4Addr::new(172, 17, 255, 255), "reserved"),
            (Ipv4Addr::new(10, 0, 0, 5), "not in subnet"),
        ] {
            let e = s
                .check_attach("x", &ns("/z"), &want(ip))
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg), "{ip}: {e}");
        }
        assert!(
            s.check_attach("web", &ns("/z"), &ep("bridge"))
                .unwrap_err()
                .to_string()
                .contains("already exists")
        );
        assert!(
            s.check_attach("q", &ns("/z"), &ep("nope"))
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        assert_eq!(s, before);
    }

    #[test]
    fn ip_range_and_exhaustion() {
        let mut s = State::new(None, None).unwrap();
        s.create_network(&NetworkSpec {
            name: "small".into(),
            subnet: Some("10.9.0.0/29".into()),
            ip_range: Some("10.9.0.4/30".into()),
            ..Default::default()
        })
        .unwrap();
        let mut got = Vec::new();
        for i in 0..2 {
            let c = s
                .check_attach(&format!("c{i}"), &ns("/n"), &ep("small"))
                .unwrap();
            got.push(c.endpoints[0].ip);
            s.attach(c);
        }
        assert_eq!(
            got,
            vec![
                Some(Ipv4Addr::new(10, 9, 0, 4)),
                Some(Ipv4Addr::new(10, 9, 0, 5))
            ]
        );
        // .6 and .7 are in the range, but .7 is the broadcast address.
        let c = s.check_attach("c2", &ns("/n"), &ep("small")).unwrap();
        assert_eq!(c.endpoints[0].ip, Some(Ipv4Addr::new(10, 9, 0, 6)));
        s.attach(c);
        assert!(
            s.check_attach("c3", &ns("/n"), &ep("small"))
                .unwrap_err()
                .to_string()
                .contains("no free address")
        );
    }

    #[test]
    fn connect_disconnect_and_port_names() {
        let mut s = State::new(None, None).unwrap();
        s.create_network(&spec("front")).unwrap();
        let c = s.check_attach("web", &ns("/n"), &ep("bridge")).unwrap();
        s.attach(c);
        let e = s.check_connect("web", &ep("front")).unwrap();
        assert_eq!(e.ifname, "eth1");
        assert_eq!(e.ip, Some(Ipv4Addr::new(172, 18, 0, 2)));
        s.connect("web", e);
        let c = &s.containers["web"];
        assert_eq!(c.port_name(0), "web");
        assert_eq!(c.port_name(1), "web/eth1");
        assert!(
            s.check_connect("web", &ep("front"))
                .unwrap_err()
                .to_string()
                .contains("already on")
        );
        assert!(s.check_connect("nope", &ep("front")).is_err());
        assert!(s.disconnect("web", "nope").is_err());
        s.disconnect("web", "front").unwrap();
        assert!(
            s.disconnect("web", "bridge")
                .unwrap_err()
                .to_string()
                .contains("only network")
        );
        // A TAP-attached container cannot join more networks.
        let c = s
            .check_attach(
                "vm",
                &Sandbox::Tap {
                    ifname: "tap9".into(),
                },
                &ep("bridge"),
            )
            .unwrap();
        assert_eq!(c.endpoints[0].ifname, "tap9");
        s.attach(c);
        assert!(
            s.check_connect("vm", &ep("front"))
                .unwrap_err()
                .to_string()
                .contains("TAP")
        );
    }

    #[test]
    fn network_rm_in_use_and_force() {
        let mut s = State::new(None, None).unwrap();
        s.create_network(&spec("front")).unwrap();
        let c = s.check_attach("web", &ns("/n"), &ep("front")).unwrap();
        s.attach(c);
        let before = s.clone();
        assert!(
            s.remove_network("front", false)
                .unwrap_err()
                .to_string()
                .contains("--force")
        );
        assert_eq!(s, before);
        assert_eq!(
            s.remove_network("front", true).unwrap(),
            vec!["web".to_string()]
        );
        assert!(s.containers.is_empty());
    }

    #[test]
    fn trunk_parsing_and_port_security() {
        assert_eq!(parse_trunk("10,20, 30,10").unwrap(), vec![10, 20, 30]);
        for bad in ["", "0", "4095", "a,b", "10,,20"] {
            assert!(parse_trunk(bad).is_err(), "{bad}");
        }
        let s = State::new(None, None).unwrap();
        let c = s
            .check_attach(
                "t",
                &ns("/n"),
                &EndpointSpec {
                    trunk: vec![10],
                    ..ep("bridge")
                },
            )
            .unwrap();
        assert!(!c.endpoints[0].port_security, "a trunk carries other hosts");
    }

    #[test]
    fn trunk_may_not_list_its_own_networks_vlan() {
        let mut s = State::new(None, None).unwrap();
        s.create_network(&NetworkSpec {
            name: "v10".into(),
            subnet: Some("10.1.0.0/16".into()),
            vlan: Some(10),
            ..Default::default()
        })
        .unwrap();
        let spec = |trunk: Vec<u16>| EndpointSpec { trunk, ..ep("v10") };
        let e = s
            .check_attach("t", &ns("/n"), &spec(vec![20, 10]))
            .unwrap_err();
        assert!(matches!(e, StateError::TrunkOwnVlan(10, _)), "{e}");
        assert!(e.to_string().contains("leave it out of --trunk"), "{e}");
        assert!(s.check_attach("t", &ns("/n"), &spec(vec![20])).is_ok());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("vswitch-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = State::new(None, None).unwrap();
        s.create_network(&spec("front")).unwrap();
        let c = s.check_attach("web", &ns("/n"), &ep("front")).unwrap();
        s.attach(c);
        s.save(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), Some(s));
        std::fs::write(dir.join(STATE_FILE), b"{broken").unwrap();
        assert!(
            State::load(&dir)
                .unwrap_err()
                .to_string()
                .contains("damaged")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), None);
    }
}

#[cfg(test)]
mod tests6;
