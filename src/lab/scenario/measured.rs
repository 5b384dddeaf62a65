//! What the scenarios share: a server started and measured from outside
//! (`Measured`), the bench options the lab drives it with, and idle
//! connections held open.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::bench::{self, BenchOptions, BenchReport, Load, Payload};
use crate::lab::probe::{self, Costs, PerfCounter, Sample, SyscallMethod};
use crate::lab::{Row, ServerProcess};

use super::{Knobs, Subject};
use crate::model::ModelKind;
use crate::service::ServiceKind;

/// How long a starved client waits before it counts as an error: long
/// enough for any model that serves at all, short enough to keep the lab
/// at about three minutes.
pub const STARVED_AFTER: Duration = Duration::from_secs(2);

/// The one place the lab builds bench options.
pub fn bench_options(
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

/// Opens idle connections until `held` has `total`.
pub fn hold(addr: &str, total: usize, held: &mut Vec<TcpStream>) -> anyhow::Result<()> {
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
pub fn settle_accepted(port: u16, want: u64, quiet: Duration) -> u64 {
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

pub fn port_of(addr: &str) -> anyhow::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .context("the server announced an address without a port")
}

/// A started server, and what it cost before the load.
pub struct Measured {
    pub process: ServerProcess,
    pub sample_before: Sample,
    /// Costs at start: the baseline of memory per connection.
    pub costs_start: Costs,
    /// What it cost under the load, at its end.
    pub costs_now: Costs,
    /// CPU before the load.
    pub cpu_before: Duration,
}

impl Measured {
    /// Echo load: `knobs.clients` clients sending `size`-byte messages for
    /// `knobs.duration`, recorded into `row` with its requests/s.
    pub fn echo_for(&mut self, knobs: &Knobs, size: usize, row: &mut Row) -> anyhow::Result<BenchReport> {
        let options = self.echo_load(knobs, size, Load::Duration(knobs.duration))?;
        let report = self.drive(&options)?;
        self.record(row, &report, Some(knobs.duration));
        row.throughput_rps = Some(report.throughput_rps);
        Ok(report)
    }

    /// The scenarios' echo load: `knobs.clients` clients, `size`-byte messages.
    pub fn echo_load(&self, knobs: &Knobs, size: usize, load: Load) -> anyhow::Result<BenchOptions> {
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
    pub fn active_client(&self, active_for: Duration) -> anyhow::Result<BenchOptions> {
        bench_options(
            &self.process.addr,
            1,
            Load::Duration(active_for),
            Payload::Text(b"are you there?".to_vec()),
            STARVED_AFTER,
        )
    }

    /// Runs the bench against the server.
    pub fn drive(&mut self, options: &BenchOptions) -> anyhow::Result<BenchReport> {
        self.cpu_before = self.process.sample().map_or(Duration::ZERO, |s| s.cpu);
        let report = bench::measure(options)?;
        self.costs_now = probe::costs(self.process.pid());
        Ok(report)
    }

    /// Runs the bench once more with the kernel's counters on: context
    /// switches and system calls per reply.
    pub fn count_kernel_cost(
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

    pub fn peak_rss_kb(&self) -> u64 {
        self.process.peaks().rss_kb
    }

    /// Forgets the peaks so far (a new c10k step).
    pub fn restart_watch(&mut self) {
        self.process.reset_peaks();
    }

    /// What every scenario records: who was served, latency, CPU, kernel
    /// cost, memory, peaks. A client counts as served when its first reply
    /// came within the load's `window` (a timed run): one that timed out,
    /// connected again and was answered only once the others had gone home
    /// was not served by the run.
    pub fn record(&self, row: &mut Row, report: &BenchReport, window: Option<Duration>) {
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

/// `socklab serve`'s arguments for `model` serving `service`, then `extra`.
pub fn model_args(model: ModelKind, service: ServiceKind, extra: &[&str]) -> Vec<String> {
    ["--model", model.name(), "--service", service.name()]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// `server` serving `service` (a model with `extra` flags; an outside server
/// as its command says), and its first sample.
pub fn start(server: Subject, service: ServiceKind, extra: &[&str]) -> anyhow::Result<Measured> {
    let process = match server {
        Subject::Model(model) => ServerProcess::start(&model_args(model, service, extra))?,
        Subject::Outside(o) => ServerProcess::start_outside(&o.command, None)?,
    };
    Measured::new(process)
}

impl Measured {
    /// A started server, with its first sample.
    pub fn new(process: ServerProcess) -> anyhow::Result<Measured> {
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
}
