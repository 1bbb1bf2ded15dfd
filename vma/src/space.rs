//! The address space: the calls a process makes (mmap, munmap, mprotect, mremap, brk, and a
//! fault growing a stack), each computing the change it makes to the VMAs with Linux's
//! semantics — splits at the range ends, merges with compatible neighbours, placement — and
//! handing it to the replacement
//! protocol (`protocol.rs`), which applies it while faults go on; and the fault side's lookup,
//! which takes no lock. The split follows Linux's: mm/mmap.c decides, mm/vma.c applies.

use crate::error::{Errno, Error, Result};
use crate::limits::{Limits, Usage, is_data};
use crate::maps::{FileIdentity, MapsLine};
#[cfg(feature = "shuttle")]
use crate::protocol::BrokenStep;
use crate::protocol::{Change, Flush, FlushHook, Mappings, Protocol, Revoked, Run, SpaceStats, TreeWriter};
use crate::query::{QueryFlags, VmaInfo};
use crate::request::{
    Layout, MapFlags, MmapRequest, Placement, RemapFlags, RemapRequest, advise_range, aligned, check_splits,
    einval, enomem, protect_range, unmap_range,
};
use crate::vma::{AnonSlot, AnonVma, Backing, MappedFile, Mapping, Prot, Unusable, Vma, VmaRef};
use crate::{PAGE_SHIFT, PAGE_SIZE, STACK_GUARD_GAP, STACK_LIMIT};
use maple::Guard;
use maple::rcu::DefaultRcu;
use maple::sync::Mutex;
use maple::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use smallvec::smallvec;
use std::fmt::Write as _;
use std::sync::Arc;

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

/// mprotect's and mlock's walk: the mappings covering `[start, end)` from its start without a
/// hole, with the start of the first and where the change ends (`end`, or the hole); ENOMEM
/// when nothing covers `start`, EINVAL when the change would split a mapping of huge pages
/// inside a page.
fn covered_from(writer: &TreeWriter<'_>, start: u64, end: u64) -> Result<(Vec<Mapping>, u64, u64)> {
    let mut covered: Vec<Mapping> = Vec::new();
    let mut at = start;
    while at < end
        && let Some((_, _, vma)) = writer.load_range(at)
    {
        covered.push(vma.mapping().clone());
        at = vma.end();
    }
    let Some(first) = covered.first() else {
        return Err(enomem("the range starts in unmapped memory"));
    };
    let (lo, changed_end) = (first.start, end.min(at));
    check_splits(start, changed_end, Some(first), covered.last())?;
    Ok((covered, lo, changed_end))
}

/// `mappings` split at `start` and `end`, their parts inside changed by `change`.
fn reshaped(mappings: &[Mapping], (start, end): (u64, u64), change: impl Fn(Mapping) -> Mapping) -> Mappings {
    let mut new = Mappings::with_capacity(mappings.len() + 2);
    for mapping in mappings {
        let (from, to) = (mapping.start.max(start), mapping.end.min(end));
        if mapping.start < from {
            new.push(mapping.slice(mapping.start, from));
        }
        new.push(change(mapping.slice(from, to)));
        if to < mapping.end {
            new.push(mapping.slice(to, mapping.end));
        }
    }
    new
}

/// Where the free range holding `last` effectively ends: at the start of the VMA right after
/// it, less [`STACK_GUARD_GAP`] when that VMA is a stack (Linux's `vm_start_gap`); `u64::MAX`
/// past the last VMA.
fn start_gap_above(writer: &TreeWriter<'_>, last: u64) -> u64 {
    match last.checked_add(1).and_then(|next| writer.range_from(next)) {
        Some((start, _, vma)) if vma.mapping().growsdown => start.saturating_sub(STACK_GUARD_GAP),
        Some((start, _, _)) => start,
        None => u64::MAX,
    }
}

/// The lowest place in `[from, to)` for `len` bytes at a multiple of `align` (a free range of
/// `search` bytes holds them), past a stack whose guard gap the range would reach into (Linux's
/// `unmapped_area`).
fn bottom_up(
    writer: &TreeWriter<'_>,
    (mut from, to): (u64, u64),
    len: u64,
    align: u64,
    search: u64,
) -> Option<u64> {
    while from < to {
        let (first, _) = writer.find_gap(from, to - 1, search).ok().flatten()?;
        let (_, gap_last) = writer.gap_at(first).expect("a free index");
        let start = first.next_multiple_of(align);
        if start + len <= start_gap_above(writer, gap_last).min(to) {
            return Some(start);
        }
        from = gap_last.checked_add(1)?;
    }
    None
}

/// The longest anon_vma name, with its terminating NUL (Linux's `ANON_VMA_NAME_MAX_LEN`).
const ANON_NAME_MAX: usize = 80;

/// The heap set up by `brk`: where it starts and the break, changed only with the writer lock
/// held, read without a lock (`maps()`, `query`).
#[derive(Debug, Default)]
struct Heap {
    start: AtomicU64,
    brk: AtomicU64,
}

impl Heap {
    /// `(start, break)`.
    fn get(&self) -> (u64, u64) {
        // Relaxed: written under the writer lock; a lock-free reader needs no order beyond
        // the two values (as Linux reads `mm->start_brk` and `mm->brk` for its maps).
        (
            self.start.load(Ordering::Relaxed),
            self.brk.load(Ordering::Relaxed),
        )
    }

    /// Sets both; the caller holds the writer lock.
    fn set(&self, (start, brk): (u64, u64)) {
        // Relaxed: see `get`.
        self.start.store(start, Ordering::Relaxed);
        self.brk.store(brk, Ordering::Relaxed);
    }

    /// Whether `[start, end)` is the brk area by Linux's rule for `[heap]` (`show_map_vma`).
    fn labels(&self, start: u64, end: u64) -> bool {
        let (heap_start, brk) = self.get();
        brk > heap_start && start <= brk && end >= heap_start
    }
}

/// A process address space: VMAs in an RCU-safe maple tree, faults find them without locks,
/// and mmap/munmap/mprotect/mremap/brk change them through one protocol (see the
/// [crate documentation](crate) and docs/vma.md).
pub struct AddressSpace {
    protocol: Protocol,
    layout: Layout,
    heap: Heap,
    /// Where the initial stack starts (Linux's `mm->start_stack`; 0: none), for `[stack]`.
    start_stack: AtomicU64,
    limits: Mutex<Limits>,
    /// Filled by fork: neighbours that differ only in the flags a child does not inherit
    /// (mlock's) keep their parent's boundary, as Linux's `dup_mmap` keeps them.
    forked: AtomicBool,
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
        layout.check()?;
        let Layout { low, .. } = layout;
        Ok(Self {
            protocol: Protocol::new(flush),
            layout,
            heap: Heap {
                start: AtomicU64::new(low),
                brk: AtomicU64::new(low),
            },
            start_stack: AtomicU64::new(0),
            limits: Mutex::new(Limits::LINUX),
            forked: AtomicBool::new(false),
        })
    }

    /// Breaks the protocol by skipping `step` (shuttle builds only; for tests that must fail).
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn break_protocol(&mut self, step: BrokenStep) {
        self.protocol.break_protocol(step);
    }

    /// fork's part in the VMAs: fills `child`, an empty space with the same layout, with a copy
    /// of every VMA of this one but those marked MADV_DONTFORK, and of its heap, built in one pass (`maple::Writer::fill`, as
    /// Linux's `__mt_dup`), each file VMA entering its file's reverse map before the tree is
    /// filled; then calls `copy` with each of this space's mappings in address order (the layer
    /// above copies translations there). This space's writers are held off throughout, so the
    /// copy sees the VMAs the child got; its faults go on. EINVAL for a child that is not
    /// empty or has another layout.
    pub fn fork_into(&self, child: &AddressSpace, mut copy: impl FnMut(&Mapping)) -> Result<()> {
        if child.layout != self.layout {
            return Err(einval("the child's layout differs"));
        }
        let writer = self.protocol.tree.lock();
        let mut child_writer = child.protocol.tree.lock();
        if child_writer.range_from(0).is_some() {
            return Err(einval("the child already has VMAs"));
        }
        let mut mappings = Vec::with_capacity(self.vma_count());
        let mut at = 0;
        while let Some((_, last, vma)) = writer.range_from(at) {
            // MADV_DONTFORK's VMAs stay behind.
            if !vma.mapping().dontfork {
                mappings.push(vma.mapping().clone());
            }
            match last.checked_add(1) {
                Some(next) => at = next,
                None => break,
            }
        }
        for mapping in &mappings {
            child.protocol.link(mapping);
        }
        child.forked.store(true, Ordering::Relaxed);
        child_writer
            .fill(mappings.iter().map(|mapping| {
                // Memory locks are not inherited; private pages the child shares belong to a
                // new `anon_vma` linked to the parent's.
                let vma = Vma::new(Mapping {
                    locked: false,
                    anon: AnonSlot::new(mapping.anon.get().map(AnonVma::forked)),
                    ..mapping.clone()
                });
                // Nobody can find it before the tree is filled.
                vma.birth();
                child.protocol.usage.add(vma.mapping());
                (mapping.start, mapping.end - 1, Box::new(vma))
            }))
            .expect("a space's VMAs are sorted and apart");
        drop(child_writer);
        child.heap.set(self.heap.get());
        // Relaxed: the child is not shared yet.
        child
            .start_stack
            .store(self.start_stack.load(Ordering::Relaxed), Ordering::Relaxed);
        for mapping in &mappings {
            copy(mapping);
        }
        drop(writer);
        Ok(())
    }

    /// The bounds this space was created with.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Waits for the read-side sections that may still be accessing memory through the
    /// translations `revoked` names (step 8 of the protocol; MADV_DONTNEED's after it clears
    /// translations), and counts the wait. Call it with no guard held.
    pub fn await_revoked(&self, revoked: &Revoked) {
        self.protocol.await_revoked(revoked);
    }

    /// Writer statistics.
    pub fn stats(&self) -> &SpaceStats {
        &self.protocol.stats
    }

    /// The RCU domain shared by the VMA tree and the layers above.
    pub fn rcu(&self) -> &DefaultRcu {
        self.protocol.tree.rcu()
    }

    /// Enters a read-side section: VMAs found while it lives stay allocated.
    #[inline]
    pub fn guard(&self) -> Guard<'_, DefaultRcu> {
        self.protocol.tree.guard()
    }

    /// Enters a read-side section for looking up the VMA covering `addr` only (a fault): a
    /// writer replacing VMAs elsewhere does not wait for it, even if its thread is preempted
    /// inside it (see [`maple::Guard`]). Looking up another address through it panics unless
    /// the VMA found also covers `addr`.
    #[inline]
    pub fn guard_at(&self, addr: u64) -> Guard<'_, DefaultRcu> {
        self.protocol.tree.guard_at(addr)
    }

    /// Enters a read-side section for the VMAs overlapping `[start, end)` only (a walk over a
    /// range, such as madvise's): writers replacing VMAs elsewhere do not wait for it, and
    /// iterating through it yields only those VMAs.
    ///
    /// # Panics
    /// If the range is empty.
    pub fn guard_within(&self, start: u64, end: u64) -> Guard<'_, DefaultRcu> {
        assert!(start < end, "guard_within: empty range {start:#x}..{end:#x}");
        self.protocol.tree.guard_within(start, end - 1)
    }

    /// Number of VMAs.
    pub fn vma_count(&self) -> usize {
        self.protocol.tree.len()
    }

    /// The limits the calls apply (Linux's defaults until set).
    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the limits (as `sysctl vm.max_map_count` and `setrlimit` do): calls from now on
    /// apply them; what is mapped already stays.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// The pages mapped, as the limits count them.
    pub fn usage(&self) -> Usage {
        self.protocol.usage.usage()
    }

    /// ENOMEM where unmapping `[start, end)` would split one VMA in three with `max_map_count`
    /// VMAs or more (Linux's `vms_gather_munmap_vmas`: the count may pass the limit only while
    /// resources are being freed).
    fn check_unmap_count(
        &self,
        writer: &TreeWriter<'_>,
        limits: &Limits,
        start: u64,
        end: u64,
    ) -> Result<()> {
        let splits_in_three = writer
            .load_range(start)
            .is_some_and(|(_, _, vma)| vma.start() < start && end < vma.end());
        if splits_in_three && self.vma_count() >= limits.max_map_count {
            return Err(enomem("the unmap would split a VMA with max_map_count VMAs"));
        }
        Ok(())
    }

    /// ENOMEM where `change` would add VMAs (after merging) with `max_map_count` VMAs or more
    /// (Linux's `split_vma`).
    fn check_split_count(&self, writer: &TreeWriter<'_>, limits: &Limits, change: &Change) -> Result<()> {
        if self.vma_count() >= limits.max_map_count && self.protocol.growth(writer, change) > 0 {
            return Err(enomem("the change would split a VMA with max_map_count VMAs"));
        }
        Ok(())
    }

    /// Checks the space's invariants: the tree's structure, every VMA page aligned, inside the
    /// bounds, usable (between operations nothing is BABY or ZOMBIE), no two adjacent VMAs
    /// that Linux would have merged (except in a space that fork filled, which keeps its
    /// parent's boundaries), and the [`Usage`] counted for the limits the VMAs' own.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.protocol.tree.validate()?;
        let guard = self.guard();
        let mut previous: Option<&Mapping> = None;
        let mut counted = Usage::default();
        for vma in self.iter_from(0, &guard) {
            let m = vma.mapping();
            counted.total_pages += m.pages();
            if is_data(m) {
                counted.data_pages += m.pages();
            }
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
            // Relaxed: read by the caller between operations, after the fork that set it.
            if previous.is_some_and(|p| p.can_merge(m)) && !self.forked.load(Ordering::Relaxed) {
                return Err(format!(
                    "VMA {:#x}-{:#x} should have merged with the one before",
                    m.start, m.end
                ));
            }
            previous = Some(m);
        }
        if counted != self.usage() {
            return Err(format!(
                "the usage counted, {:?}, is not the VMAs', {counted:?}",
                self.usage()
            ));
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
            let Some(vma) = self.protocol.tree.load(addr, guard) else {
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
        self.protocol.events.wait_until(|| {
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
                Lookup::Mapped(vma) => match vma.try_get(&self.protocol.events) {
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
        vma.try_get(&self.protocol.events)
    }

    /// Gives `vma` (found by [`AddressSpace::lookup`] under a guard still held) an
    /// [`AnonVma`], for a write fault in a private mapping (Linux's `anon_vma_prepare`): the
    /// one it has; else that of the VMA right after it, or else right before it, when the two
    /// may share one ([`Mapping::anon_vma_compatible`]) and it was not made by fork (Linux's
    /// `find_mergeable_anon_vma`); else a new one. Once per VMA: afterwards a fault only reads
    /// the slot.
    pub fn prepare_anon(&self, vma: &Vma) -> AnonVma {
        let mapping = vma.mapping();
        if let Some(anon) = mapping.anon.get() {
            return anon;
        }
        // Not keyed: writers replacing the neighbours do not wait for a guard keyed at `vma`.
        let guard = self.guard();
        let reusable = |neighbour: Option<&Vma>, compatible: &dyn Fn(&Mapping) -> bool| {
            neighbour
                .filter(|neighbour| compatible(neighbour.mapping()))
                .and_then(|neighbour| neighbour.mapping().anon.get())
                .and_then(AnonVma::unforked)
        };
        let next = reusable(self.protocol.tree.load(mapping.end, &guard), &|next| {
            mapping.anon_vma_compatible(next)
        });
        let anon = next
            .or_else(|| {
                let prev = mapping
                    .start
                    .checked_sub(1)
                    .and_then(|last| self.protocol.tree.load(last, &guard));
                reusable(prev, &|prev| prev.anon_vma_compatible(mapping))
            })
            .unwrap_or_else(AnonVma::fresh);
        mapping.anon.prepare(anon)
    }

    /// The VMAs in address order, from `start`, under a guard. Each is whole: as before or after
    /// any concurrent change.
    pub fn iter_from<'g>(
        &'g self,
        start: u64,
        guard: &'g Guard<'_, DefaultRcu>,
    ) -> impl Iterator<Item = &'g Vma> {
        self.protocol.tree.iter_from(start, guard).map(|(_, _, vma)| vma)
    }

    /// The mappings exactly as `/proc/PID/maps` shows them (`vma::MapsLine`): `start-end
    /// rwxp offset major:minor inode`, then the object's path, or `[heap]` for the brk area,
    /// `[stack]` for the VMA holding the initial stack ([`AddressSpace::set_stack_start`]),
    /// `[anon:NAME]` / `[anon_shmem:NAME]` for named anonymous memory
    /// ([`AddressSpace::set_anon_name`]), with Linux's rules (`show_map_vma`, `get_vma_name`).
    pub fn maps(&self) -> String {
        let guard = self.guard();
        let mut out = String::new();
        for vma in self.iter_from(0, &guard) {
            let _ = writeln!(out, "{}", self.maps_line(vma.mapping()));
        }
        out
    }

    /// The line `maps()` prints for `m` (without its newline).
    pub fn maps_line(&self, m: &Mapping) -> String {
        let (offset, identity, name) = self.describe(m);
        MapsLine {
            start: m.start,
            end: m.end,
            prot: m.prot,
            shared: m.shared,
            offset,
            identity,
            name: &name,
        }
        .to_string()
    }

    /// What `maps()` and `query` show of `m` besides its range and permissions: the offset,
    /// device and inode, and name (Linux's `show_map_vma` and `get_vma_name`). Takes no lock.
    fn describe(&self, m: &Mapping) -> (u64, FileIdentity, String) {
        let named = |kind: &str| m.name.as_ref().map(|name| format!("[{kind}:{name}]"));
        match &m.backing {
            // A named shared anonymous mapping (Linux's shmem with an anon_vma_name).
            Backing::File(file) if file.anonymous() && m.name.is_some() => (
                m.pgoff << PAGE_SHIFT,
                file.identity(),
                named("anon_shmem").unwrap_or_default(),
            ),
            Backing::File(file) => (m.pgoff << PAGE_SHIFT, file.identity(), file.name().to_string()),
            Backing::Anonymous => {
                // Relaxed: set before the calls whose maps this describes.
                let start_stack = self.start_stack.load(Ordering::Relaxed);
                let name = if self.heap.labels(m.start, m.end) {
                    "[heap]".to_string()
                } else if start_stack != 0 && m.start <= start_stack && m.end >= start_stack {
                    "[stack]".to_string()
                } else {
                    named("anon").unwrap_or_default()
                };
                (0, FileIdentity::default(), name)
            }
        }
    }

    /// PROCMAP_QUERY (the `/proc/PID/maps` ioctl of Linux 6.11 on): the VMA covering `addr`
    /// that matches `flags`, or with [`QueryFlags::COVERING_OR_NEXT`] the first matching one
    /// at or after it; ENOENT when there is none. Takes no lock: it walks the tree under a
    /// guard, as Linux answers it under RCU, and sees each VMA whole.
    pub fn query(&self, addr: u64, flags: QueryFlags) -> Result<VmaInfo> {
        let guard = self.guard();
        let next = flags.contains(QueryFlags::COVERING_OR_NEXT);
        let found = self
            .iter_from(addr, &guard)
            .map(Vma::mapping)
            // Linux's `query_matching_vma`: a VMA that does not match ends the search unless
            // the next one may do.
            .find(|m| flags.matches(m) || !next)
            .filter(|m| flags.matches(m) && (m.start <= addr || next));
        let Some(m) = found else {
            return Err(Error::new(Errno::ENOENT, "no VMA matches"));
        };
        let (offset, identity, name) = self.describe(m);
        Ok(VmaInfo {
            start: m.start,
            end: m.end,
            prot: m.prot,
            shared: m.shared,
            page_size: m.page_size(),
            offset,
            identity,
            name,
        })
    }

    /// Maps `len` bytes (rounded up to pages) and returns the address, with Linux's rules:
    /// no address (0) or a hint that is not free → the highest free range below the mmap base
    /// (then above it); a free hint → there; `fixed` → exactly there, replacing what was there;
    /// `fixed_noreplace` → exactly there or EEXIST. `file` is the object and byte offset of a
    /// file mapping (ignored with `anonymous`, as Linux ignores the fd).
    ///
    /// # Examples
    /// ```
    /// use vma::{AddressSpace, Errno, Layout, MapFlags, NoFlush, Prot};
    ///
    /// let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    /// let anon = MapFlags::PRIVATE_ANONYMOUS;
    /// let a = space.mmap(0, 8192, Prot::READ_WRITE, anon, None).unwrap();
    /// assert_eq!(a, Layout::X86_64.mmap_base - 8192, "top-down below the mmap base");
    /// let err = space.mmap(a, 4096, Prot::READ, anon.fixed_noreplace(), None).unwrap_err();
    /// assert_eq!(err.errno, Errno::EEXIST);
    /// // MAP_FIXED replaces the first page: two VMAs now.
    /// space.mmap(a, 4096, Prot::READ, anon.fixed(), None).unwrap();
    /// assert_eq!(space.vma_count(), 2);
    /// assert_eq!(space.munmap(a + 1, 4096).unwrap_err().errno, Errno::EINVAL);
    /// ```
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
        let limits = self.limits();
        let mut writer = self.protocol.tree.lock();
        if self.vma_count() > limits.max_map_count {
            return Err(enomem("more VMAs than max_map_count"));
        }
        let start = match request.placement() {
            Placement::FixedNoReplace(addr)
                if self.protocol.first_in(&writer, addr, addr + len).is_some() =>
            {
                return Err(Error::new(Errno::EEXIST, "MAP_FIXED_NOREPLACE range is occupied"));
            }
            Placement::Fixed(addr) => {
                self.check_splits(&writer, addr, addr + len)?;
                addr
            }
            Placement::FixedNoReplace(addr) => addr,
            Placement::Hint(hint) if request.low_32bit() => {
                self.place_low(&writer, hint, len, request.alignment())?
            }
            Placement::Hint(hint) => self.place(&writer, hint, len, request.alignment())?,
        };
        let end = start + len;
        let mapping = request.mapping_at(start);
        let replaced = match request.placement() {
            Placement::Fixed(_) => {
                self.check_unmap_count(&writer, &limits, start, end)?;
                self.protocol.pages_in(&writer, start, end)
            }
            _ => 0,
        };
        if !limits.may_expand(self.usage(), is_data(&mapping), mapping.pages() - replaced) {
            return Err(enomem("the mapping would pass RLIMIT_AS or RLIMIT_DATA"));
        }
        let change = self.protocol.carve(&writer, start, end, smallvec![mapping]);
        // Only MAP_FIXED replaces translations; elsewhere the range was free.
        let zap = [Flush::Zap(start, end)];
        let flush: &[Flush] = if replaced > 0 || matches!(request.placement(), Placement::Fixed(_)) {
            &zap
        } else {
            &[]
        };
        self.protocol.settle(&mut writer, change, flush);
        Ok(start)
    }

    /// Unmaps `[addr, addr + len)` (len rounded up to pages), splitting VMAs at its ends.
    /// Unmapping a range that holds nothing succeeds and waits for no one.
    pub fn munmap(&self, addr: u64, len: u64) -> Result<()> {
        let (start, end) = unmap_range(self.layout, addr, len)?;
        let limits = self.limits();
        let mut writer = self.protocol.tree.lock();
        self.check_splits(&writer, start, end)?;
        self.check_unmap_count(&writer, &limits, start, end)?;
        self.protocol.unmap(&mut writer, start, end);
        Ok(())
    }

    /// Changes the permissions of `[addr, addr + len)`, splitting VMAs at its ends and merging
    /// with compatible neighbours. As Linux: ENOMEM if part of the range is unmapped, after
    /// changing the mapped part before the first hole (nothing if the range starts in a hole).
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> Result<()> {
        let Some((addr, end)) = protect_range(self.layout, addr, len)? else {
            return Ok(());
        };
        let limits = self.limits();
        let mut writer = self.protocol.tree.lock();
        let (covered, lo, changed_end) = covered_from(&writer, addr, end)?;
        let hi = covered.last().map_or(changed_end, |last| last.end);
        let new = reshaped(&covered, (addr, changed_end), |part| part.protected(prot));
        // Pages that become data (Linux's `mprotect_fixup`: `may_expand_vm` with the new flags
        // where it held with the old).
        let becoming_data: u64 = covered
            .iter()
            .zip(covered.iter().map(|m| m.clone().protected(prot)))
            .filter(|(old, new)| !is_data(old) && is_data(new))
            .map(|(old, _)| (old.end.min(changed_end) - old.start.max(addr)) >> PAGE_SHIFT)
            .sum();
        if !limits.may_expand(self.usage(), true, becoming_data)
            && limits.may_expand(self.usage(), false, becoming_data)
        {
            return Err(enomem("the change would pass RLIMIT_DATA"));
        }
        let change = Change { lo, hi, new };
        self.check_split_count(&writer, &limits, &change)?;
        // Permissions only added take nothing from a translation: nothing to flush.
        let protect = [Flush::Protect(addr, changed_end, prot)];
        let flush: &[Flush] = if covered.iter().all(|m| prot.covers(m.prot)) {
            &[]
        } else {
            &protect
        };
        self.protocol.settle(&mut writer, change, flush);
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
        let old = request.old();
        let limits = self.limits();
        let mut writer = self.protocol.tree.lock();
        let at_old = writer.load_range(old).map(|(_, _, vma)| vma.mapping().clone());
        let request = request.check_source(at_old.as_ref())?;
        let (old_len, new_len) = (request.old_len(), request.new_len());
        let source = at_old.expect("checked");
        // The old range's ends, and a fixed target's; inside, a mapping of huge pages splits
        // at their boundaries (its lengths are rounded to them).
        self.check_splits(&writer, old, old + old_len)?;
        let growth = new_len.saturating_sub(old_len) >> PAGE_SHIFT;
        if !limits.may_expand(self.usage(), is_data(&source), growth) {
            return Err(enomem("growing would pass RLIMIT_AS or RLIMIT_DATA"));
        }
        // A move may split the old range's VMAs and the target's: Linux wants VMAs to spare.
        let count = self.vma_count();
        let may_move = count < limits.max_map_count.saturating_sub(3);
        if let Some(new_addr) = request.fixed() {
            if count + 2 >= limits.max_map_count.saturating_sub(3) {
                return Err(enomem("a fixed move needs max_map_count to spare five VMAs"));
            }
            self.check_splits(&writer, new_addr, new_addr + new_len)?;
            let sources: Mappings = self
                .protocol
                .vmas_in(&writer, old, old + request.kept())
                .iter()
                .map(|vma| vma.mapping().clone())
                .collect();
            self.protocol.unmap(&mut writer, new_addr, new_addr + new_len);
            return Ok(self.move_locked(&mut writer, &request, &sources, new_addr));
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.check_unmap_count(&writer, &limits, old + new_len, old + old_len)?;
                self.protocol.unmap(&mut writer, old + new_len, old + old_len);
            }
            return Ok(old);
        }
        let high = self.layout.high;
        if old + old_len == source.end
            && let Some(grow_end) = old.checked_add(new_len).filter(|&end| end <= high)
            && self.protocol.first_in(&writer, source.end, grow_end).is_none()
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
            self.protocol.settle(&mut writer, change, &[]);
            return Ok(old);
        }
        if !request.maymove() {
            return Err(enomem("cannot grow in place and may not move"));
        }
        if !may_move {
            return Err(enomem("a move needs max_map_count to spare three VMAs"));
        }
        let target = self.place(&writer, 0, new_len, source.page_size())?;
        Ok(self.move_locked(&mut writer, &request, &[source], target))
    }

    /// Moves the part kept of `request`'s old range, whose mappings are `sources`, to `target`
    /// (see [`RemapRequest::moved`]) in one run of the protocol: the old range is unmapped and
    /// the moved mappings mapped, merging with their new neighbours; the translations of the
    /// part kept move with it.
    fn move_locked(
        &self,
        writer: &mut TreeWriter<'_>,
        request: &RemapRequest,
        sources: &[Mapping],
        target: u64,
    ) -> u64 {
        let (old, old_len, kept) = (request.old(), request.old_len(), request.kept());
        let moved = request.moved(sources, target).into_iter().collect();
        let flush = [
            Flush::Relocate {
                from: old,
                to: target,
                len: kept,
            },
            Flush::Zap(old, old + old_len),
        ];
        let mut run = Run::new();
        let unmap = self.protocol.carve(writer, old, old + old_len, Mappings::new());
        self.protocol.stage(writer, unmap, true, &mut run, &flush);
        let insert = self
            .protocol
            .carve(writer, target, target + request.new_len(), moved);
        self.protocol.stage(writer, insert, true, &mut run, &flush);
        self.protocol.finish(writer, run, &flush);
        target
    }

    /// A fault at `addr`, where nothing is mapped, on a stack: grows the VMA above it that grows
    /// down (MAP_GROWSDOWN) to `addr`'s page, as Linux's `expand_downwards`. Returns whether
    /// the fault may go on: false when the VMA above does not grow down or there is none
    /// (SIGSEGV); true when it grew, or when something is mapped there by now (look again).
    /// Errors, each a SIGSEGV too: EPERM below the space; ENOMEM when the stack would come
    /// within [`STACK_GUARD_GAP`] of the accessible mapping below it (a stack below may touch
    /// it), grow past [`STACK_LIMIT`], or start before its file's first page. The grown VMA is
    /// usable at once: no fault waits for the growth (`Protocol::extend`).
    pub fn grow_stack(&self, addr: u64) -> Result<bool> {
        let page = addr & !(PAGE_SIZE - 1);
        // Most such faults are no stack's: tell without the writer lock. A stack farther above
        // than its limit could not grow here anyway.
        {
            let guard = self.guard_within(page, page.saturating_add(STACK_LIMIT));
            let above = self.iter_from(page, &guard).next();
            if !above.is_some_and(|vma| vma.mapping().growsdown) {
                return Ok(false);
            }
        }
        let mut writer = self.protocol.tree.lock();
        let Some((start, _, vma)) = writer.range_from(page) else {
            return Ok(false);
        };
        if start <= page {
            return Ok(true);
        }
        let old = vma.mapping().clone();
        if !old.growsdown {
            return Ok(false);
        }
        if page < self.layout.low {
            return Err(Error::new(Errno::EPERM, "below the lowest usable address"));
        }
        let (gap_first, _) = writer.gap_at(page).expect("nothing is mapped at the page");
        if let Some((_, _, below)) = gap_first.checked_sub(1).and_then(|last| writer.load_range(last)) {
            let below = below.mapping();
            if !below.growsdown && below.prot.any() && page - below.end < STACK_GUARD_GAP {
                return Err(enomem(
                    "the stack would come within the guard gap of the mapping below",
                ));
            }
        }
        let grow = (old.start - page) >> PAGE_SHIFT;
        if old.end - page > STACK_LIMIT {
            return Err(enomem("the stack would grow past its limit"));
        }
        if !self.limits().may_expand(self.usage(), is_data(&old), grow) {
            return Err(enomem("the stack would pass RLIMIT_AS"));
        }
        let pgoff = old
            .pgoff
            .checked_sub(grow)
            .ok_or(enomem("the stack would start before its file"))?;
        let grown = Mapping {
            start: page,
            pgoff,
            ..old
        };
        let change = Change {
            lo: page,
            hi: grown.end,
            new: smallvec![grown],
        };
        self.protocol.extend(&mut writer, change);
        Ok(true)
    }

    /// MADV_DONTFORK (`dontfork`) or MADV_DOFORK over `[addr, addr + len)`: every mapped part of
    /// the range is left out of a fork's child, or back in, VMAs split at the range's ends and
    /// merged where the flag makes them alike, as Linux 6.18 (checked with raw syscalls):
    /// EINVAL for an unaligned address (or a range splitting a mapping of huge pages inside a
    /// page), EAGAIN when a split would pass `max_map_count`, ENOMEM, after the change, when
    /// part of the range is unmapped; a length of 0 does nothing. Faults do not read the flag:
    /// the VMAs are usable throughout (`Protocol::reshape`).
    pub fn set_dontfork(&self, addr: u64, len: u64, dontfork: bool) -> Result<()> {
        self.advise_flags(addr, len, |_| None, |part| Mapping { dontfork, ..part })
    }

    /// prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME) over `[addr, addr + len)`: names the anonymous
    /// memory of the range (`None`: unnames it); `maps()` shows `[anon:NAME]`, and VMAs with
    /// different names do not merge. As Linux 6.18 (`prctl_set_vma`, `madvise_set_anon_name`):
    /// EINVAL for a name of 80 bytes or more or with a character that is not printable ASCII or
    /// is one of `` \ ` $ [ ] ``, and for an unaligned address; EBADF at the first VMA of a
    /// file in the range (those before it named); ENOMEM, after naming, when part of the range
    /// is unmapped. Faults do not read the name: the VMAs are usable throughout.
    pub fn set_anon_name(&self, addr: u64, len: u64, name: Option<&str>) -> Result<()> {
        if let Some(name) = name
            && (name.len() >= ANON_NAME_MAX
                || !name
                    .bytes()
                    .all(|c| (0x20..0x7f).contains(&c) && !b"\\`$[]".contains(&c)))
        {
            return Err(einval(
                "anon_vma names are under 80 printable characters, none of \\`$[]",
            ));
        }
        let name: Option<Arc<str>> = name.map(Arc::from);
        self.advise_flags(
            addr,
            len,
            |vma| {
                vma.backing
                    .file()
                    .is_some_and(|file| !file.anonymous())
                    .then(|| Error::new(Errno::EBADF, "a file mapping cannot be named"))
            },
            |part| Mapping {
                name: name.clone(),
                ..part
            },
        )
    }

    /// The walk of madvise's flag changes (Linux's `madvise_walk_vmas` and
    /// `madvise_update_vma`): every mapped part of `[addr, addr + len)` changed by `change`,
    /// VMAs split at the range's ends and merged where alike; the walk stops at the first VMA
    /// `stop` refuses, answering its error after changing those before it. EINVAL for an
    /// unaligned address (or a range splitting a mapping of huge pages inside a page), EAGAIN
    /// when a split would pass `max_map_count`, ENOMEM, after the change, when part of the
    /// range is unmapped; a length of 0 does nothing. Faults do not read what changes: the
    /// VMAs are usable throughout (`Protocol::reshape`).
    fn advise_flags(
        &self,
        addr: u64,
        len: u64,
        stop: impl Fn(&Mapping) -> Option<Error>,
        change: impl Fn(Mapping) -> Mapping,
    ) -> Result<()> {
        let Some((addr, end)) = advise_range(addr, len)? else {
            return Ok(());
        };
        let limits = self.limits();
        let mut writer = self.protocol.tree.lock();
        let mut old: Vec<Mapping> = Vec::new();
        let mut stopped = None;
        for vma in self.protocol.vmas_in(&writer, addr, end) {
            if let Some(error) = stop(vma.mapping()) {
                stopped = Some((vma.start(), error));
                break;
            }
            old.push(vma.mapping().clone());
        }
        let end = stopped.as_ref().map_or(end, |&(at, _)| at.max(addr));
        if let (Some(first), Some(last)) = (old.first(), old.last()) {
            check_splits(addr, end, Some(first), Some(last))?;
            let (lo, hi) = (first.start, last.end);
            let new = reshaped(&old, (addr, end), change);
            let change = Change { lo, hi, new };
            // madvise answers EAGAIN where a split fails (Linux's `madvise_vma_behavior`).
            self.check_split_count(&writer, &limits, &change).map_err(|_| {
                Error::new(
                    Errno::EAGAIN,
                    "the change would split a VMA with max_map_count VMAs",
                )
            })?;
            self.protocol.reshape(&mut writer, change);
        }
        if let Some((_, error)) = stopped {
            return Err(error);
        }
        let mapped: u64 = old.iter().map(|m| m.end.min(end) - m.start.max(addr)).sum();
        if mapped < end - addr {
            return Err(enomem("part of the range is unmapped"));
        }
        Ok(())
    }

    /// mlock's and munlock's part in the VMAs: `locked` set or cleared on the VMAs covering
    /// `[addr, addr + len)` from its start without a hole — the address rounded down to a page,
    /// the length, with the address's offset in its page, up — VMAs split at the range's ends
    /// and merged where the flag makes them alike, as Linux's `apply_vma_lock_flags`: ENOMEM at
    /// the first hole (after changing what comes before it) or when nothing is mapped at the
    /// start, EINVAL for a range wrapping around; nothing for an empty range. Mappings of huge
    /// pages keep their flag (Linux never locks them). Faults do not read the flag: the VMAs
    /// are usable throughout (`Protocol::reshape`). Returns the range `[start, end)` changed.
    pub fn set_locked(&self, addr: u64, len: u64, locked: bool) -> Result<(u64, u64)> {
        let start = addr & !(PAGE_SIZE - 1);
        let end = len
            .checked_add(addr - start)
            .and_then(|len| len.checked_next_multiple_of(PAGE_SIZE))
            .and_then(|len| start.checked_add(len))
            .ok_or(einval("range wraps around the top of the address range"))?;
        if start == end {
            return Ok((start, end));
        }
        let mut writer = self.protocol.tree.lock();
        let (covered, lo, changed_end) = covered_from(&writer, start, end)?;
        let hi = covered.last().map_or(changed_end, |last| last.end);
        let new = reshaped(&covered, (start, changed_end), |part| Mapping {
            locked: if part.page_size() == PAGE_SIZE {
                locked
            } else {
                part.locked
            },
            ..part
        });
        let change = Change { lo, hi, new };
        self.check_split_count(&writer, &self.limits(), &change)?;
        self.protocol.reshape(&mut writer, change);
        if changed_end < end {
            return Err(enomem("part of the range is unmapped"));
        }
        Ok((start, end))
    }

    /// Sets where the initial stack starts (Linux's `mm->start_stack`, the process's first
    /// stack pointer): `maps()` labels the VMA holding it `[stack]`.
    pub fn set_stack_start(&self, addr: u64) {
        // Relaxed: read by `maps()` after the call that set it.
        self.start_stack.store(addr, Ordering::Relaxed);
    }

    /// Sets where the heap starts (and empties it): `brk` grows it from there.
    pub fn set_heap_start(&self, start: u64) -> Result<()> {
        let start = start
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(einval("heap start overflows"))?;
        if start < self.layout.low || start >= self.layout.high {
            return Err(einval("heap start outside the address space"));
        }
        let _writer = self.protocol.tree.lock();
        self.heap.set((start, start));
        Ok(())
    }

    /// Moves the program break to `addr` and returns the new break; as Linux, returns the
    /// current break unchanged when `addr` is below the heap start, the heap would pass
    /// `RLIMIT_DATA` (`check_data_rlimit`, the heap alone: there is no program data segment
    /// here), or it cannot grow there: occupied up to a page above it (the [`STACK_GUARD_GAP`]
    /// below a stack), beyond the address space, past `RLIMIT_AS` or `RLIMIT_DATA`, or more
    /// VMAs than `max_map_count` (`do_brk_flags`).
    pub fn brk(&self, addr: u64) -> u64 {
        let limits = self.limits();
        // The writer lock serializes brk with every other change of the heap.
        let mut writer = self.protocol.tree.lock();
        let (start, brk) = self.heap.get();
        if addr < start || addr - start > limits.data {
            return brk;
        }
        let Some(new_top) = addr
            .checked_next_multiple_of(PAGE_SIZE)
            .filter(|&top| top < self.layout.high)
        else {
            return brk;
        };
        let old_top = brk.next_multiple_of(PAGE_SIZE);
        if new_top < old_top {
            self.protocol.unmap(&mut writer, new_top, old_top);
        } else if new_top > old_top {
            // Linux keeps a guard page below the next mapping, and the guard gap below a stack.
            let next_start = start_gap_above(&writer, old_top - 1);
            if new_top.saturating_add(PAGE_SIZE) > next_start
                || !limits.may_expand(self.usage(), true, (new_top - old_top) >> PAGE_SHIFT)
                || self.vma_count() > limits.max_map_count
            {
                return brk;
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
                dontfork: false,
                locked: false,
                noreserve: false,
                nohugepage: false,
                droppable: false,
                sync: false,
                anon: AnonSlot::default(),
            };
            let change = Change {
                lo: old_top,
                hi: new_top,
                new: smallvec![grown],
            };
            self.protocol.settle(&mut writer, change, &[]);
        }
        self.heap.set((start, addr));
        addr
    }

    /// EINVAL if changing `[start, end)` would split a mapping of huge pages inside a page (see
    /// [`check_splits`]).
    fn check_splits(&self, writer: &TreeWriter<'_>, start: u64, end: u64) -> Result<()> {
        let at = |addr: u64| writer.load_range(addr).map(|(_, _, vma)| vma.mapping().clone());
        check_splits(start, end, at(start).as_ref(), at(end - 1).as_ref())
    }

    /// Where a non-fixed mapping of `len` bytes starting at a multiple of `align` goes: the hint
    /// (rounded up to `align`) if free, else top-down below the mmap base, else bottom-up above
    /// it. With `align` above a page, as Linux's `vm_unmapped_area`: a gap `align - PAGE_SIZE`
    /// longer is searched and the range aligned inside it. The [`STACK_GUARD_GAP`] below a
    /// stack counts as taken (Linux's `vm_start_gap`).
    fn place(&self, writer: &TreeWriter<'_>, hint: u64, len: u64, align: u64) -> Result<u64> {
        let Layout { low, high, mmap_base } = self.layout;
        let search = self.search_length(len, align)?;
        if let Some(hint) = self.free_hint(writer, hint, len, align) {
            return Ok(hint);
        }
        // Top-down: the highest gap long enough; when the guard gap below a stack reaches into
        // it, search again below the guard gap's start (Linux's `unmapped_area_topdown`).
        let mut limit = mmap_base;
        while limit > low {
            let Some((_, last)) = writer.find_gap_rev(low, limit - 1, search).ok().flatten() else {
                break;
            };
            let guard = start_gap_above(writer, last);
            if guard > last {
                return Ok((last + 1 - len) / align * align);
            }
            limit = guard;
        }
        // Bottom-up above the base.
        bottom_up(writer, (mmap_base, high), len, align, search).ok_or(enomem("no free range is long enough"))
    }

    /// [`AddressSpace::place`] for MAP_32BIT: the hint if free, else bottom-up in
    /// `[1 GiB, 2 GiB)` (x86-64's `find_start_end`; Linux also randomizes the start).
    fn place_low(&self, writer: &TreeWriter<'_>, hint: u64, len: u64, align: u64) -> Result<u64> {
        const WINDOW: (u64, u64) = (1 << 30, 2 << 30);
        let search = self.search_length(len, align)?;
        if let Some(hint) = self.free_hint(writer, hint, len, align) {
            return Ok(hint);
        }
        let Layout { low, high, .. } = self.layout;
        let window = (WINDOW.0.max(low), WINDOW.1.min(high));
        bottom_up(writer, window, len, align, search)
            .ok_or(enomem("no free range below 2 GiB is long enough"))
    }

    /// How long a free range must be to hold `len` bytes at a multiple of `align`; ENOMEM if
    /// longer than the space.
    fn search_length(&self, len: u64, align: u64) -> Result<u64> {
        let Layout { low, high, .. } = self.layout;
        len.checked_add(align - PAGE_SIZE)
            .filter(|&search| search <= high - low)
            .ok_or(enomem("longer than the address space"))
    }

    /// The hint (rounded up to `align`) if `len` bytes are free there, clear of a stack's
    /// guard gap.
    fn free_hint(&self, writer: &TreeWriter<'_>, hint: u64, len: u64, align: u64) -> Option<u64> {
        let Layout { low, high, .. } = self.layout;
        let hint = hint.checked_next_multiple_of(align).unwrap_or(0);
        (hint >= low
            && hint.checked_add(len).is_some_and(|end| end <= high)
            && self.protocol.first_in(writer, hint, hint + len).is_none()
            && start_gap_above(writer, hint + len - 1) >= hint + len)
            .then_some(hint)
    }
}
