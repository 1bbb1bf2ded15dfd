//! # fault
//!
//! Page faults that find their VMA without any address-space lock, over a software page table
//! and a pool of real frames, tied together in [`Mm`]: an embeddable memory manager whose
//! memory can be mapped, faulted, read and written with Linux-like results.
//!
//! - [`frames`]: the frame pool (4 KiB frames with reference counts, per-thread free lists);
//! - [`pagetable`]: a lock-free 4-level page table;
//! - [`File`]: an object any number of address spaces map — its page cache, size and reverse
//!   map, and the file-side calls (`read_at`, `write_at`, `set_len`, `punch_hole`): see
//!   docs/files.md;
//! - [`backing`]: the storage under a file's page cache (the [`Backing`] trait,
//!   [`MemBacking`]);
//! - [`Memory`]: a page table and its frames, with the fault-side install (`settle`,
//!   `read_in`) and the writer-side flushes, for any design that finds VMAs its own way;
//! - the engine ([`Mm::fault`]): an RCU-only fast path and a slow path that holds a VMA
//!   reference across blocking reads (see docs/fault.md);
//! - [`Mm`]: mmap / munmap / mprotect / mremap / brk / madvise_dontneed, `read` / `write`,
//!   statistics.
//!
//! ```
//! use fault::{Access, FaultError, FramePool, FramePoolConfig, MapFlags, Mm, MmConfig, Prot};
//! use std::sync::Arc;
//!
//! let frames = Arc::new(FramePool::new(FramePoolConfig::default()).unwrap());
//! let mm = Mm::new(MmConfig::default(), frames).unwrap();
//! let a = mm.mmap(0, 2 * 4096, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None).unwrap();
//! mm.write(a + 4090, b"hello, world").unwrap(); // crosses a page boundary
//! let mut buf = [0; 12];
//! mm.read(a + 4090, &mut buf).unwrap();
//! assert_eq!(&buf, b"hello, world");
//!
//! mm.mprotect(a, 2 * 4096, Prot::READ).unwrap();
//! assert_eq!(mm.write(a, b"x").unwrap_err().error, FaultError::AccessDenied);
//! mm.munmap(a, 2 * 4096).unwrap();
//! assert_eq!(mm.fault(a, Access::Read), Err(FaultError::NotMapped));
//! println!("{}", mm.stats());
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backing;
mod engine;
mod fence;
mod file;
pub mod frames;
mod memory;
mod mm;
mod page_cache;
pub mod pagetable;
mod pmd_share;
mod shard;
mod smaps;
mod stats;
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub mod uffd;

pub use backing::{Backing, MemBacking};
pub use engine::{Access, AccessError, Fault, FaultError, Progress, allows, populate};
pub use file::{File, FileSync, MAX_FILE_LEN, MappedRange, Mapper, ReverseMapWriter};
pub use frames::{Frame, FramePool, FramePoolConfig, HUGE_FRAME_SIZE, Shrinker};
pub use memory::{Memory, reserve_huge_pages};
pub use mm::{Mm, MmConfig};
pub use page_cache::BackingError;
pub use smaps::Smaps;
pub use stats::{FaultStats, Waits};
// What an `Mm` user needs from the VMA layer, so that a program embedding `Mm` depends on this
// crate alone.
pub use vma::{Errno, Error, Layout, MapFlags, PAGE_SIZE, Prot, RemapFlags};
