//! Container ports: slots, opening an endpoint's TAP (by name, in a namespace, or a
//! passed descriptor) into the dataplane and closing it, `port_ls`, capture.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use dataplane::config::{FIRST_PORT, GATEWAY_PORT};
use dataplane::ids::PortId;

use super::{Daemon, DaemonError, MAX_SLOTS, PortRt, view};
use crate::api::PortRow;
use crate::backend::{Handles, IfConfig};
use crate::state::{Container, Sandbox};

impl Daemon {
    pub(super) fn free_slot(&self) -> Option<u16> {
        let used: HashSet<u16> = self.ports.values().map(|p| p.slot).collect();
        (FIRST_PORT.0..MAX_SLOTS as u16).find(|s| !used.contains(s))
    }

    pub(super) fn namespace_of(sandbox: &Sandbox) -> Option<PathBuf> {
        match sandbox {
            Sandbox::Netns { path } => Some(PathBuf::from(path)),
            Sandbox::Pid { pid, .. } | Sandbox::Run { pid } => {
                Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
            }
            Sandbox::Handoff { netns, .. } => Some(PathBuf::from(netns)),
            Sandbox::Tap { .. } | Sandbox::Vm { .. } => None,
        }
    }

    pub(super) fn if_config(&self, c: &Container, i: usize) -> Option<IfConfig> {
        let e = c.endpoints.get(i)?;
        let n = self.state.networks.get(&e.network)?;
        Some(IfConfig {
            ifname: e.ifname.clone(),
            mac: e.mac,
            domain: n.domain,
            mtu: n.mtu,
            addr: e.ip.zip(n.subnet.map(|s| s.prefix_len())),
            gateway: n.gateway.filter(|_| i == 0 && !n.internal),
            addr6: e.ip6.zip(n.ipv6.map(|v| v.subnet.prefix_len())),
            gateway6: n.ipv6.map(|v| v.gateway).filter(|_| i == 0 && !n.internal),
        })
    }

    /// Opens endpoint `i` of `c` (a TAP by name, in a namespace, or a passed descriptor)
    /// and installs it in the dataplane. Nothing is left behind on failure.
    pub(super) fn open_endpoint(
        &mut self,
        c: &Container,
        i: usize,
        reopen: bool,
        fd: Option<OwnedFd>,
    ) -> Result<(), DaemonError> {
        let e = c.endpoints.get(i).ok_or_else(|| DaemonError::NoEndpoint {
            container: c.name.clone(),
            index: i,
        })?;
        let slot = self.free_slot().ok_or(DaemonError::NoFreeSlot)?;
        let workers = self.rt.workers();
        let cfg = self
            .if_config(c, i)
            .ok_or_else(|| DaemonError::NoNetwork(e.network.clone()))?;
        let mut netns = None;
        let mut handoff = None;
        let mut kernel = None;
        let handles: Handles = match (&c.sandbox, fd) {
            (_, Some(fd)) => self.backend.adopt_fd(fd, workers)?,
            (Sandbox::Tap { ifname }, None) => self.backend.open_tap(ifname, workers)?,
            (Sandbox::Vm { socket }, None) => {
                let name = c.port_name(i);
                self.backend
                    .open_vm_socket(Path::new(socket), &name, cfg.mtu, workers)?
            }
            (Sandbox::Handoff { host, netns }, None) => {
                let at = (PathBuf::from(host), PathBuf::from(netns));
                let h = self
                    .backend
                    .handoff_tap((&at.0, &at.1), &cfg, workers, reopen)?;
                handoff = Some((at.0, at.1, e.mac));
                h
            }
            (Sandbox::Run { .. }, None) => {
                return Err(DaemonError::RunContainer(c.name.clone()));
            }
            (sb, None) => {
                let ns = Self::namespace_of(sb).ok_or(DaemonError::NoNamespace)?;
                let h = self.backend.create_in_netns(&ns, &cfg, workers, reopen)?;
                kernel = (self.backend.kernel_port(&cfg)).then_some(dataplane::kernel::PortKey {
                    domain: cfg.domain,
                    mac: cfg.mac,
                });
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
                handoff,
                kernel,
            },
        );
        // The port's configuration first, then its frames.
        self.apply_with(c);
        self.rt.add_port(slot, handles);
        Ok(())
    }

    /// Takes a port out of the dataplane; deletes the TAP when the daemon made it.
    pub(super) fn close_port(&mut self, name: &str, delete: bool) {
        let Some(p) = self.ports.remove(name) else {
            return;
        };
        self.apply();
        self.rt.remove_port(p.slot);
        self.rt.fdb.flush(None, Some(PortId(p.slot)));
        if delete && let Some(key) = p.kernel {
            if let Err(e) = self.backend.delete_kernel_port(key) {
                eprintln!("vswitch: removing {name}'s kernel path: {e}");
            }
        } else if delete && let Some(ns) = &p.netns {
            let _ = self.backend.delete_in_netns(ns, &p.ifname);
        }
        if delete && let Some((host, ns, mac)) = &p.handoff {
            let _ = self.backend.delete_handoff((host, ns), &p.ifname, *mac);
        }
    }

    pub(super) fn port_ls(&self) -> Vec<PortRow> {
        let mut v = Vec::new();
        for (name, p) in &self.ports {
            let Some(c) = self.state.containers.get(&p.container) else {
                continue;
            };
            let Some(e) = c.endpoint(&p.network) else {
                continue;
            };
            v.push(view::port_row(name, p.slot, c, e));
        }
        for (name, why) in &self.unrestored {
            let Some(c) = self.state.containers.get(name) else {
                continue;
            };
            for (i, e) in c.endpoints.iter().enumerate() {
                let mut p = view::port_row(&c.port_name(i), 0, c, e);
                p.not_restored = Some(why.clone());
                v.push(p);
            }
        }
        v
    }

    /// Starts capturing `port`; the workers fill the returned rings until
    /// [`Daemon::stop_capture`].
    pub fn start_capture(
        &mut self,
        port: &str,
    ) -> Result<Vec<dataplane::capture::CaptureRing>, DaemonError> {
        let slot = if port == "gateway" {
            GATEWAY_PORT.0
        } else {
            self.ports
                .get(port)
                .ok_or_else(|| DaemonError::NoPort(port.to_string()))?
                .slot
        };
        if self.rt.capture.load().is_some() {
            return Err(DaemonError::CaptureBusy);
        }
        let (tap, rings) = dataplane::capture::CaptureTap::new(slot, self.rt.workers());
        self.rt.capture.store(Some(tap));
        Ok(rings)
    }

    pub fn stop_capture(&mut self) {
        self.rt.capture.store(None);
    }
}
