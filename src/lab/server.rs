//! A server under measurement: `socklab serve` running a model, or an
//! outside server's own command (`lab --server`), started pinned (and, for
//! the cost scenario, in a cgroup of its own), watched from /proc while it
//! runs, and stopped with SIGTERM, then SIGKILL, on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::cgroup::CpuGroup;
use super::{pin, probe};
use crate::check::server::{OutsideServer, Transport};

/// A server process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct ServerProcess {
    pub addr: String,
    running: Running,
    /// Keeps sampling /proc until dropped; holds the peaks seen.
    peaks: Arc<Mutex<probe::Sample>>,
    sampling: Arc<AtomicBool>,
    /// The cgroup the server runs in, when it was given one: removed after
    /// the server is gone (fields drop after `Drop::drop` has stopped it).
    group: Option<CpuGroup>,
}

enum Running {
    Own(Own),
    /// An outside server, started and stopped as `check` does (its whole
    /// process group, its command under `sh -c`).
    Outside(OutsideServer),
}

/// A `socklab serve` of the lab's own.
struct Own {
    child: Child,
    /// The `accepts per worker:` counts the server logged (at shutdown).
    spread: Arc<Mutex<Option<Vec<u64>>>>,
    /// Closed when the server's stderr has been read to its end.
    stderr_done: mpsc::Receiver<()>,
    /// The server's whole CPU time (user + system, its reaped children
    /// included), from wait4's rusage once it has exited.
    exit_cpu: Option<Duration>,
}

impl ServerProcess {
    /// How long a server may take to announce its address.
    const START_TIMEOUT: Duration = Duration::from_secs(10);

    /// `socklab serve ARGS`, pinned to the server's cores.
    pub fn start(args: &[String]) -> anyhow::Result<ServerProcess> {
        Self::launch(args, true, None)
    }

    /// As [`start`](ServerProcess::start), on every core when not `pinned`
    /// (the work scenario: how many cores a model can use is the question).
    pub fn start_pinned(args: &[String], pinned: bool) -> anyhow::Result<ServerProcess> {
        Self::launch(args, pinned, None)
    }

    /// As [`start`](ServerProcess::start), in a cgroup of its own, whose
    /// `cpu.stat` then counts every CPU microsecond of the server's tree.
    pub fn start_grouped(args: &[String], group: CpuGroup) -> anyhow::Result<ServerProcess> {
        Self::launch(args, true, Some(group))
    }

    /// An outside server's command (`{port}` filled in), pinned as the
    /// models are, in `group` if given; ready once it accepts.
    pub fn start_outside(command: &str, group: Option<CpuGroup>) -> anyhow::Result<ServerProcess> {
        let server = OutsideServer::start_with(command, Transport::Tcp, None, |cmd| {
            pin::server(cmd);
            if let Some(group) = &group {
                // SAFETY: the hook only makes async-signal-safe calls.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(cmd, group.entering());
                }
            }
        })?;
        Ok(Self::watched(
            server.addr().to_string(),
            Running::Outside(server),
            group,
        ))
    }

    /// The CPU the server's cgroup has counted, if it has one.
    pub fn group_cpu(&self) -> Option<Duration> {
        self.group.as_ref()?.usage()
    }

    fn launch(args: &[String], pinned: bool, group: Option<CpuGroup>) -> anyhow::Result<ServerProcess> {
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
        let own = Own {
            child,
            spread,
            stderr_done,
            exit_cpu: None,
        };
        Ok(Self::watched(addr.to_string(), Running::Own(own), group))
    }

    fn watched(addr: String, running: Running, group: Option<CpuGroup>) -> ServerProcess {
        let server = ServerProcess {
            addr,
            running,
            peaks: Arc::default(),
            sampling: Arc::new(AtomicBool::new(true)),
            group,
        };
        server.watch();
        server
    }

    pub fn pid(&self) -> i32 {
        match &self.running {
            Running::Own(own) => own.child.id() as i32,
            Running::Outside(server) => server.pid(),
        }
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
    fn watch(&self) {
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
        match &mut self.running {
            Running::Own(own) => own.stop(),
            Running::Outside(server) => {
                server.stop();
            }
        }
    }

    /// The server's CPU in all (user + system, reaped children included),
    /// once [`stop`](ServerProcess::stop) has seen it exit; `None` for an
    /// outside server (its shell reaps it, not the lab).
    pub fn exit_cpu(&self) -> Option<Duration> {
        match &self.running {
            Running::Own(own) => own.exit_cpu.filter(|c| !c.is_zero()),
            Running::Outside(_) => None,
        }
    }

    /// How its workers shared the connections, from the `accepts per
    /// worker:` line it logged at shutdown (after [`stop`](ServerProcess::stop));
    /// `None` for a model that has no workers to count, or an outside server.
    pub fn accepts_per_worker(&self) -> Option<Vec<u64>> {
        let Running::Own(own) = &self.running else {
            return None;
        };
        // The line comes as the server exits: wait for its stderr to end.
        let _ = own.stderr_done.recv_timeout(Duration::from_secs(2));
        own.spread.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Own {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stop(&mut self) {
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
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
