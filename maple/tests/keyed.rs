//! Keyed guards: a reader that declares the one index it looks up is not waited for by writers
//! reclaiming values from other ranges, and the tree holds it to its declaration.
#![cfg(not(feature = "shuttle"))]

use maple::MapleTree;
use maple::rcu::Keys;
use maple::testing::finishes_beside_parked_reader;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// `[0, 9]` → 1, `[10, 19]` → 2.
fn two_ranges() -> MapleTree<Box<u64>> {
    let tree = MapleTree::new();
    tree.insert_range(0, 9, Box::new(1)).unwrap();
    tree.insert_range(10, 19, Box::new(2)).unwrap();
    tree
}

#[test]
fn a_keyed_guard_hands_out_only_values_covering_its_key() {
    let tree = two_ranges();
    let guard = tree.guard_at(5);
    assert_eq!(guard.keys(), Keys::one(5));
    assert_eq!(tree.load(5, &guard).copied(), Some(1));
    assert_eq!(tree.load(3, &guard).copied(), Some(1), "same range as the key");
    assert_eq!(tree.load(40, &guard), None, "nothing handed out");
    let other = catch_unwind(AssertUnwindSafe(|| tree.load(15, &guard).copied()));
    assert!(
        other.is_err(),
        "a value not covering the key must not be handed out"
    );
    let ranges: Vec<_> = tree
        .iter(&guard)
        .map(|(first, last, v)| (first, last, *v))
        .collect();
    assert_eq!(ranges, [(0, 9, 1)], "iteration yields only the key's range");
}

#[test]
fn iterating_through_a_keyed_guard_yields_only_ranges_overlapping_its_keys() {
    let tree = two_ranges();
    tree.insert_range(30, 39, Box::new(3)).unwrap();
    let collect =
        |iter: maple::Iter<'_, Box<u64>, _>| iter.map(|(first, _, v)| (first, *v)).collect::<Vec<_>>();
    let guard = tree.guard_within(5, 12);
    assert_eq!(collect(tree.iter(&guard)), [(0, 1), (10, 2)]);
    assert_eq!(collect(tree.iter_from(11, &guard)), [(10, 2)]);
    assert_eq!(collect(tree.iter_rev_from(35, &guard)), [(10, 2), (0, 1)]);
    assert_eq!(tree.load(12, &guard).copied(), Some(2));
    let beyond = catch_unwind(AssertUnwindSafe(|| tree.load(35, &guard).copied()));
    assert!(beyond.is_err(), "a value outside the keys must not be handed out");
    let unkeyed = tree.guard();
    assert_eq!(unkeyed.keys(), Keys::ALL);
    assert_eq!(collect(tree.iter(&unkeyed)), [(0, 1), (10, 2), (30, 3)]);
}

/// Runs `reclaim` on a thread while a reader on another holds a guard keyed at `key` taken
/// before the write; returns whether `reclaim` finished while the guard was still held.
fn reclaim_finishes_under_keyed_reader(
    tree: &MapleTree<Box<u64>>,
    key: u64,
    write: impl FnOnce(&MapleTree<Box<u64>>) + Send,
) -> bool {
    finishes_beside_parked_reader(
        |park| {
            let guard = tree.guard_at(key);
            let value = tree.load(key, &guard).expect("a value at the key");
            let seen = *value;
            park();
            // The value the reader holds is still intact (ASan reports a use after free).
            assert_eq!(*value, seen);
        },
        || write(tree),
    )
}

#[test]
fn reclaim_does_not_wait_for_readers_keyed_elsewhere() {
    let tree = two_ranges();
    let finished = reclaim_finishes_under_keyed_reader(&tree, 15, |tree| {
        let old = tree.store_range(0, 9, Box::new(3)).unwrap().reclaim();
        assert_eq!(old.len(), 1);
    });
    assert!(finished, "a reader keyed at 15 cannot hold the value of [0, 9]");
}

#[test]
fn reclaim_waits_for_readers_keyed_inside() {
    let tree = two_ranges();
    let finished = reclaim_finishes_under_keyed_reader(&tree, 5, |tree| {
        drop(tree.store_range(0, 9, Box::new(3)).unwrap().reclaim());
    });
    assert!(
        !finished,
        "the reader keyed at 5 may hold the old value of [0, 9]"
    );
}

#[test]
fn after_a_value_is_trimmed_reclaim_waits_for_every_reader() {
    // The reader finds the value of [0, 9] at its key; a store over one part leaves the value
    // in the other, whose replacement then displaces it with a range that no longer holds the
    // key. Right part first (reader at 7), then left part first (reader at 2).
    for (key, (cut_first, cut_last), (rest_first, rest_last)) in [(7, (5, 9), (0, 4)), (2, (0, 4), (5, 9))] {
        let tree = two_ranges();
        let finished = reclaim_finishes_under_keyed_reader(&tree, key, move |tree| {
            drop(tree.store_range(cut_first, cut_last, Box::new(3)).unwrap());
            let old = tree
                .store_range(rest_first, rest_last, Box::new(4))
                .unwrap()
                .reclaim();
            assert_eq!(
                old.iter().map(|(f, l, _)| (*f, *l)).collect::<Vec<_>>(),
                [(rest_first, rest_last)]
            );
        });
        assert!(!finished, "the reader keyed at {key} may hold the trimmed value");
    }
}
