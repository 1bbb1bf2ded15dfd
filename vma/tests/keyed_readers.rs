//! Faults hold guards keyed at their address: a writer replacing other VMAs does not wait for
//! them, one replacing theirs does.
#![cfg(not(feature = "shuttle"))]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use vma::{AddressSpace, Layout, Lookup, MapFlags, NoFlush, PAGE_SIZE, Prot};

const P: u64 = PAGE_SIZE;
const LAYOUT: Layout = Layout {
    low: 0x10000,
    high: 0x10000 + 64 * P,
    mmap_base: 0x10000 + 48 * P,
};
/// Two VMAs with a hole between them.
const FIRST: u64 = 0x20000;
const SECOND: u64 = FIRST + 8 * P;

fn two_vmas() -> AddressSpace {
    let space = AddressSpace::new(LAYOUT, NoFlush).unwrap();
    for at in [FIRST, SECOND] {
        space
            .mmap(
                at,
                4 * P,
                Prot::READ_WRITE,
                MapFlags::PRIVATE_ANONYMOUS.fixed(),
                None,
            )
            .unwrap();
    }
    space
}

/// Whether `change` returns while another thread holds a guard keyed at `addr` with the VMA
/// it found there.
fn finishes_beside_fault(space: &AddressSpace, addr: u64, change: impl FnOnce(&AddressSpace) + Send) -> bool {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel();
    thread::scope(|scope| {
        scope.spawn(move || {
            let guard = space.guard_at(addr);
            let Lookup::Mapped(vma) = space.lookup(addr, &guard) else {
                panic!("{addr:#x} is mapped");
            };
            let start = vma.start();
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            assert_eq!(vma.start(), start, "the VMA found stays intact");
        });
        entered.recv().unwrap();
        scope.spawn(move || {
            change(space);
            done_tx.send(()).unwrap();
        });
        let finished = done.recv_timeout(Duration::from_millis(300)).is_ok();
        release.send(()).unwrap();
        if !finished {
            done.recv().unwrap();
        }
        finished
    })
}

#[test]
fn munmap_does_not_wait_for_a_fault_on_another_vma() {
    let space = two_vmas();
    assert!(finishes_beside_fault(&space, FIRST + P, |space| {
        space.munmap(SECOND, 4 * P).unwrap();
    }));
}

#[test]
fn mprotect_does_not_wait_for_a_fault_on_another_vma() {
    let space = two_vmas();
    assert!(finishes_beside_fault(&space, FIRST + P, |space| {
        space.mprotect(SECOND + P, P, Prot::READ).unwrap();
    }));
}

#[test]
fn munmap_waits_for_a_fault_on_its_vma() {
    let space = two_vmas();
    assert!(!finishes_beside_fault(&space, FIRST + P, |space| {
        space.munmap(FIRST + 3 * P, P).unwrap();
    }));
}
