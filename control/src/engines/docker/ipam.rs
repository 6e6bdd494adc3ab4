//! The IPAM driver's calls, answered from vswitch's own IPAM. A pool is a subnet: its
//! id is `vswitch/SUBNET`. Docker asks for the pool before it creates the network, so
//! the subnet is held here (in the plugin) until `CreateNetwork` makes it a vswitch
//! network; addresses are reserved in the daemon (`address_reserve`) and the endpoint's
//! `attach` takes the reservation.

use serde_json::{Value, json};

use super::types::{AddressRequest, GATEWAY_TYPE, REQUEST_ADDRESS_TYPE, ReleasePool, RequestPool};
use super::{DockerError, MAX_PENDING, Plugin, networks};
use crate::api::{AddressReserved, NetworkRow, Request};
use crate::client::{Client, ClientError};
use crate::net::{Ipv4Cidr, Ipv6Cidr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address space Docker names this IPAM's pools by.
pub const ADDRESS_SPACE: &str = "vswitch";
const POOL_PREFIX: &str = "vswitch/";

fn refuse(msg: String) -> DockerError {
    DockerError::Refused(msg)
}

/// A pool: a subnet of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subnet {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subnet::V4(c) => c.fmt(f),
            Subnet::V6(c) => c.fmt(f),
        }
    }
}

impl Subnet {
    /// A subnet as Docker gives it: canonical, either family.
    pub(super) fn parse(s: &str) -> Result<Subnet, DockerError> {
        let bad = |e: String| refuse(format!("subnet {s:?}: {e}"));
        let (c, canonical) = if s.contains(':') {
            let c: Ipv6Cidr = s.parse().map_err(|e| bad(format!("{e}")))?;
            (
                Subnet::V6(c),
                c.is_canonical()
                    .then_some(())
                    .ok_or(c.network().to_string()),
            )
        } else {
            let c: Ipv4Cidr = s.parse().map_err(|e| bad(format!("{e}")))?;
            (
                Subnet::V4(c),
                c.is_canonical()
                    .then_some(())
                    .ok_or(c.network().to_string()),
            )
        };
        match canonical {
            Ok(()) => Ok(c),
            Err(net) => Err(refuse(format!("subnet {s} has host bits set: use {net}"))),
        }
    }

    fn prefix_len(self) -> u8 {
        match self {
            Subnet::V4(c) => c.prefix_len(),
            Subnet::V6(c) => c.prefix_len(),
        }
    }

    /// The gateway vswitch gives a subnet: its first address after the network's.
    fn gateway(self) -> IpAddr {
        match self {
            Subnet::V4(c) => IpAddr::V4(Ipv4Addr::from(c.first() + 1)),
            Subnet::V6(c) => IpAddr::V6(Ipv6Addr::from(c.first() + 1)),
        }
    }

    /// Whether vswitch network `n` has this subnet.
    pub(super) fn is_of(self, n: &NetworkRow) -> bool {
        match self {
            Subnet::V4(c) => n.subnet == Some(c),
            Subnet::V6(c) => n.subnet6 == Some(c),
        }
    }

    /// The subnet of `n`'s of this family that overlaps this one.
    pub(super) fn clash(self, n: &NetworkRow) -> Option<String> {
        match self {
            Subnet::V4(c) => n.subnet.filter(|s| s.overlaps(&c)).map(|s| s.to_string()),
            Subnet::V6(c) => n.subnet6.filter(|s| s.overlaps(&c)).map(|s| s.to_string()),
        }
    }

    /// `ip`, when it is a usable address of this subnet.
    fn usable(self, ip: IpAddr) -> Result<IpAddr, DockerError> {
        let ok = match (self, ip) {
            (Subnet::V4(c), IpAddr::V4(a)) => {
                c.contains(a) && a != c.network().addr() && a != c.broadcast()
            }
            (Subnet::V6(c), IpAddr::V6(a)) => c.contains(a) && a != c.network().addr(),
            _ => false,
        };
        if !ok {
            return Err(refuse(format!(
                "address {ip} is not a usable address of subnet {self}"
            )));
        }
        Ok(ip)
    }
}

/// The subnet a pool id names.
fn pool_subnet(id: &str) -> Result<Subnet, DockerError> {
    id.strip_prefix(POOL_PREFIX)
        .ok_or_else(|| refuse(format!("pool {id:?} is not one of vswitch's")))
        .and_then(Subnet::parse)
}

impl Plugin {
    pub(super) fn request_pool(&self, r: RequestPool) -> Result<Value, DockerError> {
        if r.pool.is_empty() && !r.sub_pool.is_empty() {
            return Err(refuse("--ip-range needs --subnet".into()));
        }
        let mut c = self.client()?;
        let rows = networks(&mut c)?;
        let ula = if r.v6 && r.pool.is_empty() {
            Some(c.request::<crate::api::Ula>(Request::Ula)?.ula)
        } else {
            None
        };
        // Held from the choice to the insertion: two pools asked at once differ.
        let mut held = self.held();
        let pool = if r.pool.is_empty() {
            let taken: Vec<Subnet> = (held.pools.keys())
                .filter_map(|s| Subnet::parse(s).ok())
                .collect();
            free_pool(&rows, &taken, ula)?
        } else {
            let want = Subnet::parse(&r.pool)?;
            if matches!(want, Subnet::V6(_)) != r.v6 {
                return Err(refuse(format!(
                    "subnet {want} is not of the family Docker asked a pool of"
                )));
            }
            if let Some((n, s)) = rows.iter().find_map(|n| want.clash(n).map(|s| (n, s))) {
                return Err(refuse(format!(
                    "subnet {want} overlaps vswitch network {:?} ({s})",
                    n.name
                )));
            }
            want
        };
        if held.pools.len() >= MAX_PENDING {
            return Err(refuse(format!(
                "{MAX_PENDING} pools are waiting for their networks already"
            )));
        }
        let range = Some(r.sub_pool).filter(|s| !s.is_empty());
        held.pools.insert(pool.to_string(), range);
        let gateway = format!("{}/{}", pool.gateway(), pool.prefix_len());
        Ok(json!({
            "PoolID": format!("{POOL_PREFIX}{pool}"),
            "Pool": pool.to_string(),
            "Data": {GATEWAY_TYPE: gateway},
        }))
    }

    pub(super) fn release_pool(&self, r: ReleasePool) -> Result<Value, DockerError> {
        if let Ok(s) = pool_subnet(&r.pool_id) {
            self.held().pools.remove(&s.to_string());
        }
        Ok(json!({}))
    }

    pub(super) fn request_address(&self, r: AddressRequest) -> Result<Value, DockerError> {
        let pool = pool_subnet(&r.pool_id)?;
        let want = match r.address.as_str() {
            "" => None,
            a => Some(super::options::ip_of(a)?),
        };
        let gateway = r
            .options
            .as_ref()
            .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
            .is_some_and(|t| t == GATEWAY_TYPE);
        let mut c = self.client()?;
        let network = networks(&mut c)?.into_iter().find(|n| pool.is_of(n));
        let ip = match (network, gateway, want) {
            // The network is made after its gateway and `--aux-address`es are asked for:
            // they are what was asked (CreateNetwork takes them to the daemon).
            (None, _, Some(ip)) | (Some(_), true, Some(ip)) => pool.usable(ip)?,
            (_, true, None) => pool.gateway(),
            (Some(n), false, want) => reserve(&mut c, &n.name, want, pool)?,
            (None, false, None) => {
                return Err(refuse(format!(
                    "no vswitch network has subnet {pool}: vswitch's IPAM serves networks of its driver (-d {})",
                    self.driver
                )));
            }
        };
        Ok(json!({
            "Address": format!("{ip}/{}", pool.prefix_len()),
            "Data": {},
        }))
    }

    pub(super) fn release_address(&self, r: AddressRequest) -> Result<Value, DockerError> {
        let pool = pool_subnet(&r.pool_id)?;
        let ip = super::options::ip_of(&r.address)?;
        let mut c = self.client()?;
        if let Some(n) = networks(&mut c)?.into_iter().find(|n| pool.is_of(n)) {
            // A network removed meanwhile holds nothing any more.
            match c.call(Request::AddressRelease {
                network: n.name,
                ip,
            }) {
                Ok(_) | Err(ClientError::Refused(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(json!({}))
    }
}

/// A subnet no vswitch network and no pool `held` has: with `ula` (an IPv6 pool), the
/// first free /64 of it; else from vswitch's default IPv4 pools.
fn free_pool(
    rows: &[NetworkRow],
    held: &[Subnet],
    ula: Option<Ipv6Cidr>,
) -> Result<Subnet, DockerError> {
    if let Some(ula) = ula {
        let used = |s: &Ipv6Cidr| {
            let held6 = held
                .iter()
                .any(|h| matches!(h, Subnet::V6(o) if o.overlaps(s)));
            held6
                || rows
                    .iter()
                    .any(|n| n.subnet6.is_some_and(|o| o.overlaps(s)))
        };
        let base = u128::from(ula.network().addr());
        return (0..=u128::from(u16::MAX))
            .map(|i| Ipv6Cidr::new(Ipv6Addr::from(base | (i << 64)), 64))
            .find(|s| !used(s))
            .map(Subnet::V6)
            .ok_or_else(|| refuse(format!("every /64 of {ula} is used: give --subnet")));
    }
    let mut used: Vec<Ipv4Cidr> = rows.iter().filter_map(|n| n.subnet).collect();
    used.extend(held.iter().filter_map(|s| match s {
        Subnet::V4(c) => Some(*c),
        Subnet::V6(_) => None,
    }));
    crate::state::free_pool(&used)
        .map(Subnet::V4)
        .ok_or_else(|| refuse("vswitch's default pools are all used: give --subnet".into()))
}

/// An address of `network` reserved in the daemon (`want`, else the next free one of
/// `pool`'s family).
fn reserve(
    c: &mut Client,
    network: &str,
    want: Option<IpAddr>,
    pool: Subnet,
) -> Result<IpAddr, DockerError> {
    let r: AddressReserved = c.request(Request::AddressReserve {
        network: network.to_string(),
        ip: want,
        ipv6: matches!(pool, Subnet::V6(_)),
    })?;
    Ok(r.ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_name_their_subnet() {
        assert_eq!(
            pool_subnet("vswitch/10.1.0.0/24").unwrap().to_string(),
            "10.1.0.0/24"
        );
        assert_eq!(
            pool_subnet("vswitch/fd00:1::/64").unwrap().to_string(),
            "fd00:1::/64"
        );
        assert!(pool_subnet("LocalDefault/10.1.0.0/24").is_err());
        assert!(pool_subnet("vswitch/10.1.0.1/24").is_err());
        assert!(pool_subnet("vswitch/fd00:1::1/64").is_err());
        let v4 = Subnet::parse("10.1.0.0/24").unwrap();
        assert!(v4.usable("10.1.0.255".parse().unwrap()).is_err());
        assert!(v4.usable("10.1.1.2".parse().unwrap()).is_err());
        assert!(v4.usable("fd00:1::2".parse().unwrap()).is_err());
        let v6 = Subnet::parse("fd00:1::/64").unwrap();
        assert!(v6.usable("fd00:1::2".parse().unwrap()).is_ok());
        assert!(v6.usable("fd00:1::".parse().unwrap()).is_err());
        assert_eq!(v6.gateway().to_string(), "fd00:1::1");
    }

    #[test]
    fn free_pools_skip_networks_and_held_pools() {
        let ula: Ipv6Cidr = "fd12:3456:789a::/48".parse().unwrap();
        let held = [Subnet::parse("fd12:3456:789a::/64").unwrap()];
        let p = free_pool(&[], &held, Some(ula)).unwrap();
        assert_eq!(p.to_string(), "fd12:3456:789a:1::/64");
        let held = [Subnet::parse("172.18.0.0/16").unwrap()];
        assert_eq!(
            free_pool(&[], &held, None).unwrap().to_string(),
            "172.19.0.0/16"
        );
    }
}
