//! The bench command line:
//! - `bench compare [OPTIONS]` runs every workload on every design and prints a table per
//!   workload (see `bench compare --help`); each run is a child process (`bench run-one`), so
//!   that its peak memory is its own and no run inherits another's threads or garbage;
//! - `bench fault-cost [--rounds N]` times single-thread faults of maplevm's fast path beside the
//!   unsynchronized engines in paired rounds (see `bench::fault_cost`);
//! - `bench replay FILE` replays a trace of address-space operations (see `vma::trace`) on an
//!   x86-64 layout and prints the resulting maps.

use bench::designs::NAMES;
use bench::report;
use bench::workload::{self, MAX_PAGES, MAX_THREADS, RunConfig, Summary, WORKLOADS};
use std::io::{IsTerminal as _, Write as _};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use vma::trace::Trace;
use vma::{AddressSpace, Layout, NoFlush};

const USAGE: &str = "\
usage: bench compare [OPTIONS]   run the workloads on the designs and print the comparison
       bench fault-cost [--rounds N]
                                 one thread's fault cost beside the unsynchronized engines, in
                                 paired rounds (default 2000): median times and per-round ratios
       bench replay FILE         replay a trace of mmap/munmap/mprotect/mremap/brk, print the maps

compare options:
  --designs LIST      comma-separated, from rcu,rcu-refonly,rwlock,rangelock,pervma,snapshot (default: all)
  --workloads LIST    comma-separated, from private-churn,faults-under-churn,giant-vma,fixed-replace,shared-file (default: all)
  --threads LIST      faulting thread counts (default: 1,2,4)
  --duration-ms N     how long each run lasts (default: 700)
  --pages N           pages in each thread's region (default: 256)
  --quick             2 threads, 100 ms, 64 pages: under 30 seconds in all
  --json FILE         also write the measurements as JSON
  --svg-dir DIR       write one SVG chart per workload there (default: target/compare)";

struct Options {
    designs: Vec<String>,
    workloads: Vec<String>,
    threads: Vec<usize>,
    duration: Duration,
    pages: u64,
    json: Option<String>,
    svg_dir: String,
}

fn list(value: &str, known: &[&str], what: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(|item| {
            known
                .contains(&item)
                .then(|| item.to_string())
                .ok_or_else(|| format!("unknown {what} {item:?} (known: {})", known.join(", ")))
        })
        .collect()
}

fn number<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{what}: not a number: {value:?}"))
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        designs: NAMES.iter().map(|s| s.to_string()).collect(),
        workloads: WORKLOADS.iter().map(|s| s.to_string()).collect(),
        threads: vec![1, 2, 4],
        duration: Duration::from_millis(700),
        pages: 256,
        json: None,
        svg_dir: "target/compare".into(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--quick" {
            options.threads = vec![2];
            options.duration = Duration::from_millis(100);
            options.pages = 64;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--designs" => options.designs = list(value, &NAMES, "design")?,
            "--workloads" => options.workloads = list(value, &WORKLOADS, "workload")?,
            "--threads" => {
                options.threads = value
                    .split(',')
                    .map(|n| number(n, "--threads"))
                    .collect::<Result<_, _>>()?;
                if options.threads.iter().any(|&n| !(1..=MAX_THREADS).contains(&n)) {
                    return Err(format!("--threads: counts from 1 to {MAX_THREADS}"));
                }
            }
            "--duration-ms" => {
                options.duration = Duration::from_millis(number(value, "--duration-ms")?);
                if options.duration.is_zero() {
                    return Err("--duration-ms: at least 1".into());
                }
            }
            "--pages" => {
                options.pages = number(value, "--pages")?;
                if !(1..=MAX_PAGES).contains(&options.pages) {
                    return Err(format!("--pages: from 1 to {MAX_PAGES}"));
                }
            }
            "--json" => options.json = Some(value.clone()),
            "--svg-dir" => options.svg_dir = value.clone(),
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(options)
}

/// Runs one measurement in a child process (`bench run-one`).
fn run_child(workload: &str, design: &str, config: RunConfig) -> Result<Summary, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let output = Command::new(exe)
        .args([
            "run-one",
            workload,
            design,
            &config.threads.to_string(),
            &config.duration.as_millis().to_string(),
            &config.pages.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot start a run: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Summary::from_line(String::from_utf8_lossy(&output.stdout).trim())
}

/// `bench run-one WORKLOAD DESIGN THREADS DURATION_MS PAGES`: one run, its summary on stdout.
fn run_one(args: &[String]) -> Result<(), String> {
    let [workload, design, threads, duration, pages] = args else {
        return Err("run-one WORKLOAD DESIGN THREADS DURATION_MS PAGES".into());
    };
    let config = RunConfig {
        threads: number(threads, "threads")?,
        duration: Duration::from_millis(number(duration, "duration")?),
        pages: number(pages, "pages")?,
    };
    println!("{}", workload::run(workload, design, config)?.summary().to_line());
    Ok(())
}

fn compare(options: &Options) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# maplevm compare: {} designs x {} workloads x threads {:?}, {} ms each, {} pages per thread, {cpus} CPUs",
        options.designs.len(),
        options.workloads.len(),
        options.threads,
        options.duration.as_millis(),
        options.pages
    );
    // Output folders first: a bad path fails now, not after the runs.
    std::fs::create_dir_all(&options.svg_dir).map_err(|e| format!("{}: {e}", options.svg_dir))?;
    if let Some(parent) = options
        .json
        .as_deref()
        .and_then(|path| std::path::Path::new(path).parent())
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let total = options.designs.len() * options.workloads.len() * options.threads.len();
    let mut results = Vec::with_capacity(total);
    let began = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    for workload in &options.workloads {
        for &threads in &options.threads {
            for design in &options.designs {
                let progress = format!(
                    "[{}/{total}] {workload} / {design} / {threads} thread{} ({:.0?} so far)",
                    results.len() + 1,
                    if threads == 1 { "" } else { "s" },
                    began.elapsed()
                );
                if terminal {
                    eprint!("\r\x1b[K{progress}");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{progress}");
                }
                let config = RunConfig {
                    threads,
                    duration: options.duration,
                    pages: options.pages,
                };
                results.push(
                    run_child(workload, design, config)
                        .map_err(|e| format!("{workload} on {design}: {e}"))?,
                );
            }
        }
    }
    if terminal {
        eprint!("\r\x1b[K");
    }
    eprintln!("{total} runs in {:.1?}", began.elapsed());
    print!("{}", report::tables(&results));
    if let Some(path) = &options.json {
        std::fs::write(path, report::json(&results)).map_err(|e| format!("{path}: {e}"))?;
        println!("\nJSON: {path}");
    }
    for workload in &options.workloads {
        let path = format!("{}/{workload}.svg", options.svg_dir);
        std::fs::write(&path, report::svg(&results, workload)).map_err(|e| format!("{path}: {e}"))?;
    }
    println!("SVG charts: {}/", options.svg_dir);
    Ok(())
}

/// `bench fault-cost [--rounds N]`.
fn fault_cost(args: &[String]) -> Result<(), String> {
    let rounds = match args {
        [] => 2000,
        [flag, value] if flag == "--rounds" => number(value, "--rounds")?,
        _ => return Err("fault-cost [--rounds N]".into()),
    };
    if rounds == 0 {
        return Err("--rounds: at least 1".into());
    }
    print!("{}", bench::fault_cost::compare_engines(rounds));
    Ok(())
}

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
    let result = match args.first().map(String::as_str) {
        Some("compare") if args.iter().any(|a| a == "--help" || a == "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("compare") => parse(&args[1..]).and_then(|options| compare(&options)),
        Some("run-one") => run_one(&args[1..]),
        Some("fault-cost") => fault_cost(&args[1..]),
        Some("replay") if args.len() == 2 => replay(&args[1]).map(|maps| print!("{maps}")),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\nbench: {message}");
            ExitCode::FAILURE
        }
    }
}
