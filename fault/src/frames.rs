//! The frame pool: real 4 KiB frames carved from large zeroed allocations ("chunks"), handed
//! out and taken back from many threads, each with a reference count.
//!
//! Invariants:
//! - A frame number `n` lives in chunk `n / chunk_frames` at offset `(n % chunk_frames) *
//!   4096`; chunks are only added (never moved or freed before the pool is dropped), so a
//!   frame's memory stays valid for the pool's lifetime.
//! - A frame is free (in exactly one shard's free list, its count parked at 1: the reference
//!   the next allocation hands out) or held (count > 0, one per holder: a translation, a file's
//!   page cache, a fault in progress). The holder that drops the count to zero parks it at 1
//!   and puts the frame back in a free list; allocating writes nothing per frame, so a fault
//!   does not pull the count's cache line from the core of the thread that freed the frame.
//! - Frame contents are only accessed through [`FramePool::read`], [`FramePool::write`] and
//!   [`FramePool::copy`] (byte-wise relaxed atomics: threads may race on a page as CPUs do), or
//!   by the sole holder of a frame no translation maps yet (zero-filling).
//! - Caches that can give frames back register as [`Shrinker`]s; an allocation that finds the
//!   pool at its size and may wait ([`FramePool::alloc_or_reclaim`]) asks them to shrink, and
//!   fails only when none gave anything back.
//! - Free lists are sharded by thread, so threads allocating at once rarely share a lock; a
//!   thread whose shard is empty takes frames from another shard, and only when every shard is
//!   empty adds a chunk (the pool reuses freed frames before it grows).
//! - **Huge frames** (2 MiB, Linux's hugetlb pool) are a separate pool of a fixed number of
//!   pages (`nr_hugepages`), numbered apart: a huge frame's number has [`HUGE_BIT`] set, so
//!   every call that takes a frame (references, contents) serves both kinds. A huge frame's
//!   memory is allocated (2 MiB-aligned, zeroed) when the frame is handed out and freed when
//!   its last reference goes, so that a configured pool costs only what is in use; the same
//!   reference counting applies. Some free huge frames may be **reserved** (Linux's
//!   `resv_huge_pages`): promised to mappings, handed out only to an allocation that consumes a
//!   reservation. Under the free list's lock, reserved ≤ free, and free + in use = the pool.

use crate::shard::{PerThreadCounters, SHARDS, thread_shard};
use maple::sync::Mutex;
use maple::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering, fence};
// Frame contents are plain memory viewed as std atomics (a shuttle atomic is not a byte).
use std::alloc::Layout;
use std::fmt;
use std::sync::atomic::AtomicU8;

/// Bytes in a frame.
pub const FRAME_SIZE: usize = 4096;

/// Bytes in a huge frame: the 512 frames one page-table entry of the level above the leaves
/// maps (Linux's PMD-level hugetlb page).
pub const HUGE_FRAME_SIZE: usize = 512 * FRAME_SIZE;

/// Set in the number of a huge frame (which counts huge frames from 0 apart from 4 KiB ones).
pub const HUGE_BIT: u64 = 1 << 51;

/// Most chunks a pool may grow to.
const MAX_CHUNKS: usize = 1024;

/// A physical frame, by number: a 4 KiB frame, or a huge frame ([`HUGE_BIT`] set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame(pub u64);

impl Frame {
    /// Whether this is a huge frame ([`HUGE_FRAME_SIZE`] bytes).
    pub fn is_huge(self) -> bool {
        self.0 & HUGE_BIT != 0
    }

    /// Its size in bytes: [`FRAME_SIZE`] or [`HUGE_FRAME_SIZE`].
    pub fn size(self) -> usize {
        if self.is_huge() {
            HUGE_FRAME_SIZE
        } else {
            FRAME_SIZE
        }
    }
}

/// Something holding frames that it can give back under memory pressure (a file's page cache:
/// Linux's shrinkers). Registered with [`FramePool::register_shrinker`].
pub trait Shrinker: Send + Sync {
    /// Lets go of up to `want` of the frames it holds, without waiting for locks that its own
    /// users may hold while they allocate; returns how many it let go of (they may come back to
    /// the pool only after a grace period).
    fn shrink(&self, want: usize) -> usize;
}

/// How big a pool may grow, and in what steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePoolConfig {
    /// Frames per chunk (one allocation).
    pub chunk_frames: usize,
    /// Most frames the pool hands out at once: its size.
    pub max_frames: usize,
}

impl Default for FramePoolConfig {
    /// 2 MiB chunks, up to 1 GiB.
    fn default() -> Self {
        Self {
            chunk_frames: 512,
            max_frames: 512 * 512,
        }
    }
}

/// Why a pool configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPoolConfig(&'static str);

impl fmt::Display for BadPoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad frame pool configuration: {}", self.0)
    }
}

impl std::error::Error for BadPoolConfig {}

/// One shard's free frames.
#[repr(align(128))]
struct Shard {
    free: Mutex<Vec<Frame>>,
    /// How many frames `free` holds: written under its lock, read without it by threads
    /// choosing a shard to take frames from (a hint: it may be stale).
    available: AtomicUsize,
}

/// The huge frames of a pool (see the module documentation).
struct HugeFrames {
    /// Each huge frame's memory once allocated (null before); Release-stored once, Acquire-
    /// loaded (pairing with it) by `frame_ptr`.
    memory: Box<[AtomicPtr<u8>]>,
    counts: Box<[AtomicU32]>,
    free: Mutex<HugeFree>,
    in_use: AtomicUsize,
}

/// The free huge frames and how many of them are reserved.
struct HugeFree {
    /// Free huge frames (indexes), whether allocated yet or not; the last are used first.
    frames: Vec<u64>,
    /// How many of them are promised (reserved ≤ frames.len()).
    reserved: usize,
}

impl HugeFrames {
    fn new(count: usize) -> Self {
        Self {
            memory: (0..count).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect(),
            counts: (0..count).map(|_| AtomicU32::new(1)).collect(),
            // Lowest numbers handed out first.
            free: Mutex::new(HugeFree {
                frames: (0..count as u64).rev().collect(),
                reserved: 0,
            }),
            in_use: AtomicUsize::new(0),
        }
    }

    fn layout() -> Layout {
        Layout::from_size_align(HUGE_FRAME_SIZE, HUGE_FRAME_SIZE).expect("a power of two")
    }
}

/// A pool of 4 KiB frames, and of a fixed number of huge frames, safe to use from many threads.
pub struct FramePool {
    config: FramePoolConfig,
    /// Chunk base addresses; Release-stored once when a chunk is added, Acquire-loaded by
    /// `frame_ptr` (pairing with it) so a frame's memory is visible before its number is.
    chunks: Box<[AtomicPtr<u8>]>,
    /// Reference count per frame.
    counts: Box<[AtomicU32]>,
    shards: Box<[Shard]>,
    /// Allocations minus frees, per thread slot (a frame allocated by one thread may be freed
    /// by another, so a slot may go below zero; only the sum means anything).
    held: PerThreadCounters<1>,
    /// Chunks allocated so far; held while adding one.
    grow: Mutex<usize>,
    /// The caches to shrink when the pool is at its size (dropped ones are pruned).
    shrinkers: Mutex<Vec<std::sync::Weak<dyn Shrinker>>>,
    huge: HugeFrames,
}

impl fmt::Debug for FramePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramePool")
            .field("config", &self.config)
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl FramePool {
    /// An empty pool; chunks are allocated as frames are needed, the reference counts (4 bytes
    /// a frame) now. A configuration that is empty, needs more than 1,024 chunks or more frames
    /// than a page-table entry can name (2^52), or whose counts cannot be allocated, is an
    /// error.
    pub fn new(config: FramePoolConfig) -> Result<Self, BadPoolConfig> {
        Self::with_huge_pages(config, 0)
    }

    /// [`FramePool::new`] with `huge_pages` huge frames besides (Linux's `nr_hugepages`); their
    /// memory is allocated as they are handed out. More than 2^20 (2 TiB) is an error.
    pub fn with_huge_pages(config: FramePoolConfig, huge_pages: usize) -> Result<Self, BadPoolConfig> {
        if huge_pages > 1 << 20 {
            return Err(BadPoolConfig("more than 2^20 huge pages"));
        }
        if config.chunk_frames == 0 || config.max_frames == 0 {
            return Err(BadPoolConfig("zero frames"));
        }
        if config.max_frames as u64 >= HUGE_BIT {
            return Err(BadPoolConfig("more frames than a page-table entry can name"));
        }
        if config.max_frames.div_ceil(config.chunk_frames) > MAX_CHUNKS {
            return Err(BadPoolConfig("more than 1024 chunks"));
        }
        if config
            .chunk_frames
            .checked_mul(FRAME_SIZE)
            .is_none_or(|bytes| bytes > isize::MAX as usize)
        {
            return Err(BadPoolConfig("chunk too large"));
        }
        // A reference count per frame, allocated now: a size the machine cannot hold is an
        // error, not an abort.
        let mut counts = Vec::new();
        counts
            .try_reserve_exact(config.max_frames)
            .map_err(|_| BadPoolConfig("cannot allocate a reference count per frame"))?;
        counts.extend((0..config.max_frames).map(|_| AtomicU32::new(0)));
        Ok(Self {
            config,
            // As many chunk slots as the pool's size needs.
            chunks: (0..config.max_frames.div_ceil(config.chunk_frames))
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            counts: counts.into_boxed_slice(),
            shards: (0..SHARDS)
                .map(|_| Shard {
                    free: Mutex::new(Vec::new()),
                    available: AtomicUsize::new(0),
                })
                .collect(),
            held: PerThreadCounters::new(),
            grow: Mutex::new(0),
            shrinkers: Mutex::new(Vec::new()),
            huge: HugeFrames::new(huge_pages),
        })
    }

    /// A zero-filled huge frame with one reference for the caller, or `None` when every free
    /// huge frame is reserved or none is free (or the machine has no memory for one).
    pub fn alloc_huge(&self) -> Option<Frame> {
        self.take_huge(false)
    }

    /// [`FramePool::alloc_huge`] consuming a reservation (see [`FramePool::reserve_huge`]):
    /// it finds a frame whenever the caller holds one.
    ///
    /// # Panics
    /// If no reservation is held.
    pub fn alloc_huge_reserved(&self) -> Option<Frame> {
        self.take_huge(true)
    }

    /// Reserves `count` free huge frames for later allocations that consume them; false, with
    /// nothing reserved, when fewer are free and unreserved (Linux's `hugetlb_acct_memory`).
    pub fn reserve_huge(&self, count: usize) -> bool {
        let mut free = self.huge.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.frames.len() - free.reserved < count {
            return false;
        }
        free.reserved += count;
        true
    }

    /// Gives back `count` reservations that will not be consumed (never more than are held:
    /// a debug assertion; release builds stop at zero).
    pub fn unreserve_huge(&self, count: usize) {
        let mut free = self.huge.free.lock().unwrap_or_else(|e| e.into_inner());
        debug_assert!(
            free.reserved >= count,
            "more huge-page reservations given back than held"
        );
        free.reserved = free.reserved.saturating_sub(count);
    }

    /// Huge frames reserved and not yet consumed (`HugePages_Rsvd`).
    pub fn huge_reserved(&self) -> usize {
        self.huge.free.lock().unwrap_or_else(|e| e.into_inner()).reserved
    }

    fn take_huge(&self, reserved: bool) -> Option<Frame> {
        let index = {
            let mut free = self.huge.free.lock().unwrap_or_else(|e| e.into_inner());
            if reserved {
                free.reserved = free
                    .reserved
                    .checked_sub(1)
                    .expect("no huge-page reservation held");
            } else if free.frames.len() == free.reserved {
                return None;
            }
            free.frames.pop().expect("reserved frames are free")
        };
        // SAFETY: the layout has a non-zero size.
        let page = unsafe { std::alloc::alloc_zeroed(HugeFrames::layout()) };
        if page.is_null() {
            let mut free = self.huge.free.lock().unwrap_or_else(|e| e.into_inner());
            free.frames.push(index);
            free.reserved += usize::from(reserved);
            return None;
        }
        // Release pairs with the Acquire in `frame_ptr`: the zeroed memory is visible before
        // the frame's number is.
        self.huge.memory[index as usize].store(page, Ordering::Release);
        self.huge.in_use.fetch_add(1, Ordering::Relaxed);
        // Its count is parked at 1: the caller's reference.
        Some(Frame(HUGE_BIT | index))
    }

    /// Huge frames in use (handed out and not yet back).
    pub fn huge_in_use(&self) -> usize {
        self.huge.in_use.load(Ordering::Relaxed)
    }

    /// Huge frames in the pool, in use or free (`nr_hugepages`).
    pub fn huge_pages(&self) -> usize {
        self.huge.counts.len()
    }

    fn chunk_layout(&self) -> Layout {
        Layout::from_size_align(self.config.chunk_frames * FRAME_SIZE, FRAME_SIZE).expect("checked in new")
    }

    /// Asks `shrinker` to give frames back whenever the pool is at its size (see
    /// [`FramePool::alloc_or_reclaim`]); it is forgotten once dropped.
    pub fn register_shrinker(&self, shrinker: std::sync::Weak<dyn Shrinker>) {
        let mut shrinkers = self.shrinkers.lock().unwrap_or_else(|e| e.into_inner());
        shrinkers.retain(|s| s.strong_count() > 0);
        shrinkers.push(shrinker);
    }

    /// [`FramePool::alloc`], but when the pool is at its size, asks the registered shrinkers
    /// to give frames back and tries again, until a frame comes or a round of every shrinker
    /// gives nothing back (then `None`). May block: call it holding no lock a shrinker takes
    /// and no read-side section a shrinker's grace period waits for.
    pub fn alloc_or_reclaim(&self) -> Option<Frame> {
        /// Frames asked of each shrinker per round.
        const BATCH: usize = 32;
        let mut backoff = maple::sync::Backoff::new();
        loop {
            if let Some(frame) = self.alloc() {
                return Some(frame);
            }
            let shrinkers: Vec<_> = {
                let shrinkers = self.shrinkers.lock().unwrap_or_else(|e| e.into_inner());
                shrinkers.iter().filter_map(std::sync::Weak::upgrade).collect()
            };
            let released: usize = shrinkers.iter().map(|s| s.shrink(BATCH)).sum();
            drop(shrinkers);
            if released == 0 {
                return self.alloc();
            }
            // What was let go comes back after the mappers' grace periods.
            for _ in 0..64 {
                if let Some(frame) = self.alloc() {
                    return Some(frame);
                }
                backoff.snooze();
            }
        }
    }

    /// A frame with one reference for the caller (its contents are whatever the last user
    /// left), or `None` when the pool is at its size.
    pub fn alloc(&self) -> Option<Frame> {
        let home = thread_shard();
        let frame = self
            .pop(home)
            .or_else(|| self.steal(home))
            .or_else(|| self.add_chunk(home))?;
        // The frame's count is already 1 (parked by whoever freed it, or by `add_chunk`): the
        // fault path writes no per-frame line here, which the thread that freed the frame
        // (an unmapping writer on another core) last wrote.
        self.held.add(0, 1);
        Some(frame)
    }

    /// Runs `change` on a shard's free list under its lock and publishes the new length hint.
    fn with_free_list<T>(&self, shard: usize, change: impl FnOnce(&mut Vec<Frame>) -> T) -> T {
        let shard = &self.shards[shard];
        let mut free = shard.free.lock().unwrap_or_else(|e| e.into_inner());
        let result = change(&mut free);
        // Relaxed: a hint; the lock orders the list itself.
        shard.available.store(free.len(), Ordering::Relaxed);
        result
    }

    fn pop(&self, shard: usize) -> Option<Frame> {
        self.with_free_list(shard, Vec::pop)
    }

    /// Moves up to half of another shard's free frames (at most `STEAL` of them) to `home`'s
    /// and returns one: frames freed by other threads are reused before the pool grows. Tries
    /// the shard that holds the most first (by the hints: a thread that unmapped much, not one
    /// that has just taken its share and is using it up), then every shard in turn, since the
    /// hints may be stale.
    fn steal(&self, home: usize) -> Option<Frame> {
        let fullest = (0..SHARDS)
            .filter(|&shard| shard != home)
            // Relaxed: a hint (see `available`).
            .max_by_key(|&shard| self.shards[shard].available.load(Ordering::Relaxed))?;
        std::iter::once(fullest)
            .chain((1..SHARDS).map(|i| (home + i) % SHARDS).filter(|&s| s != fullest))
            .find_map(|victim| self.steal_from(victim, home))
    }

    fn steal_from(&self, victim: usize, home: usize) -> Option<Frame> {
        const STEAL: usize = 256;
        let mut taken = self.with_free_list(victim, |other| {
            let keep = other.len() - (other.len().div_ceil(2)).min(STEAL);
            other.split_off(keep)
        });
        let frame = taken.pop()?;
        self.with_free_list(home, |free| free.append(&mut taken));
        Some(frame)
    }

    /// Adds a chunk, puts all but one of its frames in `shard`'s free list and returns that
    /// one; `None` at the pool's size.
    fn add_chunk(&self, shard: usize) -> Option<Frame> {
        let mut chunks = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let total = *chunks * self.config.chunk_frames;
        if total >= self.config.max_frames {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let chunk = unsafe { std::alloc::alloc_zeroed(self.chunk_layout()) };
        if chunk.is_null() {
            return None;
        }
        // Release pairs with the Acquire in `frame_ptr`.
        self.chunks[*chunks].store(chunk, Ordering::Release);
        *chunks += 1;
        drop(chunks);
        let first = total as u64;
        let count = self.config.chunk_frames.min(self.config.max_frames - total) as u64;
        for frame in first..first + count {
            // Parked at 1 (see the module documentation); published with the free list by its
            // lock, and the returned frame is the caller's own.
            self.count(Frame(frame)).store(1, Ordering::Relaxed);
        }
        self.with_free_list(shard, |free| {
            free.extend((first + 1..first + count).rev().map(Frame))
        });
        Some(Frame(first))
    }

    /// A zero-filled frame with one reference for the caller.
    pub fn alloc_zeroed(&self) -> Option<Frame> {
        let frame = self.alloc()?;
        // SAFETY: the frame was just handed out: the caller is its only holder and nothing
        // maps it, so nobody else accesses its memory.
        unsafe { std::ptr::write_bytes(self.frame_ptr(frame), 0, FRAME_SIZE) };
        Some(frame)
    }

    /// Takes another reference on a frame the caller holds (or reached through something that
    /// holds it and cannot drop it meanwhile).
    pub fn get(&self, frame: Frame) {
        let before = self.count(frame).fetch_add(1, Ordering::Relaxed);
        debug_assert!(before > 0, "get on free frame {frame:?}");
    }

    /// Drops a reference; the last one puts the frame back in the pool.
    ///
    /// # Safety
    /// The caller holds this reference (from `alloc`, `get`, or one handed over to it), and
    /// nothing uses the frame through it any more (no translation that the reference stood for
    /// can still be walked by a reader).
    pub unsafe fn put(&self, frame: Frame) {
        if self.drop_reference(frame) {
            self.give_back(std::slice::from_ref(&frame));
        }
    }

    /// Drops one reference on each frame of `frames`, taking the free-list lock once for all
    /// that go back.
    ///
    /// # Safety
    /// As [`FramePool::put`], for each frame.
    pub unsafe fn put_many(&self, frames: &[Frame]) {
        let freed: Vec<Frame> = frames
            .iter()
            .copied()
            .filter(|&f| self.drop_reference(f))
            .collect();
        if !freed.is_empty() {
            self.give_back(&freed);
        }
    }

    /// Drops a reference; whether it was the last.
    fn drop_reference(&self, frame: Frame) -> bool {
        // Release pairs with the Acquire fence below, in whoever drops the last reference:
        // every use through this reference happens before the frame is reused.
        let count = self.count(frame);
        let before = count.fetch_sub(1, Ordering::Release);
        debug_assert!(before > 0, "put on free frame {frame:?}");
        if before == 1 {
            fence(Ordering::Acquire);
            // Park the count at 1 for the next `alloc` (nobody else holds the frame); the free
            // list's lock publishes it with the frame.
            count.store(1, Ordering::Relaxed);
        }
        before == 1
    }

    /// Returns frames whose last reference was dropped to the calling thread's free list (huge
    /// ones to the huge frames' list).
    fn give_back(&self, frames: &[Frame]) {
        let (huge, base): (Vec<Frame>, Vec<Frame>) = frames.iter().partition(|frame| frame.is_huge());
        if !huge.is_empty() {
            for frame in &huge {
                let slot = &self.huge.memory[(frame.0 & !HUGE_BIT) as usize];
                // Relaxed: the last reference's Acquire fence (in `drop_reference`) ordered
                // every use of the memory before this.
                let page = slot.swap(std::ptr::null_mut(), Ordering::Relaxed);
                // SAFETY: allocated in `take_huge` with this layout; the frame is free, so
                // nothing uses its memory any more.
                unsafe { std::alloc::dealloc(page, HugeFrames::layout()) };
            }
            self.huge.in_use.fetch_sub(huge.len(), Ordering::Relaxed);
            let mut free = self.huge.free.lock().unwrap_or_else(|e| e.into_inner());
            free.frames.extend(huge.iter().map(|frame| frame.0 & !HUGE_BIT));
        }
        if !base.is_empty() {
            let shard = thread_shard();
            self.held.add(0, 0u64.wrapping_sub(base.len() as u64));
            self.with_free_list(shard, |free| free.extend_from_slice(&base));
        }
    }

    /// Whether references other than the caller's are held on `frame`, which the caller holds
    /// one of (a private page after fork: then it is copied on write, not reused). Acquire pairs
    /// with the Release of `put`: what the last other holder did through the frame happened
    /// before a reuse.
    pub(crate) fn shared(&self, frame: Frame) -> bool {
        self.count(frame).load(Ordering::Acquire) > 1
    }

    /// References held on a frame now (for tests). A free frame reads 1: the reference its next
    /// allocation hands out.
    pub fn references(&self, frame: Frame) -> u32 {
        self.count(frame).load(Ordering::Relaxed)
    }

    fn count(&self, frame: Frame) -> &AtomicU32 {
        let counts = if frame.is_huge() {
            &self.huge.counts
        } else {
            &self.counts
        };
        usize::try_from(frame.0 & !HUGE_BIT)
            .ok()
            .and_then(|n| counts.get(n))
            .unwrap_or_else(|| panic!("frame {frame:?} does not belong to this pool"))
    }

    /// The frame's memory ([`Frame::size`] bytes).
    ///
    /// # Panics
    /// If `frame` was never handed out by this pool.
    fn frame_ptr(&self, frame: Frame) -> *mut u8 {
        if frame.is_huge() {
            let page = usize::try_from(frame.0 & !HUGE_BIT)
                .ok()
                .and_then(|n| self.huge.memory.get(n))
                // Acquire pairs with the Release in `alloc_huge`.
                .map_or(std::ptr::null_mut(), |page| page.load(Ordering::Acquire));
            assert!(
                !page.is_null(),
                "huge frame {frame:?} does not belong to this pool"
            );
            return page;
        }
        let n = usize::try_from(frame.0).expect("frame number fits usize");
        let chunk = self
            .chunks
            .get(n / self.config.chunk_frames)
            .map_or(std::ptr::null_mut(), |c| {
                // Acquire pairs with the Release in `add_chunk`.
                c.load(Ordering::Acquire)
            });
        assert!(
            !chunk.is_null() && n < self.config.max_frames,
            "frame {n} does not belong to this pool"
        );
        // SAFETY: the chunk holds `chunk_frames` frames and `n` lies in it.
        unsafe { chunk.add((n % self.config.chunk_frames) * FRAME_SIZE) }
    }

    /// The frame's bytes as atomics: threads may read and write a mapped page at once, as CPUs
    /// do, without a data race.
    fn bytes(&self, frame: Frame) -> &[AtomicU8] {
        // SAFETY: the frame's bytes stay allocated for the pool's lifetime; AtomicU8 has the
        // layout of u8, and every access to mapped frames goes through these atomics.
        unsafe { std::slice::from_raw_parts(self.frame_ptr(frame).cast::<AtomicU8>(), frame.size()) }
    }

    /// Copies `buf.len()` bytes from `frame` at `offset`.
    ///
    /// # Panics
    /// If the range leaves the frame.
    pub fn read(&self, frame: Frame, offset: usize, buf: &mut [u8]) {
        let bytes = &self.bytes(frame)[offset..offset + buf.len()];
        for (out, byte) in buf.iter_mut().zip(bytes) {
            *out = byte.load(std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Copies `data` into `frame` at `offset`.
    ///
    /// # Panics
    /// If the range leaves the frame.
    pub fn write(&self, frame: Frame, offset: usize, data: &[u8]) {
        let bytes = &self.bytes(frame)[offset..offset + data.len()];
        for (byte, &value) in bytes.iter().zip(data) {
            byte.store(value, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Copies the whole of `from` into `to`.
    ///
    /// # Panics
    /// If the two differ in size.
    pub fn copy(&self, from: Frame, to: Frame) {
        assert_eq!(from.size(), to.size(), "copy between frames of different sizes");
        for (dst, src) in self.bytes(to).iter().zip(self.bytes(from)) {
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            dst.store(src.load(relaxed), relaxed);
        }
    }

    /// 4 KiB frames held (handed out and not yet back); see [`FramePool::huge_in_use`].
    pub fn in_use(&self) -> usize {
        // Wrapping sums of wrapping additions: the true count, as two's complement.
        let held = self.held.sum(0) as i64;
        usize::try_from(held).unwrap_or(0)
    }

    /// The pool's configuration.
    pub fn config(&self) -> FramePoolConfig {
        self.config
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        for page in self.huge.memory.iter() {
            let page = page.load(Ordering::Relaxed);
            if !page.is_null() {
                // SAFETY: allocated in `alloc_huge` with this layout; the pool owns it.
                unsafe { std::alloc::dealloc(page, HugeFrames::layout()) };
            }
        }
        let layout = self.chunk_layout();
        for chunk in self.chunks.iter() {
            let chunk = chunk.load(Ordering::Relaxed);
            if !chunk.is_null() {
                // SAFETY: allocated in `add_chunk` with this layout; the pool owns it.
                unsafe { std::alloc::dealloc(chunk, layout) };
            }
        }
    }
}
