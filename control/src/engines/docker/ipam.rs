//! The IPAM driver's calls, answered from vswitch's own IPAM. A pool is a subnet: its
//! id is `vswitch/SUBNET`. Docker asks for the pool before it creates the network, so
//! the subnet is held here (in the plugin) until `CreateNetwork` makes it a vswitch
//! network; addresses are reserved in the daemon (`address_reserve`) and the endpoint's
//! `attach` takes the reservation.

use serde_json::{Value, json};

use super::types::{AddressRequest, GATEWAY_TYPE, REQUEST_ADDRESS_TYPE, ReleasePool, RequestPool};
use super::{DockerError, MAX_PENDING, Plugin, networks};
use crate::api::{AddressReserved, Request};
use crate::client::{Client, ClientError};
use crate::net::Ipv4Cidr;

/// The address space Docker names this IPAM's pools by.
pub const ADDRESS_SPACE: &str = "vswitch";
const POOL_PREFIX: &str = "vswitch/";

fn refuse(msg: String) -> DockerError {
    DockerError::Refused(msg)
}

/// A subnet as Docker gives it: canonical, IPv4.
fn subnet(s: &str) -> Result<Ipv4Cidr, DockerError> {
    let c: Ipv4Cidr = s
        .parse()
        .map_err(|e| refuse(format!("subnet {s:?}: {e}")))?;
    if !c.is_canonical() {
        return Err(refuse(format!(
            "subnet {s} has host bits set: use {}",
            c.network()
        )));
    }
    Ok(c)
}

/// The subnet a pool id names.
fn pool_subnet(id: &str) -> Result<Ipv4Cidr, DockerError> {
    id.strip_prefix(POOL_PREFIX)
        .ok_or_else(|| refuse(format!("pool {id:?} is not one of vswitch's")))
        .and_then(subnet)
}

impl Plugin {
    pub(super) fn request_pool(&self, r: RequestPool) -> Result<Value, DockerError> {
        if r.v6 || r.pool.contains(':') {
            return Err(refuse(
                "vswitch networks are IPv4 only: create the network without --ipv6".into(),
            ));
        }
        if r.pool.is_empty() && !r.sub_pool.is_empty() {
            return Err(refuse("--ip-range needs --subnet".into()));
        }
        let mut c = self.client()?;
        let rows = networks(&mut c)?;
        let mut held = self.held();
        let mut used: Vec<Ipv4Cidr> = rows.iter().filter_map(|n| n.subnet).collect();
        used.extend(held.pools.keys().filter_map(|s| s.parse::<Ipv4Cidr>().ok()));
        let pool = if r.pool.is_empty() {
            crate::state::free_pool(&used).ok_or_else(|| {
                refuse("vswitch's default pools are all used: give --subnet".into())
            })?
        } else {
            let want = subnet(&r.pool)?;
            let clash = rows
                .iter()
                .find_map(|n| n.subnet.filter(|s| s.overlaps(&want)).map(|s| (n, s)));
            if let Some((n, subnet)) = clash {
                return Err(refuse(format!(
                    "subnet {want} overlaps vswitch network {:?} ({})",
                    n.name, subnet
                )));
            }
            want
        };
        let range = match r.sub_pool.as_str() {
            "" => None,
            s => Some(s.to_string()),
        };
        if held.pools.len() >= MAX_PENDING {
            return Err(refuse(format!(
                "{MAX_PENDING} pools are waiting for their networks already"
            )));
        }
        held.pools.insert(pool.to_string(), range);
        let gateway = format!(
            "{}/{}",
            std::net::Ipv4Addr::from(pool.first() + 1),
            pool.prefix_len()
        );
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
            a => Some(super::options::addr_of(a)?),
        };
        let gateway = r
            .options
            .as_ref()
            .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
            .is_some_and(|t| t == GATEWAY_TYPE);
        let mut c = self.client()?;
        let network = networks(&mut c)?
            .into_iter()
            .find(|n| n.subnet == Some(pool));
        let ip = match (network, gateway, want) {
            // The network is made after its gateway and `--aux-address`es are asked for:
            // they are what was asked (CreateNetwork takes them to the daemon).
            (None, _, Some(ip)) | (Some(_), true, Some(ip)) => usable(pool, ip)?,
            (_, true, None) => std::net::Ipv4Addr::from(pool.first() + 1),
            (Some(n), false, want) => reserve(&mut c, &n.name, want)?,
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
        let ip = super::options::addr_of(&r.address)?;
        let mut c = self.client()?;
        if let Some(n) = networks(&mut c)?
            .into_iter()
            .find(|n| n.subnet == Some(pool))
        {
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

/// `ip`, when it is a usable address of `pool`.
fn usable(pool: Ipv4Cidr, ip: std::net::Ipv4Addr) -> Result<std::net::Ipv4Addr, DockerError> {
    let edge = ip == pool.network().addr() || ip == pool.broadcast();
    if !pool.contains(ip) || edge {
        return Err(refuse(format!(
            "address {ip} is not a usable address of subnet {pool}"
        )));
    }
    Ok(ip)
}

/// An address of `network` reserved in the daemon (`want`, else the next free one).
fn reserve(
    c: &mut Client,
    network: &str,
    want: Option<std::net::Ipv4Addr>,
) -> Result<std::net::Ipv4Addr, DockerError> {
    let r: AddressReserved = c.request(Request::AddressReserve {
        network: network.to_string(),
        ip: want,
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
        assert!(pool_subnet("LocalDefault/10.1.0.0/24").is_err());
        assert!(pool_subnet("vswitch/10.1.0.1/24").is_err());
        assert!(
            usable(
                "10.1.0.0/24".parse().unwrap(),
                "10.1.0.255".parse().unwrap()
            )
            .is_err()
        );
        assert!(usable("10.1.0.0/24".parse().unwrap(), "10.1.1.2".parse().unwrap()).is_err());
    }

    #[test]
    fn ipv6_pools_are_refused_before_the_daemon_is_asked() {
        let p = Plugin::new(
            "/nonexistent.sock".into(),
            "/proc/1/ns/net".into(),
            "vswitch",
        );
        let e = p
            .request_pool(RequestPool {
                pool: String::new(),
                sub_pool: String::new(),
                v6: true,
            })
            .unwrap_err();
        assert!(e.to_string().contains("IPv4 only"), "{e}");
    }
}
