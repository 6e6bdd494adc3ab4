//! IPv4 prefixes (CIDR) for networks, IPAM and validation.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix such as 172.18.0.0/16. `addr` may have host bits set (a gateway with
/// its prefix, as `--bip` takes); [`Ipv4Net::network`] clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected an IPv4 prefix like 172.18.0.0/16")]
pub struct CidrError(pub String);

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        Ipv4Net {
            addr,
            prefix: prefix.min(32),
        }
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    /// The prefix with host bits cleared.
    pub fn network(&self) -> Ipv4Net {
        Ipv4Net::new(
            Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            self.prefix,
        )
    }

    pub fn is_canonical(&self) -> bool {
        self.network().addr == self.addr
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, o: &Ipv4Net) -> bool {
        self.contains(o.network().addr) || o.contains(self.network().addr)
    }

    /// Whether `o` lies entirely inside this prefix.
    pub fn covers(&self, o: &Ipv4Net) -> bool {
        o.prefix >= self.prefix && self.contains(o.network().addr)
    }

    pub fn first(&self) -> u32 {
        u32::from(self.network().addr)
    }

    pub fn last(&self) -> u32 {
        u32::from(self.broadcast())
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').ok_or_else(|| CidrError(s.to_string()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| CidrError(s.to_string()))?;
        let prefix: u8 = p.parse().map_err(|_| CidrError(s.to_string()))?;
        if prefix > 32 {
            return Err(CidrError(s.to_string()));
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(n("172.18.0.0/16").to_string(), "172.18.0.0/16");
        for bad in ["172.18.0.0", "172.18.0.0/33", "1.2.3/8", "x/8", "1.2.3.4/"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
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
    }
}
