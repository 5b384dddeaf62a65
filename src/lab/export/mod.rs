//! The lab's results as files: each format is a small module turning the
//! same rows into bytes, sharing what is common here.

pub mod html;
pub mod json;
pub mod markdown;

use super::{LabOptions, Row};

/// Writes every export asked for, from all the rows so far.
pub fn write_all(rows: &[Row], options: &LabOptions) -> anyhow::Result<()> {
    if let Some(path) = &options.json {
        std::fs::write(path, json::render(rows)?)?;
    }
    if let Some(path) = &options.markdown {
        std::fs::write(path, markdown::render(rows))?;
    }
    if let Some(path) = &options.html {
        std::fs::write(path, html::render(rows))?;
    }
    Ok(())
}

/// A duration in seconds, as the tables show it.
pub fn seconds(s: f64) -> String {
    format!("{s:.2} s")
}

/// A latency in microseconds, in the unit that reads best.
pub fn micros(us: u64) -> String {
    crate::client::bench::micros(us)
}

/// A byte count, in the unit that reads best.
pub fn bytes(b: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match b {
        0..KIB => format!("{b} B"),
        KIB..MIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        _ => format!("{:.1} MiB", b as f64 / MIB as f64),
    }
}

/// One line for the progress log: the row's headline number.
pub fn summary_line(row: &Row) -> String {
    let head = format!("{:<10} {:<10}", row.model, row.scenario);
    if let Some(e) = &row.error {
        return format!("{head} failed: {e}");
    }
    let errors = match row.errors {
        Some(e) if e > 0 => format!(", {e} errors"),
        _ => String::new(),
    };
    match row.scenario.as_str() {
        "delay" => format!(
            "{head} last reply after {} (theory {}){errors}",
            row.makespan_s.map_or("-".into(), seconds),
            row.theory_s.map_or("-".into(), seconds)
        ),
        "throughput" => format!(
            "{head} {:.0} requests/s, p99 {}{errors}",
            row.throughput_rps.unwrap_or(0.0),
            row.p99_us.map_or("-".into(), micros)
        ),
        _ => format!(
            "{head} {} per idle connection, active client p50 {}{errors}",
            row.rss_per_conn_bytes.map_or("-".into(), bytes),
            row.p50_us.map_or("starved".into(), micros)
        ),
    }
}
