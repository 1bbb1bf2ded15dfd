//! A software page table: a 4-level radix tree of 512 atomic entries per table, translating
//! 48-bit addresses in 4 KiB pages, or in 2 MiB huge pages one level up, walked without locks.
//!
//! Entry format (`u64`): bit 0 present (the entry holds a frame), bit 1 writable, bit 2 dirty,
//! bit 3 accessed, bit 4 private (the frame is the mapping's own copy, not a file's page), bit 5
//! no-access (the frame is kept but the translation grants nothing: PROT_NONE), bit 6 huge (an
//! entry of the level above the leaves that maps a huge frame itself: Linux's PMD leaf), bit 8
//! guard (alone: a leaf that maps nothing and where a fault is a segmentation fault,
//! MADV_GUARD_INSTALL; kept by every range operation but zap, moved by relocate); bits
//! 12.. hold the frame number shifted left by 12 (leaves) or the address of the next table
//! (upper levels; tables are 4096-aligned). A present leaf entry holds one reference on its
//! frame. "Leaf" below means either kind: a 4 KiB entry of the lowest level or a huge entry.
//!
//! Invariants:
//! - A table, once linked into its parent with a compare-and-swap (Release, pairing with the
//!   Acquire loads of walkers), stays linked until `zap` unlinks it, and is freed only after a
//!   grace period of the RCU domain the caller passes (walkers may still be inside it).
//! - `zap(start, end)` unlinks only tables whose whole range lies inside `[start, end)`; the
//!   caller guarantees that nobody installs translations in that range meanwhile (the VMA
//!   protocol: the old VMAs are gone and the new ones are BABY when the flush hook runs).
//! - The root table is never freed before the page table itself.
//! - A huge entry lies in a level-2 slot that holds no table, and only ranges that cover it
//!   whole change it (hugetlb mappings are 2 MiB-aligned and split only there); a range walk
//!   hands it to its callback as one leaf at its first address, never descends into it.
//! - **Shared level-2 tables** (PMD sharing). A level-3 entry with [`SHARED`] links a level-2
//!   table that other page tables may link too; this page table does not own it. Lookups walk
//!   through it; every range operation that changes anything (all but `present`) instead
//!   unlinks it whole (unshares: its translations stay for the other sharers) and hands it to
//!   the owner through [`PageTable::take_unshared`], who lets go of it a grace period later.

use crate::frames::Frame;
use maple::rcu::{DropBox, Keys, Rcu};
use maple::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use vma::PAGE_SIZE;

/// The translation is valid.
pub const PRESENT: u64 = 1 << 0;
/// Writes are allowed.
pub const WRITABLE: u64 = 1 << 1;
/// The page was written through this translation.
pub const DIRTY: u64 = 1 << 2;
/// The page was accessed through this translation.
pub const ACCESSED: u64 = 1 << 3;
/// The frame is the mapping's own (anonymous memory, or a private copy of a file page).
pub const PRIVATE: u64 = 1 << 4;
/// The frame is kept but the translation allows no access (the mapping is PROT_NONE now).
pub const NO_ACCESS: u64 = 1 << 5;
/// A level-2 entry mapping a huge frame (2 MiB) itself, instead of pointing to a table.
pub const HUGE: u64 = 1 << 6;
/// Bytes a huge entry maps.
pub const HUGE_PAGE_SIZE: u64 = 1 << 21;
/// A level-3 entry linking a level-2 table shared with other page tables.
pub const SHARED: u64 = 1 << 7;
/// A leaf entry that maps nothing and is no hole either: a guard (MADV_GUARD_INSTALL), where a
/// fault is a segmentation fault. Never [`PRESENT`].
pub const GUARD: u64 = 1 << 8;
/// Bytes a level-2 table maps: what one shared table covers.
pub const SHARED_SPAN: u64 = 1 << 30;

const FLAGS: u64 = 0xfff;
const ENTRIES: usize = 512;
const LEVELS: u32 = 4;
/// Highest address + 1 the table translates (48 bits).
pub const ADDRESS_LIMIT: u64 = 1 << 48;

/// One page-table page.
#[repr(C, align(4096))]
pub(crate) struct Table {
    entries: [AtomicU64; ENTRIES],
}

impl Table {
    /// An empty table, built in place on the heap: a 512-entry array built on the stack first
    /// would not fit a shuttle task's small stack (its atomics are larger than a `u64`).
    fn new() -> Box<Self> {
        let mut table = Box::<Self>::new_uninit();
        // SAFETY: the pointer is to the table's own uninitialized memory; no reference to it
        // is made before every entry is written.
        let entries = unsafe { &raw mut (*table.as_mut_ptr()).entries }.cast::<AtomicU64>();
        for i in 0..ENTRIES {
            // SAFETY: `i` is inside the array, whose memory the box owns.
            unsafe { entries.add(i).write(AtomicU64::new(0)) };
        }
        // SAFETY: its one field, the array, is written whole above.
        unsafe { table.assume_init() }
    }
}

/// A leaf entry's value, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pte(pub u64);

impl Pte {
    /// A present translation to `frame` with the given flag bits ([`HUGE`] added for a huge
    /// frame).
    pub fn new(frame: Frame, flags: u64) -> Self {
        let huge = if frame.is_huge() { HUGE } else { 0 };
        Self((frame.0 << 12) | (flags & FLAGS) | huge | PRESENT)
    }

    /// Whether the entry holds a frame.
    pub fn present(self) -> bool {
        self.0 & PRESENT != 0
    }

    /// Whether the translation allows reads (present and not [`NO_ACCESS`]).
    pub fn readable(self) -> bool {
        self.0 & (PRESENT | NO_ACCESS) == PRESENT
    }

    /// Whether the frame is the mapping's own ([`PRIVATE`]).
    pub fn private(self) -> bool {
        self.0 & PRIVATE != 0
    }

    /// The same entry with `set` bits set and `clear` bits cleared.
    pub fn with(self, set: u64, clear: u64) -> Self {
        Self((self.0 | (set & FLAGS)) & !(clear & FLAGS))
    }

    /// Whether writes are allowed (present, writable and not [`NO_ACCESS`]).
    pub fn writable(self) -> bool {
        self.readable() && self.0 & WRITABLE != 0
    }

    /// The frame it maps.
    pub fn frame(self) -> Frame {
        Frame(self.0 >> 12)
    }

    /// Whether it maps a huge frame ([`HUGE`]).
    pub fn huge(self) -> bool {
        self.0 & HUGE != 0
    }

    /// Whether a write went through it since it was installed or last cleaned ([`DIRTY`]).
    pub fn dirty(self) -> bool {
        self.0 & DIRTY != 0
    }

    /// Whether it is a guard ([`GUARD`]).
    pub fn guard(self) -> bool {
        self.0 == GUARD
    }
}

/// Index of `addr` in the table at `level` (1: leaf tables ... 4: the root).
fn index(addr: u64, level: u32) -> usize {
    ((addr >> (12 + 9 * (level - 1))) & (ENTRIES as u64 - 1)) as usize
}

/// Bytes one entry at `level` covers.
fn entry_span(level: u32) -> u64 {
    1 << (12 + 9 * (level - 1))
}

/// What a range walk does with a shared level-2 table it meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    /// Walk through it (reading).
    Descend,
    /// Unlink it from this page table (changing: see [`PageTable::take_unshared`]).
    Unshare,
}

/// Called by the range walk after it has been through a child table: `(lo, hi, slot, child)`.
type TableDone<'a> = &'a mut dyn FnMut(u64, u64, &AtomicU64, *mut Table);

/// A level-2 table that page tables share (see the module documentation): whoever shares it
/// owns it ([`SharedTable::new`], [`SharedTable::free`]); page tables link it by reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedTable(std::ptr::NonNull<Table>);

// SAFETY: a table is 512 atomics; who may free it is the owner's protocol, stated on `free`.
unsafe impl Send for SharedTable {}
// SAFETY: as above.
unsafe impl Sync for SharedTable {}

impl SharedTable {
    /// A new, empty level-2 table.
    pub fn new() -> Self {
        Self(std::ptr::NonNull::from(Box::leak(Table::new())))
    }

    /// Frees the table and returns the frames its huge entries held (put them).
    ///
    /// # Safety
    /// No page table links it any more, no walker can still be inside it, and it was made by
    /// [`SharedTable::new`] and is freed once.
    pub unsafe fn free(self) -> Vec<Frame> {
        // SAFETY: the caller's contract: the table is ours alone now.
        let table = unsafe { Box::from_raw(self.0.as_ptr()) };
        table
            .entries
            .iter()
            .map(|entry| Pte(entry.load(Ordering::Acquire)))
            .filter(|pte| pte.present())
            .map(Pte::frame)
            .collect()
    }

    fn link(self) -> u64 {
        self.0.as_ptr() as u64 | PRESENT | SHARED
    }
}

impl Default for SharedTable {
    fn default() -> Self {
        Self::new()
    }
}

/// A software page table.
pub struct PageTable {
    root: Box<Table>,
    /// Tables linked below the root (shared ones not counted: this table does not own them).
    tables: AtomicUsize,
    /// Shared tables range operations unlinked, with the first address each covered, until
    /// the owner takes them.
    unshared: maple::sync::Mutex<Vec<(u64, SharedTable)>>,
}

impl Default for PageTable {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PageTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTable")
            .field("tables", &self.tables())
            .finish()
    }
}

impl PageTable {
    /// An empty page table (just the root).
    pub fn new() -> Self {
        Self {
            root: Table::new(),
            tables: AtomicUsize::new(0),
            unshared: maple::sync::Mutex::new(Vec::new()),
        }
    }

    /// Links `table` as the level-2 table of the 1 GiB around `addr` (allocating the tables
    /// above), if none is linked there yet; false otherwise.
    pub fn link_shared(&self, addr: u64, table: SharedTable) -> bool {
        let slot = self.level3_slot(addr);
        // Release pairs with the Acquire loads of walkers: the table's entries are visible
        // before the link is.
        slot.compare_exchange(0, table.link(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether a level-2 table (its own or a shared one) is linked for the 1 GiB around `addr`.
    pub fn has_level2(&self, addr: u64) -> bool {
        // Acquire as in `walk`.
        self.level3_slot(addr).load(Ordering::Acquire) != 0
    }

    fn level3_slot(&self, addr: u64) -> &AtomicU64 {
        self.walk(addr, true, 3).expect("tables were allocated")
    }

    /// The shared tables that range operations have unlinked since the last call, with the
    /// first address each covered: the owner lets go of each once no walker of this table can
    /// still be inside it (a grace period of its domain).
    pub fn take_unshared(&self) -> Vec<(u64, SharedTable)> {
        std::mem::take(&mut *self.unshared.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Tables below the root.
    pub fn tables(&self) -> usize {
        self.tables.load(Ordering::Relaxed)
    }

    /// The leaf entry for `addr` (a huge entry where one maps it), if the tables down to it
    /// exist.
    ///
    /// The reference is valid while the caller's read-side section (of the domain later passed
    /// to `zap`) lasts.
    pub fn entry(&self, addr: u64) -> Option<&AtomicU64> {
        self.walk(addr, false, 1)
    }

    /// The leaf entry for `addr` (a huge entry where one maps it), allocating missing tables (a
    /// racing walker's table wins; the loser's is dropped unpublished).
    ///
    /// # Panics
    /// If `addr` is not below [`ADDRESS_LIMIT`].
    pub fn entry_or_insert(&self, addr: u64) -> &AtomicU64 {
        self.walk(addr, true, 1).expect("tables were allocated")
    }

    /// The level-2 slot for `addr`, where a huge entry maps the 2 MiB around it, if the level-2
    /// table (its own or a shared one) exists.
    pub fn huge_entry(&self, addr: u64) -> Option<&AtomicU64> {
        self.walk(addr, false, 2)
    }

    /// The level-2 slot for `addr`, where a huge entry maps the 2 MiB around it, allocating the
    /// tables above it. The caller maps that range with huge entries only (see the module
    /// documentation).
    ///
    /// # Panics
    /// If `addr` is not below [`ADDRESS_LIMIT`], or the slot links a table of 4 KiB entries.
    pub fn huge_entry_or_insert(&self, addr: u64) -> &AtomicU64 {
        let slot = self.walk(addr, true, 2).expect("tables were allocated");
        // Acquire as in `walk`.
        let current = slot.load(Ordering::Acquire);
        assert!(
            current == 0 || current & HUGE != 0,
            "a table of 4 KiB entries lies in a huge page's range at {addr:#x}"
        );
        slot
    }

    /// Walks down to `addr`'s entry at level `leaf_level` (1 or 2), or to a huge entry above
    /// it.
    fn walk(&self, addr: u64, allocate: bool, leaf_level: u32) -> Option<&AtomicU64> {
        assert!(
            addr < ADDRESS_LIMIT,
            "address {addr:#x} is outside the 48-bit page table"
        );
        let mut table: &Table = &self.root;
        for level in (leaf_level + 1..=LEVELS).rev() {
            let slot = &table.entries[index(addr, level)];
            // Acquire pairs with the Release of the CAS that linked the table.
            let mut next = slot.load(Ordering::Acquire);
            if next & HUGE != 0 {
                return Some(slot);
            }
            if next == 0 {
                if !allocate {
                    return None;
                }
                let fresh = Box::into_raw(Table::new());
                match slot.compare_exchange(0, fresh as u64 | PRESENT, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        self.tables.fetch_add(1, Ordering::Relaxed);
                        next = fresh as u64 | PRESENT;
                    }
                    Err(winner) => {
                        // SAFETY: `fresh` was never published.
                        drop(unsafe { Box::from_raw(fresh) });
                        next = winner;
                    }
                }
            }
            // SAFETY: linked tables stay allocated until a grace period after they are unlinked,
            // and the caller is inside a read-side section (or is the writer that unlinks).
            table = unsafe { &*((next & !FLAGS) as *const Table) };
        }
        Some(&table.entries[index(addr, leaf_level)])
    }

    /// The translation for `addr`, if present.
    pub fn translate(&self, addr: u64) -> Option<Pte> {
        let entry = self.entry(addr)?;
        Some(Pte(entry.load(Ordering::Acquire))).filter(|pte| pte.present())
    }

    /// Removes every translation in `[start, end)` and returns the frames they mapped (put them
    /// once no reader can still be copying through an old translation). Tables reached on the
    /// way whose whole range lies inside `free_tables` are unlinked and retired to `rcu`, each
    /// for the keys (addresses) it covers: only walks of those addresses pass through it.
    ///
    /// The caller guarantees that nobody installs translations in `free_tables` meanwhile and
    /// that none exist there outside `[start, end)` (it is free space around the range).
    pub fn zap<R: Rcu>(&self, start: u64, end: u64, free_tables: (u64, u64), rcu: &R) -> Vec<Frame> {
        let (floor, ceiling) = (free_tables.0.min(start), free_tables.1.max(end));
        self.take_entries(start, end, &mut |lo, hi, slot, child| {
            if floor <= lo && hi <= ceiling {
                // Release pairs with the Acquire of walkers: they see the table gone or whole.
                slot.store(0, Ordering::Release);
                self.tables.fetch_sub(1, Ordering::Relaxed);
                // SAFETY: unlinked above (new walkers cannot reach it), emptied by this zap (no
                // translation exists in it outside the zapped range), retired once; it came
                // from `Box::into_raw`; a walk reaches it only for an address in `[lo, hi)`.
                unsafe { rcu.retire_within::<Table, DropBox>(child, Keys::new(lo, hi - 1)) };
            }
        })
    }

    /// Removes every translation in `[start, end)` but keeps the tables and the guards, and
    /// returns the frames they held (put them once no reader can still be copying through an
    /// old translation). Safe against faults installing meanwhile (MADV_DONTNEED); call it
    /// inside a read-side section.
    pub fn clear(&self, start: u64, end: u64) -> Vec<Frame> {
        self.clear_if(start, end, |_| true)
    }

    /// Removes the translations in `[start, end)` for which `matches` holds (a hole punch
    /// removes those mapping a file's frames and keeps private copies), keeping the tables, and
    /// returns the frames they held. Safe against faults changing entries meanwhile; call it
    /// inside a read-side section.
    pub fn clear_if(&self, start: u64, end: u64, matches: impl Fn(Pte) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        self.for_each_entry(start, end, |_, entry| {
            let mut current = entry.load(Ordering::Acquire);
            // AcqRel as in `take_entries`; a failed exchange retries with what a fault stored.
            while current & PRESENT != 0 && matches(Pte(current)) {
                match entry.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        frames.push(Pte(current).frame());
                        break;
                    }
                    Err(now) => current = now,
                }
            }
        });
        frames
    }

    /// Takes the dirty bit off the private present entries of `[start, end)` (MADV_FREE: the
    /// caller has taken write permission off first, so that a write faults and sets it again);
    /// returns whether one was writable still (a fault upgraded it meanwhile: revoked again).
    pub fn clean(&self, start: u64, end: u64) -> bool {
        let mut revoked = false;
        self.for_each_entry(start, end, |_, entry| {
            // AcqRel: orders with faults that compare-and-swap the entry, as `protect_if`.
            let changed = entry.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (old & PRESENT != 0 && old & PRIVATE != 0).then_some(old & !(WRITABLE | DIRTY))
            });
            revoked |= changed.is_ok_and(|old| old & WRITABLE != 0);
        });
        revoked
    }

    /// Turns every 4 KiB entry of `[start, end)` into a guard (MADV_GUARD_INSTALL), allocating
    /// tables as needed; returns the frames of the translations it replaced (put them once no
    /// reader can still be copying through them). Each entry changes with one compare-and-swap:
    /// a fault that raced it either installed first, and its translation is taken here, or
    /// finds the guard when it tries. Call it inside a read-side section.
    pub fn guard(&self, start: u64, end: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        for addr in (start..end).step_by(PAGE_SIZE as usize) {
            let entry = self.entry_or_insert(addr);
            // AcqRel as in `take_entries`.
            let old = entry.swap(GUARD, Ordering::AcqRel);
            if old & PRESENT != 0 {
                frames.push(Pte(old).frame());
            }
        }
        frames
    }

    /// Turns the guards of `[start, end)` back into holes (MADV_GUARD_REMOVE). Call it inside
    /// a read-side section.
    pub fn unguard(&self, start: u64, end: u64) {
        self.for_each_entry(start, end, |_, entry| {
            // Release pairs with the Acquire of faults that find the hole.
            let _ = entry.compare_exchange(GUARD, 0, Ordering::Release, Ordering::Relaxed);
        });
    }

    /// The present entries of `[start, end)`, with their addresses, in address order. Call it
    /// inside a read-side section.
    pub fn present(&self, start: u64, end: u64) -> Vec<(u64, Pte)> {
        let mut found = Vec::new();
        let mut note = |addr, entry: &AtomicU64| {
            let pte = Pte(entry.load(Ordering::Acquire));
            if pte.present() {
                found.push((addr, pte));
            }
        };
        // Reading changes nothing: shared tables are walked through.
        self.visit(start, end, Shared::Descend, &mut note, &mut |_, _, _, _| {});
        found
    }

    /// Swaps every leaf entry in `[start, end)` to empty and returns the frames the present ones
    /// held; `table_done` is called as in [`PageTable::visit`].
    fn take_entries(&self, start: u64, end: u64, table_done: TableDone<'_>) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut take = |_, entry: &AtomicU64| {
            // AcqRel: Acquire so the frame's last use through this entry happens before its
            // release; Release orders with faults that compare-and-swap the entry.
            let old = entry.swap(0, Ordering::AcqRel);
            if old & PRESENT != 0 {
                frames.push(Pte(old).frame());
            }
        };
        self.visit(start, end, Shared::Unshare, &mut take, table_done);
        frames
    }

    /// Calls `f` with the address and entry of every leaf entry in `[start, end)` whose tables
    /// exist (absent tables are skipped whole), unsharing the shared tables it meets. Call it
    /// inside a read-side section, or as the writer that alone unlinks tables.
    fn for_each_entry(&self, start: u64, end: u64, mut f: impl FnMut(u64, &AtomicU64)) {
        self.visit(start, end, Shared::Unshare, &mut f, &mut |_, _, _, _| {});
    }

    /// Unlinks the shared table `entry` links (it covers `[lo, lo + SHARED_SPAN)`) and queues
    /// it for the owner; nothing if another operation unlinked it first.
    fn unshare(&self, lo: u64, entry: &AtomicU64) {
        // AcqRel: one of two racing unsharers gets the table.
        let old = entry.swap(0, Ordering::AcqRel);
        if old & SHARED != 0 {
            let table =
                std::ptr::NonNull::new((old & !FLAGS) as *mut Table).expect("linked tables are not null");
            let mut unshared = self.unshared.lock().unwrap_or_else(|e| e.into_inner());
            unshared.push((lo, SharedTable(table)));
        }
    }

    /// The one range walk: `leaf(addr, entry)` for every leaf entry in `[start, end)` whose
    /// tables exist, and `table_done(lo, hi, slot, child)` after the walk has been through a
    /// child table covering `[lo, hi)`, linked from `slot`; a shared table is walked through
    /// or unshared, as `shared` says.
    fn visit(
        &self,
        start: u64,
        end: u64,
        shared: Shared,
        leaf: &mut dyn FnMut(u64, &AtomicU64),
        table_done: TableDone<'_>,
    ) {
        #[allow(clippy::too_many_arguments)]
        fn walk(
            this: &PageTable,
            shared: Shared,
            table: &Table,
            level: u32,
            base: u64,
            (start, end): (u64, u64),
            leaf: &mut dyn FnMut(u64, &AtomicU64),
            table_done: TableDone<'_>,
        ) {
            let span = entry_span(level);
            let first = if start > base { index(start, level) } else { 0 };
            for slot in first..ENTRIES {
                let lo = base + slot as u64 * span;
                if lo >= end {
                    break;
                }
                let entry = &table.entries[slot];
                if level == 1 {
                    leaf(lo, entry);
                    continue;
                }
                // Acquire pairs with the Release of the CAS that linked the table.
                let next = entry.load(Ordering::Acquire);
                if next & HUGE != 0 {
                    debug_assert!(
                        start <= lo && lo + span <= end,
                        "a range covers part of a huge entry"
                    );
                    leaf(lo, entry);
                    continue;
                }
                if next & SHARED != 0 && shared == Shared::Unshare {
                    this.unshare(lo, entry);
                    continue;
                }
                if next != 0 {
                    let child = (next & !FLAGS) as *mut Table;
                    let hi = lo + span;
                    // SAFETY: linked tables stay allocated until a grace period after they are
                    // unlinked, and the caller is inside a read-side section (or the writer).
                    walk(
                        this,
                        shared,
                        unsafe { &*child },
                        level - 1,
                        lo,
                        (start.max(lo), end.min(hi)),
                        leaf,
                        table_done,
                    );
                    // A shared table is not this page table's to free.
                    if next & SHARED == 0 {
                        table_done(lo, hi, entry, child);
                    }
                }
            }
        }
        let end = end.min(ADDRESS_LIMIT);
        if start < end {
            walk(
                self,
                shared,
                &self.root,
                LEVELS,
                0,
                (start, end),
                leaf,
                table_done,
            );
        }
    }

    /// Makes every translation in `[start, end)` allow no more than `read` / `write`: clears
    /// the writable bit, and without read sets [`NO_ACCESS`] (the frames stay: the contents
    /// survive until permissions come back). Faults restore what the mapping allows. Returns
    /// whether a translation lost a permission.
    pub fn protect(&self, start: u64, end: u64, read: bool, write: bool) -> bool {
        self.protect_if(start, end, read, write, |_| true)
    }

    /// [`PageTable::protect`] for the translations for which `matches` holds (writeback
    /// write-protects those mapping a file's frames and keeps private copies writable).
    pub fn protect_if(
        &self,
        start: u64,
        end: u64,
        read: bool,
        write: bool,
        matches: impl Fn(Pte) -> bool,
    ) -> bool {
        let (set, clear) = match (read, write) {
            (_, true) => return false,
            (true, false) => (0, WRITABLE),
            (false, false) => (NO_ACCESS, WRITABLE),
        };
        let mut reduced = false;
        self.for_each_entry(start, end, |_, entry| {
            // AcqRel: orders with faults that CAS the entry.
            let changed = entry.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                let new = Pte(old).with(set, clear).0;
                (old & PRESENT != 0 && new != old && matches(Pte(old))).then_some(new)
            });
            reduced |= changed.is_ok();
        });
        reduced
    }

    /// fork's copy-on-write copy: every present leaf entry of `[start, end)` that `matches` is
    /// write-protected here and installed, write-protected too, at the same address in `child`,
    /// which holds none there; every guard is copied as it is. Returns the frames copied (the
    /// caller takes a reference on each for the child before anyone can walk the child's
    /// entries) and whether an entry lost its write permission here (revoked). The caller keeps
    /// this range's faults out meanwhile.
    pub fn copy_protected(
        &self,
        start: u64,
        end: u64,
        child: &PageTable,
        matches: impl Fn(Pte) -> bool,
    ) -> (Vec<Frame>, bool) {
        let mut frames = Vec::new();
        let mut revoked = false;
        self.for_each_entry(start, end, |addr, entry| {
            if Pte(entry.load(Ordering::Acquire)).guard() {
                child.entry_or_insert(addr).store(GUARD, Ordering::Release);
                return;
            }
            // AcqRel: orders with accesses through the entry, as `protect_if`.
            let Ok(old) = entry.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (old & PRESENT != 0 && matches(Pte(old))).then_some(old & !WRITABLE)
            }) else {
                return;
            };
            revoked |= old & WRITABLE != 0;
            let destination = if old & HUGE != 0 {
                child.huge_entry_or_insert(addr)
            } else {
                child.entry_or_insert(addr)
            };
            // Release pairs with the Acquire of the child's walkers, as any install.
            let previous = destination.swap(old & !WRITABLE, Ordering::Release);
            debug_assert_eq!(previous, 0, "fork copies into an empty table");
            frames.push(Pte(old).frame());
        });
        (frames, revoked)
    }

    /// Moves the translations of `[from, from + len)` to `[to, to + len)` (mremap), allocating
    /// the destination's tables; the destination holds none. The caller guarantees that nobody
    /// installs translations in either range meanwhile, and zaps the source afterwards to free
    /// its tables. Returns whether a translation moved.
    pub fn relocate(&self, from: u64, to: u64, len: u64) -> bool {
        let mut moved = false;
        self.for_each_entry(from, from.saturating_add(len), |addr, entry| {
            let old = entry.swap(0, Ordering::AcqRel);
            // A guard moves too.
            if old & PRESENT != 0 || Pte(old).guard() {
                let at = addr - from + to;
                let destination = if old & HUGE != 0 {
                    self.huge_entry_or_insert(at)
                } else {
                    self.entry_or_insert(at)
                };
                let previous = destination.swap(old, Ordering::AcqRel);
                debug_assert_eq!(previous, 0, "relocate into a range with translations");
                moved |= old & PRESENT != 0;
            }
        });
        moved
    }
}

impl Drop for PageTable {
    fn drop(&mut self) {
        fn free(table: &Table, level: u32) {
            for entry in &table.entries {
                let next = entry.load(Ordering::Relaxed);
                // Huge entries are not tables, shared tables are not ours.
                if level > 1 && next != 0 && next & (HUGE | SHARED) == 0 {
                    let child = (next & !FLAGS) as *mut Table;
                    // SAFETY: the page table owns its linked tables; nothing else can reach them now.
                    let child = unsafe { Box::from_raw(child) };
                    free(&child, level - 1);
                }
            }
        }
        free(&self.root, LEVELS);
    }
}
