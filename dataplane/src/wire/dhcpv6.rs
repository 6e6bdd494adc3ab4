//! DHCPv6 (RFC 8415): the message header (type, transaction id), the options behind
//! it, and the nested options of an identity association (IA_NA, IAADDR).
//!
//! [`Dhcpv6Message::new_checked`] verifies the 4-byte header; [`Options`] walks
//! options and ends with an error at one that runs past its container, so nothing here
//! can panic whatever the bytes say. The `push_*` functions append options to a reply.

use std::net::Ipv6Addr;

use super::{Result, WireError, be16, be32, need};

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
const HEADER_LEN: usize = 4;
/// IAID, T1, T2 before the options of an IA_NA.
const IA_NA_FIXED: usize = 12;
/// Address, preferred and valid lifetimes before the options of an IAADDR.
const IAADDR_FIXED: usize = 24;

/// Message types.
pub struct Msg6Type;
impl Msg6Type {
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

/// Whether a message of type `ty` is one only a server or relay sends.
#[inline]
pub fn is_server_message(ty: u8) -> bool {
    matches!(
        ty,
        Msg6Type::ADVERTISE | Msg6Type::REPLY | Msg6Type::RECONFIGURE | Msg6Type::RELAY_REPL
    )
}

/// A view of a DHCPv6 client/server message (not a relay message).
#[derive(Debug, Clone)]
pub struct Dhcpv6Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Dhcpv6Message<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Dhcpv6Message { buffer }
    }
    /// Checks the 4-byte header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        need("dhcpv6 message", HEADER_LEN, buffer.as_ref().len())?;
        Ok(Dhcpv6Message { buffer })
    }
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    /// The 24-bit transaction id.
    #[inline]
    pub fn transaction_id(&self) -> [u8; 3] {
        let b = self.buffer.as_ref();
        [b[1], b[2], b[3]]
    }
    pub fn options(&self) -> Options<'_> {
        Options::new(&self.buffer.as_ref()[HEADER_LEN..])
    }
    /// The body of the first option `code`; an error when the options cannot be walked
    /// up to it.
    pub fn option(&self, code: u16) -> Result<Option<&[u8]>> {
        find(self.options(), code)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::captured::{self, bytes};

    /// The DHCPv6 message of a captured frame (behind Ethernet, IPv6 and UDP).
    fn msg(hex: &str) -> Vec<u8> {
        bytes(hex)[14 + 40 + 8..].to_vec()
    }

    #[test]
    fn solicit_from_dhclient() {
        let b = msg(captured::SOLICIT);
        let m = Dhcpv6Message::new_checked(&b[..]).unwrap();
        assert_eq!(m.msg_type(), Msg6Type::SOLICIT);
        assert_eq!(m.transaction_id(), [0xac, 0xe5, 0x06]);
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
        assert!(!is_server_message(m.msg_type()));
    }

    #[test]
    fn request_names_the_advertised_address() {
        let b = msg(captured::REQUEST);
        let m = Dhcpv6Message::new_checked(&b[..]).unwrap();
        assert_eq!(m.msg_type(), Msg6Type::REQUEST);
        assert!(m.option(Opt6::SERVERID).unwrap().is_some());
        let ia = IaNa::parse(m.option(Opt6::IA_NA).unwrap().unwrap()).unwrap();
        let want: Ipv6Addr = "2001:db8:1::174".parse().unwrap();
        assert_eq!(ia.addresses().collect::<Vec<_>>(), [want]);
    }

    #[test]
    fn reply_from_dnsmasq_and_our_builders() {
        let b = msg(captured::REPLY);
        let m = Dhcpv6Message::new_checked(&b[..]).unwrap();
        assert!(is_server_message(m.msg_type()));
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
        let m = Dhcpv6Message::new_checked(&b[..]).unwrap();
        assert!(m.option(Opt6::IA_NA).is_err());
        assert!(Dhcpv6Message::new_checked(&b[..3]).is_err());
        assert!(IaNa::parse(&[0; 11]).is_err());
        assert!(IaAddr::parse(&[0; 23]).is_err());
        let m = Dhcpv6Message::new_checked(&[1u8, 0, 0, 0, 0, 1][..]).unwrap();
        assert!(m.options().next().unwrap().is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            if let Ok(m) = Dhcpv6Message::new_checked(&b[..]) {
                for (c, body) in m.options().flatten() {
                    if c == Opt6::IA_NA && let Ok(ia) = IaNa::parse(body) {
                        let _ = ia.addresses().count();
                    }
                }
            }
        }
    }
}
