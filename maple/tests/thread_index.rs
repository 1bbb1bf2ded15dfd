//! Thread numbers: distinct among live threads, reused smallest first after threads exit.
//! Alone in its test binary, so no other test takes numbers meanwhile.
#![cfg(not(feature = "shuttle"))]

use maple::thread_index::current;
use std::sync::Barrier;

#[test]
fn live_threads_hold_distinct_numbers_and_exited_ones_are_reused() {
    let barrier = Barrier::new(4);
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
