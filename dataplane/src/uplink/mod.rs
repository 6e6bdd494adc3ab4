//! How masqueraded traffic leaves the switch.
//!
//! - [`socket`]: the host's own sockets carry each flow (no privileges needed).
//! - [`splice`]: loopback clients of published ports spliced into the container's
//!   namespace, socket to socket, with no frames.
//! - [`splice_helper`]: the single-threaded process that makes those sockets for a
//!   daemon without privileges, inside the container's user and network namespaces.
//! - [`challenge`]: RFC 5961 challenge ACKs for inexact RSTs from containers.
//! - [`host`]: the host's main address, which a network's gateway stands for.
//! - [`quota`]: what the socket uplink lets each container (and all) hold.
//! - [`packet`]: a port on an outside segment; the workers translate packets (NAT).

pub mod challenge;
pub mod host;
pub mod packet;
pub mod quota;
pub mod socket;
pub mod splice;
pub mod splice_helper;
