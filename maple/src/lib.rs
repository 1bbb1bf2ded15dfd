//! # maple
//!
//! An RCU-safe range tree after the Linux kernel's maple tree, and the RCU foundation under it.
//!
//! [`MapleTree`] maps disjoint inclusive ranges of `u64` indices to values (held by an owning
//! pointer, [`ValuePointer`]: `Box` or `Arc`). Readers never lock
//! and never write shared memory: they enter a read-side section ([`MapleTree::guard`]) and
//! walk from the root. Writers are serialized by the tree, build replacement nodes
//! copy-on-write, publish them with one store, and retire the replaced nodes to the tree's
//! [`rcu`] domain, which frees them after a grace period. Internal nodes record the largest gap
//! below each child, so [`MapleTree::find_gap`] and [`MapleTree::find_gap_rev`] find free ranges
//! in O(log n).
//!
//! ```
//! use maple::MapleTree;
//!
//! // Values are owning pointers (Box or Arc), stored in the tree's slots as raw pointers.
//! let tree: MapleTree<Box<&'static str>> = MapleTree::new();
//! tree.insert_range(0x1000, 0x1fff, Box::new("text")).unwrap();
//! tree.insert_range(0x4000, 0x4fff, Box::new("data")).unwrap();
//! assert!(tree.insert_range(0x1800, 0x2fff, Box::new("overlap")).is_err());
//!
//! let guard = tree.guard();
//! assert_eq!(tree.load(0x1234, &guard), Some(&"text"));
//! assert_eq!(tree.load_range(0x4321, &guard), Some((0x4000, 0x4fff, &"data")));
//! let ranges: Vec<_> = tree.iter(&guard).map(|(first, last, _)| (first, last)).collect();
//! assert_eq!(ranges, [(0x1000, 0x1fff), (0x4000, 0x4fff)]);
//! drop(guard);
//!
//! // The lowest and the highest free 0x1000 indices inside [0x1000, 0x5fff].
//! assert_eq!(tree.find_gap(0x1000, 0x5fff, 0x1000), Ok(Some((0x2000, 0x2fff))));
//! assert_eq!(tree.find_gap_rev(0x1000, 0x5fff, 0x1000), Ok(Some((0x5000, 0x5fff))));
//!
//! // A store splits what it overlaps; erasing hands the value back after a grace period.
//! drop(tree.store_range(0x1400, 0x14ff, Box::new("patch")).unwrap());
//! assert_eq!(tree.len(), 4);
//! let taken = tree.erase(0x4000).reclaim();
//! assert_eq!(taken, [(0x4000, 0x4fff, Box::new("data"))]);
//! tree.validate().unwrap();
//! ```
//!
//! The crate has two parts with one seam between them:
//! - the **runtime** every layer of maplevm uses: [`sync`], the facade every atomic, lock,
//!   thread and wait goes through, so the same code runs under the shuttle model checker with
//!   `--features shuttle`; [`rcu`], the read-copy-update domains (with keyed read-side
//!   sections); [`thread_index`], small per-thread numbers for per-thread slots;
//! - the **tree** built on it: [`MapleTree`] and its guards, writer and displaced values;
//!   [`intervals::IntervalTree`], overlapping intervals kept in a maple tree (a file's
//!   reverse map).
//!
//! The layers above import the runtime directly (`maple::sync`, `maple::rcu`) and the tree by
//! its types; the tree uses nothing of theirs. `testing` holds what the tests of every crate
//! share (a seeded generator, the shuttle runner).
#![deny(unsafe_op_in_unsafe_fn)]

mod cache_aligned;
mod error;
pub mod intervals;
mod node;
mod pointer;
pub mod rcu;
mod reclaim;
pub mod sync;
#[doc(hidden)]
pub mod testing;
pub mod thread_index;
mod tree;
mod validate;

pub use error::MapleError;
pub use pointer::ValuePointer;
pub use tree::{Displaced, Guard, Iter, MapleTree, TreeStats, Writer};
