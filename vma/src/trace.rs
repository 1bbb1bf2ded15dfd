//! Text traces of address-space operations, and their replay.
//!
//! One operation per line; `#` starts a comment; numbers are `0x` hex or decimal:
//!
//! ```text
//! file NAME MAJOR:MINOR INODE
//! heap START
//! brk ADDR [-> RESULT]
//! mmap ADDR LEN PROT FLAGS [FILE PGOFF] [-> RESULT]
//! munmap ADDR LEN
//! mprotect ADDR LEN PROT
//! mremap OLD LEN NEWLEN FLAGS [NEWADDR] [-> RESULT]
//! ```
//!
//! PROT is like `rw-`; FLAGS is a comma-separated list of `private shared shared_validate
//! droppable anonymous fixed fixed_noreplace growsdown populate noreserve stack locked 32bit
//! hugetlb huge_2mb huge_1gb sync maymove` (see `MapFlags`), and `denywrite executable file
//! nonblock uninitialized`, which Linux ignores (other flags are ignored with a warning); FILE is a name (the same name is the same object) and PGOFF a byte offset. A `-> RESULT` records what the
//! system that produced the trace returned: an address (the replay then places the mapping there,
//! as MAP_FIXED_NOREPLACE, or moves it there for mremap, so layouts stay comparable) or an error
//! such as `-ENOMEM`, which the replay must reproduce. A `file` line gives a file's device
//! (hex, as /proc/PID/maps prints it) and inode; a file without one has 00:00 and inode 0.

use crate::Errno;
use crate::maps::FileIdentity;
use crate::request::{MapFlags, RemapFlags};
use crate::space::AddressSpace;
use crate::vma::{MappedFile, Prot};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A file named in a trace.
#[derive(Debug)]
pub struct TraceFile {
    name: String,
    identity: FileIdentity,
}

impl MappedFile for TraceFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn identity(&self) -> FileIdentity {
        self.identity
    }
}

/// What the traced system returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An address.
    Address(u64),
    /// An error.
    Error(Errno),
}

/// One operation of a trace.
#[derive(Debug, Clone)]
pub enum Op {
    /// `file NAME MAJOR:MINOR INODE`: the device and inode of the file `NAME`.
    File(String, FileIdentity),
    /// `heap START`
    Heap(u64),
    /// `brk ADDR`
    Brk(u64, Option<u64>),
    /// `mmap ADDR LEN PROT FLAGS [FILE PGOFF]`
    Mmap {
        /// Address or hint.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// Permissions.
        prot: Prot,
        /// Flags.
        flags: MapFlags,
        /// File name and byte offset.
        file: Option<(String, u64)>,
        /// What the traced system returned.
        result: Option<Outcome>,
    },
    /// `munmap ADDR LEN`
    Munmap(u64, u64),
    /// `mprotect ADDR LEN PROT`
    Mprotect(u64, u64, Prot),
    /// `mremap OLD LEN NEWLEN FLAGS [NEWADDR]`
    Mremap {
        /// Old address.
        old: u64,
        /// Old length.
        len: u64,
        /// New length.
        new_len: u64,
        /// Flags.
        flags: RemapFlags,
        /// Target with `fixed`.
        new_addr: u64,
        /// What the traced system returned.
        result: Option<Outcome>,
    },
}

/// A parsed trace: operations with their line numbers, and warnings.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// `(line number, operation)`.
    pub ops: Vec<(usize, Op)>,
    /// Things ignored while parsing (unknown flags), with line numbers.
    pub warnings: Vec<String>,
}

/// A malformed line, or a replay that did not reproduce the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TraceError {}

fn number(word: &str) -> Result<u64, String> {
    let parsed = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => word.parse(),
    };
    parsed.map_err(|_| format!("not a number: {word:?}"))
}

fn prot(word: &str) -> Result<Prot, String> {
    Prot::parse(word).ok_or_else(|| format!("not a protection like rw-: {word:?}"))
}

fn outcome(word: &str) -> Result<Outcome, String> {
    match word.strip_prefix('-') {
        Some(name) => Errno::from_name(name)
            .map(Outcome::Error)
            .ok_or_else(|| format!("unknown error {word:?}")),
        None => number(word).map(Outcome::Address),
    }
}

/// Parses flags; returns them with the unknown words.
fn flags(word: &str) -> (MapFlags, RemapFlags, Vec<String>) {
    let (mut map, mut remap, mut unknown) = (MapFlags::default(), RemapFlags::default(), Vec::new());
    for flag in word.split(',').filter(|f| !f.is_empty()) {
        match flag {
            "private" => map.private = true,
            "shared" => map.shared = true,
            "anonymous" => map.anonymous = true,
            "fixed" => (map.fixed, remap.fixed) = (true, true),
            "fixed_noreplace" => map.fixed_noreplace = true,
            "growsdown" => map.growsdown = true,
            "populate" => map.populate = true,
            "noreserve" => map.noreserve = true,
            "stack" => map.stack = true,
            "locked" => map.locked = true,
            "32bit" => map.low_32bit = true,
            "hugetlb" => map.hugetlb = true,
            "huge_2mb" => map.huge_page_shift = 21,
            "huge_1gb" => map.huge_page_shift = 30,
            "sync" => map.sync = true,
            "droppable" => map.droppable = true,
            "shared_validate" => (map.shared, map.private) = (true, true),
            "maymove" => remap.maymove = true,
            // Flags strace prints that Linux ignores: MAP_DENYWRITE and MAP_EXECUTABLE (since
            // 5.x, and long before), MAP_FILE (0), MAP_NONBLOCK (since 2.6.23),
            // MAP_UNINITIALIZED (except on kernels without an MMU).
            "denywrite" | "executable" | "file" | "nonblock" | "uninitialized" => {}
            other => unknown.push(other.to_string()),
        }
    }
    (map, remap, unknown)
}

impl Op {
    /// The operation placed where the traced system placed it: an mmap that was not fixed at
    /// the address it returned (MAP_FIXED_NOREPLACE), an mremap that moved to where it moved
    /// (MREMAP_FIXED), so that a replay lays out what the trace recorded; any other operation
    /// as it is.
    pub fn pinned(&self) -> Op {
        match *self {
            Op::Mmap {
                len,
                prot,
                flags,
                ref file,
                result: Some(Outcome::Address(at)),
                ..
            } if !(flags.fixed || flags.fixed_noreplace) => Op::Mmap {
                addr: at,
                len,
                prot,
                flags: flags.fixed_noreplace(),
                file: file.clone(),
                result: Some(Outcome::Address(at)),
            },
            Op::Mremap {
                old,
                len,
                new_len,
                flags,
                result: Some(Outcome::Address(at)),
                ..
            } if at != old && !flags.fixed => Op::Mremap {
                old,
                len,
                new_len,
                flags: RemapFlags {
                    maymove: true,
                    fixed: true,
                },
                new_addr: at,
                result: Some(Outcome::Address(at)),
            },
            ref op => op.clone(),
        }
    }
}

impl Trace {
    /// Parses a trace; a malformed line is an error naming its line number.
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut trace = Trace::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let op = trace
                .parse_line(content, line)
                .map_err(|message| TraceError { line, message })?;
            trace.ops.push((line, op));
        }
        Ok(trace)
    }

    fn parse_line(&mut self, content: &str, line: usize) -> Result<Op, String> {
        let (call, result) = match content.split_once("->") {
            Some((call, result)) => (call.trim(), Some(outcome(result.trim())?)),
            None => (content, None),
        };
        let words: Vec<&str> = call.split_whitespace().collect();
        let arity = |range: std::ops::RangeInclusive<usize>| {
            if range.contains(&(words.len() - 1)) {
                Ok(())
            } else {
                Err(format!(
                    "{} takes {range:?} arguments, got {}",
                    words[0],
                    words.len() - 1
                ))
            }
        };
        let mut warn_unknown = |unknown: Vec<String>| {
            for flag in unknown {
                self.warnings
                    .push(format!("line {line}: unknown flag {flag:?} ignored"));
            }
        };
        let op = match words[0] {
            "file" => {
                arity(3..=3)?;
                let device = words[2]
                    .split_once(':')
                    .and_then(|(major, minor)| {
                        Some((
                            u32::from_str_radix(major, 16).ok()?,
                            u32::from_str_radix(minor, 16).ok()?,
                        ))
                    })
                    .ok_or_else(|| format!("not a device like fe:00: {:?}", words[2]))?;
                Op::File(
                    words[1].to_string(),
                    FileIdentity {
                        major: device.0,
                        minor: device.1,
                        inode: number(words[3])?,
                    },
                )
            }
            "heap" => {
                arity(1..=1)?;
                Op::Heap(number(words[1])?)
            }
            "brk" => {
                arity(1..=1)?;
                let result = match result {
                    Some(Outcome::Address(a)) => Some(a),
                    Some(Outcome::Error(e)) => return Err(format!("brk does not fail with {e:?}")),
                    None => None,
                };
                Op::Brk(number(words[1])?, result)
            }
            "mmap" => {
                if words.len() != 5 && words.len() != 7 {
                    return Err(format!("mmap takes 4 or 6 arguments, got {}", words.len() - 1));
                }
                let (flags, _, unknown) = flags(words[4]);
                warn_unknown(unknown);
                let file = if words.len() == 7 {
                    Some((words[5].to_string(), number(words[6])?))
                } else {
                    None
                };
                Op::Mmap {
                    addr: number(words[1])?,
                    len: number(words[2])?,
                    prot: prot(words[3])?,
                    flags,
                    file,
                    result,
                }
            }
            "munmap" => {
                arity(2..=2)?;
                Op::Munmap(number(words[1])?, number(words[2])?)
            }
            "mprotect" => {
                arity(3..=3)?;
                Op::Mprotect(number(words[1])?, number(words[2])?, prot(words[3])?)
            }
            "mremap" => {
                arity(4..=5)?;
                let (_, flags, unknown) = flags(words[4]);
                warn_unknown(unknown);
                Op::Mremap {
                    old: number(words[1])?,
                    len: number(words[2])?,
                    new_len: number(words[3])?,
                    flags,
                    new_addr: words.get(5).map_or(Ok(0), |w| number(w))?,
                    result,
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        };
        if result.is_some() && !matches!(op, Op::Mmap { .. } | Op::Mremap { .. } | Op::Brk(..)) {
            return Err("only mmap, mremap and brk take a -> RESULT".to_string());
        }
        Ok(op)
    }

    /// Applies the trace to `target` (an [`AddressSpace`], or another implementation of the
    /// calls). A recorded result is reproduced: an address by placing the mapping there
    /// ([`Op::pinned`]), an error by failing the same way; a difference is an error naming the
    /// line.
    pub fn replay<T: Target + ?Sized>(&self, target: &T) -> Result<(), TraceError> {
        let mut files: HashMap<String, T::File> = HashMap::new();
        for (line, op) in &self.ops {
            let fail = |message: String| TraceError { line: *line, message };
            match op.pinned() {
                Op::File(name, identity) => {
                    let file = target.open(&name, identity);
                    files.insert(name, file);
                }
                Op::Heap(start) => target.set_heap_start(start).map_err(|e| fail(e.to_string()))?,
                Op::Brk(addr, result) => {
                    let got = target.brk(addr);
                    if let Some(expected) = result
                        && got != expected
                    {
                        return Err(fail(format!(
                            "brk returned {got:#x}, the trace says {expected:#x}"
                        )));
                    }
                }
                Op::Mmap {
                    addr,
                    len,
                    prot,
                    flags,
                    file,
                    result,
                } => {
                    let file = file.map(|(name, offset)| {
                        let object = files
                            .entry(name.clone())
                            .or_insert_with(|| target.open(&name, FileIdentity::default()));
                        (object.clone(), offset)
                    });
                    check(target.mmap(addr, len, prot, flags, file), result).map_err(fail)?;
                }
                Op::Munmap(addr, len) => target.munmap(addr, len).map_err(|e| fail(e.to_string()))?,
                Op::Mprotect(addr, len, prot) => {
                    target
                        .mprotect(addr, len, prot)
                        .map_err(|e| fail(e.to_string()))?;
                }
                Op::Mremap {
                    old,
                    len,
                    new_len,
                    flags,
                    new_addr,
                    result,
                } => {
                    check(target.mremap(old, len, new_len, flags, new_addr), result).map_err(fail)?;
                }
            }
        }
        Ok(())
    }
}

/// What a trace replays on: the calls of an address space, and its files by name.
pub trait Target {
    /// The target's file object (one per name in a trace).
    type File: Clone;

    /// The file a trace names, with the device and inode it declares (or none).
    fn open(&self, name: &str, identity: FileIdentity) -> Self::File;

    /// mmap (see [`AddressSpace::mmap`]).
    fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(Self::File, u64)>,
    ) -> crate::Result<u64>;

    /// munmap.
    fn munmap(&self, addr: u64, len: u64) -> crate::Result<()>;

    /// mprotect.
    fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> crate::Result<()>;

    /// mremap.
    fn mremap(
        &self,
        old: u64,
        len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> crate::Result<u64>;

    /// Where the heap starts.
    fn set_heap_start(&self, start: u64) -> crate::Result<()>;

    /// brk: the new break, or the old one when refused.
    fn brk(&self, addr: u64) -> u64;
}

impl Target for AddressSpace {
    type File = Arc<dyn MappedFile>;

    fn open(&self, name: &str, identity: FileIdentity) -> Self::File {
        Arc::new(TraceFile {
            name: name.to_string(),
            identity,
        })
    }

    fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(Self::File, u64)>,
    ) -> crate::Result<u64> {
        AddressSpace::mmap(self, addr, len, prot, flags, file)
    }

    fn munmap(&self, addr: u64, len: u64) -> crate::Result<()> {
        AddressSpace::munmap(self, addr, len)
    }

    fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> crate::Result<()> {
        AddressSpace::mprotect(self, addr, len, prot)
    }

    fn mremap(
        &self,
        old: u64,
        len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> crate::Result<u64> {
        AddressSpace::mremap(self, old, len, new_len, flags, new_addr)
    }

    fn set_heap_start(&self, start: u64) -> crate::Result<()> {
        AddressSpace::set_heap_start(self, start)
    }

    fn brk(&self, addr: u64) -> u64 {
        AddressSpace::brk(self, addr)
    }
}

/// Compares a replayed result with the recorded one.
fn check(got: crate::Result<u64>, expected: Option<Outcome>) -> Result<(), String> {
    match (got, expected) {
        (Ok(at), Some(Outcome::Address(want))) if at != want => {
            Err(format!("returned {at:#x}, the trace says {want:#x}"))
        }
        (Ok(at), Some(Outcome::Error(want))) => Err(format!("returned {at:#x}, the trace says -{want:?}")),
        (Err(e), Some(Outcome::Error(want))) if e.errno == want => Ok(()),
        (Err(e), _) => Err(format!("failed with {e}")),
        (Ok(_), _) => Ok(()),
    }
}
