//! Routing netlink for the kernel path (veth pairs, clsact qdiscs, u32 redirects).
