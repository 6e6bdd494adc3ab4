//! The gateway's DNS: queries from containers (UDP on the gateway, or TCP collected by
//! the socket uplink) go to the sans-I/O [`DnsServer`]; what it decides becomes
//! [`Action`]s. Each query in flight holds a place in its container's DNS quota until
//! it is answered or given up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::action::{Action, Actions};
use super::dispatch::Gateway;
use crate::bridge::DropReason;
use crate::dns::{self, ClientRef, DnsConfig, DnsServer, Transport};
use crate::uplink::quota::{ContainerId, FlowKind, Quotas, UplinkLimits};
use crate::uplink::socket::{DnsTcpRequest, TcpConnId, build_udp};
use crate::wire::dns::RawHeader;

/// Where a DNS reply goes: a UDP client by its address (either family), its port and
/// the gateway address it asked; a TCP one by its connection. Each with the container
/// its query counts on ([`DnsClient::tenant`]).
#[derive(Debug, Clone, Copy)]
enum DnsClient {
    Udp {
        who: ContainerId<IpAddr>,
        port: u16,
        server: IpAddr,
        /// The port's IPAM address (its IPv4 one, else its IPv6 one; the source where
        /// the port has none): a container's queries share one quota whichever family
        /// or source address they come from.
        tenant: ContainerId<IpAddr>,
    },
    Tcp {
        who: ContainerId<IpAddr>,
        conn: TcpConnId,
    },
}

impl DnsClient {
    fn who(&self) -> ContainerId<IpAddr> {
        match self {
            DnsClient::Udp { who, .. } | DnsClient::Tcp { who, .. } => *who,
        }
    }

    /// Who the query counts on in the DNS quotas.
    fn tenant(&self) -> ContainerId<IpAddr> {
        match self {
            DnsClient::Udp { tenant, .. } => *tenant,
            DnsClient::Tcp { who, .. } => *who,
        }
    }
}

/// The DNS server and the clients of the queries it has in flight.
pub(super) struct Resolver {
    server: DnsServer,
    clients: HashMap<u64, DnsClient>,
    next: u64,
    /// DNS queries each container (each of its addresses) has in flight.
    quota: Quotas<IpAddr>,
}

impl Resolver {
    pub(super) fn new(limits: UplinkLimits) -> Resolver {
        Resolver {
            server: DnsServer::new(DnsConfig::default(), 0),
            clients: HashMap::new(),
            next: 1,
            quota: Quotas::new(limits),
        }
    }

    pub(super) fn set_upstreams(&mut self, n: usize) {
        self.server.set_upstreams(n);
    }

    /// When the server next needs [`Gateway::poll_dns`].
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.server.next_deadline()
    }

    /// Ends a query's life: its client, and its place in the container's quota.
    fn forget(&mut self, client: ClientRef) -> Option<DnsClient> {
        let c = self.clients.remove(&client.0)?;
        self.quota.release(c.tenant(), FlowKind::Dns, false);
        Some(c)
    }
}

impl Gateway {
    /// A UDP DNS query from `who`'s port `sport` to its gateway's address `server`,
    /// which came in on `port`.
    pub(super) fn dns_udp(
        &mut self,
        (who, sport, server): (ContainerId<IpAddr>, u16, IpAddr),
        port: u16,
        msg: &[u8],
        now: Instant,
        out: &mut Actions,
    ) {
        let lease = self.cfg.leases.get(&(who.domain, port));
        let owned = lease.and_then(|l| l.v4.map(IpAddr::V4).or(l.v6.map(IpAddr::V6)));
        let tenant = ContainerId {
            domain: who.domain,
            ip: owned.unwrap_or(who.ip),
        };
        let c = DnsClient::Udp {
            who,
            port: sport,
            server,
            tenant,
        };
        self.dns_query(c, (port, Transport::Udp), msg, now, out);
    }

    /// A DNS-over-TCP message the socket uplink collected (refusals of an unknown
    /// sender count on `port`).
    pub fn dns_tcp_query(&mut self, r: DnsTcpRequest, port: u16, now: Instant, out: &mut Actions) {
        let c = DnsClient::Tcp {
            who: r.from,
            conn: r.conn,
        };
        self.dns_query(c, (port, Transport::Tcp), &r.msg, now, out);
    }

    fn dns_query(
        &mut self,
        c: DnsClient,
        (port, transport): (u16, Transport),
        msg: &[u8],
        now: Instant,
        out: &mut Actions,
    ) {
        let domain = usize::from(c.who().domain);
        let Some(names) = self.cfg.names.get(domain).cloned().flatten() else {
            return;
        };
        self.stats.dns_of(c.who().domain).queries += 1;
        let Some(client) = self.dns_client(c, port, out) else {
            self.stats.dns_of(c.who().domain).failures += 1;
            return;
        };
        let from = Some(c.who().ip);
        let a = (self.resolver.server).query_from(&names, from, msg, transport, client, now);
        match a {
            dns::Action::Nothing => {
                self.resolver.forget(client);
            }
            dns::Action::Forward { .. } => self.stats.dns_of(c.who().domain).forwarded += 1,
            dns::Action::Reply { .. } => {}
        }
        self.dns_act(a, out);
    }

    /// A handle for a query in flight, or None (refused and counted: the container has
    /// its share of queries in flight, or everyone together the global limit).
    fn dns_client(&mut self, c: DnsClient, port: u16, out: &mut Actions) -> Option<ClientRef> {
        let who = c.tenant();
        let r = &mut self.resolver;
        if r.clients.len() >= dns::MAX_IN_FLIGHT_LIMIT
            || r.quota.admit(who, FlowKind::Dns, false).is_err()
        {
            out.push(Action::Drop {
                port: self.port_of(who, port),
                reason: DropReason::DnsQuota,
            });
            return None;
        }
        let id = r.next;
        r.next = r.next.wrapping_add(1);
        r.clients.insert(id, c);
        Some(ClientRef(id))
    }

    /// Turns what the DNS server decided into actions.
    fn dns_act(&mut self, a: dns::Action, out: &mut Actions) {
        match a {
            dns::Action::Nothing => {}
            dns::Action::Reply { client, bytes, .. } => {
                let c = self.resolver.forget(client);
                if let Some(c) = &c {
                    self.count_answer(c.who().domain, &bytes);
                }
                match c {
                    Some(DnsClient::Udp {
                        who, port, server, ..
                    }) => self.udp_answer((who, port, server), &bytes, out),
                    Some(DnsClient::Tcp { conn, .. }) => {
                        out.push(Action::DnsTcpReply { conn, bytes })
                    }
                    None => {}
                }
            }
            dns::Action::Forward {
                upstream,
                transport,
                id,
                bytes,
            } => out.push(Action::Forward {
                upstream,
                transport,
                id,
                bytes,
            }),
        }
    }

    /// Counts an answer to one of `domain`'s containers (a failure when it says
    /// SERVFAIL or REFUSED).
    fn count_answer(&mut self, domain: u16, bytes: &[u8]) {
        let failed = RawHeader::parse(bytes).is_some_and(|h| matches!(h.rcode(), 2 | 5));
        let c = self.stats.dns_of(domain);
        c.answers += 1;
        c.failures += u64::from(failed);
    }

    /// Sends a DNS answer over UDP from `server`:53 to `who`'s `port`, in the family
    /// the query came in.
    fn udp_answer(
        &mut self,
        (who, port, server): (ContainerId<IpAddr>, u16, IpAddr),
        bytes: &[u8],
        out: &mut Actions,
    ) {
        match (server, who.ip) {
            (IpAddr::V4(gw), IpAddr::V4(ip)) => {
                if let Some(p) = build_udp(gw, 53, ip, port, bytes) {
                    self.deliver_ip(who.domain, &p, out);
                }
            }
            (IpAddr::V6(gw), IpAddr::V6(ip)) => {
                if let Some(p) = super::udp6_packet((gw, 53), (ip, port), bytes) {
                    self.deliver_ip6(who.domain, &p, out);
                }
            }
            _ => {}
        }
    }

    /// An upstream resolver's answer.
    pub fn upstream_reply(&mut self, upstream: usize, msg: &[u8], now: Instant, out: &mut Actions) {
        if let Some(a) = self.resolver.server.upstream_reply(upstream, msg, now) {
            self.dns_act(a, out);
        }
    }

    /// A query could not be sent to an upstream resolver, or its TCP connection failed
    /// before answering: the next resolver is asked.
    pub fn upstream_failed(&mut self, upstream: usize, id: u16, now: Instant, out: &mut Actions) {
        if let Some(a) = self.resolver.server.upstream_failed(upstream, id, now) {
            self.dns_act(a, out);
        }
    }

    /// Resolver `upstream` refused UDP (its port is closed): its queries sent over UDP
    /// go on to the next resolver, or get SERVFAIL, at once.
    pub fn upstream_refused(&mut self, upstream: usize, now: Instant, out: &mut Actions) {
        let mut actions = Vec::new();
        self.resolver
            .server
            .upstream_refused(upstream, now, &mut actions);
        for a in actions {
            self.dns_act(a, out);
        }
    }

    /// Retries and gives up queries whose upstream timed out.
    pub(super) fn poll_dns(&mut self, now: Instant, out: &mut Actions) {
        let mut actions = Vec::new();
        self.resolver.server.poll(now, &mut actions);
        for a in actions {
            self.dns_act(a, out);
        }
    }
}
