//! How masqueraded traffic leaves the switch.
//!
//! - [`socket`]: the host's own sockets carry each flow (no privileges needed).
//! - [`quota`]: what the socket uplink lets each container (and all) hold.
//! - [`packet`]: a port on an outside segment; the workers translate packets (NAT).

pub mod packet;
pub mod quota;
pub mod socket;
