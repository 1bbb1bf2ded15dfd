//! A trace replayed with real system calls in a forked child, printed as maplevm prints a
//! replay (`vma::AddressSpace::maps`), so the two compare line for line.
//!
//! The trace's addresses are another process's; the child has mappings of its own, some maybe
//! at those addresses. So the replay is relocated:
//! - **Windows.** Every range an operation of the trace maps, unmaps, protects or moves (and the
//!   heap) is gathered; ranges closer than [`WINDOW_SLACK`] are joined into one window, widened
//!   to 2 MiB boundaries. Each window gets a scratch range of its own, reserved in this process
//!   at the same offset modulo 2 MiB ([`Scratch`]), and each address of the trace inside a
//!   window moves by that window's offset. Mappings only meet inside a window, and inside one
//!   everything keeps its distance, so merging and splitting are the trace's own.
//! - **Placement.** Where the trace records the address a call returned, the replay places the
//!   mapping there (MAP_FIXED_NOREPLACE, or MREMAP_FIXED for a move), as maplevm's replay does;
//!   a placement the trace does not record cannot be replayed and is an error.
//! - **Files.** Each file name is one memfd, opened before the fork, as a process maps a
//!   library through one descriptor.
//! - **The heap.** brk is the child's own, so the trace's heap is emulated: growing maps the new
//!   pages (anonymous, read-write, private: the flags Linux's `do_brk_flags` gives), shrinking
//!   unmaps them, a refused brk (its recorded result the old break) does nothing; `[heap]` is
//!   labelled with Linux's rule (`show_map_vma`).
//!
//! Every recorded result (an address, an errno) must come back from the kernel; the first that
//! does not is an error naming its line. The child then prints `/proc/self/maps`; the lines
//! inside the windows, moved back, are the layout.

use crate::child::{self, Scratch};
use crate::prot_bits;
use std::collections::HashMap;
use std::ffi::CString;
use vma::trace::{Op, Outcome, Trace, TraceError};
use vma::{FileIdentity, MapFlags, MapsLine, PAGE_SIZE, Prot, RemapFlags};

/// Ranges closer than this share a window (and keep their distance).
pub const WINDOW_SLACK: u64 = 1 << 30;
/// Windows start and end at multiples of this; relocation keeps addresses modulo it.
const WINDOW_ALIGN: u64 = 2 << 20;

/// What a replayed call must return.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This value.
    Value(u64),
    /// This errno.
    Errno(i32),
    /// Anything but an error.
    Success,
}

/// One system call of the replay.
#[derive(Debug, Clone, Copy)]
struct Call {
    line: usize,
    number: i64,
    args: [u64; 6],
    expect: Expect,
}

/// A window of the trace's addresses and where it lies in the child.
struct Window {
    lo: u64,
    hi: u64,
    scratch: Scratch,
}

/// The trace's windows.
struct Windows(Vec<Window>);

impl Windows {
    /// Windows over `ranges`, each reserved.
    fn reserve(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.sort_unstable();
        let mut joined: Vec<(u64, u64)> = Vec::new();
        for (lo, hi) in ranges {
            match joined.last_mut() {
                Some((_, end)) if lo <= end.saturating_add(WINDOW_SLACK) => *end = (*end).max(hi),
                _ => joined.push((lo, hi)),
            }
        }
        Self(
            joined
                .into_iter()
                .map(|(lo, hi)| {
                    let lo = lo / WINDOW_ALIGN * WINDOW_ALIGN;
                    let hi = hi.next_multiple_of(WINDOW_ALIGN);
                    let scratch = Scratch::reserve((hi - lo) / PAGE_SIZE, WINDOW_ALIGN);
                    Window { lo, hi, scratch }
                })
                .collect(),
        )
    }

    /// Where the trace's `addr` lies in the child: moved with its window, or unchanged outside
    /// every window (an argument of a call that fails, say).
    fn to_child(&self, addr: u64) -> u64 {
        self.0
            .iter()
            .find(|w| (w.lo..w.hi).contains(&addr))
            .map_or(addr, |w| addr - w.lo + w.scratch.base)
    }

    /// Where the child's `[start, end)` lies in the trace, if inside a window.
    fn to_trace(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        self.0.iter().find_map(|w| {
            let base = w.scratch.base;
            (start >= base && end <= base + (w.hi - w.lo)).then(|| (start - base + w.lo, end - base + w.lo))
        })
    }
}

fn page_up(value: u64) -> u64 {
    value.checked_next_multiple_of(PAGE_SIZE).unwrap_or(u64::MAX)
}

/// `[addr, addr + len)` rounded to pages, if it is a range at all.
fn range(addr: u64, len: u64) -> Option<(u64, u64)> {
    let end = addr.checked_add(len)?;
    (len > 0 && end <= 1 << 63).then(|| (addr, page_up(end)))
}

/// Every range the trace's successful calls touch; an error for a placement it cannot replay.
fn touched(trace: &Trace) -> Result<Vec<(u64, u64)>, TraceError> {
    let mut ranges = Vec::new();
    let mut heap_start = None;
    for (line, op) in &trace.ops {
        let fail = |message: &str| TraceError {
            line: *line,
            message: message.to_string(),
        };
        match op {
            Op::File(..) => {}
            Op::Heap(start) => heap_start = Some(*start),
            Op::Brk(addr, result) => {
                let start = heap_start.ok_or_else(|| fail("brk before the heap's start"))?;
                ranges.extend(range(start, result.unwrap_or(*addr).saturating_sub(start)));
            }
            Op::Mmap {
                addr,
                len,
                flags,
                result,
                ..
            } => match result {
                Some(Outcome::Address(at)) => ranges.extend(range(*at, *len)),
                Some(Outcome::Error(_)) => {}
                None if flags.fixed || flags.fixed_noreplace => ranges.extend(range(*addr, *len)),
                None => {
                    return Err(fail(
                        "an mmap not fixed needs its recorded result to replay on Linux",
                    ));
                }
            },
            Op::Munmap(addr, len) | Op::Mprotect(addr, len, _) => ranges.extend(range(*addr, *len)),
            Op::Mremap {
                old,
                len,
                new_len,
                flags,
                new_addr,
                result,
            } => {
                if matches!(result, Some(Outcome::Error(_))) {
                    continue;
                }
                ranges.extend(range(*old, (*len).max(*new_len)));
                match result {
                    Some(Outcome::Address(at)) => ranges.extend(range(*at, *new_len)),
                    _ if flags.fixed => ranges.extend(range(*new_addr, *new_len)),
                    _ => {}
                }
            }
        }
    }
    Ok(ranges)
}

fn map_bits(flags: MapFlags) -> u64 {
    let bits = [
        (flags.shared, libc::MAP_SHARED),
        (flags.private, libc::MAP_PRIVATE),
        (flags.anonymous, libc::MAP_ANONYMOUS),
        (flags.fixed, libc::MAP_FIXED),
        (flags.fixed_noreplace, libc::MAP_FIXED_NOREPLACE),
        (flags.growsdown, libc::MAP_GROWSDOWN),
        (flags.populate, libc::MAP_POPULATE),
        (flags.noreserve, libc::MAP_NORESERVE),
        (flags.stack, libc::MAP_STACK),
        (flags.locked, libc::MAP_LOCKED),
        (flags.low_32bit, libc::MAP_32BIT),
        (flags.hugetlb, libc::MAP_HUGETLB),
        (flags.sync, libc::MAP_SYNC),
        (flags.droppable, libc::MAP_DROPPABLE),
    ];
    // MAP_HUGE_SHIFT (26): the huge page size's log2.
    let huge_size = (flags.huge_page_shift as i32) << 26;
    bits.into_iter()
        .filter(|&(on, _)| on)
        .fold(huge_size, |all, (_, bit)| all | bit) as u64
}

fn remap_bits(flags: RemapFlags) -> u64 {
    let mut bits = 0;
    if flags.maymove {
        bits |= libc::MREMAP_MAYMOVE;
    }
    if flags.fixed {
        bits |= libc::MREMAP_FIXED;
    }
    bits as u64
}

/// The trace's files, one memfd each (closed on drop).
struct Files {
    by_name: HashMap<String, i32>,
    /// The name `/proc/self/maps` shows for each memfd, and the trace's name for it.
    shown: HashMap<String, String>,
    /// The devices and inodes the trace gives its files.
    identities: HashMap<String, FileIdentity>,
}

impl Files {
    fn open(trace: &Trace) -> Result<Self, TraceError> {
        let mut files = Files {
            by_name: HashMap::new(),
            shown: HashMap::new(),
            identities: HashMap::new(),
        };
        for (line, op) in &trace.ops {
            let name = match op {
                Op::File(name, identity) => {
                    files.identities.insert(name.clone(), *identity);
                    continue;
                }
                Op::Mmap {
                    file: Some((name, _)),
                    ..
                } => name,
                _ => continue,
            };
            if files.by_name.contains_key(name) {
                continue;
            }
            // memfd names are at most 249 bytes; a longer one gets a number.
            let memfd_name = if name.len() <= 249 {
                name.clone()
            } else {
                format!("file{}", files.by_name.len())
            };
            let fail = |message: String| TraceError { line: *line, message };
            let c_name = CString::new(memfd_name.clone())
                .map_err(|_| fail(format!("file name {name:?} holds a NUL")))?;
            // SAFETY: memfd_create with a NUL-terminated name.
            let fd = unsafe { libc::memfd_create(c_name.as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(fail(format!("memfd_create: {}", std::io::Error::last_os_error())));
            }
            files.by_name.insert(name.clone(), fd);
            files
                .shown
                .insert(format!("/memfd:{memfd_name} (deleted)"), name.clone());
        }
        Ok(files)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        for &fd in self.by_name.values() {
            // SAFETY: a descriptor this opened.
            unsafe { libc::close(fd) };
        }
    }
}

/// The system calls that replay `trace` in the child; the final heap `(start, break)`.
fn calls(trace: &Trace, windows: &Windows, files: &Files) -> (Vec<Call>, Option<(u64, u64)>) {
    let at = |addr: u64| windows.to_child(addr);
    let expect = |result: Option<Outcome>| match result {
        Some(Outcome::Address(addr)) => Expect::Value(at(addr)),
        Some(Outcome::Error(errno)) => Expect::Errno(errno.code()),
        None => Expect::Success,
    };
    let mut calls = Vec::new();
    let mut heap: Option<(u64, u64)> = None;
    for &(line, ref op) in &trace.ops {
        let mut call = |number: i64, args: [u64; 6], expect: Expect| {
            calls.push(Call {
                line,
                number,
                args,
                expect,
            })
        };
        match op.pinned() {
            Op::File(..) => {}
            Op::Heap(start) => heap = Some((start, start)),
            Op::Brk(addr, result) => {
                let Some((start, old)) = heap else { continue };
                let new = result.unwrap_or(addr).max(start);
                let (old_top, new_top) = (page_up(old), page_up(new));
                if new_top > old_top {
                    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
                    let rw = prot_bits(Prot::READ_WRITE) as u64;
                    let args = [at(old_top), new_top - old_top, rw, flags, u64::MAX, 0];
                    call(libc::SYS_mmap, args, Expect::Value(at(old_top)));
                } else if new_top < old_top {
                    call(
                        libc::SYS_munmap,
                        [at(new_top), old_top - new_top, 0, 0, 0, 0],
                        Expect::Value(0),
                    );
                }
                heap = Some((start, new));
            }
            Op::Mmap {
                addr,
                len,
                prot,
                flags,
                file,
                result,
            } => {
                let (fd, offset) = match file {
                    Some((name, offset)) if !flags.anonymous => (files.by_name[&name] as u64, offset),
                    _ => (u64::MAX, 0),
                };
                let args = [at(addr), len, prot_bits(prot) as u64, map_bits(flags), fd, offset];
                let expect = match result {
                    None if flags.fixed || flags.fixed_noreplace => Expect::Value(at(addr)),
                    other => expect(other),
                };
                call(libc::SYS_mmap, args, expect);
            }
            Op::Munmap(addr, len) => call(libc::SYS_munmap, [at(addr), len, 0, 0, 0, 0], Expect::Value(0)),
            Op::Mprotect(addr, len, prot) => call(
                libc::SYS_mprotect,
                [at(addr), len, prot_bits(prot) as u64, 0, 0, 0],
                Expect::Value(0),
            ),
            Op::Mremap {
                old,
                len,
                new_len,
                flags,
                new_addr,
                result,
            } => {
                let args = [at(old), len, new_len, remap_bits(flags), at(new_addr), 0];
                call(libc::SYS_mremap, args, expect(result));
            }
        }
    }
    (calls, heap)
}

/// The child's side: clears the windows, makes the calls; returns 0, or the number (from 1) of
/// the first call whose result differs, with that result in `*actual`.
///
/// # Safety
/// Only in a child just forked by [`child::in_child`] from the process that reserved the
/// windows; `actual` points to memory shared with the parent.
unsafe fn run_calls(windows: &Windows, calls: &[Call], actual: *mut i64) -> i64 {
    // SAFETY: (whole function) raw system calls on the child's own scratch ranges, and a store
    // to the shared page the caller passes.
    unsafe {
        for window in &windows.0 {
            window.scratch.clear();
        }
        for (index, call) in calls.iter().enumerate() {
            let [a, b, c, d, e, f] = call.args;
            let mut ret = libc::syscall(call.number, a, b, c, d, e, f);
            if ret == -1 {
                ret = -(*libc::__errno_location() as i64);
            }
            let matches = match call.expect {
                Expect::Value(value) => ret == value as i64,
                Expect::Errno(errno) => ret == -(errno as i64),
                Expect::Success => ret >= 0,
            };
            if !matches {
                actual.write_volatile(ret);
                return index as i64 + 1;
            }
        }
        0
    }
}

/// Replays `trace` with real system calls in a forked child and returns the layout it made,
/// as `vma::AddressSpace::maps` prints one: `start-end perms offset [name]`, files by their
/// names in the trace, `[heap]` by Linux's rule. A recorded result the kernel does not return is
/// an error naming its line.
pub fn replay(trace: &Trace) -> Result<String, TraceError> {
    let windows = Windows::reserve(touched(trace)?);
    let files = Files::open(trace)?;
    let (calls, heap) = calls(trace, &windows, &files);
    // The child's answer: the result that differed.
    let shared = child::SharedPage::new();
    let actual = shared.as_mut_ptr::<i64>();
    // SAFETY: the child was just forked from this process, which reserved the windows and
    // mapped the shared page.
    let (failed, maps) = child::in_child(|| unsafe { run_calls(&windows, &calls, actual) });
    // SAFETY: the shared page, written by the child (which has exited).
    let actual = unsafe { actual.read_volatile() };
    if failed != 0 {
        let call = calls[failed as usize - 1];
        let got = if actual < 0 {
            format!("-{}", std::io::Error::from_raw_os_error(-actual as i32))
        } else {
            format!("{actual:#x}")
        };
        let expected = match call.expect {
            Expect::Value(value) => format!("{value:#x}"),
            Expect::Errno(errno) => format!("-{}", std::io::Error::from_raw_os_error(errno)),
            Expect::Success => "success".to_string(),
        };
        return Err(TraceError {
            line: call.line,
            message: format!("Linux returned {got}, the replay expected {expected} (addresses as relocated)"),
        });
    }
    Ok(layout(&maps, &windows, &files, heap))
}

/// The lines of the child's `/proc/self/maps` inside the windows, moved back and printed as
/// maplevm prints its maps: files by their names and devices and inodes in the trace, `[heap]`
/// by Linux's rule (`show_map_vma`).
fn layout(maps: &str, windows: &Windows, files: &Files, heap: Option<(u64, u64)>) -> String {
    let mut lines: Vec<(u64, String)> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let (start, end) = fields.next()?.split_once('-')?;
            let (start, end) = windows.to_trace(
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            )?;
            let perms = fields.next()?.as_bytes();
            let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
            let (major, minor) = fields.next()?.split_once(':')?;
            let inode = fields.next()?.parse().ok()?;
            let name = fields.next().unwrap_or("").trim_start();
            let mut identity = FileIdentity {
                major: u32::from_str_radix(major, 16).ok()?,
                minor: u32::from_str_radix(minor, 16).ok()?,
                inode,
            };
            let name = match files.shown.get(name) {
                Some(trace_name) => {
                    identity = files.identities.get(trace_name).copied().unwrap_or_default();
                    trace_name.as_str()
                }
                None if name.is_empty()
                    && heap.is_some_and(|(heap_start, brk)| {
                        brk > heap_start && start <= brk && end >= heap_start
                    }) =>
                {
                    "[heap]"
                }
                None => name,
            };
            let line = MapsLine {
                start,
                end,
                prot: Prot::new(perms[0] == b'r', perms[1] == b'w', perms[2] == b'x'),
                shared: perms[3] == b's',
                offset,
                identity,
                name,
            };
            Some((start, line.to_string()))
        })
        .collect();
    lines.sort_unstable();
    lines.into_iter().fold(String::new(), |mut all, (_, line)| {
        all.push_str(&line);
        all.push('\n');
        all
    })
}
