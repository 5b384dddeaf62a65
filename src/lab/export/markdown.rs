//! The report as Markdown: where the figures came from, the findings, then
//! each section's lesson, prose, tables and notes (charts are the HTML
//! page's). Draws any section; names no scenario.

use super::section::{Block, Section, Table};
use super::Document;

pub fn render(doc: &Document) -> String {
    let mut out = String::from("# socklab lab\n\n");
    for (label, value) in &doc.meta {
        out += &format!("- {label}: {value}\n");
    }
    out.push('\n');
    if !doc.findings.is_empty() || !doc.warnings.is_empty() {
        out += "## Findings\n\n";
        for f in doc.findings.iter().chain(&doc.warnings) {
            out += &format!("- {f}\n");
        }
        out.push('\n');
    }
    for section in &doc.sections {
        out += &draw(section, true);
    }
    if !doc.servers.is_empty() {
        out += "## Server by server\n\n";
        for p in &doc.servers {
            out += &format!("- **{}**: {} {}\n", p.name, p.takeaway, p.story.join(" "));
        }
        out.push('\n');
    }
    out
}

/// The sections' lessons, tables and notes: what the terminal shows at the
/// end of a run.
pub fn tables(doc: &Document) -> String {
    let mut out: String = doc.sections.iter().map(|s| draw(s, false)).collect();
    for w in &doc.warnings {
        out += &format!("warning: {w}\n");
    }
    out
}

/// One section; `prose` adds its paragraphs (the why) to its tables.
fn draw(section: &Section, prose: bool) -> String {
    let mut out = format!("## {}\n\n{}\n\n", section.name, section.lesson);
    for block in &section.blocks {
        match block {
            Block::Text(text) if prose => out += &format!("{text}\n\n"),
            Block::Heading(h) => out += &format!("### {h}\n\n"),
            Block::Table(t) => out += &table(t),
            Block::Notes(notes) => {
                for n in notes {
                    out += &format!("- {}\n", cell(n));
                }
                out.push('\n');
            }
            Block::Text(_) | Block::Chart(_) => {}
        }
    }
    out
}

fn table(t: &Table) -> String {
    let header: Vec<String> = t.header.iter().map(|h| cell(h)).collect();
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(t.header.len()));
    for row in &t.rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out.push('\n');
    out
}

/// A cell's text: a `|` would end the cell early.
fn cell(text: &str) -> String {
    text.replace('|', "/")
}

#[cfg(test)]
mod tests {
    use crate::lab::export::tables;
    use crate::lab::scenario::{DelayFigures, UnpFigures, WorkFigures};
    use crate::lab::Row;

    #[test]
    fn a_table_per_scenario_and_failures_say_why() {
        let mut iterative = Row {
            served: Some(5),
            clients: Some(5),
            errors: Some(0),
            ..Row::new("iterative", "delay")
        };
        iterative.set_figures(&DelayFigures {
            makespan_s: Some(5.004),
            theory_s: Some(5.0),
            lanes: None,
        });
        let rows = vec![
            iterative,
            Row {
                error: Some("io_uring is not available".into()),
                ..Row::new("uring", "delay")
            },
        ];
        let md = tables(&rows);
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
        let row = |model: &str, n: u64, cpu: f64, spread: Option<Vec<u64>>| {
            let mut r = Row {
                accepts_per_worker: spread,
                ..Row::new(model, "unp")
            };
            r.set_figures(&UnpFigures {
                unp_row: Some(n),
                connections: Some(2500),
                connections_per_s: Some(9000.0),
                cpu_per_conn_us: Some(cpu),
                cpu_per_conn_over_iterative_us: None,
            });
            r
        };
        let mut rows = vec![
            row("pool", 7, 40.0, Some(vec![900, 800, 800])),
            row("iterative", 0, 30.0, None),
            row("fork", 1, 160.0, None),
        ];
        crate::lab::scenario::by_name("unp").unwrap().relate(&mut rows);
        let md =
            crate::lab::export::markdown::render(&crate::lab::export::Document::of(&crate::lab::Report {
                rows,
                ..Default::default()
            }));
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
    fn a_load_generator_at_its_limit_is_named_and_not_ranked() {
        let row = |model: &str, rps: f64, busy: f64| Row {
            throughput_rps: Some(rps),
            load_busy: Some(busy),
            ..Row::new(model, "throughput")
        };
        let md = tables(&[row("epoll", 190_000.0, 0.96), row("poll", 120_000.0, 0.62)]);
        assert!(md.contains("| epoll | 190,000/s, load-bound |"), "{md}");
        assert!(md.contains("at least 90% busy driving epoll (96%)"), "{md}");
        assert!(!md.contains("62%"), "{md}");
    }

    #[test]
    fn starved_clients_and_backlogs_are_named() {
        let rows = vec![
            Row {
                throughput_rps: Some(70_586.0),
                served: Some(1),
                clients: Some(50),
                ..Row::new("iterative", "throughput")
            },
            Row {
                idle_connections: Some(1000),
                accepted: Some(3),
                backlog: Some(997),
                ..Row::new("pool", "idle")
            },
            Row {
                idle_connections: Some(5000),
                error: Some("past FD_SETSIZE".into()),
                ..Row::new("select", "c10k")
            },
        ];
        let md = tables(&rows);
        assert!(md.contains("| iterative | 70,586/s | 1 of 50 |"), "{md}");
        assert!(!md.contains("load generator was"), "{md}");
        assert!(md.contains("iterative served 1 of 50"), "{md}");
        assert!(md.contains("not accepted: 997 waiting in the backlog"), "{md}");
        assert!(md.contains("| select | past FD_SETSIZE |"), "{md}");
    }

    #[test]
    fn work_shows_cores_spread_and_why_the_pool_wins() {
        let row = |model: &str, workers: u64, rps: f64, cores: f64, spread: Option<Vec<u64>>| {
            let mut r = Row {
                workers: Some(workers),
                throughput_rps: Some(rps),
                served: Some(50),
                clients: Some(50),
                runs: Some(3),
                accepts_per_worker: spread,
                ..Row::new(model, "work")
            };
            r.range.insert(
                "throughput_rps".into(),
                crate::lab::Spread {
                    min: rps * 0.99,
                    max: rps * 1.01,
                },
            );
            r.set_figures(&WorkFigures {
                cores_used: Some(cores),
            });
            r
        };
        let rows = vec![
            row("epoll", 1, 4000.0, 0.98, None),
            row("epoll", 2, 7000.0, 1.7, Some(vec![30, 21])),
            row("reactors", 2, 7100.0, 1.7, Some(vec![26, 25])),
            row("half-async", 2, 7200.0, 1.8, None),
        ];
        let md = tables(&rows);
        assert!(md.contains("## work"), "{md}");
        assert!(
            md.contains("| epoll (1 loop) | 4,000/s (3,960-4,040) | - | 0.98 | 50 of 50 | - |"),
            "{md}"
        );
        assert!(
            md.contains("| epoll (2 loops) | 7,000/s (6,930-7,070) | - | 1.70 | 50 of 50 | 30 / 21 |"),
            "{md}"
        );
        assert!(md.contains("| half-async (1 loop, 2 workers) | 7,200/s"), "{md}");
        assert!(
            md.contains("made 7,200/s on 1.80 cores: 1.80x, beyond the spread of the runs"),
            "{md}"
        );
        assert!(md.contains("round robin: 26 / 25 per loop"), "{md}");
        assert!(
            md.contains("SO_REUSEPORT: the kernel chose the loop by a hash"),
            "{md}"
        );
    }
}
