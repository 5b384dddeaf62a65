//! `socklab lab`: every model side by side, measured, in one command.
//!
//! For each model and scenario the lab starts `socklab serve` as a child
//! process on loopback (port 0, reading its `listening on` line), drives it
//! with the bench engine, watches it from outside through /proc (CPU time,
//! peak memory, threads, children), stops it with SIGTERM, and writes a
//! [`Row`]. The exports are rewritten after every model, so a late failure
//! loses nothing; a model that fails has its failure in its row and the lab
//! goes on.

pub mod export;
mod probe;
mod scenario;

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::model::ModelKind;
pub use scenario::{Knobs, Scenario};

/// Everything `socklab lab` was asked for.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub models: Vec<ModelKind>,
    pub scenarios: Vec<Scenario>,
    pub knobs: Knobs,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

/// One measurement: a model under a scenario. Fields that do not apply to
/// the scenario are absent from the exports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub model: String,
    pub scenario: String,
    /// delay: time until the last reply, and what theory says it should be.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub makespan_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub theory_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub throughput_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p99_us: Option<u64>,
    /// Requests answered and failed (timeouts of starved clients included).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replies: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errors: Option<u64>,
    /// Server CPU (user + system, children included) during the scenario.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_s: Option<f64>,
    /// Server CPU per reply, in microseconds (throughput).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_per_request_us: Option<f64>,
    /// Peak resident memory of the server and its children.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_rss_kb: Option<u64>,
    /// idle: server memory per idle connection held.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rss_per_conn_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idle_connections: Option<u64>,
    /// Most threads and child processes seen.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_threads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_children: Option<u64>,
    /// Why the row has no numbers (the server would not start, hung, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

pub fn run(options: LabOptions) -> anyhow::Result<()> {
    pin::load_generator();
    let total = options.models.len() * options.scenarios.len();
    let progress = Progress::new(total);
    let mut rows: Vec<Row> = Vec::new();
    for &model in &options.models {
        for &scenario in &options.scenarios {
            progress.start(model, scenario);
            let row = scenario::measure(model, scenario, &options.knobs).unwrap_or_else(|e| Row {
                model: model.to_string(),
                scenario: scenario.to_string(),
                error: Some(format!("{e:#}")),
                ..Row::default()
            });
            progress.finish(&row);
            rows.push(row);
        }
        // After every model: a late failure loses nothing.
        export::write_all(&rows, &options).context("cannot write the report")?;
    }
    progress.clear();
    print!("{}", export::markdown::table(&rows));
    for path in [&options.json, &options.markdown, &options.html]
        .into_iter()
        .flatten()
    {
        eprintln!("wrote {}", path.display());
    }
    if rows.iter().all(|r| r.error.is_some()) {
        bail!("no model ran");
    }
    Ok(())
}

/// A `socklab serve` child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct ServerProcess {
    child: Child,
    pub addr: String,
    /// Keeps sampling /proc until dropped; holds the peaks seen.
    peaks: Arc<Mutex<probe::Sample>>,
    sampling: Arc<AtomicBool>,
}

impl ServerProcess {
    /// How long a server may take to announce its address.
    const START_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn start(args: &[String]) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("cannot find the socklab executable")?;
        let mut command = Command::new(exe);
        pin::server(&mut command);
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
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("error:") {
                    *sink.lock().unwrap_or_else(|e| e.into_inner()) = line;
                }
            }
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
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Keeping the load generator and the server on different cores.
///
/// On loopback a client and a server wake each other for every request, and
/// the scheduler likes to pull the woken one onto the waker's core: some
/// runs then share one core and show half the throughput of the next. So
/// the lab pins itself (the bench) to the first core and each server, with
/// its threads and children, to the others, as `taskset` would.
mod pin {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;

    fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    fn set(cpus: impl Iterator<Item = usize>) -> nix::Result<()> {
        let mut set = CpuSet::new();
        for cpu in cpus {
            set.set(cpu)?;
        }
        sched_setaffinity(Pid::from_raw(0), &set)
    }

    /// The lab process, whose threads run the bench: the first core.
    pub fn load_generator() {
        if cores() >= 2 {
            if let Err(e) = set(0..1) {
                tracing::debug!("cannot pin the load generator: {e}");
            }
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

    fn start(&self, model: ModelKind, scenario: Scenario) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{model}: {scenario}"));
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

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
