//! `work`: echo with `--work 200us` of CPU per request, many connections:
//! requests/s, p99 and the cores the server kept busy, for the event loops
//! and the designs that spread a loop's work over threads (reactors,
//! half-async, leader); the server may use every core.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::compare::Figure;
use super::measured::{bench_options, model_args, Measured, STARVED_AFTER};
use super::{c10k, Knobs, Scenario, Subject};
use crate::client::bench::{self, Load, Payload};
use crate::lab::export::format::{micros, or_dash, rps_with_range, served, thousands, tick_count};
use crate::lab::export::section::{Axis, Bar, Bars, Block, Chart, Section, Table};
use crate::lab::probe::SyscallMethod;
use crate::lab::{Row, ServerProcess};
use crate::model::ModelKind;
use crate::service::ServiceKind;

pub struct Work;

/// CPU per request.
pub const WORK_PER_REQUEST: Duration = Duration::from_micros(200);

/// The designs built on an event loop that spread its work over threads;
/// with the C10K models, the ones this scenario is about (where CPU spent
/// per request is a question: a thread or process per connection spreads
/// it by construction).
const LOOP_DESIGNS: [ModelKind; 3] = [ModelKind::Reactors, ModelKind::HalfAsync, ModelKind::Leader];

/// A single loop busy for less than this share of a core, where its peers
/// kept theirs busy, did not get the core it was given.
const STARVED_CORE: f64 = 0.6;

/// work's own figures: the cores the server kept busy (CPU time over wall time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cores_used: Option<f64>,
}

fn models() -> impl Iterator<Item = &'static ModelKind> {
    c10k::MODELS.iter().chain(&LOOP_DESIGNS)
}

/// A row's model with its threads or loops, `epoll (2 loops)`.
pub fn label(row: &Row) -> String {
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

fn cores(row: &Row) -> String {
    Figure::of(row, "cores_used").map_or("-".into(), |c| format!("{:.2}", c.value))
}

impl Scenario for Work {
    fn name(&self) -> &'static str {
        "work"
    }

    fn applies_to(&self, model: ModelKind) -> bool {
        models().any(|m| *m == model)
    }

    fn service(&self) -> ServiceKind {
        ServiceKind::Echo
    }

    /// No outside servers: it needs `--work`, a switch of socklab's own.
    fn takes_outside(&self) -> bool {
        false
    }

    fn parameters(&self, knobs: &Knobs) -> serde_json::Value {
        serde_json::json!({
            "work_us": WORK_PER_REQUEST.as_micros() as u64,
            "clients": knobs.clients,
            "message_bytes": knobs.size,
            "duration_ms": knobs.duration.as_millis() as u64,
            "pinning": "none: the server may use every core",
            "models": models().map(|m| m.name()).collect::<Vec<_>>(),
        })
    }

    /// One row per configuration of the model (epoll twice: one loop, the
    /// baseline, and two on `SO_REUSEPORT`, whose spread is shown next to
    /// reactors' round robin).
    fn measure(&self, subject: Subject, knobs: &Knobs, _: Option<SyscallMethod>) -> anyhow::Result<Vec<Row>> {
        let Some(model) = subject.model() else {
            return Ok(Vec::new());
        };
        // The models that default to the cores count the machine's, not the
        // lab's own (pinned to one).
        let cores = crate::lab::pin::cores();
        let workers = match model {
            ModelKind::Epoll => vec![1, 2],
            ModelKind::Async | ModelKind::Reactors | ModelKind::HalfAsync | ModelKind::Leader => vec![cores],
            other => vec![other.default_workers()],
        };
        let mut rows = Vec::new();
        for n in workers {
            let mut row = Row {
                workers: Some(n as u64),
                ..Row::new(model.name(), self.name())
            };
            let work = format!("{}us", WORK_PER_REQUEST.as_micros());
            let args = model_args(
                model,
                self.service(),
                &["--work", &work, "--workers", &n.to_string()],
            );
            let mut server = Measured::new(ServerProcess::start_pinned(&args, false)?)?;
            // One request answered first: a model's loops are all listening by
            // then (epoll's SO_REUSEPORT siblings are made after the address is
            // announced). It is counted in the spread.
            let warm_up = bench_options(
                &server.process.addr,
                1,
                Load::Requests(1),
                Payload::Size(knobs.size),
                STARVED_AFTER,
            )?;
            bench::measure(&warm_up).context("the warm-up request failed")?;
            let report = server.echo_for(knobs, knobs.size, &mut row)?;
            if let Some(cpu) = row.cpu_s.filter(|_| report.elapsed_s > 0.0) {
                row.set_figures(&Figures {
                    cores_used: Some(cpu / report.elapsed_s),
                });
            }
            server.process.stop();
            row.accepts_per_worker = server.process.accepts_per_worker().filter(|s| s.len() > 1);
            rows.push(row);
        }
        Ok(rows)
    }

    fn headline(&self, row: &Row) -> String {
        format!(
            "{}: {}, p99 {}, {} cores",
            label(row),
            rps_with_range(row),
            or_dash(row.p99_us, micros),
            cores(row)
        )
    }

    fn section(&self, rows: &[&Row]) -> Section {
        let bars = rows
            .iter()
            .filter(|r| r.ok())
            .map(|r| {
                let text = format!(
                    "{}, p99 {}, {} cores",
                    rps_with_range(r),
                    or_dash(r.p99_us, micros),
                    cores(r)
                );
                Bar::new(label(r), r.throughput_rps.unwrap_or(0.0), text).of(r)
            })
            .collect();
        let chart = Bars::new(
            Axis::linear("requests per second", tick_count),
            "requests/s (median of the runs)",
            bars,
        )
        .caveat("The label adds p99 and the cores the server kept busy (its CPU time over the run's wall time). The chart does not show how evenly the loops were loaded: the table's last column does.");
        let mut table = Table::new(&[
            "model",
            "requests/s",
            "p99",
            "cores used",
            "served",
            "connections per loop",
        ]);
        table.push_rows(rows, label, |r| {
            vec![
                rps_with_range(r),
                or_dash(r.p99_us, micros),
                cores(r),
                served(r),
                r.accepts_per_worker.as_ref().map_or("-".into(), |s| {
                    s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" / ")
                }),
            ]
        });
        let mut blocks = vec![
            Block::Chart(Chart::Bars(chart)),
            Block::Text(
                "Why: one event loop computes every reply on its own thread; when each request costs CPU, \
                 that thread is the limit and the other clients wait their turn. Designs that hand the work \
                 to a pool (half-async), share the accepts between loops (reactors, epoll on SO_REUSEPORT) or \
                 take turns at the wait (leader) use every core."
                    .into(),
            ),
            Block::Table(table),
        ];
        let findings = findings(rows);
        if !findings.is_empty() {
            blocks.push(Block::Notes(findings));
        }
        Section {
            name: self.name(),
            title: "Work: every request costs CPU",
            lesson: "When every request costs CPU, a single event loop is one core's worth of server; \
                     spreading the work over threads is what uses the others."
                .into(),
            blocks,
        }
    }

    fn findings(&self, rows: &[&Row]) -> Vec<String> {
        findings(rows).into_iter().take(1).collect()
    }

    fn story(&self, rows: &[&Row]) -> Option<String> {
        let parts: Vec<String> = rows
            .iter()
            .filter(|r| r.ok())
            .map(|r| {
                format!(
                    "with {} of CPU per request, {} made {} on {} cores",
                    micros(WORK_PER_REQUEST.as_micros() as u64),
                    label(r),
                    rps_with_range(r),
                    cores(r)
                )
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(", and "))
    }

    /// A single loop or thread that kept far less than its core busy while
    /// the other single ones kept theirs: it did not get the core it was
    /// given (in one run, uring made a third of its peers' rate at 0.34
    /// cores; three reruns gave it the same as theirs).
    fn anomaly(&self, row: &Row, peers: &[&Row]) -> Option<String> {
        let single = |r: &Row| r.workers == Some(1);
        if !single(row) {
            return None;
        }
        let mine = Figure::of(row, "cores_used")?.value;
        let mut others: Vec<f64> = peers
            .iter()
            .filter(|p| single(p) && p.model != row.model)
            .filter_map(|p| Some(Figure::of(p, "cores_used")?.value))
            .collect();
        others.sort_by(f64::total_cmp);
        let median = *others.get(others.len() / 2)?;
        (mine < STARVED_CORE * median).then(|| {
            format!(
                "it kept {mine:.2} cores busy where the other single loops kept a median of {median:.2}: \
                 the server did not get the core it was given, so its requests/s is not its own"
            )
        })
    }
}

/// What the rows show, in sentences from their own figures.
fn findings(rows: &[&Row]) -> Vec<String> {
    let ok: Vec<&Row> = rows.iter().copied().filter(|r| r.ok()).collect();
    let find = |model: &str, workers: Option<u64>| {
        ok.iter()
            .copied()
            .find(|r| r.model == model && workers.is_none_or(|w| r.workers == Some(w)))
    };
    let mut out = Vec::new();
    if let (Some(single), Some(pool)) = (find("epoll", Some(1)), find("half-async", None)) {
        if let (Some(a), Some(b)) = (
            Figure::of(single, "throughput_rps"),
            Figure::of(pool, "throughput_rps"),
        ) {
            let verdict = if a.apart(&b) {
                format!(
                    "{:.2}x, beyond the spread of the runs",
                    b.value / a.value.max(1.0)
                )
            } else {
                "within the spread of the runs: this run cannot tell them apart".into()
            };
            out.push(format!(
                "Work: with {} of CPU per request, one epoll loop made {}/s on {} cores; half-async, the loop \
                 for I/O and {} worker threads for the work, made {}/s on {} cores: {verdict}.",
                micros(WORK_PER_REQUEST.as_micros() as u64),
                thousands(a.value.round() as u64),
                cores(single),
                pool.workers.unwrap_or(0),
                thousands(b.value.round() as u64),
                cores(pool),
            ));
        }
    }
    let spread = |r: &Row| {
        r.accepts_per_worker
            .as_ref()
            .map(|s| s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" / "))
    };
    if let Some(s) = find("reactors", None).and_then(spread) {
        out.push(format!(
            "reactors: the accepting thread dealt the connections round robin: {s} per loop."
        ));
    }
    if let Some(s) = find("epoll", Some(2)).and_then(spread) {
        out.push(format!(
            "epoll with 2 loops on SO_REUSEPORT: the kernel chose the loop by a hash of each peer's address \
             and port: {s} per loop. A loop that drew more clients has more work and nobody to share it with."
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, workers: u64, rps: f64, cores: f64) -> Row {
        let mut r = Row {
            workers: Some(workers),
            throughput_rps: Some(rps),
            ..Row::new(model, "work")
        };
        r.set_figures(&Figures {
            cores_used: Some(cores),
        });
        r
    }

    #[test]
    fn a_single_loop_that_did_not_get_its_core_is_caught() {
        let rows = [
            row("epoll", 1, 4500.0, 1.0),
            row("poll", 1, 4400.0, 0.99),
            row("select", 1, 4450.0, 1.0),
            row("uring", 1, 1651.0, 0.34),
            row("half-async", 2, 8000.0, 1.8),
        ];
        let peers: Vec<&Row> = rows.iter().collect();
        let why = Work
            .anomaly(&rows[3], &peers)
            .expect("uring at 0.34 cores is odd");
        assert!(
            why.contains("kept 0.34 cores busy where the other single loops kept a median of 1.00"),
            "{why}"
        );
        for r in [&rows[0], &rows[1], &rows[4]] {
            assert_eq!(Work.anomaly(r, &peers), None, "{}", r.model);
        }
    }

    #[test]
    fn overlapping_runs_give_no_verdict() {
        let mut single = row("epoll", 1, 4000.0, 1.0);
        let mut pool = row("half-async", 2, 4100.0, 1.8);
        for r in [&mut single, &mut pool] {
            r.runs = Some(3);
            r.range.insert(
                "throughput_rps".into(),
                crate::lab::Spread {
                    min: 3900.0,
                    max: 4200.0,
                },
            );
        }
        let said = findings(&[&single, &pool]).join("\n");
        assert!(said.contains("this run cannot tell them apart"), "{said}");
        assert!(!said.contains("beyond the spread"), "{said}");
    }
}
