//! File-like objects that mappings map: the [`Backing`] trait the fault engine asks for pages,
//! [`MemBacking`] (an in-memory object with an optional delay per read, standing for I/O), and
//! [`File`], the object an [`Mm`](crate::Mm) maps.
//!
//! A backing keeps the pages it has read in frames of the memory manager's pool (its page
//! cache): `page_if_cached` hands one out without blocking (the fault fast path),
//! `read_page` brings one in and may block (the slow path, run without an RCU guard). Each call
//! returns the frame with one reference for the caller; the page cache holds its own until the
//! backing is dropped, so a frame lives as long as the cache or a translation needs it.

use crate::frames::{FRAME_SIZE, Frame, FramePool};
use crate::page_cache::{BackingError, MAX_PAGES, PageCache};
use maple::sync::Mutex;
use maple::sync::atomic::{AtomicU64, Ordering};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a page never written holds (static, not on the stack: shuttle runs tasks on small
/// stacks).
static ZERO_PAGE: [u8; FRAME_SIZE] = [0; FRAME_SIZE];

/// A file-like object's pages, as the fault engine asks for them. Build its page cache on
/// [`PageCache`], which counts the references (see its example). The
/// contract:
/// - every frame returned carries one reference for the caller, who gives it to a translation
///   or back to the pool;
/// - while a page is cached, both methods return the same frame for it: shared mappings write
///   into that frame, and every mapping and `read`/`write` of the object must see those
///   writes (a backing that evicts a page may do so only when no translation maps it: maplevm
///   does not ask);
/// - the backing fills every byte of a frame it returns: the part of the last page beyond the
///   object's end reads as zeros, never as what the frame held before;
/// - `pages()` may change (an object that grows or shrinks): a fault at or beyond it is a bus
///   error; translations already installed beyond a new end are not removed by the fault
///   engine.
pub trait Backing: Send + Sync + fmt::Debug + 'static {
    /// The name `maps()` shows.
    fn name(&self) -> &str;

    /// The object's size in pages.
    fn pages(&self) -> u64;

    /// The frame holding page `pgoff` if it is in memory now, with one reference for the
    /// caller. Never blocks.
    fn page_if_cached(&self, pgoff: u64) -> Option<Frame>;

    /// Brings page `pgoff` into memory, blocking as long as that takes (I/O), and returns its
    /// frame with one reference for the caller.
    fn read_page(&self, pgoff: u64) -> Result<Frame, BackingError>;

    /// The pool the page cache's frames come from: the memory manager mapping the object must
    /// use the same one.
    fn frames(&self) -> &Arc<FramePool>;
}

/// An object in memory: its contents live in a byte store until a page is read into the page
/// cache, after which the cached frame is the page (shared mappings write there). Both are
/// sparse: pages never written cost nothing (they read as zeros), so a zero-filled object of
/// any size up to [`MemBacking::MAX_LEN`] is created at once, as Linux creates shared
/// anonymous memory. Pages stay cached until the backing is dropped.
pub struct MemBacking {
    name: String,
    /// The object's size in pages.
    pages: u64,
    /// The contents of pages that hold data and are not cached yet (a page absent from both
    /// is zeros). Its lock also orders `write_at` with a read into the cache copying the same
    /// page.
    store: Mutex<BTreeMap<u64, Box<[u8]>>>,
    cache: PageCache,
    delay: Duration,
    reads: AtomicU64,
}

impl fmt::Debug for MemBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemBacking")
            .field("name", &self.name)
            .field("pages", &self.pages())
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl MemBacking {
    /// The longest object: 256 TiB (what a [`PageCache`] can index).
    pub const MAX_LEN: u64 = MAX_PAGES * FRAME_SIZE as u64;

    /// An object named `name` holding `contents` (its size rounded up to pages, zero-padded),
    /// caching pages in `frames`.
    pub fn new(name: impl Into<String>, frames: &Arc<FramePool>, contents: &[u8]) -> Self {
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
        Self::with_store(
            name.into(),
            frames,
            contents.len().div_ceil(FRAME_SIZE) as u64,
            store,
        )
    }

    /// A zero-filled object of `len` bytes (rounded up to pages); nothing is allocated until
    /// pages are written or read. ENOMEM beyond [`MemBacking::MAX_LEN`].
    pub fn zeroed(name: impl Into<String>, frames: &Arc<FramePool>, len: u64) -> vma::Result<Self> {
        if len > Self::MAX_LEN {
            return Err(vma::Error::new(
                vma::Errno::ENOMEM,
                "longer than an in-memory object can be",
            ));
        }
        let pages = len.div_ceil(FRAME_SIZE as u64);
        Ok(Self::with_store(name.into(), frames, pages, BTreeMap::new()))
    }

    fn with_store(
        name: String,
        frames: &Arc<FramePool>,
        pages: u64,
        store: BTreeMap<u64, Box<[u8]>>,
    ) -> Self {
        Self {
            name,
            pages,
            store: Mutex::new(store),
            cache: PageCache::new(frames),
            delay: Duration::ZERO,
            reads: AtomicU64::new(0),
        }
    }

    /// The same object, with every read into the page cache taking `delay` (standing for I/O).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Reads into the page cache so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Pages in the page cache.
    pub fn cached_pages(&self) -> usize {
        self.cache.cached_pages()
    }

    /// The object's bytes at `offset` (as `pread`: from the page cache where a page is there);
    /// `OutsideObject` if the range leaves the object.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        self.each_page(offset, buf.len(), |pgoff, in_page, at, len| {
            let out = &mut buf[at..at + len];
            match self.cache.peek(pgoff) {
                Some(frame) => self.cache.frames().read(frame, in_page, out),
                None => {
                    let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
                    match store.get(&pgoff) {
                        Some(page) => out.copy_from_slice(&page[in_page..in_page + len]),
                        None => out.fill(0),
                    }
                }
            }
        })
    }

    /// Writes `data` into the object at `offset` (as `pwrite`); `OutsideObject` if the range
    /// leaves the object.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), BackingError> {
        self.each_page(offset, data.len(), |pgoff, in_page, at, len| {
            let data = &data[at..at + len];
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            match self.cache.peek(pgoff) {
                Some(frame) => self.cache.frames().write(frame, in_page, data),
                None => {
                    let page = store
                        .entry(pgoff)
                        .or_insert_with(|| vec![0; FRAME_SIZE].into_boxed_slice());
                    page[in_page..in_page + len].copy_from_slice(data);
                }
            }
        })
    }

    /// Splits `[offset, offset + len)` by page: `f(pgoff, offset in page, offset in buffer,
    /// length)`; `OutsideObject` (and no call) if the range leaves the object.
    fn each_page(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize, usize),
    ) -> Result<(), BackingError> {
        let size = self.pages * FRAME_SIZE as u64;
        let end = offset
            .checked_add(len as u64)
            .filter(|&end| end <= size)
            .ok_or(BackingError::OutsideObject)?;
        let mut at = offset;
        while at < end {
            let in_page = (at % FRAME_SIZE as u64) as usize;
            let chunk = (FRAME_SIZE - in_page).min((end - at) as usize);
            f(at / FRAME_SIZE as u64, in_page, (at - offset) as usize, chunk);
            at += chunk as u64;
        }
        Ok(())
    }
}

impl Backing for MemBacking {
    fn name(&self) -> &str {
        &self.name
    }

    fn pages(&self) -> u64 {
        self.pages
    }

    fn page_if_cached(&self, pgoff: u64) -> Option<Frame> {
        self.cache.get(pgoff)
    }

    fn read_page(&self, pgoff: u64) -> Result<Frame, BackingError> {
        if pgoff >= self.pages {
            return Err(BackingError::OutsideObject);
        }
        if let Some(frame) = self.cache.get(pgoff) {
            return Ok(frame);
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        // Filled and published under the store lock, so `write_at` writes either the store
        // before the copy or the frame after it.
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let frames = self.cache.frames();
        let frame = self.cache.get_or_fill(pgoff, |frame| {
            let page = store.get(&pgoff).map_or(&ZERO_PAGE[..], |page| &page[..]);
            frames.write(frame, 0, page);
            self.reads.fetch_add(1, Ordering::Relaxed);
        })?;
        // The cached frame is the page from now on.
        store.remove(&pgoff);
        Ok(frame)
    }

    fn frames(&self) -> &Arc<FramePool> {
        self.cache.frames()
    }
}

/// An object an [`Mm`](crate::Mm) can map: a [`Backing`] with the identity the VMA layer needs
/// (two mappings map the same object when they hold the same `Arc<File>`).
#[derive(Debug)]
pub struct File {
    backing: Arc<dyn Backing>,
}

impl File {
    /// Wraps a backing (keep a clone of the `Arc` to reach the backing itself, e.g. to read
    /// what shared mappings wrote).
    pub fn new(backing: Arc<dyn Backing>) -> Arc<Self> {
        Arc::new(Self { backing })
    }

    /// The backing.
    pub fn backing(&self) -> &dyn Backing {
        &*self.backing
    }
}

impl vma::MappedFile for File {
    fn name(&self) -> &str {
        self.backing.name()
    }
}
