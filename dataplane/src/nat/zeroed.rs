//! Tables allocated as zeroed memory: the kernel maps such pages only when they are
//! first touched, so a flow table costs resident memory for the part flows have used,
//! not for its whole size at start (an IPv6 table that never sees a flow costs none).

use std::alloc::{Layout, alloc_zeroed, handle_alloc_error};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

/// Types for which all-zero bytes are a valid value.
///
/// # Safety
/// An implementor must be valid (and mean its empty state) when every byte is zero:
/// integers, atomics of integers and `bool`, arrays and structs of such.
pub unsafe trait Zeroed: Sized {}

// SAFETY: atomics have the bit validity of their integer (or `bool`), zero included.
unsafe impl Zeroed for AtomicU64 {}
// SAFETY: as above.
unsafe impl Zeroed for AtomicU32 {}
// SAFETY: as above: zero is `false`.
unsafe impl Zeroed for AtomicBool {}
// SAFETY: an array of zero-valid elements is zero-valid.
unsafe impl<T: Zeroed, const N: usize> Zeroed for [T; N] {}

/// `n` values of `T`, all zero, in memory the kernel maps on first touch (a large
/// zeroed allocation is fresh anonymous pages).
pub fn boxed<T: Zeroed>(n: usize) -> Box<[T]> {
    if n == 0 || size_of::<T>() == 0 {
        return Box::default();
    }
    let Ok(layout) = Layout::array::<T>(n) else {
        handle_alloc_error(Layout::new::<T>())
    };
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        handle_alloc_error(layout)
    }
    // SAFETY: `ptr` holds `n` zeroed `T`s, valid by `Zeroed`, allocated by the global
    // allocator with the layout `Box<[T]>` frees with (`Layout::array::<T>(n)`).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn a_zeroed_table_reads_zero_and_takes_stores() {
        let t: Box<[[AtomicU64; 5]]> = boxed(1 << 16);
        assert_eq!(t.len(), 1 << 16);
        assert!(t.iter().all(|w| w.iter().all(|a| a.load(Relaxed) == 0)));
        t[65535][4].store(7, Relaxed);
        assert_eq!(t[65535][4].load(Relaxed), 7);
        let empty: Box<[AtomicU32]> = boxed(0);
        assert!(empty.is_empty());
    }
}
