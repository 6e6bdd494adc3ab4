//! The pipeline with a fixed configuration (access ports, a trunk, port security, a
//! network without inter-container traffic, the packet uplink with NAT and a published
//! port): arbitrary frames in on arbitrary ports, batch by batch, every selected frame
//! sent to a memory port and cut as a port without offloads would.
//!
//! Input: records (see the crate docs). Tag bits 0-2: the port; bit 3: the body starts
//! with a 10-byte virtio-net header; bit 4: the clock moves on 100 s before the frame;
//! bit 5: the batch goes through after this frame.
#![no_main]

use dataplane::port::VnetHdr;
use libfuzzer_sys::fuzz_target;
use vswitch_fuzz::records;
use vswitch_fuzz::rigs::pipeline::{IN_PORTS, Rig};

fuzz_target!(|data: &[u8]| {
    let mut rig = Rig::new();
    let mut pending: Option<u16> = None;
    for (tag, body) in records(data) {
        let port = IN_PORTS[usize::from(tag & 7)];
        if pending.is_some_and(|p| p != port) || tag & 0x10 != 0 {
            if let Some(p) = pending.take() {
                rig.run(p);
            }
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
                rig.run(p);
            }
            if !rig.push(frame, vnet) {
                continue;
            }
        }
        pending = Some(port);
        if tag & 0x20 != 0 {
            rig.run(port);
            pending = None;
        }
    }
    if let Some(p) = pending {
        rig.run(p);
    }
});
