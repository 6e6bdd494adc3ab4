//! The network driver's calls: networks, endpoints, joining a container, published ports.

use serde_json::{Value, json};

use super::ipam::Subnet;
use super::options;
use super::types::{
    CreateEndpoint, CreateNetwork, EndpointInterface, EndpointRef, ExternalConnectivity,
    InterfaceName, Join, Joined, NetworkRef,
};
use super::{DockerError, MAX_PENDING, OWNER, Pending, Plugin, container_of, network_of};
use crate::api::{AttachReq, PublishedEntry, Request};
use crate::client::{Client, ClientError};
use crate::engines::{self, short_id};
use crate::state::Proto;
use dataplane::wire::MacAddr;

/// The name Docker gives the TAP in the container: `eth` and an index.
const DST_PREFIX: &str = "eth";

/// The TAP of endpoint `id` in Docker's namespace before Docker moves it (15
/// characters, an interface name's most).
pub fn tap_name(id: &str) -> String {
    format!("vsw{}", short_id(id))
}

impl Plugin {
    pub(super) fn create_network(&self, r: CreateNetwork) -> Result<Value, DockerError> {
        let v6 = match r.ipv6_data.as_deref().unwrap_or_default() {
            [] => None,
            [one] => Some(one.clone()),
            _ => {
                return Err(DockerError::Refused(
                    "a vswitch network has one IPv6 subnet: give one IPv6 --subnet".into(),
                ));
            }
        };
        // None: an IPv6-only network (Docker 28's `--ipv4=false`).
        let v4 = match r.ipv4_data.as_deref().unwrap_or_default() {
            [] if v6.is_some() => None,
            [one] => Some(one.clone()),
            [] => {
                return Err(DockerError::Refused(
                    "the network has no subnet of either family".into(),
                ));
            }
            _ => {
                return Err(DockerError::Refused(
                    "a vswitch network has one subnet: give one --subnet".into(),
                ));
            }
        };
        let mut spec = options::network_spec(&r.network_id, &r.options, v4.as_ref())?;
        options::with_v6(&mut spec, &r.options, v6.as_ref())?;
        let first = v4.as_ref().or(v6.as_ref());
        let ours = first.is_some_and(|d| d.address_space == super::ipam::ADDRESS_SPACE);
        if let Some(v4) = &v4 {
            spec.ip_range = self.held().pools.remove(&v4.pool).flatten();
        }
        if let Some(v6) = &v6 {
            self.held().pools.remove(&v6.pool);
        }
        let mut c = self.client()?;
        let rows = super::networks(&mut c)?;
        // Asked again (a Docker restart): the network is there.
        let same_v4 = |n: &crate::api::NetworkRow| {
            v4.as_ref()
                .is_none_or(|v| n.subnet.is_some_and(|s| s.to_string() == v.pool))
        };
        if rows.iter().any(|n| n.id == r.network_id && same_v4(n)) {
            return Ok(json!({}));
        }
        let pools = (v4.iter().chain(v6.iter())).map(|d| &d.pool);
        let clash = pools
            .filter_map(|p| Subnet::parse(p).ok())
            .find_map(|p| rows.iter().find_map(|n| p.clash(n).map(|s| (p, n, s))));
        if !ours && let Some((pool, o, subnet)) = clash {
            return Err(DockerError::Refused(format!(
                "subnet {pool} that Docker's default IPAM chose overlaps vswitch network {:?} ({subnet}): let vswitch choose with --ipam-driver {}, or give --subnet",
                o.name, self.driver
            )));
        }
        c.call(Request::NetworkCreate(spec.clone()))?;
        if ours {
            for d in v4.iter().chain(v6.iter()) {
                reserve_aux(&mut c, &spec.name, d)?;
            }
        }
        Ok(json!({}))
    }

    pub(super) fn delete_network(&self, r: NetworkRef) -> Result<Value, DockerError> {
        let mut c = self.client()?;
        let Some(n) = network_of(&mut c, &r.network_id)? else {
            return Ok(json!({}));
        };
        // Docker refuses to remove a network with endpoints before it asks; what is left
        // is the plugin's own (endpoints Docker dropped while the daemon was away).
        let list = engines::containers(&mut c).map_err(|e| DockerError::Refused(e.to_string()))?;
        let others = list
            .iter()
            .filter(|l| l.endpoints.iter().any(|e| e.network == n.name))
            .any(|l| l.owner.as_deref() != Some(OWNER));
        c.call(Request::NetworkRm {
            name: n.name,
            force: !others,
        })?;
        Ok(json!({}))
    }

    pub(super) fn create_endpoint(&self, r: CreateEndpoint) -> Result<Value, DockerError> {
        let asked = r.interface.unwrap_or_default();
        let ip6 = match asked.address_ipv6.as_str() {
            "" => None,
            a => Some(options::addr6_of(a)?),
        };
        let ip = match asked.address.as_str() {
            "" => None,
            a => Some(options::addr_of(a)?),
        };
        let mac = match (asked.mac_address.as_str(), ip, ip6) {
            ("", Some(ip), _) => MacAddr::from_ipv4(ip),
            ("", None, Some(ip6)) => mac_of_ipv6(ip6),
            ("", None, None) => {
                return Err(DockerError::Refused(
                    "Docker gave the endpoint no address".into(),
                ));
            }
            (m, _, _) => m
                .parse()
                .map_err(|e| DockerError::Refused(format!("MAC address {m:?}: {e}")))?,
        };
        let mut c = self.client()?;
        let n = network_of(&mut c, &r.network_id)?.ok_or_else(|| unknown_network(&r.network_id))?;
        let mut held = self.held();
        if held.endpoints.len() >= MAX_PENDING && !held.endpoints.contains_key(&r.endpoint_id) {
            return Err(DockerError::Refused(format!(
                "{MAX_PENDING} endpoints are waiting to be joined already"
            )));
        }
        held.endpoints.insert(
            r.endpoint_id,
            Pending {
                network: n.name,
                ip,
                ip6,
                mac,
            },
        );
        // Docker sets the MAC vswitch gives when the user named none.
        let answer = EndpointInterface {
            mac_address: if asked.mac_address.is_empty() {
                mac.to_string()
            } else {
                String::new()
            },
            ..Default::default()
        };
        Ok(json!({ "Interface": answer }))
    }

    pub(super) fn join(&self, r: Join) -> Result<Value, DockerError> {
        let mut c = self.client()?;
        let n = network_of(&mut c, &r.network_id)?.ok_or_else(|| unknown_network(&r.network_id))?;
        let tap = tap_name(&r.endpoint_id);
        if container_of(&mut c, &r.endpoint_id)?.is_none() {
            let p = self.held().endpoints.remove(&r.endpoint_id).ok_or_else(|| {
                DockerError::Refused(format!(
                    "endpoint {} was not created through this plugin (did vswitch-docker restart in between?): start the container again",
                    short_id(&r.endpoint_id)
                ))
            })?;
            let req = AttachReq {
                network: p.network,
                name: short_id(&r.endpoint_id),
                netns: Some(r.sandbox_key),
                create_in: Some(self.host_ns.clone()),
                ifname: Some(tap.clone()),
                ip: p.ip,
                ip6: p.ip6,
                mac: Some(p.mac.to_string()),
                claim: true,
                id: Some(r.endpoint_id.clone()),
                owner: Some(OWNER.into()),
                ..Default::default()
            };
            c.call(Request::Attach(req))?;
        }
        let joined = Joined {
            interface_name: InterfaceName {
                src_name: tap,
                dst_prefix: DST_PREFIX.into(),
            },
            gateway: match n.gateway {
                Some(g) if !n.internal => g.to_string(),
                _ => String::new(),
            },
            gateway_ipv6: match n.gateway6 {
                Some(g) if !n.internal => g.to_string(),
                _ => String::new(),
            },
            disable_gateway_service: false,
        };
        Ok(serde_json::to_value(joined)?)
    }

    pub(super) fn delete_endpoint(&self, r: EndpointRef) -> Result<Value, DockerError> {
        self.held().endpoints.remove(&r.endpoint_id);
        let mut c = self.client()?;
        if let Some(l) = container_of(&mut c, &r.endpoint_id)? {
            engines::detach(&mut c, &l, 0)?;
        }
        Ok(json!({}))
    }

    pub(super) fn oper_info(&self, r: EndpointRef) -> Result<Value, DockerError> {
        let mut c = self.client()?;
        let Some(l) = container_of(&mut c, &r.endpoint_id)? else {
            return Ok(json!({ "Value": {} }));
        };
        // What is published, in the shape Docker's own bridge driver answers.
        let published: Vec<PublishedEntry> = c
            .request(Request::PublishLs {
                name: l.name.clone(),
            })
            .unwrap_or_default();
        let ip = l.endpoints.first().and_then(|e| e.ip);
        let map: Vec<Value> = published.iter().map(|p| port_binding(p, ip)).collect();
        let exposed: Vec<Value> = (published.iter())
            .map(|p| json!({"Proto": proto_number(p.proto), "Port": p.container_port}))
            .collect();
        Ok(json!({ "Value": {
            "vswitch.container": l.name,
            "vswitch.sandbox": l.sandbox,
            "vswitch.port_open": l.endpoints.first().is_some_and(|e| e.open),
            options::PORTMAP: map,
            options::EXPOSED: exposed,
        }}))
    }

    pub(super) fn program_external(&self, r: ExternalConnectivity) -> Result<Value, DockerError> {
        let bindings = options::bindings(&r.options)?;
        if bindings.is_empty() {
            return Ok(json!({}));
        }
        let name = short_id(&r.endpoint_id);
        let mut c = self.client()?;
        for b in &bindings {
            publish_one(&mut c, &name, &options::specs(b)?)?;
        }
        Ok(json!({}))
    }

    pub(super) fn revoke_external(&self, r: EndpointRef) -> Result<Value, DockerError> {
        let mut c = self.client()?;
        if let Some(l) = container_of(&mut c, &r.endpoint_id)? {
            // Nothing published is what was wanted.
            match c.call(Request::Unpublish {
                name: l.name,
                specs: Vec::new(),
            }) {
                Ok(_) | Err(ClientError::Refused(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(json!({}))
    }
}

/// The MAC of an endpoint with no IPv4 address: 02:42 and the last four bytes of its
/// IPv6 address (Docker's scheme takes the IPv4 address's four).
fn mac_of_ipv6(ip6: std::net::Ipv6Addr) -> MacAddr {
    let o = ip6.octets();
    MacAddr([0x02, 0x42, o[12], o[13], o[14], o[15]])
}

/// IP protocol number of `p` (Docker's `Proto`).
fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// One published port as Docker's `types.PortBinding` JSON.
fn port_binding(p: &PublishedEntry, ip: Option<std::net::Ipv4Addr>) -> Value {
    json!({
        "Proto": proto_number(p.proto),
        "IP": ip.map(|a| a.to_string()).unwrap_or_default(),
        "Port": p.container_port,
        "HostIP": p.host_ip.to_string(),
        "HostPort": p.host_port,
        "HostPortEnd": p.host_port,
    })
}

/// Publishes the first of `specs` whose host port is free (one spec but for Docker's
/// host port ranges).
fn publish_one(c: &mut Client, name: &str, specs: &[String]) -> Result<(), DockerError> {
    let mut last = None;
    for s in specs {
        match c.call(Request::Publish {
            name: name.to_string(),
            specs: vec![s.clone()],
        }) {
            Ok(_) => return Ok(()),
            Err(ClientError::Refused(why)) => last = Some(why),
            Err(e) => return Err(e.into()),
        }
    }
    Err(DockerError::Refused(
        last.unwrap_or_else(|| "nothing to publish".into()),
    ))
}

/// Holds the `--aux-address`es of a network vswitch's IPAM serves, so no endpoint gets
/// them.
fn reserve_aux(
    c: &mut Client,
    network: &str,
    v4: &super::types::IpamData,
) -> Result<(), DockerError> {
    for a in v4.aux_addresses.iter().flat_map(|m| m.values()) {
        c.call(Request::AddressReserve {
            network: network.to_string(),
            ip: Some(options::ip_of(a)?),
            ipv6: false,
        })?;
    }
    Ok(())
}

fn unknown_network(id: &str) -> DockerError {
    DockerError::Refused(format!(
        "network {} is not a vswitch network (was the vswitch state reset?): remove it with `docker network rm`",
        short_id(id)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_ipv4_gets_a_mac_of_its_ipv6_address() {
        let m = mac_of_ipv6("fd00:5::a:b0c:d".parse().unwrap());
        assert_eq!(m.to_string(), "02:42:0b:0c:00:0d");
        assert!(m.is_unicast());
    }
}
