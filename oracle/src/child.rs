//! The oracle's child process: raw system calls made in a forked child, whose result and
//! `/proc/self/maps` come back to the parent through a pipe; and scratch ranges reserved in the
//! parent for children to lay mappings out in.
//!
//! Invariant: a child makes only raw system calls (it was forked from a threaded process, so
//! it allocates nothing and takes no lock) and touches only scratch ranges its parent reserved,
//! so whatever the kernel does to it wrecks only the child.

/// Forks; the child runs `calls` and reports the raw result it returns (a syscall's return
/// value; -1 is turned into minus the errno) with its `/proc/self/maps`, then leaves with
/// `_exit`. Returns that result and those maps.
///
/// `calls` runs in a child forked from a threaded process: it must make only raw system calls
/// (async-signal-safe), allocate nothing and take no lock.
pub fn in_child(calls: impl FnOnce() -> i64) -> (i64, String) {
    in_child_reporting(c"/proc/self/maps", calls)
}

/// [`in_child`], the child reporting the file at `report` (`/proc/self/smaps`, say) instead of
/// its maps.
pub fn in_child_reporting(report: &std::ffi::CStr, calls: impl FnOnce() -> i64) -> (i64, String) {
    let mut fds = [0; 2];
    // SAFETY: a plain pipe(2) into a two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child runs `calls` (raw system calls only, as its caller promises) and
    // `report`, which makes raw system calls on a stack buffer and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ret = calls();
        // SAFETY: in the child, with the write end of its own pipe.
        unsafe { report_to(fds[1], ret, report) }
    }
    // SAFETY: the parent's copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: reading into a stack buffer of that size.
        let n = unsafe { libc::read(fds[0], chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n as usize]);
    }
    let mut status = 0;
    // SAFETY: the read end, and waiting for our own child.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, &mut status, 0);
    }
    assert!(
        bytes.len() >= 8,
        "the child died before reporting (status {status:#x})"
    );
    let ret = i64::from_ne_bytes(bytes[..8].try_into().unwrap());
    (ret, String::from_utf8_lossy(&bytes[8..]).into_owned())
}

/// The child's report: `ret` (-1 turned into minus the errno), then the file at `path`.
///
/// # Safety
/// Only in a child just forked by [`in_child_reporting`], right after its calls.
unsafe fn report_to(out: i32, ret: i64, path: &std::ffi::CStr) -> ! {
    // SAFETY: (whole function) raw system calls on our own descriptors and a stack buffer.
    unsafe {
        let ret: i64 = if ret == -1 {
            -(*libc::__errno_location() as i64)
        } else {
            ret
        };
        libc::write(out, (&ret as *const i64).cast(), 8);
        let maps = libc::open(path.as_ptr(), libc::O_RDONLY);
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(maps, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            libc::write(out, buf.as_ptr().cast(), n as usize);
        }
        libc::_exit(0)
    }
}

/// A scratch range of the parent's address space for children to lay mappings out in:
/// reserved (PROT_NONE, MAP_NORESERVE) with a page more on each side, so that nothing else
/// lands in it or next to it. A child clears it whole, margins included
/// ([`Scratch::clear`]): what it maps there then has a hole on each side and merges with
/// nothing of the parent's.
pub struct Scratch {
    /// The first page of the range.
    pub base: u64,
    pages: u64,
}

const PAGE: u64 = 4096;

impl Scratch {
    /// Reserves `pages` pages, the first at a multiple of `align` bytes.
    pub fn reserve(pages: u64, align: u64) -> Self {
        let len = (pages + 2) * PAGE + align;
        // SAFETY: an anonymous PROT_NONE reservation of our own, never accessed.
        let reserved = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(reserved, libc::MAP_FAILED, "cannot reserve a scratch range");
        let base = (reserved as u64 + PAGE).next_multiple_of(align.max(PAGE));
        // SAFETY: the parts of our own reservation outside the range and its margins.
        unsafe {
            let below = base - PAGE - reserved as u64;
            libc::munmap(reserved, below as usize);
            let above = base + (pages + 1) * PAGE;
            libc::munmap(above as *mut _, (reserved as u64 + len - above) as usize);
        }
        Self { base, pages }
    }

    /// Unmaps the range and its margins.
    ///
    /// # Safety
    /// Only in a child forked from the process that reserved it (the parent keeps it).
    pub unsafe fn clear(&self) {
        // SAFETY: the caller's promise: the range is ours to unmap, in a child.
        unsafe { libc::syscall(libc::SYS_munmap, self.base - PAGE, (self.pages + 2) * PAGE) };
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: our own reservation, margins included.
        unsafe { libc::munmap((self.base - PAGE) as *mut _, ((self.pages + 2) * PAGE) as usize) };
    }
}

/// The mappings of `maps` (in /proc/PID/maps form, or maplevm's) lying inside
/// `[base, base + pages * 4096)`, as `first-last perms` in pages from `base`: how the oracles
/// compare a child's layout with maplevm's.
pub fn lines_in(maps: &str, base: u64, pages: u64) -> Vec<String> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let (start, end) = (
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            );
            let perms = fields.next()?;
            (start >= base && end <= base + pages * PAGE)
                .then(|| format!("{}-{} {perms}", (start - base) / PAGE, (end - base) / PAGE))
        })
        .collect()
}

/// A page shared with the children forked after it is made (MAP_SHARED | MAP_ANONYMOUS): what
/// a child stores there, the parent reads after the child exits. Unmapped on drop.
pub struct SharedPage(*mut libc::c_void);

impl SharedPage {
    /// A fresh zeroed page.
    pub fn new() -> Self {
        // SAFETY: a fresh shared anonymous mapping of our own.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED, "cannot map a page to share with a child");
        Self(page)
    }

    /// The page, as `T`s.
    pub fn as_mut_ptr<T>(&self) -> *mut T {
        self.0.cast()
    }
}

impl Default for SharedPage {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the page mapped in `new`, no longer used.
        unsafe { libc::munmap(self.0, PAGE as usize) };
    }
}
