//! The fixed configurations the targets run against.

use dataplane::dns::{DnsConfig, DnsServer, Names};
use dataplane::gateway::GatewayNet;
use dataplane::wire::MacAddr;
use std::net::Ipv4Addr;

/// The network every gateway target serves: 10.1.0.0/24, gateway 10.1.0.1.
pub const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// The address IPAM gave the port the DHCP target's frames come from.
pub const LEASED: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

pub fn gateway_net() -> GatewayNet {
    GatewayNet {
        gateway_ip: GW,
        gateway_mac: MacAddr::from_ipv4(GW),
        subnet: Ipv4Addr::new(10, 1, 0, 0),
        prefix_len: 24,
        mtu: 1500,
        dns: true,
        lease_secs: 3600,
        domain_name: "vswitch.test".into(),
    }
}

/// A network's name table: two containers, an alias, the search domain; forwarding on.
pub fn names() -> Names {
    let mut b = Names::builder();
    b.gateway(GW).forward(true);
    let _ = b.search_domain("vswitch.test");
    let _ = b.container("web", LEASED);
    let _ = b.container("db", Ipv4Addr::new(10, 1, 0, 3));
    let _ = b.alias("www", LEASED);
    b.build()
}

/// A server forwarding to two upstream resolvers, at most 16 queries in flight.
pub fn dns_server() -> DnsServer {
    let cfg = DnsConfig {
        max_in_flight: 16,
        ..DnsConfig::default()
    };
    DnsServer::new(cfg, 2)
}

pub mod pipeline {
    //! A switch with every kind of port: ports 2..=3 access to network a (3 with port
    //! security), 4 access to b, 5 a trunk (native a, VLANs 10 and 20), 6..=7 access to
    //! c (no inter-container traffic), 1 the packet uplink with NAT and a published
    //! port, 0 the gateway.

    use dataplane::bridge::VlanSet;
    use dataplane::bridge::counters::CounterTable;
    use dataplane::bridge::fdb::Fdb;
    use dataplane::config::{
        DomainConf, Net4, PortConf, PortMode, PortRole, Security, Snapshot, UPLINK_DOMAIN,
        UplinkConf,
    };
    use dataplane::ids::{DomainId, Generation, PortId, VlanId};
    use dataplane::nat::{DnatRule, DnatRules, Nat};
    use dataplane::pipeline::{Context, Local, process};
    use dataplane::port::gso::Segmenter;
    use dataplane::port::{Batch, MemoryPort, Port, VnetHdr, coalesce};
    use dataplane::uplink::packet::Neighbours;
    use dataplane::wire::MacAddr;
    use std::net::Ipv4Addr;

    /// The uplink's own address.
    pub const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    /// Ports frames may come in on (tag & 7 picks one).
    pub const IN_PORTS: [u16; 8] = [2, 3, 4, 5, 6, 7, 1, 2];
    const FRAME_CAP: usize = 9216;

    fn domain(name: &str, vlan: Option<u16>, third: u8, icc: bool) -> Option<DomainConf> {
        let gw = Ipv4Addr::new(10, third, 0, 1);
        Some(DomainConf {
            name: name.into(),
            vlan: vlan.and_then(VlanId::new),
            gateway_mac: MacAddr::from_ipv4(gw),
            v4: Some(Net4::of(gw, 24)),
            v6: None,
            icc,
            egress: true,
            members: vec![],
            owners: vec![],
            listeners: vec![],
        })
    }

    fn port(
        name: &str,
        role: PortRole,
        mode: PortMode,
        security: Option<Security>,
    ) -> Option<PortConf> {
        Some(PortConf {
            name: name.into(),
            generation: Generation(0),
            role,
            mode,
            security,
            mac_limit: 64,
            kernel: false,
            limits: Default::default(),
        })
    }

    fn access(name: &str, domain: u16) -> Option<PortConf> {
        port(
            name,
            PortRole::Container,
            PortMode::Access {
                domain: DomainId(domain),
            },
            None,
        )
    }

    pub fn snapshot() -> Snapshot {
        let c2 = Ipv4Addr::new(10, 1, 0, 2);
        let secure = Security {
            mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 1, 0, 3)),
            ip: Some(Ipv4Addr::new(10, 1, 0, 3)),
            ip6: Some(std::net::Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3)),
        };
        let mut snap = Snapshot {
            domains: vec![
                domain("a", Some(10), 1, true),
                domain("b", Some(20), 2, true),
                domain("c", None, 3, false),
            ],
            ports: vec![
                port(
                    "gateway",
                    PortRole::Gateway,
                    PortMode::Access {
                        domain: DomainId(0),
                    },
                    None,
                ),
                port(
                    "uplink",
                    PortRole::Uplink,
                    PortMode::Access {
                        domain: UPLINK_DOMAIN,
                    },
                    None,
                ),
                access("p2", 0),
                port(
                    "p3",
                    PortRole::Container,
                    PortMode::Access {
                        domain: DomainId(0),
                    },
                    Some(secure),
                ),
                access("p4", 1),
                port(
                    "t5",
                    PortRole::Container,
                    PortMode::Trunk {
                        native: Some(DomainId(0)),
                        vlans: VlanSet::from_ids([10, 20]),
                    },
                    None,
                ),
                access("p6", 2),
                access("p7", 2),
            ],
            ..Default::default()
        };
        let rule = DnatRule {
            proto: dataplane::wire::IpProtocol::Tcp,
            ext_port: 8080,
            domain: 0,
            ip: c2,
            port: 80,
        };
        snap.uplink = Some(UplinkConf {
            ext_ip: EXT,
            ext_mac: MacAddr::from_ipv4(EXT),
            subnet: Ipv4Addr::new(198, 51, 100, 0),
            prefix_len: 24,
            next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
            mtu: 1500,
            rules: DnatRules::new(vec![rule]),
            v6: None,
            hosts: vec![(DomainId(0), c2, MacAddr::from_ipv4(c2))],
        });
        snap.rebuild();
        snap
    }

    /// The switch, its tables and one memory port per slot.
    pub struct Rig {
        snap: Snapshot,
        fdb: Fdb,
        counters: CounterTable,
        nat: Nat,
        neigh: Neighbours,
        ports: Vec<MemoryPort>,
        local: Local,
        seg: Segmenter,
        pub batch: Batch,
        pub now: u32,
    }

    thread_local! {
        /// The batch and ports of the last rig, reused (allocating their buffers costs
        /// more than a run). Both are empty between runs.
        static SPARE: std::cell::Cell<Option<(Batch, Vec<MemoryPort>)>> = const { std::cell::Cell::new(None) };
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let mut b = std::mem::replace(&mut self.batch, Batch::new(0, 0));
            b.clear();
            let mut ports = std::mem::take(&mut self.ports);
            for p in &mut ports {
                p.take_sent();
            }
            SPARE.set(Some((b, ports)));
        }
    }

    impl Default for Rig {
        fn default() -> Self {
            Rig::new()
        }
    }

    impl Rig {
        pub fn new() -> Rig {
            let snap = snapshot();
            let neigh = Neighbours::default();
            neigh.set_next_hop(Some(MacAddr([0x02, 0, 0, 0, 0, 0x01])));
            let (batch, ports) = SPARE.take().unwrap_or_else(|| {
                let ports = (0..snap.ports.len())
                    .map(|i| MemoryPort::new(format!("m{i}")))
                    .collect();
                (Batch::new(64, FRAME_CAP), ports)
            });
            Rig {
                snap,
                fdb: Fdb::new(256),
                counters: CounterTable::default(),
                nat: Nat::new(256),
                neigh,
                ports,
                local: Local::default(),
                seg: Segmenter::new(),
                batch,
                now: 1,
            }
        }

        /// Adds a frame to the pending batch (`vnet`: its offload header). False when
        /// the batch is full or the frame too long.
        pub fn push(&mut self, bytes: &[u8], vnet: VnetHdr) -> bool {
            if !self.batch.push(bytes, 0) {
                return false;
            }
            if let Some(f) = self.batch.frames_mut().last_mut() {
                f.vnet = vnet;
            }
            true
        }

        /// Runs the pending batch in on `port`, sends what the pipeline selected to
        /// the memory ports, and cuts every selected frame as a port without offloads
        /// would. Returns the frames each port sent.
        pub fn run(&mut self, port: u16) -> Vec<Vec<Vec<u8>>> {
            let ctx = Context {
                snap: &self.snap,
                fdb: &self.fdb,
                counters: &self.counters,
                now: self.now,
                nat: Some(&self.nat),
                neigh: Some(&self.neigh),
                // A gateway ring always with room and the default share: the share's
                // arithmetic runs, cutting only what a flood past it would lose.
                service_room: dataplane::port::ring::RING_SLOTS,
                kernel_pairs: None,
            };
            process(&ctx, PortId(port), &mut self.batch, &mut self.local);
            let out = &mut self.local.egress;
            for &p in out.touched() {
                let sel = out.queue(p);
                if let Some(mp) = self.ports.get_mut(p.index()) {
                    let _ = mp.send(&self.batch, sel);
                }
                for s in sel {
                    if let Some(f) = self.batch.get(usize::from(s.idx)) {
                        let _ = coalesce::candidate(f.data(), &f.vnet);
                        let _ = self
                            .seg
                            .segment(f.data(), &f.vnet, |h, b| h.len() + b.len() < usize::MAX);
                    }
                }
            }
            out.clear();
            self.batch.clear();
            self.ports.iter_mut().map(|p| p.take_sent()).collect()
        }
    }
}
