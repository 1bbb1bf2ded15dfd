//! Owning pointers the tree stores directly in its slots (the kernel Rust bindings call the
//! idea `ForeignOwnable`): a value is one raw pointer in a leaf, so a lookup reaches the value
//! in one step, and the tree never allocates on its own for a value.

use std::sync::Arc;

/// An owning pointer that can be turned into a raw pointer to its target and back.
///
/// # Safety
/// `into_raw` must return a non-null pointer that stays valid (for shared reads, from any
/// thread) until it is passed back to `from_raw` once; `from_raw(into_raw(p))` must give back
/// `p`'s ownership.
pub unsafe trait ValuePointer: Sized + Send + Sync + 'static {
    /// What the pointer points to; readers get `&Target`.
    type Target: Send + Sync + 'static;

    /// Gives up ownership as a raw, non-null pointer.
    fn into_raw(self) -> *mut Self::Target;

    /// Takes ownership back.
    ///
    /// # Safety
    /// `ptr` must come from `into_raw` of this type and be taken back only once.
    unsafe fn from_raw(ptr: *mut Self::Target) -> Self;

    /// Drops the value but keeps its memory allocated (used by shuttle builds, where a reader
    /// that reaches a value after its grace period must find it poisoned, not freed).
    ///
    /// # Safety
    /// As for `from_raw`.
    #[cfg(feature = "shuttle")]
    unsafe fn drop_in_quarantine(ptr: *mut Self::Target);
}

// SAFETY: Box::into_raw / from_raw round-trip ownership of a non-null heap value.
unsafe impl<T: Send + Sync + 'static> ValuePointer for Box<T> {
    type Target = T;

    fn into_raw(self) -> *mut T {
        Box::into_raw(self)
    }

    unsafe fn from_raw(ptr: *mut T) -> Self {
        // SAFETY: forwarded from the caller.
        unsafe { Box::from_raw(ptr) }
    }

    #[cfg(feature = "shuttle")]
    unsafe fn drop_in_quarantine(ptr: *mut T) {
        // SAFETY: forwarded; the allocation is leaked on purpose.
        unsafe { std::ptr::drop_in_place(ptr) }
    }
}

// SAFETY: Arc::into_raw / from_raw round-trip one strong reference to a non-null value.
unsafe impl<T: Send + Sync + 'static> ValuePointer for Arc<T> {
    type Target = T;

    fn into_raw(self) -> *mut T {
        Arc::into_raw(self).cast_mut()
    }

    unsafe fn from_raw(ptr: *mut T) -> Self {
        // SAFETY: forwarded from the caller.
        unsafe { Arc::from_raw(ptr) }
    }

    #[cfg(feature = "shuttle")]
    unsafe fn drop_in_quarantine(ptr: *mut T) {
        // SAFETY: forwarded from the caller.
        let arc = unsafe { Arc::from_raw(ptr) };
        if Arc::strong_count(&arc) == 1 {
            // SAFETY: the last reference: drop the value in place and leak the allocation.
            unsafe { std::ptr::drop_in_place(ptr) };
            std::mem::forget(arc);
        }
    }
}
