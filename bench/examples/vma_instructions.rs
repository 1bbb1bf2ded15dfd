//! Makes COUNT mmap+munmap pairs (a one-page MAP_FIXED_NOREPLACE map into a free page above N
//! VMAs, then its munmap) in maplevm's `AddressSpace` or in the `rwlock` baseline's
//! bookkeeping, for counting instructions per pair with callgrind. Run it with two counts and
//! divide the difference by the difference of the counts, which cancels the set-up:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/vma_instructions maplevm 10 20000
//! ```

use bench::designs::vma_map::{Op, VmaMap};
use std::process::ExitCode;
use vma::request::MmapRequest;
use vma::{AddressSpace, Layout, MapFlags, NoFlush, PAGE_SIZE, Prot};

const BASE: u64 = 0x1000_0000;
const STRIDE: u64 = 2 * PAGE_SIZE;

fn map_request(at: u64, len: u64, prot: Prot) -> MmapRequest {
    let flags = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
    MmapRequest::new(Layout::X86_64, at, len, prot, flags, None).expect("a valid request")
}

fn prot_of(i: u64) -> Prot {
    if i % 2 == 0 { Prot::READ_WRITE } else { Prot::READ }
}

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
    let free = BASE + (vmas + 8) * STRIDE;
    match space.as_str() {
        "maplevm" => {
            let space = AddressSpace::new(Layout::X86_64, NoFlush).expect("x86-64 layout");
            for i in 0..vmas {
                space
                    .map(map_request(BASE + i * STRIDE, 2 * PAGE_SIZE, prot_of(i)))
                    .expect("map");
            }
            for _ in 0..count {
                space
                    .map(map_request(free, PAGE_SIZE, Prot::READ_WRITE))
                    .expect("map");
                space.munmap(free, PAGE_SIZE).expect("unmap");
            }
        }
        "rwlock" => {
            let map = std::sync::RwLock::new(VmaMap::new(Layout::X86_64));
            let change = |op: Op| {
                let mut map = map.write().unwrap();
                let planned = map.plan(&op).expect("valid change");
                for change in &planned.changes {
                    map.apply(change);
                }
            };
            for i in 0..vmas {
                change(Op::Map(map_request(BASE + i * STRIDE, 2 * PAGE_SIZE, prot_of(i))));
            }
            for _ in 0..count {
                change(Op::Map(map_request(free, PAGE_SIZE, Prot::READ_WRITE)));
                change(Op::Unmap(free, free + PAGE_SIZE));
            }
        }
        _ => {
            eprintln!("SPACE: maplevm or rwlock");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
