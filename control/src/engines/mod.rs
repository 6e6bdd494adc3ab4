//! The container engines' front ends, one binary each, all thin clients of the daemon's
//! control socket:
//!
//! - [`cni`]: `vswitch-cni`, a CNI plugin (podman 4, containerd, CRI-O, Kubernetes);
//! - [`netavark`]: `vswitch-netavark`, a netavark plugin (podman 5);
//! - [`docker`]: `vswitch-docker`, Docker's network and IPAM driver plugin.
//!
//! What they share lives here: the daemon's containers an engine made (marked with its
//! `owner` and its container or endpoint id) and how one is detached, the `-p` spec of
//! a port mapping whatever its engine's shape, a network made when missing, and the
//! line a user reads when the daemon is not running.

pub mod cni;
pub mod docker;
pub mod netavark;

use std::net::IpAddr;
use std::path::Path;

use crate::api::{NetworkInspect, Request};
use crate::client::{Client, ClientError};
use crate::state::NetworkSpec;

/// What `container_ls` reports of one container.
pub type Listed = crate::api::ContainerRow;
/// One endpoint of a [`Listed`] container.
pub type ListedEndpoint = crate::api::ContainerEndpoint;

/// Why the daemon's container list could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the daemon's container list is not understood: {0}")]
    Garbled(#[from] serde_json::Error),
}

/// Every container the daemon's state holds.
pub fn containers(client: &mut Client) -> Result<Vec<Listed>, ListError> {
    Ok(serde_json::from_value(client.call(Request::ContainerLs)?)?)
}

/// The attachment `owner` made for container `id` on `network` as `ifname`: the
/// container and the endpoint's index.
pub fn find<'a>(
    list: &'a [Listed],
    owner: &str,
    id: &str,
    (network, ifname): (&str, &str),
) -> Option<(&'a Listed, usize)> {
    list.iter()
        .filter(|c| c.owner.as_deref() == Some(owner) && c.id == id)
        .find_map(|c| {
            c.endpoints
                .iter()
                .position(|e| e.network == network && e.ifname == ifname)
                .map(|i| (c, i))
        })
}

/// Detaches endpoint `i` of `c`: the whole container when it is its only one. A
/// container gone meanwhile is what was wanted.
pub fn detach(client: &mut Client, c: &Listed, i: usize) -> Result<(), ClientError> {
    let network = match (c.endpoints.len(), c.endpoints.get(i)) {
        (1, _) | (_, None) => None,
        (_, Some(e)) => Some(e.network.clone()),
    };
    match client.call(Request::Detach {
        name: c.name.clone(),
        network,
    }) {
        Ok(_) | Err(ClientError::Refused(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the user reads when the daemon does not answer at `socket`.
pub fn daemon_down(socket: &Path) -> String {
    format!(
        "daemon not running at {}: start it with `vswitch daemon`",
        socket.display()
    )
}

/// The first 12 characters of an engine's id: the name vswitch gives what has no other
/// (Docker shows ids so shortened).
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// One published port (or range) an engine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMap<'a> {
    /// The host address to bind, empty for all.
    pub host_ip: &'a str,
    /// The first host port, `None` for one the daemon picks.
    pub host_port: Option<u16>,
    pub container_port: u16,
    /// How many consecutive ports (1 for one).
    pub count: u16,
    /// `tcp` or `udp` (any case).
    pub proto: &'a str,
}

/// Why a port mapping cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortMapError {
    #[error("port mapping protocol {0:?} is not supported: use tcp or udp")]
    Proto(String),
    #[error("port range {0}+{1} is past 65535")]
    Range(u16, u16),
}

impl PortMap<'_> {
    /// The daemon's `-p` spec: `[HOST_IP:][HOST[-END]:]PORT[-END]/PROTO`.
    pub fn spec(&self) -> Result<String, PortMapError> {
        let proto = self.proto.to_ascii_lowercase();
        if proto != "tcp" && proto != "udp" {
            return Err(PortMapError::Proto(self.proto.to_string()));
        }
        let n = self.count.max(1) - 1;
        let last = |p: u16| p.checked_add(n).ok_or(PortMapError::Range(p, n));
        let range = |p: u16| -> Result<String, PortMapError> {
            Ok(if n == 0 {
                p.to_string()
            } else {
                format!("{p}-{}", last(p)?)
            })
        };
        let host_ip = match self.host_ip {
            "" => String::new(),
            ip if ip.contains(':') && !ip.starts_with('[') => format!("[{ip}]:"),
            ip => format!("{ip}:"),
        };
        let container = range(self.container_port)?;
        Ok(match self.host_port {
            Some(h) => format!("{host_ip}{}:{container}/{proto}", range(h)?),
            None if host_ip.is_empty() => format!("{container}/{proto}"),
            None => format!("{host_ip}:{container}/{proto}"),
        })
    }
}

/// Why an engine's subnets and gateways do not make one network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FamilyError {
    #[error("more than one {0} subnet: give at most one IPv4 and one IPv6 subnet")]
    Subnets(&'static str),
    #[error("more than one {0} gateway: give at most one IPv4 and one IPv6 gateway")]
    Gateways(&'static str),
}

/// Puts an engine's subnets and gateways into `spec` by address family, as `network
/// create --subnet ... --gateway ...` does: at most one of each family; an IPv6 subnet
/// or gateway turns IPv6 on.
pub fn by_family(
    spec: &mut NetworkSpec,
    subnets: &[String],
    gateways: &[IpAddr],
) -> Result<(), FamilyError> {
    let one = |v: Vec<String>, family| match v.as_slice() {
        [] => Ok(None),
        [s] => Ok(Some(s.clone())),
        _ => Err(FamilyError::Subnets(family)),
    };
    let (v6, v4): (Vec<String>, Vec<String>) =
        subnets.iter().cloned().partition(|s| s.contains(':'));
    let mut g4 = gateways.iter().filter_map(|g| match g {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    });
    let mut g6 = gateways.iter().filter_map(|g| match g {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    spec.subnet = one(v4, "IPv4")?;
    spec.subnet6 = one(v6, "IPv6")?;
    spec.gateway = g4.next();
    spec.gateway6 = g6.next();
    if g4.next().is_some() {
        return Err(FamilyError::Gateways("IPv4"));
    }
    if g6.next().is_some() {
        return Err(FamilyError::Gateways("IPv6"));
    }
    spec.ipv6 |= spec.subnet6.is_some() || spec.gateway6.is_some();
    Ok(())
}

/// The network `spec` names as the daemon has it, created from `spec` when missing (a
/// parallel call that created it first is fine).
pub fn ensure_network(
    client: &mut Client,
    spec: &NetworkSpec,
) -> Result<NetworkInspect, ClientError> {
    let inspect = |c: &mut Client| {
        c.request::<Vec<NetworkInspect>>(Request::NetworkInspect {
            name: spec.name.clone(),
        })?
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Garbled("network_inspect answered no network".into()))
    };
    match inspect(client) {
        Ok(n) => return Ok(n),
        Err(ClientError::Refused(_)) => {}
        Err(e) => return Err(e),
    }
    match client.request::<NetworkInspect>(Request::NetworkCreate(spec.clone())) {
        Ok(n) => Ok(n),
        Err(ClientError::Refused(_)) => inspect(client),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A listed container with endpoints (network, ifname), all open.
    pub(crate) fn listed(
        name: &str,
        id: &str,
        owner: Option<&str>,
        eps: &[(&str, &str)],
    ) -> Listed {
        Listed {
            name: name.into(),
            id: id.into(),
            owner: owner.map(String::from),
            sandbox: "/run/netns/x".into(),
            endpoints: eps
                .iter()
                .map(|(n, i)| ListedEndpoint {
                    network: n.to_string(),
                    ifname: i.to_string(),
                    ip: Some(std::net::Ipv4Addr::new(10, 0, 0, 2)),
                    ip6: None,
                    mac: dataplane::wire::MacAddr([2, 0, 0, 0, 0, 2]),
                    port: format!("{name}-{n}"),
                    open: true,
                })
                .collect(),
        }
    }

    #[test]
    fn only_the_owners_attachments_are_found() {
        let list = vec![
            listed("web", "abc", None, &[("front", "eth0")]),
            listed("web2", "abc", Some("cni"), &[("front", "eth1")]),
            listed("web3", "abc", Some("netavark"), &[("front", "eth0")]),
        ];
        assert!(find(&list, "cni", "abc", ("front", "eth0")).is_none());
        let (c, i) = find(&list, "cni", "abc", ("front", "eth1")).unwrap();
        assert_eq!((c.name.as_str(), i), ("web2", 0));
        let (c, _) = find(&list, "netavark", "abc", ("front", "eth0")).unwrap();
        assert_eq!(c.name, "web3");
    }

    fn map(host_ip: &str, host_port: Option<u16>, count: u16, proto: &str) -> PortMap<'static> {
        PortMap {
            host_ip: Box::leak(host_ip.to_string().into_boxed_str()),
            host_port,
            container_port: 80,
            count,
            proto: Box::leak(proto.to_string().into_boxed_str()),
        }
    }

    #[test]
    fn subnets_and_gateways_go_to_their_family() {
        let mut spec = NetworkSpec::default();
        let nets = ["fd00:1::/64".to_string(), "10.1.0.0/24".to_string()];
        let gws: [IpAddr; 2] = ["10.1.0.1".parse().unwrap(), "fd00:1::1".parse().unwrap()];
        by_family(&mut spec, &nets, &gws).unwrap();
        assert_eq!(spec.subnet.as_deref(), Some("10.1.0.0/24"));
        assert_eq!(spec.subnet6.as_deref(), Some("fd00:1::/64"));
        assert_eq!(spec.gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(spec.gateway6, Some("fd00:1::1".parse().unwrap()));
        assert!(spec.ipv6);
        let mut v4 = NetworkSpec::default();
        by_family(&mut v4, &nets[1..], &[]).unwrap();
        assert!(!v4.ipv6 && v4.subnet6.is_none());
        let two = ["fd00:1::/64".to_string(), "fd00:2::/64".to_string()];
        assert_eq!(
            by_family(&mut v4, &two, &[]),
            Err(FamilyError::Subnets("IPv6"))
        );
        let twice = [gws[0], gws[0]];
        assert_eq!(
            by_family(&mut v4, &[], &twice),
            Err(FamilyError::Gateways("IPv4"))
        );
    }

    #[test]
    fn port_maps_become_the_daemons_specs() {
        assert_eq!(map("", Some(8080), 1, "TCP").spec().unwrap(), "8080:80/tcp");
        assert_eq!(
            map("127.0.0.1", Some(5353), 2, "udp").spec().unwrap(),
            "127.0.0.1:5353-5354:80-81/udp"
        );
        assert_eq!(map("", None, 1, "tcp").spec().unwrap(), "80/tcp");
        assert_eq!(
            map("10.0.0.1", None, 1, "tcp").spec().unwrap(),
            "10.0.0.1::80/tcp"
        );
        assert_eq!(
            map("", Some(8080), 1, "sctp").spec(),
            Err(PortMapError::Proto("sctp".into()))
        );
        assert_eq!(
            map("", Some(65535), 2, "tcp").spec(),
            Err(PortMapError::Range(65535, 1))
        );
    }
}
