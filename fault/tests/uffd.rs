//! Real memory served through userfaultfd (`fault::uffd`): threads load and store through
//! plain pointers into a region whose VMAs maplevm keeps. Checks the data a fault brings
//! (zeros, a file's page, a private copy), that after munmap and mprotect return the kernel
//! refuses what the VMAs no longer allow, and a race of threads writing their own pages
//! while another maps, replaces and unmaps ranges beside them. Probes go through
//! `process_vm_readv` / `process_vm_writev`, which fail with EFAULT where this process's own
//! load or store would be a segmentation fault; a load past a file's end must end a child
//! process (this binary again) with SIGBUS. Skipped, with the reason, where userfaultfd
//! cannot be used.
#![cfg(not(feature = "shuttle"))]

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
#[path = "uffd/real.rs"]
mod real;

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
#[test]
fn skipped_where_userfaultfd_is_not_served() {
    eprintln!("skipped: userfaultfd is served on Linux on x86-64 and arm64 only");
}
