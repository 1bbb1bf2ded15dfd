//! Differential tests: random operation sequences applied to the tree and to a BTreeMap model,
//! with `validate()` and a full comparison after every step.
#![cfg(not(feature = "shuttle"))]

#[path = "support/model.rs"]
mod model;

use maple::testing::Rng;
use maple::{MapleError, MapleTree};
use model::Model;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Store(u64, u64),
    Insert(u64, u64),
    Erase(u64),
    EraseRange(u64, u64),
    Load(u64),
    Gap(u64, u64, u64),
    GapRev(u64, u64, u64),
    IterFrom(u64),
    IterRevFrom(u64),
    /// Replace `[first, last]` with ranges of the given lengths, separated by the given gaps.
    ReplaceExact(u64, u64, Vec<(u64, u64)>),
}

/// Applies `op` to both and checks that they agree. `value` tags stored values.
fn apply(tree: &MapleTree<Box<u64>>, model: &mut Model, op: &Op, value: u64) {
    match *op {
        Op::Store(first, last) => {
            let result = tree.store_range(first, last, Box::new(value));
            if first > last {
                assert_eq!(result.err(), Some(MapleError::InvalidRange { first, last }));
                return;
            }
            let displaced: Vec<_> = result.unwrap().iter().map(|(f, l, v)| (f, l, *v)).collect();
            assert_eq!(displaced, model.store_range(first, last, value), "{op:?}");
        }
        Op::Insert(first, last) => {
            let result = tree.insert_range(first, last, Box::new(value));
            if first > last {
                assert_eq!(result, Err(MapleError::InvalidRange { first, last }));
                return;
            }
            let expected = model
                .insert_range(first, last, value)
                .map_err(|(first, last)| MapleError::Occupied { first, last });
            assert_eq!(result, expected, "{op:?}");
        }
        Op::Erase(index) => {
            let displaced: Vec<_> = tree.erase(index).iter().map(|(f, l, v)| (f, l, *v)).collect();
            assert_eq!(
                displaced,
                model.erase(index).into_iter().collect::<Vec<_>>(),
                "{op:?}"
            );
        }
        Op::EraseRange(first, last) => {
            let result = tree.erase_range(first, last);
            if first > last {
                assert_eq!(result.err(), Some(MapleError::InvalidRange { first, last }));
                return;
            }
            let displaced: Vec<_> = result.unwrap().iter().map(|(f, l, v)| (f, l, *v)).collect();
            assert_eq!(displaced, model.erase_range(first, last), "{op:?}");
        }
        Op::ReplaceExact(first, last, ref pieces) => {
            let mut values = Vec::new();
            let mut at = first;
            for (i, &(gap, len)) in pieces.iter().enumerate() {
                let f = at.saturating_add(gap);
                let l = f.saturating_add(len);
                values.push((f, l, value + i as u64));
                at = l.saturating_add(1);
            }
            let result = tree.lock().replace_exact(
                first,
                last,
                values.iter().map(|&(f, l, v)| (f, l, Box::new(v))).collect(),
            );
            let bad_input = first > last
                || values.iter().enumerate().any(|(i, &(f, l, _))| {
                    f > l
                        || l > last
                        || (i > 0 && f <= values[i - 1].1)
                        || (f == u64::MAX && i + 1 < values.len())
                });
            if bad_input {
                assert!(
                    matches!(result, Err(MapleError::InvalidRange { .. })),
                    "{op:?}: {result:?}"
                );
                return;
            }
            let cut = [first, last]
                .into_iter()
                .find_map(|i| model.range_at(i).filter(|&(f, l, _)| f < first || l > last));
            if let Some((f, l, _)) = cut {
                assert_eq!(
                    result.err(),
                    Some(MapleError::CutsRange { first: f, last: l }),
                    "{op:?}"
                );
                return;
            }
            let displaced: Vec<_> = result.unwrap().iter().map(|(f, l, v)| (f, l, *v)).collect();
            assert_eq!(displaced, model.erase_range(first, last), "{op:?}");
            for (f, l, v) in values {
                model.insert_range(f, l, v).unwrap();
            }
        }
        Op::Load(index) => {
            let guard = tree.guard();
            let found = tree.load_range(index, &guard).map(|(f, l, v)| (f, l, *v));
            assert_eq!(found, model.range_at(index), "{op:?}");
            assert_eq!(
                tree.load(index, &guard).copied(),
                model.range_at(index).map(|r| r.2)
            );
        }
        Op::Gap(min, max, size) | Op::GapRev(min, max, size) => {
            let reverse = matches!(op, Op::GapRev(..));
            let found = if reverse {
                tree.find_gap_rev(min, max, size)
            } else {
                tree.find_gap(min, max, size)
            };
            if min > max {
                assert_eq!(
                    found,
                    Err(MapleError::InvalidRange {
                        first: min,
                        last: max
                    })
                );
            } else if size == 0 {
                assert_eq!(found, Err(MapleError::ZeroSize));
            } else {
                let expected = if reverse {
                    model.find_gap_rev(min, max, size)
                } else {
                    model.find_gap(min, max, size)
                };
                assert_eq!(found, Ok(expected), "{op:?}");
            }
        }
        Op::IterFrom(start) => {
            let expected = model.ranges().into_iter().filter(|&(_, l, _)| l >= start);
            check_iteration(tree, op, start, expected.collect(), false);
        }
        Op::IterRevFrom(start) => {
            let expected = model.ranges().into_iter().rev().filter(|&(f, _, _)| f <= start);
            check_iteration(tree, op, start, expected.collect(), true);
        }
    }
}

/// Checks an iteration from `start` (reverse or not) through an unkeyed guard against
/// `expected`, then through a guard keyed around `start` against the expected ranges that
/// overlap its keys.
fn check_iteration(
    tree: &MapleTree<Box<u64>>,
    op: &Op,
    start: u64,
    expected: Vec<(u64, u64, u64)>,
    reverse: bool,
) {
    let (first_key, last_key) = keys_around(start);
    let unkeyed = tree.guard();
    let keyed = tree.guard_within(first_key, last_key);
    for (guard, keys) in [(&unkeyed, None), (&keyed, Some((first_key, last_key)))] {
        let iter = if reverse {
            tree.iter_rev_from(start, guard)
        } else {
            tree.iter_from(start, guard)
        };
        let got: Vec<_> = iter.map(|(f, l, v)| (f, l, *v)).collect();
        let overlapping =
            |&(f, l, _): &(u64, u64, u64)| keys.is_none_or(|(first, last)| f <= last && l >= first);
        let expected: Vec<_> = expected.iter().copied().filter(overlapping).collect();
        assert_eq!(got, expected, "{op:?} keys {keys:?}");
    }
}

/// Keys of a guard around `start` for the keyed iteration checks: from half of it to one and
/// a half of it.
fn keys_around(start: u64) -> (u64, u64) {
    (start / 2, start.saturating_add(start / 2))
}

fn check_same(tree: &MapleTree<Box<u64>>, model: &Model, step: usize, op: &Op) {
    if let Err(problem) = tree.validate() {
        panic!("step {step} ({op:?}): invalid tree: {problem}");
    }
    let guard = tree.guard();
    let contents: Vec<_> = tree.iter(&guard).map(|(f, l, v)| (f, l, *v)).collect();
    assert_eq!(contents, model.ranges(), "step {step} ({op:?}): contents differ");
    assert_eq!(tree.len(), model.map.len());
}

/// What the tests draw from the shared seeded generator.
trait Draws {
    fn index(&mut self, universe: u64) -> u64;
    fn range(&mut self, universe: u64) -> (u64, u64);
    fn op(&mut self, universe: u64, churn: u64) -> Op;
}

impl Draws for Rng {
    /// An index: mostly in a small universe (so ranges collide), sometimes at the edges of u64.
    fn index(&mut self, universe: u64) -> u64 {
        match self.below(20) {
            0 => self.below(4),
            1 => u64::MAX - self.below(4),
            _ => self.below(universe),
        }
    }

    fn range(&mut self, universe: u64) -> (u64, u64) {
        let first = self.index(universe);
        let len = match self.below(10) {
            0 => self.below(universe),
            1 => 0,
            _ => self.below(universe / 50 + 1),
        };
        if self.below(200) == 0 {
            return (first, first.saturating_sub(1));
        }
        (first, first.saturating_add(len))
    }

    fn op(&mut self, universe: u64, churn: u64) -> Op {
        let (first, last) = self.range(universe);
        let size = if self.below(30) == 0 {
            0
        } else {
            self.below(universe / 20 + 1) + 1
        };
        match self.below(100) {
            n if n < 30 => Op::Insert(first, last),
            n if n < 30 + churn => Op::Store(first, last),
            n if n < 45 + churn => Op::Erase(self.index(universe)),
            n if n < 52 + churn => Op::EraseRange(first, last),
            n if n < 80 => Op::Load(self.index(universe)),
            n if n < 86 => Op::Gap(first, last, size),
            n if n < 92 => Op::GapRev(first, last, size),
            n if n < 94 => {
                let pieces = (0..self.below(4))
                    .map(|_| (self.below(universe / 40 + 1), self.below(universe / 40 + 1)))
                    .collect();
                Op::ReplaceExact(first, last, pieces)
            }
            n if n < 97 => Op::IterFrom(self.index(universe)),
            _ => Op::IterRevFrom(self.index(universe)),
        }
    }
}

fn run_seeded(seed: u64, steps: usize, universe: u64, churn: u64) {
    let mut rng = Rng::new(seed);
    let tree = MapleTree::<Box<u64>>::new();
    let mut model = Model::default();
    for step in 0..steps {
        let op = rng.op(universe, churn);
        apply(&tree, &mut model, &op, step as u64);
        check_same(&tree, &model, step, &op);
    }
}

/// 200,000+ operations per run, across tree sizes from a handful of ranges to a few thousand.
#[test]
fn seeded_sequences_match_the_model() {
    let seeds: u64 = std::env::var("MAPLE_DIFF_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for seed in 0..seeds {
        // Small universes keep trees small and dense; large ones grow deep trees.
        run_seeded(seed, 10_000, 300, 10);
        run_seeded(seed + 1000, 15_000, 200_000, 0);
    }
}

/// A tree built in bulk (`from_sorted`) from the model's ranges at points of a random
/// sequence holds what the model holds, passes `validate()`, and answers the rest of the
/// sequence as the model does (it is a tree like any other for later writes).
#[test]
fn a_tree_built_in_bulk_matches_the_model() {
    for (seed, universe, churn) in [(7, 300, 10), (8, 200_000, 0), (9, 5_000, 5)] {
        let mut rng = Rng::new(seed);
        let tree = MapleTree::<Box<u64>>::new();
        let mut model = Model::default();
        for step in 0..6_000 {
            let op = rng.op(universe, churn);
            apply(&tree, &mut model, &op, step as u64);
            if step % 1_000 == 999 {
                let ranges = model.ranges().into_iter().map(|(f, l, v)| (f, l, Box::new(v)));
                let bulk = MapleTree::<Box<u64>>::from_sorted(ranges).unwrap();
                check_same(&bulk, &model, step, &op);
                let mut copy = model.clone();
                for later in 0..500 {
                    let op = rng.op(universe, churn);
                    apply(&bulk, &mut copy, &op, later);
                    check_same(&bulk, &copy, later as usize, &op);
                }
            }
        }
    }
    // From empty to several levels, packed as evenly as a write's rebuild.
    for count in [0u64, 1, 15, 16, 17, 160, 161, 5_000] {
        let bulk = MapleTree::<Box<u64>>::from_sorted((0..count).map(|i| (i * 10, i * 10 + 4, Box::new(i))))
            .unwrap();
        bulk.validate().unwrap();
        assert_eq!(bulk.len() as u64, count);
        let stats = bulk.stats();
        assert!(stats.nodes() <= stats.minimum_nodes() * 2, "{count}: {stats:?}");
    }
    let at_the_top = [(0, 0, Box::new(1)), (5, u64::MAX, Box::new(2))];
    MapleTree::<Box<u64>>::from_sorted(at_the_top)
        .unwrap()
        .validate()
        .unwrap();
}

#[test]
fn a_bulk_build_refuses_unsorted_overlapping_and_empty_ranges() {
    let build = |ranges: Vec<(u64, u64)>| {
        MapleTree::<Box<u64>>::from_sorted(ranges.into_iter().map(|(f, l)| (f, l, Box::new(0)))).map(|_| ())
    };
    assert_eq!(
        build(vec![(10, 20), (20, 30)]),
        Err(MapleError::Occupied { first: 10, last: 20 })
    );
    assert_eq!(
        build(vec![(10, 20), (0, 5)]),
        Err(MapleError::Occupied { first: 10, last: 20 })
    );
    assert_eq!(
        build(vec![(0, u64::MAX), (1, 1)]),
        Err(MapleError::Occupied {
            first: 0,
            last: u64::MAX
        })
    );
    assert_eq!(
        build(vec![(5, 4)]),
        Err(MapleError::InvalidRange { first: 5, last: 4 })
    );
    assert_eq!(build(vec![(0, 0), (1, 1)]), Ok(()));
    let full = MapleTree::<Box<u64>>::new();
    full.insert_range(3, 4, Box::new(0)).unwrap();
    let refused = full.lock().fill([(10, 20, Box::new(1))]);
    assert_eq!(refused, Err(MapleError::Occupied { first: 3, last: 4 }));
    assert_eq!(full.len(), 1);
}

/// Growth to many levels, then erasure in random order down to a few ranges.
#[test]
fn grow_then_shrink_matches_the_model() {
    let tree = MapleTree::<Box<u64>>::new();
    let mut model = Model::default();
    let mut rng = Rng::new(42);
    let mut firsts = Vec::new();
    for i in 0..5_000u64 {
        let first = i * 10;
        let op = Op::Insert(first, first + rng.below(9));
        apply(&tree, &mut model, &op, i);
        firsts.push(first);
        if i % 97 == 0 {
            check_same(&tree, &model, i as usize, &op);
        }
    }
    while let Some(pick) = (!firsts.is_empty()).then(|| rng.below(firsts.len() as u64) as usize) {
        let first = firsts.swap_remove(pick);
        let op = Op::Erase(first);
        apply(&tree, &mut model, &op, 0);
        if firsts.len() % 89 == 0 {
            check_same(&tree, &model, firsts.len(), &op);
        }
    }
    check_same(&tree, &model, 0, &Op::Load(0));
    assert!(tree.is_empty());
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let index = prop_oneof![0u64..64, Just(u64::MAX), Just(u64::MAX - 1), Just(0u64)];
    let range = (index.clone(), 0u64..24).prop_map(|(first, len)| (first, first.saturating_add(len)));
    prop_oneof![
        range.clone().prop_map(|(f, l)| Op::Store(f, l)),
        range.clone().prop_map(|(f, l)| Op::Insert(f, l)),
        index.clone().prop_map(Op::Erase),
        range.clone().prop_map(|(f, l)| Op::EraseRange(f, l)),
        index.clone().prop_map(Op::Load),
        (range.clone(), 0u64..8).prop_map(|((f, l), s)| Op::Gap(f, l, s)),
        (range.clone(), 0u64..8).prop_map(|((f, l), s)| Op::GapRev(f, l, s)),
        index.clone().prop_map(Op::IterFrom),
        (range, proptest::collection::vec((0u64..4, 0u64..4), 0..4))
            .prop_map(|((f, l), p)| Op::ReplaceExact(f, l, p)),
        index.prop_map(Op::IterRevFrom),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Shrinks any failing sequence to a minimal one.
    #[test]
    fn proptest_sequences_match_the_model(ops in proptest::collection::vec(op_strategy(), 1..120)) {
        let tree = MapleTree::<Box<u64>>::new();
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            apply(&tree, &mut model, op, step as u64);
            check_same(&tree, &model, step, op);
        }
    }
}
