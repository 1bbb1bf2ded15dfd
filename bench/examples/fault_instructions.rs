//! Makes COUNT faults on one design, for counting instructions per fault with callgrind (a
//! repeatable figure where timings on a noisy machine are not): run it with two counts and
//! divide the difference by the difference of the counts, which cancels the set-up.
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/fault_instructions rcu new 20000
//! ```
//!
//! KIND is `new` (each fault installs a new zero-filled anonymous page) or `mapped` (the page
//! is already mapped: only the lookup and the design's read-side synchronization).

use bench::designs::{self, DesignConfig};
use fault::{Access, FramePool, FramePoolConfig};
use std::process::ExitCode;
use std::sync::Arc;
use vma::{MapFlags, PAGE_SIZE, Prot};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [design, kind, count] = args.as_slice() else {
        eprintln!("usage: fault_instructions DESIGN new|mapped COUNT");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<u64>() else {
        eprintln!("COUNT: not a number");
        return ExitCode::from(2);
    };
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).expect("default pool"));
    let Some(design) = designs::build(design, DesignConfig::default(), frames) else {
        eprintln!("unknown design {design}");
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
    let region = design
        .mmap(
            0,
            pages * PAGE_SIZE,
            Prot::READ_WRITE,
            MapFlags::PRIVATE_ANONYMOUS,
            None,
        )
        .expect("map the region");
    if kind == "mapped" {
        for page in 0..pages {
            design
                .fault(region + page * PAGE_SIZE, Access::Write)
                .expect("fault");
        }
    }
    for i in 0..count {
        design
            .fault(region + (i % pages) * PAGE_SIZE, Access::Write)
            .expect("fault");
    }
    ExitCode::SUCCESS
}
