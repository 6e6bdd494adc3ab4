//! DHCPv6 messages (RFC 8415): the message type and transaction id every client and
//! server message starts with. Relay messages (RELAY-FORW, RELAY-REPL) start with the
//! type too; what follows it differs, and nothing here reads it.
//!
//! The checked view guarantees the 4 bytes of type and transaction id. [`Options`]
//! walks the options behind them and ends with an error at one that runs past its
//! container, so nothing here can panic whatever the bytes say; [`IaNa`] and [`IaAddr`]
//! read the nested options of an identity association. The `push_*` functions append
//! options to a reply (the gateway's DHCPv6 server).

use std::net::Ipv6Addr;

use super::{Result, WireError, be16, be32, need};

/// The UDP port of the client.
pub const CLIENT_PORT: u16 = 546;
/// The UDP port of servers and relay agents.
pub const SERVER_PORT: u16 = 547;
/// Message type and transaction id.
pub const HEADER_LEN: usize = 4;
/// IAID, T1, T2 before the options of an IA_NA.
const IA_NA_FIXED: usize = 12;
/// Address, preferred and valid lifetimes before the options of an IAADDR.
const IAADDR_FIXED: usize = 24;

/// DHCPv6 message types (RFC 8415 section 7.3; leasequery RFC 5007, DHCPv4 over
/// DHCPv6 RFC 7341).
pub struct MsgType;
impl MsgType {
    pub const SOLICIT: u8 = 1;
    pub const ADVERTISE: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const CONFIRM: u8 = 4;
    pub const RENEW: u8 = 5;
    pub const REBIND: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const RELEASE: u8 = 8;
    pub const DECLINE: u8 = 9;
    pub const RECONFIGURE: u8 = 10;
    pub const INFORMATION_REQUEST: u8 = 11;
    pub const RELAY_FORW: u8 = 12;
    pub const RELAY_REPL: u8 = 13;
    pub const LEASEQUERY_REPLY: u8 = 15;
    pub const LEASEQUERY_DONE: u8 = 16;
    pub const LEASEQUERY_DATA: u8 = 17;
    pub const DHCPV4_RESPONSE: u8 = 21;
}

/// Option codes.
pub struct Opt6;
impl Opt6 {
    pub const CLIENTID: u16 = 1;
    pub const SERVERID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const ELAPSED_TIME: u16 = 8;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
}

/// Status codes.
pub struct Status6;
impl Status6 {
    pub const SUCCESS: u16 = 0;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NOT_ON_LINK: u16 = 4;
}

/// Is `msg_type` one only a server sends (to a client, or to a relay agent that
/// passes it on)?
#[inline]
pub fn is_server_type(msg_type: u8) -> bool {
    matches!(
        msg_type,
        MsgType::ADVERTISE
            | MsgType::REPLY
            | MsgType::RECONFIGURE
            | MsgType::RELAY_REPL
            | MsgType::LEASEQUERY_REPLY
            | MsgType::LEASEQUERY_DONE
            | MsgType::LEASEQUERY_DATA
            | MsgType::DHCPV4_RESPONSE
    )
}

mod field {
    use core::ops::Range;
    pub const MSG_TYPE: usize = 0;
    pub const TRANSACTION_ID: Range<usize> = 1..4;
}

/// A view of a DHCPv6 message (a UDP payload).
#[derive(Debug, Clone)]
pub struct Dhcpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Dhcpv6Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Dhcpv6Packet { buffer }
    }
    /// Checks that the type and transaction id are there.
    pub fn new_checked(buffer: T) -> Result<Self> {
        need("dhcpv6 message", HEADER_LEN, buffer.as_ref().len())?;
        Ok(Self::new_unchecked(buffer))
    }
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::MSG_TYPE]
    }
    /// The 24-bit transaction id (for relay messages: the hop count and the first two
    /// bytes of the link address).
    #[inline]
    pub fn transaction_id(&self) -> u32 {
        let t = &self.buffer.as_ref()[field::TRANSACTION_ID];
        u32::from_be_bytes([0, t[0], t[1], t[2]])
    }
    /// What follows the type and transaction id.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// Is this a message only a server sends?
    #[inline]
    pub fn is_server_message(&self) -> bool {
        is_server_type(self.msg_type())
    }
    /// The options of a client or server message.
    pub fn options(&self) -> Options<'_> {
        Options::new(self.body())
    }
    /// The body of the first option `code`; an error when the options cannot be walked
    /// up to it.
    pub fn option(&self, code: u16) -> Result<Option<&[u8]>> {
        find(self.options(), code)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Dhcpv6Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::MSG_TYPE] = t;
    }
    /// Sets the transaction id (its low 24 bits).
    pub fn set_transaction_id(&mut self, id: u32) {
        let b = id.to_be_bytes();
        self.buffer.as_mut()[field::TRANSACTION_ID].copy_from_slice(&b[1..]);
    }
}

/// Is the UDP payload `b` a DHCPv6 server message? Its first byte is the type; a
/// message too short to carry a transaction id is not one a client would take, but is
/// refused all the same when its type is a server's (nothing legitimate sends it).
#[inline]
pub fn is_server_message(b: &[u8]) -> bool {
    b.first().is_some_and(|&t| is_server_type(t))
}

/// The first option `code` of `opts`.
pub fn find(opts: Options<'_>, code: u16) -> Result<Option<&[u8]>> {
    for o in opts {
        let (c, body) = o?;
        if c == code {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

/// Options as (code, body), in order.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    pub fn new(b: &'a [u8]) -> Options<'a> {
        Options { rest: b }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u16, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < 4 {
            self.rest = &[];
            return Some(Err(WireError::Truncated {
                what: "dhcpv6 option",
                needed: 4,
                got: self.rest.len(),
            }));
        }
        let code = be16(self.rest, 0);
        let len = usize::from(be16(self.rest, 2));
        let Some(body) = self.rest.get(4..4 + len) else {
            let got = self.rest.len();
            self.rest = &[];
            return Some(Err(WireError::Truncated {
                what: "dhcpv6 option",
                needed: 4 + len,
                got,
            }));
        };
        self.rest = self.rest.get(4 + len..).unwrap_or_default();
        Some(Ok((code, body)))
    }
}

/// The fixed part of an IA_NA option body and its options.
#[derive(Debug, Clone)]
pub struct IaNa<'a> {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub options: Options<'a>,
}

impl<'a> IaNa<'a> {
    pub fn parse(body: &'a [u8]) -> Result<IaNa<'a>> {
        need("dhcpv6 ia_na", IA_NA_FIXED, body.len())?;
        Ok(IaNa {
            iaid: be32(body, 0),
            t1: be32(body, 4),
            t2: be32(body, 8),
            options: Options::new(&body[IA_NA_FIXED..]),
        })
    }
    /// The addresses the IA names (a client may ask for the one it wants).
    pub fn addresses(&self) -> impl Iterator<Item = Ipv6Addr> + 'a {
        self.options
            .clone()
            .filter_map(|o| o.ok())
            .filter(|(c, _)| *c == Opt6::IAADDR)
            .filter_map(|(_, b)| IaAddr::parse(b).ok().map(|a| a.addr))
    }
}

/// An IAADDR option body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
}

impl IaAddr {
    pub fn parse(body: &[u8]) -> Result<IaAddr> {
        need("dhcpv6 iaaddr", IAADDR_FIXED, body.len())?;
        let mut a = [0u8; 16];
        a.copy_from_slice(&body[..16]);
        Ok(IaAddr {
            addr: Ipv6Addr::from(a),
            preferred: be32(body, 16),
            valid: be32(body, 20),
        })
    }
}

/// Appends option `code` with `body` (at most 65535 bytes: longer is cut).
pub fn push_option(out: &mut Vec<u8>, code: u16, body: &[u8]) {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body.get(..usize::from(len)).unwrap_or(body));
}

/// Appends a status code option.
pub fn push_status(out: &mut Vec<u8>, status: u16, msg: &str) {
    let mut b = status.to_be_bytes().to_vec();
    b.extend_from_slice(msg.as_bytes());
    push_option(out, Opt6::STATUS_CODE, &b);
}

/// Appends an IA_NA holding one IAADDR (or, with `addr` None, the status `status`).
pub fn push_ia_na(out: &mut Vec<u8>, (iaid, t1, t2): (u32, u32, u32), addr: Option<IaAddr>) {
    let mut b = Vec::with_capacity(IA_NA_FIXED + 4 + IAADDR_FIXED);
    b.extend_from_slice(&iaid.to_be_bytes());
    b.extend_from_slice(&t1.to_be_bytes());
    b.extend_from_slice(&t2.to_be_bytes());
    match addr {
        Some(a) => {
            let mut ia = a.addr.octets().to_vec();
            ia.extend_from_slice(&a.preferred.to_be_bytes());
            ia.extend_from_slice(&a.valid.to_be_bytes());
            push_option(&mut b, Opt6::IAADDR, &ia);
        }
        None => push_status(&mut b, Status6::NO_ADDRS_AVAIL, "no address for this port"),
    }
    push_option(out, Opt6::IA_NA, &b);
}

/// Appends a DNS recursive name server option (RFC 3646).
pub fn push_dns(out: &mut Vec<u8>, servers: &[Ipv6Addr]) {
    let b: Vec<u8> = servers.iter().flat_map(|s| s.octets()).collect();
    push_option(out, Opt6::DNS_SERVERS, &b);
}

/// The domain search list option (RFC 3646): each name as DNS labels. A name with an
/// empty label or one over 63 bytes, or over 255 bytes whole, is left out; no option
/// when none is left.
pub fn push_domain_list(out: &mut Vec<u8>, names: &[&str]) {
    let mut b = Vec::new();
    for name in names {
        let start = b.len();
        let mut ok = true;
        for label in name.trim_end_matches('.').split('.') {
            match u8::try_from(label.len()) {
                Ok(len @ 1..=63) => {
                    b.push(len);
                    b.extend_from_slice(label.as_bytes());
                }
                _ => ok = false,
            }
        }
        b.push(0);
        if !ok || b.len() - start > 255 {
            b.truncate(start);
        }
    }
    if !b.is_empty() {
        push_option(out, Opt6::DOMAIN_LIST, &b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::captured::{self, bytes};

    #[test]
    fn a_domain_list_holds_the_names_that_can_be_labels() {
        let mut out = Vec::new();
        let long = "a".repeat(64);
        push_domain_list(&mut out, &["front", "corp.example.", "", "a..b", &long]);
        let mut want = vec![0, 24, 0, 21];
        want.extend_from_slice(b"\x05front\x00\x04corp\x07example\x00");
        assert_eq!(out, want);
        let mut none = Vec::new();
        push_domain_list(&mut none, &["", &long]);
        assert!(none.is_empty());
    }

    #[test]
    fn fields_round_trip_and_match_rfc_8415() {
        let mut m = [0u8; 10];
        let mut d = Dhcpv6Packet::new_unchecked(&mut m[..]);
        d.set_msg_type(MsgType::SOLICIT);
        d.set_transaction_id(0x12_3456);
        let d = Dhcpv6Packet::new_checked(&m[..]).unwrap();
        assert_eq!((d.msg_type(), d.transaction_id()), (1, 0x12_3456));
        assert_eq!(d.body().len(), 6);
        assert_eq!(m[..4], [1, 0x12, 0x34, 0x56]);
        assert!(Dhcpv6Packet::new_checked(&m[..3]).is_err());
    }

    #[test]
    fn server_types_are_the_servers_only() {
        let server = [2, 7, 10, 13, 15, 16, 17, 21];
        for t in 0..=255u8 {
            assert_eq!(is_server_type(t), server.contains(&t), "type {t}");
            assert_eq!(is_server_message(&[t, 0, 0, 0]), server.contains(&t));
        }
        assert!(!is_server_message(&[]));
        assert!(is_server_message(&[MsgType::ADVERTISE]));
    }

    /// The DHCPv6 message of a captured frame (behind Ethernet, IPv6 and UDP).
    fn msg(hex: &str) -> Vec<u8> {
        bytes(hex)[14 + 40 + 8..].to_vec()
    }

    #[test]
    fn solicit_from_dhclient() {
        let b = msg(captured::SOLICIT);
        let m = Dhcpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(m.msg_type(), MsgType::SOLICIT);
        assert_eq!(m.transaction_id(), 0xace506);
        let codes: Vec<u16> = m.options().map(|o| o.unwrap().0).collect();
        assert_eq!(
            codes,
            [Opt6::CLIENTID, Opt6::ORO, Opt6::ELAPSED_TIME, Opt6::IA_NA]
        );
        let duid = m.option(Opt6::CLIENTID).unwrap().unwrap();
        assert_eq!(&duid[duid.len() - 6..], &[2, 0x42, 0xac, 0x11, 0, 2]);
        let ia = IaNa::parse(m.option(Opt6::IA_NA).unwrap().unwrap()).unwrap();
        assert_eq!((ia.iaid, ia.t1, ia.t2), (0xac11_0002, 3600, 5400));
        assert_eq!(ia.addresses().count(), 0);
        assert!(!m.is_server_message());
    }

    #[test]
    fn request_names_the_advertised_address() {
        let b = msg(captured::REQUEST);
        let m = Dhcpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(m.msg_type(), MsgType::REQUEST);
        assert!(m.option(Opt6::SERVERID).unwrap().is_some());
        let ia = IaNa::parse(m.option(Opt6::IA_NA).unwrap().unwrap()).unwrap();
        let want: Ipv6Addr = "2001:db8:1::174".parse().unwrap();
        assert_eq!(ia.addresses().collect::<Vec<_>>(), [want]);
    }

    #[test]
    fn reply_from_dnsmasq_and_our_builders() {
        let b = msg(captured::REPLY);
        let m = Dhcpv6Packet::new_checked(&b[..]).unwrap();
        assert!(m.is_server_message());
        let ia = m.option(Opt6::IA_NA).unwrap().unwrap();
        // The same IA_NA built here, less dnsmasq's status option inside it.
        let mut built = Vec::new();
        let addr = IaAddr {
            addr: "2001:db8:1::174".parse().unwrap(),
            preferred: 3600,
            valid: 3600,
        };
        push_ia_na(&mut built, (0xac11_0002, 1800, 3150), Some(addr));
        assert_eq!(&built[4..], &ia[..12 + 28]);
        let dns = m.option(Opt6::DNS_SERVERS).unwrap().unwrap();
        let mut d = Vec::new();
        push_dns(&mut d, &["2001:db8:1::1".parse().unwrap()]);
        assert_eq!(&d[4..], dns);
    }

    #[test]
    fn hostile_options() {
        let mut b = msg(captured::SOLICIT);
        b[7] = 0xff; // the client id's length runs past the message
        let m = Dhcpv6Packet::new_checked(&b[..]).unwrap();
        assert!(m.option(Opt6::IA_NA).is_err());
        assert!(Dhcpv6Packet::new_checked(&b[..3]).is_err());
        assert!(IaNa::parse(&[0; 11]).is_err());
        assert!(IaAddr::parse(&[0; 23]).is_err());
        let m = Dhcpv6Packet::new_checked(&[1u8, 0, 0, 0, 0, 1][..]).unwrap();
        assert!(m.options().next().unwrap().is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            if let Ok(m) = Dhcpv6Packet::new_checked(&b[..]) {
                for (c, body) in m.options().flatten() {
                    if c == Opt6::IA_NA && let Ok(ia) = IaNa::parse(body) {
                        let _ = ia.addresses().count();
                    }
                }
            }
        }
    }
}
