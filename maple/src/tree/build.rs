//! The writer's rebuilding helpers: the nodes a store reaches on each level, merging the
//! new entries with their neighbours, and building replacement leaves and internal nodes.

use super::*;

/// How a write copies a value it cut in two (`None` for writes that never cut a range).
pub(super) type SplitFn<P> = fn(*mut <P as ValuePointer>::Target) -> *mut <P as ValuePointer>::Target;

/// A clone of the value behind `value` (which the tree owns), for the part of a range a write
/// cut off on the right.
pub(super) fn clone_raw<P: ValuePointer + Clone>(value: *mut P::Target) -> *mut P::Target {
    // SAFETY: `value` came from `P::into_raw` and the tree still owns it; ManuallyDrop keeps
    // that ownership intact while we clone.
    let original = std::mem::ManuallyDrop::new(unsafe { P::from_raw(value) });
    P::clone(&original).into_raw()
}

/// Viewed as a leaf: a node the writer reached at the leaf level.
pub(super) fn leaf_of<'a, T>(node: NodePtr<T>) -> &'a Leaf<T> {
    // SAFETY: only called by the writer on nodes of the current version (kept allocated by the
    // writer lock).
    match unsafe { node.view() } {
        View::Leaf(leaf) => leaf,
        View::Internal(_) => unreachable!("every leaf is at the leaf level"),
    }
}

/// Viewed as an internal node: a node the writer reached above the leaf level.
pub(super) fn internal_of<'a, T>(node: NodePtr<T>) -> &'a Internal<T> {
    // SAFETY: as for `leaf_of`.
    match unsafe { node.view() } {
        View::Internal(internal) => internal,
        View::Leaf(_) => unreachable!("only the leaf level holds leaves"),
    }
}

/// The first non-empty range in `leaves` (the leaves covering `[first, last]`, with their
/// bounds) that sticks out of `[first, last]`, as the error a write refusing to cut it returns.
pub(super) fn range_sticking_out<T>(leaves: &LevelNodes<T>, first: u64, last: u64) -> Option<MapleError> {
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
pub(super) type LevelNodes<T> = SmallVec<[(NodePtr<T>, u64, u64); 4]>;

/// The entries a write stores (usually one to three), inline.
pub(super) type NewEntries<T> = SmallVec<[Entry<T>; 4]>;

/// The internal nodes from the root down to a leaf, each with the slot taken: as deep as the
/// tree, inline up to eight levels (far more than any address space needs).
pub(super) type AncestorPath<'a, T> = SmallVec<[(&'a Internal<T>, usize); 8]>;

/// The nodes at depth `level` (root: 0) whose intervals intersect `[lo, hi]`, in order, with
/// their intervals. Writer only.
pub(super) fn level_nodes<T>(root: NodePtr<T>, level: usize, lo: u64, hi: u64) -> LevelNodes<T> {
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
pub(super) fn absorb_neighbours<T, I: Slot>(
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
pub(super) trait Slot: Sized {
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
pub(super) fn coalesce_gaps<T>(entries: &mut Vec<Entry<T>>) {
    entries.dedup_by(absorb_gap);
}

/// `dedup_by`'s predicate for [`coalesce_gaps`]: whether `next` is a gap following the gap
/// `prev`, which then takes it in.
pub(super) fn absorb_gap<T>(next: &mut Entry<T>, prev: &mut Entry<T>) -> bool {
    let both_gaps = next.value.is_null() && prev.value.is_null();
    if both_gaps {
        prev.last = next.last;
    }
    both_gaps
}

/// Splits `count` items into the fewest chunks of at most `capacity`, none below `minimum`
/// (unless `count` is). Balanced in general; at the right edge of the index space the chunks are
/// filled from the left, so that appending ranges leaves full nodes behind (as the kernel does).
pub(super) fn chunk_sizes(count: usize, capacity: usize, minimum: usize, right_edge: bool) -> Vec<usize> {
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

/// The entries laying `values` — sorted, disjoint `(first, last, value)` ranges inside
/// `[first, last]`, checked by the caller — over `[first, last]`: each value (handed over as a
/// raw pointer) with the gaps between them and up to `last`.
pub(super) fn entries_with_gaps<P: ValuePointer>(
    first: u64,
    last: u64,
    values: impl IntoIterator<Item = (u64, u64, P)>,
) -> NewEntries<P::Target> {
    let mut entries = NewEntries::new();
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
    entries
}

/// New leaves holding `entries`, which cover an interval starting at `first`.
pub(super) fn build_leaves<T>(
    first: u64,
    entries: &[Entry<T>],
    right_edge: bool,
    pool: &mut NodePool,
) -> Vec<Child<T>> {
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
pub(super) fn build_internals<T>(
    children: &[Child<T>],
    right_edge: bool,
    pool: &mut NodePool,
) -> Vec<Child<T>> {
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
