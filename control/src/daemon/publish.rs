//! Published ports: host sockets with the socket uplink, DNAT rules with a packet one.

use std::collections::HashSet;

use dataplane::uplink::socket::{PublishTarget, PublishedSocket};

use super::{Daemon, DaemonError, view};
use crate::api::Reply;
use crate::publish::PortReq;
use crate::state::{Container, Proto, Published};

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
    /// changes. Returns the published entries with their sockets.
    pub(super) fn bind_published(
        reqs: &[PortReq],
    ) -> Result<Vec<(Published, PublishedSocket)>, DaemonError> {
        use Proto;
        let mut out = Vec::new();
        for r in reqs {
            let addr = std::net::SocketAddrV4::new(r.host_ip, r.host_port.unwrap_or(0));
            let what = |source: std::io::Error| DaemonError::Bind {
                port: r.host_port,
                proto: r.proto,
                host_ip: r.host_ip,
                source,
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
        to.inside(std::net::Ipv4Addr::UNSPECIFIED.into())?;
        Some(to)
    }

    /// The container's network namespace, where loopback clients of its published
    /// ports are spliced (None: a bare TAP, a namespace that cannot be opened, a pid
    /// that names another process now; those clients take the frame path).
    fn splice_netns(c: &Container) -> Option<std::os::fd::OwnedFd> {
        if Self::wrong_process(&c.sandbox).is_some() {
            return None;
        }
        let path = Self::namespace_of(&c.sandbox)?;
        match std::fs::File::open(&path) {
            Ok(f) => Some(f.into()),
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

    pub(super) fn start_published(&self, c: &Container, bound: Vec<(Published, PublishedSocket)>) {
        for (p, sock) in bound {
            let Some(to) = self.publish_target(c, p.container_port) else {
                continue;
            };
            let netns = Self::splice_netns(c);
            self.rt.gateway_do(move |g, ctx| {
                if let Err(e) = g.publish(ctx.registry, sock, to, netns) {
                    eprintln!("vswitch: cannot serve published port {}: {e}", p.host_port);
                }
            });
        }
    }

    pub(super) fn stop_published(&self, list: &[Published]) {
        for p in list {
            let local = std::net::SocketAddr::new(p.host_ip.into(), p.host_port);
            let tcp = p.proto == Proto::Tcp;
            let _ = self
                .rt
                .gateway_call(move |g, ctx| g.unpublish(ctx.registry, local, tcp));
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
