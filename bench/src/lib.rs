//! # bench
//!
//! maplevm's benchmarks. The criterion micro-benchmarks live in `benches/`:
//! - `rcu`: read-side guard enter/exit, retire and synchronize for each [`maple::rcu`] domain.
//!
//! The workload comparison command (`cargo run --release -p bench -- compare`) is not built yet.
