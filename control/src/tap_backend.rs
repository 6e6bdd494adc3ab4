//! The real port backend: TAP devices, via `dataplane::port::tap` and
//! `dataplane::netns`, and VM sockets, via `dataplane::port::stream`.
//!
//! A TAP the daemon creates inside a namespace is persistent (it outlives the daemon,
//! so a restarted daemon re-opens it by name) and has one queue per worker (each worker
//! reads its own). A TAP handed over by `vswitch run` or named with `--tap` has one
//! queue: the first worker reads it, the others get send-only duplicates.

use std::os::fd::OwnedFd;
use std::path::Path;

use dataplane::kernel::{Names, PortKey, link};
use dataplane::netns::{self, NetnsRef};
use dataplane::port::Port;
use dataplane::port::stream::StreamPort;
use dataplane::port::tap::{TapOptions, TapPort};

use crate::backend::{Backend, BackendError, Handles, IfConfig};

pub struct TapBackend {
    offload: bool,
    uid: u32,
    /// Containers attached by namespace get a veth pair, so named (see
    /// `dataplane::kernel`).
    kernel_path: Option<Names>,
    /// The kernel-path ports made (not those that fell back to a TAP).
    kernel_ports: std::collections::HashSet<PortKey>,
}

pub fn backend(offload: bool, kernel_path: Option<Names>) -> Box<dyn Backend> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    Box::new(TapBackend {
        offload,
        uid,
        kernel_path,
        kernel_ports: Default::default(),
    })
}

/// The largest frame a port of MTU `mtu` sends (header and one tag included).
fn max_frame(mtu: u16) -> usize {
    usize::from(mtu) + 14 + 4
}

impl TapBackend {
    fn opts(&self, queues: usize, persist: bool) -> TapOptions {
        TapOptions {
            vnet_hdr: self.offload,
            offloads: self.offload,
            multi_queue: queues.max(1),
            persist,
            owner: persist.then_some(self.uid),
            nonblocking: true,
        }
    }

    /// The persistent TAP `ifname` of `ns`, created or attached to: one queue per
    /// worker, or one queue and duplicates when it was made with one (or one worker).
    fn queues(
        &self,
        ns: NetnsRef<'_>,
        ifname: &str,
        mtu: u16,
        workers: usize,
    ) -> Result<Handles, BackendError> {
        if workers > 1 {
            return match netns::create_tap_queues_in(ns, ifname, &self.opts(workers, true)) {
                Ok(qs) => Ok(self.every_queue(qs, mtu)),
                // A TAP created with one queue (an earlier run with one worker).
                Err(_) => {
                    let mut p = netns::create_tap_in(ns, ifname, &self.opts(1, true))
                        .map_err(BackendError::from)?;
                    jumbo(&mut p, mtu, self.offload);
                    Self::single(p, workers)
                }
            };
        }
        let mut p = match netns::create_tap_in(ns, ifname, &self.opts(1, true)) {
            Ok(p) => p,
            // A TAP created with several queues (an earlier run with more workers).
            Err(_) => netns::create_tap_queues_in(ns, ifname, &self.opts(2, true))
                .map_err(BackendError::from)?
                .into_iter()
                .next()
                .ok_or_else(|| BackendError::NoQueue(ifname.to_string()))?,
        };
        jumbo(&mut p, mtu, self.offload);
        Self::single(p, 1)
    }

    /// A kernel-path port: the veth pair (kept when re-opening and it is there), the
    /// TAP `vt…` of the daemon's namespace (not persistent: it goes with the daemon, and
    /// a restarted daemon makes it again), the steering, the container's end
    /// configured. Nothing is left behind on failure.
    fn kernel_port_in(
        &self,
        names: Names,
        ns: &Path,
        cfg: &IfConfig,
        workers: usize,
        reopen: bool,
    ) -> Result<Handles, BackendError> {
        let mtu = u32::from(cfg.mtu);
        let key = port_key(cfg);
        if !(reopen && link::exists(names, key)) {
            link::create_veth(names, ns, &cfg.ifname, key, mtu)?;
        }
        let tap = names.tap(key);
        let built = self
            .daemon_tap(&tap, cfg.mtu, workers)
            .and_then(|h| link::steer(names, key, mtu).map(|()| h).map_err(Into::into))
            .and_then(|h| configured(h, ns, &cfg.ifname, &netns_config(cfg)));
        match built {
            Ok(h) => {
                if let Err(e) = netns::loopback_up(ns) {
                    eprintln!("vswitch: cannot bring up lo in {}: {e}", ns.display());
                }
                Ok(h)
            }
            Err(e) => {
                let _ = link::delete_veth(names, key);
                Err(e)
            }
        }
    }

    /// A TAP of the daemon's own namespace that lives as long as its descriptors: one
    /// queue per worker.
    fn daemon_tap(&self, name: &str, mtu: u16, workers: usize) -> Result<Handles, BackendError> {
        let opts = self.opts(workers.max(1), false);
        let qs = netns::create_tap_queues_in(NetnsRef::Current, name, &opts)?;
        Ok(self.every_queue(qs, mtu))
    }

    /// One receiving queue per worker.
    fn every_queue(&self, qs: Vec<TapPort>, mtu: u16) -> Handles {
        qs.into_iter()
            .map(|mut q| {
                jumbo(&mut q, mtu, self.offload);
                let b: Box<dyn Port> = Box::new(q);
                (b, true)
            })
            .collect()
    }

    /// One reading queue for worker 0, send-only duplicates for the others.
    fn single(port: TapPort, workers: usize) -> Result<Handles, BackendError> {
        let mut h: Handles = Vec::new();
        for _ in 1..workers.max(1) {
            let c: Box<dyn Port> = Box::new(port.try_clone().map_err(BackendError::from)?);
            h.push((c, false));
        }
        h.insert(0, (Box::new(port), true));
        Ok(h)
    }
}

fn jumbo(p: &mut TapPort, mtu: u16, offload: bool) {
    if !offload && mtu > 1500 {
        p.set_max_frame(max_frame(mtu));
    }
}

impl Backend for TapBackend {
    fn tap_mac(&self, ifname: &str) -> Option<dataplane::wire::MacAddr> {
        netns::IfSocket::new().ok()?.mac(ifname).ok()
    }
    fn open_tap(&mut self, ifname: &str, workers: usize) -> Result<Handles, BackendError> {
        let port = TapPort::open(ifname, &self.opts(1, false)).map_err(BackendError::from)?;
        Self::single(port, workers)
    }

    fn create_in_netns(
        &mut self,
        ns: &Path,
        cfg: &IfConfig,
        workers: usize,
        reopen: bool,
    ) -> Result<Handles, BackendError> {
        if let Some(names) = self.kernel_path {
            match self.kernel_port_in(names, ns, cfg, workers, reopen) {
                Ok(h) => {
                    self.kernel_ports.insert(port_key(cfg));
                    return Ok(h);
                }
                Err(e) => eprintln!("vswitch: {e}; {} gets a TAP instead", cfg.ifname),
            }
        }
        let handles = self.queues(ns.into(), &cfg.ifname, cfg.mtu, workers)?;
        let ic = netns_config(cfg);
        let handles = configured(handles, ns, &cfg.ifname, &ic)?;
        // A fresh namespace (`ip netns add`) has its loopback down, and the container
        // cannot reach its own address (nor a spliced published port it): up, as
        // Docker and the CNI `loopback` plugin do.
        if let Err(e) = netns::loopback_up(ns) {
            eprintln!("vswitch: cannot bring up lo in {}: {e}", ns.display());
        }
        Ok(handles)
    }

    fn create_plain_in_netns(
        &mut self,
        ns: &Path,
        ifname: &str,
        mtu: u16,
        workers: usize,
    ) -> Result<Handles, BackendError> {
        let p =
            netns::create_tap_in(ns, ifname, &self.opts(1, true)).map_err(BackendError::from)?;
        let ic = netns::IfConfig {
            up: true,
            mtu: Some(u32::from(mtu)),
            ..Default::default()
        };
        netns::configure(ns, ifname, &ic).map_err(|source| BackendError::BringUp {
            ifname: ifname.to_string(),
            ns: ns.to_path_buf(),
            source,
        })?;
        Self::single(p, workers)
    }

    fn kernel_port(&self, cfg: &IfConfig) -> bool {
        self.kernel_ports.contains(&port_key(cfg))
    }

    fn delete_kernel_port(&mut self, port: PortKey) -> Result<(), BackendError> {
        self.kernel_ports.remove(&port);
        // The TAP goes when the workers close it.
        if let Some(names) = self.kernel_path {
            link::delete_veth(names, port)?;
        }
        Ok(())
    }

    fn delete_in_netns(&mut self, ns: &Path, ifname: &str) -> Result<(), BackendError> {
        netns::delete_tap(ns, ifname)
            .map(|_| ())
            .map_err(BackendError::from)
    }

    fn open_vm_socket(
        &mut self,
        path: &Path,
        name: &str,
        mtu: u16,
        workers: usize,
    ) -> Result<Handles, BackendError> {
        let port = StreamPort::listen(path, name, max_frame(mtu))?;
        let mut h: Handles = Vec::new();
        for _ in 1..workers.max(1) {
            h.push((Box::new(port.sender()), false));
        }
        h.insert(0, (Box::new(port), true));
        Ok(h)
    }

    fn adopt_fd(&mut self, fd: OwnedFd, workers: usize) -> Result<Handles, BackendError> {
        let port =
            TapPort::from_fd(fd, "eth0", &self.opts(1, false)).map_err(BackendError::from)?;
        Self::single(port, workers)
    }

    fn handoff_tap(
        &mut self,
        (host, ns): (&Path, &Path),
        cfg: &IfConfig,
        workers: usize,
        reopen: bool,
    ) -> Result<Handles, BackendError> {
        if reopen {
            if let Ok(Some(name)) = named_by_mac(ns, cfg.mac) {
                return self.queues(ns.into(), &name, cfg.mtu, workers);
            }
            let there = netns::in_netns(host, || netns::IfSocket::new()?.index(&cfg.ifname));
            return match there {
                Ok(Ok(Some(_))) => self.queues(host.into(), &cfg.ifname, cfg.mtu, workers),
                _ => Err(BackendError::HandoffGone(cfg.ifname.clone())),
            };
        }
        let handles = self.queues(host.into(), &cfg.ifname, cfg.mtu, workers)?;
        let ic = netns::IfConfig {
            mac: Some(cfg.mac),
            mtu: Some(u32::from(cfg.mtu)),
            ..Default::default()
        };
        configured(handles, host, &cfg.ifname, &ic)
    }

    fn delete_handoff(
        &mut self,
        (host, ns): (&Path, &Path),
        ifname: &str,
        mac: dataplane::wire::MacAddr,
    ) -> Result<(), BackendError> {
        // Where it was made (Docker moves it back there when the container leaves); a
        // namespace gone meanwhile holds nothing.
        if matches!(netns::delete_tap(host, ifname), Ok(true)) {
            return Ok(());
        }
        if let Some(name) = named_by_mac(ns, mac)? {
            netns::delete_tap(ns, &name)?;
        }
        Ok(())
    }
}

/// `handles` once `ifname` of `ns` is configured as `ic` says; the TAP deleted when it
/// cannot be.
fn configured(
    handles: Handles,
    ns: &Path,
    ifname: &str,
    ic: &netns::IfConfig,
) -> Result<Handles, BackendError> {
    if let Err(e) = netns::configure(ns, ifname, ic) {
        drop(handles);
        let _ = netns::delete_tap(ns, ifname);
        return Err(BackendError::Configure {
            ifname: ifname.to_string(),
            ns: ns.to_path_buf(),
            source: e,
        });
    }
    Ok(handles)
}

/// The name of the interface of `ns` whose MAC is `mac` (an engine renames the TAPs it
/// moves into a container: eth0, eth1, ...).
fn named_by_mac(ns: &Path, mac: dataplane::wire::MacAddr) -> Result<Option<String>, BackendError> {
    let found = netns::in_netns(ns, || -> Result<Option<String>, netns::NetnsError> {
        // This thread's own view: /proc/thread-self/net follows the thread's namespace.
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
        let s = netns::IfSocket::new()?;
        Ok(dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
            .find(|n| s.mac(n).is_ok_and(|m| m == mac)))
    })??;
    Ok(found)
}

/// Brings up `lo` in the current network namespace.
pub fn loopback_up() -> std::io::Result<()> {
    netns::loopback_up(NetnsRef::Current).map_err(std::io::Error::other)
}

/// Creates the TAP `ifname` in the current network namespace (for `vswitch run`).
pub fn create_local_tap(ifname: &str, vnet_hdr: bool) -> std::io::Result<TapPort> {
    let opts = TapOptions {
        vnet_hdr,
        offloads: vnet_hdr,
        ..TapOptions::default()
    };
    TapPort::open(ifname, &opts).map_err(std::io::Error::other)
}

/// What the dataplane's namespace code sets on an endpoint's interface.
/// What names a kernel-path port.
fn port_key(cfg: &IfConfig) -> PortKey {
    PortKey {
        domain: cfg.domain,
        mac: cfg.mac,
    }
}

fn netns_config(cfg: &IfConfig) -> netns::IfConfig {
    netns::IfConfig {
        mac: Some(cfg.mac),
        mtu: Some(u32::from(cfg.mtu)),
        addr: cfg.addr,
        gateway: cfg.gateway,
        addr6: cfg.addr6,
        gateway6: cfg.gateway6,
        up: true,
    }
}

/// Configures an interface of the current network namespace.
pub fn configure_local(cfg: &IfConfig) -> std::io::Result<()> {
    let ic = netns_config(cfg);
    netns::configure(NetnsRef::Current, &cfg.ifname, &ic).map_err(std::io::Error::other)
}
