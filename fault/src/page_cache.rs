//! [`PageCache`]: a file's page cache — a sparse index from page offset to a frame of the
//! pool, holding one reference per cached frame.
//!
//! Invariants:
//! - A page's entry is set with a compare-and-swap (Release, pairing with the Acquire of
//!   lookups: the frame's contents are visible before its number is) and cleared only by
//!   [`PageCache::remove`], whose caller (the file's truncate and hole punch) first makes sure
//!   no lookup of those pages is running or can start (docs/files.md): while cached, a page is
//!   always the same frame (shared mappings write there, and every mapping sees those writes).
//! - Each present entry holds one reference on its frame; every frame handed out carries one
//!   more, for the caller.
//! - The index is a radix tree laid out as the page table (lookups without locks, tables
//!   allocated on first use, so it costs only what is cached); its tables are never unlinked
//!   before the cache is dropped, so walking them needs no guard.

use crate::frames::{FRAME_SIZE, Frame, FramePool};
use crate::pagetable::{ADDRESS_LIMIT, PageTable, Pte};
use maple::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a backing (or its page cache) could not supply a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingError {
    /// The page lies beyond the end of the object (a fault there is a bus error).
    OutsideObject,
    /// No frame was free to hold it.
    OutOfMemory,
}

/// The most pages a cache can index: 2^36 (256 TiB of 4 KiB pages).
pub const MAX_PAGES: u64 = ADDRESS_LIMIT / FRAME_SIZE as u64;

/// A page cache: page offset → frame, one reference held per cached page (see the module
/// documentation).
pub struct PageCache {
    frames: Arc<FramePool>,
    index: PageTable,
    cached: AtomicUsize,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("cached_pages", &self.cached_pages())
            .finish_non_exhaustive()
    }
}

impl PageCache {
    /// An empty cache whose frames come from `frames`.
    pub fn new(frames: &Arc<FramePool>) -> Self {
        Self {
            frames: frames.clone(),
            index: PageTable::new(),
            cached: AtomicUsize::new(0),
        }
    }

    /// The pool the frames come from.
    pub fn frames(&self) -> &Arc<FramePool> {
        &self.frames
    }

    /// Pages cached so far.
    pub fn cached_pages(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    /// The frame of page `pgoff` if it is cached, without taking a reference (for reading its
    /// contents while the cache is alive, as `pread` does).
    pub fn peek(&self, pgoff: u64) -> Option<Frame> {
        if pgoff >= MAX_PAGES {
            return None;
        }
        // Acquire pairs with the Release of the CAS in `get_or_fill`.
        let entry = Pte(self
            .index
            .entry(pgoff * FRAME_SIZE as u64)?
            .load(Ordering::Acquire));
        entry.present().then(|| entry.frame())
    }

    /// The frame of page `pgoff` if it is cached, with one reference for the caller. Never
    /// blocks.
    pub fn get(&self, pgoff: u64) -> Option<Frame> {
        let frame = self.peek(pgoff)?;
        // The cache's own reference keeps the frame while the cache lives, and the caller
        // holds the cache.
        self.frames.get(frame);
        Some(frame)
    }

    /// Caches `frame` (whose reference the cache takes) as page `pgoff`, unless another
    /// thread cached one first (then `frame` goes back to the pool). Returns the cached frame
    /// with one reference for the caller. `pgoff` must be below [`MAX_PAGES`].
    pub fn insert(&self, pgoff: u64, frame: Frame) -> Frame {
        let entry = self.index.entry_or_insert(pgoff * FRAME_SIZE as u64);
        // Release pairs with the Acquire in `peek`; AcqRel on success keeps the order.
        match entry.compare_exchange(0, Pte::new(frame, 0).0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.cached.fetch_add(1, Ordering::Relaxed);
                // One reference for the cache (the caller's), one for the caller.
                self.frames.get(frame);
                frame
            }
            Err(winner) => {
                // SAFETY: the frame was never published; this is its only reference.
                unsafe { self.frames.put(frame) };
                let winner = Pte(winner).frame();
                self.frames.get(winner);
                winner
            }
        }
    }

    /// Takes the pages of `[first, end)` out of the cache and returns their frames, each with
    /// the cache's reference (put it once no lookup can still be using the frame).
    pub fn remove(&self, first: u64, end: u64) -> Vec<Frame> {
        let to_address = |pgoff: u64| pgoff.min(MAX_PAGES) * FRAME_SIZE as u64;
        let frames = self.index.clear(to_address(first), to_address(end));
        self.cached.fetch_sub(frames.len(), Ordering::Relaxed);
        frames
    }
}

impl Drop for PageCache {
    fn drop(&mut self) {
        let frames = self.index.clear(0, ADDRESS_LIMIT);
        // SAFETY: the cache's own references; translations hold their own.
        unsafe { self.frames.put_many(&frames) };
    }
}
