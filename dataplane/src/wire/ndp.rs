//! Neighbour discovery (RFC 4861): the bodies of router solicitation and
//! advertisement, neighbour solicitation and advertisement and redirect, their options
//! (link-layer addresses, prefix information, MTU) and RDNSS (RFC 8106).
//!
//! [`NdpMessage`] views a whole ICMPv6 message (from its type byte); `new_checked`
//! verifies the fixed part of its type, so the accessors cannot panic. [`Options`]
//! walks the options behind it; an option of length 0 or running past the message
//! ends the walk with an error (RFC 4861 section 4.6: such a message is dropped).
//! The `push_*` functions append options to a message being built.

use std::net::Ipv6Addr;

use super::ipv6::Icmpv6Type;
use super::{MacAddr, Result, WireError, be16, be32, need, put16, put32};

/// Where the options start, by message type.
const RS_OPTIONS: usize = 8;
const RA_OPTIONS: usize = 16;
const NS_NA_OPTIONS: usize = 24;
const REDIRECT_OPTIONS: usize = 40;

/// Option types.
pub struct NdpOption;
impl NdpOption {
    pub const SOURCE_LLADDR: u8 = 1;
    pub const TARGET_LLADDR: u8 = 2;
    pub const PREFIX_INFO: u8 = 3;
    pub const MTU: u8 = 5;
    pub const RDNSS: u8 = 25;
}

/// Router advertisement flags (byte 5).
pub const RA_MANAGED: u8 = 0x80;
pub const RA_OTHER: u8 = 0x40;
/// Neighbour advertisement flags (byte 4).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;
/// Prefix information flags.
pub const PREFIX_ON_LINK: u8 = 0x80;
pub const PREFIX_AUTONOMOUS: u8 = 0x40;

/// A view of an NDP message: RS, RA, NS, NA or redirect.
#[derive(Debug, Clone)]
pub struct NdpMessage<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the fixed part of a message of type `ty` ends (its options start); None for
/// a type that is not neighbour discovery.
#[inline]
pub fn options_at(ty: u8) -> Option<usize> {
    match ty {
        Icmpv6Type::ROUTER_SOLICIT => Some(RS_OPTIONS),
        Icmpv6Type::ROUTER_ADVERT => Some(RA_OPTIONS),
        Icmpv6Type::NEIGHBOR_SOLICIT | Icmpv6Type::NEIGHBOR_ADVERT => Some(NS_NA_OPTIONS),
        Icmpv6Type::REDIRECT => Some(REDIRECT_OPTIONS),
        _ => None,
    }
}

impl<T: AsRef<[u8]>> NdpMessage<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        NdpMessage { buffer }
    }
    /// Checks that the message is a neighbour discovery type and holds its fixed part.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        need("ndp message", 1, b.len())?;
        let at = options_at(b[0]).ok_or(WireError::Malformed {
            what: "ndp message",
            why: "not a neighbour discovery type",
        })?;
        need("ndp message", at, b.len())?;
        Ok(NdpMessage { buffer })
    }
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    /// The target address of NS, NA and redirect (unspecified for RS and RA).
    pub fn target(&self) -> Ipv6Addr {
        match self.msg_type() {
            Icmpv6Type::NEIGHBOR_SOLICIT | Icmpv6Type::NEIGHBOR_ADVERT | Icmpv6Type::REDIRECT => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&self.buffer.as_ref()[8..24]);
                Ipv6Addr::from(a)
            }
            _ => Ipv6Addr::UNSPECIFIED,
        }
    }
    /// NA flags (router, solicited, override) or RA flags (managed, other).
    #[inline]
    pub fn flags(&self) -> u8 {
        match self.msg_type() {
            Icmpv6Type::ROUTER_ADVERT => self.buffer.as_ref()[5],
            Icmpv6Type::NEIGHBOR_ADVERT => self.buffer.as_ref()[4],
            _ => 0,
        }
    }
    /// RA: the hop limit hosts should use (0: unspecified).
    pub fn cur_hop_limit(&self) -> u8 {
        match self.msg_type() {
            Icmpv6Type::ROUTER_ADVERT => self.buffer.as_ref()[4],
            _ => 0,
        }
    }
    /// RA: seconds the router is a default router (0: not one).
    pub fn router_lifetime(&self) -> u16 {
        match self.msg_type() {
            Icmpv6Type::ROUTER_ADVERT => be16(self.buffer.as_ref(), 6),
            _ => 0,
        }
    }
    /// The options behind the fixed part.
    pub fn options(&self) -> Options<'_> {
        let b = self.buffer.as_ref();
        let at = options_at(self.msg_type()).unwrap_or(b.len());
        Options {
            rest: b.get(at..).unwrap_or_default(),
        }
    }
    /// The link-layer address in the source (RS, NS, RA) or target (NA) option; an
    /// error when the options cannot be walked.
    pub fn lladdr(&self) -> Result<Option<MacAddr>> {
        let want = match self.msg_type() {
            Icmpv6Type::NEIGHBOR_ADVERT | Icmpv6Type::REDIRECT => NdpOption::TARGET_LLADDR,
            _ => NdpOption::SOURCE_LLADDR,
        };
        for o in self.options() {
            let (ty, body) = o?;
            if ty == want {
                return Ok(MacAddr::from_slice(body));
            }
        }
        Ok(None)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdpMessage<T> {
    /// Sets the target of NS, NA or redirect.
    pub fn set_target(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[8..24].copy_from_slice(&a.octets());
    }
    /// Sets NA flags (byte 4) or RA flags (byte 5).
    pub fn set_flags(&mut self, f: u8) {
        let at = if self.msg_type() == Icmpv6Type::ROUTER_ADVERT {
            5
        } else {
            4
        };
        self.buffer.as_mut()[at] = f;
    }
    /// RA: hop limit, router lifetime, reachable time and retransmit timer (ms).
    pub fn set_ra(&mut self, hop_limit: u8, lifetime: u16, reachable: u32, retrans: u32) {
        let b = self.buffer.as_mut();
        b[4] = hop_limit;
        put16(b, 6, lifetime);
        put32(b, 8, reachable);
        put32(b, 12, retrans);
    }
}

/// An NDP option as (type, body after the type and length bytes).
pub type NdpOpt<'a> = Result<(u8, &'a [u8])>;

/// The options of a message, in order.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = NdpOpt<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        let (&ty, after) = self.rest.split_first()?;
        let len = usize::from(*after.first().unwrap_or(&0)) * 8;
        if len == 0 || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(WireError::Malformed {
                what: "ndp option",
                why: "length 0 or past the message",
            }));
        }
        let (opt, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(Ok((ty, opt.get(2..).unwrap_or_default())))
    }
}

/// A prefix information option's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    pub prefix: Ipv6Addr,
    pub len: u8,
    pub flags: u8,
    pub valid: u32,
    pub preferred: u32,
}

impl PrefixInfo {
    /// Reads the body of a prefix information option (30 bytes).
    pub fn parse(body: &[u8]) -> Option<PrefixInfo> {
        if body.len() < 30 {
            return None;
        }
        let mut p = [0u8; 16];
        p.copy_from_slice(body.get(14..30)?);
        Some(PrefixInfo {
            len: body[0],
            flags: body[1],
            valid: be32(body, 2),
            preferred: be32(body, 6),
            prefix: Ipv6Addr::from(p),
        })
    }
}

/// Appends a source or target link-layer address option.
pub fn push_lladdr(out: &mut Vec<u8>, ty: u8, mac: MacAddr) {
    out.extend_from_slice(&[ty, 1]);
    out.extend_from_slice(&mac.0);
}

/// Appends a prefix information option.
pub fn push_prefix(out: &mut Vec<u8>, p: &PrefixInfo) {
    out.extend_from_slice(&[NdpOption::PREFIX_INFO, 4, p.len, p.flags]);
    out.extend_from_slice(&p.valid.to_be_bytes());
    out.extend_from_slice(&p.preferred.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&p.prefix.octets());
}

/// Appends an MTU option.
pub fn push_mtu(out: &mut Vec<u8>, mtu: u32) {
    out.extend_from_slice(&[NdpOption::MTU, 1, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
}

/// Appends a recursive DNS server option (RFC 8106) naming `servers` for `lifetime`
/// seconds.
pub fn push_rdnss(out: &mut Vec<u8>, lifetime: u32, servers: &[Ipv6Addr]) {
    let units = 1 + 2 * servers.len();
    out.extend_from_slice(&[NdpOption::RDNSS, u8::try_from(units).unwrap_or(0), 0, 0]);
    out.extend_from_slice(&lifetime.to_be_bytes());
    for s in servers {
        out.extend_from_slice(&s.octets());
    }
}

/// The servers of an RDNSS option body.
pub fn rdnss_servers(body: &[u8]) -> impl Iterator<Item = Ipv6Addr> + '_ {
    body.get(6..)
        .unwrap_or_default()
        .chunks_exact(16)
        .filter_map(|c| <[u8; 16]>::try_from(c).ok().map(Ipv6Addr::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::captured::{self, bytes};

    /// The ICMPv6 message of a captured frame (behind Ethernet and a bare IPv6 header).
    fn icmp(hex: &str) -> Vec<u8> {
        bytes(hex)[14 + 40..].to_vec()
    }

    #[test]
    fn neighbour_solicitation() {
        let b = icmp(captured::NS);
        let m = NdpMessage::new_checked(&b[..]).unwrap();
        assert_eq!(m.msg_type(), Icmpv6Type::NEIGHBOR_SOLICIT);
        assert_eq!(m.target(), "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            m.lladdr().unwrap(),
            Some(MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]))
        );
        assert!(NdpMessage::new_checked(&b[..23]).is_err());
        // Duplicate address detection: no link-layer address, a nonce option.
        let d = icmp(captured::NS_DAD);
        let m = NdpMessage::new_checked(&d[..]).unwrap();
        assert_eq!(m.lladdr(), Ok(None));
        assert_eq!(m.options().map(|o| o.unwrap().0).collect::<Vec<_>>(), [14]);
        // An echo request is not neighbour discovery.
        assert!(NdpMessage::new_checked(&icmp(captured::ECHO)[..]).is_err());
    }

    #[test]
    fn neighbour_advertisement_and_router_solicitation() {
        let b = icmp(captured::NA);
        let m = NdpMessage::new_checked(&b[..]).unwrap();
        // The capture's host did not forward: no router flag.
        assert_eq!(m.flags(), NA_SOLICITED | NA_OVERRIDE);
        assert_eq!(m.target(), "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(m.lladdr(), Ok(Some(MacAddr([2, 0x42, 0xac, 0x11, 0, 1]))));
        let b = icmp(captured::RS);
        let m = NdpMessage::new_checked(&b[..]).unwrap();
        assert_eq!(m.target(), Ipv6Addr::UNSPECIFIED);
        assert_eq!(m.lladdr(), Ok(Some(MacAddr([2, 0x42, 0xac, 0x11, 0, 2]))));
    }

    #[test]
    fn router_advertisement() {
        let b = icmp(captured::RA);
        let m = NdpMessage::new_checked(&b[..]).unwrap();
        assert_eq!((m.cur_hop_limit(), m.router_lifetime()), (64, 1800));
        assert_eq!(m.flags(), RA_MANAGED | RA_OTHER);
        let opts: Vec<_> = m.options().map(|o| o.unwrap()).collect();
        assert_eq!(
            opts.iter().map(|o| o.0).collect::<Vec<_>>(),
            [
                NdpOption::PREFIX_INFO,
                NdpOption::MTU,
                NdpOption::SOURCE_LLADDR,
                NdpOption::RDNSS
            ]
        );
        let p = PrefixInfo::parse(opts[0].1).unwrap();
        assert_eq!(
            (p.prefix, p.len, p.flags, p.valid),
            ("2001:db8:1::".parse().unwrap(), 64, PREFIX_ON_LINK, 3600)
        );
        let dns: Vec<_> = rdnss_servers(opts[3].1).collect();
        assert_eq!(dns, ["2001:db8:1::1".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(m.lladdr(), Ok(Some(MacAddr([2, 0x42, 0xac, 0x11, 0, 1]))));
    }

    #[test]
    fn built_options_match_the_capture() {
        let want = icmp(captured::RA);
        let mut b = vec![Icmpv6Type::ROUTER_ADVERT, 0, 0, 0];
        b.resize(RA_OPTIONS, 0);
        let mut m = NdpMessage::new_checked(&mut b[..]).unwrap();
        m.set_ra(64, 1800, 0, 0);
        m.set_flags(RA_MANAGED | RA_OTHER);
        let p = PrefixInfo {
            prefix: "2001:db8:1::".parse().unwrap(),
            len: 64,
            flags: PREFIX_ON_LINK,
            valid: 3600,
            preferred: 3600,
        };
        push_prefix(&mut b, &p);
        push_mtu(&mut b, 1500);
        push_lladdr(
            &mut b,
            NdpOption::SOURCE_LLADDR,
            MacAddr([2, 0x42, 0xac, 0x11, 0, 1]),
        );
        push_rdnss(&mut b, 3600, &["2001:db8:1::1".parse().unwrap()]);
        // All but the checksum.
        assert_eq!(b[..2], want[..2]);
        assert_eq!(b[4..], want[4..]);
    }

    #[test]
    fn hostile_options_end_the_walk() {
        let mut b = icmp(captured::NS);
        b[25] = 0; // length 0
        let m = NdpMessage::new_checked(&b[..]).unwrap();
        assert!(m.lladdr().is_err());
        b[25] = 9; // past the end
        let m = NdpMessage::new_checked(&b[..]).unwrap();
        assert!(m.options().next().unwrap().is_err());
        assert!(m.options().nth(1).is_none());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            if let Ok(m) = NdpMessage::new_checked(&b[..]) {
                let _ = (m.target(), m.flags(), m.router_lifetime(), m.lladdr());
                for o in m.options().flatten() {
                    let _ = PrefixInfo::parse(o.1);
                    let _ = rdnss_servers(o.1).count();
                }
            }
        }
    }
}
