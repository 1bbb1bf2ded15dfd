//! Test support shared by every crate's tests and benchmarks: a seeded generator, and (with
//! `--features shuttle`) the one runner the shuttle suites use. Kept out of the runtime
//! modules ([`crate::sync`], [`crate::rcu`]), which production code uses; nothing in maplevm's
//! own code calls it.

/// Whether `write` finishes while a reader is parked inside its read-side section: `read` runs
/// on a thread of its own, enters its section and calls the `park` it is given from inside it;
/// `write` starts once the reader is parked and is given 300 ms. The reader is then released
/// and both are joined, so `read` can check afterwards that what it held stayed intact. For
/// the std-thread tests of keyed sections (writers must not wait for readers keyed
/// elsewhere, and must wait for those keyed on what they free).
pub fn finishes_beside_parked_reader<'s>(
    read: impl FnOnce(&dyn Fn()) + Send + 's,
    write: impl FnOnce() + Send + 's,
) -> bool {
    use std::sync::mpsc;
    let (parked_tx, parked) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            read(&|| {
                parked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            });
        });
        parked.recv().unwrap();
        scope.spawn(move || {
            write();
            done_tx.send(()).unwrap();
        });
        let finished = done.recv_timeout(std::time::Duration::from_millis(300)).is_ok();
        release.send(()).unwrap();
        if !finished {
            done.recv().unwrap();
        }
        finished
    })
}

/// A small deterministic generator (splitmix64): seeded, the same sequence on every machine,
/// a few instructions a number. For tests and benchmarks, not for anything that needs
/// randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence `seed` decides.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (not zero).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Runs `test` under shuttle's random scheduler and its PCT scheduler (bug depth 3),
/// `SHUTTLE_ITERATIONS` times each (default 1,000), from fresh random seeds: every run
/// explores schedules earlier runs did not, and a failure prints the schedule to pass to
/// `shuttle::replay`. A schedule longer than `max_steps` scheduling points fails the test: it
/// catches livelocks, such as a waiter spinning on a condition that never comes true. The one
/// runner every shuttle suite of maplevm uses for the correct protocol.
#[cfg(feature = "shuttle")]
pub fn check_random_and_pct(max_steps: usize, test: impl Fn() + Send + Sync + 'static) {
    run_both(max_steps, None, std::sync::Arc::new(test));
}

/// How many seeded rounds [`assert_broken_variant_fails`] tries before it calls a broken
/// variant undetected.
#[cfg(feature = "shuttle")]
pub const BROKEN_VARIANT_ROUNDS: u64 = 8;

/// Proves a test can fail: runs `test` (a deliberately broken variant of a protocol) under
/// both schedulers from fixed seeds, round after round (at most [`BROKEN_VARIANT_ROUNDS`]),
/// until it fails, and requires the failure's message to contain one of `expected`. The
/// seeds are fixed so that whether the broken variant is caught does not depend on luck: the
/// outcome is the same on every run of the same code, and a change that hides the bug from
/// every round shows at once instead of as a rare flake.
///
/// # Panics
/// If no round fails, or one fails for a reason none of `expected` names.
#[cfg(feature = "shuttle")]
pub fn assert_broken_variant_fails(
    max_steps: usize,
    expected: &[&str],
    test: impl Fn() + Send + Sync + 'static,
) {
    let test = std::sync::Arc::new(test);
    for round in 0..BROKEN_VARIANT_ROUNDS {
        let test = test.clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_both(max_steps, Some(round), test)
        }));
        let Err(panic) = outcome else { continue };
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        eprintln!("the broken variant failed as it must (round {round}): {message}");
        assert!(
            expected.iter().any(|e| message.contains(e)),
            "the broken variant failed for another reason: {message}"
        );
        return;
    }
    panic!("the broken variant passed {BROKEN_VARIANT_ROUNDS} seeded rounds");
}

/// One random-scheduler run and one PCT run of `test`, from `seed` or from fresh random seeds.
#[cfg(feature = "shuttle")]
fn run_both(max_steps: usize, seed: Option<u64>, test: std::sync::Arc<dyn Fn() + Send + Sync>) {
    use shuttle::scheduler::{PctScheduler, RandomScheduler};
    let iterations = std::env::var("SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let config = || {
        let mut config = shuttle::Config::new();
        config.max_steps = shuttle::MaxSteps::FailAfter(max_steps);
        config
    };
    let (random, pct) = match seed {
        Some(seed) => (
            RandomScheduler::new_from_seed(seed, iterations),
            PctScheduler::new_from_seed(seed, 3, iterations),
        ),
        None => (RandomScheduler::new(iterations), PctScheduler::new(3, iterations)),
    };
    let random_test = test.clone();
    shuttle::Runner::new(random, config()).run(move || random_test());
    shuttle::Runner::new(pct, config()).run(move || test());
}
