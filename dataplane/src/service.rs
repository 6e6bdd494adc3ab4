//! The gateway service: what the service thread does with the frames the bridge sends
//! to the gateway, and the tables it answers from.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::port::service::ServiceFrame;
use crate::runtime::{Service, ServiceCtx};
use crate::wire::MacAddr;

/// The gateway's view of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetService {
    pub name: String,
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: MacAddr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
    pub internal: bool,
}

/// Everything the service thread answers from; rebuilt by the control thread.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// By domain id.
    pub nets: Vec<Option<NetService>>,
    /// (domain, port slot) -> (MAC, address): what DHCP gives each port.
    pub leases: HashMap<(u16, u16), (MacAddr, Ipv4Addr)>,
}

/// The gateway: ARP, ICMP, DHCP, DNS on each network's gateway address.
#[derive(Default)]
pub struct Gateway {
    cfg: ServiceConfig,
    /// Frames received, by whether anything answered them.
    pub frames: u64,
}

impl Gateway {
    pub fn configure(&mut self, cfg: ServiceConfig) {
        self.cfg = cfg;
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }
}

impl Service for Gateway {
    fn frame(&mut self, ctx: &mut ServiceCtx<'_>, f: ServiceFrame) {
        self.frames += 1;
        ctx.recycle(f.data);
    }
}
