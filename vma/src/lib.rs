//! # vma
//!
//! VMAs with a reference count and BABY/ZOMBIE lifecycle states, and the address space that keeps
//! them in a [`maple`] tree. Not built yet.
