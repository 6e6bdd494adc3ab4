//! The framing of QEMU's `-netdev stream` (and passt's, and gvisor-tap-vsock's): each
//! Ethernet frame on the byte stream is preceded by its length, 4 bytes, big-endian.

/// Bytes of the length prefix in front of each frame.
pub const PREFIX_LEN: usize = 4;

/// The length a prefix announces; None when fewer than [`PREFIX_LEN`] bytes are given.
#[inline]
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    let p: [u8; PREFIX_LEN] = bytes.get(..PREFIX_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(p) as usize)
}

/// The prefix for a frame of `len` bytes (lengths past `u32::MAX` saturate).
#[inline]
pub fn prefix(len: usize) -> [u8; PREFIX_LEN] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trips_big_endian() {
        assert_eq!(prefix(1514), [0, 0, 0x05, 0xea]);
        assert_eq!(frame_len(&[0, 0, 0x05, 0xea, 0xff]), Some(1514));
        assert_eq!(frame_len(&[0, 0, 5]), None);
        assert_eq!(frame_len(&[0xff; 4]), Some(u32::MAX as usize));
    }
}
