//! The tree's structural check, run by tests after every step.
//!
//! It checks, for the current version: every leaf at depth `height - 1`; node kinds; no dead
//! node reachable; slot counts within capacity and above the minimum (the root excepted, an
//! internal root having at least two children); pivots strictly increasing inside the node's
//! interval and `u64::MAX` past the last used slot; children covering their parent's interval
//! without holes; every recorded gap equal to the largest free interval under that child (and
//! zero in unused slots); no two adjacent gaps in or across leaves; the index space covered
//! exactly once; the number of values equal to `len`.
//!
//! Nodes keep no parent pointers: writers keep their path in the walk, and a node's interval is
//! derived from its parent's pivots, so the parent/child agreement checked here is the interval
//! each child is reached with.

use crate::node::{INTERNAL_MIN, INTERNAL_SLOTS, LEAF_MIN, LEAF_SLOTS, NodePtr, View, span};

struct Walk {
    height: usize,
    values: usize,
    /// First index the next leaf must start at; `None` once `u64::MAX` was covered.
    next_first: Option<u64>,
    /// Whether the last slot of the previous leaf was a gap.
    previous_gap: bool,
}

pub(crate) fn validate<T>(root: NodePtr<T>, height: usize, len: usize) -> Result<(), String> {
    let mut walk = Walk {
        height,
        values: 0,
        next_first: Some(0),
        previous_gap: false,
    };
    check(root, 0, 0, u64::MAX, &mut walk)?;
    if walk.next_first.is_some() {
        return Err(format!(
            "leaves end before u64::MAX (next first {:?})",
            walk.next_first
        ));
    }
    if walk.values != len {
        return Err(format!(
            "len() is {len} but the tree holds {} values",
            walk.values
        ));
    }
    Ok(())
}

fn check_pivots(pivots: &[u64], end: usize, min: u64, max: u64, at: &str) -> Result<(), String> {
    let used = &pivots[..end];
    let mut floor = min;
    for (i, &pivot) in used.iter().enumerate() {
        if pivot < floor || pivot >= max {
            return Err(format!(
                "{at}: pivot {i} = {pivot:#x} outside [{floor:#x}, {max:#x})"
            ));
        }
        floor = pivot + 1;
    }
    if let Some(i) = pivots[end..].iter().position(|&p| p != u64::MAX) {
        return Err(format!(
            "{at}: unused pivot {} is {:#x}, not u64::MAX",
            end + i,
            pivots[end + i]
        ));
    }
    Ok(())
}

/// Checks the subtree and returns its largest gap.
fn check<T>(node: NodePtr<T>, depth: usize, min: u64, max: u64, walk: &mut Walk) -> Result<u64, String> {
    let at = format!("node at depth {depth} covering [{min:#x}, {max:#x}]");
    // SAFETY: validate runs under the writer lock, which keeps the current version allocated.
    if unsafe { node.is_dead() } {
        return Err(format!("{at}: a dead node is reachable"));
    }
    let is_root = depth == 0;
    // SAFETY: as above.
    match unsafe { node.view() } {
        View::Leaf(leaf) => {
            if depth + 1 != walk.height {
                return Err(format!("{at}: leaf at depth {depth}, height is {}", walk.height));
            }
            let slots = leaf.end() + 1;
            if slots > LEAF_SLOTS || (!is_root && slots < LEAF_MIN) {
                return Err(format!("{at}: leaf uses {slots} slots"));
            }
            check_pivots(leaf.pivots(), leaf.end(), min, max, &at)?;
            if walk.next_first != Some(min) {
                return Err(format!("{at}: expected to start at {:?}", walk.next_first));
            }
            let mut gap = 0;
            for slot in 0..slots {
                let (first, last) = leaf.bounds(slot, min, max);
                let is_gap = leaf.value(slot).is_null();
                if is_gap && walk.previous_gap {
                    return Err(format!(
                        "{at}: adjacent gaps at slot {slot} ([{first:#x}, {last:#x}])"
                    ));
                }
                if is_gap {
                    gap = gap.max(span(first, last));
                } else {
                    walk.values += 1;
                }
                walk.previous_gap = is_gap;
            }
            walk.next_first = max.checked_add(1);
            Ok(gap)
        }
        View::Internal(internal) => {
            if depth + 1 >= walk.height {
                return Err(format!("{at}: internal node at the leaf level"));
            }
            let children = internal.end() + 1;
            let fewest = if is_root { 2 } else { INTERNAL_MIN };
            if children > INTERNAL_SLOTS || children < fewest {
                return Err(format!("{at}: internal node has {children} children"));
            }
            check_pivots(internal.pivots(), internal.end(), min, max, &at)?;
            if let Some(i) = internal.gaps().skip(children).position(|g| g != 0) {
                return Err(format!("{at}: unused gap slot {} is not zero", children + i));
            }
            let mut gap = 0;
            for slot in 0..children {
                let (first, last) = internal.bounds(slot, min, max);
                let real = check(internal.child(slot), depth + 1, first, last, walk)?;
                if real != internal.gap(slot) {
                    return Err(format!(
                        "{at}: child {slot} records gap {} but has {real}",
                        internal.gap(slot)
                    ));
                }
                gap = gap.max(real);
            }
            Ok(gap)
        }
    }
}
