//! # fault
//!
//! The fault layer's building blocks: a [`frames::FramePool`] of real 4 KiB frames and a
//! lock-free 4-level [`pagetable::PageTable`]. The fault engine and the embeddable memory
//! manager that tie them to `vma::AddressSpace` are not built yet.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod frames;
pub mod pagetable;
