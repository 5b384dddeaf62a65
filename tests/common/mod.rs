//! Shared by the integration tests: start `socklab serve` as a user would,
//! on port 0 (or a Unix socket in a temp dir), and read back the address it
//! announces on stdout. The server is killed when the handle drops.
//!
//! Nothing a test starts outlives it: a server runs in its own process group,
//! killed whole (children included) when its handle drops, panics included;
//! and every `socklab` a test starts gets SIGKILL if the test's thread ends
//! first (`PR_SET_PDEATHSIG`), even when the test binary itself is killed.

#![allow(dead_code)] // Each test file uses its own subset.

pub mod seeds;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_socklab");

/// A running `socklab serve`.
pub struct Server {
    pub child: Child,
    /// The address from the `listening on ADDR` line, e.g. `tcp:127.0.0.1:41234`.
    pub addr: String,
    /// Every address announced, when several `--listen` were given.
    pub addrs: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// `socklab serve ARGS --listen tcp:127.0.0.1:0`.
    pub fn tcp(args: &[&str]) -> Server {
        Self::start(args, &["tcp:127.0.0.1:0"], None)
    }

    /// `socklab serve ARGS --listen unix:<tempdir>/s.sock`.
    pub fn unix(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = format!("unix:{}", dir.path().join("s.sock").display());
        Self::start(args, &[&path], Some(dir))
    }

    /// `socklab serve ARGS --listen udp:127.0.0.1:0`.
    pub fn udp(args: &[&str]) -> Server {
        Self::start(args, &["udp:127.0.0.1:0"], None)
    }

    /// `socklab serve ARGS` with the given `--listen` addresses.
    pub fn start(args: &[&str], listen: &[&str], dir: Option<tempfile::TempDir>) -> Server {
        Self::start_with(args, listen, dir, |_| {})
    }

    /// As [`Server::start`], with `configure` applied to the command last
    /// (e.g. `stderr(Stdio::piped())`, then take `server.child.stderr`).
    pub fn start_with(
        args: &[&str],
        listen: &[&str],
        dir: Option<tempfile::TempDir>,
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").args(args);
        for l in listen {
            cmd.args(["--listen", l]);
        }
        // Its own group, so that Drop can kill the server with its children.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        dies_with_the_test(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("spawn socklab serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addrs = Vec::new();
        for _ in listen {
            let line = lines
                .next()
                .expect("serve exited before announcing its address")
                .expect("read stdout");
            let addr = line
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line: {line}"));
            addrs.push(addr.to_string());
        }
        Server {
            child,
            addr: addrs[0].clone(),
            addrs,
            _dir: dir,
        }
    }

    /// The port of an IP address (the first announced).
    pub fn port(&self) -> u16 {
        let port = self.addr.rsplit(':').next().and_then(|p| p.parse().ok());
        port.unwrap_or_else(|| panic!("no port in {}", self.addr))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: a plain system call on integers; the pid is our child's,
        // not yet waited for, so not reused.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.child.wait().expect("wait for serve")
    }

    /// A raw connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::to(&self.addr)
    }

    /// Sends `request` on a new connection and returns what one read gives back.
    pub fn ask(&self, request: &[u8]) -> String {
        let mut conn = self.connect();
        conn.send(request);
        conn.recv_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole group: the server and every child it forked. Its pid is
        // the group's id and cannot be reused before the wait below.
        kill_group(self.pid());
        let _ = self.child.wait();
    }
}

/// SIGKILL to every process of the group `pgid` (one the test made).
pub fn kill_group(pgid: i32) {
    // SAFETY: a plain system call on integers.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// The child will get SIGKILL when the thread that starts it (the test's)
/// ends, so that not even a test binary killed mid-run leaves it behind.
pub fn dies_with_the_test(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec and makes one prctl call;
    // it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits until process `pid` has exited (a zombie counts), through a pidfd
/// that becomes readable then; `false` if it has not within `timeout`.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        // ESRCH: it is gone already.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd that lives across the call; fd is ours to close.
    let ready = unsafe {
        let n = libc::poll(&mut pfd, 1, timeout.as_millis() as i32);
        libc::close(fd);
        n
    };
    ready == 1
}

/// Waits until `done` holds, polling what the kernel reports; panics with
/// `what` after `limit`. For states that give no readiness signal to wait
/// on (a socket's queue, a port, a process's thread count).
pub fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The pids of `parent`'s children, with their state letter (`Z` = zombie).
pub fn children_of(parent: i32) -> Vec<(i32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            found.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    found
}

/// `--model MODEL --workers N`, without `--workers` for a model that runs
/// none (fork, select...), which refuses it: one list of arguments for a
/// test that walks models of both kinds.
pub fn model_with_workers<'a>(model: &'a str, workers: &'a str) -> Vec<&'a str> {
    let kind = socklab::model::ModelKind::all()
        .iter()
        .find(|m| m.name() == model);
    match kind {
        Some(kind) if !kind.takes_workers() => vec!["--model", model],
        _ => vec!["--model", model, "--workers", workers],
    }
}

/// A client connection over TCP or a Unix socket, with a read timeout so a
/// broken server fails the test instead of hanging it.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub fn to(addr: &str) -> Conn {
        let timeout = Some(Duration::from_secs(10));
        if let Some(path) = addr.strip_prefix("unix:") {
            let s = UnixStream::connect(path).expect("connect unix");
            s.set_read_timeout(timeout).unwrap();
            Conn::Unix(s)
        } else {
            let hp = addr.strip_prefix("tcp:").unwrap_or(addr);
            let s = TcpStream::connect(hp).expect("connect tcp");
            s.set_read_timeout(timeout).unwrap();
            Conn::Tcp(s)
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.write_all(data).expect("send");
    }

    /// Sends `data` and returns once the server has taken it out of its
    /// socket. A signal sent right after a bare `send` can reach the server
    /// before the request does, and a request the server has not read is
    /// not yet one it owes a reply to.
    pub fn deliver(&mut self, data: &[u8]) {
        self.send(data);
        eventually(
            Duration::from_secs(10),
            "the server never read what was sent",
            || !self.unread_by_server(),
        );
    }

    /// Whether the server's end still holds bytes its process has not read.
    pub fn unread_by_server(&self) -> bool {
        match self {
            // The receive queue of the server's end, from the kernel.
            Conn::Tcp(s) => server_end_unread(
                s.peer_addr().expect("peer address"),
                s.local_addr().expect("local address"),
            ),
            // A Unix stream's unread bytes stay charged to the sender's
            // socket, whose SIOCOUTQ (TIOCOUTQ's number) counts them.
            Conn::Unix(s) => {
                let mut queued: libc::c_int = 0;
                // SAFETY: the descriptor is open; the kernel writes one int.
                let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
                assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
                queued > 0
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn recv_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.read_exact(&mut buf).expect("recv_exact");
        buf
    }

    /// Reads what one read returns, as a string.
    pub fn recv_some(&mut self) -> String {
        let mut buf = [0; 65536];
        let n = self.read(&mut buf).expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads until the server closes.
    pub fn recv_to_end(&mut self) -> String {
        let mut buf = Vec::new();
        self.read_to_end(&mut buf).expect("recv to end");
        String::from_utf8_lossy(&buf).into_owned()
    }

    pub fn shutdown_write(&self) {
        match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
        }
    }

    /// Back to blocking reads and writes (after [`Conn::flood`]).
    pub fn set_blocking(&self) {
        match self {
            Conn::Tcp(s) => s.set_nonblocking(false).expect("blocking"),
            Conn::Unix(s) => s.set_nonblocking(false).expect("blocking"),
        }
    }

    /// A second handle on the same socket.
    pub fn try_clone(&self) -> Conn {
        match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone().expect("clone tcp")),
            Conn::Unix(s) => Conn::Unix(s.try_clone().expect("clone unix")),
        }
    }

    /// Sends `data` from another thread, then half-closes, while this one
    /// reads everything the server sends until it closes: a reply larger
    /// than the socket buffers comes back while we still send.
    pub fn round_trip(mut self, data: Vec<u8>) -> Vec<u8> {
        let mut writer = self.try_clone();
        let sender = std::thread::spawn(move || {
            writer.send(&data);
            writer.shutdown_write();
        });
        let mut back = Vec::new();
        if let Err(e) = self.read_to_end(&mut back) {
            panic!("read back: {e} after {} bytes", back.len());
        }
        sender.join().expect("sender");
        back
    }

    /// Writes `chunk` again and again, never reading, until the socket
    /// would block or `limit` bytes are sent; returns the bytes sent. The
    /// connection is left non-blocking.
    pub fn flood(&mut self, chunk: &[u8], limit: usize) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.set_nonblocking(true)?,
            Conn::Unix(s) => s.set_nonblocking(true)?,
        }
        let mut sent = 0;
        while sent < limit {
            match self.write(chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

/// Whether the TCP socket bound to `server` and connected to `client` still
/// holds bytes its process has not read; false if there is no such socket.
///
/// Asked of the kernel's socket diagnostics (sock_diag(7), as `ss` does)
/// for that one socket by its addresses: a lookup, where /proc/net/tcp
/// lists every socket of the machine (26 ms with the 10,000 connections a
/// test running alongside may hold, long enough to make a 300 ms window
/// miss). By hand on libc: the request is two fixed structs, and no
/// well-kept crate is worth a dependency for it.
fn server_end_unread(server: SocketAddr, client: SocketAddr) -> bool {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_HDRLEN: usize = 16;
    // struct inet_diag_req_v2 after the header: family, protocol, ext, pad,
    // states, then struct inet_diag_sockid: sport, dport (big-endian),
    // src[16], dst[16], if, cookie[2].
    let mut req = [0u8; NLMSG_HDRLEN + 56];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    let body = &mut req[NLMSG_HDRLEN..];
    let ip = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        std::net::IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    let ((family, src), (_, dst)) = (ip(server), ip(client));
    body[0] = family;
    body[1] = libc::IPPROTO_TCP as u8;
    body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    body[8..10].copy_from_slice(&server.port().to_be_bytes());
    body[10..12].copy_from_slice(&client.port().to_be_bytes());
    body[12..12 + src.len()].copy_from_slice(&src);
    body[28..28 + dst.len()].copy_from_slice(&dst);
    // INET_DIAG_NOCOOKIE: whichever socket has these addresses.
    body[48..56].fill(0xff);
    // SAFETY: plain system calls on a descriptor this function owns, with
    // buffers that outlive them.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    assert!(fd >= 0, "netlink socket: {}", std::io::Error::last_os_error());
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    assert_eq!(
        sent,
        req.len() as isize,
        "sock_diag request: {}",
        std::io::Error::last_os_error()
    );
    let mut reply = [0u8; 1024];
    let got = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    assert!(got >= 0, "sock_diag reply: {}", std::io::Error::last_os_error());
    // The one struct inet_diag_msg (its idiag_rqueue 56 bytes in), or an
    // NLMSG_ERROR: ENOENT when the socket is gone, or when the kernel has
    // no TCP diagnostics; /proc/net/tcp, slower, tells the two apart.
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != SOCK_DIAG_BY_FAMILY || (got as usize) < NLMSG_HDRLEN + 60 {
        return listed_unread(server.port(), client.port());
    }
    let at = NLMSG_HDRLEN + 56;
    u32::from_ne_bytes(reply[at..at + 4].try_into().expect("four bytes")) > 0
}

/// [`server_end_unread`] from the kernel's list of every TCP socket: the
/// one bound to port `local` and connected to port `remote` has a receive
/// queue (rx_queue) above zero.
fn listed_unread(local: u16, remote: u16) -> bool {
    let (local, remote) = (format!(":{local:04X}"), format!(":{remote:04X}"));
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        text.lines().skip(1).any(|line| {
            // sl local_address rem_address st tx_queue:rx_queue ...
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 4
                && f[1].ends_with(&local)
                && f[2].ends_with(&remote)
                && f[4]
                    .rsplit(':')
                    .next()
                    .is_some_and(|rx| u32::from_str_radix(rx, 16).is_ok_and(|n| n > 0))
        })
    })
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Connects over TCP, sends `data` and resets at once (SO_LINGER 0): a peer
/// that vanishes mid-request.
pub fn connect_and_reset(addr: &str, data: &[u8]) {
    let stream = TcpStream::connect(addr.trim_start_matches("tcp:")).expect("connect tcp");
    let socket = socket2::Socket::from(stream);
    socket.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
    let _ = socket.send(data);
}

/// A listener of the test's own on 127.0.0.1 port 0, with its `tcp:` address.
pub fn tcp_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = format!("tcp:{}", listener.local_addr().expect("local addr"));
    (listener, addr)
}

/// Runs `socklab ARGS` to completion.
pub fn socklab(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run socklab")
}

/// `socklab ARGS` with `input` on stdin, then stdin closed; its output,
/// after asserting that it succeeded.
pub fn socklab_with_stdin(args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socklab");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "socklab {args:?}: {}", stderr(&out));
    stdout(&out)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Checks that a run exited with `code`, and returns its stderr.
pub fn fails_with(code: i32, out: Output) -> String {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

/// Starts `socklab ARGS` with stdin and stdout piped to the test.
pub fn spawn(args: &[&str]) -> Child {
    piped(args).spawn().expect("spawn socklab")
}

/// Starts `socklab ARGS` (stdin, stdout and stderr piped) and reads the
/// `listening on ADDR` line it announces on stderr: the child, ADDR, and
/// the rest of its stderr.
pub fn spawn_listening(args: &[&str]) -> (Child, String, BufReader<ChildStderr>) {
    let mut child = piped(args).stderr(Stdio::piped()).spawn().expect("spawn socklab");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read stderr");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no announcement: {line}"))
        .to_string();
    (child, addr, stderr)
}

fn piped(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
    dies_with_the_test(&mut cmd);
    cmd
}

/// `socklab bench ADDR --json ARGS`: its exit code, its report, its stderr.
pub fn bench(addr: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["bench", addr, "--json"];
    all.extend_from_slice(args);
    let out = socklab(&all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench --json gave no JSON ({e}): {}\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out.status.code(), report, stderr(&out))
}

/// `socklab bench ADDR --json --quiet ARGS`, parsed.
pub fn bench_json(addr: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--quiet"];
    all.extend_from_slice(args);
    bench(addr, &all).1
}

/// The seeds' delay experiment: `clients` at once, each answered; the time
/// until the last reply, in seconds.
pub fn makespan(server: &Server, clients: u64) -> f64 {
    let report = bench_json(&server.addr, &["--clients", &clients.to_string()]);
    assert_eq!(report["replies"], clients, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    report["elapsed_s"].as_f64().expect("elapsed_s")
}

/// SIGTERM while a `welcome` reply delayed by `delay` is owed: the server
/// exits 0, and the reply still comes, then the close.
pub fn sigterm_mid_delay(model: &str, delay: &str) {
    let server = Server::tcp(&["--model", model, "--service", "welcome", "--delay", delay]);
    let mut conn = server.connect();
    // `Welcome!` is sent on accept, undelayed: the connection is in.
    assert_eq!(conn.recv_some(), "Welcome!");
    conn.deliver(b"x");
    let status = server.terminate();
    assert!(status.success(), "{model}: {status}");
    assert_eq!(conn.recv_to_end(), "Received x;", "{model}");
}

/// `python3 SCRIPT ARGS` with `stdin` as its input; its stdout, once it
/// exited successfully.
pub fn python(script: &str, args: &[&str], stdin: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("client.py");
    std::fs::write(&path, script).expect("write the script");
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the seed interop tests");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for python3");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `text` with every digit made `d`: a timestamp's shape, e.g.
/// `dddd-dd-dd dd:dd:dd.dddddd`.
pub fn digit_shape(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect()
}

/// Runs `socklab ARGS` (and whatever it starts) as on a kernel without
/// io_uring: `io_uring_setup` fails with ENOSYS.
pub fn without_io_uring(args: &[&str]) -> Output {
    // io_uring_setup is 425 on every architecture with the generic table
    // (x86_64, aarch64, riscv64).
    without_syscall(args, 425, libc::ENOSYS)
}

/// Runs `socklab ARGS` (and whatever it starts) with system call `nr`
/// failing with `errno`: a seccomp filter, installed in the child before
/// exec, stands for a kernel that lacks what the call asks for.
pub fn without_syscall(args: &[&str], nr: u32, errno: i32) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: the hook runs between fork and exec and only makes two
    // prctl calls on data it owns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || deny_syscall(nr, errno));
    }
    cmd.output().expect("run socklab")
}

fn deny_syscall(nr: u32, errno: i32) -> std::io::Result<()> {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        // A = the system call number (offset 0 of struct seccomp_data).
        op(BPF_LD_W_ABS, 0, 0, 0),
        op(BPF_JEQ_K, 0, 1, nr),
        op(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno as u32),
        op(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `program` and `filter` outlive them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const _,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Echoes 1 MiB on each of `connections` connections to `server` at once,
/// each sending while it reads back, then half-closing: more than the
/// socket buffers hold, so every session goes over its budget mid-stream
/// and stops and resumes reading. Panics, naming `what`, unless every echo
/// comes back whole and every connection is closed by the server after
/// its peer's close.
pub fn echo_a_mebibyte_on_each(server: &Server, connections: usize, what: &str) {
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let backs: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let echoes: Vec<_> = (0..connections)
            .map(|_| {
                let conn = server.connect();
                let data = data.clone();
                scope.spawn(move || conn.round_trip(data))
            })
            .collect();
        echoes
            .into_iter()
            .map(|echo| {
                echo.join()
                    .unwrap_or_else(|_| panic!("{what}: a connection failed (above)"))
            })
            .collect()
    });
    for (i, back) in backs.iter().enumerate() {
        assert!(
            *back == data,
            "{what}: connection {i} of {connections}: echo differs ({} bytes back)",
            back.len()
        );
    }
}

/// Opens `n` connections to a TCP server at once, has every one speak
/// before any answer is read (so a server with fewer receive buffers than
/// senders must wait for some), then checks every echo.
pub fn hold_and_echo(addr: &str, n: usize) {
    let hp = addr.trim_start_matches("tcp:");
    let mut conns: Vec<std::net::TcpStream> = (0..n)
        .map(|_| std::net::TcpStream::connect(hp).expect("connect"))
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c.write_all(format!("{i:06}").as_bytes()).expect("send");
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut back = [0u8; 6];
        c.read_exact(&mut back).expect("echo");
        assert_eq!(back, format!("{i:06}").as_bytes());
    }
}
