//! A kernel-path port's devices: the veth pair (the container's end inside its
//! namespace, the host end `vh…` in the daemon's) and the steering between the host
//! end and the daemon's TAP `vt…`, which the caller opens like any TAP.
//!
//! Steering, at [`SLOW_PRIO`]: everything the container sends (the host end's
//! ingress) goes out of the TAP to the daemon, and everything the daemon writes into
//! the TAP (its ingress) goes out of the host end to the container. Neither device has
//! an address or IPv6, so the daemon's namespace never takes part. The pair manager's
//! filters come before the steering on the host end.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::netlink::{ETH_P_ALL, ETH_P_IP, ETH_P_IPV6, Redirect, Rtnl, U32Key};
use super::pairs::SLOW_PRIO;
use super::{Names, PortKey};
use crate::netns::{IfSocket, NetnsError};

/// The priority of the first filter that sends what the guards judge by port to the
/// daemon (before the pairs' at `PAIR_PRIO_BASE`).
const GUARD_PRIO: u16 = 10;

/// Why a kernel-path port's devices could not be made or steered.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open the network namespace {}: {source}", path.display())]
    Namespace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kernel path: {0}")]
    Netlink(#[source] io::Error),
    #[error("kernel path: no device {0} in the daemon's namespace")]
    NoDevice(String),
    #[error("kernel path: cannot set up {name}: {source}")]
    Device {
        name: String,
        #[source]
        source: NetnsError,
    },
}

/// Creates the veth pair of the container whose interface `ifname` (MAC `mac`, MTU
/// `mtu`) is to live in the namespace `ns`; an old host end of that MAC goes first.
pub fn create_veth(
    names: Names,
    ns: &Path,
    ifname: &str,
    port: PortKey,
    mtu: u32,
) -> Result<(), LinkError> {
    let file = File::open(ns).map_err(|source| LinkError::Namespace {
        path: ns.to_path_buf(),
        source,
    })?;
    let mut rtnl = Rtnl::open().map_err(LinkError::Netlink)?;
    let host = names.host_end(port);
    rtnl.delete_link(&host).map_err(LinkError::Netlink)?;
    rtnl.create_veth(&host, ifname, file.as_fd(), port.mac, mtu)
        .map_err(LinkError::Netlink)
}

/// Whether the host end of `mac`'s veth pair exists (a restarted daemon finds it).
pub fn exists(names: Names, port: PortKey) -> bool {
    ifindex(&names.host_end(port)).is_ok()
}

/// The index of the device `name` of the caller's namespace.
pub(super) fn ifindex(name: &str) -> Result<u32, LinkError> {
    let s = IfSocket::new().map_err(|source| LinkError::Device {
        name: name.to_string(),
        source,
    })?;
    match s.index(name) {
        Ok(Some(i)) => Ok(i),
        _ => Err(LinkError::NoDevice(name.to_string())),
    }
}

/// Steers `mac`'s host end and TAP (both must exist): IPv6 off, MTU `mtu`, the
/// filters (replacing any left by an earlier run, pairs included), then both up.
pub fn steer(names: Names, port: PortKey, mtu: u32) -> Result<(), LinkError> {
    let (host, tap) = (names.host_end(port), names.tap(port));
    let (host_if, tap_if) = (ifindex(&host)?, ifindex(&tap)?);
    let device = |name: &str| {
        let name = name.to_string();
        move |source| LinkError::Device { name, source }
    };
    let s = IfSocket::new().map_err(device(&tap))?;
    for name in [&host, &tap] {
        ipv6_off(name);
        s.set_mtu(name, mtu).map_err(device(name))?;
    }
    let mut rtnl = Rtnl::open().map_err(LinkError::Netlink)?;
    rtnl.replace_clsact(host_if).map_err(LinkError::Netlink)?;
    guard_first(&mut rtnl, host_if, tap_if)?;
    rtnl.replace_clsact(tap_if).map_err(LinkError::Netlink)?;
    for (from, to) in [(host_if, tap_if), (tap_if, host_if)] {
        let all = [U32Key {
            off: 0,
            mask: 0,
            val: 0,
        }];
        let r = Redirect {
            ifindex: from,
            prio: SLOW_PRIO,
            protocol: ETH_P_ALL,
            keys: &all,
            to,
        };
        rtnl.add_redirect(&r).map_err(LinkError::Netlink)?;
    }
    for name in [&host, &tap] {
        s.set_up(name, true).map_err(device(name))?;
    }
    Ok(())
}

/// Before the pairs' filters on the host end, the traffic the first-hop guards judge
/// by port goes to the daemon whatever its pair: DHCP (UDP ports 64-71, 67 and 68
/// among them) and DHCPv6 (546 and 547), from either port. A pair's filters match UDP
/// only at these fixed offsets (IPv4 without options, IPv6 without extensions), so
/// nothing else can carry a server's message past them.
fn guard_first(rtnl: &mut Rtnl, host_if: u32, tap_if: u32) -> Result<(), LinkError> {
    const UDP: u8 = 17;
    let rules = [
        (ETH_P_IP, false, 64, 0xfff8),
        (ETH_P_IPV6, true, 546, 0xfffe),
    ];
    let mut prio = GUARD_PRIO;
    for (protocol, v6, port, mask) in rules {
        let kind = if v6 {
            U32Key::ipv6_next_header(UDP)
        } else {
            U32Key::ipv4_protocol(UDP)
        };
        for dst in [false, true] {
            let keys = [kind, U32Key::l4_port(v6, dst, port, mask)];
            let r = Redirect {
                ifindex: host_if,
                prio,
                protocol,
                keys: &keys,
                to: tap_if,
            };
            rtnl.add_redirect(&r).map_err(LinkError::Netlink)?;
            prio += 1;
        }
    }
    Ok(())
}

/// No IPv6 on a device of the daemon's namespace (no link-local address, no router
/// solicitation or MLD report into the container). Absent IPv6 is as good.
fn ipv6_off(name: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
}

/// Deletes `mac`'s veth pair (both ends); Ok(false) when it was already gone (the
/// container's namespace went, taking the pair with it).
pub fn delete_veth(names: Names, port: PortKey) -> Result<bool, LinkError> {
    let mut rtnl = Rtnl::open().map_err(LinkError::Netlink)?;
    rtnl.delete_link(&names.host_end(port))
        .map_err(LinkError::Netlink)
}
