//! What the container-engine plugins (`cni`, `netavark`) share: finding the attachments
//! an engine made (marked with its `owner` and its container id) among the daemon's
//! containers, and detaching one of them.

use crate::api::Request;
use crate::client::{Client, ClientError};

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
}
