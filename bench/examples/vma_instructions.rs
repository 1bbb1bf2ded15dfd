//! Makes COUNT mmap+munmap pairs (a one-page MAP_FIXED_NOREPLACE map into a free page above N
//! VMAs, then its munmap) in maplevm's `AddressSpace` or in the `rwlock` baseline's
//! bookkeeping — the spaces of `benches/vma.rs` (`bench::vma_spaces`) — for counting
//! instructions per pair with callgrind. Run it with two counts and divide the difference by the
//! difference of the counts, which cancels the set-up:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/vma_instructions maplevm 10 20000
//! ```

use bench::vma_spaces::{RwLockSpace, filled_address_space, free_page_above};
use std::process::ExitCode;
use vma::{MapFlags, PAGE_SIZE, Prot};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [space, vmas, count] = args.as_slice() else {
        eprintln!("usage: vma_instructions maplevm|rwlock VMAS COUNT");
        return ExitCode::from(2);
    };
    let (Ok(vmas), Ok(count)) = (vmas.parse::<u64>(), count.parse::<u64>()) else {
        eprintln!("VMAS and COUNT: numbers");
        return ExitCode::from(2);
    };
    let free = free_page_above(vmas);
    match space.as_str() {
        "maplevm" => {
            let space = filled_address_space(vmas);
            let flags = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
            for _ in 0..count {
                space
                    .mmap(free, PAGE_SIZE, Prot::READ_WRITE, flags, None)
                    .expect("map");
                space.munmap(free, PAGE_SIZE).expect("unmap");
            }
        }
        "rwlock" => {
            let space = RwLockSpace::filled(vmas);
            for _ in 0..count {
                space
                    .mmap_fixed_noreplace(free, PAGE_SIZE, Prot::READ_WRITE)
                    .expect("map");
                space.munmap(free, PAGE_SIZE).expect("unmap");
            }
        }
        _ => {
            eprintln!("SPACE: maplevm or rwlock");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
