//! The replacement protocol under shuttle (random and PCT schedulers): guarantees G1, G4, G5,
//! BABY waits, no BABY where a change leaves a range as it was, the no-wait shortcut and
//! writers not waiting for faults elsewhere (keyed sections), each also run against a variant of the protocol that
//! skips the step providing it, which must fail. Freed VMAs are poisoned and quarantined under
//! shuttle, so a use after free is detected. Run with `--features shuttle`.
#![cfg(feature = "shuttle")]

use maple::rcu::DefaultRcu;
use maple::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use maple::sync::{Arc, thread};
use maple::testing::{assert_broken_variant_fails, check_random_and_pct as check_both};
use vma::{AddressSpace, BrokenStep, FlushHook, Lookup, MapFlags, Prot, Unusable};

#[path = "support/shuttle_space.rs"]
mod shuttle_space;
use shuttle_space::{A, B, LAYOUT, P};

/// Counts flushes.
#[derive(Clone, Default)]
struct Flushes(Arc<AtomicU64>);

impl FlushHook for Flushes {
    fn zap(&self, _start: u64, _end: u64, _free_tables: (u64, u64), _rcu: &DefaultRcu) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst);
        false
    }

    fn protect(&self, _start: u64, _end: u64, _prot: Prot, _rcu: &DefaultRcu) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst);
        false
    }

    fn relocate(&self, _from: u64, _to: u64, _len: u64, _rcu: &DefaultRcu) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst);
        false
    }
}

/// A space with VMA A = [A, A + 3P) rw- and B = [B, B + P) r--.
fn space(broken: Option<BrokenStep>) -> (Arc<AddressSpace>, Flushes) {
    let flushes = Flushes::default();
    let mut space = AddressSpace::new(LAYOUT, flushes.clone()).unwrap();
    if let Some(step) = broken {
        space.break_protocol(step);
    }
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
    space.mmap(A, 3 * P, Prot::READ_WRITE, fixed, None).unwrap();
    space.mmap(B, P, Prot::READ, fixed, None).unwrap();
    (Arc::new(space), flushes)
}

fn join(handle: thread::JoinHandle<()>) {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// G1: a VMA found by a fault (under a guard, or with a reference) is never used after it is
/// freed, while munmap splits it.
fn vma_never_used_after_free(broken: Option<BrokenStep>) {
    let (space, _) = space(broken);
    let fast = {
        let space = space.clone();
        thread::spawn(move || {
            let guard = space.guard();
            if let Lookup::Mapped(vma) = space.lookup(A + 2 * P, &guard) {
                thread::yield_now();
                thread::yield_now();
                let _ = vma.usable();
            }
        })
    };
    let slow = {
        let space = space.clone();
        thread::spawn(move || {
            if let Some(vma) = space.get(A + 2 * P) {
                thread::yield_now();
                thread::yield_now();
                let _ = vma.usable();
            }
        })
    };
    space.munmap(A, P).unwrap();
    join(fast);
    join(slow);
    space.validate().unwrap();
}

#[test]
fn g1_vma_never_used_after_free() {
    check_both(100_000, || vma_never_used_after_free(None));
}

#[test]
fn g1_fails_without_grace_period() {
    assert_broken_variant_fails(100_000, &["used after it was freed"], || {
        vma_never_used_after_free(Some(BrokenStep::GracePeriod))
    });
}

#[test]
fn g1_fails_without_reference_wait() {
    assert_broken_variant_fails(100_000, &["used after it was freed"], || {
        vma_never_used_after_free(Some(BrokenStep::ReferenceWait))
    });
}

/// A reference to A blocks munmap of A until it is released, while lookups and references on
/// the untouched VMA B complete during that wait (G4).
fn reference_blocks_only_its_vma(broken: Option<BrokenStep>) {
    let (space, _) = space(broken);
    let holding = Arc::new(AtomicBool::new(false));
    let b_done = Arc::new(AtomicBool::new(false));
    let unmapped = Arc::new(AtomicBool::new(false));
    let holder = {
        let (space, holding, b_done, unmapped) =
            (space.clone(), holding.clone(), b_done.clone(), unmapped.clone());
        thread::spawn(move || {
            let reference = space.get(A).expect("A is mapped");
            holding.store(true, Ordering::SeqCst);
            while !b_done.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            assert!(
                !unmapped.load(Ordering::SeqCst),
                "munmap returned while a reference to its VMA was held"
            );
            drop(reference);
        })
    };
    let other = {
        let (space, holding, b_done) = (space.clone(), holding.clone(), b_done.clone());
        thread::spawn(move || {
            while !holding.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            for _ in 0..2 {
                let reference = space.get(B).expect("B is mapped");
                assert_eq!(reference.prot(), Prot::READ);
                let guard = space.guard();
                assert!(matches!(space.lookup(B, &guard), Lookup::Mapped(_)));
            }
            b_done.store(true, Ordering::SeqCst);
        })
    };
    while !holding.load(Ordering::SeqCst) {
        thread::yield_now();
    }
    space.munmap(A, 3 * P).unwrap();
    unmapped.store(true, Ordering::SeqCst);
    join(holder);
    join(other);
}

#[test]
fn g4_reference_blocks_only_its_vma() {
    check_both(100_000, || reference_blocks_only_its_vma(None));
}

#[test]
fn g4_fails_without_reference_wait() {
    assert_broken_variant_fails(100_000, &["munmap returned while a reference"], || {
        reference_blocks_only_its_vma(Some(BrokenStep::ReferenceWait))
    });
}

/// G5: iteration during mprotect / mmap / munmap sees every VMA whole (as in some version), in
/// order, and always sees A's first page, which every version maps. (It may miss later parts of
/// A: a range that a write merged below one already yielded is skipped, to keep the ranges
/// ascending and disjoint.)
fn iteration_sees_whole_vmas(broken: Option<BrokenStep>) {
    let (space, _) = space(broken);
    let reader = {
        let space = space.clone();
        thread::spawn(move || {
            for _ in 0..2 {
                let guard = space.guard();
                let mut first_page_seen = false;
                let mut previous_end = 0;
                for vma in space.iter_from(0, &guard) {
                    let (s, e, prot) = (vma.start(), vma.end(), vma.prot());
                    let whole = matches!(
                        (s, e, prot),
                        (A, 0x23000, Prot::READ_WRITE)
                            | (A, 0x21000, Prot::READ_WRITE)
                            | (0x21000, 0x22000, Prot::READ)
                            | (0x22000, 0x23000, Prot::READ_WRITE)
                            | (B, 0x31000, Prot::READ)
                            | (0x28000, 0x29000, Prot::READ_EXEC)
                    );
                    assert!(
                        whole,
                        "iteration saw a VMA that no version has: {s:#x}-{e:#x} {prot}"
                    );
                    assert!(s >= previous_end, "VMAs ascend without overlap");
                    previous_end = e;
                    first_page_seen |= s == A;
                }
                assert!(first_page_seen, "A's first page is mapped in every version");
                drop(guard);
                thread::yield_now();
            }
        })
    };
    space.mprotect(A + P, P, Prot::READ).unwrap();
    space
        .mmap(
            0x28000,
            P,
            Prot::READ_EXEC,
            MapFlags::PRIVATE_ANONYMOUS.fixed(),
            None,
        )
        .unwrap();
    space.mprotect(A + P, P, Prot::READ_WRITE).unwrap();
    space.munmap(0x28000, P).unwrap();
    join(reader);
    space.validate().unwrap();
}

#[test]
fn g5_iteration_sees_whole_vmas() {
    check_both(100_000, || iteration_sees_whole_vmas(None));
}

#[test]
fn g5_fails_with_two_publications() {
    assert_broken_variant_fails(100_000, &["first page is mapped in every version"], || {
        iteration_sees_whole_vmas(Some(BrokenStep::OnePublication))
    });
}

/// A fault that finds a BABY VMA waits, then sees it usable, and only after the writer's flush.
fn baby_vmas_wait_for_the_flush(broken: Option<BrokenStep>) {
    let (space, flushes) = space(broken);
    let before = flushes.0.load(Ordering::SeqCst);
    let fault = {
        let space = space.clone();
        let flushes = flushes.0.clone();
        thread::spawn(move || {
            let vma = space.get(A).expect("A stays mapped");
            // A reference is never taken on a BABY VMA (it may turn ZOMBIE while held).
            assert_ne!(vma.usable(), Err(Unusable::Baby));
            if vma.prot() == Prot::READ {
                assert!(
                    flushes.load(Ordering::SeqCst) > before,
                    "a new VMA was usable before the flush"
                );
            }
        })
    };
    space.mprotect(A, P, Prot::READ).unwrap();
    join(fault);
}

#[test]
fn baby_vmas_wait_for_the_flush_test() {
    check_both(100_000, || baby_vmas_wait_for_the_flush(None));
}

#[test]
fn baby_fails_when_born_early() {
    assert_broken_variant_fails(100_000, &["usable before the flush"], || {
        baby_vmas_wait_for_the_flush(Some(BrokenStep::Baby))
    });
}

/// Runs `change` while another thread holds a guard — keyed at `key` (checking that the VMA it
/// finds there stays intact), or unkeyed — which it keeps until `change` has returned (so a
/// `change` that waited for it would never return).
fn while_guard_held(space: &Arc<AddressSpace>, key: Option<u64>, change: impl FnOnce(&AddressSpace)) {
    let done = Arc::new(AtomicBool::new(false));
    let in_guard = Arc::new(AtomicBool::new(false));
    let reader = {
        let (space, done, in_guard) = (space.clone(), done.clone(), in_guard.clone());
        thread::spawn(move || {
            let guard = key.map_or_else(|| space.guard(), |key| space.guard_at(key));
            let found = key.map(|key| match space.lookup(key, &guard) {
                Lookup::Mapped(vma) => (vma, vma.start()),
                _ => panic!("{key:#x} is mapped and usable"),
            });
            in_guard.store(true, Ordering::SeqCst);
            while !done.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            if let Some((vma, start)) = found {
                assert_eq!(vma.start(), start, "the VMA found stays intact");
            }
            drop(guard);
        })
    };
    while !in_guard.load(Ordering::SeqCst) {
        thread::yield_now();
    }
    change(space);
    done.store(true, Ordering::SeqCst);
    join(reader);
}

/// munmap of a range holding no VMA does not wait for anyone, even a reader that holds its
/// guard until munmap has returned.
fn empty_munmap_does_not_wait(broken: Option<BrokenStep>) {
    let (space, _) = space(broken);
    while_guard_held(&space, None, |space| space.munmap(0x38000, 2 * P).unwrap());
}

#[test]
fn empty_munmap_does_not_wait_test() {
    check_both(20_000, || empty_munmap_does_not_wait(None));
}

#[test]
fn empty_munmap_fails_when_it_waits() {
    assert_broken_variant_fails(20_000, &["deadlock", "max_steps"], || {
        empty_munmap_does_not_wait(Some(BrokenStep::NoShortcut))
    });
}

/// Writers replacing other VMAs do not wait for a fault: a reader keyed at an address of A holds
/// its guard until mprotect and munmap of B have returned.
fn writers_elsewhere_do_not_wait(broken: Option<BrokenStep>) {
    let (space, _) = space(broken);
    while_guard_held(&space, Some(A + P), |space| {
        space.mprotect(B, P, Prot::NONE).unwrap();
        space.munmap(B, P).unwrap();
    });
}

#[test]
fn writers_elsewhere_do_not_wait_for_a_fault() {
    check_both(20_000, || writers_elsewhere_do_not_wait(None));
}

#[test]
fn writers_elsewhere_fail_when_they_wait_for_everyone() {
    assert_broken_variant_fails(20_000, &["deadlock", "max_steps"], || {
        writers_elsewhere_do_not_wait(Some(BrokenStep::WaitForEveryone))
    });
}

/// Faults wait only where access is revoked: while A's last page is unmapped, then mapped
/// again (merging back into A), then A made read-write-execute (permission only added), a
/// lookup of A's first page — a part no change touches — never finds a BABY VMA.
fn untouched_parts_never_wait(broken: Option<BrokenStep>) {
    let (space, _) = space(broken);
    let fault = {
        let space = space.clone();
        thread::spawn(move || {
            for _ in 0..3 {
                let guard = space.guard_at(A);
                let found = space.lookup(A, &guard);
                assert!(
                    !matches!(found, Lookup::Baby),
                    "violated: a fault on an untouched page waits"
                );
                drop(guard);
                thread::yield_now();
            }
        })
    };
    space.munmap(A + 2 * P, P).unwrap();
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
    space.mmap(A + 2 * P, P, Prot::READ_WRITE, fixed, None).unwrap();
    space.mprotect(A, 3 * P, Prot::new(true, true, true)).unwrap();
    join(fault);
    assert_eq!(space.vma_count(), 2, "merged back");
}

#[test]
fn untouched_parts_never_wait_test() {
    check_both(100_000, || untouched_parts_never_wait(None));
}

#[test]
fn untouched_parts_wait_when_every_new_vma_is_baby() {
    assert_broken_variant_fails(100_000, &["violated"], || {
        untouched_parts_never_wait(Some(BrokenStep::UntouchedBaby))
    });
}
