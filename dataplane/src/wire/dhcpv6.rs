//! DHCPv6 messages (RFC 8415): the message type and transaction id every client and
//! server message starts with. Relay messages (RELAY-FORW, RELAY-REPL) start with the
//! type too; what follows it differs, and nothing here reads it.
//!
//! The checked view guarantees the 4 bytes of type and transaction id; options are not
//! modelled (nothing in the switch reads them yet).

use super::{Result, need};

/// The UDP port of the client.
pub const CLIENT_PORT: u16 = 546;
/// The UDP port of servers and relay agents.
pub const SERVER_PORT: u16 = 547;
/// Message type and transaction id.
pub const HEADER_LEN: usize = 4;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
