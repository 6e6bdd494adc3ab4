//! The ADD result: the interface in the sandbox, its addresses (one per family), the
//! default routes and the gateway as nameserver, in the shape the configuration's `cniVersion` asks for.

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

/// One address of the result, with its family's gateway.
fn ip_entry(addr: String, gateway: Option<String>, version: Option<&str>) -> Value {
    let mut ip = json!({"address": addr, "interface": 0});
    if let Some(gw) = gateway {
        ip["gateway"] = json!(gw);
    }
    if let Some(v) = version {
        ip["version"] = json!(v);
    }
    ip
}

/// The result object for `cni_version`: an address per family the network has (IPv4
/// first), a default route per family (none on `internal` networks), and the gateway's
/// addresses as nameservers where the gateway answers DNS. `legacy` results carry each
/// address's IP version.
pub fn build(
    cni_version: &str,
    e: &Endpoint,
    sandbox: &str,
    internal: bool,
    legacy: bool,
) -> Value {
    let v = |n: &'static str| legacy.then_some(n);
    let gw4 = e.gateway.map(|g| g.to_string());
    let gw6 = e.gateway6.map(|g| g.to_string());
    let mut ips: Vec<Value> = Vec::new();
    if let Some(a) = e.ip {
        let addr = format!("{a}/{}", e.prefix.unwrap_or(32));
        ips.push(ip_entry(addr, gw4.clone(), v("4")));
    }
    if let Some(a) = e.ip6 {
        let addr = format!("{a}/{}", e.prefix6.unwrap_or(128));
        ips.push(ip_entry(addr, gw6.clone(), v("6")));
    }
    let gateways: Vec<(&str, String)> = [("0.0.0.0/0", gw4), ("::/0", gw6)]
        .into_iter()
        .filter_map(|(dst, gw)| gw.map(|g| (dst, g)))
        .collect();
    let routes: Vec<Value> = match internal {
        true => Vec::new(),
        false => (gateways.iter())
            .map(|(dst, gw)| json!({"dst": dst, "gw": gw}))
            .collect(),
    };
    let mut r = json!({
        "cniVersion": cni_version,
        "interfaces": [Interface { name: &e.ifname, mac: &e.mac.to_string(), sandbox }],
        "ips": ips,
        "routes": routes,
        "dns": {},
    });
    if e.dns == Some(true) && !gateways.is_empty() {
        let ns: Vec<&String> = gateways.iter().map(|(_, g)| g).collect();
        r["dns"] = json!({ "nameservers": ns });
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

    fn dual() -> Endpoint {
        let mut e = ep();
        e.ip6 = Some("fd00:88::242:aff:fe58:2".parse().unwrap());
        e.prefix6 = Some(64);
        e.gateway6 = Some("fd00:88::1".parse().unwrap());
        e
    }

    #[test]
    fn a_dual_stack_result_has_both_families() {
        let r = build("1.0.0", &dual(), "/run/netns/x", false, false);
        assert_eq!(r["ips"][0]["address"], "10.88.0.2/24");
        assert_eq!(r["ips"][1]["address"], "fd00:88::242:aff:fe58:2/64");
        assert_eq!(r["ips"][1]["gateway"], "fd00:88::1");
        assert_eq!(r["ips"][1]["interface"], 0);
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "::/0", "gw": "fd00:88::1"}])
        );
        assert_eq!(r["dns"]["nameservers"], json!(["10.88.0.1", "fd00:88::1"]));
        let old = build("0.4.0", &dual(), "/run/netns/x", true, true);
        assert_eq!(old["ips"][1]["version"], "6");
        assert_eq!(old["routes"], json!([]));
    }

    #[test]
    fn an_ipv6_only_result_has_its_address_route_and_nameserver() {
        let mut e = dual();
        (e.ip, e.prefix, e.gateway) = (None, None, None);
        let r = build("1.1.0", &e, "/run/netns/x", false, false);
        assert_eq!(r["ips"].as_array().map(Vec::len), Some(1));
        assert_eq!(r["ips"][0]["address"], "fd00:88::242:aff:fe58:2/64");
        assert_eq!(r["routes"], json!([{"dst": "::/0", "gw": "fd00:88::1"}]));
        assert_eq!(r["dns"]["nameservers"], json!(["fd00:88::1"]));
    }

    #[test]
    fn old_versions_carry_the_ip_version_and_internal_networks_no_route() {
        let r = build("0.4.0", &ep(), "/run/netns/x", true, true);
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["routes"], json!([]));
    }
}
