//! # fault
//!
//! The fault engine, software page table and frame pool. Not built yet.
