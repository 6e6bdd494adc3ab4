//! The server: local answers, and the state of forwarded queries.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use hickory_proto::op::{Header, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::message::{
    CLASSIC_UDP_LIMIT, MAX_MESSAGE, RawHeader, encode_within, header_only_error, response_to,
    set_id,
};
use super::names::{Local, Names};
use super::{Action, ClientRef, DnsConfig, Transport};

/// Names whose round-robin position is remembered; the table is cleared when full.
pub const MAX_ROTATION_NAMES: usize = 4096;

/// The query types whose answers rotate, each on a counter of its own per name, so a
/// client asking A and AAAA together sees each family turn by one per query.
#[derive(Debug, Clone, Copy)]
enum Rotation {
    A,
    Aaaa,
    Any,
}

impl Rotation {
    const TYPES: usize = 3;

    fn of(qtype: RecordType) -> Rotation {
        match qtype {
            RecordType::A => Rotation::A,
            RecordType::AAAA => Rotation::Aaaa,
            _ => Rotation::Any,
        }
    }
}
/// The most forwarded queries [`DnsConfig::max_in_flight`] may allow: a quarter of the
/// id space, so a fresh id for one resolver is always found quickly.
pub const MAX_IN_FLIGHT_LIMIT: usize = 16384;

/// Random draws before falling back to a scan for a free upstream id.
const ID_TRIES: usize = 16;

/// Counters since the server was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries read (header parsed, QR clear), whatever the outcome.
    pub queries: u64,
    /// Queries answered from the names table (including NODATA).
    pub local: u64,
    /// Queries sent upstream (first attempt only).
    pub forwarded: u64,
    /// Upstream answers relayed to clients.
    pub relayed: u64,
    /// SERVFAIL answers: every resolver failed, none configured, or internal network.
    pub servfail: u64,
    /// REFUSED answers because [`DnsConfig::max_in_flight`] queries were in flight.
    pub refused_in_flight: u64,
    /// FORMERR answers.
    pub formerr: u64,
    /// NOTIMP answers (opcode other than QUERY).
    pub notimp: u64,
    /// Messages dropped unanswered: shorter than a header, or responses.
    pub dropped: u64,
    /// Upstream attempts that timed out.
    pub upstream_timeouts: u64,
    /// Upstream attempts that failed otherwise: SERVFAIL/REFUSED, unparseable, or a
    /// failure the caller reported.
    pub upstream_errors: u64,
    /// Upstream messages matching no query in flight (late, duplicate or spoofed).
    pub ignored_replies: u64,
}

/// A forwarded query waiting for an upstream answer.
#[derive(Debug)]
struct Pending {
    client: ClientRef,
    transport: Transport,
    /// The client's id, put back into the answer.
    client_id: u16,
    /// Largest reply the client takes.
    limit: usize,
    /// The client's query, parsed (for the question and error answers).
    request: Message,
    /// The client's query bytes; the id is rewritten for each attempt.
    bytes: Vec<u8>,
    upstream_transport: Transport,
    /// Key of this attempt in `deadlines`.
    deadline: (Instant, u64),
    /// The resolvers this query may ask, in order (None: every one, from 0), and the
    /// place in that list of the one asked now.
    route: Option<Vec<usize>>,
    hop: usize,
}

/// The embedded DNS server of every network; see the [module docs](super).
#[derive(Debug)]
pub struct DnsServer {
    cfg: DnsConfig,
    upstreams: usize,
    /// (upstream index, upstream id) -> query.
    pending: HashMap<(usize, u16), Pending>,
    /// (deadline, sequence) -> key in `pending`; exactly one entry per pending query.
    deadlines: BTreeMap<(Instant, u64), (usize, u16)>,
    seq: u64,
    /// Per name, where the next answer list starts, one counter per query type
    /// ([`Rotation`]).
    rotation: HashMap<Box<str>, [u32; Rotation::TYPES]>,
    stats: DnsStats,
}

impl DnsServer {
    /// A server forwarding to `upstreams` resolvers (numbered from 0 in
    /// [`Action::Forward`]; the caller keeps their addresses).
    pub fn new(cfg: DnsConfig, upstreams: usize) -> Self {
        let cfg = DnsConfig {
            max_in_flight: cfg.max_in_flight.min(MAX_IN_FLIGHT_LIMIT),
            ..cfg
        };
        Self {
            cfg,
            upstreams,
            pending: HashMap::new(),
            deadlines: BTreeMap::new(),
            seq: 0,
            rotation: HashMap::new(),
            stats: DnsStats::default(),
        }
    }

    /// The configuration in use (`max_in_flight` capped).
    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    /// Changes the number of upstream resolvers (the host's resolv.conf changed).
    /// Queries in flight finish their current attempt; failover skips resolvers that
    /// no longer exist.
    pub fn set_upstreams(&mut self, upstreams: usize) {
        self.upstreams = upstreams;
    }

    /// Forwarded queries waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn stats(&self) -> DnsStats {
        self.stats
    }

    /// When [`poll`](Self::poll) next has work (the earliest upstream timeout).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|(&(t, _), _)| t)
    }

    /// Checks a client's message and parses it: its id and the request, or the error
    /// reply to send (None: dropped without one).
    fn parse_query(&mut self, msg: &[u8]) -> Result<(u16, Message), Option<Vec<u8>>> {
        let Some(head) = RawHeader::parse(msg) else {
            self.stats.dropped += 1;
            return Err(None);
        };
        if head.is_response() {
            self.stats.dropped += 1;
            return Err(None);
        }
        self.stats.queries += 1;
        if head.opcode() != 0 {
            self.stats.notimp += 1;
            return Err(Some(header_only_error(&head, ResponseCode::NotImp.low())));
        }
        if head.qdcount != 1 || !head.counts_fit(msg.len()) {
            self.stats.formerr += 1;
            return Err(Some(header_only_error(&head, ResponseCode::FormErr.low())));
        }
        match Message::from_vec(msg) {
            Ok(request) if !request.queries.is_empty() => Ok((head.id, request)),
            _ => {
                self.stats.formerr += 1;
                Err(Some(header_only_error(&head, ResponseCode::FormErr.low())))
            }
        }
    }

    /// One query from a client of the network whose table is `names`. Returns the
    /// reply, a message to forward upstream, or nothing (dropped).
    pub fn query(
        &mut self,
        names: &Names,
        msg: &[u8],
        transport: Transport,
        client: ClientRef,
        now: Instant,
    ) -> Action {
        self.query_from(names, None, msg, transport, client, now)
    }

    /// As [`query`](Self::query) for a client at address `from`: its own names
    /// (`--add-host`), search domains and upstream resolvers (`--dns`) apply, else the
    /// network's ([`Names::route`]).
    pub fn query_from(
        &mut self,
        names: &Names,
        from: Option<std::net::IpAddr>,
        msg: &[u8],
        transport: Transport,
        client: ClientRef,
        now: Instant,
    ) -> Action {
        let reply = |bytes| Action::Reply {
            client,
            transport,
            bytes,
        };
        let (client_id, request) = match self.parse_query(msg) {
            Ok(q) => q,
            Err(Some(error)) => return reply(error),
            Err(None) => return Action::Nothing,
        };
        // parse_query made sure there is one.
        let Some(question) = request.queries.first() else {
            return Action::Nothing;
        };
        let limit = self.reply_limit(transport, &request);
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return reply(self.error_reply(&request, ResponseCode::BADVERS, limit));
        }

        let class_ok = matches!(question.query_class(), DNSClass::IN | DNSClass::ANY);
        if let Some(local) = names
            .lookup_from(question.name(), from)
            .filter(|_| class_ok)
        {
            self.stats.local += 1;
            return reply(self.local_answer(&request, question, local, limit));
        }

        let route: Option<Vec<usize>> = names
            .route(from)
            .map(|r| r.iter().copied().filter(|u| *u < self.upstreams).collect());
        let first = match &route {
            Some(r) => r.first().copied(),
            None => (self.upstreams > 0).then_some(0),
        };
        let Some(first) = first.filter(|_| names.forwards()) else {
            self.stats.servfail += 1;
            return reply(self.error_reply(&request, ResponseCode::ServFail, limit));
        };
        if self.pending.len() >= self.cfg.max_in_flight {
            self.stats.refused_in_flight += 1;
            return reply(self.error_reply(&request, ResponseCode::Refused, limit));
        }
        self.stats.forwarded += 1;
        let pending = Pending {
            client,
            transport,
            client_id,
            limit,
            request,
            bytes: msg.to_vec(),
            upstream_transport: Transport::Udp,
            deadline: (now, 0),
            route,
            hop: 0,
        };
        self.attempt(pending, first, Transport::Udp, now)
    }

    /// A message from upstream resolver `upstream` (a UDP payload, or a TCP message
    /// without its length prefix). Returns the reply to the client, a new attempt, or
    /// `None` when the message answers nothing in flight.
    ///
    /// The caller vouches for `upstream`: pass only messages whose source address and
    /// port are that resolver's (a UDP socket `connect`ed to it, or the TCP connection
    /// opened to it), otherwise anyone who can reach the socket only has to guess an id.
    pub fn upstream_reply(&mut self, upstream: usize, msg: &[u8], now: Instant) -> Option<Action> {
        let Some(key) = self.match_reply(upstream, msg) else {
            self.stats.ignored_replies += 1;
            return None;
        };
        let head = RawHeader::parse(msg)?;
        let p = self.take(key)?;
        let parsed = if head.counts_fit(msg.len()) {
            Message::from_vec(msg).ok()
        } else {
            None
        };
        let Some(parsed) = parsed else {
            self.stats.upstream_errors += 1;
            return Some(self.next_upstream(p, upstream, now));
        };
        if matches!(
            parsed.response_code,
            ResponseCode::ServFail | ResponseCode::Refused
        ) {
            self.stats.upstream_errors += 1;
            return Some(self.next_upstream(p, upstream, now));
        }
        if head.truncated()
            && p.transport == Transport::Tcp
            && p.upstream_transport == Transport::Udp
        {
            return Some(self.attempt(p, upstream, Transport::Tcp, now));
        }

        self.stats.relayed += 1;
        let mut bytes = msg.to_vec();
        set_id(&mut bytes, p.client_id);
        if bytes.len() > p.limit {
            let mut cut = parsed.truncate();
            cut.metadata.id = p.client_id;
            bytes = match cut.to_vec() {
                Ok(b) if b.len() <= p.limit => b,
                _ => fallback_error(&p.request, ResponseCode::ServFail),
            };
        }
        Some(Action::Reply {
            client: p.client,
            transport: p.transport,
            bytes,
        })
    }

    /// The caller could not send attempt `id` to `upstream`, or its TCP connection
    /// failed before an answer: move on to the next resolver at once.
    pub fn upstream_failed(&mut self, upstream: usize, id: u16, now: Instant) -> Option<Action> {
        let p = self.take((upstream, id))?;
        self.stats.upstream_errors += 1;
        Some(self.next_upstream(p, upstream, now))
    }

    /// Resolver `upstream` refused UDP (ICMP port unreachable on the socket every UDP
    /// attempt to it shares): each of those attempts moves on to the next resolver at
    /// once, or gets SERVFAIL after the last.
    pub fn upstream_refused(&mut self, upstream: usize, now: Instant, out: &mut Vec<Action>) {
        let lost: Vec<(usize, u16)> = self
            .pending
            .iter()
            .filter(|(k, p)| k.0 == upstream && p.upstream_transport == Transport::Udp)
            .map(|(k, _)| *k)
            .collect();
        for key in lost {
            if let Some(p) = self.take(key) {
                self.stats.upstream_errors += 1;
                out.push(self.next_upstream(p, upstream, now));
            }
        }
    }

    /// Handles every attempt whose timeout is at or before `now`: the next resolver is
    /// asked, or the client gets SERVFAIL.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some((&(when, _), &key)) = self.deadlines.first_key_value() {
            if when > now {
                break;
            }
            let Some(p) = self.take(key) else {
                // Unreachable: `take` removes both entries together.
                self.deadlines.pop_first();
                continue;
            };
            self.stats.upstream_timeouts += 1;
            out.push(self.next_upstream(p, key.0, now));
        }
    }

    /// The reply size limit for a query.
    fn reply_limit(&self, transport: Transport, request: &Message) -> usize {
        match (transport, &request.edns) {
            (Transport::Tcp, _) => MAX_MESSAGE,
            (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
            (Transport::Udp, Some(e)) => usize::from(e.max_payload())
                .min(usize::from(self.cfg.max_udp_payload))
                .max(CLASSIC_UDP_LIMIT),
        }
    }

    fn error_reply(&self, request: &Message, rcode: ResponseCode, limit: usize) -> Vec<u8> {
        let mut resp = response_to(request, rcode, self.cfg.max_udp_payload);
        encode_within(&mut resp, limit).unwrap_or_else(|| fallback_error(request, rcode))
    }

    fn local_answer(
        &mut self,
        request: &Message,
        question: &Query,
        local: Local<'_>,
        limit: usize,
    ) -> Vec<u8> {
        let mut resp = response_to(request, ResponseCode::NoError, self.cfg.max_udp_payload);
        resp.metadata.authoritative = true;
        let qtype = question.query_type();
        let owner = question.name();
        let ttl = self.cfg.ttl;
        match local {
            Local::Addrs { key, addrs }
                if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) =>
            {
                // The family asked for, rotated by itself.
                let want: Vec<IpAddr> = (addrs.iter().copied())
                    .filter(|a| match qtype {
                        RecordType::A => a.is_ipv4(),
                        RecordType::AAAA => a.is_ipv6(),
                        _ => true,
                    })
                    .collect();
                let start = self.rotation_start(key, Rotation::of(qtype), want.len());
                let (head, tail) = want.split_at(start.min(want.len()));
                for ip in tail.iter().chain(head) {
                    let rdata = match ip {
                        IpAddr::V4(v) => RData::A(A(*v)),
                        IpAddr::V6(v) => RData::AAAA(AAAA(*v)),
                    };
                    resp.add_answer(Record::from_rdata(owner.clone(), ttl, rdata));
                }
            }
            Local::Ptr(targets) if matches!(qtype, RecordType::PTR | RecordType::ANY) => {
                for t in targets {
                    resp.add_answer(Record::from_rdata(
                        owner.clone(),
                        ttl,
                        RData::PTR(PTR(t.clone())),
                    ));
                }
            }
            // Any other type of a local name: NODATA.
            _ => {}
        }
        encode_within(&mut resp, limit)
            .unwrap_or_else(|| fallback_error(request, ResponseCode::ServFail))
    }

    /// Where this query's answer list starts, one further than the last query's of
    /// the same type.
    fn rotation_start(&mut self, key: &str, ty: Rotation, n: usize) -> usize {
        if n < 2 {
            return 0;
        }
        let counters = match self.rotation.get_mut(key) {
            Some(c) => c,
            None => {
                if self.rotation.len() >= MAX_ROTATION_NAMES {
                    self.rotation.clear();
                }
                self.rotation.entry(key.into()).or_default()
            }
        };
        let Some(c) = counters.get_mut(ty as usize) else {
            return 0;
        };
        let turn = *c;
        *c = c.wrapping_add(1);
        turn as usize % n
    }

    /// Sends `p` to `upstream` over `via` with a fresh id, or answers SERVFAIL when no
    /// id is free (cannot happen below [`MAX_IN_FLIGHT_LIMIT`]).
    fn attempt(&mut self, mut p: Pending, upstream: usize, via: Transport, now: Instant) -> Action {
        let Some(id) = self.fresh_id(upstream) else {
            return self.servfail(p);
        };
        set_id(&mut p.bytes, id);
        p.upstream_transport = via;
        self.seq = self.seq.wrapping_add(1);
        let when = now.checked_add(self.cfg.upstream_timeout).unwrap_or(now);
        p.deadline = (when, self.seq);
        let bytes = p.bytes.clone();
        self.deadlines.insert(p.deadline, (upstream, id));
        self.pending.insert((upstream, id), p);
        Action::Forward {
            upstream,
            transport: via,
            id,
            bytes,
        }
    }

    /// After `failed` did not answer: the next resolver, or SERVFAIL after the last.
    fn next_upstream(&mut self, mut p: Pending, failed: usize, now: Instant) -> Action {
        p.hop = p.hop.saturating_add(1);
        let next = match &p.route {
            Some(r) => r.get(p.hop).copied(),
            None => Some(failed.saturating_add(1)),
        };
        match next.filter(|n| *n < self.upstreams) {
            Some(n) => self.attempt(p, n, Transport::Udp, now),
            None => self.servfail(p),
        }
    }

    fn servfail(&mut self, p: Pending) -> Action {
        self.stats.servfail += 1;
        Action::Reply {
            client: p.client,
            transport: p.transport,
            bytes: self.error_reply(&p.request, ResponseCode::ServFail, p.limit),
        }
    }

    fn take(&mut self, key: (usize, u16)) -> Option<Pending> {
        let p = self.pending.remove(&key)?;
        self.deadlines.remove(&p.deadline);
        Some(p)
    }

    fn fresh_id(&self, upstream: usize) -> Option<u16> {
        for _ in 0..ID_TRIES {
            let id: u16 = rand::random();
            if !self.pending.contains_key(&(upstream, id)) {
                return Some(id);
            }
        }
        let start: u16 = rand::random();
        (0..=u16::MAX)
            .map(|i| start.wrapping_add(i))
            .find(|id| !self.pending.contains_key(&(upstream, *id)))
    }

    /// The key of the query `msg` answers: a response from `upstream` with the id of
    /// an attempt sent there, opcode QUERY, and the same question (name compared
    /// without case, type, class).
    fn match_reply(&self, upstream: usize, msg: &[u8]) -> Option<(usize, u16)> {
        let head = RawHeader::parse(msg)?;
        if !head.is_response() || head.opcode() != 0 || head.qdcount != 1 {
            return None;
        }
        let key = (upstream, head.id);
        let p = self.pending.get(&key)?;
        let mut decoder = BinDecoder::new(msg);
        Header::read(&mut decoder).ok()?;
        let q = Query::read(&mut decoder).ok()?;
        let asked = p.request.queries.first()?;
        (q.name() == asked.name()
            && q.query_type() == asked.query_type()
            && q.query_class() == asked.query_class())
        .then_some(key)
    }
}

/// The header-only form of an error reply, for when encoding the full one failed.
fn fallback_error(request: &Message, rcode: ResponseCode) -> Vec<u8> {
    let flags = (u16::from(u8::from(request.op_code)) & 0x0f) << 11
        | if request.recursion_desired { 0x0100 } else { 0 };
    let head = RawHeader {
        id: request.id,
        flags,
        qdcount: 0,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    };
    header_only_error(&head, rcode.low())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use hickory_proto::op::{Edns, MessageType, OpCode};
    use hickory_proto::rr::Name;

    use super::super::fixtures::*;
    use super::super::{NamesBuilder, names::HOST_NAME};
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
    const WEB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    const DB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);
    const CACHE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 4);
    const C: ClientRef = ClientRef(7);

    fn table() -> Names {
        let mut b = NamesBuilder::new();
        b.gateway(GW).search_domain("mynet").unwrap();
        b.container("web", WEB).unwrap();
        b.container("db", DB).unwrap();
        b.container("cache", CACHE).unwrap();
        for ip in [WEB, DB, CACHE] {
            b.alias("api", ip).unwrap();
        }
        b.build()
    }

    fn bridge_table() -> Names {
        let mut b = NamesBuilder::new();
        b.gateway(GW).forward_only(true);
        b.container("web", WEB).unwrap();
        b.build()
    }

    fn internal_table() -> Names {
        let mut b = NamesBuilder::new();
        b.gateway(GW).forward(false);
        b.container("web", WEB).unwrap();
        b.build()
    }

    fn server(upstreams: usize) -> DnsServer {
        DnsServer::new(DnsConfig::default(), upstreams)
    }

    fn query_bytes(id: u16, name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    /// An upstream's answer to the forwarded message `fwd`.
    fn answer_to(fwd: &[u8], rcode: ResponseCode, addrs: &[Ipv4Addr], tc: bool) -> Vec<u8> {
        let q = Message::from_vec(fwd).unwrap();
        let mut r = Message::new(q.id, MessageType::Response, OpCode::Query);
        r.metadata.response_code = rcode;
        r.metadata.truncation = tc;
        r.metadata.recursion_available = true;
        r.add_queries(q.queries.iter().cloned());
        let owner = q.queries[0].name().clone();
        for ip in addrs {
            r.add_answer(Record::from_rdata(owner.clone(), 60, RData::A(A(*ip))));
        }
        r.to_vec().unwrap()
    }

    fn reply(a: Action) -> (Transport, Vec<u8>) {
        match a {
            Action::Reply {
                client,
                transport,
                bytes,
            } => {
                assert_eq!(client, C);
                (transport, bytes)
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn parsed(a: Action) -> Message {
        let (_, b) = reply(a);
        Message::from_vec(&b).unwrap()
    }

    fn forward(a: Action) -> (usize, Transport, u16, Vec<u8>) {
        match a {
            Action::Forward {
                upstream,
                transport,
                id,
                bytes,
            } => {
                assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), id);
                (upstream, transport, id, bytes)
            }
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    fn a_answers(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .map(|r| match &r.data {
                RData::A(A(ip)) => *ip,
                other => panic!("not an A record: {other:?}"),
            })
            .collect()
    }

    fn udp(s: &mut DnsServer, names: &Names, msg: &[u8], now: Instant) -> Action {
        s.query(names, msg, Transport::Udp, C, now)
    }

    #[test]
    fn dig_query_answered_locally() {
        let mut s = server(1);
        let m = parsed(udp(&mut s, &table(), &DIG_WEB, Instant::now()));
        assert_eq!(m.id, 0x50d6);
        assert_eq!(m.message_type, MessageType::Response);
        assert!(m.authoritative && m.recursion_desired && m.recursion_available);
        assert!(!m.truncation);
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name().to_ascii(), "web.");
        assert_eq!(a_answers(&m), vec![WEB]);
        assert_eq!(m.answers[0].ttl, 10);
        assert_eq!(m.answers[0].name.to_ascii(), "web.");
        let edns = m
            .edns
            .as_ref()
            .expect("an OPT record answers an EDNS query");
        assert_eq!(edns.max_payload(), 1232);
        assert_eq!(s.stats().local, 1);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn local_answer_bytes() {
        let mut s = server(1);
        let (t, b) = reply(udp(&mut s, &table(), &DIG_WEB_PLAIN, Instant::now()));
        assert_eq!(t, Transport::Udp);
        #[rustfmt::skip]
        let want = [
            0x23, 0xa7, 0x85, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // QR AA RD RA
            0x03, 0x77, 0x65, 0x62, 0x00, 0x00, 0x01, 0x00, 0x01, // web. A IN
            0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x04, // ttl 10
            172, 18, 0, 2,
        ];
        assert_eq!(b, want);
    }

    #[test]
    fn no_opt_without_edns() {
        let mut s = server(1);
        let m = parsed(udp(&mut s, &table(), &DIG_WEB_NOEDNS, Instant::now()));
        assert_eq!(m.id, 0x88b8);
        assert!(m.edns.is_none());
        assert_eq!(a_answers(&m), vec![WEB]);
    }

    #[test]
    fn ttl_is_configurable() {
        let cfg = DnsConfig {
            ttl: 600,
            ..DnsConfig::default()
        };
        let mut s = DnsServer::new(cfg, 1);
        let m = parsed(udp(&mut s, &table(), &DIG_WEB, Instant::now()));
        assert_eq!(m.answers[0].ttl, 600);
    }

    #[test]
    fn alias_round_robin_per_query() {
        let mut s = server(1);
        let names = table();
        let now = Instant::now();
        let mut firsts = Vec::new();
        for i in 0..4u16 {
            let m = parsed(udp(
                &mut s,
                &names,
                &query_bytes(i, "API", RecordType::A, None),
                now,
            ));
            let got = a_answers(&m);
            assert_eq!(got.len(), 3);
            firsts.push(got[0]);
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, vec![WEB, DB, CACHE]);
            // Rotation keeps the order, only the start moves.
            let start = [WEB, DB, CACHE]
                .iter()
                .position(|ip| *ip == got[0])
                .unwrap();
            assert_eq!(got[1], [WEB, DB, CACHE][(start + 1) % 3]);
        }
        assert_eq!(firsts, vec![WEB, DB, CACHE, WEB]);
        // Another name has its own counter; the alias under the search domain shares it.
        let m = parsed(udp(
            &mut s,
            &names,
            &query_bytes(9, "api.mynet", RecordType::A, None),
            now,
        ));
        assert_eq!(a_answers(&m)[0], DB);
        let m = parsed(udp(
            &mut s,
            &names,
            &query_bytes(9, "web", RecordType::A, None),
            now,
        ));
        assert_eq!(a_answers(&m), vec![WEB]);
    }

    #[test]
    fn rotation_table_is_bounded() {
        let mut b = NamesBuilder::new();
        for i in 0..(MAX_ROTATION_NAMES + 10) {
            b.alias(&format!("n{i}"), WEB).unwrap();
            b.alias(&format!("n{i}"), DB).unwrap();
        }
        let names = b.build();
        let mut s = server(1);
        let now = Instant::now();
        for i in 0..(MAX_ROTATION_NAMES + 10) {
            let q = query_bytes(1, &format!("n{i}"), RecordType::A, None);
            let _ = udp(&mut s, &names, &q, now);
            assert!(s.rotation.len() <= MAX_ROTATION_NAMES);
        }
    }

    #[test]
    fn mixed_case_question_keeps_its_case() {
        let mut s = server(1);
        let (_, b) = reply(udp(&mut s, &table(), &DIG_MIXED_CASE, Instant::now()));
        // The question is echoed byte for byte, and the answer's owner points at it.
        assert_eq!(&b[12..27], &DIG_MIXED_CASE[12..27]);
        assert_eq!(&b[27..29], &[0xc0, 0x0c]);
        let m = Message::from_vec(&b).unwrap();
        assert!(
            m.answers[0]
                .name
                .eq_case(&Name::from_ascii("WeB.MyNet.").unwrap())
        );
        assert_eq!(a_answers(&m), vec![WEB]);
    }

    /// `api` with two addresses of each family: WEB and DB, and their IPv6 pair.
    fn dual_stack_api() -> (Names, std::net::Ipv6Addr, std::net::Ipv6Addr) {
        let (a6, b6): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (
            "2001:db8:1::2".parse().unwrap(),
            "2001:db8:1::3".parse().unwrap(),
        );
        let mut b = Names::builder();
        b.gateway(GW).gateway(a6);
        for (v4, v6) in [(WEB, a6), (DB, b6)] {
            b.alias("api", v4).unwrap();
            b.alias("api", v6).unwrap();
        }
        (b.build(), a6, b6)
    }

    #[test]
    fn aaaa_and_a_of_a_dual_stack_name_each_rotate() {
        let (t, a6, b6) = dual_stack_api();
        let mut s = server(1);
        let aaaa = |s: &mut DnsServer, id| {
            let q = query_bytes(id, "api", RecordType::AAAA, None);
            let m = parsed(udp(s, &t, &q, Instant::now()));
            m.answers
                .iter()
                .map(|r| match &r.data {
                    RData::AAAA(AAAA(ip)) => *ip,
                    other => panic!("not an AAAA record: {other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(aaaa(&mut s, 1), vec![a6, b6]);
        assert_eq!(aaaa(&mut s, 2), vec![b6, a6]);
        let q = query_bytes(3, "api", RecordType::A, None);
        let m = parsed(udp(&mut s, &t, &q, Instant::now()));
        assert_eq!(a_answers(&m).len(), 2);
        let q = query_bytes(4, "api", RecordType::ANY, None);
        assert_eq!(parsed(udp(&mut s, &t, &q, Instant::now())).answers.len(), 4);
    }

    /// A client asking A and AAAA together (as getaddrinfo does) sees each family
    /// rotate by one per query of its own type: the other type's queries do not move
    /// it.
    #[test]
    fn a_and_aaaa_rotate_on_counters_of_their_own() {
        let (t, a6, b6) = dual_stack_api();
        let mut s = server(1);
        let first = |s: &mut DnsServer, ty| {
            let q = query_bytes(1, "api", ty, None);
            let m = parsed(udp(s, &t, &q, Instant::now()));
            match &m.answers[0].data {
                RData::A(A(ip)) => IpAddr::V4(*ip),
                RData::AAAA(AAAA(ip)) => IpAddr::V6(*ip),
                other => panic!("not an address: {other:?}"),
            }
        };
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(first(&mut s, RecordType::A));
            seen.push(first(&mut s, RecordType::AAAA));
        }
        let want: Vec<IpAddr> = vec![WEB.into(), a6.into(), DB.into(), b6.into()];
        assert_eq!(seen, want);
        // ANY turns on its own as well, leaving A where it was.
        let _ = first(&mut s, RecordType::ANY);
        assert_eq!(first(&mut s, RecordType::A), IpAddr::from(WEB));
    }

    #[test]
    fn aaaa_of_local_name_is_nodata() {
        let mut s = server(1);
        let m = parsed(udp(&mut s, &table(), &DIG_AAAA, Instant::now()));
        assert_eq!(m.id, 0x0072);
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(s.in_flight(), 0);
        for t in [RecordType::MX, RecordType::TXT, RecordType::AAAA] {
            let m = parsed(udp(
                &mut s,
                &table(),
                &query_bytes(1, "db", t, None),
                Instant::now(),
            ));
            assert_eq!(m.response_code, ResponseCode::NoError);
            assert!(m.answers.is_empty(), "{t}");
        }
        // ANY gets the addresses.
        let m = parsed(udp(
            &mut s,
            &table(),
            &query_bytes(1, "db", RecordType::ANY, None),
            Instant::now(),
        ));
        assert_eq!(a_answers(&m), vec![DB]);
    }

    #[test]
    fn ptr_from_dig() {
        let mut s = server(1);
        let m = parsed(udp(&mut s, &table(), &DIG_PTR, Instant::now()));
        assert_eq!(m.id, 0x8a04);
        assert_eq!(m.answers.len(), 1);
        match &m.answers[0].data {
            RData::PTR(PTR(n)) => assert_eq!(n.to_ascii(), "web.mynet."),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.answers[0].name.to_ascii(), "2.0.18.172.in-addr.arpa.");
        // A for a reverse name: NODATA.
        let q = query_bytes(3, "2.0.18.172.in-addr.arpa", RecordType::A, None);
        let m = parsed(udp(&mut s, &table(), &q, Instant::now()));
        assert!(m.answers.is_empty());
        assert_eq!(m.response_code, ResponseCode::NoError);
    }

    #[test]
    fn host_name_on_every_kind_of_network() {
        let now = Instant::now();
        for names in [table(), bridge_table(), internal_table()] {
            let mut s = server(1);
            let q = query_bytes(5, "Host.VSwitch.Internal", RecordType::A, Some(1232));
            let m = parsed(udp(&mut s, &names, &q, now));
            assert_eq!(a_answers(&m), vec![GW]);
            let q = query_bytes(6, "1.0.18.172.in-addr.arpa", RecordType::PTR, None);
            let m = parsed(udp(&mut s, &names, &q, now));
            match &m.answers[0].data {
                RData::PTR(PTR(n)) => assert_eq!(n.to_ascii(), format!("{HOST_NAME}.")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bridge_network_forwards_container_names() {
        let mut s = server(1);
        let (up, t, id, bytes) = forward(udp(&mut s, &bridge_table(), &DIG_WEB, Instant::now()));
        assert_eq!((up, t), (0, Transport::Udp));
        // The client's query as it is, with a fresh id.
        assert_eq!(&bytes[2..], &DIG_WEB[2..]);
        assert_eq!(s.in_flight(), 1);
        let _ = id;
        // A PTR for a container address is forwarded there too.
        let a = udp(&mut s, &bridge_table(), &DIG_PTR, Instant::now());
        forward(a);
    }

    #[test]
    fn other_networks_names_and_unknown_names_are_forwarded() {
        let mut s = server(1);
        let now = Instant::now();
        for name in [
            "web.othernet",
            "example.com",
            "nosuch",
            "9.0.18.172.in-addr.arpa",
        ] {
            let q = query_bytes(1, name, RecordType::A, None);
            forward(udp(&mut s, &table(), &q, now));
        }
        // Class CHAOS is never local.
        let mut m = Message::from_vec(&query_bytes(1, "web", RecordType::A, None)).unwrap();
        m.queries[0].set_query_class(DNSClass::CH);
        forward(udp(&mut s, &table(), &m.to_vec().unwrap(), now));
    }

    #[test]
    fn internal_network_answers_servfail() {
        let mut s = server(2);
        let m = parsed(udp(&mut s, &internal_table(), &DIG_NX, Instant::now()));
        assert_eq!(m.id, 0x85a6);
        assert_eq!(m.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries[0].name().to_ascii(), "www.nx.test.");
        assert!(m.edns.is_some());
        assert_eq!(s.in_flight(), 0);
        // Its own names still resolve.
        let m = parsed(udp(&mut s, &internal_table(), &DIG_WEB, Instant::now()));
        assert_eq!(a_answers(&m), vec![WEB]);
    }

    #[test]
    fn no_upstreams_servfail() {
        let mut s = server(0);
        let m = parsed(udp(&mut s, &table(), &DIG_NX, Instant::now()));
        assert_eq!(m.response_code, ResponseCode::ServFail);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn nxdomain_relayed_with_client_id() {
        let mut s = server(2);
        let now = Instant::now();
        let (up, t, id, bytes) = forward(udp(&mut s, &table(), &DIG_NX, now));
        assert_eq!((up, t), (0, Transport::Udp));
        assert_eq!(&bytes[2..], &DIG_NX[2..]);
        let mut answer = DNSMASQ_NXDOMAIN;
        answer[..2].copy_from_slice(&id.to_be_bytes());
        let (t, b) = reply(s.upstream_reply(0, &answer, now).unwrap());
        assert_eq!(t, Transport::Udp);
        // Byte for byte dnsmasq's answer, with the client's id.
        assert_eq!(b, DNSMASQ_NXDOMAIN);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.next_deadline(), None);
        // A second copy answers nothing.
        assert_eq!(s.upstream_reply(0, &answer, now), None);
        assert_eq!(s.stats().ignored_replies, 1);
    }

    #[test]
    fn answer_relayed_as_is() {
        let mut s = server(1);
        let now = Instant::now();
        let (_, _, id, _) = forward(udp(&mut s, &table(), &DIG_APP, now));
        let mut answer = DNSMASQ_APP;
        answer[..2].copy_from_slice(&id.to_be_bytes());
        let (_, b) = reply(s.upstream_reply(0, &answer, now).unwrap());
        assert_eq!(b, DNSMASQ_APP);
        assert_eq!(s.stats().relayed, 1);
    }

    #[test]
    fn failover_on_timeout() {
        let mut s = server(2);
        let t0 = Instant::now();
        let (_, _, id0, _) = forward(udp(&mut s, &table(), &DIG_NX, t0));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(2)));
        let mut out = Vec::new();
        s.poll(t0 + Duration::from_millis(1999), &mut out);
        assert!(out.is_empty());
        let t1 = t0 + Duration::from_secs(2);
        s.poll(t1, &mut out);
        assert_eq!(out.len(), 1);
        let (up, t, id1, bytes) = forward(out.pop().unwrap());
        assert_eq!((up, t), (1, Transport::Udp));
        assert_eq!(&bytes[2..], &DIG_NX[2..]);
        assert_eq!(s.next_deadline(), Some(t1 + Duration::from_secs(2)));
        assert_eq!(s.in_flight(), 1);
        // The first resolver answering late is not taken.
        let mut late = DNSMASQ_NXDOMAIN;
        late[..2].copy_from_slice(&id0.to_be_bytes());
        assert_eq!(s.upstream_reply(0, &late, t1), None);
        let mut answer = DNSMASQ_NXDOMAIN;
        answer[..2].copy_from_slice(&id1.to_be_bytes());
        let (_, b) = reply(s.upstream_reply(1, &answer, t1).unwrap());
        assert_eq!(b, DNSMASQ_NXDOMAIN);
        assert_eq!(s.stats().upstream_timeouts, 1);
    }

    #[test]
    fn a_networks_and_a_clients_own_resolvers_are_asked_in_their_order() {
        let mut s = server(4);
        let t0 = Instant::now();
        let mut b = NamesBuilder::new();
        b.gateway(GW).upstreams(vec![3, 1, 9]);
        b.container("web", WEB).unwrap();
        b.client_upstreams(DB.into(), vec![2]);
        b.client_host(DB.into(), "files.corp", CACHE).unwrap();
        b.client_search(DB.into(), "corp.test").unwrap();
        let t = b.build();
        let q = query_bytes(1, "x.example.", RecordType::A, None);
        // The network's list: 3, then 1; 9 is past the resolvers there are.
        let (up, _, _, bytes) = forward(s.query(&t, &q, Transport::Udp, C, t0));
        assert_eq!(up, 3);
        let fail = answer_to(&bytes, ResponseCode::ServFail, &[], false);
        let (up, _, _, bytes) = forward(s.upstream_reply(3, &fail, t0).unwrap());
        assert_eq!(up, 1);
        let fail = answer_to(&bytes, ResponseCode::ServFail, &[], false);
        let m = parsed(s.upstream_reply(1, &fail, t0).unwrap());
        assert_eq!(m.response_code, ResponseCode::ServFail);
        // A client with its own resolver: only that one.
        let from = Some(DB.into());
        let (up, _, _, _) = forward(s.query_from(&t, from, &q, Transport::Udp, C, t0));
        assert_eq!(up, 2);
        // Its --add-host name (also under its search domain), for it alone.
        for n in ["files.corp.", "files.corp.corp.test."] {
            let q = query_bytes(2, n, RecordType::A, None);
            let m = parsed(s.query_from(&t, from, &q, Transport::Udp, C, t0));
            assert_eq!(m.answers.len(), 1, "{n}");
            let other = s.query_from(&t, Some(WEB.into()), &q, Transport::Udp, C, t0);
            assert!(matches!(other, Action::Forward { upstream: 3, .. }), "{n}");
        }
        // web.corp.test is web for the client that searches corp.test.
        let q = query_bytes(3, "web.corp.test.", RecordType::A, None);
        let m = parsed(s.query_from(&t, from, &q, Transport::Udp, C, t0));
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn servfail_after_every_resolver_failed() {
        let mut s = server(3);
        let t0 = Instant::now();
        let (_, _, _, _) = forward(udp(&mut s, &table(), &DIG_NX, t0));
        // Resolver 0 times out.
        let mut out = Vec::new();
        s.poll(t0 + Duration::from_secs(2), &mut out);
        let (up, _, _, bytes) = forward(out.pop().unwrap());
        assert_eq!(up, 1);
        // Resolver 1 answers SERVFAIL: move on.
        let fail = answer_to(&bytes, ResponseCode::ServFail, &[], false);
        let (up, _, _, bytes) = forward(s.upstream_reply(1, &fail, t0).unwrap());
        assert_eq!(up, 2);
        // Resolver 2 answers REFUSED: that was the last one.
        let refused = answer_to(&bytes, ResponseCode::Refused, &[], false);
        let m = parsed(s.upstream_reply(2, &refused, t0).unwrap());
        assert_eq!(m.id, 0x85a6);
        assert_eq!(m.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries[0].name().to_ascii(), "www.nx.test.");
        assert!(m.edns.is_some());
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.next_deadline(), None);
        let st = s.stats();
        assert_eq!(
            (st.upstream_timeouts, st.upstream_errors, st.servfail),
            (1, 2, 1)
        );
    }

    #[test]
    fn servfail_after_last_timeout() {
        let mut s = server(1);
        let t0 = Instant::now();
        forward(udp(&mut s, &table(), &DIG_NX, t0));
        let mut out = Vec::new();
        s.poll(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out.len(), 1);
        let m = parsed(out.pop().unwrap());
        assert_eq!(m.response_code, ResponseCode::ServFail);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn upstream_failure_reported_by_caller() {
        let mut s = server(2);
        let now = Instant::now();
        let (_, _, id, _) = forward(udp(&mut s, &table(), &DIG_NX, now));
        assert_eq!(s.upstream_failed(1, id, now), None);
        let (up, _, _, _) = forward(s.upstream_failed(0, id, now).unwrap());
        assert_eq!(up, 1);
    }

    #[test]
    fn a_refusing_upstream_fails_its_udp_queries_over_at_once() {
        let mut s = server(2);
        let now = Instant::now();
        forward(udp(&mut s, &table(), &DIG_NX, now));
        forward(udp(&mut s, &table(), &DIG_NX, now));
        let mut out = Vec::new();
        s.upstream_refused(1, now, &mut out);
        assert!(out.is_empty(), "nothing was sent to the second resolver");
        s.upstream_refused(0, now, &mut out);
        assert_eq!(out.len(), 2);
        for a in out.drain(..) {
            assert_eq!(forward(a).0, 1, "on to the next resolver");
        }
        // The last resolver refuses too: SERVFAIL, without waiting for a timeout.
        s.upstream_refused(1, now, &mut out);
        assert_eq!(out.len(), 2);
        for a in out.drain(..) {
            assert_eq!(parsed(a).response_code, ResponseCode::ServFail);
        }
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.stats().upstream_errors, 4);
    }

    #[test]
    fn unparseable_upstream_answer_fails_over() {
        let mut s = server(2);
        let now = Instant::now();
        let (_, _, id, _) = forward(udp(&mut s, &table(), &DIG_NX, now));
        // Right id and question, then an answer record cut short.
        let mut bad = DNSMASQ_APP.to_vec();
        bad[..2].copy_from_slice(&id.to_be_bytes());
        bad[12..29].copy_from_slice(&DNSMASQ_NXDOMAIN[12..29]);
        bad.truncate(40);
        let (up, _, _, _) = forward(s.upstream_reply(0, &bad, now).unwrap());
        assert_eq!(up, 1);
    }

    #[test]
    fn fewer_upstreams_after_reload() {
        let mut s = server(3);
        let t0 = Instant::now();
        forward(udp(&mut s, &table(), &DIG_NX, t0));
        s.set_upstreams(1);
        let mut out = Vec::new();
        s.poll(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(
            parsed(out.pop().unwrap()).response_code,
            ResponseCode::ServFail
        );
    }

    #[test]
    fn in_flight_limit_refuses_new_queries() {
        let cfg = DnsConfig {
            max_in_flight: 2,
            ..DnsConfig::default()
        };
        let mut s = DnsServer::new(cfg, 1);
        let now = Instant::now();
        let (_, _, id, bytes) = forward(udp(
            &mut s,
            &table(),
            &query_bytes(1, "a.test", RecordType::A, None),
            now,
        ));
        forward(udp(
            &mut s,
            &table(),
            &query_bytes(2, "b.test", RecordType::A, None),
            now,
        ));
        let m = parsed(udp(
            &mut s,
            &table(),
            &query_bytes(3, "c.test", RecordType::A, None),
            now,
        ));
        assert_eq!(m.id, 3);
        assert_eq!(m.response_code, ResponseCode::Refused);
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.stats().refused_in_flight, 1);
        // Local names are still answered.
        assert_eq!(
            a_answers(&parsed(udp(&mut s, &table(), &DIG_WEB, now))),
            vec![WEB]
        );
        // An answer frees a slot.
        let ans = answer_to(
            &bytes,
            ResponseCode::NoError,
            &[Ipv4Addr::new(192, 0, 2, 1)],
            false,
        );
        assert_eq!(u16::from_be_bytes([ans[0], ans[1]]), id);
        let m = parsed(s.upstream_reply(0, &ans, now).unwrap());
        assert_eq!(m.id, 1);
        forward(udp(
            &mut s,
            &table(),
            &query_bytes(4, "d.test", RecordType::A, None),
            now,
        ));
    }

    #[test]
    fn in_flight_limit_is_capped() {
        let cfg = DnsConfig {
            max_in_flight: usize::MAX,
            ..DnsConfig::default()
        };
        assert_eq!(
            DnsServer::new(cfg, 1).config().max_in_flight,
            MAX_IN_FLIGHT_LIMIT
        );
    }

    #[test]
    fn spoofed_or_stray_answers_are_ignored() {
        let mut s = server(2);
        let now = Instant::now();
        let (_, _, id, bytes) = forward(udp(&mut s, &table(), &DIG_APP, now));
        let good = answer_to(
            &bytes,
            ResponseCode::NoError,
            &[Ipv4Addr::new(192, 0, 2, 7)],
            false,
        );

        let mut wrong_id = good.clone();
        wrong_id[..2].copy_from_slice(&id.wrapping_add(1).to_be_bytes());
        let mut not_response = good.clone();
        not_response[2] &= 0x7f;
        let mut other_type = Message::from_vec(&good).unwrap();
        other_type.queries[0].set_query_type(RecordType::AAAA);
        let mut other_name = Message::from_vec(&good).unwrap();
        other_name.queries[0].set_name(Name::from_ascii("evil.example.test.").unwrap());
        let mut no_question = Message::from_vec(&good).unwrap();
        no_question.queries.clear();

        for (upstream, msg) in [
            (0, wrong_id),
            (1, good.clone()),
            (0, not_response),
            (0, other_type.to_vec().unwrap()),
            (0, other_name.to_vec().unwrap()),
            (0, no_question.to_vec().unwrap()),
            (0, good[..11].to_vec()),
            (0, good[..20].to_vec()),
            (7, good.clone()),
        ] {
            assert_eq!(s.upstream_reply(upstream, &msg, now), None);
            assert_eq!(s.in_flight(), 1);
        }
        assert_eq!(s.stats().ignored_replies, 9);
        // The question matches without regard to case.
        let mut upper = Message::from_vec(&good).unwrap();
        upper.queries[0].set_name(Name::from_ascii("APP.example.TEST.").unwrap());
        let m = parsed(s.upstream_reply(0, &upper.to_vec().unwrap(), now).unwrap());
        assert_eq!(m.id, 0x0048);
        assert_eq!(a_answers(&m), vec![Ipv4Addr::new(192, 0, 2, 7)]);
    }

    fn many_addrs(n: u8) -> (Names, Vec<Ipv4Addr>) {
        let mut b = NamesBuilder::new();
        let addrs: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        for ip in &addrs {
            b.alias("many", *ip).unwrap();
        }
        (b.build(), addrs)
    }

    #[test]
    fn udp_local_answer_truncated_at_512() {
        let (names, _) = many_addrs(100);
        let mut s = server(1);
        let q = query_bytes(1, "many", RecordType::A, None);
        let (_, b) = reply(udp(&mut s, &names, &q, Instant::now()));
        assert!(b.len() <= 512, "{}", b.len());
        let m = Message::from_vec(&b).unwrap();
        assert!(m.truncation);
        // 12 header + 10 question + 16 per answer.
        assert_eq!(m.answers.len(), (512 - 12 - 10) / 16);
    }

    #[test]
    fn udp_local_answer_truncated_at_edns_size() {
        let (names, addrs) = many_addrs(100);
        let mut s = server(1);
        let q = query_bytes(1, "many", RecordType::A, Some(1000));
        let (_, b) = reply(udp(&mut s, &names, &q, Instant::now()));
        assert!(b.len() <= 1000, "{}", b.len());
        let m = Message::from_vec(&b).unwrap();
        assert!(m.truncation);
        assert!(m.edns.is_some());
        assert_eq!(m.answers.len(), (1000 - 12 - 10 - 11) / 16);
        // Capped at max_udp_payload (1232) even when the client offers more.
        let q = query_bytes(1, "many", RecordType::A, Some(4096));
        let (_, b) = reply(udp(&mut s, &names, &q, Instant::now()));
        assert!(b.len() <= 1232 && b.len() > 1200, "{}", b.len());
        // A small set fits whole.
        let (few, _) = many_addrs(20);
        let m = parsed(udp(&mut s, &few, &q, Instant::now()));
        assert!(!m.truncation);
        assert_eq!(m.answers.len(), 20);
        let _ = addrs;
    }

    #[test]
    fn tcp_answers_are_not_truncated() {
        let (names, _) = many_addrs(200);
        let mut s = server(1);
        let q = query_bytes(1, "many", RecordType::A, None);
        let (t, b) = reply(s.query(&names, &q, Transport::Tcp, C, Instant::now()));
        assert_eq!(t, Transport::Tcp);
        let m = Message::from_vec(&b).unwrap();
        assert!(!m.truncation);
        assert_eq!(m.answers.len(), 200);
        // dig +tcp: a local name.
        let mut b = NamesBuilder::new();
        b.container("db", DB).unwrap();
        let (t, bytes) = reply(s.query(&b.build(), &DIG_TCP_DB, Transport::Tcp, C, Instant::now()));
        assert_eq!(t, Transport::Tcp);
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.id, 0xd03a);
        assert_eq!(a_answers(&m), vec![DB]);
    }

    #[test]
    fn relayed_answer_too_big_for_the_client_is_cut() {
        let mut s = server(1);
        let now = Instant::now();
        let q = query_bytes(0x4242, "big.test", RecordType::A, None);
        let (_, _, _, bytes) = forward(udp(&mut s, &table(), &q, now));
        let addrs: Vec<Ipv4Addr> = (0..50).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        let big = answer_to(&bytes, ResponseCode::NoError, &addrs, false);
        assert!(big.len() > 512);
        let (_, b) = reply(s.upstream_reply(0, &big, now).unwrap());
        assert!(b.len() <= 512);
        let m = Message::from_vec(&b).unwrap();
        assert_eq!(m.id, 0x4242);
        assert!(m.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries[0].name().to_ascii(), "big.test.");
        // The same over TCP is relayed whole.
        let (_, _, _, bytes) = forward(s.query(&table(), &q, Transport::Tcp, C, now));
        let big = answer_to(&bytes, ResponseCode::NoError, &addrs, false);
        let (t, b) = reply(s.upstream_reply(0, &big, now).unwrap());
        assert_eq!(t, Transport::Tcp);
        assert_eq!(b.len(), big.len());
        assert_eq!(Message::from_vec(&b).unwrap().answers.len(), 50);
    }

    #[test]
    fn truncated_upstream_answer_for_tcp_client_retried_over_tcp() {
        let mut s = server(2);
        let t0 = Instant::now();
        let q = query_bytes(0x0101, "txt.test", RecordType::TXT, None);
        let (up, t, id0, bytes) = forward(s.query(&table(), &q, Transport::Tcp, C, t0));
        assert_eq!((up, t), (0, Transport::Udp));
        let tc = answer_to(&bytes, ResponseCode::NoError, &[], true);
        let t1 = t0 + Duration::from_millis(10);
        let (up, t, id1, bytes) = forward(s.upstream_reply(0, &tc, t1).unwrap());
        assert_eq!((up, t), (0, Transport::Tcp));
        assert_ne!(id0, id1);
        assert_eq!(s.next_deadline(), Some(t1 + Duration::from_secs(2)));
        let full = answer_to(
            &bytes,
            ResponseCode::NoError,
            &[Ipv4Addr::new(192, 0, 2, 9)],
            false,
        );
        let (t, b) = reply(s.upstream_reply(0, &full, t1).unwrap());
        assert_eq!(t, Transport::Tcp);
        assert_eq!(Message::from_vec(&b).unwrap().id, 0x0101);
    }

    #[test]
    fn truncated_upstream_answer_relayed_to_udp_client() {
        let mut s = server(2);
        let now = Instant::now();
        let q = query_bytes(0x0102, "txt.test", RecordType::TXT, None);
        let (_, _, _, bytes) = forward(udp(&mut s, &table(), &q, now));
        let tc = answer_to(&bytes, ResponseCode::NoError, &[], true);
        let m = parsed(s.upstream_reply(0, &tc, now).unwrap());
        assert!(m.truncation);
        assert_eq!(m.id, 0x0102);
    }

    #[test]
    fn malformed_queries() {
        let mut s = server(1);
        let names = table();
        let now = Instant::now();
        let formerr = |b: &[u8], id: u16| {
            assert_eq!(b.len(), 12);
            let m = Message::from_vec(b).unwrap();
            assert_eq!(m.id, id);
            assert_eq!(m.message_type, MessageType::Response);
            assert_eq!(m.response_code, ResponseCode::FormErr);
        };
        // Shorter than a header: dropped.
        assert_eq!(udp(&mut s, &names, &DIG_WEB[..11], now), Action::Nothing);
        assert_eq!(udp(&mut s, &names, &[], now), Action::Nothing);
        // A response sent to the server: dropped.
        let mut resp = DIG_WEB;
        resp[2] |= 0x80;
        assert_eq!(udp(&mut s, &names, &resp, now), Action::Nothing);
        // Header only, QDCOUNT 1: FORMERR.
        let (_, b) = reply(udp(&mut s, &names, &DIG_WEB[..12], now));
        formerr(&b, 0x50d6);
        // Question cut short.
        let (_, b) = reply(udp(&mut s, &names, &DIG_WEB[..19], now));
        formerr(&b, 0x50d6);
        // OPT announced but missing.
        let (_, b) = reply(udp(&mut s, &names, &DIG_WEB[..21], now));
        formerr(&b, 0x50d6);
        // QDCOUNT 0 and 2.
        for qd in [0u8, 2] {
            let mut m = DIG_WEB_PLAIN;
            m[5] = qd;
            let (_, b) = reply(udp(&mut s, &names, &m, now));
            formerr(&b, 0x23a7);
        }
        // Counts the length cannot hold.
        let mut bomb = DIG_WEB_PLAIN;
        bomb[6] = 0xff;
        bomb[7] = 0xff;
        let (_, b) = reply(udp(&mut s, &names, &bomb, now));
        formerr(&b, 0x23a7);
        // A label pointing forward (compression loop).
        let mut looped = DIG_WEB_PLAIN.to_vec();
        looped[12..14].copy_from_slice(&[0xc0, 0x0c]);
        let (_, b) = reply(udp(&mut s, &names, &looped, now));
        formerr(&b, 0x23a7);
        // Two OPT records.
        let mut two_opt = DIG_WEB.to_vec();
        two_opt[11] = 2;
        two_opt.extend_from_slice(&DIG_WEB[21..32]);
        let (_, b) = reply(udp(&mut s, &names, &two_opt, now));
        formerr(&b, 0x50d6);
        assert_eq!(s.stats().formerr, 8);
        assert_eq!(s.stats().dropped, 3);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn other_opcodes_not_implemented() {
        let mut s = server(1);
        for opcode in [1u8, 2, 4, 5, 15] {
            let mut m = DIG_WEB_PLAIN;
            m[2] = (m[2] & 0x87) | (opcode << 3);
            let (_, b) = reply(udp(&mut s, &table(), &m, Instant::now()));
            assert_eq!(b.len(), 12);
            assert_eq!(b[..2], [0x23, 0xa7]);
            assert_eq!(b[2] & 0x80, 0x80, "QR");
            assert_eq!((b[2] >> 3) & 0x0f, opcode);
            assert_eq!(b[3] & 0x0f, 4, "NOTIMP");
        }
        assert_eq!(s.stats().notimp, 5);
    }

    #[test]
    fn unknown_edns_version_gets_badvers() {
        let mut s = server(1);
        let mut m = DIG_WEB;
        m[27] = 1; // OPT TTL: extended rcode 0, version 1.
        let (_, b) = reply(udp(&mut s, &table(), &m, Instant::now()));
        let r = Message::from_vec(&b).unwrap();
        // 16 is BADVERS in an answer with OPT (BADSIG is the same number, for TSIG).
        assert_eq!(u16::from(r.response_code), 16);
        assert_eq!(r.edns.as_ref().unwrap().version(), 0);
        assert!(r.answers.is_empty());
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn check_reply(a: &Action, transport: Transport) {
            match a {
                Action::Reply { bytes, .. } => {
                    assert!(
                        Message::from_vec(bytes).is_ok(),
                        "reply does not parse: {bytes:02x?}"
                    );
                    if transport == Transport::Udp {
                        assert!(bytes.len() <= 1232);
                    }
                }
                Action::Forward { bytes, .. } => {
                    assert!(Message::from_vec(bytes).is_ok());
                }
                Action::Nothing => {}
            }
        }

        fn seeds() -> Vec<Vec<u8>> {
            vec![
                DIG_WEB.to_vec(),
                DIG_WEB_NOEDNS.to_vec(),
                DIG_MIXED_CASE.to_vec(),
                DIG_PTR.to_vec(),
                DIG_AAAA.to_vec(),
                DIG_TCP_DB.to_vec(),
                DIG_NX.to_vec(),
                DIG_APP.to_vec(),
            ]
        }

        fn mutated() -> impl Strategy<Value = Vec<u8>> {
            (
                0..8usize,
                proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                any::<Option<usize>>(),
            )
                .prop_map(|(seed, edits, cut)| {
                    let mut m = seeds()[seed].clone();
                    for (at, byte) in edits {
                        let i = at % m.len();
                        m[i] = byte;
                    }
                    if let Some(c) = cut {
                        m.truncate(c % (m.len() + 1));
                    }
                    m
                })
        }

        fn any_message() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), mutated()]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            #[test]
            fn query_never_panics(msg in any_message(), tcp in any::<bool>()) {
                let transport = if tcp { Transport::Tcp } else { Transport::Udp };
                let mut s = server(2);
                for names in [table(), bridge_table(), internal_table()] {
                    let a = s.query(&names, &msg, transport, C, Instant::now());
                    check_reply(&a, transport);
                }
            }

            #[test]
            fn upstream_reply_never_panics(
                answer in prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..600),
                    (
                        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                        any::<Option<usize>>(),
                        any::<bool>(),
                    ).prop_map(|(edits, cut, app)| {
                        let mut m = if app { DNSMASQ_APP.to_vec() } else { DNSMASQ_NXDOMAIN.to_vec() };
                        for (at, byte) in edits {
                            let i = 2 + at % (m.len() - 2);
                            m[i] = byte;
                        }
                        if let Some(c) = cut {
                            m.truncate(c % (m.len() + 1));
                        }
                        m
                    }),
                ],
                tcp in any::<bool>(),
            ) {
                let transport = if tcp { Transport::Tcp } else { Transport::Udp };
                let mut s = server(2);
                let now = Instant::now();
                let mut ids = Vec::new();
                for q in [&DIG_NX[..], &DIG_APP[..]] {
                    let (_, _, id, _) = forward(s.query(&table(), q, transport, C, now));
                    ids.push(id);
                }
                for id in ids {
                    let mut m = answer.clone();
                    if m.len() >= 2 {
                        m[..2].copy_from_slice(&id.to_be_bytes());
                    }
                    for upstream in [0, 1] {
                        if let Some(a) = s.upstream_reply(upstream, &m, now) {
                            check_reply(&a, transport);
                        }
                    }
                }
                let mut out = Vec::new();
                s.poll(now + Duration::from_secs(10), &mut out);
                for a in &out {
                    check_reply(a, transport);
                }
            }
        }
    }
}
