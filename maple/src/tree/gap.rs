//! Gap search: the lowest or highest free interval of a given size, in O(log n) from the gaps
//! recorded in internal nodes.

use super::*;

/// Which end of `[min, max]` a gap search prefers.
#[derive(Clone, Copy)]
pub(super) enum Direction {
    /// The lowest fitting interval (`mas_empty_area`).
    Lowest,
    /// The highest fitting interval (`mas_empty_area_rev`).
    Highest,
}

/// Checks a gap request and searches the version under `root`.
///
/// # Safety
/// Every node of that version must stay allocated during the call.
pub(super) unsafe fn search_gap<T>(
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
pub(super) unsafe fn gap_in<T>(
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
