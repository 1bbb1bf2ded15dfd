//! [`Writer`]: the tree's writer (one at a time), its copy-on-write stores and the erase, and
//! the reclamation of the nodes they replace.

use super::*;

/// The tree's writer lock, held while this lives; every write goes through a `Writer`.
pub struct Writer<'t, P: ValuePointer, R: Rcu> {
    pub(super) tree: &'t MapleTree<P, R>,
    pub(super) state: MutexGuard<'t, WriterState<R::Cookie>>,
}

impl<'t, P: ValuePointer, R: Rcu> Writer<'t, P, R> {
    /// The current version; only writers replace it, so the writer needs no guard to walk it.
    pub(super) fn root(&self) -> NodePtr<P::Target> {
        // Relaxed: the previous writer's store happens-before this load through the mutex.
        NodePtr::from_raw(self.tree.root.load(Ordering::Relaxed))
    }

    /// The slot holding `index` in the current version.
    pub(super) fn slot_at(&self, index: u64) -> Found<P::Target> {
        // SAFETY: nodes reachable from the current root are freed only by writers, and this one
        // holds the lock.
        unsafe { walk(self.root(), index) }
    }

    /// The range holding `index` and its value, as the writer sees it.
    pub fn load_range(&self, index: u64) -> Option<(u64, u64, &P::Target)> {
        let found = self.slot_at(index);
        // SAFETY: values of the current version are freed only after a writer displaced them,
        // and this writer holds the lock for as long as the returned borrow.
        unsafe { found.value.as_ref() }.map(|value| (found.first, found.last, value))
    }

    /// The gap holding `index` (gaps are maximal: from the end of the range before, or 0, to
    /// the start of the range after, or `u64::MAX`), or `None` if a range holds `index`.
    pub fn gap_at(&self, index: u64) -> Option<(u64, u64)> {
        let found = self.slot_at(index);
        found.value.is_null().then_some((found.first, found.last))
    }

    /// The range holding `index`, or else the first range after it.
    pub fn range_from(&self, index: u64) -> Option<(u64, u64, &P::Target)> {
        let found = self.slot_at(index);
        if found.value.is_null() {
            // Gaps are maximal: what follows a gap is a range (or the end of the index space).
            return self.load_range(found.last.checked_add(1)?);
        }
        self.load_range(index)
    }

    /// See [`MapleTree::find_gap`].
    pub fn find_gap(&self, min: u64, max: u64, size: u64) -> Result<Option<(u64, u64)>, MapleError> {
        // SAFETY: the writer lock keeps the current version allocated.
        unsafe { search_gap(self.root(), min, max, size, Direction::Lowest) }
    }

    /// See [`MapleTree::find_gap_rev`].
    pub fn find_gap_rev(&self, min: u64, max: u64, size: u64) -> Result<Option<(u64, u64)>, MapleError> {
        // SAFETY: the writer lock keeps the current version allocated.
        unsafe { search_gap(self.root(), min, max, size, Direction::Highest) }
    }

    /// Overwrites `[first, last]` with `value`. Parts of existing ranges outside `[first, last]`
    /// keep their value (a range cut in two by the store is split: its right part gets a
    /// clone); values whose whole range lies inside are displaced and returned.
    pub fn store_range(&mut self, first: u64, last: u64, value: P) -> Result<Displaced<'t, P, R>, MapleError>
    where
        P: Clone,
    {
        check_range(first, last)?;
        Ok(self.write(first, last, value.into_raw(), Some(clone_raw::<P>)))
    }

    /// Stores `value` over `[first, last]` if every index of it is free; otherwise fails with
    /// [`MapleError::Occupied`] naming the first occupying range, and changes nothing.
    pub fn insert_range(&mut self, first: u64, last: u64, value: P) -> Result<(), MapleError> {
        check_range(first, last)?;
        if let Some((s, e, _)) = self.first_occupied(first, last) {
            return Err(MapleError::Occupied { first: s, last: e });
        }
        let displaced = self.write(first, last, value.into_raw(), None);
        debug_assert!(displaced.is_empty());
        Ok(())
    }

    /// Removes the whole range holding `index`; the result holds its value, or nothing.
    pub fn erase(&mut self, index: u64) -> Displaced<'t, P, R> {
        match self.load_range(index) {
            Some((first, last, _)) => self.write(first, last, std::ptr::null_mut(), None),
            None => Displaced::new(self.tree, Vec::new(), true),
        }
    }

    /// Makes every index of `[first, last]` a gap, trimming ranges that stick out of it (a range
    /// sticking out on both sides is split: its right part gets a clone).
    pub fn erase_range(&mut self, first: u64, last: u64) -> Result<Displaced<'t, P, R>, MapleError>
    where
        P: Clone,
    {
        check_range(first, last)?;
        Ok(self.write(first, last, std::ptr::null_mut(), Some(clone_raw::<P>)))
    }

    /// Replaces everything in `[first, last]` with `values` (sorted, disjoint `(first, last,
    /// value)` ranges inside it; the indices between them become gaps), in one publication:
    /// a reader sees either all of the old contents of `[first, last]` or all of the new.
    ///
    /// No existing range may stick out of `[first, last]` (it would have to be trimmed or
    /// split): that is [`MapleError::CutsRange`], and nothing changes. Everything previously
    /// in the range is displaced.
    pub fn replace_exact(
        &mut self,
        first: u64,
        last: u64,
        values: Vec<(u64, u64, P)>,
    ) -> Result<Displaced<'t, P, R>, MapleError> {
        check_range(first, last)?;
        let mut next = Some(first);
        for &(f, l, _) in &values {
            check_range(f, l)?;
            if next.is_none_or(|n| f < n) || l > last {
                return Err(MapleError::InvalidRange { first: f, last: l });
            }
            next = l.checked_add(1);
        }
        let entries = entries_with_gaps(first, last, values);
        // A range sticking out of `[first, last]` is found by the write's own scan of the
        // leaves, before anything changes.
        self.write_entries(first, entries, None)
    }

    /// The first range intersecting `[first, last]`.
    pub(super) fn first_occupied(&self, first: u64, last: u64) -> Option<(u64, u64, &P::Target)> {
        self.range_from(first).filter(|&(f, _, _)| f <= last)
    }

    /// Replaces `[first, last]` with `value` (null: a gap) and returns what was displaced.
    ///
    /// The leaves intersecting the range (widened over neighbouring gaps when storing a gap,
    /// and by a neighbour when the result would be under-full) are rebuilt from their entries;
    /// then, level by level, the parents of the replaced nodes are rebuilt around the new
    /// nodes, up to a new root, which is published with one store. The replaced nodes are then
    /// marked dead and retired.
    pub(super) fn write(
        &mut self,
        first: u64,
        last: u64,
        value: *mut P::Target,
        split: Option<SplitFn<P>>,
    ) -> Displaced<'t, P, R> {
        self.write_entries(first, smallvec![Entry { last, value }], split)
            .expect("callers without a split function write whole ranges or free space")
    }

    /// Replaces `[first, new.last().last]` with `new`, entries covering it in order (null: a
    /// gap), and returns what was displaced; see [`Writer::write`]. Without a split function no
    /// range may stick out of the written interval: that is [`MapleError::CutsRange`], found
    /// before anything changes, and the values in `new` are dropped.
    ///
    /// A write is classified once its leaf run is merged ([`Store::of`], the kernel's
    /// `mas_wr_store_type`), and each kind has one function: an in-place store of one leaf
    /// into its parent's slot, or a rebuild of the run and its ancestors up to a new root.
    pub(super) fn write_entries(
        &mut self,
        first: u64,
        mut new: NewEntries<P::Target>,
        split: Option<SplitFn<P>>,
    ) -> Result<Displaced<'t, P, R>, MapleError> {
        let (first, last) = self.widen_to_maximal_gaps(first, &mut new);
        let leaves = level_nodes(self.root(), self.state.height - 1, first, last);
        if split.is_none()
            && let Some(cut) = range_sticking_out(&leaves, first, last)
        {
            for entry in new {
                if !entry.value.is_null() {
                    // SAFETY: the caller made these values with `into_raw` and handed them
                    // over; none was published.
                    drop(unsafe { P::from_raw(entry.value) });
                }
            }
            return Err(cut);
        }
        let merged = self.merge_into_run(&leaves, (first, last), new, split);
        let len = self.tree.len.load(Ordering::Relaxed) + merged.added - merged.displaced.len();
        self.tree.len.store(len, Ordering::Relaxed);
        let displaced = Displaced::new(self.tree, merged.displaced, !self.state.values_trimmed);
        let (lo, hi) = (leaves[0].1, leaves[leaves.len() - 1].2);
        match Store::of(self.state.height, leaves.len(), merged.entries.len()) {
            Store::InPlace => {
                let (leaf, gap) = Leaf::build(lo, &merged.entries, &mut self.state.pool);
                self.replace_leaf(leaves[0].0, lo, leaf, gap);
            }
            Store::Rebuild => self.rebuild(&leaves, (lo, hi), merged.entries.into_vec()),
        }
        Ok(displaced)
    }

    /// Keeps gaps maximal: a new gap at either end of `new` absorbs the gap next to it.
    /// Returns the interval written, `[first, last]`, widened accordingly.
    fn widen_to_maximal_gaps(&self, mut first: u64, new: &mut NewEntries<P::Target>) -> (u64, u64) {
        let mut last = new[new.len() - 1].last;
        if new[0].value.is_null()
            && let Some(before) = first.checked_sub(1).map(|i| self.slot_at(i))
            && before.value.is_null()
        {
            first = before.first;
        }
        if new[new.len() - 1].value.is_null()
            && let Some(after) = last.checked_add(1).map(|i| self.slot_at(i))
            && after.value.is_null()
        {
            last = after.last;
            new.last_mut().expect("not empty").last = last;
        }
        (first, last)
    }

    /// The entries of the leaf run `leaves` with `[first, last]` replaced by `new`: ranges
    /// before and after are kept, a range cut at the left keeps its value in the part before
    /// `first`, one cut at the right keeps it (or, cut at both ends, a copy made by `split`) in
    /// the part after `last`; values wholly inside are displaced.
    fn merge_into_run(
        &mut self,
        leaves: &LevelNodes<P::Target>,
        (first, last): (u64, u64),
        new: NewEntries<P::Target>,
        split: Option<SplitFn<P>>,
    ) -> MergedRun<P::Target> {
        let mut entries = SmallVec::with_capacity(LEAF_SLOTS * leaves.len() + 2);
        let mut added = new.iter().filter(|entry| !entry.value.is_null()).count();
        let mut new_entry = Some(new);
        let mut displaced = Vec::new();
        for &(leaf, min, max) in leaves {
            let mut start = min;
            for entry in leaf_of(leaf).entries(max) {
                let (s, e) = (start, entry.last);
                start = e.wrapping_add(1);
                if e < first {
                    entries.push(entry);
                    continue;
                }
                let keeps_left = s < first;
                if keeps_left {
                    self.state.values_trimmed |= !entry.value.is_null();
                    entries.push(Entry {
                        last: first - 1,
                        value: entry.value,
                    });
                }
                if e <= last {
                    if !keeps_left && !entry.value.is_null() {
                        displaced.push((s, e, entry.value));
                    }
                    continue;
                }
                if let Some(mut new) = new_entry.take() {
                    entries.append(&mut new);
                }
                let kept = if s > last {
                    entry
                } else if keeps_left && !entry.value.is_null() {
                    let split = split.expect("only store_range and erase_range split ranges");
                    added += 1;
                    Entry {
                        last: e,
                        value: split(entry.value),
                    }
                } else {
                    // Cut on the left: the value stays in the rest of its range.
                    self.state.values_trimmed |= !entry.value.is_null();
                    Entry {
                        last: e,
                        value: entry.value,
                    }
                };
                entries.push(kept);
            }
        }
        if let Some(mut new) = new_entry.take() {
            entries.append(&mut new);
        }
        entries.dedup_by(absorb_gap);
        MergedRun {
            entries,
            displaced,
            added,
        }
    }

    /// [`Store::Rebuild`]: the leaf run `leaves` (covering `[lo, hi]`) becomes `entries`. An
    /// under-full run takes in a neighbouring leaf; then, level by level, the parents of the
    /// replaced nodes are rebuilt around the new nodes up to a new root, published with one
    /// store, and the replaced nodes are retired.
    fn rebuild(
        &mut self,
        leaves: &LevelNodes<P::Target>,
        (mut lo, mut hi): (u64, u64),
        mut entries: Vec<Entry<P::Target>>,
    ) {
        let root = self.root();
        let leaf_level = self.state.height - 1;
        let mut replaced: Vec<NodePtr<P::Target>> = leaves.iter().map(|&(leaf, _, _)| leaf).collect();
        (lo, hi) = absorb_neighbours(
            root,
            leaf_level,
            (lo, hi),
            &mut entries,
            LEAF_MIN,
            &mut replaced,
            |leaf, max| leaf_of(leaf).entries(max).collect(),
        );
        let mut items = build_leaves(lo, &entries, hi == u64::MAX, &mut self.state.pool);

        for level in (0..leaf_level).rev() {
            let parents = level_nodes(root, level, lo, hi);
            let (mut plo, mut phi) = (parents[0].1, parents[parents.len() - 1].2);
            let mut children = Vec::with_capacity(INTERNAL_SLOTS * parents.len() + items.len());
            let mut new_items = Some(items);
            for &(parent, min, max) in &parents {
                let mut start = min;
                for child in internal_of(parent).children(max) {
                    let s = start;
                    start = child.last.wrapping_add(1);
                    if child.last < lo {
                        children.push(child);
                    } else if s > hi {
                        children.extend(new_items.take().into_iter().flatten());
                        children.push(child);
                    }
                }
                replaced.push(parent);
            }
            children.extend(new_items.take().into_iter().flatten());
            (plo, phi) = absorb_neighbours(
                root,
                level,
                (plo, phi),
                &mut children,
                INTERNAL_MIN,
                &mut replaced,
                |node, max| internal_of(node).children(max).collect(),
            );
            items = build_internals(&children, phi == u64::MAX, &mut self.state.pool);
            (lo, hi) = (plo, phi);
        }

        let mut height = self.state.height;
        while items.len() > 1 {
            items = build_internals(&items, true, &mut self.state.pool);
            height += 1;
        }
        let mut new_root = items[0].node;
        // SAFETY: `new_root` and any single-child node under it were built by this write and
        // never published (published internal nodes have at least two children).
        while let View::Internal(internal) = unsafe { new_root.view() }
            && internal.end() == 0
        {
            let child = internal.child(0);
            // SAFETY: see above; nothing else references the wrapper node.
            unsafe { self.state.pool.recycle(new_root) };
            new_root = child;
            height -= 1;
        }
        self.state.height = height;
        // Release pairs with the readers' Acquire load in `current_root`: the new nodes are
        // complete before any reader can reach them.
        self.tree.root.store(new_root.as_raw(), Ordering::Release);
        self.retire(&replaced);
    }

    /// Fills the tree, which must be empty, with `ranges` — `(first, last, value)`, in
    /// increasing order, none overlapping the one before — in one pass: the leaves are built
    /// from the ranges and the gaps between them, then each level above from the one below,
    /// the nodes filled as evenly as a write's rebuild fills them, and the new root is
    /// published once (what the kernel's `__mt_dup` gives fork: no walk and no rebuild per
    /// range). `InvalidRange` for a range with `first > last`; `Occupied`, naming the range in
    /// the way, for one that is out of order or overlaps the one before, or when the tree is
    /// not empty. Nothing is stored then (the values are dropped).
    pub fn fill(&mut self, ranges: impl IntoIterator<Item = (u64, u64, P)>) -> Result<(), MapleError> {
        if let Some((first, last, _)) = self.range_from(0) {
            return Err(MapleError::Occupied { first, last });
        }
        let mut checked: Vec<(u64, u64, P)> = Vec::new();
        for (first, last, value) in ranges {
            check_range(first, last)?;
            if let Some(&(before_first, before_last, _)) = checked.last()
                && (before_last == u64::MAX || first <= before_last)
            {
                return Err(MapleError::Occupied {
                    first: before_first,
                    last: before_last,
                });
            }
            checked.push((first, last, value));
        }
        if checked.is_empty() {
            return Ok(());
        }
        let count = checked.len();
        let entries = entries_with_gaps(0, u64::MAX, checked);
        let mut level = build_leaves(0, &entries, false, &mut self.state.pool);
        let mut height = 1;
        while level.len() > 1 {
            level = build_internals(&level, false, &mut self.state.pool);
            height += 1;
        }
        let old = self.root();
        self.state.height = height;
        // Release pairs with the readers' Acquire load in `current_root`: the new nodes are
        // complete before any reader can reach them.
        self.tree.root.store(level[0].node.as_raw(), Ordering::Release);
        self.tree.len.store(count, Ordering::Relaxed);
        self.retire(&[old]);
        Ok(())
    }

    /// Replaces `old`, the leaf covering the interval that starts at `first`, with `new`, which
    /// covers the same interval: one store into the parent's slot (or the root), then the
    /// recorded gaps of the ancestors are brought up to date, from the bottom until one is
    /// unchanged.
    pub(super) fn replace_leaf(
        &mut self,
        old: NodePtr<P::Target>,
        first: u64,
        new: NodePtr<P::Target>,
        gap: u64,
    ) {
        let root = self.root();
        if root == old {
            // Release pairs with the readers' Acquire load in `current_root`.
            self.tree.root.store(new.as_raw(), Ordering::Release);
            self.retire(&[old]);
            return;
        }
        let mut path: AncestorPath<'_, P::Target> = SmallVec::new();
        let mut node = root;
        let (mut min, mut max) = (0, u64::MAX);
        while node != old {
            let internal = internal_of(node);
            let slot = internal.slot_of(first);
            (min, max) = internal.bounds(slot, min, max);
            path.push((internal, slot));
            node = internal.child(slot);
        }
        debug_assert_eq!(min, first);
        let (parent, slot) = path[path.len() - 1];
        parent.set_child(slot, new);
        let mut gap = gap;
        for &(internal, slot) in path.iter().rev() {
            if internal.gap(slot) == gap {
                break;
            }
            internal.set_gap(slot, gap);
            gap = internal.max_gap();
        }
        self.retire(&[old]);
    }

    /// Marks replaced nodes dead and queues them for reuse after a grace period; takes back
    /// the earlier ones whose grace period has passed.
    pub(super) fn retire(&mut self, replaced: &[NodePtr<P::Target>]) {
        for &node in replaced {
            // SAFETY: the node belonged to the previous version and is still allocated (it is
            // retired below, once: each write replaces distinct nodes).
            unsafe { node.mark_dead() };
        }
        let state = &mut *self.state;
        let ready = state.replaced.retire(
            &self.tree.rcu,
            replaced.iter().map(|node| RetiredNode(node.as_raw())),
        );
        for RetiredNode(node) in ready {
            // SAFETY: the node's grace period has passed: no reader can reach it.
            unsafe { state.pool.recycle(NodePtr::<P::Target>::from_raw(node)) };
        }
    }
}

/// A leaf run with a write merged into it ([`Writer::merge_into_run`]).
struct MergedRun<T> {
    /// The run's new entries, in order.
    entries: SmallVec<[Entry<T>; 2 * LEAF_SLOTS + 2]>,
    /// The values the write took out, with their ranges.
    displaced: Vec<(u64, u64, *mut T)>,
    /// Values the write added (new ones, and copies made by splitting a range).
    added: usize,
}

/// How a write puts its merged leaf run into the tree (the kernel's `mas_wr_store_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// One leaf becomes one leaf with the same interval: only the leaf is new, stored into its
    /// parent's slot in place (the kernel's slot store); the ancestors' recorded gaps follow.
    InPlace,
    /// Anything else (the run spans leaves, or overflows or underflows one): the run and its
    /// ancestors are rebuilt up to a new root.
    Rebuild,
}

impl Store {
    /// The kind of store for a run of `leaves` leaves merged into `entries` entries, in a tree
    /// of `height` levels (a root leaf may hold from one entry up; other leaves need
    /// `LEAF_MIN`).
    fn of(height: usize, leaves: usize, entries: usize) -> Self {
        let fits = if height == 1 {
            1..=LEAF_SLOTS
        } else {
            LEAF_MIN..=LEAF_SLOTS
        };
        if leaves == 1 && fits.contains(&entries) {
            Store::InPlace
        } else {
            Store::Rebuild
        }
    }
}
