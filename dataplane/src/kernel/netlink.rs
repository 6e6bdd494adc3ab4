//! Routing netlink for the kernel path (veth pairs, clsact qdiscs, u32 redirects).
//!
//! What the `ip` and `tc` binaries would send, built here field by field:
//!
//! ```text
//! ip link add HOST mtu MTU type veth peer name PEER address MAC mtu MTU netns NS
//! ip link del HOST
//! tc qdisc del dev IF clsact; tc qdisc add dev IF clsact
//! tc filter add dev IF ingress prio P protocol PROTO u32 match u32 VAL MASK at OFF ... \
//!     action mirred egress redirect dev TO
//! tc filter del dev IF ingress prio P protocol PROTO
//! tc -s filter show dev IF ingress        (the redirect actions' counters)
//! ```
//!
//! Netlink fields are in native byte order; u32 keys and the protocol in `tcm_info`
//! are in network order, as the kernel reads them. Replies are parsed with bounds
//! checks: a malformed one is an error, never a panic.

use crate::port::tap::check_ifname;
#[cfg(test)]
use crate::rtnl::NLA_F_NESTED;
use crate::rtnl::{
    Msg, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR, netlink_socket,
};
use crate::wire::MacAddr;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Every frame, whatever its EtherType (`protocol all`).
pub const ETH_P_ALL: u16 = 0x0003;
/// IPv4 frames.
pub const ETH_P_IP: u16 = 0x0800;
/// IPv6 frames.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// ARP frames.
pub const ETH_P_ARP: u16 = 0x0806;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_DONE: u16 = 3;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP: u16 = 0x300;
/// In an error reply: extended-ack attributes follow the echoed header.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;

// linux/if_link.h, linux/veth.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
/// struct ifinfomsg: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;

// linux/pkt_sched.h, linux/rtnetlink.h
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const TC_H_INGRESS_PARENT: u32 = 0xFFFF_FFF2;
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
/// struct tcmsg: family, pad, pad, ifindex, handle, parent, info.
const TCMSG_LEN: usize = 20;

// linux/pkt_cls.h, linux/tc_act/tc_mirred.h, linux/gen_stats.h
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TC_U32_TERMINAL: u8 = 1;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_ACT_STATS: u16 = 4;
const TCA_MIRRED_PARMS: u16 = 2;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;
const TCA_STATS_BASIC: u16 = 1;
const TCA_STATS_PKT64: u16 = 8;

/// Header offsets the u32 keys use, from the network header (the Ethernet header
/// precedes it: its destination MAC at -14, source MAC at -8).
const ETH_DST_AT: i32 = -14;
const IPV4_SRC_AT: i32 = 12;
const IPV6_SRC_AT: i32 = 8;
/// The IPv6 word holding payload length (2 bytes), next header and hop limit.
const IPV6_NEXT_HEADER_WORD_AT: i32 = 4;
/// The IPv4 word holding TTL, protocol and checksum.
const IPV4_PROTOCOL_WORD_AT: i32 = 8;
/// Where the transport header starts behind an IPv4 header without options.
const IPV4_PAYLOAD_AT: i32 = 20;
/// Where the transport header starts behind an IPv6 header without extensions.
const IPV6_PAYLOAD_AT: i32 = 40;

/// One u32 key: the 32-bit big-endian word at `off` bytes from the network header
/// (negative offsets reach the Ethernet header: the destination MAC starts at -14),
/// masked by `mask`, equal to `val` (both as the word reads, host-order integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct U32Key {
    pub off: i32,
    pub mask: u32,
    pub val: u32,
}

impl U32Key {
    /// The keys matching destination MAC `dst` and source MAC `src` (3 words: -14, -10, -6).
    pub fn macs(dst: MacAddr, src: MacAddr) -> [U32Key; 3] {
        let (d, s) = (dst.0, src.0);
        let word = |b: [u8; 4], off: i32| U32Key {
            off,
            mask: u32::MAX,
            val: u32::from_be_bytes(b),
        };
        [
            word([d[0], d[1], d[2], d[3]], ETH_DST_AT), // layout-ok: a MAC's bytes
            word([d[4], d[5], s[0], s[1]], ETH_DST_AT + 4), // layout-ok: a MAC's bytes
            word([s[2], s[3], s[4], s[5]], ETH_DST_AT + 8), // layout-ok: a MAC's bytes
        ]
    }

    /// The key matching IPv4 source `ip`.
    pub fn ipv4_src(ip: Ipv4Addr) -> U32Key {
        U32Key {
            off: IPV4_SRC_AT,
            mask: u32::MAX,
            val: u32::from(ip),
        }
    }

    /// The keys matching IPv6 source `ip` (4 words from offset 8).
    pub fn ipv6_src(ip: Ipv6Addr) -> [U32Key; 4] {
        let o = ip.octets();
        let word = |i: usize| {
            let b: [u8; 4] = o
                .get(i * 4..i * 4 + 4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default();
            U32Key {
                off: IPV6_SRC_AT + 4 * i as i32,
                mask: u32::MAX,
                val: u32::from_be_bytes(b),
            }
        };
        [word(0), word(1), word(2), word(3)]
    }

    /// The key matching IPv6 next header `nh` (byte 6 of the IPv6 header).
    pub fn ipv6_next_header(nh: u8) -> U32Key {
        U32Key {
            off: IPV6_NEXT_HEADER_WORD_AT,
            mask: 0x0000_ff00,
            val: u32::from(nh) << 8,
        }
    }

    /// The key matching an IPv4 header without options (IHL 5), so that what follows
    /// it sits at a fixed offset.
    pub fn ipv4_no_options() -> U32Key {
        U32Key {
            off: 0,
            mask: 0x0f00_0000,
            val: 0x0500_0000,
        }
    }

    /// The key matching IPv4 protocol `p` (byte 9).
    pub fn ipv4_protocol(p: u8) -> U32Key {
        U32Key {
            off: IPV4_PROTOCOL_WORD_AT,
            mask: 0x00ff_0000,
            val: u32::from(p) << 16,
        }
    }

    /// The key matching a transport header's source port (`dst`: its destination
    /// port) under `mask`, right behind an IPv4 header without options (`v6`: behind
    /// an IPv6 header without extension headers).
    pub fn l4_port(v6: bool, dst: bool, port: u16, mask: u16) -> U32Key {
        let shift = if dst { 0 } else { 16 };
        U32Key {
            off: if v6 { IPV6_PAYLOAD_AT } else { IPV4_PAYLOAD_AT },
            mask: u32::from(mask) << shift,
            val: u32::from(port & mask) << shift,
        }
    }
}

/// A u32 filter on `ifindex`'s ingress at priority `prio` for EtherType `protocol`
/// ([`ETH_P_ALL`] for every frame) matching all `keys` (none: every frame), whose action
/// is a mirred egress redirect to `to`.
#[derive(Clone, Copy, Debug)]
pub struct Redirect<'a> {
    pub ifindex: u32,
    pub prio: u16,
    pub protocol: u16,
    pub keys: &'a [U32Key],
    pub to: u32,
}

/// What the redirect actions of one ingress priority counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrioCounters {
    pub prio: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// struct ifinfomsg, all zero (AF_UNSPEC, no index: the name says which link).
const IFINFOMSG_ZERO: [u8; IFINFOMSG_LEN] = [0; IFINFOMSG_LEN];

/// struct tcmsg for `ifindex` (AF_UNSPEC).
fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> [u8; TCMSG_LEN] {
    let mut t = [0u8; TCMSG_LEN];
    let fields = [ifindex, handle, parent, info];
    for (chunk, v) in t.chunks_exact_mut(4).skip(1).zip(fields) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    t
}

/// `tcm_info` of a filter: its priority and its protocol (network order).
fn filter_info(prio: u16, protocol: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(protocol.to_be())
}

fn veth_request(
    seq: u32,
    host: &str,
    peer: &str,
    peer_ns: BorrowedFd<'_>,
    peer_mac: MacAddr,
    mtu: u32,
) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = Msg::new(RTM_NEWLINK, flags, seq);
    let ns = peer_ns.as_raw_fd() as u32;
    m.bytes(&IFINFOMSG_ZERO)
        .attr_str(IFLA_IFNAME, host)
        .attr(IFLA_MTU, &mtu.to_ne_bytes())
        .nest(IFLA_LINKINFO, |m| {
            m.attr_str(IFLA_INFO_KIND, "veth")
                .nest(IFLA_INFO_DATA, |m| {
                    m.nest(VETH_INFO_PEER, |m| {
                        m.bytes(&IFINFOMSG_ZERO)
                            .attr_str(IFLA_IFNAME, peer)
                            .attr(IFLA_MTU, &mtu.to_ne_bytes())
                            .attr(IFLA_ADDRESS, &peer_mac.0)
                            .attr(IFLA_NET_NS_FD, &ns.to_ne_bytes());
                    });
                });
        });
    m.finish()
}

fn del_link_request(seq: u32, name: &str) -> Vec<u8> {
    let mut m = Msg::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.bytes(&IFINFOMSG_ZERO).attr_str(IFLA_IFNAME, name);
    m.finish()
}

/// `tc qdisc add dev IF clsact` (RTM_NEWQDISC) or `tc qdisc del dev IF clsact`.
fn clsact_request(seq: u32, kind: u16, ifindex: u32) -> Vec<u8> {
    let flags = match kind {
        RTM_NEWQDISC => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        _ => NLM_F_REQUEST | NLM_F_ACK,
    };
    let mut m = Msg::new(kind, flags, seq);
    m.bytes(&tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0))
        .attr_str(TCA_KIND, "clsact");
    m.finish()
}

/// struct tc_u32_sel (16 bytes) and its keys (16 each); no keys: one that matches
/// every frame (as `tc ... u32 match u32 0 0` sends).
fn u32_sel(keys: &[U32Key]) -> Vec<u8> {
    const MATCH_ALL: [U32Key; 1] = [U32Key {
        off: 0,
        mask: 0,
        val: 0,
    }];
    let keys = if keys.is_empty() {
        &MATCH_ALL[..]
    } else {
        keys
    };
    let mut s = Vec::with_capacity(16 + 16 * keys.len());
    // flags, offshift, nkeys, pad, offmask, off, offoff, hoff, pad, hmask
    s.extend_from_slice(&[TC_U32_TERMINAL, 0, keys.len().min(128) as u8, 0]);
    s.extend_from_slice(&[0; 12]);
    for k in keys.iter().take(128) {
        s.extend_from_slice(&k.mask.to_be_bytes());
        s.extend_from_slice(&k.val.to_be_bytes());
        s.extend_from_slice(&k.off.to_ne_bytes());
        s.extend_from_slice(&0i32.to_ne_bytes()); // offmask
    }
    s
}

/// struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex.
fn mirred_parms(to: u32) -> [u8; 28] {
    let mut p = [0u8; 28];
    let fields = [0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, to as i32];
    for (chunk, v) in p.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    p
}

fn redirect_request(seq: u32, r: &Redirect<'_>) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = Msg::new(RTM_NEWTFILTER, flags, seq);
    let info = filter_info(r.prio, r.protocol);
    m.bytes(&tcmsg(r.ifindex, 0, TC_H_INGRESS_PARENT, info))
        .attr_str(TCA_KIND, "u32")
        .nest(TCA_OPTIONS, |m| {
            m.attr(TCA_U32_SEL, &u32_sel(r.keys))
                .nest(TCA_U32_ACT, |m| {
                    m.nest(1, |m| {
                        m.attr_str(TCA_ACT_KIND, "mirred")
                            .nest(TCA_ACT_OPTIONS, |m| {
                                m.attr(TCA_MIRRED_PARMS, &mirred_parms(r.to));
                            });
                    });
                });
        });
    m.finish()
}

fn del_filter_request(seq: u32, ifindex: u32, prio: u16, protocol: u16) -> Vec<u8> {
    let mut m = Msg::new(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, seq);
    let info = filter_info(prio, protocol);
    m.bytes(&tcmsg(ifindex, 0, TC_H_INGRESS_PARENT, info));
    m.finish()
}

fn dump_filters_request(seq: u32, ifindex: u32) -> Vec<u8> {
    let mut m = Msg::new(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, seq);
    m.bytes(&tcmsg(ifindex, 0, TC_H_INGRESS_PARENT, 0));
    m.finish()
}

/// A reply the parser cannot read.
fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink reply: {what}"),
    )
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One netlink message of a reply.
#[derive(Debug)]
struct Reply<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of one datagram, each checked against the datagram's length.
fn messages(mut buf: &[u8]) -> io::Result<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = u32_at(buf, 0).ok_or_else(|| malformed("truncated header"))? as usize;
        let (Some(kind), Some(flags), Some(seq)) = (u16_at(buf, 4), u16_at(buf, 6), u32_at(buf, 8))
        else {
            return Err(malformed("truncated header"));
        };
        let payload = buf
            .get(NLMSG_HDRLEN..len)
            .ok_or_else(|| malformed("message length out of bounds"))?;
        out.push(Reply {
            kind,
            flags,
            seq,
            payload,
        });
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// The attributes in `buf` as (type without flags, payload).
fn attrs(mut buf: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let (Some(len), Some(kind)) = (u16_at(buf, 0), u16_at(buf, 2)) else {
            return Err(malformed("truncated attribute"));
        };
        let payload = buf
            .get(4..usize::from(len))
            .ok_or_else(|| malformed("attribute length out of bounds"))?;
        out.push((kind & NLA_TYPE_MASK, payload));
        buf = buf
            .get(usize::from(len).next_multiple_of(4)..)
            .unwrap_or(&[]);
    }
    Ok(out)
}

/// The payload of the first attribute of type `kind`.
fn find(buf: &[u8], kind: u16) -> io::Result<Option<&[u8]>> {
    Ok(attrs(buf)?.into_iter().find(|a| a.0 == kind).map(|a| a.1))
}

/// The outcome an error message (`NLMSG_ERROR`; 0 is an acknowledgement) reports, with
/// the kernel's extended-ack text when it sent one.
fn error_status(r: &Reply<'_>) -> io::Result<()> {
    let code = r
        .payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| malformed("truncated error message"))?;
    if code == 0 {
        return Ok(());
    }
    let os = io::Error::from_raw_os_error(code.saturating_neg());
    // With NETLINK_CAP_ACK the request is not echoed: its header alone follows the code.
    let text = match r.flags & NLM_F_ACK_TLVS {
        0 => None,
        _ => r
            .payload
            .get(4 + NLMSG_HDRLEN..)
            .and_then(|t| find(t, NLMSGERR_ATTR_MSG).ok().flatten())
            .map(|m| {
                String::from_utf8_lossy(m.split(|&c| c == 0).next().unwrap_or(m)).into_owned()
            }),
    };
    Err(match text {
        Some(text) if !text.is_empty() => io::Error::new(os.kind(), Refusal { os, text }),
        _ => os,
    })
}

/// An error code with the kernel's extended-ack explanation.
#[derive(Debug, thiserror::Error)]
#[error("{os}: {text}")]
struct Refusal {
    os: io::Error,
    text: String,
}

/// The error code of a reply's error, with or without an explanation.
fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        let r = e.get_ref()?.downcast_ref::<Refusal>()?;
        r.os.raw_os_error()
    })
}

/// The redirect counters one filter message (RTM_NEWTFILTER of a dump) carries: its
/// priority and the sum over its actions' basic statistics (none for a filter without
/// actions, such as u32's hash table entries).
fn filter_counters(payload: &[u8]) -> io::Result<PrioCounters> {
    let info = u32_at(payload, 16).ok_or_else(|| malformed("truncated tcmsg"))?;
    let mut c = PrioCounters {
        prio: (info >> 16) as u16,
        ..PrioCounters::default()
    };
    let tca = payload.get(TCMSG_LEN..).unwrap_or(&[]);
    let Some(opts) = find(tca, TCA_OPTIONS)? else {
        return Ok(c);
    };
    let Some(acts) = find(opts, TCA_U32_ACT)? else {
        return Ok(c);
    };
    for (_, act) in attrs(acts)? {
        let Some(stats) = find(act, TCA_ACT_STATS)? else {
            continue;
        };
        let (packets, bytes) = basic_stats(stats)?;
        c.packets = c.packets.saturating_add(packets);
        c.bytes = c.bytes.saturating_add(bytes);
    }
    Ok(c)
}

/// Packets and bytes of TCA_ACT_STATS: struct gnet_stats_basic (u64 bytes, u32
/// packets), the packets as 64 bits in TCA_STATS_PKT64 when they overflowed 32.
fn basic_stats(stats: &[u8]) -> io::Result<(u64, u64)> {
    let mut out = (0, 0);
    for (kind, b) in attrs(stats)? {
        match kind {
            TCA_STATS_BASIC => {
                let bytes = u64_at(b, 0).ok_or_else(|| malformed("short basic stats"))?;
                let packets = u32_at(b, 8).ok_or_else(|| malformed("short basic stats"))?;
                out.1 = bytes;
                out.0 = out.0.max(u64::from(packets));
            }
            TCA_STATS_PKT64 => {
                out.0 = u64_at(b, 0).ok_or_else(|| malformed("short packet count"))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Adds the counters of one dump datagram to `sums` (one entry per priority, in the
/// order they first appear); true once the dump's end (NLMSG_DONE) was read.
fn add_dump(buf: &[u8], seq: u32, sums: &mut Vec<PrioCounters>) -> io::Result<bool> {
    for r in messages(buf)? {
        if r.seq != seq {
            continue;
        }
        match r.kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                error_status(&r)?;
                return Err(malformed("an acknowledgement instead of the dump's end"));
            }
            RTM_NEWTFILTER => {
                let c = filter_counters(r.payload)?;
                match sums.iter_mut().find(|s| s.prio == c.prio) {
                    Some(s) => {
                        s.packets = s.packets.saturating_add(c.packets);
                        s.bytes = s.bytes.saturating_add(c.bytes);
                    }
                    None => sums.push(c),
                }
            }
            _ if r.flags & NLM_F_MULTI != 0 => {}
            _ => return Err(malformed("unexpected message in a filter dump")),
        }
    }
    Ok(false)
}

/// One NETLINK_ROUTE socket (in the namespace of the thread that opened it) and its
/// request sequence numbers.
pub struct Rtnl {
    sock: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// Opens the socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let sock = netlink_socket().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open a routing netlink socket: {e}"),
            )
        })?;
        // Error replies carry the kernel's explanation and not the whole request (both
        // best effort: older kernels answer with the code alone).
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt with a valid pointer to an int of the size given.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    (&raw const one).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
        }
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: msg is a valid buffer of msg.len() bytes; the destination is the
        // kernel (a zeroed sockaddr_nl).
        let sent = unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one datagram into the buffer; its length.
    fn recv(&mut self) -> io::Result<usize> {
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends a request (its sequence number `seq`) and waits for its acknowledgement.
    fn request(&mut self, seq: u32, msg: &[u8]) -> io::Result<()> {
        self.send(msg)?;
        loop {
            let n = self.recv()?;
            let buf = self.buf.get(..n).unwrap_or(&[]);
            for r in messages(buf)? {
                if r.seq == seq && r.kind == NLMSG_ERROR {
                    return error_status(&r);
                }
            }
        }
    }

    /// Creates the veth pair `host` (in the current namespace) and `peer` (created in
    /// the namespace `peer_ns`, with MAC `peer_mac`), both with MTU `mtu`, both down.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
        peer_mac: MacAddr,
        mtu: u32,
    ) -> io::Result<()> {
        let what = format!("cannot create the veth pair {host}/{peer}");
        valid_name(host)
            .and(valid_name(peer))
            .map_err(|e| context(e, &what))?;
        let seq = self.next_seq();
        let msg = veth_request(seq, host, peer, peer_ns, peer_mac, mtu);
        self.request(seq, &msg).map_err(|e| context(e, &what))
    }

    /// Deletes the link `name` (a veth pair: both ends); Ok(false) when there is none.
    pub fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        valid_name(name).map_err(|e| context(e, &format!("cannot delete the link {name:?}")))?;
        let seq = self.next_seq();
        match self.request(seq, &del_link_request(seq, name)) {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(context(e, &format!("cannot delete the link {name}"))),
        }
    }

    /// Deletes the device's clsact qdisc if there is one (flushing its filters), adds one.
    pub fn replace_clsact(&mut self, ifindex: u32) -> io::Result<()> {
        let seq = self.next_seq();
        match self.request(seq, &clsact_request(seq, RTM_DELQDISC, ifindex)) {
            Ok(()) => {}
            // No clsact (ENOENT), or no qdisc at all on the ingress side (EINVAL).
            Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::EINVAL)) => {}
            Err(e) => {
                let what = format!("cannot delete the clsact qdisc of link {ifindex}");
                return Err(context(e, &what));
            }
        }
        let seq = self.next_seq();
        self.request(seq, &clsact_request(seq, RTM_NEWQDISC, ifindex))
            .map_err(|e| context(e, &format!("cannot add a clsact qdisc to link {ifindex}")))
    }

    /// Adds the u32 filter `r` (see [`Redirect`]) to its link's ingress.
    pub fn add_redirect(&mut self, r: &Redirect<'_>) -> io::Result<()> {
        let seq = self.next_seq();
        let msg = redirect_request(seq, r);
        self.request(seq, &msg).map_err(|e| {
            let what = format!(
                "cannot add the ingress redirect of link {} at priority {} to link {}",
                r.ifindex, r.prio, r.to
            );
            context(e, &what)
        })
    }

    /// Removes the ingress filters of `ifindex` at `prio` for `protocol` (Ok when none).
    pub fn delete_filter(&mut self, ifindex: u32, prio: u16, protocol: u16) -> io::Result<()> {
        let seq = self.next_seq();
        match self.request(seq, &del_filter_request(seq, ifindex, prio, protocol)) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
            Err(e) => {
                let what = format!(
                    "cannot delete the ingress filters of link {ifindex} at priority {prio}"
                );
                Err(context(e, &what))
            }
        }
    }

    /// Packets and bytes each ingress priority's redirect actions counted, summed per
    /// priority (priorities without actions: zero).
    pub fn ingress_counters(&mut self, ifindex: u32) -> io::Result<Vec<PrioCounters>> {
        let seq = self.next_seq();
        let what = format!("cannot read the ingress filters of link {ifindex}");
        self.send(&dump_filters_request(seq, ifindex))
            .map_err(|e| context(e, &what))?;
        let mut sums = Vec::new();
        loop {
            let n = self.recv().map_err(|e| context(e, &what))?;
            let buf = self.buf.get(..n).unwrap_or(&[]);
            if add_dump(buf, seq, &mut sums).map_err(|e| context(e, &what))? {
                return Ok(sums);
            }
        }
    }
}

/// Refuses an interface name the kernel would refuse or read otherwise (a NUL would
/// cut it short: another link's name).
fn valid_name(name: &str) -> io::Result<()> {
    check_ifname(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// `e` with what was being done in front of it.
fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne32(b: &[u8], at: usize) -> u32 {
        u32_at(b, at).unwrap()
    }

    /// The single message of a request, checked: its length field, 4-byte padding.
    fn payload(req: &[u8]) -> &[u8] {
        assert_eq!(req.len() % 4, 0);
        assert_eq!(ne32(req, 0) as usize, req.len());
        let m = messages(req).unwrap();
        assert_eq!(m.len(), 1);
        m[0].payload
    }

    /// The nested attribute `kind` of `buf`, checking its NLA_F_NESTED flag.
    fn nested(buf: &[u8], kind: u16) -> &[u8] {
        let mut at = 0;
        while let Some(len) = u16_at(buf, at) {
            let k = u16_at(buf, at + 2).unwrap();
            if k & NLA_TYPE_MASK == kind {
                assert_ne!(k & NLA_F_NESTED, 0, "attribute {kind} is not marked nested");
                return &buf[at + 4..at + len as usize];
            }
            at += (len as usize).next_multiple_of(4);
        }
        panic!("no attribute {kind}");
    }

    #[test]
    fn keys_for_a_mac_pair_and_addresses() {
        let dst = MacAddr([0x02, 0x77, 0x01, 0x02, 0x03, 0x0b]);
        let src = MacAddr([0x02, 0x88, 0x04, 0x05, 0x06, 0x0a]);
        let k = |off, val| U32Key {
            off,
            mask: u32::MAX,
            val,
        };
        assert_eq!(
            U32Key::macs(dst, src),
            [k(-14, 0x0277_0102), k(-10, 0x030b_0288), k(-6, 0x0405_060a)]
        );
        assert_eq!(
            U32Key::ipv4_src(Ipv4Addr::new(10, 77, 0, 1)),
            k(12, 0x0a4d_0001)
        );
        let v6: Ipv6Addr = "fd00:1:2:3:4:5:6:7".parse().unwrap();
        assert_eq!(
            U32Key::ipv6_src(v6),
            [
                k(8, 0xfd00_0001),
                k(12, 0x0002_0003),
                k(16, 0x0004_0005),
                k(20, 0x0006_0007)
            ]
        );
        let nh = U32Key::ipv6_next_header(58);
        assert_eq!((nh.off, nh.mask, nh.val), (4, 0x0000_ff00, 58 << 8));
    }

    #[test]
    fn a_redirect_request_nests_selector_and_mirred_action() {
        let keys = [U32Key::ipv4_src(Ipv4Addr::new(10, 0, 0, 1))];
        let r = Redirect {
            ifindex: 7,
            prio: 100,
            protocol: ETH_P_IP,
            keys: &keys,
            to: 9,
        };
        let req = redirect_request(42, &r);
        assert_eq!(u16_at(&req, 4), Some(RTM_NEWTFILTER));
        assert_eq!(ne32(&req, 8), 42);
        let p = payload(&req);
        // tcmsg: ifindex, handle 0 (the kernel's choice), ingress, prio << 16 | htons(proto)
        assert_eq!([ne32(p, 4), ne32(p, 8), ne32(p, 12)], [7, 0, 0xFFFF_FFF2]);
        assert_eq!(&p[16..20], &(100u32 << 16 | 0x0008).to_ne_bytes()[..]);
        let tca = &p[TCMSG_LEN..];
        assert_eq!(find(tca, TCA_KIND).unwrap(), Some(&b"u32\0"[..]));
        let opts = nested(tca, TCA_OPTIONS);
        let sel = find(opts, TCA_U32_SEL).unwrap().unwrap();
        assert_eq!(sel.len(), 16 + 16);
        assert_eq!(sel[..3], [TC_U32_TERMINAL, 0, 1]);
        // The key: mask and value big-endian, offset native.
        assert_eq!(sel[16..24], [0xff, 0xff, 0xff, 0xff, 10, 0, 0, 1]);
        assert_eq!(i32::from_ne_bytes(sel[24..28].try_into().unwrap()), 12);
        let act = nested(nested(opts, TCA_U32_ACT), 1);
        assert_eq!(find(act, TCA_ACT_KIND).unwrap(), Some(&b"mirred\0"[..]));
        let parms = find(nested(act, TCA_ACT_OPTIONS), TCA_MIRRED_PARMS)
            .unwrap()
            .unwrap();
        assert_eq!(parms.len(), 28);
        // action TC_ACT_STOLEN, eaction TCA_EGRESS_REDIR, ifindex 9
        assert_eq!(
            [ne32(parms, 8), ne32(parms, 20), ne32(parms, 24)],
            [4, 1, 9]
        );
        // "mirred\0" (7 bytes) is padded to 8: every length adds up to the whole.
        assert_eq!(req.len(), 16 + 20 + 8 + 4 + (4 + 32) + 4 + 4 + 12 + 4 + 32);
    }

    #[test]
    fn no_keys_is_one_key_matching_every_frame() {
        let sel = u32_sel(&[]);
        assert_eq!(sel.len(), 32);
        assert_eq!(sel[2], 1);
        assert!(sel[16..].iter().all(|&b| b == 0));
        // ETH_P_ALL in network order in tcm_info.
        assert_eq!(filter_info(200, ETH_P_ALL).to_ne_bytes()[..2], [0, 3]);
    }

    #[test]
    fn a_veth_request_puts_the_peer_in_its_namespace() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&f);
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let req = veth_request(1, "vh0", "eth0", fd, mac, 9000);
        let p = payload(&req);
        let attrs_of = &p[IFINFOMSG_LEN..];
        assert_eq!(find(attrs_of, IFLA_IFNAME).unwrap(), Some(&b"vh0\0"[..]));
        assert_eq!(ne32(find(attrs_of, IFLA_MTU).unwrap().unwrap(), 0), 9000);
        let info = nested(attrs_of, IFLA_LINKINFO);
        assert_eq!(find(info, IFLA_INFO_KIND).unwrap(), Some(&b"veth\0"[..]));
        let peer = nested(nested(info, IFLA_INFO_DATA), VETH_INFO_PEER);
        // The peer's own ifinfomsg, then its attributes.
        assert_eq!(peer[..IFINFOMSG_LEN], [0; IFINFOMSG_LEN]);
        let peer = &peer[IFINFOMSG_LEN..];
        assert_eq!(find(peer, IFLA_IFNAME).unwrap(), Some(&b"eth0\0"[..]));
        assert_eq!(find(peer, IFLA_ADDRESS).unwrap(), Some(&mac.0[..]));
        let ns = find(peer, IFLA_NET_NS_FD).unwrap().unwrap();
        assert_eq!(ne32(ns, 0), std::os::fd::AsRawFd::as_raw_fd(&f) as u32);
        let clsact = clsact_request(3, RTM_NEWQDISC, 5);
        let p = payload(&clsact);
        assert_eq!(
            [ne32(p, 4), ne32(p, 8), ne32(p, 12)],
            [5, 0xFFFF_0000, 0xFFFF_FFF1]
        );
    }

    /// A filter message of a dump: priority `prio`, one action per (packets, bytes),
    /// or no options at all (u32's hash table entry) when `acts` is None.
    fn filter_msg(seq: u32, prio: u16, acts: Option<&[(u32, u64)]>) -> Vec<u8> {
        let mut m = Msg::new(RTM_NEWTFILTER, NLM_F_MULTI, seq);
        m.bytes(&tcmsg(
            3,
            0x800,
            TC_H_INGRESS_PARENT,
            filter_info(prio, ETH_P_ALL),
        ))
        .attr_str(TCA_KIND, "u32");
        if let Some(acts) = acts {
            m.nest(TCA_OPTIONS, |m| {
                m.attr(TCA_U32_SEL, &u32_sel(&[])).nest(TCA_U32_ACT, |m| {
                    for (i, (packets, bytes)) in acts.iter().enumerate() {
                        m.nest(i as u16 + 1, |m| {
                            m.attr_str(TCA_ACT_KIND, "mirred").nest(TCA_ACT_STATS, |m| {
                                let mut basic = bytes.to_ne_bytes().to_vec();
                                basic.extend_from_slice(&packets.to_ne_bytes());
                                m.attr(TCA_STATS_BASIC, &basic);
                            });
                        });
                    }
                });
            });
        }
        m.finish()
    }

    fn done(seq: u32) -> Vec<u8> {
        let mut m = Msg::new(NLMSG_DONE, NLM_F_MULTI, seq);
        m.bytes(&0i32.to_ne_bytes());
        m.finish()
    }

    fn dump(seq: u32) -> Vec<u8> {
        let mut d = filter_msg(seq, 100, None);
        d.extend(filter_msg(seq, 100, Some(&[(3, 300), (4, 400)])));
        d.extend(filter_msg(seq, 200, Some(&[(10, 1000)])));
        d.extend(filter_msg(seq, 100, Some(&[(1, 50)])));
        d
    }

    #[test]
    fn a_dump_is_summed_per_priority() {
        let mut sums = Vec::new();
        // Two datagrams: the end comes with the second.
        assert!(!add_dump(&dump(5), 5, &mut sums).unwrap());
        let mut last = filter_msg(5, 300, None);
        last.extend(filter_msg(4, 200, Some(&[(99, 99)]))); // another request's: ignored
        last.extend(done(5));
        assert!(add_dump(&last, 5, &mut sums).unwrap());
        let c = |prio, packets, bytes| PrioCounters {
            prio,
            packets,
            bytes,
        };
        assert_eq!(sums, [c(100, 8, 750), c(200, 10, 1000), c(300, 0, 0)]);
        // Packets beyond 32 bits come as TCA_STATS_PKT64 beside the basic stats.
        let mut stats = Msg(Vec::new());
        let mut basic = 7u64.to_ne_bytes().to_vec();
        basic.extend_from_slice(&u32::MAX.to_ne_bytes());
        stats
            .attr(TCA_STATS_BASIC, &basic)
            .attr(TCA_STATS_PKT64, &(1u64 << 33).to_ne_bytes());
        assert_eq!(basic_stats(&stats.0).unwrap(), (1 << 33, 7));
        // Sums that would overflow stay at the maximum.
        let mut sums = Vec::new();
        let huge = filter_msg(5, 1, Some(&[(1, u64::MAX), (1, u64::MAX)]));
        assert!(!add_dump(&huge, 5, &mut sums).unwrap());
        assert!(!add_dump(&huge, 5, &mut sums).unwrap());
        assert_eq!((sums[0].packets, sums[0].bytes), (4, u64::MAX));
    }

    #[test]
    fn malformed_replies_are_refused_without_panic() {
        let mut whole = dump(5);
        whole.extend(done(5));
        // Every truncation and every corrupted byte: an error or a reading, never a panic.
        for n in 0..whole.len() {
            let _ = add_dump(&whole[..n], 5, &mut Vec::new());
            for v in [0x00, 0x03, 0xff] {
                let mut bad = whole.clone();
                bad[n] = v;
                let _ = add_dump(&bad, 5, &mut Vec::new());
            }
        }
        // A message shorter than its header, longer than the datagram, an attribute
        // longer than its message: refused.
        let mut short = done(5);
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(add_dump(&short, 5, &mut Vec::new()).is_err());
        let mut long = done(5);
        long[..4].copy_from_slice(&64u32.to_ne_bytes());
        assert!(add_dump(&long, 5, &mut Vec::new()).is_err());
        let mut f = filter_msg(5, 1, Some(&[(1, 1)]));
        let at = NLMSG_HDRLEN + TCMSG_LEN + 8; // TCA_OPTIONS, after TCA_KIND "u32\0"
        f[at..at + 2].copy_from_slice(&500u16.to_ne_bytes());
        assert!(add_dump(&f, 5, &mut Vec::new()).is_err());
        assert!(add_dump(&[1, 2, 3], 5, &mut Vec::new()).is_err());
    }

    #[test]
    fn errors_carry_their_code_and_the_kernels_explanation() {
        let error = |code: i32, text: Option<&str>| {
            let flags = if text.is_some() { NLM_F_ACK_TLVS } else { 0 };
            let mut m = Msg::new(NLMSG_ERROR, flags, 9);
            m.bytes(&code.to_ne_bytes()).bytes(&[0; NLMSG_HDRLEN]);
            if let Some(t) = text {
                m.attr_str(NLMSGERR_ATTR_MSG, t);
            }
            m.finish()
        };
        let status = |b: &[u8]| error_status(&messages(b).unwrap()[0]);
        assert!(status(&error(0, None)).is_ok());
        let e = status(&error(-libc::ENODEV, None)).unwrap_err();
        assert_eq!(errno(&e), Some(libc::ENODEV));
        let e = status(&error(-libc::EINVAL, Some("Parent Qdisc doesn't exists"))).unwrap_err();
        assert_eq!(errno(&e), Some(libc::EINVAL));
        assert!(e.to_string().contains("Parent Qdisc doesn't exists"), "{e}");
        // A code cut short is refused.
        let mut cut = error(0, None)[..20].to_vec();
        cut[..4].copy_from_slice(&18u32.to_ne_bytes());
        assert!(status(&cut).is_err());
        // A code no negation can represent: an error, not an overflow.
        assert!(status(&error(i32::MIN, None)).is_err());
        // In a dump: the error ends it as an error.
        let e = add_dump(&error(-libc::EPERM, None), 9, &mut Vec::new()).unwrap_err();
        assert_eq!(errno(&e), Some(libc::EPERM));
    }
}
