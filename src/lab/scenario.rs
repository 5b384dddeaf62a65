//! The lab's scenarios (DESIGN section 7), each against a fresh server so
//! that its CPU and memory are the scenario's own.
//!
//! - `delay`: the seeds' experiment. N clients at once, one request each, to
//!   `hello` with a delay: the time until the last reply, next to theory,
//!   and each client's lane from connect to reply.
//! - `throughput`: echo, many connections, fixed-size messages, a few
//!   seconds: requests/s, how many clients were served and how fairly,
//!   latency, and the server's CPU, context switches and system calls per
//!   request.
//! - `idle`: many idle connections held open: how many the model accepted,
//!   its memory (PSS) per accepted connection, and the latency of one active
//!   client meanwhile.
//! - `c10k`: the readiness and completion models holding 0, 1,000, 5,000,
//!   10,000 idle connections: one active client's latency at each.
//! - `unp`: Stevens' experiment (UNP vol. 1, chapter 30) on the designs of
//!   his table: C clients at once, each L rounds of connect, `4000\n`, read
//!   4000 bytes, close, against `bytes`: the server's CPU per connection
//!   (and over the iterative server's, as the book gives it), connections
//!   per second, and how the workers shared the accepts.
//! - `work`: echo with `--work 200us` of CPU per request, many connections:
//!   requests/s, p99 and the cores the server kept busy, for the event
//!   loops and the designs that spread a loop's work over threads
//!   (reactors, half-async, leader); the server may use every core.
//! - `uring-ladder`: echo under uring with each io_uring technique added in
//!   turn (`UringFeatures::ladder`), at 64 B, 512 B and 16 KiB, next to
//!   epoll: what each step gained or lost on this kernel. Not in the
//!   default set (it is 24 runs); ask for it with `--scenarios uring-ladder`.

use std::fmt;
use std::net::TcpStream;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::probe::{self, Costs, PerfCounter, Sample, SyscallMethod};
use super::{Row, ServerProcess};
use crate::client::bench::{self, BenchOptions, BenchReport, Expect, Load, Payload};
use crate::model::uring_features::UringFeatures;
use crate::model::ModelKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Delay,
    Throughput,
    Idle,
    C10k,
    Unp,
    Work,
    UringLadder,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Delay,
        Scenario::Throughput,
        Scenario::Idle,
        Scenario::C10k,
        Scenario::Unp,
        Scenario::Work,
    ];

    /// The models a scenario is about; others have no row for it.
    pub fn applies_to(self, model: ModelKind) -> bool {
        match self {
            Scenario::C10k => C10K_MODELS.contains(&model),
            // The designs of the book's table, whichever exist.
            Scenario::Unp => model.unp_row().is_some(),
            Scenario::Work => work_models().any(|m| *m == model),
            Scenario::UringLadder => model == ModelKind::Uring,
            _ => true,
        }
    }
}

/// The readiness and completion models: the ones the C10K curve is about.
const C10K_MODELS: [ModelKind; 6] = [
    ModelKind::Select,
    ModelKind::Poll,
    ModelKind::Busy,
    ModelKind::Epoll,
    ModelKind::Async,
    ModelKind::Uring,
];

/// The designs built on an event loop that spread its work over threads;
/// with the C10K models, the ones the `work` scenario is about (where CPU
/// spent per request is a question: a thread or process per connection
/// spreads it by construction).
const LOOP_DESIGNS: [ModelKind; 3] = [ModelKind::Reactors, ModelKind::HalfAsync, ModelKind::Leader];

fn work_models() -> impl Iterator<Item = &'static ModelKind> {
    C10K_MODELS.iter().chain(&LOOP_DESIGNS)
}

/// work: CPU per request.
pub const WORK_PER_REQUEST: Duration = Duration::from_micros(200);

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::Delay => "delay",
            Scenario::Throughput => "throughput",
            Scenario::Idle => "idle",
            Scenario::C10k => "c10k",
            Scenario::Unp => "unp",
            Scenario::Work => "work",
            Scenario::UringLadder => "uring-ladder",
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
            "c10k" => Ok(Scenario::C10k),
            "unp" => Ok(Scenario::Unp),
            "work" => Ok(Scenario::Work),
            "uring-ladder" => Ok(Scenario::UringLadder),
            _ => Err(format!(
                "unknown scenario '{s}' (expected delay, throughput, idle, c10k, unp, work or uring-ladder)"
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
    /// c10k: the idle connections held at each step.
    pub c10k_levels: Vec<usize>,
    /// `--runs N` for every scenario; `None`: throughput 3, the others 1.
    pub runs: Option<usize>,
    /// unp: clients at once, and rounds (connections) each.
    pub unp_clients: usize,
    pub unp_rounds: usize,
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
            c10k_levels: vec![0, 1000, 5000, 10_000],
            runs: None,
            unp_clients: 5,
            unp_rounds: 500,
        }
    }
}

impl Knobs {
    /// How many times a scenario is run: its figures are the median.
    pub fn runs_for(&self, scenario: Scenario) -> usize {
        self.runs.unwrap_or(match scenario {
            Scenario::Throughput => 3,
            _ => 1,
        })
    }

    /// Every parameter, for the report's `meta`.
    pub fn describe(&self, scenarios: &[Scenario]) -> serde_json::Value {
        let mut all = serde_json::Map::new();
        for &s in scenarios {
            let mut p = match s {
                Scenario::Delay => serde_json::json!({
                    "service": "hello",
                    "clients": self.delay_clients,
                    "requests_per_client": 1,
                    "delay_ms": self.delay.as_millis() as u64,
                }),
                Scenario::Throughput => serde_json::json!({
                    "service": "echo",
                    "clients": self.clients,
                    "message_bytes": self.size,
                    "duration_ms": self.duration.as_millis() as u64,
                    "starved_after_ms": STARVED_AFTER.as_millis() as u64,
                }),
                Scenario::Idle => serde_json::json!({
                    "service": "echo",
                    "idle_connections": self.idle_connections,
                    "active_clients": 1,
                    "active_duration_ms": ACTIVE_FOR.as_millis() as u64,
                }),
                Scenario::C10k => serde_json::json!({
                    "service": "echo",
                    "idle_connections": self.c10k_levels,
                    "active_clients": 1,
                    "active_duration_ms": C10K_ACTIVE_FOR.as_millis() as u64,
                    "models": C10K_MODELS.iter().map(|m| m.name()).collect::<Vec<_>>(),
                }),
                Scenario::Unp => serde_json::json!({
                    "service": "bytes",
                    "clients": self.unp_clients,
                    "rounds_per_client": self.unp_rounds,
                    "request": "4000\\n",
                    "reply_bytes": UNP_REPLY,
                    "cpu": "wait4 rusage of the server at exit (its reaped children included) minus /proc schedstat before the load",
                }),
                Scenario::Work => serde_json::json!({
                    "service": "echo",
                    "work_us": WORK_PER_REQUEST.as_micros() as u64,
                    "clients": self.clients,
                    "message_bytes": self.size,
                    "duration_ms": self.duration.as_millis() as u64,
                    "pinning": "none: the server may use every core",
                    "models": work_models().map(|m| m.name()).collect::<Vec<_>>(),
                }),
                Scenario::UringLadder => serde_json::json!({
                    "service": "echo",
                    "clients": self.clients,
                    "message_bytes": LADDER_SIZES,
                    "duration_ms": self.duration.as_millis() as u64,
                    "steps": UringFeatures::ladder().iter().map(|(_, f)| f.to_string()).collect::<Vec<_>>(),
                    "baseline": "epoll",
                }),
            };
            p["runs"] = self.runs_for(s).into();
            all.insert(s.to_string(), p);
        }
        serde_json::Value::Object(all)
    }
}

/// How long a starved client waits before it counts as an error: long
/// enough for any model that serves at all, short enough to keep the lab
/// at about three minutes.
const STARVED_AFTER: Duration = Duration::from_secs(2);

/// How long the active client of `idle` and of each `c10k` step runs.
const ACTIVE_FOR: Duration = Duration::from_secs(1);
const C10K_ACTIVE_FOR: Duration = Duration::from_millis(500);

/// The throughput load again, this long, with the kernel's counters on.
const KERNEL_COST_FOR: Duration = Duration::from_millis(500);

/// One run of `scenario` on `model`: its rows (c10k has one per step; a
/// scenario that does not apply to the model has none). With `kernel_cost`,
/// throughput also counts context switches and system calls per request,
/// in a short window of its own after the timed run: perf's system call
/// tracepoint slows every call (by a third for the event loops here), so
/// it is never attached while the figures that rank the models are made.
pub fn measure(
    model: ModelKind,
    scenario: Scenario,
    knobs: &Knobs,
    kernel_cost: Option<SyscallMethod>,
) -> anyhow::Result<Vec<Row>> {
    let mut row = Row {
        model: model.to_string(),
        scenario: scenario.to_string(),
        ..Row::default()
    };
    match scenario {
        Scenario::Delay => delay(model, knobs, &mut row)?,
        Scenario::Throughput => throughput(model, knobs, kernel_cost, &mut row)?,
        Scenario::Idle => idle(model, knobs, &mut row)?,
        Scenario::C10k => return c10k(model, knobs),
        Scenario::Unp => unp(model, knobs, &mut row)?,
        Scenario::Work => return work(model, knobs),
        Scenario::UringLadder => return uring_ladder(model, knobs),
    }
    Ok(vec![row])
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
    let mut server = start(model, "hello", &["--delay", &delay])?;
    // Generous: a model far from its theory still finishes, and shows it.
    let timeout = theory * 2 + STARVED_AFTER;
    let options = bench_options(
        &server.process.addr,
        knobs.delay_clients,
        Load::Requests(1),
        Payload::Text(b"hello".to_vec()),
        timeout,
    )?;
    let report = server.drive(&options)?;
    server.record(row, &report, None);
    server.process.stop();
    row.makespan_s = Some(report.elapsed_s);
    row.theory_s = Some(theory.as_secs_f64());
    row.lanes = Some(report.per_client.iter().map(|c| c.lane).collect());
    Ok(())
}

fn throughput(
    model: ModelKind,
    knobs: &Knobs,
    kernel_cost: Option<SyscallMethod>,
    row: &mut Row,
) -> anyhow::Result<()> {
    let mut server = start(model, "echo", &[])?;
    server.echo_for(knobs, knobs.size, row)?;
    if let Some(method) = kernel_cost {
        let window = server.echo_load(knobs, knobs.size, Load::Duration(KERNEL_COST_FOR))?;
        server.count_kernel_cost(&window, method, row)?;
    }
    server.process.stop();
    Ok(())
}

fn idle(model: ModelKind, knobs: &Knobs, row: &mut Row) -> anyhow::Result<()> {
    let mut server = start(model, "echo", &[])?;
    let mut held = Vec::new();
    hold(&server.process.addr, knobs.idle_connections, &mut held)?;
    let port = port_of(&server.process.addr)?;
    // Event loops accept in a burst; give them the moment it takes.
    let accepted = settle_accepted(port, held.len() as u64, Duration::from_millis(500));
    // One active client meanwhile.
    let options = server.active_client(ACTIVE_FOR)?;
    let report = server.drive(&options)?;
    let accepted = accepted.max(probe::accepted_connections(port).min(held.len() as u64));
    server.record(row, &report, None);
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
        row.pss_per_conn_bytes = Some(grown_pss / n);
        let grown_rss = server.peak_rss_kb().saturating_sub(server.sample_before.rss_kb) * 1024;
        row.rss_per_conn_bytes = Some(grown_rss / n);
    }
    Ok(())
}

fn c10k(model: ModelKind, knobs: &Knobs) -> anyhow::Result<Vec<Row>> {
    if !Scenario::C10k.applies_to(model) {
        return Ok(Vec::new());
    }
    let mut server = start(model, "echo", &[])?;
    let port = port_of(&server.process.addr)?;
    let mut held = Vec::new();
    let mut rows = Vec::new();
    let mut levels = knobs.c10k_levels.clone();
    levels.sort_unstable();
    levels.dedup();
    for level in levels {
        let mut row = Row {
            model: model.to_string(),
            scenario: "c10k".into(),
            idle_connections: Some(level as u64),
            ..Row::default()
        };
        // The listener, the active client's connection and a few of the
        // server's own descriptors sit below the idle ones.
        if model == ModelKind::Select && level + 16 >= libc::FD_SETSIZE {
            row.error = Some(format!(
                "select(2) watches descriptors below FD_SETSIZE ({}) only",
                libc::FD_SETSIZE
            ));
            rows.push(row);
            continue;
        }
        if let Err(e) = hold(&server.process.addr, level, &mut held) {
            {
                row.error = Some(format!("{e:#}"));
                rows.push(row);
                break;
            }
        }
        let accepted = settle_accepted(port, level as u64, Duration::from_secs(5));
        let options = server.active_client(C10K_ACTIVE_FOR)?;
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

/// unp: the bytes each of Stevens' clients asks for.
const UNP_REPLY: usize = 4000;

fn unp(model: ModelKind, knobs: &Knobs, row: &mut Row) -> anyhow::Result<()> {
    let mut server = start(model, "bytes", &[])?;
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
    server.record(row, &report, None);
    // As the book measures it: the server's CPU, children included, read
    // when it is stopped (getrusage there, wait4's rusage here).
    server.process.stop();
    let connections = report.replies;
    row.unp_row = model.unp_row().map(u64::from);
    row.connections = Some(connections);
    if report.elapsed_s > 0.0 {
        row.connections_per_s = Some(connections as f64 / report.elapsed_s);
    }
    if let Some(total) = server.process.exit_cpu() {
        let cpu = total.saturating_sub(before).as_secs_f64();
        row.cpu_s = Some(cpu);
        row.cpu_per_request_us = None;
        if connections > 0 {
            row.cpu_per_conn_us = Some(cpu * 1e6 / connections as f64);
        }
    }
    row.accepts_per_worker = server.process.accepts_per_worker();
    Ok(())
}

/// unp: each design's CPU per connection over the iterative server's, the
/// book's baseline, once iterative's row is in (a run without iterative
/// has none).
pub fn relate_to_iterative(rows: &mut [Row]) {
    let baseline = rows
        .iter()
        .find(|r| r.scenario == "unp" && r.model == ModelKind::Iterative.name() && r.error.is_none())
        .and_then(|r| r.cpu_per_conn_us);
    let Some(baseline) = baseline else {
        return;
    };
    for r in rows.iter_mut().filter(|r| r.scenario == "unp") {
        r.cpu_per_conn_over_iterative_us = r.cpu_per_conn_us.map(|c| c - baseline);
    }
}

/// work: one row per configuration of the model (epoll twice: one loop,
/// the baseline, and two on `SO_REUSEPORT`, whose spread is shown next to
/// reactors' round robin).
fn work(model: ModelKind, knobs: &Knobs) -> anyhow::Result<Vec<Row>> {
    if !Scenario::Work.applies_to(model) {
        return Ok(Vec::new());
    }
    // The models that default to the cores count the machine's, not the
    // lab's own (pinned to one).
    let cores = super::pin::cores();
    let workers = match model {
        ModelKind::Epoll => vec![1, 2],
        ModelKind::Async | ModelKind::Reactors | ModelKind::HalfAsync | ModelKind::Leader => vec![cores],
        other => vec![other.default_workers()],
    };
    let mut rows = Vec::new();
    for n in workers {
        let mut row = Row {
            model: model.to_string(),
            scenario: "work".into(),
            workers: Some(n as u64),
            ..Row::default()
        };
        let work = format!("{}us", WORK_PER_REQUEST.as_micros());
        let args: Vec<String> = [
            "--model",
            model.name(),
            "--service",
            "echo",
            "--work",
            &work,
            "--workers",
            &n.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = ServerProcess::start_pinned(&args, false)?;
        let sample_before = process.sample().context("the server died")?;
        let costs_start = probe::costs(process.pid());
        let mut server = Measured {
            process,
            sample_before,
            costs_start,
            costs_now: costs_start,
            cpu_before: sample_before.cpu,
        };
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
        bench::measure(&warm_up)?;
        let report = server.echo_for(knobs, knobs.size, &mut row)?;
        if let Some(cpu) = row.cpu_s.filter(|_| report.elapsed_s > 0.0) {
            row.cores_used = Some(cpu / report.elapsed_s);
        }
        server.process.stop();
        row.accepts_per_worker = server.process.accepts_per_worker().filter(|s| s.len() > 1);
        rows.push(row);
    }
    Ok(rows)
}

/// The message sizes the ladder climbs at: small requests, the seeds'
/// size, and replies larger than one receive buffer.
pub const LADDER_SIZES: [usize; 3] = [64, 512, 16 * 1024];

/// uring-ladder: at each size, epoll as the yardstick, then uring with one
/// more technique per step. A step the kernel refuses is a row with its
/// error; the climb goes on.
fn uring_ladder(model: ModelKind, knobs: &Knobs) -> anyhow::Result<Vec<Row>> {
    if !Scenario::UringLadder.applies_to(model) {
        return Ok(Vec::new());
    }
    let mut rows = Vec::new();
    for size in LADDER_SIZES {
        rows.push(ladder_step(ModelKind::Epoll, None, size, knobs));
        for (step, features) in UringFeatures::ladder() {
            rows.push(ladder_step(ModelKind::Uring, Some((step, features)), size, knobs));
        }
    }
    Ok(rows)
}

fn ladder_step(model: ModelKind, step: Option<(&str, UringFeatures)>, size: usize, knobs: &Knobs) -> Row {
    let mut row = Row {
        model: model.to_string(),
        scenario: Scenario::UringLadder.to_string(),
        step: step.map(|(name, _)| name.to_string()),
        uring: step.map(|(_, f)| f.to_string()),
        message_bytes: Some(size as u64),
        ..Row::default()
    };
    let features = step.map(|(_, f)| f.to_string());
    let extra: Vec<&str> = match &features {
        Some(f) => vec!["--uring", f],
        None => Vec::new(),
    };
    let run = |row: &mut Row| -> anyhow::Result<()> {
        let mut server = start(model, "echo", &extra)?;
        server.echo_for(knobs, size, row)?;
        server.process.stop();
        Ok(())
    };
    if let Err(e) = run(&mut row) {
        row.error = Some(format!("{e:#}"));
    }
    row
}

/// Opens idle connections until `held` has `total`.
fn hold(addr: &str, total: usize, held: &mut Vec<TcpStream>) -> anyhow::Result<()> {
    let target = addr.trim_start_matches("tcp:").to_string();
    held.reserve(total.saturating_sub(held.len()));
    while held.len() < total {
        // The kernel completes the handshake even for a model that never
        // accepts (it waits in the backlog): that is part of the picture.
        let stream = TcpStream::connect(&target).context("cannot open the idle connections")?;
        // Closed with a reset: no TIME_WAIT left behind by ten thousand.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        held.push(stream);
    }
    Ok(())
}

/// The connections the server has accepted, once it has accepted `want`
/// or stopped taking more for `quiet`.
fn settle_accepted(port: u16, want: u64, quiet: Duration) -> u64 {
    let mut last = probe::accepted_connections(port);
    let mut since = Instant::now();
    while last < want && since.elapsed() < quiet {
        std::thread::sleep(Duration::from_millis(20));
        let now = probe::accepted_connections(port);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last.min(want)
}

fn port_of(addr: &str) -> anyhow::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .context("the server announced an address without a port")
}

/// A started server, and what it cost before the load.
struct Measured {
    process: ServerProcess,
    sample_before: Sample,
    /// Costs at start: the baseline of memory per connection.
    costs_start: Costs,
    /// What it cost under the load, at its end.
    costs_now: Costs,
    /// CPU before the load.
    cpu_before: Duration,
}

impl Measured {
    /// Echo load: `knobs.clients` clients sending `size`-byte messages for
    /// `knobs.duration`, recorded into `row` with its requests/s.
    fn echo_for(&mut self, knobs: &Knobs, size: usize, row: &mut Row) -> anyhow::Result<BenchReport> {
        let options = self.echo_load(knobs, size, Load::Duration(knobs.duration))?;
        let report = self.drive(&options)?;
        self.record(row, &report, Some(knobs.duration));
        row.throughput_rps = Some(report.throughput_rps);
        Ok(report)
    }

    /// The scenarios' echo load: `knobs.clients` clients, `size`-byte messages.
    fn echo_load(&self, knobs: &Knobs, size: usize, load: Load) -> anyhow::Result<BenchOptions> {
        bench_options(
            &self.process.addr,
            knobs.clients,
            load,
            Payload::Size(size),
            STARVED_AFTER,
        )
    }

    /// One active client asking `are you there?` for `active_for`, the
    /// probe the idle and c10k scenarios measure while connections sit idle.
    fn active_client(&self, active_for: Duration) -> anyhow::Result<BenchOptions> {
        bench_options(
            &self.process.addr,
            1,
            Load::Duration(active_for),
            Payload::Text(b"are you there?".to_vec()),
            STARVED_AFTER,
        )
    }

    /// Runs the bench against the server.
    fn drive(&mut self, options: &BenchOptions) -> anyhow::Result<BenchReport> {
        self.cpu_before = self.process.sample().map_or(Duration::ZERO, |s| s.cpu);
        let report = bench::measure(options)?;
        self.costs_now = probe::costs(self.process.pid());
        Ok(report)
    }

    /// Runs the bench once more with the kernel's counters on: context
    /// switches and system calls per reply.
    fn count_kernel_cost(
        &mut self,
        options: &BenchOptions,
        method: SyscallMethod,
        row: &mut Row,
    ) -> anyhow::Result<()> {
        let pid = self.process.pid();
        let perf = match method {
            SyscallMethod::Perf => PerfCounter::start(pid),
            SyscallMethod::Proc => None,
        };
        let before = probe::costs(pid);
        let report = bench::measure(options)?;
        let counted = perf.map(PerfCounter::finish).unwrap_or_default();
        let after = probe::costs(pid);
        if report.replies > 0 {
            let replies = report.replies as f64;
            let switches = counted
                .context_switches
                .unwrap_or_else(|| after.context_switches.saturating_sub(before.context_switches));
            row.context_switches_per_request = Some(switches as f64 / replies);
            row.syscalls_per_request = counted.syscalls.map(|n| n as f64 / replies);
        }
        Ok(())
    }

    fn peak_rss_kb(&self) -> u64 {
        self.process.peaks().rss_kb
    }

    /// Forgets the peaks so far (a new c10k step).
    fn restart_watch(&mut self) {
        self.process.reset_peaks();
    }

    /// What every scenario records: who was served, latency, CPU, kernel
    /// cost, memory, peaks. A client counts as served when its first reply
    /// came within the load's `window` (a timed run): one that timed out,
    /// connected again and was answered only once the others had gone home
    /// was not served by the run.
    fn record(&self, row: &mut Row, report: &BenchReport, window: Option<Duration>) {
        row.engine = Some(format!("{:?}", report.engine).to_lowercase());
        row.replies = Some(report.replies);
        row.errors = Some(report.errors);
        let counts: Vec<u64> = report.per_client.iter().map(|c| c.replies).collect();
        row.clients = Some(counts.len() as u64);
        let in_time = |c: &bench::ClientReport| match (window, c.lane.first_byte_s) {
            (Some(w), Some(first)) => first <= w.as_secs_f64(),
            _ => c.replies > 0,
        };
        row.served = Some(
            report
                .per_client
                .iter()
                .filter(|c| c.replies > 0 && in_time(c))
                .count() as u64,
        );
        row.fairness = Some(bench::jain_fairness(&counts));
        row.load_busy = report.load_busy;
        if report.replies > 0 {
            row.p50_us = Some(report.latency_us.p50);
            row.p99_us = Some(report.latency_us.p99);
        }
        let replies = report.replies.max(1) as f64;
        if let Some(after) = self.process.sample() {
            let cpu = after.cpu.saturating_sub(self.cpu_before).as_secs_f64();
            row.cpu_s = Some(cpu);
            if report.replies > 0 {
                row.cpu_per_request_us = Some(cpu * 1e6 / replies);
            }
        }
        row.pss_kb = Some(self.costs_now.pss_kb);
        let peaks = self.process.peaks();
        row.peak_rss_kb = Some(peaks.rss_kb);
        row.peak_threads = Some(peaks.threads);
        row.peak_children = Some(peaks.children);
    }
}

/// `model` serving `service` (with `extra` flags), and its first sample.
fn start(model: ModelKind, service: &str, extra: &[&str]) -> anyhow::Result<Measured> {
    let args: Vec<String> = ["--model", model.name(), "--service", service]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    let process = ServerProcess::start(&args)?;
    let sample_before = process.sample().context("the server died")?;
    let costs_start = probe::costs(process.pid());
    Ok(Measured {
        process,
        sample_before,
        costs_start,
        costs_now: costs_start,
        cpu_before: sample_before.cpu,
    })
}
