//! # bench
//!
//! maplevm's benchmarks. The criterion micro-benchmarks live in `benches/`:
//! - `rcu`: read-side guard enter/exit, retire and synchronize for each [`maple::rcu`] domain.
//!
//! - `maple`: the maple tree beside std's BTreeMap, scc's TreeIndex and crossbeam's SkipMap;
//! - `vma`: address-space operations beside [`rwlock_space::RwLockSpace`];
//! - `fault`: fault cost per page (fast path, slow path, with and without zero-filling)
//!   beside [`unsync_engine::UnsyncEngine`], and two threads faulting one VMA.
//!
//! The binary replays traces (`bench replay FILE`). The workload comparison command
//! (`cargo run --release -p bench -- compare`) is not built yet.

pub mod designs;
pub mod report;
pub mod rwlock_space;
pub mod unsync_engine;
pub mod workload;
