//! The configuration the forwarding path reads: an immutable snapshot.
//!
//! The control thread builds a new [`Snapshot`] whenever ports, networks or VLANs change
//! and publishes it with one atomic pointer swap ([`SnapshotCell`], arc-swap). Workers
//! load it once per batch; nothing on the forwarding path takes a lock or sees a
//! half-applied change.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::bridge::VlanSet;
use crate::ids::{DomainId, Encap, Generation, PortId, VlanId};
use crate::wire::cidr::mask_of;
use crate::wire::{Ipv4Cidr, Ipv6Cidr, MacAddr, ipv6};

/// The slot of the gateway service port in every snapshot.
pub const GATEWAY_PORT: PortId = PortId(0);
/// The slot of the packet uplink port (when one is set).
pub const UPLINK_PORT: PortId = PortId(1);
/// The first slot given to container ports.
pub const FIRST_PORT: PortId = PortId(2);
/// Seconds a learned MAC stays in the FDB without traffic, by default.
pub const DEFAULT_AGING_SECS: u32 = 300;
/// Marks "no domain" inside the packed VLAN map (never seen outside this module).
const NO_DOMAIN: u16 = u16::MAX;

/// What a port is to the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    /// A container or VM interface.
    Container,
    /// The gateway service (trusted: frames carry their domain).
    Gateway,
    /// The packet uplink (outside segment).
    Uplink,
}

/// How a port maps frames to bridge domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMode {
    /// Untagged frames of one domain.
    Access { domain: DomainId },
    /// Tagged frames of the listed VLANs; untagged ones belong to `native`.
    Trunk {
        native: Option<DomainId>,
        vlans: VlanSet,
    },
}

/// Port security: what the port may send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security {
    pub mac: MacAddr,
    /// The port's IPv4 address; 0.0.0.0 is always allowed (DHCP, ARP probes).
    pub ip: Option<Ipv4Addr>,
    /// The port's IPv6 address; its link-local (EUI-64 of `mac`) and :: (duplicate
    /// address detection) are always allowed.
    pub ip6: Option<Ipv6Addr>,
}

/// A network's IPv4: its prefix and the gateway's address in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net4 {
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Cidr,
}

impl Net4 {
    /// The gateway `gateway` on its /`prefix_len`.
    pub fn of(gateway: Ipv4Addr, prefix_len: u8) -> Net4 {
        Net4 {
            gateway,
            subnet: Ipv4Cidr::new(gateway, prefix_len).network(),
        }
    }
}

/// A network's IPv6: its prefix and the gateway's address in it (the gateway also
/// answers on its link-local address, the EUI-64 of its MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net6 {
    pub gateway: Ipv6Addr,
    pub subnet: Ipv6Cidr,
}

impl Net6 {
    /// The gateway `gateway` on its /`prefix_len`.
    pub fn of(gateway: Ipv6Addr, prefix_len: u8) -> Net6 {
        Net6 {
            gateway,
            subnet: Ipv6Cidr::new(gateway, prefix_len).network(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConf {
    pub name: String,
    /// Bumped each time the slot is given to a new port, so stale FDB entries miss.
    pub generation: Generation,
    pub role: PortRole,
    pub mode: PortMode,
    pub security: Option<Security>,
    /// Learned MACs allowed on the port.
    pub mac_limit: u32,
    /// Bandwidth limits (the worker's token buckets; none: unlimited).
    pub limits: crate::shaper::Limits,
    /// A container's port on the kernel path whose unicast to another such port of its
    /// network may be handed to the kernel (see [`crate::kernel`]): a veth, under port
    /// security, with no bandwidth limit, in a network with inter-container traffic.
    pub kernel: bool,
}

impl PortConf {
    /// How frames of `domain` (802.1Q id `vlan`) leave this port: None when the port
    /// does not carry the domain, else untagged or with the domain's tag.
    #[inline(always)]
    pub fn egress_encap(&self, domain: DomainId, vlan: Option<VlanId>) -> Option<Encap> {
        match &self.mode {
            PortMode::Access { domain: d } => (*d == domain).then_some(Encap::None),
            PortMode::Trunk { native, vlans } => {
                if *native == Some(domain) {
                    Some(Encap::None)
                } else {
                    vlan.filter(|v| vlans.contains(v.get())).map(Encap::Vlan)
                }
            }
        }
    }
}

/// A port carrying a domain, and how its frames leave there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub port: PortId,
    pub encap: Encap,
    pub role: PortRole,
    /// A container's access port under port security: a host, never a router (its
    /// router advertisements are refused), so frames for routers alone skip it.
    pub host: bool,
}

/// A bridge domain: one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConf {
    pub name: String,
    /// Its 802.1Q id on trunks (the network's `--vlan`).
    pub vlan: Option<VlanId>,
    pub gateway_mac: MacAddr,
    /// IPv4 (None: an IPv6-only network).
    pub v4: Option<Net4>,
    /// IPv6 (None: IPv4 only).
    pub v6: Option<Net6>,
    /// Containers may talk to each other.
    pub icc: bool,
    /// Traffic may leave through a packet uplink (masquerade on, not internal).
    pub egress: bool,
    /// Every port that carries the domain (the service port excluded), for flooding.
    pub members: Vec<Member>,
    /// The IPv4 address of each secured access port of the domain, with the port,
    /// sorted by address (filled by [`Snapshot::rebuild`]): an ARP request for one of
    /// them goes to its port alone.
    pub owners: Vec<(Ipv4Addr, PortId)>,
    /// The solicited-node groups each secured access port listens to (the low 24
    /// bits of its EUI-64 link-local and of its IPv6 address, the only addresses port
    /// security lets it use), with the port, sorted: a neighbour solicitation goes to
    /// the ports of its group alone.
    pub listeners: Vec<(u32, PortId)>,
}

impl DomainConf {
    /// The secured port that owns `ip` in this domain (an address IPAM gave it).
    #[inline]
    pub fn owner(&self, ip: Ipv4Addr) -> Option<PortId> {
        let i = self.owners.binary_search_by_key(&ip, |o| o.0).ok()?;
        self.owners.get(i).map(|o| o.1)
    }

    /// The secured ports listening to the solicited-node group of key `key`.
    #[inline]
    pub fn listeners_of(&self, key: u32) -> &[(u32, PortId)] {
        let from = self.listeners.partition_point(|l| l.0 < key);
        let to = self.listeners.partition_point(|l| l.0 <= key);
        self.listeners.get(from..to).unwrap_or(&[])
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.v4.is_some_and(|v| v.subnet.contains(ip))
    }

    /// The gateway's IPv4 address (None on an IPv6-only network).
    #[inline]
    pub fn gateway_ip(&self) -> Option<Ipv4Addr> {
        self.v4.map(|v| v.gateway)
    }

    /// Whether the gateway listens to the IPv6 multicast group `dst` maps to: all
    /// routers (router solicitations), all DHCPv6 agents, and the solicited-node
    /// groups of its two addresses (neighbour solicitations). Only 33:33:... groups
    /// of a network with IPv6 are looked at.
    #[inline]
    pub fn gateway_listens(&self, dst: MacAddr) -> bool {
        let Some(v6) = &self.v6 else {
            return false;
        };
        if !dst.is_ipv6_multicast() {
            return false;
        }
        let groups = [
            ipv6::ALL_ROUTERS,
            ipv6::ALL_DHCP_AGENTS,
            ipv6::solicited_node(&v6.gateway),
            ipv6::solicited_node(&ipv6::link_local(self.gateway_mac)),
        ];
        groups.iter().any(|g| ipv6::multicast_mac(g) == dst)
    }
}

/// Everything the forwarding path reads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    /// Indexed by port slot.
    pub ports: Vec<Option<PortConf>>,
    /// Indexed by domain id.
    pub domains: Vec<Option<DomainConf>>,
    /// 802.1Q id -> domain id, filled by [`Snapshot::rebuild`]; read it through
    /// [`Snapshot::vlan_to_domain`].
    pub vlan_domain: VlanMap,
    /// FDB aging in seconds.
    pub aging_secs: u32,
    /// The packet uplink, when one is set.
    pub uplink: Option<UplinkConf>,
    /// Every network's prefix (address, mask): routed traffic never goes to these.
    pub inside: Vec<(u32, u32)>,
    /// Some port has a bandwidth limit (set by [`Snapshot::rebuild`]): without one the
    /// workers skip the shaper with this one test per batch.
    pub shaped: bool,
}

/// 802.1Q id -> domain, packed: one `u16` per id, a sentinel where no domain has it.
#[derive(Debug, Clone)]
pub struct VlanMap(Box<[u16; 4096]>);

impl Default for VlanMap {
    fn default() -> Self {
        VlanMap(Box::new([NO_DOMAIN; 4096]))
    }
}

/// The domain id frames of the uplink segment carry to and from the service port.
pub const UPLINK_DOMAIN: DomainId = DomainId(u16::MAX - 1);

/// The packet uplink as the forwarding path reads it.
#[derive(Debug, Clone)]
pub struct UplinkConf {
    /// vswitch's address and MAC on the outside segment.
    pub ext_ip: Ipv4Addr,
    pub ext_mac: MacAddr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub next_hop: Option<Ipv4Addr>,
    /// The segment's MTU: larger packets with DF set get "fragmentation needed".
    pub mtu: u16,
    /// Published ports (DNAT).
    pub rules: crate::nat::DnatRules,
    /// (domain, address) -> MAC of every addressed port, sorted, for delivering
    /// translated packets.
    pub hosts: Vec<(DomainId, Ipv4Addr, MacAddr)>,
    /// IPv6 on the segment (None: the uplink carries IPv4 only).
    pub v6: Option<Uplink6>,
}

/// The packet uplink's IPv6: vswitch's address on the segment, where routed IPv6
/// leaves, and how each network's IPv6 does (NAT66 masquerade, or routed as it is).
///
/// Prefixes and addresses the workers compare per packet are kept as integers (a
/// prefix as its network and mask): made by [`Uplink6::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink6 {
    pub ext_ip: Ipv6Addr,
    /// The segment's prefix as (network, mask): addresses in it are reached without
    /// the next hop.
    pub segment: (u128, u128),
    pub next_hop: Option<Ipv6Addr>,
    /// Every network's IPv6 prefix as (network, mask): routed traffic never goes to
    /// these.
    pub inside: Vec<(u128, u128)>,
    /// The networks whose IPv6 is routed as it is (masquerade off, not internal),
    /// sorted.
    pub routed: Vec<DomainId>,
    /// (domain, address) -> MAC of every port with an IPv6 address, sorted.
    pub hosts: Vec<(DomainId, u128, MacAddr)>,
    /// Published ports on `ext_ip` (DNAT66), to the containers with an IPv6 address;
    /// a routed network's also at the container's own address.
    pub rules: crate::nat::DnatRules<crate::nat::V6>,
}

/// A prefix as (network, mask) integers.
fn masked(p: Ipv6Cidr) -> (u128, u128) {
    (u128::from(p.addr()) & p.mask(), p.mask())
}

impl Uplink6 {
    /// vswitch's `address` on the segment, its next hop, the networks' prefixes, the
    /// routed networks and each port's (domain, IPv6 address, MAC).
    pub fn new(
        address: Ipv6Cidr,
        next_hop: Option<Ipv6Addr>,
        inside: &[Ipv6Cidr],
        mut routed: Vec<DomainId>,
        hosts: &[(DomainId, Ipv6Addr, MacAddr)],
    ) -> Uplink6 {
        routed.sort();
        routed.dedup();
        let mut hosts: Vec<_> = hosts.iter().map(|h| (h.0, u128::from(h.1), h.2)).collect();
        hosts.sort_by_key(|h| (h.0, h.1));
        hosts.dedup_by_key(|h| (h.0, h.1));
        Uplink6 {
            ext_ip: address.addr(),
            segment: masked(address),
            next_hop,
            inside: inside.iter().map(|p| masked(*p)).collect(),
            routed,
            hosts,
            rules: crate::nat::DnatRules::default(),
        }
    }

    /// The same, with published ports `rules` on its address (DNAT66); those of
    /// routed networks' containers are also reached at the container's address.
    pub fn with_rules(mut self, rules: crate::nat::DnatRules<crate::nat::V6>) -> Uplink6 {
        self.rules = rules.routed(|d| self.routes(DomainId(d)));
        self
    }

    /// Whether `ip` is on the segment itself.
    #[inline]
    pub fn on_link(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.segment.1 == self.segment.0
    }

    /// Whether `ip` is in some network (never routed out).
    #[inline]
    pub fn is_inside(&self, ip: Ipv6Addr) -> bool {
        let a = u128::from(ip);
        self.inside.iter().any(|&(net, mask)| a & mask == net)
    }

    /// Whether `domain`'s IPv6 is routed as it is (else masqueraded, where it leaves).
    #[inline]
    pub fn routes(&self, domain: DomainId) -> bool {
        self.routed.binary_search(&domain).is_ok()
    }

    /// The MAC of a port addressed `ip` in `domain`.
    #[inline]
    pub fn host_mac(&self, domain: DomainId, ip: Ipv6Addr) -> Option<MacAddr> {
        self.hosts
            .binary_search_by_key(&(domain, u128::from(ip)), |h| (h.0, h.1))
            .ok()
            .and_then(|i| self.hosts.get(i))
            .map(|h| h.2)
    }
}

impl UplinkConf {
    /// Whether `ip` is on the outside segment itself (no next hop needed).
    #[inline]
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        let m = mask_of(self.prefix_len);
        u32::from(ip) & m == u32::from(self.subnet) & m
    }

    /// The MAC of a port addressed `ip` in `domain`.
    #[inline]
    pub fn host_mac(&self, domain: DomainId, ip: Ipv4Addr) -> Option<MacAddr> {
        self.hosts
            .binary_search_by_key(&(domain, ip), |h| (h.0, h.1))
            .ok()
            .and_then(|i| self.hosts.get(i))
            .map(|h| h.2)
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            version: 0,
            ports: Vec::new(),
            domains: Vec::new(),
            vlan_domain: VlanMap::default(),
            aging_secs: DEFAULT_AGING_SECS,
            uplink: None,
            inside: Vec::new(),
            shaped: false,
        }
    }
}

impl Snapshot {
    #[inline]
    pub fn port(&self, slot: PortId) -> Option<&PortConf> {
        self.ports.get(slot.index())?.as_ref()
    }
    #[inline]
    pub fn domain(&self, id: DomainId) -> Option<&DomainConf> {
        self.domains.get(id.index())?.as_ref()
    }
    /// The domain whose frames carry 802.1Q id `vid` on trunks.
    #[inline]
    pub fn vlan_to_domain(&self, vid: VlanId) -> Option<DomainId> {
        let d = *self.vlan_domain.0.get(usize::from(vid.get()))?;
        (d != NO_DOMAIN).then_some(DomainId(d))
    }

    /// Whether `ip` belongs to any network (routed traffic never goes there).
    #[inline]
    pub fn is_inside(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.inside.iter().any(|(net, mask)| a & mask == *net)
    }

    /// Recomputes the derived tables (VLAN map, flood lists) from ports and domains.
    /// Call after editing `ports` or `domains`.
    pub fn rebuild(&mut self) {
        self.inside = self
            .domains
            .iter()
            .flatten()
            .filter_map(|d| d.v4)
            .map(|v| (v.subnet.first(), v.subnet.mask()))
            .collect();
        let mut map = VlanMap::default();
        for (id, d) in self.domains.iter().enumerate() {
            if let (Some(d), Ok(id)) = (d, u16::try_from(id))
                && let Some(v) = d.vlan
                && let Some(slot) = map.0.get_mut(usize::from(v.get()))
            {
                *slot = id;
            }
        }
        self.vlan_domain = map;
        self.shaped = self.ports.iter().flatten().any(|p| !p.limits.is_none());
        self.join_domains();
    }

    /// Each domain's members, owners and listeners, in one pass over the ports: an
    /// access port joins its one domain; only trunks are matched against every domain
    /// (O(ports + trunks x domains), not O(ports x domains), for thousands of ports in
    /// hundreds of networks).
    fn join_domains(&mut self) {
        for d in self.domains.iter_mut().flatten() {
            d.members.clear();
            d.owners.clear();
            d.listeners.clear();
        }
        for (slot, p) in self.ports.iter().enumerate() {
            let (Some(p), Ok(slot)) = (p, u16::try_from(slot)) else {
                continue;
            };
            if p.role == PortRole::Gateway {
                continue;
            }
            match &p.mode {
                PortMode::Access { domain } => {
                    if let Some(Some(d)) = self.domains.get_mut(domain.index()) {
                        d.join(p, PortId(slot));
                    }
                }
                PortMode::Trunk { .. } => {
                    for (id, d) in self.domains.iter_mut().enumerate() {
                        let (Some(d), Ok(id)) = (d, u16::try_from(id)) else {
                            continue;
                        };
                        if let Some(encap) = p.egress_encap(DomainId(id), d.vlan) {
                            d.members.push(Member::of(p, PortId(slot), encap));
                        }
                    }
                }
            }
        }
        for d in self.domains.iter_mut().flatten() {
            d.settle_owners();
        }
    }
}

impl DomainConf {
    /// Access port `p` at `slot` joins: a member, and for a secured host the owner of
    /// its IPv4 address and a listener of its solicited-node groups.
    fn join(&mut self, p: &PortConf, slot: PortId) {
        let m = Member::of(p, slot, Encap::None);
        self.members.push(m);
        let Some(sec) = p.security.filter(|_| m.host) else {
            return;
        };
        if let Some(ip) = sec.ip {
            self.owners.push((ip, slot));
        }
        let key = |a: &Ipv6Addr| ipv6::multicast_mac(&ipv6::solicited_node(a)).solicited_node_key();
        let addrs = [Some(ipv6::link_local(sec.mac)), sec.ip6];
        for k in addrs.iter().flatten().filter_map(key) {
            self.listeners.push((k, slot));
        }
    }

    /// Sorts owners and listeners; an address two ports claim belongs to neither (its
    /// ARP requests are flooded).
    fn settle_owners(&mut self) {
        self.owners.sort_unstable();
        let mut dup = Vec::new();
        for w in self.owners.windows(2) {
            if let [a, b] = w
                && a.0 == b.0
            {
                dup.push(a.0);
            }
        }
        self.owners.retain(|o| !dup.contains(&o.0));
        self.listeners.sort_unstable();
        self.listeners.dedup();
    }
}

impl Member {
    fn of(p: &PortConf, port: PortId, encap: Encap) -> Member {
        Member {
            port,
            encap,
            role: p.role,
            host: p.role == PortRole::Container
                && p.security.is_some()
                && matches!(p.mode, PortMode::Access { .. }),
        }
    }
}

/// The atomically swapped snapshot shared by the control thread and the workers.
pub struct SnapshotCell(arc_swap::ArcSwap<Snapshot>);

impl SnapshotCell {
    pub fn new(s: Snapshot) -> SnapshotCell {
        SnapshotCell(arc_swap::ArcSwap::from_pointee(s))
    }
    /// Publishes a new snapshot; workers see it from their next batch.
    pub fn store(&self, s: Snapshot) {
        self.0.store(Arc::new(s));
    }
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }
    /// A short look at the current snapshot (no reference count taken, usually).
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }
    /// A per-worker cache: loading through it costs one atomic read when unchanged.
    pub fn cache(self: &Arc<Self>) -> SnapshotCache {
        SnapshotCache(arc_swap::Cache::new(CellRef(self.clone())))
    }
}

/// Lets arc-swap's `Cache` hold the cell by `Arc`.
pub struct CellRef(Arc<SnapshotCell>);
impl std::ops::Deref for CellRef {
    type Target = arc_swap::ArcSwap<Snapshot>;
    fn deref(&self) -> &Self::Target {
        &self.0.0
    }
}

/// A worker's cached view of the current snapshot.
pub struct SnapshotCache(arc_swap::Cache<CellRef, Arc<Snapshot>>);

impl SnapshotCache {
    #[inline]
    pub fn load(&mut self) -> &Arc<Snapshot> {
        self.0.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str, vlan: Option<u16>, third: u8) -> DomainConf {
        DomainConf {
            name: name.into(),
            vlan: vlan.and_then(VlanId::new),
            gateway_mac: MacAddr::from_ipv4(Ipv4Addr::new(10, third, 0, 1)),
            v4: Some(Net4::of(Ipv4Addr::new(10, third, 0, 1), 24)),
            v6: None,
            icc: true,
            egress: true,
            members: vec![],
            owners: vec![],
            listeners: vec![],
        }
    }

    fn port(name: &str, mode: PortMode) -> Option<PortConf> {
        Some(PortConf {
            name: name.into(),
            generation: Generation(0),
            role: PortRole::Container,
            mode,
            security: None,
            mac_limit: 1024,
            kernel: false,
            limits: Default::default(),
        })
    }

    #[test]
    fn rebuild_derives_vlan_map_and_members() {
        let mut s = Snapshot {
            domains: vec![Some(domain("a", None, 1)), Some(domain("b", Some(10), 2))],
            ports: vec![
                None,
                None,
                port(
                    "p2",
                    PortMode::Access {
                        domain: DomainId(0),
                    },
                ),
                port(
                    "p3",
                    PortMode::Access {
                        domain: DomainId(1),
                    },
                ),
                port(
                    "t4",
                    PortMode::Trunk {
                        native: Some(DomainId(0)),
                        vlans: VlanSet::from_ids([10, 20]),
                    },
                ),
            ],
            ..Default::default()
        };
        s.rebuild();
        let vid = |v| VlanId::new(v).unwrap();
        assert_eq!(s.vlan_to_domain(vid(10)), Some(DomainId(1)));
        assert_eq!(s.vlan_to_domain(vid(20)), None);
        let members = |d| -> Vec<_> {
            s.domain(DomainId(d))
                .unwrap()
                .members
                .iter()
                .map(|m| (m.port.0, m.encap))
                .collect()
        };
        assert_eq!(members(0), vec![(2, Encap::None), (4, Encap::None)]);
        assert_eq!(
            members(1),
            vec![(3, Encap::None), (4, Encap::Vlan(vid(10)))]
        );
    }

    #[test]
    fn subnet_contains() {
        let d = domain("a", None, 1);
        assert!(d.contains(Ipv4Addr::new(10, 1, 0, 77)));
        assert!(!d.contains(Ipv4Addr::new(10, 2, 0, 77)));
    }

    #[test]
    fn cache_sees_new_snapshots() {
        let cell = Arc::new(SnapshotCell::new(Snapshot::default()));
        let mut c = cell.cache();
        assert_eq!(c.load().version, 0);
        cell.store(Snapshot {
            version: 7,
            ..Default::default()
        });
        assert_eq!(c.load().version, 7);
    }
}
