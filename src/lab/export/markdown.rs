//! The rows as Markdown: one table per scenario, the columns that apply.

use super::{bytes, micros, seconds};
use crate::lab::Row;

pub fn render(rows: &[Row]) -> String {
    format!("# socklab lab\n\n{}", table(rows))
}

/// A scenario's cells for one row, after the model's name.
type Cells = fn(&Row) -> Vec<String>;

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
                    "replies",
                    "errors",
                    "peak threads",
                    "peak children",
                ],
                |r| {
                    vec![
                        r.makespan_s.map_or("-".into(), seconds),
                        r.theory_s.map_or("-".into(), seconds),
                        r.replies.map_or("-".into(), |n| n.to_string()),
                        r.errors.map_or("-".into(), |n| n.to_string()),
                        r.peak_threads.map_or("-".into(), |n| n.to_string()),
                        r.peak_children.map_or("-".into(), |n| n.to_string()),
                    ]
                },
            ),
            "throughput" => (
                &[
                    "model",
                    "requests/s",
                    "p50",
                    "p99",
                    "errors",
                    "CPU",
                    "CPU/request",
                    "peak RSS",
                ],
                |r| {
                    vec![
                        r.throughput_rps.map_or("-".into(), |t| format!("{t:.0}")),
                        r.p50_us.map_or("-".into(), micros),
                        r.p99_us.map_or("-".into(), micros),
                        r.errors.map_or("-".into(), |n| n.to_string()),
                        r.cpu_s.map_or("-".into(), seconds),
                        r.cpu_per_request_us.map_or("-".into(), |c| format!("{c:.1} µs")),
                        r.peak_rss_kb.map_or("-".into(), |k| bytes(k * 1024)),
                    ]
                },
            ),
            _ => (
                &[
                    "model",
                    "idle connections",
                    "memory/connection",
                    "active p50",
                    "active p99",
                    "errors",
                    "peak RSS",
                ],
                |r| {
                    vec![
                        r.idle_connections.map_or("-".into(), |n| n.to_string()),
                        r.rss_per_conn_bytes.map_or("-".into(), bytes),
                        r.p50_us.map_or("starved".into(), micros),
                        r.p99_us.map_or("starved".into(), micros),
                        r.errors.map_or("-".into(), |n| n.to_string()),
                        r.peak_rss_kb.map_or("-".into(), |k| bytes(k * 1024)),
                    ]
                },
            ),
        };
        out += &format!(
            "## {scenario}\n\n| {} |\n|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for r in these {
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
    }
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
                replies: Some(5),
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
            md.contains("| iterative | 5.00 s | 5.00 s | 5 | 0 | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("| uring | failed: io_uring is not available |"),
            "{md}"
        );
        assert!(!md.contains("## throughput"));
    }
}
