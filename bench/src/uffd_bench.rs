//! `bench uffd`: real hardware page faults served through userfaultfd, beside the kernel's own
//! anonymous faults, on the same loads and stores.
//!
//! Servers:
//! - `kernel`: the kernel's own anonymous-memory faults (mmap(2) and munmap(2) in this process);
//! - `maplevm`: [`fault::uffd::UffdMm`], whose handler threads look the VMA up with maplevm's
//!   lock-free lookup and fill the page under the protocol's guard;
//! - each design of the comparison (`designs::NAMES`): the same region and handler threads
//!   ([`fault::uffd`]'s raw layer), the handler finding the VMA with the design's own fault
//!   (its lookup and locks, and an install into its software page table, the same in every
//!   design), then filling the page; its mmap and munmap are the design's, followed by the
//!   region's permissions and `MADV_DONTNEED`. A harness, not a product: the fill comes after
//!   the design's locks are released, so a fill racing a munmap can leave a zero page behind
//!   the kernel's `PROT_NONE` (harmless to anonymous memory, which reads zero again).
//!
//! Each faulting thread maps a region of its own (`pages` pages, read-write, private
//! anonymous), stores one byte to every page — each store a fault, the page being missing —
//! timing each store, then maps the region again over itself (MAP_FIXED, which drops its pages)
//! and repeats. With churn, one more thread maps 16 pages, stores to one and unmaps them, in a
//! loop. Reported: faults/s of all faulting threads, the store-that-faults latency (p50, p99)
//! and the churn thread's calls/s.

use crate::designs::{self, Design, DesignConfig};
use fault::uffd::{Handlers, PageFault, Region, UffdMm, Userfaultfd, availability};
use fault::{FaultError, FramePool, FramePoolConfig, Layout, MapFlags, PAGE_SIZE, Prot};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, compiler_fence};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Who serves the faults: `kernel`, `maplevm`, or a design of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The kernel's own anonymous-memory faults.
    Kernel,
    /// [`UffdMm`]'s handler threads.
    Maplevm,
    /// A design's fault as the handler's lookup.
    Design(&'static str),
}

impl Server {
    /// The server called `name` (`kernel`, `maplevm` or a design's name).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "kernel" => Some(Server::Kernel),
            "maplevm" => Some(Server::Maplevm),
            _ => designs::NAMES
                .iter()
                .find(|&&n| n == name)
                .map(|&n| Server::Design(n)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Server::Kernel => "kernel",
            Server::Maplevm => "maplevm",
            Server::Design(name) => name,
        }
    }
}

/// A design's address space over a real region whose faults it serves (see the module
/// documentation). Dropped in field order: the handlers stop before the region goes.
struct DesignRegion {
    _handlers: Handlers,
    design: Arc<dyn Design>,
    region: Region,
}

impl DesignRegion {
    fn new(name: &str, len: u64, handlers: usize) -> Result<Self, String> {
        let uffd = Arc::new(Userfaultfd::open().map_err(|e| e.to_string())?);
        let region = Region::reserve(len).map_err(|e| e.to_string())?;
        uffd.register(&region).map_err(|e| e.to_string())?;
        let (low, high) = region.bounds();
        let config = DesignConfig {
            layout: Layout {
                low,
                high,
                mmap_base: high,
            },
            zero_fill: false,
        };
        let frames = Arc::new(FramePool::new(FramePoolConfig::default()).map_err(|e| e.to_string())?);
        let design = designs::build(name, config, frames).ok_or_else(|| format!("no design {name}"))?;
        let server = design.clone();
        let fills = uffd.clone();
        let serve = Arc::new(move |fault: PageFault| {
            // The design's fault decides (its lookup, locks and permission check).
            let allowed = !matches!(
                server.fault(fault.page, fault.access),
                Err(FaultError::NotMapped | FaultError::AccessDenied)
            );
            if !(allowed && fills.zero_fill(fault.page)) {
                fills.wake(fault.page);
            }
        });
        let handlers = Handlers::start(handlers, uffd, serve).map_err(|e| e.to_string())?;
        Ok(Self {
            _handlers: handlers,
            design,
            region,
        })
    }
}

/// Pages the churn thread maps each round.
const CHURN_PAGES: u64 = 16;

/// The address-space calls a thread of one cell makes.
enum Calls {
    Kernel,
    Maplevm(UffdMm),
    Design(DesignRegion),
}

impl Calls {
    /// The calls of `server`, over a region of `len` bytes served by `handlers` threads.
    fn of(server: Server, len: u64, handlers: usize) -> Result<Self, String> {
        Ok(match server {
            Server::Kernel => Calls::Kernel,
            Server::Maplevm => Calls::Maplevm(UffdMm::new(len, handlers).map_err(|e| e.to_string())?),
            Server::Design(name) => Calls::Design(DesignRegion::new(name, len, handlers)?),
        })
    }

    /// A new private anonymous read-write mapping of `len` bytes (at `at`, replacing what is
    /// there, when given).
    fn map(&self, at: Option<u64>, len: u64) -> u64 {
        let flags = match at {
            Some(_) => MapFlags::PRIVATE_ANONYMOUS.fixed(),
            None => MapFlags::PRIVATE_ANONYMOUS,
        };
        match self {
            Calls::Kernel => {
                let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | at.map_or(0, |_| libc::MAP_FIXED);
                // SAFETY: a new anonymous mapping; with MAP_FIXED, over a region this thread
                // mapped itself and no reference points into.
                let addr = unsafe {
                    libc::mmap(
                        at.unwrap_or(0) as *mut libc::c_void,
                        len as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        flags,
                        -1,
                        0,
                    )
                };
                assert_ne!(
                    addr,
                    libc::MAP_FAILED,
                    "mmap: {}",
                    std::io::Error::last_os_error()
                );
                addr as u64
            }
            Calls::Maplevm(mm) => mm
                .mmap(at.unwrap_or(0), len, Prot::READ_WRITE, flags, None)
                .expect("the region has room"),
            Calls::Design(d) => {
                let start = d
                    .design
                    .mmap(at.unwrap_or(0), len, Prot::READ_WRITE, flags, None)
                    .expect("the region has room");
                d.region.drop_pages(start, len);
                d.region.set_prot(start, len, Prot::READ_WRITE);
                start
            }
        }
    }

    fn unmap(&self, addr: u64, len: u64) {
        match self {
            Calls::Kernel => {
                // SAFETY: a mapping this thread made and no reference points into.
                let done = unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
                assert_eq!(done, 0, "munmap: {}", std::io::Error::last_os_error());
            }
            Calls::Maplevm(mm) => mm.munmap(addr, len).expect("a mapping this thread made"),
            Calls::Design(d) => {
                d.design.munmap(addr, len).expect("a mapping this thread made");
                d.region.drop_pages(addr, len);
                d.region.set_prot(addr, len, Prot::NONE);
            }
        }
    }
}

/// Stores `byte` at `addr`: a plain store, the page faulting if missing.
///
/// # Safety
/// `addr` must lie in a read-write mapping of the caller's that nobody else unmaps meanwhile.
unsafe fn store(addr: u64, byte: u8) {
    // The fences keep the compiler from moving the store out of the timed window (the clock's
    // call touches no memory it knows of).
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as the caller vouches; volatile, so that the store is made.
    unsafe { std::ptr::write_volatile(addr as *mut u8, byte) };
    compiler_fence(Ordering::SeqCst);
}

/// A histogram of latencies from 1 ns to a minute (3 significant digits).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// One cell's figures.
struct Cell {
    faults_per_sec: f64,
    p50_ns: u64,
    p99_ns: u64,
    churn_per_sec: Option<f64>,
}

/// Runs one cell: `threads` faulting threads for `duration`, with or without churn.
fn run_cell(
    server: Server,
    threads: usize,
    churn: bool,
    pages: u64,
    duration: Duration,
) -> Result<Cell, String> {
    let len = pages * PAGE_SIZE;
    // Room for every region and the churn; as many handler threads as faulting ones.
    let room = (threads as u64 * len + 64 * CHURN_PAGES * PAGE_SIZE).next_power_of_two() * 4;
    let calls = Arc::new(Calls::of(server, room, threads)?);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(threads + 1 + usize::from(churn)));
    let faults = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (calls, stop, start, faults) = (calls.clone(), stop.clone(), start.clone(), faults.clone());
            thread::spawn(move || {
                let mut latency = latency_histogram();
                let region = calls.map(None, len);
                start.wait();
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    for page in 0..pages {
                        let began = Instant::now();
                        // SAFETY: this thread's own read-write region, unmapped by no one else.
                        unsafe { store(region + page * PAGE_SIZE, 1) };
                        latency.saturating_record(began.elapsed().as_nanos() as u64);
                    }
                    done += pages;
                    calls.map(Some(region), len);
                }
                calls.unmap(region, len);
                faults.fetch_add(done, Ordering::Relaxed);
                latency
            })
        })
        .collect();
    let churner = churn.then(|| {
        let (calls, stop, start) = (calls.clone(), stop.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let addr = calls.map(None, CHURN_PAGES * PAGE_SIZE);
                // SAFETY: mapped read-write just above, by this thread.
                unsafe { store(addr, 1) };
                calls.unmap(addr, CHURN_PAGES * PAGE_SIZE);
                rounds += 1;
            }
            rounds
        })
    });
    start.wait();
    let began = Instant::now();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latency = latency_histogram();
    for worker in workers {
        latency
            .add(worker.join().map_err(|_| "a faulting thread panicked")?)
            .expect("same bounds");
    }
    let elapsed = began.elapsed().as_secs_f64();
    let churn_per_sec = match churner {
        Some(churner) => {
            Some(churner.join().map_err(|_| "the churn thread panicked")? as f64 * 2.0 / elapsed)
        }
        None => None,
    };
    Ok(Cell {
        faults_per_sec: faults.load(Ordering::Relaxed) as f64 / elapsed,
        p50_ns: latency.value_at_quantile(0.5),
        p99_ns: latency.value_at_quantile(0.99),
        churn_per_sec,
    })
}

/// The comparison as a table: `servers` × `threads` × without and with churn, each cell
/// running for `duration` with `pages` pages per faulting thread, the kernel's cell first as
/// the ratios' base. Where userfaultfd is unavailable, one line saying why instead.
pub fn compare(
    servers: &[Server],
    threads: &[usize],
    pages: u64,
    duration: Duration,
) -> Result<String, String> {
    if let Err(why) = availability() {
        return Ok(format!("bench uffd: skipped: userfaultfd unavailable: {why}\n"));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# bench uffd: real faults (one store per missing page), {pages} pages per thread, {} ms per cell, {} CPUs",
        duration.as_millis(),
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    let _ = writeln!(
        out,
        "Columns: faults/s of all faulting threads, and as a ratio to the kernel's own faults measured just before; latency of a store that faults (p50, p99); calls/s (mmap + munmap) of the churn thread."
    );
    let _ = writeln!(
        out,
        "| server | threads | churn | faults/s | vs kernel | p50 | p99 | churn calls/s |"
    );
    let _ = writeln!(out, "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for &threads in threads {
        for churn in [false, true] {
            let kernel = run_cell(Server::Kernel, threads, churn, pages, duration)?;
            for &server in servers {
                let cell = match server {
                    Server::Kernel => None,
                    other => Some(run_cell(other, threads, churn, pages, duration)?),
                };
                let cell = cell.as_ref().unwrap_or(&kernel);
                let _ = writeln!(
                    out,
                    "| {} | {threads} | {} | {:.0} | {:.2}x | {:.1}µs | {:.1}µs | {} |",
                    server.name(),
                    if churn { "yes" } else { "no" },
                    cell.faults_per_sec,
                    cell.faults_per_sec / kernel.faults_per_sec,
                    cell.p50_ns as f64 / 1e3,
                    cell.p99_ns as f64 / 1e3,
                    cell.churn_per_sec.map_or("-".to_string(), |c| format!("{c:.0}")),
                );
            }
        }
    }
    Ok(out)
}
