//! How masqueraded traffic leaves the switch.
//!
//! - [`socket`]: the host's own sockets carry each flow (no privileges needed).
//! - [`packet`]: a port on an outside segment; the workers translate packets (NAT).

pub mod packet;
pub mod socket;
