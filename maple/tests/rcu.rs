//! The RCU contract, checked with std threads against every implementation.
#![cfg(not(feature = "shuttle"))]

#[path = "support/no_grace.rs"]
mod no_grace;
#[path = "support/rcu_scenarios.rs"]
mod scenarios;

use maple::rcu::{EpochRcu, Rcu, SeizeRcu, SlotRcu};
use scenarios::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

/// A guard taken after `synchronize` began (and after the epoch moved on) does not hold it up:
/// A holds a guard, `synchronize` starts, B takes a guard and keeps it, A lets go:
/// `synchronize` must return while B still holds its guard.
fn synchronize_ignores_later_long_reader<R: Rcu>() {
    let rcu = Arc::new(R::default());
    let (a_release, a_rx) = mpsc::channel::<()>();
    let (a_in_tx, a_in) = mpsc::channel::<()>();
    let a = {
        let rcu = rcu.clone();
        thread::spawn(move || {
            let guard = rcu.read();
            a_in_tx.send(()).unwrap();
            a_rx.recv().unwrap();
            drop(guard);
        })
    };
    a_in.recv().unwrap();
    let synced = Arc::new(AtomicBool::new(false));
    let s = {
        let (rcu, synced) = (rcu.clone(), synced.clone());
        thread::spawn(move || {
            rcu.synchronize();
            synced.store(true, Ordering::Release);
        })
    };
    thread::sleep(Duration::from_millis(30));
    assert!(
        !synced.load(Ordering::Acquire),
        "synchronize returned while an earlier guard was held"
    );
    let b_guard_taken = Arc::new(AtomicBool::new(false));
    let b = {
        let (rcu, synced, taken) = (rcu.clone(), synced.clone(), b_guard_taken.clone());
        thread::spawn(move || {
            let guard = rcu.read();
            taken.store(true, Ordering::Release);
            for _ in 0..5000 {
                if synced.load(Ordering::Acquire) {
                    drop(guard);
                    return true;
                }
                thread::sleep(Duration::from_millis(1));
            }
            false
        })
    };
    while !b_guard_taken.load(Ordering::Acquire) {
        thread::yield_now();
    }
    a_release.send(()).unwrap();
    assert!(
        b.join().unwrap(),
        "synchronize waited for a guard taken after it started"
    );
    s.join().unwrap();
    a.join().unwrap();
}

fn synchronize_inside_guard_panics<R: Rcu>() {
    let rcu = R::default();
    let guard = rcu.read();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rcu.synchronize()));
    drop(guard);
    let message = *result
        .expect_err("synchronize inside a guard must panic")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("inside a read-side section"), "{message}");
    rcu.synchronize();
}

macro_rules! contract_tests {
    ($name:ident, $rcu:ty) => {
        mod $name {
            use super::*;

            #[test]
            fn synchronize_waits_for_earlier_reader() {
                scenarios::synchronize_waits_for_earlier_reader::<$rcu>(100_000);
            }

            #[test]
            fn synchronize_waits_for_nested_reader() {
                scenarios::synchronize_waits_for_nested_reader::<$rcu>(100_000);
            }

            #[test]
            fn keyed_synchronize_waits_for_sections_that_may_reach_the_key() {
                for section in KEYED_SECTIONS {
                    scenarios::synchronize_waits_for_reader::<$rcu>(20_000, section);
                }
            }

            #[test]
            fn retire_within_waits_for_sections_that_may_reach_it() {
                for section in std::iter::once(Section::Plain).chain(KEYED_SECTIONS) {
                    scenarios::retire_within_waits_for_sections_that_may_reach_it::<$rcu>(20_000, section);
                }
            }

            #[test]
            fn new_readers_do_not_starve_synchronize() {
                scenarios::new_readers_do_not_starve_synchronize::<$rcu>(5_000_000);
            }

            #[test]
            fn retired_never_freed_under_reader() {
                scenarios::retired_never_freed_under_reader::<$rcu>(20_000, 2, 2_000, 50);
            }

            #[test]
            fn retired_freed_after_last_guard() {
                scenarios::retired_freed_after_last_guard::<$rcu>(1_000);
            }

            #[test]
            fn synchronize_inside_guard_panics() {
                super::synchronize_inside_guard_panics::<$rcu>();
            }

            #[test]
            #[should_panic(expected = "synchronize returned while an earlier guard was held")]
            fn broken_synchronize_is_caught() {
                scenarios::synchronize_waits_for_earlier_reader::<NoGrace<$rcu>>(100_000);
            }

            #[test]
            #[should_panic(expected = "poisoned")]
            fn broken_retire_is_caught() {
                scenarios::retired_never_freed_under_reader::<NoGrace<$rcu>>(20_000, 2, 2_000, 50);
            }
        }
    };
}

contract_tests!(epoch, EpochRcu);
contract_tests!(seize, SeizeRcu);
contract_tests!(slots, SlotRcu);

#[test]
fn slot_domain_keyed_synchronize_skips_other_keys() {
    scenarios::keyed_grace_period_skips_other_keys::<SlotRcu>();
}

#[test]
fn slot_domain_retire_within_skips_other_keys() {
    scenarios::retire_within_skips_other_keys::<SlotRcu>();
}

// Slot-domain readers fence their entries only while writers scan: a domain starts with readers
// unfenced (where the kernel offers the heavy barrier), the first scan makes them fence, and a
// thread's run of quiet fenced sections (between QUIET_SECTIONS and MAX_QUIET_SECTIONS of them,
// as the domain has judged its heavy barriers) lets them go unfenced again; a scan restarts the
// run.
#[test]
fn slot_readers_fence_only_while_writers_scan() {
    use maple::rcu::{MAX_QUIET_SECTIONS, QUIET_SECTIONS};
    let rcu = SlotRcu::new();
    if rcu.readers_fence() {
        // No expedited membarrier here: readers always fence, and must go on doing so.
        rcu.synchronize();
        (0..=MAX_QUIET_SECTIONS).for_each(|_| drop(rcu.read()));
        assert!(rcu.readers_fence());
        return;
    }
    let quiet_run = |rcu: &SlotRcu| {
        rcu.synchronize();
        assert!(rcu.readers_fence(), "a scan leaves readers unfenced");
        let mut sections = 0;
        while rcu.readers_fence() {
            drop(rcu.read());
            sections += 1;
            assert!(sections <= MAX_QUIET_SECTIONS + 1, "readers never went unfenced");
        }
        sections
    };
    for _ in 0..4 {
        // The first fenced section starts the run; QUIET_SECTIONS more complete it.
        assert!(quiet_run(&rcu) > QUIET_SECTIONS);
    }
    // A scan in the middle of a run restarts it.
    rcu.synchronize();
    (0..QUIET_SECTIONS).for_each(|_| drop(rcu.read()));
    rcu.synchronize();
    (0..QUIET_SECTIONS).for_each(|_| drop(rcu.read()));
    assert!(rcu.readers_fence(), "a scan did not restart the quiet run");
}

// crossbeam-epoch counts grace periods in global epochs: a guard pinned in the epoch the
// retirement was sealed in holds `synchronize` up even if it was taken after the call began
// (see `EpochRcu`). seize and the slot domain wait for exactly the earlier sections.
#[test]
fn seize_synchronize_ignores_later_long_reader() {
    synchronize_ignores_later_long_reader::<SeizeRcu>();
}

#[test]
fn slots_synchronize_ignores_later_long_reader() {
    synchronize_ignores_later_long_reader::<SlotRcu>();
}

// The slot domain has READER_SLOTS slots: more threads reading at once share them (a reader
// whose slot is taken moves on to a free one, or waits for one), and grace periods still end.
#[test]
fn slots_serve_more_readers_than_slots() {
    use maple::rcu::READER_SLOTS;
    let rcu = std::sync::Arc::new(SlotRcu::default());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (rcu, stop) = (rcu.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut grace_periods = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rcu.synchronize();
                grace_periods += 1;
            }
            grace_periods
        })
    };
    let readers: Vec<_> = (0..2 * READER_SLOTS)
        .map(|_| {
            let rcu = rcu.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let outer = rcu.read();
                    let nested = rcu.read();
                    std::thread::yield_now();
                    drop(outer);
                    drop(nested);
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0, "no grace period completed");
}
