//! The report as Markdown: where the figures came from, then one table per
//! scenario with the columns that apply.

use super::{
    bytes, meta_lines, micros, rps_with_range, seconds, served_label, spread_summary, spread_text, thousands,
    throughput_notes, unp_rows, unp_verdicts, work_findings, work_label, UNP_DESIGNS,
};
use crate::lab::{Report, Row};

pub fn render(report: &Report) -> String {
    let mut out = String::from("# socklab lab\n\n");
    for (label, value) in meta_lines(&report.meta) {
        out += &format!("- {label}: {value}\n");
    }
    out.push('\n');
    out + &table(&report.rows)
}

/// A scenario's cells for one row, after the model's name.
type Cells = fn(&Row) -> Vec<String>;

fn count(n: Option<u64>) -> String {
    n.map_or("-".into(), thousands)
}

fn served(r: &Row) -> String {
    match (r.served, r.clients) {
        (Some(s), Some(c)) => format!("{s} of {c}"),
        _ => "-".into(),
    }
}

fn per_request(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x < 1.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.1}"),
    }
}

/// The tables, also printed to the terminal at the end of a run.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let dash = || "-".to_string();
    for scenario in ["delay", "throughput", "idle"] {
        let these: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        if these.is_empty() {
            continue;
        }
        let (header, cells): (&[&str], Cells) = match scenario {
            "delay" => (
                &[
                    "model",
                    "last reply",
                    "theory",
                    "served",
                    "errors",
                    "peak threads",
                    "peak children",
                ],
                |r| {
                    vec![
                        r.makespan_s.map_or("-".into(), seconds),
                        r.theory_s.map_or("-".into(), seconds),
                        served(r),
                        count(r.errors),
                        count(r.peak_threads),
                        count(r.peak_children),
                    ]
                },
            ),
            "throughput" => (
                &[
                    "model",
                    "requests/s (min-max)",
                    "served",
                    "fairness",
                    "p50",
                    "p99",
                    "CPU/request",
                    "context switches/request",
                    "syscalls/request",
                    "PSS",
                ],
                |r| {
                    vec![
                        rps_with_range(r),
                        served(r),
                        r.fairness.map_or("-".into(), |f| format!("{f:.2}")),
                        r.p50_us.map_or("-".into(), micros),
                        r.p99_us.map_or("-".into(), micros),
                        r.cpu_per_request_us.map_or("-".into(), |c| format!("{c:.1} µs")),
                        per_request(r.context_switches_per_request),
                        per_request(r.syscalls_per_request),
                        r.pss_kb.map_or("-".into(), |k| bytes(k * 1024)),
                    ]
                },
            ),
            _ => (
                &[
                    "model",
                    "idle connections",
                    "accepted",
                    "memory/connection (PSS)",
                    "active p50",
                    "active p99",
                    "PSS",
                ],
                |r| {
                    vec![
                        count(r.idle_connections),
                        count(r.accepted),
                        match (r.pss_per_conn_bytes, r.backlog) {
                            (Some(b), _) => bytes(b),
                            (None, Some(w)) if w > 0 => {
                                format!("not accepted: {} waiting in the backlog", thousands(w))
                            }
                            _ => "-".into(),
                        },
                        r.p50_us.map_or("starved".into(), micros),
                        r.p99_us.map_or("starved".into(), micros),
                        r.pss_kb.map_or("-".into(), |k| bytes(k * 1024)),
                    ]
                },
            ),
        };
        out += &format!(
            "## {scenario}\n\n| {} |\n|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for r in &these {
            let mut line = vec![r.model.clone()];
            match &r.error {
                Some(e) => {
                    line.push(format!("failed: {}", e.replace('|', "/")));
                    line.extend((2..header.len()).map(|_| dash()));
                }
                None => line.extend(cells(r)),
            }
            out += &format!("| {} |\n", line.join(" | "));
        }
        out.push('\n');
        if scenario == "throughput" {
            let starved: Vec<String> = these
                .iter()
                .filter_map(|r| Some(format!("{} {}", r.model, served_label(r)?)))
                .collect();
            if !starved.is_empty() {
                out += &format!(
                    "Not every client was served: {}. Their requests/s, latency and CPU are those of the served clients only.\n\n",
                    starved.join(", ")
                );
            }
            let notes = throughput_notes(&these);
            for note in &notes {
                out += &format!("- {note}\n");
            }
            if !notes.is_empty() {
                out.push('\n');
            }
        }
    }
    out + &c10k_table(rows) + &unp_table(rows) + &work_table(rows) + &uring_ladder_table(rows)
}

/// uring-ladder: a row per step, requests/s (and the ratio to epoll at the
/// same size) and CPU per request for each message size; then what each
/// step did.
fn uring_ladder_table(rows: &[Row]) -> String {
    let these: Vec<&Row> = rows.iter().filter(|r| r.scenario == "uring-ladder").collect();
    if these.is_empty() {
        return String::new();
    }
    let sizes = super::ladder_sizes(&these);
    let mut labels: Vec<String> = Vec::new();
    for r in &these {
        let label = super::ladder_label(r);
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    let mut out = String::from(
        "## uring-ladder\n\nEcho, each uring step adds one io_uring technique to the step above it; \
         requests/s (x epoll at the same size) and server CPU per request (µs).\n\n| step |",
    );
    for size in &sizes {
        out += &format!(" {} req/s | {} CPU µs |", bytes(*size), bytes(*size));
    }
    out += &format!("\n|{}\n", "---|".repeat(2 * sizes.len() + 1));
    for label in &labels {
        out += &format!("| {label} |");
        for &size in &sizes {
            let row = these
                .iter()
                .find(|r| &super::ladder_label(r) == label && r.message_bytes == Some(size));
            let epoll = these
                .iter()
                .find(|r| r.model == "epoll" && r.message_bytes == Some(size))
                .and_then(|r| r.throughput_rps);
            let (rps, cpu) = match row {
                None => (dash(), dash()),
                Some(r) if r.error.is_some() => ("failed".into(), dash()),
                Some(r) => (
                    match (r.throughput_rps, epoll) {
                        (Some(t), Some(e)) if r.model != "epoll" && e > 0.0 => {
                            format!("{} ({:.2}x)", thousands(t as u64), t / e)
                        }
                        (Some(t), _) => thousands(t as u64),
                        _ => dash(),
                    },
                    per_request(r.cpu_per_request_us),
                ),
            };
            out += &format!(" {rps} | {cpu} |");
        }
        out.push('\n');
    }
    out.push('\n');
    let verdicts = super::ladder_verdicts(&these);
    if !verdicts.is_empty() {
        out += "What each step did, against the step above it:\n\n";
        for v in verdicts {
            out += &format!("- {}\n", v.replace('|', "/"));
        }
        out.push('\n');
    }
    out
}

fn dash() -> String {
    "-".into()
}

/// work: requests/s, p99 and cores busy when every request costs CPU.
fn work_table(rows: &[Row]) -> String {
    let these: Vec<&Row> = rows.iter().filter(|r| r.scenario == "work").collect();
    if these.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## work\n\nEcho with CPU spent on every request (`--work`), the server free to use every core.\n\n\
         | model | requests/s | p99 | cores used | served | connections per loop |\n|---|---|---|---|---|---|\n",
    );
    for r in &these {
        if let Some(e) = &r.error {
            out += &format!("| {} | failed: {} |\n", work_label(r), e.replace('|', "/"));
            continue;
        }
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            work_label(r),
            rps_with_range(r),
            r.p99_us.map_or("-".into(), micros),
            r.cores_used.map_or("-".into(), |c| format!("{c:.2}")),
            served(r),
            r.accepts_per_worker.as_ref().map_or("-".into(), |s| s
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" / ")),
        );
    }
    out.push('\n');
    for finding in work_findings(&these) {
        out += &format!("- {finding}\n");
    }
    out.push('\n');
    out
}

/// unp: the book's table, row 0 to 8, with the design's model where this
/// run measured one.
fn unp_table(rows: &[Row]) -> String {
    let these = unp_rows(rows);
    if these.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## unp\n\nStevens' table (UNP vol. 1, figure 30.1), re-run: server CPU (user + system, children \
         included) per connection of `4000\\n` and 4000 bytes back, and the same over the iterative \
         server's, as the book gives it.\n\n\
         | row | design | model | connections | connections/s | CPU/connection | over iterative | accepts per worker |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let us = |x: Option<f64>| x.map_or("-".into(), |c| format!("{c:.1} µs"));
    for (i, design) in UNP_DESIGNS.iter().enumerate() {
        let row = these.iter().find(|r| r.unp_row == Some(i as u64));
        let cells = match row {
            None => {
                let model = crate::model::ModelKind::all()
                    .iter()
                    .find(|m| m.unp_row() == Some(i as u8))
                    .map_or("-".to_string(), |m| m.to_string());
                let why = if model == "-" {
                    "no model yet"
                } else {
                    "not in this run"
                };
                vec![model, why.into(), "-".into(), "-".into(), "-".into(), "-".into()]
            }
            Some(r) => match &r.error {
                Some(e) => vec![
                    r.model.clone(),
                    format!("failed: {}", e.replace('|', "/")),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ],
                None => vec![
                    r.model.clone(),
                    count(r.connections),
                    r.connections_per_s
                        .map_or("-".into(), |c| format!("{}/s", thousands(c.round() as u64))),
                    us(r.cpu_per_conn_us),
                    us(r.cpu_per_conn_over_iterative_us),
                    r.accepts_per_worker.as_deref().map_or("-".into(), spread_text),
                ],
            },
        };
        out += &format!("| {i} | {design} | {} |\n", cells.join(" | "));
    }
    out += "\nsocklab's pool is row 7 without the mutex: each worker waits in poll(2) for the listener, \
            then accepts without blocking (the kernel lets threads accept at once).\n\n";
    for verdict in unp_verdicts(rows) {
        out += &format!("- {verdict}\n");
    }
    out += "\n";
    if let Some(spread) = spread_summary(rows) {
        out += &format!("{spread}\n\n");
    }
    out
}

/// c10k: a row per model, a column per number of idle connections.
fn c10k_table(rows: &[Row]) -> String {
    let these: Vec<&Row> = rows.iter().filter(|r| r.scenario == "c10k").collect();
    if these.is_empty() {
        return String::new();
    }
    let mut levels: Vec<u64> = these.iter().filter_map(|r| r.idle_connections).collect();
    levels.sort_unstable();
    levels.dedup();
    let mut models: Vec<&str> = Vec::new();
    for r in &these {
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
    }
    let mut out = String::from(
        "## c10k\n\nOne active client's p50 latency while this many idle connections are held.\n\n| model |",
    );
    for l in &levels {
        out += &format!(" {} idle |", thousands(*l));
    }
    out += &format!("\n|{}\n", "---|".repeat(levels.len() + 1));
    for m in models {
        out += &format!("| {m} |");
        for l in &levels {
            let cell = match these
                .iter()
                .find(|r| r.model == m && r.idle_connections == Some(*l))
            {
                None => "-".to_string(),
                Some(r) => match (&r.error, r.p50_us) {
                    (Some(e), _) => e.replace('|', "/"),
                    (None, Some(p)) => micros(p),
                    (None, None) => "starved".into(),
                },
            };
            out += &format!(" {cell} |");
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_per_scenario_and_failures_say_why() {
        let rows = vec![
            Row {
                model: "iterative".into(),
                scenario: "delay".into(),
                makespan_s: Some(5.004),
                theory_s: Some(5.0),
                served: Some(5),
                clients: Some(5),
                errors: Some(0),
                ..Row::default()
            },
            Row {
                model: "uring".into(),
                scenario: "delay".into(),
                error: Some("io_uring is not available".into()),
                ..Row::default()
            },
        ];
        let md = table(&rows);
        assert!(md.contains("## delay"), "{md}");
        assert!(
            md.contains("| iterative | 5.00 s | 5.00 s | 5 of 5 | 0 | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("| uring | failed: io_uring is not available |"),
            "{md}"
        );
        assert!(!md.contains("## throughput"));
    }

    #[test]
    fn unp_in_the_books_order_with_every_design_named() {
        let row = |model: &str, n: u64, cpu: f64, spread: Option<Vec<u64>>| Row {
            model: model.into(),
            scenario: "unp".into(),
            unp_row: Some(n),
            connections: Some(2500),
            connections_per_s: Some(9000.0),
            cpu_per_conn_us: Some(cpu),
            accepts_per_worker: spread,
            ..Row::default()
        };
        let mut rows = vec![
            row("pool", 7, 40.0, Some(vec![900, 800, 800])),
            row("iterative", 0, 30.0, None),
            row("fork", 1, 160.0, None),
        ];
        crate::lab::scenario::relate_to_iterative(&mut rows);
        let md = table(&rows);
        let at = |s: &str| md.find(s).unwrap_or_else(|| panic!("{s} not in\n{md}"));
        assert!(at("| 0 | iterative server") < at("| 1 | concurrent server, one fork"));
        assert!(at("| 1 |") < at("| 7 | prethreaded, mutex"));
        assert!(md.contains("| 1 | concurrent server, one fork per client | fork | 2,500 | 9,000/s | 160.0 µs | 130.0 µs | - |"), "{md}");
        assert!(md.contains("| 7 | prethreaded, mutex locking to protect accept | pool | 2,500 | 9,000/s | 40.0 µs | 10.0 µs | 900 800 800 |"), "{md}");
        assert!(
            md.contains("| 6 | concurrent server, one thread per client | thread | not in this run |"),
            "{md}"
        );
        assert!(
            md.contains("Accepts per worker: pool 900 800 800 (Jain 1.00)"),
            "{md}"
        );
    }

    #[test]
    fn a_load_generator_at_its_limit_is_named() {
        let row = |model: &str, rps: f64, busy: f64| Row {
            model: model.into(),
            scenario: "throughput".into(),
            throughput_rps: Some(rps),
            load_busy: Some(busy),
            ..Row::default()
        };
        let md = table(&[row("epoll", 190_000.0, 0.96), row("poll", 120_000.0, 0.62)]);
        assert!(
            md.contains("the load generator was at least 90% busy driving epoll (96%): there requests/s may be its limit"),
            "{md}"
        );
        assert!(!md.contains("62%"), "{md}");
    }

    #[test]
    fn starved_clients_and_backlogs_are_named() {
        let rows = vec![
            Row {
                model: "iterative".into(),
                scenario: "throughput".into(),
                throughput_rps: Some(70_586.0),
                served: Some(1),
                clients: Some(50),
                ..Row::default()
            },
            Row {
                model: "pool".into(),
                scenario: "idle".into(),
                idle_connections: Some(1000),
                accepted: Some(3),
                backlog: Some(997),
                ..Row::default()
            },
            Row {
                model: "select".into(),
                scenario: "c10k".into(),
                idle_connections: Some(5000),
                error: Some("past FD_SETSIZE".into()),
                ..Row::default()
            },
        ];
        let md = table(&rows);
        assert!(md.contains("| iterative | 70,586/s | 1 of 50 |"), "{md}");
        assert!(!md.contains("load generator"), "{md}");
        assert!(md.contains("iterative served 1 of 50"), "{md}");
        assert!(md.contains("not accepted: 997 waiting in the backlog"), "{md}");
        assert!(md.contains("| select | past FD_SETSIZE |"), "{md}");
    }

    #[test]
    fn work_shows_cores_spread_and_why_the_pool_wins() {
        let row = |model: &str, workers: u64, rps: f64, cores: f64, spread: Option<Vec<u64>>| Row {
            model: model.into(),
            scenario: "work".into(),
            workers: Some(workers),
            throughput_rps: Some(rps),
            cores_used: Some(cores),
            served: Some(50),
            clients: Some(50),
            accepts_per_worker: spread,
            ..Row::default()
        };
        let rows = vec![
            row("epoll", 1, 4000.0, 0.98, None),
            row("epoll", 2, 7000.0, 1.7, Some(vec![30, 21])),
            row("reactors", 2, 7100.0, 1.7, Some(vec![26, 25])),
            row("half-async", 2, 7200.0, 1.8, None),
        ];
        let md = table(&rows);
        assert!(md.contains("## work"), "{md}");
        assert!(
            md.contains("| epoll (1 loop) | 4,000/s | - | 0.98 | 50 of 50 | - |"),
            "{md}"
        );
        assert!(
            md.contains("| epoll (2 loops) | 7,000/s | - | 1.70 | 50 of 50 | 30 / 21 |"),
            "{md}"
        );
        assert!(
            md.contains("| half-async (1 loop, 2 workers) | 7,200/s |"),
            "{md}"
        );
        assert!(md.contains("7,200/s against 4,000/s (1.80x)"), "{md}");
        assert!(md.contains("round robin: 26 / 25 per loop"), "{md}");
        assert!(
            md.contains("SO_REUSEPORT: the kernel chose the loop by a hash"),
            "{md}"
        );
    }
}
