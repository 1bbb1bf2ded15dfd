//! The running kernel as an oracle for maplevm's semantics.
//!
//! - [`child`]: raw system calls made in a forked child process, whose result and
//!   `/proc/self/maps` come back through a pipe, and scratch ranges of the address space for
//!   them to lay mappings out in.
//! - [`replay`]: a trace (`vma::trace`) replayed with real system calls in such a child,
//!   printed as maplevm's `AddressSpace::maps` prints a replay, so the two compare line for
//!   line.
//!
//! Both exist on Linux on x86-64 only (the expectations are x86-64's); elsewhere the crate is
//! empty and its users say why they skip.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

pub mod child;
pub mod replay;

/// Linux's `PROT_*` bits for `prot`.
pub fn prot_bits(prot: vma::Prot) -> i32 {
    [
        (prot.read, libc::PROT_READ),
        (prot.write, libc::PROT_WRITE),
        (prot.exec, libc::PROT_EXEC),
    ]
    .into_iter()
    .filter(|&(on, _)| on)
    .fold(0, |bits, (_, bit)| bits | bit)
}
