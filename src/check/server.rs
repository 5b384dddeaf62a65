//! Outside servers: any command that serves a socket, started, watched and
//! stopped the way `check` (and the lab, for `lab --server`) needs.
//!
//! ```no_run
//! use socklab::check::server::{OutsideServer, Transport};
//!
//! // `{port}` becomes a free port; the command runs under `sh -c`.
//! let mut server = OutsideServer::start("python3 srv.py {port}", Transport::Tcp, None)?;
//! println!("{} is pid {}", server.addr(), server.pid());
//! let now = server.footprint(); // threads, children, descriptors, PSS of its tree
//! let stopped = server.stop();  // SIGTERM, then SIGKILL after the grace
//! println!("{}", stopped.describe());
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! The placeholders: `{port}` (a free port on 127.0.0.1), `{addr}` (the
//! whole address, `127.0.0.1:PORT`, or the socket path for Unix) and
//! `{path}` (a socket path in a private temporary directory). A template
//! without any of them must come with the address it listens on.
//!
//! Nothing outlives the caller: the command runs in its own process group
//! and gets SIGKILL if the thread that started it ends
//! (`PR_SET_PDEATHSIG`); [`OutsideServer::stop`] and the drop take the
//! whole group down; the temporary directory goes with the value.

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::addr::{Addr, HostPort};
use crate::lab::probe;

/// How long a command may take to start accepting.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The server's last lines on stderr kept to explain an early exit.
const STDERR_TAIL: usize = 8;

/// What kind of socket the command serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    Unix,
}

impl Transport {
    /// Unix when the template names a `{path}`, else TCP.
    pub fn guess(template: &str) -> Transport {
        if template.contains("{path}") {
            Transport::Unix
        } else {
            Transport::Tcp
        }
    }
}

/// Whether a template says where the server will listen.
pub fn has_placeholder(template: &str) -> bool {
    ["{port}", "{addr}", "{path}"]
        .iter()
        .any(|p| template.contains(p))
}

/// The server's process tree at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    /// Threads of every process of the tree.
    pub threads: u64,
    /// Live descendants (not the server itself).
    pub children: u64,
    /// Open descriptors of every process of the tree.
    pub descriptors: u64,
    /// Proportional set size of the tree, in KiB.
    pub pss_kb: u64,
}

/// How a stop went.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// The exit status, `None` if it had to be killed.
    pub status: Option<ExitStatus>,
    /// From SIGTERM to its exit.
    pub after: Duration,
    /// Processes of its group still alive when it had exited (then killed).
    pub left_behind: Vec<i32>,
    /// Whether it had already exited before the stop.
    pub already_gone: bool,
}

impl Stopped {
    pub fn describe(&self) -> String {
        let how = match self.status {
            Some(s) => describe_status(s),
            None => format!("still running {} s after SIGTERM, killed", STOP_GRACE.as_secs()),
        };
        let mut line = if self.already_gone {
            format!("had already exited ({how})")
        } else {
            format!("{how} {:.2} s after SIGTERM", self.after.as_secs_f64())
        };
        if !self.left_behind.is_empty() {
            line.push_str(&format!(
                ", leaving {} process(es) behind",
                self.left_behind.len()
            ));
        }
        line
    }
}

/// `exited 0`, `exited 3`, `killed by SIGSEGV`.
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}"));
            format!("killed by {name}")
        }
        _ => "ended".into(),
    }
}

/// A server command, running.
pub struct OutsideServer {
    child: Child,
    addr: Addr,
    command: String,
    status: Option<ExitStatus>,
    /// Its last lines on stderr (bounded).
    stderr: Arc<Mutex<Vec<String>>>,
    /// Disconnected once stderr has been read to its end.
    stderr_done: mpsc::Receiver<()>,
    /// A UDP server was seen bound and given its moment (see
    /// `wait_until_accepting`).
    settled_udp: bool,
    /// Holds `{path}`'s socket; removed, whatever is in it, on drop.
    _dir: Option<tempfile::TempDir>,
}

impl OutsideServer {
    /// Starts `template` (placeholders filled) under `sh -c` and waits, at
    /// most [`START_TIMEOUT`], until it accepts on its address: `listen`
    /// when given (a template without placeholders), else the one made for
    /// the placeholders.
    pub fn start(
        template: &str,
        transport: Transport,
        listen: Option<Addr>,
    ) -> anyhow::Result<OutsideServer> {
        Self::start_with(template, transport, listen, |_| {})
    }

    /// As [`start`](OutsideServer::start), with `prepare` given the command
    /// before it is spawned: the lab pins it to its cores and puts it in a
    /// cgroup of its own there, as it does its own models.
    pub fn start_with(
        template: &str,
        transport: Transport,
        listen: Option<Addr>,
        prepare: impl FnOnce(&mut Command),
    ) -> anyhow::Result<OutsideServer> {
        let (command, addr, dir) = fill(template, transport, listen)?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(exec_if_simple(&command));
        cmd.process_group(0);
        // SAFETY: the hook runs between fork and exec and makes one prctl
        // call; it allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        prepare(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (done, stderr_done) = mpsc::channel::<()>();
        if let Some(pipe) = child.stderr.take() {
            let tail = stderr.clone();
            std::thread::spawn(move || {
                let _done = done;
                // Read to the end, always: a server blocked on a full
                // stderr pipe would look like a server that hangs.
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.remove(0);
                    }
                    tail.push(line.chars().take(200).collect());
                }
            });
        }
        let mut server = OutsideServer {
            child,
            addr,
            command,
            status: None,
            stderr,
            stderr_done,
            settled_udp: false,
            _dir: dir,
        };
        server.wait_until_accepting()?;
        Ok(server)
    }

    /// The process `sh` started (the server itself when sh execs it).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The command as run, placeholders filled.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Its last lines on stderr, joined, once it has exited: waits (a
    /// little) for the pipe to be read to its end first.
    pub fn last_words(&self) -> String {
        let _ = self.stderr_done.recv_timeout(Duration::from_millis(500));
        self.stderr_tail()
    }

    /// Its last lines on stderr, joined.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).join(" | ")
    }

    /// Its exit status, if it has exited (reaped here, once).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Its process tree now; `None` once it has exited.
    pub fn footprint(&self) -> Option<Footprint> {
        let sample = probe::sample(self.pid())?;
        let tree = probe::tree(self.pid());
        Some(Footprint {
            threads: sample.threads,
            children: tree.len().saturating_sub(1) as u64,
            descriptors: tree.iter().map(|&p| probe::descriptors(p)).sum(),
            pss_kb: probe::costs(self.pid()).pss_kb,
        })
    }

    /// SIGTERM to its process group; SIGKILL to whatever is left after
    /// [`STOP_GRACE`] or once the server itself has exited.
    pub fn stop(&mut self) -> Stopped {
        let start = Instant::now();
        if let Some(status) = self.exited() {
            let left_behind = self.group();
            self.kill_group();
            return Stopped {
                status: Some(status),
                after: Duration::ZERO,
                left_behind,
                already_gone: true,
            };
        }
        let pgid = nix::unistd::Pid::from_raw(-self.pid());
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGTERM);
        let status = loop {
            if let Some(status) = self.exited() {
                break Some(status);
            }
            if start.elapsed() >= STOP_GRACE {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let after = start.elapsed();
        // Children get a moment to follow their parent (PR_SET_PDEATHSIG
        // is delivered as the parent exits, the child's exit a little later).
        let mut left_behind = self.group();
        let until = Instant::now() + Duration::from_millis(500);
        while !left_behind.is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            left_behind = self.group();
        }
        self.kill_group();
        if status.is_none() {
            let _ = self.child.wait().map(|s| self.status = Some(s));
        }
        Stopped {
            status,
            after,
            left_behind,
            already_gone: false,
        }
    }

    /// Live processes of its group other than the (reaped) leader.
    fn group(&self) -> Vec<i32> {
        let pgid = self.pid();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != pgid || self.status.is_none())
            .filter(|&pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                // pid (comm) state ppid pgrp ...
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
            })
            .collect()
    }

    /// SIGKILL to its group. Once the leader is reaped, its pid (the
    /// group's id) stays taken only while a member lives: with none left,
    /// the id may be another program's by now, and nothing is sent.
    fn kill_group(&self) {
        if self.status.is_some() && self.group().is_empty() {
            return;
        }
        let pgid = nix::unistd::Pid::from_raw(-self.pid());
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
    }

    /// Polls until the address takes a connection (TCP, Unix) or is bound
    /// (UDP, which has no connection to take), the command exits, or
    /// [`START_TIMEOUT`] passes.
    fn wait_until_accepting(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                // Its last words may still be in the pipe.
                let _ = self.stderr_done.recv_timeout(Duration::from_millis(500));
                let tail = self.stderr_tail();
                bail!(
                    "`{}` {} before accepting on {}{}",
                    self.command,
                    describe_status(status),
                    self.addr,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(": {tail}")
                    }
                );
            }
            if self.accepting() {
                // A bound UDP socket proves less than an accepted
                // connection: a server may bind, then find it has no use
                // for it and exit. A moment's grace catches that at start.
                if matches!(self.addr, Addr::Udp(_)) && !self.settled_udp {
                    self.settled_udp = true;
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                return Ok(());
            }
            if start.elapsed() >= START_TIMEOUT {
                self.kill_group();
                let _ = self.child.wait();
                bail!(
                    "`{}` did not accept on {} within {} s",
                    self.command,
                    self.addr,
                    START_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn accepting(&self) -> bool {
        match &self.addr {
            Addr::Tcp(_) | Addr::Unix(_) => {
                match crate::net::Stream::connect(&self.addr, Some(Duration::from_millis(200))) {
                    Ok(stream) => {
                        stream.close_gracefully();
                        true
                    }
                    Err(_) => false,
                }
            }
            Addr::Udp(hp) => udp_bound(hp.port, self.pid()),
        }
    }
}

impl Drop for OutsideServer {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.wait();
    }
}

/// `exec CMD` when the command is one simple command, so that the shell
/// becomes the server: its pid is the server's, its exit status the
/// server's, and SIGTERM reaches the server first. A pipeline, a list or
/// anything else the shell must run itself is left as it is.
fn exec_if_simple(command: &str) -> String {
    let shell_syntax = |c: char| ";&|<>()`$\\\n{}*?[]~#!".contains(c);
    let quoted_ok = command.chars().all(|c| !shell_syntax(c));
    if quoted_ok && !command.trim_start().starts_with("exec ") {
        format!("exec {command}")
    } else {
        command.to_string()
    }
}

/// Whether a process of `pid`'s tree has a UDP socket bound to `port`: its
/// socket inodes (/proc/PID/fd) against those bound to the port
/// (/proc/net/udp, udp6). Any socket on the port is not enough: the
/// port was free a moment ago, and another program's client may have
/// been given it since.
fn udp_bound(port: u16, pid: i32) -> bool {
    let mut ours = std::collections::HashSet::new();
    for p in probe::tree(pid) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(inode) = link.strip_prefix("socket:[").and_then(|l| l.strip_suffix(']')) {
                    ours.insert(inode.to_string());
                }
            }
        }
    }
    let suffix = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1).is_some_and(|local| local.ends_with(&suffix))
                    && f.get(9).is_some_and(|inode| ours.contains(*inode))
            })
    })
}

/// The command with its placeholders filled, its address, and the
/// temporary directory that holds a `{path}`.
fn fill(
    template: &str,
    transport: Transport,
    listen: Option<Addr>,
) -> anyhow::Result<(String, Addr, Option<tempfile::TempDir>)> {
    if !has_placeholder(template) {
        let Some(addr) = listen else {
            bail!(
                "the server command has no {{port}}, {{addr}} or {{path}}: say where it listens with --addr"
            );
        };
        return Ok((template.to_string(), addr, None));
    }
    if let Some(addr) = listen {
        bail!("the server command has a placeholder and --addr says {addr}: give one or the other");
    }
    match transport {
        Transport::Unix => {
            let dir = tempfile::Builder::new().prefix("socklab-check-").tempdir()?;
            let path: PathBuf = dir.path().join("server.sock");
            let shown = path.display().to_string();
            let command = template.replace("{path}", &shown).replace("{addr}", &shown);
            Ok((command, Addr::Unix(path), Some(dir)))
        }
        Transport::Tcp | Transport::Udp => {
            let port = free_port(transport)?;
            let command = template
                .replace("{port}", &port.to_string())
                .replace("{addr}", &format!("127.0.0.1:{port}"));
            let hp = HostPort {
                host: "127.0.0.1".into(),
                port,
            };
            let addr = if transport == Transport::Udp {
                Addr::Udp(hp)
            } else {
                Addr::Tcp(hp)
            };
            Ok((command, addr, None))
        }
    }
}

/// A port free now on 127.0.0.1 (the kernel's pick, released at once: a
/// race with other programs is possible, and then the server says so).
fn free_port(transport: Transport) -> anyhow::Result<u16> {
    let port = if transport == Transport::Udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    };
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled() {
        let (command, addr, _) = fill("srv --port {port}", Transport::Tcp, None).unwrap();
        let Addr::Tcp(hp) = addr else { panic!("{addr}") };
        assert_eq!(command, format!("srv --port {}", hp.port));
        let (command, addr, dir) = fill("srv {path}", Transport::Unix, None).unwrap();
        assert!(dir.is_some());
        assert_eq!(
            command,
            format!("srv {}", addr.to_string().trim_start_matches("unix:"))
        );
        assert!(fill("srv", Transport::Tcp, None).is_err());
        let given: Addr = ":7000".parse().unwrap();
        assert_eq!(fill("srv", Transport::Tcp, Some(given.clone())).unwrap().1, given);
    }

    #[test]
    fn a_simple_command_is_execed() {
        assert_eq!(
            exec_if_simple("python3 -u srv.py 4000"),
            "exec python3 -u srv.py 4000"
        );
        assert_eq!(exec_if_simple("cd d && ./srv"), "cd d && ./srv");
        assert_eq!(exec_if_simple("srv $PORT"), "srv $PORT");
    }

    #[test]
    fn a_command_that_exits_at_once_is_an_error() {
        let err = OutsideServer::start("echo oops >&2; exit 3 # {port}", Transport::Tcp, None)
            .err()
            .expect("it exits");
        let err = format!("{err:#}");
        assert!(err.contains("exited 3") && err.contains("oops"), "{err}");
    }
}
