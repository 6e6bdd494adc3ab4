//! The control protocol: one JSON object per line over the Unix control socket.
//!
//! A request is `{"v": 1, "cmd": "<command>", ...arguments}`; the answer is
//! `{"ok": true, "data": <value>}` or `{"ok": false, "error": "<one line>"}`. A request
//! may carry file descriptors (SCM_RIGHTS) on the same message: `vswitch run` hands over
//! the TAP it created inside its namespace that way (`attach` with `"fd": true`).
//! docs/protocol.md lists every command; its examples are parsed into these types by the
//! tests below.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

use crate::state::{DnsOpts, NetworkSpec, NetworkUpdate};

pub const PROTOCOL_VERSION: u32 = 1;
/// The longest request or response line accepted.
pub const MAX_MESSAGE: usize = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub req: Request,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachReq {
    pub network: String,
    pub name: String,
    #[serde(default)]
    pub tap: Option<String>,
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub ifname: Option<String>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address to give (`--ip6`), on a network with IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub trunk: Option<String>,
    #[serde(default)]
    pub no_port_security: bool,
    #[serde(default)]
    pub publish: Vec<String>,
    /// A `vswitch run` container: the TAP comes as a descriptor on this message, and
    /// the container goes away when this connection closes.
    #[serde(default)]
    pub fd: bool,
    /// With `fd`: the process whose namespaces the container lives in.
    #[serde(default)]
    pub run_pid: Option<u32>,
    /// With `fd`: this container existed before a daemon restart; take the descriptor
    /// for its existing endpoint.
    #[serde(default)]
    pub reattach: bool,
    /// The container's id as its engine knows it (a CNI container id); a new random
    /// id when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Who manages the container (`cni`, `netavark`, `docker`): their cleanup touches
    /// only theirs.
    #[serde(default)]
    pub owner: Option<String>,
    /// With `netns` and `ifname`: the daemon creates the TAP in this namespace (the
    /// engine's own) with only its MAC and MTU set, and the engine moves it into `netns`
    /// and configures it there (Docker's `Join`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_in: Option<String>,
    /// `ip` and `ip6` may be addresses reserved with `address_reserve`: the endpoint
    /// takes them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claim: bool,
    /// The container's DNS settings (`dns`, `dns_search`, `dns_option`, `hostname`,
    /// `add_host`).
    #[serde(flatten)]
    pub dns_opts: DnsOpts,
    /// Publish every `expose` port on a free host port (Docker's `-P`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_all: bool,
    /// Ports the container serves, `PORT[-END][/PROTO]` (`--expose`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// Bandwidth limits of the port (`rate_in`, `rate_out` in bits a second, `burst`
    /// in bytes).
    #[serde(flatten, default)]
    pub limits: crate::limit::PortLimits,
    /// A VM: the daemon listens on this Unix socket path for QEMU's `-netdev stream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_socket: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UplinkReq {
    /// "socket", "none" or "packet".
    pub mode: String,
    #[serde(default)]
    pub tap: Option<String>,
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub next_hop: Option<Ipv4Addr>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// vswitch's IPv6 address on the segment (`ADDR/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop6: Option<std::net::Ipv6Addr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
// One request per control call, parsed and dropped: its size is never multiplied.
#[allow(clippy::large_enum_variant)]
pub enum Request {
    /// Protocol and daemon version.
    Hello,
    NetworkCreate(NetworkSpec),
    NetworkLs,
    NetworkInspect {
        name: String,
    },
    NetworkRm {
        name: String,
        #[serde(default)]
        force: bool,
    },
    /// Changes a network live (DNS, internal, ICC, MTU of an empty network).
    NetworkUpdate(NetworkUpdate),
    /// Removes every network without endpoints (never the default one).
    NetworkPrune,
    Attach(AttachReq),
    Detach {
        name: String,
        #[serde(default)]
        network: Option<String>,
    },
    Connect {
        network: String,
        name: String,
        #[serde(default)]
        ip: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip6: Option<std::net::Ipv6Addr>,
        #[serde(default)]
        aliases: Vec<String>,
        /// The container's DNS settings, replacing those it has where given.
        #[serde(flatten)]
        dns_opts: DnsOpts,
        /// Bandwidth limits of the new port.
        #[serde(flatten, default)]
        limits: crate::limit::PortLimits,
    },
    Disconnect {
        network: String,
        name: String,
    },
    PortLs,
    /// Every container the state holds, with its endpoints, whether or not its ports
    /// are open (an engine's cleanup finds what it left behind).
    ContainerLs,
    Publish {
        name: String,
        specs: Vec<String>,
    },
    Unpublish {
        name: String,
        #[serde(default)]
        specs: Vec<String>,
    },
    /// What a container has published (`ctl port show NAME`, `docker port`).
    PublishLs {
        name: String,
    },
    FdbShow {
        #[serde(default)]
        network: Option<String>,
    },
    FdbFlush {
        #[serde(default)]
        network: Option<String>,
    },
    ConntrackLs,
    ConntrackFlush,
    Stats,
    UplinkSet(UplinkReq),
    UplinkShow,
    /// Where a container's namespaces are (for `run --network container:NAME`).
    Sandbox {
        name: String,
    },
    /// Holds an address of a network for an engine's IPAM (Docker's `RequestAddress`):
    /// `ip`, else the next free one (IPv6 with `ipv6`); no endpoint gets it unless its
    /// `attach` claims it.
    AddressReserve {
        network: String,
        #[serde(default)]
        ip: Option<std::net::IpAddr>,
        /// With no `ip`: an IPv6 address.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ipv6: bool,
    },
    /// The daemon's unique local IPv6 /48 (made now if it has none): where an engine's
    /// IPAM takes IPv6 subnets from when none is given.
    Ula,
    /// Gives a reservation back (an endpoint's address is never touched).
    AddressRelease {
        network: String,
        ip: std::net::IpAddr,
    },
    Capture {
        port: String,
        #[serde(default)]
        count: Option<u64>,
    },
    /// Sets a port's bandwidth limits live: the directions given replace the port's (a
    /// rate of 0 removes one), `clear` removes both; none given: shows them.
    Limit {
        port: String,
        #[serde(flatten, default)]
        limits: crate::limit::PortLimits,
        #[serde(default)]
        clear: bool,
    },
}

/// A response line: `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`.
/// `data` is one of the [`Reply`] shapes; a client reads it back with the type its
/// request answers with (see [`Reply`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(data: Reply) -> Response {
        Response {
            ok: true,
            // These shapes have string keys only: serializing them cannot fail.
            data: Some(serde_json::to_value(data).unwrap_or(serde_json::Value::Null)),
            error: None,
        }
    }
    pub fn err(msg: impl std::fmt::Display) -> Response {
        // One line, whatever the message held.
        let m = msg.to_string().replace(['\n', '\r'], " ");
        Response {
            ok: false,
            data: None,
            error: Some(m),
        }
    }
}

mod reply;
pub use reply::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_documented() {
        let r: Envelope =
            serde_json::from_str(r#"{"v":1,"cmd":"network_rm","name":"front"}"#).unwrap();
        assert_eq!(
            r.req,
            Request::NetworkRm {
                name: "front".into(),
                force: false
            }
        );
        let r: Envelope = serde_json::from_str(
            r#"{"v":1,"cmd":"network_create","name":"a","subnet":"10.1.0.0/16","no_icc":true}"#,
        )
        .unwrap();
        let Request::NetworkCreate(s) = r.req else {
            panic!()
        };
        assert!(s.no_icc && s.subnet.as_deref() == Some("10.1.0.0/16"));
        let r: Envelope = serde_json::from_str(r#"{"v":1,"cmd":"attach","network":"bridge","name":"web","netns":"/run/netns/x","aliases":["www"]}"#).unwrap();
        let Request::Attach(a) = r.req else { panic!() };
        assert_eq!(a.aliases, vec!["www".to_string()]);
        let text = serde_json::to_string(&Envelope {
            v: 1,
            req: Request::Stats,
        })
        .unwrap();
        assert_eq!(text, r#"{"v":1,"cmd":"stats"}"#);
        assert!(serde_json::from_str::<Envelope>(r#"{"v":1,"cmd":"nope"}"#).is_err());
    }

    #[test]
    fn errors_are_one_line() {
        let r = Response::err("a\nb");
        assert_eq!(r.error.as_deref(), Some("a b"));
    }

    /// The documented reply `data` read as `T` and printed back: the same JSON.
    fn same_as<T: serde::de::DeserializeOwned + Serialize>(
        data: &serde_json::Value,
    ) -> Result<(), String> {
        let t: T = serde_json::from_value(data.clone()).map_err(|e| e.to_string())?;
        let back = serde_json::to_value(&t).map_err(|e| e.to_string())?;
        if &back == data {
            Ok(())
        } else {
            Err(format!("prints back as {back}"))
        }
    }

    fn reply_matches(cmd: &str, data: &serde_json::Value) -> Result<(), String> {
        match cmd {
            "hello" => same_as::<Hello>(data),
            "network_create" => same_as::<NetworkInspect>(data),
            "network_inspect" => same_as::<Vec<NetworkInspect>>(data),
            "network_ls" => same_as::<Vec<NetworkRow>>(data),
            "network_rm" => same_as::<NetworkRemoved>(data),
            "network_update" => same_as::<NetworkInspect>(data),
            "network_prune" => same_as::<NetworkPruned>(data),
            "attach" | "connect" => same_as::<EndpointInfo>(data),
            "detach" => same_as::<Detached>(data),
            "disconnect" => same_as::<Disconnected>(data),
            "container_ls" => same_as::<Vec<ContainerRow>>(data),
            "port_ls" => same_as::<Vec<PortRow>>(data),
            "publish" | "unpublish" | "publish_ls" => same_as::<Vec<PublishedEntry>>(data),
            "fdb_show" => same_as::<Vec<FdbRow>>(data),
            "fdb_flush" | "conntrack_flush" => same_as::<Flushed>(data),
            "stats" => same_as::<Stats>(data),
            "uplink_set" | "uplink_show" => same_as::<crate::state::Uplink>(data),
            "sandbox" => same_as::<SandboxInfo>(data),
            "conntrack_ls" => same_as::<Vec<ConntrackRow>>(data),
            "capture" => same_as::<Capturing>(data),
            "address_reserve" => same_as::<AddressReserved>(data),
            "address_release" => same_as::<AddressReleased>(data),
            "ula" => same_as::<Ula>(data),
            "limit" => same_as::<LimitInfo>(data),
            other => Err(format!("no reply type for {other:?}")),
        }
    }

    /// A documented request: it parses, and every key it has is one the type knows
    /// (printed back, the request has it too).
    fn request_matches(line: &str) -> Result<(), String> {
        let doc: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let env: Envelope = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
        let back = serde_json::to_value(&env).map_err(|e| e.to_string())?;
        let keys = doc.as_object().map(|o| o.keys().collect::<Vec<_>>());
        for k in keys.unwrap_or_default() {
            if back.get(k) != doc.get(k) {
                return Err(format!("{k:?} is not a field of the request"));
            }
        }
        Ok(())
    }

    #[test]
    fn the_documented_examples_are_the_types() {
        let doc = include_str!("../../docs/protocol.md");
        let blocks = doc.split("```json ").skip(1);
        let mut seen = 0;
        for b in blocks {
            let (info, rest) = b.split_once('\n').unwrap();
            let body = rest.split("```").next().unwrap().trim();
            let r = match info.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["request"] => request_matches(body),
                ["reply", "error"] => serde_json::from_str::<Response>(body)
                    .map_err(|e| e.to_string())
                    .and_then(|r| if r.ok { Err("ok".into()) } else { Ok(()) }),
                ["reply", cmd] => {
                    let r: Response = serde_json::from_str(body).unwrap();
                    assert!(r.ok, "{body}");
                    reply_matches(cmd, &r.data.unwrap_or_default())
                }
                other => Err(format!("unknown example kind {other:?}")),
            };
            if let Err(e) = r {
                panic!("docs/protocol.md example `{info}`: {e}\n{body}");
            }
            seen += 1;
        }
        assert!(seen >= 25, "only {seen} examples found");
    }

    #[test]
    fn every_command_has_a_documented_reply_or_request() {
        let doc = include_str!("../../docs/protocol.md");
        for cmd in [
            "hello",
            "network_create",
            "network_ls",
            "network_inspect",
            "network_rm",
            "network_update",
            "network_prune",
            "publish_ls",
            "attach",
            "detach",
            "connect",
            "disconnect",
            "limit",
            "container_ls",
            "port_ls",
            "publish",
            "unpublish",
            "fdb_show",
            "fdb_flush",
            "conntrack_ls",
            "conntrack_flush",
            "stats",
            "uplink_set",
            "uplink_show",
            "sandbox",
            "capture",
            "address_reserve",
            "address_release",
            "ula",
        ] {
            assert!(
                doc.contains(&format!("| `{cmd}` |")),
                "{cmd} missing from the table"
            );
        }
    }
}
