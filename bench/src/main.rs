//! The bench command line: `bench replay FILE` replays a trace of address-space operations
//! (see `vma::trace`) on an x86-64 layout and prints the resulting maps.

use std::process::ExitCode;
use vma::trace::Trace;
use vma::{AddressSpace, Layout, NoFlush};

const USAGE: &str = "usage: bench replay FILE   replay a trace of mmap/munmap/mprotect/mremap/brk and print the maps\n\
                     (the workload comparison, `bench compare`, is not built yet)";

fn replay(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let trace = Trace::parse(&text).map_err(|e| format!("{path}: {e}"))?;
    for warning in &trace.warnings {
        eprintln!("{path}: warning: {warning}");
    }
    let space = AddressSpace::new(Layout::X86_64, NoFlush).map_err(|e| e.to_string())?;
    trace.replay(&space).map_err(|e| format!("{path}: {e}"))?;
    Ok(space.maps())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["replay", path] => match replay(path) {
            Ok(maps) => {
                print!("{maps}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("bench: {message}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
