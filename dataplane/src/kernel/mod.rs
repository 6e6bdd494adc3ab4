//! The kernel path: containers joined by veth pairs whose host ends the daemon owns,
//! with the unicast traffic of a pair the bridge has seen handed to the kernel (a tc
//! redirect between the two host ends), so that it never reaches userspace.

pub mod hints;
pub mod netlink;
