//! RFC 5961 §3 for the socket uplink's connections: an RST from a container whose
//! sequence number is inside the receive window but not exactly the next one expected
//! does not end the connection; it gets a challenge ACK instead (the sender, if it
//! really meant to reset, answers that ACK with an RST carrying the exact number).
//!
//! smoltcp ends a connection on any in-window RST, so the uplink judges each RST first
//! ([`judge`]) from what it knows of the connection: the container's initial sequence
//! number, the bytes taken out of smoltcp's receive buffer, what is still in it, and a
//! FIN. An inexact one is rewritten ([`into_probe`]) into an empty ACK one before the
//! window, which smoltcp answers with its own challenge ACK (SEQ = SND.NXT, ACK =
//! RCV.NXT, rate limited to one a second per connection as §7 asks) without changing
//! any state.

use crate::wire::TcpPacket;
use crate::wire::tcp::TcpFlags;

/// What to do with an RST on a synchronized connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RstVerdict {
    /// Exactly the next sequence number: the connection ends.
    Reset,
    /// Inside the window, inexact: answered with a challenge ACK.
    Challenge,
    /// Outside the window: dropped (smoltcp drops it too).
    Outside,
}

/// Judges an RST with sequence number `seq`, the receiver expecting `rcv_nxt` with
/// `window` bytes of room (an upper bound of what was advertised: a wider window only
/// turns drops into challenges, never a reset into anything else).
pub fn judge(seq: u32, rcv_nxt: u32, window: u32) -> RstVerdict {
    let off = seq.wrapping_sub(rcv_nxt);
    if off == 0 {
        RstVerdict::Reset
    } else if off < window.max(1) {
        RstVerdict::Challenge
    } else {
        RstVerdict::Outside
    }
}

/// The next sequence number expected from the container: its initial one, one for the
/// SYN, the bytes taken out of the receive buffer and those still in it, one for a FIN.
pub fn rcv_nxt(isn: u32, taken: u32, queued: usize, fin: bool) -> u32 {
    isn.wrapping_add(1)
        .wrapping_add(taken)
        .wrapping_add(queued as u32)
        .wrapping_add(u32::from(fin))
}

/// Rewrites the TCP segment `tcp` (an RST) into an empty ACK of `ack` one byte before
/// the window (`rcv_nxt - 1`): a segment smoltcp answers with a challenge ACK and
/// otherwise ignores. False when `tcp` is too short to be a TCP header.
pub fn into_probe(tcp: &mut [u8], rcv_nxt: u32, ack: u32) -> bool {
    let Ok(mut t) = TcpPacket::new_checked(tcp) else {
        return false;
    };
    t.set_flags(TcpFlags::ACK);
    t.set_seq(rcv_nxt.wrapping_sub(1));
    t.set_ack(ack);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_number_resets() {
        assert_eq!(judge(1000, 1000, 65535), RstVerdict::Reset);
        assert_eq!(judge(1001, 1000, 65535), RstVerdict::Challenge);
        assert_eq!(judge(1000 + 65534, 1000, 65535), RstVerdict::Challenge);
        assert_eq!(judge(1000 + 65535, 1000, 65535), RstVerdict::Outside);
        assert_eq!(judge(999, 1000, 65535), RstVerdict::Outside);
        // Across the wrap of the sequence space.
        assert_eq!(judge(5, u32::MAX - 5, 100), RstVerdict::Challenge);
        assert_eq!(judge(u32::MAX - 5, u32::MAX - 5, 100), RstVerdict::Reset);
    }

    #[test]
    fn the_next_number_counts_syn_bytes_and_fin() {
        assert_eq!(rcv_nxt(100, 0, 0, false), 101);
        assert_eq!(rcv_nxt(100, 50, 10, true), 162);
        assert_eq!(rcv_nxt(u32::MAX, 1, 0, false), 1);
    }

    #[test]
    fn a_probe_is_an_ack_before_the_window() {
        let mut seg = [0u8; 20];
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_header_len(20);
        t.set_flags(TcpFlags::RST);
        assert!(into_probe(&mut seg, 5000, 77));
        let t = TcpPacket::new_checked(&seg[..]).unwrap();
        assert_eq!(t.flags(), TcpFlags::ACK);
        assert_eq!(t.seq(), 4999);
        assert_eq!(t.ack(), 77);
        assert!(!into_probe(&mut [0u8; 10], 1, 1));
    }
}
