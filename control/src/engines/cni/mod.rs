//! `vswitch-cni`: a CNI plugin (specification 1.1.0; 0.3.0 to 1.0.0 configurations
//! too) that puts containers of podman, containerd, CRI-O or Kubernetes on a vswitch
//! network. A thin client of the daemon's control socket: ADD attaches the container's
//! namespace (the daemon creates the TAP inside it and configures it), publishes its
//! port mappings (no portmap plugin, no iptables) and returns the result; DEL detaches;
//! CHECK verifies; STATUS says whether the daemon answers; GC detaches what the runtime
//! no longer lists. Attachments are marked as the plugin's (`owner: cni`) with the
//! runtime's container id, so DEL and GC never touch containers attached otherwise.

pub mod conf;
pub mod error;
pub mod result;

use serde_json::{Value, json};

use crate::api::{AttachReq, Request};
use crate::client::{Client, ClientError};
use crate::engines::{self as engine, Listed};
use conf::{Env, NetConf};
use error::{CniError, Code, daemon_down};

/// Runs one CNI command: the JSON to print on success, or the error.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": "1.1.0",
            "supportedVersions": conf::SUPPORTED,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command.as_str() {
        "ADD" => add(env, &conf).map(Some),
        "DEL" => del(env, &conf).map(|_| None),
        "CHECK" => check(env, &conf).map(|_| None),
        "STATUS" => status(&conf).map(|_| None),
        "GC" => gc(&conf).map(|_| None),
        c => Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_COMMAND {c:?} is not known: use ADD, DEL, CHECK, STATUS, GC or VERSION"),
        )),
    }
}

fn connect(conf: &NetConf) -> Result<Client, CniError> {
    let socket = conf.socket();
    Client::connect(&socket).map_err(|e| daemon_down(&socket, e))
}

/// A daemon refusal or a lost connection, as a CNI error.
fn refused(e: ClientError) -> CniError {
    match e {
        ClientError::Refused(msg) => CniError::new(Code::InvalidConfig, msg),
        e => CniError::new(Code::TryAgainLater, e.to_string()),
    }
}

fn containers(client: &mut Client) -> Result<Vec<Listed>, CniError> {
    engine::containers(client).map_err(|e| match e {
        engine::ListError::Client(c) => refused(c),
        engine::ListError::Garbled(g) => CniError::new(
            Code::Decode,
            "the daemon's container list is not understood",
        )
        .with_details(g.to_string()),
    })
}

/// The plugin's attachment of (container id, network, ifname), if any.
fn find<'a>(list: &'a [Listed], env: &Env, network: &str) -> Option<(&'a Listed, usize)> {
    engine::find(list, "cni", &env.container_id, (network, &env.ifname))
}

/// Creates the network from the configuration when the daemon does not have it; returns
/// whether it is internal.
fn ensure_network(client: &mut Client, conf: &NetConf) -> Result<bool, CniError> {
    engine::ensure_network(client, &conf.network_spec()?)
        .map(|n| n.internal)
        .map_err(refused)
}

/// The vswitch name of a new attachment: the engine's name for the container when it
/// is free, else the short id and the interface.
fn pick_name(list: &[Listed], env: &Env) -> String {
    let short = engine::short_id(&env.container_id);
    let taken = |n: &str| list.iter().any(|c| c.name == n);
    match &env.pod_name {
        Some(p) if crate::state::valid_name(p) && !taken(p) => p.clone(),
        _ if !taken(&short) => short,
        _ => format!("{short}-{}", env.ifname),
    }
}

/// The DNS aliases of the container on this network: the runtime's, and the engine's
/// name when it is not the vswitch name.
fn aliases(conf: &NetConf, env: &Env, name: &str) -> Vec<String> {
    let mut v: Vec<String> = conf
        .runtime
        .aliases
        .get(&conf.name)
        .cloned()
        .unwrap_or_default();
    if let Some(p) = &env.pod_name
        && p != name
        && !v.contains(p)
    {
        v.push(p.clone());
    }
    v.retain(|a| a != name && crate::state::valid_name(a));
    v
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    env.require(true)?;
    let mut client = connect(conf)?;
    let internal = ensure_network(&mut client, conf)?;
    let list = containers(&mut client)?;
    if find(&list, env, conf.network()).is_some() {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "container {} is already attached to {} as {}: DEL it first",
                env.container_id,
                conf.network(),
                env.ifname
            ),
        ));
    }
    let name = pick_name(&list, env);
    let (ip, ip6) = conf.static_ips(env)?;
    let req = AttachReq {
        network: conf.network().to_string(),
        aliases: aliases(conf, env, &name),
        name,
        netns: Some(env.netns.clone()),
        ifname: Some(env.ifname.clone()),
        ip,
        ip6,
        mac: conf.runtime.mac.clone().or_else(|| env.mac.clone()),
        publish: conf.publish_specs()?,
        limits: conf.limits()?,
        id: Some(env.container_id.clone()),
        owner: Some("cni".into()),
        dns_opts: conf.runtime.dns.opts(),
        ..Default::default()
    };
    let reply = client.call(Request::Attach(req)).map_err(refused)?;
    let ep = result::endpoint_from_reply(reply)?;
    Ok(result::build(
        &conf.cni_version,
        &ep,
        &env.netns,
        internal,
        conf.legacy_result(),
    ))
}

fn detach(client: &mut Client, c: &Listed, i: usize) -> Result<(), CniError> {
    engine::detach(client, c, i).map_err(refused)
}

fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    env.require(false)?;
    let mut client = connect(conf)?;
    let list = containers(&mut client)?;
    match find(&list, env, conf.network()) {
        Some((c, i)) => detach(&mut client, c, i),
        None => Ok(()),
    }
}

fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    env.require(true)?;
    let mut client = connect(conf)?;
    let list = containers(&mut client)?;
    let Some((c, i)) = find(&list, env, conf.network()) else {
        return Err(CniError::new(
            Code::UnknownContainer,
            format!(
                "container {} is not attached to {} as {}",
                env.container_id,
                conf.network(),
                env.ifname
            ),
        ));
    };
    let open = c.endpoints.get(i).is_some_and(|e| e.open);
    if !open || !std::path::Path::new(&env.netns).exists() {
        return Err(CniError::new(
            Code::UnknownContainer,
            format!(
                "the interface {} of container {} is not up in vswitch (its namespace is gone or the daemon could not restore it)",
                env.ifname, env.container_id
            ),
        ));
    }
    Ok(())
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    let socket = conf.socket();
    let unavailable = |e: &dyn std::fmt::Display| {
        CniError::new(Code::NotAvailable, engine::daemon_down(&socket)).with_details(e.to_string())
    };
    let mut client = Client::connect(&socket).map_err(|e| unavailable(&e))?;
    client
        .call(Request::Hello)
        .map(|_| ())
        .map_err(|e| unavailable(&e))
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let mut client = connect(conf)?;
    let list = containers(&mut client)?;
    let valid = |c: &Listed, ifname: &str| {
        conf.valid_attachments
            .iter()
            .any(|a| a.container_id == c.id && (a.ifname.is_empty() || a.ifname == ifname))
    };
    for c in list.iter().filter(|c| c.owner.as_deref() == Some("cni")) {
        let stale = c
            .endpoints
            .iter()
            .position(|e| e.network == conf.network() && !valid(c, &e.ifname));
        if let Some(i) = stale {
            detach(&mut client, c, i)?;
        }
    }
    Ok(())
}

/// The binary's entry: reads the environment and standard input, prints the result or
/// the error object, and returns the exit status.
pub fn main() -> i32 {
    use std::io::{Read, Write};
    let env = Env::read(|k| std::env::var(k).ok());
    let mut input = Vec::new();
    let read = std::io::stdin()
        .take(conf::MAX_CONFIG as u64)
        .read_to_end(&mut input);
    let outcome =
        match read {
            Ok(_) => run(&env, &input),
            Err(e) => Err(CniError::new(Code::Io, "cannot read the configuration")
                .with_details(e.to_string())),
        };
    let version = serde_json::from_slice::<Value>(&input)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| "1.1.0".into());
    let mut out = std::io::stdout();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            eprintln!("vswitch-cni: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engines::tests::listed;

    fn env(id: &str, ifname: &str, pod: Option<&str>) -> Env {
        Env {
            command: "ADD".into(),
            container_id: id.into(),
            netns: "/run/netns/x".into(),
            ifname: ifname.into(),
            pod_name: pod.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_plugins_own_attachments_are_found() {
        let list = vec![
            listed("web", "abc", None, &[("front", "eth0")]),
            listed("web2", "abc", Some("cni"), &[("front", "eth1")]),
        ];
        assert!(find(&list, &env("abc", "eth0", None), "front").is_none());
        let (c, i) = find(&list, &env("abc", "eth1", None), "front").unwrap();
        assert_eq!((c.name.as_str(), i), ("web2", 0));
    }

    #[test]
    fn names_prefer_the_engines_then_the_short_id() {
        let id = "0123456789abcdef0123";
        assert_eq!(pick_name(&[], &env(id, "eth0", Some("web"))), "web");
        let list = vec![listed("web", "x", None, &[])];
        assert_eq!(
            pick_name(&list, &env(id, "eth0", Some("web"))),
            "0123456789ab"
        );
        let list = vec![
            listed("web", "x", None, &[]),
            listed("0123456789ab", id, Some("cni"), &[]),
        ];
        assert_eq!(
            pick_name(&list, &env(id, "eth1", Some("web"))),
            "0123456789ab-eth1"
        );
        assert_eq!(
            pick_name(&[], &env(id, "eth0", Some("bad name!"))),
            "0123456789ab"
        );
    }

    #[test]
    fn version_needs_no_configuration() {
        let mut e = env("a", "eth0", None);
        e.command = "VERSION".into();
        let v = run(&e, b"").unwrap().unwrap();
        assert_eq!(v["supportedVersions"][4], "1.1.0");
    }

    #[test]
    fn a_missing_daemon_is_an_actionable_error() {
        let conf = br#"{"cniVersion":"1.0.0","name":"front","socket":"/nonexistent/vswitch.sock"}"#;
        let e = run(&env("a", "eth0", None), conf).unwrap_err();
        assert_eq!(e.code, Code::TryAgainLater);
        assert!(
            e.msg.contains("start it with `vswitch daemon`"),
            "{}",
            e.msg
        );
        let mut s = env("a", "eth0", None);
        s.command = "STATUS".into();
        assert_eq!(run(&s, conf).unwrap_err().code, Code::NotAvailable);
    }
}
