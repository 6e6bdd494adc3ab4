//! The ADD result: the interface in the sandbox, its address, the default route and the
//! gateway as nameserver, in the shape the configuration's `cniVersion` asks for.

use serde::Serialize;
use serde_json::{Value, json};

use super::error::{CniError, Code};

/// What the daemon answers an `attach` with.
pub type Endpoint = crate::api::EndpointInfo;

/// The daemon's answer to `attach`, read.
pub fn endpoint_from_reply(v: Value) -> Result<Endpoint, CniError> {
    serde_json::from_value(v).map_err(|e| {
        CniError::new(
            Code::Decode,
            "the daemon's answer to attach is not understood",
        )
        .with_details(e.to_string())
    })
}

#[derive(Serialize)]
struct Interface<'a> {
    name: &'a str,
    mac: &'a str,
    sandbox: &'a str,
}

/// The result object for `cni_version`. `internal` networks get no default route.
pub fn build(
    cni_version: &str,
    e: &Endpoint,
    sandbox: &str,
    internal: bool,
    legacy: bool,
) -> Value {
    let prefix = e.prefix.unwrap_or(32);
    let ips: Vec<Value> = (e.ip.iter())
        .map(|a| {
            let mut ip = json!({
                "address": format!("{a}/{prefix}"),
                "interface": 0,
            });
            if let Some(gw) = e.gateway {
                ip["gateway"] = json!(gw.to_string());
            }
            if legacy {
                ip["version"] = json!("4");
            }
            ip
        })
        .collect();
    let mut r = json!({
        "cniVersion": cni_version,
        "interfaces": [Interface { name: &e.ifname, mac: &e.mac.to_string(), sandbox }],
        "ips": ips,
        "routes": [],
        "dns": {},
    });
    if let (Some(gw), false) = (e.gateway, internal) {
        r["routes"] = json!([{"dst": "0.0.0.0/0", "gw": gw.to_string()}]);
    }
    if let (Some(gw), Some(true)) = (e.gateway, e.dns) {
        r["dns"] = json!({"nameservers": [gw.to_string()]});
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        endpoint_from_reply(json!({
            "name": "web", "port": "web", "network": "podman", "ifname": "eth0",
            "ip": "10.88.0.2", "prefix": 24, "gateway": "10.88.0.1", "mtu": 1500,
            "dns": true, "mac": "02:42:0a:58:00:02", "aliases": [], "trunk": [],
            "port_security": true
        }))
        .unwrap()
    }

    #[test]
    fn a_result_has_the_interface_address_route_and_nameserver() {
        let r = build("1.0.0", &ep(), "/run/netns/x", false, false);
        assert_eq!(r["interfaces"][0]["mac"], "02:42:0a:58:00:02");
        assert_eq!(r["interfaces"][0]["sandbox"], "/run/netns/x");
        assert_eq!(r["ips"][0]["address"], "10.88.0.2/24");
        assert_eq!(r["ips"][0]["gateway"], "10.88.0.1");
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(r["dns"]["nameservers"][0], "10.88.0.1");
    }

    #[test]
    fn old_versions_carry_the_ip_version_and_internal_networks_no_route() {
        let r = build("0.4.0", &ep(), "/run/netns/x", true, true);
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["routes"], json!([]));
    }
}
