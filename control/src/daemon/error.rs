//! Why the daemon refused a request or could not start: one variant per reason, with
//! its data; the message is what the client shows (one line).

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::net::Ipv4Cidr;
use crate::state::{PersistError, Proto, StateError};

use super::{MAX_SLOTS, TEST_PANIC_ENV};

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
    #[error("control socket {0}: {1}")]
    Socket(PathBuf, #[source] io::Error),
    #[error(transparent)]
    Limit(#[from] crate::limit::LimitError),
    #[error("state directory {0}: {1}")]
    StateDir(PathBuf, #[source] io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] io::Error),

    // ---- attach, connect ----
    #[error("container {container:?} has no endpoint {index}")]
    NoEndpoint { container: String, index: usize },
    #[error(
        "no free port: a daemon holds at most {} container ports; detach one first",
        MAX_SLOTS - dataplane::config::FIRST_PORT.index()
    )]
    NoFreeSlot,
    #[error("network {0:?} not found")]
    NoNetwork(String),
    #[error("container {0:?} is a `vswitch run` container: its process hands over its interfaces")]
    RunContainer(String),
    #[error("no namespace")]
    NoNamespace,
    #[error(transparent)]
    BadMac(#[from] dataplane::wire::ethernet::MacParseError),
    #[error(transparent)]
    Process(#[from] crate::procid::ProcIdError),
    #[error("a descriptor attach needs run_pid")]
    NoRunPid,
    #[error("give exactly one of --tap, --netns, --pid or --vm-socket")]
    AttachWhere,
    #[error(
        "--vm-socket {0:?}: give an absolute path of at most 107 bytes in an existing directory"
    )]
    BadVmSocket(String),
    #[error(
        "network {network:?} has MTU {mtu}; a VM socket carries frames of at most {max} bytes (MTU {}): use a network with a smaller MTU",
        max - 18
    )]
    VmMtu {
        network: String,
        mtu: u16,
        max: usize,
    },
    #[error("the TAP descriptor did not arrive with the request")]
    NoDescriptor,
    #[error("network namespace {0} does not exist")]
    NoNetns(String),
    #[error("container {name:?}: {why}; detach it and attach the right process")]
    WrongProcess { name: String, why: String },
    #[error("container id {0:?} is not valid: use 1 to 128 letters, digits, '_', '.' or '-'")]
    BadEngineId(String),
    #[error("owner {0:?} is not known: use cni, netavark or docker")]
    UnknownOwner(String),
    #[error("create_in needs netns (where the engine moves the TAP) and ifname (the TAP's name)")]
    HandoffWhere,
    #[error(
        "the TAP of container {0:?} is neither in its namespace nor where it was created: its engine removed it"
    )]
    HandoffGone(String),

    // ---- uplink ----
    #[error("give exactly one of --tap or --netns")]
    UplinkWhere,
    #[error("--mtu applies to a packet uplink (--tap/--netns with --address)")]
    MtuNotPacket,
    #[error("a packet uplink needs --address CIDR (vswitch's address on that segment)")]
    NoUplinkAddress,
    #[error("{0} is not a usable address with its prefix (e.g. 198.51.100.2/24)")]
    UnusableAddress(Ipv4Cidr),
    #[error("next hop {hop} is not another address of {segment}")]
    BadNextHop { hop: Ipv4Addr, segment: Ipv4Cidr },
    #[error("--next-hop6 needs --address6: vswitch's IPv6 address on the segment")]
    NoUplinkAddress6,
    #[error(
        "{0} is not a usable IPv6 address with its prefix (a global or unique local one, e.g. 2001:db8:ff::2/64)"
    )]
    UnusableAddress6(crate::net::Ipv6Cidr),
    #[error("IPv6 next hop {hop} is neither another address of {segment} nor link-local")]
    BadNextHop6 {
        hop: std::net::Ipv6Addr,
        segment: crate::net::Ipv6Cidr,
    },
    #[error("uplink MTU {mtu} is out of range: use 576 to {top}")]
    UplinkMtu { mtu: u32, top: u32 },
    #[error(
        "uplink MTU {0} is too small for --address6: use 1280 or more (IPv6 links carry 1280 bytes at least)"
    )]
    UplinkMtu6(u32),
    #[error("unknown uplink mode {0:?}: use socket, none, or --tap/--netns with --address")]
    UplinkMode(String),

    // ---- published ports ----
    #[error("host {}/{proto} on {host_ip} {}", bind_port(*.port), bind_why(.source, *.host_ip))]
    Bind {
        port: Option<u16>,
        proto: Proto,
        host_ip: std::net::IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("host port {port}/{proto} is already published by {by:?}")]
    PortPublished { port: u16, proto: Proto, by: String },
    #[error("no unused external port left")]
    NoExternalPort,
    #[error("container {name:?} publishes nothing matching {specs}")]
    NothingPublished { name: String, specs: String },

    // ---- capture ----
    #[error("port {0:?} not found (see `vswitch ctl port ls`)")]
    NoPort(String),
    #[error("another capture is running; one at a time")]
    CaptureBusy,
    #[error("capture of {0:?} must be the only request on its connection")]
    CaptureNotAlone(String),

    #[error("{TEST_PANIC_ENV}: a thread of the daemon was told to panic")]
    TestPanic,
    #[error("--publish-all publishes the --expose ports: give at least one --expose PORT[/PROTO]")]
    PublishAllNothing,
    #[error("invalid --expose {0:?}: give PORT, PORT-END, with /tcp or /udp")]
    BadExpose(String),
}

fn bind_port(port: Option<u16>) -> String {
    port.map_or("an ephemeral port".to_string(), |p| format!("port {p}"))
}

fn bind_why(e: &io::Error, host_ip: std::net::IpAddr) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "is already in use".to_string(),
        io::ErrorKind::PermissionDenied => {
            "needs privileges (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
        }
        io::ErrorKind::AddrNotAvailable => {
            format!("cannot be bound: {host_ip} is not an address of this host")
        }
        _ => format!("cannot be bound: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_was_refused() {
        let e = DaemonError::Bind {
            port: Some(8080),
            proto: Proto::Tcp,
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            e.to_string(),
            "host port 8080/tcp on 0.0.0.0 is already in use"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = DaemonError::BadNextHop {
            hop: Ipv4Addr::new(10, 0, 0, 1),
            segment: "10.0.0.0/24".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "next hop 10.0.0.1 is not another address of 10.0.0.0/24"
        );
    }
}
