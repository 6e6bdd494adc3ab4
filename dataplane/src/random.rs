//! Randomness from the kernel (`getrandom(2)`), for hash seeds, port choices and ids.

/// Fills `buf` from the kernel's random source; false when it could not (too early in
/// boot, or the call is refused), leaving `buf` partly or wholly as it was.
pub fn fill(buf: &mut [u8]) -> bool {
    // SAFETY: getrandom writes at most buf.len() bytes into buf, which we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).is_ok_and(|n| n == buf.len())
}

/// A random 64-bit value; when the kernel cannot give one, the clock and the process
/// id stand in (good enough for a hash seed, never for a secret).
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    if fill(&mut b) {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}
