//! Routing netlink: the two requests a spliced published port needs inside a
//! container's namespace (see [`uplink::splice`](crate::uplink::splice)).
//!
//! A loopback client of a published port is spliced: the daemon opens a socket inside
//! the container's namespace, bound (`IP_TRANSPARENT`) to the network's gateway and the
//! client's port, and connects it to the container, so the container sees the same
//! source as on the frame path. The container's replies to the gateway would leave by
//! its interface; a policy rule sends exactly those back to the loopback instead:
//!
//! ```text
//! ip rule add pref 31000 from CONTAINER to GATEWAY ipproto tcp sport PORT lookup 30323
//! ip route add local GATEWAY dev lo table 30323
//! ```
//!
//! in the family of the addresses (`ip -6` for a `::1` client's splice).
//!
//! Only TCP from the published container port to the gateway matches, so everything
//! else the container sends the gateway (DNS, its own connections) is untouched.
//!
//! The messages are built field by field in native byte order (netlink's), addresses
//! in network order; nothing here runs the `ip` binary.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The routing table holding the gateway as a local address.
pub const SPLICE_TABLE: u32 = 30323;
/// The rule's preference: after the local table's (0), before the main table's (32766).
pub const SPLICE_RULE_PREF: u32 = 31000;

// The netlink header's values, shared with the kernel path's requests.
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const FR_ACT_TO_TBL: u8 = 1;
const FRA_DST: u16 = 1;
const FRA_SRC: u16 = 2;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_IP_PROTO: u16 = 22;
const FRA_SPORT_RANGE: u16 = 23;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const IFA_F_PERMANENT: u32 = 0x80;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_HOST: u8 = 254;
const RTN_LOCAL: u8 = 2;
/// The loopback device's index, the same in every namespace.
const LOOPBACK_IFINDEX: u32 = 1;
const TCP: u8 = 6;

/// One netlink request under construction (also the kernel path's,
/// [`kernel::netlink`](crate::kernel::netlink)).
pub(crate) struct Msg(pub(crate) Vec<u8>);

impl Msg {
    pub(crate) fn new(kind: u16, flags: u16, seq: u32) -> Msg {
        let mut v = Vec::with_capacity(256);
        v.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Msg(v)
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Msg {
        self.0.extend_from_slice(b);
        self
    }

    /// One attribute, padded to 4 bytes.
    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Msg {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn attr_str(&mut self, kind: u16, s: &str) -> &mut Msg {
        let mut b = Vec::with_capacity(s.len() + 1);
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        self.attr(kind, &b)
    }

    /// A nested attribute holding what `inner` adds.
    pub(crate) fn nest(&mut self, kind: u16, inner: impl FnOnce(&mut Msg)) -> &mut Msg {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        inner(self);
        let len = ((self.0.len() - start) as u16).to_ne_bytes();
        let kind = (kind | NLA_F_NESTED).to_ne_bytes();
        if let Some(h) = self.0.get_mut(start..start + 4) {
            h.copy_from_slice(&[len[0], len[1], kind[0], kind[1]]);
        }
        self
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() as u32).to_ne_bytes();
        if let Some(h) = self.0.get_mut(..4) {
            h.copy_from_slice(&len);
        }
        self.0
    }
}

/// A request's flags: removals acknowledged, additions created and exclusive.
fn flags_for(kind: u16) -> u16 {
    match kind {
        RTM_DELRULE => NLM_F_REQUEST | NLM_F_ACK,
        _ => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    }
}

/// An address's family (as netlink names it), its length in bits and its bytes.
fn family_of(ip: IpAddr) -> (u8, u8, Vec<u8>) {
    match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, 128, a.octets().to_vec()),
    }
}

/// The error for a container and a gateway of different families.
fn mixed_families() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the container's address and the gateway's are of different families",
    )
}

/// `ip rule add pref SPLICE_RULE_PREF from container to gateway ipproto tcp sport port
/// lookup SPLICE_TABLE` (`kind` RTM_NEWRULE), or the same `ip rule del` (RTM_DELRULE),
/// in the addresses' family (the caller checks they agree).
fn rule_request(kind: u16, container: IpAddr, gateway: IpAddr, port: u16) -> Vec<u8> {
    let (family, bits, src) = family_of(container);
    let (_, _, dst) = family_of(gateway);
    let mut m = Msg::new(kind, flags_for(kind), 1);
    // struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags
    m.bytes(&[family, bits, bits, 0, 0, 0, 0, FR_ACT_TO_TBL])
        .bytes(&0u32.to_ne_bytes())
        .attr(FRA_PRIORITY, &SPLICE_RULE_PREF.to_ne_bytes())
        .attr(FRA_TABLE, &SPLICE_TABLE.to_ne_bytes())
        .attr(FRA_SRC, &src)
        .attr(FRA_DST, &dst)
        .attr(FRA_IP_PROTO, &[TCP]);
    let mut range = port.to_ne_bytes().to_vec();
    range.extend_from_slice(&port.to_ne_bytes());
    m.attr(FRA_SPORT_RANGE, &range);
    m.finish()
}

/// `ip route add local gateway dev lo table SPLICE_TABLE` (`ip -6` for an IPv6
/// gateway).
fn local_route_request(gateway: IpAddr) -> Vec<u8> {
    let (family, bits, dst) = family_of(gateway);
    let mut m = Msg::new(RTM_NEWROUTE, flags_for(RTM_NEWROUTE), 1);
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    let table = 0; // RT_TABLE_UNSPEC: the table is the attribute
    m.bytes(&[
        family,
        bits,
        0,
        0,
        table,
        RTPROT_STATIC,
        RT_SCOPE_HOST,
        RTN_LOCAL,
    ])
    .bytes(&0u32.to_ne_bytes())
    .attr(RTA_TABLE, &SPLICE_TABLE.to_ne_bytes())
    .attr(RTA_DST, &dst)
    .attr(RTA_OIF, &LOOPBACK_IFINDEX.to_ne_bytes());
    m.finish()
}

/// `ip -6 addr add addr/prefix dev INDEX nodad`: the address usable at once, never
/// tentative (an address added without `nodad` stays tentative until the kernel's
/// address worker runs, even with `accept_dad` 0, and a bind to it fails meanwhile).
fn address6_request(index: u32, addr: Ipv6Addr, prefix: u8) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWADDR, flags_for(RTM_NEWADDR), 1);
    // struct ifaddrmsg: family, prefixlen, flags, scope, index
    let flags = (IFA_F_NODAD | IFA_F_PERMANENT) as u8;
    m.bytes(&[
        libc::AF_INET6 as u8,
        prefix.min(128),
        flags,
        RT_SCOPE_UNIVERSE,
    ])
    .bytes(&index.to_ne_bytes())
    .attr(IFA_LOCAL, &addr.octets())
    .attr(IFA_ADDRESS, &addr.octets())
    .attr(IFA_FLAGS, &(IFA_F_NODAD | IFA_F_PERMANENT).to_ne_bytes());
    m.finish()
}

/// Adds an IPv6 address without duplicate address detection to interface `index` in
/// the calling thread's namespace (already there: success).
pub fn add_address6(index: u32, addr: Ipv6Addr, prefix: u8) -> io::Result<()> {
    let sock = netlink_socket()?;
    request(&sock, &address6_request(index, addr, prefix))
}

/// Installs the rule and the local route in the calling thread's namespace (already
/// there: success). The addresses must be of one family.
pub fn splice_rules(container: IpAddr, gateway: IpAddr, port: u16) -> io::Result<()> {
    if container.is_ipv4() != gateway.is_ipv4() {
        return Err(mixed_families());
    }
    let sock = netlink_socket()?;
    request(&sock, &local_route_request(gateway))?;
    request(&sock, &rule_request(RTM_NEWRULE, container, gateway, port))
}

/// Removes the rule [`splice_rules`] installed (gone already: success). The local route
/// stays: only such rules consult its table.
pub fn remove_splice_rule(container: IpAddr, gateway: IpAddr, port: u16) -> io::Result<()> {
    if container.is_ipv4() != gateway.is_ipv4() {
        return Err(mixed_families());
    }
    let sock = netlink_socket()?;
    match request(&sock, &rule_request(RTM_DELRULE, container, gateway, port)) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// A `NETLINK_ROUTE` socket in the calling thread's namespace.
pub(crate) fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one request and reads its acknowledgement; "exists already" is success.
fn request(sock: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: msg is a valid buffer of msg.len() bytes; the destination is the kernel
    // (a zeroed sockaddr_nl).
    let sent = unsafe {
        let mut to: libc::sockaddr_nl = std::mem::zeroed();
        to.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            sock.as_raw_fd(),
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
    let mut buf = [0u8; 1024];
    // SAFETY: buf is a valid writable buffer of buf.len() bytes.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    ack_status(buf.get(..n as usize).unwrap_or(&[]))
}

/// The outcome an acknowledgement (`NLMSG_ERROR`, error 0 for success) reports.
fn ack_status(reply: &[u8]) -> io::Result<()> {
    let field = |at: usize| -> Option<[u8; 4]> { reply.get(at..at + 4)?.try_into().ok() };
    let kind = reply
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes);
    let code = field(16).map(i32::from_ne_bytes);
    match (kind, code) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(e)) if -e == libc::EEXIST => Ok(()),
        (Some(NLMSG_ERROR), Some(e)) => Err(io::Error::from_raw_os_error(-e)),
        _ => Err(io::Error::other("unexpected netlink reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_padded_and_carry_their_length() {
        let (c, g) = (IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 1]));
        let r = rule_request(RTM_NEWRULE, c, g, 80);
        assert_eq!(r.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes([r[0], r[1], r[2], r[3]]) as usize,
            r.len()
        );
        // header 16 + fib_rule_hdr 12 + prio 8 + table 8 + src 8 + dst 8 + proto 8 + sport 8
        assert_eq!(r.len(), 76);
        // Removal: the same rule, neither created nor exclusive.
        let d = rule_request(RTM_DELRULE, c, g, 80);
        assert_eq!(d.len(), 76);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), RTM_DELRULE);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(d[8..], r[8..]);
        let l = local_route_request(g);
        assert_eq!(l.len(), 16 + 12 + 8 + 8 + 8);
        // IPv6: the same requests with 16-byte addresses and /128s.
        let (c6, g6): (IpAddr, IpAddr) = ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap());
        let r6 = rule_request(RTM_NEWRULE, c6, g6, 80);
        assert_eq!(r6.len(), 76 + 2 * 12);
        assert_eq!(r6[16..19], [libc::AF_INET6 as u8, 128, 128]);
        let l6 = local_route_request(g6);
        assert_eq!(l6.len(), 16 + 12 + 8 + 20 + 8);
        assert_eq!(l6[16..18], [libc::AF_INET6 as u8, 128]);
        // header 16 + ifaddrmsg 8 + local 20 + address 20 + flags 8
        let a = address6_request(7, Ipv6Addr::LOCALHOST, 64);
        assert_eq!(a.len(), 16 + 8 + 20 + 20 + 8);
        assert_eq!(u32::from_ne_bytes([a[20], a[21], a[22], a[23]]), 7);
        assert_eq!(a[17], 64);
    }

    #[test]
    fn acknowledgements_are_read_and_short_replies_refused() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(ack_status(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert!(ack_status(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            ack_status(&ack).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(ack_status(&ack[..10]).is_err());
    }
}
