//! The pipeline with a fixed configuration (access ports, a trunk, port security, a
//! network without inter-container traffic, the packet uplink with NAT and a published
//! port): arbitrary frames in on arbitrary ports, batch by batch, every selected frame
//! sent to a memory port and cut as a port without offloads would.
//!
//! Input: records (see the crate docs). Tag bits 0-2: the port; bit 3: the body starts
//! with a 10-byte virtio-net header; bit 4: the clock moves on 100 s before the frame;
//! bit 5: the batch goes through after this frame.
//!
//! Checked on every batch: access ports send untagged frames, the trunk only its
//! VLANs (10, 20) or untagged, the ports of network c (no inter-container traffic) never
//! get each other's frames, and no frame is longer than a buffer holds.
#![no_main]

use dataplane::port::VnetHdr;
use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::records;
use vswitch_fuzz::rigs::pipeline::{IN_PORTS, Rig};

fn check(in_port: u16, sent: &[Vec<Vec<u8>>]) {
    for (port, frames) in sent.iter().enumerate() {
        for f in frames {
            assert!(f.len() <= 9216 + 8, "port {port} sent {} bytes", f.len());
            let tag = (f.get(12..14) == Some(&[0x81, 0x00][..])).then(|| {
                f.get(14..16)
                    .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]) & 0xfff)
            });
            match port {
                5 => assert!(
                    matches!(tag, None | Some(10) | Some(20)),
                    "trunk sent tag {tag:?}"
                ),
                2..=7 => assert_eq!(tag, None, "access port {port} sent a tagged frame"),
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
