//! Per-port counters.
//!
//! Each worker owns one [`CounterTable`] and is its only writer, so a counter update is
//! a plain load and store (no locked read-modify-write); the control thread reads every
//! worker's table and adds them up. Receive and transmit counters are updated once per
//! batch, drops once per dropped frame.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::fdb::MAX_PORT_SLOTS;
use crate::ids::PortId;
use crate::port::{OffloadCounts, PeerCounts};

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Too short or inconsistent to forward.
    Malformed = 0,
    /// A tag the port does not carry (or a tag on an access port).
    VlanNotAllowed,
    /// No network behind the VLAN (or an untagged frame on a trunk without native VLAN).
    NoNetwork,
    /// Source MAC not the port's own (port security).
    MacSpoof,
    /// Source IPv4 (or ARP sender) not the port's own, or an IPv6 source not its
    /// address, its link-local or :: (port security).
    IpSpoof,
    /// Multicast or zero source MAC.
    BadSrcMac,
    /// Destination learned on the port it came from.
    SamePort,
    /// Containers of a `--no-icc` network may not talk to each other.
    Icc,
    /// The egress port's queue was full.
    TxFull,
    /// The egress port failed.
    TxError,
    /// The gateway service ring was full.
    ServiceBusy,
    /// Nowhere to send it (no route out of the network).
    NoRoute,
    /// The NAT table refused a new flow.
    NatFull,
    /// The socket uplink refused a TCP connection: the container holds its share (or
    /// every connection the uplink allows is taken).
    TcpQuota,
    /// The socket uplink refused a UDP flow (per container or in all).
    UdpQuota,
    /// The socket uplink refused an echo flow (per container or in all).
    PingQuota,
    /// The gateway refused a DNS query: too many of the container's in flight.
    DnsQuota,
    /// The socket uplink refused a flow: its descriptor budget (or the process's) is
    /// used up.
    FdLimit,
    /// An IPv6 router advertisement or redirect from a container (RA guard).
    RaGuard,
    /// A DHCP or DHCPv6 server message from a container (DHCP guard).
    DhcpGuard,
    /// IPv6 whose extension headers cannot be followed to the upper layer.
    BadIpv6Chain,
    /// A second tag behind a priority tag, or an 802.1ad tag, on an access port.
    DoubleTag,
    /// The container holds its share of the NAT table already.
    NatQuota,
    /// The port used its share of the gateway ring for this interval.
    ServiceQuota,
    /// A neighbour advertisement for an address not the port's, or a link-layer
    /// address option not its MAC (neighbour discovery guard).
    NdSpoof,
    /// Past the port's bandwidth limit into the container (`rate_in`; counted on the
    /// limited port).
    RateLimit,
    /// Routed IPv6 (a network with masquerade off) from a source outside the network's
    /// own prefix: not routed, as a router filtering by reverse path drops it.
    SourceOutsideNetwork,
}

impl DropReason {
    pub const COUNT: usize = 27;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::VlanNotAllowed,
        DropReason::NoNetwork,
        DropReason::MacSpoof,
        DropReason::IpSpoof,
        DropReason::BadSrcMac,
        DropReason::SamePort,
        DropReason::Icc,
        DropReason::TxFull,
        DropReason::TxError,
        DropReason::ServiceBusy,
        DropReason::NoRoute,
        DropReason::NatFull,
        DropReason::TcpQuota,
        DropReason::UdpQuota,
        DropReason::PingQuota,
        DropReason::DnsQuota,
        DropReason::FdLimit,
        DropReason::RaGuard,
        DropReason::DhcpGuard,
        DropReason::BadIpv6Chain,
        DropReason::DoubleTag,
        DropReason::NatQuota,
        DropReason::ServiceQuota,
        DropReason::NdSpoof,
        DropReason::RateLimit,
        DropReason::SourceOutsideNetwork,
    ];

    /// The name shown in `stats`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::NoNetwork => "no_network",
            DropReason::MacSpoof => "mac_spoof",
            DropReason::IpSpoof => "ip_spoof",
            DropReason::BadSrcMac => "bad_src_mac",
            DropReason::SamePort => "same_port",
            DropReason::Icc => "icc",
            DropReason::TxFull => "tx_full",
            DropReason::TxError => "tx_error",
            DropReason::ServiceBusy => "service_busy",
            DropReason::NoRoute => "no_route",
            DropReason::NatFull => "nat_full",
            DropReason::TcpQuota => "tcp_quota",
            DropReason::UdpQuota => "udp_quota",
            DropReason::PingQuota => "ping_quota",
            DropReason::DnsQuota => "dns_quota",
            DropReason::FdLimit => "fd_limit",
            DropReason::RaGuard => "ra_guard",
            DropReason::DhcpGuard => "dhcp_guard",
            DropReason::BadIpv6Chain => "bad_ipv6_chain",
            DropReason::DoubleTag => "double_tag",
            DropReason::NatQuota => "nat_quota",
            DropReason::ServiceQuota => "service_quota",
            DropReason::NdSpoof => "nd_spoof",
            DropReason::RateLimit => "rate_limit",
            DropReason::SourceOutsideNetwork => "source_outside_network",
        }
    }
}

#[derive(Default)]
struct PortCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    /// The port's own offload counters, as its worker last copied them.
    offload: [AtomicU64; OFFLOAD_COUNTERS],
    /// The port's own peer counters, as its receiving worker last copied them.
    peer: [AtomicU64; 2],
}

const OFFLOAD_COUNTERS: usize = 5;

fn offload_array(o: &OffloadCounts) -> [u64; OFFLOAD_COUNTERS] {
    [
        o.rx_super,
        o.tx_super,
        o.tx_sw_segments,
        o.tx_udp_merged,
        o.tx_merge_refused,
    ]
}

/// Single-writer increment: a load and a store, no locked instruction.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A snapshot of one port's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
    pub offload: OffloadCounts,
    pub peer: PeerCounts,
}

impl PortStats {
    pub fn add(&mut self, o: &PortStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        self.offload.add(&o.offload);
        self.peer.add(&o.peer);
    }
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops.get(r as usize).copied().unwrap_or(0)
    }
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// One worker's counters for every port slot.
pub struct CounterTable {
    ports: Box<[PortCounters]>,
}

impl Default for CounterTable {
    fn default() -> Self {
        CounterTable {
            ports: (0..MAX_PORT_SLOTS)
                .map(|_| PortCounters::default())
                .collect(),
        }
    }
}

impl CounterTable {
    #[inline]
    pub fn rx(&self, port: PortId, packets: u64, bytes: u64) {
        if let Some(c) = self.ports.get(port.index()) {
            bump(&c.rx_packets, packets);
            bump(&c.rx_bytes, bytes);
        }
    }
    #[inline]
    pub fn tx(&self, port: PortId, packets: u64, bytes: u64) {
        if let Some(c) = self.ports.get(port.index()) {
            bump(&c.tx_packets, packets);
            bump(&c.tx_bytes, bytes);
        }
    }
    #[inline]
    pub fn count_drop(&self, port: PortId, reason: DropReason, n: u64) {
        if let Some(d) = self
            .ports
            .get(port.index())
            .and_then(|c| c.drops.get(reason as usize))
        {
            bump(d, n);
        }
    }
    /// Copies the port's cumulative offload counters (its worker, after its I/O).
    #[inline]
    pub fn set_offloads(&self, port: PortId, o: &OffloadCounts) {
        if let Some(c) = self.ports.get(port.index()) {
            for (a, v) in c.offload.iter().zip(offload_array(o)) {
                a.store(v, Relaxed);
            }
        }
    }
    /// Copies the port's cumulative peer counters (its receiving worker, after a receive).
    #[inline]
    pub fn set_peer(&self, port: PortId, p: &PeerCounts) {
        if let Some(c) = self.ports.get(port.index()) {
            for (a, v) in c.peer.iter().zip([p.connects, p.cut_off]) {
                a.store(v, Relaxed);
            }
        }
    }
    /// The flows the socket uplink (or the DNS server) has refused the port over its
    /// quotas, in all (any thread: workers read the gateway's table to tell a port
    /// being refused, see `worker::Refused`).
    #[inline]
    pub fn refusals(&self, port: PortId) -> u64 {
        let Some(c) = self.ports.get(port.index()) else {
            return 0;
        };
        [
            DropReason::TcpQuota,
            DropReason::UdpQuota,
            DropReason::PingQuota,
            DropReason::DnsQuota,
            DropReason::FdLimit,
        ]
        .iter()
        .filter_map(|r| c.drops.get(*r as usize))
        .map(|a| a.load(Relaxed))
        .fold(0u64, u64::wrapping_add)
    }
    /// Reads one port's counters (any thread).
    pub fn read(&self, port: PortId) -> PortStats {
        let Some(c) = self.ports.get(port.index()) else {
            return PortStats::default();
        };
        let mut s = PortStats {
            rx_packets: c.rx_packets.load(Relaxed),
            rx_bytes: c.rx_bytes.load(Relaxed),
            tx_packets: c.tx_packets.load(Relaxed),
            tx_bytes: c.tx_bytes.load(Relaxed),
            drops: [0; DropReason::COUNT],
            offload: OffloadCounts::default(),
            peer: PeerCounts::default(),
        };
        for (d, a) in s.drops.iter_mut().zip(c.drops.iter()) {
            *d = a.load(Relaxed);
        }
        let [
            rx_super,
            tx_super,
            tx_sw_segments,
            tx_udp_merged,
            tx_merge_refused,
        ] = c.offload.each_ref().map(|a| a.load(Relaxed));
        s.offload = OffloadCounts {
            rx_super,
            tx_super,
            tx_sw_segments,
            tx_udp_merged,
            tx_merge_refused,
        };
        let [connects, cut_off] = c.peer.each_ref().map(|a| a.load(Relaxed));
        s.peer = PeerCounts { connects, cut_off };
        s
    }
    /// Zeroes a slot (when a port is detached and its slot reused). Only the owning
    /// worker may call this.
    pub fn reset(&self, port: PortId) {
        if let Some(c) = self.ports.get(port.index()) {
            for a in [&c.rx_packets, &c.rx_bytes, &c.tx_packets, &c.tx_bytes]
                .into_iter()
                .chain(c.drops.iter())
                .chain(c.offload.iter())
                .chain(c.peer.iter())
            {
                a.store(0, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_reads() {
        let t = CounterTable::default();
        t.rx(PortId(3), 2, 128);
        t.tx(PortId(3), 1, 64);
        t.count_drop(PortId(3), DropReason::Icc, 1);
        t.count_drop(PortId(9999), DropReason::Icc, 1); // out of range: ignored
        let s = t.read(PortId(3));
        assert_eq!(
            (s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes),
            (2, 128, 1, 64)
        );
        assert_eq!(s.drop_count(DropReason::Icc), 1);
        assert_eq!(s.total_drops(), 1);
        let o = OffloadCounts {
            rx_super: 1,
            tx_super: 2,
            tx_sw_segments: 3,
            tx_udp_merged: 4,
            tx_merge_refused: 5,
        };
        t.set_offloads(PortId(3), &o);
        assert_eq!(t.read(PortId(3)).offload, o);
        let p = PeerCounts {
            connects: 2,
            cut_off: 1,
        };
        t.set_peer(PortId(3), &p);
        assert_eq!(t.read(PortId(3)).peer, p);
        t.reset(PortId(3));
        assert_eq!(t.read(PortId(3)), PortStats::default());
    }

    #[test]
    fn reasons_are_indexed_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
