//! The DNS server's upstream side: a client's query is forwarded, then any message
//! comes back from the resolver it went to (its id set to the forwarded one, so it is
//! taken as the answer). Whatever the answer holds, the client's reply carries the
//! client's id, and nothing stays in flight after a reply.
#![no_main]

use dataplane::dns::{Action, ClientRef, Transport};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use vswitch_fuzz::rigs::{dns_server, names};

/// `example.com. IN A`, id 0x4242, RD, with an EDNS OPT record (4096 bytes).
const QUERY: &[u8] = &[
    0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3,
    b'c', b'o', b'm', 0, 0, 1, 0, 1, 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, answer)) = data.split_first() else {
        return;
    };
    let client_tr = if mode & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let names = names();
    let mut server = dns_server();
    let now = Instant::now();
    let Action::Forward { upstream, id, .. } =
        server.query(&names, QUERY, client_tr, ClientRef(9), now)
    else {
        panic!("the fixed query is forwarded");
    };
    let mut msg = answer.to_vec();
    if let Some(head) = msg.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
    // Bit 1: the answer comes from the other resolver (it must be ignored).
    let from = if mode & 2 == 0 {
        upstream
    } else {
        upstream ^ 1
    };
    match server.upstream_reply(from, &msg, now) {
        Some(Action::Reply { bytes, client, .. }) => {
            assert_eq!(client, ClientRef(9));
            assert_eq!(bytes.get(..2), Some(&[0x42, 0x42][..]));
            if client_tr == Transport::Udp {
                assert!(bytes.len() <= 1232, "UDP reply of {} bytes", bytes.len());
            }
            assert_eq!(server.in_flight(), 0);
        }
        Some(Action::Forward { upstream: next, .. }) => {
            assert!(next < 2);
            let _ = server.upstream_failed(next, id, now);
        }
        Some(Action::Nothing) | None => {}
    }
});
