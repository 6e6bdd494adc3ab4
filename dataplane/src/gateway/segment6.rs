//! vswitch's IPv6 on a packet uplink's segment: it answers neighbour solicitations and
//! pings for its address there (and its link-local one), refuses the rest as IPv4
//! does (`segment.rs`), learns the segment's
//! neighbours from neighbour discovery for the workers, solicits the next hop until it
//! answers, and answers what the workers punt of routed IPv6 (hop limit exceeded,
//! packet too big with the segment's MTU, neighbour unresolved, the uplink's own
//! address from inside: `own_address.rs`).

use std::net::Ipv6Addr;

use super::action::Actions;
use super::config::PacketUplink6;
use super::dispatch::{Gateway, Inbound};
use super::{GatewayNet6, icmp6, ndp};
use crate::config::UPLINK_DOMAIN;
use crate::port::Punt;
use crate::wire::ipv6::{Icmpv6Type, link_local};
use crate::wire::{EthernetFrame, Ipv6Packet};

impl Gateway {
    /// vswitch's IPv6 on the segment, as the responders see a network.
    pub(super) fn segment_net6(&self) -> Option<(PacketUplink6, GatewayNet6)> {
        let up = self.cfg.packet?;
        let v6 = up.v6?;
        let net = GatewayNet6 {
            gateway: v6.ext_ip,
            link_local: link_local(up.ext_mac),
            gateway_mac: up.ext_mac,
            subnet: v6.prefix,
            mtu: up.mtu,
            dns: false,
            router: false,
            lease_secs: 0,
            autonomous: false,
            domain_name: String::new(),
        };
        Some((v6, net))
    }

    /// An IPv6 frame from the packet uplink's segment: neighbour discovery and pings
    /// for vswitch's addresses.
    pub(super) fn segment_frame6(&mut self, f: Inbound<'_>, out: &mut Actions) {
        let Some((v6, net)) = self.segment_net6() else {
            return;
        };
        // A flow's packet whose hop limit ran out on the way in (the workers left it
        // untranslated): its sender hears time exceeded from vswitch's address.
        if f.punt == Punt::TimeExceeded {
            let kind = (Icmpv6Type::TIME_EXCEEDED, 0);
            if self.uplink_limit.allow(f.now)
                && out.send_with(UPLINK_DOMAIN.0, |b| icmp6::error(f.data, &net, kind, 0, b))
            {
                self.stats.icmp_errors += 1;
            }
            return;
        }
        if let Some((ip, mac)) = ndp::announced(f.data)
            && let Some(n) = &self.neigh
        {
            n.v6.learn(ip, mac);
            if Some(ip) == v6.next_hop {
                n.v6.set_next_hop(Some(mac));
            }
        }
        if out.send_with(UPLINK_DOMAIN.0, |b| ndp::na_reply(f.data, &net, b)) {
            self.stats.nd_replies += 1;
        } else if out.send_with(UPLINK_DOMAIN.0, |b| icmp6::echo_reply(f.data, &net, b)) {
            self.stats.echo_replies += 1;
        } else {
            self.refuse_on_segment(f, out);
        }
    }

    /// Solicits `target` on the uplink's segment.
    fn solicit_segment(&mut self, target: Ipv6Addr, out: &mut Actions) {
        let Some((v6, net)) = self.segment_net6() else {
            return;
        };
        // From the address of the target's scope.
        let src = if crate::wire::ipv6::is_link_local(&target) {
            net.link_local
        } else {
            v6.ext_ip
        };
        out.send_with(UPLINK_DOMAIN.0, |b| {
            ndp::solicit((net.gateway_mac, src), target, b)
        });
    }

    /// A routed IPv6 frame the workers could not send out the packet uplink, for the
    /// reason they give: hop limit exceeded, larger than the segment's MTU (packet too
    /// big, which the sender's path MTU follows), or its neighbour not resolved yet
    /// (solicited; this packet is lost). False when the frame was not punted.
    pub(super) fn packet_routed6(
        &mut self,
        f: Inbound<'_>,
        net: &GatewayNet6,
        out: &mut Actions,
    ) -> bool {
        let Some((v6, _)) = self.segment_net6() else {
            return false;
        };
        match f.punt {
            Punt::None => return false,
            Punt::TimeExceeded => {
                self.icmp6_error(f, net, (Icmpv6Type::TIME_EXCEEDED, 0), 0, out);
            }
            Punt::TooBig => {
                let mtu = self.cfg.packet.map_or(0, |u| u32::from(u.mtu));
                self.icmp6_error(f, net, (Icmpv6Type::PACKET_TOO_BIG, 0), mtu, out);
            }
            Punt::UplinkAddress => self.for_uplink_address6(f, net, out),
            Punt::Unresolved => {
                let dst = EthernetFrame::new_checked(f.data)
                    .ok()
                    .and_then(|e| Ipv6Packet::new_checked(e.payload()).ok().map(|p| p.dst()));
                let target = dst.filter(|d| v6.on_link(*d)).or(v6.next_hop);
                if let Some(t) = target {
                    self.solicit_segment(t, out);
                }
            }
        }
        true
    }

    /// Once a second with a packet uplink carrying IPv6: solicits an unresolved next
    /// hop.
    pub(super) fn tick_segment6(&mut self, out: &mut Actions) {
        let Some((v6, _)) = self.segment_net6() else {
            return;
        };
        if let (Some(hop), Some(n)) = (v6.next_hop, &self.neigh)
            && n.v6.next_hop().is_none()
        {
            self.solicit_segment(hop, out);
        }
    }
}
