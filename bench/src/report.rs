//! The comparison's output: a table per workload (each design's ratio to `rwlock`), JSON, and
//! an SVG chart per workload of throughput against threads.

use crate::workload::Summary;
use std::fmt::Write as _;

/// The baseline ratios are taken against.
pub const BASELINE: &str = "rwlock";

fn micros(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}µs", ns as f64 / 1e3)
    }
}

fn ratio(value: f64, base: Option<f64>) -> String {
    match base {
        Some(base) if base > 0.0 => format!("{:.2}x", value / base),
        _ => "-".into(),
    }
}

/// The baseline's measurement for the same workload and thread count.
fn baseline<'a>(all: &'a [Summary], m: &Summary) -> Option<&'a Summary> {
    all.iter()
        .find(|b| b.design == BASELINE && b.workload == m.workload && b.threads == m.threads)
}

fn faults_per_sec(m: &Summary) -> f64 {
    m.faults_per_sec
}

fn writer_ops_per_sec(m: &Summary) -> f64 {
    m.writer_ops_per_sec
}

/// What the tables mean: the designs and workloads that ran, and the columns.
pub fn legend(all: &[Summary]) -> String {
    let mut out = String::from("\n## Legend\n\nDesigns:\n");
    let mut designs: Vec<&str> = all.iter().map(|m| m.design.as_str()).collect();
    designs.sort_by_key(|d| crate::designs::NAMES.iter().position(|n| n == d));
    designs.dedup();
    for design in designs {
        let what = crate::designs::describe(design).unwrap_or("");
        let _ = writeln!(out, "- `{design}`: {what}");
    }
    out.push_str(&format!(
        "\nColumns: faults/s by all faulting threads, and as a ratio to `{BASELINE}` at the same \
         thread count; fault latency percentiles and the slowest fault; writer calls/s \
         (mmap, munmap, mprotect; set_len and punch_hole where a file is truncated; `-` without \
         a writer) and its ratio to `{BASELINE}`; faults that waited for another thread (a \
         writer's lock, a VMA being set up, a truncate of the page), their total and longest \
         wait; the run's peak resident memory; where a file is truncated, faults beyond its end \
         (bus errors) and translations beyond its end found after a truncate returned (stale, \
         must be 0); where huge pages are mapped, the largest page table of an address space, and \
         share lookups (a fault looking for a page table to share) held up by a lock, with the \
         longest such wait. \
         \"oversubscribed\": more threads \
         (faulting threads plus the writer) than CPUs, so the scheduler, not the design, decides \
         much of the row.\n"
    ));
    out
}

/// One table per workload, rows by thread count then design.
pub fn tables(all: &[Summary]) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = all.iter().map(|m| m.workload.as_str()).collect();
    workloads.dedup();
    for workload in workloads {
        let _ = writeln!(out, "\n## {workload}\n");
        if let Some(what) = crate::workload::describe(workload) {
            let _ = writeln!(out, "{what}.\n");
        }
        let truncates = crate::workload::truncates(workload);
        let huge = crate::workload::maps_huge_pages(workload);
        let _ = writeln!(
            out,
            "| threads | design | faults/s | vs {BASELINE} | p50 | p99 | p99.9 | max | writer calls/s | vs {BASELINE} | fault waits | wait total | longest wait | peak RSS |{}{}",
            if truncates { " bus errors | stale |" } else { "" },
            if huge {
                " page tables per space | share lookups held up | longest share wait |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|{}{}",
            if truncates { "---|---|" } else { "" },
            if huge { "---|---|---|" } else { "" }
        );
        let mut rows: Vec<&Summary> = all.iter().filter(|m| m.workload == workload).collect();
        rows.sort_by_key(|m| m.threads);
        for m in rows {
            let base = baseline(all, m);
            let (writer, writer_ratio) = if m.writer_ops_per_sec > 0.0 {
                (
                    format!("{:.0}", m.writer_ops_per_sec),
                    ratio(m.writer_ops_per_sec, base.map(writer_ops_per_sec)),
                )
            } else {
                ("-".into(), "-".into())
            };
            let mut checks = if truncates {
                format!(" {} | {} |", m.bus_errors, m.stale_translations)
            } else {
                String::new()
            };
            if huge {
                let _ = write!(
                    checks,
                    " {} KiB | {} | {} |",
                    m.page_table_bytes / 1024,
                    m.share_waits.count,
                    micros(m.share_waits.max_ns)
                );
            }
            let _ = writeln!(
                out,
                "| {}{} | {} | {:.0} | {} | {} | {} | {} | {} | {writer} | {writer_ratio} | {} | {} | {} | {:.1} MiB |{checks}",
                m.threads,
                if m.oversubscribed { " (oversubscribed)" } else { "" },
                m.design,
                m.faults_per_sec,
                ratio(m.faults_per_sec, base.map(faults_per_sec)),
                micros(m.fault_p50_ns),
                micros(m.fault_p99_ns),
                micros(m.fault_p999_ns),
                micros(m.fault_max_ns),
                m.waits.count,
                micros(m.waits.total_ns),
                micros(m.waits.max_ns),
                m.peak_rss_bytes as f64 / (1 << 20) as f64,
            );
        }
    }
    out
}

/// One JSON object per measurement, in an array.
pub fn json(all: &[Summary]) -> String {
    let objects: Vec<String> = all
        .iter()
        .map(|m| {
            format!(
                "  {{\"design\": \"{}\", \"workload\": \"{}\", \"threads\": {}, \"oversubscribed\": {}, \
                 \"faults_per_sec\": {:.1}, \"fault_p50_ns\": {}, \"fault_p99_ns\": {}, \
                 \"fault_p999_ns\": {}, \"fault_max_ns\": {}, \"writer_ops_per_sec\": {:.1}, \
                 \"peak_rss_bytes\": {}, \"fault_waits\": {}, \"fault_wait_total_ns\": {}, \
                 \"max_fault_wait_ns\": {}, \"bus_errors\": {}, \"stale_translations\": {}, \
                 \"page_table_bytes_per_mm\": {}, \"share_lookup_waits\": {}, \
                 \"share_lookup_wait_total_ns\": {}, \"max_share_lookup_wait_ns\": {}}}",
                m.design,
                m.workload,
                m.threads,
                m.oversubscribed,
                m.faults_per_sec,
                m.fault_p50_ns,
                m.fault_p99_ns,
                m.fault_p999_ns,
                m.fault_max_ns,
                m.writer_ops_per_sec,
                m.peak_rss_bytes,
                m.waits.count,
                m.waits.total_ns,
                m.waits.max_ns,
                m.bus_errors,
                m.stale_translations,
                m.page_table_bytes,
                m.share_waits.count,
                m.share_waits.total_ns,
                m.share_waits.max_ns,
            )
        })
        .collect();
    format!("[\n{}\n]\n", objects.join(",\n"))
}

const COLOURS: [&str; 7] = [
    "#d62728", "#ff7f0e", "#e377c2", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b",
];

/// An SVG line chart of faults/s against threads for `workload`, one line per design.
pub fn svg(all: &[Summary], workload: &str) -> String {
    let rows: Vec<&Summary> = all.iter().filter(|m| m.workload == workload).collect();
    let mut designs: Vec<&str> = rows.iter().map(|m| m.design.as_str()).collect();
    designs.dedup();
    designs.sort_by_key(|d| crate::designs::NAMES.iter().position(|n| n == d));
    designs.dedup();
    let mut threads: Vec<usize> = rows.iter().map(|m| m.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let top = rows.iter().map(|m| m.faults_per_sec).fold(1.0, f64::max) * 1.1;
    let (w, h, left, bottom, right, up) = (640.0, 400.0, 80.0, 50.0, 150.0, 40.0);
    let x = |t: usize| {
        let i = threads.iter().position(|&n| n == t).unwrap_or(0) as f64;
        let span = (threads.len().max(2) - 1) as f64;
        left + i / span * (w - left - right)
    };
    let y = |v: f64| h - bottom - v / top * (h - bottom - up);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{workload}: faults/s against threads</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{up}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        w / 2.0,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.2}M</text>",
            left - 6.0,
            y(v) + 4.0,
            v / 1e6
        );
    }
    for &t in &threads {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t}</text>",
            x(t),
            h - bottom + 18.0
        );
    }
    for (i, design) in designs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut points: Vec<&&Summary> = rows.iter().filter(|m| m.design == *design).collect();
        points.sort_by_key(|m| m.threads);
        let path: Vec<String> = points
            .iter()
            .map(|m| format!("{:.1},{:.1}", x(m.threads), y(m.faults_per_sec)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for point in &path {
            let (px, py) = point.split_once(',').expect("x,y");
            let _ = writeln!(out, "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{colour}\"/>");
        }
        let ly = up + 20.0 * i as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{}\">{design}</text>",
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            ly + 4.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">threads</text>\n</svg>",
        (left + w - right) / 2.0,
        h - 10.0
    );
    out
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;
    use fault::Waits;

    fn summary(design: &str, threads: usize, faults_per_sec: f64) -> Summary {
        Summary {
            design: design.into(),
            workload: "giant-vma".into(),
            threads,
            oversubscribed: threads > 2,
            faults_per_sec,
            fault_p50_ns: 300,
            fault_p99_ns: 2_000,
            fault_p999_ns: 15_000,
            fault_max_ns: 20_000_000,
            writer_ops_per_sec: 0.0,
            peak_rss_bytes: 1 << 20,
            waits: Waits::default(),
            share_waits: Waits::default(),
            bus_errors: 0,
            stale_translations: 0,
            page_table_bytes: 3 << 12,
        }
    }

    #[test]
    fn tables_give_ratios_to_the_baseline() {
        let all = [
            summary("rwlock", 1, 1e6),
            summary("rcu", 1, 2e6),
            summary("rcu", 4, 3e6),
        ];
        let text = tables(&all);
        assert!(text.contains("## giant-vma"), "{text}");
        assert!(
            text.contains("| 1 | rcu | 2000000 | 2.00x | 0.3µs | 2.0µs | 15.0µs | 20ms |"),
            "{text}"
        );
        assert!(
            text.contains("| 4 (oversubscribed) | rcu | 3000000 | - |"),
            "{text}"
        );
    }

    #[test]
    fn json_and_svg_hold_every_measurement() {
        let all = [
            summary("rwlock", 1, 1e6),
            summary("rcu", 1, 2e6),
            summary("rcu", 2, 3e6),
        ];
        let json = json(&all);
        assert_eq!(json.matches("\"design\"").count(), 3);
        assert!(json.contains("\"fault_p999_ns\": 15000"));
        let svg = svg(&all, "giant-vma");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2, "one line per design");
    }
}
