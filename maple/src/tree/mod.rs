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

mod build;
mod displaced;
mod gap;
mod guard;
mod iter;
mod writer;

use build::*;
pub use displaced::Displaced;
use gap::*;
pub use guard::Guard;
use guard::*;
pub use iter::Iter;
pub use writer::Writer;

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

    /// A tree holding `ranges` — `(first, last, value)`, in increasing order, none overlapping
    /// the one before — built in one pass (see [`Writer::fill`]).
    pub fn from_sorted(ranges: impl IntoIterator<Item = (u64, u64, P)>) -> Result<Self, MapleError> {
        let tree = Self::new();
        tree.lock().fill(ranges)?;
        Ok(tree)
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
            snapshot: None,
        }
    }

    /// Every range of one version of the tree, in ascending order: the tree as it was when the
    /// iteration began, whatever writers do meanwhile (the guard keeps that version's nodes
    /// and values allocated). A sequence of writes is seen entirely before or entirely after
    /// each of them, never a later write without an earlier one.
    ///
    /// # Panics
    /// If `guard` belongs to another tree's domain.
    pub fn iter_snapshot<'g>(&'g self, guard: &'g Guard<'_, R>) -> Iter<'g, P, R> {
        self.check_guard(guard);
        Iter {
            tree: self,
            next: Some(guard.keys.first()),
            leaf: None,
            bound: None,
            forward: true,
            keys: guard.keys,
            snapshot: Some(self.current_root()),
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
            snapshot: None,
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
    ///
    /// # Examples
    /// ```
    /// let tree: maple::MapleTree<Box<u8>> = maple::MapleTree::new();
    /// tree.insert_range(10, 19, Box::new(1)).unwrap();
    /// tree.insert_range(25, 29, Box::new(2)).unwrap();
    /// assert_eq!(tree.find_gap(0, 99, 8), Ok(Some((0, 7))));
    /// assert_eq!(tree.find_gap(10, 99, 8), Ok(Some((30, 37))), "5 free at 20..=24 is too few");
    /// assert_eq!(tree.find_gap_rev(0, 29, 5), Ok(Some((20, 24))));
    /// assert_eq!(tree.find_gap(10, 29, 6), Ok(None));
    /// ```
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
    ///
    /// # Examples
    /// ```
    /// let tree: maple::MapleTree<Box<&str>> = maple::MapleTree::new();
    /// tree.insert_range(0x1000, 0x1fff, Box::new("a")).unwrap();
    /// assert!(tree.insert_range(0x1fff, 0x2fff, Box::new("b")).is_err(), "0x1fff is taken");
    /// let guard = tree.guard();
    /// assert_eq!(tree.load_range(0x1800, &guard), Some((0x1000, 0x1fff, &"a")));
    /// assert_eq!(tree.load(0x2000, &guard), None);
    /// ```
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
