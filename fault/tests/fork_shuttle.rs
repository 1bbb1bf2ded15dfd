//! fork under shuttle (random and PCT schedulers): a write fault of the parent racing its fork.
//! The page was the parent's alone and read-only (a write upgrades it in place), so the fault
//! checks whether another address space shares the frame and then makes it writable; fork
//! fences the VMA while it shares the frame with the child, so the fault either upgraded before
//! the copy (which then write-protects it again) or finds the frame shared and copies it. What
//! the parent writes after fork returned never reaches the child. The broken variant skips the
//! fence: the fault makes the frame the child shares writable, and the parent's later write
//! shows in the child. Run with `--features shuttle`.
#![cfg(feature = "shuttle")]

use fault::{FramePool, FramePoolConfig, MapFlags, Mm, MmConfig, Prot};
use maple::sync::{Arc, thread};
use maple::testing::{assert_broken_variant_fails, check_random_and_pct as check_both};

#[path = "../../vma/tests/support/shuttle_space.rs"]
mod shuttle_space;
use shuttle_space::{A, LAYOUT, P, STEPS};

fn fork_racing_write_fault(broken: bool) {
    let config = FramePoolConfig {
        chunk_frames: 8,
        max_frames: 64,
    };
    let frames = Arc::new(FramePool::new(config).unwrap());
    let parent = Arc::new(
        Mm::new(
            MmConfig {
                layout: LAYOUT,
                ..MmConfig::default()
            },
            frames.clone(),
        )
        .unwrap(),
    );
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
