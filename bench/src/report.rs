//! The comparison's output: a table per workload (each design's ratio to `rwlock`), JSON, an
//! SVG chart per workload of throughput against threads, and, where the runs had several
//! background VMA counts, charts of faults/s and writer calls/s against that count (log
//! scales).

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

/// The baseline's measurement for the same workload, thread count and background VMAs.
fn baseline<'a>(all: &'a [Summary], m: &Summary) -> Option<&'a Summary> {
    all.iter().find(|b| {
        b.design == BASELINE
            && b.workload == m.workload
            && b.threads == m.threads
            && b.background_vmas == m.background_vmas
    })
}

/// The background VMA counts of `workload`'s runs, in order.
fn vma_counts(all: &[Summary], workload: &str) -> Vec<u64> {
    let mut counts: Vec<u64> = all
        .iter()
        .filter(|m| m.workload == workload)
        .map(|m| m.background_vmas)
        .collect();
    counts.sort_unstable();
    counts.dedup();
    counts
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
        // A VMAs column where the runs had several background VMA counts.
        let counts = vma_counts(all, workload).len() > 1;
        let _ = writeln!(
            out,
            "| {}threads | design | faults/s | vs {BASELINE} | p50 | p99 | p99.9 | max | writer calls/s | vs {BASELINE} | fault waits | wait total | longest wait | peak RSS |{}{}",
            if counts { "VMAs | " } else { "" },
            if truncates { " bus errors | stale |" } else { "" },
            if huge {
                " page tables per space | share lookups held up | longest share wait |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "|{}---|---|---|---|---|---|---|---|---|---|---|---|---|---|{}{}",
            if counts { "---|" } else { "" },
            if truncates { "---|---|" } else { "" },
            if huge { "---|---|---|" } else { "" }
        );
        let mut rows: Vec<&Summary> = all.iter().filter(|m| m.workload == workload).collect();
        rows.sort_by_key(|m| (m.background_vmas, m.threads));
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
            let vmas = if counts {
                format!("{} | ", m.background_vmas)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {vmas}{}{} | {} | {:.0} | {} | {} | {} | {} | {} | {writer} | {writer_ratio} | {} | {} | {} | {:.1} MiB |{checks}",
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
                 \"share_lookup_wait_total_ns\": {}, \"max_share_lookup_wait_ns\": {}, \
                 \"background_vmas\": {}}}",
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
                m.background_vmas,
            )
        })
        .collect();
    format!("[\n{}\n]\n", objects.join(",\n"))
}

const COLOURS: [&str; 7] = [
    "#d62728", "#ff7f0e", "#e377c2", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b",
];

/// One line of a chart: a design's points, `(x position, value)`.
type Series<'a> = (&'a str, Vec<(usize, f64)>);

/// An SVG line chart: `x_labels` evenly along the x axis, a line per series, the y axis
/// linear from 0 or logarithmic (decades).
fn line_chart(title: &str, x_title: &str, x_labels: &[String], series: &[Series<'_>], log: bool) -> String {
    let values = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(_, v)| v));
    let (lo, hi) = values.fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (bottom_value, top) = if log {
        (
            10f64.powf(lo.max(1.0).log10().floor()),
            10f64.powf(hi.log10().ceil()),
        )
    } else {
        (0.0, hi * 1.1)
    };
    let (w, h, left, bottom, right, up) = (640.0, 400.0, 80.0, 50.0, 150.0, 40.0);
    let x = |i: usize| left + i as f64 / (x_labels.len().max(2) - 1) as f64 * (w - left - right);
    let fraction = |v: f64| {
        if log {
            (v.max(bottom_value).log10() - bottom_value.log10()) / (top.log10() - bottom_value.log10())
        } else {
            v / top
        }
    };
    let y = |v: f64| h - bottom - fraction(v) * (h - bottom - up);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{up}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        w / 2.0,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    let ticks: Vec<f64> = if log {
        let decades = (top.log10() - bottom_value.log10()).round() as i32;
        (0..=decades).map(|d| bottom_value * 10f64.powi(d)).collect()
    } else {
        (0..=4).map(|i| top * f64::from(i) / 4.0).collect()
    };
    for v in ticks {
        let label = if v >= 1e6 {
            format!("{:.2}M", v / 1e6)
        } else if v >= 1e3 {
            format!("{:.0}k", v / 1e3)
        } else {
            format!("{v:.0}")
        };
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            left - 6.0,
            y(v) + 4.0
        );
    }
    for (i, label) in x_labels.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            x(i),
            h - bottom + 18.0
        );
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(at, v)| format!("{:.1},{:.1}", x(at), y(v)))
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
             <text x=\"{}\" y=\"{}\">{name}</text>",
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            ly + 4.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_title}</text>\n</svg>",
        (left + w - right) / 2.0,
        h - 10.0
    );
    out
}

/// The designs of `rows`, in the order of [`crate::designs::NAMES`].
fn designs_of<'a>(rows: &[&'a Summary]) -> Vec<&'a str> {
    let mut designs: Vec<&str> = rows.iter().map(|m| m.design.as_str()).collect();
    designs.sort_by_key(|d| crate::designs::NAMES.iter().position(|n| n == d));
    designs.dedup();
    designs
}

/// An SVG line chart of faults/s against threads for `workload`, one line per design (the
/// runs with the fewest background VMAs).
pub fn svg(all: &[Summary], workload: &str) -> String {
    let fewest = vma_counts(all, workload).first().copied().unwrap_or(0);
    let rows: Vec<&Summary> = all
        .iter()
        .filter(|m| m.workload == workload && m.background_vmas == fewest)
        .collect();
    let mut threads: Vec<usize> = rows.iter().map(|m| m.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let series: Vec<Series<'_>> = designs_of(&rows)
        .into_iter()
        .map(|design| {
            let mut points: Vec<(usize, f64)> = rows
                .iter()
                .filter(|m| m.design == design)
                .map(|m| {
                    (
                        threads.iter().position(|&t| t == m.threads).unwrap_or(0),
                        m.faults_per_sec,
                    )
                })
                .collect();
            points.sort_by_key(|&(at, _)| at);
            (design, points)
        })
        .collect();
    let labels: Vec<String> = threads.iter().map(ToString::to_string).collect();
    line_chart(
        &format!("{workload}: faults/s against threads"),
        "threads",
        &labels,
        &series,
        false,
    )
}

/// An SVG chart of how `workload`'s faults/s (left) and writer calls/s (right, where it has a
/// writer) grow with the background VMAs, at its most threads, one line per design; both axes
/// logarithmic.
pub fn svg_vmas(all: &[Summary], workload: &str) -> String {
    let most = all
        .iter()
        .filter(|m| m.workload == workload)
        .map(|m| m.threads)
        .max()
        .unwrap_or(1);
    let rows: Vec<&Summary> = all
        .iter()
        .filter(|m| m.workload == workload && m.threads == most)
        .collect();
    let counts = vma_counts(all, workload);
    let labels: Vec<String> = counts.iter().map(ToString::to_string).collect();
    let series = |value: fn(&Summary) -> f64| -> Vec<Series<'_>> {
        designs_of(&rows)
            .into_iter()
            .map(|design| {
                let mut points: Vec<(usize, f64)> = rows
                    .iter()
                    .filter(|m| m.design == design && value(m) > 0.0)
                    .map(|m| {
                        (
                            counts.iter().position(|&c| c == m.background_vmas).unwrap_or(0),
                            value(m),
                        )
                    })
                    .collect();
                points.sort_by_key(|&(at, _)| at);
                (design, points)
            })
            .collect()
    };
    let faults = line_chart(
        &format!("{workload}, {most} threads: faults/s against VMAs"),
        "background VMAs",
        &labels,
        &series(faults_per_sec),
        true,
    );
    let writers = series(writer_ops_per_sec);
    if writers.iter().all(|(_, points)| points.is_empty()) {
        return faults;
    }
    let calls = line_chart(
        &format!("{workload}, {most} threads: writer calls/s against VMAs"),
        "background VMAs",
        &labels,
        &writers,
        true,
    );
    // The two charts side by side.
    let inner = |chart: &str| {
        let body = chart.split_once('>').map_or("", |(_, rest)| rest);
        body.trim_end().trim_end_matches("</svg>").to_string()
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1280\" height=\"400\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <g>{}</g>\n<g transform=\"translate(640,0)\">{}</g>\n</svg>\n",
        inner(&faults),
        inner(&calls)
    )
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
            background_vmas: 0,
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
    fn several_vma_counts_get_a_column_and_a_chart() {
        let at = |design: &str, vmas: u64, faults_per_sec: f64| Summary {
            background_vmas: vmas,
            writer_ops_per_sec: 1e5 / (vmas + 1) as f64,
            ..summary(design, 2, faults_per_sec)
        };
        let all = [
            at("rwlock", 0, 1e6),
            at("rcu", 0, 2e6),
            at("rwlock", 1000, 1e6),
            at("rcu", 1000, 1.5e6),
        ];
        let text = tables(&all);
        assert!(text.contains("| VMAs | threads |"), "{text}");
        assert!(text.contains("| 1000 | 2 | rcu | 1500000 | 1.50x |"), "{text}");
        let chart = svg_vmas(&all, "giant-vma");
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert_eq!(
            chart.matches("<polyline").count(),
            4,
            "faults and writer calls, per design"
        );
        assert!(json(&all).contains("\"background_vmas\": 1000"));
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
