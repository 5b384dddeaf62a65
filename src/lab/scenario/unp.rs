//! `unp`: Stevens' experiment (UNP vol. 1, chapter 30) on the designs of
//! his table: C clients at once, each L rounds of connect, `4000\n`, read
//! 4000 bytes, close, against `bytes`: the server's CPU per connection (and
//! over the iterative server's, as the book gives it), connections per
//! second, and how the workers shared the accepts.

use std::cmp::Ordering;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::compare::Figure;
use super::measured::{bench_options, start, STARVED_AFTER};
use super::{Knobs, Scenario, Subject};
use crate::client::bench::{BenchOptions, Expect, Load, Payload};
use crate::lab::export::format::{count, spread_text, thousands, tick_plain};
use crate::lab::export::section::{Axis, Bar, Bars, Block, Chart, Section, Table};
use crate::lab::probe::{self, SyscallMethod};
use crate::lab::Row;
use crate::model::ModelKind;
use crate::service::ServiceKind;

pub struct Unp;

/// The bytes each of Stevens' clients asks for.
const UNP_REPLY: usize = 4000;

/// unp's own figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The design's row in UNP figure 30.1 (0 iterative ... 8).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unp_row: Option<u64>,
    /// Connections served (connect, `4000\n`, 4000 bytes, close), and how
    /// many per second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connections_per_s: Option<f64>,
    /// Server CPU (user + system, children included) per connection, and
    /// the same minus the iterative server's, as the book reports it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_per_conn_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_per_conn_over_iterative_us: Option<f64>,
}

/// The names of UNP figure 30.1's rows, in the book's order.
pub const DESIGNS: [&str; 9] = [
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

impl Scenario for Unp {
    fn name(&self) -> &'static str {
        "unp"
    }

    /// The designs of the book's table, whichever exist.
    fn applies_to(&self, model: ModelKind) -> bool {
        model.unp_row().is_some()
    }

    fn service(&self) -> ServiceKind {
        ServiceKind::Bytes
    }

    fn parameters(&self, knobs: &Knobs) -> serde_json::Value {
        serde_json::json!({
            "clients": knobs.unp_clients,
            "rounds_per_client": knobs.unp_rounds,
            "request": "4000\\n",
            "reply_bytes": UNP_REPLY,
            "cpu": "wait4 rusage of the server at exit (its reaped children included) minus /proc schedstat before the load",
        })
    }

    fn measure(&self, subject: Subject, knobs: &Knobs, _: Option<SyscallMethod>) -> anyhow::Result<Vec<Row>> {
        let mut row = subject.row(self.name());
        let mut server = start(subject, self.service(), &[])?;
        let options = BenchOptions {
            new_connection: true,
            expect: Expect::Bytes(UNP_REPLY),
            ..bench_options(
                &server.process.addr,
                knobs.unp_clients,
                Load::Requests(knobs.unp_rounds),
                Payload::Text(format!("{UNP_REPLY}\n").into_bytes()),
                STARVED_AFTER,
            )?
        };
        let before = probe::cpu_precise(server.process.pid()).context("the server died")?;
        let report = server.drive(&options)?;
        server.record(&mut row, &report, None);
        // As the book measures it: the server's CPU, children included, read
        // when it is stopped (getrusage there, wait4's rusage here).
        server.process.stop();
        let connections = report.replies;
        let mut figures = Figures {
            unp_row: subject.model().and_then(|m| m.unp_row()).map(u64::from),
            connections: Some(connections),
            connections_per_s: (report.elapsed_s > 0.0).then(|| connections as f64 / report.elapsed_s),
            ..Figures::default()
        };
        if let Some(total) = server.process.exit_cpu() {
            let cpu = total.saturating_sub(before).as_secs_f64();
            row.cpu_s = Some(cpu);
            row.cpu_per_request_us = None;
            if connections > 0 {
                figures.cpu_per_conn_us = Some(cpu * 1e6 / connections as f64);
            }
        }
        row.set_figures(&figures);
        row.accepts_per_worker = server.process.accepts_per_worker();
        Ok(vec![row])
    }

    /// Each design's CPU per connection over the iterative server's, the
    /// book's baseline, once iterative's row is in (a run without
    /// iterative has none).
    fn relate(&self, rows: &mut [Row]) {
        let baseline = rows
            .iter()
            .find(|r| r.scenario == self.name() && r.model == ModelKind::Iterative.name() && r.ok())
            .and_then(|r| r.figures::<Figures>().cpu_per_conn_us);
        let Some(baseline) = baseline else {
            return;
        };
        for r in rows.iter_mut().filter(|r| r.scenario == self.name()) {
            let mut f: Figures = r.figures();
            f.cpu_per_conn_over_iterative_us = f.cpu_per_conn_us.map(|c| c - baseline);
            r.set_figures(&f);
        }
    }

    fn headline(&self, row: &Row) -> String {
        let f: Figures = row.figures();
        format!(
            "{} of CPU per connection, {} connections/s{}",
            f.cpu_per_conn_us.map_or("-".into(), |c| format!("{c:.1} µs")),
            thousands(f.connections_per_s.unwrap_or(0.0).round() as u64),
            row.accepts_per_worker.as_ref().map_or(String::new(), |a| format!(
                ", accepts per worker {}",
                spread_text(a)
            ))
        )
    }

    fn section(&self, rows: &[&Row]) -> Section {
        let rows = in_book_order(rows);
        let bars = rows
            .iter()
            .filter(|r| r.ok())
            .filter_map(|r| {
                let f: Figures = r.figures();
                let c = Figure::of(r, "cpu_per_conn_us")?;
                let over = f
                    .cpu_per_conn_over_iterative_us
                    .map_or(String::new(), |o| format!(", {o:+.1} µs over iterative"));
                let text = format!(
                    "{}{over}, {}/s",
                    c.show(" µs"),
                    thousands(f.connections_per_s.unwrap_or(0.0).round() as u64)
                );
                Some(Bar::new(r.model.as_str(), c.value, text).of(r))
            })
            .collect();
        let chart = Bars::new(
            Axis::linear("µs of server CPU per connection", tick_plain),
            "server CPU per connection (median of the runs)",
            bars,
        )
        .caveat("CPU only: the chart does not show how long a client waited, nor the kernel's own work on the client's side.");
        let us = |x: Option<f64>| x.map_or("-".into(), |c| format!("{c:.1} µs"));
        let mut table = Table::new(&[
            "row",
            "design",
            "model",
            "connections",
            "connections/s",
            "CPU/connection",
            "over iterative",
            "accepts per worker",
        ]);
        for (i, design) in DESIGNS.iter().enumerate() {
            let row = rows
                .iter()
                .find(|r| r.figures::<Figures>().unp_row == Some(i as u64));
            let mut cells = vec![i.to_string(), design.to_string()];
            cells.extend(match row {
                None => {
                    let model = ModelKind::all()
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
                        format!("failed: {e}"),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ],
                    None => {
                        let f: Figures = r.figures();
                        vec![
                            r.model.clone(),
                            count(f.connections),
                            f.connections_per_s
                                .map_or("-".into(), |c| format!("{}/s", thousands(c.round() as u64))),
                            us(f.cpu_per_conn_us),
                            us(f.cpu_per_conn_over_iterative_us),
                            r.accepts_per_worker.as_deref().map_or("-".into(), spread_text),
                        ]
                    }
                },
            });
            table.push(cells);
        }
        for r in rows.iter().filter(|r| r.outside) {
            let f: Figures = r.figures();
            let mut cells = vec!["-".into(), "outside server".into(), r.model.clone()];
            match &r.error {
                Some(e) => cells.extend([
                    format!("failed: {e}"),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]),
                None => cells.extend([
                    count(f.connections),
                    f.connections_per_s
                        .map_or("-".into(), |c| format!("{}/s", thousands(c.round() as u64))),
                    us(f.cpu_per_conn_us),
                    us(f.cpu_per_conn_over_iterative_us),
                    "-".into(),
                ]),
            }
            table.push(cells);
        }
        let mut blocks = vec![
            Block::Chart(Chart::Bars(chart)),
            Block::Text(
                "Stevens' client: clients at once, each connecting, asking for 4000 bytes (bytes: a line \
                 holding N, N bytes back), reading them and closing, again and again. The server's CPU time \
                 per connection is read when it exits, as the book's servers read getrusage. Why the designs \
                 differ: a fork per client copies page tables and tears them down again; a thread per client \
                 creates and reaps a kernel task; pre-made workers pay neither, and differ only in how they \
                 share the accepts. socklab's pool is row 7 without the mutex: its workers wait in poll(2) \
                 and accept without blocking."
                    .into(),
            ),
            Block::Table(table),
        ];
        let verdicts = verdicts(&rows);
        if !verdicts.is_empty() {
            blocks.push(Block::Heading("The book's conclusions on this kernel".into()));
            blocks.push(Block::Notes(verdicts));
        }
        if let Some(spread) = spread_summary(&rows) {
            blocks.push(Block::Notes(vec![spread]));
            blocks.push(Block::Text(
                "The thundering herd: rows 3 and 4 put a lock around accept because, when the book was \
                 written, every process blocked in accept(2) woke for each connection. Linux wakes one waiter \
                 of a blocking accept(2) per connection; a worker that waits in poll(2) or select(2) first, as \
                 socklab's do, is still woken with all the others, and the losers find nothing to accept. The \
                 counts above show who won."
                    .into(),
            ));
        }
        Section {
            name: self.name(),
            title: "Stevens' table, re-run: the server designs of UNP chapter 30",
            lesson:
                "Creating a process or a thread for every client costs more CPU than the work of serving \
                     it; workers made in advance pay that once, which is why Stevens' table ends with them."
                    .into(),
            blocks,
        }
    }

    fn findings(&self, rows: &[&Row]) -> Vec<String> {
        verdicts(&in_book_order(rows)).into_iter().take(2).collect()
    }

    fn story(&self, rows: &[&Row]) -> Option<String> {
        let r = rows.first().filter(|r| r.ok())?;
        let f: Figures = r.figures();
        let c = Figure::of(r, "cpu_per_conn_us")?;
        let mut s = format!(
            "in Stevens' experiment (UNP row {}) it used {} of CPU per connection",
            f.unp_row.map_or("-".into(), |n| n.to_string()),
            c.show(" µs")
        );
        if let Some(o) = f.cpu_per_conn_over_iterative_us {
            s += &format!(" ({o:+.1} µs over iterative)");
        }
        if let Some(cps) = f.connections_per_s {
            s += &format!(" and served {}/s", thousands(cps.round() as u64));
        }
        if let Some(a) = &r.accepts_per_worker {
            s += &format!(", its workers accepting {}", spread_text(a));
        }
        Some(s)
    }

    fn anomaly(&self, row: &Row, _peers: &[&Row]) -> Option<String> {
        let c = Figure::of(row, "cpu_per_conn_us")?;
        (c.relative_spread() > 0.5)
            .then(|| format!("its runs disagree: CPU per connection {}", c.show(" µs")))
    }
}

/// unp's rows in the book's order (row 0 to 8).
fn in_book_order<'a>(rows: &[&'a Row]) -> Vec<&'a Row> {
    let mut these = rows.to_vec();
    these.sort_by_key(|r| r.figures::<Figures>().unp_row.unwrap_or(u64::MAX));
    these
}

/// Whether `counts` are even: each worker within a quarter of the fair
/// share, and Jain's index over them.
fn spread_verdict(counts: &[u64]) -> (bool, f64) {
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
fn spread_summary(rows: &[&Row]) -> Option<String> {
    let with: Vec<(&Row, &Vec<u64>)> = rows
        .iter()
        .filter_map(|r| Some((*r, r.accepts_per_worker.as_ref().filter(|a| a.len() > 1)?)))
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
/// Linux agrees, and that the run cannot tell where two costs are closer
/// than the spread of their runs.
fn verdicts(rows: &[&Row]) -> Vec<String> {
    let at = |n: u64| {
        rows.iter()
            .find(|r| r.figures::<Figures>().unp_row == Some(n) && r.ok())
            .and_then(|r| Some((r.model.as_str(), Figure::of(r, "cpu_per_conn_us")?)))
    };
    let cannot_tell = "closer than the spread of their runs: this run cannot tell which is cheaper";
    let mut said = Vec::new();
    let premade: Vec<(&str, Figure)> = [2, 3, 4, 5, 7, 8].into_iter().filter_map(at).collect();
    let cheapest = premade
        .iter()
        .copied()
        .min_by(|a, b| a.1.value.total_cmp(&b.1.value));
    if let (Some((_, fork)), Some((model, best))) = (at(1), cheapest) {
        let times = fork.value / best.value;
        let verdict = if !fork.apart(&best) {
            cannot_tell
        } else if times >= 2.0 {
            "as the book found"
        } else {
            "today's Linux disagrees with the book"
        };
        said.push(format!(
            "Fork per client: {} of CPU per connection, {times:.1} times the cheapest pre-made design \
             ({model}, {}): {verdict}.",
            fork.show(" µs"),
            best.show(" µs")
        ));
    }
    if let (Some((_, fork)), Some((_, thread))) = (at(1), at(6)) {
        let verdict = match thread.against(&fork) {
            None => cannot_tell,
            Some(Ordering::Less) => "threads are cheaper to create than processes, as the book found",
            Some(_) => "a thread cost more than a process: today's Linux disagrees with the book",
        };
        said.push(format!(
            "A thread per client {} against a process per client {}: {verdict}.",
            thread.show(" µs"),
            fork.show(" µs")
        ));
    }
    if let (Some((_, prefork)), Some((_, pool))) = (at(2), at(7)) {
        let verdict = match pool.against(&prefork) {
            None => {
                "the same within the spread of their runs: made in advance, a process costs what a \
                 thread does, where the book found threads cheaper"
            }
            Some(Ordering::Less) => "threads cheaper, as the book found",
            Some(_) => "processes cheaper: today's Linux disagrees with the book",
        };
        said.push(format!(
            "Pre-made workers: processes (prefork) {}, threads (pool) {}: {verdict}.",
            prefork.show(" µs"),
            pool.show(" µs")
        ));
    }
    if let (Some((_, prefork)), Some((_, pass))) = (at(2), at(5)) {
        let verdict = match pass.against(&prefork) {
            Some(Ordering::Greater) => "dearer, as the book found",
            _ => "not dearer beyond the spread of the runs: today's Linux disagrees with the book",
        };
        said.push(format!(
            "Passing each descriptor to a child {} against children accepting {}: {verdict}.",
            pass.show(" µs"),
            prefork.show(" µs")
        ));
    }
    if let Some((_, none)) = at(2) {
        let locked: Vec<String> = [3, 4]
            .into_iter()
            .filter_map(at)
            .map(|(model, cpu)| format!("{model} {}", cpu.show(" µs")))
            .collect();
        if !locked.is_empty() {
            said.push(format!(
                "A lock around accept: {} against none (prefork) {}: this kernel needs no lock for \
                 correctness, so the lock is only a cost.",
                locked.join(", "),
                none.show(" µs")
            ));
        }
    }
    if let Some((_, base)) = at(0) {
        let below: Vec<String> = rows
            .iter()
            .filter(|r| r.figures::<Figures>().unp_row != Some(0))
            .filter_map(|r| Some((r.model.as_str(), Figure::of(r, "cpu_per_conn_us")?)))
            .filter(|(_, f)| f.value < base.value)
            .map(|(m, f)| {
                if f.apart(&base) {
                    format!("{m} {} (beyond the spread)", f.show(" µs"))
                } else {
                    format!("{m} {} (within the spread: the same)", f.show(" µs"))
                }
            })
            .collect();
        if !below.is_empty() {
            said.push(format!(
                "Below the iterative baseline ({}): {}. A negative figure over iterative is not a design \
                 that costs less than nothing: the baseline is not free either. The iterative server sleeps \
                 in accept(2) for each connection and is woken for it; workers that find a connection \
                 already waiting sleep less often.",
                base.show(" µs"),
                below.join(", ")
            ));
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Spread;

    fn row(model: &str, n: u64, cpu: f64, min: f64, max: f64) -> Row {
        let mut r = Row::new(model, "unp");
        r.runs = Some(3);
        r.set_figures(&Figures {
            unp_row: Some(n),
            cpu_per_conn_us: Some(cpu),
            ..Figures::default()
        });
        r.range.insert("cpu_per_conn_us".into(), Spread { min, max });
        r
    }

    #[test]
    fn the_books_conclusions_are_checked_against_the_figures_and_their_spreads() {
        let rows = [
            row("fork", 1, 350.0, 345.0, 355.0),
            row("prefork", 2, 36.6, 34.7, 39.5),
            row("prefork-pass", 5, 51.2, 49.7, 53.9),
            row("thread", 6, 86.0, 80.0, 90.0),
            row("pool", 7, 35.5, 35.0, 36.8),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let said = verdicts(&in_book_order(&refs)).join("\n");
        assert!(
            said.contains(
                "9.9 times the cheapest pre-made design (pool, 35.5 µs (35.0-36.8)): as the book found"
            ),
            "{said}"
        );
        assert!(
            said.contains("threads are cheaper to create than processes"),
            "{said}"
        );
        assert!(
            said.contains("the same within the spread of their runs"),
            "{said}"
        );
        assert!(said.contains("dearer, as the book found"), "{said}");
        // Thread and fork within each other's spread: no verdict.
        let mut close = rows.clone();
        close[3] = row("thread", 6, 340.0, 330.0, 350.0);
        let refs: Vec<&Row> = close.iter().collect();
        let said = verdicts(&in_book_order(&refs)).join("\n");
        assert!(said.contains("this run cannot tell which is cheaper"), "{said}");
        assert!(!said.contains("threads are cheaper"), "{said}");
    }
}
