//! The kernel path: containers joined by veth pairs whose host ends the daemon owns,
//! with the unicast traffic of a pair the bridge has seen handed to the kernel (a tc
//! redirect between the two host ends), so that it never reaches userspace.

pub mod hints;
pub mod link;
pub mod manager;
pub mod netlink;
pub mod pairs;

use crate::wire::MacAddr;

/// The host end of a kernel-path port's veth pair, named after the container's MAC
/// (15 bytes at most, as the kernel allows).
pub fn host_end_name(mac: MacAddr) -> String {
    format!("vh{}", hex(mac))
}

/// The TAP in the daemon's namespace that carries a kernel-path port's frames to and
/// from the daemon.
pub fn tap_name(mac: MacAddr) -> String {
    format!("vt{}", hex(mac))
}

fn hex(mac: MacAddr) -> String {
    mac.0.iter().map(|b| format!("{b:02x}")).collect()
}
