//! Request handling: one control request to one [`Reply`], or the refusal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::Relaxed;

use dataplane::bridge::DropReason;
use dataplane::config::GATEWAY_PORT;
use dataplane::ids::DomainId;

use super::{Daemon, DaemonError, TEST_PANIC_ENV, TestPanic, test_panic, view};
use crate::api::{
    AddressReleased, AddressReserved, ConntrackRow, DnsCounters, FdbCounters, FdbRow, Flushed,
    GatewayCounters, Hello, NetworkRemoved, PacketNatCounters, Reply, Request, Response,
    SocketNatCounters, Stats, WorkerTimes,
};
use crate::state::{NetworkSpec, StateError};

/// How long `stats` waits for the gateway thread's own counters: past it the reply
/// leaves them out (`gateway` null) rather than wait behind a busy gateway.
const STATS_GATEWAY_DEADLINE: std::time::Duration = std::time::Duration::from_millis(150);

impl Daemon {
    /// Applies one request from connection `conn`.
    pub fn handle(&mut self, req: Request, fds: Vec<OwnedFd>, conn: u64) -> Response {
        let what = crate::logging::describe(&req);
        let level = crate::logging::level_of(&req);
        match self.dispatch(req, fds, conn) {
            Ok(v) => {
                log::log!(level, "{what}: done");
                Response::ok(v)
            }
            Err(e) => {
                log::log!(level.min(log::Level::Info), "{what}: refused: {e}");
                Response::err(e)
            }
        }
    }

    pub(super) fn dispatch(
        &mut self,
        req: Request,
        fds: Vec<OwnedFd>,
        conn: u64,
    ) -> Result<Reply, DaemonError> {
        Ok(match req {
            Request::Hello => Reply::Hello(self.hello()),
            Request::NetworkCreate(spec) => self.network_create(&spec)?,
            Request::NetworkLs => Reply::NetworkLs(view::network_ls(&self.state)),
            Request::NetworkInspect { name } => {
                let n = self
                    .state
                    .networks
                    .get(&name)
                    .ok_or(StateError::NoNetwork(name))?;
                Reply::Networks(vec![view::network_inspect(&self.state, n)])
            }
            Request::NetworkRm { name, force } => self.network_rm(name, force)?,
            Request::NetworkUpdate(u) => self.network_update(&u)?,
            Request::NetworkPrune => self.network_prune()?,
            Request::PublishLs { name } => self.publish_ls(&name)?,
            Request::Attach(a) => self.attach(a, fds, conn)?,
            Request::Detach { name, network } => match network {
                Some(net) => self.disconnect(&name, &net)?,
                None => self.detach(&name)?,
            },
            Request::Connect {
                network,
                name,
                ip,
                ip6,
                aliases,
                dns_opts,
                limits,
            } => {
                limits.check()?;
                let r = self.connect(&network, &name, (ip, ip6), aliases, &dns_opts)?;
                if !limits.normalized().is_none() {
                    self.limit_endpoint(&name, &network, &limits, false)?;
                }
                r
            }
            Request::Disconnect { network, name } => self.disconnect(&name, &network)?,
            Request::PortLs => Reply::PortLs(self.port_ls()),
            Request::ContainerLs => Reply::ContainerLs(view::containers(&self.state, |p| {
                self.ports.contains_key(p)
            })),
            Request::FdbShow { network } => Reply::FdbShow(self.fdb_show(network.as_deref())?),
            Request::FdbFlush { network } => Reply::Flushed(self.fdb_flush(network.as_deref())?),
            Request::Stats => Reply::Stats(Box::new(self.stats())),
            Request::Sandbox { name } => {
                let c = self
                    .state
                    .containers
                    .get(&name)
                    .ok_or(StateError::NoContainer(name))?;
                Reply::Sandbox(view::sandbox(&self.state, c))
            }
            Request::UplinkShow => Reply::Uplink(self.uplink_show()),
            Request::UplinkSet(u) => Reply::Uplink(self.uplink_set(u)?),
            Request::Publish { name, specs } => self.publish(&name, &specs)?,
            Request::Unpublish { name, specs } => self.unpublish(&name, &specs)?,
            Request::ConntrackLs => Reply::ConntrackLs(self.conntrack_ls()?),
            Request::ConntrackFlush => Reply::Flushed(self.conntrack_flush()?),
            Request::Capture { port, .. } => return Err(DaemonError::CaptureNotAlone(port)),
            Request::Limit {
                port,
                limits,
                clear,
            } => Reply::Limits(self.limit(&port, &limits, clear)?),
            Request::AddressReserve { network, ip, ipv6 } => {
                self.address_reserve(&network, ip, ipv6)?
            }
            Request::AddressRelease { network, ip } => self.address_release(&network, ip)?,
            Request::Ula => Reply::Ula(self.ula()?),
        })
    }

    fn address_reserve(
        &mut self,
        network: &str,
        want: Option<IpAddr>,
        ipv6: bool,
    ) -> Result<Reply, DaemonError> {
        let mut next = self.state.clone();
        let ip = match want {
            Some(IpAddr::V4(a)) => IpAddr::V4(next.reserve(network, Some(a))?),
            Some(IpAddr::V6(a)) => IpAddr::V6(next.reserve6(network, Some(a))?),
            None if ipv6 => IpAddr::V6(next.reserve6(network, None)?),
            None => IpAddr::V4(next.reserve(network, None)?),
        };
        let n = next
            .networks
            .get(network)
            .ok_or_else(|| StateError::NoNetwork(network.to_string()))?;
        let (prefix, gateway) = match (ip, n.ipv6) {
            (IpAddr::V6(_), Some(v6)) => (v6.subnet.prefix_len(), IpAddr::V6(v6.gateway)),
            _ => (
                n.subnet.map_or(32, |s| s.prefix_len()),
                IpAddr::V4(n.gateway.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)),
            ),
        };
        let reply = AddressReserved {
            network: network.to_string(),
            ip,
            prefix,
            gateway,
        };
        self.save(&next)?;
        self.state = next;
        Ok(Reply::AddressReserved(reply))
    }

    /// The unique local /48, generated and saved the first time it is asked for.
    fn ula(&mut self) -> Result<crate::api::Ula, DaemonError> {
        if let Some(ula) = self.state.ula {
            return Ok(crate::api::Ula { ula });
        }
        let mut next = self.state.clone();
        let ula = next.ensure_ula();
        self.save(&next)?;
        self.state = next;
        Ok(crate::api::Ula { ula })
    }

    fn address_release(&mut self, network: &str, ip: IpAddr) -> Result<Reply, DaemonError> {
        let mut next = self.state.clone();
        let released = match ip {
            IpAddr::V4(a) => next.release(network, a)?,
            IpAddr::V6(a) => next.release6(network, a)?,
        };
        if released {
            self.save(&next)?;
            self.state = next;
        }
        Ok(Reply::AddressReleased(AddressReleased {
            network: network.to_string(),
            ip,
            released,
        }))
    }

    pub(super) fn hello(&self) -> Hello {
        Hello {
            protocol: crate::api::PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            workers: self.rt.workers(),
            offload: self.cfg.offload,
        }
    }

    pub(super) fn network_create(&mut self, spec: &NetworkSpec) -> Result<Reply, DaemonError> {
        if let Some(site) = test_panic(&spec.name) {
            self.panic_as_asked(site);
            return Err(DaemonError::TestPanic);
        }
        let mut next = self.state.clone();
        let n = next.create_network(spec)?.clone();
        self.save(&next)?;
        self.state = next;
        self.apply();
        Ok(Reply::Network(Box::new(view::network_inspect(
            &self.state,
            &n,
        ))))
    }

    /// `network update`: the state changed and saved, then the snapshot and the
    /// gateway's configuration rebuilt (ICC, egress, DNS take effect for the next
    /// frame, flow and query).
    pub(super) fn network_update(
        &mut self,
        u: &crate::state::NetworkUpdate,
    ) -> Result<Reply, DaemonError> {
        let mut next = self.state.clone();
        let n = next.update_network(u)?;
        self.save(&next)?;
        self.state = next;
        self.apply();
        Ok(Reply::Network(Box::new(view::network_inspect(
            &self.state,
            &n,
        ))))
    }

    /// `network prune`: every network without endpoints goes (not the default one).
    pub(super) fn network_prune(&mut self) -> Result<Reply, DaemonError> {
        let names = self.state.prunable();
        let mut next = self.state.clone();
        for n in &names {
            next.remove_network(n, false)?;
        }
        if !names.is_empty() {
            self.save(&next)?;
            self.state = next;
            self.apply();
        }
        Ok(Reply::NetworkPruned(crate::api::NetworkPruned {
            removed: names,
        }))
    }

    /// What a container has published.
    pub(super) fn publish_ls(&self, name: &str) -> Result<Reply, DaemonError> {
        let c = self.state.container(name)?;
        Ok(Reply::Published(
            c.published.iter().map(view::published_entry).collect(),
        ))
    }

    /// Test only: panics on the thread `site` names (see [`TEST_PANIC_ENV`]).
    fn panic_as_asked(&self, site: TestPanic) {
        match site {
            TestPanic::Gateway => self.rt.gateway_do(|_, _| {
                panic!("{TEST_PANIC_ENV}=gateway: panicking on the gateway thread as asked")
            }),
            TestPanic::Worker => self.rt.worker_do(0, |_| {
                panic!("{TEST_PANIC_ENV}=worker: panicking on a worker thread as asked")
            }),
            TestPanic::Connection => {
                panic!("{TEST_PANIC_ENV}=connection: panicking on the connection thread as asked")
            }
        }
    }

    pub(super) fn network_rm(&mut self, name: String, force: bool) -> Result<Reply, DaemonError> {
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
        Ok(Reply::NetworkRemoved(NetworkRemoved {
            removed: name,
            containers_removed: gone,
        }))
    }

    pub(super) fn domain_of(&self, network: Option<&str>) -> Result<Option<u16>, DaemonError> {
        match network {
            Some(n) => Ok(Some(
                self.state
                    .networks
                    .get(n)
                    .ok_or_else(|| StateError::NoNetwork(n.to_string()))?
                    .domain,
            )),
            None => Ok(None),
        }
    }

    pub(super) fn fdb_flush(&mut self, network: Option<&str>) -> Result<Flushed, DaemonError> {
        let domain = self.domain_of(network)?;
        Ok(Flushed {
            flushed: self.rt.fdb.flush(domain.map(DomainId), None),
        })
    }

    pub(super) fn fdb_show(&self, network: Option<&str>) -> Result<Vec<FdbRow>, DaemonError> {
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
        let rows = self
            .rt
            .fdb
            .rows()
            .into_iter()
            .filter(|r| filter.is_none_or(|d| d == r.domain.0))
            .map(|r| {
                let net = nets.get(&r.domain.0);
                FdbRow {
                    mac: r.mac,
                    vlan: net.and_then(|n| n.vlan),
                    network: net.map(|n| n.name.clone()),
                    port: slot_names
                        .get(&r.port.0)
                        .copied()
                        .unwrap_or("?")
                        .to_string(),
                    age_secs: now.saturating_sub(r.last_seen),
                }
            })
            .collect();
        Ok(rows)
    }

    pub(super) fn conntrack_ls(&self) -> Result<Vec<ConntrackRow>, DaemonError> {
        let flows = self.rt.gateway_call(|g, _| g.uplink().flows())?;
        let mut v: Vec<ConntrackRow> = flows
            .into_iter()
            .map(|f| ConntrackRow {
                protocol: f.proto.to_string(),
                inside: f.inside.to_string(),
                outside: f.outside.to_string(),
                remote: None,
                state: f.state,
                expires_in: None,
                uplink: "socket".into(),
            })
            .collect();
        let now = self.rt.epoch.elapsed().as_secs() as u32;
        v.extend(self.rt.nat.table.list(now).into_iter().map(packet_row));
        v.extend(self.rt.nat.table6.list(now).into_iter().map(packet_row));
        Ok(v)
    }

    pub(super) fn conntrack_flush(&mut self) -> Result<Flushed, DaemonError> {
        let n = self
            .rt
            .gateway_call(|g, ctx| g.flush_uplink_flows(ctx.registry))?;
        let m = self.rt.nat.table.flush() + self.rt.nat.table6.flush();
        Ok(Flushed { flushed: n + m })
    }

    pub(super) fn stats(&self) -> Stats {
        self.rt.refresh_kernel_counters();
        let mut ports = vec![view::port_counters(
            "gateway",
            &self.rt.stats(GATEWAY_PORT.0),
        )];
        for (name, p) in &self.ports {
            ports.push(view::port_counters(name, &self.rt.stats(p.slot)));
        }
        // The counters of the workers are atomics; the gateway's own come from its
        // thread, which gets a short while: a busy gateway leaves them out.
        let gw = self
            .rt
            .gateway_call_within(STATS_GATEWAY_DEADLINE, |g, _| {
                (
                    g.stats().clone(),
                    g.uplink().stats.clone(),
                    g.uplink().counts(),
                )
            })
            .ok();
        let gateway = gw.as_ref().map(|(s, _, _)| GatewayCounters {
            frames: s.frames,
            arp_replies: s.arp_replies,
            echo_replies: s.echo_replies,
            dhcp_replies: s.dhcp_replies,
            dhcp_ignored: s.dhcp_ignored,
            icmp_errors: s.icmp_errors,
            routed: s.to_uplink,
            unanswered: s.unanswered,
            no_neighbour: s.no_neighbour,
            nd_replies: s.nd_replies,
            router_adverts: s.router_adverts,
        });
        let nat = gw
            .as_ref()
            .map(|(_, u, (tcp, udp, ping))| SocketNatCounters {
                uplink: "socket".into(),
                tcp_open: *tcp,
                udp_flows: *udp,
                echo_flows: *ping,
                tcp_opened_total: u.tcp_open,
                tcp_refused: u.tcp_refused,
                udp_flows_total: u.udp_flows,
                echo_flows_total: u.ping_flows,
                dropped: u.dropped,
                tcp_handshake_timeouts: u.tcp_handshake_timeouts,
                tcp_idle_timeouts: u.tcp_idle_timeouts,
                refused_quota: u.refused_quota,
                tcp_spliced: u.tcp_spliced,
                splice_fallbacks: u.splice_fallbacks,
                challenge_acks: u.challenge_acks,
                fragments: u.fragments,
            });
        let dns = gw
            .as_ref()
            .map(|(s, _, _)| self.dns_counters(&s.dns))
            .unwrap_or_default();
        let workers = (self.rt.worker_times().into_iter().enumerate())
            .map(|(worker, (busy_ns, idle_ns))| WorkerTimes {
                worker,
                busy_ns,
                idle_ns,
            })
            .collect();
        Stats {
            gateway,
            nat,
            dns,
            workers,
            packet_nat: self.packet_nat_counters(),
            ports,
            fdb: self.fdb_counters(),
            kernel_pairs: self.rt.kernel_pairs().map(|n| n as u64),
            drop_reasons: DropReason::ALL
                .iter()
                .map(|r| r.name().to_string())
                .collect(),
        }
    }

    /// The gateway's DNS counts by domain, named by network (networks since removed,
    /// and networks never served, left out).
    fn dns_counters(&self, by_domain: &[dataplane::gateway::DnsNetCounts]) -> Vec<DnsCounters> {
        let mut rows: Vec<DnsCounters> = self
            .state
            .networks
            .values()
            .filter_map(|n| {
                let c = by_domain.get(usize::from(n.domain))?;
                (c.queries > 0).then(|| DnsCounters {
                    network: n.name.clone(),
                    queries: c.queries,
                    answers: c.answers,
                    forwarded: c.forwarded,
                    failures: c.failures,
                })
            })
            .collect();
        rows.sort_by(|a, b| a.network.cmp(&b.network));
        rows
    }

    pub(super) fn packet_nat_counters(&self) -> PacketNatCounters {
        // Both families' tables, each of `limit` flows.
        let (t, t6) = (&self.rt.nat.table, &self.rt.nat.table6);
        let (c, c6) = (&t.counters, &t6.counters);
        let sum = |a: &std::sync::atomic::AtomicU64, b: &std::sync::atomic::AtomicU64| {
            a.load(Relaxed) + b.load(Relaxed)
        };
        PacketNatCounters {
            flows: t.len() + t6.len(),
            limit: t.max_flows(),
            created: sum(&c.created, &c6.created),
            refused_full: sum(&c.refused_full, &c6.refused_full),
            refused_ports: sum(&c.refused_ports, &c6.refused_ports),
            refused_quota: sum(&c.refused_quota, &c6.refused_quota),
            per_container: t.quota(),
            expired: sum(&c.expired, &c6.expired),
        }
    }

    pub(super) fn fdb_counters(&self) -> FdbCounters {
        let fdb = &self.rt.fdb;
        FdbCounters {
            entries: fdb.len(),
            limit: fdb.total_limit(),
            moves: fdb.moves.load(Relaxed),
            learn_refused: fdb.refused.load(Relaxed),
        }
    }
}

/// A packet-uplink flow of either family as a `conntrack ls` row (`IP:PORT`, IPv6
/// addresses in brackets).
fn packet_row<A: dataplane::nat::Af>(f: dataplane::nat::FlowInfo<A>) -> ConntrackRow {
    use dataplane::wire::IpProtocol;
    let proto = match f.proto {
        IpProtocol::Tcp => "tcp",
        IpProtocol::Udp => "udp",
        IpProtocol::Icmpv6 => "icmpv6",
        _ => "icmp",
    };
    let at = |a: A::Addr, p: u16| {
        let a = a.to_string();
        if a.contains(':') {
            format!("[{a}]:{p}")
        } else {
            format!("{a}:{p}")
        }
    };
    ConntrackRow {
        protocol: proto.into(),
        inside: at(f.inside.src, f.inside.sport),
        outside: at(f.outside.dst, f.outside.dport),
        remote: Some(at(f.inside.dst, f.inside.dport)),
        state: f.state.into(),
        expires_in: Some(f.expires_in),
        uplink: "packet".into(),
    }
}
