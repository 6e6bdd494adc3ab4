//! The vswitch dataplane: everything that touches a packet.
//!
//! Frames and their headers:
//! - [`wire`]: zero-copy header views and checksums, and IPv4 prefixes.
//! - [`ids`]: typed identifiers (port, domain, VLAN, generation, encapsulation).
//! - [`port`]: frames, batches, the `Port` trait and its backends (TAP, memory, the
//!   gateway's ring port), segmentation and merging of offloaded frames.
//!
//! Forwarding, on the workers:
//! - [`config`]: the immutable snapshot the forwarding path reads.
//! - [`pipeline`]: one batch through ingress, decision and egress (sans-I/O).
//! - [`bridge`]: the forwarding database, counters, drop reasons.
//! - [`nat`]: connection tracking and NAT for the packet uplink.
//! - [`worker`]: a worker's ports, batch and pipeline state.
//! - [`shaper`]: bandwidth limits per port and direction (token buckets).
//! - [`capture`]: copies of a port's frames for `vswitch ctl capture`.
//!
//! The gateway, on its own thread:
//! - [`gateway`]: ARP, ICMP, DHCP and DNS on every network's gateway address
//!   (sans-I/O), and its I/O ([`gateway::io`]: rings, resolvers' sockets, mio tokens).
//! - [`dns`]: the embedded DNS server (sans-I/O).
//! - [`uplink`]: how masqueraded traffic leaves (the host's sockets, or a packet port).
//!
//! Around them:
//! - [`runtime`]: the worker threads and the gateway thread.
//! - [`netns`]: network namespaces and the interfaces inside them.
//! - [`rtnl`]: the routing rule a spliced published port needs inside a namespace, and
//!   IPv6 addresses added without duplicate address detection.
//! - [`random`]: randomness from the kernel.

pub mod bridge;
pub mod capture;
pub mod config;
pub mod dns;
pub mod fair;
pub mod gateway;
pub mod ids;
pub mod kernel;
pub mod nat;
pub mod netns;
pub mod pipeline;
pub mod port;
pub mod random;
pub mod rtnl;
pub mod runtime;
pub mod shaper;
pub mod uplink;
pub mod wire;
pub mod worker;
