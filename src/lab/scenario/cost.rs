//! `cost`: every model at fixed offered rates (an open loop: requests sent
//! on a schedule, latency from each request's intended start), the server's
//! CPU per request at each rate, read from its own cgroup v2 `cpu.stat`
//! (or /proc of its process tree where the lab cannot make one), and the
//! rate at which it stopped keeping up. On a small machine the load
//! generator sets a closed loop's requests/s; at a rate every fast model
//! sustains, CPU per request is what ranks them (HttpArena's method).

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::compare::Figure;
use super::measured::{bench_options, model_args, start, Measured, STARVED_AFTER};
use super::{Knobs, Scenario, Subject};
use crate::client::bench::{self, BenchOptions, Load, Payload, LOAD_BUSY_WARNING};
use crate::lab::cgroup::CpuGroup;
use crate::lab::export::format::{micros, or_dash, served, server, thousands, tick_count, tick_plain};
use crate::lab::export::section::{Axis, Block, Chart, Lines, Section, Series, Table};
use crate::lab::probe::{self, SyscallMethod};
use crate::lab::{pin, Row, ServerProcess};
use crate::service::ServiceKind;

pub struct Cost;

/// A rate is kept up when at least this share of the requests it offered
/// was answered, every client served, and no more than the rest failed
/// (the requests still in flight when the run ends time out: at 100,000/s
/// a few hundred of them are the run's edge, not the server's failure).
const KEPT_UP: f64 = 0.97;

/// A server using this share of the CPU it was given is at its limit.
const SATURATED: f64 = 0.95;

/// How a row says the schedule was missed on the sending side.
const LOAD_GENERATOR: &str = "load generator behind";

/// cost's own figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The rate the load offered, requests per second in total.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offered_rps: Option<f64>,
    /// Whether the server kept up with it; if not, why not (the server, or
    /// the load generator that could not send on time).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kept_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub missed: Option<String>,
    /// Where CPU per request came from: `cgroup` (cgroup v2 `cpu.stat` of
    /// the server's own group) or `proc` (/proc schedstat of its tree).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_source: Option<String>,
    /// The server's CPU over the wall time, as a share of the cores it was
    /// given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server_busy: Option<f64>,
    /// How late the load generator's sends left, p99 (bench's send lag):
    /// the part of the latency that is the sender's, not the server's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub send_lag_p99_us: Option<u64>,
}

/// Where the server's CPU is read from.
enum Meter {
    Group,
    Proc,
}

impl Meter {
    fn name(&self) -> &'static str {
        match self {
            Meter::Group => "cgroup",
            Meter::Proc => "proc",
        }
    }

    fn read(&self, server: &Measured) -> Option<Duration> {
        match self {
            Meter::Group => server.process.group_cpu(),
            Meter::Proc => probe::cpu_precise(server.process.pid()),
        }
    }
}

/// `server` serving `service` in a cgroup of its own, or, where the lab cannot
/// make one, as every other scenario starts it, read through /proc.
fn start_metered(server: Subject, service: ServiceKind) -> anyhow::Result<(Measured, Meter)> {
    let group = match CpuGroup::create() {
        Ok(group) => group,
        Err(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "cost: cannot give the servers a cgroup of their own ({e:#}); their CPU is read from /proc of their process trees instead, and each row's cpu_source says so"
                )
            });
            return Ok((start(server, service, &[])?, Meter::Proc));
        }
    };
    let process = match server {
        Subject::Model(model) => ServerProcess::start_grouped(&model_args(model, service, &[]), group)?,
        Subject::Outside(o) => ServerProcess::start_outside(&o.command, Some(group))?,
    };
    Ok((Measured::new(process)?, Meter::Group))
}

impl Scenario for Cost {
    fn name(&self) -> &'static str {
        "cost"
    }

    fn service(&self) -> ServiceKind {
        ServiceKind::Echo
    }

    fn parameters(&self, knobs: &Knobs) -> serde_json::Value {
        serde_json::json!({
            "clients": knobs.clients,
            "message_bytes": knobs.size,
            "offered_rps": knobs.cost_rates,
            "duration_ms": knobs.cost_duration.as_millis() as u64,
            "load": "open loop, latency from each request's intended start",
            "kept_up": format!("{:.0}% of the offered requests answered, every client served, at most {:.0}% failed, server under {:.0}% of its CPU", KEPT_UP * 100.0, (1.0 - KEPT_UP) * 100.0, SATURATED * 100.0),
            "cpu": "cgroup v2 cpu.stat of the server's own group; /proc schedstat of its process tree where no group can be made (each row's cpu_source)",
        })
    }

    /// The ladder, lowest rate first, on one server; it stops at the first
    /// rate the server did not keep up with (the rates above it would only
    /// say so again).
    fn measure(&self, subject: Subject, knobs: &Knobs, _: Option<SyscallMethod>) -> anyhow::Result<Vec<Row>> {
        let (mut server, meter) = start_metered(subject, self.service())?;
        let given = pin::cores().saturating_sub(1).max(1) as f64;
        // Every connection made and served once before the schedule starts.
        let warm_up = bench_options(
            &server.process.addr,
            knobs.clients,
            Load::Duration(Duration::from_millis(300)),
            Payload::Size(knobs.size),
            STARVED_AFTER,
        )?;
        bench::measure(&warm_up).context("the warm-up load failed")?;
        let mut rates = knobs.cost_rates.clone();
        rates.sort_unstable();
        rates.dedup();
        let mut rows = Vec::new();
        for rate in rates {
            let mut row = Row {
                message_bytes: Some(knobs.size as u64),
                ..subject.row(self.name())
            };
            let options = BenchOptions {
                rate: Some(rate as f64),
                ..bench_options(
                    &server.process.addr,
                    knobs.clients,
                    Load::Duration(knobs.cost_duration),
                    Payload::Size(knobs.size),
                    STARVED_AFTER,
                )?
            };
            let before = meter.read(&server).context("the server died")?;
            let report = server.drive(&options)?;
            let after = meter.read(&server).context("the server died")?;
            server.record(&mut row, &report, Some(knobs.cost_duration));
            row.throughput_rps = Some(report.throughput_rps);
            let cpu = after.saturating_sub(before).as_secs_f64();
            row.cpu_s = Some(cpu);
            row.cpu_per_request_us = (report.replies > 0).then(|| cpu * 1e6 / report.replies as f64);
            let busy = cpu / report.elapsed_s.max(f64::MIN_POSITIVE) / given;
            let offered = rate as f64 * report.elapsed_s;
            let failed = report.errors as f64 > (1.0 - KEPT_UP) * offered;
            let short = (report.replies as f64) < KEPT_UP * offered || failed;
            // The schedule missed on the sending side is not the server's: a
            // load generator at its limit, or sends that left late.
            let generator = report.load_busy.is_some_and(|b| b >= LOAD_BUSY_WARNING)
                || bench::send_lag_warning(&report).is_some();
            let missed = match generator {
                true if short && busy < SATURATED => Some(format!(
                    "{LOAD_GENERATOR} ({}% busy, send lag p99 {})",
                    report
                        .load_busy
                        .map_or("?".into(), |b| format!("{:.0}", b * 100.0)),
                    report.send_lag_us.as_ref().map_or("-".into(), |l| micros(l.p99))
                )),
                _ if row.served < row.clients => Some(format!("served {}", served(&row))),
                _ if busy >= SATURATED => Some(format!("server at {:.0}% of its CPU", busy * 100.0)),
                _ if failed => Some(format!("{} requests failed", thousands(report.errors))),
                _ if short => Some(format!(
                    "answered {}/s",
                    thousands(report.throughput_rps.round() as u64)
                )),
                _ => None,
            };
            row.set_figures(&Figures {
                offered_rps: Some(rate as f64),
                kept_up: Some(missed.is_none()),
                missed: missed.clone(),
                cpu_source: Some(meter.name().into()),
                server_busy: Some(busy),
                send_lag_p99_us: report.send_lag_us.as_ref().map(|l| l.p99),
            });
            rows.push(row);
            if missed.is_some() {
                break;
            }
        }
        server.process.stop();
        Ok(rows)
    }

    fn headline(&self, row: &Row) -> String {
        let f: Figures = row.figures();
        format!(
            "{}/s offered: {} CPU/request, p99 {}{}",
            thousands(f.offered_rps.unwrap_or(0.0).round() as u64),
            or_dash(row.cpu_per_request_us, |c| format!("{c:.2} µs")),
            or_dash(row.p99_us, micros),
            f.missed.map_or(String::new(), |m| format!(", not kept up: {m}"))
        )
    }

    fn section(&self, rows: &[&Row]) -> Section {
        let servers = super::servers_of(rows);
        let series = servers
            .iter()
            .map(|name| Series {
                name: name.clone(),
                points: rows
                    .iter()
                    .filter(|r| &r.model == name && kept_up(r))
                    .filter_map(|r| Some((r.figures::<Figures>().offered_rps?, r.cpu_per_request_us?)))
                    .collect(),
                outside: rows.iter().any(|r| &r.model == name && r.outside),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        let sources: Vec<String> = {
            let mut s: Vec<String> = rows
                .iter()
                .filter_map(|r| r.figures::<Figures>().cpu_source)
                .collect();
            s.sort();
            s.dedup();
            s
        };
        let chart = Lines {
            x: Axis::linear("offered requests per second", tick_count),
            y: Axis::linear("µs of server CPU per request", tick_plain),
            series,
            caveat: Some(format!(
                "Only the rates each server kept up with are drawn; the table gives the rest and why. CPU read from {}.",
                if sources == ["cgroup"] {
                    "each server's own cgroup (cgroup v2 cpu.stat)".to_string()
                } else if sources == ["proc"] {
                    "/proc of each server's process tree: this machine gave the lab no cgroup".to_string()
                } else {
                    format!("{} (per row)", sources.join(" and "))
                }
            )),
        };
        let mut table = Table::new(&[
            "model",
            "offered",
            "answered",
            "CPU/request (min-max)",
            "p50",
            "p99",
            "send lag p99",
            "server busy",
            "kept up",
        ]);
        table.push_rows(rows, server, |r| {
            let f: Figures = r.figures();
            vec![
                format!("{}/s", thousands(f.offered_rps.unwrap_or(0.0).round() as u64)),
                or_dash(r.throughput_rps, |t| format!("{}/s", thousands(t.round() as u64))),
                Figure::of(r, "cpu_per_request_us").map_or("-".into(), |c| c.show(" µs")),
                or_dash(r.p50_us, micros),
                or_dash(r.p99_us, micros),
                or_dash(f.send_lag_p99_us, micros),
                or_dash(f.server_busy, |b| format!("{:.0}%", b * 100.0)),
                match f.missed {
                    None => "yes".into(),
                    Some(why) => format!("no: {why}"),
                },
            ]
        });
        let mut blocks = vec![Block::Chart(Chart::Lines(chart))];
        blocks.push(Block::Text(
            "Why: at a fixed rate the load generator does the same work for every server, so what differs is \
             the server's own CPU for each request: how many system calls it makes, how often it sleeps and is \
             woken, what it copies. A server that sleeps in read(2) for every request pays a wake-up each time; \
             an event loop at a higher rate finds more sockets ready per wait and pays less per request."
                .into(),
        ));
        let mut notes = ranking(rows);
        if rows.iter().any(|r| {
            r.figures::<Figures>()
                .missed
                .is_some_and(|m| m.starts_with(LOAD_GENERATOR))
        }) {
            notes.push(format!(
                "\"{LOAD_GENERATOR}\": the load generator was at its limit (90% busy) or its sends left late (send lag p99 over a tenth of the latency p99) when the schedule was missed: a limit of this machine, not of the server."
            ));
        }
        blocks.push(Block::Notes(notes));
        blocks.push(Block::Table(table));
        Section {
            name: self.name(),
            title: "Cost: the server's CPU per request at fixed rates",
            lesson:
                "At a rate every fast model sustains, the load generator does the same work for each, and \
                     the CPU each request costs the server is what ranks them."
                    .into(),
            blocks,
        }
    }

    fn findings(&self, rows: &[&Row]) -> Vec<String> {
        ranking(rows).into_iter().take(1).collect()
    }

    fn story(&self, rows: &[&Row]) -> Option<String> {
        let kept: Vec<&&Row> = rows.iter().filter(|r| kept_up(r)).collect();
        let top = kept.last();
        let missed = rows
            .iter()
            .find_map(|r| r.figures::<Figures>().missed.map(|m| (r, m)));
        let mut s = match top {
            Some(r) => format!(
                "it kept up with up to {}/s offered, at {} of CPU per request",
                thousands(r.figures::<Figures>().offered_rps.unwrap_or(0.0).round() as u64),
                Figure::of(r, "cpu_per_request_us").map_or("-".into(), |c| c.show(" µs"))
            ),
            None => "it kept up with none of the offered rates".to_string(),
        };
        if let Some((r, why)) = missed {
            s += &format!(
                "; at {}/s: {why}",
                thousands(r.figures::<Figures>().offered_rps.unwrap_or(0.0).round() as u64)
            );
        }
        Some(s)
    }

    fn anomaly(&self, row: &Row, _peers: &[&Row]) -> Option<String> {
        let c = Figure::of(row, "cpu_per_request_us")?;
        (kept_up(row) && c.relative_spread() > 0.5)
            .then(|| format!("its runs disagree: CPU per request {}", c.show(" µs")))
    }
}

fn kept_up(row: &Row) -> bool {
    row.ok() && row.figures::<Figures>().kept_up == Some(true)
}

/// The ranking: CPU per request at the highest rate that at least half of
/// the servers that kept up with any rate kept up with; the servers ranked
/// are those that kept up with it, and the others are named with the
/// highest rate they kept up with (one slow server does not pull every
/// comparison down to the lowest rate, where each request's cost is mostly
/// a wake-up). A server that kept up with no rate is not ranked, and is said
/// to have sustained what it did. Neighbours whose runs overlap are "too
/// close to call".
fn ranking(rows: &[&Row]) -> Vec<String> {
    let servers = super::servers_of(rows);
    let rate_of = |r: &Row| r.figures::<Figures>().offered_rps.unwrap_or(0.0);
    let sustained = |name: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.model == name && kept_up(r))
            .map(|r| rate_of(r))
            .collect()
    };
    let (candidates, unranked): (Vec<&String>, Vec<&String>) =
        servers.iter().partition(|name| !sustained(name).is_empty());
    let mut rates: Vec<f64> = candidates.iter().flat_map(|name| sustained(name)).collect();
    rates.sort_by(|a, b| b.total_cmp(a));
    rates.dedup();
    let enough = candidates.len().div_ceil(2).max(1);
    let common = rates.into_iter().find(|rate| {
        candidates
            .iter()
            .filter(|name| sustained(name).contains(rate))
            .count()
            >= enough
    });
    let (ranked, below): (Vec<&String>, Vec<&String>) = match common {
        Some(rate) => candidates
            .iter()
            .partition(|name| sustained(name).contains(&rate)),
        None => (Vec::new(), candidates.clone()),
    };
    let mut out = Vec::new();
    if let Some(rate) = common {
        let mut at: Vec<(&str, Figure)> = ranked
            .iter()
            .filter_map(|name| {
                let r = rows.iter().find(|r| &r.model == *name && rate_of(r) == rate)?;
                Some((name.as_str(), Figure::of(r, "cpu_per_request_us")?))
            })
            .collect();
        at.sort_by(|a, b| a.1.value.total_cmp(&b.1.value));
        let order: Vec<String> = at.iter().map(|(n, f)| format!("{n} {}", f.show(" µs"))).collect();
        let close: Vec<String> = at
            .windows(2)
            .filter(|w| !w[0].1.apart(&w[1].1))
            .map(|w| format!("{} and {}", w[0].0, w[1].0))
            .collect();
        let mut s = format!(
            "Cost: at {}/s, the highest rate most servers kept up with, CPU per request, cheapest first: {}.",
            thousands(rate.round() as u64),
            order.join(", ")
        );
        if !close.is_empty() {
            s += &format!(
                " Too close to call (their runs overlap, or one run only): {}.",
                close.join("; ")
            );
        }
        out.push(s);
    }
    for name in below {
        let top = sustained(name).into_iter().fold(0.0, f64::max);
        let next = rows
            .iter()
            .filter(|r| &r.model == name && !kept_up(r))
            .find_map(|r| Some((rate_of(r), r.figures::<Figures>().missed?)));
        out.push(format!(
            "{name} kept up only to {}/s, so it is not in this ranking{}.",
            thousands(top.round() as u64),
            next.map_or(String::new(), |(rate, why)| format!(
                " (at {}/s: {why})",
                thousands(rate.round() as u64)
            ))
        ));
    }
    for name in unranked {
        let first = rows.iter().find(|r| &r.model == name);
        let why = first
            .and_then(|r| r.error.clone().or_else(|| r.figures::<Figures>().missed))
            .unwrap_or_default();
        out.push(format!(
            "{name} kept up with none of the offered rates, so it is not ranked ({}/s: {why}).",
            thousands(first.map_or(0.0, |r| rate_of(r)).round() as u64)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Spread;

    fn row(model: &str, rate: f64, cpu: f64, spread: f64, kept: bool) -> Row {
        let mut r = Row {
            cpu_per_request_us: Some(cpu),
            runs: Some(3),
            ..Row::new(model, "cost")
        };
        r.range.insert(
            "cpu_per_request_us".into(),
            Spread {
                min: cpu - spread,
                max: cpu + spread,
            },
        );
        r.set_figures(&Figures {
            offered_rps: Some(rate),
            kept_up: Some(kept),
            missed: (!kept).then(|| "served 3 of 50".into()),
            cpu_source: Some("cgroup".into()),
            server_busy: Some(0.5),
            send_lag_p99_us: Some(20),
        });
        r
    }

    #[test]
    fn ranked_at_the_highest_rate_most_sustained_and_close_ones_not_ordered() {
        let rows = [
            row("epoll", 10_000.0, 4.0, 0.1, true),
            row("epoll", 60_000.0, 3.1, 0.05, true),
            row("uring", 10_000.0, 3.9, 0.1, true),
            row("uring", 60_000.0, 2.9, 0.05, true),
            row("async", 10_000.0, 4.2, 0.1, true),
            row("async", 60_000.0, 3.12, 0.05, true),
            row("thread", 10_000.0, 9.0, 0.2, true),
            row("thread", 60_000.0, 9.0, 0.2, false),
            row("iterative", 10_000.0, 30.0, 1.0, false),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let said = ranking(&refs).join("\n");
        // thread, alone in missing 60,000/s, does not pull the ranking
        // down to 10,000/s: it is named with what it sustained.
        assert!(
            said.contains("at 60,000/s, the highest rate most servers kept up with"),
            "{said}"
        );
        assert!(said.contains("cheapest first: uring 2.9 µs"), "{said}");
        assert!(
            said.contains("epoll and async"),
            "overlapping runs are too close to call: {said}"
        );
        assert!(
            !said.contains("uring and epoll"),
            "uring is apart from epoll: {said}"
        );
        assert!(
            said.contains(
                "thread kept up only to 10,000/s, so it is not in this ranking (at 60,000/s: served 3 of 50)"
            ),
            "{said}"
        );
        assert!(
            said.contains("iterative kept up with none of the offered rates, so it is not ranked"),
            "{said}"
        );
        // With only thread beside epoll, half is one: the higher rate, epoll alone.
        let two: Vec<&Row> = refs
            .iter()
            .copied()
            .filter(|r| r.model == "thread" || r.model == "epoll")
            .collect();
        let said = ranking(&two).join("\n");
        assert!(
            said.contains("at 60,000/s") && said.contains("cheapest first: epoll 3.1 µs"),
            "{said}"
        );
    }
}
