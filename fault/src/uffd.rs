//! `uffd`: real memory that threads touch with plain loads and stores, its page faults served
//! by maplevm through Linux's userfaultfd (docs/uffd.md).
//!
//! [`UffdMm`] reserves a region of this process (one private anonymous mapping), registers it
//! with a userfaultfd for missing-page faults, and keeps the region's VMAs in a maplevm
//! [`AddressSpace`] whose layout is the region. Handler threads read the fault events, find the
//! VMA with maplevm's lock-free lookup and fill the page: `UFFDIO_ZEROPAGE` for anonymous
//! memory, `UFFDIO_COPY` of the file's page for a private file mapping (the copy is the
//! mapping's own from its first touch: writes never reach the file).
//!
//! Invariants:
//! - **The kernel's permissions follow maplevm's VMAs.** Every VMA's range carries its
//!   permissions and the rest of the region `PROT_NONE`, from the moment the call that changed
//!   them returns: mmap, mprotect and munmap set them after maplevm's change, under one mutex,
//!   so two calls never leave them out of order; a permission a call removes is removed in the
//!   protocol's flush (`FlushHook::protect`), before the call returns. So the kernel itself
//!   turns an access no VMA allows into SIGSEGV.
//! - **A page is filled only under what keeps maplevm's writers from flushing it**: the RCU
//!   guard keyed at the page (anonymous memory), or a reference to the VMA (a file page, read
//!   with no guard held), as the fault engine's fast and slow paths hold them. A writer that
//!   removes or replaces the VMA waits for both before its flush, which drops the region's
//!   pages there (`MADV_DONTNEED`); so no page filled for an old VMA survives the call that
//!   removed it.
//! - **A fault maplevm does not allow is woken without a page** (a VMA removed or reduced
//!   while the fault was queued): it faults again, and once the call's permissions are set,
//!   the kernel refuses it. A file page wholly past its file's end is a bus error: the
//!   faulting thread is sent SIGBUS, then woken.
//! - **A file page is copied inside the file's read-side section for it**, with no
//!   invalidation running over it; the file's VMAs are in its reverse map, and a truncate
//!   drops the region's copies past the new end ([`Mapper`]), so no copy outlives it.
//!
//! The raw layer under it, which other address-space designs can serve a region with too
//! (`bench uffd` does): [`Region`] (a reserved range and its kernel-side permissions),
//! [`Userfaultfd`] (registration, the fill and wake ioctls, the event loop) and [`Handlers`]
//! (threads serving a userfaultfd until dropped).
//!
//! Everything here is Linux's ABI (`linux/userfaultfd.h`), reached through `libc`; the
//! `userfaultfd` crate's `-sys` crate generates its bindings with bindgen at build time, which
//! needs a libclang that machines without a C toolchain's LLVM lack.

use crate::File;
use crate::engine::Access;
use crate::file::{Lookup as FileLookup, Mapper};
use maple::rcu::DefaultRcu;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use vma::{
    AddressSpace, Backing as VmaBacking, Errno, Error, FlushHook, Layout, Lookup, MapFlags, PAGE_SIZE, Prot,
    Revoked,
};

/// `linux/userfaultfd.h`: the ABI version, features, modes, events and ioctls used here.
mod abi {
    pub const UFFD_API: u64 = 0xAA;
    /// Without it the kernel serves faults of kernel code (a syscall's copy to or from the
    /// region) too; unprivileged processes need it where `vm.unprivileged_userfaultfd` is 0.
    pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
    pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
    pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1;
    /// Page-fault events carry the faulting thread's id (byte 24 of the message).
    pub const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;

    /// `_IOC(dir, 0xAA, nr, size)` as x86-64 and arm64 encode it.
    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
    }
    const WRITE_READ: u64 = 3;
    const READ: u64 = 2;
    pub const UFFDIO_API: u64 = ioc(WRITE_READ, 0x3F, size_of::<UffdioApi>());
    pub const UFFDIO_REGISTER: u64 = ioc(WRITE_READ, 0x00, size_of::<UffdioRegister>());
    pub const UFFDIO_WAKE: u64 = ioc(READ, 0x02, size_of::<UffdioRange>());
    pub const UFFDIO_COPY: u64 = ioc(WRITE_READ, 0x03, size_of::<UffdioCopy>());
    pub const UFFDIO_ZEROPAGE: u64 = ioc(WRITE_READ, 0x04, size_of::<UffdioZeropage>());

    #[repr(C)]
    pub struct UffdioApi {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct UffdioRange {
        pub start: u64,
        pub len: u64,
    }
    #[repr(C)]
    pub struct UffdioRegister {
        pub range: UffdioRange,
        pub mode: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct UffdioCopy {
        pub dst: u64,
        pub src: u64,
        pub len: u64,
        pub mode: u64,
        pub copy: i64,
    }
    #[repr(C)]
    pub struct UffdioZeropage {
        pub range: UffdioRange,
        pub mode: u64,
        pub zeropage: i64,
    }
    /// `struct uffd_msg` (packed, 32 bytes): the event in byte 0; for a page fault, its flags
    /// at byte 8 and the address at byte 16.
    pub const MSG_SIZE: usize = 32;
}

/// Why an [`UffdMm`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UffdError {
    /// userfaultfd is not there or not allowed (not Linux, a kernel without it, no permission
    /// under `vm.unprivileged_userfaultfd = 0`): the reason, in one line.
    Unavailable(String),
    /// A bad request: an unaligned or zero length, no handler thread.
    Invalid(Error),
    /// A system call setting the region up failed: which, and why.
    System(String),
}

impl fmt::Display for UffdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UffdError::Unavailable(why) => write!(f, "userfaultfd unavailable: {why}"),
            UffdError::Invalid(error) => write!(f, "{error}"),
            UffdError::System(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for UffdError {}

/// What the handler threads did (see [`UffdMm::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UffdStats {
    /// Faults filled with zeros (anonymous memory).
    pub zero_filled: u64,
    /// Faults filled with a copy of a file's page.
    pub copied: u64,
    /// Faults woken without a page: no VMA allowed them (removed or reduced meanwhile), or
    /// another handler had filled the page.
    pub woken: u64,
    /// Faults that waited for a VMA a writer was setting up (BABY).
    pub waited: u64,
    /// Faults answered with SIGBUS: a file page wholly past the file's end.
    pub bus_errors: u64,
}

#[derive(Default)]
struct Counters {
    zero_filled: AtomicU64,
    copied: AtomicU64,
    woken: AtomicU64,
    waited: AtomicU64,
    bus_errors: AtomicU64,
}

/// The last OS error, after `what`.
fn system_error(what: &str) -> UffdError {
    UffdError::System(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// The kernel's protection bits for `prot` (write implies read, as the MMU has it).
fn kernel_prot(prot: Prot) -> libc::c_int {
    let mut bits = libc::PROT_NONE;
    if prot.read {
        bits |= libc::PROT_READ;
    }
    if prot.write {
        bits |= libc::PROT_WRITE;
    }
    if prot.exec {
        bits |= libc::PROT_EXEC;
    }
    bits
}

/// The kernel's permissions of `[start, end)` become `prot`.
///
/// # Safety
/// The range must lie in a reserved [`Region`] still held, where no Rust reference points.
unsafe fn set_prot(start: u64, end: u64, prot: Prot) {
    // SAFETY: as the caller vouches.
    let done = unsafe {
        libc::mprotect(
            start as *mut libc::c_void,
            (end - start) as usize,
            kernel_prot(prot),
        )
    };
    assert_eq!(
        done,
        0,
        "mprotect in a reserved region: {}",
        std::io::Error::last_os_error()
    );
}

/// The pages of `[start, end)` go (reads find them missing again).
///
/// # Safety
/// As for [`set_prot`].
unsafe fn drop_pages(start: u64, end: u64) {
    // SAFETY: as the caller vouches.
    let done = unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            (end - start) as usize,
            libc::MADV_DONTNEED,
        )
    };
    assert_eq!(
        done,
        0,
        "MADV_DONTNEED in a reserved region: {}",
        std::io::Error::last_os_error()
    );
}

/// A region of this process's address space, reserved (`PROT_NONE`, no memory committed) until
/// dropped.
#[derive(Debug)]
pub struct Region {
    start: u64,
    end: u64,
}

impl Region {
    /// Reserves `len` bytes (page aligned, not zero) where the kernel chooses.
    pub fn reserve(len: u64) -> Result<Self, UffdError> {
        if len == 0 || len % PAGE_SIZE != 0 {
            return Err(UffdError::Invalid(Error::new(
                Errno::EINVAL,
                "a region needs a page-aligned, non-zero length",
            )));
        }
        // SAFETY: a new private anonymous mapping where the kernel chooses: it overlaps
        // nothing this process holds.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(system_error("mmap of the region"));
        }
        Ok(Self {
            start: base as u64,
            end: base as u64 + len,
        })
    }

    /// `[start, end)`.
    pub fn bounds(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// The part of the region in `[addr, addr + len)`, `len` rounded up to pages.
    pub fn clamp(&self, addr: u64, len: u64) -> (u64, u64) {
        let end = addr.saturating_add(len).saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
        (addr.clamp(self.start, self.end), end.clamp(self.start, self.end))
    }

    /// The kernel's permissions of `[addr, addr + len)` (clamped to the region) become `prot`.
    pub fn set_prot(&self, addr: u64, len: u64, prot: Prot) {
        let (start, end) = self.clamp(addr, len);
        if start < end {
            // SAFETY: inside this region, which is held; Rust references never point into it
            // (threads reach it through raw pointers).
            unsafe { set_prot(start, end, prot) }
        }
    }

    /// The pages of `[addr, addr + len)` (clamped to the region) go.
    pub fn drop_pages(&self, addr: u64, len: u64) {
        let (start, end) = self.clamp(addr, len);
        if start < end {
            // SAFETY: as in `set_prot`.
            unsafe { drop_pages(start, end) }
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: reserved by `reserve` and given back once; its owner's contract is that no
        // thread touches it any more.
        unsafe { libc::munmap(self.start as *mut libc::c_void, (self.end - self.start) as usize) };
    }
}

/// A userfaultfd (the raw layer): registration, the fill and wake ioctls, and the event loop.
#[derive(Debug)]
pub struct Userfaultfd {
    fd: OwnedFd,
    kernel_faults: bool,
}

impl Userfaultfd {
    /// Opens one that does not block (several handler threads poll it). It serves faults of
    /// kernel code too where that is allowed, else user-mode faults only;
    /// [`UffdError::Unavailable`] where neither is.
    pub fn open() -> Result<Self, UffdError> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        let mut last = String::new();
        for (mode, kernel_faults) in [(0, true), (abi::UFFD_USER_MODE_ONLY, false)] {
            // SAFETY: the userfaultfd system call takes flags and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags | mode) };
            if fd < 0 {
                last = std::io::Error::last_os_error().to_string();
                continue;
            }
            // SAFETY: `fd` was just returned to us and is owned by nothing else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
            let mut api = abi::UffdioApi {
                api: abi::UFFD_API,
                features: abi::UFFD_FEATURE_THREAD_ID,
                ioctls: 0,
            };
            // SAFETY: UFFDIO_API reads and writes a `uffdio_api`, which `api` is.
            if unsafe { libc::ioctl(fd.as_raw_fd(), abi::UFFDIO_API as _, &mut api) } != 0 {
                return Err(UffdError::Unavailable(format!(
                    "UFFDIO_API: {}",
                    std::io::Error::last_os_error()
                )));
            }
            return Ok(Self { fd, kernel_faults });
        }
        Err(UffdError::Unavailable(format!(
            "the userfaultfd system call failed ({last}); is vm.unprivileged_userfaultfd 0 on a kernel before 5.11?"
        )))
    }

    /// Whether faults of kernel code (a system call reading or writing a registered range) are
    /// served too; without it, a system call touching a missing page fails with EFAULT.
    pub fn serves_kernel_faults(&self) -> bool {
        self.kernel_faults
    }

    /// Registers `region` for missing-page faults.
    pub fn register(&self, region: &Region) -> Result<(), UffdError> {
        let (start, end) = region.bounds();
        let mut register = abi::UffdioRegister {
            range: abi::UffdioRange {
                start,
                len: end - start,
            },
            mode: abi::UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `uffdio_register`, which `register` is.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::UFFDIO_REGISTER as _, &mut register) } != 0 {
            return Err(system_error("UFFDIO_REGISTER"));
        }
        Ok(())
    }

    /// UFFDIO_ZEROPAGE at `page` of a registered region, waking its faults; false if the page
    /// was there already.
    pub fn zero_fill(&self, page: u64) -> bool {
        let mut zero = abi::UffdioZeropage {
            range: abi::UffdioRange {
                start: page,
                len: PAGE_SIZE,
            },
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: UFFDIO_ZEROPAGE reads and writes a `uffdio_zeropage`, which `zero` is; the
        // kernel refuses a page outside a registered range.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::UFFDIO_ZEROPAGE as _, &mut zero) == 0 }
    }

    /// UFFDIO_COPY of `contents` to `page` of a registered region, waking its faults; false if
    /// the page was there already.
    pub fn copy(&self, page: u64, contents: &[u8; PAGE_SIZE as usize]) -> bool {
        let mut copy = abi::UffdioCopy {
            dst: page,
            src: contents.as_ptr() as u64,
            len: PAGE_SIZE,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY reads and writes a `uffdio_copy`, which `copy` is; it reads one
        // page from `contents` (a page long); the kernel refuses a page outside a registered
        // range.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::UFFDIO_COPY as _, &mut copy) == 0 }
    }

    /// Wakes the faults waiting on `page` without filling it: they fault again.
    pub fn wake(&self, page: u64) {
        let mut range = abi::UffdioRange {
            start: page,
            len: PAGE_SIZE,
        };
        // SAFETY: UFFDIO_WAKE reads a `uffdio_range`, which `range` is.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::UFFDIO_WAKE as _, &mut range) };
    }

    /// Sends SIGBUS to `thread` of this process (a fault that no page can satisfy, as Linux
    /// signals an access past a file's end), then wakes `page`'s faults: the signal is
    /// delivered as the thread leaves the fault.
    pub fn deliver_bus_error(&self, thread: u32, page: u64) {
        // SAFETY: tgkill sends a signal to a thread of this process; SIGBUS's disposition is
        // the program's (by default it ends the process, as the hardware's would).
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                thread as libc::pid_t,
                libc::SIGBUS,
            )
        };
        self.wake(page);
    }

    /// A handler thread's loop: waits for page-fault events, or for `stop` (an eventfd) to
    /// become readable, and calls `serve` for each fault (which must fill or wake the page).
    fn serve_events(&self, stop: libc::c_int, serve: &dyn Fn(PageFault)) {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let mut msg = [0u8; abi::MSG_SIZE];
        loop {
            // SAFETY: `fds` is an array of two pollfds.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if fds[1].revents != 0 {
                return;
            }
            if ready <= 0 {
                continue;
            }
            // SAFETY: reads at most `msg.len()` bytes into `msg`.
            let read = unsafe { libc::read(self.fd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
            // Another handler took the event (the descriptor does not block).
            if read != abi::MSG_SIZE as isize || msg[0] != abi::UFFD_EVENT_PAGEFAULT {
                continue;
            }
            let flags = u64::from_ne_bytes(msg[8..16].try_into().expect("8 bytes"));
            let addr = u64::from_ne_bytes(msg[16..24].try_into().expect("8 bytes"));
            let thread = u32::from_ne_bytes(msg[24..28].try_into().expect("4 bytes"));
            let access = if flags & abi::UFFD_PAGEFAULT_FLAG_WRITE != 0 {
                Access::Write
            } else {
                Access::Read
            };
            serve(PageFault {
                page: addr & !(PAGE_SIZE - 1),
                access,
                thread,
            });
        }
    }
}

/// A page fault a handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFault {
    /// The page (aligned).
    pub page: u64,
    /// A load or a store.
    pub access: Access,
    /// The faulting thread (its kernel id), for [`Userfaultfd::deliver_bus_error`].
    pub thread: u32,
}

/// Handler threads serving a userfaultfd's faults until dropped.
pub struct Handlers {
    /// Readable when the handlers must return (an eventfd).
    stop: OwnedFd,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Handlers {
    /// Starts `count` threads (at least one) calling `serve` for each fault of `uffd`'s
    /// regions; `serve` must fill the page or wake it.
    pub fn start(
        count: usize,
        uffd: Arc<Userfaultfd>,
        serve: Arc<dyn Fn(PageFault) + Send + Sync>,
    ) -> Result<Self, UffdError> {
        if count == 0 {
            return Err(UffdError::Invalid(Error::new(Errno::EINVAL, "no handler thread")));
        }
        // SAFETY: eventfd takes an initial count and flags and returns a descriptor or -1.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if stop < 0 {
            return Err(system_error("eventfd"));
        }
        // SAFETY: `stop` was just returned to us and is owned by nothing else.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let threads = (0..count)
            .map(|i| {
                let (uffd, serve, stop) = (uffd.clone(), serve.clone(), stop.as_raw_fd());
                std::thread::Builder::new()
                    .name(format!("uffd-handler-{i}"))
                    .spawn(move || uffd.serve_events(stop, &*serve))
                    .map_err(|e| UffdError::System(format!("spawn a handler thread: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { stop, threads })
    }
}

impl Drop for Handlers {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to our eventfd, which then stays readable.
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The region's side of the replacement protocol: the kernel's page table.
struct RegionFlush {
    /// The `UffdMm`'s side, as its files' reverse maps know it.
    mapper: Weak<dyn Mapper>,
}

impl FlushHook for RegionFlush {
    fn zap(&self, start: u64, end: u64, _free_tables: (u64, u64), _rcu: &DefaultRcu) -> bool {
        // SAFETY: maplevm's layout is the region, held until the `UffdMm` (which owns this
        // address space) is dropped; no Rust reference points into it.
        unsafe { drop_pages(start, end) };
        // The kernel's TLB shootdown has ended every access through the dropped translations:
        // nothing is left for the protocol to wait for.
        false
    }

    fn protect(&self, start: u64, end: u64, prot: Prot, _rcu: &DefaultRcu) -> bool {
        // SAFETY: as in `zap`.
        unsafe { set_prot(start, end, prot) };
        false
    }

    fn relocate(&self, _from: u64, _to: u64, _len: u64, _rcu: &DefaultRcu) -> bool {
        unreachable!("an UffdMm offers no mremap or brk: nothing relocates")
    }

    fn mapped(&self, mapping: &vma::Mapping) {
        File::link(&self.mapper, mapping);
    }

    fn unmapped(&self, mapping: &vma::Mapping) {
        File::unlink(&self.mapper, mapping);
    }
}

/// What a file's truncate asks of the region: its copies of the pages past the new end go
/// (they fault again, and a fault past the end is a bus error). Every page a file mapping
/// holds here is a private copy, so a hole punch, which keeps private copies, takes none; and
/// writeback has nothing here to write-protect.
impl Mapper for Inner {
    fn unmap_file_pages(&self, file: &File, first: u64, end: u64, even_cows: bool) -> Revoked {
        if even_cows {
            for (start, end) in file.mapped_ranges(self, first, end) {
                // SAFETY: the ranges of this address space's VMAs, inside its region, held
                // while `Inner` lives; no Rust reference points into it.
                unsafe { drop_pages(start, end) };
            }
        }
        // The kernel's TLB shootdown has ended every access through the dropped pages.
        Revoked::new()
    }

    fn write_protect_file_pages(&self, _file: &File, _first: u64, _end: u64) -> Revoked {
        Revoked::new()
    }

    fn await_revoked(&self, _revoked: &Revoked) {}
}

/// What the handlers share with the `UffdMm`.
struct Inner {
    space: AddressSpace,
    uffd: Arc<Userfaultfd>,
    counters: Counters,
}

/// Real memory served through userfaultfd: see the module documentation. Threads reach the
/// region with raw pointers (their loads and stores are `unsafe`: the region's memory can be
/// unmapped under them); dropping the `UffdMm` stops its handlers and gives the region back to
/// the system, so drop it only once no thread touches the region.
pub struct UffdMm {
    // Dropped in this order: the handlers stop before the region goes.
    handlers: Handlers,
    inner: Arc<Inner>,
    /// Orders the kernel-side permission updates of mmap, mprotect and munmap (maplevm's
    /// writers are serialized by its tree's writer lock already).
    writer: Mutex<()>,
    region: Region,
}

impl fmt::Debug for UffdMm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UffdMm")
            .field("region", &self.region)
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

impl UffdMm {
    /// Reserves `len` bytes of this process's address space (page aligned, not zero), maplevm's
    /// layout over them (mmap places top-down from their end), and starts `handlers` threads
    /// serving their faults. [`UffdError::Unavailable`] where userfaultfd cannot be used.
    pub fn new(len: u64, handlers: usize) -> Result<Self, UffdError> {
        let uffd = Arc::new(Userfaultfd::open()?);
        let region = Region::reserve(len)?;
        uffd.register(&region)?;
        let (low, high) = region.bounds();
        let layout = Layout {
            low,
            high,
            mmap_base: high,
        };
        layout.check().map_err(UffdError::Invalid)?;
        let inner = Arc::new_cyclic(|inner: &Weak<Inner>| {
            let mapper: Weak<dyn Mapper> = inner.clone();
            let space = AddressSpace::new(layout, RegionFlush { mapper }).expect("the layout was checked");
            Inner {
                space,
                uffd: uffd.clone(),
                counters: Counters::default(),
            }
        });
        let server = inner.clone();
        let handlers = Handlers::start(
            handlers,
            uffd,
            Arc::new(move |fault: PageFault| server.serve(fault.page, fault.access, Some(fault.thread))),
        )?;
        Ok(Self {
            handlers,
            inner,
            writer: Mutex::new(()),
            region,
        })
    }

    /// The region: `[start, end)` in this process.
    pub fn region(&self) -> (u64, u64) {
        self.region.bounds()
    }

    /// Whether faults of kernel code (a system call reading or writing the region) are served
    /// too; without it (an unprivileged process where `vm.unprivileged_userfaultfd` is 0), a
    /// system call touching a page no thread has touched fails with EFAULT.
    pub fn serves_kernel_faults(&self) -> bool {
        self.inner.uffd.serves_kernel_faults()
    }

    /// maplevm's address space of the region (its VMAs, `maps()`).
    pub fn space(&self) -> &AddressSpace {
        &self.inner.space
    }

    /// What the handlers did so far.
    pub fn stats(&self) -> UffdStats {
        let c = &self.inner.counters;
        UffdStats {
            zero_filled: c.zero_filled.load(Ordering::Relaxed),
            copied: c.copied.load(Ordering::Relaxed),
            woken: c.woken.load(Ordering::Relaxed),
            waited: c.waited.load(Ordering::Relaxed),
            bus_errors: c.bus_errors.load(Ordering::Relaxed),
        }
    }

    /// mmap(2) in the region: anonymous or a private mapping of `file` at `offset`, with
    /// maplevm's placement and checks; MAP_POPULATE fills the pages before returning. ENODEV
    /// for shared mappings (their pages would have to be the file's, which a copy cannot
    /// be), EINVAL for hugetlb and MAP_GROWSDOWN (no huge pages or stack growth here).
    pub fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(&Arc<File>, u64)>,
    ) -> vma::Result<u64> {
        let shared = flags.check()?;
        if shared {
            return Err(Error::new(
                Errno::ENODEV,
                "shared mappings are not served through userfaultfd",
            ));
        }
        if flags.hugetlb || flags.growsdown {
            return Err(Error::new(
                Errno::EINVAL,
                "no huge pages or stack growth in a userfaultfd region",
            ));
        }
        let object = match (flags.anonymous, file) {
            (true, _) => None,
            (false, Some((file, offset))) if !file.is_hugetlb() => {
                let object: Arc<dyn vma::MappedFile> = file.clone();
                Some((object, offset))
            }
            (false, Some(_)) => {
                return Err(Error::new(Errno::EINVAL, "no huge pages in a userfaultfd region"));
            }
            (false, None) => return Err(Error::new(Errno::EBADF, "a file mapping needs a file")),
        };
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let start = self.inner.space.mmap(addr, len, prot, flags, object)?;
        let end = start + len.next_multiple_of(PAGE_SIZE);
        self.region.set_prot(start, end - start, prot);
        // MAP_LOCKED brings the pages in as mlock does.
        if flags.populate || flags.locked {
            for page in (start..end).step_by(PAGE_SIZE as usize) {
                self.inner.serve(page, Access::Read, None);
            }
        }
        Ok(start)
    }

    /// munmap(2) in the region: when it returns, the pages are gone and every access to the
    /// range is a segmentation fault.
    pub fn munmap(&self, addr: u64, len: u64) -> vma::Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.space.munmap(addr, len)?;
        self.region.set_prot(addr, len, Prot::NONE);
        Ok(())
    }

    /// mprotect(2) in the region: maplevm's semantics (ENOMEM where part of the range is
    /// unmapped, after changing the part before the hole); the kernel's permissions follow.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.inner.space.mprotect(addr, len, prot);
        // Whatever part changed (all of it, or what lies before a hole), as maplevm has it now.
        let (start, end) = self.region.clamp(addr, len);
        let guard = self.inner.space.guard();
        for vma in self.inner.space.iter_from(start, &guard) {
            let m = vma.mapping();
            if m.start >= end {
                break;
            }
            let (from, to) = (m.start.max(start), m.end.min(end));
            self.region.set_prot(from, to - from, m.prot);
        }
        result
    }
}

impl Inner {
    /// Fills the fault's page as its VMA says, or wakes the fault without a page (see the
    /// module documentation); a page wholly past a file's end gets the faulting thread a
    /// SIGBUS, as on Linux. Without a thread (MAP_POPULATE), nothing is signalled.
    fn serve(&self, page: u64, access: Access, thread: Option<u32>) {
        loop {
            let guard = self.space.guard_at(page);
            let vma = match self.space.lookup(page, &guard) {
                Lookup::Unmapped => break,
                Lookup::Baby => {
                    drop(guard);
                    self.counters.waited.fetch_add(1, Ordering::Relaxed);
                    self.space.wait_for_birth(page);
                    continue;
                }
                Lookup::Mapped(vma) => vma,
            };
            let mapping = vma.mapping();
            if !crate::engine::allows(mapping, access) {
                break;
            }
            if matches!(mapping.backing, VmaBacking::Anonymous) {
                // Anonymous memory: zeros, under the guard.
                if self.counted(&self.counters.zero_filled, || self.uffd.zero_fill(page)) {
                    return;
                }
                break;
            }
            // A file page: read with no guard held, holding a reference to the VMA.
            let Ok(reference) = self.space.try_get(vma) else {
                continue;
            };
            drop(guard);
            match self.copy_file_page(reference.mapping(), page) {
                Some(true) => return,
                Some(false) => break,
                None => {
                    if let Some(thread) = thread {
                        self.counters.bus_errors.fetch_add(1, Ordering::Relaxed);
                        self.uffd.deliver_bus_error(thread, page);
                        return;
                    }
                    break;
                }
            }
        }
        self.counters.woken.fetch_add(1, Ordering::Relaxed);
        self.uffd.wake(page);
    }

    /// Runs `fill`, counted in `counter` if it filled the page. Counted before it runs (and
    /// taken back if it did not fill): the fill wakes the faulting thread, which may read the
    /// statistics at once.
    fn counted(&self, counter: &AtomicU64, fill: impl FnOnce() -> bool) -> bool {
        // Relaxed: a statistic; the thread woken by the fill reads it after the fill's wake-up
        // (a system call), which orders it.
        counter.fetch_add(1, Ordering::Relaxed);
        let filled = fill();
        if !filled {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        filled
    }

    /// Copies the page of `mapping`'s file that `page` maps into the region (counted):
    /// whether it filled the page (false if it was there already), or `None` where no page
    /// can be had (wholly past the file's end, or the file's storage failing: Linux's SIGBUS).
    /// The copy is made inside the file's read-side section for the page, with no
    /// invalidation running over it, as the fault engine installs file pages: a truncate
    /// either waits for it and then drops the copy too, or ended before and the page is past
    /// the end.
    fn copy_file_page(&self, mapping: &vma::Mapping, page: u64) -> Option<bool> {
        let VmaBacking::File(object) = &mapping.backing else {
            return Some(false);
        };
        let file = crate::file::file_of(object);
        let pgoff = mapping.pgoff + (page - mapping.start) / PAGE_SIZE;
        let mut contents = [0u8; PAGE_SIZE as usize];
        loop {
            // Brings the page into the cache (waiting out an invalidation), with no guard
            // held; the turn it may return is held until the copy is made.
            let _turn = file.read_in(pgoff, |_| {}).ok()?;
            let guard = file.guard_at(pgoff);
            let frame = match file.lookup(pgoff, &guard) {
                FileLookup::Beyond => return None,
                // Dropped, or being dropped, since: read it in again.
                FileLookup::Missing | FileLookup::Invalidating => continue,
                FileLookup::Cached(frame) => frame,
            };
            file.frames().read(frame, 0, &mut contents);
            // SAFETY: the reference `lookup` gave us, not used after this.
            unsafe { file.frames().put(frame) };
            return Some(self.counted(&self.counters.copied, || self.uffd.copy(page, &contents)));
        }
    }
}

/// Whether this process can use userfaultfd, and if not why: for tests and benchmarks that
/// skip with a one-line reason.
pub fn availability() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| match Userfaultfd::open() {
            Ok(_) => Ok(()),
            Err(UffdError::Unavailable(why)) => Err(why),
            Err(other) => Err(other.to_string()),
        })
        .clone()
}
