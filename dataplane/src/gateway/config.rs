//! What the gateway answers from: each network's addresses and DNS mode, the leases
//! IPAM gave out, where routed traffic leaves, the upstream resolvers. The control
//! thread rebuilds a [`GatewayConfig`] on every change and hands it to the gateway
//! thread whole.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::dns::Names;
use crate::wire::{Ipv4Cidr, MacAddr};

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

/// The gateway's view of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub name: String,
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: MacAddr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
    pub internal: bool,
    /// Masquerade on (traffic may leave through the uplink).
    pub masquerade: bool,
    pub dns: NetDns,
    /// GATEWAY:PORT reaches the host's loopback (else the host's main address).
    pub host_loopback: bool,
}

impl NetConfig {
    /// The network's prefix.
    pub fn cidr(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(self.subnet, self.prefix_len)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.cidr().contains(ip)
    }
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
    /// (domain, port slot) -> (MAC, address): what DHCP gives each port.
    pub leases: HashMap<(u16, u16), (MacAddr, Ipv4Addr)>,
    pub uplink: UplinkMode,
    /// DNS names per domain (None: no DNS on that network).
    pub names: Vec<Option<Arc<Names>>>,
    /// The packet uplink, when set.
    pub packet: Option<PacketUplink>,
    /// Upstream resolvers, in order.
    pub upstreams: Vec<SocketAddr>,
}
