//! Command-line definitions (clap) and dispatch.

use clap::{Parser, Subcommand, ValueEnum};
use dataplane::uplink::quota;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::api::{AttachReq, Request, UplinkReq};
use crate::client::{Client, ClientError};
use crate::render::Render;

#[derive(Parser, Debug)]
#[command(
    name = "vswitch",
    version,
    about = "Userspace virtual switch and NAT dataplane for containers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the switch: the dataplane and the control socket.
    Daemon(DaemonArgs),
    /// Talk to a running daemon.
    Ctl(CtlArgs),
    /// Run a command in a fresh network namespace attached to a network.
    Run(RunArgs),
    /// Run the forwarding pipeline on in-memory ports and report its speed.
    Bench(BenchArgs),
    /// Print a shell completion script (e.g. `vswitch completions bash > /etc/bash_completion.d/vswitch`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (vswitch.1 and one per subcommand) into DIR.
    Man { dir: PathBuf },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Control socket [default: as for the daemon]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// A network, or none, host, container:NAME.
    #[arg(long)]
    pub network: String,
    /// The container's name (its port, and its DNS name).
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address, on a network with IPv6.
    #[arg(long)]
    pub ip6: Option<Ipv6Addr>,
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub expose: ExposeArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// A container's DNS options (`attach`, `connect`, `run`), as Docker's.
#[derive(clap::Args, Debug, Default)]
pub struct DnsArgs {
    /// Upstream resolver of this container, IP[:PORT] (the gateway forwards its
    /// queries there), repeatable.
    #[arg(long = "dns", value_name = "IP[:PORT]")]
    pub dns: Vec<String>,
    /// Search domain (resolv.conf `search`; NAME.DOMAIN answered as NAME), repeatable.
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// resolv.conf option (ndots:2, timeout:1, ...), repeatable.
    #[arg(long = "dns-option", value_name = "OPT")]
    pub dns_option: Vec<String>,
    /// The container's hostname (also a DNS name of it on its networks).
    #[arg(long)]
    pub hostname: Option<String>,
    /// A name only this container resolves, NAME:IP or NAME:host-gateway, repeatable.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
}

impl DnsArgs {
    fn opts(self) -> crate::state::DnsOpts {
        crate::state::DnsOpts {
            dns: self.dns,
            dns_search: self.dns_search,
            dns_option: self.dns_option,
            hostname: self.hostname,
            add_host: self.add_host,
        }
    }
}

/// Docker's `-P` and `--expose`.
#[derive(clap::Args, Debug, Default)]
pub struct ExposeArgs {
    /// Publish every --expose port on a free host port.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// A port the container serves, PORT[-END][/tcp|/udp], repeatable.
    #[arg(long, value_name = "PORT[/PROTO]")]
    pub expose: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// Control socket [default: $VSWITCH_SOCKET, $XDG_RUNTIME_DIR/vswitch/ctl.sock or /run/vswitch/ctl.sock]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// State directory [default: $XDG_STATE_HOME/vswitch or /var/lib/vswitch]
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Forwarding threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Upstream DNS resolver (instead of /etc/resolv.conf's), repeatable.
    #[arg(long = "upstream-dns", value_name = "ADDR[:PORT]")]
    pub upstream_dns: Vec<String>,
    /// Where networks without --subnet take their prefix, e.g. base=10.10.0.0/16,size=24
    /// (repeatable; replaces Docker's default pools).
    #[arg(long = "default-address-pool", value_name = "base=CIDR,size=N")]
    pub default_address_pool: Vec<String>,
    /// Address and prefix of the default bridge's gateway (Docker's bip), e.g. 10.10.0.1/24.
    #[arg(long)]
    pub bip: Option<String>,
    /// IPv6 on the default bridge network (a /64 of the daemon's unique local prefix,
    /// or --fixed-cidr-v6).
    #[arg(long)]
    pub ipv6: bool,
    /// The default bridge's IPv6 prefix, e.g. 2001:db8:1::/64 (with --ipv6).
    #[arg(long, value_name = "PREFIX", requires = "ipv6")]
    pub fixed_cidr_v6: Option<String>,
    /// MTU of the default bridge network.
    #[arg(long)]
    pub default_mtu: Option<u32>,
    /// Open TAPs without vnet headers and offloads.
    #[arg(long)]
    pub no_offload: bool,
    /// Workers spin instead of sleeping (lower latency, cores always busy).
    #[arg(long)]
    pub busy_poll: bool,
    /// Give containers attached by namespace a veth pair, and let the kernel carry the
    /// unicast between two of them once the bridge has seen it (the default as root).
    #[arg(long)]
    pub kernel_path: bool,
    /// TAPs for every container, every frame through the daemon (the default when not
    /// root).
    #[arg(long, conflicts_with = "kernel_path")]
    pub no_kernel_path: bool,
    /// Seconds a learned MAC address stays in the FDB without traffic.
    #[arg(long, value_name = "SECS", default_value_t = dataplane::config::DEFAULT_AGING_SECS)]
    pub fdb_aging: u32,
    /// MAC addresses one container port may have learned at once.
    #[arg(long, value_name = "N", default_value_t = dataplane::bridge::fdb::DEFAULT_PORT_LIMIT)]
    pub mac_limit: u32,
    /// MAC addresses in the whole FDB.
    #[arg(long, value_name = "N", default_value_t = dataplane::bridge::fdb::DEFAULT_TOTAL_LIMIT)]
    pub fdb_limit: u32,
    /// Connections the packet uplink's NAT table holds; new ones are refused past it.
    #[arg(long, value_name = "N", default_value_t = dataplane::runtime::DEFAULT_MAX_FLOWS)]
    pub max_flows: usize,
    /// The default `bridge` network's GATEWAY:PORT reaches the host's 127.0.0.1 (not only
    /// the host's main address).
    #[arg(long)]
    pub host_loopback: bool,
    /// Socket uplink: TCP connections (outbound, published, DNS over TCP) in all.
    #[arg(long, value_name = "N", default_value_t = quota::DEFAULT_TCP_TOTAL)]
    pub uplink_max_tcp: usize,
    /// Socket uplink: TCP connections one container may hold.
    #[arg(long, value_name = "N", default_value_t = quota::DEFAULT_TCP_PER_CONTAINER)]
    pub uplink_max_tcp_per_container: usize,
    /// Socket uplink: UDP flows in all.
    #[arg(long, value_name = "N", default_value_t = quota::DEFAULT_UDP_TOTAL)]
    pub uplink_max_udp: usize,
    /// Socket uplink: UDP flows one container may hold.
    #[arg(long, value_name = "N", default_value_t = quota::DEFAULT_UDP_PER_CONTAINER)]
    pub uplink_max_udp_per_container: usize,
    /// Socket uplink: ICMP echo flows in all.
    #[arg(long, value_name = "N", default_value_t = quota::DEFAULT_PING_TOTAL)]
    pub uplink_max_ping: usize,
    /// Socket uplink: ICMP echo flows one container may hold.
    #[arg(long, value_name = "N", default_value_t = quota::DEFAULT_PING_PER_CONTAINER)]
    pub uplink_max_ping_per_container: usize,
    /// DNS queries the gateways forward upstream at once, in all.
    #[arg(long, value_name = "N", default_value_t = quota::DEFAULT_DNS_TOTAL)]
    pub uplink_max_dns: usize,
    /// DNS queries one container may have in flight.
    #[arg(long, value_name = "N", default_value_t = quota::DEFAULT_DNS_PER_CONTAINER)]
    pub uplink_max_dns_per_container: usize,
    /// Seconds a socket-uplink TCP connection may take to finish its handshake.
    #[arg(long, value_name = "SECS", default_value_t = quota::DEFAULT_TCP_HANDSHAKE.as_secs())]
    pub uplink_tcp_handshake_timeout: u64,
    /// Seconds an established socket-uplink TCP connection may move no data.
    #[arg(long, value_name = "SECS", default_value_t = quota::DEFAULT_TCP_IDLE.as_secs())]
    pub uplink_tcp_idle_timeout: u64,
    /// Connections one container may hold in the NAT table [default: a quarter of
    /// --max-flows, at least 4096]
    #[arg(long, value_name = "N")]
    pub max_flows_per_container: Option<usize>,
    /// ICMP errors the gateway sends one container per second.
    #[arg(long, value_name = "N", default_value_t = dataplane::gateway::icmp::DEFAULT_ERRORS_PER_SEC)]
    pub icmp_errors_per_sec: u32,
    /// What the log shows: error, warn, info, debug, trace, or a RUST_LOG filter
    /// [default: $RUST_LOG, else info]. Control actions are info, reads debug.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9323).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Frames the gateway thread holds waiting, for all ports (ARP, DHCP, DNS, ICMP,
    /// the socket uplink's traffic), served in turn per port; when full, the longest
    /// port's newest frames are cut.
    #[arg(long, value_name = "N", default_value_t = dataplane::fair::DEFAULT_QUEUE_FRAMES)]
    pub gateway_queue: usize,
}

#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// Control socket [default: as for the daemon]
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

// One command per process, parsed once: the variants' sizes are never multiplied.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Networks: create, ls, inspect, rm.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach a container (a namespace, a process, or a TAP) to a network.
    Attach(AttachArgs),
    /// Remove a container (all its ports), or with --network only that one.
    Detach {
        name: String,
        #[arg(long)]
        network: Option<String>,
    },
    /// Put an attached container on one more network (eth1, ...).
    Connect {
        network: String,
        name: String,
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// The IPv6 address, on a network with IPv6.
        #[arg(long)]
        ip6: Option<Ipv6Addr>,
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[command(flatten)]
        dns: DnsArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Take a container off one network.
    Disconnect { network: String, name: String },
    /// Ports.
    #[command(subcommand)]
    Port(PortCmd),
    /// Where masqueraded traffic leaves.
    #[command(subcommand)]
    Uplink(UplinkCmd),
    /// Publish container ports on the host (`port show NAME` lists what it has).
    Publish {
        name: String,
        #[arg(short = 'p', long = "publish", required = true, value_name = "SPEC")]
        specs: Vec<String>,
    },
    /// Stop publishing (all of a container's ports, or the given ones).
    Unpublish {
        name: String,
        #[arg(short = 'p', long = "publish", value_name = "SPEC")]
        specs: Vec<String>,
    },
    /// The MAC learning table.
    #[command(subcommand)]
    Fdb(FdbCmd),
    /// NAT flows.
    #[command(subcommand)]
    Conntrack(ConntrackCmd),
    /// Per-port counters.
    Stats,
    /// A port's bandwidth limits, changed live (none given: shows them).
    Limit {
        /// The port (`ctl port ls`: NAME, or NAME/eth1 for a second network).
        port: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Remove both limits.
        #[arg(long, conflicts_with_all = ["rate_in", "rate_out", "burst"])]
        clear: bool,
    },
    /// Capture a port's frames to a pcap file.
    Capture {
        port: String,
        #[arg(short = 'w', value_name = "FILE.pcap")]
        file: Option<PathBuf>,
        #[arg(short = 'c', value_name = "COUNT")]
        count: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network.
    Create(NetworkCreateArgs),
    /// List networks.
    Ls,
    /// Show a network (JSON, shaped like docker network inspect).
    Inspect { name: String },
    /// Remove a network.
    Rm {
        name: String,
        /// Detach its containers first.
        #[arg(long)]
        force: bool,
    },
    /// Change a network live: DNS, --internal, --no-icc, MTU (of an empty network).
    Update(NetworkUpdateArgs),
    /// Remove every network without containers (never `bridge`).
    Prune,
}

#[derive(clap::Args, Debug)]
pub struct NetworkUpdateArgs {
    pub name: String,
    /// The network's upstream resolvers (replacing its list), repeatable.
    #[arg(long = "dns", value_name = "IP[:PORT]")]
    pub dns: Vec<String>,
    /// Forget the network's resolvers: the daemon's again.
    #[arg(long, conflicts_with = "dns")]
    pub clear_dns: bool,
    /// The network's search domains (replacing its list), repeatable.
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// Forget the network's search domains.
    #[arg(long, conflicts_with = "dns_search")]
    pub clear_dns_search: bool,
    /// Nothing leaves (`--internal=false`: traffic leaves again, masqueraded).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub internal: Option<bool>,
    /// Containers may not talk to each other (`--no-icc=false`: they may again).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub no_icc: Option<bool>,
    /// The MTU, on a network without containers.
    #[arg(long)]
    pub mtu: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct NetworkCreateArgs {
    pub name: String,
    /// The network's prefix; one IPv4 and one IPv6 prefix for a dual-stack network.
    #[arg(long)]
    pub subnet: Vec<String>,
    /// The gateway's address in a --subnet (one per family).
    #[arg(long)]
    pub gateway: Vec<IpAddr>,
    /// IPv6 too (a /64 of the daemon's unique local prefix unless an IPv6 --subnet is
    /// given).
    #[arg(long)]
    pub ipv6: bool,
    /// IPv4 (`--ipv4=false`: an IPv6-only network).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub ipv4: Option<bool>,
    #[arg(long)]
    pub ip_range: Option<String>,
    /// 802.1Q id of the network on trunk ports (its ports are access ports).
    #[arg(long)]
    pub vlan: Option<u32>,
    /// Nothing leaves the network.
    #[arg(long)]
    pub internal: bool,
    /// No DNS on the gateway.
    #[arg(long)]
    pub no_dns: bool,
    /// Containers may not talk to each other, only to the gateway.
    #[arg(long)]
    pub no_icc: bool,
    /// No masquerade to the outside.
    #[arg(long)]
    pub no_masquerade: bool,
    #[arg(long)]
    pub mtu: Option<u32>,
    /// GATEWAY:PORT reaches the host's 127.0.0.1 (by default only services listening on
    /// the host's main address answer).
    #[arg(long)]
    pub host_loopback: bool,
    /// The network's upstream resolvers, IP[:PORT], instead of the daemon's (repeatable).
    #[arg(long = "dns", value_name = "IP[:PORT]")]
    pub dns: Vec<String>,
    /// Search domain: NAME.DOMAIN is answered as NAME, and run containers search it
    /// (repeatable).
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("where").required(true).args(["tap", "netns", "pid", "vm_socket"])))]
pub struct AttachArgs {
    pub network: String,
    #[arg(long)]
    pub name: String,
    /// An existing TAP of the daemon's namespace.
    #[arg(long)]
    pub tap: Option<String>,
    /// A network namespace file (e.g. /run/netns/NAME): the daemon creates eth0 there.
    #[arg(long)]
    pub netns: Option<String>,
    /// The network namespace of a process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// A VM: listen on this Unix socket for QEMU's `-netdev stream,server=off,...`.
    #[arg(long, value_name = "PATH")]
    pub vm_socket: Option<String>,
    #[arg(long)]
    pub ifname: Option<String>,
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address, on a network with IPv6 (else IPAM's: the EUI-64 address of
    /// the port's MAC on a /64).
    #[arg(long)]
    pub ip6: Option<Ipv6Addr>,
    #[arg(long)]
    pub mac: Option<String>,
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Carry these VLANs tagged (e.g. 10,20); the network's frames go untagged.
    #[arg(long)]
    pub trunk: Option<String>,
    /// Let the port send from any MAC and address.
    #[arg(long)]
    pub no_port_security: bool,
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub expose: ExposeArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Bandwidth limits of a port (`attach`, `connect`, `run`, `ctl limit`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Limit what the container receives, e.g. 100mbit (bits a second: kbit, mbit,
    /// gbit; 0 removes the limit).
    #[arg(long, value_name = "RATE", value_parser = crate::limit::parse_rate)]
    pub rate_in: Option<u64>,
    /// Limit what the container sends, e.g. 100mbit.
    #[arg(long, value_name = "RATE", value_parser = crate::limit::parse_rate)]
    pub rate_out: Option<u64>,
    /// Bytes the container may send or receive at once above the rate, e.g. 256k
    /// [default: 50 ms of the rate, at least 64k].
    #[arg(long, value_name = "BYTES", value_parser = crate::limit::parse_bytes)]
    pub burst: Option<u64>,
}

impl LimitArgs {
    pub fn to_limits(&self) -> crate::limit::PortLimits {
        crate::limit::PortLimits {
            rate_in: self.rate_in,
            rate_out: self.rate_out,
            burst: self.burst,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum PortCmd {
    /// List ports.
    Ls,
    /// What a container has published, as `docker port` shows it.
    Show { name: String },
}

#[derive(Subcommand, Debug)]
pub enum UplinkCmd {
    /// socket | none | --tap IFNAME|--netns PATH --address CIDR [--next-hop IP] [--mtu N]
    /// [--address6 CIDR [--next-hop6 IP]]
    Set {
        /// socket or none (omit with --tap/--netns).
        mode: Option<String>,
        #[arg(long)]
        tap: Option<String>,
        #[arg(long)]
        netns: Option<String>,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        next_hop: Option<Ipv4Addr>,
        /// MTU of the outside segment (default 1500).
        #[arg(long)]
        mtu: Option<u32>,
        /// vswitch's IPv6 address on the segment (ADDR/N): networks with IPv6 leave
        /// through it (NAT66), or are routed as they are (`--no-masquerade`); published
        /// ports of containers with IPv6 are reached on it too (DNAT66).
        #[arg(long)]
        address6: Option<String>,
        /// The IPv6 router beyond the segment.
        #[arg(long)]
        next_hop6: Option<std::net::Ipv6Addr>,
    },
    /// Show the uplink.
    Show,
}

#[derive(Subcommand, Debug)]
pub enum FdbCmd {
    Show {
        #[arg(long)]
        network: Option<String>,
    },
    Flush {
        #[arg(long)]
        network: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConntrackCmd {
    Ls,
    Flush,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioArg {
    L2,
    /// The l2 scenario with IPv6/UDP frames.
    L2v6,
    Vlan,
    Nat,
    /// The nat scenario with IPv6/UDP frames (NAT66).
    Nat66,
    All,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which traffic to run.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: ScenarioArg,
    /// Frame size in bytes (Ethernet header included, no FCS).
    #[arg(long, default_value_t = 64)]
    pub frame_size: usize,
    /// MAC addresses learned in the FDB.
    #[arg(long, default_value_t = 1024)]
    pub macs: usize,
    /// Flows for the NAT scenario.
    #[arg(long, default_value_t = 1024)]
    pub flows: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Worker threads (one core each).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Ports of the l2 scenario in all, each sending to every other port of its worker
    /// in turn [default: 4 per worker, each sending to the next]
    #[arg(long)]
    pub ports: Option<usize>,
    /// Port security on the containers' ports (nat, l2 and l2v6: one MAC and its
    /// addresses each, checked on every frame).
    #[arg(long)]
    pub port_security: bool,
    /// Count the CPU's retired instructions per frame (and per new NAT flow), where the
    /// CPU's counters can be read: a figure the host's load does not move.
    #[arg(long)]
    pub instructions: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// An error the CLI reports as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

/// Writes `text` and a newline to stdout. A reader that went away (`ctl … | head`) is
/// not an error: it has what it wanted.
fn print_line(text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version go to stdout with success; a usage error is one line.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("vswitch: {}", usage_line(&e));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch: {e}");
            ExitCode::FAILURE
        }
    }
}

/// clap's first line without its "error: " prefix, plus a pointer to --help.
pub(crate) fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{first} (see --help)")
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Bench(a) => bench(a),
        Command::Completions { shell } => crate::manpages::completions(shell),
        Command::Man { dir } => {
            let n = crate::manpages::man(&dir)?;
            print_line(&format!("{n} man pages in {}", dir.display()))?;
            Ok(())
        }
        Command::Daemon(a) => crate::daemon_main::run(a),
        Command::Ctl(a) => ctl(a),
        Command::Run(a) => {
            let code = crate::run::run(crate::run::RunSpec {
                socket: a.socket.unwrap_or_else(crate::paths::default_socket),
                network: a.network,
                name: a.name,
                ip: a.ip,
                ip6: a.ip6,
                publish: a.publish,
                aliases: a.aliases,
                dns: a.dns.opts(),
                publish_all: a.expose.publish_all,
                expose: a.expose.expose,
                limits: a.limits.to_limits(),
                command: a.command,
            })?;
            std::process::exit(code);
        }
    }
}

fn ctl(a: CtlArgs) -> Result<(), CliError> {
    let socket = a
        .socket
        .clone()
        .unwrap_or_else(crate::paths::default_socket);
    if let CtlCommand::Capture { port, file, count } = &a.command {
        return crate::capture::run(&socket, port, file.as_deref(), *count);
    }
    let (req, render) = ctl_request(a.command)?;
    let mut c = Client::connect(&socket)?;
    let v = c.call(req)?;
    if a.json {
        print_line(&v.to_string())?;
    } else {
        let text = render
            .text(&v)
            .map_err(|e| ClientError::Garbled(e.to_string()))?;
        if !text.is_empty() {
            print_line(&text)?;
        }
    }
    Ok(())
}

/// The request a `ctl` command sends and how its answer is shown.
fn ctl_request(cmd: CtlCommand) -> Result<(Request, Render), CliError> {
    Ok(match cmd {
        CtlCommand::Network(n) => network_request(n)?,
        CtlCommand::Attach(t) => (Request::Attach(attach_req(t)), Render::Endpoint),
        CtlCommand::Detach { name, network } => {
            (Request::Detach { name, network }, Render::Nothing)
        }
        CtlCommand::Connect {
            network,
            name,
            ip,
            ip6,
            aliases,
            dns,
            limits,
        } => (
            Request::Connect {
                network,
                name,
                ip,
                ip6,
                aliases,
                dns_opts: dns.opts(),
                limits: limits.to_limits(),
            },
            Render::Endpoint,
        ),
        CtlCommand::Disconnect { network, name } => {
            (Request::Disconnect { network, name }, Render::Nothing)
        }
        CtlCommand::Port(PortCmd::Ls) => (Request::PortLs, Render::PortLs),
        CtlCommand::Port(PortCmd::Show { name }) => (Request::PublishLs { name }, Render::Ports),
        CtlCommand::Uplink(u) => (uplink_request(u)?, Render::Pretty),
        CtlCommand::Publish { name, specs } => (Request::Publish { name, specs }, Render::Pretty),
        CtlCommand::Unpublish { name, specs } => {
            (Request::Unpublish { name, specs }, Render::Nothing)
        }
        CtlCommand::Fdb(FdbCmd::Show { network }) => (Request::FdbShow { network }, Render::Fdb),
        CtlCommand::Fdb(FdbCmd::Flush { network }) => {
            (Request::FdbFlush { network }, Render::Nothing)
        }
        CtlCommand::Conntrack(ConntrackCmd::Ls) => (Request::ConntrackLs, Render::Conntrack),
        CtlCommand::Conntrack(ConntrackCmd::Flush) => (Request::ConntrackFlush, Render::Nothing),
        CtlCommand::Stats => (Request::Stats, Render::Stats),
        CtlCommand::Limit {
            port,
            limits,
            clear,
        } => (
            Request::Limit {
                port,
                limits: limits.to_limits(),
                clear,
            },
            Render::Limits,
        ),
        CtlCommand::Capture { port, count, .. } => {
            (Request::Capture { port, count }, Render::Nothing)
        }
    })
}

fn network_request(cmd: NetworkCmd) -> Result<(Request, Render), CliError> {
    Ok(match cmd {
        NetworkCmd::Create(n) => (Request::NetworkCreate(network_spec(n)?), Render::NetworkId),
        NetworkCmd::Ls => (Request::NetworkLs, Render::NetworkLs),
        NetworkCmd::Inspect { name } => (Request::NetworkInspect { name }, Render::Pretty),
        NetworkCmd::Rm { name, force } => (Request::NetworkRm { name, force }, Render::Removed),
        NetworkCmd::Update(u) => (Request::NetworkUpdate(network_update(u)), Render::NetworkId),
        NetworkCmd::Prune => (Request::NetworkPrune, Render::Pruned),
    })
}

/// At most one of `items` (of one address family, named `family`).
fn one_of<T>(family: &str, mut items: Vec<T>) -> Result<Option<T>, CliError> {
    if items.len() > 1 {
        return Err(CliError::Usage(format!(
            "more than one {family} --subnet or --gateway: give at most one of each family"
        )));
    }
    Ok(items.pop())
}

/// `network create`'s arguments as a request: --subnet and --gateway sorted by family.
fn network_spec(n: NetworkCreateArgs) -> Result<crate::state::NetworkSpec, CliError> {
    let (v6, v4): (Vec<String>, Vec<String>) = n.subnet.into_iter().partition(|s| s.contains(':'));
    let (g6, g4): (Vec<IpAddr>, Vec<IpAddr>) = n.gateway.into_iter().partition(IpAddr::is_ipv6);
    let as_v4 = |a: IpAddr| match a {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    };
    let as_v6 = |a: IpAddr| match a {
        IpAddr::V6(v) => Some(v),
        IpAddr::V4(_) => None,
    };
    Ok(crate::state::NetworkSpec {
        name: n.name,
        subnet: one_of("IPv4", v4)?,
        gateway: one_of("IPv4", g4)?.and_then(as_v4),
        ipv6: n.ipv6,
        no_ipv4: n.ipv4 == Some(false),
        subnet6: one_of("IPv6", v6)?,
        gateway6: one_of("IPv6", g6)?.and_then(as_v6),
        ip_range: n.ip_range,
        vlan: n.vlan,
        internal: n.internal,
        no_dns: n.no_dns,
        no_icc: n.no_icc,
        no_masquerade: n.no_masquerade,
        host_loopback: n.host_loopback,
        mtu: n.mtu,
        dns: n.dns,
        dns_search: n.dns_search,
        ..Default::default()
    })
}

/// `network update`'s arguments: what is not given stays.
fn network_update(u: NetworkUpdateArgs) -> crate::state::NetworkUpdate {
    let list = |v: Vec<String>, clear: bool| (clear || !v.is_empty()).then_some(v);
    crate::state::NetworkUpdate {
        name: u.name,
        dns: list(u.dns, u.clear_dns),
        dns_search: list(u.dns_search, u.clear_dns_search),
        internal: u.internal,
        icc: u.no_icc.map(|n| !n),
        mtu: u.mtu,
    }
}

fn attach_req(t: AttachArgs) -> AttachReq {
    AttachReq {
        network: t.network,
        name: t.name,
        tap: t.tap,
        netns: t.netns,
        pid: t.pid,
        ifname: t.ifname,
        ip: t.ip,
        ip6: t.ip6,
        mac: t.mac,
        aliases: t.aliases,
        trunk: t.trunk,
        no_port_security: t.no_port_security,
        publish: t.publish,
        dns_opts: t.dns.opts(),
        publish_all: t.expose.publish_all,
        expose: t.expose.expose,
        limits: t.limits.to_limits(),
        vm_socket: t.vm_socket,
        ..Default::default()
    }
}

fn uplink_request(cmd: UplinkCmd) -> Result<Request, CliError> {
    let UplinkCmd::Set {
        mode,
        tap,
        netns,
        address,
        next_hop,
        mtu,
        address6,
        next_hop6,
    } = cmd
    else {
        return Ok(Request::UplinkShow);
    };
    let mode = match (mode, tap.is_some() || netns.is_some()) {
        (Some(m), false) => m,
        (None, true) => "packet".to_string(),
        (Some(_), true) => {
            return Err(CliError::Usage(
                "give socket, none, or --tap/--netns with --address, not both".into(),
            ));
        }
        (None, false) => {
            return Err(CliError::Usage(
                "uplink set needs socket, none, or --tap/--netns with --address".into(),
            ));
        }
    };
    Ok(Request::UplinkSet(UplinkReq {
        mode,
        tap,
        netns,
        address,
        next_hop,
        mtu,
        address6,
        next_hop6,
    }))
}

/// The scenarios `--scenario` names.
fn scenarios_of(scenario: &ScenarioArg) -> Vec<crate::bench::Scenario> {
    use crate::bench::Scenario;
    match scenario {
        ScenarioArg::L2 => vec![Scenario::L2],
        ScenarioArg::L2v6 => vec![Scenario::L2v6],
        ScenarioArg::Vlan => vec![Scenario::Vlan],
        ScenarioArg::Nat => vec![Scenario::Nat],
        ScenarioArg::Nat66 => vec![Scenario::Nat66],
        ScenarioArg::All => vec![
            Scenario::L2,
            Scenario::L2v6,
            Scenario::Vlan,
            Scenario::Nat,
            Scenario::Nat66,
        ],
    }
}

fn bench(a: BenchArgs) -> Result<(), CliError> {
    use crate::bench::{self, Params, Scenario};
    let scenarios = scenarios_of(&a.scenario);
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for s in scenarios {
        let p = Params {
            scenario: s,
            frame_size: a.frame_size,
            macs: a.macs,
            flows: a.flows,
            seconds: a.seconds,
            workers: a.workers,
            ports: a.ports,
            // With every scenario, port security applies to those that have it.
            port_security: a.port_security && s != Scenario::Vlan,
            instructions: a.instructions,
        };
        match bench::run(&p) {
            Ok(o) => results.push(o),
            Err(bench::BenchError::Unavailable(name)) if a.scenario == ScenarioArg::All => {
                skipped.push(name)
            }
            Err(e) => return Err(e.into()),
        }
    }
    if a.json {
        let v = serde_json::json!({
            "results": results.iter().map(|o| serde_json::json!({
                "scenario": o.scenario,
                "mpps_per_core": round(o.mpps_per_core, 3),
                "ns_per_frame": round(o.ns_per_frame, 2),
                "frames": o.frames,
                "workers": o.workers,
                "frame_size": o.frame_size,
                "fdb_entries": o.fdb_entries,
                "ports": o.ports,
                "port_security": o.port_security,
                "new_flows_per_sec": o.new_flows_per_sec.map(|x| round(x, 0)),
                "instructions_per_frame": o.instructions_per_frame.map(|x| round(x, 1)),
                "instructions_per_new_flow": o.instructions_per_new_flow.map(|x| round(x, 1)),
                "counters_unavailable": o.counters_unavailable,
            })).collect::<Vec<_>>(),
            "skipped": skipped,
        });
        print_line(&v.to_string())?;
    } else {
        let mut lines = vec![format!(
            "{:<6} {:>8} {:>14} {:>10} {:>12} {:>8}",
            "scenario", "workers", "Mpps/core", "ns/frame", "frames", "FDB"
        )];
        for o in &results {
            lines.push(format!(
                "{:<8} {:>6} {:>14.2} {:>10.1} {:>12} {:>8}",
                o.scenario, o.workers, o.mpps_per_core, o.ns_per_frame, o.frames, o.fdb_entries
            ));
            if let Some(n) = o.new_flows_per_sec {
                lines.push(format!("{:<8} new flows per second: {n:.0}", o.scenario));
            }
            lines.extend(instruction_lines(o));
        }
        for s in skipped {
            lines.push(format!("{s:<8} skipped: not available in this build"));
        }
        print_line(&lines.join("\n"))?;
    }
    Ok(())
}

/// The instruction counts of a scenario, or why they are missing.
fn instruction_lines(o: &crate::bench::Outcome) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(n) = o.instructions_per_frame {
        lines.push(format!("{:<8} instructions per frame: {n:.1}", o.scenario));
    }
    if let Some(n) = o.instructions_per_new_flow {
        lines.push(format!(
            "{:<8} instructions per new flow: {n:.1}",
            o.scenario
        ));
    }
    if let Some(why) = &o.counters_unavailable {
        lines.push(format!("{:<8} no instruction counts: {why}", o.scenario));
    }
    lines
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}
