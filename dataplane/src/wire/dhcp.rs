//! DHCP messages (RFC 2131; the BOOTP layout of RFC 951, options RFC 2132): the fixed
//! part, the magic cookie, and the options after it.
//!
//! The checked view guarantees the fixed part and a valid cookie; the options are read
//! by [`DhcpPacket::options`], which stops at the end option or at the first option
//! that runs past the buffer (what follows a malformed option is not trusted).

use super::ethernet::MacAddr;
use super::{Result, WireError, be16, be32, ip4, need, put16, put32};
use std::net::Ipv4Addr;

/// The UDP port of the server.
pub const SERVER_PORT: u16 = 67;
/// The UDP port of the client.
pub const CLIENT_PORT: u16 = 68;
/// The magic cookie that starts the options (RFC 2131 section 3).
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP part before the cookie.
pub const FIXED_LEN: usize = 236;
/// The fixed part and the cookie: where the options start.
pub const HEADER_LEN: usize = FIXED_LEN + MAGIC.len();

/// Values of the `op` field.
pub struct Op;
impl Op {
    pub const BOOTREQUEST: u8 = 1;
    pub const BOOTREPLY: u8 = 2;
}

/// `htype` and `hlen` of Ethernet (RFC 1700).
pub const HTYPE_ETHERNET: u8 = 1;
pub const HLEN_ETHERNET: u8 = 6;

/// The broadcast bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;

/// DHCP message types (option 53).
pub struct MsgType;
impl MsgType {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;
}

/// Option codes the gateway reads or writes.
pub struct DhcpOption;
impl DhcpOption {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MSG_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const RENEWAL: u8 = 58;
    pub const REBINDING: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

mod field {
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const XID: usize = 4;
    pub const FLAGS: usize = 10;
    pub const CIADDR: usize = 12;
    pub const YIADDR: usize = 16;
    pub const SIADDR: usize = 20;
    pub const GIADDR: usize = 24;
    /// The first six bytes of the 16-byte `chaddr`: an Ethernet address.
    pub const CHADDR_MAC: Range<usize> = 28..34;
    pub const MAGIC: Range<usize> = 236..240;
}

/// A view of a DHCP message (a UDP payload).
#[derive(Debug, Clone)]
pub struct DhcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DhcpPacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        DhcpPacket { buffer }
    }
    /// Checks the fixed part and the magic cookie.
    pub fn new_checked(buffer: T) -> Result<Self> {
        need("dhcp message", HEADER_LEN, buffer.as_ref().len())?;
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref()[field::MAGIC] != MAGIC {
            return Err(WireError::Malformed {
                what: "dhcp message",
                why: "no magic cookie",
            });
        }
        Ok(p)
    }
    #[inline]
    pub fn op(&self) -> u8 {
        self.buffer.as_ref()[field::OP]
    }
    #[inline]
    pub fn htype(&self) -> u8 {
        self.buffer.as_ref()[field::HTYPE]
    }
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    /// Is the client's hardware address an Ethernet address?
    #[inline]
    pub fn is_ethernet(&self) -> bool {
        self.htype() == HTYPE_ETHERNET && self.hlen() == HLEN_ETHERNET
    }
    #[inline]
    pub fn xid(&self) -> u32 {
        be32(self.buffer.as_ref(), field::XID)
    }
    #[inline]
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS)
    }
    #[inline]
    pub fn broadcast_flag(&self) -> bool {
        self.flags() & FLAG_BROADCAST != 0
    }
    #[inline]
    pub fn ciaddr(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::CIADDR)
    }
    #[inline]
    pub fn yiaddr(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::YIADDR)
    }
    #[inline]
    pub fn siaddr(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::SIADDR)
    }
    #[inline]
    pub fn giaddr(&self) -> Ipv4Addr {
        ip4(self.buffer.as_ref(), field::GIADDR)
    }
    /// The client's hardware address read as an Ethernet address.
    #[inline]
    pub fn chaddr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::CHADDR_MAC]).unwrap_or_default()
    }
    /// The options, in order, up to the end option or the first malformed one.
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[]),
        }
    }
    /// The value of option `code`, the first time it appears (None when absent or when
    /// the options are malformed before it).
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options().find(|&(c, _)| c == code).map(|(_, v)| v)
    }
    /// The message type (option 53).
    pub fn msg_type(&self) -> Option<u8> {
        self.option(DhcpOption::MSG_TYPE)
            .and_then(|v| v.first().copied())
    }
    /// An option holding one IPv4 address.
    pub fn option_ip(&self, code: u8) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self.option(code)?.try_into().ok()?;
        Some(Ipv4Addr::from(v))
    }
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.option_ip(DhcpOption::REQUESTED_IP)
    }
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.option_ip(DhcpOption::SERVER_ID)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DhcpPacket<T> {
    pub fn set_op(&mut self, op: u8) {
        self.buffer.as_mut()[field::OP] = op;
    }
    /// Sets `htype` and `hlen` to Ethernet's.
    pub fn set_ethernet(&mut self) {
        let b = self.buffer.as_mut();
        b[field::HTYPE] = HTYPE_ETHERNET;
        b[field::HLEN] = HLEN_ETHERNET;
    }
    pub fn set_xid(&mut self, xid: u32) {
        put32(self.buffer.as_mut(), field::XID, xid);
    }
    pub fn set_flags(&mut self, flags: u16) {
        put16(self.buffer.as_mut(), field::FLAGS, flags);
    }
    pub fn set_ciaddr(&mut self, ip: Ipv4Addr) {
        put32(self.buffer.as_mut(), field::CIADDR, u32::from(ip));
    }
    pub fn set_yiaddr(&mut self, ip: Ipv4Addr) {
        put32(self.buffer.as_mut(), field::YIADDR, u32::from(ip));
    }
    pub fn set_siaddr(&mut self, ip: Ipv4Addr) {
        put32(self.buffer.as_mut(), field::SIADDR, u32::from(ip));
    }
    pub fn set_giaddr(&mut self, ip: Ipv4Addr) {
        put32(self.buffer.as_mut(), field::GIADDR, u32::from(ip));
    }
    pub fn set_chaddr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::CHADDR_MAC].copy_from_slice(&mac.0);
    }
    pub fn set_magic(&mut self) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&MAGIC);
    }
}

/// Is the UDP payload `b` a message only a DHCP server (or a relay answering for one)
/// sends: a BOOTREPLY (RFC 951, whatever its options say), or a message of type OFFER,
/// ACK or NAK? Reads the `op` byte and, when the message is whole (fixed part and
/// cookie), its options. Client messages (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM)
/// and anything shorter than an `op` byte are not.
pub fn is_server_message(b: &[u8]) -> bool {
    if b.first() == Some(&Op::BOOTREPLY) {
        return true;
    }
    DhcpPacket::new_checked(b).is_ok_and(|d| {
        matches!(
            d.msg_type(),
            Some(MsgType::OFFER | MsgType::ACK | MsgType::NAK)
        )
    })
}

/// Appends option `code` with value `v` (cut to 255 bytes) to a message being built.
pub fn push_option(out: &mut Vec<u8>, code: u8, v: &[u8]) {
    let len = v.len().min(255);
    out.push(code);
    out.push(len as u8);
    out.extend_from_slice(v.get(..len).unwrap_or(&[]));
}

/// The options of a message: `(code, value)` pairs, pads skipped.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, rest) = self.rest.split_first()?;
            match code {
                DhcpOption::PAD => self.rest = rest,
                DhcpOption::END => {
                    self.rest = &[];
                    return None;
                }
                _ => {
                    let parsed = rest.split_first().and_then(|(&len, rest)| {
                        let len = usize::from(len);
                        Some((rest.get(..len)?, rest.get(len..)?))
                    });
                    let Some((value, after)) = parsed else {
                        self.rest = &[];
                        return None;
                    };
                    self.rest = after;
                    return Some((code, value));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: MacAddr = MacAddr([0x02, 0x42, 10, 150, 0, 4]);

    fn message() -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN];
        let mut d = DhcpPacket::new_unchecked(&mut m[..]);
        d.set_op(Op::BOOTREQUEST);
        d.set_ethernet();
        d.set_xid(0xdead_beef);
        d.set_flags(FLAG_BROADCAST);
        d.set_ciaddr(Ipv4Addr::new(10, 0, 0, 4));
        d.set_yiaddr(Ipv4Addr::new(10, 0, 0, 5));
        d.set_siaddr(Ipv4Addr::new(10, 0, 0, 6));
        d.set_giaddr(Ipv4Addr::new(10, 0, 0, 7));
        d.set_chaddr(CLIENT);
        d.set_magic();
        push_option(&mut m, DhcpOption::MSG_TYPE, &[MsgType::DISCOVER]);
        m.push(DhcpOption::PAD);
        push_option(&mut m, DhcpOption::REQUESTED_IP, &[10, 0, 0, 9]);
        m.push(DhcpOption::END);
        push_option(&mut m, DhcpOption::SERVER_ID, &[1, 1, 1, 1]); // after the end
        m
    }

    #[test]
    fn fields_round_trip_and_match_the_bootp_layout() {
        let m = message();
        let d = DhcpPacket::new_checked(&m[..]).unwrap();
        assert_eq!((d.op(), d.htype(), d.hlen()), (1, 1, 6));
        assert!(d.is_ethernet() && d.broadcast_flag());
        assert_eq!(d.xid(), 0xdead_beef);
        assert_eq!(d.ciaddr(), Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(d.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(d.siaddr(), Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(d.giaddr(), Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(d.chaddr(), CLIENT);
        // RFC 951 offsets, independently.
        assert_eq!(m[4..8], [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(m[24..28], [10, 0, 0, 7]);
        assert_eq!(m[28..34], CLIENT.0);
        assert_eq!(m[236..240], MAGIC);
    }

    #[test]
    fn options_stop_at_end_and_skip_pads() {
        let m = message();
        let d = DhcpPacket::new_checked(&m[..]).unwrap();
        let all: Vec<_> = d.options().collect();
        assert_eq!(
            all,
            vec![
                (DhcpOption::MSG_TYPE, &[1u8][..]),
                (DhcpOption::REQUESTED_IP, &[10, 0, 0, 9][..])
            ]
        );
        assert_eq!(d.msg_type(), Some(MsgType::DISCOVER));
        assert_eq!(d.requested_ip(), Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(d.server_id(), None);
    }

    #[test]
    fn malformed_options_end_the_walk() {
        let mut m = message();
        m[HEADER_LEN + 1] = 250; // the message type runs past the end
        let d = DhcpPacket::new_checked(&m[..]).unwrap();
        assert_eq!(d.options().count(), 0);
        assert_eq!(d.msg_type(), None);
    }

    #[test]
    fn server_messages_are_known_by_op_or_type() {
        let mut m = message();
        assert!(!is_server_message(&m), "a DISCOVER is the client's");
        for t in [MsgType::OFFER, MsgType::ACK, MsgType::NAK] {
            m[HEADER_LEN + 2] = t;
            assert!(is_server_message(&m), "type {t} with op BOOTREQUEST");
        }
        for t in [
            MsgType::REQUEST,
            MsgType::DECLINE,
            MsgType::RELEASE,
            MsgType::INFORM,
        ] {
            m[HEADER_LEN + 2] = t;
            assert!(!is_server_message(&m), "type {t}");
        }
        // A BOOTREPLY is a server's with any options, or none (plain BOOTP).
        m[0] = Op::BOOTREPLY;
        assert!(is_server_message(&m));
        assert!(is_server_message(&m[..1]));
        assert!(!is_server_message(&[]));
        assert!(!is_server_message(b"hello"));
    }

    #[test]
    fn short_or_without_cookie_is_refused() {
        let m = message();
        assert!(DhcpPacket::new_checked(&m[..HEADER_LEN - 1]).is_err());
        let mut bad = m.clone();
        bad[FIXED_LEN] = 0;
        assert!(DhcpPacket::new_checked(&bad[..]).is_err());
        assert!(DhcpPacket::new_checked(&m[..HEADER_LEN]).is_ok());
    }
}
