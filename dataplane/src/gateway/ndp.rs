//! Neighbour discovery on the gateway (RFC 4861): neighbour advertisements for its two
//! addresses (the network's gateway address and its link-local address), and router
//! advertisements, solicited and periodic, carrying the prefix, the MTU and the
//! gateway as DNS server (RDNSS, RFC 8106).
//!
//! The advertisement says what IPAM decided: the prefix is autonomous (SLAAC) only on
//! a /64, where the EUI-64 address SLAAC forms is the address IPAM gave the port; the
//! managed flag is always set, so a host may ask DHCPv6 for the same address.

use std::net::Ipv6Addr;

use super::{GatewayNet6, icmp6_frame};
use crate::wire::ipv6::{ALL_NODES, Icmpv6Type, NextHeader, multicast_mac};
use crate::wire::ndp::{self, NdpMessage, NdpOption, PrefixInfo};
use crate::wire::{EtherType, EthernetFrame, Icmpv6Packet, Ipv6Packet, MacAddr};

/// Seconds between unsolicited router advertisements (RFC 4861 allows 4 to 1800).
pub const RA_INTERVAL_SECS: u64 = 200;
/// How long hosts keep the gateway as default router.
pub const ROUTER_LIFETIME: u16 = 1800;
/// How long the DNS server of an advertisement is valid: three intervals (RFC 8106
/// section 5.1 asks for at least that much).
pub const RDNSS_LIFETIME: u32 = 3 * RA_INTERVAL_SECS as u32;
/// Prefix lifetimes (radvd's defaults).
pub const PREFIX_VALID: u32 = 86400;
pub const PREFIX_PREFERRED: u32 = 14400;

/// Neighbour discovery messages come with hop limit 255 (not forwarded by a router).
const ND_HOP_LIMIT: u8 = 255;

/// An NDP message received in an Ethernet frame.
struct NdIn<'a> {
    src_mac: MacAddr,
    src: Ipv6Addr,
    msg: NdpMessage<&'a [u8]>,
}

/// The NDP message of type `ty` in an Ethernet frame, checked as RFC 4861 says a
/// receiver must (hop limit 255, code 0, checksum, fixed part and options).
fn nd_in(frame: &[u8], ty: u8) -> Option<NdIn<'_>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::IPV6 {
        return None;
    }
    let src_mac = eth.src();
    let ip = Ipv6Packet::new_checked(eth.into_payload()).ok()?;
    if ip.hop_limit() != ND_HOP_LIMIT || ip.next_header() != NextHeader::ICMPV6 {
        return None;
    }
    let (src, dst) = (ip.src(), ip.dst());
    let bytes = ip.into_payload();
    let icmp = Icmpv6Packet::new_checked(bytes).ok()?;
    if icmp.msg_type() != ty || icmp.code() != 0 || !icmp.verify_checksum(&src, &dst) {
        return None;
    }
    let msg = NdpMessage::new_checked(bytes).ok()?;
    msg.lladdr().ok()?;
    Some(NdIn { src_mac, src, msg })
}

/// Answers a neighbour solicitation for one of the gateway's addresses with an
/// advertisement (router, solicited, override; the gateway's MAC) into `out`. A
/// solicitation from :: (someone's duplicate address detection of the gateway's
/// address) is answered to all nodes, unsolicited, as RFC 4862 says.
pub fn na_reply(frame: &[u8], net: &GatewayNet6, out: &mut Vec<u8>) -> bool {
    let Some(ns) = nd_in(frame, Icmpv6Type::NEIGHBOR_SOLICIT) else {
        return false;
    };
    let target = ns.msg.target();
    if !net.is_gateway(&target) {
        return false;
    }
    let (dst_mac, dst, flags) = if ns.src.is_unspecified() {
        let f = ndp::NA_ROUTER | ndp::NA_OVERRIDE;
        (multicast_mac(&ALL_NODES), ALL_NODES, f)
    } else if ns.src_mac.is_unicast() {
        let f = ndp::NA_ROUTER | ndp::NA_SOLICITED | ndp::NA_OVERRIDE;
        (ns.src_mac, ns.src, f)
    } else {
        return false;
    };
    let mac = net.gateway_mac;
    icmp6_frame(out, (dst_mac, mac), (target, dst), ND_HOP_LIMIT, |b| {
        let at = b.len();
        b.extend_from_slice(&[Icmpv6Type::NEIGHBOR_ADVERT, 0, 0, 0]);
        b.resize(at + 24, 0);
        if let Some(m) = b.get_mut(at..) {
            let mut m = NdpMessage::new_unchecked(m);
            m.set_flags(flags);
            m.set_target(target);
        }
        ndp::push_lladdr(b, NdpOption::TARGET_LLADDR, mac);
    })
}

/// A neighbour solicitation from `(mac, src)` for `target`, to its solicited-node
/// group (RFC 4861 section 7.2.2), into `out`.
pub fn solicit(from: (MacAddr, Ipv6Addr), target: Ipv6Addr, out: &mut Vec<u8>) -> bool {
    let group = crate::wire::ipv6::solicited_node(&target);
    let (mac, src) = from;
    icmp6_frame(
        out,
        (multicast_mac(&group), mac),
        (src, group),
        ND_HOP_LIMIT,
        |b| {
            let at = b.len();
            b.extend_from_slice(&[Icmpv6Type::NEIGHBOR_SOLICIT, 0, 0, 0]);
            b.resize(at + 24, 0);
            if let Some(m) = b.get_mut(at..) {
                NdpMessage::new_unchecked(m).set_target(target);
            }
            ndp::push_lladdr(b, NdpOption::SOURCE_LLADDR, mac);
        },
    )
}

/// Answers a router solicitation: the advertisement goes to the soliciting host (its
/// address and MAC), or to all nodes when it has no address yet.
pub fn solicited_ra(frame: &[u8], net: &GatewayNet6, out: &mut Vec<u8>) -> bool {
    let Some(rs) = nd_in(frame, Icmpv6Type::ROUTER_SOLICIT) else {
        return false;
    };
    if rs.src.is_unspecified() || !rs.src_mac.is_unicast() {
        return router_advert(net, (multicast_mac(&ALL_NODES), ALL_NODES), out);
    }
    router_advert(net, (rs.src_mac, rs.src), out)
}

/// Writes a router advertisement from the gateway's link-local address to `to` into
/// `out`: the prefix (on-link; autonomous on a /64), the MTU, the gateway's MAC and,
/// where DNS is served, the gateway as RDNSS. Managed and other flags are set: the
/// same address, and DNS, come from DHCPv6.
pub fn router_advert(net: &GatewayNet6, to: (MacAddr, Ipv6Addr), out: &mut Vec<u8>) -> bool {
    let mac = net.gateway_mac;
    let lifetime = if net.router { ROUTER_LIFETIME } else { 0 };
    icmp6_frame(
        out,
        (to.0, mac),
        (net.link_local, to.1),
        ND_HOP_LIMIT,
        |b| {
            let at = b.len();
            b.extend_from_slice(&[Icmpv6Type::ROUTER_ADVERT, 0, 0, 0]);
            b.resize(at + 16, 0);
            if let Some(m) = b.get_mut(at..) {
                let mut m = NdpMessage::new_unchecked(m);
                m.set_ra(64, lifetime, 0, 0);
                m.set_flags(ndp::RA_MANAGED | ndp::RA_OTHER);
            }
            let mut flags = ndp::PREFIX_ON_LINK;
            if net.slaac() {
                flags |= ndp::PREFIX_AUTONOMOUS;
            }
            let p = PrefixInfo {
                prefix: net.subnet.network().addr(),
                len: net.subnet.prefix_len(),
                flags,
                valid: PREFIX_VALID,
                preferred: PREFIX_PREFERRED,
            };
            ndp::push_prefix(b, &p);
            ndp::push_mtu(b, u32::from(net.mtu));
            ndp::push_lladdr(b, NdpOption::SOURCE_LLADDR, mac);
            if net.dns {
                ndp::push_rdnss(b, RDNSS_LIFETIME, &[net.gateway]);
            }
        },
    )
}

/// The (address, MAC) a neighbour advertisement or solicitation announces, for the
/// gateway's neighbour table: the target of an advertisement, the source of a
/// solicitation, with the link-layer address option (else the Ethernet source).
pub fn announced(frame: &[u8]) -> Option<(Ipv6Addr, MacAddr)> {
    let nd = nd_in(frame, Icmpv6Type::NEIGHBOR_ADVERT)
        .or_else(|| nd_in(frame, Icmpv6Type::NEIGHBOR_SOLICIT))?;
    let mac = nd.msg.lladdr().ok()?.unwrap_or(nd.src_mac);
    let addr = if nd.msg.msg_type() == Icmpv6Type::NEIGHBOR_ADVERT {
        nd.msg.target()
    } else {
        nd.src
    };
    (!addr.is_unspecified() && !addr.is_multicast() && mac.is_unicast()).then_some((addr, mac))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::captured::{self, bytes};
    use crate::wire::ipv6::link_local;

    /// The router of the captures: 02:42:ac:11:00:01, 2001:db8:1::1 on /64.
    pub(crate) fn net() -> GatewayNet6 {
        let mac = MacAddr([2, 0x42, 0xac, 0x11, 0, 1]);
        GatewayNet6 {
            gateway: "2001:db8:1::1".parse().unwrap(),
            link_local: link_local(mac),
            gateway_mac: mac,
            subnet: "2001:db8:1::/64".parse().unwrap(),
            mtu: 1500,
            dns: true,
            router: true,
            lease_secs: 3600,
            autonomous: true,
            domain_name: "front".into(),
        }
    }

    fn icmp_of(frame: &[u8]) -> (Ipv6Packet<&[u8]>, &[u8]) {
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(&frame[54..]).unwrap();
        assert!(icmp.verify_checksum(&ip.src(), &ip.dst()));
        (ip, &frame[54..])
    }

    #[test]
    fn answers_the_kernels_solicitation_as_linux_does() {
        let mut out = Vec::new();
        assert!(na_reply(&bytes(captured::NS), &net(), &mut out));
        // Byte for byte the advertisement the Linux host sent in the capture, but for
        // the router flag (that host did not forward).
        let mut want = bytes(captured::NA);
        want[58] |= ndp::NA_ROUTER;
        fix_checksum(&mut want);
        assert_eq!(out, want);
        // The unicast reachability check of the link-local address.
        let mut ns = bytes(captured::NS_UNICAST);
        // (The capture asked for fe80::1; ask for the gateway's link-local.)
        let ll = net().link_local.octets();
        ns[62..78].copy_from_slice(&ll);
        ns[38..54].copy_from_slice(&ll);
        fix_checksum(&mut ns);
        assert!(na_reply(&ns, &net(), &mut out));
        let (ip, m) = icmp_of(&out);
        assert_eq!(ip.src(), net().link_local);
        assert_eq!(
            NdpMessage::new_checked(m).unwrap().target(),
            net().link_local
        );
    }

    /// Recomputes the ICMPv6 checksum of a frame edited in a test.
    fn fix_checksum(f: &mut [u8]) {
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        let (s, d) = (ip.src(), ip.dst());
        Icmpv6Packet::new_unchecked(&mut f[54..]).fill_checksum(&s, &d);
    }

    #[test]
    fn solicitations_for_others_or_forged_are_not_answered() {
        let mut out = Vec::new();
        // Another address (the DAD probe of a host's own address).
        assert!(!na_reply(&bytes(captured::NS_DAD), &net(), &mut out));
        // A solicitation that crossed a router (hop limit not 255).
        let mut ns = bytes(captured::NS);
        ns[21] = 64;
        assert!(!na_reply(&ns, &net(), &mut out));
        // A bad checksum.
        let mut ns = bytes(captured::NS);
        ns[57] ^= 1;
        assert!(!na_reply(&ns, &net(), &mut out));
        // DAD for the gateway's own address: answered to all nodes.
        let mut dad = bytes(captured::NS_DAD);
        dad[62..78].copy_from_slice(&net().gateway.octets());
        fix_checksum(&mut dad);
        assert!(na_reply(&dad, &net(), &mut out));
        let (ip, m) = icmp_of(&out);
        assert_eq!(ip.dst(), ALL_NODES);
        assert_eq!(
            NdpMessage::new_checked(m).unwrap().flags() & ndp::NA_SOLICITED,
            0
        );
    }

    #[test]
    fn solicited_advertisement_carries_prefix_mtu_and_dns() {
        let mut out = Vec::new();
        assert!(solicited_ra(&bytes(captured::RS), &net(), &mut out));
        let e = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(e.dst(), MacAddr([2, 0x42, 0xac, 0x11, 0, 2]));
        let (ip, m) = icmp_of(&out);
        assert_eq!((ip.src(), ip.hop_limit()), (net().link_local, 255));
        let ra = NdpMessage::new_checked(m).unwrap();
        assert_eq!(ra.router_lifetime(), ROUTER_LIFETIME);
        assert_eq!(ra.flags(), ndp::RA_MANAGED | ndp::RA_OTHER);
        let opts: Vec<_> = ra.options().map(|o| o.unwrap()).collect();
        let p = PrefixInfo::parse(opts[0].1).unwrap();
        assert_eq!(p.flags, ndp::PREFIX_ON_LINK | ndp::PREFIX_AUTONOMOUS);
        assert_eq!(
            (opts[1].0, &opts[1].1[2..]),
            (NdpOption::MTU, &1500u32.to_be_bytes()[..])
        );
        assert_eq!(ra.lladdr(), Ok(Some(net().gateway_mac)));
        let dns: Vec<_> = ndp::rdnss_servers(opts[3].1).collect();
        assert_eq!(dns, [net().gateway]);
        // What Linux's own parser (etherparse here) makes of it.
        assert!(etherparse::SlicedPacket::from_ethernet(&out).is_ok());
    }

    #[test]
    fn other_prefixes_are_not_autonomous_and_internal_is_no_router() {
        let mut n = net();
        n.subnet = "2001:db8:1::/80".parse().unwrap();
        n.router = false;
        n.dns = false;
        let mut out = Vec::new();
        assert!(router_advert(
            &n,
            (multicast_mac(&ALL_NODES), ALL_NODES),
            &mut out
        ));
        let (_, m) = icmp_of(&out);
        let ra = NdpMessage::new_checked(m).unwrap();
        assert_eq!(ra.router_lifetime(), 0);
        let opts: Vec<_> = ra.options().map(|o| o.unwrap().0).collect();
        assert!(!opts.contains(&NdpOption::RDNSS));
        let p = ra.options().next().unwrap().unwrap();
        assert_eq!(PrefixInfo::parse(p.1).unwrap().flags, ndp::PREFIX_ON_LINK);
        // A /64 whose engine configures the addresses (Docker): no SLAAC either.
        let mut n = net();
        n.autonomous = false;
        let mut out = Vec::new();
        assert!(router_advert(
            &n,
            (multicast_mac(&ALL_NODES), ALL_NODES),
            &mut out
        ));
        let (_, m) = icmp_of(&out);
        let ra = NdpMessage::new_checked(m).unwrap();
        let p = ra.options().next().unwrap().unwrap();
        assert_eq!(PrefixInfo::parse(p.1).unwrap().flags, ndp::PREFIX_ON_LINK);
    }

    #[test]
    fn learns_from_advertisements_and_solicitations() {
        let host = MacAddr([2, 0x42, 0xac, 0x11, 0, 2]);
        let ll: Ipv6Addr = "fe80::42:acff:fe11:2".parse().unwrap();
        assert_eq!(announced(&bytes(captured::NS)), Some((ll, host)));
        assert_eq!(
            announced(&bytes(captured::NA)),
            Some((
                "2001:db8:1::1".parse().unwrap(),
                MacAddr([2, 0x42, 0xac, 0x11, 0, 1])
            ))
        );
        assert_eq!(announced(&bytes(captured::NS_DAD)), None);
        assert_eq!(announced(&bytes(captured::ECHO)), None);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
            let mut out = Vec::new();
            let _ = na_reply(&b, &net(), &mut out);
            let _ = solicited_ra(&b, &net(), &mut out);
            let _ = announced(&b);
        }
    }
}
