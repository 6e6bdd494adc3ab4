//! What the runtime hands the plugin: the network configuration on standard input and
//! the `CNI_*` environment variables. Both are untrusted: every field is checked before
//! it reaches the daemon, and the daemon checks again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::error::{CniError, Code};

/// The CNI versions this plugin answers (their results differ only in `ips[].version`).
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The most bytes of configuration read from standard input.
pub const MAX_CONFIG: usize = 1 << 20;

/// The plugin's network configuration.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The CNI network's name: the vswitch network unless `network` says otherwise.
    #[serde(default)]
    pub name: String,
    /// The vswitch network.
    #[serde(default)]
    pub network: Option<String>,
    /// The daemon's control socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// How to create the network when it does not exist: a subnet, or one of each
    /// family (`["10.89.0.0/24", "fd00:89::/64"]`), and their gateways likewise.
    #[serde(default, deserialize_with = "one_or_many")]
    pub subnet: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub gateway: Vec<IpAddr>,
    /// IPv6 as well (a /64 of the daemon's unique local prefix when no IPv6 subnet is
    /// given).
    #[serde(default)]
    pub ipv6: bool,
    /// `false`: no IPv4 (an IPv6-only network).
    #[serde(default)]
    pub ipv4: Option<bool>,
    #[serde(default)]
    pub vlan: Option<u32>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime: RuntimeConfig,
    /// GC: the attachments the runtime still knows.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Vec<Attachment>,
}

/// A value or a list of them, as a list.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match Option::<Either<T>>::deserialize(d)? {
        None => Vec::new(),
        Some(Either::One(t)) => vec![t],
        Some(Either::Many(v)) => v,
    })
}

/// Capabilities the runtime fills in (`runtimeConfig`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<PortMapping>,
    /// Static addresses, CIDR or bare.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Network name -> DNS aliases of the container on it.
    #[serde(default)]
    pub aliases: HashMap<String, Vec<String>>,
    /// The `dns` capability: the container's own resolvers, search domains, options.
    #[serde(default)]
    pub dns: RuntimeDns,
    /// The `bandwidth` capability (Kubernetes' ingress and egress bandwidth).
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
}

/// `runtimeConfig.dns` (CNI's `dns` capability, as containerd and CRI-O fill it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeDns {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

impl RuntimeDns {
    /// As the container's DNS options of an `attach`.
    pub fn opts(&self) -> crate::state::DnsOpts {
        crate::state::DnsOpts {
            dns: self.servers.clone(),
            dns_search: self.searches.clone(),
            dns_option: self.options.clone(),
            ..Default::default()
        }
    }
}

/// The `bandwidth` capability, as the reference `bandwidth` plugin reads it: rates in
/// bits a second, bursts in bits; ingress is into the container.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Bandwidth {
    #[serde(rename = "ingressRate", default)]
    pub ingress_rate: u64,
    #[serde(rename = "ingressBurst", default)]
    pub ingress_burst: u64,
    #[serde(rename = "egressRate", default)]
    pub egress_rate: u64,
    #[serde(rename = "egressBurst", default)]
    pub egress_burst: u64,
}

/// One `portMappings` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(rename = "hostIP", default)]
    pub host_ip: Option<String>,
}

/// One `cni.dev/valid-attachments` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

impl NetConf {
    /// Parses standard input's configuration and checks its version.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let c: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(Code::Decode, "the network configuration is not valid JSON")
                .with_details(e.to_string())
        })?;
        if !SUPPORTED.contains(&c.cni_version.as_str()) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "cniVersion {:?} is not supported: use one of {}",
                    c.cni_version,
                    SUPPORTED.join(", ")
                ),
            ));
        }
        Ok(c)
    }

    /// The vswitch network this configuration puts containers on.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    /// The daemon's socket: the configuration's, else the daemon's default.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(crate::paths::default_socket)
    }

    /// Whether the result's IPs carry `version` (CNI before 1.0.0).
    pub fn legacy_result(&self) -> bool {
        self.cni_version.starts_with("0.")
    }

    /// The port's limits from the `bandwidth` capability (rates of 0: none; one burst
    /// for both directions, the larger, in bytes).
    pub fn limits(&self) -> Result<crate::limit::PortLimits, CniError> {
        let Some(b) = self.runtime.bandwidth else {
            return Ok(Default::default());
        };
        let rate = |r: u64| (r != 0).then_some(r);
        let burst = b.ingress_burst.max(b.egress_burst) / 8;
        let l = crate::limit::PortLimits {
            rate_in: rate(b.ingress_rate),
            rate_out: rate(b.egress_rate),
            burst: (burst != 0).then_some(burst),
        };
        l.check().map_err(|e| {
            CniError::new(Code::InvalidConfig, format!("runtimeConfig.bandwidth: {e}"))
        })?;
        Ok(l)
    }

    /// The `-p` specs of the port mappings (`[HOST_IP:]HOST:CONTAINER/PROTO`).
    pub fn publish_specs(&self) -> Result<Vec<String>, CniError> {
        self.runtime
            .port_mappings
            .iter()
            .map(|m| {
                crate::engines::PortMap {
                    host_ip: m.host_ip.as_deref().unwrap_or_default(),
                    host_port: Some(m.host_port),
                    container_port: m.container_port,
                    count: 1,
                    proto: m.protocol.as_deref().unwrap_or("tcp"),
                }
                .spec()
                .map_err(|e| CniError::new(Code::InvalidConfig, e.to_string()))
            })
            .collect()
    }

    /// The static addresses asked for through the `ips` capability, then `IP` in
    /// `CNI_ARGS` (what podman passes for one `--ip` or `--ip6`): the first of each
    /// family (CIDR or bare).
    pub fn static_ips(&self, env: &Env) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), CniError> {
        let (mut v4, mut v6) = (None, None);
        for s in self.runtime.ips.iter().chain(&env.ips) {
            let addr = s.split('/').next().unwrap_or(s);
            match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) => v4 = v4.or(Some(a)),
                Ok(IpAddr::V6(a)) => v6 = v6.or(Some(a)),
                Err(_) => {
                    return Err(CniError::new(
                        Code::InvalidConfig,
                        format!("ips entry {s:?} is not an address"),
                    ));
                }
            }
        }
        Ok((v4, v6))
    }

    /// How the network is created when the daemon does not have it.
    pub fn network_spec(&self) -> Result<crate::state::NetworkSpec, CniError> {
        let mut spec = crate::state::NetworkSpec {
            name: self.network().to_string(),
            ipv6: self.ipv6,
            no_ipv4: self.ipv4 == Some(false),
            vlan: self.vlan,
            internal: self.internal,
            mtu: self.mtu,
            ..Default::default()
        };
        crate::engines::by_family(&mut spec, &self.subnet, &self.gateway)
            .map_err(|e| CniError::new(Code::InvalidConfig, e.to_string()))?;
        Ok(spec)
    }
}

/// The `CNI_*` environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `K8S_POD_NAME` from `CNI_ARGS`: the name the engine gives the container.
    pub pod_name: Option<String>,
    /// `IP` from `CNI_ARGS` (comma separated, either family): static addresses.
    pub ips: Vec<String>,
    /// `MAC` from `CNI_ARGS`: the interface's MAC.
    pub mac: Option<String>,
}

impl Env {
    /// Reads the environment through `get` (the process environment in the binary).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Env {
        let args = get("CNI_ARGS").unwrap_or_default();
        let arg = |key: &str| {
            args.split(';')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.is_empty())
        };
        let ips = arg("IP")
            .map(|v| v.split(',').map(String::from).collect())
            .unwrap_or_default();
        Env {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            pod_name: arg("K8S_POD_NAME"),
            ips,
            mac: arg("MAC"),
        }
    }

    /// The variables ADD, DEL and CHECK need.
    pub fn require(&self, netns: bool) -> Result<(), CniError> {
        let missing = [
            ("CNI_CONTAINERID", self.container_id.is_empty()),
            ("CNI_IFNAME", self.ifname.is_empty()),
            ("CNI_NETNS", netns && self.netns.is_empty()),
        ];
        match missing.iter().find(|(_, m)| *m) {
            Some((name, _)) => Err(CniError::new(
                Code::InvalidEnv,
                format!("{name} is not set: the container runtime must set it"),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODMAN: &str = r#"{"cniVersion":"1.0.0","name":"front","type":"vswitch-cni",
      "runtimeConfig":{"aliases":{"front":["web","1234abcd"]},
      "portMappings":[{"hostPort":18499,"containerPort":80,"protocol":"tcp"}]}}"#;

    #[test]
    fn podmans_configuration_is_understood() {
        let c = NetConf::parse(PODMAN.as_bytes()).unwrap();
        assert_eq!(c.network(), "front");
        assert_eq!(c.publish_specs().unwrap(), vec!["18499:80/tcp"]);
        assert_eq!(c.runtime.aliases["front"], vec!["web", "1234abcd"]);
        assert!(!c.legacy_result());
    }

    #[test]
    fn the_dns_capability_becomes_the_containers_dns_options() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"front","runtimeConfig":{"dns":{"servers":["10.0.0.53"],"searches":["corp.test"],"options":["ndots:2"]}}}"#,
        )
        .unwrap();
        let o = c.runtime.dns.opts();
        assert_eq!(o.dns, vec!["10.0.0.53"]);
        assert_eq!(o.dns_search, vec!["corp.test"]);
        assert_eq!(o.dns_option, vec!["ndots:2"]);
    }

    #[test]
    fn bad_versions_and_garbage_are_refused_with_their_codes() {
        let e = NetConf::parse(br#"{"cniVersion":"0.2.0","name":"x"}"#).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, Code::Decode);
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":1}]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::Decode);
    }

    #[test]
    fn cni_args_give_the_pod_name() {
        let e = Env::read(|k| match k {
            "CNI_ARGS" => Some("IgnoreUnknown=1;K8S_POD_NAME=web".into()),
            "CNI_COMMAND" => Some("ADD".into()),
            _ => None,
        });
        assert_eq!(e.pod_name.as_deref(), Some("web"));
        assert!(e.ips.is_empty() && e.mac.is_none());
        // podman's one --ip6 (or --ip) and --mac-address.
        let e = Env::read(|k| match k {
            "CNI_ARGS" => {
                Some("IgnoreUnknown=1;K8S_POD_NAME=web;IP=fd00::80;MAC=02:00:00:00:00:80".into())
            }
            _ => None,
        });
        assert_eq!(e.ips, vec!["fd00::80"]);
        assert_eq!(e.mac.as_deref(), Some("02:00:00:00:00:80"));
        let c = NetConf::default();
        assert_eq!(
            c.static_ips(&e).unwrap(),
            (None, Some("fd00::80".parse().unwrap()))
        );
        assert_eq!(e.require(true).unwrap_err().code, Code::InvalidEnv);
    }

    #[test]
    fn static_ips_take_the_first_of_each_family() {
        let mut c = NetConf::default();
        c.runtime.ips = vec!["fd00::5/64".into(), "10.1.2.3/24".into(), "fd00::6".into()];
        assert_eq!(
            c.static_ips(&Env::default()).unwrap(),
            (
                Some("10.1.2.3".parse().unwrap()),
                Some("fd00::5".parse().unwrap())
            )
        );
        c.runtime.ips = vec!["10.1.2.3".into()];
        assert_eq!(c.static_ips(&Env::default()).unwrap().1, None);
        c.runtime.ips = vec!["nonsense".into()];
        assert_eq!(
            c.static_ips(&Env::default()).unwrap_err().code,
            Code::InvalidConfig
        );
    }

    #[test]
    fn subnets_of_both_families_make_a_dual_stack_network() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"x","subnet":["10.89.0.0/24","fd00:89::/64"],"gateway":["fd00:89::1"]}"#,
        )
        .unwrap();
        let s = c.network_spec().unwrap();
        assert_eq!(s.subnet.as_deref(), Some("10.89.0.0/24"));
        assert_eq!(s.subnet6.as_deref(), Some("fd00:89::/64"));
        assert_eq!(s.gateway6, Some("fd00:89::1".parse().unwrap()));
        assert!(s.ipv6 && !s.no_ipv4);
        let one = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"x","subnet":"10.89.0.0/24","gateway":"10.89.0.1"}"#,
        )
        .unwrap()
        .network_spec()
        .unwrap();
        assert_eq!(one.gateway, Some("10.89.0.1".parse().unwrap()));
        assert!(!one.ipv6);
        let only6 =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"x","ipv6":true,"ipv4":false}"#)
                .unwrap()
                .network_spec()
                .unwrap();
        assert!(only6.ipv6 && only6.no_ipv4 && only6.subnet6.is_none());
        let two = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"x","subnet":["10.1.0.0/24","10.2.0.0/24"]}"#,
        )
        .unwrap();
        assert_eq!(two.network_spec().unwrap_err().code, Code::InvalidConfig);
    }

    #[test]
    fn the_bandwidth_capability_becomes_the_ports_limits() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{"bandwidth":
              {"ingressRate":100000000,"ingressBurst":800000,"egressRate":50000000,"egressBurst":1600000}}}"#,
        )
        .unwrap();
        let l = c.limits().unwrap();
        assert_eq!(l.rate_in, Some(100_000_000));
        assert_eq!(l.rate_out, Some(50_000_000));
        assert_eq!(l.burst, Some(200_000));
        let none = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"x"}"#).unwrap();
        assert!(none.limits().unwrap().is_none());
        let slow = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{"bandwidth":{"egressRate":10}}}"#,
        )
        .unwrap();
        assert!(slow.limits().is_err());
    }
}
