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
mod server;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use crate::client::bench::Lane;
use crate::model::ModelKind;
pub use probe::SyscallMethod;
pub use row::{aggregate, Row, Spread};
pub use scenario::{Knobs, Outside, Scenario, Subject};
pub use server::ServerProcess;

/// Everything `socklab lab` was asked for.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub models: Vec<ModelKind>,
    /// Outside servers (`--server`), each a row beside the models.
    pub outside: Vec<Outside>,
    pub scenarios: Vec<&'static dyn Scenario>,
    pub knobs: Knobs,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub html: Option<PathBuf>,
    /// Draw the report from an earlier run's JSON instead of measuring.
    pub from: Option<PathBuf>,
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
    /// Outside servers, `NAME (SERVICE): CMD`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub outside: Vec<String>,
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
            outside: options
                .outside
                .iter()
                .map(|o| format!("{} ({}): {}", o.name, o.service.name(), o.command))
                .collect(),
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

impl LabOptions {
    /// The servers to measure: the models, then the outside servers.
    fn subjects(&self) -> Vec<Subject<'_>> {
        self.models
            .iter()
            .map(|m| Subject::Model(*m))
            .chain(self.outside.iter().map(Subject::Outside))
            .collect()
    }
}

pub fn run(options: LabOptions) -> anyhow::Result<()> {
    if let Some(from) = &options.from {
        return redraw(from, &options);
    }
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
    let servers = options.subjects();
    // Every (server, scenario) pair with rows, in the report's order, with
    // its scenario's place in the list.
    let pairs: Vec<(Subject, usize, &'static dyn Scenario)> = servers
        .iter()
        .flat_map(|server| {
            let scenarios = options.scenarios.iter().enumerate();
            scenarios.map(move |(place, &scenario)| (*server, place, scenario))
        })
        .filter(|(server, _, scenario)| runs_on(*scenario, server))
        .collect();
    let runs_of = |scenario: &dyn Scenario| options.knobs.runs_for(scenario);
    let progress = Progress::new(pairs.iter().map(|(_, _, s)| runs_of(*s)).sum());
    // Servers take turns: round r is every pair's r-th run, a scenario's
    // servers one after the other. Run back to back, a server's runs would
    // share one stretch of the machine's weather and its neighbour's
    // another; in turns, whatever the machine does meanwhile falls on all
    // of them alike, and a ratio of two servers compares like with like.
    let mut turns: Vec<usize> = (0..pairs.len()).collect();
    turns.sort_by_key(|&k| pairs[k].1); // Stable: servers keep their order.
    let rounds = pairs.iter().map(|(_, _, s)| runs_of(*s)).max().unwrap_or(0);
    // Each pair's runs so far, and the rows they make (medians and ranges).
    let mut runs: Vec<Vec<Vec<Row>>> = vec![Vec::new(); pairs.len()];
    let mut rows: Vec<Vec<Row>> = vec![Vec::new(); pairs.len()];
    for round in 0..rounds {
        for &k in &turns {
            let (server, _, scenario) = pairs[k];
            if round >= runs_of(scenario) {
                continue;
            }
            progress.start(server.name(), scenario, round, runs_of(scenario));
            // Kernel cost is counted in the first run only: it varies
            // little, and counting it takes a window of its own.
            let kernel_cost = (round == 0).then_some(method);
            runs[k].push(measure_once(server, scenario, &options.knobs, kernel_cost));
            rows[k] = aggregate(runs[k].clone());
            if round + 1 == runs_of(scenario) {
                for row in &rows[k] {
                    progress.note(&export::summary_line(row));
                }
            }
            progress.step();
        }
        report.rows = rows.concat();
        relate(&options.scenarios, &mut report.rows);
        // After every round: a late failure loses nothing.
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

/// Whether `scenario` has rows for `server`: a model it is about, or an
/// outside server that speaks its service.
fn runs_on(scenario: &dyn Scenario, server: &Subject) -> bool {
    match server {
        Subject::Model(m) => scenario.applies_to(*m),
        Subject::Outside(o) => scenario.takes_outside() && scenario.service() == o.service,
    }
}

/// Every run of `scenario` on `server`, one after the other, as one set of
/// rows (medians and ranges): a rerun of one server's scenario.
fn measure_runs(server: Subject, scenario: &dyn Scenario, knobs: &Knobs, method: SyscallMethod) -> Vec<Row> {
    let each: Vec<Vec<Row>> = (0..knobs.runs_for(scenario))
        .map(|run| measure_once(server, scenario, knobs, (run == 0).then_some(method)))
        .collect();
    aggregate(each)
}

/// One run of `scenario` on `server`; a failure is a row that says why.
fn measure_once(
    server: Subject,
    scenario: &dyn Scenario,
    knobs: &Knobs,
    kernel_cost: Option<SyscallMethod>,
) -> Vec<Row> {
    scenario.measure(server, knobs, kernel_cost).unwrap_or_else(|e| {
        vec![Row {
            error: Some(format!("{e:#}")),
            ..server.row(scenario.name())
        }]
    })
}

/// Figures relative to other rows (unp's over iterative), once they are in.
fn relate(scenarios: &[&'static dyn Scenario], rows: &mut [Row]) {
    for s in scenarios {
        s.relate(rows);
    }
}

/// The (server, scenario) pairs with a row far outside its peers' or its
/// own runs', as each scenario judges, with why.
fn odd_ones(
    scenarios: &[&'static dyn Scenario],
    rows: &[Row],
) -> Vec<(String, &'static dyn Scenario, String)> {
    let mut odd: Vec<(String, &'static dyn Scenario, String)> = Vec::new();
    for &s in scenarios {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.scenario == s.name() && r.ok()).collect();
        for r in &mine {
            let Some(why) = s.anomaly(r, &mine) else { continue };
            if !odd
                .iter()
                .any(|(m, sc, _)| *m == r.model && sc.name() == s.name())
            {
                odd.push((r.model.clone(), s, why));
            }
        }
    }
    odd
}

/// Anomalies are caught, not printed: each odd (server, scenario) is run
/// again once; the new rows replace the old, and if they are odd too they
/// keep a warning saying what was odd. Whether anything was rerun.
fn rerun_the_odd(
    options: &LabOptions,
    method: SyscallMethod,
    rows: &mut Vec<Row>,
    progress: &Progress,
) -> bool {
    let servers = options.subjects();
    let odd = odd_ones(&options.scenarios, rows);
    let mine =
        |r: &Row, name: &str, scenario: &dyn Scenario| r.model == name && r.scenario == scenario.name();
    for (name, scenario, why) in &odd {
        let Some(server) = servers.iter().find(|s| s.name() == name) else {
            continue;
        };
        progress.note(&format!("{name} {}: {why}; running it again", scenario.name()));
        let fresh = measure_runs(*server, *scenario, &options.knobs, method);
        let at = rows
            .iter()
            .position(|r| mine(r, name, *scenario))
            .unwrap_or(rows.len());
        rows.retain(|r| !mine(r, name, *scenario));
        let at = at.min(rows.len());
        rows.splice(at..at, fresh);
    }
    // What is still odd after its rerun is shown with its warning.
    for (name, scenario, why) in odd_ones(&options.scenarios, rows) {
        if odd
            .iter()
            .any(|(m, s, _)| *m == name && s.name() == scenario.name())
        {
            for r in rows.iter_mut().filter(|r| mine(r, &name, scenario)) {
                r.anomaly = Some(format!("{why} (and again when run a second time)"));
            }
        }
    }
    !odd.is_empty()
}

/// `lab --from RUN.json`: an earlier run's rows, drawn again by this build
/// (a report made before a renderer changed, or a run from another machine).
fn redraw(from: &Path, options: &LabOptions) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?;
    let report = export::json::parse(&text)
        .with_context(|| format!("{} is not the JSON of a socklab lab run", from.display()))?;
    export::write_all(&report, options)?;
    print!("{}", export::tables(&report.rows));
    if let Some(html) = &options.html {
        println!("report: {}", absolute(html).display());
    }
    Ok(())
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
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} {elapsed}, about {eta} left {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress { bar }
    }

    fn start(&self, server: &str, scenario: &dyn Scenario, run: usize, runs: usize) {
        if let Some(bar) = &self.bar {
            let of = if runs > 1 {
                format!(" (run {} of {runs})", run + 1)
            } else {
                String::new()
            };
            bar.set_message(format!("{server}: {}{of}", scenario.name()));
        }
    }

    /// One run done.
    fn step(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
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
