//! `delay`: the seeds' experiment. N clients at once, one request each, to
//! `hello` with a delay: the time until the last reply, next to theory
//! (one delay per round of clients the model serves at once), and each
//! client's lane from connect to reply.

use serde::{Deserialize, Serialize};

use super::measured::{bench_options, start, STARVED_AFTER};
use super::{Knobs, Scenario, Subject};
use crate::client::bench::{Lane, Load, Payload};
use crate::lab::export::format::{count, or_dash, seconds, served, server};
use crate::lab::export::section::{Axis, Bar, Bars, Block, Chart, Lanes, Section, Table};
use crate::lab::probe::SyscallMethod;
use crate::lab::Row;
use crate::service::ServiceKind;

pub struct Delay;

/// delay's own figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Time until the last reply, and what theory says it should be.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub makespan_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub theory_s: Option<f64>,
    /// Each client's lane, from connect to reply.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lanes: Option<Vec<Lane>>,
}

/// Within this share of theory, a makespan is "as theory says".
const AS_THEORY: f64 = 0.1;

impl Scenario for Delay {
    fn name(&self) -> &'static str {
        "delay"
    }

    /// Each model is compared with its theory, not with the others: one run.
    fn default_runs(&self) -> usize {
        1
    }

    fn parameters(&self, knobs: &Knobs) -> serde_json::Value {
        serde_json::json!({
            "clients": knobs.delay_clients,
            "requests_per_client": 1,
            "delay_ms": knobs.delay.as_millis() as u64,
        })
    }

    fn service(&self) -> ServiceKind {
        ServiceKind::Hello
    }

    /// An outside server holds its replies as its own code does: it has no
    /// theory here, only its measured makespan.
    fn measure(&self, server: Subject, knobs: &Knobs, _: Option<SyscallMethod>) -> anyhow::Result<Vec<Row>> {
        let mut row = server.row(self.name());
        let theory = server
            .model()
            .map(|m| m.theory_makespan(knobs.delay_clients, knobs.delay, m.default_workers()));
        let delay = format!("{}ms", knobs.delay.as_millis());
        let model = server;
        let mut server = start(model, self.service(), &["--delay", &delay])?;
        // Generous: a model far from its theory still finishes, and shows it.
        let timeout = theory.unwrap_or(knobs.delay * knobs.delay_clients as u32) * 2 + STARVED_AFTER;
        let options = bench_options(
            &server.process.addr,
            knobs.delay_clients,
            Load::Requests(1),
            Payload::Text(b"hello".to_vec()),
            timeout,
        )?;
        let report = server.drive(&options)?;
        server.record(&mut row, &report, None);
        server.process.stop();
        row.set_figures(&Figures {
            makespan_s: Some(report.elapsed_s),
            theory_s: theory.map(|t| t.as_secs_f64()),
            lanes: Some(report.per_client.iter().map(|c| c.lane).collect()),
        });
        Ok(vec![row])
    }

    fn headline(&self, row: &Row) -> String {
        let f: Figures = row.figures();
        format!(
            "last reply after {} (theory {})",
            or_dash(f.makespan_s, seconds),
            or_dash(f.theory_s, seconds)
        )
    }

    fn section(&self, rows: &[&Row]) -> Section {
        let ok: Vec<&Row> = rows.iter().copied().filter(|r| r.ok()).collect();
        let clients = ok.iter().find_map(|r| r.clients).unwrap_or(0);
        let bars = ok
            .iter()
            .map(|r| {
                let f: Figures = r.figures();
                Bar {
                    marker: f.theory_s,
                    ..Bar::new(
                        r.model.as_str(),
                        f.makespan_s.unwrap_or(0.0),
                        format!(
                            "{} (theory {})",
                            or_dash(f.makespan_s, seconds),
                            or_dash(f.theory_s, seconds)
                        ),
                    )
                }
                .of(r)
            })
            .collect();
        let chart = Bars {
            marker: Some("theory"),
            ..Bars::new(
                Axis::linear("seconds until the last reply", crate::lab::export::format::tick_seconds),
                "measured",
                bars,
            )
        }
        .caveat("One run: each model is held against its theory; the chart does not show how the time was spread over the clients (the lanes below do).");
        let groups = ok
            .iter()
            .filter_map(|r| {
                Some((
                    r.model.clone(),
                    r.figures::<Figures>().lanes.filter(|l| !l.is_empty())?,
                ))
            })
            .collect();
        let lanes = Lanes {
            axis: Axis::linear("seconds since the clients started", crate::lab::export::format::tick_seconds),
            groups,
            caveat: Some("A lane starts when the client's connection is up and ends with its whole reply; a red lane got none.".into()),
        };
        let mut table = Table::new(&[
            "model",
            "last reply",
            "theory",
            "served",
            "errors",
            "peak threads",
            "peak children",
        ]);
        table.push_rows(rows, server, |r| {
            let f: Figures = r.figures();
            vec![
                or_dash(f.makespan_s, seconds),
                or_dash(f.theory_s, seconds),
                served(r),
                count(r.errors),
                count(r.peak_threads),
                count(r.peak_children),
            ]
        });
        Section {
            name: self.name(),
            title: "The seeds' experiment: clients at once, each reply delayed",
            lesson: format!(
                "{} clients at once, each reply held for the same delay: a server that serves one \
                 client at a time makes the last wait one delay per client, a pool one delay per round \
                 of its workers, and a thread, a process or an event loop per client one delay in all.",
                if clients > 0 {
                    clients.to_string()
                } else {
                    "Several".into()
                }
            ),
            blocks: vec![
                Block::Chart(Chart::Bars(chart)),
                Block::Chart(Chart::Lanes(lanes)),
                Block::Text(
                    "Why: the kernel completes every connection at once (they wait in the listener's \
                     backlog); what differs is when the model gets to each. A blocking server sleeps \
                     through the delay with the client's connection in hand, so the next client waits; \
                     an event loop sets a timer and goes on accepting."
                        .into(),
                ),
                Block::Table(table),
            ],
        }
    }

    fn findings(&self, rows: &[&Row]) -> Vec<String> {
        let off: Vec<String> = rows
            .iter()
            .filter(|r| r.ok())
            .filter_map(|r| {
                let f: Figures = r.figures();
                let (m, t) = (f.makespan_s?, f.theory_s?);
                ((m - t).abs() > AS_THEORY * t)
                    .then(|| format!("{} {} (theory {})", r.model, seconds(m), seconds(t)))
            })
            .collect();
        let slowest = rows
            .iter()
            .filter(|r| r.ok())
            .filter_map(|r| Some((r, r.figures::<Figures>().makespan_s?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let mut out = Vec::new();
        if let Some((r, m)) = slowest {
            out.push(format!(
                "The seeds' experiment: {} kept the last of {} clients waiting {}; {}.",
                r.model,
                r.clients.unwrap_or(0),
                seconds(m),
                if off.is_empty() {
                    "every model finished within 10% of its theory".to_string()
                } else {
                    format!("off their theory by more than 10%: {}", off.join(", "))
                }
            ));
        }
        out
    }

    fn story(&self, rows: &[&Row]) -> Option<String> {
        let f: Figures = rows.first().filter(|r| r.ok())?.figures();
        let (m, t) = (f.makespan_s?, f.theory_s?);
        let verdict = if (m - t).abs() <= AS_THEORY * t {
            "as theory says"
        } else if m > t {
            "slower than theory"
        } else {
            "faster than theory"
        };
        Some(format!(
            "its delayed clients had their last reply after {} ({verdict}: {})",
            seconds(m),
            seconds(t)
        ))
    }
}
