//! How masqueraded traffic leaves the switch.
//!
//! - [`socket`]: the host's own sockets carry each flow (no privileges needed).

pub mod socket;
