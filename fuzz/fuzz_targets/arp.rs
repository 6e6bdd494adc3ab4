//! ARP handling of the gateway: any frame in; a reply, when one comes out, is a
//! well-formed ARP reply from the gateway to the asker.
#![no_main]

use dataplane::gateway::arp;
use dataplane::wire::{ArpPacket, EtherType, EthernetFrame};
use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::rigs::{GW, gateway_net};

fuzz_target!(|data: &[u8]| {
    let net = gateway_net();
    let mut out = Vec::new();
    let _ = arp::sender(data);
    if arp::reply(data, &net, &mut out) {
        let e = EthernetFrame::new_checked(&out[..]).expect("reply is an Ethernet frame");
        assert_eq!(e.ethertype(), EtherType::ARP);
        let a = ArpPacket::new_checked(e.payload()).expect("reply is ARP");
        assert_eq!(a.sender_ip(), GW);
        assert_eq!(e.src(), net.gateway_mac);
        assert!(e.dst().is_unicast());
    }
});
