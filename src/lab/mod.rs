//! `socklab lab`: every model side by side, measured, in one command.
//!
//! For each model and scenario the lab starts `socklab serve` as a child
//! process on loopback (port 0, reading its `listening on` line), drives it
//! with the bench engine, watches it from outside (through /proc: CPU time,
//! PSS, threads, children, accepted connections; through perf: context
//! switches and system calls), stops it with SIGTERM, and writes a
//! [`Row`]. A scenario run several times (`--runs`) has its median in the
//! row and each figure's min and max beside it. The exports ([`Report`]:
//! the run's [`Meta`] and its rows) are rewritten after every model, so a
//! late failure loses nothing; a model that fails has its failure in its row
//! and the lab goes on.

mod cgroup;
pub mod export;
pub(crate) mod probe;
mod row;
pub mod scenario;

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use crate::client::bench::Lane;
use crate::model::ModelKind;
pub use probe::SyscallMethod;
pub use row::{aggregate, Row, Spread};
pub use scenario::{Knobs, Scenario};

/// Everything `socklab lab` was asked for.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub models: Vec<ModelKind>,
    pub scenarios: Vec<&'static dyn Scenario>,
    pub knobs: Knobs,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

/// Where the figures came from: the machine, the build, the method and
/// every parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// When the lab started, UTC.
    pub date: String,
    pub socklab_version: String,
    pub commit: String,
    pub kernel: String,
    pub cores: usize,
    pub cpu: String,
    /// The bench engines that drove the clients.
    pub engine: String,
    pub pinning: String,
    pub memory: String,
    pub syscalls: String,
    pub context_switches: String,
    pub command: String,
    pub models: Vec<String>,
    /// Every scenario's parameters, `runs` included.
    pub parameters: serde_json::Value,
}

impl Meta {
    fn collect(options: &LabOptions, method: SyscallMethod) -> Meta {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let kernel = format!(
            "{} {}",
            read("/proc/sys/kernel/ostype").trim(),
            read("/proc/sys/kernel/osrelease").trim()
        );
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                Some(
                    l.strip_prefix("model name")?
                        .split_once(':')?
                        .1
                        .trim()
                        .to_string(),
                )
            })
            .unwrap_or_else(|| "unknown".into());
        Meta {
            date: utc_now(),
            socklab_version: env!("CARGO_PKG_VERSION").into(),
            commit: option_env!("SOCKLAB_COMMIT").unwrap_or("unknown").into(),
            kernel,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            engine: "not yet known".into(),
            pinning: pin::describe(),
            memory: "PSS (/proc/PID/smaps_rollup), summed over the server's process tree".into(),
            syscalls: method.describe().into(),
            context_switches: "voluntary + involuntary, /proc/PID/task/*/status of every thread of the server's process tree, before and after the load".into(),
            // The program by its name, not where it was built.
            command: std::env::args()
                .enumerate()
                .map(|(i, a)| match i {
                    0 => a.rsplit('/').next().unwrap_or(&a).to_string(),
                    _ => a,
                })
                .collect::<Vec<_>>()
                .join(" "),
            models: options.models.iter().map(|m| m.to_string()).collect(),
            parameters: options.knobs.describe(&options.scenarios),
        }
    }
}

/// The lab's result: what `--json` writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub meta: Meta,
    pub rows: Vec<Row>,
}

pub fn run(options: LabOptions) -> anyhow::Result<()> {
    // Before any model runs: a report that cannot be written is known now,
    // not after three minutes.
    let mut report = Report {
        meta: Meta::collect(&options, SyscallMethod::Proc),
        rows: Vec::new(),
    };
    export::write_all(&report, &options)?;
    raise_descriptor_limit();
    let method = SyscallMethod::detect();
    report.meta.syscalls = method.describe().into();
    report.meta.context_switches = method.describe_context_switches().into();
    pin::load_generator();
    let total = options.models.len() * options.scenarios.len();
    let progress = Progress::new(total);
    for &model in &options.models {
        for &scenario in &options.scenarios {
            if !scenario.applies_to(model) {
                progress.skip();
                continue;
            }
            progress.start(model, scenario);
            for row in measure_runs(model, scenario, &options.knobs, method) {
                progress.finish(&row);
                report.rows.push(row);
            }
        }
        relate(&options.scenarios, &mut report.rows);
        // After every model: a late failure loses nothing.
        report.meta.engine = engines(&report.rows);
        export::write_all(&report, &options)?;
    }
    if rerun_the_odd(&options, method, &mut report.rows, &progress) {
        relate(&options.scenarios, &mut report.rows);
        export::write_all(&report, &options)?;
    }
    progress.clear();
    print!("{}", export::tables(&report.rows));
    for path in [&options.json, &options.markdown].into_iter().flatten() {
        eprintln!("wrote {}", absolute(path).display());
    }
    if let Some(html) = &options.html {
        println!("report: {}", absolute(html).display());
    }
    if report.rows.iter().all(|r| r.error.is_some()) {
        bail!("no model ran");
    }
    Ok(())
}

/// Every run of `scenario` on `model`, as one set of rows (medians and
/// ranges). Kernel cost is counted in the first run only: it varies
/// little, and counting it takes a window of its own.
fn measure_runs(model: ModelKind, scenario: &dyn Scenario, knobs: &Knobs, method: SyscallMethod) -> Vec<Row> {
    let each: Vec<Vec<Row>> = (0..knobs.runs_for(scenario))
        .map(|run| {
            let kernel_cost = (run == 0).then_some(method);
            scenario.measure(model, knobs, kernel_cost).unwrap_or_else(|e| {
                vec![Row {
                    error: Some(format!("{e:#}")),
                    ..Row::new(model.name(), scenario.name())
                }]
            })
        })
        .collect();
    aggregate(each)
}

/// Figures relative to other rows (unp's over iterative), once they are in.
fn relate(scenarios: &[&'static dyn Scenario], rows: &mut [Row]) {
    for s in scenarios {
        s.relate(rows);
    }
}

/// The (model, scenario) pairs with a row far outside its peers' or its
/// own runs', as each scenario judges.
fn odd_ones(
    scenarios: &[&'static dyn Scenario],
    rows: &[Row],
) -> Vec<(ModelKind, &'static dyn Scenario, String)> {
    let mut odd = Vec::new();
    for &s in scenarios {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.scenario == s.name() && r.ok()).collect();
        for r in &mine {
            let Some(why) = s.anomaly(r, &mine) else { continue };
            let Ok(model) = <ModelKind as clap::ValueEnum>::from_str(&r.model, true) else {
                continue;
            };
            if !odd
                .iter()
                .any(|(m, sc, _): &(ModelKind, &dyn Scenario, String)| *m == model && sc.name() == s.name())
            {
                odd.push((model, s, why));
            }
        }
    }
    odd
}

/// Anomalies are caught, not printed: each odd (model, scenario) is run
/// again once; the new rows replace the old, and if they are odd too they
/// keep a warning saying what was odd. Whether anything was rerun.
fn rerun_the_odd(
    options: &LabOptions,
    method: SyscallMethod,
    rows: &mut Vec<Row>,
    progress: &Progress,
) -> bool {
    let odd = odd_ones(&options.scenarios, rows);
    for (model, scenario, why) in &odd {
        progress.note(&format!("{model} {scenario}: {why}; running it again"));
        let fresh = measure_runs(*model, *scenario, &options.knobs, method);
        let at = rows
            .iter()
            .position(|r| r.model == model.name() && r.scenario == scenario.name())
            .unwrap_or(rows.len());
        rows.retain(|r| !(r.model == model.name() && r.scenario == scenario.name()));
        let at = at.min(rows.len());
        rows.splice(at..at, fresh);
    }
    // What is still odd after its rerun is shown with its warning.
    for (model, scenario, why) in odd_ones(&options.scenarios, rows) {
        if odd
            .iter()
            .any(|(m, s, _)| *m == model && s.name() == scenario.name())
        {
            for r in rows
                .iter_mut()
                .filter(|r| r.model == model.name() && r.scenario == scenario.name())
            {
                r.anomaly = Some(format!("{why} (and again when run a second time)"));
            }
        }
    }
    !odd.is_empty()
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The engines named in the rows, once each.
fn engines(rows: &[Row]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in rows.iter().filter_map(|r| r.engine.as_deref()) {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    if seen.is_empty() {
        "none ran".into()
    } else {
        seen.join(", ")
    }
}

/// Ten thousand idle connections need ten thousand descriptors here.
pub(crate) fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Now as `2026-11-23 14:30:05 UTC`, from the system clock alone.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A `socklab serve` child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct ServerProcess {
    child: Child,
    pub addr: String,
    /// Keeps sampling /proc until dropped; holds the peaks seen.
    peaks: Arc<Mutex<probe::Sample>>,
    sampling: Arc<AtomicBool>,
    /// The `accepts per worker:` counts the server logged (at shutdown).
    spread: Arc<Mutex<Option<Vec<u64>>>>,
    /// Closed when the server's stderr has been read to its end.
    stderr_done: mpsc::Receiver<()>,
    /// The server's whole CPU time (user + system, its reaped children
    /// included), from wait4's rusage once it has exited.
    exit_cpu: Option<Duration>,
    /// The cgroup the server runs in, when it was given one: removed after
    /// the server is gone (fields drop after `Drop::drop` has stopped it).
    group: Option<cgroup::CpuGroup>,
}

impl ServerProcess {
    /// How long a server may take to announce its address.
    const START_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn start(args: &[String]) -> anyhow::Result<ServerProcess> {
        Self::start_pinned(args, true)
    }

    /// As [`start`](ServerProcess::start), on every core when not `pinned`
    /// (the work scenario: how many cores a model can use is the question).
    pub fn start_pinned(args: &[String], pinned: bool) -> anyhow::Result<ServerProcess> {
        Self::launch(args, pinned, None)
    }

    /// As [`start`](ServerProcess::start), in a cgroup of its own, whose
    /// `cpu.stat` then counts every CPU microsecond of the server's tree.
    pub fn start_grouped(args: &[String], group: cgroup::CpuGroup) -> anyhow::Result<ServerProcess> {
        Self::launch(args, true, Some(group))
    }

    /// The CPU the server's cgroup has counted, if it has one.
    pub fn group_cpu(&self) -> Option<Duration> {
        self.group.as_ref()?.usage()
    }

    fn launch(
        args: &[String],
        pinned: bool,
        group: Option<cgroup::CpuGroup>,
    ) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("cannot find the socklab executable")?;
        let mut command = Command::new(exe);
        if pinned {
            pin::server(&mut command);
        } else {
            pin::every_core(&mut command);
        }
        // A lab that is killed takes its server with it (and the server its
        // children): nothing outlives the measurement.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
            if let Some(group) = &group {
                std::os::unix::process::CommandExt::pre_exec(&mut command, group.entering());
            }
        }
        let mut child = command
            .arg("serve")
            .args(args)
            .args(["--listen", "tcp:127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start socklab serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The server's last words, if it dies before announcing itself.
        let last_error = Arc::new(Mutex::new(String::new()));
        let sink = last_error.clone();
        let spread = Arc::new(Mutex::new(None));
        let spread_sink = spread.clone();
        let (done, stderr_done) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("error:") {
                    *sink.lock().unwrap_or_else(|e| e.into_inner()) = line;
                } else if let Some(counts) = crate::model::spread::parse_line(&line) {
                    *spread_sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(counts);
                }
            }
            drop(done);
        });
        let line = rx.recv_timeout(Self::START_TIMEOUT).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(50)); // Let stderr's reader finish.
            let why = last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            bail!(
                "the server did not start: {}",
                if why.is_empty() {
                    "no address announced"
                } else {
                    &why
                }
            );
        };
        let mut server = ServerProcess {
            addr: addr.to_string(),
            child,
            peaks: Arc::default(),
            sampling: Arc::new(AtomicBool::new(true)),
            spread,
            stderr_done,
            exit_cpu: None,
            group,
        };
        server.watch();
        Ok(server)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn sample(&self) -> Option<probe::Sample> {
        probe::sample(self.pid())
    }

    /// The highest memory, threads and children seen since start.
    pub fn peaks(&self) -> probe::Sample {
        *self.peaks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the peaks seen so far.
    pub fn reset_peaks(&self) {
        let mut p = self.peaks.lock().unwrap_or_else(|e| e.into_inner());
        p.rss_kb = 0;
        p.threads = 0;
        p.children = 0;
    }

    /// Samples every 50 ms in the background, keeping the peaks (a fork
    /// server's children come and go between two looks at the end).
    fn watch(&mut self) {
        let (pid, peaks, sampling) = (self.pid(), self.peaks.clone(), self.sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let Some(now) = probe::sample(pid) else { break };
                {
                    let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                    p.rss_kb = p.rss_kb.max(now.rss_kb);
                    p.threads = p.threads.max(now.threads);
                    p.children = p.children.max(now.children);
                    p.cpu = now.cpu;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }

    /// SIGTERM, then SIGKILL if it does not exit within a few seconds.
    pub fn stop(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        if self.exited() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if self.reap(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.reap(true);
    }

    fn exited(&self) -> bool {
        self.exit_cpu.is_some()
    }

    /// Waits for the server (at once, or `block`ing) with wait4(2), which
    /// also says what CPU it used in all: its own and that of every child
    /// it reaped, to the microsecond, as Stevens' servers printed from
    /// getrusage when stopped. Whether it is gone.
    fn reap(&mut self, block: bool) -> bool {
        if self.exited() {
            return true;
        }
        let flags = if block { 0 } else { libc::WNOHANG };
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value; wait4 only writes it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: wait4 writes only `status` and `usage`, both ours.
            let r = unsafe { libc::wait4(self.pid(), &mut status, flags, &mut usage) };
            if r == self.pid() {
                let time = |t: libc::timeval| {
                    Duration::from_secs(t.tv_sec.max(0) as u64)
                        + Duration::from_micros(t.tv_usec.max(0) as u64)
                };
                self.exit_cpu = Some(time(usage.ru_utime) + time(usage.ru_stime));
                return true;
            }
            if r == 0 {
                return false; // Still running.
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // Reaped already (ECHILD): gone, its rusage unknown.
                self.exit_cpu.get_or_insert(Duration::ZERO);
                return true;
            }
        }
    }

    /// The server's CPU in all (user + system, reaped children included),
    /// once [`stop`](ServerProcess::stop) has seen it exit.
    pub fn exit_cpu(&self) -> Option<Duration> {
        self.exit_cpu.filter(|c| !c.is_zero())
    }

    /// How its workers shared the connections, from the `accepts per
    /// worker:` line it logged at shutdown (after [`stop`](ServerProcess::stop));
    /// `None` for a model that has no workers to count.
    pub fn accepts_per_worker(&self) -> Option<Vec<u64>> {
        // The line comes as the server exits: wait for its stderr to end.
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        self.spread.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Keeping the load generator and the server on different cores.
///
/// On loopback a client and a server wake each other for every request, and
/// the scheduler likes to pull the woken one onto the waker's core: some
/// runs then share one core and show half the throughput of the next. So
/// the lab pins itself (the bench) to the first core and each server, with
/// its threads and children, to the others, as `taskset` would.
pub(crate) mod pin {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;

    /// The machine's cores, not this process's: once the lab has pinned
    /// itself to one, `available_parallelism` (its affinity) says 1.
    pub fn cores() -> usize {
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        if online >= 1 {
            online as usize
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    fn set(cpus: impl Iterator<Item = usize>) -> nix::Result<()> {
        let mut set = CpuSet::new();
        for cpu in cpus {
            set.set(cpu)?;
        }
        sched_setaffinity(Pid::from_raw(0), &set)
    }

    /// How the lab placed itself and the servers, for the report.
    pub fn describe() -> String {
        match cores() {
            n if n >= 2 => format!(
                "load generator (lab and bench) on CPU 0, each server on CPU{} 1{}",
                if n > 2 { "s" } else { "" },
                if n > 2 {
                    format!("-{}", n - 1)
                } else {
                    String::new()
                }
            ),
            _ => "none: one core, shared by the load generator and the server".into(),
        }
    }

    /// The lab process, whose threads run the bench: the first core.
    pub fn load_generator() {
        if cores() >= 2 {
            if let Err(e) = set(0..1) {
                tracing::debug!("cannot pin the load generator: {e}");
            }
        }
    }

    /// A server about to be started on every core, the load generator's too.
    pub fn every_core(command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let n = cores();
        // SAFETY: as in `server` below.
        unsafe {
            command.pre_exec(move || {
                let _ = set(0..n);
                Ok(())
            });
        }
    }

    /// A server about to be started: every core but the first.
    pub fn server(command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let n = cores();
        if n >= 2 {
            // SAFETY: between fork and exec the hook only makes one system
            // call on a stack value; it allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    let _ = set(1..n);
                    Ok(())
                });
            }
        }
    }
}

/// A line per measurement on stderr, and a bar when stderr is a terminal.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress { bar }
    }

    fn start(&self, model: ModelKind, scenario: &dyn Scenario) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{model}: {}", scenario.name()));
        }
    }

    fn skip(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn finish(&self, row: &Row) {
        let line = export::summary_line(row);
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    /// A line of its own, above the bar.
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
