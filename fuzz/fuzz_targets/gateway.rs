//! The gateway (`dataplane/src/gateway/`) as the gateway thread runs it:
//! frames the bridge hands over (ARP, ICMP, DHCP, DNS over UDP, punted routed frames,
//! frames of the packet uplink's segment) for the network 10.1.0.0/24 with names,
//! leases and a packet uplink; no upstream resolvers, so nothing leaves the process.
//! Every frame the gateway sends is an Ethernet frame from one of its own MACs.
//!
//! Input: records (see the crate docs). Tag bits 0-1: the port it came in on (2, 3, 5,
//! 1); bits 2-3: why it was punted (none, time exceeded, too big, next hop
//! unresolved); bit 4: it comes from the uplink's segment; bit 5: the timers run first.
#![no_main]

use dataplane::bridge::CounterTable;
use dataplane::bridge::fdb::Fdb;
use dataplane::config::{SnapshotCell, UPLINK_DOMAIN};
use dataplane::gateway::{
    GatewayConfig, GatewayIo, Lease, Net4, Net6, NetConfig, NetDns, PacketUplink, PacketUplink6,
    UplinkMode,
};
use dataplane::nat::Nat;
use dataplane::port::ring::{RingFrame, Wake, ring_pair};
use dataplane::port::{Batch, Port, Punt, SUPER_FRAME_CAP};
use dataplane::runtime::{GatewayCtx, GatewayHandler};
use dataplane::uplink::packet::Neighbours;
use dataplane::wire::{EthernetFrame, MacAddr};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_fuzz::rigs::pipeline::{EXT, snapshot};
use vswitch_fuzz::rigs::{GW, LEASED, names};

struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

fn config() -> GatewayConfig {
    let net = NetConfig {
        name: "a".into(),
        gateway_mac: MacAddr::from_ipv4(GW),
        v4: Some(Net4::of(GW, 24)),
        // Dual stack, so the IPv6 arm (NDP, DHCPv6, echo, errors, DNS) is fuzzed too.
        v6: Some(Net6::of(
            "fd00:1::1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST),
            64,
        )),
        mtu: 1500,
        internal: false,
        masquerade: true,
        dns: NetDns::Names,
        // The gateway stands for 127.0.0.1, never for the machine's own address.
        host_loopback: true,
        slaac: true,
    };
    let mut leases = HashMap::new();
    let lease = Lease {
        mac: MacAddr::from_ipv4(LEASED),
        v4: Some(LEASED),
        v6: Some(std::net::Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2)),
    };
    leases.insert((0, 2), lease);
    GatewayConfig {
        nets: vec![Some(net)],
        leases,
        uplink: UplinkMode::Packet,
        names: vec![Some(Arc::new(names()))],
        packet: Some(PacketUplink {
            ext_ip: EXT,
            ext_mac: MacAddr::from_ipv4(EXT),
            subnet: Ipv4Addr::new(198, 51, 100, 0),
            prefix_len: 24,
            next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
            mtu: 1500,
            // IPv6 on the segment too, so the NAT66 punts (too big, hop limit, an
            // unresolved neighbour) and the segment's NDP and echo are fuzzed.
            v6: Some(PacketUplink6 {
                ext_ip: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2),
                prefix: dataplane::wire::Ipv6Cidr::new(
                    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0),
                    64,
                ),
                next_hop: Some(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1)),
            }),
        }),
        upstreams: Vec::new(),
    }
}

thread_local! {
    static BATCH: std::cell::RefCell<Batch> = std::cell::RefCell::new(Batch::new(64, SUPER_FRAME_CAP));
}

const PORTS: [u16; 4] = [2, 3, 5, 1];
const PUNTS: [Punt; 5] = [
    Punt::None,
    Punt::TimeExceeded,
    Punt::TooBig,
    Punt::Unresolved,
    Punt::UplinkAddress,
];

/// The gateway thread's counters: one table for every run (it is large).
static COUNTERS: std::sync::OnceLock<CounterTable> = std::sync::OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(poll) = mio::Poll::new() else { return };
    let (mut port, end) = ring_pair(Arc::new(NoWake), Arc::new(NoWake));
    let mut ends = [end];
    let fdb = Fdb::new(256);
    let cell = SnapshotCell::new(snapshot());
    let start = Instant::now();
    let counters = COUNTERS.get_or_init(CounterTable::default);
    let mut gw = GatewayIo::default();
    gw.configure(config());
    gw.set_packet_state(Arc::new(Nat::new(256)), Arc::new(Neighbours::default()));
    let own = [MacAddr::from_ipv4(GW), MacAddr::from_ipv4(EXT)];
    let mut later = 0;
    for (tag, body) in vswitch_fuzz::records(data) {
        let mut ctx = GatewayCtx::new(&mut ends, poll.registry(), &fdb, &cell, start, counters);
        if tag & 0x20 != 0 {
            later += 30;
            let _ = gw.tick(&mut ctx, start + Duration::from_secs(later));
        }
        let uplink = tag & 0x10 != 0;
        let mut f = RingFrame::whole(body.to_vec());
        f.domain = if uplink { UPLINK_DOMAIN.0 } else { 0 };
        f.port = PORTS[usize::from(tag & 3)];
        // Bits 2, 3 and 6: the punt (past the table, none).
        let punt = usize::from((tag >> 2) & 3 | (tag >> 4) & 4);
        f.punt = PUNTS.get(punt).copied().unwrap_or(Punt::None);
        gw.frame(&mut ctx, f);
        BATCH.with_borrow_mut(|b| {
            while port.recv(b).is_ok_and(|n| n > 0) {
                for f in b.frames() {
                    let e = EthernetFrame::new_checked(f.data())
                        .expect("the gateway sent a short frame");
                    assert!(own.contains(&e.src()), "the gateway sent from {}", e.src());
                }
                b.clear();
            }
        });
    }
});
