//! A sequential VMA map with Linux's mmap / munmap / mprotect / mremap semantics, for the baseline
//! designs, which protect it with a lock (`rwlock`, `rangelock`, `pervma`'s mmap lock) or copy
//! it (`snapshot`). Planning and applying are separate so that a design can plan under one
//! lock and apply under another.
//!
//! Invariants between changes (as `vma::AddressSpace`): mappings do not overlap, are page
//! aligned and inside the layout, and no two adjacent mappings could merge.

use std::collections::BTreeMap;
use vma::request::{MmapRequest, Placement, RemapRequest, check_splits};
use vma::{Errno, Error, Layout, Mapping, PAGE_SIZE, Prot};

/// A checked address-space change request (see [`crate::designs::Design`]'s provided methods).
#[derive(Debug, Clone)]
pub enum Op {
    /// mmap.
    Map(MmapRequest),
    /// munmap of `[start, end)`.
    Unmap(u64, u64),
    /// mprotect of `[start, end)`.
    Protect(u64, u64, Prot),
    /// mremap.
    Remap(RemapRequest),
    /// fork: place this mapping of the parent, as it is, where nothing is mapped.
    Copy(Mapping),
}

/// What the page table must do once a plan's changes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Remove the translations of `[start, end)` (munmap, MAP_FIXED, shrinking, moving away).
    Zap(u64, u64),
    /// `[start, end)` allows no more than `prot`.
    Protect(u64, u64, Prot),
    /// Move the translations of `[from, from + len)` to `[to, to + len)` (mremap).
    Relocate {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Bytes moved.
        len: u64,
    },
}

impl Flush {
    /// The address ranges the flush touches.
    pub fn ranges(&self) -> [(u64, u64); 2] {
        match *self {
            Flush::Zap(start, end) | Flush::Protect(start, end, _) => [(start, end), (start, end)],
            Flush::Relocate { from, to, len } => [(from, from + len), (to, to + len)],
        }
    }
}

/// One change to a map: the mappings it removes and adds (each in address order).
#[derive(Debug, Clone)]
pub struct Change {
    /// Mappings taken out (including neighbours that merge).
    pub removed: Vec<Mapping>,
    /// Mappings put in.
    pub added: Vec<Mapping>,
}

/// A planned operation: its changes, applied in order (none when nothing changes), the page
/// table's flushes, run in order once all are applied, and what the call returns (mprotect
/// over a hole returns ENOMEM after changing the mapped part).
#[derive(Debug, Clone)]
pub struct Planned {
    /// The changes.
    pub changes: Vec<Change>,
    /// The flushes.
    pub flushes: Vec<Flush>,
    /// The call's result.
    pub result: vma::Result<u64>,
}

impl Planned {
    fn new(result: vma::Result<u64>) -> Self {
        Self {
            changes: Vec::new(),
            flushes: Vec::new(),
            result,
        }
    }

    /// Whether there is nothing to do but return the result.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.flushes.is_empty()
    }

    /// The smallest range holding every range the flushes touch (what a fault must not touch
    /// meanwhile); `(0, 0)` if there is none.
    pub fn flushed_span(&self) -> (u64, u64) {
        self.flushes
            .iter()
            .flat_map(Flush::ranges)
            .reduce(|(lo, hi), (start, end)| (lo.min(start), hi.max(end)))
            .unwrap_or((0, 0))
    }
}

/// Mappings by start address (see the module documentation).
#[derive(Debug, Clone)]
pub struct VmaMap {
    layout: Layout,
    vmas: BTreeMap<u64, Mapping>,
}

impl VmaMap {
    /// An empty map of `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            vmas: BTreeMap::new(),
        }
    }

    /// Number of mappings.
    pub fn len(&self) -> usize {
        self.vmas.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.vmas.is_empty()
    }

    /// The mapping covering `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&Mapping> {
        self.vmas
            .range(..=addr)
            .next_back()
            .map(|(_, m)| m)
            .filter(|m| addr < m.end)
    }

    /// The mappings intersecting `[start, end)`, in order.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<Mapping> {
        let first = self.lookup(start).filter(|m| m.start < start).cloned();
        first
            .into_iter()
            .chain(self.vmas.range(start..end).map(|(_, m)| m.clone()))
            .collect()
    }

    /// Whether nothing is mapped in `[start, end)`.
    pub fn free(&self, start: u64, end: u64) -> bool {
        self.overlapping(start, end).is_empty()
    }

    /// Linux's placement of `len` bytes at a multiple of `align`: a free hint (rounded up to
    /// `align`); else the highest free range below the mmap base; else the lowest above it —
    /// each a gap `align - PAGE_SIZE` longer than `len`, the range aligned inside it (Linux's
    /// `vm_unmapped_area`).
    fn place(&self, hint: u64, len: u64, align: u64) -> vma::Result<u64> {
        let Layout { low, high, mmap_base } = self.layout;
        let no_room = || Error::new(Errno::ENOMEM, "no free range is long enough");
        let search = len
            .checked_add(align - PAGE_SIZE)
            .filter(|&search| search <= high - low)
            .ok_or_else(no_room)?;
        let hint = hint.checked_next_multiple_of(align).unwrap_or(0);
        if hint >= low && hint.checked_add(len).is_some_and(|end| end <= high) && self.free(hint, hint + len)
        {
            return Ok(hint);
        }
        let top_down = |top: u64| (top - len) / align * align;
        // Top down below the base: the gaps between mappings, highest first.
        let mut top = mmap_base;
        for m in self.vmas.range(..mmap_base).rev().map(|(_, m)| m) {
            if m.end < top && top - m.end >= search {
                return Ok(top_down(top));
            }
            top = top.min(m.start);
        }
        if top >= low + search {
            return Ok(top_down(top));
        }
        // Bottom up above it.
        let mut bottom = self.lookup(mmap_base).map_or(mmap_base, |m| m.end);
        for m in self.vmas.range(mmap_base..).map(|(_, m)| m) {
            if m.start >= bottom && m.start - bottom >= search {
                return Ok(bottom.next_multiple_of(align));
            }
            bottom = bottom.max(m.end);
        }
        if high - bottom >= search {
            Ok(bottom.next_multiple_of(align))
        } else {
            Err(no_room())
        }
    }

    /// EINVAL if changing `[start, end)` would split a mapping of huge pages inside a page.
    fn check_splits(&self, start: u64, end: u64) -> vma::Result<()> {
        check_splits(start, end, self.lookup(start), self.lookup(end - 1))
    }

    /// Plans `op` against the map as it is.
    pub fn plan(&self, op: &Op) -> vma::Result<Planned> {
        let mut planned = Planned::new(Ok(0));
        match op {
            Op::Map(request) => {
                let len = request.length();
                let start = match request.placement() {
                    Placement::FixedNoReplace(addr) if !self.free(addr, addr + len) => {
                        return Err(Error::new(Errno::EEXIST, "MAP_FIXED_NOREPLACE range is occupied"));
                    }
                    Placement::Fixed(addr) => {
                        self.check_splits(addr, addr + len)?;
                        addr
                    }
                    Placement::FixedNoReplace(addr) => addr,
                    Placement::Hint(hint) => self.place(hint, len, request.alignment())?,
                };
                planned
                    .changes
                    .push(self.replace(start, start + len, vec![request.mapping_at(start)]));
                planned.flushes.push(Flush::Zap(start, start + len));
                planned.result = Ok(start);
            }
            &Op::Unmap(start, end) => {
                self.check_splits(start, end)?;
                if !self.free(start, end) {
                    planned.changes.push(self.replace(start, end, Vec::new()));
                    planned.flushes.push(Flush::Zap(start, end));
                }
            }
            &Op::Protect(start, end, prot) => {
                // The mappings covering the range from its start without a hole.
                let mut covered = Vec::new();
                let mut at = start;
                while at < end
                    && let Some(m) = self.lookup(at)
                {
                    at = m.end;
                    covered.push(m.clone());
                }
                if covered.is_empty() {
                    return Err(Error::new(Errno::ENOMEM, "the range starts in unmapped memory"));
                }
                let changed_end = end.min(at);
                check_splits(start, changed_end, covered.first(), covered.last())?;
                let middle = covered
                    .iter()
                    .map(|m| {
                        m.slice(m.start.max(start), m.end.min(changed_end))
                            .protected(prot)
                    })
                    .collect();
                planned.changes.push(self.replace(start, changed_end, middle));
                planned.flushes.push(Flush::Protect(start, changed_end, prot));
                if changed_end < end {
                    planned.result = Err(Error::new(Errno::ENOMEM, "part of the range is unmapped"));
                }
            }
            Op::Remap(request) => return self.plan_remap(request),
            Op::Copy(mapping) => {
                if !self.free(mapping.start, mapping.end) {
                    return Err(Error::new(Errno::EEXIST, "a copied mapping's range is occupied"));
                }
                planned
                    .changes
                    .push(self.replace(mapping.start, mapping.end, vec![mapping.clone()]));
                // Nothing is there to zap: the flush marks the span the change covers.
                planned.flushes.push(Flush::Zap(mapping.start, mapping.end));
                planned.result = Ok(mapping.start);
            }
        }
        Ok(planned)
    }

    /// mremap with `vma::AddressSpace::mremap`'s rules (the checks of
    /// [`RemapRequest::check_source`]; shrinking unmaps the tail; growing extends in place when
    /// the pages after are free; otherwise a move, with MREMAP_MAYMOVE (ENOMEM without), to a
    /// placed range or, with MREMAP_FIXED, to the target, unmapped first). A move keeps the page
    /// offsets and relocates the translations of the part kept.
    fn plan_remap(&self, request: &RemapRequest) -> vma::Result<Planned> {
        let old = request.old();
        let source = self.lookup(old).cloned();
        let request = &request.check_source(source.as_ref())?;
        let (old_len, new_len) = (request.old_len(), request.new_len());
        let source = source.expect("checked");
        // As `vma::AddressSpace::remap`: the ends of the old range and of a fixed target.
        self.check_splits(old, old + old_len)?;
        if let Some(new_addr) = request.fixed() {
            self.check_splits(new_addr, new_addr + new_len)?;
        }
        if request.fixed().is_none() {
            let mut planned = Planned::new(Ok(old));
            if new_len <= old_len {
                // Shrink: unmap the tail.
                if new_len < old_len && !self.free(old + new_len, old + old_len) {
                    planned
                        .changes
                        .push(self.replace(old + new_len, old + old_len, Vec::new()));
                    planned.flushes.push(Flush::Zap(old + new_len, old + old_len));
                }
                return Ok(planned);
            }
            let grow_end = old.checked_add(new_len).filter(|&end| end <= self.layout.high);
            if old + old_len == source.end
                && let Some(grow_end) = grow_end
                && self.free(source.end, grow_end)
            {
                // Grow in place: nothing mapped changes meaning, nothing to flush.
                let grown = Mapping {
                    end: grow_end,
                    ..source.clone()
                };
                planned
                    .changes
                    .push(self.replace(source.start, grow_end, vec![grown]));
                return Ok(planned);
            }
            if !request.maymove() {
                return Err(Error::new(Errno::ENOMEM, "cannot grow in place and may not move"));
            }
        }
        // A move: each change is planned against the map as the ones before it leave it.
        let mut scratch = self.clone();
        let mut changes = Vec::with_capacity(3);
        let mut flushes = Vec::with_capacity(3);
        let target = match request.fixed() {
            Some(target) => {
                if !scratch.free(target, target + new_len) {
                    let unmap = scratch.replace(target, target + new_len, Vec::new());
                    scratch.apply(&unmap);
                    changes.push(unmap);
                    flushes.push(Flush::Zap(target, target + new_len));
                }
                target
            }
            None => self.place(0, new_len, source.page_size())?,
        };
        let kept = request.kept();
        let moved = request.moved(&self.overlapping(old, old + kept), target);
        let unmap = scratch.replace(old, old + old_len, Vec::new());
        scratch.apply(&unmap);
        changes.push(unmap);
        changes.push(scratch.replace(target, target + new_len, moved));
        // The kept translations move before the old range is zapped.
        flushes.push(Flush::Relocate {
            from: old,
            to: target,
            len: kept,
        });
        flushes.push(Flush::Zap(old, old + old_len));
        Ok(Planned {
            changes,
            flushes,
            result: Ok(target),
        })
    }

    /// The change that makes `[start, end)` hold `middle` (mappings inside it, in order),
    /// keeping the parts of overlapped mappings outside it and merging what becomes adjacent.
    fn replace(&self, start: u64, end: u64, middle: Vec<Mapping>) -> Change {
        let mut removed = self.overlapping(start, end);
        let mut pieces = Vec::with_capacity(middle.len() + 4);
        if let Some(first) = removed.first()
            && first.start < start
        {
            pieces.push(first.slice(first.start, start));
        }
        pieces.extend(middle);
        if let Some(last) = removed.last()
            && last.end > end
        {
            pieces.push(last.slice(end, last.end));
        }
        if let Some(first) = pieces.first()
            && let Some(left) = first.start.checked_sub(1).and_then(|before| self.lookup(before))
            && left.can_merge(first)
        {
            removed.insert(0, left.clone());
            pieces.insert(0, left.clone());
        }
        if let Some(last) = pieces.last()
            && let Some(right) = self.vmas.get(&last.end)
            && last.can_merge(right)
        {
            removed.push(right.clone());
            pieces.push(right.clone());
        }
        let mut added: Vec<Mapping> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match added.last_mut() {
                Some(last) if last.can_merge(&piece) => last.absorb(&piece),
                _ => added.push(piece),
            }
        }
        Change { removed, added }
    }

    /// Plans `op` and applies its changes: the whole of a call for a writer that holds the map
    /// exclusively. Returns the plan (its flushes and the call's result).
    pub fn commit(&mut self, op: &Op) -> vma::Result<Planned> {
        let planned = self.plan(op)?;
        for change in &planned.changes {
            self.apply(change);
        }
        Ok(planned)
    }

    /// Applies a change planned against this map as it is.
    pub fn apply(&mut self, change: &Change) {
        for m in &change.removed {
            self.vmas.remove(&m.start);
        }
        for m in &change.added {
            self.vmas.insert(m.start, m.clone());
        }
    }

    /// The free space around `[start, end)` as the page table's `zap` takes it: from the end
    /// of the mapping before (or `start` if one touches it) to the start of the next after.
    pub fn free_around(&self, start: u64, end: u64) -> (u64, u64) {
        let floor = match start.checked_sub(1) {
            None => 0,
            Some(before) => self
                .vmas
                .range(..=before)
                .next_back()
                .map_or(0, |(_, m)| if m.end > before { start } else { m.end }),
        };
        let ceiling = match self.lookup(end) {
            Some(_) => end,
            None => self.vmas.range(end..).next().map_or(u64::MAX, |(_, m)| m.start),
        };
        (floor, ceiling)
    }

    /// The mappings, in address order.
    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.vmas.values()
    }

    /// Each mapping's start, end and permissions, in address order.
    pub fn ranges(&self) -> Vec<(u64, u64, Prot)> {
        self.vmas.values().map(|m| (m.start, m.end, m.prot)).collect()
    }
}
