//! # maple
//!
//! The foundation of maplevm: a [`sync`] facade that lets the same code run on std and under the
//! shuttle model checker, and [`rcu`], the read-copy-update domains that let readers walk shared
//! structures without locks while writers free what they replace only after a grace period.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod rcu;
pub mod sync;
