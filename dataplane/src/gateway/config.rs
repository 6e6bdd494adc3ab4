//! What the gateway answers from: each network's addresses and DNS mode, the leases
//! IPAM gave out, where routed traffic leaves, the upstream resolvers. The control
//! thread rebuilds a [`GatewayConfig`] on every change and hands it to the gateway
//! thread whole.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

pub use crate::config::{Net4, Net6};
use crate::dns::Names;
use crate::wire::{Ipv4Cidr, Ipv6Cidr, MacAddr};

/// How long a DHCP lease lasts (clients renew at half; the address never changes).
pub const DHCP_LEASE_SECS: u32 = 3600;

/// How a network's gateway answers DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetDns {
    /// Container names, then forwarding.
    #[default]
    Names,
    /// Forwarding only (the default bridge).
    ForwardOnly,
    /// Nothing on port 53.
    Off,
}

/// The gateway's view of one network: its address families (at least one), each with
/// its prefix and the gateway's address there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub name: String,
    pub gateway_mac: MacAddr,
    /// IPv4 (None: an IPv6-only network).
    pub v4: Option<Net4>,
    /// IPv6 (None: IPv4 only).
    pub v6: Option<Net6>,
    pub mtu: u16,
    pub internal: bool,
    /// Masquerade on (traffic may leave through the uplink).
    pub masquerade: bool,
    pub dns: NetDns,
    /// GATEWAY:PORT reaches the host's loopback (else the host's main address).
    pub host_loopback: bool,
    /// Router advertisements let hosts form their IPv6 address (SLAAC, on a /64);
    /// off where the engine configures the address itself (Docker), so that a host
    /// does not take a second address beside it.
    pub slaac: bool,
}

impl NetConfig {
    /// Whether `ip` is in the network's IPv4 prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.v4.is_some_and(|v| v.subnet.contains(ip))
    }

    /// Whether `ip` is in the network's IPv6 prefix.
    pub fn contains6(&self, ip: Ipv6Addr) -> bool {
        self.v6.is_some_and(|v| v.subnet.contains(ip))
    }
}

/// What IPAM gave one port: its MAC and its address of each family the network has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub mac: MacAddr,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// Where routed traffic leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UplinkMode {
    /// The host's sockets.
    #[default]
    Socket,
    /// Nothing leaves.
    None,
    /// A packet uplink port (translated on the workers' fast path).
    Packet,
}

/// vswitch's presence on a packet uplink's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketUplink {
    pub ext_ip: Ipv4Addr,
    pub ext_mac: MacAddr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub next_hop: Option<Ipv4Addr>,
    pub mtu: u16,
    /// vswitch's IPv6 on the segment (None: IPv4 only).
    pub v6: Option<PacketUplink6>,
}

/// vswitch's IPv6 address on a packet uplink's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketUplink6 {
    pub ext_ip: Ipv6Addr,
    pub prefix: Ipv6Cidr,
    pub next_hop: Option<Ipv6Addr>,
}

impl PacketUplink6 {
    /// Whether `ip` is on the segment itself (else it is reached through the next hop).
    pub fn on_link(&self, ip: Ipv6Addr) -> bool {
        self.prefix.contains(ip)
    }
}

impl PacketUplink {
    /// Whether `ip` is on the segment itself (else it is reached through the next hop).
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        Ipv4Cidr::new(self.subnet, self.prefix_len).contains(ip)
    }
}

/// Everything the gateway answers from; rebuilt by the control thread.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// By domain id.
    pub nets: Vec<Option<NetConfig>>,
    /// (domain, port slot) -> what DHCP and DHCPv6 give each port.
    pub leases: HashMap<(u16, u16), Lease>,
    pub uplink: UplinkMode,
    /// DNS names per domain (None: no DNS on that network).
    pub names: Vec<Option<Arc<Names>>>,
    /// The packet uplink, when set.
    pub packet: Option<PacketUplink>,
    /// Upstream resolvers, in order.
    pub upstreams: Vec<SocketAddr>,
}
