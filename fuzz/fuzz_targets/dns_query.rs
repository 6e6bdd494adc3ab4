//! The DNS server's query side: any message from a client (first byte: UDP or TCP),
//! against a network's name table. A reply fits the client's limit on UDP and carries
//! the query's id; a forwarded query goes to an existing upstream.
#![no_main]

use dataplane::dns::{Action, ClientRef, Transport};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use vswitch_fuzz::rigs::{dns_server, names};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, msg)) = data.split_first() else {
        return;
    };
    let transport = if mode & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let names = names();
    let mut server = dns_server();
    let now = Instant::now();
    match server.query(&names, msg, transport, ClientRef(1), now) {
        Action::Reply { bytes, .. } => {
            assert!(bytes.len() >= 12);
            assert_eq!(bytes.get(..2), msg.get(..2));
            if transport == Transport::Udp {
                assert!(bytes.len() <= 1232, "UDP reply of {} bytes", bytes.len());
            }
        }
        Action::Forward {
            upstream,
            bytes,
            id,
            ..
        } => {
            assert!(upstream < 2);
            assert_eq!(bytes.get(..2), Some(&id.to_be_bytes()[..]));
            // The query timing out moves it to the next resolver, then fails it.
            let mut acts = Vec::new();
            server.poll(now + std::time::Duration::from_secs(60), &mut acts);
            server.poll(now + std::time::Duration::from_secs(120), &mut acts);
        }
        Action::Nothing => {}
    }
});
