//! The small address space the shuttle suites above the tree run in (vma's protocol, fault's
//! engine, bench's designs): 64 pages, so that schedules stay short, and the addresses the
//! suites map at. Each suite uses some of these.
#![allow(dead_code)]

use vma::{Layout, PAGE_SIZE};

pub const P: u64 = PAGE_SIZE;
pub const LAYOUT: Layout = Layout {
    low: 0x10000,
    high: 0x10000 + 64 * P,
    mmap_base: 0x10000 + 48 * P,
};
/// Where the suites map their first VMA.
pub const A: u64 = 0x20000;
/// Where they map a second one, away from the first.
pub const B: u64 = 0x30000;
/// Scheduling points a schedule of the fault-level suites may take before it counts as a
/// livelock.
pub const STEPS: usize = 200_000;
