//! IPv4 and IPv6 prefixes (CIDR): one type per family for the dataplane and the control
//! plane.

use core::fmt;
use core::str::FromStr;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An IPv4 prefix such as 172.18.0.0/16. `addr` may have host bits set (a gateway with
/// its prefix, as `--bip` takes); [`Ipv4Cidr::network`] clears them. The prefix length
/// is at most 32 whichever way the value was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

/// A string that is not `A.B.C.D/N` with N at most 32.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected an IPv4 prefix like 172.18.0.0/16")]
pub struct CidrError(pub String);

impl Ipv4Cidr {
    /// A prefix; lengths above 32 are clamped to 32.
    #[inline]
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Cidr {
        let prefix_len = if prefix_len > 32 { 32 } else { prefix_len };
        Ipv4Cidr { addr, prefix_len }
    }

    #[inline]
    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    #[inline]
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask as a host-order integer (0 for /0).
    #[inline]
    pub const fn mask(&self) -> u32 {
        mask_of(self.prefix_len)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    /// The prefix with host bits cleared.
    pub fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(
            Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            self.prefix_len,
        )
    }

    /// Whether `addr` has no host bits set.
    pub fn is_canonical(&self) -> bool {
        self.network().addr == self.addr
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, o: &Ipv4Cidr) -> bool {
        self.contains(o.network().addr) || o.contains(self.network().addr)
    }

    /// Whether `o` lies entirely inside this prefix.
    pub fn covers(&self, o: &Ipv4Cidr) -> bool {
        o.prefix_len >= self.prefix_len && self.contains(o.network().addr)
    }

    /// The first address (the network address) as an integer.
    pub fn first(&self) -> u32 {
        u32::from(self.network().addr)
    }

    /// The last address (the broadcast address) as an integer.
    pub fn last(&self) -> u32 {
        u32::from(self.broadcast())
    }
}

/// The netmask of a prefix length as a host-order integer; lengths above 32 count as 32.
#[inline]
pub const fn mask_of(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n if n >= 32 => u32::MAX,
        n => u32::MAX << (32 - n as u32),
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix_len: u8 = p.parse().map_err(|_| bad())?;
        if prefix_len > 32 {
            return Err(bad());
        }
        Ok(Ipv4Cidr { addr, prefix_len })
    }
}

/// An IPv6 prefix such as 2001:db8:1::/64: the same operations as [`Ipv4Cidr`] over
/// 128-bit addresses. The prefix length is at most 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    addr: Ipv6Addr,
    prefix_len: u8,
}

/// A string that is not `ADDR/N` with an IPv6 address and N at most 128.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected an IPv6 prefix like 2001:db8:1::/64")]
pub struct Cidr6Error(pub String);

impl Ipv6Cidr {
    /// A prefix; lengths above 128 are clamped to 128.
    pub const fn new(addr: Ipv6Addr, prefix_len: u8) -> Ipv6Cidr {
        let prefix_len = if prefix_len > 128 { 128 } else { prefix_len };
        Ipv6Cidr { addr, prefix_len }
    }
    pub const fn addr(&self) -> Ipv6Addr {
        self.addr
    }
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
    /// The mask as an integer (0 for /0).
    pub const fn mask(&self) -> u128 {
        match self.prefix_len {
            0 => 0,
            n if n >= 128 => u128::MAX,
            n => u128::MAX << (128 - n as u32),
        }
    }
    /// The prefix with host bits cleared.
    pub fn network(&self) -> Ipv6Cidr {
        Ipv6Cidr::new(
            Ipv6Addr::from(u128::from(self.addr) & self.mask()),
            self.prefix_len,
        )
    }
    pub fn is_canonical(&self) -> bool {
        self.network().addr == self.addr
    }
    #[inline]
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr) & self.mask()
    }
    pub fn overlaps(&self, o: &Ipv6Cidr) -> bool {
        self.contains(o.network().addr) || o.contains(self.network().addr)
    }
    pub fn covers(&self, o: &Ipv6Cidr) -> bool {
        o.prefix_len >= self.prefix_len && self.contains(o.network().addr)
    }
    /// The first address as an integer.
    pub fn first(&self) -> u128 {
        u128::from(self.network().addr)
    }
    /// The last address as an integer.
    pub fn last(&self) -> u128 {
        u128::from(self.addr) | !self.mask()
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = Cidr6Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Cidr6Error(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let prefix_len: u8 = p.parse().map_err(|_| bad())?;
        if prefix_len > 128 {
            return Err(bad());
        }
        Ok(Ipv6Cidr { addr, prefix_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(n("172.18.0.0/16").to_string(), "172.18.0.0/16");
        for bad in ["172.18.0.0", "172.18.0.0/33", "1.2.3/8", "x/8", "1.2.3.4/"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask_of(0), 0);
        assert_eq!(mask_of(8), 0xff00_0000);
        assert_eq!(mask_of(32), u32::MAX);
        assert_eq!(mask_of(200), u32::MAX);
        assert_eq!(Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 99).prefix_len(), 32);
        assert!(n("0.0.0.0/0").contains(Ipv4Addr::new(9, 9, 9, 9)));
    }

    #[test]
    fn arithmetic() {
        let a = n("172.18.0.0/16");
        assert!(a.contains(Ipv4Addr::new(172, 18, 255, 254)));
        assert!(!a.contains(Ipv4Addr::new(172, 19, 0, 1)));
        assert_eq!(a.broadcast(), Ipv4Addr::new(172, 18, 255, 255));
        assert_eq!(a.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert!(a.overlaps(&n("172.18.5.0/24")));
        assert!(n("172.18.5.0/24").overlaps(&a));
        assert!(!a.overlaps(&n("172.19.0.0/16")));
        assert!(a.covers(&n("172.18.5.0/24")));
        assert!(!n("172.18.5.0/24").covers(&a));
        let g = n("10.10.0.1/24");
        assert!(!g.is_canonical());
        assert_eq!(g.network(), n("10.10.0.0/24"));
        assert_eq!(g.first(), u32::from(Ipv4Addr::new(10, 10, 0, 0)));
        assert_eq!(g.last(), u32::from(Ipv4Addr::new(10, 10, 0, 255)));
    }

    #[test]
    fn ipv6_prefixes() {
        let a: Ipv6Cidr = "2001:db8:1::/64".parse().unwrap();
        assert_eq!(a.to_string(), "2001:db8:1::/64");
        assert!(a.contains("2001:db8:1::42:acff:fe11:2".parse().unwrap()));
        assert!(!a.contains("2001:db8:2::1".parse().unwrap()));
        let wide: Ipv6Cidr = "2001:db8:1::/48".parse().unwrap();
        assert!(wide.covers(&a) && !a.covers(&wide) && a.overlaps(&wide));
        assert!(!a.overlaps(&"2001:db8:2::/64".parse().unwrap()));
        let g: Ipv6Cidr = "2001:db8:1::1/64".parse().unwrap();
        assert!(!g.is_canonical());
        assert_eq!(g.network(), a);
        assert_eq!(a.last() - a.first(), u128::from(u64::MAX));
        assert_eq!(Ipv6Cidr::new(Ipv6Addr::LOCALHOST, 200).prefix_len(), 128);
        assert_eq!(Ipv6Cidr::new(Ipv6Addr::LOCALHOST, 0).mask(), 0);
        for bad in ["2001:db8::", "2001:db8::/129", "10.0.0.0/8", "x/64"] {
            assert!(bad.parse::<Ipv6Cidr>().is_err(), "{bad}");
        }
    }
}
