//! The RCU contract under shuttle: the slot domain (built from the `maple::sync` facade, the
//! default everywhere) with every interleaving point controlled by the checker. Run with `--features shuttle`.
#![cfg(feature = "shuttle")]

#[path = "support/no_grace.rs"]
mod no_grace;
#[path = "support/rcu_scenarios.rs"]
mod scenarios;

use maple::rcu::{Rcu, SlotRcu};
use maple::testing::{assert_broken_variant_fails, check_random_and_pct};
use scenarios::NoGrace;

/// Scheduling points one schedule may take before it counts as a livelock.
const MAX_STEPS: usize = 100_000;

fn check_both(test: impl Fn() + Send + Sync + 'static) {
    check_random_and_pct(MAX_STEPS, test);
}

/// [`check_both`] twice: with the scenario's first reader task in the one owned slot (under
/// shuttle only the task numbered 0 owns one, and the test's main task has taken no number
/// yet), then with every reader in a shared slot (the main task takes number 0 first).
fn check_owned_and_shared(test: impl Fn() + Clone + Send + Sync + 'static) {
    assert_eq!(maple::rcu::OWNED_SLOTS, 1);
    check_both(test.clone());
    check_both(move || {
        maple::thread_index::current();
        test();
    });
}

#[test]
fn synchronize_waits_for_earlier_reader() {
    check_owned_and_shared(|| scenarios::synchronize_waits_for_earlier_reader::<SlotRcu>(4));
}

#[test]
fn synchronize_waits_for_nested_reader() {
    check_owned_and_shared(|| scenarios::synchronize_waits_for_nested_reader::<SlotRcu>(4));
}

#[test]
fn keyed_synchronize_waits_for_sections_that_may_reach_the_key() {
    for section in scenarios::KEYED_SECTIONS {
        check_owned_and_shared(move || scenarios::synchronize_waits_for_reader::<SlotRcu>(4, section));
    }
}

#[test]
fn keyed_synchronize_skips_other_keys() {
    check_owned_and_shared(scenarios::keyed_grace_period_skips_other_keys::<SlotRcu>);
}

#[test]
fn retire_within_waits_for_sections_that_may_reach_it() {
    for section in scenarios::KEYED_SECTIONS {
        check_owned_and_shared(move || {
            scenarios::retire_within_waits_for_sections_that_may_reach_it::<SlotRcu>(4, section);
        });
    }
}

#[test]
fn retire_within_skips_other_keys() {
    check_owned_and_shared(scenarios::retire_within_skips_other_keys::<SlotRcu>);
}

#[test]
fn new_readers_do_not_starve_synchronize() {
    check_both(|| scenarios::new_readers_do_not_starve_synchronize::<SlotRcu>(1_000));
}

#[test]
fn retired_never_freed_under_reader() {
    check_owned_and_shared(|| scenarios::retired_never_freed_under_reader::<SlotRcu>(3, 2, 2, 2));
}

#[test]
fn retired_freed_after_last_guard() {
    check_both(|| scenarios::retired_freed_after_last_guard::<SlotRcu>(20));
}

#[test]
fn broken_synchronize_is_caught() {
    assert_broken_variant_fails(
        MAX_STEPS,
        &["synchronize returned while an earlier guard was held"],
        || scenarios::synchronize_waits_for_earlier_reader::<NoGrace<SlotRcu>>(4),
    );
}

#[test]
fn broken_retire_is_caught() {
    assert_broken_variant_fails(MAX_STEPS, &["poisoned"], || {
        scenarios::retired_never_freed_under_reader::<NoGrace<SlotRcu>>(3, 2, 2, 2)
    });
}

/// A reader runs quiet runs of sections (so that its domain's readers go unfenced between the
/// writer's grace periods) and, after each, one section the writer may overlap; the writer's
/// `synchronize` must outlast every section that had begun when it was called, whether that
/// section was entered fenced or unfenced, before or during the writer's switch of the mode.
fn unfenced_sections_hold_up_grace_periods<R: Rcu>() {
    use maple::rcu::QUIET_SECTIONS;
    use maple::sync::atomic::{AtomicUsize, Ordering};
    use maple::sync::{Arc, thread};
    const ROUNDS: usize = 3;
    let rcu = Arc::new(R::default());
    // Sections entered and left, counted inside them.
    let entered = Arc::new(AtomicUsize::new(0));
    let left = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (rcu, entered, left) = (rcu.clone(), entered.clone(), left.clone());
        thread::spawn(move || {
            for _ in 0..ROUNDS {
                (0..=QUIET_SECTIONS).for_each(|_| drop(rcu.read()));
                let guard = rcu.read();
                entered.fetch_add(1, Ordering::SeqCst);
                thread::yield_now();
                left.fetch_add(1, Ordering::SeqCst);
                drop(guard);
            }
        })
    };
    for _ in 0..ROUNDS {
        let before = entered.load(Ordering::SeqCst);
        rcu.synchronize();
        assert!(
            left.load(Ordering::SeqCst) >= before,
            "synchronize returned while an earlier guard was held"
        );
    }
    reader.join().unwrap();
}

#[test]
fn unfenced_sections_hold_up_writers_switching_the_mode() {
    check_owned_and_shared(unfenced_sections_hold_up_grace_periods::<SlotRcu>);
}

#[test]
fn broken_synchronize_beside_unfenced_sections_is_caught() {
    assert_broken_variant_fails(
        MAX_STEPS,
        &["synchronize returned while an earlier guard was held"],
        unfenced_sections_hold_up_grace_periods::<NoGrace<SlotRcu>>,
    );
}
