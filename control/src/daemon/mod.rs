//! The daemon: owns the state, the dataplane threads and the ports, and applies control
//! requests.
//!
//! Every request is validated against the state before anything changes; the new state
//! is saved (atomically) before the dataplane is touched, and a failure on the way
//! undoes what was done. Configuration reaches the workers as a new snapshot.

mod limits;
mod server;
mod view;

pub use server::{bind, serve};

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dataplane::bridge::{DropReason, Fdb, VlanSet};
use dataplane::config::{
    DomainConf, FIRST_PORT, PortConf, PortMode, PortRole, SERVICE_PORT, Security, Snapshot,
    UPLINK_DOMAIN, UPLINK_PORT, UplinkConf,
};
use dataplane::runtime::{Runtime, RuntimeConfig};
use dataplane::service::Gateway;
use dataplane::uplink::socket::{PublishTarget, PublishedSocket};
use serde_json::{Value, json};

use crate::api::{AttachReq, Request, Response, UplinkReq};
use crate::backend::{Backend, Handles, IfConfig};
use crate::net::Ipv4Net;
use crate::state::{
    Container, Endpoint, EndpointSpec, PersistError, Published, Sandbox, State, StateError,
    parse_trunk,
};

/// How the daemon was started.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub workers: usize,
    pub upstream_dns: Vec<SocketAddr>,
    pub bip: Option<Ipv4Net>,
    pub default_mtu: Option<u16>,
    /// TAP offloads (vnet headers, TSO/USO, checksum).
    pub offload: bool,
    pub busy_poll: bool,
    /// Seconds a learned MAC stays without traffic.
    pub fdb_aging: u32,
    /// MACs one container port may have learned at once.
    pub mac_limit: u32,
    /// MACs in the whole FDB.
    pub fdb_limit: u32,
    /// Connections in the packet uplink's NAT table.
    pub max_flows: usize,
    /// The default `bridge` network's GATEWAY:PORT reaches the host's loopback.
    pub bridge_host_loopback: bool,
    /// What the socket uplink lets containers hold, and its timeouts.
    pub uplink: dataplane::uplink::quota::UplinkLimits,
    /// Connections one container may hold there (0: the default share).
    pub flows_per_container: usize,
    /// ICMP errors the gateway sends one container per second.
    pub icmp_errors_per_sec: u32,
    /// Frames a second one port may hand the gateway (per worker).
    pub gateway_share: u32,
}

impl DaemonConfig {
    /// The defaults `vswitch daemon` starts with.
    pub fn new(socket: PathBuf, state_dir: PathBuf) -> DaemonConfig {
        DaemonConfig {
            socket,
            state_dir,
            workers: 1,
            upstream_dns: Vec::new(),
            bip: None,
            default_mtu: None,
            offload: true,
            busy_poll: false,
            fdb_aging: dataplane::config::DEFAULT_AGING_SECS,
            mac_limit: dataplane::bridge::fdb::DEFAULT_PORT_LIMIT,
            fdb_limit: dataplane::bridge::fdb::DEFAULT_TOTAL_LIMIT,
            max_flows: dataplane::runtime::DEFAULT_MAX_FLOWS,
            bridge_host_loopback: false,
            uplink: Default::default(),
            flows_per_container: 0,
            icmp_errors_per_sec: dataplane::gateway::icmp::DEFAULT_ERRORS_PER_SEC,
            gateway_share: dataplane::pipeline::DEFAULT_GATEWAY_SHARE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("{0}")]
    Backend(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Runtime(#[from] dataplane::runtime::RuntimeError),
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    #[error("{0}")]
    Refused(String),
    #[error("control socket {0}: {1}")]
    Socket(PathBuf, std::io::Error),
    #[error("state directory {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
}

/// A port the daemon runs.
#[derive(Debug, Clone)]
struct PortRt {
    slot: u16,
    container: String,
    network: String,
    /// The namespace the daemon created the TAP in (deleted on detach).
    netns: Option<PathBuf>,
    ifname: String,
}

/// The most port slots (the FDB's limit).
const MAX_SLOTS: usize = dataplane::bridge::fdb::MAX_PORT_SLOTS;

pub struct Daemon {
    cfg: DaemonConfig,
    state: State,
    rt: Runtime<Gateway>,
    backend: Box<dyn Backend>,
    /// Port name -> runtime facts.
    ports: BTreeMap<String, PortRt>,
    /// Generation per slot (bumped on reuse).
    gens: Vec<u16>,
    /// Containers that live as long as a control connection (`vswitch run`).
    owners: HashMap<String, u64>,
    /// Run containers from before a restart, waiting for their process to come back.
    awaiting: HashMap<String, std::time::Instant>,
    /// Containers whose ports were not restored at start, with the reason (an `attach
    /// --pid` whose pid now names another process). They keep their addresses until
    /// detached.
    unrestored: BTreeMap<String, String>,
    /// Where DNS queries for other names go.
    upstreams: Vec<SocketAddr>,
    /// The packet uplink's port, when one is open: the namespace its TAP was created in.
    uplink_port: Option<Option<PathBuf>>,
}

/// The TAP a packet uplink gets in the outside namespace (`uplink set --netns`).
pub const UPLINK_IFNAME: &str = "vswitch0";

/// How long a `vswitch run` container from before a restart is kept for its process to
/// re-attach.
pub const REATTACH_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Test only: with `VSWITCH_TEST_PANIC=service` in the daemon's environment, `network
/// create` of [`TEST_PANIC_NETWORK`] makes the service thread panic (how the tests
/// prove that a panic ends the process). Without the variable the name is ordinary.
pub const TEST_PANIC_ENV: &str = "VSWITCH_TEST_PANIC";
pub const TEST_PANIC_NETWORK: &str = "vswitch-test-panic";

fn is_test_panic(name: &str) -> bool {
    name == TEST_PANIC_NETWORK && std::env::var(TEST_PANIC_ENV).is_ok_and(|v| v == "service")
}

impl Daemon {
    /// Loads (or creates) the state and starts the dataplane with the ports it lists.
    pub fn start(cfg: DaemonConfig, backend: Box<dyn Backend>) -> Result<Daemon, DaemonError> {
        if !cfg.state_dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&cfg.state_dir)
                .map_err(|e| DaemonError::StateDir(cfg.state_dir.clone(), e))?;
        }
        let loaded = State::load_or_last_good(&cfg.state_dir)?;
        if let Some(why) = &loaded.refused {
            eprintln!(
                "vswitch: {why}; starting from the last good state {} (the refused file is kept as {})",
                cfg.state_dir.join(crate::state::GOOD_FILE).display(),
                cfg.state_dir.join(crate::state::REFUSED_FILE).display()
            );
        }
        let mut state = match loaded.state {
            Some(mut s) => {
                s.ensure_default(cfg.bip, cfg.default_mtu)?;
                s
            }
            None => State::new(cfg.bip, cfg.default_mtu)?,
        };
        state.set_default_host_loopback(cfg.bridge_host_loopback);
        state.save(&cfg.state_dir)?;
        let rcfg = RuntimeConfig {
            workers: cfg.workers.max(1),
            frame_cap: if cfg.offload {
                dataplane::port::SUPER_FRAME_CAP
            } else {
                dataplane::port::STD_FRAME_CAP
            },
            busy_poll: cfg.busy_poll,
            max_flows: cfg.max_flows,
            flows_per_container: cfg.flows_per_container,
            gateway_share: cfg.gateway_share,
        };
        let rt = Runtime::start(
            rcfg,
            Snapshot::default(),
            Arc::new(Fdb::new(cfg.fdb_limit)),
            {
                let mut g = Gateway::with_limits(cfg.uplink);
                g.set_icmp_error_rate(cfg.icmp_errors_per_sec);
                g
            },
        )?;
        let mut d = Daemon {
            cfg,
            state,
            rt,
            backend,
            ports: BTreeMap::new(),
            gens: vec![0; MAX_SLOTS],
            owners: HashMap::new(),
            awaiting: HashMap::new(),
            unrestored: BTreeMap::new(),
            upstreams: Vec::new(),
            uplink_port: None,
        };
        {
            let (nat, neigh) = (d.rt.nat.clone(), d.rt.neigh.clone());
            d.rt.service_do(move |g, _| g.set_packet_state(nat, neigh));
        }
        d.upstreams = if d.cfg.upstream_dns.is_empty() {
            std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| dataplane::dns::parse_resolv_conf(&t))
                .unwrap_or_default()
        } else {
            d.cfg.upstream_dns.clone()
        };
        d.restore();
        if let Err(e) = d.open_uplink() {
            eprintln!("vswitch: packet uplink not restored: {e}");
        }
        d.apply();
        Ok(d)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.cfg
    }

    /// Re-opens the ports of every container in the state (after a restart).
    fn restore(&mut self) {
        let containers: Vec<Container> = self.state.containers.values().cloned().collect();
        for c in containers {
            if let Sandbox::Run { .. } = c.sandbox {
                self.awaiting
                    .insert(c.name.clone(), std::time::Instant::now() + REATTACH_GRACE);
                continue;
            }
            if let Some(why) = Self::wrong_process(&c.sandbox) {
                eprintln!(
                    "vswitch: container {} not restored: {why}; detach it and attach the right process",
                    c.name
                );
                self.unrestored.insert(c.name.clone(), why);
                continue;
            }
            for i in 0..c.endpoints.len() {
                if let Err(e) = self.open_endpoint(&c, i, true, None) {
                    eprintln!("vswitch: port {} not restored: {e}", c.port_name(i));
                }
            }
            self.restore_published(&c);
        }
    }

    /// Why an `attach --pid` container's pid no longer names the process it was
    /// attached with (another process took the pid, or it changed namespace).
    fn wrong_process(sandbox: &Sandbox) -> Option<String> {
        match sandbox {
            Sandbox::Pid { pid, identity } => crate::procid::mismatch(*pid, *identity),
            _ => None,
        }
    }

    /// Binds a restored container's published ports again (the same host ports). With a
    /// packet uplink, published ports are DNAT rules and bind nothing.
    fn restore_published(&self, c: &Container) {
        if self.packet_mode() {
            return;
        }
        let reqs: Vec<crate::publish::PortReq> = c
            .published
            .iter()
            .map(|p| crate::publish::PortReq {
                proto: p.proto,
                host_ip: p.host_ip,
                host_port: Some(p.host_port),
                container_port: p.container_port,
            })
            .collect();
        for r in reqs {
            match Self::bind_published(&[r]) {
                Ok(b) => self.start_published(c, b),
                Err(e) => eprintln!("vswitch: published port of {} not restored: {e}", c.name),
            }
        }
    }

    fn free_slot(&self) -> Option<u16> {
        let used: std::collections::HashSet<u16> = self.ports.values().map(|p| p.slot).collect();
        (FIRST_PORT..MAX_SLOTS as u16).find(|s| !used.contains(s))
    }

    fn namespace_of(sandbox: &Sandbox) -> Option<PathBuf> {
        match sandbox {
            Sandbox::Netns { path } => Some(PathBuf::from(path)),
            Sandbox::Pid { pid, .. } | Sandbox::Run { pid } => {
                Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
            }
            Sandbox::Tap { .. } => None,
        }
    }

    fn if_config(&self, c: &Container, i: usize) -> Option<IfConfig> {
        let e = c.endpoints.get(i)?;
        let n = self.state.networks.get(&e.network)?;
        Some(IfConfig {
            ifname: e.ifname.clone(),
            mac: e.mac,
            mtu: n.mtu,
            addr: e.ip,
            prefix: n.subnet.prefix,
            gateway: (i == 0 && !n.internal).then_some(n.gateway),
        })
    }

    /// Opens endpoint `i` of `c` (a TAP by name, in a namespace, or a passed descriptor)
    /// and installs it in the dataplane. Nothing is left behind on failure.
    fn open_endpoint(
        &mut self,
        c: &Container,
        i: usize,
        reopen: bool,
        fd: Option<OwnedFd>,
    ) -> Result<(), DaemonError> {
        let e = c.endpoints.get(i).ok_or_else(|| {
            DaemonError::Refused(format!("container {:?} has no endpoint {i}", c.name))
        })?;
        let slot = self.free_slot().ok_or_else(|| {
            DaemonError::Refused(format!("no free port slot (at most {MAX_SLOTS} ports)"))
        })?;
        let workers = self.rt.workers();
        let cfg = self
            .if_config(c, i)
            .ok_or_else(|| DaemonError::Refused(format!("network {:?} not found", e.network)))?;
        let mut netns = None;
        let handles: Handles = match (&c.sandbox, fd) {
            (_, Some(fd)) => self.backend.adopt_fd(fd, workers)?,
            (Sandbox::Tap { ifname }, None) => self.backend.open_tap(ifname, workers)?,
            (Sandbox::Run { .. }, None) => {
                return Err(DaemonError::Refused(format!(
                    "container {:?} is a `vswitch run` container: its process hands over its interfaces",
                    c.name
                )));
            }
            (sb, None) => {
                let ns = Self::namespace_of(sb)
                    .ok_or_else(|| DaemonError::Refused("no namespace".into()))?;
                let h = self.backend.create_in_netns(&ns, &cfg, workers, reopen)?;
                netns = Some(ns);
                h
            }
        };
        let name = c.port_name(i);
        if let Some(g) = self.gens.get_mut(usize::from(slot)) {
            *g = g.wrapping_add(1);
        }
        self.ports.insert(
            name,
            PortRt {
                slot,
                container: c.name.clone(),
                network: e.network.clone(),
                netns,
                ifname: e.ifname.clone(),
            },
        );
        // The port's configuration first, then its frames.
        self.apply_with(c);
        self.rt.add_port(slot, handles);
        Ok(())
    }

    /// Takes a port out of the dataplane; deletes the TAP when the daemon made it.
    fn close_port(&mut self, name: &str, delete: bool) {
        let Some(p) = self.ports.remove(name) else {
            return;
        };
        self.apply();
        self.rt.remove_port(p.slot);
        self.rt.fdb.flush(None, Some(p.slot));
        if delete && let Some(ns) = &p.netns {
            let _ = self.backend.delete_in_netns(ns, &p.ifname);
        }
    }

    fn save(&self, s: &State) -> Result<(), DaemonError> {
        s.save(&self.cfg.state_dir)?;
        Ok(())
    }

    /// Rebuilds the snapshot (and the gateway's tables) from the state and ports.
    fn apply(&mut self) {
        let snap = self.snapshot(None);
        self.rt.publish(snap);
        self.push_service();
    }

    /// As `apply`, with a container not yet in the state counted in.
    fn apply_with(&mut self, extra: &Container) {
        let snap = self.snapshot(Some(extra));
        self.rt.publish(snap);
        self.push_service();
    }

    fn snapshot(&self, extra: Option<&Container>) -> Snapshot {
        let mut s = Snapshot {
            aging_secs: self.cfg.fdb_aging,
            ..Snapshot::default()
        };
        s.version = s.version.wrapping_add(1);
        let max_domain = self
            .state
            .networks
            .values()
            .map(|n| usize::from(n.domain) + 1)
            .max()
            .unwrap_or(0);
        s.domains = vec![None; max_domain];
        for n in self.state.networks.values() {
            if let Some(d) = s.domains.get_mut(usize::from(n.domain)) {
                *d = Some(DomainConf {
                    name: n.name.clone(),
                    vlan: n.vlan,
                    gateway_mac: n.gateway_mac(),
                    gateway_ip: n.gateway,
                    subnet: n.subnet.network().addr,
                    prefix_len: n.subnet.prefix,
                    icc: n.icc,
                    egress: n.masquerade && !n.internal,
                    members: Vec::new(),
                });
            }
        }
        let max_slot = self
            .ports
            .values()
            .map(|p| usize::from(p.slot) + 1)
            .max()
            .unwrap_or(0);
        s.ports = vec![None; max_slot.max(usize::from(FIRST_PORT))];
        if let Some(p) = s.ports.get_mut(usize::from(SERVICE_PORT)) {
            *p = Some(PortConf {
                name: "gateway".into(),
                gen_: 0,
                role: PortRole::Gateway,
                mode: PortMode::Access { domain: 0 },
                security: None,
                mac_limit: 0,
            });
        }
        for (name, p) in &self.ports {
            let c = self
                .state
                .containers
                .get(&p.container)
                .or(extra.filter(|c| c.name == p.container));
            let Some(c) = c else { continue };
            let Some(e) = c.endpoint(&p.network) else {
                continue;
            };
            let Some(n) = self.state.networks.get(&e.network) else {
                continue;
            };
            let mode = if e.trunk.is_empty() {
                PortMode::Access { domain: n.domain }
            } else {
                PortMode::Trunk {
                    native: Some(n.domain),
                    vlans: VlanSet::from_ids(e.trunk.iter().copied()),
                }
            };
            if let Some(slot) = s.ports.get_mut(usize::from(p.slot)) {
                *slot = Some(PortConf {
                    name: name.clone(),
                    gen_: self.gens.get(usize::from(p.slot)).copied().unwrap_or(0),
                    role: PortRole::Container,
                    mode,
                    security: e.port_security.then_some(Security {
                        mac: e.mac,
                        ip: Some(e.ip),
                    }),
                    mac_limit: self.cfg.mac_limit,
                });
            }
        }
        if self.uplink_port.is_some()
            && let crate::state::Uplink::Packet {
                address,
                next_hop,
                mtu,
                ..
            } = &self.state.uplink
        {
            if let Some(slot) = s.ports.get_mut(usize::from(UPLINK_PORT)) {
                *slot = Some(PortConf {
                    name: "uplink".into(),
                    gen_: 0,
                    role: PortRole::Uplink,
                    mode: PortMode::Access {
                        domain: UPLINK_DOMAIN,
                    },
                    security: None,
                    mac_limit: 0,
                });
            }
            let mut hosts: Vec<(u16, Ipv4Addr, dataplane::wire::MacAddr)> = Vec::new();
            let mut rules = Vec::new();
            for c in self.state.containers.values().chain(extra) {
                for e in &c.endpoints {
                    if let Some(n) = self.state.networks.get(&e.network) {
                        hosts.push((n.domain, e.ip, e.mac));
                    }
                }
                if let (Some(e), true) = (c.endpoints.first(), !c.published.is_empty())
                    && let Some(n) = self.state.networks.get(&e.network)
                {
                    for p in &c.published {
                        rules.push(dataplane::nat::DnatRule {
                            proto: match p.proto {
                                crate::state::Proto::Tcp => dataplane::wire::IpProtocol::Tcp,
                                crate::state::Proto::Udp => dataplane::wire::IpProtocol::Udp,
                            },
                            ext_port: p.host_port,
                            domain: n.domain,
                            ip: e.ip,
                            port: p.container_port,
                        });
                    }
                }
            }
            hosts.sort_by_key(|h| (h.0, h.1));
            hosts.dedup_by_key(|h| (h.0, h.1));
            s.uplink = Some(UplinkConf {
                ext_ip: address.addr,
                ext_mac: dataplane::wire::MacAddr::from_ipv4(address.addr),
                subnet: address.network().addr,
                prefix_len: address.prefix,
                next_hop: *next_hop,
                mtu: mtu.unwrap_or(crate::state::DEFAULT_UPLINK_MTU),
                rules: dataplane::nat::DnatRules::new(rules),
                hosts,
            });
        }
        s.rebuild();
        s
    }

    fn packet_mode(&self) -> bool {
        matches!(self.state.uplink, crate::state::Uplink::Packet { .. })
    }

    /// Opens the packet uplink's port as the state says (nothing for other modes).
    fn open_uplink(&mut self) -> Result<(), DaemonError> {
        let crate::state::Uplink::Packet {
            tap, netns, mtu, ..
        } = self.state.uplink.clone()
        else {
            return Ok(());
        };
        let mtu = mtu.unwrap_or(crate::state::DEFAULT_UPLINK_MTU);
        let workers = self.rt.workers();
        let (handles, ns) = match (tap, netns) {
            (Some(t), None) => (self.backend.open_tap(&t, workers)?, None),
            (None, Some(n)) => {
                let ns = PathBuf::from(n);
                (
                    self.backend
                        .create_plain_in_netns(&ns, UPLINK_IFNAME, mtu, workers)?,
                    Some(ns),
                )
            }
            _ => {
                return Err(DaemonError::Refused(
                    "give exactly one of --tap or --netns".into(),
                ));
            }
        };
        self.uplink_port = Some(ns);
        self.apply();
        self.rt.add_port(UPLINK_PORT, handles);
        Ok(())
    }

    /// Closes the packet uplink's port and forgets its flows and neighbours.
    fn close_uplink(&mut self) {
        let Some(ns) = self.uplink_port.take() else {
            return;
        };
        self.apply();
        self.rt.remove_port(UPLINK_PORT);
        if let Some(ns) = ns {
            let _ = self.backend.delete_in_netns(&ns, UPLINK_IFNAME);
        }
        self.rt.neigh.clear();
        self.rt.nat.table.flush();
    }

    /// Gives the service thread the gateway's view of the networks.
    fn push_service(&mut self) {
        let cfg = self.service_config();
        self.rt.service_do(move |g, _| g.configure(cfg));
    }

    fn service_config(&self) -> dataplane::service::ServiceConfig {
        use crate::state::{DnsMode, Uplink};
        use dataplane::service::{DnsService, NetService, ServiceConfig, UplinkMode};
        let mut c = ServiceConfig {
            uplink: match self.state.uplink {
                Uplink::Socket => UplinkMode::Socket,
                Uplink::None => UplinkMode::None,
                Uplink::Packet { .. } => UplinkMode::Packet,
            },
            ..Default::default()
        };
        for n in self.state.networks.values() {
            let i = usize::from(n.domain);
            if c.nets.len() <= i {
                c.nets.resize(i + 1, None);
            }
            if let Some(slot) = c.nets.get_mut(i) {
                *slot = Some(NetService {
                    name: n.name.clone(),
                    gateway_ip: n.gateway,
                    gateway_mac: n.gateway_mac(),
                    subnet: n.subnet.network().addr,
                    prefix_len: n.subnet.prefix,
                    mtu: n.mtu,
                    internal: n.internal,
                    masquerade: n.masquerade,
                    host_loopback: n.host_loopback,
                    dns: match n.dns {
                        DnsMode::Names => DnsService::Names,
                        DnsMode::ForwardOnly => DnsService::ForwardOnly,
                        DnsMode::Off => DnsService::Off,
                    },
                });
            }
        }
        c.upstreams = self.upstreams.clone();
        if let (
            Some(_),
            crate::state::Uplink::Packet {
                address,
                next_hop,
                mtu,
                ..
            },
        ) = (&self.uplink_port, &self.state.uplink)
        {
            c.packet = Some(dataplane::service::PacketUplink {
                ext_ip: address.addr,
                ext_mac: dataplane::wire::MacAddr::from_ipv4(address.addr),
                subnet: address.network().addr,
                prefix_len: address.prefix,
                next_hop: *next_hop,
                mtu: mtu.unwrap_or(crate::state::DEFAULT_UPLINK_MTU),
            });
        }
        for n in self.state.networks.values() {
            let i = usize::from(n.domain);
            if c.names.len() <= i {
                c.names.resize(i + 1, None);
            }
            if n.dns == DnsMode::Off {
                continue;
            }
            let mut b = dataplane::dns::Names::builder();
            b.gateway(n.gateway)
                .forward(!n.internal)
                .forward_only(n.dns == DnsMode::ForwardOnly);
            let _ = b.search_domain(&n.name);
            if n.dns == DnsMode::Names {
                for (ct, e) in self.state.endpoints_on(&n.name) {
                    let _ = b.container(&ct.name, e.ip);
                    for a in &e.aliases {
                        let _ = b.alias(a, e.ip);
                    }
                }
            }
            if let Some(slot) = c.names.get_mut(i) {
                *slot = Some(Arc::new(b.build()));
            }
        }
        for p in self.ports.values() {
            if let (Some(ct), Some(n)) = (
                self.state.containers.get(&p.container),
                self.state.networks.get(&p.network),
            ) && let Some(e) = ct.endpoint(&p.network)
            {
                c.leases.insert((n.domain, p.slot), (e.mac, e.ip));
            }
        }
        c
    }

    // ---- requests ----------------------------------------------------------------

    /// Applies one request from connection `conn`.
    pub fn handle(&mut self, req: Request, fds: Vec<OwnedFd>, conn: u64) -> Response {
        match self.dispatch(req, fds, conn) {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e),
        }
    }

    fn dispatch(
        &mut self,
        req: Request,
        fds: Vec<OwnedFd>,
        conn: u64,
    ) -> Result<Value, DaemonError> {
        match req {
            Request::Hello => Ok(json!({
                "protocol": crate::api::PROTOCOL_VERSION,
                "version": env!("CARGO_PKG_VERSION"),
                "workers": self.rt.workers(),
                "offload": self.cfg.offload,
            })),
            Request::NetworkCreate(spec) if is_test_panic(&spec.name) => {
                self.rt.service_do(|_, _| {
                    panic!("{TEST_PANIC_ENV}=service: panicking on the service thread as asked")
                });
                Err(DaemonError::Refused(format!(
                    "{TEST_PANIC_ENV}: the service thread was told to panic"
                )))
            }
            Request::NetworkCreate(spec) => {
                let mut next = self.state.clone();
                let n = next.create_network(&spec)?.clone();
                self.save(&next)?;
                self.state = next;
                self.apply();
                Ok(view::network_inspect(&self.state, &n))
            }
            Request::NetworkLs => Ok(view::network_ls(&self.state)),
            Request::NetworkInspect { name } => {
                let n = self
                    .state
                    .networks
                    .get(&name)
                    .ok_or(StateError::NoNetwork(name))?;
                Ok(Value::Array(vec![view::network_inspect(&self.state, n)]))
            }
            Request::NetworkRm { name, force } => {
                let mut next = self.state.clone();
                let gone = next.remove_network(&name, force)?;
                self.save(&next)?;
                // Close the ports of the network's endpoints.
                let closing: Vec<String> = self
                    .ports
                    .iter()
                    .filter(|(_, p)| p.network == name)
                    .map(|(k, _)| k.clone())
                    .collect();
                self.state = next;
                for p in closing {
                    self.close_port(&p, true);
                }
                for g in &gone {
                    self.owners.remove(g);
                }
                self.apply();
                Ok(json!({"removed": name, "containers_removed": gone}))
            }
            Request::Attach(a) => self.attach(a, fds, conn),
            Request::Detach { name, network } => match network {
                Some(net) => self.disconnect(&name, &net),
                None => self.detach(&name),
            },
            Request::Connect {
                network,
                name,
                ip,
                aliases,
            } => self.connect(&network, &name, ip, aliases),
            Request::Disconnect { network, name } => self.disconnect(&name, &network),
            Request::PortLs => Ok(self.port_ls()),
            Request::ContainerLs => Ok(view::containers(&self.state, |p| {
                self.ports.contains_key(p)
            })),
            Request::FdbShow { network } => self.fdb_show(network.as_deref()),
            Request::FdbFlush { network } => {
                let domain = match &network {
                    Some(n) => Some(
                        self.state
                            .networks
                            .get(n)
                            .ok_or_else(|| StateError::NoNetwork(n.clone()))?
                            .domain,
                    ),
                    None => None,
                };
                let n = self.rt.fdb.flush(domain, None);
                Ok(json!({"flushed": n}))
            }
            Request::Stats => Ok(self.stats()),
            Request::Sandbox { name } => {
                let c = self
                    .state
                    .containers
                    .get(&name)
                    .ok_or(StateError::NoContainer(name))?;
                Ok(view::sandbox(&self.state, c))
            }
            Request::UplinkShow => {
                let mut u = self.state.uplink.clone();
                if let crate::state::Uplink::Packet { mtu, .. } = &mut u {
                    mtu.get_or_insert(crate::state::DEFAULT_UPLINK_MTU);
                }
                Ok(serde_json::to_value(&u).unwrap_or(Value::Null))
            }
            Request::UplinkSet(u) => self.uplink_set(u),
            Request::Publish { name, specs } => self.publish(&name, &specs),
            Request::Unpublish { name, specs } => self.unpublish(&name, &specs),
            Request::ConntrackLs => {
                let flows = self.rt.service_call(|g, _| g.uplink().flows())?;
                let mut v: Vec<Value> = flows
                    .into_iter()
                    .map(|f| {
                        json!({
                            "protocol": f.proto,
                            "inside": f.inside.to_string(),
                            "outside": f.outside.to_string(),
                            "state": f.state,
                            "uplink": "socket",
                        })
                    })
                    .collect();
                let now = self.rt.epoch.elapsed().as_secs() as u32;
                for f in self.rt.nat.table.list(now) {
                    let proto = match f.proto {
                        dataplane::wire::IpProtocol::Tcp => "tcp",
                        dataplane::wire::IpProtocol::Udp => "udp",
                        _ => "icmp",
                    };
                    v.push(json!({
                        "protocol": proto,
                        "inside": format!("{}:{}", f.inside.src, f.inside.sport),
                        "outside": format!("{}:{}", f.outside.dst, f.outside.dport),
                        "remote": format!("{}:{}", f.inside.dst, f.inside.dport),
                        "state": f.state,
                        "expires_in": f.expires_in,
                        "uplink": "packet",
                    }));
                }
                Ok(Value::Array(v))
            }
            Request::ConntrackFlush => {
                let n = self
                    .rt
                    .service_call(|g, ctx| g.flush_uplink_flows(ctx.registry))?;
                let m = self.rt.nat.table.flush();
                Ok(json!({"flushed": n + m}))
            }
            Request::Capture { port, .. } => Err(DaemonError::Refused(format!(
                "capture of {port:?} must be the only request on its connection"
            ))),
        }
    }

    /// What an `attach` request asks of its endpoint, its arguments parsed and checked.
    pub fn endpoint_spec(a: &AttachReq) -> Result<EndpointSpec, DaemonError> {
        let mac = match &a.mac {
            Some(m) => Some(
                m.parse()
                    .map_err(|e: dataplane::wire::ethernet::MacParseError| {
                        DaemonError::Refused(e.to_string())
                    })?,
            ),
            None => None,
        };
        let trunk = match &a.trunk {
            Some(t) => parse_trunk(t)?,
            None => Vec::new(),
        };
        Ok(EndpointSpec {
            network: a.network.clone(),
            ip: a.ip,
            mac,
            aliases: a.aliases.clone(),
            trunk,
            port_security: !a.no_port_security,
            ifname: a.ifname.clone(),
        })
    }

    /// The container an `attach` would add, checked against the state (nothing changed).
    fn new_container(&self, a: &AttachReq, sandbox: &Sandbox) -> Result<Container, DaemonError> {
        let mut spec = Self::endpoint_spec(a)?;
        // An existing TAP keeps its own MAC unless --mac says otherwise: what it sends
        // carries that address, and port security must expect it.
        if let Sandbox::Tap { ifname } = sandbox
            && spec.mac.is_none()
        {
            spec.mac = self
                .backend
                .tap_mac(ifname)
                .filter(|m| m.is_unicast() && !m.is_zero());
        }
        let mut c = self.state.check_attach(&a.name, sandbox, &spec)?;
        if let Some(id) = &a.id {
            c.id = valid_engine_id(id)?;
        }
        c.owner = a.owner.as_deref().map(valid_owner).transpose()?;
        Ok(c)
    }

    fn attach(&mut self, a: AttachReq, fds: Vec<OwnedFd>, conn: u64) -> Result<Value, DaemonError> {
        let sandbox = match (&a.tap, &a.netns, a.pid, a.fd) {
            (Some(t), None, None, false) => Sandbox::Tap { ifname: t.clone() },
            (None, Some(p), None, false) => Sandbox::Netns { path: p.clone() },
            (None, None, Some(pid), false) => Sandbox::Pid {
                pid,
                identity: Some(
                    crate::procid::identity(pid)
                        .map_err(|e| DaemonError::Refused(e.to_string()))?,
                ),
            },
            (None, None, None, true) => Sandbox::Run {
                pid: a.run_pid.ok_or_else(|| {
                    DaemonError::Refused("a descriptor attach needs run_pid".into())
                })?,
            },
            _ => {
                return Err(DaemonError::Refused(
                    "give exactly one of --tap, --netns or --pid".into(),
                ));
            }
        };
        let fd = if a.fd {
            Some(fds.into_iter().next().ok_or_else(|| {
                DaemonError::Refused("the TAP descriptor did not arrive with the request".into())
            })?)
        } else {
            None
        };
        if let Sandbox::Netns { path } = &sandbox
            && !Path::new(path).exists()
        {
            return Err(DaemonError::Refused(format!(
                "network namespace {path} does not exist"
            )));
        }
        if a.reattach
            && let Some(c) = self.state.containers.get(&a.name).cloned()
            && matches!(c.sandbox, Sandbox::Run { .. })
        {
            // The run process is back after a daemon restart: give its endpoint the fd.
            self.awaiting.remove(&c.name);
            let mut c2 = c.clone();
            c2.sandbox = sandbox;
            self.open_endpoint(&c2, 0, true, fd)?;
            let mut next = self.state.clone();
            next.containers.insert(c2.name.clone(), c2.clone());
            self.save(&next)?;
            self.state = next;
            self.owners.insert(c2.name.clone(), conn);
            self.apply();
            self.restore_published(&c2);
            return Ok(view::attached(&self.state, &c2));
        }
        let c = self.new_container(&a, &sandbox)?;
        let mut next = self.state.clone();
        next.attach(c.clone());
        self.save(&next)?;
        if let Err(e) = self.open_endpoint(&c, 0, false, fd) {
            self.save(&self.state)?;
            return Err(e);
        }
        self.state = next;
        if a.fd {
            self.owners.insert(c.name.clone(), conn);
        }
        self.apply();
        if !a.publish.is_empty()
            && let Err(e) = self.publish(&c.name, &a.publish)
        {
            let _ = self.detach(&c.name);
            return Err(e);
        }
        Ok(view::attached(&self.state, &c))
    }

    fn detach(&mut self, name: &str) -> Result<Value, DaemonError> {
        let mut next = self.state.clone();
        let c = next.detach(name)?;
        self.save(&next)?;
        self.state = next;
        self.stop_published(&c.published);
        // A pid that names another process now: its interfaces are not ours to delete.
        let ours = Self::wrong_process(&c.sandbox).is_none();
        for i in 0..c.endpoints.len() {
            self.close_port(&c.port_name(i), ours);
        }
        self.owners.remove(name);
        self.awaiting.remove(name);
        self.unrestored.remove(name);
        self.apply();
        Ok(json!({"detached": name}))
    }

    fn connect(
        &mut self,
        network: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
        aliases: Vec<String>,
    ) -> Result<Value, DaemonError> {
        let spec = EndpointSpec {
            network: network.to_string(),
            ip,
            aliases,
            port_security: true,
            ..Default::default()
        };
        let e = self.state.check_connect(name, &spec)?;
        if let Some(c) = self.state.containers.get(name)
            && let Some(why) = Self::wrong_process(&c.sandbox)
        {
            return Err(DaemonError::Refused(format!(
                "container {name:?}: {why}; detach it and attach the right process"
            )));
        }
        let mut next = self.state.clone();
        next.connect(name, e.clone());
        let c = next
            .containers
            .get(name)
            .cloned()
            .ok_or_else(|| StateError::NoContainer(name.to_string()))?;
        self.save(&next)?;
        let i = c.endpoints.len() - 1;
        let old = std::mem::replace(&mut self.state, next);
        if let Err(err) = self.open_endpoint(&c, i, false, None) {
            self.state = old;
            self.save(&self.state)?;
            return Err(err);
        }
        self.apply();
        Ok(view::endpoint_json(&self.state, &c, &e, i))
    }

    fn disconnect(&mut self, name: &str, network: &str) -> Result<Value, DaemonError> {
        let c = self
            .state
            .containers
            .get(name)
            .cloned()
            .ok_or_else(|| StateError::NoContainer(name.to_string()))?;
        let i = c
            .endpoints
            .iter()
            .position(|e| e.network == network)
            .ok_or_else(|| StateError::NotConnected(name.to_string(), network.to_string()))?;
        let mut next = self.state.clone();
        next.disconnect(name, network)?;
        self.save(&next)?;
        self.state = next;
        let ours = Self::wrong_process(&c.sandbox).is_none();
        self.close_port(&c.port_name(i), ours);
        self.apply();
        Ok(json!({"disconnected": name, "network": network}))
    }

    fn uplink_set(&mut self, u: UplinkReq) -> Result<Value, DaemonError> {
        use crate::state::Uplink;
        if u.mode != "packet" && u.mtu.is_some() {
            return Err(DaemonError::Refused(
                "--mtu applies to a packet uplink (--tap/--netns with --address)".into(),
            ));
        }
        let uplink = match u.mode.as_str() {
            "socket" => Uplink::Socket,
            "none" => Uplink::None,
            "packet" => {
                let address: Ipv4Net = u
                    .address
                    .as_deref()
                    .ok_or_else(|| DaemonError::Refused("a packet uplink needs --address CIDR (vswitch's address on that segment)".into()))?
                    .parse()
                    .map_err(StateError::from)?;
                if address.prefix == 0
                    || address.prefix > 30
                    || address.addr == address.network().addr
                    || address.addr == address.broadcast()
                {
                    return Err(DaemonError::Refused(format!(
                        "{address} is not a usable address with its prefix (e.g. 198.51.100.2/24)"
                    )));
                }
                if let Some(o) = self
                    .state
                    .networks
                    .values()
                    .find(|n| n.subnet.overlaps(&address))
                {
                    return Err(StateError::Overlap(
                        address.to_string(),
                        o.name.clone(),
                        o.subnet.to_string(),
                    )
                    .into());
                }
                if let Some(h) = u.next_hop
                    && (!address.contains(h) || h == address.addr)
                {
                    return Err(DaemonError::Refused(format!(
                        "next hop {h} is not another address of {}",
                        address.network()
                    )));
                }
                // Without offloads a port's frames are at most STD_FRAME_CAP bytes.
                let top = if self.cfg.offload {
                    65520
                } else {
                    (dataplane::port::STD_FRAME_CAP - 18) as u32
                };
                let mtu = match u.mtu {
                    None => None,
                    Some(m) if (576..=top).contains(&m) => Some(m as u16),
                    Some(m) => {
                        return Err(DaemonError::Refused(format!(
                            "uplink MTU {m} is out of range: use 576 to {top}"
                        )));
                    }
                };
                match (&u.tap, &u.netns) {
                    (Some(_), None) => {}
                    (None, Some(n)) if Path::new(n).exists() => {}
                    (None, Some(n)) => {
                        return Err(DaemonError::Refused(format!(
                            "network namespace {n} does not exist"
                        )));
                    }
                    _ => {
                        return Err(DaemonError::Refused(
                            "give exactly one of --tap or --netns".into(),
                        ));
                    }
                }
                Uplink::Packet {
                    tap: u.tap,
                    netns: u.netns,
                    address,
                    next_hop: u.next_hop,
                    mtu,
                }
            }
            m => {
                return Err(DaemonError::Refused(format!(
                    "unknown uplink mode {m:?}: use socket, none, or --tap/--netns with --address"
                )));
            }
        };
        let was_packet = self.packet_mode();
        let mut next = self.state.clone();
        next.uplink = uplink;
        self.save(&next)?;
        let old = std::mem::replace(&mut self.state, next);
        self.close_uplink();
        if let Err(e) = self.open_uplink() {
            // Back to what was there.
            self.state = old;
            self.save(&self.state)?;
            let _ = self.open_uplink();
            self.apply();
            return Err(e);
        }
        self.apply();
        // Published ports: host sockets with the socket uplink, DNAT with a packet one.
        let now_packet = self.packet_mode();
        if was_packet != now_packet {
            let containers: Vec<Container> = self.state.containers.values().cloned().collect();
            for c in &containers {
                if now_packet {
                    self.stop_published(&c.published);
                } else if !self.unrestored.contains_key(&c.name) {
                    self.restore_published(c);
                }
            }
        }
        Ok(serde_json::to_value(&self.state.uplink).unwrap_or(Value::Null))
    }

    /// Binds the host side of `reqs` now, so a taken port is refused before anything
    /// changes. Returns the published entries with their sockets.
    fn bind_published(
        reqs: &[crate::publish::PortReq],
    ) -> Result<Vec<(Published, PublishedSocket)>, DaemonError> {
        use crate::state::Proto;
        let mut out = Vec::new();
        for r in reqs {
            let addr = std::net::SocketAddrV4::new(r.host_ip, r.host_port.unwrap_or(0));
            let what = |e: std::io::Error| {
                let port = r
                    .host_port
                    .map_or("an ephemeral port".to_string(), |p| format!("port {p}"));
                let why = match e.kind() {
                    std::io::ErrorKind::AddrInUse => "is already in use".to_string(),
                    std::io::ErrorKind::PermissionDenied => {
                        "needs privileges (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
                    }
                    std::io::ErrorKind::AddrNotAvailable => format!(
                        "cannot be bound: {} is not an address of this host",
                        r.host_ip
                    ),
                    _ => format!("cannot be bound: {e}"),
                };
                DaemonError::Refused(format!("host {port}/{} on {} {why}", r.proto, r.host_ip))
            };
            let (sock, local) = match r.proto {
                Proto::Tcp => {
                    let l = std::net::TcpListener::bind(addr).map_err(what)?;
                    let local = l.local_addr().map_err(what)?;
                    (PublishedSocket::Tcp(l), local)
                }
                Proto::Udp => {
                    let u = std::net::UdpSocket::bind(addr).map_err(what)?;
                    let local = u.local_addr().map_err(what)?;
                    (PublishedSocket::Udp(u), local)
                }
            };
            out.push((
                Published {
                    proto: r.proto,
                    host_ip: r.host_ip,
                    host_port: local.port(),
                    container_port: r.container_port,
                    auto: r.host_port.is_none(),
                },
                sock,
            ));
        }
        Ok(out)
    }

    /// Where a container's published ports lead: its first endpoint.
    fn publish_target(&self, c: &Container, container_port: u16) -> Option<PublishTarget> {
        let e = c.endpoints.first()?;
        let n = self.state.networks.get(&e.network)?;
        Some(PublishTarget {
            domain: n.domain,
            container: e.ip,
            port: container_port,
        })
    }

    fn start_published(&self, c: &Container, bound: Vec<(Published, PublishedSocket)>) {
        for (p, sock) in bound {
            let Some(to) = self.publish_target(c, p.container_port) else {
                continue;
            };
            self.rt.service_do(move |g, ctx| {
                if let Err(e) = g.publish(ctx.registry, sock, to) {
                    eprintln!("vswitch: cannot serve published port {}: {e}", p.host_port);
                }
            });
        }
    }

    fn stop_published(&self, list: &[Published]) {
        for p in list {
            let local = std::net::SocketAddrV4::new(p.host_ip, p.host_port);
            let tcp = p.proto == crate::state::Proto::Tcp;
            let _ = self
                .rt
                .service_call(move |g, ctx| g.unpublish(ctx.registry, local, tcp));
        }
    }

    fn publish(&mut self, name: &str, specs: &[String]) -> Result<Value, DaemonError> {
        let c = self
            .state
            .containers
            .get(name)
            .cloned()
            .ok_or_else(|| StateError::NoContainer(name.to_string()))?;
        let mut reqs = Vec::new();
        for s in specs {
            reqs.extend(crate::publish::parse(s)?);
        }
        for r in &reqs {
            if let Some(port) = r.host_port
                && let Some(other) = self.state.containers.values().find(|o| {
                    o.published.iter().any(|p| {
                        p.proto == r.proto
                            && p.host_port == port
                            && (p.host_ip == r.host_ip
                                || p.host_ip.is_unspecified()
                                || r.host_ip.is_unspecified())
                    })
                })
            {
                return Err(DaemonError::Refused(format!(
                    "host port {port}/{} is already published by {:?}",
                    r.proto, other.name
                )));
            }
        }
        if self.packet_mode() {
            // DNAT on the uplink's address: nothing to bind on the host.
            let entries = self.packet_published(&reqs)?;
            let mut next = self.state.clone();
            if let Some(nc) = next.containers.get_mut(name) {
                nc.published.extend(entries.iter().copied());
            }
            self.save(&next)?;
            self.state = next;
            self.apply();
            return Ok(Value::Array(
                entries.iter().map(view::published_json).collect(),
            ));
        }
        let bound = Self::bind_published(&reqs)?;
        let mut next = self.state.clone();
        if let Some(nc) = next.containers.get_mut(name) {
            nc.published.extend(bound.iter().map(|(p, _)| *p));
        }
        self.save(&next)?;
        self.state = next;
        let list: Vec<Value> = bound.iter().map(|(p, _)| view::published_json(p)).collect();
        self.start_published(&c, bound);
        Ok(Value::Array(list))
    }

    /// Published entries for a packet uplink: the external ports asked for, or unused
    /// ones from the ephemeral range.
    fn packet_published(
        &self,
        reqs: &[crate::publish::PortReq],
    ) -> Result<Vec<Published>, DaemonError> {
        let mut used: std::collections::HashSet<(crate::state::Proto, u16)> = self
            .state
            .containers
            .values()
            .flat_map(|c| c.published.iter().map(|p| (p.proto, p.host_port)))
            .collect();
        let mut out = Vec::new();
        for r in reqs {
            let port = match r.host_port {
                Some(p) => p,
                None => (32768..=60999u16)
                    .find(|p| !used.contains(&(r.proto, *p)))
                    .ok_or_else(|| DaemonError::Refused("no unused external port left".into()))?,
            };
            used.insert((r.proto, port));
            out.push(Published {
                proto: r.proto,
                host_ip: r.host_ip,
                host_port: port,
                container_port: r.container_port,
                auto: r.host_port.is_none(),
            });
        }
        Ok(out)
    }

    fn unpublish(&mut self, name: &str, specs: &[String]) -> Result<Value, DaemonError> {
        let c = self
            .state
            .containers
            .get(name)
            .cloned()
            .ok_or_else(|| StateError::NoContainer(name.to_string()))?;
        let mut reqs = Vec::new();
        for s in specs {
            reqs.extend(crate::publish::parse(s)?);
        }
        let (gone, kept): (Vec<Published>, Vec<Published>) = c.published.iter().partition(|p| {
            reqs.is_empty()
                || reqs.iter().any(|r| {
                    r.proto == p.proto
                        && r.container_port == p.container_port
                        && r.host_port.is_none_or(|h| h == p.host_port)
                        && (r.host_ip.is_unspecified() || r.host_ip == p.host_ip)
                })
        });
        if gone.is_empty() {
            return Err(DaemonError::Refused(format!(
                "container {name:?} publishes nothing matching {}",
                specs.join(" ")
            )));
        }
        let mut next = self.state.clone();
        if let Some(nc) = next.containers.get_mut(name) {
            nc.published = kept;
        }
        self.save(&next)?;
        self.state = next;
        if self.packet_mode() {
            self.apply();
        } else {
            self.stop_published(&gone);
        }
        Ok(Value::Array(
            gone.iter().map(view::published_json).collect(),
        ))
    }

    fn port_ls(&self) -> Value {
        let mut v = Vec::new();
        for (name, p) in &self.ports {
            let Some(c) = self.state.containers.get(&p.container) else {
                continue;
            };
            let Some(e) = c.endpoint(&p.network) else {
                continue;
            };
            v.push(view::port_json(name, p.slot, c, e));
        }
        for (name, why) in &self.unrestored {
            let Some(c) = self.state.containers.get(name) else {
                continue;
            };
            for (i, e) in c.endpoints.iter().enumerate() {
                let mut p = view::port_json(&c.port_name(i), 0, c, e);
                p["not_restored"] = json!(why);
                v.push(p);
            }
        }
        Value::Array(v)
    }

    fn fdb_show(&self, network: Option<&str>) -> Result<Value, DaemonError> {
        let filter = match network {
            Some(n) => Some(
                self.state
                    .networks
                    .get(n)
                    .ok_or_else(|| StateError::NoNetwork(n.to_string()))?
                    .domain,
            ),
            None => None,
        };
        let now = self.rt.epoch.elapsed().as_secs() as u32;
        let slot_names: HashMap<u16, &str> = self
            .ports
            .iter()
            .map(|(k, p)| (p.slot, k.as_str()))
            .collect();
        let nets: HashMap<u16, &crate::state::Network> = self
            .state
            .networks
            .values()
            .map(|n| (n.domain, n))
            .collect();
        let rows: Vec<Value> = self
            .rt
            .fdb
            .rows()
            .into_iter()
            .filter(|r| filter.is_none_or(|d| d == r.domain))
            .map(|r| {
                let net = nets.get(&r.domain);
                json!({
                    "mac": r.mac.to_string(),
                    "vlan": net.and_then(|n| n.vlan),
                    "network": net.map(|n| n.name.as_str()),
                    "port": slot_names.get(&r.port).copied().unwrap_or("?"),
                    "age_secs": now.saturating_sub(r.last_seen),
                })
            })
            .collect();
        Ok(Value::Array(rows))
    }

    fn stats(&self) -> Value {
        let mut ports = Vec::new();
        let gw = self.rt.stats(SERVICE_PORT);
        ports.push(view::stats_json("gateway", &gw));
        for (name, p) in &self.ports {
            ports.push(view::stats_json(name, &self.rt.stats(p.slot)));
        }
        let fdb = &self.rt.fdb;
        let gw = self
            .rt
            .service_call(|g, _| {
                (
                    g.stats.clone(),
                    g.uplink().stats.clone(),
                    g.uplink().counts(),
                )
            })
            .ok();
        let gateway = gw.as_ref().map(|(s, _, _)| {
            json!({
                "frames": s.frames, "arp_replies": s.arp_replies, "echo_replies": s.echo_replies,
                "dhcp_replies": s.dhcp_replies, "dhcp_ignored": s.dhcp_ignored, "icmp_errors": s.icmp_errors,
                "routed": s.to_uplink, "unanswered": s.unanswered, "no_neighbour": s.no_neighbour,
            })
        });
        let nat = gw.as_ref().map(|(_, u, (tcp, udp, ping))| {
            json!({
                "uplink": "socket",
                "tcp_open": tcp, "udp_flows": udp, "echo_flows": ping,
                "tcp_opened_total": u.tcp_open, "tcp_refused": u.tcp_refused,
                "udp_flows_total": u.udp_flows, "echo_flows_total": u.ping_flows, "dropped": u.dropped,
                "tcp_handshake_timeouts": u.tcp_handshake_timeouts, "tcp_idle_timeouts": u.tcp_idle_timeouts,
                "refused_quota": u.refused_quota,
            })
        });
        let t = &self.rt.nat.table;
        let packet_nat = json!({
            "flows": t.len(),
            "limit": t.max_flows(),
            "created": t.counters.created.load(std::sync::atomic::Ordering::Relaxed),
            "refused_full": t.counters.refused_full.load(std::sync::atomic::Ordering::Relaxed),
            "refused_ports": t.counters.refused_ports.load(std::sync::atomic::Ordering::Relaxed),
            "refused_quota": t.counters.refused_quota.load(std::sync::atomic::Ordering::Relaxed),
            "per_container": t.quota(),
            "expired": t.counters.expired.load(std::sync::atomic::Ordering::Relaxed),
        });
        json!({
            "gateway": gateway,
            "nat": nat,
            "packet_nat": packet_nat,
            "ports": ports,
            "fdb": {
                "entries": fdb.len(),
                "limit": fdb.total_limit(),
                "moves": fdb.moves.load(std::sync::atomic::Ordering::Relaxed),
                "learn_refused": fdb.refused.load(std::sync::atomic::Ordering::Relaxed),
            },
            "drop_reasons": DropReason::ALL.iter().map(|r| r.name()).collect::<Vec<_>>(),
        })
    }

    /// Starts capturing `port`; the workers fill the returned rings until
    /// [`Daemon::stop_capture`].
    pub fn start_capture(
        &mut self,
        port: &str,
    ) -> Result<Vec<dataplane::capture::CaptureRing>, DaemonError> {
        let slot = if port == "gateway" {
            SERVICE_PORT
        } else {
            self.ports
                .get(port)
                .ok_or_else(|| {
                    DaemonError::Refused(format!(
                        "port {port:?} not found (see `vswitch ctl port ls`)"
                    ))
                })?
                .slot
        };
        if self.rt.capture.load().is_some() {
            return Err(DaemonError::Refused(
                "another capture is running; one at a time".into(),
            ));
        }
        let (tap, rings) = dataplane::capture::CaptureTap::new(slot, self.rt.workers());
        self.rt.capture.store(Some(tap));
        Ok(rings)
    }

    pub fn stop_capture(&mut self) {
        self.rt.capture.store(None);
    }

    /// Does connection `conn` own a `vswitch run` container?
    pub fn owns_connection(&self, conn: u64) -> bool {
        self.owners.values().any(|c| *c == conn)
    }

    /// A control connection closed: its `vswitch run` containers go.
    pub fn connection_closed(&mut self, conn: u64) {
        let owned: Vec<String> = self
            .owners
            .iter()
            .filter(|(_, c)| **c == conn)
            .map(|(n, _)| n.clone())
            .collect();
        for n in owned {
            let _ = self.detach(&n);
        }
    }

    /// Drops `vswitch run` containers whose process did not come back after a restart.
    pub fn expire_awaiting(&mut self) {
        let now = std::time::Instant::now();
        let late: Vec<String> = self
            .awaiting
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in late {
            self.awaiting.remove(&n);
            let _ = self.detach(&n);
        }
    }

    /// The endpoint a port name refers to.
    pub fn endpoint_of_port(&self, port: &str) -> Option<(&Container, &Endpoint)> {
        let p = self.ports.get(port)?;
        let c = self.state.containers.get(&p.container)?;
        Some((c, c.endpoint(&p.network)?))
    }
}

#[cfg(test)]
mod tests;

/// An engine's container id: 1 to 128 letters, digits, `_`, `.` or `-`.
fn valid_engine_id(id: &str) -> Result<String, DaemonError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if ok {
        Ok(id.to_string())
    } else {
        Err(DaemonError::Refused(format!(
            "container id {id:?} is not valid: use 1 to 128 letters, digits, '_', '.' or '-'"
        )))
    }
}

/// Who manages a container: one of the engines vswitch knows.
fn valid_owner(owner: &str) -> Result<String, DaemonError> {
    match owner {
        "cni" | "netavark" => Ok(owner.to_string()),
        o => Err(DaemonError::Refused(format!(
            "owner {o:?} is not known: use cni or netavark"
        ))),
    }
}
