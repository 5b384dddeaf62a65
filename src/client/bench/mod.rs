//! `socklab bench`: the seeds' concurrent client grown into a load generator.
//!
//! Closed loop by default: each of `--clients` clients sends a request,
//! waits for the whole reply, records the latency, and goes again. `--rate`
//! makes it an open loop instead: requests start on a schedule, and each
//! latency counts from the request's intended start, so a stalled server
//! shows as latency rather than as fewer requests (no coordinated omission);
//! its senders wake on a microsecond timer, and bench reports how late its
//! own sends still left ([`pace`]). The clients run on `--threads` threads,
//! none of them a thread per connection: over TCP and Unix sockets on
//! io_uring rings ([`uring`]) when the kernel allows, everything else as
//! tasks on tokio event loops ([`engine`]). Latencies go into one HDR histogram per thread,
//! merged at the end.
//!
//! A whole reply (DESIGN section 6, `--expect` to choose): for `auto`, what
//! came before the server's close, one line when the request ends in `\n`,
//! otherwise as many bytes as were sent; `echo` also checks the bytes. A
//! reply that ends early, differs, a reset, a refused connection or a
//! timeout is an error, counted by kind.
//!
//! Several hosts make one run (DESIGN section 10): `--start-at` starts them
//! together, `--driver K/N` gives each its share of `--rate` and its own
//! client ids, and the JSON carries the whole histogram for `socklab merge`.

mod engine;
mod pace;
mod uring;

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::addr::Addr;
use crate::client::hdr;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub addr: Addr,
    pub clients: usize,
    pub load: Load,
    pub payload: Payload,
    pub new_connection: bool,
    /// How long a reply may take before it counts as an error.
    pub timeout: Duration,
    pub json: bool,
    pub verbose: bool,
    pub quiet: bool,
    /// Event-loop threads driving the clients.
    pub threads: usize,
    /// Open loop: requests per second in total; `None` is a closed loop.
    pub rate: Option<f64>,
    /// When a reply is whole, and whether its bytes are checked.
    pub expect: Expect,
    /// Which engine drives the clients.
    pub engine: Engine,
    /// Drive the server this long first, unmeasured (`--warmup`).
    pub warmup: Option<Duration>,
    /// Append the summary to this CSV file, one row per run (`--csv`).
    pub csv: Option<PathBuf>,
    /// Begin at this wall-clock time (`--start-at`), so that drivers on
    /// several hosts, launched by ssh or pdsh, start together.
    pub start_at: Option<SystemTime>,
    /// This run is driver K of N (`--driver`): it takes 1/N of `--rate`,
    /// on the slots of the whole schedule that are its own, and numbers its
    /// clients after the drivers before it, so merged runs never share ids.
    pub driver: Option<Driver>,
    /// Write an interval log here (`--hdr-log`): one histogram per second.
    pub hdr_log: Option<PathBuf>,
}

impl BenchOptions {
    /// One closed-loop request per client, as the seeds' clients do.
    pub fn new(addr: Addr) -> Self {
        BenchOptions {
            addr,
            clients: 1,
            load: Load::Requests(1),
            payload: Payload::Text(b"hello".to_vec()),
            new_connection: false,
            timeout: Duration::from_secs(10),
            json: false,
            verbose: false,
            quiet: true,
            threads: 1,
            rate: None,
            expect: Expect::Auto,
            engine: Engine::Auto,
            warmup: None,
            csv: None,
            start_at: None,
            driver: None,
            hdr_log: None,
        }
    }
}

/// When a reply is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// At the close; else one line if the request is a line; else as many
    /// bytes as were sent.
    Auto,
    /// As many bytes as were sent, and the same bytes.
    Echo,
    /// One line.
    Line,
    /// Everything until the server closes.
    Close,
    /// Exactly this many bytes.
    Bytes(usize),
}

impl Expect {
    /// Whether `reply` is whole for `request` (the connection still open),
    /// now that its last `new` bytes came in: the bytes before were looked
    /// at already, so a long line is searched once, not once per read.
    fn complete(self, request: &[u8], reply: &[u8], new: usize) -> bool {
        let new_line = || reply[reply.len().saturating_sub(new)..].contains(&b'\n');
        match self {
            Expect::Auto if request.ends_with(b"\n") => new_line(),
            Expect::Auto | Expect::Echo => reply.len() >= request.len(),
            Expect::Line => new_line(),
            Expect::Close => false,
            Expect::Bytes(n) => reply.len() >= n,
        }
    }

    /// Whether a close after `reply` still makes it whole.
    fn may_end_at_close(self, request: &[u8], reply: &[u8]) -> bool {
        match self {
            Expect::Auto | Expect::Close => true,
            Expect::Echo => reply.len() >= request.len(),
            Expect::Line => reply.contains(&b'\n'),
            Expect::Bytes(n) => reply.len() >= n,
        }
    }
}

impl FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Expect::Auto),
            "echo" => Ok(Expect::Echo),
            "line" => Ok(Expect::Line),
            "close" => Ok(Expect::Close),
            other => match other.strip_prefix("bytes:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Expect::Bytes(n)),
                _ => Err(format!(
                    "unknown rule '{s}' (expected auto, echo, line, close or bytes:N)"
                )),
            },
        }
    }
}

/// Which engine drives the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// io_uring over a stream when the kernel allows it, tokio otherwise.
    Auto,
    /// Tasks on tokio current-thread runtimes: every mode, every transport.
    Tokio,
    /// io_uring rings: closed and open loops over TCP and Unix sockets.
    Uring,
    /// `merge` of runs driven by different engines.
    Mixed,
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Engine::Auto),
            "tokio" => Ok(Engine::Tokio),
            "uring" | "io_uring" | "io-uring" => Ok(Engine::Uring),
            _ => Err(format!("unknown engine '{s}' (expected auto, tokio or uring)")),
        }
    }
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Tokio => "tokio",
            Engine::Uring => "uring",
            Engine::Mixed => "mixed",
        }
    }

    /// The engine that will run `plan`: `Auto` resolved, `Uring` checked.
    fn choose(self, plan: &engine::Plan) -> anyhow::Result<Engine> {
        match self {
            Engine::Tokio => Ok(Engine::Tokio),
            Engine::Auto if uring::suits(plan) && uring::available() => Ok(Engine::Uring),
            Engine::Auto => Ok(Engine::Tokio),
            Engine::Uring if !uring::suits(plan) => {
                bail!("the uring engine drives TCP and Unix sockets; UDP needs --engine tokio")
            }
            Engine::Uring if !uring::available() => {
                bail!("io_uring is not available here (use --engine tokio)")
            }
            Engine::Uring => Ok(Engine::Uring),
            Engine::Mixed => bail!("mixed is not an engine one run can use"),
        }
    }
}

/// `--driver K/N`: driver K (from 1) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Driver {
    pub k: usize,
    pub n: usize,
}

/// The most drivers one run may have.
pub const MAX_DRIVERS: usize = 10_000;

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(k, n)| Some((k.trim().parse::<usize>().ok()?, n.trim().parse::<usize>().ok()?)));
        match parsed {
            Some((k, n)) if (1..=MAX_DRIVERS).contains(&n) && (1..=n).contains(&k) => Ok(Driver { k, n }),
            Some((k, n)) if (1..=MAX_DRIVERS).contains(&n) => Err(format!(
                "driver {k} of {n}: K counts from 1 to N, so here 1 to {n}"
            )),
            Some(_) => Err(format!("'{s}': N is from 1 to {MAX_DRIVERS} drivers")),
            None => Err(format!("'{s}' is not K/N, e.g. 1/2 for the first of two drivers")),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// Why a request failed, for the counts by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect = 0,
    Timeout = 1,
    Reset = 2,
    Closed = 3,
    Mismatch = 4,
    Other = 5,
}

impl ErrorKind {
    pub const COUNT: usize = 6;
    pub const ALL: [ErrorKind; Self::COUNT] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Closed,
        ErrorKind::Mismatch,
        ErrorKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How much work each client does.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// This many requests per client.
    Requests(usize),
    /// As many as fit in this long.
    Duration(Duration),
}

/// What each request carries.
#[derive(Debug, Clone)]
pub enum Payload {
    Text(Vec<u8>),
    /// `--size N`: N bytes of printable filler, ending in `\n`.
    Size(usize),
}

impl Payload {
    /// How many bytes a request carries.
    pub fn size(&self) -> usize {
        match self {
            Payload::Text(text) => text.len(),
            Payload::Size(n) => *n,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Text(text) => text.clone(),
            Payload::Size(n) => {
                let mut bytes: Vec<u8> = (0..*n).map(|i| b'a' + (i % 26) as u8).collect();
                if let Some(last) = bytes.last_mut() {
                    *last = b'\n';
                }
                bytes
            }
        }
    }
}

/// The result, with the JSON keys of DESIGN section 6.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Requests attempted: `replies + errors`.
    pub requests: u64,
    /// Requests answered with a whole reply.
    pub replies: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    /// Replies per second over the whole run.
    pub throughput_rps: f64,
    pub latency_us: Latency,
    pub clients: usize,
    /// Errors by kind: connect, timeout, reset, closed, mismatch, other.
    pub errors_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// The latency histogram's percentile table.
    pub percentiles_us: Vec<Percentile>,
    /// The engine that drove the clients: `uring` or `tokio`.
    pub engine: Engine,
    /// Each client's counts and instants, by id: who was served, and when
    /// (the lab's fairness figure and timeline come from here).
    pub per_client: Vec<ClientReport>,
    /// The address driven, as given: runs merge only when theirs agree.
    pub target: String,
    /// The wall-clock instants the measured run began and ended (RFC 3339,
    /// microseconds): how far apart drivers on several hosts started.
    pub started_at: String,
    pub ended_at: String,
    /// Open loop: the requests per second this run was to send (its share,
    /// with `--driver`); `null` for a closed loop.
    pub rate_rps: Option<f64>,
    /// `K/N` with `--driver`, else `null`.
    pub driver: Option<String>,
    /// The ids of this run's clients, so that a merge can tell two drivers
    /// from the same run counted twice.
    pub client_ids: ClientIds,
    /// A merge's inputs, one line each (absent from a single run).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub runs: Vec<RunInfo>,
    /// A merge: how far apart the first and the last run began.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_spread_ms: Option<f64>,
    /// Every latency of the run: the HdrHistogram in its standard V2
    /// compressed encoding, base64 (`HISTF...`), in microseconds.
    pub histogram: String,
    /// How busy the load generator kept the cores it could use: its CPU
    /// time (user + system, every thread) over the run's length times
    /// `min(--threads, the cores it may run on)`. Near 1 it could not go
    /// faster, and the figures may be its limit rather than the server's.
    /// A merge has the busiest of its runs'; `null` where unknown.
    pub load_busy: Option<f64>,
    /// Open loop: how late bench's own sends left, in microseconds: each
    /// from when it could have left (its intended start, or when its
    /// connection came free if later) to when it did. The load generator's
    /// share of `latency_us`; `null` for a closed loop, which has no
    /// schedule to be late for.
    pub send_lag_us: Option<Latency>,
    /// The send lags as `histogram` holds the latencies (`HISTF...`), so
    /// that `merge` adds them up exactly; `null` for a closed loop.
    pub send_lag_histogram: Option<String>,
    /// Open loop: requests due while their client's connection still
    /// carried the previous one; they left when it was free (their latency
    /// counts from the intended start all the same). Many mean too few
    /// `--clients` for the rate and the server's latency. `null` for a
    /// closed loop.
    pub sends_queued: Option<u64>,
}

/// Above this share of the latency p99, the send lag's p99 is a noticeable
/// part of the figures, and bench says so on stderr: the load generator, not
/// only the server, made the latency.
pub const SEND_LAG_WARNING: f64 = 0.1;

/// Above this share of its cores busy, the load generator may be what
/// limits a closed loop, and the human summary says so.
pub const LOAD_BUSY_WARNING: f64 = 0.9;

/// The first and the last client id of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientIds {
    pub first: usize,
    pub last: usize,
}

/// One input of a merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub file: String,
    pub started_at: String,
    pub ended_at: String,
    pub requests: u64,
    pub replies: u64,
    pub driver: Option<String>,
    pub client_ids: ClientIds,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentile {
    pub percentile: f64,
    pub latency_us: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// One client's share, for `--verbose` and `--json`'s `per_client`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientReport {
    /// Which client (0-based), whichever thread ran it.
    pub id: usize,
    pub replies: u64,
    pub errors: u64,
    #[serde(skip)]
    pub elapsed: Duration,
    #[serde(skip)]
    pub last_reply: Vec<u8>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The client's lane in a timeline of the run.
    #[serde(flatten)]
    pub lane: Lane,
}

/// Seconds after the run began when a client's first connection was up,
/// the first byte of a reply came in, and its last whole reply was in: one
/// lane of a timeline of the run (the lab draws the delay experiment's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Lane {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connected_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_byte_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_byte_s: Option<f64>,
}

impl ClientReport {
    /// The client's first connection is up.
    pub(crate) fn mark_connected(&mut self, start: Instant) {
        self.lane.connected_s.get_or_insert(start.elapsed().as_secs_f64());
    }

    /// A byte of a reply came in.
    pub(crate) fn mark_first_byte(&mut self, start: Instant) {
        self.lane
            .first_byte_s
            .get_or_insert(start.elapsed().as_secs_f64());
    }
}

/// Jain's fairness index over per-client counts: 1 when every client got
/// the same, 1/n when one client got everything (and 0 when nobody got
/// anything).
pub fn jain_fairness(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    let squares: f64 = counts.iter().map(|&c| (c as f64) * (c as f64)).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (counts.len() as f64 * squares)
}

/// The most bench holds for its clients at once: each keeps a reply as
/// long as its request, and a 4 KiB read buffer. Past it, bench refuses to
/// start instead of aborting on a failed allocation.
pub const MAX_HELD_BYTES: usize = 1 << 30;

impl BenchOptions {
    /// Checks the options together, before anything is allocated or
    /// connected (each flag alone was bounded while parsing).
    pub fn check(&self) -> anyhow::Result<()> {
        let per_client = self.payload.size().saturating_add(4096);
        let held = per_client.saturating_mul(self.clients);
        if held > MAX_HELD_BYTES {
            bail!(
                "{} clients with {}-byte requests would hold {} MiB of replies at once, more than the {} MiB bench allows; use fewer clients or smaller requests",
                self.clients,
                self.payload.size(),
                held >> 20,
                MAX_HELD_BYTES >> 20
            );
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be a number of requests per second above 0, not {rate}");
            }
        }
        if let Some(d) = self.driver {
            if !(1..=d.n).contains(&d.k) {
                bail!("--driver {d}: K counts from 1 to N");
            }
        }
        if let Some(at) = self.start_at {
            let now = SystemTime::now();
            match at.duration_since(now) {
                Err(late) => bail!(
                    "--start-at {} is {:.3} s in the past (give a time ahead, leaving the drivers time to be launched)",
                    wall_clock(at),
                    late.duration().as_secs_f64()
                ),
                Ok(ahead) if ahead > crate::cli::MAX_DURATION => bail!(
                    "--start-at {} is more than a day ahead",
                    wall_clock(at)
                ),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// The ids of this run's clients: after those of the drivers before it.
    fn client_ids(&self) -> ClientIds {
        let first = self.driver.map_or(0, |d| (d.k - 1) * self.clients);
        ClientIds {
            first,
            last: first + self.clients - 1,
        }
    }
}

/// Runs the benchmark and returns the merged report. A `--warmup` is a
/// run of its own before it, for that long, whose figures are dropped;
/// with `--start-at`, the warm-up begins then.
pub fn measure(options: &BenchOptions) -> anyhow::Result<BenchReport> {
    options.check()?;
    // Resolved (and the server probed) before the start time, so that at
    // the start time the clients connect at once.
    let target = engine::Target::resolve(&options.addr, options.timeout)?;
    if let Some(at) = options.start_at {
        sleep_until(at);
    }
    if let Some(warmup) = options.warmup.filter(|w| !w.is_zero()) {
        let warm = BenchOptions {
            load: Load::Duration(warmup),
            warmup: None,
            hdr_log: None,
            quiet: true,
            ..options.clone()
        };
        run_once(&warm, target.clone())?;
    }
    run_once(options, target)
}

/// Sleeps until the wall clock reads `at` (re-reading it, should it be set
/// meanwhile).
fn sleep_until(at: SystemTime) {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
    }
}

/// A wall-clock instant in RFC 3339, to the microsecond, in UTC.
pub fn wall_clock(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn run_once(options: &BenchOptions, target: engine::Target) -> anyhow::Result<BenchReport> {
    // With --driver K/N, this run sends 1/N of the rate, on the slots of
    // the whole schedule (one every 1/R s) numbered K-1 modulo N: the
    // drivers' requests interleave as one driver's would.
    let (rate, phase) = match (options.rate, options.driver) {
        (Some(r), Some(d)) => (
            Some(r / d.n as f64),
            Duration::from_secs_f64((d.k - 1) as f64 / r),
        ),
        (rate, _) => (rate, Duration::ZERO),
    };
    let started_at = SystemTime::now();
    let plan = Arc::new(engine::Plan {
        target,
        request: options.payload.bytes(),
        expect: options.expect,
        load: options.load,
        rate,
        phase,
        clients: options.clients,
        timeout: options.timeout,
        new_connection: options.new_connection,
        start: Instant::now(),
        done: AtomicU64::new(0),
        per_second: options.hdr_log.is_some(),
    });
    let engine = options.engine.choose(&plan)?;
    let thread_main: engine::ThreadMain = match engine {
        Engine::Uring => uring::one_thread,
        _ => engine::one_thread,
    };
    let stop = AtomicBool::new(false);
    let show_progress = !options.quiet && !options.json && io::stderr().is_terminal();
    let cpu_before = process_cpu_time();
    let results = std::thread::scope(|scope| {
        if show_progress {
            let expected = match options.load {
                Load::Requests(n) => Some((n * options.clients) as u64),
                Load::Duration(_) => None,
            };
            let (plan, stop) = (&plan, &stop);
            scope.spawn(move || engine::progress(plan, expected, stop));
        }
        let results = engine::run(plan.clone(), options.threads, thread_main);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        results
    })?;
    let elapsed = plan.start.elapsed();
    let cores = options
        .threads
        .min(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let load_busy = cpu_before.zip(process_cpu_time()).map(|(before, after)| {
        (after - before).as_secs_f64() / (elapsed.as_secs_f64() * cores as f64).max(f64::EPSILON)
    });

    let mut merged = new_histogram();
    let mut send_lag = rate.map(|_| new_histogram());
    let mut sends_queued = rate.map(|_| 0);
    let mut per_client = Vec::new();
    let mut by_kind = [0u64; ErrorKind::COUNT];
    let mut seconds = Vec::new();
    for thread in results {
        merged.add(&thread.recorder.total)?;
        if let (Some(all), Some(lag)) = (&mut send_lag, &thread.recorder.send_lag) {
            all.add(lag)?;
        }
        sends_queued = sends_queued.map(|q| q + thread.recorder.queued);
        seconds.push(thread.recorder.into_seconds());
        for client in thread.clients {
            per_client.push(client.report);
            for (total, n) in by_kind.iter_mut().zip(client.errors) {
                *total += n;
            }
        }
    }
    let ids = options.client_ids();
    for client in &mut per_client {
        client.id += ids.first;
    }
    per_client.sort_by_key(|c| c.id);
    if let Some(path) = &options.hdr_log {
        hdr::write_log(path, started_at, elapsed, &options.addr.to_string(), seconds)?;
    }
    let replies: u64 = per_client.iter().map(|c| c.replies).sum();
    let errors: u64 = per_client.iter().map(|c| c.errors).sum();
    Ok(BenchReport {
        requests: replies + errors,
        replies,
        errors,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_rps: replies as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        latency_us: latency(&merged),
        clients: options.clients,
        errors_by_kind: ErrorKind::ALL
            .iter()
            .map(|k| (k.name(), by_kind[*k as usize]))
            .collect(),
        percentiles_us: percentiles(&merged),
        engine,
        per_client,
        target: options.addr.to_string(),
        started_at: wall_clock(started_at),
        ended_at: wall_clock(started_at + elapsed),
        rate_rps: rate,
        driver: options.driver.map(|d| d.to_string()),
        client_ids: ids,
        runs: Vec::new(),
        start_spread_ms: None,
        histogram: hdr::encode(&merged)?,
        load_busy,
        send_lag_us: send_lag.as_ref().map(latency),
        send_lag_histogram: send_lag.as_ref().map(hdr::encode).transpose()?,
        sends_queued,
    })
}

/// This process' CPU time so far, every thread's, user and system.
fn process_cpu_time() -> Option<Duration> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()?;
    Some(Duration::from(ts))
}

/// The percentile table's rows; `latency_us` reads the same histogram the
/// same way ([`hdr::value_at_percentile`]), so its p50..p999 agree with the table.
const PERCENTILES: [f64; 8] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0];

pub(crate) fn percentiles(h: &Histogram<u64>) -> Vec<Percentile> {
    if h.is_empty() {
        return Vec::new();
    }
    PERCENTILES
        .iter()
        .map(|&p| Percentile {
            percentile: p,
            latency_us: hdr::value_at_percentile(h, p),
        })
        .collect()
}

/// `socklab bench`: measure, print, and fail when nothing succeeded.
pub fn run(options: BenchOptions) -> anyhow::Result<()> {
    let report = measure(&options)?;
    print(&report, options.json, options.verbose, options.csv.as_deref())?;
    if report.replies == 0 && report.errors > 0 {
        let why = report
            .per_client
            .iter()
            .find_map(|c| c.last_error.clone())
            .unwrap_or_default();
        bail!("no request succeeded ({} errors): {why}", report.errors);
    }
    Ok(())
}

/// Prints a report as bench and merge do: the JSON document or the human
/// summary (`verbose`: a line per client first), and a CSV row to `csv`.
pub fn print(
    report: &BenchReport,
    json: bool,
    verbose: bool,
    csv: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
    } else {
        if verbose {
            for client in &report.per_client {
                writeln!(out, "{}", client_line(client.id + 1, client))?;
            }
        }
        write!(out, "{}", summary(report))?;
    }
    out.flush()?;
    if let Some(warning) = send_lag_warning(report) {
        eprintln!("{warning}");
    }
    if let Some(path) = csv {
        append_csv(path, report)?;
    }
    Ok(())
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    hdr::run_histogram()
}

pub(crate) fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: hdr::value_at_percentile(h, 50.0),
        p90: hdr::value_at_percentile(h, 90.0),
        p99: hdr::value_at_percentile(h, 99.0),
        p999: hdr::value_at_percentile(h, 99.9),
        max: h.max(),
        mean: h.mean(),
    }
}

/// The human summary. Where nothing was measured (no reply), a figure is
/// `-`, not a zero that reads like a very fast server. Counts are written
/// as the lab writes them (`1,234`).
pub fn summary(r: &BenchReport) -> String {
    use crate::figures::{decimal, thousands};
    let addr = &r.target;
    let l = &r.latency_us;
    let kinds: Vec<String> = r
        .errors_by_kind
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{} {k}", thousands(*n)))
        .collect();
    let errors = if kinds.is_empty() {
        String::new()
    } else {
        format!("  errors     {}\n", kinds.join(", "))
    };
    let measured = r.replies > 0;
    let figure = |us: u64| if measured { micros(us) } else { "-".to_string() };
    let throughput = if measured {
        format!("{} requests/s", decimal(r.throughput_rps, 1))
    } else {
        "-".to_string()
    };
    let text = format!(
        "{addr}: {} client{}, engine {}\n  requests   {} ({} replies, {} errors) in {:.3} s\n  throughput {throughput}\n  latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}\n",
        thousands(r.clients as u64),
        if r.clients == 1 { "" } else { "s" },
        r.engine.name(),
        thousands(r.requests),
        thousands(r.replies),
        thousands(r.errors),
        r.elapsed_s,
        figure(l.p50),
        figure(l.p90),
        figure(l.p99),
        figure(l.p999),
        figure(l.max),
        figure(l.mean.round() as u64),
    );
    // Open loop only: the load generator's own lateness, beside the
    // latency it is part of, and the sends that waited for a connection.
    let lag = match (&r.send_lag_us, r.send_lag_histogram.is_some()) {
        (Some(lag), true) => format!(
            "  send lag   p50 {}  p99 {}  max {}  (how late bench's own sends left)\n",
            micros(lag.p50),
            micros(lag.p99),
            micros(lag.max)
        ),
        _ => String::new(),
    };
    let queued = match r.sends_queued {
        Some(n) if n > 0 => format!(
            "  queued     {} sends were due while their connection still waited for a reply (more --clients would send them on time)\n",
            thousands(n)
        ),
        _ => String::new(),
    };
    let load = match r.load_busy {
        Some(busy) if busy >= LOAD_BUSY_WARNING => format!(
            "  load       the load generator was busy {:.0}% of the time its threads could run: these figures may be its limit, not the server's\n",
            busy * 100.0
        ),
        _ => String::new(),
    };
    let runs = match r.start_spread_ms {
        Some(spread) if !r.runs.is_empty() => format!(
            "  merged     {} runs, started within {spread:.3} ms of each other\n",
            r.runs.len()
        ),
        _ => String::new(),
    };
    text + &lag + &queued + &errors + &load + &runs
}

/// When the send lag is a noticeable part of the latency (its p99 above
/// [`SEND_LAG_WARNING`] of the latency p99), what to say on stderr.
pub fn send_lag_warning(r: &BenchReport) -> Option<String> {
    let lag = r.send_lag_us.as_ref()?;
    let latency = &r.latency_us;
    if r.replies == 0 || !lag_is_noticeable(lag.p99, latency.p99) {
        return None;
    }
    Some(format!(
        "warning: bench's own send lag is a noticeable part of the latency (send lag p99 {}, latency p99 {}): these figures are partly the load generator's; a lower --rate, more --threads or a quieter machine",
        micros(lag.p99),
        micros(latency.p99)
    ))
}

/// Whether a send lag p99 is a noticeable part of a latency p99.
fn lag_is_noticeable(lag_p99: u64, latency_p99: u64) -> bool {
    lag_p99 as f64 > SEND_LAG_WARNING * latency_p99 as f64
}

/// The CSV columns of `--csv`, one row per run.
const CSV_HEADER: &str = "addr,engine,clients,requests,replies,errors,elapsed_s,throughput_rps,p50_us,p90_us,p99_us,p999_us,max_us,mean_us";

/// One run as a CSV row; latency cells are empty when nothing was measured.
pub fn csv_row(r: &BenchReport) -> String {
    let l = &r.latency_us;
    let cell = |us: u64| {
        if r.replies > 0 {
            us.to_string()
        } else {
            String::new()
        }
    };
    let addr = &r.target;
    let addr = if addr.contains([',', '"']) {
        format!("\"{}\"", addr.replace('"', "\"\""))
    } else {
        addr.clone()
    };
    format!(
        "{addr},{},{},{},{},{},{:.6},{:.1},{},{},{},{},{},{}",
        r.engine.name(),
        r.clients,
        r.requests,
        r.replies,
        r.errors,
        r.elapsed_s,
        r.throughput_rps,
        cell(l.p50),
        cell(l.p90),
        cell(l.p99),
        cell(l.p999),
        cell(l.max),
        if r.replies > 0 {
            format!("{:.1}", l.mean)
        } else {
            String::new()
        },
    )
}

/// Appends one row to `path`, with the header first when the file is new
/// or empty, so that runs accumulate in one table.
fn append_csv(path: &std::path::Path, r: &BenchReport) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut text = String::new();
    if file.metadata()?.len() == 0 {
        text.push_str(CSV_HEADER);
        text.push('\n');
    }
    text.push_str(&csv_row(r));
    text.push('\n');
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The seeds' per-thread line: `client 3: received 'hello! ...' in 5.006 s`.
fn client_line(n: usize, c: &ClientReport) -> String {
    let text = String::from_utf8_lossy(&c.last_reply);
    let text = text.trim_end();
    let shown: String = text.chars().take(72).collect();
    let ellipsis = if shown.len() < text.len() { "..." } else { "" };
    let mut line = format!(
        "client {n}: received '{shown}{ellipsis}' in {:.3} s",
        c.elapsed.as_secs_f64()
    );
    if c.replies != 1 || c.errors > 0 {
        line += &format!(" ({} replies, {} errors)", c.replies, c.errors);
    }
    if let Some(e) = &c.last_error {
        line += &format!("; last error: {e}");
    }
    line
}

/// A latency in the unit that reads best.
pub fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.3} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_payload_is_a_line_of_that_length() {
        let p = Payload::Size(512).bytes();
        assert_eq!(p.len(), 512);
        assert!(p.ends_with(b"\n"));
        assert_eq!(p.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn reply_rules() {
        assert!(Expect::Auto.complete(b"ab\n", b"x\n", 2));
        assert!(!Expect::Auto.complete(b"ab\n", b"ab", 2));
        assert!(Expect::Auto.complete(b"abc", b"xyz", 3));
        assert!(!Expect::Close.complete(b"abc", b"xyz", 3));
        assert!(Expect::Bytes(2).complete(b"abc", b"xy", 2));
        // A line in two reads: whole when its newline comes in.
        assert!(!Expect::Line.complete(b"q\n", b"ab", 2));
        assert!(Expect::Line.complete(b"q\n", b"ab\n", 1));
        assert!(!Expect::Echo.may_end_at_close(b"abc", b"ab"));
        assert_eq!("bytes:12".parse(), Ok(Expect::Bytes(12)));
        assert!("bytes:0".parse::<Expect>().is_err());
        assert!("sometimes".parse::<Expect>().is_err());
    }

    #[test]
    fn fairness() {
        assert_eq!(jain_fairness(&[5, 5, 5, 5]), 1.0);
        assert_eq!(jain_fairness(&[8, 0, 0, 0]), 0.25);
        assert_eq!(jain_fairness(&[0, 0]), 0.0);
    }

    #[test]
    fn a_lag_past_a_tenth_of_the_latency_is_noticeable() {
        assert!(!lag_is_noticeable(10, 100));
        assert!(lag_is_noticeable(11, 100));
        assert!(!lag_is_noticeable(0, 0));
        assert!(lag_is_noticeable(1, 0));
    }

    #[test]
    fn units() {
        assert_eq!(micros(12), "12 µs");
        assert_eq!(micros(1500), "1.50 ms");
        assert_eq!(micros(5_006_000), "5.006 s");
    }
}
