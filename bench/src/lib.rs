//! # bench
//!
//! maplevm's comparison of address-space designs, and its micro-benchmarks.
//!
//! - [`designs`]: every design behind one trait ([`designs::Design`]) over the same page table,
//!   frame pool and fault install: `rcu`, `rcu-refonly`, `no-share`, `rwlock`, `rangelock`,
//!   `pervma`, `hugetlb-vma-lock`, `snapshot`;
//! - [`workload`]: the workloads (`private-churn`, `faults-under-churn`, `giant-vma`,
//!   `fixed-replace`, `shared-file`, `multi-process`, `shared-truncate`, `kravetz`, `long`,
//!   `fork-under-faults`, `replay-under-faults`),
//!   each run measuring faults/s, a fault latency histogram, writer ops/s, fault waits, share
//!   lookup waits, page-table size and peak memory;
//! - [`report`]: tables, JSON and SVG charts;
//! - [`trace_target`]: a design as the target of a trace's replay (`replay-under-faults`);
//! - [`fork_cost`]: fork's latency against the number of VMAs and their pages (`bench fork-cost`);
//! - [`table_memory`]: page-table memory per address space with and without PMD sharing
//!   (`bench table-memory`);
//! - `uffd_bench` (Linux): real hardware faults served through userfaultfd by maplevm beside
//!   the kernel's own (`bench uffd`);
//! - [`fault_cost`]: single-thread fault cost per page, and the paired rounds that compare it
//!   across engines on a noisy machine (`bench fault-cost`);
//! - the binary: `bench compare` (README's main command), `bench fault-cost` (see
//!   [`fault_cost`]) and `bench replay FILE` (a trace of address-space operations, see
//!   `vma::trace`).
//!
//! The criterion micro-benchmarks live in `benches/`:
//! - `rcu`: read-side guard enter/exit, retire and synchronize for each [`maple::rcu`] domain;
//! - `maple`: the maple tree beside std's BTreeMap, scc's TreeIndex and crossbeam's SkipMap;
//! - `vma`: address-space operations beside the `rwlock` design's bookkeeping
//!   ([`vma_spaces`]);
//! - `fault`: fault cost per page (fast path, slow path, with and without zero-filling)
//!   beside [`unsync_engine::UnsyncEngine`] and [`unsync_engine::ProtocolAtomicsEngine`] (the
//!   same engine plus the read-side section and compare-and-swap install of any lock-free
//!   fault), and two threads faulting one VMA;
//! - `designs`: every design's fault and mmap/munmap paths side by side.
//!
//! See docs/benchmarks.md.

pub mod designs;
pub mod fault_cost;
pub mod fork_cost;
pub mod report;
pub mod table_memory;
pub mod trace_target;
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub mod uffd_bench;
pub mod unsync_engine;
pub mod vma_spaces;
pub mod workload;
