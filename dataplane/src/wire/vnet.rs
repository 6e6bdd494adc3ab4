//! The virtio-net header (`struct virtio_net_hdr`, without `num_buffers`) a TAP opened
//! with IFF_VNET_HDR puts before each frame: the offload metadata of the frame (a
//! partial checksum to complete, a super-frame to segment).

/// The virtio-net header a TAP with IFF_VNET_HDR puts before each frame: offload
/// metadata (checksum to complete, segmentation to do). Little-endian on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const LEN: usize = 10;
    /// `flags`: the transport checksum is partial; complete it at csum_start+csum_offset.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// `flags`: the checksum is known good.
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    pub const GSO_ECN: u8 = 0x80;

    /// Reads a header from the first ten bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; 10] = b.get(..Self::LEN)?.try_into().ok()?;
        let [flags, gso_type, h0, h1, g0, g1, s0, s1, o0, o1] = *b;
        Some(VnetHdr {
            flags,
            gso_type,
            hdr_len: u16::from_le_bytes([h0, h1]),
            gso_size: u16::from_le_bytes([g0, g1]),
            csum_start: u16::from_le_bytes([s0, s1]),
            csum_offset: u16::from_le_bytes([o0, o1]),
        })
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let [h0, h1] = self.hdr_len.to_le_bytes();
        let [g0, g1] = self.gso_size.to_le_bytes();
        let [s0, s1] = self.csum_start.to_le_bytes();
        let [o0, o1] = self.csum_offset.to_le_bytes();
        [self.flags, self.gso_type, h0, h1, g0, g1, s0, s1, o0, o1]
    }

    /// A TCP/IPv4 super-frame to cut into `gso_size` segments, its checksum field
    /// holding the pseudo-header sum: `l4_start` is where the TCP header starts in the
    /// frame, `hdr_len` where its payload does.
    pub fn tcpv4(l4_start: u16, hdr_len: u16, gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: Self::F_NEEDS_CSUM,
            gso_type: Self::GSO_TCPV4,
            hdr_len,
            gso_size,
            csum_start: l4_start,
            csum_offset: crate::wire::tcp::CHECKSUM_OFFSET as u16,
        }
    }

    /// As [`VnetHdr::tcpv4`], for TCP over IPv6.
    pub fn tcpv6(l4_start: u16, hdr_len: u16, gso_size: u16) -> VnetHdr {
        VnetHdr {
            gso_type: Self::GSO_TCPV6,
            ..Self::tcpv4(l4_start, hdr_len, gso_size)
        }
    }

    /// A super-frame: segmentation to do.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    /// A plain frame: nothing to complete, nothing to segment.
    #[inline]
    pub fn is_plain(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM == 0 && self.gso_type & !Self::GSO_ECN == Self::GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.to_bytes()), Some(h));
        assert_eq!(h.to_bytes()[4..6], 1448u16.to_le_bytes());
        assert!(VnetHdr::parse(&[0; 9]).is_none());
        assert!(VnetHdr::default().is_plain() && !h.is_plain());
    }
}
