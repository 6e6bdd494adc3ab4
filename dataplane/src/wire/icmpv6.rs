//! ICMPv6 (RFC 4443): the common header (type, code, checksum over the IPv6
//! pseudo-header), echo, and the error messages that quote the offending packet.
//! Neighbour discovery bodies are in [`super::ndp`]; the type numbers in
//! [`super::ipv6::Icmpv6Type`].

use std::net::Ipv6Addr;

use super::ipv6::{Icmpv6Type, pseudo_header_sum};
use super::{Result, be16, be32, checksum, need, put16, put32};

/// Type, code, checksum and the four bytes every message has next.
pub const HEADER_LEN: usize = 8;
/// An ICMPv6 error must fit the IPv6 minimum MTU (RFC 4443 section 2.4 (c)).
pub const MIN_MTU: usize = 1280;
const NEXT_HEADER: u8 = 58;

/// Codes of destination unreachable.
pub struct Unreach6Code;
impl Unreach6Code {
    pub const NO_ROUTE: u8 = 0;
    pub const ADMIN_PROHIBITED: u8 = 1;
    pub const ADDRESS: u8 = 3;
    pub const PORT: u8 = 4;
}

/// Whether messages of type `ty` are errors (types below 128).
#[inline]
pub fn is_error(ty: u8) -> bool {
    ty < 128
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }
    /// Checks the 8 bytes of header every accessor here reads.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        need("icmpv6 header", HEADER_LEN, p.buffer.as_ref().len())?;
        Ok(p)
    }
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
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
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    /// The MTU of a packet too big message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
    /// Echo data, or the quoted packet of an error.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// Whether the checksum is right for a message from `src` to `dst`.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let Ok(len) = u32::try_from(b.len()) else {
            return false;
        };
        let s = checksum::add(
            pseudo_header_sum(src, dst, NEXT_HEADER, len),
            checksum::sum(b),
        );
        checksum::fold(s) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[0] = v;
    }
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[1] = v;
    }
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 4, v);
    }
    pub fn set_echo_seq(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 6, v);
    }
    /// The four bytes after the checksum: the MTU of packet too big, the pointer of
    /// parameter problem, zero for the other errors.
    pub fn set_word(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 4, v);
    }
    /// Echo data, or the quoted packet of an error.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or_default()
    }
    /// Translates an echo message: the identifier becomes `ident` and one address of
    /// the pseudo-header changes from `old` to `new`, the checksum updated for both
    /// (RFC 1624).
    #[inline]
    pub fn translate_echo(&mut self, old: Ipv6Addr, new: Ipv6Addr, ident: u16) {
        let c = checksum::update16(self.checksum(), self.echo_ident(), ident);
        let (o, n) = (checksum::sum_ipv6(&old), checksum::sum_ipv6(&new));
        put16(self.buffer.as_mut(), 2, checksum::update16(c, o, n));
        self.set_echo_ident(ident);
    }
    /// Computes the checksum over the whole buffer for a message from `src` to `dst`.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        put16(self.buffer.as_mut(), 2, 0);
        let b = self.buffer.as_ref();
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        let s = checksum::add(
            pseudo_header_sum(src, dst, NEXT_HEADER, len),
            checksum::sum(b),
        );
        let c = !checksum::fold(s);
        put16(self.buffer.as_mut(), 2, c);
    }
}

/// Whether a message of type `ty` is one a router answers with an error about: not
/// an error itself, nor a redirect (RFC 4443 section 2.4 (e)).
#[inline]
pub fn may_cause_error(ty: u8) -> bool {
    !is_error(ty) && ty != Icmpv6Type::REDIRECT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ipv6Packet;
    use crate::wire::captured::{self, bytes};

    #[test]
    fn captured_echo_request_and_reply() {
        for (hex, ty) in [(captured::ECHO, 128), (captured::ECHO_REPLY, 129)] {
            let f = bytes(hex);
            let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
            let p = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            assert_eq!(
                (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()),
                (ty, 0, 0x1be7, 1)
            );
            assert_eq!(p.data(), &[0, 1, 2, 3]);
            assert!(p.verify_checksum(&ip.src(), &ip.dst()));
            assert!(!p.verify_checksum(&ip.dst(), &ip.dst()));
            // Recomputed, the checksum is the kernel's.
            let mut m = ip.payload().to_vec();
            Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(&ip.src(), &ip.dst());
            assert_eq!(m, ip.payload());
        }
        assert!(Icmpv6Packet::new_checked(&[0u8; 7][..]).is_err());
    }

    #[test]
    fn error_word_and_kinds() {
        let mut b = [0u8; 8];
        let mut p = Icmpv6Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(Icmpv6Type::PACKET_TOO_BIG);
        p.set_word(1280);
        assert_eq!(Icmpv6Packet::new_checked(&b[..]).unwrap().mtu(), 1280);
        assert!(is_error(Icmpv6Type::PACKET_TOO_BIG) && !is_error(Icmpv6Type::ECHO_REQUEST));
        assert!(!may_cause_error(Icmpv6Type::REDIRECT));
        assert!(may_cause_error(Icmpv6Type::ECHO_REQUEST));
        assert!(!may_cause_error(Icmpv6Type::TIME_EXCEEDED));
    }
}
