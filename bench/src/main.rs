//! The bench command line (`bench --help`):
//! - `bench compare` runs every workload on every design and prints a table per workload; each
//!   run is a child process (`bench run-one`), so that its peak memory is its own and no run
//!   inherits another's threads or garbage;
//! - `bench fault-cost` times single-thread faults of maplevm's fast path beside the
//!   unsynchronized engines in paired rounds (see `bench::fault_cost`);
//! - `bench uffd` measures real faults served through userfaultfd beside the kernel's own
//!   (see `bench::uffd_bench`);
//! - `bench replay FILE` replays a trace of address-space operations (see `vma::trace`) on an
//!   x86-64 layout and prints the resulting maps; `--linux` replays it on the running kernel
//!   instead (`oracle::replay`), printed the same way.
//!
//! Usage errors are one line on stderr with exit status 2; failures of a command, exit status 1.

use bench::designs::NAMES;
use bench::report;
use bench::workload::{self, MAX_PAGES, MAX_THREADS, RunConfig, Summary, WORKLOADS};
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use vma::trace::Trace;
use vma::{AddressSpace, Layout, NoFlush};

/// maplevm's benchmarks: the address-space designs compared under the same workloads, one
/// thread's fault cost, and trace replay.
#[derive(Debug, Parser)]
#[command(name = "bench", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Subcommands,
}

#[derive(Debug, Subcommand)]
enum Subcommands {
    /// Run the workloads on the designs and print the comparison: a table per workload on
    /// stdout (with a legend), one SVG chart per workload (faults/s against threads).
    Compare(CompareArgs),
    /// One thread's fault cost on maplevm's fast path beside the unsynchronized engines, in
    /// paired rounds: median times and per-round ratios.
    FaultCost {
        /// Paired rounds (each times one region on every engine).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
    },
    /// fork's latency against the number of VMAs and the pages in each, for maplevm and two
    /// baselines, nothing else running.
    ForkCost {
        /// Forks per size and design.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        rounds: u64,
    },
    /// Page-table memory per address space with and without PMD sharing: K address spaces map
    /// the same N GiB of a shared hugetlb file and fault one huge page per GiB.
    TableMemory {
        /// Address spaces (K).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=bench::table_memory::MAX_SPACES as u64))]
        spaces: u64,
        /// GiB each maps (N).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=bench::table_memory::MAX_GIB))]
        gib: u64,
    },
    /// Replay a trace of mmap/munmap/mprotect/mremap/brk (format: `vma::trace`) on an x86-64
    /// layout and print the maps it leaves, as /proc/PID/maps shows them.
    Replay {
        /// The trace file.
        file: PathBuf,
        /// Replay it with real system calls in a child process (Linux on x86-64) and print the
        /// layout the kernel made.
        #[arg(long)]
        linux: bool,
    },
    /// Real hardware page faults served through userfaultfd by maplevm (its handler threads
    /// look the VMA up and fill the page) beside the kernel's own anonymous faults, without and
    /// with a thread churning mmap/munmap: faults/s and latency (Linux; says why where
    /// userfaultfd is unavailable).
    Uffd {
        /// Servers, comma-separated: `kernel`, `maplevm`, or designs of the comparison (their
        /// fault as the handler's lookup).
        #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(UFFD_SERVERS), default_values = UFFD_SERVERS)]
        servers: Vec<String>,
        /// Faulting thread counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 2],
              value_parser = clap::value_parser!(u64).range(1..=MAX_THREADS as u64))]
        threads: Vec<u64>,
        /// Pages in each faulting thread's region.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=MAX_PAGES))]
        pages: u64,
        /// How long each cell runs, in milliseconds.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        duration_ms: u64,
    },
    /// One run of the comparison, its summary on stdout (what `compare` runs in a child).
    #[command(hide = true)]
    RunOne {
        workload: String,
        design: String,
        threads: usize,
        duration_ms: u64,
        pages: u64,
        background_vmas: u64,
    },
}

/// `bench uffd`'s servers: the kernel, maplevm, then every design.
const UFFD_SERVERS: [&str; NAMES.len() + 2] = {
    let mut all = ["kernel"; NAMES.len() + 2];
    all[1] = "maplevm";
    let mut i = 0;
    while i < NAMES.len() {
        all[i + 2] = NAMES[i];
        i += 1;
    }
    all
};

#[derive(Debug, Args)]
struct CompareArgs {
    /// Designs to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(NAMES), default_values = NAMES)]
    designs: Vec<String>,
    /// Workloads to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(WORKLOADS), default_values = WORKLOADS)]
    workloads: Vec<String>,
    /// Faulting thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4],
          value_parser = clap::value_parser!(u64).range(1..=MAX_THREADS as u64))]
    threads: Vec<u64>,
    /// How long each run lasts, in milliseconds.
    #[arg(long, default_value_t = 700, value_parser = clap::value_parser!(u64).range(1..))]
    duration_ms: u64,
    /// Pages in each faulting thread's region.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=MAX_PAGES))]
    pages: u64,
    /// Background VMAs in every address space, comma-separated: each workload runs with each
    /// count (one-page VMAs spread below its mappings), for how costs grow with the number of
    /// VMAs; a chart per workload shows faults/s and writer calls/s against it.
    #[arg(long, value_delimiter = ',', default_values_t = [0],
          value_parser = clap::value_parser!(u64).range(0..=bench::workload::MAX_BACKGROUND_VMAS))]
    vmas: Vec<u64>,
    /// A short run: 2 threads, 100 ms, 64 pages (about 3 seconds in all); its charts go to
    /// the `quick` folder inside the chart folder, so they do not replace a full run's.
    #[arg(long, conflicts_with_all = ["threads", "duration_ms", "pages"])]
    quick: bool,
    /// Also write the measurements as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the SVG charts go [default: `compare` in the target folder this program was
    /// built in, e.g. target/compare].
    #[arg(long)]
    svg_dir: Option<PathBuf>,
}

/// What `compare` runs, its arguments resolved.
struct Plan {
    designs: Vec<String>,
    workloads: Vec<String>,
    threads: Vec<usize>,
    duration: Duration,
    pages: u64,
    vmas: Vec<u64>,
    json: Option<PathBuf>,
    svg_dir: PathBuf,
}

impl CompareArgs {
    fn plan(self) -> Result<Plan, String> {
        let (threads, duration_ms, pages) = if self.quick {
            (vec![2], 100, 64)
        } else {
            (self.threads, self.duration_ms, self.pages)
        };
        let svg_dir = match self.svg_dir {
            Some(dir) => dir,
            None => {
                let charts = target_dir()?.join("compare");
                if self.quick { charts.join("quick") } else { charts }
            }
        };
        Ok(Plan {
            designs: self.designs,
            workloads: self.workloads,
            threads: threads.into_iter().map(|n| n as usize).collect(),
            duration: Duration::from_millis(duration_ms),
            pages,
            vmas: self.vmas,
            json: self.json,
            svg_dir,
        })
    }
}

/// The target folder this program was built in (it runs from `target/PROFILE/bench`), so that
/// the charts land in the same place whatever the current folder is.
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{}: not inside a target folder; pass --svg-dir", exe.display()))
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
            &config.background_vmas.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot start a run: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Summary::from_line(String::from_utf8_lossy(&output.stdout).trim())
}

fn compare(plan: &Plan) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# maplevm compare: {} designs x {} workloads x threads {:?} x background VMAs {:?}, {} ms each, {} pages per thread, {cpus} CPUs",
        plan.designs.len(),
        plan.workloads.len(),
        plan.threads,
        plan.vmas,
        plan.duration.as_millis(),
        plan.pages
    );
    // Output folders first: a bad path fails now, not after the runs.
    let svg_dir = &plan.svg_dir;
    std::fs::create_dir_all(svg_dir).map_err(|e| format!("{}: {e}", svg_dir.display()))?;
    if let Some(parent) = plan.json.as_deref().and_then(Path::parent)
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let total = plan.designs.len() * plan.workloads.len() * plan.threads.len() * plan.vmas.len();
    let mut results = Vec::with_capacity(total);
    let began = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let runs = plan.workloads.iter().flat_map(|workload| {
        plan.vmas.iter().flat_map(move |&vmas| {
            plan.threads.iter().flat_map(move |&threads| {
                plan.designs
                    .iter()
                    .map(move |design| (workload, vmas, threads, design))
            })
        })
    });
    for (workload, background_vmas, threads, design) in runs {
        let progress = format!(
            "[{}/{total}] {workload} / {design} / {threads} thread{} / {background_vmas} VMAs ({:.0?} so far)",
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
            duration: plan.duration,
            pages: plan.pages,
            background_vmas,
        };
        let result = run_child(workload, design, config);
        if terminal && result.is_err() {
            eprintln!();
        }
        results.push(result.map_err(|e| format!("{workload} on {design}: {e}"))?);
    }
    if terminal {
        eprint!("\r\x1b[K");
    }
    eprintln!("{total} runs in {:.1?}", began.elapsed());
    print!("{}", report::legend(&results));
    print!("{}", report::tables(&results));
    if let Some(path) = &plan.json {
        std::fs::write(path, report::json(&results)).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("\nJSON: {}", path.display());
    }
    for workload in &plan.workloads {
        let mut charts = vec![(format!("{workload}.svg"), report::svg(&results, workload))];
        if plan.vmas.len() > 1 {
            charts.push((
                format!("{workload}-vmas.svg"),
                report::svg_vmas(&results, workload),
            ));
        }
        for (name, chart) in charts {
            let path = svg_dir.join(name);
            std::fs::write(&path, chart).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    println!("SVG charts: {}/", svg_dir.display());
    Ok(())
}

fn replay(path: &Path, linux: bool) -> Result<String, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let trace = Trace::parse(&text).map_err(|e| format!("{shown}: {e}"))?;
    for warning in &trace.warnings {
        eprintln!("{shown}: warning: {warning}");
    }
    if linux {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        return oracle::replay::replay(&trace).map_err(|e| format!("{shown} on Linux: {e}"));
        #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
        return Err("--linux replays on the running kernel: Linux on x86-64 only".to_string());
    }
    let space = AddressSpace::new(Layout::X86_64, NoFlush).map_err(|e| e.to_string())?;
    trace.replay(&space).map_err(|e| format!("{shown}: {e}"))?;
    Ok(space.maps())
}

fn run(command: Subcommands) -> Result<(), String> {
    match command {
        Subcommands::Compare(args) => compare(&args.plan()?),
        Subcommands::FaultCost { rounds } => {
            print!("{}", bench::fault_cost::compare_engines(rounds as usize));
            Ok(())
        }
        Subcommands::ForkCost { rounds } => {
            print!("{}", bench::fork_cost::table(rounds as usize)?);
            Ok(())
        }
        Subcommands::TableMemory { spaces, gib } => {
            print!("{}", bench::table_memory::compare(spaces as usize, gib)?);
            Ok(())
        }
        Subcommands::Uffd {
            servers,
            threads,
            pages,
            duration_ms,
        } => {
            #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
            {
                use bench::uffd_bench::{Server, compare};
                let servers: Vec<Server> = servers
                    .iter()
                    .map(|name| Server::named(name).expect("clap checked the name"))
                    .collect();
                let threads: Vec<usize> = threads.iter().map(|&t| t as usize).collect();
                let duration = Duration::from_millis(duration_ms);
                print!("{}", compare(&servers, &threads, pages, duration)?);
                Ok(())
            }
            #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
            {
                let _ = (servers, threads, pages, duration_ms);
                println!("bench uffd: skipped: userfaultfd is served on Linux on x86-64 and arm64 only");
                Ok(())
            }
        }
        Subcommands::Replay { file, linux } => replay(&file, linux).map(|maps| print!("{maps}")),
        Subcommands::RunOne {
            workload,
            design,
            threads,
            duration_ms,
            pages,
            background_vmas,
        } => {
            let config = RunConfig {
                threads,
                duration: Duration::from_millis(duration_ms),
                pages,
                background_vmas,
            };
            println!(
                "{}",
                workload::run(&workload, &design, config)?.summary().to_line()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and no arguments at all: clap's own output and status (usage on
        // stderr with status 2 for no arguments).
        Err(error)
            if !error.use_stderr()
                || error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            error.exit()
        }
        Err(error) => {
            // One line: clap's message up to its usage, without its "error: " prefix, styling
            // and line breaks.
            let rendered = error.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.starts_with("Usage:"))
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
                .collect();
            let message = message.join(" ");
            eprintln!(
                "bench: {} (see bench --help)",
                message.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}
