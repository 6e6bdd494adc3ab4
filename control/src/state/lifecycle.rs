//! A network's life after `create`: `network update` (DNS, internal, ICC, MTU),
//! `network prune`, and how much of its address space is in use (`network inspect`'s
//! `Status.IPAM.Subnets`).

use serde::{Deserialize, Serialize};

use super::{DEFAULT_NETWORK, Network, State, StateError, dnsopts};

/// What `network update` changes; what is None stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkUpdate {
    pub name: String,
    /// The network's resolvers (`--dns`; an empty list: the daemon's again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_search: Option<Vec<String>>,
    /// Nothing leaves (true), or traffic leaves again with masquerade (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<bool>,
    /// Containers may talk to each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icc: Option<bool>,
    /// Only on a network without endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Addresses of one prefix: taken (the network and broadcast addresses, the gateway,
/// endpoints, reservations) and still free for IPAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetUse {
    pub in_use: u64,
    pub available: u64,
}

impl State {
    /// Applies `u` to its network, checking everything first; returns the network as
    /// it is now.
    pub fn update_network(&mut self, u: &NetworkUpdate) -> Result<Network, StateError> {
        let old =
            (self.networks.get(&u.name)).ok_or_else(|| StateError::NoNetwork(u.name.clone()))?;
        let mut n = old.clone();
        if let Some(d) = &u.dns {
            n.dns_servers = dnsopts::parse_servers(d)?;
            self.check_resolvers(&n.dns_servers)?;
        }
        if let Some(s) = &u.dns_search {
            n.dns_search = dnsopts::parse_search(s)?;
        }
        if let Some(i) = u.internal {
            if i && n.name == DEFAULT_NETWORK {
                return Err(StateError::DefaultInternal(n.name));
            }
            n.internal = i;
            n.masquerade = !i;
        }
        if let Some(icc) = u.icc {
            n.icc = icc;
        }
        if let Some(m) = u.mtu {
            if !(68..=65520).contains(&m) {
                return Err(StateError::BadMtu(m));
            }
            if n.ipv6.is_some() && m < super::IPV6_MIN_MTU {
                return Err(StateError::Ipv6Mtu(m));
            }
            let eps = self.endpoints_on(&n.name).count();
            if eps > 0 && m != u32::from(n.mtu) {
                return Err(StateError::MtuInUse(n.name, eps));
            }
            n.mtu = m as u16;
        }
        self.networks.insert(n.name.clone(), n.clone());
        Ok(n)
    }

    /// The networks `network prune` removes: those without endpoints (or
    /// reservations), never the default one.
    pub fn prunable(&self) -> Vec<String> {
        (self.networks.values())
            .filter(|n| {
                n.name != DEFAULT_NETWORK && n.reserved.is_empty() && n.reserved6.is_empty()
            })
            .filter(|n| self.endpoints_on(&n.name).next().is_none())
            .map(|n| n.name.clone())
            .collect()
    }

    /// How much of the network's IPv4 prefix is taken and free.
    pub fn use_v4(&self, n: &Network) -> Option<SubnetUse> {
        let (subnet, gateway) = n.v4()?;
        let size = 1u64 << (32 - u32::from(subnet.prefix_len()));
        let eps = self.endpoints_on(&n.name).filter(|(_, e)| e.ip.is_some());
        let taken = eps.count() as u64 + n.reserved.len() as u64;
        let fixed = 3u64; // network, broadcast, gateway
        let range = n.ip_range.unwrap_or(subnet);
        let in_range = |ip: std::net::Ipv4Addr| range.contains(ip);
        let taken_in_range = (self.endpoints_on(&n.name).filter_map(|(_, e)| e.ip))
            .chain(n.reserved.iter().copied())
            .filter(|ip| in_range(*ip))
            .count() as u64;
        let rsize = 1u64 << (32 - u32::from(range.prefix_len()));
        let fixed_in_range = [subnet.network().addr(), subnet.broadcast(), gateway]
            .into_iter()
            .filter(|ip| in_range(*ip))
            .count() as u64;
        Some(SubnetUse {
            in_use: (fixed + taken).min(size),
            available: rsize.saturating_sub(fixed_in_range + taken_in_range),
        })
    }

    /// How much of the network's IPv6 prefix is taken and free (free counts stop at
    /// `u64::MAX`).
    pub fn use_v6(&self, n: &Network) -> Option<SubnetUse> {
        let v6 = n.ipv6?;
        let bits = 128 - u32::from(v6.subnet.prefix_len());
        let size = if bits >= 64 { u64::MAX } else { 1u64 << bits };
        let taken = self.endpoints_on(&n.name).filter(|(_, e)| e.ip6.is_some());
        let in_use = 2 + taken.count() as u64; // subnet-router anycast, gateway
        Some(SubnetUse {
            in_use,
            available: size.saturating_sub(in_use),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EndpointSpec, NetworkSpec, Sandbox};

    fn state_with(name: &str, subnet: &str) -> State {
        let mut s = State::new(None, None).unwrap();
        s.create_network(&NetworkSpec {
            name: name.into(),
            subnet: Some(subnet.into()),
            ..Default::default()
        })
        .unwrap();
        s
    }

    #[test]
    fn update_checks_first_and_mtu_only_when_empty() {
        let mut s = state_with("front", "10.40.0.0/24");
        let before = s.clone();
        let bad = NetworkUpdate {
            name: "front".into(),
            dns: Some(vec!["10.0.0.53".into()]),
            mtu: Some(20),
            ..Default::default()
        };
        assert!(matches!(
            s.update_network(&bad),
            Err(StateError::BadMtu(20))
        ));
        assert_eq!(s, before);
        let u = NetworkUpdate {
            name: "front".into(),
            dns: Some(vec!["10.0.0.53".into()]),
            dns_search: Some(vec!["corp.test".into()]),
            internal: Some(true),
            icc: Some(false),
            mtu: Some(1400),
        };
        let n = s.update_network(&u).unwrap();
        assert!(n.internal && !n.masquerade && !n.icc && n.mtu == 1400);
        assert_eq!(n.dns_search, vec!["corp.test".to_string()]);
        let sb = Sandbox::Netns { path: "/x".into() };
        let ep = EndpointSpec {
            network: "front".into(),
            ..Default::default()
        };
        let c = s.check_attach("web", &sb, &ep).unwrap();
        s.attach(c);
        let m = NetworkUpdate {
            name: "front".into(),
            mtu: Some(1300),
            ..Default::default()
        };
        assert!(matches!(
            s.update_network(&m),
            Err(StateError::MtuInUse(..))
        ));
        let i = NetworkUpdate {
            name: "bridge".into(),
            internal: Some(true),
            ..Default::default()
        };
        assert!(s.update_network(&i).is_err());
    }

    #[test]
    fn prune_keeps_bridge_and_used_networks_and_use_counts() {
        let mut s = state_with("front", "10.40.0.0/24");
        s.create_network(&NetworkSpec {
            name: "empty".into(),
            subnet: Some("10.41.0.0/24".into()),
            ip_range: Some("10.41.0.128/25".into()),
            ..Default::default()
        })
        .unwrap();
        let sb = Sandbox::Netns { path: "/x".into() };
        let ep = EndpointSpec {
            network: "front".into(),
            ..Default::default()
        };
        let c = s.check_attach("web", &sb, &ep).unwrap();
        s.attach(c);
        assert_eq!(s.prunable(), vec!["empty".to_string()]);
        let front = s.networks["front"].clone();
        let u = s.use_v4(&front).unwrap();
        assert_eq!((u.in_use, u.available), (4, 252));
        let empty = s.networks["empty"].clone();
        let u = s.use_v4(&empty).unwrap();
        // The range's last address is the broadcast.
        assert_eq!((u.in_use, u.available), (3, 127));
    }

    #[test]
    fn ipv6_use_counts_stop_at_u64_max() {
        let mut s = State::new(None, None).unwrap();
        s.create_network(&NetworkSpec {
            name: "six".into(),
            subnet6: Some("2001:db8:6::/64".into()),
            subnet: Some("10.42.0.0/24".into()),
            ..Default::default()
        })
        .unwrap();
        let n = s.networks["six"].clone();
        let u = s.use_v6(&n).unwrap();
        assert_eq!((u.in_use, u.available), (2, u64::MAX - 2));
        s.create_network(&NetworkSpec {
            name: "small".into(),
            subnet6: Some("2001:db8:7::/120".into()),
            subnet: Some("10.43.0.0/24".into()),
            ..Default::default()
        })
        .unwrap();
        let n = s.networks["small"].clone();
        assert_eq!(s.use_v6(&n).unwrap().available, 254);
    }
}

#[cfg(test)]
mod compat {
    use crate::state::{ContainerDns, EndpointSpec, NetworkSpec, Sandbox, State};

    /// A state without the DNS fields (as older daemons wrote it) loads with them
    /// empty, and one with them saves and loads back the same.
    #[test]
    fn old_state_files_load_and_new_fields_round_trip() {
        let mut s = State::new(None, None).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("dns_servers") && !text.contains("\"dns\":{"));
        let back: State = serde_json::from_str(&text).unwrap();
        assert!(back.networks["bridge"].dns_servers.is_empty());
        s.create_network(&NetworkSpec {
            name: "corp".into(),
            dns: vec!["127.0.0.1:5353".into()],
            dns_search: vec!["corp.test".into()],
            ..Default::default()
        })
        .unwrap();
        let ep = EndpointSpec {
            network: "corp".into(),
            ..Default::default()
        };
        let mut c = (s.check_attach("web", &Sandbox::Netns { path: "/x".into() }, &ep)).unwrap();
        c.dns = ContainerDns {
            search: vec!["a.test".into()],
            hostname: Some("w1".into()),
            ..Default::default()
        };
        s.attach(c);
        crate::state_check::check(&s).unwrap();
        let dir = std::env::temp_dir().join(format!("vswitch-compat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        s.save(&dir).unwrap();
        let loaded = State::load(&dir).unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(loaded, s);
    }
}
