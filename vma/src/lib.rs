//! # vma
//!
//! VMAs (virtual memory areas) with a reference count and BABY/ZOMBIE lifecycle states, kept in
//! an RCU-safe [`maple`] tree, and the [`AddressSpace`] that changes them with Linux semantics
//! (mmap, munmap, mprotect, mremap, brk) through one replacement protocol. A fault finds its VMA
//! with [`AddressSpace::lookup`] under an RCU guard, without any lock; only a fault where a
//! writer revokes access (unmaps, takes a permission, replaces, moves) waits for it.
//!
//! ```
//! use vma::{AddressSpace, Layout, MapFlags, NoFlush, Prot, Lookup};
//!
//! let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
//! let a = space.mmap(0, 3 * 4096, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None).unwrap();
//! // Read-only in the middle page: one VMA becomes three.
//! space.mprotect(a + 4096, 4096, Prot::READ).unwrap();
//! assert_eq!(space.vma_count(), 3);
//! // ... and back: they merge again.
//! space.mprotect(a + 4096, 4096, Prot::READ_WRITE).unwrap();
//! assert_eq!(space.vma_count(), 1);
//!
//! let guard = space.guard();
//! match space.lookup(a + 100, &guard) {
//!     Lookup::Mapped(vma) => assert_eq!((vma.start(), vma.end()), (a, a + 3 * 4096)),
//!     other => panic!("{other:?}"),
//! }
//! drop(guard);
//! space.munmap(a, 3 * 4096).unwrap();
//! assert_eq!(space.maps(), "");
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
pub mod limits;
pub mod maps;
mod protocol;
pub mod query;
pub mod request;
mod space;
pub mod trace;
mod vma;

pub use error::{Errno, Error, Result};
pub use limits::{Limits, Usage};
pub use maps::{FileIdentity, MapsLine};
#[doc(hidden)]
pub use protocol::BrokenStep;
pub use protocol::{FlushHook, NoFlush, Revoked, SpaceStats};
pub use query::{QueryFlags, VmaInfo};
pub use request::{Layout, MapFlags, RemapFlags};
pub use space::{AddressSpace, Lookup};
pub use vma::{
    AnonSlot, AnonVma, Backing, HugeAnonymous, MappedFile, Mapping, Prot, SharedAnonymous, Unusable, Vma,
    VmaRef,
};

/// Page size: 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// The gap kept free below a stack (a mapping that grows down): mmap places nothing there, and
/// a stack grows no closer to the accessible mapping below it (Linux's `stack_guard_gap`, 256
/// pages).
pub const STACK_GUARD_GAP: u64 = 256 * PAGE_SIZE;
/// The most a stack grows to (Linux's default `RLIMIT_STACK`, 8 MiB).
pub const STACK_LIMIT: u64 = 8 << 20;
