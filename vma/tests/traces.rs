//! Trace replay: traces captured with strace from real processes (tools/strace2trace.py),
//! replayed and compared with the /proc/self/maps Linux produced for them; recorded errors are
//! reproduced; malformed lines are reported with their line numbers.
#![cfg(not(feature = "shuttle"))]

use std::path::PathBuf;
use vma::maps::without_shmem_inodes;
use vma::trace::Trace;
use vma::{AddressSpace, Layout, NoFlush};

fn file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traces")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn replay(name: &str) -> String {
    let trace = Trace::parse(&file(&format!("{name}.trace"))).unwrap();
    let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    trace.replay(&space).unwrap_or_else(|e| panic!("{name}: {e}"));
    space.validate().unwrap();
    space.maps()
}

/// Each capture (tools/capture/capture.sh) replays to the maps its process printed:
/// - `cat`: the dynamic loader mapping libc, locale files, brk;
/// - `python`: libraries and extension modules, then an anonymous mmap resized (mremap);
/// - `python-threads`: threads with their stacks (MAP_STACK) and allocations;
/// - `alloc-threads`: a C program whose threads allocate in malloc arenas (reserved with
///   MAP_NORESERVE, committed with mprotect) and grow buffers with realloc (mremap);
/// - `node`: V8 reserving and committing its heap, threads;
/// - `rustc`: the Rust compiler, printing its maps from a procedural macro it expands.
///
/// `java` is left out: the JVM writes to neighbouring anonymous mappings between its calls, so
/// they get anon_vmas of their own and stay apart on Linux (two places), which no system-call
/// trace shows; its replay is checked against the kernel replaying the same calls instead
/// (oracle/tests/traces.rs).
#[test]
fn captures_replay_to_the_maps_linux_printed() {
    for name in [
        "cat",
        "python",
        "python-threads",
        "alloc-threads",
        "node",
        "rustc",
    ] {
        let (ours, linux) = (replay(name), file(&format!("{name}.maps")));
        // Shared anonymous objects are numbered by each system.
        assert_eq!(
            without_shmem_inodes(&ours),
            without_shmem_inodes(&linux),
            "{name}"
        );
    }
}

#[test]
fn recorded_errors_are_reproduced() {
    assert_eq!(replay("errors"), file("errors.maps"));
}

#[test]
fn a_result_that_differs_is_reported_with_its_line() {
    let trace = Trace::parse("mmap 0 0x1000 rw- private,anonymous -> -ENOMEM\n").unwrap();
    let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    let error = trace.replay(&space).unwrap_err();
    assert_eq!(error.line, 1);
    assert!(error.message.contains("ENOMEM"), "{error}");
}

#[test]
fn malformed_lines_are_reported_with_their_numbers() {
    let cases = [
        ("# ok\nmmap 0 0x1000 rw-\n", 2, "arguments"),
        ("munmap 0x1000 zz\n", 1, "not a number"),
        ("mprotect 0x1000 0x1000 rwz\n", 1, "protection"),
        ("\n\nfrobnicate 1 2\n", 3, "unknown operation"),
        (
            "mmap 0 0x1000 rw- private,anonymous -> -EWEIRD\n",
            1,
            "unknown error",
        ),
        ("munmap 0x1000 0x1000 -> 0x1000\n", 1, "RESULT"),
    ];
    for (text, line, message) in cases {
        let error = Trace::parse(text).unwrap_err();
        assert_eq!(error.line, line, "{text:?}");
        assert!(error.message.contains(message), "{text:?}: {error}");
    }
    // A flag not known is reported; one that Linux ignores is not; every flag strace prints
    // has its meaning.
    let warned = Trace::parse("mmap 0 0x1000 rw- private,anonymous,huge_shift_16,denywrite\n").unwrap();
    assert_eq!(warned.warnings.len(), 1);
    let every = "mmap 0 0x1000 rw- shared_validate,droppable,anonymous,fixed,fixed_noreplace,growsdown,\
                 populate,noreserve,stack,locked,32bit,hugetlb,huge_2mb,huge_1gb,sync,uninitialized,\
                 denywrite,executable,file,nonblock\n";
    assert!(Trace::parse(every).unwrap().warnings.is_empty());
}
