//! `uring-ladder`: echo under uring with each io_uring technique added in
//! turn (`UringFeatures::ladder`), at 64 B, 512 B and 16 KiB, next to epoll:
//! what each step gained or lost on this kernel. Not in the default set
//! (it is 24 runs); ask for it with `--scenarios uring-ladder`.

use serde::{Deserialize, Serialize};

use super::measured::start;
use super::{Knobs, Scenario, Subject};
use crate::lab::export::format::{bytes, per_request, thousands, tick_count};
use crate::lab::export::section::{Axis, Bar, Bars, Block, Chart, Section, Table};
use crate::lab::probe::SyscallMethod;
use crate::lab::Row;
use crate::model::uring_features::UringFeatures;
use crate::model::ModelKind;
use crate::service::ServiceKind;

pub struct UringLadder;

/// The message sizes the ladder climbs at: small requests, the seeds'
/// size, and replies larger than one receive buffer.
pub const SIZES: [usize; 3] = [64, 512, 16 * 1024];

/// The ladder's own figures: the step's name (`+recv-multishot`) and the
/// `--uring` set it ran with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uring: Option<String>,
}

/// A row's label, `epoll` or `uring +fixed-files`.
fn label(row: &Row) -> String {
    match row.figures::<Figures>().step {
        Some(step) => format!("{} {step}", row.model),
        None => row.model.clone(),
    }
}

/// The message sizes measured, in order.
fn sizes(rows: &[&Row]) -> Vec<u64> {
    let mut sizes: Vec<u64> = rows.iter().filter_map(|r| r.message_bytes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

impl Scenario for UringLadder {
    fn name(&self) -> &'static str {
        "uring-ladder"
    }

    fn by_default(&self) -> bool {
        false
    }

    fn applies_to(&self, model: ModelKind) -> bool {
        model == ModelKind::Uring
    }

    /// 24 servers a run: one run, and the section says what it cannot tell.
    fn default_runs(&self) -> usize {
        1
    }

    fn service(&self) -> ServiceKind {
        ServiceKind::Echo
    }

    /// No outside servers: it needs uring's own switches, step by step.
    fn takes_outside(&self) -> bool {
        false
    }

    fn parameters(&self, knobs: &Knobs) -> serde_json::Value {
        serde_json::json!({
            "clients": knobs.clients,
            "message_bytes": SIZES,
            "duration_ms": knobs.duration.as_millis() as u64,
            "steps": UringFeatures::ladder().iter().map(|(_, f)| f.to_string()).collect::<Vec<_>>(),
            "baseline": "epoll",
        })
    }

    /// At each size, epoll as the yardstick, then uring with one more
    /// technique per step. A step the kernel refuses is a row with its
    /// error; the climb goes on.
    fn measure(&self, _: Subject, knobs: &Knobs, _: Option<SyscallMethod>) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        for size in SIZES {
            rows.push(self.step(ModelKind::Epoll, None, size, knobs));
            for (step, features) in UringFeatures::ladder() {
                rows.push(self.step(ModelKind::Uring, Some((step, features)), size, knobs));
            }
        }
        Ok(rows)
    }

    fn headline(&self, row: &Row) -> String {
        format!(
            "{} at {}: {}/s, {} µs CPU/request",
            label(row),
            row.message_bytes.map_or("-".into(), bytes),
            row.throughput_rps.map_or("-".into(), |t| thousands(t as u64)),
            row.cpu_per_request_us.map_or("-".into(), |c| format!("{c:.1}"))
        )
    }

    fn section(&self, rows: &[&Row]) -> Section {
        let sizes = sizes(rows);
        let mut blocks = Vec::new();
        for &size in &sizes {
            let bars = rows
                .iter()
                .filter(|r| r.message_bytes == Some(size) && r.ok())
                .filter_map(|r| {
                    let t = r.throughput_rps?;
                    let cpu = r
                        .cpu_per_request_us
                        .map_or(String::new(), |c| format!(", {} µs CPU", per_request(c)));
                    Some(Bar::new(label(r), t, format!("{}/s{cpu}", thousands(t as u64))).of(r))
                })
                .collect();
            blocks.push(Block::Heading(format!("{} messages", bytes(size))));
            blocks.push(Block::Chart(Chart::Bars(
                Bars::new(
                    Axis::linear("requests/s", tick_count),
                    "requests/s (one run)",
                    bars,
                )
                .caveat("One run: a step within a few percent of the one above it is not told apart."),
            )));
        }
        let mut labels: Vec<String> = Vec::new();
        for r in rows {
            let l = label(r);
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        let mut header = vec!["step".to_string()];
        for size in &sizes {
            header.push(format!("{} req/s", bytes(*size)));
            header.push(format!("{} CPU µs", bytes(*size)));
        }
        let mut table = Table {
            header,
            rows: Vec::new(),
        };
        for l in &labels {
            let mut line = vec![l.clone()];
            for &size in &sizes {
                let row = rows
                    .iter()
                    .find(|r| &label(r) == l && r.message_bytes == Some(size));
                let epoll = rows
                    .iter()
                    .find(|r| r.model == "epoll" && r.message_bytes == Some(size))
                    .and_then(|r| r.throughput_rps);
                let (rps, cpu) = match row {
                    None => ("-".into(), "-".into()),
                    Some(r) if r.error.is_some() => ("failed".into(), "-".into()),
                    Some(r) => (
                        match (r.throughput_rps, epoll) {
                            (Some(t), Some(e)) if r.model != "epoll" && e > 0.0 => {
                                format!("{} ({:.2}x)", thousands(t as u64), t / e)
                            }
                            (Some(t), _) => thousands(t as u64),
                            _ => "-".into(),
                        },
                        r.cpu_per_request_us.map_or("-".into(), per_request),
                    ),
                };
                line.push(rps);
                line.push(cpu);
            }
            table.push(line);
        }
        blocks.push(Block::Text(
            "Echo, each uring step adds one io_uring technique to the step above it; requests/s (x epoll at \
             the same size) and server CPU per request (µs). A step that loses is kept: what it costs on this \
             kernel is the finding."
                .into(),
        ));
        blocks.push(Block::Table(table));
        let verdicts = verdicts(rows);
        if !verdicts.is_empty() {
            blocks.push(Block::Heading(
                "What each step did, against the step above it".into(),
            ));
            blocks.push(Block::Notes(verdicts));
        }
        Section {
            name: self.name(),
            title: "The io_uring ladder: one technique at a time",
            lesson: "Each io_uring technique removes a cost of the step below it (a system call, a copy, a \
                     lookup); whether that cost mattered at this message size is what each step shows."
                .into(),
            blocks,
        }
    }
}

impl UringLadder {
    fn step(&self, model: ModelKind, step: Option<(&str, UringFeatures)>, size: usize, knobs: &Knobs) -> Row {
        let mut row = Row {
            message_bytes: Some(size as u64),
            ..Row::new(model.name(), self.name())
        };
        row.set_figures(&Figures {
            step: step.map(|(name, _)| name.to_string()),
            uring: step.map(|(_, f)| f.to_string()),
        });
        let features = step.map(|(_, f)| f.to_string());
        let extra: Vec<&str> = match &features {
            Some(f) => vec!["--uring", f],
            None => Vec::new(),
        };
        let run = |row: &mut Row| -> anyhow::Result<()> {
            let mut server = start(Subject::Model(model), self.service(), &extra)?;
            server.echo_for(knobs, size, row)?;
            server.process.stop();
            Ok(())
        };
        if let Err(e) = run(&mut row) {
            row.error = Some(format!("{e:#}"));
        }
        row
    }
}

/// What each step did, against the step below it, at each size:
/// requests/s and CPU per request, in percent.
fn verdicts(rows: &[&Row]) -> Vec<String> {
    let sizes = sizes(rows);
    let mut steps: Vec<String> = Vec::new();
    for r in rows {
        if let Some(s) = r.figures::<Figures>().step {
            if !steps.contains(&s) {
                steps.push(s);
            }
        }
    }
    let find = |step: &str, size: u64| {
        rows.iter().find(|r| {
            r.figures::<Figures>().step.as_deref() == Some(step) && r.message_bytes == Some(size) && r.ok()
        })
    };
    let mut out = Vec::new();
    for pair in steps.windows(2) {
        let parts: Vec<String> = sizes
            .iter()
            .filter_map(|&size| {
                let (before, after) = (find(&pair[0], size)?, find(&pair[1], size)?);
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
    out.extend(rows.iter().filter_map(|r| {
        Some(format!(
            "not measured: {} at {}: {}",
            label(r),
            bytes(r.message_bytes?),
            r.error.as_deref()?
        ))
    }));
    out
}
