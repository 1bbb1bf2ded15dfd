//! Iteration in index order through a guard.

use super::*;

/// An ordered walk over ranges under a guard; see [`MapleTree::iter_from`].
pub struct Iter<'g, P: ValuePointer, R: Rcu> {
    pub(super) tree: &'g MapleTree<P, R>,
    /// The next index to look at; `None` once the end of the index space was passed.
    pub(super) next: Option<u64>,
    /// The leaf the last step used, with its interval; reused until it is dead or left.
    pub(super) leaf: Option<(NodePtr<P::Target>, u64, u64)>,
    /// Last index (forward) or first index (backward) of the range yielded last.
    pub(super) bound: Option<u64>,
    pub(super) forward: bool,
    /// The guard's keys: ranges beyond them end the iteration.
    pub(super) keys: Keys,
    /// The root of the one version a snapshot iteration walks (see
    /// [`MapleTree::iter_snapshot`]); `None` to follow the current version.
    pub(super) snapshot: Option<NodePtr<P::Target>>,
}

impl<'g, P: ValuePointer, R: Rcu> Iterator for Iter<'g, P, R> {
    type Item = (u64, u64, &'g P::Target);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(index) = self.next {
            let snapshot = self.snapshot;
            let reusable = |&(leaf, min, max): &(NodePtr<P::Target>, u64, u64)| {
                // SAFETY: the iterator's guard keeps the cached leaf allocated. A dead leaf
                // belongs to an old version, so the walk restarts from the current root
                // (unless the iteration keeps to that old version).
                min <= index && index <= max && (snapshot.is_some() || !unsafe { leaf.is_dead() })
            };
            let (leaf, min, max) = match self.leaf.filter(reusable) {
                Some(cached) => cached,
                None => {
                    let root = snapshot.unwrap_or_else(|| self.tree.current_root());
                    // SAFETY: the guard keeps the loaded version allocated (a snapshot's too: it
                    // was loaded under the same guard).
                    let found = unsafe { walk(root, index) };
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
