//! Embedding maplevm's memory manager: four threads write and check their own memory while a
//! fifth maps, protects and unmaps other regions in a loop; the faults on untouched memory never
//! wait for it. Prints the statistics at the end.
//!
//! `cargo run --release -p fault --example embed`

use fault::{Access, FaultError, FramePool, FramePoolConfig, Mm, MmConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vma::{MapFlags, PAGE_SIZE, Prot};

const WORKERS: u64 = 4;
const PAGES: u64 = 1024;

fn main() {
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).expect("pool"));
    let mm = Arc::new(Mm::new(MmConfig::default(), frames.clone()).expect("memory manager"));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let (mm, stop) = (mm.clone(), stop.clone());
            std::thread::spawn(move || {
                let base = mm
                    .mmap(
                        0,
                        PAGES * PAGE_SIZE,
                        Prot::READ_WRITE,
                        MapFlags::PRIVATE_ANONYMOUS,
                        None,
                    )
                    .expect("mmap");
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tag = (rounds as u8).wrapping_add(id as u8);
                    for page in 0..PAGES {
                        mm.write(base + page * PAGE_SIZE, &[tag]).expect("write");
                    }
                    let mut byte = [0];
                    mm.read(base + (rounds % PAGES) * PAGE_SIZE, &mut byte)
                        .expect("read");
                    assert_eq!(byte[0], tag);
                    // Give the pages back now and then, so that faults keep happening.
                    mm.madvise_dontneed(base, PAGES * PAGE_SIZE).expect("madvise");
                    rounds += 1;
                }
                mm.munmap(base, PAGES * PAGE_SIZE).expect("munmap");
                rounds
            })
        })
        .collect();

    let writer = {
        let (mm, stop) = (mm.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let len = 64 * PAGE_SIZE;
                // A hint far from the workers' memory: placed next to it, the region would
                // merge with a worker's VMA (as on Linux) and that worker's faults would wait
                // for the merge.
                let at = mm
                    .mmap(
                        0x1000_0000,
                        len,
                        Prot::READ_WRITE,
                        MapFlags::PRIVATE_ANONYMOUS,
                        None,
                    )
                    .expect("mmap");
                mm.write(at, b"scratch").expect("write");
                mm.mprotect(at, len / 2, Prot::READ).expect("mprotect");
                assert_eq!(mm.fault(at, Access::Write), Err(FaultError::AccessDenied));
                mm.munmap(at, len).expect("munmap");
                ops += 4;
            }
            ops
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let rounds: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    let ops = writer.join().expect("writer");
    let elapsed = started.elapsed().as_secs_f64();
    mm.barrier();

    let stats = mm.stats();
    println!(
        "{WORKERS} workers: {rounds} rounds of {PAGES} pages; writer: {ops} operations; {:.2} s",
        elapsed
    );
    println!("{:.0} faults/s", stats.faults() as f64 / elapsed);
    println!("{stats}");
    println!("frames in use at the end: {}", frames.in_use());
}
