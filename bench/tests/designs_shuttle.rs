//! Every design of the comparison under shuttle (random and PCT schedulers), through the sync
//! facade: a fault racing munmap completes before munmap returns or fails, and no translation
//! is left or appears afterwards (G2); a write fault racing mprotect to read-only leaves no
//! writable translation; nothing leaks. The deliberately broken `pervma` (writers skip the
//! reader drain) must fail. Run with `--features shuttle`.
#![cfg(feature = "shuttle")]

use bench::designs::{self, Design, DesignConfig, NAMES, PerVmaDesign};
use fault::{Access, Fault, FaultError, FramePool, FramePoolConfig, Memory};
use maple::sync::{Arc, thread};
use maple::testing::{assert_broken_variant_fails, check_random_and_pct as check_both};
use vma::{MapFlags, Prot};

#[path = "../../vma/tests/support/shuttle_space.rs"]
mod shuttle_space;
use shuttle_space::{A, LAYOUT, P, STEPS};

fn pool() -> std::sync::Arc<FramePool> {
    std::sync::Arc::new(
        FramePool::new(FramePoolConfig {
            chunk_frames: 8,
            max_frames: 32,
        })
        .unwrap(),
    )
}

fn design(name: &str) -> Arc<dyn Design> {
    let config = DesignConfig {
        layout: LAYOUT,
        zero_fill: true,
    };
    designs::build(name, config, pool()).unwrap()
}

fn writable_anon(design: &dyn Design) {
    let flags = MapFlags::PRIVATE_ANONYMOUS.fixed();
    design.mmap(A, P, Prot::READ_WRITE, flags, None).unwrap();
}

/// Unmaps everything; every table and frame goes back.
fn assert_nothing_leaked(design: &dyn Design) {
    design.munmap(LAYOUT.low, LAYOUT.high - LAYOUT.low).unwrap();
    design.barrier();
    assert_eq!(
        design.memory().table().tables(),
        0,
        "violated: page tables leaked"
    );
    assert_eq!(design.memory().frames().in_use(), 0, "violated: frames leaked");
}

fn join<T>(handle: thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A thread making a write fault at `A`, which must install the page or, having lost the race
/// to the writer, fail with `lost`.
fn racing_write_fault(design: &Arc<dyn Design>, lost: FaultError) -> thread::JoinHandle<()> {
    let design = design.clone();
    thread::spawn(move || {
        let result = design.fault(A, Access::Write);
        assert!(
            result == Ok(Fault::Installed) || result == Err(lost),
            "{result:?}"
        );
    })
}

/// G2 for `design`: a fault racing munmap.
fn fault_racing_munmap(design: Arc<dyn Design>) {
    writable_anon(&*design);
    let faulting = racing_write_fault(&design, FaultError::NotMapped);
    design.munmap(A, P).unwrap();
    let table = design.memory().table();
    assert!(
        table.translate(A).is_none(),
        "violated: a translation exists when munmap returns"
    );
    join(faulting);
    assert!(
        table.translate(A).is_none(),
        "violated: a translation appeared after munmap"
    );
    assert_nothing_leaked(&*design);
}

/// A write fault racing mprotect to read-only never leaves a writable translation.
fn write_fault_racing_mprotect(design: Arc<dyn Design>) {
    writable_anon(&*design);
    let faulting = racing_write_fault(&design, FaultError::AccessDenied);
    design.mprotect(A, P, Prot::READ).unwrap();
    let writable = || {
        design
            .memory()
            .table()
            .translate(A)
            .is_some_and(|pte| pte.writable())
    };
    assert!(!writable(), "violated: writable after mprotect returned");
    join(faulting);
    assert!(!writable(), "violated: writable after mprotect returned");
    assert_nothing_leaked(&*design);
}

#[test]
fn g2_fault_racing_munmap_in_every_design() {
    for name in NAMES {
        check_both(STEPS, move || fault_racing_munmap(design(name)));
    }
}

#[test]
fn write_fault_racing_mprotect_in_every_design() {
    for name in NAMES {
        check_both(STEPS, move || write_fault_racing_mprotect(design(name)));
    }
}

#[test]
fn a_design_whose_writers_skip_the_reader_drain_fails() {
    let broken = || {
        let memory = Memory::new(pool(), true);
        fault_racing_munmap(PerVmaDesign::with_broken_write_lock(LAYOUT, memory));
    };
    assert_broken_variant_fails(STEPS, &["violated"], broken);
}
