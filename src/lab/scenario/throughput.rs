//! `throughput`: echo, many connections, fixed-size messages, a few
//! seconds: requests/s, how many clients were served and how fairly,
//! latency, and the server's CPU, context switches and system calls per
//! request. On a small machine the load generator may be what limits
//! requests/s; CPU per request still compares the servers.

use std::time::Duration;

use super::compare::{ranked, Figure};
use super::measured::start;
use super::{Knobs, Scenario, Subject};
use crate::client::bench::{Load, LOAD_BUSY_WARNING};
use crate::lab::export::format::{
    bytes, micros, or_dash, per_request, rps_with_range, served, served_label, server, thousands, tick_count,
    tick_micros, tick_plain,
};
use crate::lab::export::section::{Axis, Bar, Bars, Block, Chart, Section, Table};
use crate::lab::probe::SyscallMethod;
use crate::lab::Row;
use crate::service::ServiceKind;

pub struct Throughput;

/// The load again, this long, with the kernel's counters on.
const KERNEL_COST_FOR: Duration = Duration::from_millis(500);

/// Runs whose requests/s spread more than this over their median are odd.
const UNSTEADY: f64 = 0.5;

/// Whether the load generator, not the server, may have set the pace.
pub fn load_bound(row: &Row) -> bool {
    row.load_busy.is_some_and(|b| b >= LOAD_BUSY_WARNING)
}

impl Scenario for Throughput {
    fn name(&self) -> &'static str {
        "throughput"
    }

    fn service(&self) -> ServiceKind {
        ServiceKind::Echo
    }

    fn parameters(&self, knobs: &Knobs) -> serde_json::Value {
        serde_json::json!({
            "clients": knobs.clients,
            "message_bytes": knobs.size,
            "duration_ms": knobs.duration.as_millis() as u64,
            "starved_after_ms": super::measured::STARVED_AFTER.as_millis() as u64,
        })
    }

    /// With `kernel_cost`, context switches and system calls per request are
    /// counted in a short window of their own after the timed run: perf's
    /// system call tracepoint slows every call (by a third for the event
    /// loops here), so it is never attached while the figures that rank
    /// the models are made.
    fn measure(
        &self,
        subject: Subject,
        knobs: &Knobs,
        kernel_cost: Option<SyscallMethod>,
    ) -> anyhow::Result<Vec<Row>> {
        let mut row = subject.row(self.name());
        let mut server = start(subject, self.service(), &[])?;
        server.echo_for(knobs, knobs.size, &mut row)?;
        if let Some(method) = kernel_cost {
            let window = server.echo_load(knobs, knobs.size, Load::Duration(KERNEL_COST_FOR))?;
            server.count_kernel_cost(&window, method, &mut row)?;
        }
        server.process.stop();
        Ok(vec![row])
    }

    fn headline(&self, row: &Row) -> String {
        format!("{}, p99 {}", rps_with_range(row), or_dash(row.p99_us, micros))
    }

    fn section(&self, rows: &[&Row]) -> Section {
        let ok: Vec<&Row> = rows.iter().copied().filter(|r| r.ok()).collect();
        let mut blocks = Vec::new();
        let bars = ok
            .iter()
            .map(|r| {
                let mut text = rps_with_range(r);
                if load_bound(r) {
                    text += ", load-bound";
                }
                Bar::new(r.model.as_str(), r.throughput_rps.unwrap_or(0.0), text).of(r)
            })
            .collect();
        blocks.push(Block::Chart(Chart::Bars(
            Bars::new(Axis::linear("requests per second", tick_count), "requests/s (median of the runs)", bars)
                .caveat("Requests/s marked load-bound is the load generator's pace, not the server's: it was at least 90% busy. The chart does not show latency or cost; those follow."),
        )));
        let latency = ok
            .iter()
            .filter(|r| r.p50_us.is_some())
            .map(|r| {
                Bar {
                    second: r.p99_us.map(|p| p as f64),
                    ..Bar::new(
                        r.model.as_str(),
                        r.p50_us.unwrap_or(0) as f64,
                        format!(
                            "p50 {}, p99 {}",
                            or_dash(r.p50_us, micros),
                            or_dash(r.p99_us, micros)
                        ),
                    )
                }
                .of(r)
            })
            .collect();
        blocks.push(Block::Chart(Chart::Bars(Bars {
            second: Some("p99"),
            ..Bars::new(
                Axis::log("latency of the served requests (log scale)", tick_micros),
                "p50",
                latency,
            )
            .caveat("Latency of the requests that were answered: a starved client's wait is not in it.")
        })));
        let per = |pick: fn(&Row) -> Option<f64>, unit: &'static str| -> Vec<Bar> {
            ok.iter()
                .filter_map(|r| {
                    let c = pick(r)?;
                    Some(Bar::new(r.model.as_str(), c, format!("{}{unit}", per_request(c))).of(r))
                })
                .collect()
        };
        blocks.push(Block::Chart(Chart::Bars(Bars::new(
            Axis::linear("µs of server CPU per request", tick_plain),
            "server CPU per request (user + system, children included)",
            per(|r| r.cpu_per_request_us, " µs"),
        ))));
        blocks.push(Block::Text(
            "Why: what the kernel did for each request, counted from outside the server in a short \
             window of its own. A thread or a process per connection sleeps in read(2) and is woken for \
             every request: a context switch each, and a read, a write and the wait as three system calls. \
             An event loop learns of many ready sockets in one wait and reads and writes each without \
             sleeping; io_uring submits and reaps many operations in one system call."
                .into(),
        ));
        blocks.push(Block::Chart(Chart::Bars(Bars::new(
            Axis::linear("context switches per request", tick_plain),
            "context switches per request (one count)",
            per(|r| r.context_switches_per_request, ""),
        ))));
        blocks.push(Block::Chart(Chart::Bars(Bars::new(
            Axis::linear("system calls per request", tick_plain),
            "system calls per request (one count)",
            per(|r| r.syscalls_per_request, ""),
        ))));
        let mut table = Table::new(&[
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
        ]);
        table.push_rows(rows, server, |r| {
            vec![
                if load_bound(r) {
                    format!("{}, load-bound", rps_with_range(r))
                } else {
                    rps_with_range(r)
                },
                served(r),
                or_dash(r.fairness, |f| format!("{f:.2}")),
                or_dash(r.p50_us, micros),
                or_dash(r.p99_us, micros),
                or_dash(r.cpu_per_request_us, |c| format!("{c:.1} µs")),
                or_dash(r.context_switches_per_request, per_request),
                or_dash(r.syscalls_per_request, per_request),
                or_dash(r.pss_kb, |k| bytes(k * 1024)),
            ]
        });
        blocks.push(Block::Table(table));
        let notes = notes(rows);
        if !notes.is_empty() {
            blocks.push(Block::Notes(notes));
        }
        Section {
            name: self.name(),
            title: "Throughput: echo, many connections at once",
            lesson: lesson(rows),
            blocks,
        }
    }

    fn findings(&self, rows: &[&Row]) -> Vec<String> {
        let mut out = Vec::new();
        let served_all: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.ok() && served_label(r).is_none())
            .collect();
        let cpu = ranked(&served_all, "cpu_per_request_us");
        if let (Some((low, a)), Some((high, b))) = (cpu.first(), cpu.last()) {
            out.push(if a.apart(b) {
                format!(
                    "Under echo load, {} spent {} of server CPU per request and {} {}: {:.1} times as much, \
                     beyond the spread of their runs.",
                    low.model,
                    a.show(" µs"),
                    high.model,
                    b.show(" µs"),
                    b.value / a.value.max(f64::MIN_POSITIVE)
                )
            } else {
                format!(
                    "Under echo load, the servers' CPU per request ({} to {}) is within the spread of their \
                     runs: this run cannot rank them by it.",
                    a.show(" µs"),
                    b.show(" µs")
                )
            });
        }
        let starved: Vec<String> = rows
            .iter()
            .filter_map(|r| Some(format!("{} {}", r.model, served_label(r)?)))
            .collect();
        if !starved.is_empty() {
            out.push(format!(
                "Not every client was served under echo load: {}; their requests/s is the speed of a few clients alone.",
                starved.join(", ")
            ));
        }
        out
    }

    fn story(&self, rows: &[&Row]) -> Option<String> {
        let r = rows.first().filter(|r| r.ok())?;
        let mut s = match served_label(r) {
            Some(label) => format!(
                "under echo load it {label} clients, so its {} is the speed of a few clients alone",
                rps_with_range(r)
            ),
            None => format!("under echo load it answered {}", rps_with_range(r)),
        };
        if load_bound(r) {
            s += " (load-bound: the load generator's pace)";
        }
        if let Some(c) = Figure::of(r, "cpu_per_request_us") {
            s += &format!(" at {} of server CPU each", c.show(" µs"));
        }
        if let (Some(cs), Some(sc)) = (r.context_switches_per_request, r.syscalls_per_request) {
            s += &format!(
                " ({} context switches and {} system calls per request)",
                per_request(cs),
                per_request(sc)
            );
        }
        if let Some(p) = r.p99_us {
            s += &format!(", p99 {}", micros(p));
        }
        Some(s)
    }

    fn anomaly(&self, row: &Row, _peers: &[&Row]) -> Option<String> {
        let rps = Figure::of(row, "throughput_rps")?;
        (rps.relative_spread() > UNSTEADY).then(|| {
            format!(
                "its runs disagree: requests/s from {} to {}",
                thousands(rps.min.round() as u64),
                thousands(rps.max.round() as u64)
            )
        })
    }
}

/// The section's sentence: what separates the models here.
fn lesson(rows: &[&Row]) -> String {
    let bound = rows.iter().filter(|r| r.ok() && load_bound(r)).count();
    let mut s = String::from(
        "With many connections at once, every model that serves them all answers in microseconds; \
         what separates them is what each request costs the server: CPU, context switches, system calls.",
    );
    if bound > 0 {
        s += &format!(
            " On this machine the load generator set the pace for {bound} of them (load-bound): their \
             requests/s are not a ranking."
        );
    }
    s
}

/// Starved clients, and the pairs whose requests/s is within the noise.
fn notes(rows: &[&Row]) -> Vec<String> {
    let mut notes = Vec::new();
    let starved: Vec<String> = rows
        .iter()
        .filter_map(|r| Some(format!("{} {}", r.model, served_label(r)?)))
        .collect();
    if !starved.is_empty() {
        notes.push(format!(
            "Not every client was served: {}. Their requests/s, latency and CPU are those of the served clients only.",
            starved.join(", ")
        ));
    }
    let bound: Vec<String> = rows
        .iter()
        .filter(|r| r.ok() && load_bound(r))
        .filter_map(|r| Some(format!("{} ({:.0}%)", r.model, r.load_busy? * 100.0)))
        .collect();
    if !bound.is_empty() {
        notes.push(format!(
            "The load generator was at least {:.0}% busy driving {}: there requests/s may be its limit \
             rather than the model's (load-bound); CPU per request still compares them, and the cost \
             scenario compares them at fixed rates.",
            LOAD_BUSY_WARNING * 100.0,
            bound.join(", ")
        ));
    }
    // Among the others, neighbours closer than their runs' spread.
    let ranked: Vec<&Row> = {
        let mut v: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.ok() && r.throughput_rps.is_some() && served_label(r).is_none() && !load_bound(r))
            .collect();
        v.sort_by(|a, b| {
            b.throughput_rps
                .unwrap_or(0.0)
                .total_cmp(&a.throughput_rps.unwrap_or(0.0))
        });
        v
    };
    let close: Vec<String> = ranked
        .windows(2)
        .filter(|pair| {
            let (a, b) = (pair[0], pair[1]);
            let difference = a.throughput_rps.unwrap_or(0.0) - b.throughput_rps.unwrap_or(0.0);
            a.spread("throughput_rps").max(b.spread("throughput_rps")) > difference
        })
        .map(|pair| format!("{} and {}", pair[0].model, pair[1].model))
        .collect();
    if !close.is_empty() {
        notes.push(format!(
            "Too close to call on requests/s (apart by less than the spread of their runs): {}.",
            close.join("; ")
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Spread;

    fn row(model: &str, cpu: f64, min: f64, max: f64) -> Row {
        let mut r = Row {
            cpu_per_request_us: Some(cpu),
            runs: Some(3),
            served: Some(50),
            clients: Some(50),
            ..Row::new(model, "throughput")
        };
        r.range.insert("cpu_per_request_us".into(), Spread { min, max });
        r
    }

    #[test]
    fn no_ranking_sentence_where_the_spreads_overlap() {
        let rows = [row("epoll", 3.1, 2.9, 3.4), row("uring", 3.0, 2.8, 3.2)];
        let refs: Vec<&Row> = rows.iter().collect();
        let said = Throughput.findings(&refs).join("\n");
        assert!(said.contains("this run cannot rank them by it"), "{said}");
        assert!(!said.contains("times as much"), "{said}");
        let apart = [row("epoll", 3.1, 3.0, 3.2), row("thread", 9.8, 9.5, 10.1)];
        let refs: Vec<&Row> = apart.iter().collect();
        let said = Throughput.findings(&refs).join("\n");
        assert!(said.contains("epoll spent 3.1 µs (3.0-3.2) of server CPU per request and thread 9.8 µs (9.5-10.1): 3.2 times as much"), "{said}");
    }

    #[test]
    fn runs_that_disagree_are_odd() {
        let mut r = row("poll", 3.0, 3.0, 3.0);
        r.throughput_rps = Some(150_000.0);
        r.range.insert(
            "throughput_rps".into(),
            Spread {
                min: 98_258.0,
                max: 286_475.0,
            },
        );
        let why = Throughput.anomaly(&r, &[]).expect("odd");
        assert!(why.contains("from 98,258 to 286,475"), "{why}");
    }
}
