//! [`File`]: an object any number of address spaces map (Linux's inode and `address_space`):
//! its page cache, its size, its reverse map, and the file-side calls (`read_at`, `write_at`,
//! `set_len`, `punch_hole`).
//!
//! Invariants (docs/files.md proves each):
//! - **One RCU domain per file**, the reverse map's. Page-cache lookups run in read-side
//!   sections keyed to the page offset (a fault from looking the page up to installing its
//!   translation; `read_at`, `write_at`); reverse-map walks run unkeyed.
//! - **Invalidation.** Truncate and hole punch are serialized (`resize`) and each runs one
//!   invalidation of a range of page offsets: the range is published (`Invalidation::begin`),
//!   then a grace period keyed to the range passes, then the range's pages leave the cache,
//!   every translation of them is removed through the reverse map, the backing forgets them,
//!   and the range is cleared. A fault or lookup that finds its page inside a published range
//!   waits for it to end; one that began before it was published ended within the grace period,
//!   so its translation was installed before the reverse-map walk removes it. Faults on pages
//!   outside the range neither wait nor are waited for. Waiting is fair: a fault that waited
//!   for an invalidation is owed a turn, and the next invalidation (other than an eviction,
//!   which gives way) begins only once every turn owed is done, so a truncate in a loop
//!   cannot starve the faults it holds up.
//! - **Fills.** A page read in from the backing is cached only if no invalidation covering it
//!   began since the read started (the invalidation's generation is checked inside the read-side
//!   section that inserts it), so a page read before a hole punch never re-enters the cache
//!   after it.
//! - **Reverse map.** Every VMA of every address space that maps the file is in the reverse
//!   map from before it can be found until its translations are gone (the VMA protocol's
//!   `mapped` / `unmapped` hooks). Translations move between addresses only under the mapper's
//!   relocation lock, which the invalidation's removal also takes, so a walk never misses a
//!   translation in flight.
//! - **Reclaim.** The file is a [`Shrinker`] of its frame pool. Eviction of a page is an
//!   invalidation of that one page that removes it only if it is clean once no lookup can
//!   reach it (the page cache's compare-and-swap), keeping the backing's copy; a dirty page is
//!   written back first: its dirty mark is taken, the faults that may have set it and not yet
//!   made their translation writable (both inside a section keyed to the page) are waited for,
//!   its shared translations are write-protected (a write then faults and marks it dirty again
//!   before it lands), the accesses through the old writable ones are
//!   waited for, then the frame is copied out. Truncate, hole punch, writeback and eviction
//!   are serialized by `resize`, which a shrinker only tries to take.
//! - **Reservations** (hugetlb files). Each huge page of the file is reserved in the pool at
//!   most once, from a shared mmap until a fault consumes it or a truncate, hole punch or the
//!   file's drop gives it back; a fault consumes it in one step with taking it out of the
//!   file's set, so a truncate racing the fault finds it either still there or consumed (seed
//!   001's miscount needed the two apart).
//! - Cached frames hold one reference each; a removed page's reference goes back once no lookup
//!   can reach it (after the grace period), and each translation's once its address space's
//!   readers are done with it.

use crate::backing::{Backing, MemBacking};
use crate::engine::FaultError;
use crate::frames::{FRAME_SIZE, Frame, FramePool, HUGE_FRAME_SIZE, Shrinker};
use crate::page_cache::{MAX_PAGES, PageCache};
use crate::pmd_share::Registry;
use maple::Guard;
use maple::intervals::IntervalTree;
use maple::rcu::{DefaultRcu, Keys, Rcu};
use maple::sync::atomic::{AtomicU64, Ordering};
use maple::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, spin_until};
use std::fmt;
use std::sync::{Arc, Weak};
use vma::{Backing as VmaBacking, Errno, Error, MappedFile, Mapping, PAGE_SIZE, Revoked};

/// An address space (or any user of a page table) that maps files: what an invalidation of a
/// file asks of each one its reverse map names.
pub trait Mapper: Send + Sync {
    /// Removes this mapper's translations of `file`'s pages `[first, end)` — every one when
    /// `even_cows` (truncate), else only those mapping the file's own frames (hole punch keeps
    /// private copies) — and returns what it revoked. Find the addresses with
    /// [`File::mapped_ranges`] while holding the lock under which this mapper moves
    /// translations (mremap), so that none is missed in flight ([`Memory::unmap_file_pages`]
    /// does all of it). Must not wait for this mapper's faults: a fault may be waiting for the
    /// file meanwhile.
    ///
    /// [`Memory::unmap_file_pages`]: crate::Memory::unmap_file_pages
    fn unmap_file_pages(&self, file: &File, first: u64, end: u64, even_cows: bool) -> Revoked;

    /// Write-protects this mapper's translations of the file's own frames of pages `[first,
    /// end)` (private copies keep theirs), so that a write faults first, and returns what it
    /// revoked (writeback's `page_mkclean`; [`Memory::write_protect_file_pages`] does all of
    /// it). The same rules as for `unmap_file_pages`.
    ///
    /// [`Memory::write_protect_file_pages`]: crate::Memory::write_protect_file_pages
    fn write_protect_file_pages(&self, file: &File, first: u64, end: u64) -> Revoked;

    /// Waits until no access through the translations `revoked` names is still in progress
    /// (called once the file no longer holds up this mapper's faults).
    fn await_revoked(&self, revoked: &Revoked);
}

/// How a file's reverse map and page lookups are protected against truncate and hole punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileSync {
    /// maplevm's: RCU keyed by page offset (see the module documentation); nothing a fault
    /// or an mmap does waits for a walk, and a truncate waits only for faults on its pages.
    #[default]
    Rcu,
    /// Linux's `i_mmap_rwsem`, for the benchmark's baselines: a reader-writer lock that faults
    /// hold shared from looking a page up to installing it (a hugetlb fault across the whole
    /// fault, its share lookup included, as Linux 5.7 to 5.19 did: the synchronization seed
    /// 001 settled on), that mmap and munmap take exclusive to change the
    /// reverse map ([`File::write_reverse_map`], which a writer may hold across its zap, as
    /// hugetlb's munmap did), and that truncate and hole punch hold exclusive once their range
    /// is published.
    RwSem,
    /// Kravetz's `hugetlb_vma_lock` (seed 000), for the benchmark: faults find and install
    /// pages under the RCU protocol of [`FileSync::Rcu`] (Linux: the hugetlb fault mutex and
    /// the per-VMA lock, which the design's own per-VMA lock stands for), and take
    /// `i_mmap_rwsem` shared only to look for a page table to share (Long's patch, seed 003);
    /// mmap and munmap take it exclusive to change the reverse map only, and truncate and hole
    /// punch hold it exclusive as well as waiting for the grace period.
    VmaLock,
}

/// One VMA in a file's reverse map: where it maps the file, and who maps it.
struct ReverseMapping {
    /// First address of the VMA (its first page maps the interval's first page offset).
    start: u64,
    mapper: Weak<dyn Mapper>,
    /// The VMA is locked (mlock): eviction leaves its pages alone.
    locked: bool,
}

impl ReverseMapping {
    fn mapper_id(&self) -> *const () {
        self.mapper.as_ptr() as *const ()
    }
}

/// A VMA found by [`File::walk_reverse_map`]: it maps the file's pages `[first, end)` from
/// `address` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRange {
    /// First page offset mapped.
    pub first: u64,
    /// One past the last page offset mapped.
    pub end: u64,
    /// The address where page `first` is mapped.
    pub address: u64,
}

/// Invalidations, for lookups: a generation (odd while one runs), and under a lock the range
/// of the latest one and the faults that wait for it. Lookups read the generation alone unless
/// one runs.
///
/// Waiting is fair: a fault that found its page inside a running invalidation waits until it
/// ends ([`Invalidation::wait_out`]) and is then owed a turn: the next invalidation of the file
/// begins only once every such fault has finished its retry ([`Turn`] dropped), so a truncate
/// in a loop cannot starve the faults it holds up (Linux's `invalidate_lock` is a fair rwsem
/// for the same reason). Eviction never waits for turns ([`Invalidation::try_begin`]): a
/// fault holding a turn may be the one reclaiming memory. Both sides spin briefly before they
/// sleep on a condition variable, which is signalled only when someone sleeps on it.
struct Invalidation {
    generation: AtomicU64,
    state: Mutex<InvalidationState>,
    /// Signalled when an invalidation that faults sleep on ends.
    ended: Condvar,
    /// Signalled when the last turn owed is done and the invalidation waiting for it sleeps.
    turns_done: Condvar,
}

/// The steps of a file's protocols that a deliberately broken test variant skips (set only in
/// shuttle builds, through `File::break_*`; elsewhere nothing is ever broken).
struct Broken(#[cfg(feature = "shuttle")] maple::sync::atomic::AtomicU8);

impl Broken {
    /// Truncate and hole punch skip publishing their range and the grace period.
    const INVALIDATION: u8 = 1;
    /// Invalidations begin without waiting for the turns owed.
    const FAIRNESS: u8 = 2;
    /// A fault consumes its page's reservation only after caching the page.
    const RESERVATIONS: u8 = 4;
    /// Address spaces link a shared page table without the file's section.
    const SHARING: u8 = 8;
    /// Writeback write-protects a page without waiting for the faults that marked it dirty.
    const WRITEBACK: u8 = 16;

    fn new() -> Self {
        Self(
            #[cfg(feature = "shuttle")]
            maple::sync::atomic::AtomicU8::new(0),
        )
    }

    #[cfg(feature = "shuttle")]
    fn set(&self, step: u8) {
        self.0.fetch_or(step, Ordering::SeqCst);
    }

    /// Whether `step` is skipped.
    fn skips(&self, step: u8) -> bool {
        #[cfg(feature = "shuttle")]
        return self.0.load(Ordering::SeqCst) & step != 0;
        #[cfg(not(feature = "shuttle"))]
        {
            let _ = step;
            false
        }
    }
}

/// How long a fault waiting for an invalidation, or an invalidation waiting for turns, spins
/// before it sleeps: about what a sleeping thread takes to wake up, longer than most waits.
const SPIN_BEFORE_SLEEPING: std::time::Duration = std::time::Duration::from_micros(20);

#[derive(Default)]
struct InvalidationState {
    /// The latest invalidation's range.
    first: u64,
    end: u64,
    /// Faults waiting until the running invalidation ends, and how many of them sleep.
    waiting: usize,
    sleeping: usize,
    /// Turns owed: faults that waited for the last invalidation and have not finished their
    /// retry.
    owed: usize,
    /// Whether an invalidation sleeps until the turns owed are done.
    begin_sleeps: bool,
}

impl InvalidationState {
    /// Whether the invalidation of this state, at `generation`, runs and covers a page of
    /// `[first, end)`.
    fn covers(&self, generation: u64, (first, end): (u64, u64)) -> bool {
        generation % 2 == 1 && self.first < end && first < self.end
    }
}

/// A fault's turn after waiting out an invalidation: no invalidation of the file begins until
/// it is dropped (hold it until the page is installed).
pub(crate) struct Turn<'a>(&'a Invalidation);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.owed -= 1;
        if state.owed == 0 && state.begin_sleeps {
            self.0.turns_done.notify_one();
        }
    }
}

impl Invalidation {
    fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            state: Mutex::new(InvalidationState::default()),
            ended: Condvar::new(),
            turns_done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InvalidationState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an invalidation running now covers any page of `[first, end)`.
    fn running_within(&self, first: u64, end: u64) -> bool {
        // SeqCst, with the writer's SeqCst increment and the grace period after it: a lookup
        // either sees the invalidation or has ended before the pages are removed.
        if self.generation.load(Ordering::SeqCst) % 2 == 0 {
            return false;
        }
        let state = self.lock();
        state.covers(self.generation.load(Ordering::SeqCst), (first, end))
    }

    /// Whether `pgoff` is inside an invalidation running now.
    fn running_over(&self, pgoff: u64) -> bool {
        self.running_within(pgoff, pgoff + 1)
    }

    /// Waits while an invalidation covering `pgoff` runs; returns the turn owed once it has
    /// ended, and how long it waited, or `None` at once when none covers `pgoff`.
    fn wait_out(&self, pgoff: u64) -> Option<(Turn<'_>, std::time::Duration)> {
        if self.generation.load(Ordering::SeqCst) % 2 == 0 {
            return None;
        }
        let mut state = self.lock();
        // The generation changes only under the lock: stable while it is held.
        let running = self.generation.load(Ordering::SeqCst);
        if !state.covers(running, (pgoff, pgoff + 1)) {
            return None;
        }
        let since = std::time::Instant::now();
        state.waiting += 1;
        drop(state);
        let ended = || self.generation.load(Ordering::SeqCst) != running;
        if !spin_until(SPIN_BEFORE_SLEEPING, ended) {
            let mut state = self.lock();
            if !ended() {
                state.sleeping += 1;
                while !ended() {
                    state = self.ended.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        // `end` counted this fault among the turns owed.
        Some((Turn(self), since.elapsed()))
    }

    /// Whether an invalidation covering `pgoff` began after generation `since` (read before a
    /// fill started reading the backing; when it was odd, the invalidation then running did
    /// not cover `pgoff`).
    fn began_over(&self, pgoff: u64, since: u64) -> bool {
        if self.generation.load(Ordering::SeqCst) == since {
            return false;
        }
        let state = self.lock();
        let now = self.generation.load(Ordering::SeqCst);
        // Invalidations begin at odd generations: those in (since, now] began after `since`.
        let begun = now.div_ceil(2) - since.div_ceil(2);
        match begun {
            0 => false,
            // Only the latest one: its range is known.
            1 => state.first <= pgoff && pgoff < state.end,
            // More than one: their ranges are not kept; read again.
            _ => true,
        }
    }

    /// Publishes `[first, end)` as being invalidated once every turn owed is done (the caller
    /// holds the file's `resize`, and nothing a fault with a turn may wait for).
    /// `fair` is false only in the broken variant, which begins at once.
    fn begin(&self, first: u64, end: u64, fair: bool) {
        let owed = |state: &InvalidationState| state.owed > 0 && fair;
        spin_until(SPIN_BEFORE_SLEEPING, || !owed(&self.lock()));
        let mut state = self.lock();
        if owed(&state) {
            state.begin_sleeps = true;
            while owed(&state) {
                state = self.turns_done.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.begin_sleeps = false;
        }
        self.publish(&mut state, first, end);
    }

    /// [`Invalidation::begin`] if no turn is owed now; false (nothing published) otherwise.
    fn try_begin(&self, first: u64, end: u64) -> bool {
        let mut state = self.lock();
        if state.owed > 0 {
            return false;
        }
        self.publish(&mut state, first, end);
        true
    }

    fn publish(&self, state: &mut InvalidationState, first: u64, end: u64) {
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        (state.first, state.end) = (first, end);
        self.generation.store(generation, Ordering::SeqCst);
    }

    /// Ends the running invalidation; the faults asleep on it are owed their turns.
    fn end(&self) {
        let mut state = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        state.owed += std::mem::take(&mut state.waiting);
        if std::mem::take(&mut state.sleeping) > 0 {
            self.ended.notify_all();
        }
    }
}

/// A file: a page cache over a [`Backing`], a size, and the reverse map of the VMAs that map
/// it in any number of address spaces (see the module documentation). Map it with
/// [`Mm::mmap`](crate::Mm::mmap); read and change it with the file-side calls.
///
/// ```
/// use fault::{File, FramePool, MapFlags, Mm, MmConfig, Prot};
/// use std::sync::Arc;
///
/// let frames = Arc::new(FramePool::new(Default::default()).unwrap());
/// let (a, b) = (Mm::new(MmConfig::default(), frames.clone()).unwrap(), Mm::new(MmConfig::default(), frames.clone()).unwrap());
/// let file = File::new("/data", &frames, &[7; 8192]);
/// let in_a = a.mmap(0, 8192, Prot::READ_WRITE, MapFlags::SHARED, Some((&file, 0))).unwrap();
/// let in_b = b.mmap(0, 8192, Prot::READ, MapFlags::SHARED, Some((&file, 0))).unwrap();
/// a.write(in_a + 4096, b"x").unwrap();
/// let mut byte = [0];
/// b.read(in_b + 4096, &mut byte).unwrap();
/// assert_eq!(byte, *b"x", "shared mappings see each other's writes");
/// file.set_len(4096).unwrap();
/// assert!(b.read(in_b + 4096, &mut byte).is_err(), "beyond the end: a bus error");
/// ```
pub struct File {
    name: String,
    backing: Arc<dyn Backing>,
    cache: PageCache,
    /// Bytes. Changed under `resize`; read by faults inside their read-side section. SeqCst
    /// on both sides: a truncate stores the new size before its grace period (or before
    /// releasing `i_mmap_rwsem`), so a lookup that begins after either sees it.
    size: AtomicU64,
    reverse_map: IntervalTree<ReverseMapping>,
    invalidation: Invalidation,
    /// Serializes truncate, hole punch and `write_at` (which may extend the file).
    resize: Mutex<()>,
    /// How it is protected.
    sync: FileSync,
    /// `i_mmap_rwsem`, for [`FileSync::RwSem`] and [`FileSync::VmaLock`].
    i_mmap_rwsem: Option<RwLock<()>>,
    /// Where the next shrink looks for pages to evict (a clock hand over page offsets).
    clock: AtomicU64,
    /// Whether the file's pages are huge frames (a hugetlb file: no backing, never evicted).
    huge: bool,
    /// A hugetlb file's huge pages (by index) reserved in the pool for its shared mappings and
    /// not yet consumed by a fault (Linux's inode `resv_map`; see [`File::reserve`]).
    reservations: Mutex<std::collections::BTreeSet<u64>>,
    /// The level-2 page tables address spaces share for its huge pages (PMD sharing).
    shared_tables: Arc<Registry>,
    /// Faults consume reservations after caching their page, outside the lock (shuttle builds
    /// only; for the test that must fail).
    broken: Broken,
    /// The device and inode `maps()` shows: device 00:00 (00:01 for the object of a shared
    /// anonymous mapping, Linux's shmem), an inode number of its own.
    identity: vma::FileIdentity,
    /// The object of a MAP_SHARED | MAP_ANONYMOUS mapping.
    anonymous: bool,
}

/// Inode numbers of files.
static NEXT_INODE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("cached_pages", &self.cached_pages())
            .field("mappings", &self.reverse_map.len())
            .finish_non_exhaustive()
    }
}

/// The longest file: 256 TiB (what a page cache can index).
pub const MAX_FILE_LEN: u64 = MAX_PAGES * FRAME_SIZE as u64;

fn efbig() -> Error {
    Error::new(Errno::EFBIG, "beyond the largest file size")
}

fn no_frame() -> Error {
    Error::new(Errno::ENOMEM, "no frame to hold the page")
}

fn not_huge_aligned() -> Error {
    Error::new(Errno::EINVAL, "a hugetlb file's size changes by whole huge pages")
}

/// What an invalidation does with the pages of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Truncate: every page and every translation, private copies included; the backing
    /// forgets the pages.
    Truncate,
    /// Hole punch: the pages and the translations of their frames; the backing forgets them.
    Punch,
    /// Eviction of one page: only if it is clean once no lookup can reach it; the translations
    /// of its frame go, the backing keeps the page.
    Evict,
}

/// What a page-cache lookup found for a fault.
pub(crate) enum Lookup {
    /// The cached frame, with one reference for the caller.
    Cached(Frame),
    /// Being invalidated: wait for the invalidation on the slow path, with no guard held.
    Invalidating,
    /// Not cached: read it in first, with no guard held (or, in a private mapping of a
    /// hugetlb file, allocate a private page: Linux adds nothing to the cache for it).
    Missing,
    /// At or beyond the end of the file: a bus error.
    Beyond,
}

impl File {
    /// A file named `name` holding `contents`, in memory, caching its pages in `frames`.
    ///
    /// # Panics
    /// If `contents` is longer than [`MAX_FILE_LEN`].
    pub fn new(name: impl Into<String>, frames: &Arc<FramePool>, contents: &[u8]) -> Arc<Self> {
        Self::with_backing(
            name,
            frames,
            contents.len() as u64,
            Arc::new(MemBacking::new(contents)),
        )
        .expect("contents in memory are shorter than the largest file")
    }

    /// A zero-filled file of `len` bytes; nothing is allocated until pages are touched. EFBIG
    /// beyond [`MAX_FILE_LEN`].
    pub fn zeroed(name: impl Into<String>, frames: &Arc<FramePool>, len: u64) -> vma::Result<Arc<Self>> {
        Self::with_backing(name, frames, len, Arc::new(MemBacking::new(&[])))
    }

    /// The zero-filled object of a MAP_SHARED | MAP_ANONYMOUS mapping of `len` bytes (Linux's
    /// shmem, shown as `/dev/zero (deleted)` on device 00:01). EFBIG beyond [`MAX_FILE_LEN`].
    pub fn shared_anonymous(frames: &Arc<FramePool>, len: u64) -> vma::Result<Arc<Self>> {
        let backing = Arc::new(MemBacking::new(&[]));
        Self::build(
            "/dev/zero (deleted)",
            frames,
            len,
            backing,
            FileSync::Rcu,
            Kind::SharedAnonymous,
        )
    }

    /// A file of `len` bytes stored in `backing`. EFBIG beyond [`MAX_FILE_LEN`].
    pub fn with_backing(
        name: impl Into<String>,
        frames: &Arc<FramePool>,
        len: u64,
        backing: Arc<dyn Backing>,
    ) -> vma::Result<Arc<Self>> {
        Self::with_sync(name, frames, len, backing, FileSync::Rcu)
    }

    /// A file of `len` bytes stored in `backing`, protected as `sync` says. EFBIG beyond
    /// [`MAX_FILE_LEN`].
    pub fn with_sync(
        name: impl Into<String>,
        frames: &Arc<FramePool>,
        len: u64,
        backing: Arc<dyn Backing>,
        sync: FileSync,
    ) -> vma::Result<Arc<Self>> {
        Self::build(name, frames, len, backing, sync, Kind::Regular)
    }

    /// A hugetlb file (a file on hugetlbfs) of `len` bytes, zero-filled, whose pages are huge
    /// frames of `frames`' huge pool, taken as pages are first touched: mappings of it are
    /// aligned to 2 MiB (see [`vma::MappedFile::page_size`]), a fault installs a whole huge
    /// page (a bus error when none is free), its size changes only by whole huge pages, it
    /// has no backing (pages live until truncated, punched or the file is dropped) and is
    /// never reclaimed, and `write_at` is EINVAL (hugetlbfs has no write(2)). EINVAL unless
    /// `len` is a multiple of 2 MiB; EFBIG beyond [`MAX_FILE_LEN`].
    pub fn hugetlb(
        name: impl Into<String>,
        frames: &Arc<FramePool>,
        len: u64,
        sync: FileSync,
    ) -> vma::Result<Arc<Self>> {
        if len % HUGE_FRAME_SIZE as u64 != 0 {
            return Err(not_huge_aligned());
        }
        Self::build(
            name,
            frames,
            len,
            Arc::new(MemBacking::new(&[])),
            sync,
            Kind::Hugetlb,
        )
    }

    fn build(
        name: impl Into<String>,
        frames: &Arc<FramePool>,
        len: u64,
        backing: Arc<dyn Backing>,
        sync: FileSync,
        kind: Kind,
    ) -> vma::Result<Arc<Self>> {
        if len > MAX_FILE_LEN {
            return Err(efbig());
        }
        let anonymous = kind == Kind::SharedAnonymous;
        let file = Arc::new(Self {
            name: name.into(),
            backing,
            cache: PageCache::new(frames),
            size: AtomicU64::new(len),
            reverse_map: IntervalTree::new(),
            invalidation: Invalidation::new(),
            resize: Mutex::new(()),
            sync,
            i_mmap_rwsem: (sync != FileSync::Rcu).then(|| RwLock::new(())),
            clock: AtomicU64::new(0),
            huge: kind == Kind::Hugetlb,
            reservations: Mutex::new(std::collections::BTreeSet::new()),
            shared_tables: Arc::new(Registry::new(frames)),
            broken: Broken::new(),
            identity: vma::FileIdentity {
                major: 0,
                minor: anonymous.into(),
                // Relaxed: only uniqueness matters.
                inode: NEXT_INODE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            },
            anonymous,
        });
        let shrinker: Weak<dyn Shrinker> = Arc::downgrade(&file) as Weak<File>;
        frames.register_shrinker(shrinker);
        Ok(file)
    }

    /// Breaks the invalidation protocol: truncate and hole punch skip publishing their range
    /// and the grace period (shuttle builds only; for the test that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_invalidation(&self) {
        self.broken.set(Broken::INVALIDATION);
    }

    /// Breaks the fairness of invalidations: they begin without waiting for the faults owed a
    /// turn (shuttle builds only; for the test that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_fairness(&self) {
        self.broken.set(Broken::FAIRNESS);
    }

    /// Breaks writeback: it write-protects a page right after taking its dirty mark, without
    /// waiting for the faults that set it (shuttle builds only; for the test that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_writeback(&self) {
        self.broken.set(Broken::WRITEBACK);
    }

    /// The name `maps()` shows.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size in pages (the last one partial).
    pub fn pages(&self) -> u64 {
        self.len().div_ceil(PAGE_SIZE)
    }

    /// The pool the page cache's frames come from; address spaces mapping the file must use
    /// the same one.
    pub fn frames(&self) -> &Arc<FramePool> {
        self.cache.frames()
    }

    /// Pages in the page cache.
    pub fn cached_pages(&self) -> usize {
        self.cache.cached_pages()
    }

    /// VMAs mapping the file now, in every address space.
    pub fn mappings(&self) -> usize {
        self.reverse_map.len()
    }

    /// Enters a read-side section of the file's domain for page `pgoff` (a fault's lookup and
    /// install).
    pub(crate) fn guard_at(&self, pgoff: u64) -> Guard<'_, DefaultRcu> {
        Guard::keyed(self.reverse_map.rcu(), Keys::one(pgoff))
    }

    /// Enters a read-side section of the file's domain for pages `[first, end)` (linking a
    /// shared page table that covers them).
    pub(crate) fn guard_within(&self, first: u64, end: u64) -> Guard<'_, DefaultRcu> {
        Guard::keyed(self.reverse_map.rcu(), Keys::new(first, end - 1))
    }

    /// Whether an invalidation of any page of `[first, end)` is running (inside a section from
    /// [`File::guard_within`]: one that begins later waits for the section).
    pub(crate) fn invalidating(&self, first: u64, end: u64) -> bool {
        self.invalidation.running_within(first, end)
    }

    /// The file's shared page tables (PMD sharing: see `pmd_share`).
    pub(crate) fn shared_tables(&self) -> &Arc<Registry> {
        &self.shared_tables
    }

    /// Level-2 page tables address spaces share for this file now (PMD sharing).
    pub fn shared_page_tables(&self) -> usize {
        self.shared_tables.tables()
    }

    /// Under [`FileSync::RwSem`], takes the lock shared for a fault — from its lookup to its
    /// install, and for a hugetlb file across the whole fault, its share lookup included —
    /// calling `waited` with how long it blocked when it had to.
    pub(crate) fn lock_for_fault(
        &self,
        waited: impl FnOnce(std::time::Duration),
    ) -> Option<RwLockReadGuard<'_, ()>> {
        if self.sync != FileSync::RwSem {
            return None;
        }
        self.lock_shared(waited)
    }

    /// Whether page `pgoff` is in the page cache (what mincore answers for a file page that no
    /// translation maps).
    pub fn cached(&self, pgoff: u64) -> bool {
        let _guard = self.guard_at(pgoff);
        self.cache.peek(self.cache_key(pgoff)).is_some()
    }

    /// Reads pages `[first, end)` below the end of the file into the page cache (MADV_WILLNEED's
    /// readahead), waiting as a fault would for an invalidation of them; a page that cannot be
    /// read is skipped, as readahead's failures are. A hugetlb file reads nothing ahead (Linux's
    /// hugetlbfs has no readahead).
    pub fn read_ahead(&self, first: u64, end: u64) {
        if self.is_hugetlb() {
            return;
        }
        for pgoff in first..end.min(self.pages()) {
            let _ = self.read_in(pgoff, |_| {});
        }
    }

    /// Whether faults hold the file's lock shared ([`FileSync::RwSem`]), so that whoever holds
    /// it exclusive keeps them out.
    pub(crate) fn faults_take_lock(&self) -> bool {
        self.sync == FileSync::RwSem
    }

    /// Under [`FileSync::VmaLock`], `i_mmap_rwsem` taken shared to look for a page table to
    /// share (Long's patch, seed 003); calls `waited` with how long it blocked when it had to.
    /// Under [`FileSync::RwSem`] the fault holds it already ([`File::lock_for_fault`]).
    pub(crate) fn lock_for_share(
        &self,
        waited: impl FnOnce(std::time::Duration),
    ) -> Option<RwLockReadGuard<'_, ()>> {
        if self.sync != FileSync::VmaLock {
            return None;
        }
        self.lock_shared(waited)
    }

    fn lock_shared(&self, waited: impl FnOnce(std::time::Duration)) -> Option<RwLockReadGuard<'_, ()>> {
        let rwsem = self.i_mmap_rwsem.as_ref()?;
        if let Ok(shared) = rwsem.try_read() {
            return Some(shared);
        }
        let since = std::time::Instant::now();
        let shared = rwsem.read().unwrap_or_else(|e| e.into_inner());
        waited(since.elapsed());
        Some(shared)
    }

    /// Where the page cache keeps page `pgoff` (4 KiB units): there, or for a hugetlb file at
    /// the first page offset of its huge page.
    fn cache_key(&self, pgoff: u64) -> u64 {
        pgoff & !(self.pages_per_page() - 1)
    }

    /// 4 KiB pages in one of the file's pages (512 for a hugetlb file).
    fn pages_per_page(&self) -> u64 {
        self.page_size() / PAGE_SIZE
    }

    /// The file's page size: [`PAGE_SIZE`], or 2 MiB for a hugetlb file.
    pub fn page_size(&self) -> u64 {
        if self.huge {
            HUGE_FRAME_SIZE as u64
        } else {
            PAGE_SIZE
        }
    }

    /// A frame holding page `pgoff`'s contents, not cached yet, with its one reference: read
    /// from the backing, or for a hugetlb file a zeroed huge frame (a bus error when none is
    /// free, as Linux's hugetlb fault answers SIGBUS).
    fn fill(&self, pgoff: u64) -> Result<Frame, FaultError> {
        let frames = self.cache.frames();
        if self.huge {
            let index = pgoff / self.pages_per_page();
            // The page's reservation, if it has one, is consumed here, in one step with taking
            // it out of the file's set: a truncate that runs before or after finds it in the set
            // or consumed, never both (seed 001's count went wrong between the two).
            let reserved = {
                let mut reservations = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
                if self.broken.skips(Broken::RESERVATIONS) {
                    reservations.contains(&index)
                } else {
                    reservations.remove(&index)
                }
            };
            if reserved {
                return frames.alloc_huge_reserved().ok_or_else(|| {
                    // The machine had no memory for it: the reservation stays.
                    self.reservations
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(index);
                    FaultError::BusError
                });
            }
            return frames.alloc_huge().ok_or(FaultError::BusError);
        }
        let frame = frames.alloc_or_reclaim().ok_or(FaultError::OutOfMemory)?;
        let mut page = vec![0; FRAME_SIZE];
        if let Err(error) = self.backing.read(pgoff, &mut page) {
            // SAFETY: the frame was never published; this is its only reference.
            unsafe { frames.put(frame) };
            return Err(error.into());
        }
        frames.write(frame, 0, &page);
        Ok(frame)
    }

    /// Whether this is a hugetlb file (see [`File::hugetlb`]).
    pub fn is_hugetlb(&self) -> bool {
        self.huge
    }

    /// Reserves in the pool the huge pages of `[first, end)` (4 KiB page offsets, at huge page
    /// boundaries) that have neither a reservation nor a cached page, for a shared mapping of
    /// them (Linux's `hugetlb_reserve_pages`): a fault there then always finds a huge page. The
    /// reservations belong to the file, as on Linux: munmap keeps them, truncate and hole punch
    /// of their pages and dropping the file give them back. ENOMEM, with nothing reserved,
    /// when the pool cannot cover them; nothing for a file of 4 KiB pages.
    pub fn reserve(&self, first: u64, end: u64) -> vma::Result<()> {
        if !self.huge {
            return Ok(());
        }
        let pages = self.pages_per_page();
        // Serialized with truncate and hole punch, which give reservations back.
        let _resize = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let mut reservations = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        let missing: Vec<u64> = (first / pages..end.div_ceil(pages))
            .filter(|index| !reservations.contains(index) && self.cache.peek(index * pages).is_none())
            .collect();
        if !self.cache.frames().reserve_huge(missing.len()) {
            return Err(Error::new(Errno::ENOMEM, "not enough free huge pages to reserve"));
        }
        reservations.extend(missing);
        Ok(())
    }

    /// Gives back the reservations of the huge pages `[first, end)` (4 KiB page offsets).
    fn unreserve(&self, first: u64, end: u64) {
        let pages = self.pages_per_page();
        let mut reservations = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<u64> = reservations
            .range(first / pages..end.div_ceil(pages))
            .copied()
            .collect();
        for index in &gone {
            reservations.remove(index);
        }
        self.cache.frames().unreserve_huge(gone.len());
    }

    /// Huge pages reserved for the file and not yet faulted.
    pub fn reserved_pages(&self) -> usize {
        self.reservations.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Breaks the reservation protocol: a fault consumes its page's reservation only after
    /// caching the page, outside the lock that a truncate takes to give reservations back
    /// (shuttle builds only; for the test that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_reservations(&self) {
        self.broken.set(Broken::RESERVATIONS);
    }

    /// Breaks PMD sharing: address spaces link a shared page table without entering the
    /// file's section for its pages or checking for a running invalidation (shuttle builds
    /// only; for the test that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_sharing(&self) {
        self.broken.set(Broken::SHARING);
    }

    /// Whether sharing skips the file's section (the broken variant).
    pub(crate) fn shares_unguarded(&self) -> bool {
        self.broken.skips(Broken::SHARING)
    }

    /// What a fault at page `pgoff` finds, inside `_guard` (from [`File::guard_at`]).
    pub(crate) fn lookup(&self, pgoff: u64, _guard: &Guard<'_, DefaultRcu>) -> Lookup {
        if self.invalidation.running_over(pgoff) {
            return Lookup::Invalidating;
        }
        if pgoff >= self.pages() {
            return Lookup::Beyond;
        }
        self.cache
            .get(self.cache_key(pgoff))
            .map_or(Lookup::Missing, Lookup::Cached)
    }

    /// Brings page `pgoff` into the cache (the fault's slow path): waits while an invalidation
    /// covers it, reads it from the backing with no guard held, and caches it unless an
    /// invalidation covering it began meanwhile (then reads again). `BusError` at or beyond the
    /// end of the file. Calls `waited` with how long it waited for an invalidation, if it did;
    /// then returns the turn it is owed: hold it until the page is used (installed), so that
    /// the next invalidation does not take the page away first.
    pub(crate) fn read_in(
        &self,
        pgoff: u64,
        waited: impl Fn(std::time::Duration),
    ) -> Result<Option<Turn<'_>>, FaultError> {
        let frames = self.cache.frames();
        let mut turn = None;
        loop {
            let since = self.invalidation.generation.load(Ordering::SeqCst);
            if let Some((owed, slept)) = self.invalidation.wait_out(pgoff) {
                waited(slept);
                turn = Some(owed);
                continue;
            }
            {
                let guard = self.guard_at(pgoff);
                match self.lookup(pgoff, &guard) {
                    Lookup::Beyond => return Err(FaultError::BusError),
                    Lookup::Cached(frame) => {
                        // SAFETY: the reference `get` gave us, not used.
                        unsafe { frames.put(frame) };
                        return Ok(turn);
                    }
                    Lookup::Missing | Lookup::Invalidating => {}
                }
            }
            let frame = self.fill(pgoff)?;
            // Under FileSync::RwSem the lock, not the grace period, keeps an invalidation from
            // running between the check and the insert.
            let shared = self.lock_for_fault(|_| {});
            let guard = self.guard_at(pgoff);
            if self.invalidation.began_over(pgoff, since) || pgoff >= self.pages() {
                drop(guard);
                // SAFETY: as above.
                unsafe { frames.put(frame) };
                continue;
            }
            let cached = self.cache.insert(self.cache_key(pgoff), frame);
            drop(guard);
            drop(shared);
            if self.broken.skips(Broken::RESERVATIONS) {
                let index = pgoff / self.pages_per_page();
                self.reservations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&index);
            }
            // SAFETY: the caller's reference `insert` returned, not used.
            unsafe { frames.put(cached) };
            return Ok(turn);
        }
    }

    /// Reads `buf.len()` bytes at `offset` (as pread): fewer at the end of the file, none
    /// beyond it. Returns how many were read.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> vma::Result<usize> {
        let len = self.len();
        if offset >= len {
            return Ok(0);
        }
        let count = (buf.len() as u64).min(len - offset) as usize;
        let frames = self.cache.frames();
        self.each_page(offset, count, |pgoff, in_page, at, chunk| {
            let out = &mut buf[at..at + chunk];
            if self.huge {
                // A hugetlb file's pages not yet touched read as zeros, without allocating.
                let read =
                    self.with_cached_page(pgoff, |frame, base| frames.read(frame, base + in_page, out));
                if !read {
                    out.fill(0);
                }
                return Ok(());
            }
            match self.with_page(pgoff, false, |frame| frames.read(frame, in_page, out)) {
                Ok(()) => Ok(()),
                // Truncated meanwhile: what is gone reads as nothing.
                Err(FaultError::BusError) => {
                    out.fill(0);
                    Ok(())
                }
                Err(_) => Err(no_frame()),
            }
        })?;
        Ok(count)
    }

    /// Writes `data` at `offset` (as pwrite), extending the file if it ends beyond it. The
    /// pages are brought into the page cache and written there, where every shared mapping
    /// sees them at once. EFBIG beyond [`MAX_FILE_LEN`], ENOMEM when no frame is free; EINVAL
    /// for a hugetlb file.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> vma::Result<()> {
        if self.huge {
            return Err(Error::new(Errno::EINVAL, "hugetlbfs files have no write(2)"));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_LEN)
            .ok_or_else(efbig)?;
        let _resize = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        if end > self.len() {
            self.size.store(end, Ordering::SeqCst);
        }
        let frames = self.cache.frames();
        self.each_page(offset, data.len(), |pgoff, in_page, at, chunk| {
            let data = &data[at..at + chunk];
            // Holding `resize` (no invalidation runs) inside the new size: only memory can be
            // missing.
            self.with_page(pgoff, true, |frame| frames.write(frame, in_page, data))
                .map_err(|_| no_frame())
        })
    }

    /// Sets the size to `len` (as ftruncate). Shrinking removes the pages beyond the new end from
    /// the cache, from every address space's translations (private copies included) and from
    /// the backing, and zeroes the rest of the last partial page: when this returns, no address
    /// space holds a translation beyond the end and none can appear (a fault there is a bus
    /// error). Growing adds zeros. EFBIG beyond [`MAX_FILE_LEN`]; ENOMEM, with nothing changed,
    /// when no frame is free to zero the last partial page in; EINVAL for a size that is not
    /// whole huge pages of a hugetlb file.
    pub fn set_len(&self, len: u64) -> vma::Result<()> {
        if len > MAX_FILE_LEN {
            return Err(efbig());
        }
        if self.huge && len % HUGE_FRAME_SIZE as u64 != 0 {
            return Err(not_huge_aligned());
        }
        let _resize = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.len();
        if len >= old {
            self.size.store(len, Ordering::SeqCst);
            return Ok(());
        }
        let (first, end) = (len.div_ceil(PAGE_SIZE), old.div_ceil(PAGE_SIZE));
        self.zero_partial(len, len.next_multiple_of(PAGE_SIZE).min(old))?;
        if first < end {
            self.invalidate(first, end, Removal::Truncate, || {
                self.size.store(len, Ordering::SeqCst)
            });
        } else {
            // The last page stays: only its tail was cut (and zeroed).
            self.size.store(len, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Deallocates `[offset, offset + len)` (as fallocate(FALLOC_FL_PUNCH_HOLE |
    /// FALLOC_FL_KEEP_SIZE)): whole pages inside leave the cache, the shared translations of
    /// every address space and the backing, and read as zeros; private copies stay (as Linux);
    /// partial pages at the ends are zeroed in place (a hugetlb file's pages are its huge
    /// pages, and its partial ones are zeroed only if cached). The size does not change. EINVAL for a
    /// zero length, EFBIG when the range ends beyond [`MAX_FILE_LEN`], ENOMEM, with no page
    /// removed, when no frame is free to zero a partial page in.
    pub fn punch_hole(&self, offset: u64, len: u64) -> vma::Result<()> {
        if len == 0 {
            return Err(Error::new(Errno::EINVAL, "zero length"));
        }
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= MAX_FILE_LEN)
            .ok_or_else(efbig)?;
        let _resize = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let size = self.len();
        let end = end.min(size);
        if offset >= end {
            return Ok(());
        }
        // Whole pages leave; the partial pages at either end are zeroed in place.
        // Whole pages of the file (huge ones for a hugetlb file) leave.
        let unit = self.page_size();
        let (first, last) = (offset.div_ceil(unit), end / unit);
        let head_end = (first * unit).min(end);
        self.zero_partial(offset, head_end)?;
        self.zero_partial((last * unit).max(head_end), end)?;
        if first < last {
            let pages = self.pages_per_page();
            self.invalidate(first * pages, last * pages, Removal::Punch, || {});
        }
        Ok(())
    }

    /// Zeroes the bytes `[from, to)` (inside one of the file's pages) in the cache, reading the
    /// page in first — but in a hugetlb file only if it is cached (as Linux's
    /// `hugetlbfs_zero_partial_page`); nothing when the range is empty. ENOMEM (nothing
    /// changed) when no frame is free. The caller holds `resize`, inside the file.
    fn zero_partial(&self, from: u64, to: u64) -> vma::Result<()> {
        if from >= to {
            return Ok(());
        }
        let zeros = vec![0; (to - from) as usize];
        let frames = self.cache.frames();
        if self.huge {
            return self.each_page(from, zeros.len(), |pgoff, in_page, at, chunk| {
                self.with_cached_page(pgoff, |frame, base| {
                    frames.write(frame, base + in_page, &zeros[at..at + chunk])
                });
                Ok(())
            });
        }
        self.with_page(from / PAGE_SIZE, true, |frame| {
            frames.write(frame, (from % PAGE_SIZE) as usize, &zeros)
        })
        .map_err(|_| no_frame())
    }

    /// Calls `use_frame(frame, offset of page pgoff in it)` with the cached frame holding page
    /// `pgoff` (4 KiB units), inside a read-side section keyed to it, and returns true; false,
    /// calling nothing, when it is not cached or is being removed.
    fn with_cached_page(&self, pgoff: u64, use_frame: impl FnOnce(Frame, usize)) -> bool {
        let guard = self.guard_at(pgoff);
        let Lookup::Cached(frame) = self.lookup(pgoff, &guard) else {
            return false;
        };
        use_frame(frame, ((pgoff - self.cache_key(pgoff)) * PAGE_SIZE) as usize);
        // SAFETY: the reference `lookup` gave us.
        unsafe { self.cache.frames().put(frame) };
        true
    }

    /// Calls `use_frame` with the cached frame of page `pgoff` (a 4 KiB file's), inside a
    /// read-side section keyed to the page, reading the page in first when it is not cached
    /// (`read_in`'s errors: a bus error beyond the end, out of memory); marks the page dirty
    /// first when `write`s.
    fn with_page(&self, pgoff: u64, write: bool, use_frame: impl FnOnce(Frame)) -> Result<(), FaultError> {
        debug_assert!(!self.huge, "hugetlb files use with_cached_page");
        // Held until the page is used: no invalidation takes it away once this call has waited
        // one out.
        let mut _turn = None;
        loop {
            let guard = self.guard_at(pgoff);
            if let Lookup::Cached(frame) = self.lookup(pgoff, &guard) {
                if !write || self.mark_dirty(pgoff, frame, &guard) {
                    use_frame(frame);
                    // SAFETY: the reference `lookup` gave us.
                    unsafe { self.cache.frames().put(frame) };
                    return Ok(());
                }
                // SAFETY: as above; the page is leaving the cache.
                unsafe { self.cache.frames().put(frame) };
            }
            drop(guard);
            _turn = self.read_in(pgoff, |_| {})?;
        }
    }

    /// One invalidation of pages `[first, end)` (not empty): publish the range, `resized` (the new size
    /// of a truncate), a grace period for the lookups that did not see it, take the pages out
    /// of the cache, remove their translations everywhere, forget them in the backing (as
    /// `removal` says), end. Returns whether pages were removed (an eviction finds its page
    /// dirty or gone and removes nothing). The caller holds `resize`.
    fn invalidate(&self, first: u64, end: u64, removal: Removal, resized: impl FnOnce()) -> bool {
        debug_assert!(first < end);
        let broken = self.broken.skips(Broken::INVALIDATION);
        if !broken {
            if removal == Removal::Evict {
                // Reclaim may run inside a fault that holds a turn: it gives way instead.
                if !self.invalidation.try_begin(first, end) {
                    return false;
                }
            } else {
                let fair = !self.broken.skips(Broken::FAIRNESS);
                self.invalidation.begin(first, end, fair);
            }
        }
        // Under FileSync::RwSem the exclusive lock keeps every fault out instead of the grace
        // period (taken after `begin`, which may wait for faults that take it shared); the
        // waits for accesses through removed translations come after it is released (a fault
        // holding its address space's guard may be waiting for the lock).
        let exclusive = self.exclusive();
        resized();
        if !broken && self.sync != FileSync::RwSem {
            let rcu = self.reverse_map.rcu();
            rcu.synchronize_timed_for(|keys| keys.overlaps(Keys::new(first, end - 1)));
        }
        let removed = match removal {
            Removal::Truncate | Removal::Punch => self.cache.remove(first, end),
            Removal::Evict => {
                debug_assert_eq!(end, first + 1, "one page at a time");
                self.cache.remove_clean(first).into_iter().collect()
            }
        };
        if removed.is_empty() && removal == Removal::Evict {
            if !broken {
                self.invalidation.end();
            }
            return false;
        }
        // No address space links a shared page table of these pages anew; those that do unshare
        // it below, as they remove their translations.
        self.shared_tables.retire(first, end);
        let even_cows = removal == Removal::Truncate;
        let revoked = self.revoke_everywhere(first, end, |mapper| {
            mapper.unmap_file_pages(self, first, end, even_cows)
        });
        if removal != Removal::Evict {
            self.backing.discard(first, end);
            self.unreserve(first, end);
        }
        // SAFETY: the cache's references. No lookup can reach the frames: those that began
        // before the range was published ended within the grace period (or before the lock
        // was taken), later ones see the range and keep off; translations held their own
        // references, released a grace period after their removal.
        unsafe { self.cache.frames().put_many(&removed) };
        if !broken {
            self.invalidation.end();
        }
        drop(exclusive);
        await_revoked(&revoked);
        true
    }

    /// Calls `revoke` on every address space mapping pages of `[first, end)`, returning what
    /// each revoked (wait for it with [`await_revoked`] once faults may go on).
    fn revoke_everywhere(
        &self,
        first: u64,
        end: u64,
        revoke: impl Fn(&dyn Mapper) -> Revoked,
    ) -> Vec<(Arc<dyn Mapper>, Revoked)> {
        self.mappers(first, end)
            .into_iter()
            .map(|mapper| {
                let revoked = revoke(&*mapper);
                (mapper, revoked)
            })
            .collect()
    }

    /// Marks page `pgoff` dirty before a write to `frame`, its cached frame found inside
    /// `_guard` (from [`File::guard_at`]); false when it has left the cache meanwhile.
    pub(crate) fn mark_dirty(&self, pgoff: u64, frame: Frame, _guard: &Guard<'_, DefaultRcu>) -> bool {
        self.cache.mark_dirty(pgoff, frame)
    }

    /// Writes page `pgoff` back if it is dirty: takes the dirty mark, waits out the faults that
    /// may have set it and not yet made their entry writable (they do both inside a section
    /// keyed to the page; later ones mark the page dirty again), write-protects its shared
    /// translations in every address space, waits for the accesses through the old writable
    /// ones, then copies the frame to the backing. Returns whether it wrote. The caller holds
    /// `resize` (the page stays cached).
    fn write_back(&self, pgoff: u64) -> vma::Result<bool> {
        let Some(frame) = self.cache.take_dirty(pgoff) else {
            return Ok(false);
        };
        if !self.broken.skips(Broken::WRITEBACK) {
            self.reverse_map
                .rcu()
                .synchronize_timed_for(|keys| keys.overlaps(Keys::one(pgoff)));
        }
        let revoked = self.revoke_everywhere(pgoff, pgoff + 1, |mapper| {
            mapper.write_protect_file_pages(self, pgoff, pgoff + 1)
        });
        await_revoked(&revoked);
        let mut page = vec![0; FRAME_SIZE];
        self.cache.frames().read(frame, 0, &mut page);
        if self.backing.write(pgoff, &page).is_err() {
            self.cache.mark_dirty(pgoff, frame);
            return Err(Error::new(Errno::EIO, "the backing refused the page"));
        }
        Ok(true)
    }

    /// Writes back every dirty page of `[offset, offset + len)` (as msync(MS_SYNC) of a shared
    /// mapping of it, or fsync when it covers the file); the pages stay cached. Returns how many
    /// pages were written. EIO when the backing refuses one (it stays dirty).
    pub fn sync_range(&self, offset: u64, len: u64) -> vma::Result<usize> {
        let first = offset / PAGE_SIZE;
        let end = offset.saturating_add(len).div_ceil(PAGE_SIZE);
        let _resize = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let mut written = 0;
        for (pgoff, dirty) in self.cache.cached_in(first, end) {
            if dirty && self.write_back(pgoff)? {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Writes back every dirty page (fsync); see [`File::sync_range`].
    pub fn sync(&self) -> vma::Result<usize> {
        self.sync_range(0, MAX_FILE_LEN)
    }

    /// Evicts up to `want` pages, from the clock hand on, writing dirty ones back first (see
    /// the module documentation); `resize` is held. Returns how many left the cache.
    fn evict(&self, want: usize) -> usize {
        let hand = self.clock.load(Ordering::Relaxed);
        let cached = self.cache.cached_in(hand, MAX_PAGES);
        let wrapped = self.cache.cached_in(0, hand);
        let mut evicted = 0;
        for (pgoff, dirty) in cached.into_iter().chain(wrapped) {
            if evicted == want {
                break;
            }
            self.clock.store(pgoff + 1, Ordering::Relaxed);
            // A page a locked VMA maps (mlock) is never evicted.
            if self.locked(pgoff) || (dirty && self.write_back(pgoff).is_err()) {
                continue;
            }
            if self.invalidate(pgoff, pgoff + 1, Removal::Evict, || {}) {
                evicted += 1;
            }
        }
        evicted
    }

    /// Whether a locked VMA (mlock), in any address space, maps page `pgoff`.
    fn locked(&self, pgoff: u64) -> bool {
        let guard = self.reverse_map.guard();
        self.reverse_map
            .overlapping(pgoff, pgoff + 1, &guard)
            .any(|interval| interval.value.locked)
    }

    /// The address spaces with a VMA mapping pages of `[first, end)`, each once.
    fn mappers(&self, first: u64, end: u64) -> Vec<Arc<dyn Mapper>> {
        let guard = self.reverse_map.guard();
        let mut found: Vec<Arc<dyn Mapper>> = Vec::new();
        for interval in self.reverse_map.overlapping(first, end, &guard) {
            let mapping = &interval.value;
            if found
                .iter()
                .any(|m| Arc::as_ptr(m) as *const () == mapping.mapper_id())
            {
                continue;
            }
            // A mapper being dropped takes its translations with it.
            if let Some(mapper) = mapping.mapper.upgrade() {
                found.push(mapper);
            }
        }
        found
    }

    /// The address ranges where `mapper` maps pages of `[first, end)` (for
    /// [`Mapper::unmap_file_pages`]; call it under the mapper's relocation lock).
    pub fn mapped_ranges(&self, mapper: &dyn Mapper, first: u64, end: u64) -> Vec<(u64, u64)> {
        let id = mapper as *const dyn Mapper as *const ();
        let guard = self.reverse_map.guard();
        self.reverse_map
            .overlapping(first, end, &guard)
            .filter(|interval| interval.value.mapper_id() == id)
            .map(|interval| {
                let address = |pgoff: u64| interval.value.start + (pgoff - interval.start) * PAGE_SIZE;
                (address(first.max(interval.start)), address(end.min(interval.end)))
            })
            .collect()
    }

    /// Walks the reverse map (as Linux's `rmap_walk`): every VMA, in any address space, mapping
    /// pages of `[first, end)`, as the pages it maps and its first address — without a lock:
    /// mmap, munmap and mprotect of any mapping go on meanwhile. Each VMA is seen whole, and a
    /// page that stays mapped while its VMA is split, merged or replaced is covered throughout.
    pub fn walk_reverse_map(&self, first: u64, end: u64) -> Vec<MappedRange> {
        let guard = self.reverse_map.guard();
        self.reverse_map
            .overlapping(first, end, &guard)
            .map(|interval| MappedRange {
                first: interval.start,
                end: interval.end,
                address: interval.value.start,
            })
            .collect()
    }

    /// Adds `mapping`, a VMA of `mapper`, to the reverse map of the file it maps (nothing for
    /// an anonymous mapping). Call it before a fault can find the VMA, and before translations
    /// move into it (see [`Mapper`]).
    pub fn link(mapper: &Weak<dyn Mapper>, mapping: &Mapping) {
        if let Some(file) = File::of(mapping) {
            file.write_reverse_map().link(mapper, mapping);
        }
    }

    /// Removes `mapping`, a VMA of `mapper` that [`File::link`] added, from its file's reverse
    /// map (nothing for an anonymous mapping). Call it once the VMA's translations are gone.
    pub fn unlink(mapper: &Weak<dyn Mapper>, mapping: &Mapping) {
        if let Some(file) = File::of(mapping) {
            file.write_reverse_map().unlink(mapper, mapping);
        }
    }

    /// The file `mapping` maps (`None` for an anonymous mapping). A mapping made through a
    /// [`crate::Memory`] maps only files (see [`crate::Memory::mapped_object`]).
    pub fn of(mapping: &Mapping) -> Option<&File> {
        match &mapping.backing {
            VmaBacking::File(object) => Some(file_of(object)),
            VmaBacking::Anonymous => None,
        }
    }

    /// The reverse map, held for changing (Linux's `i_mmap_lock_write`): under
    /// [`FileSync::RwSem`] its lock is held exclusive, keeping faults on the file out, until
    /// the writer is dropped (so that a writer may zap translations under it, as hugetlb's
    /// munmap did); under [`FileSync::Rcu`] nothing is held.
    pub fn write_reverse_map(&self) -> ReverseMapWriter<'_> {
        ReverseMapWriter {
            file: self,
            _exclusive: self.exclusive(),
        }
    }

    /// Under [`FileSync::RwSem`], its lock taken exclusive.
    fn exclusive(&self) -> Option<RwLockWriteGuard<'_, ()>> {
        self.i_mmap_rwsem
            .as_ref()
            .map(|rwsem| rwsem.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Splits `[offset, offset + len)` by page: `f(pgoff, offset in page, offset in buffer,
    /// length)`, stopping at the first error.
    fn each_page(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize, usize) -> vma::Result<()>,
    ) -> vma::Result<()> {
        let end = offset + len as u64;
        let mut at = offset;
        while at < end {
            let in_page = (at % PAGE_SIZE) as usize;
            let chunk = (FRAME_SIZE - in_page).min((end - at) as usize);
            f(at / PAGE_SIZE, in_page, (at - offset) as usize, chunk)?;
            at += chunk as u64;
        }
        Ok(())
    }
}

/// A file's reverse map held for changing: see [`File::write_reverse_map`].
pub struct ReverseMapWriter<'a> {
    file: &'a File,
    _exclusive: Option<RwLockWriteGuard<'a, ()>>,
}

impl ReverseMapWriter<'_> {
    /// Adds `mapping`, a VMA of `mapper` mapping this file (see [`File::link`]).
    pub fn link(&self, mapper: &Weak<dyn Mapper>, mapping: &Mapping) {
        debug_assert!(File::of(mapping).is_some_and(|file| std::ptr::eq(file, self.file)));
        let entry = ReverseMapping {
            start: mapping.start,
            mapper: mapper.clone(),
            locked: mapping.locked,
        };
        self.file
            .reverse_map
            .insert(mapping.pgoff, mapping.pgoff + mapping.pages(), entry)
            .expect("a VMA's page offsets lie inside the largest file");
    }

    /// Removes `mapping`, a VMA of `mapper` that was added (see [`File::unlink`]).
    pub fn unlink(&self, mapper: &Weak<dyn Mapper>, mapping: &Mapping) {
        debug_assert!(File::of(mapping).is_some_and(|file| std::ptr::eq(file, self.file)));
        let id = mapper.as_ptr() as *const ();
        let end = mapping.pgoff + mapping.pages();
        let removed = self.file.reverse_map.remove(mapping.pgoff, |interval| {
            interval.value.mapper_id() == id && interval.value.start == mapping.start && interval.end == end
        });
        debug_assert!(removed, "unlinking a VMA that was never linked");
    }
}

/// Waits, in each address space, for the accesses through what [`File::revoke_everywhere`]
/// revoked there.
fn await_revoked(revoked: &[(Arc<dyn Mapper>, Revoked)]) {
    for (mapper, revoked) in revoked {
        mapper.await_revoked(revoked);
    }
}

/// The file a file mapping made through a [`crate::Memory`] maps.
pub(crate) fn file_of(object: &Arc<dyn MappedFile>) -> &File {
    let any: &dyn std::any::Any = &**object;
    any.downcast_ref::<File>()
        .expect("a Memory maps only fault::File objects")
}

impl Shrinker for File {
    /// Evicts up to `want` pages (writing dirty ones back first) unless a truncate, hole punch,
    /// `write_at`, sync or another shrink is running on the file.
    fn shrink(&self, want: usize) -> usize {
        if self.huge {
            // Huge pages are not reclaimed (as Linux's hugetlb pages).
            return 0;
        }
        match self.resize.try_lock() {
            Ok(_resize) => self.evict(want),
            Err(_) => 0,
        }
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // Dropping the file (its last mapping gone) truncates it: its reservations go back.
        let left = self
            .reservations
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        // Not while unwinding from a failed check, where the counts may be wrong already.
        if left > 0 && !std::thread::panicking() {
            self.cache.frames().unreserve_huge(left);
        }
    }
}

impl MappedFile for File {
    fn name(&self) -> &str {
        &self.name
    }

    fn page_size(&self) -> u64 {
        File::page_size(self)
    }

    fn identity(&self) -> vma::FileIdentity {
        self.identity
    }

    fn anonymous(&self) -> bool {
        self.anonymous
    }
}

/// What kind of object a [`File`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regular,
    Hugetlb,
    SharedAnonymous,
}
