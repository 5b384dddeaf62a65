//! `socklab check`: is any server correct and robust? (DESIGN section 10)
//!
//! The wire behaviour of a service and the hostile peers of the test
//! suite, run as cases against any server: an address, or a command that
//! check starts (`{port}` filled in), watches from /proc and stops. What
//! Autobahn|Testsuite is to WebSocket and h2spec to HTTP/2, for the plain
//! protocols the seeds teach, and what a teacher's autograder needs: a
//! verdict per case, a table, JSON and JUnit XML, an exit status.
//!
//! A case is a function from the [`Ctx`] to a [`Finding`]: `pass`, `fail`,
//! `note` (a design property that is not a defect, such as "serves one
//! client at a time") or `skip` (the case does not apply), with one line of
//! what it sent, what came back and what it expected. One file per group
//! holds its cases and their verdicts; the runner and the renderers
//! ([`report`]) know ids and verdicts, never a case by name.
//!
//! The server under check is hostile too: every wait has a deadline, every
//! buffer a bound ([`wire`]), and every case runs under a watchdog, so a
//! server that floods, never closes or never answers costs bounded time
//! and memory and is reported as the failure it is.

mod concurrency;
mod conformance;
mod dialect;
mod framing;
mod peers;
mod process;
mod report;
pub mod server;
mod udp;
mod wire;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::addr::Addr;
use crate::service::ServiceKind;
use dialect::{Dialect, Expect};
use server::{Footprint, OutsideServer, Transport};
use wire::{End, Peer, Reply};

pub use report::Report;

/// What `socklab check` was asked.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub target: Target,
    pub service: ServiceKind,
    pub json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    /// Fewer connections, smaller floods, shorter patience: under 10 s.
    pub quick: bool,
    /// Case ids or groups to run (none: all).
    pub only: Vec<String>,
    /// Case ids or groups not to run.
    pub skip: Vec<String>,
    /// Concurrent connections of `peers.many` (default 1000, 100 quick).
    pub connections: Option<usize>,
}

/// The server under check.
#[derive(Debug, Clone)]
pub enum Target {
    /// A server already running there.
    Addr(Addr),
    /// A command to start (placeholders filled, see [`server`]).
    Command {
        template: String,
        transport: Transport,
        /// Where it listens when the template has no placeholder.
        listen: Option<Addr>,
    },
}

/// A case's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// A design property, not a defect ("serves one client at a time").
    Note,
    /// The case does not apply, or could not run; the line says why.
    Skip,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Note => "note",
            Verdict::Skip => "skip",
        }
    }
}

/// What a case found: its verdict and one line saying what it sent, what
/// came back and what it expected.
#[derive(Debug, Clone)]
pub struct Finding {
    pub verdict: Verdict,
    pub line: String,
}

impl Finding {
    pub fn pass(line: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Pass,
            line: line.into(),
        }
    }
    pub fn fail(line: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Fail,
            line: line.into(),
        }
    }
    pub fn note(line: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Note,
            line: line.into(),
        }
    }
    pub fn skip(line: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Skip,
            line: line.into(),
        }
    }
    /// `pass` when `ok`, else `fail`, with the same line.
    pub fn pass_if(ok: bool, line: impl Into<String>) -> Finding {
        if ok {
            Finding::pass(line)
        } else {
            Finding::fail(line)
        }
    }
}

/// One case: its id (`group.name`) and its body.
pub struct Case {
    pub id: &'static str,
    pub run: fn(&Ctx) -> Finding,
}

/// Every case, in the order they run: the groups of DESIGN section 10.
/// The process group comes last: it judges what the others left behind,
/// and ends with the stop.
fn all_cases() -> Vec<&'static Case> {
    [
        conformance::CASES,
        framing::CASES,
        concurrency::CASES,
        peers::CASES,
        udp::CASES,
        process::CASES,
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The groups, by name.
pub const GROUPS: &[&str] = &["conformance", "framing", "concurrency", "peers", "udp", "process"];

/// Every case id, for `--only`/`--skip` and the documentation.
pub fn case_ids() -> Vec<&'static str> {
    all_cases().iter().map(|c| c.id).collect()
}

/// Whether `name` (in `--only` or `--skip`) names a case or a group.
pub fn is_case_or_group(name: &str) -> bool {
    GROUPS.contains(&name) || case_ids().contains(&name)
}

fn group_of(id: &str) -> &str {
    id.split_once('.').map_or(id, |(g, _)| g)
}

/// How many connections a server can serve at once, as the concurrency
/// group saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// Every one of this many held connections, and one more, was served.
    AtLeast(usize),
    /// This many held connections stopped the next client being served.
    Exactly(usize),
}

impl Capacity {
    /// Serves one client at a time (a design property of iterative servers).
    pub fn one_at_a_time(self) -> bool {
        self == Capacity::Exactly(1)
    }

    /// At most this many at once.
    pub fn bounded(self) -> Option<usize> {
        match self {
            Capacity::Exactly(n) => Some(n),
            Capacity::AtLeast(_) => None,
        }
    }
}

/// What cases learn about the server for later cases: whether a stall is
/// a design property or a defect depends on how many it serves at once.
#[derive(Debug, Default)]
struct Learned {
    capacity: Option<Capacity>,
    /// One request's round trip, alone.
    latency: Option<Duration>,
    /// Some client has been served: a server that never answered is not
    /// waited for to answer again.
    ever_served: bool,
}

/// What every case is given: where the server is, what it speaks, how
/// patient to be, and the server itself when check started it.
pub struct Ctx {
    pub addr: Addr,
    pub dialect: Dialect,
    pub quick: bool,
    pub connections: usize,
    /// The server's process, when check started it.
    server: Option<Mutex<OutsideServer>>,
    /// Its footprint once warmed up, before the first case, and again
    /// before the peers.
    baseline: Mutex<Option<Footprint>>,
    learned: Mutex<Learned>,
}

impl Ctx {
    /// How long to wait for a reply that should come: generous, since a
    /// seed server sleeps a second before each, and a loaded 2-core
    /// machine is slow; a reply that never comes costs this once.
    pub fn reply_wait(&self) -> Duration {
        let base = if self.quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(3)
        };
        base + self.latency() * 2
    }

    /// How long a client may wait before it counts as not served while
    /// others hold the server: long against the server's own pace.
    pub fn stall_wait(&self) -> Duration {
        let base = if self.quick {
            Duration::from_millis(400)
        } else {
            Duration::from_secs(1)
        };
        base.max(self.latency() * 4)
    }

    /// The round trip of one request alone, once measured.
    pub fn latency(&self) -> Duration {
        self.learned().latency.unwrap_or_default()
    }

    pub fn capacity(&self) -> Option<Capacity> {
        self.learned().capacity
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_capacity(&self, capacity: Capacity) {
        self.learned().capacity = Some(capacity);
    }

    fn set_latency(&self, latency: Duration) {
        self.learned().latency = Some(latency);
    }

    /// A stream service (TCP or Unix), as most groups need.
    pub fn is_stream(&self) -> bool {
        !matches!(self.addr, Addr::Udp(_))
    }

    /// The server's pid, when check started it.
    pub fn pid(&self) -> Option<i32> {
        self.server
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).pid())
    }

    /// The server's footprint now (`None`: not ours, or gone).
    pub fn footprint(&self) -> Option<Footprint> {
        self.server
            .as_ref()
            .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).footprint())
    }

    pub fn baseline(&self) -> Option<Footprint> {
        *self.baseline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the server, when check started it.
    fn with_server<T>(&self, f: impl FnOnce(&mut OutsideServer) -> T) -> Option<T> {
        self.server
            .as_ref()
            .map(|s| f(&mut s.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// A new connection, or why not.
    pub fn connect(&self) -> Result<Peer, String> {
        Peer::connect(&self.addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))
    }

    /// Reads one reply of shape `expect`.
    pub fn read(&self, peer: &mut Peer, expect: &Expect, wait: Duration) -> Reply {
        match expect {
            Expect::Bytes(want) => peer.read_exact(want.len(), wait),
            Expect::Line(_) => peer.read_line(wait),
            // Lines a room broadcasts (`* guest7 joined`) may come first.
            Expect::LineStarting(_) => {
                let until = Instant::now() + wait;
                let mut skipped = 0;
                loop {
                    let line = peer.read_line(until.saturating_duration_since(Instant::now()));
                    if expect.matches(&line.bytes) || line.end != End::Complete || skipped == 1000 {
                        return line;
                    }
                    skipped += 1;
                }
            }
            Expect::Time => peer.read_until(wait, wire::MAX_REPLY, |b| expect.complete(b)),
            Expect::StartsThenClose(_) => peer.read_to_close(wait),
        }
    }

    /// The service's greeting (if it has one) and its probe exchange on
    /// `peer`: `Ok` when both came as expected within `wait`, else a line
    /// saying what came instead.
    pub fn converse(&self, peer: &mut Peer, wait: Duration) -> Result<(), String> {
        if let Some(greeting) = &self.dialect.greeting {
            let reply = self.read(peer, greeting, wait);
            if !greeting.matches(&reply.bytes) {
                return Err(format!(
                    "on connect got {} (expected {})",
                    reply.show(),
                    greeting.describe()
                ));
            }
        }
        if let Some(probe) = &self.dialect.probe {
            peer.send(&probe.request)
                .map_err(|e| format!("sent {}: {e}", wire::show(&probe.request)))?;
            let reply = self.read(peer, &probe.reply, wait);
            if !probe.reply.matches(&reply.bytes) {
                return Err(format!(
                    "sent {}, got {} (expected {})",
                    wire::show(&probe.request),
                    reply.show(),
                    probe.reply.describe()
                ));
            }
        }
        Ok(())
    }

    /// A new client is served: connect, converse, close. How long it took.
    pub fn served(&self, wait: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let mut peer = self.connect()?;
        self.converse(&mut peer, wait)?;
        self.learned().ever_served = true;
        Ok(start.elapsed())
    }

    /// Waits until a new client is served again, as after a flood the
    /// server is still working through: so that the next case meets an
    /// idle server, whatever this one left it doing. How long it took, or
    /// `None` if it did not within 10 s (5 quick).
    pub fn recovered(&self) -> Option<Duration> {
        if !self.learned().ever_served {
            return None;
        }
        let start = Instant::now();
        let limit = Duration::from_secs(if self.quick { 5 } else { 10 });
        while start.elapsed() < limit {
            if self.served(self.reply_wait()).is_ok() {
                return Some(start.elapsed());
            }
            // A refusal comes back at once: no spinning on it.
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// "another client was served in 3 ms", or why not: the phrase cases
    /// end with after doing something hostile.
    pub fn then_served(&self) -> Result<String, String> {
        match self.served(self.reply_wait()) {
            Ok(t) => Ok(format!("a client after it was served in {}", ms(t))),
            Err(e) => Err(format!("a client after it was not served: {e}")),
        }
    }
}

/// `12 ms`, `1.25 s`.
pub fn ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `512 KiB`, `3.0 MiB`.
pub fn size(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    }
}

/// One case's result, as every renderer sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub id: String,
    pub group: String,
    pub verdict: Verdict,
    pub line: String,
    pub seconds: f64,
}

/// Runs every selected case against the target; writes the table to
/// stdout and the files asked for. Whether no case failed.
pub fn run(options: CheckOptions) -> anyhow::Result<bool> {
    crate::lab::raise_descriptor_limit();
    let report = check(&options)?;
    // The files first: a closed stdout (`check ... | head`) must not lose them.
    if let Some(path) = &options.json {
        report::write_json(&report, path)?;
    }
    if let Some(path) = &options.junit {
        report::write_junit(&report, path)?;
    }
    report::table(&report, &mut std::io::stdout().lock())?;
    Ok(report.failed == 0)
}

/// Runs the cases and returns the report (no output but the progress bar).
pub fn check(options: &CheckOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let (server, addr, command) = match &options.target {
        Target::Addr(addr) => {
            // Nothing to check is an error, not 28 failed cases.
            if !matches!(addr, Addr::Udp(_)) {
                Peer::connect(addr, Duration::from_secs(2)).map_err(|e| anyhow::anyhow!(e))?;
            }
            (None, addr.clone(), None)
        }
        Target::Command {
            template,
            transport,
            listen,
        } => {
            let server = OutsideServer::start(template, *transport, listen.clone())?;
            let addr = server.addr().clone();
            let command = server.command().to_string();
            (Some(server), addr, Some(command))
        }
    };
    let dialect = Dialect::of(options.service);
    let connections = options
        .connections
        .unwrap_or(if options.quick { 100 } else { 1000 });
    let ctx = Ctx {
        addr: addr.clone(),
        dialect,
        quick: options.quick,
        connections,
        server: server.map(Mutex::new),
        baseline: Mutex::default(),
        learned: Mutex::default(),
    };
    warm_up(&ctx);
    let ctx = Arc::new(ctx);

    let selected: Vec<&Case> = all_cases()
        .into_iter()
        .filter(|c| selected(c.id, &options.only, &options.skip))
        .collect();
    let progress = report::Progress::new(selected.len());
    let mut outcomes = Vec::new();
    let mut gone: Option<String> = None;
    let mut rebased = false;
    for case in selected {
        progress.start(case.id);
        // The baseline the process group judges by is taken again where
        // the hostile peers begin: by then every worker has served (a
        // prefork child opens its database on its first request), so
        // what grows after is what the peers left behind.
        if !rebased && gone.is_none() && matches!(group_of(case.id), "peers" | "process") {
            if let Some(now) = settled(&ctx) {
                *ctx.baseline.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
            }
            rebased = true;
        }
        let start = Instant::now();
        let finding = match &gone {
            Some(why) => Finding::skip(why.clone()),
            None => run_case(&ctx, case),
        };
        let mut finding = finding;
        if gone.is_none() && case.id != process::STOP {
            if let Some(death) = died(&ctx, finding.verdict == Verdict::Fail) {
                finding = Finding::fail(format!("the server died during this case: {death}"));
                gone = Some(format!("the server died during {}: {death}", case.id));
            }
        }
        if case.id == process::STOP {
            gone = Some("the server was stopped".into());
        }
        tracing::debug!(case = case.id, verdict = finding.verdict.name(), line = %finding.line, "case done");
        outcomes.push(Outcome {
            id: case.id.to_string(),
            group: group_of(case.id).to_string(),
            verdict: finding.verdict,
            line: finding.line,
            seconds: start.elapsed().as_secs_f64(),
        });
        progress.finish_one();
    }
    progress.clear();
    // Whatever the selection, a server check started is stopped (the
    // stop case did it already when it ran) and its group killed.
    ctx.with_server(|s| {
        if s.exited().is_none() {
            s.stop();
        }
    });
    Ok(Report::new(
        addr.to_string(),
        command,
        options.service,
        options.quick,
        started.elapsed(),
        outcomes,
    ))
}

/// Whether case `id` is selected by `--only` and not by `--skip` (each
/// entry a case id or a group).
fn selected(id: &str, only: &[String], skip: &[String]) -> bool {
    let names = |list: &[String]| list.iter().any(|n| n == id || n == group_of(id));
    (only.is_empty() || names(only)) && !names(skip)
}

/// One exchange before the first case, so that the baseline footprint is
/// that of a server that has served (lazy pools and runtimes started), and
/// one request's round trip is known before anything is timed.
fn warm_up(ctx: &Ctx) {
    let latency = if ctx.is_stream() {
        ctx.served(ctx.reply_wait()).ok()
    } else {
        udp::round_trip(ctx)
    };
    if let Some(t) = latency {
        ctx.set_latency(t);
    }
    *ctx.baseline.lock().unwrap_or_else(|e| e.into_inner()) = settled(ctx);
}

/// The server's footprint once it holds still for 100 ms (or as it is
/// after 2 s): a server announces itself before its workers are all up,
/// and a connection that just closed takes a moment to go.
fn settled(ctx: &Ctx) -> Option<Footprint> {
    let mut last = ctx.footprint();
    let until = Instant::now() + Duration::from_secs(2);
    while last.is_some() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let now = ctx.footprint();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Runs one case under a watchdog: a case that outlives its budget (its
/// own deadlines failed it) fails, and the run goes on.
fn run_case(ctx: &Arc<Ctx>, case: &'static Case) -> Finding {
    let budget = if ctx.quick {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(60)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name(case.id.to_string())
        .spawn(move || {
            let _ = tx.send((case.run)(&worker));
        });
    if let Err(e) = spawned {
        return Finding::skip(format!("could not start: {e}"));
    }
    match rx.recv_timeout(budget) {
        Ok(finding) => finding,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Finding::fail(format!(
            "no verdict within {} s: something waited without a deadline",
            budget.as_secs()
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Finding::fail("the case panicked (a bug in check)")
        }
    }
}

/// Whether the server has died: its exit status (check started it), or
/// that it no longer accepts (an address; UDP cannot tell). After a failed
/// case a dying server gets a moment to finish dying, so that the case
/// that killed it is the one blamed.
fn died(ctx: &Ctx, failed: bool) -> Option<String> {
    if failed && ctx.server.is_some() {
        let until = Instant::now() + Duration::from_millis(500);
        while ctx.with_server(|s| s.exited().is_none()) == Some(true) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    match &ctx.server {
        Some(_) => ctx
            .with_server(|s| {
                s.exited().map(|status| {
                    let tail = s.last_words();
                    let status = server::describe_status(status);
                    if tail.is_empty() {
                        status
                    } else {
                        format!("{status} ({tail})")
                    }
                })
            })
            .flatten(),
        None if ctx.is_stream() => match Peer::connect(&ctx.addr, Duration::from_secs(1)) {
            Err(e) if e.contains("refused") || e.contains("No such file") => {
                Some("it no longer accepts connections".into())
            }
            _ => None,
        },
        None => None,
    }
}

/// The skip line of a stream-only case against a datagram server.
fn needs_stream(ctx: &Ctx) -> Option<Finding> {
    (!ctx.is_stream()).then(|| Finding::skip("a datagram server: see the udp group"))
}

/// Whether a read ended as a whole reply that matched.
fn is_reply(reply: &Reply, expect: &Expect) -> bool {
    reply.end != End::Full && expect.matches(&reply.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_and_skip_take_ids_and_groups() {
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(selected("framing.large", &[], &[]));
        assert!(selected("framing.large", &list(&["framing"]), &[]));
        assert!(!selected("peers.junk", &list(&["framing"]), &[]));
        assert!(selected("peers.junk", &list(&["framing", "peers.junk"]), &[]));
        assert!(!selected("peers.junk", &[], &list(&["peers"])));
        assert!(!selected(
            "framing.large",
            &list(&["framing"]),
            &list(&["framing.large"])
        ));
    }

    #[test]
    fn every_case_is_in_a_group_and_named_once() {
        let ids = case_ids();
        for id in &ids {
            assert!(GROUPS.contains(&group_of(id)), "{id}");
            assert_eq!(ids.iter().filter(|i| *i == id).count(), 1, "{id}");
        }
        assert!(is_case_or_group("udp") && is_case_or_group("process.stop"));
        assert!(!is_case_or_group("framing.nothing"));
    }
}
