//! Classification: which domain a frame of an untrusted port belongs to, with its tag
//! popped so that the frame is untagged inside the switch.

use crate::bridge::DropReason;
use crate::config::{PortConf, PortMode, Snapshot};
use crate::ids::{DomainId, VlanId};
use crate::port::Frame;
use crate::wire::vlan::is_tpid;
use crate::wire::{EtherType, EthernetFrame, VlanTag};

/// The tag in front of a frame's payload: its VID (0 for a priority tag) and the
/// EtherType behind it.
#[derive(Clone, Copy)]
struct Tag {
    vid: u16,
    inner: u16,
}

/// Classify a frame of an untrusted port: the domain it belongs to (its port's network,
/// or the network of its VLAN on a trunk), with its tag popped so the frame is untagged
/// inside the switch. Returns the domain and the EtherType behind the tag.
#[inline(always)]
pub(super) fn classify(
    snap: &Snapshot,
    pconf: &PortConf,
    f: &mut Frame,
) -> Result<(DomainId, u16), DropReason> {
    let eth = EthernetFrame::new_checked(f.data()).map_err(|_| DropReason::Malformed)?;
    let outer = eth.ethertype();
    let tag = if outer == EtherType::VLAN {
        // A tagged frame shorter than the tag is malformed whatever the port.
        let t = VlanTag::new_checked(eth.payload()).map_err(|_| DropReason::Malformed)?;
        Some(Tag {
            vid: t.vid(),
            inner: t.ethertype(),
        })
    } else {
        None
    };
    let domain = match &pconf.mode {
        PortMode::Access { domain } => access(*domain, outer, tag)?,
        PortMode::Trunk { native, vlans } => match tag.map_or(0, |t| t.vid) {
            0 => native.ok_or(DropReason::NoNetwork)?,
            vid if !vlans.contains(vid) => return Err(DropReason::VlanNotAllowed),
            // 4095 is reserved: no network has it.
            vid => VlanId::new(vid)
                .and_then(|v| snap.vlan_to_domain(v))
                .ok_or(DropReason::NoNetwork)?,
        },
    };
    let ethertype = match tag {
        Some(t) => {
            if !f.pop_tag() {
                return Err(DropReason::Malformed);
            }
            t.inner
        }
        None => outer,
    };
    // A tag behind the one classified (double tagging, or an S-tag) would leave a
    // trunk as a tag of another network: VLAN hopping.
    if is_tpid(ethertype) {
        return Err(DropReason::VlanNotAllowed);
    }
    Ok((domain, ethertype))
}

/// An access port takes untagged frames of its domain, and priority-tagged ones (VID
/// 0) with nothing tagged behind them (VLAN hopping), never 802.1ad.
#[inline(always)]
fn access(domain: DomainId, outer: u16, tag: Option<Tag>) -> Result<DomainId, DropReason> {
    match tag {
        Some(Tag { vid: 1.., .. }) => Err(DropReason::VlanNotAllowed),
        Some(Tag { inner, .. }) if is_tpid(inner) => Err(DropReason::DoubleTag),
        _ if outer == EtherType::QINQ => Err(DropReason::DoubleTag),
        _ => Ok(domain),
    }
}
