//! Every trace in the repository (vma/tests/traces) replayed both ways, with real system calls
//! in a forked child (`oracle::replay`) and on a maplevm `AddressSpace`: the layouts must be
//! identical, line for line (start, end, permissions, offset, name), and so the VMA counts.

use std::path::PathBuf;
use vma::maps::without_shmem_inodes;
use vma::trace::Trace;
use vma::{AddressSpace, Layout, NoFlush};

fn traces() -> Vec<(String, Trace)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vma/tests/traces");
    let mut found: Vec<(String, Trace)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "trace"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let trace = Trace::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().unwrap().to_string_lossy().into_owned(), trace)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn maplevm(trace: &Trace) -> String {
    let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    trace.replay(&space).unwrap();
    space.validate().unwrap();
    space.maps()
}

#[test]
fn every_trace_replays_to_the_kernels_layout() {
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        eprintln!("skipped: replaying traces on the kernel needs Linux on x86-64");
        return;
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let traces = traces();
        assert!(traces.len() >= 3, "traces not found");
        let mut differences = Vec::new();
        for (name, trace) in &traces {
            let linux = oracle::replay::replay(trace).unwrap_or_else(|e| panic!("{name} on Linux: {e}"));
            let (linux, ours) = (
                without_shmem_inodes(&linux),
                without_shmem_inodes(&maplevm(trace)),
            );
            if linux != ours {
                differences.push(format!(
                    "{name}: {} VMAs on Linux, {} in maplevm\n{}",
                    linux.lines().count(),
                    ours.lines().count(),
                    diff(&linux, &ours)
                ));
            }
        }
        assert!(differences.is_empty(), "{}", differences.join("\n"));
    }
}

/// The lines only one side has, marked `-` (Linux) and `+` (maplevm).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn diff(linux: &str, ours: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (linux.lines().collect(), ours.lines().collect());
    let only = |mine: &[&str], theirs: &[&str], mark: char| {
        mine.iter()
            .filter(|line| !theirs.contains(line))
            .map(|line| format!("  {mark} {line}\n"))
            .collect::<String>()
    };
    only(&a, &b, '-') + &only(&b, &a, '+')
}

/// A recorded result the kernel does not return is reported with its line.
#[test]
fn a_result_the_kernel_does_not_return_is_reported() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let trace = Trace::parse(
            "mmap 0x7f0000000000 0x2000 rw- private,anonymous,fixed\n\
             mmap 0x7f0000004000 0x1000 rw- private,anonymous,fixed_noreplace -> -EEXIST\n",
        )
        .unwrap();
        let error = oracle::replay::replay(&trace).unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        assert!(error.message.contains("File exists"), "{error}");
    }
}
