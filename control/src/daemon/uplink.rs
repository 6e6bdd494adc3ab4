//! The uplink: `uplink set`/`show`, and the packet uplink's port.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use dataplane::config::UPLINK_PORT;

use super::{Daemon, DaemonError, UPLINK_IFNAME};
use crate::api::UplinkReq;
use crate::net::{Ipv4Cidr, Ipv6Cidr};
use crate::state::{Container, DEFAULT_UPLINK_MTU, StateError, Uplink};

impl Daemon {
    pub(super) fn packet_mode(&self) -> bool {
        matches!(self.state.uplink, Uplink::Packet { .. })
    }

    /// Opens the packet uplink's port as the state says (nothing for other modes).
    pub(super) fn open_uplink(&mut self) -> Result<(), DaemonError> {
        let Uplink::Packet {
            tap, netns, mtu, ..
        } = self.state.uplink.clone()
        else {
            return Ok(());
        };
        let mtu = mtu.unwrap_or(DEFAULT_UPLINK_MTU);
        let workers = self.rt.workers();
        let (handles, ns) = match (tap, netns) {
            (Some(t), None) => (self.backend.open_tap(&t, workers)?, None),
            (None, Some(n)) => {
                let ns = PathBuf::from(n);
                (
                    self.backend
                        .create_plain_in_netns(&ns, UPLINK_IFNAME, mtu, workers)?,
                    Some(ns),
                )
            }
            _ => {
                return Err(DaemonError::UplinkWhere);
            }
        };
        self.uplink_port = Some(ns);
        self.apply();
        self.rt.add_port(UPLINK_PORT.0, handles);
        Ok(())
    }

    /// Closes the packet uplink's port and forgets its flows and neighbours.
    pub(super) fn close_uplink(&mut self) {
        let Some(ns) = self.uplink_port.take() else {
            return;
        };
        self.apply();
        self.rt.remove_port(UPLINK_PORT.0);
        if let Some(ns) = ns {
            let _ = self.backend.delete_in_netns(&ns, UPLINK_IFNAME);
        }
        self.rt.neigh.clear();
        self.rt.nat.table.flush();
        self.rt.nat.table6.flush();
    }

    pub(super) fn uplink_show(&self) -> Uplink {
        let mut u = self.state.uplink.clone();
        if let Uplink::Packet { mtu, .. } = &mut u {
            mtu.get_or_insert(DEFAULT_UPLINK_MTU);
        }
        u
    }

    pub(super) fn uplink_set(&mut self, u: UplinkReq) -> Result<Uplink, DaemonError> {
        if u.mode != "packet" && u.mtu.is_some() {
            return Err(DaemonError::MtuNotPacket);
        }
        let uplink = match u.mode.as_str() {
            "socket" => Uplink::Socket,
            "none" => Uplink::None,
            "packet" => self.packet_uplink(u)?,
            m => return Err(DaemonError::UplinkMode(m.to_string())),
        };
        let was_packet = self.packet_mode();
        let mut next = self.state.clone();
        next.uplink = uplink;
        self.save(&next)?;
        let old = std::mem::replace(&mut self.state, next);
        self.close_uplink();
        if let Err(e) = self.open_uplink() {
            // Back to what was there.
            self.state = old;
            self.save(&self.state)?;
            let _ = self.open_uplink();
            self.apply();
            return Err(e);
        }
        self.apply();
        if was_packet != self.packet_mode() {
            self.move_published();
        }
        Ok(self.state.uplink.clone())
    }

    /// Published ports: host sockets with the socket uplink, DNAT with a packet one.
    fn move_published(&mut self) {
        let now_packet = self.packet_mode();
        let containers: Vec<Container> = self.state.containers.values().cloned().collect();
        for c in &containers {
            if now_packet {
                self.stop_published(&c.published);
            } else if !self.unrestored.contains_key(&c.name) {
                self.restore_published(c);
            }
        }
    }

    /// A packet uplink as `u` asks for it, checked (nothing changed).
    fn packet_uplink(&self, u: UplinkReq) -> Result<Uplink, DaemonError> {
        let address: Ipv4Cidr = u
            .address
            .as_deref()
            .ok_or(DaemonError::NoUplinkAddress)?
            .parse()
            .map_err(StateError::from)?;
        self.check_uplink_address(&address, u.next_hop)?;
        let mtu = self.uplink_mtu(u.mtu)?;
        let address6 = self.uplink_address6(u.address6.as_deref(), u.next_hop6)?;
        if let Some(m) = u.mtu
            && address6.is_some()
            && m < crate::state::IPV6_MIN_MTU
        {
            return Err(DaemonError::UplinkMtu6(m));
        }
        match (&u.tap, &u.netns) {
            (Some(_), None) => {}
            (None, Some(n)) if Path::new(n).exists() => {}
            (None, Some(n)) => return Err(DaemonError::NoNetns(n.clone())),
            _ => return Err(DaemonError::UplinkWhere),
        }
        Ok(Uplink::Packet {
            tap: u.tap,
            netns: u.netns,
            address,
            next_hop: u.next_hop,
            mtu,
            address6,
            next_hop6: u.next_hop6,
        })
    }

    /// vswitch's IPv6 address on the outside segment: a host address of its prefix,
    /// apart from every network, with the next hop on the segment or link-local.
    fn uplink_address6(
        &self,
        address6: Option<&str>,
        next_hop6: Option<Ipv6Addr>,
    ) -> Result<Option<Ipv6Cidr>, DaemonError> {
        let Some(a) = address6 else {
            if next_hop6.is_some() {
                return Err(DaemonError::NoUplinkAddress6);
            }
            return Ok(None);
        };
        let a: Ipv6Cidr = a.parse().map_err(StateError::from)?;
        let usable = (1..=127).contains(&a.prefix_len())
            && a.addr() != a.network().addr()
            && !a.addr().is_multicast()
            && !dataplane::wire::ipv6::is_link_local(&a.addr());
        if !usable {
            return Err(DaemonError::UnusableAddress6(a));
        }
        let clash = (self.state.networks.values()).find_map(|n| {
            n.ipv6
                .filter(|v| v.subnet.overlaps(&a))
                .map(|v| (n, v.subnet))
        });
        if let Some((o, s)) = clash {
            return Err(StateError::Overlap(a.to_string(), o.name.clone(), s.to_string()).into());
        }
        if let Some(h) = next_hop6
            && (h == a.addr() || !(a.contains(h) || dataplane::wire::ipv6::is_link_local(&h)))
        {
            return Err(DaemonError::BadNextHop6 {
                hop: h,
                segment: a.network(),
            });
        }
        Ok(Some(a))
    }

    /// vswitch's address on the outside segment: a host address of its prefix, apart
    /// from every network, with the next hop another address of the segment.
    fn check_uplink_address(
        &self,
        address: &Ipv4Cidr,
        next_hop: Option<Ipv4Addr>,
    ) -> Result<(), DaemonError> {
        if address.prefix_len() == 0
            || address.prefix_len() > 30
            || address.addr() == address.network().addr()
            || address.addr() == address.broadcast()
        {
            return Err(DaemonError::UnusableAddress(*address));
        }
        let clash = (self.state.networks.values())
            .find_map(|n| n.subnet.filter(|s| s.overlaps(address)).map(|s| (n, s)));
        if let Some((o, s)) = clash {
            return Err(
                StateError::Overlap(address.to_string(), o.name.clone(), s.to_string()).into(),
            );
        }
        if let Some(h) = next_hop
            && (!address.contains(h) || h == address.addr())
        {
            return Err(DaemonError::BadNextHop {
                hop: h,
                segment: address.network(),
            });
        }
        Ok(())
    }

    /// The segment's MTU, within what a port's frames can hold.
    fn uplink_mtu(&self, mtu: Option<u32>) -> Result<Option<u16>, DaemonError> {
        // Without offloads a port's frames are at most STD_FRAME_CAP bytes.
        let top = if self.cfg.offload {
            65520
        } else {
            (dataplane::port::STD_FRAME_CAP - 18) as u32
        };
        match mtu {
            None => Ok(None),
            Some(m) if (576..=top).contains(&m) => Ok(Some(m as u16)),
            Some(m) => Err(DaemonError::UplinkMtu { mtu: m, top }),
        }
    }
}
