//! How the daemon gets ports: TAPs by name, TAPs it creates inside namespaces, TAP
//! descriptors handed over by `vswitch run`. Behind a trait so the request logic can be
//! exercised with in-memory ports.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use dataplane::port::Port;
use dataplane::wire::MacAddr;

/// One handle per worker: the port (a queue, or a duplicate descriptor) and whether that
/// worker receives from it.
pub type Handles = Vec<(Box<dyn Port>, bool)>;

/// How to configure the interface inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfConfig {
    pub ifname: String,
    pub mac: MacAddr,
    /// The network's bridge domain (with the MAC, what names a kernel-path port).
    pub domain: u16,
    pub mtu: u16,
    /// IPv4 address and prefix length (None on an IPv6-only network).
    pub addr: Option<(Ipv4Addr, u8)>,
    /// The default route (only for the container's first interface).
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 address and prefix length (on a network with IPv6).
    pub addr6: Option<(std::net::Ipv6Addr, u8)>,
    /// The IPv6 default route (only for the container's first interface).
    pub gateway6: Option<std::net::Ipv6Addr>,
}

/// Why a port could not be opened, created or deleted. The dataplane's errors keep
/// their own message and cause (the `io::Error` underneath).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Tap(#[from] dataplane::port::tap::TapError),
    #[error(transparent)]
    Netns(#[from] dataplane::netns::NetnsError),
    #[error(transparent)]
    VmSocket(#[from] dataplane::port::stream::StreamError),
    #[error(transparent)]
    KernelPath(#[from] dataplane::kernel::link::LinkError),
    #[error("cannot configure {ifname} in {}: {source}", ns.display())]
    Configure {
        ifname: String,
        ns: PathBuf,
        #[source]
        source: dataplane::netns::NetnsError,
    },
    #[error("cannot bring {ifname} up in {}: {source}", ns.display())]
    BringUp {
        ifname: String,
        ns: PathBuf,
        #[source]
        source: dataplane::netns::NetnsError,
    },
    #[error("cannot open {0}")]
    NoQueue(String),
    /// The in-memory backend's TAP that is made to fail.
    #[error("TAP {0} not found")]
    NoTap(String),
    /// The in-memory backend's namespace that is made to fail.
    #[error("cannot enter network namespace {0}")]
    NoNetns(String),
    /// A handed-off TAP found neither in the container's namespace nor where it was made.
    #[error("TAP {0} is neither in the container's namespace nor where it was created")]
    HandoffGone(String),
}

pub trait Backend: Send {
    /// Opens an existing TAP of the daemon's own namespace.
    fn open_tap(&mut self, ifname: &str, workers: usize) -> Result<Handles, BackendError>;
    /// The MAC address of the existing interface `ifname` (a TAP named by `--tap`), when
    /// it can be read.
    fn tap_mac(&self, _ifname: &str) -> Option<dataplane::wire::MacAddr> {
        None
    }
    /// Creates the TAP `cfg.ifname` inside the namespace at `ns` (or re-opens it when it
    /// exists: a restarted daemon), persistent, and configures it.
    fn create_in_netns(
        &mut self,
        ns: &Path,
        cfg: &IfConfig,
        workers: usize,
        reopen: bool,
    ) -> Result<Handles, BackendError>;
    /// Creates the TAP `ifname` inside `ns` (or re-opens it), persistent, up, with no
    /// address: the other end of a segment vswitch joins (the packet uplink).
    fn create_plain_in_netns(
        &mut self,
        ns: &Path,
        ifname: &str,
        mtu: u16,
        workers: usize,
    ) -> Result<Handles, BackendError>;
    /// Whether the port `cfg` names, made by [`Backend::create_in_netns`], is on the
    /// kernel path (a veth pair and the daemon's TAP, see `dataplane::kernel`).
    fn kernel_port(&self, _cfg: &IfConfig) -> bool {
        false
    }
    /// Removes a kernel-path port's veth pair and TAP.
    fn delete_kernel_port(
        &mut self,
        _port: dataplane::kernel::PortKey,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    /// Removes a TAP the daemon created inside a namespace.
    fn delete_in_netns(&mut self, ns: &Path, ifname: &str) -> Result<(), BackendError>;
    /// Creates the TAP `cfg.ifname` in `at.0` (the engine's namespace), persistent, with
    /// only its MAC and MTU set: the engine moves it into the container's namespace
    /// `at.1` and configures it there. With `reopen` (a restarted daemon) it is found
    /// where it is now: in the container's namespace under
    /// whatever name the engine gave it (by its MAC), else still in the engine's; nowhere is
    /// [`BackendError::HandoffGone`].
    fn handoff_tap(
        &mut self,
        at: (&Path, &Path),
        cfg: &IfConfig,
        workers: usize,
        reopen: bool,
    ) -> Result<Handles, BackendError>;
    /// Removes a handed-off TAP wherever it is now (see [`Backend::handoff_tap`]).
    fn delete_handoff(
        &mut self,
        at: (&Path, &Path),
        ifname: &str,
        mac: MacAddr,
    ) -> Result<(), BackendError>;
    /// Takes a TAP descriptor another process opened.
    fn adopt_fd(&mut self, fd: OwnedFd, workers: usize) -> Result<Handles, BackendError>;
    /// Listens on the Unix socket `path` for a VM's QEMU (`-netdev stream`), for frames
    /// of a network of MTU `mtu`: the first worker receives, the others send.
    fn open_vm_socket(
        &mut self,
        path: &Path,
        name: &str,
        mtu: u16,
        workers: usize,
    ) -> Result<Handles, BackendError>;
}

/// A backend of in-memory ports, for tests of the request logic.
#[derive(Default)]
pub struct MemoryBackend {
    pub created: Vec<(String, IfConfig)>,
    pub deleted: Vec<(String, String)>,
    /// Namespace paths that fail, to test rollback.
    pub fail: Vec<String>,
}

fn memory_handles(name: &str, workers: usize) -> Handles {
    (0..workers.max(1))
        .map(|i| {
            let p: Box<dyn Port> =
                Box::new(dataplane::port::MemoryPort::new(format!("{name}#{i}")));
            (p, i == 0)
        })
        .collect()
}

impl Backend for MemoryBackend {
    fn open_tap(&mut self, ifname: &str, workers: usize) -> Result<Handles, BackendError> {
        if self.fail.iter().any(|f| f == ifname) {
            return Err(BackendError::NoTap(ifname.to_string()));
        }
        Ok(memory_handles(ifname, workers))
    }
    fn create_in_netns(
        &mut self,
        ns: &Path,
        cfg: &IfConfig,
        workers: usize,
        _reopen: bool,
    ) -> Result<Handles, BackendError> {
        let ns = ns.display().to_string();
        if self.fail.contains(&ns) {
            return Err(BackendError::NoNetns(ns));
        }
        self.created.push((ns, cfg.clone()));
        Ok(memory_handles(&cfg.ifname, workers))
    }
    fn create_plain_in_netns(
        &mut self,
        ns: &Path,
        ifname: &str,
        _mtu: u16,
        workers: usize,
    ) -> Result<Handles, BackendError> {
        let ns_s = ns.display().to_string();
        if self.fail.contains(&ns_s) {
            return Err(BackendError::NoNetns(ns_s));
        }
        Ok(memory_handles(ifname, workers))
    }
    fn delete_in_netns(&mut self, ns: &Path, ifname: &str) -> Result<(), BackendError> {
        self.deleted
            .push((ns.display().to_string(), ifname.to_string()));
        Ok(())
    }
    fn adopt_fd(&mut self, _fd: OwnedFd, workers: usize) -> Result<Handles, BackendError> {
        Ok(memory_handles("fd", workers))
    }
    fn open_vm_socket(
        &mut self,
        path: &Path,
        name: &str,
        _mtu: u16,
        workers: usize,
    ) -> Result<Handles, BackendError> {
        let p = path.display().to_string();
        if self.fail.contains(&p) {
            return Err(BackendError::NoTap(p));
        }
        Ok(memory_handles(name, workers))
    }
    fn handoff_tap(
        &mut self,
        (host, netns): (&Path, &Path),
        cfg: &IfConfig,
        workers: usize,
        reopen: bool,
    ) -> Result<Handles, BackendError> {
        let (h, n) = (host.display().to_string(), netns.display().to_string());
        if self.fail.contains(&h) || (reopen && self.fail.contains(&n)) {
            return Err(BackendError::HandoffGone(cfg.ifname.clone()));
        }
        self.created.push((h, cfg.clone()));
        Ok(memory_handles(&cfg.ifname, workers))
    }
    fn delete_handoff(
        &mut self,
        (host, _): (&Path, &Path),
        ifname: &str,
        _mac: MacAddr,
    ) -> Result<(), BackendError> {
        self.deleted
            .push((host.display().to_string(), ifname.to_string()));
        Ok(())
    }
}
