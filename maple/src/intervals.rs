//! [`IntervalTree`]: intervals that may overlap, readable without locks — the structure under
//! a file's reverse map (Linux's `i_mmap`), where many mappings cover the same page offsets.
//!
//! It is a [`MapleTree`] whose keys are not the intervals themselves (a maple tree holds
//! disjoint ranges) but one index per interval: the interval's start in the high
//! [`START_BITS`] bits and a slot number in the low bits, the lowest slot free at that start
//! (found with the tree's gap search). Iterating the tree in key order therefore yields the
//! intervals sorted by start, and every guarantee of the tree carries over.
//!
//! Invariants:
//! - Every stored interval is immutable and whole: it is built before it is stored and freed
//!   only a grace period after it was removed, so a walker under a guard sees each interval
//!   as it was inserted, never half-changed.
//! - The key of an interval holds its start: `key >> SLOT_BITS == start`. A walk for `[first,
//!   end)` stops at the first key whose start is `end` or more.
//! - Readers never lock; writers are serialized by the tree's writer lock. A walk reads one
//!   version of the tree (the root it loaded first), so a writer that inserts the new
//!   intervals of a change before removing the old ones is never seen half-way.
//!
//! A walk costs O(log n + the intervals starting before the walk's end): the tree keeps no
//! maximum end per subtree, so intervals that start before the range are visited even when
//! they end before it. A file mapped at a handful of places per address space is well served;
//! see docs/files.md for the cost at many mappers.

use crate::error::MapleError;
use crate::rcu::{DefaultRcu, Rcu};
use crate::tree::{Displaced, Guard, MapleTree};

/// Bits of a key holding the interval's start: starts lie in `[0, 2^40)`.
pub const START_BITS: u32 = 40;
/// Bits of a key holding the slot among intervals of one start: 2^24 intervals may share one.
const SLOT_BITS: u32 = 64 - START_BITS;
/// The largest start an interval may have.
pub const MAX_START: u64 = (1 << START_BITS) - 1;

/// One stored interval: `[start, end)` and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval<T> {
    /// First index covered.
    pub start: u64,
    /// One past the last index covered.
    pub end: u64,
    /// What the interval carries.
    pub value: T,
}

impl<T> Interval<T> {
    /// Whether the interval shares an index with `[first, end)`.
    pub fn overlaps(&self, first: u64, end: u64) -> bool {
        self.start < end && first < self.end
    }
}

/// Why an interval could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalError {
    /// `start >= end`, or `start` above [`MAX_START`].
    Invalid,
    /// 2^24 intervals already start at this index.
    Full,
}

/// Intervals over `u64` indices that may overlap, each with a value; readers walk them under
/// a guard without locking (see the module documentation).
///
/// ```
/// use maple::intervals::IntervalTree;
///
/// let tree: IntervalTree<&str> = IntervalTree::new();
/// tree.insert(0, 10, "a").unwrap();
/// tree.insert(5, 20, "b").unwrap();
/// tree.insert(5, 6, "c").unwrap();
/// let guard = tree.guard();
/// let found: Vec<_> = tree.overlapping(8, 12, &guard).map(|i| i.value).collect();
/// assert_eq!(found, ["a", "b"]);
/// drop(guard);
/// assert!(tree.remove(5, |i| i.value == "b"));
/// assert_eq!(tree.len(), 2);
/// ```
pub struct IntervalTree<T: Send + Sync + 'static, R: Rcu = DefaultRcu> {
    tree: MapleTree<Box<Interval<T>>, R>,
}

impl<T: Send + Sync + 'static, R: Rcu> Default for IntervalTree<T, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + Sync + 'static, R: Rcu> std::fmt::Debug for IntervalTree<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalTree")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static, R: Rcu> IntervalTree<T, R> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            tree: MapleTree::new(),
        }
    }

    /// The RCU domain readers of the tree use; layers above may put their own read-side
    /// sections in it (a file's page-cache lookups and its reverse-map walks share one).
    pub fn rcu(&self) -> &R {
        self.tree.rcu()
    }

    /// Enters a read-side section.
    pub fn guard(&self) -> Guard<'_, R> {
        self.tree.guard()
    }

    /// Number of intervals stored.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether none is stored.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Stores `[start, end)` with `value`; intervals already stored may overlap it.
    pub fn insert(&self, start: u64, end: u64, value: T) -> Result<(), IntervalError> {
        if start >= end || start > MAX_START {
            return Err(IntervalError::Invalid);
        }
        let interval = Box::new(Interval { start, end, value });
        let mut writer = self.tree.lock();
        let first = start << SLOT_BITS;
        let last = first | ((1 << SLOT_BITS) - 1);
        let key = match writer.find_gap(first, last, 1) {
            Ok(Some((key, _))) => key,
            Ok(None) => return Err(IntervalError::Full),
            Err(error) => unreachable!("a one-index search in a valid range: {error}"),
        };
        writer
            .insert_range(key, key, interval)
            .unwrap_or_else(|error: MapleError| unreachable!("the gap search found {key:#x} free: {error}"));
        Ok(())
    }

    /// Removes the first interval starting at `start` for which `matches` holds; it is freed
    /// after a grace period (walkers that found it keep reading it until then). Returns whether
    /// one was found.
    pub fn remove(&self, start: u64, matches: impl Fn(&Interval<T>) -> bool) -> bool {
        if start > MAX_START {
            return false;
        }
        let mut writer = self.tree.lock();
        let mut key = start << SLOT_BITS;
        while let Some((first, _, interval)) = writer.range_from(key) {
            if first >> SLOT_BITS != start {
                return false;
            }
            if matches(interval) {
                let displaced: Displaced<'_, _, R> = writer.erase(first);
                drop(displaced);
                return true;
            }
            let Some(next) = first.checked_add(1) else {
                return false;
            };
            key = next;
        }
        false
    }

    /// The intervals sharing an index with `[first, end)`, in order of their starts, as they
    /// were when the walk began (one version of the tree: a change made of an insert then a
    /// removal is seen before, between or after them, never the removal alone), each whole.
    pub fn overlapping<'g>(
        &'g self,
        first: u64,
        end: u64,
        guard: &'g Guard<'_, R>,
    ) -> impl Iterator<Item = &'g Interval<T>> + 'g {
        self.tree
            .iter_snapshot(guard)
            .map(|(_, _, interval)| interval)
            .take_while(move |interval| interval.start < end)
            .filter(move |interval| interval.overlaps(first, end))
    }

    /// Checks the tree's invariants and that every key holds its interval's start (debug and
    /// tests).
    pub fn validate(&self) -> Result<(), String> {
        self.tree.validate()?;
        let guard = self.tree.guard();
        for (key, last, interval) in self.tree.iter(&guard) {
            if key != last || key >> SLOT_BITS != interval.start || interval.start >= interval.end {
                return Err(format!(
                    "key {key:#x}..={last:#x} holds [{:#x}, {:#x})",
                    interval.start, interval.end
                ));
            }
        }
        Ok(())
    }
}
