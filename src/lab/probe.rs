//! Measuring a server process from the outside, through /proc: CPU time,
//! resident memory, threads and child processes, summed over its children
//! (fork and prefork serve in children); and, looked at on purpose rather
//! than sampled, the costs that say why a model wins: proportional memory
//! (PSS), context switches, system calls, accepted connections.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One look at a process and its children.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User + system CPU of the process, its live children, and the
    /// children it has already reaped.
    pub cpu: Duration,
    /// Resident memory of the process and its live children, in KiB.
    pub rss_kb: u64,
    /// Threads of the process and its children.
    pub threads: u64,
    /// Live child processes.
    pub children: u64,
}

/// The clock ticks /proc counts CPU time in.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Fields of /proc/PID/stat after the command name (which may hold spaces).
fn stat_fields(pid: i32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts with the state letter; number the others from field 4 (ppid).
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// `VmRSS` (KiB) and `Threads` from `/proc/PID/status`, read once; 0 for
/// what is missing.
fn rss_and_threads(pid: i32) -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    let value = |key: &str| {
        status.lines().find_map(|l| {
            let value = l.strip_prefix(key)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse().ok()
        })
    };
    (value("VmRSS").unwrap_or(0), value("Threads").unwrap_or(0))
}

/// The live children of `parent`: from each of its threads' `children`
/// list (cheap), or by scanning /proc where the kernel has no such list.
pub fn children_of(parent: i32) -> Vec<i32> {
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        let mut found = Vec::new();
        let mut listed = false;
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                found.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
        if listed {
            return found;
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat_fields(pid).and_then(|f| f.first().copied()) == Some(parent as u64))
        .collect()
}

/// Samples `pid` and its children now. `None` once the process is gone.
pub fn sample(pid: i32) -> Option<Sample> {
    let hz = ticks_per_second();
    let own = stat_fields(pid)?;
    // From ppid (field 4): utime is field 14, stime 15, cutime 16, cstime 17.
    let field = |f: &[u64], n: usize| f.get(n - 4).copied().unwrap_or(0);
    let mut ticks = field(&own, 14) + field(&own, 15) + field(&own, 16) + field(&own, 17);
    let (mut rss_kb, mut threads) = rss_and_threads(pid);
    let children = children_of(pid);
    for &child in &children {
        if let Some(f) = stat_fields(child) {
            ticks += field(&f, 14) + field(&f, 15);
        }
        let (rss, n) = rss_and_threads(child);
        rss_kb += rss;
        threads += n;
    }
    Some(Sample {
        cpu: Duration::from_secs_f64(ticks as f64 / hz),
        rss_kb,
        threads,
        children: children.len() as u64,
    })
}

/// CPU time used so far by `pid` and its descendants, to the nanosecond
/// where the kernel keeps it: each live thread's run time
/// (`/proc/PID/task/TID/schedstat`), plus the children each process has
/// reaped (`cutime + cstime`, in clock ticks). Falls back to [`sample`]'s
/// ticks where schedstat is missing.
pub fn cpu_precise(pid: i32) -> Option<Duration> {
    let hz = ticks_per_second();
    let field = |f: &[u64], n: usize| f.get(n - 4).copied().unwrap_or(0);
    let mut total = Duration::ZERO;
    for p in tree(pid) {
        let Some(stat) = stat_fields(p) else {
            continue; // Gone between the listing and the look.
        };
        let reaped = field(&stat, 16) + field(&stat, 17);
        total += Duration::from_secs_f64(reaped as f64 / hz);
        let mut threads = Duration::ZERO;
        let mut counted = false;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
                    continue;
                };
                if let Some(ns) = text.split_whitespace().next().and_then(|n| n.parse().ok()) {
                    threads += Duration::from_nanos(ns);
                    counted = true;
                }
            }
        }
        if !counted {
            threads = Duration::from_secs_f64((field(&stat, 14) + field(&stat, 15)) as f64 / hz);
        }
        total += threads;
    }
    (total > Duration::ZERO || stat_fields(pid).is_some()).then_some(total)
}

/// The process and every descendant.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let children = children_of(all[i]);
        all.extend(children);
        i += 1;
    }
    all
}

/// Open descriptors of one process (`/proc/PID/fd`); 0 when it is gone
/// or not ours to look at.
pub fn descriptors(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}

/// What a server's processes cost at one instant, summed over the tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Costs {
    /// Proportional set size: each page divided among the processes that
    /// share it, so a fork server's copy-on-write pages count once, not once
    /// per child (`Pss` of /proc/PID/smaps_rollup), in KiB.
    pub pss_kb: u64,
    /// Voluntary + involuntary context switches of every thread
    /// (/proc/PID/task/*/status): threads alive now only.
    pub context_switches: u64,
}

/// A `Key:   123 kB`-style value from a /proc text file.
fn value_of(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

pub fn costs(pid: i32) -> Costs {
    let mut c = Costs::default();
    for p in tree(pid) {
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            c.pss_kb += value_of(&rollup, "Pss").unwrap_or(0);
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
                c.context_switches += value_of(&status, "voluntary_ctxt_switches").unwrap_or(0)
                    + value_of(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
            }
        }
    }
    c
}

/// Connections the server has accepted on `port`: established TCP sockets
/// whose local port is the server's and that have a socket inode. A
/// connection still waiting in the backlog is established too (the kernel
/// finished the handshake) but has no inode until `accept` gives it a file.
///
/// Counted by inode: the kernel writes these tables in pieces, and a
/// socket can appear twice when others come and go between two reads.
pub fn accepted_connections(port: u16) -> u64 {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(file) = std::fs::File::open(table) else {
            continue;
        };
        for line in BufReader::new(file).lines().map_while(Result::ok).skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "01" && *inode != "0" {
                inodes.insert(inode.to_string());
            }
        }
    }
    inodes.len() as u64
}

/// How system calls are counted: the name the report gives the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallMethod {
    /// `perf stat -e raw_syscalls:sys_enter` attached to the server's
    /// processes: every system call entry, counted by the kernel.
    Perf,
    /// No perf: context switches from /proc, system calls not counted.
    /// (/proc/PID/io's `syscr + syscw` count read(2) and write(2) only,
    /// not the recv and send the models use: 0 for most of them.)
    Proc,
}

impl SyscallMethod {
    /// perf if it can count the tracepoint here (a quick trial run).
    pub fn detect() -> SyscallMethod {
        let works = Command::new("perf")
            .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .any(|l| l.split(',').next().is_some_and(|n| n.parse::<u64>().is_ok()))
            });
        if works {
            SyscallMethod::Perf
        } else {
            SyscallMethod::Proc
        }
    }

    /// How context switches are counted with this method.
    pub fn describe_context_switches(self) -> &'static str {
        match self {
            SyscallMethod::Perf => {
                "perf stat -e context-switches attached to the server's processes (voluntary and involuntary, threads and children that exit included), in a 0.5 s window of the throughput load after the first run's timed part"
            }
            SyscallMethod::Proc => {
                "voluntary + involuntary from /proc/PID/task/*/status of the server's process tree, before and after a 0.5 s window of the throughput load: threads alive at the end only"
            }
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            SyscallMethod::Perf => {
                "perf stat -e raw_syscalls:sys_enter attached to the server's processes (every system call, counted by the kernel's tracepoint), in the same window: the tracepoint slows every call, so it is off while the other figures are made"
            }
            SyscallMethod::Proc => {
                "not counted: perf is not available here, and /proc has no system call counter (/proc/PID/io syscr and syscw count read(2) and write(2) only, not the recv and send the models use)"
            }
        }
    }
}

/// A running `perf stat` counting the system calls and context switches of
/// a process tree (threads and children started later included, and
/// counted even after they exit); stopped with SIGINT.
pub struct PerfCounter {
    child: Child,
    out: PathBuf,
}

impl PerfCounter {
    pub fn start(pid: i32) -> Option<PerfCounter> {
        let out = std::env::temp_dir().join(format!("socklab-perf-{}-{pid}.txt", std::process::id()));
        // perf gives up when a process it was told to watch is gone before
        // it attaches (a fork server's child exiting after the last load):
        // then again, with the tree as it is now.
        for _ in 0..5 {
            let _ = std::fs::remove_file(&out);
            let pids: Vec<String> = tree(pid).iter().map(|p| p.to_string()).collect();
            let mut child = Command::new("perf")
                .args([
                    "stat",
                    "-x,",
                    "-e",
                    "raw_syscalls:sys_enter,context-switches",
                    "-p",
                    &pids.join(","),
                ])
                .arg("-o")
                .arg(&out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            // Ready once perf holds its counters (perf_event descriptors),
            // plus a moment for it to enable them all.
            let fds = format!("/proc/{}/fd", child.id());
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let counting = std::fs::read_dir(&fds).is_ok_and(|dir| {
                    dir.flatten().any(|fd| {
                        std::fs::read_link(fd.path())
                            .is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
                    })
                });
                if counting {
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            match child.try_wait() {
                Ok(None) => return Some(PerfCounter { child, out }),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = std::fs::remove_file(&out);
        None
    }

    /// Stops counting: the system calls and context switches seen.
    pub fn finish(mut self) -> PerfCounts {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let count = |event: &str| {
            text.lines()
                .filter(|l| l.split(',').nth(2) == Some(event))
                .find_map(|l| l.split(',').next()?.parse().ok())
        };
        PerfCounts {
            syscalls: count("raw_syscalls:sys_enter"),
            context_switches: count("context-switches"),
        }
    }
}

/// What perf counted; `None` for what it could not.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerfCounts {
    pub syscalls: Option<u64>,
    pub context_switches: Option<u64>,
}

impl Drop for PerfCounter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_of_this_process() {
        let c = costs(std::process::id() as i32);
        assert!(c.pss_kb > 0);
        assert!(c.context_switches > 0);
    }

    #[test]
    fn accepted_connections_are_those_with_a_file() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _waiting = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _also = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(accepted_connections(port), 0, "both wait in the backlog");
        let (_accepted, _) = listener.accept().unwrap();
        assert_eq!(accepted_connections(port), 1);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id() as i32).expect("this process exists");
        assert!(s.rss_kb > 0);
        assert!(s.threads >= 1);
        assert_eq!(sample(i32::MAX), None);
    }
}
