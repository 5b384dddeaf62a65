//! `idle`: many idle connections held open: how many the model accepted,
//! its memory (PSS) per accepted connection, and the latency of one active
//! client meanwhile.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::measured::{hold, port_of, settle_accepted, start};
use super::{Knobs, Scenario, Subject};
use crate::lab::export::format::{bytes, count, micros, or_dash, server, thousands, tick_bytes};
use crate::lab::export::section::{Axis, Bar, Bars, Block, Chart, Section, Table};
use crate::lab::probe::{self, SyscallMethod};
use crate::lab::Row;
use crate::service::ServiceKind;

pub struct Idle;

/// How long the active client runs.
const ACTIVE_FOR: Duration = Duration::from_secs(1);

/// idle's own figures: server memory per idle connection held, PSS and RSS
/// growth; only when the model accepted every one of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pss_per_conn_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rss_per_conn_bytes: Option<u64>,
}

/// PSS per accepted connection, or why there is none.
fn memory_per_connection(row: &Row) -> String {
    match (row.figures::<Figures>().pss_per_conn_bytes, row.backlog) {
        (Some(b), _) => format!("{} per connection", bytes(b)),
        (None, Some(waiting)) if waiting > 0 => {
            format!("not accepted: {} waiting in the backlog", thousands(waiting))
        }
        _ => "-".into(),
    }
}

impl Scenario for Idle {
    fn name(&self) -> &'static str {
        "idle"
    }

    /// Memory per connection differs between models by multiples, not by
    /// percent: one run, and the section says what it cannot tell.
    fn default_runs(&self) -> usize {
        1
    }

    fn service(&self) -> ServiceKind {
        ServiceKind::Echo
    }

    fn parameters(&self, knobs: &Knobs) -> serde_json::Value {
        serde_json::json!({
            "idle_connections": knobs.idle_connections,
            "active_clients": 1,
            "active_duration_ms": ACTIVE_FOR.as_millis() as u64,
        })
    }

    fn measure(&self, subject: Subject, knobs: &Knobs, _: Option<SyscallMethod>) -> anyhow::Result<Vec<Row>> {
        let mut row = subject.row(self.name());
        let mut server = start(subject, self.service(), &[])?;
        let mut held = Vec::new();
        hold(&server.process.addr, knobs.idle_connections, &mut held)?;
        let port = port_of(&server.process.addr)?;
        // Event loops accept in a burst; give them the moment it takes.
        let accepted = settle_accepted(port, held.len() as u64, Duration::from_millis(500));
        // One active client meanwhile.
        let options = server.active_client(ACTIVE_FOR)?;
        let report = server.drive(&options)?;
        let accepted = accepted.max(probe::accepted_connections(port).min(held.len() as u64));
        server.record(&mut row, &report, None);
        let loaded = server.costs_now;
        drop(held);
        server.process.stop();
        let n = knobs.idle_connections as u64;
        row.idle_connections = Some(n);
        row.accepted = Some(accepted);
        row.backlog = Some(n - accepted);
        // Memory per connection only for connections the model took in: the
        // others cost the kernel's backlog, not the model.
        if accepted >= n && n > 0 {
            let grown_pss = loaded.pss_kb.saturating_sub(server.costs_start.pss_kb) * 1024;
            let grown_rss = server.peak_rss_kb().saturating_sub(server.sample_before.rss_kb) * 1024;
            row.set_figures(&Figures {
                pss_per_conn_bytes: Some(grown_pss / n),
                rss_per_conn_bytes: Some(grown_rss / n),
            });
        }
        Ok(vec![row])
    }

    fn headline(&self, row: &Row) -> String {
        format!(
            "{}, active client p50 {}",
            memory_per_connection(row),
            or_dash(row.p50_us, micros)
        )
    }

    fn section(&self, rows: &[&Row]) -> Section {
        let ok: Vec<&Row> = rows.iter().copied().filter(|r| r.ok()).collect();
        let bars = ok
            .iter()
            .filter_map(|r| {
                let b = r.figures::<Figures>().pss_per_conn_bytes?;
                Some(Bar::new(r.model.as_str(), b.max(1) as f64, bytes(b)).of(r))
            })
            .collect();
        let waiting: Vec<String> = ok
            .iter()
            .filter(|r| r.figures::<Figures>().pss_per_conn_bytes.is_none())
            .map(|r| format!("{}: {}", r.model, memory_per_connection(r)))
            .collect();
        let mut caveat = String::from(
            "One run: differences smaller than about 2x are not told apart. A model that did not accept \
             every connection has no bar: its connections wait in the kernel's backlog and cost it nothing.",
        );
        if !waiting.is_empty() {
            caveat += &format!(" Without a bar: {}.", waiting.join("; "));
        }
        let chart = Bars::new(
            Axis::log("bytes per idle connection (log scale)", tick_bytes),
            "PSS per idle connection",
            bars,
        )
        .caveat(caveat);
        let mut table = Table::new(&[
            "model",
            "idle connections",
            "accepted",
            "memory/connection (PSS)",
            "active p50",
            "active p99",
            "PSS",
        ]);
        table.push_rows(rows, server, |r| {
            vec![
                count(r.idle_connections),
                count(r.accepted),
                match (r.figures::<Figures>().pss_per_conn_bytes, r.backlog) {
                    (Some(b), _) => bytes(b),
                    (None, Some(w)) if w > 0 => {
                        format!("not accepted: {} waiting in the backlog", thousands(w))
                    }
                    _ => "-".into(),
                },
                r.p50_us.map_or("starved".into(), micros),
                r.p99_us.map_or("starved".into(), micros),
                or_dash(r.pss_kb, |k| bytes(k * 1024)),
            ]
        });
        Section {
            name: self.name(),
            title: "Idle connections: what holding them costs",
            lesson: "An idle connection costs an event loop a few hundred bytes of state; a thread or a \
                     process per connection pays a stack and a kernel task for it, and a pool that is full \
                     leaves the rest waiting in the kernel's backlog."
                .into(),
            blocks: vec![
                Block::Chart(Chart::Bars(chart)),
                Block::Text(
                    "Why: memory is PSS (shared pages divided among the processes that share them), grown \
                     from the server's start to under the load. A thread's stack is reserved in full but \
                     only touched pages count; a forked child shares its parent's pages until it writes them."
                        .into(),
                ),
                Block::Table(table),
            ],
        }
    }

    fn findings(&self, rows: &[&Row]) -> Vec<String> {
        let per: Vec<(&Row, u64)> = rows
            .iter()
            .filter(|r| r.ok())
            .filter_map(|r| Some((*r, r.figures::<Figures>().pss_per_conn_bytes?)))
            .collect();
        let (Some(low), Some(high)) = (per.iter().min_by_key(|p| p.1), per.iter().max_by_key(|p| p.1)) else {
            return Vec::new();
        };
        // PSS grows by whole pages: a server whose state fits in the pages
        // it already had shows no growth, which is no ratio.
        if low.1 == 0 {
            return vec![format!(
                "An idle connection cost {} {} of memory (PSS); {}'s memory did not grow measurably with {} of them held.",
                high.0.model,
                bytes(high.1),
                low.0.model,
                thousands(low.0.idle_connections.unwrap_or(0))
            )];
        }
        let times = high.1 as f64 / low.1 as f64;
        if times < 2.0 {
            return vec![format!(
                "Idle connections cost every model that accepted them within 2x of the others ({} to {}): one run cannot rank them.",
                bytes(low.1),
                bytes(high.1)
            )];
        }
        vec![format!(
            "An idle connection cost {} {} of memory (PSS) and {} {}: {:.0} times as much.",
            high.0.model,
            bytes(high.1),
            low.0.model,
            bytes(low.1),
            times
        )]
    }

    fn story(&self, rows: &[&Row]) -> Option<String> {
        let r = rows.first().filter(|r| r.ok())?;
        let n = thousands(r.idle_connections.unwrap_or(0));
        let mut s = match r.figures::<Figures>().pss_per_conn_bytes {
            Some(b) => format!("holding {n} idle connections cost it {} each (PSS)", bytes(b)),
            None => format!(
                "of {n} idle connections it accepted {} ({})",
                thousands(r.accepted.unwrap_or(0)),
                memory_per_connection(r)
            ),
        };
        s += &match r.p50_us {
            Some(p) => format!(
                ", and one active client meanwhile was answered in {} (p50)",
                micros(p)
            ),
            None => ", and one active client meanwhile got no reply at all: the idle connections held every \
                   place the model has"
                .to_string(),
        };
        Some(s)
    }
}
