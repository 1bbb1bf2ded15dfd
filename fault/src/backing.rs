//! Where a file's pages are stored below its page cache: the [`Backing`] trait (a
//! filesystem's or a block device's part: read a page in, forget a range) and [`MemBacking`],
//! an in-memory store with an optional delay per read standing for I/O.
//!
//! A [`File`](crate::File) owns the page cache, the size and the reverse map; it asks its
//! backing for a page the first time the page is needed and keeps it cached from then on
//! (writes through shared mappings and `write_at` go to the cached page) until memory runs low
//! or `sync` is called: then dirty pages are written back to it, and clean ones may be
//! dropped and read again later. A backing therefore counts no references and sees no frames:
//! it fills and stores byte buffers.

use crate::frames::FRAME_SIZE;
use crate::page_cache::BackingError;
use maple::sync::Mutex;
use maple::sync::atomic::{AtomicU64, Ordering};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The storage under a file's page cache. The contract:
/// - `read` fills every byte of `page` with page `pgoff`'s stored contents: zeros where nothing
///   was stored (beyond the data, in holes), never what the buffer held before;
/// - `read` may block (I/O); the file calls it with no lock and no read-side section held, and
///   may call it for the same page from several threads at once (one result is kept);
/// - after `write(pgoff, page)` returns, `read` of that page gives `page` (writeback: the file
///   calls it for a dirty cached page, with no lock held that faults take; never for a page
///   being read in at the same time);
/// - after `discard(first, end)` returns, pages in `[first, end)` read as zeros (the file
///   calls it for truncate and hole punch, when no page of the range is cached or being read
///   in).
pub trait Backing: Send + Sync + fmt::Debug + 'static {
    /// Fills `page` (one page long) with the stored contents of page `pgoff`.
    fn read(&self, pgoff: u64, page: &mut [u8]) -> Result<(), BackingError>;

    /// Stores `page` (one page long) as page `pgoff`'s contents.
    fn write(&self, pgoff: u64, page: &[u8]) -> Result<(), BackingError>;

    /// Forgets the pages of `[first, end)`: they read as zeros from now on.
    fn discard(&self, first: u64, end: u64);
}

/// Pages kept in memory, sparse: pages never stored cost nothing and read as zeros, so a
/// zero-filled file of any size is created at once (as Linux creates shared anonymous memory).
pub struct MemBacking {
    store: Mutex<BTreeMap<u64, Box<[u8]>>>,
    delay: Duration,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl fmt::Debug for MemBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemBacking")
            .field("delay", &self.delay)
            .field("reads", &self.reads())
            .field("writes", &self.writes())
            .finish_non_exhaustive()
    }
}

impl MemBacking {
    /// A store holding `contents` from page 0 (the last page zero-padded).
    pub fn new(contents: &[u8]) -> Self {
        let store = contents
            .chunks(FRAME_SIZE)
            .enumerate()
            .filter(|(_, chunk)| chunk.iter().any(|&byte| byte != 0))
            .map(|(pgoff, chunk)| {
                let mut page = vec![0; FRAME_SIZE].into_boxed_slice();
                page[..chunk.len()].copy_from_slice(chunk);
                (pgoff as u64, page)
            })
            .collect();
        Self {
            store: Mutex::new(store),
            delay: Duration::ZERO,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// The same store, with every read taking `delay` (standing for I/O).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Reads so far (page-cache misses).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Pages written back so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

impl Backing for MemBacking {
    fn read(&self, pgoff: u64, page: &mut [u8]) -> Result<(), BackingError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        match store.get(&pgoff) {
            Some(stored) => page.copy_from_slice(stored),
            None => page.fill(0),
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write(&self, pgoff: u64, page: &[u8]) -> Result<(), BackingError> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if page.iter().all(|&byte| byte == 0) {
            store.remove(&pgoff);
        } else {
            store.insert(pgoff, page.into());
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn discard(&self, first: u64, end: u64) {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let doomed: Vec<u64> = store.range(first..end).map(|(&pgoff, _)| pgoff).collect();
        for pgoff in doomed {
            store.remove(&pgoff);
        }
    }
}
