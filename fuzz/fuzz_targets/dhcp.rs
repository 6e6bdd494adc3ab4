//! The DHCP server: any frame in, as if from a port IPAM gave 10.1.0.2 (or nothing,
//! by the client MAC's last bit). What comes out is a well-formed IPv4/UDP frame from
//! the gateway, and an offer or ack names only the reserved address.
#![no_main]

use dataplane::gateway::dhcp::{self, Outcome};
use dataplane::wire::dhcp::{DhcpPacket, Op};
use dataplane::wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket};
use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::rigs::{GW, LEASED, gateway_net};

fuzz_target!(|data: &[u8]| {
    // The message view over raw bytes: every accessor, every option.
    if let Ok(d) = DhcpPacket::new_checked(data) {
        std::hint::black_box((d.op(), d.xid(), d.flags(), d.ciaddr(), d.yiaddr()));
        std::hint::black_box((d.siaddr(), d.giaddr(), d.chaddr(), d.msg_type()));
        for (code, value) in d.options() {
            std::hint::black_box((code, value));
        }
    }
    let net = gateway_net();
    let mut out = Vec::new();
    let outcome = dhcp::handle(
        data,
        &net,
        |mac| (mac.0[5] & 1 == 0).then_some(LEASED),
        &mut out,
    );
    match outcome {
        Outcome::Offer(a) | Outcome::Ack(a) => assert_eq!(a, LEASED),
        _ => {}
    }
    if outcome.replied() {
        let e = EthernetFrame::new_checked(&out[..]).expect("reply is an Ethernet frame");
        assert_eq!(e.ethertype(), EtherType::IPV4);
        let ip = Ipv4Packet::new_checked(e.payload()).expect("reply is IPv4");
        assert_eq!(ip.src(), GW);
        assert_eq!(ip.protocol(), IpProtocol::Udp);
        assert!(ip.verify_checksum());
        let u = UdpPacket::new_checked(ip.payload()).expect("reply is UDP");
        assert_eq!(u.src_port(), 67);
        let d = DhcpPacket::new_checked(u.payload()).expect("reply is a DHCP message");
        assert_eq!(d.op(), Op::BOOTREPLY);
        assert!(d.msg_type().is_some());
    }
});
