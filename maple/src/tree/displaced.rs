//! [`Displaced`]: the values a write took out of the tree, handed back after a grace period
//! (keyed to their ranges where the tree can prove no reader found them elsewhere).

use super::*;

/// Values a write took out of the tree, with the ranges they covered.
///
/// Readers that started before the write may still be reading them. Dropping this hands them
/// to the RCU domain, which frees them after a grace period; [`Displaced::reclaim`] instead
/// waits for the grace period and gives them back.
#[must_use = "dropping Displaced frees the values after a grace period; use reclaim() to take them back"]
pub struct Displaced<'t, P: ValuePointer, R: Rcu> {
    pub(super) tree: &'t MapleTree<P, R>,
    pub(super) values: Vec<(u64, u64, *mut P::Target)>,
    /// Whether each value's range is every range it ever had (no write trimmed it), so that
    /// only keyed readers inside the ranges could have found the values.
    pub(super) whole_ranges: bool,
}

// SAFETY: Displaced owns the boxed values it holds.
unsafe impl<P: ValuePointer, R: Rcu> Send for Displaced<'_, P, R> {}

impl<'t, P: ValuePointer, R: Rcu> Displaced<'t, P, R> {
    pub(super) fn new(
        tree: &'t MapleTree<P, R>,
        values: Vec<(u64, u64, *mut P::Target)>,
        whole_ranges: bool,
    ) -> Self {
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
