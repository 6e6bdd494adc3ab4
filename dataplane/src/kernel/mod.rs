//! The kernel path: containers joined by veth pairs whose host ends the daemon owns,
//! with the unicast traffic of a pair the bridge has seen handed to the kernel (a tc
//! redirect between the two host ends), so that it never reaches userspace.

pub mod hints;
pub mod link;
pub mod manager;
pub mod netlink;
pub mod pairs;

use crate::wire::MacAddr;

/// How one daemon names its kernel-path devices: after the port's network (domain) and
/// the container's MAC there (unique in a network, not between networks), salted by the
/// daemon's own key (its state directory), so that two daemons of one namespace with
/// the same addresses (two tests, two users) never take each other's devices, and a
/// restarted daemon finds its own. 15 bytes at most, as the kernel allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    salt: u64,
}

impl Names {
    /// The names of the daemon whose state lives at `key` (any stable bytes).
    pub fn new(key: &[u8]) -> Names {
        Names {
            salt: fnv1a(FNV_OFFSET, key),
        }
    }

    /// The host end of a port's veth pair.
    pub fn host_end(&self, port: PortKey) -> String {
        format!("vh{:012x}", self.hash(port))
    }

    /// The TAP in the daemon's namespace that carries a port's frames to and from the
    /// daemon.
    pub fn tap(&self, port: PortKey) -> String {
        format!("vt{:012x}", self.hash(port))
    }

    /// 48 bits of the salt, the network and the MAC.
    fn hash(&self, port: PortKey) -> u64 {
        let h = fnv1a(self.salt, &port.domain.to_be_bytes());
        fnv1a(h, &port.mac.0) & 0xffff_ffff_ffff
    }
}

/// What names a kernel-path port: its network's domain and its container's MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub domain: u16,
    pub mac: MacAddr,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_differ_between_daemons_and_ports() {
        let (a, b) = (Names::new(b"/var/lib/vswitch"), Names::new(b"/tmp/other"));
        let mac = |i, domain| PortKey {
            domain,
            mac: MacAddr([2, 0x42, 10, 1, 0, i]),
        };
        let (m, n, other_net) = (mac(2, 1), mac(3, 1), mac(2, 2));
        assert_eq!(a.host_end(m).len(), 14);
        assert_eq!(a.host_end(m), Names::new(b"/var/lib/vswitch").host_end(m));
        assert_ne!(a.host_end(m), b.host_end(m));
        assert_ne!(a.host_end(m), a.host_end(n));
        assert_ne!(a.host_end(m), a.host_end(other_net));
        assert_eq!(a.tap(m)[2..], a.host_end(m)[2..]);
    }
}
