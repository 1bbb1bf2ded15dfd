//! The RCU-safe range tree: readers, the writer, gap search.
//!
//! Invariants, beyond the node layout ones in [`crate::node`]:
//! - **Snapshots.** Writers copy every node on the path from a change to the root and publish
//!   the new root with one Release store; a reader that loads the root (Acquire) once sees one
//!   whole version of the tree. Nodes of older versions stay allocated until a grace period
//!   has passed ([`Rcu::retire`]), so readers never lock and never write shared memory.
//! - **Balance.** Every leaf is at the same depth. A node other than the root holds at least
//!   `LEAF_MIN` (leaf) or `INTERNAL_MIN` (internal) slots; an internal root has two children.
//! - **Maximal gaps.** No two adjacent slots, in a leaf or across neighbouring leaves, are both
//!   empty. Every maximal free interval is therefore exactly one empty slot, and the largest gap
//!   recorded for a subtree is the largest free interval inside it: gap search is O(log n).
//! - **Ownership.** Each slot of the current version owns one [`ValuePointer`] (a `Box` or an
//!   `Arc`) as a raw pointer. A value split by a store is cloned (a new box, or one more strong
//!   reference); a displaced value goes back to the writer's caller ([`Displaced`]) and is freed
//!   only after a grace period.

use crate::cache_aligned::CacheAligned;
use crate::error::{MapleError, check_range};
use crate::node::{
    Child, Entry, Header, INTERNAL_MIN, INTERNAL_SLOTS, Internal, LEAF_MIN, LEAF_SLOTS, Leaf, NodePool,
    NodePtr, ReclaimValue, View, span,
};
use crate::pointer::ValuePointer;
use crate::rcu::{DefaultRcu, Keys, Rcu};
use crate::reclaim::{ReclaimQueue, Retired};
use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crate::sync::{Mutex, MutexGuard};
use smallvec::{SmallVec, smallvec};
use std::fmt;
use std::marker::PhantomData;

/// A map from disjoint inclusive ranges of `u64` indices to values, readable without locks.
///
/// Readers take a [`Guard`] with [`MapleTree::guard`] and may then [`load`](Self::load),
/// [`load_range`](Self::load_range), iterate and search for gaps; the references they get live
/// as long as the guard. Writers are serialized by the tree: each write method locks it, or
/// [`MapleTree::lock`] returns a [`Writer`] that holds the lock across several operations.
///
/// See the [crate documentation](crate) for an example.
pub struct MapleTree<P: ValuePointer, R: Rcu = DefaultRcu> {
    /// The current version. Release-stored by the writer after the new nodes are complete;
    /// Acquire-loaded by readers, pairing with it.
    /// On a cache line of its own: every reader loads it, and only a write that replaces the
    /// root stores it (the writer's lock and counters live elsewhere).
    root: CacheAligned<AtomicPtr<Header>>,
    /// Number of ranges; updated by the writer, read with Relaxed (a statistic).
    len: AtomicUsize,
    writer: Mutex<WriterState<R::Cookie>>,
    /// Replaced nodes and displaced values waiting for their grace period; freed by writers.
    retired: Mutex<ReclaimQueue<R::Cookie>>,
    rcu: R,
    _values: PhantomData<P>,
}

/// What only the writer uses.
struct WriterState<C> {
    /// Levels in the tree; leaves are at depth `height - 1`.
    height: usize,
    /// Memory for new nodes, including replaced nodes whose grace period has passed.
    pool: NodePool,
    /// Replaced nodes waiting for their grace period, then for reuse.
    replaced: ReclaimQueue<C, RetiredNode>,
    /// Whether some write has cut a value's range short and left the value in the rest (a
    /// store over the left or right part of a range). From then on a displaced value's range may be
    /// smaller than the ranges readers found it in, so reclaiming it waits for every reader,
    /// keyed or not.
    values_trimmed: bool,
}

/// A replaced node in the writer's queue.
struct RetiredNode(*mut Header);

// SAFETY: the queue owns the retired node, which no reader can reach after its grace period.
unsafe impl Send for RetiredNode {}

// SAFETY: the tree owns its values (`P`, Send + Sync with Send + Sync targets) and hands out
// `&P::Target` to readers on any thread; all shared mutable state is atomic or behind a mutex.
unsafe impl<P: ValuePointer, R: Rcu> Send for MapleTree<P, R> {}
// SAFETY: as above.
unsafe impl<P: ValuePointer, R: Rcu> Sync for MapleTree<P, R> {}

/// A read-side section on a tree's RCU domain: everything reached through the tree while it
/// lives stays allocated.
///
/// A *keyed* guard ([`MapleTree::guard_at`], [`MapleTree::guard_within`], [`Guard::keyed`])
/// declares the indices its holder will look up ([keyed sections](crate::rcu#keyed-sections)):
/// values a write displaces from ranges that do not overlap them are reclaimed without waiting
/// for it ([`Displaced::reclaim`]). The tree enforces the declaration: through a keyed guard a
/// load hands out only values whose range overlaps the keys (it panics otherwise), and
/// iteration yields only such ranges (it ends at the last key).
pub struct Guard<'t, R: Rcu> {
    _inner: R::Guard<'t>,
    domain: &'t R,
    /// The declared keys ([`Keys::ALL`] for an unkeyed guard).
    keys: Keys,
}

impl<'t, R: Rcu> Guard<'t, R> {
    /// Enters a read-side section of `domain` directly (for layers that share a tree's domain).
    pub fn new(domain: &'t R) -> Self {
        Self {
            _inner: domain.read(),
            domain,
            keys: Keys::ALL,
        }
    }

    /// Enters a read-side section of `domain` that will look up `keys` only (see [`Guard`]).
    pub fn keyed(domain: &'t R, keys: Keys) -> Self {
        Self {
            _inner: domain.read_keyed(keys),
            domain,
            keys,
        }
    }

    /// The keys this guard declared ([`Keys::ALL`] if it is not keyed).
    pub fn keys(&self) -> Keys {
        self.keys
    }

    /// The domain this guard belongs to.
    pub fn domain(&self) -> &'t R {
        self.domain
    }
}

/// The slot that holds an index, as found by a walk from some root.
struct Found<T> {
    leaf: NodePtr<T>,
    leaf_min: u64,
    leaf_max: u64,
    first: u64,
    last: u64,
    value: *mut T,
}

/// Walks from `root` to the leaf slot holding `index`.
///
/// # Safety
/// `root` and every node below it must stay allocated while the walk runs (a guard is held, or
/// the caller is the writer).
#[inline]
unsafe fn walk<T>(mut node: NodePtr<T>, index: u64) -> Found<T> {
    let (mut min, mut max) = (0, u64::MAX);
    loop {
        // SAFETY: guaranteed by the caller for every node reachable from `root`.
        match unsafe { node.view() } {
            View::Internal(internal) => {
                let slot = internal.slot_of(index);
                (min, max) = internal.bounds(slot, min, max);
                node = internal.child(slot);
            }
            View::Leaf(leaf) => return Found::in_leaf(node, leaf, (min, max), index),
        }
    }
}

impl<T> Found<T> {
    /// The slot holding `index` in `leaf` (the view of `node`, covering `bounds`).
    #[inline]
    fn in_leaf(node: NodePtr<T>, leaf: &Leaf<T>, (min, max): (u64, u64), index: u64) -> Self {
        let slot = leaf.slot_of(index);
        let (first, last) = leaf.bounds(slot, min, max);
        Found {
            leaf: node,
            leaf_min: min,
            leaf_max: max,
            first,
            last,
            value: leaf.value(slot),
        }
    }
}

impl<P: ValuePointer, R: Rcu> Default for MapleTree<P, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: ValuePointer, R: Rcu> MapleTree<P, R> {
    /// An empty tree: one gap covering every index.
    pub fn new() -> Self {
        let mut pool = NodePool::default();
        let (root, _) = Leaf::<P::Target>::build(
            0,
            &[Entry {
                last: u64::MAX,
                value: std::ptr::null_mut(),
            }],
            &mut pool,
        );
        Self {
            root: CacheAligned(AtomicPtr::new(root.as_raw())),
            len: AtomicUsize::new(0),
            writer: Mutex::new(WriterState {
                height: 1,
                pool,
                replaced: ReclaimQueue::default(),
                values_trimmed: false,
            }),
            retired: Mutex::new(ReclaimQueue::default()),
            rcu: R::default(),
            _values: PhantomData,
        }
    }

    /// The RCU domain the tree's readers and writers use; layers above retire their own objects
    /// into it and wait for its grace periods.
    pub fn rcu(&self) -> &R {
        &self.rcu
    }

    /// Queues unlinked nodes and values for freeing after a grace period, and frees those whose
    /// grace period has passed (on this, the writer's, thread).
    fn retire(&self, items: impl IntoIterator<Item = Retired>) {
        let ready = self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retire(&self.rcu, items);
        // SAFETY: the queue returns only objects whose grace period has elapsed.
        unsafe { Retired::free(ready) };
    }

    /// Waits for a grace period and frees everything replaced or displaced so far. Writers free
    /// retired memory in batches as they go; this is for tests and for trimming memory at once.
    ///
    /// # Panics
    /// If called inside a read-side section.
    pub fn flush_retired(&self) {
        let mut writer = self.lock();
        let nodes = writer.state.replaced.take_all();
        let values = self.retired.lock().unwrap_or_else(|e| e.into_inner()).take_all();
        self.rcu.synchronize();
        // SAFETY: everything taken was unlinked before the grace period that just elapsed.
        unsafe { Retired::free(values) };
        for RetiredNode(node) in nodes {
            // SAFETY: as above.
            unsafe { writer.state.pool.recycle(NodePtr::<P::Target>::from_raw(node)) };
        }
    }

    /// Enters a read-side section.
    #[inline]
    pub fn guard(&self) -> Guard<'_, R> {
        Guard::new(&self.rcu)
    }

    /// Enters a read-side section that will look up `key` only: writers displacing values from
    /// other ranges do not wait for it (see [`Guard`]).
    #[inline]
    pub fn guard_at(&self, key: u64) -> Guard<'_, R> {
        Guard::keyed(&self.rcu, Keys::one(key))
    }

    /// Enters a read-side section that will look up indices in `first..=last` only (see
    /// [`Guard`]).
    ///
    /// # Panics
    /// If `first > last`.
    pub fn guard_within(&self, first: u64, last: u64) -> Guard<'_, R> {
        Guard::keyed(&self.rcu, Keys::new(first, last))
    }

    /// Locks the tree for writing; the writer lock is held until the [`Writer`] is dropped.
    pub fn lock(&self) -> Writer<'_, P, R> {
        Writer {
            tree: self,
            state: self
                .writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }

    /// Number of ranges stored.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no range is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn check_guard(&self, guard: &Guard<'_, R>) {
        assert!(
            std::ptr::eq(guard.domain, &self.rcu),
            "maple: a guard from another tree's RCU domain was used"
        );
    }

    /// The current root, for a reader holding a guard.
    #[inline]
    fn current_root(&self) -> NodePtr<P::Target> {
        // Acquire pairs with the writer's Release store in `Writer::publish`.
        NodePtr::from_raw(self.root.load(Ordering::Acquire))
    }

    /// The value stored at `index`.
    ///
    /// # Panics
    /// If `guard` belongs to another tree's domain.
    #[inline]
    pub fn load<'g>(&self, index: u64, guard: &'g Guard<'_, R>) -> Option<&'g P::Target> {
        self.load_range(index, guard).map(|(_, _, value)| value)
    }

    /// The range holding `index` and its value.
    ///
    /// # Panics
    /// If `guard` belongs to another tree's domain, or is keyed and the range found does not
    /// overlap its keys (a writer may be freeing the value without waiting for it).
    #[inline]
    pub fn load_range<'g>(&self, index: u64, guard: &'g Guard<'_, R>) -> Option<(u64, u64, &'g P::Target)> {
        self.check_guard(guard);
        // SAFETY: the guard keeps every node of the version we loaded allocated.
        let found = unsafe { walk(self.current_root(), index) };
        let keys = guard.keys;
        if !keys.contains(index)
            && !found.value.is_null()
            && !keys.overlaps(Keys::raw(found.first, found.last))
        {
            panic!(
                "maple: a guard keyed at {:#x}..={:#x} was used to load index {index:#x}",
                keys.first(),
                keys.last()
            );
        }
        // SAFETY: values of a version stay allocated while a guard taken before their
        // displacement lives.
        unsafe { found.value.as_ref() }.map(|value| (found.first, found.last, value))
    }

    /// Ranges in ascending order, starting with the one holding `start` (or the first after it).
    ///
    /// During concurrent writes each range yielded is whole (as before or after a write), the
    /// ranges ascend and never overlap; a range that a write moved below one already yielded is
    /// skipped.
    ///
    /// Through a keyed guard only the ranges overlapping its keys are yielded: the iteration
    /// starts at the first key if `start` lies below it and ends after the last key.
    ///
    /// # Panics
    /// If `guard` belongs to another tree's domain.
    pub fn iter_from<'g>(&'g self, start: u64, guard: &'g Guard<'_, R>) -> Iter<'g, P, R> {
        self.check_guard(guard);
        Iter {
            tree: self,
            next: Some(start.max(guard.keys.first())),
            leaf: None,
            bound: None,
            forward: true,
            keys: guard.keys,
        }
    }

    /// Ranges in descending order, starting with the one holding `start` (or the first before it).
    ///
    /// Through a keyed guard only the ranges overlapping its keys are yielded (see
    /// [`MapleTree::iter_from`]).
    ///
    /// # Panics
    /// If `guard` belongs to another tree's domain.
    pub fn iter_rev_from<'g>(&'g self, start: u64, guard: &'g Guard<'_, R>) -> Iter<'g, P, R> {
        self.check_guard(guard);
        Iter {
            tree: self,
            next: Some(start.min(guard.keys.last())),
            leaf: None,
            bound: None,
            forward: false,
            keys: guard.keys,
        }
    }

    /// All ranges in ascending order (through a keyed guard, those overlapping its keys).
    ///
    /// # Panics
    /// If `guard` belongs to another tree's domain.
    pub fn iter<'g>(&'g self, guard: &'g Guard<'_, R>) -> Iter<'g, P, R> {
        self.iter_from(0, guard)
    }

    /// The lowest free interval of `size` indices inside `[min, max]`, as `(first, last)`
    /// (kernel: `mas_empty_area`). `Ok(None)` when there is none.
    pub fn find_gap(&self, min: u64, max: u64, size: u64) -> Result<Option<(u64, u64)>, MapleError> {
        let _guard = self.guard();
        // SAFETY: the guard keeps the version allocated until the search returns.
        unsafe { search_gap(self.current_root(), min, max, size, Direction::Lowest) }
    }

    /// The highest free interval of `size` indices inside `[min, max]`, as `(first, last)`
    /// (kernel: `mas_empty_area_rev`). `Ok(None)` when there is none.
    pub fn find_gap_rev(&self, min: u64, max: u64, size: u64) -> Result<Option<(u64, u64)>, MapleError> {
        let _guard = self.guard();
        // SAFETY: the guard keeps the version allocated until the search returns.
        unsafe { search_gap(self.current_root(), min, max, size, Direction::Highest) }
    }

    /// Overwrites `[first, last]` with `value`; see [`Writer::store_range`].
    pub fn store_range(&self, first: u64, last: u64, value: P) -> Result<Displaced<'_, P, R>, MapleError>
    where
        P: Clone,
    {
        self.lock().store_range(first, last, value)
    }

    /// Stores `value` over `[first, last]` if all of it is free; see [`Writer::insert_range`].
    pub fn insert_range(&self, first: u64, last: u64, value: P) -> Result<(), MapleError> {
        self.lock().insert_range(first, last, value)
    }

    /// Removes the range holding `index`; see [`Writer::erase`].
    pub fn erase(&self, index: u64) -> Displaced<'_, P, R> {
        self.lock().erase(index)
    }

    /// Makes every index of `[first, last]` a gap; see [`Writer::erase_range`].
    pub fn erase_range(&self, first: u64, last: u64) -> Result<Displaced<'_, P, R>, MapleError>
    where
        P: Clone,
    {
        self.lock().erase_range(first, last)
    }

    /// Counts the nodes of the current version (O(n)).
    pub fn stats(&self) -> TreeStats {
        let writer = self.lock();
        let mut stats = TreeStats {
            height: writer.state.height,
            ..TreeStats::default()
        };
        fn count<V>(node: NodePtr<V>, stats: &mut TreeStats) {
            // SAFETY: the caller holds the writer lock, which keeps the current version allocated.
            match unsafe { node.view() } {
                View::Leaf(leaf) => {
                    stats.leaves += 1;
                    stats.slots += leaf.end() + 1;
                }
                View::Internal(internal) => {
                    stats.internal_nodes += 1;
                    (0..=internal.end()).for_each(|slot| count(internal.child(slot), stats));
                }
            }
        }
        count(writer.root(), &mut stats);
        stats
    }

    /// Checks every structural invariant of the current version (O(n)): every leaf at the same
    /// depth; slot counts within capacity and above the minimum; pivots strictly increasing
    /// inside each node's interval; recorded gaps equal to the real largest free interval under
    /// each child; no two adjacent gaps; no dead node reachable; the index space covered once;
    /// `len()` equal to the number of values. Returns the first violation found.
    pub fn validate(&self) -> Result<(), String> {
        let writer = self.lock();
        crate::validate::validate(writer.root(), writer.state.height, self.len())
    }
}

/// The shape of a tree, from [`MapleTree::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Levels, counting the root and the leaves.
    pub height: usize,
    /// Leaf nodes.
    pub leaves: usize,
    /// Internal nodes.
    pub internal_nodes: usize,
    /// Used leaf slots: ranges plus gaps.
    pub slots: usize,
}

impl TreeStats {
    /// All nodes.
    pub fn nodes(&self) -> usize {
        self.leaves + self.internal_nodes
    }

    /// The fewest nodes that can hold `self.slots` leaf slots: full leaves, full internal nodes.
    pub fn minimum_nodes(&self) -> usize {
        let mut level = self.slots.div_ceil(LEAF_SLOTS);
        let mut total = level;
        while level > 1 {
            level = level.div_ceil(INTERNAL_SLOTS);
            total += level;
        }
        total
    }
}

/// Which end of `[min, max]` a gap search prefers.
#[derive(Clone, Copy)]
enum Direction {
    /// The lowest fitting interval (`mas_empty_area`).
    Lowest,
    /// The highest fitting interval (`mas_empty_area_rev`).
    Highest,
}

/// Checks a gap request and searches the version under `root`.
///
/// # Safety
/// Every node of that version must stay allocated during the call.
unsafe fn search_gap<T>(
    root: NodePtr<T>,
    min: u64,
    max: u64,
    size: u64,
    direction: Direction,
) -> Result<Option<(u64, u64)>, MapleError> {
    check_range(min, max)?;
    if size == 0 {
        return Err(MapleError::ZeroSize);
    }
    // SAFETY: forwarded from the caller.
    Ok(unsafe { gap_in(root, (0, u64::MAX), (min, max), size, direction) })
}

/// The lowest or highest `size`-index free interval inside `[lo, hi]` under `node`, which covers
/// `[min, max]` and intersects `[lo, hi]`. Visits, in the search's order, only the slots that
/// intersect `[lo, hi]`, and descends only into children whose recorded gap is large enough;
/// only the children at the edges of `[lo, hi]` can send it down and back, so it is O(log n).
///
/// # Safety
/// Every node under `node` must stay allocated during the call.
unsafe fn gap_in<T>(
    node: NodePtr<T>,
    (min, max): (u64, u64),
    (lo, hi): (u64, u64),
    size: u64,
    direction: Direction,
) -> Option<(u64, u64)> {
    // SAFETY: guaranteed by the caller.
    let view = unsafe { node.view() };
    let (from, to) = match &view {
        View::Leaf(leaf) => (leaf.slot_of(lo.max(min)), leaf.slot_of(hi.min(max))),
        View::Internal(internal) => (internal.slot_of(lo.max(min)), internal.slot_of(hi.min(max))),
    };
    for step in 0..=to - from {
        let slot = match direction {
            Direction::Lowest => from + step,
            Direction::Highest => to - step,
        };
        match &view {
            View::Leaf(leaf) => {
                if leaf.value(slot).is_null() {
                    let (first, last) = leaf.bounds(slot, min, max);
                    let (a, b) = (first.max(lo), last.min(hi));
                    if span(a, b) >= size {
                        return Some(match direction {
                            Direction::Lowest => (a, a + (size - 1)),
                            Direction::Highest => (b - (size - 1), b),
                        });
                    }
                }
            }
            View::Internal(internal) => {
                if internal.gap(slot) >= size {
                    let bounds = internal.bounds(slot, min, max);
                    // SAFETY: children of an allocated node are allocated (caller's guarantee).
                    let found = unsafe { gap_in(internal.child(slot), bounds, (lo, hi), size, direction) };
                    if found.is_some() {
                        return found;
                    }
                }
            }
        }
    }
    None
}

/// An ordered walk over ranges under a guard; see [`MapleTree::iter_from`].
pub struct Iter<'g, P: ValuePointer, R: Rcu> {
    tree: &'g MapleTree<P, R>,
    /// The next index to look at; `None` once the end of the index space was passed.
    next: Option<u64>,
    /// The leaf the last step used, with its interval; reused until it is dead or left.
    leaf: Option<(NodePtr<P::Target>, u64, u64)>,
    /// Last index (forward) or first index (backward) of the range yielded last.
    bound: Option<u64>,
    forward: bool,
    /// The guard's keys: ranges beyond them end the iteration.
    keys: Keys,
}

impl<'g, P: ValuePointer, R: Rcu> Iterator for Iter<'g, P, R> {
    type Item = (u64, u64, &'g P::Target);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(index) = self.next {
            let reusable = |&(leaf, min, max): &(NodePtr<P::Target>, u64, u64)| {
                // SAFETY: the iterator's guard keeps the cached leaf allocated. A dead leaf
                // belongs to an old version, so the walk restarts from the current root.
                min <= index && index <= max && !unsafe { leaf.is_dead() }
            };
            let (leaf, min, max) = match self.leaf.filter(reusable) {
                Some(cached) => cached,
                None => {
                    // SAFETY: the guard keeps the loaded version allocated.
                    let found = unsafe { walk(self.tree.current_root(), index) };
                    (found.leaf, found.leaf_min, found.leaf_max)
                }
            };
            self.leaf = Some((leaf, min, max));
            // SAFETY: as above.
            let View::Leaf(node) = (unsafe { leaf.view() }) else {
                unreachable!("walks end in leaves")
            };
            let slot = node.slot_of(index);
            let (first, last) = node.bounds(slot, min, max);
            let value = node.value(slot);
            let beyond_keys = if self.forward {
                first > self.keys.last()
            } else {
                last < self.keys.first()
            };
            if beyond_keys {
                self.next = None;
                return None;
            }
            self.next = if self.forward {
                last.checked_add(1)
            } else {
                first.checked_sub(1)
            };
            let overlaps = self
                .bound
                .is_some_and(|b| if self.forward { first <= b } else { last >= b });
            if value.is_null() || overlaps {
                continue;
            }
            self.bound = Some(if self.forward { last } else { first });
            // SAFETY: the guard keeps values of the version allocated.
            return Some((first, last, unsafe { &*value }));
        }
        None
    }
}

/// Values a write took out of the tree, with the ranges they covered.
///
/// Readers that started before the write may still be reading them. Dropping this hands them
/// to the RCU domain, which frees them after a grace period; [`Displaced::reclaim`] instead
/// waits for the grace period and gives them back.
#[must_use = "dropping Displaced frees the values after a grace period; use reclaim() to take them back"]
pub struct Displaced<'t, P: ValuePointer, R: Rcu> {
    tree: &'t MapleTree<P, R>,
    values: Vec<(u64, u64, *mut P::Target)>,
    /// Whether each value's range is every range it ever had (no write trimmed it), so that
    /// only keyed readers inside the ranges could have found the values.
    whole_ranges: bool,
}

// SAFETY: Displaced owns the boxed values it holds.
unsafe impl<P: ValuePointer, R: Rcu> Send for Displaced<'_, P, R> {}

impl<'t, P: ValuePointer, R: Rcu> Displaced<'t, P, R> {
    fn new(tree: &'t MapleTree<P, R>, values: Vec<(u64, u64, *mut P::Target)>, whole_ranges: bool) -> Self {
        Self {
            tree,
            values,
            whole_ranges,
        }
    }

    /// Number of values displaced.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the write displaced nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The displaced values with the ranges they covered, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &P::Target)> + '_ {
        // SAFETY: Displaced owns the values until it is dropped or reclaimed.
        self.values
            .iter()
            .map(|&(first, last, value)| (first, last, unsafe { &*value }))
    }

    /// Takes over the values `other` displaced (from the same tree), so that one grace period
    /// covers both writes.
    ///
    /// # Panics
    /// If `other` comes from another tree.
    pub fn append(&mut self, mut other: Self) {
        assert!(
            std::ptr::eq(self.tree, other.tree),
            "Displaced::append across trees"
        );
        self.values.append(&mut other.values);
        self.whole_ranges &= other.whole_ranges;
    }

    /// Waits for a grace period (no reader can still see the values), then returns them.
    ///
    /// Readers holding a [keyed guard](Guard) whose keys overlap no displaced range are not
    /// waited for (they cannot have found the values), as long as no write of the tree has
    /// ever left a value in part of its range (a `store_range` or `erase_range` over part of a
    /// range); after such a write, every reader is waited for.
    ///
    /// # Panics
    /// If called inside a read-side section.
    pub fn reclaim(self) -> Vec<(u64, u64, P)> {
        self.reclaim_timed().0
    }

    /// [`Displaced::reclaim`], also returning how long the grace period kept the caller
    /// waiting (see [`Rcu::synchronize_timed`]).
    ///
    /// # Panics
    /// If called inside a read-side section.
    pub fn reclaim_timed(mut self) -> (Vec<(u64, u64, P)>, std::time::Duration) {
        let rcu = &self.tree.rcu;
        let waited = if self.whole_ranges {
            let values = &self.values;
            rcu.synchronize_timed_for(|keys| {
                values
                    .iter()
                    .any(|&(first, last, _)| keys.overlaps(Keys::raw(first, last)))
            })
        } else {
            rcu.synchronize_timed()
        };
        let values = std::mem::take(&mut self.values)
            .into_iter()
            // SAFETY: after the grace period no reader holds the values; each came from a box.
            .map(|(first, last, value)| (first, last, unsafe { P::from_raw(value) }))
            .collect();
        (values, waited)
    }
}

impl<P: ValuePointer, R: Rcu> Displaced<'_, P, R> {
    /// Returns the values at once, without waiting for a grace period: only for the broken
    /// test variants that show a missing grace period is caught.
    ///
    /// # Safety
    /// Readers may still be reading the values: the caller must keep them allocated.
    #[doc(hidden)]
    pub unsafe fn reclaim_without_grace_period(mut self) -> Vec<(u64, u64, P)> {
        std::mem::take(&mut self.values)
            .into_iter()
            // SAFETY: each came from a box; the caller keeps them allocated for readers.
            .map(|(first, last, value)| (first, last, unsafe { P::from_raw(value) }))
            .collect()
    }
}

impl<P: ValuePointer, R: Rcu> Drop for Displaced<'_, P, R> {
    fn drop(&mut self) {
        if !self.values.is_empty() {
            // The values are unreachable from the tree's current version; each came from a box
            // and is retired exactly once.
            self.tree.retire(
                self.values
                    .drain(..)
                    .map(|(_, _, value)| Retired::new::<P::Target, ReclaimValue<P>>(value)),
            );
        }
    }
}

impl<P: ValuePointer, R: Rcu> fmt::Debug for Displaced<'_, P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|&(first, last, _)| (first, last)))
            .finish()
    }
}

/// The tree's writer lock, held while this lives; every write goes through a `Writer`.
pub struct Writer<'t, P: ValuePointer, R: Rcu> {
    tree: &'t MapleTree<P, R>,
    state: MutexGuard<'t, WriterState<R::Cookie>>,
}

impl<'t, P: ValuePointer, R: Rcu> Writer<'t, P, R> {
    /// The current version; only writers replace it, so the writer needs no guard to walk it.
    fn root(&self) -> NodePtr<P::Target> {
        // Relaxed: the previous writer's store happens-before this load through the mutex.
        NodePtr::from_raw(self.tree.root.load(Ordering::Relaxed))
    }

    /// The slot holding `index` in the current version.
    fn slot_at(&self, index: u64) -> Found<P::Target> {
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
        let mut entries = NewEntries::with_capacity(2 * values.len() + 1);
        let mut start = first;
        for (f, l, value) in values {
            if f > start {
                entries.push(Entry {
                    last: f - 1,
                    value: std::ptr::null_mut(),
                });
            }
            entries.push(Entry {
                last: l,
                value: value.into_raw(),
            });
            start = l.wrapping_add(1);
        }
        if entries.last().is_none_or(|entry| entry.last < last) {
            entries.push(Entry {
                last,
                value: std::ptr::null_mut(),
            });
        }
        // A range sticking out of `[first, last]` is found by the write's own scan of the
        // leaves, before anything changes.
        self.write_entries(first, entries, None)
    }

    /// The first range intersecting `[first, last]`.
    fn first_occupied(&self, first: u64, last: u64) -> Option<(u64, u64, &P::Target)> {
        self.range_from(first).filter(|&(f, _, _)| f <= last)
    }

    /// Replaces `[first, last]` with `value` (null: a gap) and returns what was displaced.
    ///
    /// The leaves intersecting the range (widened over neighbouring gaps when storing a gap,
    /// and by a neighbour when the result would be under-full) are rebuilt from their entries;
    /// then, level by level, the parents of the replaced nodes are rebuilt around the new
    /// nodes, up to a new root, which is published with one store. The replaced nodes are then
    /// marked dead and retired.
    fn write(
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
    fn write_entries(
        &mut self,
        mut first: u64,
        mut new: NewEntries<P::Target>,
        split: Option<SplitFn<P>>,
    ) -> Result<Displaced<'t, P, R>, MapleError> {
        let root = self.root();
        let height = self.state.height;
        let mut last = new[new.len() - 1].last;
        // Keep gaps maximal: a new gap at either end absorbs the gap next to it.
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
        let leaf_level = height - 1;
        let leaves = level_nodes(root, leaf_level, first, last);
        let (mut lo, mut hi) = (leaves[0].1, leaves[leaves.len() - 1].2);
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

        let mut entries: SmallVec<[Entry<P::Target>; 2 * LEAF_SLOTS + 2]> =
            SmallVec::with_capacity(LEAF_SLOTS * leaves.len() + 2);
        let mut added = new.iter().filter(|entry| !entry.value.is_null()).count();
        let mut new_entry = Some(new);
        let mut displaced = Vec::new();
        for &(leaf, min, max) in &leaves {
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
        let len = self.tree.len.load(Ordering::Relaxed) + added - displaced.len();
        self.tree.len.store(len, Ordering::Relaxed);
        let displaced = Displaced::new(self.tree, displaced, !self.state.values_trimmed);

        // The common case: one leaf becomes one leaf with the same interval. Only the leaf is
        // new; it is stored into its parent's slot in place (the kernel's slot store).
        let fits = if height == 1 {
            1..=LEAF_SLOTS
        } else {
            LEAF_MIN..=LEAF_SLOTS
        };
        if leaves.len() == 1 && fits.contains(&entries.len()) {
            let (leaf, gap) = Leaf::build(lo, &entries, &mut self.state.pool);
            self.replace_leaf(leaves[0].0, lo, leaf, gap);
            return Ok(displaced);
        }
        let mut replaced: Vec<NodePtr<P::Target>> = leaves.iter().map(|&(leaf, _, _)| leaf).collect();
        // Beyond the one-leaf case the run may grow past the inline capacity.
        let mut entries = entries.into_vec();

        // Rebalance: an under-full run takes in a neighbouring leaf.
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

        let mut height = height;
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
        Ok(displaced)
    }

    /// Replaces `old`, the leaf covering the interval that starts at `first`, with `new`, which
    /// covers the same interval: one store into the parent's slot (or the root), then the
    /// recorded gaps of the ancestors are brought up to date, from the bottom until one is
    /// unchanged.
    fn replace_leaf(&mut self, old: NodePtr<P::Target>, first: u64, new: NodePtr<P::Target>, gap: u64) {
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
    fn retire(&mut self, replaced: &[NodePtr<P::Target>]) {
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

/// How a write copies a value it cut in two (`None` for writes that never cut a range).
type SplitFn<P> = fn(*mut <P as ValuePointer>::Target) -> *mut <P as ValuePointer>::Target;

/// A clone of the value behind `value` (which the tree owns), for the part of a range a write
/// cut off on the right.
fn clone_raw<P: ValuePointer + Clone>(value: *mut P::Target) -> *mut P::Target {
    // SAFETY: `value` came from `P::into_raw` and the tree still owns it; ManuallyDrop keeps
    // that ownership intact while we clone.
    let original = std::mem::ManuallyDrop::new(unsafe { P::from_raw(value) });
    P::clone(&original).into_raw()
}

/// Viewed as a leaf: a node the writer reached at the leaf level.
fn leaf_of<'a, T>(node: NodePtr<T>) -> &'a Leaf<T> {
    // SAFETY: only called by the writer on nodes of the current version (kept allocated by the
    // writer lock).
    match unsafe { node.view() } {
        View::Leaf(leaf) => leaf,
        View::Internal(_) => unreachable!("every leaf is at the leaf level"),
    }
}

/// Viewed as an internal node: a node the writer reached above the leaf level.
fn internal_of<'a, T>(node: NodePtr<T>) -> &'a Internal<T> {
    // SAFETY: as for `leaf_of`.
    match unsafe { node.view() } {
        View::Internal(internal) => internal,
        View::Leaf(_) => unreachable!("only the leaf level holds leaves"),
    }
}

/// The first non-empty range in `leaves` (the leaves covering `[first, last]`, with their
/// bounds) that sticks out of `[first, last]`, as the error a write refusing to cut it returns.
fn range_sticking_out<T>(leaves: &LevelNodes<T>, first: u64, last: u64) -> Option<MapleError> {
    // Only the entries holding `first` and `last` can stick out: the first leaf's and the
    // last's.
    let holding = |(node, min, max): (NodePtr<T>, u64, u64), index: u64| {
        Found::in_leaf(node, leaf_of(node), (min, max), index)
    };
    let cut = |found: Found<T>| MapleError::CutsRange {
        first: found.first,
        last: found.last,
    };
    let at_first = holding(leaves[0], first);
    if !at_first.value.is_null() && at_first.first < first {
        return Some(cut(at_first));
    }
    let at_last = holding(leaves[leaves.len() - 1], last);
    (!at_last.value.is_null() && at_last.last > last).then(|| cut(at_last))
}

/// Nodes of one level with their bounds, as `level_nodes` finds them: usually one or two, kept
/// inline so that a write allocates nothing for them.
type LevelNodes<T> = SmallVec<[(NodePtr<T>, u64, u64); 4]>;

/// The entries a write stores (usually one to three), inline.
type NewEntries<T> = SmallVec<[Entry<T>; 4]>;

/// The internal nodes from the root down to a leaf, each with the slot taken: as deep as the
/// tree, inline up to eight levels (far more than any address space needs).
type AncestorPath<'a, T> = SmallVec<[(&'a Internal<T>, usize); 8]>;

/// The nodes at depth `level` (root: 0) whose intervals intersect `[lo, hi]`, in order, with
/// their intervals. Writer only.
fn level_nodes<T>(root: NodePtr<T>, level: usize, lo: u64, hi: u64) -> LevelNodes<T> {
    fn collect<T>(
        node: NodePtr<T>,
        depth: usize,
        bounds: (u64, u64),
        target: (usize, u64, u64),
        out: &mut LevelNodes<T>,
    ) {
        let (level, lo, hi) = target;
        if depth == level {
            out.push((node, bounds.0, bounds.1));
            return;
        }
        let internal = internal_of(node);
        for slot in internal.slot_of(lo.max(bounds.0))..=internal.end() {
            let (first, last) = internal.bounds(slot, bounds.0, bounds.1);
            if first > hi {
                break;
            }
            collect(internal.child(slot), depth + 1, (first, last), target, out);
        }
    }
    let mut out = LevelNodes::new();
    collect(root, 0, (0, u64::MAX), (level, lo, hi), &mut out);
    out
}

/// Widens an under-full run of nodes at depth `level`, covering `bounds`, with its neighbours
/// (left first) until `items` holds at least `minimum` slots or the run is the whole level;
/// the absorbed nodes join `replaced`. Returns the run's new bounds.
fn absorb_neighbours<T, I: Slot>(
    root: NodePtr<T>,
    level: usize,
    (mut lo, mut hi): (u64, u64),
    items: &mut Vec<I>,
    minimum: usize,
    replaced: &mut Vec<NodePtr<T>>,
    contents: impl Fn(NodePtr<T>, u64) -> Vec<I>,
) -> (u64, u64) {
    while items.len() < minimum && !(lo == 0 && hi == u64::MAX) {
        let index = if lo > 0 { lo - 1 } else { hi + 1 };
        let (node, min, max) = level_nodes(root, level, index, index)[0];
        let mut absorbed = contents(node, max);
        if lo > 0 {
            absorbed.append(items);
            *items = absorbed;
            lo = min;
        } else {
            items.append(&mut absorbed);
            hi = max;
        }
        replaced.push(node);
        I::coalesce(items);
    }
    (lo, hi)
}

/// A slot being rebuilt: a leaf entry or an internal child.
trait Slot: Sized {
    /// Restores the run's invariants after neighbours were joined (leaves: maximal gaps).
    fn coalesce(items: &mut Vec<Self>);
}

impl<T> Slot for Entry<T> {
    fn coalesce(items: &mut Vec<Self>) {
        coalesce_gaps(items);
    }
}

impl<T> Slot for Child<T> {
    fn coalesce(_: &mut Vec<Self>) {}
}

/// Merges adjacent empty entries (so every gap is one slot).
fn coalesce_gaps<T>(entries: &mut Vec<Entry<T>>) {
    entries.dedup_by(absorb_gap);
}

/// `dedup_by`'s predicate for [`coalesce_gaps`]: whether `next` is a gap following the gap
/// `prev`, which then takes it in.
fn absorb_gap<T>(next: &mut Entry<T>, prev: &mut Entry<T>) -> bool {
    let both_gaps = next.value.is_null() && prev.value.is_null();
    if both_gaps {
        prev.last = next.last;
    }
    both_gaps
}

/// Splits `count` items into the fewest chunks of at most `capacity`, none below `minimum`
/// (unless `count` is). Balanced in general; at the right edge of the index space the chunks are
/// filled from the left, so that appending ranges leaves full nodes behind (as the kernel does).
fn chunk_sizes(count: usize, capacity: usize, minimum: usize, right_edge: bool) -> Vec<usize> {
    let chunks = count.div_ceil(capacity).max(1);
    if right_edge && chunks > 1 {
        let mut sizes = vec![capacity; chunks];
        let last = count - capacity * (chunks - 1);
        let moved = minimum.saturating_sub(last);
        sizes[chunks - 1] = last + moved;
        sizes[chunks - 2] -= moved;
        return sizes;
    }
    (0..chunks)
        .map(|i| count / chunks + usize::from(i < count % chunks))
        .collect()
}

/// New leaves holding `entries`, which cover an interval starting at `first`.
fn build_leaves<T>(first: u64, entries: &[Entry<T>], right_edge: bool, pool: &mut NodePool) -> Vec<Child<T>> {
    let mut start = first;
    let mut rest = entries;
    chunk_sizes(entries.len(), LEAF_SLOTS, LEAF_MIN, right_edge)
        .into_iter()
        .map(|size| {
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let (node, gap) = Leaf::build(start, chunk, pool);
            let last = chunk[chunk.len() - 1].last;
            start = last.wrapping_add(1);
            Child { last, node, gap }
        })
        .collect()
}

/// New internal nodes holding `children`.
fn build_internals<T>(children: &[Child<T>], right_edge: bool, pool: &mut NodePool) -> Vec<Child<T>> {
    let mut rest = children;
    chunk_sizes(children.len(), INTERNAL_SLOTS, INTERNAL_MIN, right_edge)
        .into_iter()
        .map(|size| {
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let (node, gap) = Internal::build(chunk, pool);
            Child {
                last: chunk[chunk.len() - 1].last,
                node,
                gap,
            }
        })
        .collect()
}

impl<P: ValuePointer, R: Rcu> Drop for MapleTree<P, R> {
    fn drop(&mut self) {
        fn free<P: ValuePointer>(node: NodePtr<P::Target>) {
            // SAFETY: the tree is being dropped: no guard or writer exists, and each node and
            // value of the current version is owned by exactly one slot.
            unsafe {
                match node.view() {
                    View::Leaf(leaf) => {
                        for slot in 0..=leaf.end() {
                            let value = leaf.value(slot);
                            if !value.is_null() {
                                drop(P::from_raw(value));
                            }
                        }
                    }
                    View::Internal(internal) => {
                        for slot in 0..=internal.end() {
                            free::<P>(internal.child(slot));
                        }
                    }
                }
                node.free();
            }
        }
        free::<P>(NodePtr::from_raw(self.root.load(Ordering::Relaxed)));
        let state = self.writer.get_mut().unwrap_or_else(|e| e.into_inner());
        for RetiredNode(node) in state.replaced.take_all() {
            // SAFETY: replaced nodes are unreachable and owned by the queue alone.
            unsafe { NodePtr::<P::Target>::from_raw(node).free() };
        }
        let retired = self
            .retired
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take_all();
        // SAFETY: no reader can exist while the tree is dropped (guards borrow it).
        unsafe { Retired::free(retired) };
    }
}

impl<P: ValuePointer<Target: fmt::Debug>, R: Rcu> fmt::Debug for MapleTree<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let guard = self.guard();
        f.debug_map()
            .entries(
                self.iter(&guard)
                    .map(|(first, last, value)| ((first, last), value)),
            )
            .finish()
    }
}
