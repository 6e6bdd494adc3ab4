//! Published ports: host sockets with the socket uplink, DNAT rules with a packet one.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dataplane::uplink::socket::{PublishTarget, PublishedSocket};
use dataplane::uplink::splice::NetnsRef;

use super::{Daemon, DaemonError, view};
use crate::api::Reply;
use crate::publish::PortReq;
use crate::state::{Container, Proto, Published, Sandbox};

/// Published entries with their host sockets, bound.
pub(super) type Bound = Vec<(Published, Vec<PublishedSocket>)>;

/// Whether a bind failed for want of IPv6 on the host.
fn no_ipv6(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

impl Daemon {
    /// Binds a restored container's published ports again (the same host ports). With a
    /// packet uplink, published ports are DNAT rules and bind nothing.
    pub(super) fn restore_published(&self, c: &Container) {
        if self.packet_mode() {
            return;
        }
        let reqs: Vec<PortReq> = c
            .published
            .iter()
            .map(|p| PortReq {
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

    /// Binds the host side of `reqs` now, so a taken port is refused before anything
    /// changes. Returns the published entries with their sockets: two for the default
    /// 0.0.0.0 (its IPv4 socket and an IPv6-only one on `[::]`, the same port; a host
    /// without IPv6 gets the first alone), one for a given address.
    pub(super) fn bind_published(reqs: &[PortReq]) -> Result<Bound, DaemonError> {
        let mut out = Vec::new();
        for r in reqs {
            let what = |source: std::io::Error| DaemonError::Bind {
                port: r.host_port,
                proto: r.proto,
                host_ip: r.host_ip,
                source,
            };
            let socks = Self::bind_one(r).map_err(what)?;
            let port = socks.first().and_then(|s| s.local_addr().ok());
            out.push((
                Published {
                    proto: r.proto,
                    host_ip: r.host_ip,
                    host_port: port.map_or(0, |a| a.port()),
                    container_port: r.container_port,
                    auto: r.host_port.is_none(),
                },
                socks,
            ));
        }
        Ok(out)
    }

    /// The host sockets of one published port (see [`Daemon::bind_published`]). An
    /// ephemeral port is taken on IPv4 first, then the same on IPv6: a few tries when
    /// IPv6 has it in use.
    fn bind_one(r: &PortReq) -> std::io::Result<Vec<PublishedSocket>> {
        let tcp = r.proto == Proto::Tcp;
        let addr = SocketAddr::new(r.host_ip, r.host_port.unwrap_or(0));
        let dual = r.host_ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let mut tries = if r.host_port.is_none() { 8 } else { 1 };
        loop {
            let first = PublishedSocket::bind(tcp, addr)?;
            if !dual {
                return Ok(vec![first]);
            }
            let port = first.local_addr()?.port();
            let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
            match PublishedSocket::bind(tcp, any6) {
                Ok(second) => return Ok(vec![first, second]),
                // No IPv6 on this host: IPv4 alone, as Docker does.
                Err(e) if no_ipv6(&e) => return Ok(vec![first]),
                Err(e) => {
                    tries -= 1;
                    if tries == 0 {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Where a container's published ports lead: its first endpoint.
    pub(super) fn publish_target(
        &self,
        c: &Container,
        container_port: u16,
    ) -> Option<PublishTarget> {
        let e = c.endpoints.first()?;
        let n = self.state.networks.get(&e.network)?;
        let to = PublishTarget {
            domain: n.domain,
            container: e.ip,
            container6: e.ip6,
            port: container_port,
        };
        to.inside(Ipv4Addr::UNSPECIFIED.into())?;
        Some(to)
    }

    /// The container's network namespace, where loopback clients of its published
    /// ports are spliced (None: a bare TAP, a namespace that cannot be opened, a pid
    /// that names another process now; those clients take the frame path). An engine's
    /// namespace (a hand-off) is opened with the first client: Docker publishes before
    /// it binds the sandbox's namespace file.
    fn splice_netns(c: &Container) -> Option<NetnsRef> {
        if Self::wrong_process(&c.sandbox).is_some() {
            return None;
        }
        let path = Self::namespace_of(&c.sandbox)?;
        if matches!(c.sandbox, Sandbox::Handoff { .. }) {
            return Some(NetnsRef::Path(path));
        }
        match std::fs::File::open(&path) {
            Ok(f) => Some(NetnsRef::Open(f.into())),
            Err(e) => {
                eprintln!(
                    "vswitch: the ports of {} take frames: cannot open {}: {e}",
                    c.name,
                    path.display()
                );
                None
            }
        }
    }

    pub(super) fn start_published(&self, c: &Container, bound: Bound) {
        for (p, socks) in bound {
            let Some(to) = self.publish_target(c, p.container_port) else {
                continue;
            };
            for sock in socks {
                // Loopback clients of either socket are spliced (127.0.0.1 or ::1),
                // each socket with a namespace descriptor of its own.
                let netns = Self::splice_netns(c);
                self.rt.gateway_do(move |g, ctx| {
                    if let Err(e) = g.publish(ctx.registry, sock, to, netns) {
                        eprintln!("vswitch: cannot serve published port {}: {e}", p.host_port);
                    }
                });
            }
        }
    }

    pub(super) fn stop_published(&self, list: &[Published]) {
        for p in list {
            let tcp = p.proto == Proto::Tcp;
            let mut locals = vec![SocketAddr::new(p.host_ip, p.host_port)];
            if p.host_ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
                locals.push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), p.host_port));
            }
            for local in locals {
                let _ = self
                    .rt
                    .gateway_call(move |g, ctx| g.unpublish(ctx.registry, local, tcp));
            }
        }
    }

    pub(super) fn publish(&mut self, name: &str, specs: &[String]) -> Result<Reply, DaemonError> {
        let c = self.state.container(name)?.clone();
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
                return Err(DaemonError::PortPublished {
                    port,
                    proto: r.proto,
                    by: other.name.clone(),
                });
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
            return Ok(Reply::Published(
                entries.iter().map(view::published_entry).collect(),
            ));
        }
        let bound = Self::bind_published(&reqs)?;
        let mut next = self.state.clone();
        if let Some(nc) = next.containers.get_mut(name) {
            nc.published.extend(bound.iter().map(|(p, _)| *p));
        }
        self.save(&next)?;
        self.state = next;
        let list = bound
            .iter()
            .map(|(p, _)| view::published_entry(p))
            .collect();
        self.start_published(&c, bound);
        Ok(Reply::Published(list))
    }

    /// Published entries for a packet uplink: the external ports asked for, or unused
    /// ones from the ephemeral range.
    pub(super) fn packet_published(&self, reqs: &[PortReq]) -> Result<Vec<Published>, DaemonError> {
        let mut used: HashSet<(Proto, u16)> = self
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
                    .ok_or(DaemonError::NoExternalPort)?,
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

    pub(super) fn unpublish(&mut self, name: &str, specs: &[String]) -> Result<Reply, DaemonError> {
        let c = self.state.container(name)?.clone();
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
            return Err(DaemonError::NothingPublished {
                name: name.to_string(),
                specs: specs.join(" "),
            });
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
        Ok(Reply::Published(
            gone.iter().map(view::published_entry).collect(),
        ))
    }
}
