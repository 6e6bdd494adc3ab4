//! Docker's words for a network and its published ports, in vswitch's: what `docker
//! network create -d vswitch` passes (`--internal`, `-o KEY=VALUE`, the subnet and
//! gateway from the IPAM) and what `docker run -p`/`-P` passes.

use serde_json::{Map, Value};

use super::DockerError;
use super::types::{IpamData, Options, PortBinding};
use crate::engines::PortMap;
use crate::state::NetworkSpec;

/// The `-o KEY=VALUE` options of `docker network create`.
pub const GENERIC: &str = "com.docker.network.generic";
/// `--internal`.
pub const INTERNAL: &str = "com.docker.network.internal";
/// `--ipv6`.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// A container's `-p`/`-P` bindings.
pub const PORTMAP: &str = "com.docker.network.portmap";
/// A container's exposed ports.
pub const EXPOSED: &str = "com.docker.network.endpoint.exposedports";

/// The `vswitch.*` options `docker network create -d vswitch -o` takes; any other
/// `vswitch.` key is refused (a typo must not pass silently). Docker's own bridge
/// options that mean the same are taken too; other keys are Docker's, not vswitch's,
/// and ignored.
pub const VSWITCH_OPTIONS: [&str; 5] = [
    "vswitch.name",
    "vswitch.vlan",
    "vswitch.icc",
    "vswitch.masquerade",
    "vswitch.host_loopback",
];

fn refuse(msg: String) -> DockerError {
    DockerError::Refused(msg)
}

/// `true` or `false` as Go's strconv reads them.
fn boolean(key: &str, v: &str) -> Result<bool, DockerError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(refuse(format!("option {key}={v:?}: use true or false"))),
    }
}

fn number(key: &str, v: &str) -> Result<u32, DockerError> {
    v.parse()
        .map_err(|_| refuse(format!("option {key}={v:?} is not a number")))
}

/// The `-o` options as text (Docker sends them as strings).
fn generic(options: &Options) -> Result<Map<String, Value>, DockerError> {
    match options.as_ref().and_then(|o| o.get(GENERIC)) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(refuse(format!("{GENERIC} is not an object: {other}"))),
    }
}

/// A flag Docker sets in a network's options (`--internal`, `--ipv6`).
pub fn flag(options: &Options, key: &str) -> bool {
    options
        .as_ref()
        .and_then(|o| o.get(key))
        .is_some_and(|v| v == &Value::Bool(true) || v == "true")
}

/// The first address of a CIDR (`10.1.0.1/24` -> `10.1.0.1`).
pub fn addr_of(cidr: &str) -> Result<std::net::Ipv4Addr, DockerError> {
    let a = cidr.split('/').next().unwrap_or_default();
    a.parse()
        .map_err(|_| refuse(format!("{cidr:?} is not an IPv4 address")))
}

/// The address of a CIDR, either family (`fd00:1::2/64` -> `fd00:1::2`).
pub fn ip_of(cidr: &str) -> Result<std::net::IpAddr, DockerError> {
    let a = cidr.split('/').next().unwrap_or_default();
    a.parse()
        .map_err(|_| refuse(format!("{cidr:?} is not an IP address")))
}

/// The IPv6 address of a CIDR.
pub fn addr6_of(cidr: &str) -> Result<std::net::Ipv6Addr, DockerError> {
    let a = cidr.split('/').next().unwrap_or_default();
    a.parse()
        .map_err(|_| refuse(format!("{cidr:?} is not an IPv6 address")))
}

/// The network's IPv6 (`--ipv6`): the subnet and gateway Docker's IPAM gave, else
/// (no IPv6 subnet) IPv6 without either, a /64 the daemon picks.
pub fn with_v6(
    spec: &mut NetworkSpec,
    options: &Options,
    v6: Option<&IpamData>,
) -> Result<(), DockerError> {
    spec.ipv6 = flag(options, ENABLE_IPV6) || v6.is_some();
    if let Some(v6) = v6 {
        spec.subnet6 = Some(v6.pool.clone());
        spec.gateway6 = match v6.gateway.as_str() {
            "" => None,
            g => Some(addr6_of(g)?),
        };
    }
    Ok(())
}

/// The vswitch network for Docker network `id`: named by `-o vswitch.name`, else
/// `docker-` and the id's first 12 digits; its subnet and gateway Docker's IPAM's (no
/// IPv4: an IPv6-only network).
pub fn network_spec(
    id: &str,
    options: &Options,
    v4: Option<&IpamData>,
) -> Result<NetworkSpec, DockerError> {
    let mut spec = NetworkSpec {
        name: format!("docker-{}", crate::engines::short_id(id)),
        subnet: v4.map(|v| v.pool.clone()),
        gateway: match v4.map(|v| v.gateway.as_str()) {
            None | Some("") => None,
            Some(g) => Some(addr_of(g)?),
        },
        no_ipv4: v4.is_none(),
        internal: flag(options, INTERNAL),
        id: Some(id.to_string()),
        // Docker's resolver at 127.0.0.11 answers the containers' names.
        dns_forward_only: true,
        // Docker configures the containers' addresses; SLAAC would add a second one.
        no_slaac: true,
        ..Default::default()
    };
    for (key, value) in generic(options)? {
        let v = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        apply(&mut spec, &key, &v)?;
    }
    Ok(spec)
}

/// One `-o KEY=VALUE`.
fn apply(spec: &mut NetworkSpec, key: &str, v: &str) -> Result<(), DockerError> {
    match key {
        "vswitch.name" => spec.name = v.to_string(),
        "vswitch.vlan" => spec.vlan = Some(number(key, v)?),
        "com.docker.network.driver.mtu" => spec.mtu = Some(number(key, v)?),
        "vswitch.icc" | "com.docker.network.bridge.enable_icc" => spec.no_icc = !boolean(key, v)?,
        "vswitch.masquerade" | "com.docker.network.bridge.enable_ip_masquerade" => {
            spec.no_masquerade = !boolean(key, v)?
        }
        "vswitch.host_loopback" => spec.host_loopback = boolean(key, v)?,
        k if k.starts_with("vswitch.") => {
            return Err(refuse(format!(
                "unknown option {k}: vswitch takes {}, com.docker.network.driver.mtu",
                VSWITCH_OPTIONS.join(", ")
            )));
        }
        _ => {}
    }
    Ok(())
}

/// The container's `-p`/`-P` bindings from `ProgramExternalConnectivity`'s options.
pub fn bindings(options: &Options) -> Result<Vec<PortBinding>, DockerError> {
    match options.as_ref().and_then(|o| o.get(PORTMAP)) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => Ok(serde_json::from_value(v.clone())?),
    }
}

/// The daemon's `-p` specs for one binding: one spec, or one per host port of a range
/// Docker gives (`-p 8000-8010:80`: any one of them, tried in order).
pub fn specs(b: &PortBinding) -> Result<Vec<String>, DockerError> {
    let proto = match b.proto {
        6 => "tcp",
        17 => "udp",
        n => {
            return Err(refuse(format!(
                "IP protocol {n} cannot be published: use tcp or udp"
            )));
        }
    };
    let host_ip = match b.host_ip.as_str() {
        "0.0.0.0" => "",
        ip => ip,
    };
    let one = |host_port: Option<u16>| {
        PortMap {
            host_ip,
            host_port,
            container_port: b.port,
            count: 1,
            proto,
        }
        .spec()
        .map_err(|e| refuse(e.to_string()))
    };
    match (b.host_port, b.host_port_end) {
        (0, _) => Ok(vec![one(None)?]),
        (h, e) if e > h => (h..=e).map(|p| one(Some(p))).collect(),
        (h, _) => Ok(vec![one(Some(h))?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(v: Value) -> Options {
        v.as_object().cloned()
    }

    fn v4(pool: &str, gw: &str) -> IpamData {
        IpamData {
            pool: pool.into(),
            gateway: gw.into(),
            ..Default::default()
        }
    }

    #[test]
    fn dockers_words_become_a_network_spec() {
        let o = opts(json!({
            "com.docker.network.enable_ipv6": false,
            "com.docker.network.internal": true,
            "com.docker.network.generic": {
                "com.docker.network.driver.mtu": "1400", "vswitch.vlan": "5",
                "vswitch.icc": "false", "com.docker.network.bridge.name": "ignored"
            }
        }));
        let id = "325a698da7829b3bf4dad12a86fc248bd7d7907ea4bba912d8b15adb44651ee6";
        let s = network_spec(id, &o, Some(&v4("10.77.0.0/24", "10.77.0.1/24"))).unwrap();
        assert_eq!(s.name, "docker-325a698da782");
        assert_eq!(s.subnet.as_deref(), Some("10.77.0.0/24"));
        assert_eq!(s.gateway, Some("10.77.0.1".parse().unwrap()));
        assert_eq!((s.mtu, s.vlan), (Some(1400), Some(5)));
        assert!(s.internal && s.no_icc && !s.no_masquerade && s.dns_forward_only);
        assert_eq!(s.id.as_deref(), Some(id));
        let named = opts(json!({"com.docker.network.generic": {"vswitch.name": "front"}}));
        assert_eq!(
            network_spec(id, &named, Some(&v4("10.1.0.0/16", "")))
                .unwrap()
                .name,
            "front"
        );
    }

    #[test]
    fn ipv6_comes_with_its_subnet_or_alone() {
        let v6 = IpamData {
            pool: "fd00:5::/64".into(),
            gateway: "fd00:5::fe/64".into(),
            ..Default::default()
        };
        let o = opts(json!({ENABLE_IPV6: true}));
        let mut s = network_spec("abc", &o, Some(&v4("10.5.0.0/24", ""))).unwrap();
        with_v6(&mut s, &o, Some(&v6)).unwrap();
        assert!(s.ipv6 && !s.no_ipv4 && s.no_slaac);
        assert_eq!(s.subnet6.as_deref(), Some("fd00:5::/64"));
        assert_eq!(s.gateway6, Some("fd00:5::fe".parse().unwrap()));
        // IPv6 only (Docker 28's --ipv4=false).
        let mut s = network_spec("abc", &o, None).unwrap();
        with_v6(&mut s, &o, Some(&v6)).unwrap();
        assert!(s.no_ipv4 && s.subnet.is_none() && s.gateway.is_none());
        // --ipv6 without an IPv6 subnet: the daemon picks one.
        let mut s = network_spec("abc", &o, Some(&v4("10.5.0.0/24", ""))).unwrap();
        with_v6(&mut s, &o, None).unwrap();
        assert!(s.ipv6 && s.subnet6.is_none());
        assert!(addr6_of("10.0.0.1/24").is_err());
        assert_eq!(ip_of("fd00::2/64").unwrap().to_string(), "fd00::2");
    }

    #[test]
    fn typos_and_bad_values_are_refused_by_name() {
        let bad = |g: Value| {
            network_spec(
                "abc",
                &opts(json!({ GENERIC: g })),
                Some(&v4("10.1.0.0/16", "")),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad(json!({"vswitch.vlna": "5"})).contains("unknown option vswitch.vlna"));
        assert!(bad(json!({"vswitch.vlan": "five"})).contains("not a number"));
        assert!(bad(json!({"vswitch.icc": "maybe"})).contains("true or false"));
    }

    #[test]
    fn port_bindings_become_specs() {
        let b = |proto, ip: &str, port, hp, hpe| PortBinding {
            proto,
            port,
            host_ip: ip.into(),
            host_port: hp,
            host_port_end: hpe,
        };
        assert_eq!(specs(&b(6, "", 80, 8080, 8080)).unwrap(), ["8080:80/tcp"]);
        assert_eq!(specs(&b(17, "", 53, 0, 0)).unwrap(), ["53/udp"]);
        assert_eq!(
            specs(&b(6, "127.0.0.1", 80, 8000, 8002)).unwrap(),
            [
                "127.0.0.1:8000:80/tcp",
                "127.0.0.1:8001:80/tcp",
                "127.0.0.1:8002:80/tcp"
            ]
        );
        assert!(specs(&b(132, "", 80, 80, 80)).is_err());
        let o = opts(
            json!({PORTMAP: [{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}),
        );
        assert_eq!(bindings(&o).unwrap()[0].host_port, 8080);
        assert!(bindings(&None).unwrap().is_empty());
    }
}
