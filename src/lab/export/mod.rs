//! The lab's results as files: each format is a small module turning the
//! same report into bytes, sharing what is common here.

pub mod html;
pub mod json;
pub mod markdown;

use anyhow::Context;

use super::{LabOptions, Meta, Report, Row};

/// Writes every export asked for, from the report so far.
pub fn write_all(report: &Report, options: &LabOptions) -> anyhow::Result<()> {
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("cannot write the report to {}", path.display()))
    };
    if let Some(path) = &options.json {
        write(path, json::render(report)?)?;
    }
    if let Some(path) = &options.markdown {
        write(path, markdown::render(report))?;
    }
    if let Some(path) = &options.html {
        write(path, html::render(report))?;
    }
    Ok(())
}

/// The meta block as (label, value) pairs, shared by Markdown and HTML.
pub fn meta_lines(meta: &Meta) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        ("date", meta.date.clone()),
        (
            "socklab",
            format!("{} (commit {})", meta.socklab_version, meta.commit),
        ),
        ("command", meta.command.clone()),
        ("kernel", meta.kernel.clone()),
        ("CPU", format!("{} ({} cores)", meta.cpu, meta.cores)),
        ("bench engine", meta.engine.clone()),
        ("pinning", meta.pinning.clone()),
        ("memory", meta.memory.clone()),
        ("context switches", meta.context_switches.clone()),
        ("system calls", meta.syscalls.clone()),
        ("models", meta.models.join(", ")),
    ];
    if let Some(scenarios) = meta.parameters.as_object() {
        for (name, p) in scenarios {
            let text = p
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k} {}", v.to_string().trim_matches('"')))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            lines.push((scenario_label(name), text));
        }
    }
    lines
}

fn scenario_label(name: &str) -> &'static str {
    match name {
        "delay" => "delay scenario",
        "throughput" => "throughput scenario",
        "idle" => "idle scenario",
        "c10k" => "c10k scenario",
        "uring-ladder" => "uring-ladder scenario",
        _ => "scenario",
    }
}

/// uring-ladder: a row's label, `epoll` or `uring +fixed-files`.
pub fn ladder_label(row: &Row) -> String {
    match &row.step {
        Some(step) => format!("{} {step}", row.model),
        None => row.model.clone(),
    }
}

/// uring-ladder: the message sizes measured, in order, and a size's label.
pub fn ladder_sizes(rows: &[&Row]) -> Vec<u64> {
    let mut sizes: Vec<u64> = rows.iter().filter_map(|r| r.message_bytes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// uring-ladder: what each step did, against the step below it, at each
/// size: requests/s and CPU per request, in percent.
pub fn ladder_verdicts(rows: &[&Row]) -> Vec<String> {
    let sizes = ladder_sizes(rows);
    let mut steps: Vec<&str> = Vec::new();
    for r in rows {
        if let Some(s) = r.step.as_deref() {
            if !steps.contains(&s) {
                steps.push(s);
            }
        }
    }
    let find = |step: &str, size: u64| {
        rows.iter()
            .find(|r| r.step.as_deref() == Some(step) && r.message_bytes == Some(size) && r.error.is_none())
    };
    let mut out = Vec::new();
    for pair in steps.windows(2) {
        let parts: Vec<String> = sizes
            .iter()
            .filter_map(|&size| {
                let (before, after) = (find(pair[0], size)?, find(pair[1], size)?);
                let change = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) if a > 0.0 => format!("{:+.0}%", (b / a - 1.0) * 100.0),
                    _ => "-".into(),
                };
                Some(format!(
                    "{} {} req/s, {} CPU/request",
                    bytes(size),
                    change(before.throughput_rps, after.throughput_rps),
                    change(before.cpu_per_request_us, after.cpu_per_request_us)
                ))
            })
            .collect();
        if !parts.is_empty() {
            out.push(format!("{}: {}", pair[1], parts.join("; ")));
        }
    }
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            Some(format!(
                "{} at {}: {}",
                ladder_label(r),
                bytes(r.message_bytes?),
                r.error.as_deref()?
            ))
        })
        .collect();
    out.extend(failed.into_iter().map(|f| format!("not measured: {f}")));
    out
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

/// An integer with thousands separators: `70,586`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `served 1 of 50` when a model left clients without a reply.
pub fn served_label(row: &Row) -> Option<String> {
    match (row.served, row.clients) {
        (Some(s), Some(c)) if s < c => Some(format!("served {s} of {c}")),
        _ => None,
    }
}

/// Requests per second with its min-max over the runs: `70,586/s (69,100-71,020)`.
pub fn rps_with_range(row: &Row) -> String {
    let Some(rps) = row.throughput_rps else {
        return "-".into();
    };
    let mut s = format!("{}/s", thousands(rps.round() as u64));
    if let Some(r) = row.range.get("throughput_rps") {
        s += &format!(
            " ({}-{})",
            thousands(r.min.round() as u64),
            thousands(r.max.round() as u64)
        );
    }
    s
}

/// Pairs of models whose requests/s differ by less than their runs'
/// spread: which is ahead is not told by this run.
pub fn within_noise(rows: &[&Row]) -> Vec<String> {
    let mut ranked: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| r.error.is_none() && r.throughput_rps.is_some() && served_label(r).is_none())
        .collect();
    ranked.sort_by(|a, b| {
        b.throughput_rps
            .unwrap_or(0.0)
            .total_cmp(&a.throughput_rps.unwrap_or(0.0))
    });
    let spread = |r: &Row| r.range.get("throughput_rps").map_or(0.0, |s| s.max - s.min);
    ranked
        .windows(2)
        .filter_map(|pair| {
            let (a, b) = (pair[0], pair[1]);
            let difference = a.throughput_rps? - b.throughput_rps?;
            let noise = spread(a).max(spread(b));
            (noise > difference).then(|| {
                format!(
                    "{} ahead of {} by {}/s, less than the spread of their runs ({}/s): not a ranking",
                    a.model,
                    b.model,
                    thousands(difference.round() as u64),
                    thousands(noise.round() as u64)
                )
            })
        })
        .collect()
}

/// One line for the progress log: the row's headline number.
pub fn summary_line(row: &Row) -> String {
    let head = format!("{:<10} {:<10}", row.model, row.scenario);
    if let Some(e) = &row.error {
        return format!("{head} failed: {e}");
    }
    let served = served_label(row).map_or(String::new(), |s| format!(", {s}"));
    match row.scenario.as_str() {
        "delay" => format!(
            "{head} last reply after {} (theory {}){served}",
            row.makespan_s.map_or("-".into(), seconds),
            row.theory_s.map_or("-".into(), seconds)
        ),
        "throughput" => format!(
            "{head} {}, p99 {}{served}",
            rps_with_range(row),
            row.p99_us.map_or("-".into(), micros)
        ),
        "uring-ladder" => format!(
            "{head} {} at {}: {}/s, {} µs CPU/request{served}",
            ladder_label(row),
            row.message_bytes.map_or("-".into(), bytes),
            row.throughput_rps.map_or("-".into(), |t| thousands(t as u64)),
            row.cpu_per_request_us.map_or("-".into(), |c| format!("{c:.1}"))
        ),
        "c10k" => format!(
            "{head} {} idle: active client p50 {}{served}",
            thousands(row.idle_connections.unwrap_or(0)),
            row.p50_us.map_or("starved".into(), micros)
        ),
        _ => format!(
            "{head} {}, active client p50 {}{served}",
            memory_per_connection(row),
            row.p50_us.map_or("starved".into(), micros)
        ),
    }
}

/// idle: PSS per accepted connection, or why there is none.
pub fn memory_per_connection(row: &Row) -> String {
    match (row.pss_per_conn_bytes, row.backlog) {
        (Some(b), _) => format!("{} per connection", bytes(b)),
        (None, Some(waiting)) if waiting > 0 => {
            format!("not accepted: {} waiting in the backlog", thousands(waiting))
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(70_586), "70,586");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
