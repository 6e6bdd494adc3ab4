//! The packet uplink's own addresses seen from inside: a container reaching
//! `--address` or `--address6` on a port nothing publishes, or pinging it, hears from
//! that address what a host owning it answers (as a host behind Docker's iptables
//! does): an echo reply, an RST for TCP, "port unreachable" for UDP. The workers punt
//! such a packet untranslated ([`Punt::UplinkAddress`](crate::port::Punt)), having
//! made no flow for it; published ports are hairpinned by the workers and never come
//! here.

use std::net::IpAddr;

use super::action::Actions;
use super::dispatch::{Gateway, Inbound};
use super::segment::{Refused, tcp_reset};
use super::{GatewayNet, GatewayNet6, icmp, icmp6};
use crate::wire::MacAddr;
use crate::wire::icmp::{IcmpType, UnreachCode};
use crate::wire::icmpv6::Unreach6Code;
use crate::wire::ipv6::{Icmpv6Type, NextHeader};

impl Gateway {
    /// A packet from a container of `net` for the packet uplink's IPv4 address that
    /// nothing there takes: answered from that address, through the network's gateway
    /// MAC (an echo reply; an RST; port unreachable within the port's error budget).
    pub(super) fn for_uplink_address(
        &mut self,
        f: Inbound<'_>,
        net: &GatewayNet,
        out: &mut Actions,
    ) {
        let Some(up) = self.cfg.packet else { return };
        let own = GatewayNet {
            gateway_ip: up.ext_ip,
            gateway_mac: net.gateway_mac,
            subnet: net.subnet,
            prefix_len: net.prefix_len,
            mtu: net.mtu,
            dns: false,
            lease_secs: 0,
            domain_name: String::new(),
        };
        if out.send_with(f.domain, |b| icmp::echo_reply(f.data, &own, b)) {
            self.stats.echo_replies += 1;
            return;
        }
        if refuse_tcp_or_udp(f, (IpAddr::V4(up.ext_ip), net.gateway_mac), out) {
            let kind = (IcmpType::DEST_UNREACHABLE, UnreachCode::PORT);
            self.icmp_error(f, &own, kind, 0, out);
        }
    }

    /// As [`Gateway::for_uplink_address`], for the uplink's IPv6 address
    /// (`--address6`) from a container of `net`.
    pub(super) fn for_uplink_address6(
        &mut self,
        f: Inbound<'_>,
        net: &GatewayNet6,
        out: &mut Actions,
    ) {
        let Some(v6) = self.cfg.packet.and_then(|u| u.v6) else {
            return;
        };
        let own = GatewayNet6 {
            gateway: v6.ext_ip,
            link_local: net.link_local,
            gateway_mac: net.gateway_mac,
            subnet: net.subnet,
            mtu: net.mtu,
            dns: false,
            router: false,
            lease_secs: 0,
            autonomous: false,
            domain_name: String::new(),
        };
        if out.send_with(f.domain, |b| icmp6::echo_reply(f.data, &own, b)) {
            self.stats.echo_replies += 1;
            return;
        }
        if refuse_tcp_or_udp(f, (IpAddr::V6(v6.ext_ip), net.gateway_mac), out) {
            let kind = (Icmpv6Type::DEST_UNREACHABLE, Unreach6Code::PORT);
            self.icmp6_error(f, &own, kind, 0, out);
        }
    }
}

/// Refuses a TCP segment to `ext` in `f` with an RST from `ext` (framed from `mac`);
/// true when it is UDP to `ext` instead, which the caller answers with port
/// unreachable in its family.
fn refuse_tcp_or_udp(f: Inbound<'_>, (ext, mac): (IpAddr, MacAddr), out: &mut Actions) -> bool {
    let Some(r) = Refused::parse(f.data).filter(|r| r.dst == ext) else {
        return false;
    };
    match r.proto {
        NextHeader::TCP => {
            out.send_with(f.domain, |b| tcp_reset(&r, mac, b));
            false
        }
        NextHeader::UDP => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Instant;

    use super::*;
    use crate::gateway::action::Action;
    use crate::gateway::config::{PacketUplink, PacketUplink6, UplinkMode};
    use crate::gateway::{GatewayConfig, Lease, Net4, Net6, NetConfig, NetDns};
    use crate::port::Punt;
    use crate::wire::tcp::TcpFlags;
    use crate::wire::{EtherType, EthernetFrame, Ipv4Packet, Ipv6Cidr, Ipv6Packet, TcpPacket};

    const GW_MAC: MacAddr = MacAddr([2, 0x42, 10, 1, 0, 1]);
    const CTR_MAC: MacAddr = MacAddr([2, 0x42, 10, 1, 0, 2]);
    const CTR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const CTR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
    const EXT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);

    fn gateway() -> Gateway {
        let mut g = Gateway::default();
        let mut leases = HashMap::new();
        let lease = Lease {
            mac: CTR_MAC,
            v4: Some(CTR),
            v6: Some(CTR6),
        };
        leases.insert((0, 5), lease);
        g.configure(GatewayConfig {
            nets: vec![Some(NetConfig {
                name: "n".into(),
                gateway_mac: GW_MAC,
                v4: Some(Net4::of(Ipv4Addr::new(10, 1, 0, 1), 24)),
                v6: Some(Net6::of(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1), 64)),
                mtu: 1500,
                internal: false,
                masquerade: true,
                dns: NetDns::Off,
                host_loopback: false,
                slaac: true,
            })],
            leases,
            uplink: UplinkMode::Packet,
            packet: Some(PacketUplink {
                ext_ip: EXT,
                ext_mac: MacAddr::from_ipv4(EXT),
                subnet: Ipv4Addr::new(198, 51, 100, 0),
                prefix_len: 24,
                next_hop: None,
                mtu: 1500,
                v6: Some(PacketUplink6 {
                    ext_ip: EXT6,
                    prefix: Ipv6Cidr::new(EXT6, 64).network(),
                    next_hop: None,
                }),
            }),
            ..GatewayConfig::default()
        });
        g
    }

    /// A frame from the container to the uplink's address (of `dst`'s family)
    /// carrying `proto` and `upper`, punted as the workers punt it.
    fn to_uplink(dst: IpAddr, proto: u8, upper: &[u8]) -> Vec<u8> {
        let (src, ty) = match dst {
            IpAddr::V4(_) => (IpAddr::V4(CTR), EtherType::IPV4),
            IpAddr::V6(_) => (IpAddr::V6(CTR6), EtherType::IPV6),
        };
        let mut f = Vec::new();
        crate::gateway::eth_header(&mut f, GW_MAC, CTR_MAC, ty);
        assert!(crate::gateway::ip_header(
            &mut f,
            (src, dst),
            proto,
            upper.len()
        ));
        f.extend_from_slice(upper);
        f
    }

    fn answer(g: &mut Gateway, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Actions::default();
        let f = Inbound {
            domain: 0,
            port: 5,
            punt: Punt::UplinkAddress,
            data: frame,
            now: Instant::now(),
            host: None,
        };
        g.frame(f, &mut out);
        let mut sent = Vec::new();
        while let Some(a) = out.pop() {
            if let Action::Send { frame, len, .. } = a {
                sent.push(frame[..len].to_vec());
            }
        }
        sent
    }

    fn syn(src: IpAddr, dst: IpAddr) -> [u8; 20] {
        let mut t = [0u8; 20];
        let mut seg = TcpPacket::new_unchecked(&mut t[..]);
        seg.set_src_port(40000);
        seg.set_dst_port(9);
        seg.set_seq(1000);
        seg.set_header_len(20);
        seg.set_flags(TcpFlags::SYN);
        seg.fill_checksum_ip(src, dst);
        t
    }

    /// The answer's MACs, addresses and upper layer (protocol, bytes).
    fn parts(frame: &[u8]) -> (MacAddr, MacAddr, IpAddr, IpAddr, u8, Vec<u8>) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let (d, s) = (eth.dst(), eth.src());
        if eth.ethertype() == EtherType::IPV4 {
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let p = u8::from(ip.protocol());
            (
                d,
                s,
                ip.src().into(),
                ip.dst().into(),
                p,
                ip.payload().to_vec(),
            )
        } else {
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
            let p = ip.next_header();
            (
                d,
                s,
                ip.src().into(),
                ip.dst().into(),
                p,
                ip.payload().to_vec(),
            )
        }
    }

    #[test]
    fn the_uplink_address_answers_a_container_as_its_owner_in_both_families() {
        let mut g = gateway();
        for (ext, ctr) in [
            (IpAddr::V4(EXT), IpAddr::V4(CTR)),
            (IpAddr::V6(EXT6), IpAddr::V6(CTR6)),
        ] {
            let v4 = ext.is_ipv4();
            // A closed TCP port: an RST from the uplink's address, acking the SYN.
            let rst = answer(&mut g, &to_uplink(ext, NextHeader::TCP, &syn(ctr, ext)));
            assert_eq!(rst.len(), 1, "{ext}");
            let (d, s, src, dst, p, up) = parts(&rst[0]);
            assert_eq!(
                (d, s, src, dst, p),
                (CTR_MAC, GW_MAC, ext, ctr, NextHeader::TCP)
            );
            let t = TcpPacket::new_checked(&up[..]).unwrap();
            assert!(t.rst() && t.ack_flag() && t.ack() == 1001, "{ext}");
            assert_eq!((t.src_port(), t.dst_port()), (9, 40000));
            // UDP: port unreachable from it, quoting the datagram.
            let udp = [0x13, 0x88, 0, 53, 0, 8, 0, 0];
            let err = answer(&mut g, &to_uplink(ext, NextHeader::UDP, &udp));
            assert_eq!(err.len(), 1, "{ext}");
            let (d, s, src, dst, _, up) = parts(&err[0]);
            assert_eq!((d, s, src, dst), (CTR_MAC, GW_MAC, ext, ctr));
            let want = if v4 { [3, 3] } else { [1, 4] };
            assert_eq!(up[..2], want, "port unreachable");
            // Ping: an echo reply from it.
            let (proto, req) = if v4 {
                (1, vec![8, 0, 0xf7, 0xf8, 0, 7, 0, 0])
            } else {
                let mut m = vec![128, 0, 0, 0, 0, 7, 0, 1];
                let mut f = to_uplink(ext, 58, &m);
                let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
                let (a, b) = (ip.src(), ip.dst());
                crate::wire::Icmpv6Packet::new_unchecked(&mut f[54..]).fill_checksum(&a, &b);
                m.copy_from_slice(&f[54..]);
                (58, m)
            };
            let rep = answer(&mut g, &to_uplink(ext, proto, &req));
            assert_eq!(rep.len(), 1, "{ext}");
            let (d, s, src, dst, _, up) = parts(&rep[0]);
            assert_eq!((d, s, src, dst), (CTR_MAC, GW_MAC, ext, ctr));
            assert_eq!(up[0], if v4 { 0 } else { 129 }, "echo reply");
        }
        assert_eq!(g.stats.echo_replies, 2);
    }
}
