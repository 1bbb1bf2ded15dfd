//! The address space: VMAs in a maple tree, changed only through one replacement protocol.
//!
//! Every operation validates its input, computes the new VMAs of the ranges it changes (splits
//! at the range ends, merges with compatible neighbours), and hands them to [`AddressSpace`]'s
//! one routine, `apply`, which runs the protocol while holding the tree's writer lock:
//!
//! 1. the new VMAs are built BABY;
//! 2. they are stored into the tree (`replace_exact`, one publication per changed range):
//!    lookups now find them, and the displaced VMAs stay valid for readers that found them;
//! 3. the displaced VMAs are marked ZOMBIE (no new references) and the writer waits until their
//!    reference counts drain;
//! 4. it waits for a grace period: faults that found an old VMA under an RCU guard, without a
//!    reference (the fast path), have finished;
//! 5. the displaced VMAs are freed;
//! 6. the flush hook removes every translation in the changed ranges (the fault layer's page
//!    table): no fault can install one from an old VMA any more (steps 3–4), and none from a new
//!    VMA yet (they are BABY);
//! 7. BABY is cleared on the new VMAs and the faults waiting for them are woken;
//! 8. where the flush revoked translations (removed them, or took permissions away), the writer
//!    waits for a grace period keyed to those ranges: an access that read an old translation
//!    before the flush (a `write` copying through it, like a store through a stale TLB entry)
//!    has completed before the call returns, as a TLB shootdown guarantees on Linux. Sections
//!    keyed elsewhere are not waited for.
//!
//! A change that displaces nothing (mapping into free space without merging) skips steps 3–6
//! and 8: nobody can be using what did not exist. Invariant between operations: no two adjacent VMAs
//! could be merged (every operation merges what it makes adjacent), VMAs are page aligned and
//! inside the space's bounds.

use crate::error::{Errno, Error, Result};
use crate::request::{
    MmapRequest, Placement, RemapRequest, aligned, einval, enomem, protect_range, unmap_range,
};
use crate::vma::{Backing, Events, MappedFile, Mapping, Prot, Unusable, Vma, VmaRef};
use crate::{PAGE_SHIFT, PAGE_SIZE};
use maple::rcu::{DefaultRcu, Keys, Rcu as _};
use maple::sync::Mutex;
use maple::sync::atomic::{AtomicU64, Ordering};
use maple::{Displaced, Guard, MapleTree, Writer};
use smallvec::{SmallVec, smallvec};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

/// What the fault layer must do to its translations when mappings change (step 6 of the
/// protocol). Called by writers, with the tree's writer lock held, after the old VMAs of the
/// range are gone (no fault can install a translation from them any more) and before the new
/// ones are usable (none can install one from them yet). `rcu` is the space's domain: memory
/// that lock-free walkers may still be reading is retired to it.
///
/// Each method returns whether it *revoked* a translation: removed one, or took a permission
/// away from one. Accesses that read such a translation before the flush may still be copying
/// through it; the protocol waits for them (step 8) before the call returns.
pub trait FlushHook: Send + Sync {
    /// Removes every translation in `[start, end)` (munmap, MAP_FIXED over old mappings, brk
    /// and mremap shrinking). Page tables lying wholly inside `free_tables` (the range plus the
    /// free space around it, where no VMA is) may be freed: no translation exists there
    /// outside `[start, end)`, and none can appear until the hook returns.
    fn zap(&self, start: u64, end: u64, free_tables: (u64, u64), rcu: &DefaultRcu) -> bool;

    /// `[start, end)` now has permissions `prot` (mprotect): no translation may allow more
    /// (translations may keep allowing less; faults upgrade them).
    fn protect(&self, start: u64, end: u64, prot: Prot, rcu: &DefaultRcu) -> bool;

    /// `[from, from + len)` moved to `[to, to + len)` (mremap): the translations move with it,
    /// keeping the contents. The destination holds none. Moving a translation revokes it at
    /// its old address.
    fn relocate(&self, from: u64, to: u64, len: u64, rcu: &DefaultRcu) -> bool;
}

/// A flush hook for address spaces without page tables (tests, pure VMA bookkeeping): there is
/// never a translation to revoke.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFlush;

impl FlushHook for NoFlush {
    fn zap(&self, _start: u64, _end: u64, _free_tables: (u64, u64), _rcu: &DefaultRcu) -> bool {
        false
    }

    fn protect(&self, _start: u64, _end: u64, _prot: Prot, _rcu: &DefaultRcu) -> bool {
        false
    }

    fn relocate(&self, _from: u64, _to: u64, _len: u64, _rcu: &DefaultRcu) -> bool {
        false
    }
}

/// Address ranges whose translations a change revoked, and the wait for the accesses that may
/// still be going through them (step 8 of the protocol; also MADV_DONTNEED's, and the
/// benchmark's baseline designs').
#[derive(Debug, Default, Clone)]
pub struct Revoked {
    ranges: SmallVec<[(u64, u64); 2]>,
}

impl Revoked {
    /// Nothing revoked yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that translations in `[start, end)` were revoked, if `revoked` (what a flush
    /// returned).
    pub fn record(&mut self, revoked: bool, start: u64, end: u64) {
        if revoked && start < end {
            self.ranges.push((start, end));
        }
    }

    /// Whether anything was revoked.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Waits until every read-side section of `rcu` that may have read a revoked translation
    /// has ended: the sections running now, except those keyed to addresses outside the
    /// ranges. Returns how long it waited (zero at once when nothing was revoked).
    ///
    /// # Panics
    /// If called inside a read-side section.
    pub fn wait(&self, rcu: &DefaultRcu) -> std::time::Duration {
        if self.is_empty() {
            return std::time::Duration::ZERO;
        }
        rcu.synchronize_timed_for(|keys| {
            self.ranges
                .iter()
                .any(|&(start, end)| keys.overlaps(Keys::new(start, end - 1)))
        })
    }
}

/// One call of the flush hook, recorded by an operation and made in step 6.
#[derive(Debug, Clone, Copy)]
enum Flush {
    Zap(u64, u64),
    Protect(u64, u64, Prot),
    Relocate { from: u64, to: u64, len: u64 },
}

/// One run of the protocol: the changes an operation published (steps 1–2), waiting for
/// `AddressSpace::finish` to complete steps 3–7 for all of them at once (mremap publishes an
/// unmap and a map in one run, so the contents move while neither range is usable).
struct Run<'t> {
    displaced: Option<Displaced<'t, Box<Vma>, DefaultRcu>>,
    /// New VMAs (BABY) still in the tree; their boxes do not move, and only this writer could
    /// free them.
    born: SmallVec<[*const Vma; 4]>,
}

impl Run<'_> {
    fn new() -> Self {
        Self {
            displaced: None,
            born: SmallVec::new(),
        }
    }
}

/// The bounds of an address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Lowest usable address (Linux's `mmap_min_addr`).
    pub low: u64,
    /// One past the highest usable address (Linux's `TASK_SIZE`).
    pub high: u64,
    /// Top-down placement searches below this address first.
    pub mmap_base: u64,
}

impl Layout {
    /// x86-64 user space with 4-level page tables: `[0x10000, 0x7ffffffff000)`, mmap base at
    /// 0x7f0000000000.
    pub const X86_64: Layout = Layout {
        low: 0x1_0000,
        high: 0x7fff_ffff_f000,
        mmap_base: 0x7f00_0000_0000,
    };
}

/// mmap flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapFlags {
    /// MAP_SHARED.
    pub shared: bool,
    /// MAP_PRIVATE.
    pub private: bool,
    /// MAP_ANONYMOUS.
    pub anonymous: bool,
    /// MAP_FIXED: replace whatever is there.
    pub fixed: bool,
    /// MAP_FIXED_NOREPLACE: fail with EEXIST if anything is there.
    pub fixed_noreplace: bool,
    /// MAP_GROWSDOWN.
    pub growsdown: bool,
}

impl MapFlags {
    /// MAP_PRIVATE | MAP_ANONYMOUS.
    pub const PRIVATE_ANONYMOUS: MapFlags = MapFlags {
        shared: false,
        private: true,
        anonymous: true,
        fixed: false,
        fixed_noreplace: false,
        growsdown: false,
    };
    /// MAP_PRIVATE (a file mapping).
    pub const PRIVATE: MapFlags = MapFlags {
        anonymous: false,
        ..Self::PRIVATE_ANONYMOUS
    };
    /// MAP_SHARED (a file mapping).
    pub const SHARED: MapFlags = MapFlags {
        shared: true,
        private: false,
        ..Self::PRIVATE
    };

    /// The same flags with MAP_FIXED.
    pub const fn fixed(self) -> Self {
        Self { fixed: true, ..self }
    }

    /// The same flags with MAP_FIXED_NOREPLACE.
    pub const fn fixed_noreplace(self) -> Self {
        Self {
            fixed_noreplace: true,
            ..self
        }
    }
}

/// mremap flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemapFlags {
    /// MREMAP_MAYMOVE.
    pub maymove: bool,
    /// MREMAP_FIXED (requires `maymove`).
    pub fixed: bool,
}

/// What a fault-side lookup found.
#[derive(Debug)]
pub enum Lookup<'g> {
    /// A usable VMA covers the address.
    Mapped(&'g Vma),
    /// The VMA covering the address is being set up: drop the guard, then
    /// [`AddressSpace::wait_for_birth`] and look up again.
    Baby,
    /// Nothing is mapped there.
    Unmapped,
}

/// Clears BABY on a VMA this writer published.
fn birth_published(vma: *const Vma) {
    // SAFETY: the VMA is in the tree, and only a writer (the caller, holding the lock) could
    // displace and free it.
    unsafe { (*vma).birth() }
}

/// The anonymous object behind a MAP_SHARED | MAP_ANONYMOUS mapping (Linux: shmem, shown as
/// `/dev/zero (deleted)`); each such mmap makes a new one.
#[derive(Debug)]
pub struct SharedAnonymous;

impl MappedFile for SharedAnonymous {
    fn name(&self) -> &str {
        "/dev/zero (deleted)"
    }
}

/// The heap set up by `brk`.
#[derive(Debug, Clone, Copy)]
struct Heap {
    start: u64,
    brk: u64,
}

/// The range an operation rewrites: everything in `[lo, hi)` is replaced by `new` (sorted,
/// inside the range; the rest becomes free).
struct Change {
    lo: u64,
    hi: u64,
    new: Mappings,
}

/// The mappings of a change (one to three in all but multi-VMA mprotects), inline so that an
/// operation allocates nothing for them.
type Mappings = SmallVec<[Mapping; 3]>;

/// A step of the protocol that a deliberately broken test variant skips (shuttle builds only:
/// the shuttle tests show that each guarantee's test fails without the step that provides it).
#[cfg(feature = "shuttle")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenStep {
    /// Step 2 done as two publications: the old VMAs erased, then the new ones inserted.
    OnePublication,
    /// Step 3's wait for references to drain.
    ReferenceWait,
    /// Step 4: the displaced VMAs are freed without waiting for a grace period.
    GracePeriod,
    /// Step 1/7: new VMAs are usable at once instead of BABY until the end.
    Baby,
    /// The shortcut for unmapping a range that holds nothing: wait for a grace period anyway.
    NoShortcut,
    /// Step 4 for the displaced ranges only: wait for every read-side section, keyed or not.
    WaitForEveryone,
    /// Step 8: return without waiting for the accesses through revoked translations.
    RevocationWait,
}

/// Counters of what writers had to wait for.
#[derive(Debug, Default)]
pub struct SpaceStats {
    /// Operations that displaced VMAs (and so waited for references and a grace period).
    pub replacements: AtomicU64,
    /// Of those, how many found references still held and waited for them to drain.
    pub reference_waits: AtomicU64,
    /// Nanoseconds writers spent waiting for references to drain (step 3).
    pub reference_wait_ns: AtomicU64,
    /// Nanoseconds writers spent waiting for grace periods (step 4).
    pub grace_period_ns: AtomicU64,
    /// Operations (and MADV_DONTNEEDs) that revoked translations and so waited for the
    /// accesses through them (step 8).
    pub revocations: AtomicU64,
    /// Nanoseconds those waits took.
    pub revocation_wait_ns: AtomicU64,
}

/// A process address space: VMAs in an RCU-safe maple tree, faults find them without locks,
/// and mmap/munmap/mprotect/mremap/brk change them through one protocol (see the module docs).
pub struct AddressSpace {
    tree: MapleTree<Box<Vma>>,
    layout: Layout,
    flush: Box<dyn FlushHook>,
    events: Events,
    heap: Mutex<Heap>,
    stats: SpaceStats,
    #[cfg(feature = "shuttle")]
    broken: Option<BrokenStep>,
}

impl std::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressSpace")
            .field("layout", &self.layout)
            .field("vmas", &self.vma_count())
            .finish_non_exhaustive()
    }
}

impl AddressSpace {
    /// An empty address space with `layout`, calling `flush` whenever translations must go.
    pub fn new(layout: Layout, flush: impl FlushHook + 'static) -> Result<Self> {
        let Layout { low, high, mmap_base } = layout;
        if !aligned(low) || !aligned(high) || !aligned(mmap_base) {
            return Err(einval("layout bounds must be page aligned"));
        }
        if !(low < high && low <= mmap_base && mmap_base <= high) {
            return Err(einval("layout needs low < high and low <= mmap_base <= high"));
        }
        Ok(Self {
            tree: MapleTree::new(),
            layout,
            flush: Box::new(flush),
            events: Events::new(),
            heap: Mutex::new(Heap { start: low, brk: low }),
            stats: SpaceStats::default(),
            #[cfg(feature = "shuttle")]
            broken: None,
        })
    }

    /// Breaks the protocol by skipping `step` (shuttle builds only; for tests that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_protocol(&mut self, step: BrokenStep) {
        self.broken = Some(step);
    }

    /// Whether a broken test variant skips `step`.
    #[cfg(feature = "shuttle")]
    fn skips(&self, step: BrokenStep) -> bool {
        self.broken == Some(step)
    }

    /// The bounds this space was created with.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Writer statistics.
    pub fn stats(&self) -> &SpaceStats {
        &self.stats
    }

    /// The RCU domain shared by the VMA tree and the layers above.
    pub fn rcu(&self) -> &DefaultRcu {
        self.tree.rcu()
    }

    /// Enters a read-side section: VMAs found while it lives stay allocated.
    #[inline]
    pub fn guard(&self) -> Guard<'_, DefaultRcu> {
        self.tree.guard()
    }

    /// Enters a read-side section for looking up the VMA covering `addr` only (a fault): a
    /// writer replacing VMAs elsewhere does not wait for it, even if its thread is preempted
    /// inside it (see [`maple::Guard`]). Looking up another address through it panics unless
    /// the VMA found also covers `addr`.
    #[inline]
    pub fn guard_at(&self, addr: u64) -> Guard<'_, DefaultRcu> {
        self.tree.guard_at(addr)
    }

    /// Enters a read-side section for the VMAs overlapping `[start, end)` only (a walk over a
    /// range, such as madvise's): writers replacing VMAs elsewhere do not wait for it, and
    /// iterating through it yields only those VMAs.
    ///
    /// # Panics
    /// If the range is empty.
    pub fn guard_within(&self, start: u64, end: u64) -> Guard<'_, DefaultRcu> {
        assert!(start < end, "guard_within: empty range {start:#x}..{end:#x}");
        self.tree.guard_within(start, end - 1)
    }

    /// Number of VMAs.
    pub fn vma_count(&self) -> usize {
        self.tree.len()
    }

    /// Checks the space's invariants: the tree's structure, every VMA page aligned, inside the
    /// bounds, usable (between operations nothing is BABY or ZOMBIE), and no two adjacent VMAs
    /// that Linux would have merged.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.tree.validate()?;
        let guard = self.guard();
        let mut previous: Option<&Mapping> = None;
        for vma in self.iter_from(0, &guard) {
            let m = vma.mapping();
            if !aligned(m.start) || !aligned(m.end) || m.start >= m.end {
                return Err(format!(
                    "VMA {:#x}-{:#x} is not a page-aligned range",
                    m.start, m.end
                ));
            }
            if m.start < self.layout.low || m.end > self.layout.high {
                return Err(format!("VMA {:#x}-{:#x} is outside the layout", m.start, m.end));
            }
            if let Err(state) = vma.usable() {
                return Err(format!(
                    "VMA {:#x}-{:#x} is {state:?} between operations",
                    m.start, m.end
                ));
            }
            if previous.is_some_and(|p| p.can_merge(m)) {
                return Err(format!(
                    "VMA {:#x}-{:#x} should have merged with the one before",
                    m.start, m.end
                ));
            }
            previous = Some(m);
        }
        Ok(())
    }

    /// The fault-side lookup: the usable VMA covering `addr`, or that it is being set up
    /// (BABY), or nothing. Never blocks, takes no lock and writes nothing shared; a replaced
    /// (ZOMBIE) VMA makes it look again, which finds the replacement (published before the old
    /// one was marked).
    #[inline]
    pub fn lookup<'g>(&self, addr: u64, guard: &'g Guard<'_, DefaultRcu>) -> Lookup<'g> {
        loop {
            let Some(vma) = self.tree.load(addr, guard) else {
                return Lookup::Unmapped;
            };
            match vma.usable() {
                Ok(()) => return Lookup::Mapped(vma),
                Err(Unusable::Baby) => return Lookup::Baby,
                Err(Unusable::Zombie) => continue,
            }
        }
    }

    /// Blocks while the VMA covering `addr` is BABY (after [`Lookup::Baby`]). Call it with no
    /// guard held: the writer may be waiting for a grace period. It re-checks under the space's
    /// wait lock, which the writer takes to wake it after clearing BABY, so no birth is missed.
    pub fn wait_for_birth(&self, addr: u64) {
        self.events.wait_until(|| {
            let guard = self.guard_at(addr);
            !matches!(self.lookup(addr, &guard), Lookup::Baby)
        });
    }

    /// Takes a reference on the VMA covering `addr`, waiting while it is being set up. The
    /// reference keeps the VMA allocated, so its holder may drop every guard and block (the
    /// fault slow path); a writer replacing the VMA waits for it.
    pub fn get(&self, addr: u64) -> Option<VmaRef<'_>> {
        loop {
            let guard = self.guard_at(addr);
            match self.lookup(addr, &guard) {
                Lookup::Unmapped => return None,
                Lookup::Mapped(vma) => match vma.try_get(&self.events) {
                    Ok(reference) => return Some(reference),
                    // Replaced since the lookup, or replaced and reborn: look again.
                    Err(Unusable::Zombie | Unusable::Baby) => continue,
                },
                Lookup::Baby => {
                    drop(guard);
                    self.wait_for_birth(addr);
                }
            }
        }
    }

    /// Takes a reference on a VMA found by [`AddressSpace::lookup`] under a guard.
    pub fn try_get<'a>(&'a self, vma: &Vma) -> std::result::Result<VmaRef<'a>, Unusable> {
        vma.try_get(&self.events)
    }

    /// The VMAs in address order, from `start`, under a guard. Each is whole: as before or after
    /// any concurrent change.
    pub fn iter_from<'g>(
        &'g self,
        start: u64,
        guard: &'g Guard<'_, DefaultRcu>,
    ) -> impl Iterator<Item = &'g Vma> {
        self.tree.iter_from(start, guard).map(|(_, _, vma)| vma)
    }

    /// The mappings in the format of `/proc/PID/maps`: `start-end rwxp offset path`, one per
    /// line (offset 0 and no path for anonymous memory, `[heap]` for the brk area).
    pub fn maps(&self) -> String {
        let heap = *self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let guard = self.guard();
        let mut out = String::new();
        for vma in self.iter_from(0, &guard) {
            let m = vma.mapping();
            let (offset, path) = match &m.backing {
                Backing::File(file) => (m.pgoff << PAGE_SHIFT, file.name().to_string()),
                Backing::Anonymous if heap.brk > heap.start && m.start <= heap.brk && m.end >= heap.start => {
                    (0, "[heap]".to_string())
                }
                Backing::Anonymous => (
                    0,
                    m.name.as_ref().map_or(String::new(), |n| format!("[anon:{n}]")),
                ),
            };
            let sharing = if m.shared { 's' } else { 'p' };
            let _ = write!(
                out,
                "{:08x}-{:08x} {}{sharing} {offset:08x}",
                m.start, m.end, m.prot
            );
            if !path.is_empty() {
                let _ = write!(out, " {path}");
            }
            out.push('\n');
        }
        out
    }

    /// Maps `len` bytes (rounded up to pages) and returns the address, with Linux's rules:
    /// no address (0) or a hint that is not free → the highest free range below the mmap base
    /// (then above it); a free hint → there; `fixed` → exactly there, replacing what was there;
    /// `fixed_noreplace` → exactly there or EEXIST. `file` is the object and byte offset of a
    /// file mapping (ignored with `anonymous`, as Linux ignores the fd).
    pub fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(Arc<dyn MappedFile>, u64)>,
    ) -> Result<u64> {
        self.map(MmapRequest::new(self.layout, addr, len, prot, flags, file)?)
    }

    /// Maps a checked request (see [`AddressSpace::mmap`]); EINVAL if it was checked against
    /// another layout.
    pub fn map(&self, request: MmapRequest) -> Result<u64> {
        if request.layout() != self.layout {
            return Err(einval("the request was checked against another layout"));
        }
        let len = request.length();
        let mut writer = self.tree.lock();
        let start = match request.placement() {
            Placement::FixedNoReplace(addr) if self.first_in(&writer, addr, addr + len).is_some() => {
                return Err(Error::new(Errno::EEXIST, "MAP_FIXED_NOREPLACE range is occupied"));
            }
            Placement::Fixed(addr) | Placement::FixedNoReplace(addr) => addr,
            Placement::Hint(hint) => self.place(&writer, hint, len)?,
        };
        let end = start + len;
        let mapping = request.mapping_at(start);
        let change = self.carve(&writer, start, end, smallvec![mapping]);
        self.settle(&mut writer, change, &[Flush::Zap(start, end)]);
        Ok(start)
    }

    /// Unmaps `[addr, addr + len)` (len rounded up to pages), splitting VMAs at its ends.
    /// Unmapping a range that holds nothing succeeds and waits for no one.
    pub fn munmap(&self, addr: u64, len: u64) -> Result<()> {
        let (start, end) = unmap_range(self.layout, addr, len)?;
        let mut writer = self.tree.lock();
        self.unmap_locked(&mut writer, start, end);
        Ok(())
    }

    fn unmap_locked(&self, writer: &mut Writer<'_, Box<Vma>, DefaultRcu>, start: u64, end: u64) {
        let change = {
            let old = self.vmas_in(writer, start, end);
            (!old.is_empty()).then(|| carve_around(&old, start, end, Mappings::new()))
        };
        if let Some(change) = change {
            self.settle(writer, change, &[Flush::Zap(start, end)]);
        } else {
            // Nothing is mapped: nobody can be using it, so nothing to wait for.
            #[cfg(feature = "shuttle")]
            if self.skips(BrokenStep::NoShortcut) {
                self.rcu().synchronize();
            }
        }
    }

    /// Changes the permissions of `[addr, addr + len)`, splitting VMAs at its ends and merging
    /// with compatible neighbours. As Linux: ENOMEM if part of the range is unmapped, after
    /// changing the mapped part before the first hole (nothing if the range starts in a hole).
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> Result<()> {
        let Some((addr, end)) = protect_range(self.layout, addr, len)? else {
            return Ok(());
        };
        let mut writer = self.tree.lock();
        // The VMAs covering the range from its start without a hole.
        let mut covered = Vec::new();
        let mut at = addr;
        while at < end
            && let Some((_, _, vma)) = writer.load_range(at)
        {
            covered.push(vma.mapping().clone());
            at = vma.end();
        }
        let Some(first) = covered.first() else {
            return Err(enomem("the range starts in unmapped memory"));
        };
        let (lo, hi) = (first.start, at);
        let changed_end = end.min(hi);
        let mut new = Mappings::with_capacity(covered.len() + 2);
        for mapping in &covered {
            let (from, to) = (mapping.start.max(addr), mapping.end.min(changed_end));
            if mapping.start < from {
                new.push(mapping.slice(mapping.start, from));
            }
            new.push(Mapping {
                prot,
                accounted: mapping.accounted || (!mapping.shared && prot.write),
                ..mapping.slice(from, to)
            });
            if to < mapping.end {
                new.push(mapping.slice(to, mapping.end));
            }
        }
        self.settle(
            &mut writer,
            Change { lo, hi, new },
            &[Flush::Protect(addr, changed_end, prot)],
        );
        if changed_end < end {
            return Err(enomem("part of the range is unmapped"));
        }
        Ok(())
    }

    /// Resizes or moves the mapping at `[old, old + old_len)` to `new_len` bytes, with Linux's
    /// rules (6.18): `old` must be mapped (EFAULT). Shrinking unmaps the tail, whatever it
    /// holds, and the same size in place changes nothing. Growing needs the old range inside
    /// one mapping (EFAULT) and extends it in place when the pages after are free; otherwise
    /// `maymove` moves it. With `fixed` the mapping moves to `new_addr` (what was there is
    /// unmapped): the part kept (the first `min(old_len, new_len)` bytes) must lie in one
    /// mapping, except that a move of the same size may span several mappings and holes, each
    /// mapping moving to the same offset. A moved VMA keeps its page offset. Returns the (new)
    /// address.
    pub fn mremap(
        &self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> Result<u64> {
        self.remap(RemapRequest::new(
            self.layout,
            old,
            old_len,
            new_len,
            flags,
            new_addr,
        )?)
    }

    /// Remaps a checked request (see [`AddressSpace::mremap`]); EINVAL if it was checked
    /// against another layout.
    pub fn remap(&self, request: RemapRequest) -> Result<u64> {
        if request.layout() != self.layout {
            return Err(einval("the request was checked against another layout"));
        }
        let (old, old_len, new_len) = (request.old(), request.old_len(), request.new_len());
        let mut writer = self.tree.lock();
        let at_old = writer.load_range(old).map(|(_, _, vma)| vma.mapping().clone());
        request.check_source(at_old.as_ref())?;
        let source = at_old.expect("checked");
        if let Some(new_addr) = request.fixed() {
            let sources: Mappings = self
                .vmas_in(&writer, old, old + request.kept())
                .iter()
                .map(|vma| vma.mapping().clone())
                .collect();
            self.unmap_locked(&mut writer, new_addr, new_addr + new_len);
            return Ok(self.move_locked(&mut writer, &request, &sources, new_addr));
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.unmap_locked(&mut writer, old + new_len, old + old_len);
            }
            return Ok(old);
        }
        let high = self.layout.high;
        if old + old_len == source.end
            && let Some(grow_end) = old.checked_add(new_len).filter(|&end| end <= high)
            && self.first_in(&writer, source.end, grow_end).is_none()
        {
            let grown = Mapping {
                end: grow_end,
                ..source.clone()
            };
            let change = Change {
                lo: source.start,
                hi: grow_end,
                new: smallvec![grown],
            };
            self.settle(&mut writer, change, &[]);
            return Ok(old);
        }
        if !request.maymove() {
            return Err(enomem("cannot grow in place and may not move"));
        }
        let target = self.place(&writer, 0, new_len)?;
        Ok(self.move_locked(&mut writer, &request, &[source], target))
    }

    /// Moves the part kept of `request`'s old range, whose mappings are `sources`, to `target`
    /// (see [`RemapRequest::moved`]) in one run of the protocol: the old range is unmapped and
    /// the moved mappings mapped, merging with their new neighbours; the translations of the
    /// part kept move with it.
    fn move_locked(
        &self,
        writer: &mut Writer<'_, Box<Vma>, DefaultRcu>,
        request: &RemapRequest,
        sources: &[Mapping],
        target: u64,
    ) -> u64 {
        let (old, old_len, kept) = (request.old(), request.old_len(), request.kept());
        let moved = request.moved(sources, target).into_iter().collect();
        let mut run = Run::new();
        let unmap = self.carve(writer, old, old + old_len, Mappings::new());
        self.stage(writer, unmap, true, &mut run);
        let insert = self.carve(writer, target, target + request.new_len(), moved);
        self.stage(writer, insert, true, &mut run);
        let flush = [
            Flush::Relocate {
                from: old,
                to: target,
                len: kept,
            },
            Flush::Zap(old, old + old_len),
        ];
        self.finish(writer, run, &flush);
        target
    }

    /// Sets where the heap starts (and empties it): `brk` grows it from there.
    pub fn set_heap_start(&self, start: u64) -> Result<()> {
        let start = start
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(einval("heap start overflows"))?;
        if start < self.layout.low || start >= self.layout.high {
            return Err(einval("heap start outside the address space"));
        }
        *self.heap.lock().unwrap_or_else(|e| e.into_inner()) = Heap { start, brk: start };
        Ok(())
    }

    /// Moves the program break to `addr` and returns the new break; as Linux, returns the
    /// current break unchanged when `addr` is below the heap start or the heap cannot grow
    /// there (occupied, or beyond the address space).
    pub fn brk(&self, addr: u64) -> u64 {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        if addr < heap.start {
            return heap.brk;
        }
        let Some(new_top) = addr
            .checked_next_multiple_of(PAGE_SIZE)
            .filter(|&top| top < self.layout.high)
        else {
            return heap.brk;
        };
        let old_top = heap.brk.next_multiple_of(PAGE_SIZE);
        let mut writer = self.tree.lock();
        if new_top < old_top {
            self.unmap_locked(&mut writer, new_top, old_top);
        } else if new_top > old_top {
            // Linux keeps a guard page below the next mapping.
            if self.first_in(&writer, old_top, new_top + PAGE_SIZE).is_some() {
                return heap.brk;
            }
            let grown = Mapping {
                start: old_top,
                end: new_top,
                prot: Prot::READ_WRITE,
                shared: false,
                backing: Backing::Anonymous,
                pgoff: old_top >> PAGE_SHIFT,
                growsdown: false,
                accounted: true,
                name: None,
            };
            let change = Change {
                lo: old_top,
                hi: new_top,
                new: smallvec![grown],
            };
            self.settle(&mut writer, change, &[]);
        }
        heap.brk = addr;
        addr
    }

    /// Where a non-fixed mapping of `len` bytes goes: the hint if free, else top-down below the
    /// mmap base, else bottom-up above it.
    fn place(&self, writer: &Writer<'_, Box<Vma>, DefaultRcu>, hint: u64, len: u64) -> Result<u64> {
        let Layout { low, high, mmap_base } = self.layout;
        if len > high - low {
            return Err(enomem("longer than the address space"));
        }
        let hint = hint.checked_next_multiple_of(PAGE_SIZE).unwrap_or(0);
        if hint >= low
            && hint.checked_add(len).is_some_and(|end| end <= high)
            && self.first_in(writer, hint, hint + len).is_none()
        {
            return Ok(hint);
        }
        let found = (mmap_base > low)
            .then(|| writer.find_gap_rev(low, mmap_base - 1, len).ok().flatten())
            .flatten()
            .or_else(|| writer.find_gap(mmap_base, high - 1, len).ok().flatten());
        found
            .map(|(first, _)| first)
            .ok_or(enomem("no free range is long enough"))
    }

    /// The first VMA intersecting `[start, end)`.
    fn first_in<'w>(
        &self,
        writer: &'w Writer<'_, Box<Vma>, DefaultRcu>,
        start: u64,
        end: u64,
    ) -> Option<&'w Vma> {
        writer
            .range_from(start)
            .filter(|&(first, _, _)| start < end && first < end)
            .map(|(_, _, vma)| vma)
    }

    /// The VMAs intersecting `[start, end)`, in order.
    fn vmas_in<'w>(
        &self,
        writer: &'w Writer<'_, Box<Vma>, DefaultRcu>,
        start: u64,
        end: u64,
    ) -> SmallVec<[&'w Vma; 4]> {
        let mut found = SmallVec::new();
        let mut at = start;
        while at < end
            && let Some(vma) = self.first_in(writer, at, end)
        {
            found.push(vma);
            at = vma.end();
        }
        found
    }

    /// The change that replaces `[start, end)` with `new`: the VMAs intersecting it are taken
    /// out whole, and their parts outside `[start, end)` are put back (split at the ends).
    fn carve(
        &self,
        writer: &Writer<'_, Box<Vma>, DefaultRcu>,
        start: u64,
        end: u64,
        new: Mappings,
    ) -> Change {
        carve_around(&self.vmas_in(writer, start, end), start, end, new)
    }

    /// Runs the protocol for one change (see [`AddressSpace::stage`]) with `flush` as step 6.
    fn settle(&self, writer: &mut Writer<'_, Box<Vma>, DefaultRcu>, change: Change, flush: &[Flush]) {
        let mut run = Run::new();
        // A change that zaps replaces even a mapping identical to the old one (MAP_FIXED over
        // the same mapping gets fresh contents, as on Linux).
        let zaps = flush.iter().any(|op| matches!(op, Flush::Zap(..)));
        self.stage(writer, change, zaps, &mut run);
        self.finish(writer, run, flush);
    }

    /// Merges the change with compatible neighbours and within itself (Linux's merge rules)
    /// and publishes it into `run` (steps 1–2), unless it changes nothing and `always` is false.
    fn stage<'t>(
        &self,
        writer: &mut Writer<'t, Box<Vma>, DefaultRcu>,
        change: Change,
        always: bool,
        run: &mut Run<'t>,
    ) {
        let Change { mut lo, mut hi, new } = change;
        let mut merged = Mappings::with_capacity(new.len() + 2);
        if let Some(first) = new.first()
            && first.start == lo
            && let Some((_, _, prev)) = lo.checked_sub(1).and_then(|i| writer.load_range(i))
            && prev.mapping().can_merge(first)
        {
            lo = prev.start();
            merged.push(prev.mapping().clone());
        }
        let next = new
            .last()
            .filter(|last| last.end == hi)
            .and_then(|last| {
                writer
                    .load_range(hi)
                    .filter(|(_, _, next)| last.can_merge(next.mapping()))
            })
            .map(|(_, _, next)| next.mapping().clone());
        for mapping in new.into_iter().chain(next) {
            match merged.last_mut() {
                Some(previous) if previous.can_merge(&mapping) => previous.end = mapping.end,
                _ => merged.push(mapping),
            }
        }
        hi = hi.max(merged.last().map_or(hi, |m| m.end));
        let unchanged = || {
            let old = self.vmas_in(writer, lo, hi);
            old.len() == merged.len() && old.iter().zip(&merged).all(|(o, m)| o.mapping().same_as(m))
        };
        if always || !unchanged() {
            self.publish(writer, Change { lo, hi, new: merged }, run);
        }
    }

    /// Steps 1–2 of the replacement protocol (module documentation) for `change`.
    fn publish<'t>(&self, writer: &mut Writer<'t, Box<Vma>, DefaultRcu>, change: Change, run: &mut Run<'t>) {
        // 1. New VMAs, born BABY.
        let first_born = run.born.len();
        let values: Vec<(u64, u64, Box<Vma>)> = change
            .new
            .into_iter()
            .map(|mapping| {
                let vma = Box::new(Vma::new(mapping));
                run.born.push(&*vma);
                (vma.start(), vma.end() - 1, vma)
            })
            .collect();
        // 2. Publish.
        #[cfg(feature = "shuttle")]
        let erased = self.skips(BrokenStep::OnePublication).then(|| {
            writer
                .replace_exact(change.lo, change.hi - 1, Vec::new())
                .expect("valid change")
        });
        let displaced = writer
            .replace_exact(change.lo, change.hi - 1, values)
            .expect("changes are computed on VMA boundaries and are valid ranges");
        #[cfg(feature = "shuttle")]
        let displaced = erased.unwrap_or(displaced);
        #[cfg(feature = "shuttle")]
        if self.skips(BrokenStep::Baby) {
            run.born.drain(first_born..).for_each(birth_published);
            self.events.notify();
        }
        if displaced.is_empty() {
            return;
        }
        // A VMA born earlier in this run and displaced now is never born: it is freed with the
        // rest.
        if first_born > 0 {
            let (earlier, _) = run.born.split_at(first_born);
            let gone: Vec<*const Vma> = earlier
                .iter()
                .copied()
                .filter(|&vma| displaced.iter().any(|(_, _, old)| std::ptr::eq(old, vma)))
                .collect();
            run.born.retain(|vma| !gone.contains(vma));
        }
        match &mut run.displaced {
            Some(all) => all.append(displaced),
            None => run.displaced = Some(displaced),
        }
    }

    /// Steps 3–7 of the replacement protocol for everything `run` published; `flush` lists the
    /// hook calls of step 6. A run that displaced nothing skips steps 3–6: nothing was mapped
    /// in the changed ranges, so nobody can be using them and no translation exists there.
    fn finish(&self, writer: &Writer<'_, Box<Vma>, DefaultRcu>, run: Run<'_>, flush: &[Flush]) {
        let Run { displaced, born } = run;
        let mut revoked = Revoked::new();
        if let Some(displaced) = displaced {
            // 3. No new references; wait for the held ones.
            let mut referenced = false;
            for (_, _, vma) in displaced.iter() {
                referenced |= vma.kill();
            }
            self.stats.replacements.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "shuttle")]
            let referenced = referenced && !self.skips(BrokenStep::ReferenceWait);
            if referenced {
                let started = Instant::now();
                self.stats.reference_waits.fetch_add(1, Ordering::Relaxed);
                self.events
                    .wait_until(|| displaced.iter().all(|(_, _, vma)| vma.drained()));
                let waited = started.elapsed().as_nanos() as u64;
                self.stats.reference_wait_ns.fetch_add(waited, Ordering::Relaxed);
            }
            // 4 and 5. A grace period, then free them.
            #[cfg(not(feature = "shuttle"))]
            let (freed, waited) = displaced.reclaim_timed();
            #[cfg(feature = "shuttle")]
            if self.skips(BrokenStep::WaitForEveryone) {
                self.rcu().synchronize();
            }
            #[cfg(feature = "shuttle")]
            let (freed, waited) = if self.skips(BrokenStep::GracePeriod) {
                // SAFETY: the values are quarantined below, never freed, so readers that still
                // see them read poisoned but allocated memory (which the tests detect).
                (
                    unsafe { displaced.reclaim_without_grace_period() },
                    Default::default(),
                )
            } else {
                displaced.reclaim_timed()
            };
            #[cfg(feature = "shuttle")]
            freed.into_iter().for_each(|(_, _, vma)| vma.quarantine());
            #[cfg(not(feature = "shuttle"))]
            drop(freed);
            if !waited.is_zero() {
                let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
                self.stats.grace_period_ns.fetch_add(waited, Ordering::Relaxed);
            }
            // 6. Flush the changed ranges.
            let rcu = self.rcu();
            for &op in flush {
                match op {
                    Flush::Zap(start, end) => {
                        let zapped = self.flush.zap(start, end, free_around(writer, start, end), rcu);
                        revoked.record(zapped, start, end);
                    }
                    Flush::Protect(start, end, prot) => {
                        revoked.record(self.flush.protect(start, end, prot, rcu), start, end);
                    }
                    Flush::Relocate { from, to, len } => {
                        revoked.record(self.flush.relocate(from, to, len, rcu), from, from + len);
                    }
                }
            }
        }
        // 7. Bring the new VMAs to life and wake the faults waiting for them.
        if !born.is_empty() {
            born.into_iter().for_each(birth_published);
            self.events.notify();
        }
        // 8. Wait for the accesses through revoked translations.
        self.await_revoked(&revoked);
    }

    /// Waits for the read-side sections that may still be accessing memory through the
    /// translations `revoked` names (step 8 of the protocol, and MADV_DONTNEED's after it clears
    /// translations), and counts the wait. Call it with no guard held.
    pub fn await_revoked(&self, revoked: &Revoked) {
        if revoked.is_empty() {
            return;
        }
        #[cfg(feature = "shuttle")]
        if self.skips(BrokenStep::RevocationWait) {
            return;
        }
        let waited = revoked.wait(self.rcu());
        self.stats.revocations.fetch_add(1, Ordering::Relaxed);
        let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.stats.revocation_wait_ns.fetch_add(waited, Ordering::Relaxed);
    }
}

/// The range around `[start, end)` with no VMA but those inside it: from the end of the VMA
/// before (or `start` if one covers `start - 1`, or 0) to the start of the VMA after (or `end`
/// if one covers `end`, or the top of the address range). Read with the writer's lock held, so
/// without a guard.
fn free_around(writer: &Writer<'_, Box<Vma>, DefaultRcu>, start: u64, end: u64) -> (u64, u64) {
    let floor = start.checked_sub(1).map_or(0, |before| {
        writer.gap_at(before).map_or(start, |(first, _)| first)
    });
    let ceiling = writer.gap_at(end).map_or(end, |(_, last)| last.saturating_add(1));
    (floor, ceiling)
}

/// [`AddressSpace::carve`] for `old`, the VMAs intersecting `[start, end)` in order (already
/// looked up by the caller).
fn carve_around(old: &[&Vma], start: u64, end: u64, mut new: Mappings) -> Change {
    let (mut lo, mut hi) = (start, end);
    let mut mappings = Mappings::with_capacity(new.len() + 2);
    if let Some(first) = old.first()
        && first.start() < start
    {
        lo = first.start();
        mappings.push(first.mapping().slice(first.start(), start));
    }
    mappings.append(&mut new);
    if let Some(last) = old.last()
        && last.end() > end
    {
        hi = last.end();
        mappings.push(last.mapping().slice(end, last.end()));
    }
    Change {
        lo,
        hi,
        new: mappings,
    }
}
