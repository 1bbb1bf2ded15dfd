//! Thread numbers: distinct among live threads, reused smallest first after threads exit; under
//! shuttle, per task. Alone in its test binary, so no other test takes numbers meanwhile.

use maple::thread_index::current;

#[cfg(not(feature = "shuttle"))]
#[test]
fn live_threads_hold_distinct_numbers_and_exited_ones_are_reused() {
    let barrier = std::sync::Barrier::new(4);
    let mut numbers: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let number = current().unwrap();
                    // All four are alive at once here.
                    barrier.wait();
                    assert_eq!(current(), Some(number), "a thread keeps its number");
                    number
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 4, "live threads share no number: {numbers:?}");
    // All four have exited (scoped threads are joined, and their destructors have run by the
    // time `join` returns): the next thread gets the smallest of them back.
    let next = std::thread::spawn(|| current().unwrap()).join().unwrap();
    assert_eq!(next, numbers[0]);
}

/// Under shuttle every task has its own number (the RCU domain's owned reader slots rely on
/// it there as on std) and hands it back when it finishes: across a thousand executions the
/// numbers stay as small as the tasks alive at once.
#[cfg(feature = "shuttle")]
#[test]
fn tasks_hold_distinct_numbers_and_hand_them_back() {
    use maple::sync::atomic::{AtomicUsize, Ordering};
    use maple::sync::{Arc, thread};
    const TASKS: usize = 3;
    maple::testing::check_random_and_pct(10_000, || {
        let main = current().unwrap();
        let arrived = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..TASKS)
            .map(|_| {
                let arrived = arrived.clone();
                thread::spawn(move || {
                    let number = current().unwrap();
                    arrived.fetch_add(1, Ordering::SeqCst);
                    // All tasks are alive at once here.
                    while arrived.load(Ordering::SeqCst) < TASKS {
                        thread::yield_now();
                    }
                    assert_eq!(current(), Some(number), "a task keeps its number");
                    number
                })
            })
            .collect();
        let mut numbers: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        numbers.push(main);
        assert!(
            numbers.iter().all(|&n| n <= TASKS),
            "numbers are handed back: {numbers:?}"
        );
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            TASKS + 1,
            "live tasks share no number: {numbers:?}"
        );
    });
}
