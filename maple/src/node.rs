//! Node layout of the maple tree and the raw accessors the readers and the writer share.
//!
//! Invariants (checked by `MapleTree::validate`):
//! - A node covers an index interval `[min, max]` that is not stored in it: the walk from the
//!   root derives it from the parent's pivots (the root covers `[0, u64::MAX]`).
//! - Slots `0..=end` are used. Slot `i` covers `(pivot[i-1], pivot[i]]`, where the first slot
//!   starts at `min` and slot `end` ends at `max`. `pivot[0..end]` is strictly increasing inside
//!   `[min, max)`; every pivot from `end` on is `u64::MAX`, so the slot holding an index is the
//!   number of pivots below it (a branch-free count over the whole array).
//! - A published leaf is never written again, except for its `dead` flag, set after its
//!   replacement has been published. A published internal node changes only in place of one
//!   child pointer (when a leaf is replaced by one with the same interval) and in its recorded
//!   gaps; pivots never change. Readers may still walk a dead node; it stays allocated until a
//!   grace period has passed.
//! - Leaf slots hold a value pointer (a `ValuePointer`, such as a `Box<T>` or an `Arc<T>`,
//!   owned by the tree) or null, a gap. Internal slots
//!   hold child pointers, and `gaps[i]` is the size of the largest gap under child `i`.
//!
//! Orderings: a child pointer stored in place is a Release store, and every child pointer load
//! is Acquire, pairing with it (the new leaf is complete before it is reachable). Gaps are
//! Relaxed: they are exact for the writer (which wrote them) and advisory for readers.

use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::ptr;

/// Slots in a leaf (as the kernel's `maple_range_64`).
pub(crate) const LEAF_SLOTS: usize = 16;
/// Slots in an internal node (as the kernel's `maple_arange_64`).
pub(crate) const INTERNAL_SLOTS: usize = 10;
/// Fewest slots a leaf other than the root may use.
pub(crate) const LEAF_MIN: usize = 6;
/// Fewest children an internal node other than the root may have; an internal root has two.
pub(crate) const INTERNAL_MIN: usize = 3;

pub(crate) const KIND_LEAF: u8 = 1;
pub(crate) const KIND_INTERNAL: u8 = 2;
/// Written over a node's kind when it is reclaimed under shuttle (the node is then quarantined,
/// not freed), so a reader that reaches a reclaimed node detects it.
#[cfg(feature = "shuttle")]
const KIND_POISONED: u8 = 0xee;

/// The first field of every node.
#[repr(C)]
pub(crate) struct Header {
    kind: u8,
    /// Index of the last used slot.
    end: u8,
    /// Set (Release) after the node's replacement is published; read (Acquire) by iterators
    /// that keep a leaf between steps, pairing with that store.
    dead: AtomicBool,
}

/// A leaf: 8 + 15 * 8 + 16 * 8 = 256 bytes on x86-64, four cache lines.
#[repr(C, align(64))]
pub(crate) struct Leaf<T> {
    header: Header,
    pivots: [u64; LEAF_SLOTS - 1],
    slots: [*mut T; LEAF_SLOTS],
}

/// An internal node: 8 + 9 * 8 + 10 * 8 + 10 * 8 = 240 bytes, padded to 256.
#[repr(C, align(64))]
pub(crate) struct Internal<T> {
    header: Header,
    pivots: [u64; INTERNAL_SLOTS - 1],
    gaps: [AtomicU64; INTERNAL_SLOTS],
    slots: [AtomicPtr<Header>; INTERNAL_SLOTS],
    _children: std::marker::PhantomData<NodePtr<T>>,
}

/// A pointer to a node of either kind.
pub(crate) struct NodePtr<T>(*mut Header, std::marker::PhantomData<*mut T>);

impl<T> Clone for NodePtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for NodePtr<T> {}
impl<T> PartialEq for NodePtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// A node seen through a pointer: which kind it is.
pub(crate) enum View<'a, T> {
    Leaf(&'a Leaf<T>),
    Internal(&'a Internal<T>),
}

/// One leaf slot while a writer rebuilds leaves: the slot's last index and its value (or null).
pub(crate) struct Entry<T> {
    pub last: u64,
    pub value: *mut T,
}

/// One internal slot while a writer rebuilds internal nodes.
pub(crate) struct Child<T> {
    pub last: u64,
    pub node: NodePtr<T>,
    pub gap: u64,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Entry<T> {}

/// Number of indices in `[first, last]`, saturating at `u64::MAX` for the whole index space.
pub(crate) fn span(first: u64, last: u64) -> u64 {
    (last - first).saturating_add(1)
}

/// Slot index of `index` among `pivots` (every pivot past the last used slot is `u64::MAX`).
#[inline(always)]
fn slot_of(pivots: &[u64], index: u64) -> usize {
    pivots
        .iter()
        .position(|&pivot| pivot >= index)
        .unwrap_or(pivots.len())
}

/// Moves a built node into pool memory.
fn place<N>(pool: &mut NodePool, node: N) -> *mut Header {
    const { assert!(size_of::<N>() <= NODE_LAYOUT.size() && align_of::<N>() <= NODE_LAYOUT.align()) };
    let memory = pool.take().cast::<N>();
    // SAFETY: the memory is large and aligned enough for the node (checked above) and unused.
    unsafe { memory.write(node) };
    memory.cast()
}

/// Bounds of slot `i` of a node covering `[min, max]` whose last used slot is `end`.
#[inline(always)]
fn slot_bounds(pivots: &[u64], end: usize, i: usize, min: u64, max: u64) -> (u64, u64) {
    let first = if i == 0 { min } else { pivots[i - 1] + 1 };
    let last = if i == end { max } else { pivots[i] };
    (first, last)
}

impl<T> NodePtr<T> {
    pub(crate) fn as_raw(self) -> *mut Header {
        self.0
    }

    pub(crate) fn from_raw(raw: *mut Header) -> Self {
        Self(raw, std::marker::PhantomData)
    }

    /// The node's contents.
    ///
    /// # Safety
    /// The pointer must be non-null and the node allocated for `'a` (reached under a guard
    /// that lives for `'a`, or owned by the writer).
    #[inline(always)]
    pub(crate) unsafe fn view<'a>(self) -> View<'a, T> {
        // SAFETY: the caller guarantees the node is allocated; every node starts with a Header.
        let kind = unsafe { (*self.0).kind };
        match kind {
            // SAFETY: the kind says which layout the allocation has.
            KIND_LEAF => View::Leaf(unsafe { &*self.0.cast::<Leaf<T>>() }),
            // SAFETY: as above.
            KIND_INTERNAL => View::Internal(unsafe { &*self.0.cast::<Internal<T>>() }),
            _ => panic!("maple: a reader reached a freed node (kind {kind:#x}): a grace period was skipped"),
        }
    }

    /// Whether a writer has replaced this node.
    ///
    /// # Safety
    /// As for [`NodePtr::view`].
    pub(crate) unsafe fn is_dead(self) -> bool {
        // SAFETY: the caller guarantees the node is allocated.
        unsafe { (*self.0).dead.load(Ordering::Acquire) }
    }

    /// Marks the node replaced.
    ///
    /// # Safety
    /// As for [`NodePtr::view`]; the replacement must already be published.
    pub(crate) unsafe fn mark_dead(self) {
        // SAFETY: the caller guarantees the node is allocated. Release pairs with `is_dead`.
        unsafe { (*self.0).dead.store(true, Ordering::Release) }
    }

    /// Frees the node itself (not its values or children).
    ///
    /// # Safety
    /// No reader may reach the node any more and no one else may free it.
    pub(crate) unsafe fn free(self) {
        // SAFETY: every node is allocated with NODE_LAYOUT (see `NodePool::take`), and node
        // types have no destructor; the caller guarantees exclusive ownership.
        unsafe { std::alloc::dealloc(self.0.cast(), NODE_LAYOUT) }
    }
}

/// The allocation every node uses, so that a freed node of either kind can be reused for the
/// other: on std both kinds are 256 bytes aligned to 64 (under shuttle its atomics are larger,
/// and the larger kind decides).
const NODE_LAYOUT: std::alloc::Layout = {
    let (leaf, internal) = (
        std::alloc::Layout::new::<Leaf<()>>(),
        std::alloc::Layout::new::<Internal<()>>(),
    );
    let size = if leaf.size() > internal.size() {
        leaf.size()
    } else {
        internal.size()
    };
    let align = if leaf.align() > internal.align() {
        leaf.align()
    } else {
        internal.align()
    };
    match std::alloc::Layout::from_size_align(size, align) {
        Ok(layout) => layout,
        Err(_) => panic!("node layout"),
    }
};
#[cfg(not(feature = "shuttle"))]
const _: () = assert!(NODE_LAYOUT.size() == 256 && NODE_LAYOUT.align() == 64);

/// Node memory for one tree's writers: nodes whose grace period has passed come back here and
/// are reused by later writes, saving an aligned allocation and a free per replaced node.
#[derive(Default)]
pub(crate) struct NodePool {
    spare: Vec<*mut Header>,
}

// SAFETY: the pool owns the spare allocations, which hold no data.
unsafe impl Send for NodePool {}

/// Spare nodes kept for reuse; beyond this they are freed.
#[cfg(not(feature = "shuttle"))]
const POOL_LIMIT: usize = 256;

impl NodePool {
    /// Memory for one node.
    fn take(&mut self) -> *mut u8 {
        if let Some(node) = self.spare.pop() {
            return node.cast();
        }
        // SAFETY: NODE_LAYOUT has a non-zero size.
        let memory = unsafe { std::alloc::alloc(NODE_LAYOUT) };
        if memory.is_null() {
            std::alloc::handle_alloc_error(NODE_LAYOUT);
        }
        memory
    }

    /// Takes back a node nobody can reach any more. Under shuttle the node is poisoned and
    /// quarantined instead (never reused or freed), so that a reader reaching it fails loudly.
    ///
    /// # Safety
    /// No reader may reach the node and no one else may free it.
    pub(crate) unsafe fn recycle<T>(&mut self, node: NodePtr<T>) {
        #[cfg(feature = "shuttle")]
        // SAFETY: the node is still allocated; only its kind byte is written.
        unsafe {
            (*node.0).kind = KIND_POISONED;
        }
        #[cfg(not(feature = "shuttle"))]
        if self.spare.len() < POOL_LIMIT {
            self.spare.push(node.0);
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { node.free() };
        }
    }
}

impl Drop for NodePool {
    fn drop(&mut self) {
        for &node in &self.spare {
            // SAFETY: spare nodes are owned by the pool alone.
            unsafe { NodePtr::<()>::from_raw(node).free() };
        }
    }
}

impl<T> Leaf<T> {
    /// Builds a leaf from 1..=16 entries; returns it with its largest gap.
    pub(crate) fn build(first: u64, entries: &[Entry<T>], pool: &mut NodePool) -> (NodePtr<T>, u64) {
        debug_assert!(!entries.is_empty() && entries.len() <= LEAF_SLOTS);
        let mut leaf = Leaf {
            header: Header::new(KIND_LEAF, entries.len()),
            pivots: [u64::MAX; LEAF_SLOTS - 1],
            slots: [ptr::null_mut(); LEAF_SLOTS],
        };
        let mut gap = 0;
        let mut start = first;
        for (i, entry) in entries.iter().enumerate() {
            if i + 1 < entries.len() {
                leaf.pivots[i] = entry.last;
            }
            leaf.slots[i] = entry.value;
            if entry.value.is_null() {
                gap = gap.max(span(start, entry.last));
            }
            start = entry.last.wrapping_add(1);
        }
        (NodePtr::from_raw(place(pool, leaf)), gap)
    }

    pub(crate) fn end(&self) -> usize {
        self.header.end()
    }

    /// The slot holding `index` (which must lie in the leaf's interval).
    #[inline(always)]
    pub(crate) fn slot_of(&self, index: u64) -> usize {
        slot_of(&self.pivots, index)
    }

    /// Bounds of slot `i`, given the leaf's interval.
    #[inline(always)]
    pub(crate) fn bounds(&self, i: usize, min: u64, max: u64) -> (u64, u64) {
        slot_bounds(&self.pivots, self.end(), i, min, max)
    }

    #[inline(always)]
    pub(crate) fn value(&self, i: usize) -> *mut T {
        self.slots[i]
    }

    pub(crate) fn pivots(&self) -> &[u64] {
        &self.pivots
    }

    /// The leaf's slots as entries.
    pub(crate) fn entries(&self, max: u64) -> impl Iterator<Item = Entry<T>> + '_ {
        (0..=self.end()).map(move |i| Entry {
            last: if i == self.end() { max } else { self.pivots[i] },
            value: self.slots[i],
        })
    }
}

impl<T> Internal<T> {
    /// Builds an internal node from 1..=10 children; returns it with its largest gap.
    pub(crate) fn build(children: &[Child<T>], pool: &mut NodePool) -> (NodePtr<T>, u64) {
        debug_assert!(!children.is_empty() && children.len() <= INTERNAL_SLOTS);
        let mut node = Internal::<T> {
            header: Header::new(KIND_INTERNAL, children.len()),
            pivots: [u64::MAX; INTERNAL_SLOTS - 1],
            gaps: std::array::from_fn(|i| AtomicU64::new(children.get(i).map_or(0, |c| c.gap))),
            slots: std::array::from_fn(|i| {
                AtomicPtr::new(children.get(i).map_or(ptr::null_mut(), |c| c.node.as_raw()))
            }),
            _children: std::marker::PhantomData,
        };
        for (i, child) in children.iter().enumerate().take(children.len() - 1) {
            node.pivots[i] = child.last;
        }
        let gap = children.iter().map(|c| c.gap).max().unwrap_or(0);
        (NodePtr::from_raw(place(pool, node)), gap)
    }

    pub(crate) fn end(&self) -> usize {
        self.header.end()
    }

    #[inline(always)]
    pub(crate) fn slot_of(&self, index: u64) -> usize {
        slot_of(&self.pivots, index)
    }

    #[inline(always)]
    pub(crate) fn bounds(&self, i: usize, min: u64, max: u64) -> (u64, u64) {
        slot_bounds(&self.pivots, self.end(), i, min, max)
    }

    #[inline(always)]
    pub(crate) fn child(&self, i: usize) -> NodePtr<T> {
        // Acquire pairs with the Release store in `set_child`.
        NodePtr::from_raw(self.slots[i].load(Ordering::Acquire))
    }

    /// Replaces child `i` in place with a node covering the same interval (writer only).
    pub(crate) fn set_child(&self, i: usize, child: NodePtr<T>) {
        // Release pairs with the Acquire load in `child`: the child is complete first.
        self.slots[i].store(child.as_raw(), Ordering::Release);
    }

    pub(crate) fn gap(&self, i: usize) -> u64 {
        self.gaps[i].load(Ordering::Relaxed)
    }

    /// Records a new largest gap under child `i` (writer only).
    pub(crate) fn set_gap(&self, i: usize, gap: u64) {
        self.gaps[i].store(gap, Ordering::Relaxed);
    }

    /// The largest gap under this node.
    pub(crate) fn max_gap(&self) -> u64 {
        (0..=self.end()).map(|i| self.gap(i)).max().unwrap_or(0)
    }

    pub(crate) fn pivots(&self) -> &[u64] {
        &self.pivots
    }

    pub(crate) fn gaps(&self) -> impl Iterator<Item = u64> + '_ {
        self.gaps.iter().map(|gap| gap.load(Ordering::Relaxed))
    }

    /// The node's slots as children.
    pub(crate) fn children(&self, max: u64) -> impl Iterator<Item = Child<T>> + '_ {
        (0..=self.end()).map(move |i| Child {
            last: if i == self.end() { max } else { self.pivots[i] },
            node: self.child(i),
            gap: self.gap(i),
        })
    }
}

impl Header {
    fn end(&self) -> usize {
        usize::from(self.end)
    }

    fn new(kind: u8, slots: usize) -> Self {
        Self {
            kind,
            end: u8::try_from(slots - 1).expect("node slot counts fit a byte"),
            dead: AtomicBool::new(false),
        }
    }
}

/// Reclaims a displaced value after its grace period. Under shuttle the value is dropped in
/// place but its memory is quarantined, so a test value that poisons itself on drop is seen by a
/// reader that reaches it too late.
pub(crate) struct ReclaimValue<P>(std::marker::PhantomData<P>);

impl<P: crate::ValuePointer> crate::rcu::Reclaim<P::Target> for ReclaimValue<P> {
    unsafe fn reclaim(value: *mut P::Target) {
        #[cfg(not(feature = "shuttle"))]
        // SAFETY: the value came from `P::into_raw`, is reclaimed once, after its grace period.
        drop(unsafe { P::from_raw(value) });
        #[cfg(feature = "shuttle")]
        // SAFETY: as above; the allocation is intentionally kept (quarantine).
        unsafe {
            P::drop_in_quarantine(value)
        };
    }
}
