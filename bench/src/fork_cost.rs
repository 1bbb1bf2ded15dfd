//! fork's latency against the number of VMAs and the pages in each (`bench fork-cost`): an
//! address space of a design holds B private anonymous VMAs (alternately read-only, so that
//! they stay apart) of `pages` written pages each; it forks and the child is dropped, `rounds`
//! times, nothing else running. Each fork is timed alone, the drop untimed; the median and the
//! range are reported. maplevm copies the VMA tree in one pass and each VMA's pages under a
//! fence of that VMA alone; the baselines copy VMA by VMA under their locks.

use crate::designs::{self, DesignConfig};
use fault::{FramePool, FramePoolConfig};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vma::{MapFlags, PAGE_SIZE, Prot};

/// The designs `bench fork-cost` compares.
pub const DESIGNS: [&str; 3] = ["rcu", "rwlock", "pervma"];
/// The VMA counts it measures.
pub const VMAS: [u64; 3] = [16, 256, 2048];
/// The pages per VMA it measures.
pub const PAGES: [u64; 2] = [1, 8];

/// What `rounds` forks of one address space took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkTimes {
    /// The median fork.
    pub median: Duration,
    /// The fastest.
    pub min: Duration,
    /// The slowest.
    pub max: Duration,
}

/// Forks an address space of `design` holding `vmas` VMAs of `pages` written pages, `rounds`
/// times (see the module documentation).
pub fn measure(design: &str, (vmas, pages): (u64, u64), rounds: usize) -> Result<ForkTimes, String> {
    if vmas == 0 || pages == 0 || rounds == 0 {
        return Err("vmas, pages and rounds: at least 1".into());
    }
    let frames = Arc::new(FramePool::new(FramePoolConfig::default()).map_err(|e| e.to_string())?);
    let parent =
        designs::build(design, DesignConfig::default(), frames).ok_or(format!("unknown design {design}"))?;
    let size = pages * PAGE_SIZE;
    for i in 0..vmas {
        let at = parent
            .mmap(0, size, Prot::READ_WRITE, MapFlags::PRIVATE_ANONYMOUS, None)
            .map_err(|e| e.to_string())?;
        for page in 0..pages {
            parent
                .write(at + page * PAGE_SIZE, &[1])
                .map_err(|e| e.to_string())?;
        }
        if i % 2 == 1 {
            parent.mprotect(at, size, Prot::READ).map_err(|e| e.to_string())?;
        }
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let since = Instant::now();
        let child = parent.fork().map_err(|e| e.to_string())?;
        times.push(since.elapsed());
        drop(child);
    }
    times.sort_unstable();
    Ok(ForkTimes {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
    })
}

/// [`measure`] for every design of [`DESIGNS`] at every size of [`VMAS`] × [`PAGES`], as a
/// Markdown table.
pub fn table(rounds: usize) -> Result<String, String> {
    let mut out = format!(
        "fork latency, {rounds} forks each (median, and the range), nothing else running\n\n\
         | VMAs | pages each | {} |\n|---:|---:|{}\n",
        DESIGNS.join(" | "),
        "---|".repeat(DESIGNS.len())
    );
    for vmas in VMAS {
        for pages in PAGES {
            let _ = write!(out, "| {vmas} | {pages} |");
            for design in DESIGNS {
                let t = measure(design, (vmas, pages), rounds)?;
                let micros = |d: Duration| d.as_secs_f64() * 1e6;
                let _ = write!(
                    out,
                    " {:.0} µs ({:.0}–{:.0}) |",
                    micros(t.median),
                    micros(t.min),
                    micros(t.max)
                );
            }
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;

    #[test]
    fn every_design_forks_and_bad_sizes_are_errors() {
        for design in DESIGNS {
            let t = measure(design, (4, 2), 3).unwrap();
            assert!(t.min <= t.median && t.median <= t.max);
        }
        assert!(measure("rcu", (0, 1), 1).is_err());
        assert!(measure("rcu", (1, 1), 0).is_err());
        assert!(measure("nope", (1, 1), 1).is_err());
    }
}
