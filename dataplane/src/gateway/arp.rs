//! ARP for the gateway address (RFC 826, RFC 5227 probes).

use std::net::Ipv4Addr;

use super::{GatewayNet, eth_header};
use crate::wire::arp::{ArpOp, PACKET_LEN};
use crate::wire::{ArpPacket, EtherType, EthernetFrame, MacAddr};

/// Answers an ARP request for the gateway's address: writes the reply frame into `out`
/// and returns true. Requests for other addresses, replies, and malformed packets are
/// not answered. A probe (sender 0.0.0.0) for the gateway address is answered too, so
/// a client testing it learns it is taken.
pub fn reply(frame: &[u8], net: &GatewayNet, out: &mut Vec<u8>) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.ethertype() != EtherType::ARP {
        return false;
    }
    let Ok(req) = ArpPacket::new_checked(eth.payload()) else {
        return false;
    };
    if req.operation() != ArpOp::REQUEST || req.target_ip() != net.gateway_ip {
        return false;
    }
    let sha = req.sender_mac();
    if !sha.is_unicast() || sha.is_zero() {
        return false;
    }
    eth_header(out, sha, net.gateway_mac, EtherType::ARP);
    let at = out.len();
    out.resize(at + PACKET_LEN, 0);
    let Some(b) = out.get_mut(at..) else {
        return false;
    };
    let mut a = ArpPacket::new_unchecked(b);
    a.init();
    a.set_operation(ArpOp::REPLY);
    a.set_sender_mac(net.gateway_mac);
    a.set_sender_ip(net.gateway_ip);
    a.set_target_mac(sha);
    a.set_target_ip(req.sender_ip());
    true
}

/// Builds a broadcast who-has `target` from `sender_mac`/`sender_ip` into `out`.
pub fn request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target: Ipv4Addr, out: &mut Vec<u8>) {
    eth_header(out, MacAddr::BROADCAST, sender_mac, EtherType::ARP);
    let at = out.len();
    out.resize(at + PACKET_LEN, 0);
    if let Some(b) = out.get_mut(at..) {
        let mut a = ArpPacket::new_unchecked(b);
        a.init();
        a.set_operation(ArpOp::REQUEST);
        a.set_sender_mac(sender_mac);
        a.set_sender_ip(sender_ip);
        a.set_target_mac(MacAddr::ZERO);
        a.set_target_ip(target);
    }
}

/// The (sender IP, sender MAC) an ARP packet announces, for learning neighbours.
pub fn sender(frame: &[u8]) -> Option<(Ipv4Addr, MacAddr)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::ARP {
        return None;
    }
    let a = ArpPacket::new_checked(eth.payload()).ok()?;
    Some((a.sender_ip(), a.sender_mac()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> GatewayNet {
        GatewayNet {
            gateway_ip: Ipv4Addr::new(172, 17, 0, 1),
            gateway_mac: MacAddr([0x02, 0x42, 0xac, 0x11, 0, 1]),
            subnet: Ipv4Addr::new(172, 17, 0, 0),
            prefix_len: 16,
            mtu: 1500,
            dns: true,
            lease_secs: 3600,
            domain_name: String::new(),
        }
    }

    // A Linux who-has 172.17.0.1 tell 172.17.0.2, padded to 60 bytes as on the wire.
    const WHO_HAS: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0xac, 0x11,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac, 0x11, 0x00, 0x01, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn answers_who_has_gateway() {
        let mut out = Vec::new();
        assert!(reply(&WHO_HAS, &net(), &mut out));
        assert_eq!(out.len(), 42);
        let e = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(e.dst(), MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]));
        assert_eq!(e.src(), net().gateway_mac);
        let a = ArpPacket::new_checked(e.payload()).unwrap();
        assert_eq!(a.operation(), ArpOp::REPLY);
        assert_eq!(a.sender_ip(), net().gateway_ip);
        assert_eq!(a.sender_mac(), net().gateway_mac);
        assert_eq!(a.target_ip(), Ipv4Addr::new(172, 17, 0, 2));
        // etherparse agrees.
        let p = etherparse::ArpPacketSlice::from_slice(&out[14..]).unwrap();
        assert_eq!(p.operation(), etherparse::ArpOperation::REPLY);
    }

    #[test]
    fn ignores_others_and_garbage() {
        let mut out = Vec::new();
        let mut other = WHO_HAS;
        other[41] = 9; // who-has 172.17.0.9
        assert!(!reply(&other, &net(), &mut out));
        let mut rep = WHO_HAS;
        rep[21] = 2; // a reply
        assert!(!reply(&rep, &net(), &mut out));
        assert!(!reply(&WHO_HAS[..30], &net(), &mut out));
        let mut mcast = WHO_HAS;
        mcast[22] = 0x01; // multicast sender hardware address
        assert!(!reply(&mcast, &net(), &mut out));
        assert_eq!(
            sender(&WHO_HAS),
            Some((
                Ipv4Addr::new(172, 17, 0, 2),
                MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2])
            ))
        );
    }

    #[test]
    fn probe_for_gateway_is_answered() {
        let mut probe = WHO_HAS;
        probe[28..32].copy_from_slice(&[0, 0, 0, 0]);
        let mut out = Vec::new();
        assert!(reply(&probe, &net(), &mut out));
    }

    #[test]
    fn builds_requests() {
        let mut out = Vec::new();
        request(
            net().gateway_mac,
            net().gateway_ip,
            Ipv4Addr::new(172, 17, 0, 2),
            &mut out,
        );
        let e = EthernetFrame::new_checked(&out[..]).unwrap();
        assert!(e.dst().is_broadcast());
        let a = ArpPacket::new_checked(e.payload()).unwrap();
        assert_eq!(
            (a.operation(), a.target_ip()),
            (ArpOp::REQUEST, Ipv4Addr::new(172, 17, 0, 2))
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let mut out = Vec::new();
            let _ = reply(&b, &net(), &mut out);
            let _ = sender(&b);
        }
    }
}
