//! The RCU contract under shuttle: the model domain (built from the `maple::sync` facade) with
//! every interleaving point controlled by the checker. Run with `--features shuttle`.
#![cfg(feature = "shuttle")]

#[path = "support/no_grace.rs"]
mod no_grace;
#[path = "support/rcu_scenarios.rs"]
mod scenarios;

use maple::rcu::ModelRcu;
use scenarios::NoGrace;

/// Iterations per scheduler; CI runs the suite with the default.
fn iterations() -> usize {
    std::env::var("SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// PCT's bug depth: how many priority changes a schedule may contain.
const PCT_DEPTH: usize = 3;

fn check_both(f: impl Fn() + Send + Sync + 'static) {
    let f = std::sync::Arc::new(f);
    let g = f.clone();
    shuttle::check_random(move || g(), iterations());
    shuttle::check_pct(move || f(), iterations(), PCT_DEPTH);
}

#[test]
fn synchronize_waits_for_earlier_reader() {
    check_both(|| scenarios::synchronize_waits_for_earlier_reader::<ModelRcu>(4));
}

#[test]
fn new_readers_do_not_starve_synchronize() {
    check_both(|| scenarios::new_readers_do_not_starve_synchronize::<ModelRcu>(1_000));
}

#[test]
fn retired_never_freed_under_reader() {
    check_both(|| scenarios::retired_never_freed_under_reader::<ModelRcu>(3, 2, 2, 2));
}

#[test]
fn retired_freed_after_last_guard() {
    check_both(|| scenarios::retired_freed_after_last_guard::<ModelRcu>(20));
}

#[test]
#[should_panic(expected = "synchronize returned while an earlier guard was held")]
fn broken_synchronize_is_caught() {
    check_both(|| scenarios::synchronize_waits_for_earlier_reader::<NoGrace<ModelRcu>>(4));
}

#[test]
#[should_panic(expected = "poisoned")]
fn broken_retire_is_caught() {
    check_both(|| scenarios::retired_never_freed_under_reader::<NoGrace<ModelRcu>>(3, 2, 2, 2));
}
