//! The pipeline with a fixed configuration (access ports, a trunk, port security, a
//! network without inter-container traffic, the packet uplink with NAT and a published
//! port): arbitrary frames in on arbitrary ports, batch by batch, every selected frame
//! sent to a memory port and cut as a port without offloads would.
//!
//! Input: records (see the crate docs). Tag bits 0-2: the port; bit 3: the body starts
//! with a 10-byte virtio-net header; bit 4: the clock moves on 100 s before the frame;
//! bit 5: the batch goes through after this frame.
//!
//! Checked on every batch: access ports send no tagged frame at all (neither 802.1Q,
//! 0x8100, nor 802.1ad, 0x88a8), the trunk only its VLANs (10, 20) or untagged and never
//! a second tag behind its own, the ports of network c (no inter-container traffic)
//! never get each other's frames, and no frame is longer than a buffer holds.
#![no_main]

use dataplane::port::VnetHdr;
use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::records;
use vswitch_fuzz::rigs::pipeline::{IN_PORTS, Rig};

/// The tag protocol identifiers a switch reads a VLAN from.
const TPIDS: [[u8; 2]; 2] = [[0x81, 0x00], [0x88, 0xa8]];

fn is_tag(ethertype: Option<&[u8]>) -> bool {
    ethertype.is_some_and(|t| TPIDS.iter().any(|p| p[..] == *t))
}

fn check(in_port: u16, sent: &[Vec<Vec<u8>>]) {
    for (port, frames) in sent.iter().enumerate() {
        for f in frames {
            assert!(f.len() <= 9216 + 8, "port {port} sent {} bytes", f.len());
            let outer = f.get(12..14);
            // The trunk's own 802.1Q tag, and the EtherType behind it.
            let (vid, inner) = match outer {
                Some([0x81, 0x00]) => (
                    f.get(14..16)
                        .map(|t| u16::from_be_bytes([t[0], t[1]]) & 0xfff),
                    f.get(16..18),
                ),
                _ => (None, outer),
            };
            match port {
                5 => {
                    assert!(
                        matches!(vid, None | Some(10) | Some(20)),
                        "trunk sent tag {vid:?}"
                    );
                    assert!(
                        !is_tag(inner),
                        "trunk sent a frame tagged twice: {inner:x?}"
                    );
                }
                2..=7 => assert!(
                    !is_tag(outer),
                    "access port {port} sent a tagged frame ({outer:x?})"
                ),
                _ => {}
            }
            assert!(
                !matches!((in_port, port), (6, 7) | (7, 6)),
                "network c: port {in_port} reached port {port}"
            );
        }
    }
}

fn run(rig: &mut Rig, port: u16) {
    let sent = rig.run(port);
    check(port, &sent);
}

fuzz_target!(|data: &[u8]| {
    let mut rig = Rig::new();
    let mut pending: Option<u16> = None;
    for (tag, body) in records(data) {
        let port = IN_PORTS[usize::from(tag & 7)];
        if (pending.is_some_and(|p| p != port) || tag & 0x10 != 0)
            && let Some(p) = pending.take()
        {
            run(&mut rig, p);
        }
        if tag & 0x10 != 0 {
            rig.now += 100;
        }
        let (vnet, frame) = match (tag & 8 != 0, VnetHdr::parse(body)) {
            (true, Some(v)) => (v, body.get(VnetHdr::LEN..).unwrap_or(&[])),
            _ => (VnetHdr::default(), body),
        };
        if !rig.push(frame, vnet) {
            if let Some(p) = pending.take() {
                run(&mut rig, p);
            }
            if !rig.push(frame, vnet) {
                continue;
            }
        }
        pending = Some(port);
        if tag & 0x20 != 0 {
            run(&mut rig, port);
            pending = None;
        }
    }
    if let Some(p) = pending {
        run(&mut rig, p);
    }
});
