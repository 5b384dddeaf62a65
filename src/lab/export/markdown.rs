//! The report as Markdown: where the figures came from, then one table per
//! scenario with the columns that apply.

use super::{bytes, meta_lines, micros, rps_with_range, seconds, served_label, thousands, within_noise};
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
            for note in within_noise(&these) {
                out += &format!("- {note}\n");
            }
            if !within_noise(&these).is_empty() {
                out.push('\n');
            }
        }
    }
    out + &c10k_table(rows) + &uring_ladder_table(rows)
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
        assert!(md.contains("iterative served 1 of 50"), "{md}");
        assert!(md.contains("not accepted: 997 waiting in the backlog"), "{md}");
        assert!(md.contains("| select | past FD_SETSIZE |"), "{md}");
    }
}
