//! The daemon: owns the state, the dataplane threads and the ports, and applies control
//! requests.
//!
//! Every request is validated against the state before anything changes; the new state
//! is saved (atomically) before the dataplane is touched, and a failure on the way
//! undoes what was done. Configuration reaches the workers as a new snapshot.

mod attach;
mod error;
mod limit;
mod limits;
mod metrics;
mod ports;
mod publish;
mod requests;
mod server;
mod snapshot;
mod uplink;
mod view;

pub use error::DaemonError;
pub use server::{bind, serve, serve_stream, serve_with_metrics};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use dataplane::bridge::Fdb;
use dataplane::config::Snapshot;
use dataplane::gateway::GatewayIo;
use dataplane::runtime::{Runtime, RuntimeConfig};

use crate::backend::Backend;
use crate::net::Ipv4Cidr;
use crate::state::{Container, Endpoint, Sandbox, State};

/// How the daemon was started.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub workers: usize,
    pub upstream_dns: Vec<SocketAddr>,
    pub bip: Option<Ipv4Cidr>,
    /// IPv6 on the default bridge (`--ipv6`), with `--fixed-cidr-v6` (Some(Some)) or a
    /// /64 of the unique local prefix (Some(None)).
    pub bridge_ipv6: Option<Option<crate::net::Ipv6Cidr>>,
    pub default_mtu: Option<u16>,
    /// TAP offloads (vnet headers, TSO/USO, checksum).
    pub offload: bool,
    pub busy_poll: bool,
    /// Containers attached by namespace get veth pairs; the kernel carries the unicast
    /// pairs the bridge has seen between them.
    pub kernel_path: bool,
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
    /// Where networks without `--subnet` take their prefix (none: Docker's pools).
    pub pools: Vec<crate::state::AddressPool>,
    /// Frames the gateway thread holds waiting for all ports (its fair queue).
    pub gateway_queue: usize,
}

impl DaemonConfig {
    /// How the kernel path's devices are named (after the state directory), when on.
    pub fn kernel_names(&self) -> Option<dataplane::kernel::Names> {
        use std::os::unix::ffi::OsStrExt;
        // The same directory however it was spelled (relative, a trailing slash).
        let dir = std::fs::canonicalize(&self.state_dir).unwrap_or_else(|_| self.state_dir.clone());
        (self.kernel_path).then(|| dataplane::kernel::Names::new(dir.as_os_str().as_bytes()))
    }

    /// The defaults `vswitch daemon` starts with.
    pub fn new(socket: PathBuf, state_dir: PathBuf) -> DaemonConfig {
        DaemonConfig {
            socket,
            state_dir,
            workers: 1,
            upstream_dns: Vec::new(),
            bip: None,
            bridge_ipv6: None,
            default_mtu: None,
            offload: true,
            busy_poll: false,
            kernel_path: false,
            fdb_aging: dataplane::config::DEFAULT_AGING_SECS,
            mac_limit: dataplane::bridge::fdb::DEFAULT_PORT_LIMIT,
            fdb_limit: dataplane::bridge::fdb::DEFAULT_TOTAL_LIMIT,
            max_flows: dataplane::runtime::DEFAULT_MAX_FLOWS,
            bridge_host_loopback: false,
            uplink: Default::default(),
            flows_per_container: 0,
            icmp_errors_per_sec: dataplane::gateway::icmp::DEFAULT_ERRORS_PER_SEC,
            pools: Vec::new(),
            gateway_queue: dataplane::fair::DEFAULT_QUEUE_FRAMES,
        }
    }
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
    /// A TAP an engine moves into the container: where it was made, where it goes, and
    /// its MAC (how it is found there under the engine's name for it).
    handoff: Option<(PathBuf, PathBuf, dataplane::wire::MacAddr)>,
    /// A kernel-path port (a veth pair and the daemon's TAP): what names it.
    kernel: Option<dataplane::kernel::PortKey>,
}

/// The most port slots (the FDB's limit).
const MAX_SLOTS: usize = dataplane::bridge::fdb::MAX_PORT_SLOTS;

pub struct Daemon {
    cfg: DaemonConfig,
    state: State,
    rt: Runtime<GatewayIo>,
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
    /// The counters notable events were last logged from.
    events: crate::events::Snapshot,
}

/// The TAP a packet uplink gets in the outside namespace (`uplink set --netns`).
pub const UPLINK_IFNAME: &str = "vswitch0";

/// How long a `vswitch run` container from before a restart is kept for its process to
/// re-attach.
pub const REATTACH_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Test only: with `VSWITCH_TEST_PANIC=gateway` (or `worker`, or `connection`) in the
/// daemon's environment, `network create` of [`TEST_PANIC_NETWORK`] makes that thread
/// panic: the gateway thread, the first worker, or the connection's own thread (how the
/// tests prove that a panic on any of them ends the process). Without the variable the
/// name is ordinary.
pub const TEST_PANIC_ENV: &str = "VSWITCH_TEST_PANIC";
pub const TEST_PANIC_NETWORK: &str = "vswitch-test-panic";

/// The thread a test panic is asked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestPanic {
    Gateway,
    Worker,
    Connection,
}

fn test_panic(name: &str) -> Option<TestPanic> {
    if name != TEST_PANIC_NETWORK {
        return None;
    }
    match std::env::var(TEST_PANIC_ENV).ok()?.as_str() {
        "gateway" => Some(TestPanic::Gateway),
        "worker" => Some(TestPanic::Worker),
        "connection" => Some(TestPanic::Connection),
        _ => None,
    }
}

impl Daemon {
    /// Loads (or creates) the state and starts the dataplane with the ports it lists.
    pub fn start(cfg: DaemonConfig, backend: Box<dyn Backend>) -> Result<Daemon, DaemonError> {
        let state = Self::initial_state(&cfg)?;
        let rt = Self::start_runtime(&cfg)?;
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
            events: crate::events::Snapshot::default(),
        };
        {
            let (nat, neigh) = (d.rt.nat.clone(), d.rt.neigh.clone());
            d.rt.gateway_do(move |g, _| g.set_packet_state(nat, neigh));
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

    /// The saved state (or the last good one, or a new one), with the default network,
    /// saved back.
    fn initial_state(cfg: &DaemonConfig) -> Result<State, DaemonError> {
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
        state.pools = cfg.pools.clone();
        state.set_default_host_loopback(cfg.bridge_host_loopback);
        if let Some(fixed) = cfg.bridge_ipv6 {
            state.set_default_ipv6(fixed)?;
        }
        state.save(&cfg.state_dir)?;
        Ok(state)
    }

    /// The dataplane threads, with no ports yet.
    fn start_runtime(cfg: &DaemonConfig) -> Result<Runtime<GatewayIo>, DaemonError> {
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
            gateway_queue: cfg.gateway_queue,
            kernel_path: cfg.kernel_names(),
        };
        let mut g = GatewayIo::with_limits(cfg.uplink);
        g.set_icmp_error_rate(cfg.icmp_errors_per_sec);
        // With offloads the workers' buffers hold 64 KB frames and the TAPs take them.
        g.set_super_frames(cfg.offload);
        let fdb = Arc::new(Fdb::new(cfg.fdb_limit));
        Ok(Runtime::start(rcfg, Snapshot::default(), fdb, g)?)
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
            let mut gone = false;
            for i in 0..c.endpoints.len() {
                match self.open_endpoint(&c, i, true, None) {
                    Ok(()) => {}
                    Err(DaemonError::Backend(crate::backend::BackendError::HandoffGone(_))) => {
                        gone = true
                    }
                    Err(e) => eprintln!("vswitch: port {} not restored: {e}", c.port_name(i)),
                }
            }
            if gone {
                // Its engine took the container down while the daemon was away.
                eprintln!(
                    "vswitch: container {} removed: its interface is gone",
                    c.name
                );
                let _ = self.detach(&c.name);
                continue;
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

    fn save(&self, s: &State) -> Result<(), DaemonError> {
        s.save(&self.cfg.state_dir)?;
        Ok(())
    }

    /// Rebuilds the snapshot (and the gateway's tables) from the state and ports.
    fn apply(&mut self) {
        let snap = snapshot::snapshot(&self.inputs(None));
        self.rt.publish(snap);
        self.push_gateway();
    }

    /// As `apply`, with a container not yet in the state counted in.
    fn apply_with(&mut self, extra: &Container) {
        let snap = snapshot::snapshot(&self.inputs(Some(extra)));
        self.rt.publish(snap);
        self.push_gateway();
    }

    /// Gives the gateway thread the gateway's view of the networks.
    fn push_gateway(&mut self) {
        let cfg = snapshot::gateway_config(&self.inputs(None));
        self.rt.gateway_do(move |g, _| g.configure(cfg));
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

    /// What the snapshot and the gateway's configuration are built from.
    fn inputs<'a>(&'a self, extra: Option<&'a Container>) -> snapshot::Inputs<'a> {
        snapshot::Inputs {
            state: &self.state,
            ports: &self.ports,
            gens: &self.gens,
            aging_secs: self.cfg.fdb_aging,
            mac_limit: self.cfg.mac_limit,
            uplink_open: self.uplink_port.is_some(),
            extra,
            upstreams: &self.upstreams,
        }
    }
}

#[cfg(test)]
mod tests;
