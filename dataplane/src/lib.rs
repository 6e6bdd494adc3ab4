//! The vswitch dataplane: everything that touches a packet.
//!
//! - [`wire`]: zero-copy header views and checksums.
//! - [`port`]: frames, batches, the `Port` trait and its backends.
//! - [`bridge`]: the forwarding database, VLANs, counters.
//! - [`dns`]: the embedded DNS server of the gateway (sans-I/O).
//! - [`pipeline`]: one batch through ingress, decision and egress.

pub mod bench;
pub mod bridge;
pub mod capture;
pub mod config;
pub mod dns;
pub mod gateway;
pub mod ids;
pub mod nat;
pub mod netns;
pub mod pipeline;
pub mod port;
pub mod runtime;
pub mod uplink;
pub mod wire;
pub mod worker;
