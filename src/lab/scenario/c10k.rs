//! `c10k`: the readiness and completion models holding 0, 1,000, 5,000,
//! 10,000 idle connections: one active client's latency at each.

use std::time::Duration;

use super::measured::{hold, port_of, settle_accepted, start};
use super::{Knobs, Scenario, Subject};
use crate::lab::export::format::{micros, thousands, tick_count, tick_micros};
use crate::lab::export::section::{Axis, Block, Chart, Lines, Section, Series, Table};
use crate::lab::probe::SyscallMethod;
use crate::lab::Row;
use crate::model::ModelKind;
use crate::service::ServiceKind;

pub struct C10k;

/// The readiness and completion models: the ones the C10K curve is about.
pub const MODELS: [ModelKind; 6] = [
    ModelKind::Select,
    ModelKind::Poll,
    ModelKind::Busy,
    ModelKind::Epoll,
    ModelKind::Async,
    ModelKind::Uring,
];

/// How long the active client runs at each step.
const ACTIVE_FOR: Duration = Duration::from_millis(500);

/// One run: a growth of less than this factor is not called growth.
const GREW: f64 = 2.0;

impl Scenario for C10k {
    fn name(&self) -> &'static str {
        "c10k"
    }

    fn applies_to(&self, model: ModelKind) -> bool {
        MODELS.contains(&model)
    }

    /// The curve is told by factors, not percent: one run.
    fn default_runs(&self) -> usize {
        1
    }

    fn service(&self) -> ServiceKind {
        ServiceKind::Echo
    }

    fn parameters(&self, knobs: &Knobs) -> serde_json::Value {
        serde_json::json!({
            "idle_connections": knobs.c10k_levels,
            "active_clients": 1,
            "active_duration_ms": ACTIVE_FOR.as_millis() as u64,
            "models": MODELS.iter().map(|m| m.name()).collect::<Vec<_>>(),
        })
    }

    fn measure(&self, subject: Subject, knobs: &Knobs, _: Option<SyscallMethod>) -> anyhow::Result<Vec<Row>> {
        let mut server = start(subject, self.service(), &[])?;
        let port = port_of(&server.process.addr)?;
        let mut held = Vec::new();
        let mut rows = Vec::new();
        let mut levels = knobs.c10k_levels.clone();
        levels.sort_unstable();
        levels.dedup();
        for level in levels {
            let mut row = Row {
                idle_connections: Some(level as u64),
                ..subject.row(self.name())
            };
            // The listener, the active client's connection and a few of the
            // server's own descriptors sit below the idle ones.
            if subject.model() == Some(ModelKind::Select) && level + 16 >= libc::FD_SETSIZE {
                row.error = Some(format!(
                    "select(2) watches descriptors below FD_SETSIZE ({}) only",
                    libc::FD_SETSIZE
                ));
                rows.push(row);
                continue;
            }
            if let Err(e) = hold(&server.process.addr, level, &mut held) {
                row.error = Some(format!("{e:#}"));
                rows.push(row);
                break;
            }
            let accepted = settle_accepted(port, level as u64, Duration::from_secs(5));
            let options = server.active_client(ACTIVE_FOR)?;
            server.restart_watch();
            let report = server.drive(&options)?;
            server.record(&mut row, &report, None);
            row.accepted = Some(accepted);
            row.backlog = Some((level as u64).saturating_sub(accepted));
            rows.push(row);
        }
        drop(held);
        server.process.stop();
        Ok(rows)
    }

    fn headline(&self, row: &Row) -> String {
        format!(
            "{} idle: active client p50 {}",
            thousands(row.idle_connections.unwrap_or(0)),
            row.p50_us.map_or("starved".into(), micros)
        )
    }

    fn section(&self, rows: &[&Row]) -> Section {
        let mut levels: Vec<u64> = rows.iter().filter_map(|r| r.idle_connections).collect();
        levels.sort_unstable();
        levels.dedup();
        let models = super::servers_of(rows);
        let series = models
            .iter()
            .map(|m| {
                let first = rows.iter().find(|r| &r.model == m);
                Series {
                    name: m.clone(),
                    points: rows
                        .iter()
                        .filter(|r| &r.model == m && r.ok())
                        .filter_map(|r| Some((r.idle_connections? as f64, r.p50_us? as f64)))
                        .collect(),
                    outside: first.is_some_and(|r| r.outside),
                }
            })
            .collect();
        let skipped: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                Some(format!(
                    "{} at {}: {}",
                    r.model,
                    thousands(r.idle_connections?),
                    r.error.as_deref()?
                ))
            })
            .collect();
        let mut caveat = String::from(
            "One run, p50 only: a growth under 2x is not told apart from noise. Each line has its own \
             marker shape, so lines that run together stay visible.",
        );
        if !skipped.is_empty() {
            caveat += &format!(" Not measured: {}.", skipped.join("; "));
        }
        let chart = Lines {
            x: Axis::linear("idle connections held", tick_count),
            y: Axis::log("active client p50 (log scale)", tick_micros),
            series,
            caveat: Some(caveat),
        };
        let mut header = vec!["model".to_string()];
        header.extend(levels.iter().map(|l| format!("{} idle", thousands(*l))));
        let mut table = Table {
            header,
            rows: Vec::new(),
        };
        for m in &models {
            let outside = rows.iter().any(|r| &r.model == m && r.outside);
            let mut line = vec![if outside {
                format!("{m} (outside)")
            } else {
                m.clone()
            }];
            for l in &levels {
                let cell = match rows
                    .iter()
                    .find(|r| &r.model == m && r.idle_connections == Some(*l))
                {
                    None => "-".to_string(),
                    Some(r) => match (&r.error, r.p50_us) {
                        (Some(e), _) => e.clone(),
                        (None, Some(p)) => micros(p),
                        (None, None) => "starved".into(),
                    },
                };
                line.push(cell);
            }
            table.push(line);
        }
        Section {
            name: self.name(),
            title: "C10K: one active client among many idle ones",
            lesson: "select and poll hand the kernel every descriptor on every wait, and busy tries each \
                     socket in turn, so one active client pays for every idle one; epoll, async and uring \
                     hear only of the sockets that are ready."
                .into(),
            blocks: vec![
                Block::Chart(Chart::Lines(chart)),
                Block::Text(
                    "Why: a wait in select(2) or poll(2) copies the whole set into the kernel, which checks \
                     each socket and copies the set back; the loop then scans it. epoll keeps the set in the \
                     kernel and returns only the ready ones; io_uring completes operations and needs no scan."
                        .into(),
                ),
                Block::Text("One active client's p50 latency while this many idle connections are held:".into()),
                Block::Table(table),
            ],
        }
    }

    fn findings(&self, rows: &[&Row]) -> Vec<String> {
        let grew: Vec<String> = super::servers_of(rows)
            .iter()
            .filter_map(|m| {
                let mine: Vec<&&Row> = rows.iter().filter(|r| &r.model == m && r.ok()).collect();
                let first = mine.iter().min_by_key(|r| r.idle_connections)?;
                let last = mine.iter().max_by_key(|r| r.idle_connections)?;
                let (a, b) = (first.p50_us? as f64, last.p50_us? as f64);
                (b >= GREW * a && last.idle_connections > first.idle_connections).then(|| {
                    format!(
                        "{} from {} to {} ({:.0}x) at {} idle",
                        m,
                        micros(a as u64),
                        micros(b as u64),
                        b / a.max(1.0),
                        thousands(last.idle_connections.unwrap_or(0))
                    )
                })
            })
            .collect();
        if rows.is_empty() {
            return Vec::new();
        }
        vec![if grew.is_empty() {
            "C10K: no model's active client slowed by 2x or more as idle connections were added (one run)."
                .into()
        } else {
            format!(
                "C10K: one active client's p50 grew with the idle connections held for {} (one run; growth under 2x not counted).",
                grew.join("; ")
            )
        }]
    }

    fn story(&self, rows: &[&Row]) -> Option<String> {
        let at: Vec<String> = rows
            .iter()
            .filter(|r| r.ok())
            .filter_map(|r| {
                Some(format!(
                    "{} at {}",
                    micros(r.p50_us?),
                    thousands(r.idle_connections?)
                ))
            })
            .collect();
        (!at.is_empty()).then(|| {
            format!(
                "its active client's p50 among idle connections: {}",
                at.join(", ")
            )
        })
    }
}
