//! The replacement protocol: every change of the address space's VMAs (mmap, munmap, mprotect,
//! mremap, brk) goes through it, holding the tree's writer lock. The address space
//! (`space.rs`) computes what a call changes; this module applies it:
//!
//! 1. the new VMAs are built BABY where step 6 will change translations (elsewhere they map
//!    what the old VMAs did, or what was not mapped, and are usable at once: see
//!    [`Protocol::stage`]);
//! 2. they are stored into the tree (`replace_exact`, one publication per changed range):
//!    lookups now find them, and the displaced VMAs stay valid for readers that found them.
//!    New file VMAs enter their files' reverse maps just before ([`FlushHook::mapped`]);
//! 3. the displaced VMAs are marked ZOMBIE (no new references) and the writer waits until their
//!    reference counts drain;
//! 4. it waits for a grace period: faults that found an old VMA under an RCU guard, without a
//!    reference (the fast path), have finished;
//! 5. the displaced VMAs are freed;
//! 6. the flush hook removes every translation in the changed ranges (the fault layer's page
//!    table): no fault can install one from an old VMA any more (steps 3–4), and none from a new
//!    VMA over those ranges yet (they are BABY). The displaced file VMAs then leave the reverse maps ([`FlushHook::unmapped`]): a
//!    reverse-map walk finds every VMA through which a translation of the file may exist;
//! 7. BABY is cleared on the new VMAs born so and the faults waiting for them are woken;
//! 8. where the flush revoked translations (removed them, or took permissions away), the writer
//!    waits for a grace period keyed to those ranges: an access that read an old translation
//!    before the flush (a `write` copying through it, like a store through a stale TLB entry)
//!    has completed before the call returns, as a TLB shootdown guarantees on Linux. Sections
//!    keyed elsewhere are not waited for.
//!
//! A change that displaces nothing (mapping into free space without merging) skips steps 3–6
//! and 8: nobody can be using what did not exist. Invariant between operations: no two adjacent
//! VMAs could be merged (every change merges what it makes adjacent), VMAs are page aligned and
//! inside the space's bounds.
//!
//! Each step a guarantee rests on can be skipped by a deliberately broken variant, for the
//! shuttle tests that must fail without it ([`BrokenStep`]); outside shuttle builds the switch
//! is constant false and costs nothing.

use crate::limits::Counters;
use crate::vma::{Events, Mapping, Prot, Vma};
use maple::rcu::{DefaultRcu, Keys, Rcu as _};
use maple::sync::atomic::{AtomicU64, Ordering};
use maple::{Displaced, MapleTree, Writer};
use smallvec::SmallVec;
use std::time::{Duration, Instant};

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

    /// A VMA mapping a file is about to be published (step 2): a layer keeping the file's
    /// reverse map adds it there. Called before the VMA can be found, so a reverse-map walk
    /// finds every VMA through which a translation of the file can be installed.
    fn mapped(&self, mapping: &Mapping) {
        let _ = mapping;
    }

    /// A VMA mapping a file is gone, and so are its translations (after step 6, or when the
    /// space is dropped): a layer keeping the file's reverse map removes it there. Until then
    /// the old VMA stays in the reverse map beside the new ones that replace it, so a walk
    /// never misses a page that stays mapped across the change.
    fn unmapped(&self, mapping: &Mapping) {
        let _ = mapping;
    }
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
    pub fn wait(&self, rcu: &DefaultRcu) -> Duration {
        if self.is_empty() {
            return Duration::ZERO;
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
pub(crate) enum Flush {
    Zap(u64, u64),
    Protect(u64, u64, Prot),
    Relocate { from: u64, to: u64, len: u64 },
}

/// One run of the protocol: the changes an operation published (steps 1–2), waiting for
/// [`Protocol::finish`] to complete steps 3–8 for all of them at once (mremap publishes an
/// unmap and a map in one run, so the contents move while neither range is usable).
pub(crate) struct Run<'t> {
    displaced: Option<Displaced<'t, Box<Vma>, DefaultRcu>>,
    /// New VMAs (BABY) still in the tree; their boxes do not move, and only this writer could
    /// free them.
    born: SmallVec<[*const Vma; 4]>,
}

impl Run<'_> {
    pub(crate) fn new() -> Self {
        Self {
            displaced: None,
            born: SmallVec::new(),
        }
    }
}

/// The range an operation rewrites: everything in `[lo, hi)` is replaced by `new` (sorted,
/// inside the range; the rest becomes free).
#[derive(Clone)]
pub(crate) struct Change {
    pub(crate) lo: u64,
    pub(crate) hi: u64,
    pub(crate) new: Mappings,
}

/// The mappings of a change (one to three in all but multi-VMA mprotects), inline so that an
/// operation allocates nothing for them.
pub(crate) type Mappings = SmallVec<[Mapping; 3]>;

/// A step of the protocol that a deliberately broken test variant skips (only shuttle builds can
/// break the protocol: the shuttle tests show that each guarantee's test fails without the step
/// that provides it).
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
    /// Step 2 for the files' reverse maps: the displaced VMAs leave them before the new ones
    /// enter, so a walk may find neither.
    ReverseMapOrder,
    /// Stack growth publishes the grown VMA BABY, as an ordinary change: faults on the stack's
    /// old pages wait for it.
    GrowthBaby,
    /// Step 1 makes every new VMA BABY, even those no flush touches: faults on a part a
    /// change leaves as it was wait for it.
    UntouchedBaby,
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

/// The protocol's state: the VMA tree, the flush hook, the wait queue of faults and writers,
/// and the writers' statistics.
pub(crate) struct Protocol {
    pub(crate) tree: MapleTree<Box<Vma>>,
    flush: Box<dyn FlushHook>,
    pub(crate) events: Events,
    pub(crate) stats: SpaceStats,
    /// The pages of the VMAs in the tree, for the limits.
    pub(crate) usage: Counters,
    #[cfg(feature = "shuttle")]
    broken: Option<BrokenStep>,
}

/// How a change's new VMAs are born.
#[derive(Clone, Copy)]
enum Born<'f> {
    /// BABY until the change is done where one of these flushes touches the VMA; usable at
    /// once elsewhere.
    Where(&'f [Flush]),
    /// BABY until the change is done, every one (a broken variant's).
    Baby,
    /// Usable at once: for a change where nothing mapped changes meaning.
    Usable,
}

impl Flush {
    /// Whether this flush changes translations in `[start, end)` (a relocation changes both
    /// its source and its target).
    fn touches(self, start: u64, end: u64) -> bool {
        let overlaps = |from: u64, to: u64| from < end && start < to;
        match self {
            Flush::Zap(from, to) | Flush::Protect(from, to, _) => overlaps(from, to),
            Flush::Relocate { from, to, len } => overlaps(from, from + len) || overlaps(to, to + len),
        }
    }
}

/// The tree's writer, held for a whole call.
pub(crate) type TreeWriter<'t> = Writer<'t, Box<Vma>, DefaultRcu>;

/// Clears BABY on a VMA this writer published.
fn birth_published(vma: *const Vma) {
    // SAFETY: the VMA is in the tree, and only a writer (the caller, holding the lock) could
    // displace and free it.
    unsafe { (*vma).birth() }
}

impl Protocol {
    /// An empty tree whose changes call `flush` at step 6.
    pub(crate) fn new(flush: impl FlushHook + 'static) -> Self {
        Self {
            tree: MapleTree::new(),
            flush: Box::new(flush),
            events: Events::new(),
            stats: SpaceStats::default(),
            usage: Counters::default(),
            #[cfg(feature = "shuttle")]
            broken: None,
        }
    }

    /// The RCU domain of the tree (and of the layers above).
    pub(crate) fn rcu(&self) -> &DefaultRcu {
        self.tree.rcu()
    }

    /// Breaks the protocol by skipping `step` (shuttle builds only).
    #[cfg(feature = "shuttle")]
    pub(crate) fn break_protocol(&mut self, step: BrokenStep) {
        self.broken = Some(step);
    }

    /// Whether a broken test variant skips `step`: constant false outside shuttle builds, where
    /// the protocol cannot be broken.
    #[inline(always)]
    pub(crate) fn skips(&self, step: BrokenStep) -> bool {
        #[cfg(feature = "shuttle")]
        return self.broken == Some(step);
        #[cfg(not(feature = "shuttle"))]
        {
            let _ = step;
            false
        }
    }

    /// The first VMA intersecting `[start, end)`.
    pub(crate) fn first_in<'w>(&self, writer: &'w TreeWriter<'_>, start: u64, end: u64) -> Option<&'w Vma> {
        writer
            .range_from(start)
            .filter(|&(first, _, _)| start < end && first < end)
            .map(|(_, _, vma)| vma)
    }

    /// The VMAs intersecting `[start, end)`, in order.
    pub(crate) fn vmas_in<'w>(
        &self,
        writer: &'w TreeWriter<'_>,
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
    pub(crate) fn carve(&self, writer: &TreeWriter<'_>, start: u64, end: u64, new: Mappings) -> Change {
        carve_around(&self.vmas_in(writer, start, end), start, end, new)
    }

    /// Unmaps `[start, end)`, splitting VMAs at its ends. Unmapping a range that holds nothing
    /// waits for no one.
    pub(crate) fn unmap(&self, writer: &mut TreeWriter<'_>, start: u64, end: u64) {
        let change = {
            let old = self.vmas_in(writer, start, end);
            (!old.is_empty()).then(|| carve_around(&old, start, end, Mappings::new()))
        };
        if let Some(change) = change {
            self.settle(writer, change, &[Flush::Zap(start, end)]);
        } else if self.skips(BrokenStep::NoShortcut) {
            // Nothing is mapped: nobody can be using it, so nothing to wait for (unless broken).
            self.rcu().synchronize();
        }
    }

    /// Runs the protocol for one change (see [`AddressSpace::stage`]) with `flush` as step 6.
    pub(crate) fn settle(&self, writer: &mut TreeWriter<'_>, change: Change, flush: &[Flush]) {
        let mut run = Run::new();
        // A change that zaps replaces even a mapping identical to the old one (MAP_FIXED over
        // the same mapping gets fresh contents, as on Linux).
        let zaps = flush.iter().any(|op| matches!(op, Flush::Zap(..)));
        self.stage(writer, change, zaps, &mut run, flush);
        self.finish(writer, run, flush);
    }

    /// Runs the protocol for a change that only extends one VMA (stack growth): the grown VMA
    /// maps what the old one did, the same way, plus a range where nothing was mapped, so no
    /// translation changes meaning and none is flushed. It is usable at once — no fault waits
    /// for it — and the old one is freed after its references and a grace period.
    pub(crate) fn extend(&self, writer: &mut TreeWriter<'_>, change: Change) {
        let mut run = Run::new();
        let born = if self.skips(BrokenStep::GrowthBaby) {
            Born::Baby
        } else {
            Born::Usable
        };
        self.publish(writer, change, &mut run, born);
        self.finish(writer, run, &[]);
    }

    /// Runs the protocol for a change that changes only what faults do not read (MADV_DONTFORK's
    /// flag), merged with compatible neighbours: every new VMA maps what the old ones did, the
    /// same way, so none is flushed and the new VMAs are usable at once.
    pub(crate) fn reshape(&self, writer: &mut TreeWriter<'_>, change: Change) {
        let mut run = Run::new();
        self.stage_born(writer, change, false, &mut run, Born::Usable);
        self.finish(writer, run, &[]);
    }

    /// Merges the change with compatible neighbours and within itself (Linux's merge rules)
    /// and publishes it into `run` (steps 1–2), unless it changes nothing and `always` is false.
    /// `flush` is what step 6 will do: a new VMA is BABY until then only where the flush
    /// touches it. Elsewhere it maps what the old VMAs mapped there, the same way — every
    /// change of meaning in a range flushes it (munmap and MAP_FIXED zap, mprotect taking
    /// permissions protects, mremap relocates and zaps) — or adds what was not there (new
    /// memory in free space, permissions added), so a fault may use it at once, and faults on
    /// the parts of a VMA a change leaves as they were never wait for it.
    pub(crate) fn stage<'t>(
        &self,
        writer: &mut TreeWriter<'t>,
        change: Change,
        always: bool,
        run: &mut Run<'t>,
        flush: &[Flush],
    ) {
        let born = if self.skips(BrokenStep::UntouchedBaby) {
            Born::Baby
        } else {
            Born::Where(flush)
        };
        self.stage_born(writer, change, always, run, born);
    }

    /// [`Protocol::stage`], the new VMAs born as `born` says.
    fn stage_born<'t>(
        &self,
        writer: &mut TreeWriter<'t>,
        change: Change,
        always: bool,
        run: &mut Run<'t>,
        born: Born<'_>,
    ) {
        let merged = self.merge(writer, change);
        let unchanged = || {
            let old = self.vmas_in(writer, merged.lo, merged.hi);
            old.len() == merged.new.len() && old.iter().zip(&merged.new).all(|(o, m)| o.mapping().same_as(m))
        };
        if always || !unchanged() {
            self.publish(writer, merged, run, born);
        }
    }

    /// `change` merged with compatible neighbours and within itself (Linux's merge rules): its
    /// range widened over the neighbours it absorbs.
    fn merge(&self, writer: &TreeWriter<'_>, change: Change) -> Change {
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
                Some(previous) if previous.can_merge(&mapping) => previous.absorb(&mapping),
                _ => merged.push(mapping),
            }
        }
        hi = hi.max(merged.last().map_or(hi, |m| m.end));
        Change { lo, hi, new: merged }
    }

    /// How many VMAs more `change` would leave (after merging; negative for fewer).
    pub(crate) fn growth(&self, writer: &TreeWriter<'_>, change: &Change) -> isize {
        let merged = self.merge(writer, change.clone());
        merged.new.len() as isize - self.vmas_in(writer, merged.lo, merged.hi).len() as isize
    }

    /// The pages mapped in `[start, end)`.
    pub(crate) fn pages_in(&self, writer: &TreeWriter<'_>, start: u64, end: u64) -> u64 {
        self.vmas_in(writer, start, end)
            .iter()
            .map(|vma| (vma.end().min(end) - vma.start().max(start)) >> crate::PAGE_SHIFT)
            .sum()
    }

    /// Steps 1–2 of the replacement protocol (module documentation) for `change`, the new VMAs
    /// born as `born` says.
    fn publish<'t>(&self, writer: &mut TreeWriter<'t>, change: Change, run: &mut Run<'t>, born: Born<'_>) {
        // 1. New VMAs, born BABY where the flush will change translations, usable elsewhere.
        let first_born = run.born.len();
        let values: Vec<(u64, u64, Box<Vma>)> = change
            .new
            .into_iter()
            .map(|mapping| {
                let vma = Box::new(Vma::new(mapping));
                let baby = match born {
                    Born::Baby => true,
                    Born::Usable => false,
                    Born::Where(flush) => flush.iter().any(|op| op.touches(vma.start(), vma.end())),
                };
                if baby {
                    run.born.push(&*vma);
                } else {
                    // Nobody can find it before it is published.
                    vma.birth();
                }
                (vma.start(), vma.end() - 1, vma)
            })
            .collect();
        // 2. Publish: the new file VMAs enter their files' reverse maps first (the displaced ones
        // leave after their translations are gone, in `finish`).
        if self.skips(BrokenStep::ReverseMapOrder) {
            for vma in self.vmas_in(writer, change.lo, change.hi) {
                self.unlink(vma.mapping());
            }
        }
        for (_, _, vma) in &values {
            self.link(vma.mapping());
            self.usage.add(vma.mapping());
        }
        let erased = self.skips(BrokenStep::OnePublication).then(|| {
            writer
                .replace_exact(change.lo, change.hi - 1, Vec::new())
                .expect("valid change")
        });
        let displaced = writer
            .replace_exact(change.lo, change.hi - 1, values)
            .expect("changes are computed on VMA boundaries and are valid ranges");
        let displaced = erased.unwrap_or(displaced);
        for (_, _, vma) in displaced.iter() {
            self.usage.remove(vma.mapping());
        }
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

    /// Steps 3–8 of the replacement protocol for everything `run` published; `flush` lists the
    /// hook calls of step 6. A run that displaced nothing skips steps 3–6: nothing was mapped
    /// in the changed ranges, so nobody can be using them and no translation exists there.
    pub(crate) fn finish(&self, writer: &TreeWriter<'_>, run: Run<'_>, flush: &[Flush]) {
        let Run { displaced, born } = run;
        let mut revoked = Revoked::new();
        if let Some(displaced) = displaced {
            // 3. No new references; wait for the held ones.
            let mut referenced = false;
            for (_, _, vma) in displaced.iter() {
                referenced |= vma.kill();
            }
            self.stats.replacements.fetch_add(1, Ordering::Relaxed);
            if referenced && !self.skips(BrokenStep::ReferenceWait) {
                let started = Instant::now();
                self.stats.reference_waits.fetch_add(1, Ordering::Relaxed);
                self.events
                    .wait_until(|| displaced.iter().all(|(_, _, vma)| vma.drained()));
                add_wait(&self.stats.reference_wait_ns, started.elapsed());
            }
            // 4 and 5. A grace period, then free them.
            if self.skips(BrokenStep::WaitForEveryone) {
                self.rcu().synchronize();
            }
            let (freed, waited) = if self.skips(BrokenStep::GracePeriod) {
                // SAFETY: only a broken shuttle variant gets here (`skips` is constant false
                // elsewhere), and under shuttle freed VMAs are quarantined, never freed: readers
                // that still see them read poisoned but allocated memory, which the tests detect.
                (
                    unsafe { displaced.reclaim_without_grace_period() },
                    Default::default(),
                )
            } else {
                displaced.reclaim_timed()
            };
            // The file VMAs among them leave their files' reverse maps after step 6.
            let unlinked: SmallVec<[Mapping; 2]> = freed
                .iter()
                .filter(|(_, _, vma)| vma.mapping().backing.file().is_some())
                .map(|(_, _, vma)| vma.mapping().clone())
                .collect();
            freed.into_iter().for_each(|(_, _, vma)| vma.free());
            add_wait(&self.stats.grace_period_ns, waited);
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
            if !self.skips(BrokenStep::ReverseMapOrder) {
                unlinked.iter().for_each(|mapping| self.unlink(mapping));
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

    /// Adds a file VMA to its file's reverse map (through the hook); anonymous ones have none.
    pub(crate) fn link(&self, mapping: &Mapping) {
        if mapping.backing.file().is_some() {
            self.flush.mapped(mapping);
        }
    }

    /// Removes a file VMA from its file's reverse map.
    fn unlink(&self, mapping: &Mapping) {
        if mapping.backing.file().is_some() {
            self.flush.unmapped(mapping);
        }
    }

    /// Waits for the read-side sections that may still be accessing memory through the
    /// translations `revoked` names (step 8 of the protocol, and MADV_DONTNEED's after it clears
    /// translations), and counts the wait. Call it with no guard held.
    pub(crate) fn await_revoked(&self, revoked: &Revoked) {
        if revoked.is_empty() || self.skips(BrokenStep::RevocationWait) {
            return;
        }
        let waited = revoked.wait(self.rcu());
        self.stats.revocations.fetch_add(1, Ordering::Relaxed);
        add_wait(&self.stats.revocation_wait_ns, waited);
    }
}

impl Drop for Protocol {
    fn drop(&mut self) {
        // The space goes away with its VMAs (the layer above drops its translations with it):
        // the file VMAs leave their files' reverse maps.
        let writer = self.tree.lock();
        let mut at = 0;
        while let Some((_, last, vma)) = writer.range_from(at) {
            self.unlink(vma.mapping());
            match last.checked_add(1) {
                Some(next) => at = next,
                None => break,
            }
        }
    }
}

/// Adds a writer's wait to one of the statistics' nanosecond counters (a zero wait, the common
/// case, touches nothing).
fn add_wait(counter: &AtomicU64, waited: Duration) {
    if !waited.is_zero() {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: a statistic, read on its own.
        counter.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The range around `[start, end)` with no VMA but those inside it: from the end of the VMA
/// before (or `start` if one covers `start - 1`, or 0) to the start of the VMA after (or `end`
/// if one covers `end`, or the top of the address range). Read with the writer's lock held, so
/// without a guard.
fn free_around(writer: &TreeWriter<'_>, start: u64, end: u64) -> (u64, u64) {
    let floor = start.checked_sub(1).map_or(0, |before| {
        writer.gap_at(before).map_or(start, |(first, _)| first)
    });
    let ceiling = writer.gap_at(end).map_or(end, |(_, last)| last.saturating_add(1));
    (floor, ceiling)
}

/// [`Protocol::carve`] for `old`, the VMAs intersecting `[start, end)` in order (already
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
