use super::*;
use crate::api::{AttachReq, Request};
use crate::backend::MemoryBackend;
use crate::state::NetworkSpec;
use serde_json::Value;
use std::path::Path;

fn cfg(dir: &Path) -> DaemonConfig {
    DaemonConfig {
        offload: false,
        ..DaemonConfig::new(dir.join("ctl.sock"), dir.to_path_buf())
    }
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("vswitch-daemon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ok(d: &mut Daemon, r: Request) -> Value {
    let resp = d.handle(r.clone(), vec![], 1);
    assert!(resp.ok, "{r:?}: {:?}", resp.error);
    resp.data.unwrap_or(Value::Null)
}

fn err(d: &mut Daemon, r: Request) -> String {
    let resp = d.handle(r.clone(), vec![], 1);
    assert!(!resp.ok, "{r:?} succeeded");
    resp.error.unwrap_or_default()
}

fn attach(net: &str, name: &str, ns: &str) -> Request {
    Request::Attach(AttachReq {
        network: net.into(),
        name: name.into(),
        netns: Some(ns.into()),
        ..Default::default()
    })
}

#[test]
fn first_start_creates_bridge_and_saves() {
    let t = TempDir::new("first");
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    let v = ok(&mut d, Request::NetworkLs);
    assert_eq!(v[0]["Name"], "bridge");
    assert_eq!(v[0]["Subnet"], "172.17.0.0/16");
    assert!(t.0.join("state.json").exists());
}

#[test]
fn attach_detach_and_inspect() {
    let t = TempDir::new("attach");
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    ok(
        &mut d,
        Request::NetworkCreate(NetworkSpec {
            name: "front".into(),
            ..Default::default()
        }),
    );
    // Namespaces must exist: use this process's own.
    let v = ok(&mut d, attach("front", "web", "/proc/self/ns/net"));
    assert_eq!(v["ip"], "172.18.0.2");
    assert_eq!(v["mac"], "02:42:ac:12:00:02");
    assert_eq!(v["gateway"], "172.18.0.1");
    let insp = ok(
        &mut d,
        Request::NetworkInspect {
            name: "front".into(),
        },
    );
    let cs = insp[0]["Containers"].as_object().unwrap();
    assert_eq!(cs.len(), 1);
    let c = cs.values().next().unwrap();
    assert_eq!(c["Name"], "web");
    assert_eq!(c["IPv4Address"], "172.18.0.2/16");
    let ports = ok(&mut d, Request::PortLs);
    assert_eq!(ports[0]["name"], "web");
    assert_eq!(ports[0]["slot"], 2);
    // The snapshot has the port and the domain.
    let snap = d.rt.cell.load_full();
    assert!(snap.port(dataplane::ids::PortId(2)).is_some());
    ok(
        &mut d,
        Request::Detach {
            name: "web".into(),
            network: None,
        },
    );
    assert!(ok(&mut d, Request::PortLs).as_array().unwrap().is_empty());
    assert!(
        err(
            &mut d,
            Request::Detach {
                name: "web".into(),
                network: None
            }
        )
        .contains("not found")
    );
}

#[test]
fn refused_requests_change_nothing() {
    let t = TempDir::new("refuse");
    let mut be = MemoryBackend::default();
    be.fail.push("/proc/self/ns/net".into());
    let mut d = Daemon::start(cfg(&t.0), Box::new(be)).unwrap();
    ok(
        &mut d,
        Request::NetworkCreate(NetworkSpec {
            name: "front".into(),
            ..Default::default()
        }),
    );
    let before = d.state().clone();
    let saved = std::fs::read(t.0.join("state.json")).unwrap();
    for (r, msg) in [
        (
            Request::NetworkCreate(NetworkSpec {
                name: "front".into(),
                ..Default::default()
            }),
            "already exists",
        ),
        (
            Request::NetworkCreate(NetworkSpec {
                name: "x".into(),
                subnet: Some("172.18.1.0/24".into()),
                ..Default::default()
            }),
            "overlaps",
        ),
        (
            Request::NetworkRm {
                name: "nope".into(),
                force: false,
            },
            "not found",
        ),
        (attach("nope", "web", "/proc/self/ns/net"), "not found"),
        (attach("front", "web", "/nonexistent/ns"), "does not exist"),
        // The backend fails: nothing is left behind.
        (attach("front", "web", "/proc/self/ns/net"), "cannot enter"),
        (
            Request::Connect {
                ip6: None,
                limits: Default::default(),
                network: "front".into(),
                name: "ghost".into(),
                ip: None,
                aliases: vec![],
                dns_opts: Default::default(),
            },
            "not found",
        ),
        (
            Request::FdbShow {
                network: Some("nope".into()),
            },
            "not found",
        ),
        (
            Request::Attach(AttachReq {
                network: "front".into(),
                name: "x".into(),
                ..Default::default()
            }),
            "exactly one",
        ),
        (
            Request::Attach(AttachReq {
                network: "front".into(),
                name: "x".into(),
                tap: Some("t".into()),
                mac: Some("zz".into()),
                ..Default::default()
            }),
            "invalid MAC",
        ),
    ] {
        let e = err(&mut d, r.clone());
        assert!(e.contains(msg), "{r:?}: {e}");
        assert_eq!(d.state(), &before, "{r:?} changed the state");
        assert_eq!(
            std::fs::read(t.0.join("state.json")).unwrap(),
            saved,
            "{r:?} changed the saved state"
        );
    }
    assert!(d.ports.is_empty());
}

#[test]
fn connect_gives_eth1_and_disconnect_removes_it() {
    let t = TempDir::new("connect");
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    ok(
        &mut d,
        Request::NetworkCreate(NetworkSpec {
            name: "back".into(),
            ..Default::default()
        }),
    );
    ok(&mut d, attach("bridge", "web", "/proc/self/ns/net"));
    let v = ok(
        &mut d,
        Request::Connect {
            ip6: None,
            limits: Default::default(),
            network: "back".into(),
            name: "web".into(),
            ip: None,
            aliases: vec!["api".into()],
            dns_opts: Default::default(),
        },
    );
    assert_eq!(v["port"], "web/eth1");
    assert_eq!(v["ifname"], "eth1");
    assert_eq!(d.ports.len(), 2);
    ok(
        &mut d,
        Request::Disconnect {
            network: "back".into(),
            name: "web".into(),
        },
    );
    assert_eq!(d.ports.len(), 1);
    assert!(
        err(
            &mut d,
            Request::Disconnect {
                network: "bridge".into(),
                name: "web".into()
            }
        )
        .contains("only network")
    );
}

#[test]
fn network_rm_with_force_detaches() {
    let t = TempDir::new("rm");
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    ok(
        &mut d,
        Request::NetworkCreate(NetworkSpec {
            name: "front".into(),
            ..Default::default()
        }),
    );
    ok(&mut d, attach("front", "web", "/proc/self/ns/net"));
    assert!(
        err(
            &mut d,
            Request::NetworkRm {
                name: "front".into(),
                force: false
            }
        )
        .contains("--force")
    );
    ok(
        &mut d,
        Request::NetworkRm {
            name: "front".into(),
            force: true,
        },
    );
    assert!(d.ports.is_empty());
    assert!(d.state().containers.is_empty());
}

#[test]
fn restart_restores_networks_and_ports() {
    let t = TempDir::new("restart");
    {
        let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
        ok(
            &mut d,
            Request::NetworkCreate(NetworkSpec {
                name: "front".into(),
                vlan: Some(10),
                ..Default::default()
            }),
        );
        ok(&mut d, attach("front", "web", "/proc/self/ns/net"));
    }
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    let ports = ok(&mut d, Request::PortLs);
    assert_eq!(ports[0]["name"], "web");
    assert_eq!(ports[0]["ip"], "172.18.0.2");
    let nets = ok(&mut d, Request::NetworkLs);
    assert_eq!(nets.as_array().unwrap().len(), 2);
}

#[test]
fn run_containers_go_with_their_connection() {
    let t = TempDir::new("run");
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    let f = std::fs::File::open("/dev/null").unwrap();
    let r = Request::Attach(AttachReq {
        network: "bridge".into(),
        name: "job".into(),
        fd: true,
        run_pid: Some(std::process::id()),
        ..Default::default()
    });
    let resp = d.handle(r, vec![f.into()], 7);
    assert!(resp.ok, "{:?}", resp.error);
    assert_eq!(d.ports.len(), 1);
    d.connection_closed(8);
    assert_eq!(d.ports.len(), 1);
    d.connection_closed(7);
    assert!(d.ports.is_empty());
    assert!(d.state().containers.is_empty());
}

#[test]
fn publish_binds_now_and_refuses_taken_ports() {
    let t = TempDir::new("publish");
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    ok(&mut d, attach("bridge", "web", "/proc/self/ns/net"));
    // An ephemeral host port for container port 80.
    let v = ok(
        &mut d,
        Request::Publish {
            name: "web".into(),
            specs: vec!["127.0.0.1::80".into()],
        },
    );
    let port = v[0]["host_port"].as_u64().unwrap() as u16;
    assert!(port > 0);
    assert_eq!(v[0]["auto"], true);
    // It really listens.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // A port someone else holds is refused, and nothing changes.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hp = held.local_addr().unwrap().port();
    let before = d.state().clone();
    let e = err(
        &mut d,
        Request::Publish {
            name: "web".into(),
            specs: vec![format!("127.0.0.1:{hp}:81")],
        },
    );
    assert!(e.contains("already in use"), "{e}");
    assert_eq!(d.state(), &before);
    // The same host port twice is refused by the state too.
    let e = err(
        &mut d,
        Request::Publish {
            name: "web".into(),
            specs: vec![format!("127.0.0.1:{port}:82")],
        },
    );
    assert!(e.contains("already published"), "{e}");
    assert!(
        err(
            &mut d,
            Request::Publish {
                name: "nope".into(),
                specs: vec!["80".into()]
            }
        )
        .contains("not found")
    );
    assert!(
        err(
            &mut d,
            Request::Publish {
                name: "web".into(),
                specs: vec!["80:80:80:80".into()]
            }
        )
        .contains("invalid port spec")
    );
    // Unpublish stops listening at once.
    ok(
        &mut d,
        Request::Unpublish {
            name: "web".into(),
            specs: vec![],
        },
    );
    assert!(d.state().containers["web"].published.is_empty());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        err(
            &mut d,
            Request::Unpublish {
                name: "web".into(),
                specs: vec!["80".into()]
            }
        )
        .contains("publishes nothing")
    );
}

/// Past its port slots the daemon refuses an attach with a message that says the
/// limit and what to do, and nothing of the refused container is kept.
#[test]
fn attach_past_the_port_limit_is_refused_clearly() {
    let t = TempDir::new("portlimit");
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    ok(&mut d, attach("bridge", "first", "/proc/self/ns/net"));
    // Every other slot taken (as 4094 attached ports would take them).
    for slot in 3..MAX_SLOTS as u16 {
        d.ports.insert(
            format!("filler{slot}"),
            PortRt {
                slot,
                container: format!("filler{slot}"),
                network: "bridge".into(),
                netns: None,
                ifname: "eth0".into(),
                handoff: None,
                kernel: None,
            },
        );
    }
    let e = err(&mut d, attach("bridge", "last", "/proc/self/ns/net"));
    assert!(e.contains("at most 4094 container ports"), "{e}");
    let v = ok(&mut d, Request::ContainerLs);
    assert!(
        !v.to_string().contains("\"last\""),
        "the refused container was kept: {v}"
    );
}

/// A Docker endpoint: its TAP made in the engine's namespace for the engine to move.
fn handoff(net: &str, name: &str, ip: &str) -> Request {
    Request::Attach(AttachReq {
        network: net.into(),
        name: name.into(),
        netns: Some("/run/docker/netns/not-yet".into()),
        create_in: Some("/proc/self/ns/net".into()),
        ifname: Some(format!("vsw{name}")),
        ip: Some(ip.parse().unwrap()),
        claim: true,
        id: Some(format!("{name}0000")),
        owner: Some("docker".into()),
        ..Default::default()
    })
}

#[test]
fn reservations_hold_addresses_until_an_endpoint_claims_them() {
    let t = TempDir::new("reserve");
    let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
    let spec = NetworkSpec {
        name: "front".into(),
        subnet: Some("10.9.0.0/24".into()),
        id: Some("d0c4e7".into()),
        dns_forward_only: true,
        ..Default::default()
    };
    let n = ok(&mut d, Request::NetworkCreate(spec.clone()));
    assert_eq!(n["Id"], "d0c4e7");
    assert_eq!(n["Options"]["vswitch.dns"], "forward-only");
    let again = NetworkSpec {
        name: "other".into(),
        subnet: Some("10.10.0.0/24".into()),
        ..spec
    };
    assert!(err(&mut d, Request::NetworkCreate(again)).contains("already network \"front\"'s"));
    let r = ok(
        &mut d,
        Request::AddressReserve {
            network: "front".into(),
            ip: None,
            ipv6: false,
        },
    );
    assert_eq!((&r["ip"], &r["prefix"]), (&"10.9.0.2".into(), &24.into()));
    // Nobody else gets it: not an attach that does not claim it, not the next free one.
    let plain = Request::Attach(AttachReq {
        network: "front".into(),
        name: "web".into(),
        netns: Some("/proc/self/ns/net".into()),
        ip: Some("10.9.0.2".parse().unwrap()),
        ..Default::default()
    });
    assert!(err(&mut d, plain).contains("already in use"));
    let v = ok(&mut d, attach("front", "web", "/proc/self/ns/net"));
    assert_eq!(v["ip"], "10.9.0.3");
    // The endpoint that claims it takes it; releasing it then touches nothing.
    let v = ok(&mut d, handoff("front", "dock", "10.9.0.2"));
    assert_eq!(v["ifname"], "vswdock");
    assert!(d.state().networks["front"].reserved.is_empty());
    let rel = Request::AddressRelease {
        network: "front".into(),
        ip: "10.9.0.2".parse().unwrap(),
    };
    assert_eq!(ok(&mut d, rel.clone())["released"], false);
    assert_eq!(
        d.state().containers["dock"].endpoints[0]
            .ip
            .map(|a| a.to_string())
            .unwrap_or_default(),
        "10.9.0.2"
    );
    ok(
        &mut d,
        Request::AddressReserve {
            network: "front".into(),
            ip: Some("10.9.0.9".parse().unwrap()),
            ipv6: false,
        },
    );
    let rel9 = Request::AddressRelease {
        network: "front".into(),
        ip: "10.9.0.9".parse().unwrap(),
    };
    assert_eq!(ok(&mut d, rel9)["released"], true);
}

#[test]
fn handoff_endpoints_are_the_engines_and_go_when_their_tap_is_gone() {
    let t = TempDir::new("handoff");
    {
        let mut d = Daemon::start(cfg(&t.0), Box::new(MemoryBackend::default())).unwrap();
        let v = ok(&mut d, handoff("bridge", "dock", "172.17.0.5"));
        assert_eq!(v["mac"], "02:42:ac:11:00:05");
        let ports = ok(&mut d, Request::PortLs);
        assert_eq!(ports[0]["kind"], "handoff");
        let c = ok(&mut d, Request::ContainerLs);
        assert_eq!(c[0]["sandbox"], "/run/docker/netns/not-yet");
        assert_eq!(c[0]["owner"], "docker");
        ok(
            &mut d,
            Request::NetworkCreate(NetworkSpec {
                name: "back".into(),
                ..Default::default()
            }),
        );
        let more = Request::Connect {
            ip6: None,
            limits: Default::default(),
            network: "back".into(),
            name: "dock".into(),
            ip: None,
            aliases: vec![],
            dns_opts: Default::default(),
        };
        assert!(err(&mut d, more).contains("through the engine"));
        ok(&mut d, handoff("bridge", "kept", "172.17.0.6"));
    }
    // Restarted: a TAP found nowhere was taken down by its engine meanwhile.
    let gone = MemoryBackend {
        fail: vec!["/proc/self/ns/net".into()],
        ..Default::default()
    };
    let mut d = Daemon::start(cfg(&t.0), Box::new(gone)).unwrap();
    assert!(d.state().containers.is_empty());
    assert_eq!(ok(&mut d, Request::PortLs), serde_json::json!([]));
    let bad = Request::Attach(AttachReq {
        network: "bridge".into(),
        name: "x".into(),
        create_in: Some("/proc/self/ns/net".into()),
        ..Default::default()
    });
    assert!(err(&mut d, bad).contains("create_in needs netns"));
}
