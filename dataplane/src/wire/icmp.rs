//! ICMPv4 (RFC 792): echo, and the error messages that embed the offending packet.

use super::checksum;
use super::{Result, be16, need, put16};

pub const HEADER_LEN: usize = 8;

pub struct IcmpType;
impl IcmpType {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Codes of destination unreachable.
pub struct UnreachCode;
impl UnreachCode {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Is this an error message carrying the start of the offending datagram?
#[inline]
pub fn is_error(ty: u8) -> bool {
    matches!(
        ty,
        IcmpType::DEST_UNREACHABLE | IcmpType::TIME_EXCEEDED | IcmpType::PARAMETER_PROBLEM
    )
}

/// A view of an ICMPv4 message: type, code, checksum, four bytes of "rest of header",
/// then the data.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// The whole buffer the view covers.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        need("icmp header", HEADER_LEN, p.buffer.as_ref().len())?;
        Ok(p)
    }
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    /// Echo identifier (bytes 4..6).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }
    /// Echo sequence number (bytes 6..8).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    /// Next-hop MTU of "fragmentation needed" (bytes 6..8).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    /// Echo data, or the embedded datagram of an error message.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[0] = v;
    }
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[1] = v;
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 4, v);
    }
    pub fn set_echo_seq(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 6, v);
    }
    /// Sets the four "rest of header" bytes to zero then the next-hop MTU.
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        put16(self.buffer.as_mut(), 4, 0);
        put16(self.buffer.as_mut(), 6, mtu);
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
    /// Recomputes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
    /// Rewrites the echo identifier with an incremental checksum update.
    pub fn rewrite_echo_ident(&mut self, id: u16) {
        let old = self.echo_ident();
        let c = checksum::update16(self.checksum(), old, id);
        self.set_echo_ident(id);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request id 0x1234 seq 1 with data "abcd".
    const ECHO: [u8; 12] = [
        0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64,
    ];

    fn echo_with_checksum() -> [u8; 12] {
        let mut b = ECHO;
        let c = checksum::checksum(&b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parse_fixture() {
        let b = echo_with_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), IcmpType::ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq(), 1);
        assert_eq!(p.data(), b"abcd");
        assert!(p.verify_checksum());
    }

    #[test]
    fn build_and_rewrite() {
        let mut b = [0u8; 12];
        let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(IcmpType::ECHO_REQUEST);
        p.set_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq(1);
        p.data_mut().copy_from_slice(b"abcd");
        p.fill_checksum();
        assert_eq!(b, echo_with_checksum());
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.rewrite_echo_ident(0xbeef);
        assert!(p.verify_checksum());
        assert_eq!(p.echo_ident(), 0xbeef);
    }

    #[test]
    fn short_refused() {
        assert!(Icmpv4Packet::new_checked(&ECHO[..7]).is_err());
        assert!(is_error(IcmpType::DEST_UNREACHABLE));
        assert!(!is_error(IcmpType::ECHO_REQUEST));
    }

    #[test]
    fn against_etherparse() {
        let b = echo_with_checksum();
        let s = etherparse::Icmpv4Slice::from_slice(&b).unwrap();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(s.type_u8(), p.msg_type());
        assert_eq!(s.code_u8(), p.code());
        assert_eq!(s.checksum(), p.checksum());
        match s.icmp_type() {
            etherparse::Icmpv4Type::EchoRequest(h) => {
                assert_eq!(h.id, p.echo_ident());
                assert_eq!(h.seq, p.echo_seq());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.payload(), p.data());
    }
}
