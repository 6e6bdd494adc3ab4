//! IPv6 in the state: dual-stack and IPv6-only networks, IPAM's address policy, the
//! unique local prefix, the default bridge, and states written before IPv6.

use super::tests::{ep, ns};
use super::*;

fn dual(name: &str, subnet6: Option<&str>) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        ipv6: true,
        subnet6: subnet6.map(String::from),
        ..Default::default()
    }
}

#[test]
fn dual_stack_addresses_are_the_eui64_of_the_mac_on_a_64() {
    let mut s = State::new(None, None).unwrap();
    let n = s
        .create_network(&dual("d", Some("2001:db8:1::/64")))
        .unwrap()
        .clone();
    let v6 = n.ipv6.unwrap();
    assert_eq!(v6.gateway, "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
    assert!(n.subnet.is_some(), "dual stack keeps IPv4");
    let c = s.check_attach("web", &ns("/a"), &ep("d")).unwrap();
    let e = &c.endpoints[0];
    // What SLAAC forms from the MAC is what IPAM gave.
    let slaac = dataplane::wire::ipv6::with_eui64("2001:db8:1::".parse().unwrap(), e.mac);
    assert_eq!(e.ip6, Some(slaac));
    s.attach(c);
    // Asked for: given; taken, outside, reserved: refused.
    let want = |a: &str| EndpointSpec {
        ip6: Some(a.parse().unwrap()),
        ..ep("d")
    };
    let c = s
        .check_attach("db", &ns("/b"), &want("2001:db8:1::9"))
        .unwrap();
    assert_eq!(c.endpoints[0].ip6, Some("2001:db8:1::9".parse().unwrap()));
    s.attach(c);
    let err = |a: &str| s.check_attach("x", &ns("/c"), &want(a)).unwrap_err();
    assert!(matches!(err("2001:db8:1::9"), StateError::Ip6Taken(..)));
    assert!(matches!(err("2001:db8:2::9"), StateError::Ip6Outside(..)));
    assert!(matches!(err("2001:db8:1::1"), StateError::Ip6Reserved(..)));
    assert!(matches!(err("2001:db8:1::"), StateError::Ip6Reserved(..)));
    // --ip6 on a network without IPv6.
    let e = s
        .check_attach(
            "x",
            &ns("/c"),
            &EndpointSpec {
                ip6: Some("fd00::9".parse().unwrap()),
                ..ep("bridge")
            },
        )
        .unwrap_err();
    assert!(matches!(e, StateError::NoIpv6(_)), "{e}");
}

#[test]
fn other_prefixes_take_the_lowest_free_address() {
    let mut s = State::new(None, None).unwrap();
    s.create_network(&dual("d", Some("2001:db8:1::/112")))
        .unwrap();
    let mut got = Vec::new();
    for i in 0..2 {
        let c = s
            .check_attach(&format!("c{i}"), &ns("/n"), &ep("d"))
            .unwrap();
        got.push(c.endpoints[0].ip6.unwrap());
        s.attach(c);
    }
    assert_eq!(
        got,
        [
            "2001:db8:1::2".parse::<Ipv6Addr>().unwrap(),
            "2001:db8:1::3".parse().unwrap()
        ]
    );
}

#[test]
fn networks_without_a_subnet_share_one_unique_local_48_kept_in_the_state() {
    let mut s = State::new(None, None).unwrap();
    assert!(s.ula.is_none());
    let a = s.create_network(&dual("a", None)).unwrap().ipv6.unwrap();
    let ula = s.ula.unwrap();
    assert_eq!(ula.prefix_len(), 48);
    assert_eq!(ula.addr().octets()[0], 0xfd);
    assert!(ula.covers(&a.subnet) && a.subnet.prefix_len() == 64);
    let b = s.create_network(&dual("b", None)).unwrap().ipv6.unwrap();
    assert!(ula.covers(&b.subnet) && !a.subnet.overlaps(&b.subnet));
    assert_eq!(s.ula, Some(ula), "generated once");
    let dir = std::env::temp_dir().join(format!("vswitch-state6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    s.save(&dir).unwrap();
    let back = State::load(&dir).unwrap().unwrap();
    assert_eq!(back.ula, Some(ula));
    assert_eq!(back, s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ipv6_only_networks_have_no_ipv4_anywhere() {
    let mut s = State::new(None, None).unwrap();
    let spec = NetworkSpec {
        no_ipv4: true,
        ..dual("six", Some("fd00:6::/64"))
    };
    let n = s.create_network(&spec).unwrap().clone();
    assert_eq!((n.subnet, n.gateway), (None, None));
    assert_eq!(n.gateway_mac().0[..2], [0x02, 0x42]);
    let c = s.check_attach("web", &ns("/a"), &ep("six")).unwrap();
    let e = &c.endpoints[0];
    assert_eq!(e.ip, None);
    assert!(e.ip6.is_some() && e.mac.is_unicast() && e.mac.0[..2] == [0x02, 0x42]);
    s.attach(c);
    let ip = EndpointSpec {
        ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
        ..ep("six")
    };
    assert!(matches!(
        s.check_attach("db", &ns("/b"), &ip).unwrap_err(),
        StateError::NoIpv4(_)
    ));
    crate::state_check::check(&s).unwrap();
}

#[test]
fn family_refusals() {
    let mut s = State::new(None, None).unwrap();
    s.create_network(&dual("a", Some("2001:db8:1::/64")))
        .unwrap();
    let before = s.clone();
    let cases = [
        (
            NetworkSpec {
                name: "x".into(),
                no_ipv4: true,
                ..Default::default()
            },
            "IPv4 or IPv6",
        ),
        (dual("x", Some("2001:db8:1:0:8000::/65")), "overlaps"),
        (dual("x", Some("2001:db8:9::1/64")), "host bits"),
        (dual("x", Some("2000::/16")), "/32 to /124"),
        (dual("x", Some("10.0.0.0/8")), "IPv6 prefix"),
        (
            NetworkSpec {
                gateway6: Some("2001:db8:9::1".parse().unwrap()),
                ..dual("x", None)
            },
            "needs an IPv6 --subnet",
        ),
        (
            NetworkSpec {
                gateway6: Some("2001:db8:8::1".parse().unwrap()),
                ..dual("x", Some("2001:db8:9::/64"))
            },
            "not a usable address",
        ),
        (
            NetworkSpec {
                no_ipv4: true,
                subnet: Some("10.9.0.0/16".into()),
                ..dual("x", None)
            },
            "--ipv4=false",
        ),
    ];
    for (spec, want) in cases {
        let e = s.create_network(&spec).unwrap_err().to_string();
        assert!(e.contains(want), "{spec:?}: {e}");
    }
    s.ula = before.ula;
    assert_eq!(s, before);
}

#[test]
fn the_default_bridge_gets_ipv6_with_its_endpoints() {
    let mut s = State::new(None, None).unwrap();
    let c = s.check_attach("web", &ns("/a"), &ep("bridge")).unwrap();
    s.attach(c);
    let fixed: Ipv6Cidr = "2001:db8:17::/64".parse().unwrap();
    assert!(s.set_default_ipv6(Some(fixed)).unwrap());
    let b = &s.networks[DEFAULT_NETWORK];
    assert_eq!(b.ipv6.map(|v| v.subnet), Some(fixed));
    let e = &s.containers["web"].endpoints[0];
    assert_eq!(
        e.ip6,
        Some(dataplane::wire::ipv6::with_eui64(fixed.addr(), e.mac))
    );
    // Once: a restart with --ipv6 again changes nothing.
    assert!(!s.set_default_ipv6(None).unwrap());
    crate::state_check::check(&s).unwrap();
    // A bridge made earlier with an MTU under 1280 gets no IPv6 (it would black-hole).
    let mut small = State::new(None, Some(1000)).unwrap();
    assert!(matches!(
        small.set_default_ipv6(None),
        Err(StateError::Ipv6Mtu(1000))
    ));
    assert!(small.networks[DEFAULT_NETWORK].ipv6.is_none());
}

#[test]
fn a_state_written_before_ipv6_loads() {
    let old = r#"{"version": 1, "networks": {"bridge": {"name": "bridge", "id": "0a1b",
        "domain": 0, "subnet": "172.17.0.0/16", "gateway": "172.17.0.1", "ip_range": null,
        "vlan": null, "internal": false, "dns": "forward_only", "icc": true,
        "masquerade": true, "mtu": 1500, "created": 0}},
        "containers": {"web": {"name": "web", "id": "9b2e", "sandbox": {"kind": "netns",
        "path": "/run/netns/web"}, "endpoints": [{"network": "bridge", "id": "c0ff",
        "ifname": "eth0", "ip": "172.17.0.2", "mac": "02:42:ac:11:00:02",
        "port_security": true}]}}}"#;
    let dir = std::env::temp_dir().join(format!("vswitch-state-old-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(STATE_FILE), old).unwrap();
    let s = State::load(&dir).unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let b = &s.networks["bridge"];
    assert_eq!(b.gateway, Some(Ipv4Addr::new(172, 17, 0, 1)));
    assert!(b.ipv6.is_none() && s.ula.is_none());
    let e = &s.containers["web"].endpoints[0];
    assert_eq!((e.ip, e.ip6), (Some(Ipv4Addr::new(172, 17, 0, 2)), None));
}

#[test]
fn a_loaded_state_is_checked_per_family() {
    let mut s = State::new(None, None).unwrap();
    let c = s.check_attach("web", &ns("/a"), &ep("bridge")).unwrap();
    s.attach(c);
    // An IPv6 address on a network without IPv6.
    let mut bad = s.clone();
    if let Some(c) = bad.containers.get_mut("web") {
        c.endpoints[0].ip6 = Some("fd00::2".parse().unwrap());
    }
    let e = crate::state_check::check(&bad).unwrap_err().to_string();
    assert!(e.contains("families"), "{e}");
    // A network with neither family.
    let mut bad = s.clone();
    if let Some(n) = bad.networks.get_mut("bridge") {
        n.subnet = None;
    }
    let e = crate::state_check::check(&bad).unwrap_err().to_string();
    assert!(e.contains("neither IPv4"), "{e}");
}

#[test]
fn ipv6_reservations_are_held_until_claimed_or_released() {
    let mut s = State::new(None, None).unwrap();
    s.create_network(&dual("d", Some("fd00:7::/64"))).unwrap();
    // No MAC yet (an engine's IPAM): the lowest free address, then the next.
    let a = s.reserve6("d", None).unwrap();
    assert_eq!(a, "fd00:7::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(s.reserve6("d", None).unwrap().to_string(), "fd00:7::3");
    assert!(matches!(
        s.reserve6("d", Some(a)).unwrap_err(),
        StateError::Ip6Taken(..)
    ));
    // Nobody else gets it; the endpoint that claims it takes it.
    let want = EndpointSpec {
        ip6: Some(a),
        ..ep("d")
    };
    assert!(s.check_attach("x", &ns("/x"), &want).is_err());
    let c = s
        .check_attach(
            "dock",
            &ns("/d"),
            &EndpointSpec {
                claim: true,
                ..want
            },
        )
        .unwrap();
    s.attach(c);
    assert_eq!(s.networks["d"].reserved6.len(), 1);
    assert!(
        !s.release6("d", a).unwrap(),
        "an endpoint's address is kept"
    );
    assert!(s.release6("d", "fd00:7::3".parse().unwrap()).unwrap());
    assert!(s.networks["d"].reserved6.is_empty());
    assert!(matches!(
        s.reserve6("bridge", None).unwrap_err(),
        StateError::NoIpv6(_)
    ));
}

#[test]
fn ipv6_needs_an_mtu_of_1280_at_create_and_at_update() {
    let mut s = State::new(None, None).unwrap();
    let small = |name: &str, ipv6: bool| NetworkSpec {
        mtu: Some(1000),
        ..if ipv6 {
            dual(name, None)
        } else {
            NetworkSpec {
                name: name.into(),
                ..Default::default()
            }
        }
    };
    assert!(matches!(
        s.create_network(&small("d", true)),
        Err(StateError::Ipv6Mtu(1000))
    ));
    // Without IPv6 the same MTU is a network's to choose.
    assert_eq!(s.create_network(&small("v4", false)).unwrap().mtu, 1000);
    s.create_network(&dual("d", None)).unwrap();
    let to = |mtu| NetworkUpdate {
        name: "d".into(),
        mtu: Some(mtu),
        ..Default::default()
    };
    assert!(matches!(
        s.update_network(&to(1279)),
        Err(StateError::Ipv6Mtu(1279))
    ));
    assert_eq!(s.update_network(&to(1280)).unwrap().mtu, 1280);
}
