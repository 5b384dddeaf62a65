//! The lab's three scenarios (DESIGN section 7), each against a fresh
//! server so that its CPU and memory are the scenario's own.
//!
//! - `delay`: the seeds' experiment. N clients at once, one request each, to
//!   `hello` with a delay: the time until the last reply, next to theory.
//! - `throughput`: echo, many connections, fixed-size messages, a few
//!   seconds: requests/s, latency, server CPU per request, peak memory.
//! - `idle`: many idle connections held open: server memory per connection,
//!   and the latency of one active client meanwhile.

use std::fmt;
use std::net::TcpStream;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;

use super::probe::Sample;
use super::{Row, ServerProcess};
use crate::client::bench::{self, BenchOptions, BenchReport, Load, Payload};
use crate::model::ModelKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Delay,
    Throughput,
    Idle,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::Delay, Scenario::Throughput, Scenario::Idle];
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::Delay => "delay",
            Scenario::Throughput => "throughput",
            Scenario::Idle => "idle",
        })
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "delay" => Ok(Scenario::Delay),
            "throughput" => Ok(Scenario::Throughput),
            "idle" => Ok(Scenario::Idle),
            _ => Err(format!(
                "unknown scenario '{s}' (expected delay, throughput or idle)"
            )),
        }
    }
}

/// The scenarios' settings (`socklab lab --help` lists the flags).
#[derive(Debug, Clone)]
pub struct Knobs {
    pub delay_clients: usize,
    pub delay: Duration,
    pub clients: usize,
    pub duration: Duration,
    pub size: usize,
    pub idle_connections: usize,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            delay_clients: 5,
            delay: Duration::from_secs(1),
            clients: 50,
            duration: Duration::from_secs(3),
            size: 512,
            idle_connections: 1000,
        }
    }
}

/// How long a starved client waits before it counts as an error: long
/// enough for any model that serves at all, short enough to keep the lab
/// at about two minutes.
const STARVED_AFTER: Duration = Duration::from_secs(2);

pub fn measure(model: ModelKind, scenario: Scenario, knobs: &Knobs) -> anyhow::Result<Row> {
    let mut row = Row {
        model: model.to_string(),
        scenario: scenario.to_string(),
        ..Row::default()
    };
    match scenario {
        Scenario::Delay => delay(model, knobs, &mut row)?,
        Scenario::Throughput => throughput(model, knobs, &mut row)?,
        Scenario::Idle => idle(model, knobs, &mut row)?,
    }
    Ok(row)
}

/// The one place the lab builds bench options.
fn bench_options(
    addr: &str,
    clients: usize,
    load: Load,
    payload: Payload,
    timeout: Duration,
) -> anyhow::Result<BenchOptions> {
    let addr = addr
        .parse()
        .context("the server announced an address the lab cannot parse")?;
    Ok(BenchOptions {
        clients,
        load,
        payload,
        timeout,
        ..BenchOptions::new(addr)
    })
}

fn delay(model: ModelKind, knobs: &Knobs, row: &mut Row) -> anyhow::Result<()> {
    let workers = model.default_workers();
    let theory = model.theory_makespan(knobs.delay_clients, knobs.delay, workers);
    let delay = format!("{}ms", knobs.delay.as_millis());
    let (mut server, before) = start(model, "hello", &["--delay", &delay])?;
    // Generous: a model far from its theory still finishes, and shows it.
    let timeout = theory * 2 + STARVED_AFTER;
    let options = bench_options(
        &server.addr,
        knobs.delay_clients,
        Load::Requests(1),
        Payload::Text(b"hello".to_vec()),
        timeout,
    )?;
    let report = bench::measure(&options)?;
    record(row, &server, before, &report);
    server.stop();
    row.makespan_s = Some(report.elapsed_s);
    row.theory_s = Some(theory.as_secs_f64());
    Ok(())
}

fn throughput(model: ModelKind, knobs: &Knobs, row: &mut Row) -> anyhow::Result<()> {
    let (mut server, before) = start(model, "echo", &[])?;
    let options = bench_options(
        &server.addr,
        knobs.clients,
        Load::Duration(knobs.duration),
        Payload::Size(knobs.size),
        STARVED_AFTER,
    )?;
    let report = bench::measure(&options)?;
    record(row, &server, before, &report);
    server.stop();
    row.throughput_rps = Some(report.throughput_rps);
    if let (Some(cpu), true) = (row.cpu_s, report.replies > 0) {
        row.cpu_per_request_us = Some(cpu * 1e6 / report.replies as f64);
    }
    Ok(())
}

fn idle(model: ModelKind, knobs: &Knobs, row: &mut Row) -> anyhow::Result<()> {
    let (mut server, before) = start(model, "echo", &[])?;
    let target = server.addr.trim_start_matches("tcp:").to_string();
    let mut held = Vec::with_capacity(knobs.idle_connections);
    for _ in 0..knobs.idle_connections {
        // The kernel completes the handshake even for a model that never
        // accepts (it waits in the backlog): that is part of the picture.
        held.push(TcpStream::connect(&target).context("cannot open the idle connections")?);
    }
    // One active client meanwhile; its first reply also tells that every
    // idle connection before it was accepted (accept order is FIFO).
    let options = bench_options(
        &server.addr,
        1,
        Load::Duration(Duration::from_secs(1)),
        Payload::Text(b"are you there?".to_vec()),
        STARVED_AFTER,
    )?;
    let report = bench::measure(&options)?;
    let loaded = server.sample().context("the server died")?;
    record(row, &server, before, &report);
    drop(held);
    server.stop();
    row.idle_connections = Some(knobs.idle_connections as u64);
    let grown = loaded.rss_kb.saturating_sub(before.rss_kb) * 1024;
    row.rss_per_conn_bytes = Some(grown / knobs.idle_connections.max(1) as u64);
    Ok(())
}

/// What every scenario records: latency, counts, CPU, peaks.
fn record(row: &mut Row, server: &ServerProcess, before: Sample, report: &BenchReport) {
    row.replies = Some(report.replies);
    row.errors = Some(report.errors);
    if report.replies > 0 {
        row.p50_us = Some(report.latency_us.p50);
        row.p99_us = Some(report.latency_us.p99);
    }
    if let Some(after) = server.sample() {
        row.cpu_s = Some(after.cpu.saturating_sub(before.cpu).as_secs_f64());
    }
    let peaks = server.peaks();
    row.peak_rss_kb = Some(peaks.rss_kb);
    row.peak_threads = Some(peaks.threads);
    row.peak_children = Some(peaks.children);
}

/// `model` serving `service` (with `extra` flags), and its first sample.
fn start(model: ModelKind, service: &str, extra: &[&str]) -> anyhow::Result<(ServerProcess, Sample)> {
    let args: Vec<String> = ["--model", model.name(), "--service", service]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    let server = ServerProcess::start(&args)?;
    let before = server.sample().context("the server died")?;
    Ok((server, before))
}
