//! A value kept on cache lines of its own.

/// Keeps a value on cache lines of its own (two lines: adjacent-line prefetchers pair them).
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct CacheAligned<T>(pub(crate) T);

impl<T> std::ops::Deref for CacheAligned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
