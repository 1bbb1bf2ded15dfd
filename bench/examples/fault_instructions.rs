//! Makes COUNT faults on one design, for counting instructions per fault with callgrind (a
//! repeatable figure where timings on a noisy machine are not). Counting only inside the fault
//! calls and running it with two counts, the difference divided by the difference of the counts
//! is the cost of one fault:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --toggle-collect='*Design>::fault' --toggle-collect='*UnsyncEngine*::fault' \
//!     target/release/examples/fault_instructions rcu new 20000 --no-zero-fill
//! ```
//!
//! DESIGN is one of the benchmark's designs, `unsync` (the engine with no synchronization
//! that `cargo bench --bench fault` sets maplevm's beside) or `unsync-atomics` (the same engine
//! with the read-side section and compare-and-swap install a lock-free fault needs:
//! `ProtocolAtomicsEngine`). KIND is `new` (each fault installs a new anonymous page) or
//! `mapped` (the page is already mapped: only the lookup and the design's read-side
//! synchronization). New pages are zero-filled unless `--no-zero-fill`. The
//! frame pool is grown to the run's size before the faults (as the benchmarks' recycled frames
//! are), so that no fault pays for a new chunk.

use bench::designs::{self, DesignConfig};
use bench::fault_cost::{REGION, frame_pool};
use bench::unsync_engine::{ProtocolAtomicsEngine, UnsyncEngine};
use fault::Access;
use std::process::ExitCode;
use vma::{MapFlags, PAGE_SIZE, Prot};

const USAGE: &str = "usage: fault_instructions DESIGN new|mapped COUNT [--no-zero-fill]";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let zero_fill = match args.iter().position(|arg| arg == "--no-zero-fill") {
        Some(at) => {
            args.remove(at);
            false
        }
        None => true,
    };
    let [design, kind, count] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<u64>() else {
        eprintln!("COUNT: not a number");
        return ExitCode::from(2);
    };
    let pages = match kind.as_str() {
        "new" => count,
        "mapped" => 512,
        _ => {
            eprintln!("KIND: new or mapped");
            return ExitCode::from(2);
        }
    };
    let frames = frame_pool();
    // Grows the pool to the frames the run needs before it starts: a new chunk (2 MiB zeroed)
    // is set-up, not fault cost, and the difference of two counts would not cancel it.
    let warm: Vec<_> = (0..pages).map_while(|_| frames.alloc()).collect();
    // SAFETY: frames just allocated here, never mapped: nothing else uses them.
    unsafe { frames.put_many(&warm) };
    let config = DesignConfig {
        zero_fill,
        ..DesignConfig::default()
    };
    // Faults the region's pages once each if they are to be mapped already, then COUNT times.
    let run = |fault: &mut dyn FnMut(u64)| {
        if kind == "mapped" {
            (0..pages).for_each(|page| fault(page * PAGE_SIZE));
        }
        (0..count).for_each(|i| fault((i % pages) * PAGE_SIZE));
    };
    match design.as_str() {
        "unsync" => return run_unsync(UnsyncEngine::<false>::new(frames, zero_fill), pages, run),
        "unsync-atomics" => return run_unsync(ProtocolAtomicsEngine::new(frames, zero_fill), pages, run),
        _ => {}
    }
    let Some(design) = designs::build(design, config, frames) else {
        eprintln!("unknown design {design}");
        return ExitCode::from(2);
    };
    let flags = MapFlags::PRIVATE_ANONYMOUS;
    let region = design
        .mmap(0, pages * PAGE_SIZE, Prot::READ_WRITE, flags, None)
        .expect("map the region");
    run(&mut |offset| {
        design.fault(region + offset, Access::Write).expect("fault");
    });
    ExitCode::SUCCESS
}

/// Runs the faults on an unsynchronized engine over a region of `pages`.
fn run_unsync<const PROTOCOL_ATOMICS: bool>(
    mut engine: UnsyncEngine<PROTOCOL_ATOMICS>,
    pages: u64,
    run: impl Fn(&mut dyn FnMut(u64)),
) -> ExitCode {
    engine.map(REGION, pages * PAGE_SIZE, Prot::READ_WRITE);
    run(&mut |offset| engine.fault(REGION + offset, Access::Write).expect("fault"));
    ExitCode::SUCCESS
}
