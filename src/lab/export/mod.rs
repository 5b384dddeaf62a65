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
        "work" => "work scenario",
        _ => "scenario",
    }
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
        "work" => format!(
            "{:<10} {:<10} {}, p99 {}, {} cores{served}",
            work_label(row),
            row.scenario,
            rps_with_range(row),
            row.p99_us.map_or("-".into(), micros),
            row.cores_used.map_or("-".into(), |c| format!("{c:.2}"))
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

/// work: a row's model with its threads or loops, `epoll (2 loops)`.
pub fn work_label(row: &Row) -> String {
    let n = row.workers.unwrap_or(1);
    match row.model.as_str() {
        "epoll" | "uring" | "reactors" => {
            format!("{} ({n} loop{})", row.model, if n == 1 { "" } else { "s" })
        }
        "half-async" => format!("{} (1 loop, {n} workers)", row.model),
        "leader" | "async" => format!("{} ({n} threads)", row.model),
        _ => row.model.clone(),
    }
}

/// work: what the rows show, in sentences from their own figures: why a
/// worker pool wins over one loop when requests cost CPU, and how the
/// connections were spread across loops.
pub fn work_findings(rows: &[&Row]) -> Vec<String> {
    let ok: Vec<&Row> = rows.iter().copied().filter(|r| r.error.is_none()).collect();
    let find = |model: &str, workers: Option<u64>| {
        ok.iter()
            .copied()
            .find(|r| r.model == model && workers.is_none_or(|w| r.workers == Some(w)))
    };
    let mut out = Vec::new();
    let one_loop = find("epoll", Some(1));
    if let (Some(single), Some(pool)) = (one_loop, find("half-async", None)) {
        if let (Some(a), Some(b)) = (single.throughput_rps, pool.throughput_rps) {
            out.push(format!(
                "One event loop computes every reply on its own thread: with the CPU each request costs, \
                 that thread is the limit, and it keeps {} core(s) busy while the other clients wait their turn. \
                 half-async keeps the loop for I/O only and runs the requests on {} worker threads, on every \
                 core at once: {}/s against {}/s ({:.2}x), {} cores busy.",
                single.cores_used.map_or("-".into(), |c| format!("{c:.2}")),
                pool.workers.unwrap_or(0),
                thousands(b.round() as u64),
                thousands(a.round() as u64),
                b / a.max(1.0),
                pool.cores_used.map_or("-".into(), |c| format!("{c:.2}")),
            ));
        }
    }
    let spread = |r: &Row| {
        r.spread
            .as_ref()
            .map(|s| s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" / "))
    };
    if let Some(reactors) = find("reactors", None) {
        if let Some(s) = spread(reactors) {
            out.push(format!(
                "reactors: the accepting thread dealt the connections round robin: {s} per loop."
            ));
        }
    }
    if let Some(epoll) = find("epoll", Some(2)) {
        if let Some(s) = spread(epoll) {
            out.push(format!(
                "epoll with 2 loops on SO_REUSEPORT: the kernel chose the loop by a hash of each peer's address and port: {s} per loop. \
                 A loop that drew more clients has more work and nobody to share it with."
            ));
        }
    }
    out
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
