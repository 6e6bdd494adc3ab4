//! The sockets to the upstream resolvers: one connected UDP socket per resolver,
//! opened on first use after each change of resolvers, and one TCP connection per
//! query forwarded over TCP, closed once answered.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry};

use super::token::{MAX_DNS_TCP, Source};
use crate::dns::Transport;

/// The largest DNS-over-TCP message with its length prefix, plus one byte.
const TCP_MESSAGE_MAX: usize = 65537;

/// A TCP connection to an upstream resolver carrying one query.
struct UpstreamTcp {
    stream: TcpStream,
    upstream: usize,
    id: u16,
    out: Vec<u8>,
    inb: Vec<u8>,
}

/// How a TCP query ended.
pub(super) enum TcpDone {
    /// The resolver's answer (without its length prefix).
    Answer { upstream: usize, msg: Vec<u8> },
    /// The connection failed or closed before answering.
    Failed { upstream: usize, id: u16 },
}

/// What reading a resolver's UDP socket gave.
pub(super) enum UdpRecv<'b> {
    /// An answer (or anything the resolver sent).
    Msg(&'b [u8]),
    /// The resolver's port is closed (ICMP port unreachable): every query sent to it
    /// over UDP is lost.
    Refused,
    /// Nothing more to read.
    Empty,
}

/// The upstream resolvers' sockets.
#[derive(Default)]
pub(super) struct Upstreams {
    addrs: Vec<SocketAddr>,
    udp: Vec<Option<UdpSocket>>,
    tcp: Vec<Option<UpstreamTcp>>,
    /// The UDP sockets of `addrs` are open (or were tried).
    opened: bool,
}

impl Upstreams {
    /// New resolvers: their UDP sockets are opened on the next send.
    /// (Closing a socket takes it off the poll.)
    pub(super) fn set(&mut self, addrs: &[SocketAddr]) {
        self.udp.clear();
        self.addrs = addrs.to_vec();
        self.opened = false;
    }

    /// Opens the resolvers' UDP sockets, once.
    fn open_udp(&mut self, reg: &Registry) {
        if self.opened {
            return;
        }
        self.opened = true;
        self.udp = self
            .addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let bind: SocketAddr = match addr {
                    SocketAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
                    SocketAddr::V6(_) => "[::]:0".parse().ok()?,
                };
                let mut s = UdpSocket::bind(bind).ok()?;
                s.connect(*addr).ok()?;
                reg.register(&mut s, Source::DnsUdp(i).token(), Interest::READABLE)
                    .ok()?;
                Some(s)
            })
            .collect();
    }

    /// Sends a query to resolver `upstream`; false when it could not be sent.
    pub(super) fn send(
        &mut self,
        reg: &Registry,
        (upstream, transport): (usize, Transport),
        id: u16,
        msg: &[u8],
    ) -> bool {
        self.open_udp(reg);
        match transport {
            Transport::Udp => self
                .udp
                .get(upstream)
                .and_then(|s| s.as_ref())
                .is_some_and(|s| s.send(msg).is_ok()),
            Transport::Tcp => self.connect_tcp(reg, upstream, id, msg),
        }
    }

    /// Reads the next datagram from resolver `i` into `buf`.
    pub(super) fn recv_udp<'b>(&self, i: usize, buf: &'b mut [u8]) -> UdpRecv<'b> {
        let Some(s) = self.udp.get(i).and_then(|s| s.as_ref()) else {
            return UdpRecv::Empty;
        };
        match s.recv(buf) {
            Ok(n) => buf.get(..n).map_or(UdpRecv::Empty, UdpRecv::Msg),
            // An ICMP port unreachable came back: nothing listens there.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => UdpRecv::Refused,
            Err(_) => UdpRecv::Empty,
        }
    }

    fn connect_tcp(&mut self, reg: &Registry, upstream: usize, id: u16, msg: &[u8]) -> bool {
        let Some(addr) = self.addrs.get(upstream).copied() else {
            return false;
        };
        let Ok(len) = u16::try_from(msg.len()) else {
            return false;
        };
        let i = self
            .tcp
            .iter()
            .position(|c| c.is_none())
            .unwrap_or(self.tcp.len());
        if i >= MAX_DNS_TCP {
            return false;
        }
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if reg
            .register(&mut stream, Source::DnsTcp(i).token(), interest)
            .is_err()
        {
            return false;
        }
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(msg);
        let c = UpstreamTcp {
            stream,
            upstream,
            id,
            out,
            inb: Vec::new(),
        };
        if i == self.tcp.len() {
            self.tcp.push(Some(c));
        } else if let Some(s) = self.tcp.get_mut(i) {
            *s = Some(c);
        }
        true
    }

    /// TCP connection `i` is ready: writes what is left of its query, reads what has
    /// come of the answer. Returns how the query ended, once it has (the connection is
    /// then closed).
    pub(super) fn tcp_ready(
        &mut self,
        reg: &Registry,
        i: usize,
        scratch: &mut [u8],
    ) -> Option<TcpDone> {
        let c = self.tcp.get_mut(i)?.as_mut()?;
        let result = c.exchange(scratch)?;
        let mut c = self.tcp.get_mut(i)?.take()?;
        let _ = reg.deregister(&mut c.stream);
        Some(match result {
            Ok(msg) => TcpDone::Answer {
                upstream: c.upstream,
                msg,
            },
            Err(()) => TcpDone::Failed {
                upstream: c.upstream,
                id: c.id,
            },
        })
    }
}

impl UpstreamTcp {
    /// Moves bytes both ways; Some once the answer is whole (Ok) or the connection
    /// failed or closed (Err).
    fn exchange(&mut self, scratch: &mut [u8]) -> Option<Result<Vec<u8>, ()>> {
        let mut done = self.write_out();
        if let Some(e) = self.read_in(scratch) {
            done.get_or_insert(e);
        }
        if let [hi, lo, rest @ ..] = self.inb.as_slice() {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            if let Some(msg) = rest.get(..len) {
                done = Some(Ok(msg.to_vec()));
            }
        }
        done
    }

    /// Writes what is left of the query; Some(Err) when the connection failed.
    fn write_out(&mut self) -> Option<Result<Vec<u8>, ()>> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return Some(Err(())),
            }
        }
        None
    }

    /// Reads what has come (up to one whole message); Some(Err) when the connection
    /// failed or closed.
    fn read_in(&mut self, scratch: &mut [u8]) -> Option<Result<Vec<u8>, ()>> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Some(Err(())),
                Ok(n) => self.inb.extend_from_slice(scratch.get(..n).unwrap_or(&[])),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(_) => return Some(Err(())),
            }
            if self.inb.len() > TCP_MESSAGE_MAX {
                return None;
            }
        }
    }
}
