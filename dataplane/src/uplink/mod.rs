//! How masqueraded traffic leaves the switch.
//!
//! - [`socket`]: the host's own sockets carry each flow (no privileges needed).
//! - [`host`]: the host's main address, which a network's gateway stands for.
//! - [`packet`]: a port on an outside segment; the workers translate packets (NAT).

pub mod host;
pub mod packet;
pub mod socket;
