//! Read-side sections on a tree ([`Guard`], plain or keyed) and the walk from the root to
//! the leaf slot holding an index.

use super::*;

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
    pub(super) _inner: R::Guard<'t>,
    pub(super) domain: &'t R,
    /// The declared keys ([`Keys::ALL`] for an unkeyed guard).
    pub(super) keys: Keys,
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
pub(super) struct Found<T> {
    pub(super) leaf: NodePtr<T>,
    pub(super) leaf_min: u64,
    pub(super) leaf_max: u64,
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) value: *mut T,
}

/// Walks from `root` to the leaf slot holding `index`.
///
/// # Safety
/// `root` and every node below it must stay allocated while the walk runs (a guard is held, or
/// the caller is the writer).
#[inline]
pub(super) unsafe fn walk<T>(mut node: NodePtr<T>, index: u64) -> Found<T> {
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
    pub(super) fn in_leaf(node: NodePtr<T>, leaf: &Leaf<T>, (min, max): (u64, u64), index: u64) -> Self {
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
