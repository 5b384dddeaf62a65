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
        "unp" => "unp scenario",
        "work" => "work scenario",
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

/// Counts as bench prints them too: one helper for both.
pub use crate::figures::thousands;

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
/// The throughput scenario's notes: rankings within the noise, and the
/// models whose requests/s may be the load generator's limit.
pub fn throughput_notes(rows: &[&Row]) -> Vec<String> {
    let mut notes = within_noise(rows);
    let limit = crate::client::bench::LOAD_BUSY_WARNING;
    let bound: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let busy = r.load_busy.filter(|b| *b >= limit)?;
            Some(format!("{} ({:.0}%)", r.model, busy * 100.0))
        })
        .collect();
    if !bound.is_empty() {
        notes.push(format!(
            "the load generator was at least {:.0}% busy driving {}: there requests/s may be its limit rather than the model's; CPU per request still compares them",
            limit * 100.0,
            bound.join(", ")
        ));
    }
    notes
}

fn within_noise(rows: &[&Row]) -> Vec<String> {
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
    let head = format!("{:<13} {:<10}", row.model, row.scenario);
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
            "{:<13} {:<10} {}, p99 {}, {} cores{served}",
            work_label(row),
            row.scenario,
            rps_with_range(row),
            row.p99_us.map_or("-".into(), micros),
            row.cores_used.map_or("-".into(), |c| format!("{c:.2}"))
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
        "unp" => format!(
            "{head} {} of CPU per connection, {} connections/s{}{served}",
            row.cpu_per_conn_us.map_or("-".into(), |c| format!("{c:.1} µs")),
            thousands(row.connections_per_s.unwrap_or(0.0).round() as u64),
            row.accepts_per_worker.as_ref().map_or(String::new(), |a| format!(
                ", accepts per worker {}",
                spread_text(a)
            ))
        ),
        _ => format!(
            "{head} {}, active client p50 {}{served}",
            memory_per_connection(row),
            row.p50_us.map_or("starved".into(), micros)
        ),
    }
}

/// The names of UNP figure 30.1's rows, in the book's order.
pub const UNP_DESIGNS: [&str; 9] = [
    "iterative server (the baseline)",
    "concurrent server, one fork per client",
    "prefork, each child calling accept",
    "prefork, file locking around accept",
    "prefork, thread mutex locking around accept",
    "prefork, parent passing descriptor to child",
    "concurrent server, one thread per client",
    "prethreaded, mutex locking to protect accept",
    "prethreaded, main thread calling accept",
];

/// unp's rows in the book's order (row 0 to 8).
pub fn unp_rows(rows: &[Row]) -> Vec<&Row> {
    let mut these: Vec<&Row> = rows.iter().filter(|r| r.scenario == "unp").collect();
    these.sort_by_key(|r| r.unp_row.unwrap_or(u64::MAX));
    these
}

/// `412 398 390`.
pub fn spread_text(counts: &[u64]) -> String {
    counts.iter().map(|c| thousands(*c)).collect::<Vec<_>>().join(" ")
}

/// Whether `counts` are even: each worker within a quarter of the fair
/// share, and Jain's index over them.
pub fn spread_verdict(counts: &[u64]) -> (bool, f64) {
    let total: u64 = counts.iter().sum();
    if counts.len() < 2 || total == 0 {
        return (true, 1.0);
    }
    let fair = total as f64 / counts.len() as f64;
    let even = counts.iter().all(|&c| (c as f64 - fair).abs() <= 0.25 * fair);
    (even, crate::client::bench::jain_fairness(counts))
}

/// The accept-spread paragraph: who took the connections, per model with
/// workers, and whether today's kernel spread them evenly.
pub fn spread_summary(rows: &[Row]) -> Option<String> {
    let with: Vec<(&Row, &Vec<u64>)> = unp_rows(rows)
        .into_iter()
        .filter_map(|r| Some((r, r.accepts_per_worker.as_ref().filter(|a| a.len() > 1)?)))
        .collect();
    if with.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    let mut uneven = Vec::new();
    for (r, counts) in &with {
        let (even, jain) = spread_verdict(counts);
        parts.push(format!("{} {} (Jain {jain:.2})", r.model, spread_text(counts)));
        if !even {
            uneven.push(r.model.as_str());
        }
    }
    let verdict = if uneven.is_empty() {
        "every worker took within a quarter of its fair share: today's kernel spread the connections \
         evenly across the workers"
            .to_string()
    } else {
        format!(
            "uneven on {}: some workers took more than a quarter over or under their fair share",
            uneven.join(", ")
        )
    };
    Some(format!("Accepts per worker: {}; {verdict}.", parts.join(", ")))
}

/// The book's conclusions, each checked against this run's figures: a
/// sentence per conclusion whose rows were measured, saying whether today's
/// Linux agrees. Two costs closer than the spread of their runs count as
/// the same.
pub fn unp_verdicts(rows: &[Row]) -> Vec<String> {
    let these = unp_rows(rows);
    let at = |n: u64| {
        these
            .iter()
            .find(|r| r.unp_row == Some(n) && r.error.is_none())
            .and_then(|r| Some((r.model.as_str(), r.cpu_per_conn_us?, cpu_noise(r))))
    };
    let mut said = Vec::new();
    let premade: Vec<(&str, f64, f64)> = [2, 3, 4, 5, 7, 8].into_iter().filter_map(at).collect();
    let cheapest = premade.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
    if let (Some((_, fork, _)), Some((model, best, _))) = (at(1), cheapest) {
        let times = fork / best;
        let verdict = if times >= 2.0 {
            "as the book found"
        } else {
            "today's Linux disagrees with the book"
        };
        said.push(format!(
            "Fork per client: {fork:.1} µs of CPU per connection, {times:.1} times the cheapest \
             pre-made design ({model}, {best:.1} µs): {verdict}."
        ));
    }
    if let (Some((_, fork, _)), Some((_, thread, _))) = (at(1), at(6)) {
        let verdict = if thread < fork {
            "threads are cheaper to create than processes, as the book found"
        } else {
            "a thread cost as much as a process: today's Linux disagrees with the book"
        };
        said.push(format!(
            "A thread per client {thread:.1} µs against a process per client {fork:.1} µs: {verdict}."
        ));
    }
    if let (Some((_, prefork, a)), Some((_, pool, b))) = (at(2), at(7)) {
        let verdict = if (prefork - pool).abs() <= a.max(b) {
            "the same within the spread of their runs: made in advance, a process costs what a thread \
             does, where the book found threads cheaper"
        } else if pool < prefork {
            "threads cheaper, as the book found"
        } else {
            "processes cheaper: today's Linux disagrees with the book"
        };
        said.push(format!(
            "Pre-made workers: processes (prefork) {prefork:.1} µs, threads (pool) {pool:.1} µs: {verdict}."
        ));
    }
    if let (Some((_, prefork, a)), Some((_, pass, b))) = (at(2), at(5)) {
        let verdict = if pass - prefork > a.max(b) {
            "dearer, as the book found"
        } else {
            "not dearer beyond the spread of the runs: today's Linux disagrees with the book"
        };
        said.push(format!(
            "Passing each descriptor to a child {pass:.1} µs against children accepting {prefork:.1} µs: \
             {verdict}."
        ));
    }
    if let Some((_, none, noise)) = at(2) {
        let locked: Vec<String> = [3, 4]
            .into_iter()
            .filter_map(at)
            .map(|(model, cpu, _)| format!("{model} {cpu:.1} µs"))
            .collect();
        if !locked.is_empty() {
            let spread = if noise > 0.0 {
                format!(" (its runs spread {noise:.1} µs)")
            } else {
                String::new()
            };
            said.push(format!(
                "A lock around accept: {} against none (prefork) {none:.1} µs{spread}: this kernel \
                 needs no lock for correctness, so the lock is only a cost.",
                locked.join(", ")
            ));
        }
    }
    said
}

/// How far a row's runs spread in CPU per connection (0 for one run).
fn cpu_noise(row: &Row) -> f64 {
    row.range.get("cpu_per_conn_us").map_or(0.0, |s| s.max - s.min)
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
        r.accepts_per_worker
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
    fn the_books_conclusions_are_checked_against_the_figures() {
        let row = |model: &str, n: u64, cpu: f64, min: f64, max: f64| {
            let mut r = Row {
                model: model.into(),
                scenario: "unp".into(),
                unp_row: Some(n),
                cpu_per_conn_us: Some(cpu),
                ..Row::default()
            };
            r.range
                .insert("cpu_per_conn_us".into(), crate::lab::Spread { min, max });
            r
        };
        let rows = vec![
            row("fork", 1, 350.0, 345.0, 355.0),
            row("prefork", 2, 36.6, 34.7, 39.5),
            row("prefork-pass", 5, 51.2, 49.7, 53.9),
            row("thread", 6, 86.0, 80.0, 90.0),
            row("pool", 7, 35.5, 35.0, 36.8),
        ];
        let said = unp_verdicts(&rows).join("\n");
        assert!(
            said.contains("9.9 times the cheapest pre-made design (pool, 35.5 µs): as the book found"),
            "{said}"
        );
        assert!(
            said.contains("threads are cheaper to create than processes"),
            "{said}"
        );
        assert!(
            said.contains("(pool) 35.5 µs: the same within the spread of their runs"),
            "{said}"
        );
        assert!(
            said.contains("accepting 36.6 µs: dearer, as the book found"),
            "{said}"
        );
        // Passing no dearer than accepting: the report says the book is contradicted.
        let mut cheap = rows.clone();
        cheap[2] = row("prefork-pass", 5, 37.0, 35.0, 39.0);
        let said = unp_verdicts(&cheap).join("\n");
        assert!(
            said.contains("not dearer beyond the spread of the runs: today's Linux disagrees"),
            "{said}"
        );
    }
}
