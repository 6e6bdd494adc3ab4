//! Routing netlink for the kernel path (veth pairs, clsact qdiscs, u32 redirects).
//! (Types only, until the requests land.)

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::MacAddr;

/// A u32 filter on `ifindex`'s ingress at `prio` for EtherType `protocol`, matching
/// every key, redirecting to `to`'s egress.
pub struct Redirect<'a> {
    pub ifindex: u32,
    pub prio: u16,
    pub protocol: u16,
    pub keys: &'a [U32Key],
    pub to: u32,
}

/// What one ingress priority's redirects counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrioCounters {
    pub prio: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// One u32 key: the big-endian word at `off` from the network header, masked, equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct U32Key {
    pub off: i32,
    pub mask: u32,
    pub val: u32,
}

impl U32Key {
    pub fn macs(dst: MacAddr, src: MacAddr) -> [U32Key; 3] {
        let (d, s) = (dst.0, src.0);
        let w = |b: [u8; 4]| u32::from_be_bytes(b);
        [
            U32Key { off: -14, mask: !0, val: w([d[0], d[1], d[2], d[3]]) },
            U32Key { off: -10, mask: !0, val: w([d[4], d[5], s[0], s[1]]) },
            U32Key { off: -6, mask: !0, val: w([s[2], s[3], s[4], s[5]]) },
        ]
    }
    pub fn ipv4_src(ip: Ipv4Addr) -> U32Key {
        U32Key { off: 12, mask: !0, val: u32::from(ip) }
    }
    pub fn ipv6_src(ip: Ipv6Addr) -> [U32Key; 4] {
        let o = ip.octets();
        let w = |i: usize| {
            u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
        };
        [0, 1, 2, 3].map(|i| U32Key { off: 8 + 4 * i as i32, mask: !0, val: w(i) })
    }
    pub fn ipv6_next_header(nh: u8) -> U32Key {
        U32Key { off: 4, mask: 0x0000_ff00, val: u32::from(nh) << 8 }
    }
}
