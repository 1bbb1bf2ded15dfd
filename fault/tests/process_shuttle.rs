//! Processes under shuttle (random and PCT schedulers).
//!
//! fork: a write fault of the parent racing its fork.
//! The page was the parent's alone and read-only (a write upgrades it in place), so the fault
//! checks whether another address space shares the frame and then makes it writable; fork
//! fences the VMA while it shares the frame with the child, so the fault either upgraded before
//! the copy (which then write-protects it again) or finds the frame shared and copies it. What
//! the parent writes after fork returned never reaches the child. The broken variant skips the
//! fence: the fault makes the frame the child shares writable, and the parent's later write
//! shows in the child.
//!
//! Stack growth: a fault on a stack's own page racing a fault below it, which grows the stack,
//! and another growing it further. The growth is usable at once, so the fault on the old page
//! never waits, and both growths stand. The broken variant publishes the grown stack BABY, as
//! an ordinary change: the fault on the old page waits.
//!
//! MAP_DROPPABLE: a write racing the drop of its pages (the reclaim MADV_FREE's pages share).
//! Run with `--features shuttle`.
#![cfg(feature = "shuttle")]

use fault::{Access, FramePool, FramePoolConfig, MapFlags, Mm, MmConfig, Prot};
use maple::sync::{Arc, thread};
use maple::testing::{assert_broken_variant_fails, check_random_and_pct as check_both};

#[path = "../../vma/tests/support/shuttle_space.rs"]
mod shuttle_space;
use shuttle_space::{A, LAYOUT, P, STEPS};

fn pool() -> Arc<FramePool> {
    let config = FramePoolConfig {
        chunk_frames: 8,
        max_frames: 64,
    };
    Arc::new(FramePool::new(config).unwrap())
}

fn config() -> MmConfig {
    MmConfig {
        layout: LAYOUT,
        ..MmConfig::default()
    }
}

fn fork_racing_write_fault(broken: bool) {
    let parent = Arc::new(Mm::new(config(), pool()).unwrap());
    if broken {
        parent.memory().break_fault_fence();
    }
    let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed();
    parent.mmap(A, P, Prot::READ_WRITE, fixed, None).unwrap();
    parent.write(A, &[1]).unwrap();
    // Read-only now, still the parent's alone: a write upgrades it in place.
    parent.mprotect(A, P, Prot::READ).unwrap();
    parent.mprotect(A, P, Prot::READ_WRITE).unwrap();
    let writer = {
        let parent = parent.clone();
        thread::spawn(move || parent.write(A, &[2]).unwrap())
    };
    let child = parent.fork().unwrap();
    writer.join().unwrap();
    parent.write(A, &[3]).unwrap();
    let mut seen = [0];
    child.read(A, &mut seen).unwrap();
    assert!(
        seen[0] == 1 || seen[0] == 2,
        "violated: the child sees {} the parent wrote after fork returned",
        seen[0]
    );
    drop(child);
    parent.munmap(A, P).unwrap();
    parent.barrier();
}

#[test]
fn a_write_fault_racing_fork_never_reaches_the_child() {
    check_both(STEPS, || fork_racing_write_fault(false));
}

#[test]
fn fork_without_the_fence_lets_a_later_write_reach_the_child() {
    assert_broken_variant_fails(STEPS, &["violated"], || fork_racing_write_fault(true));
}

fn growth_racing_faults(broken: bool) {
    let mm = Arc::new(match broken {
        true => Mm::with_broken_protocol(config(), pool(), vma::BrokenStep::GrowthBaby).unwrap(),
        false => Mm::new(config(), pool()).unwrap(),
    });
    let stack = MapFlags {
        growsdown: true,
        ..MapFlags::PRIVATE_ANONYMOUS.fixed()
    };
    mm.mmap(A, 2 * P, Prot::READ_WRITE, stack, None).unwrap();
    let on_the_stack = {
        let mm = mm.clone();
        thread::spawn(move || mm.fault(A, Access::Write))
    };
    let further = {
        let mm = mm.clone();
        thread::spawn(move || mm.fault(A - 2 * P, Access::Write))
    };
    mm.fault(A - P, Access::Write).unwrap();
    on_the_stack.join().unwrap().unwrap();
    further.join().unwrap().unwrap();
    assert_eq!(
        mm.stats().waits.count,
        0,
        "violated: a fault on the stack waited for its growth"
    );
    let guard = mm.space().guard();
    let vmas: Vec<(u64, u64)> = mm
        .space()
        .iter_from(0, &guard)
        .map(|v| (v.start(), v.end()))
        .collect();
    drop(guard);
    assert_eq!(vmas, vec![(A - 2 * P, A + 2 * P)], "both growths stand");
    mm.munmap(A - 2 * P, 4 * P).unwrap();
    mm.barrier();
}

#[test]
fn a_fault_on_a_stack_never_waits_for_its_growth() {
    check_both(STEPS, || growth_racing_faults(false));
}

#[test]
fn growth_published_baby_makes_the_stacks_faults_wait() {
    assert_broken_variant_fails(STEPS, &["violated"], || growth_racing_faults(true));
}

/// MAP_DROPPABLE: a write racing memory pressure that drops the pages lands either before the
/// drop (and goes with it) or after (in a fresh zeroed page); a dropped frame goes back only
/// after the sections that may still copy into it, so each byte reads what was written or
/// zero, and nothing leaks.
#[test]
fn a_write_racing_a_drop_lands_or_goes_whole() {
    check_both(STEPS, || {
        let mm = Arc::new(Mm::new(config(), pool()).unwrap());
        let droppable = MapFlags {
            private: false,
            droppable: true,
            ..MapFlags::PRIVATE_ANONYMOUS.fixed()
        };
        mm.mmap(A, 2 * P, Prot::READ_WRITE, droppable, None).unwrap();
        mm.write(A, &[1]).unwrap();
        // Across the two pages: each half may be dropped or not.
        let writer = {
            let mm = mm.clone();
            thread::spawn(move || mm.write(A + P - 1, &[2, 3]).unwrap())
        };
        mm.reclaim(4);
        writer.join().unwrap();
        let mut seen = [0; 2];
        mm.read(A + P - 1, &mut seen).unwrap();
        assert!(
            matches!(seen, [0 | 2, 0 | 3]),
            "violated: the bytes read {seen:?}"
        );
        mm.munmap(A, 2 * P).unwrap();
        mm.barrier();
        assert_eq!(mm.frames().in_use(), 0, "violated: frames leaked");
    });
}
