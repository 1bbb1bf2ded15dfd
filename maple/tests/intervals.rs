//! The interval tree against a sequential model (a list of intervals): random inserts and
//! removals, and after every step the intervals overlapping random ranges must be the model's,
//! in order of their starts, with `validate()` holding.

#![cfg(not(feature = "shuttle"))]

use maple::intervals::{IntervalError, IntervalTree, MAX_START};
use maple::testing::Rng;

#[test]
fn matches_a_list_of_intervals() {
    for seed in 0..8 {
        let mut rng = Rng::new(seed);
        let tree: IntervalTree<u64> = IntervalTree::new();
        let mut model: Vec<(u64, u64, u64)> = Vec::new();
        for step in 0..1_500u64 {
            if rng.chance(60) || model.is_empty() {
                let start = rng.below(200);
                let end = start + 1 + rng.below(40);
                tree.insert(start, end, step).unwrap();
                model.push((start, end, step));
            } else {
                let (start, _, id) = model.swap_remove(rng.below(model.len() as u64) as usize);
                assert!(tree.remove(start, |i| i.value == id));
            }
            assert_eq!(tree.len(), model.len());
            tree.validate().unwrap();
            let first = rng.below(240);
            let end = first + 1 + rng.below(60);
            let guard = tree.guard();
            let mut found: Vec<_> = tree
                .overlapping(first, end, &guard)
                .map(|i| (i.start, i.end, i.value))
                .collect();
            assert!(found.windows(2).all(|w| w[0].0 <= w[1].0), "sorted by start");
            found.sort();
            let mut expected: Vec<_> = model
                .iter()
                .copied()
                .filter(|&(s, e, _)| s < end && first < e)
                .collect();
            expected.sort();
            assert_eq!(found, expected, "seed {seed} step {step} [{first}, {end})");
        }
    }
}

#[test]
fn bad_intervals_are_refused() {
    let tree: IntervalTree<()> = IntervalTree::new();
    assert_eq!(tree.insert(5, 5, ()), Err(IntervalError::Invalid));
    assert_eq!(tree.insert(6, 5, ()), Err(IntervalError::Invalid));
    assert_eq!(
        tree.insert(MAX_START + 1, u64::MAX, ()),
        Err(IntervalError::Invalid)
    );
    tree.insert(MAX_START, u64::MAX, ()).unwrap();
    assert!(!tree.remove(MAX_START + 1, |_| true));
    assert!(!tree.remove(4, |_| true));
    let guard = tree.guard();
    assert_eq!(tree.overlapping(u64::MAX - 1, u64::MAX, &guard).count(), 1);
}
