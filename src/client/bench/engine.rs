//! The load generator's engine: `--threads` OS threads, each a tokio
//! current-thread runtime running its share of the clients as tasks.
//!
//! No thread per connection: ten thousand clients are ten thousand small
//! tasks, and each thread is one epoll loop underneath. Current-thread
//! runtimes rather than one multi-thread runtime, so that a client never
//! migrates and its thread needs no synchronisation on the hot path: on two
//! cores, every microsecond the load generator saves is the server's.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::{Read, Write};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{pace, ClientReport, ErrorKind, Expect, Load};
use crate::addr::Addr;
use crate::client::hdr::Recorder;
use crate::net::{self, Stream};

/// Everything a client task needs, shared by all of them.
pub struct Plan {
    pub target: Target,
    pub request: Vec<u8>,
    pub expect: Expect,
    pub load: Load,
    /// Open loop: requests per second for the whole run (this driver's
    /// share, with `--driver`).
    pub rate: Option<f64>,
    /// Open loop: when this driver's first slot comes, after `start`
    /// (`--driver K/N`: K-1 slots of the whole schedule).
    pub phase: Duration,
    pub clients: usize,
    pub timeout: Duration,
    pub new_connection: bool,
    pub start: Instant,
    /// Requests finished so far, for the progress bar.
    pub done: AtomicU64,
    /// `--hdr-log`: keep a histogram per second too.
    pub per_second: bool,
}

/// Where the clients connect, resolved once before the run.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Udp(SocketAddr),
}

impl Target {
    /// Resolves once, before the run. A name with several addresses
    /// (`localhost`: `::1`, then `127.0.0.1`) gets the first that accepts a
    /// connection, in resolver order, as `send` and `connect` try them.
    pub fn resolve(addr: &Addr, timeout: Duration) -> anyhow::Result<Target> {
        Ok(match addr {
            Addr::Tcp(hp) => Target::Tcp(net::first_accepting(hp, timeout)?),
            Addr::Udp(hp) => Target::Udp(hp.resolve()?[0]),
            Addr::Unix(path) => Target::Unix(path.clone()),
        })
    }
}

/// One client's results.
pub struct ClientResult {
    pub report: ClientReport,
    pub errors: [u64; ErrorKind::COUNT],
}

impl ClientResult {
    pub fn new(id: usize) -> Self {
        ClientResult {
            report: ClientReport {
                id,
                ..ClientReport::default()
            },
            errors: [0; ErrorKind::COUNT],
        }
    }

    /// A whole, right reply to a request that began at `began`.
    /// `start` is the run's, for the client's timeline.
    pub(super) fn replied(&mut self, recorder: &mut Recorder, start: Instant, began: Instant, reply: &[u8]) {
        // One clock read per reply, for its latency and its place in the run.
        let now = Instant::now();
        let micros = now.duration_since(began).as_micros().max(1) as u64;
        let at = now.duration_since(start);
        self.report.lane.last_byte_s = Some(at.as_secs_f64());
        recorder.record(micros, at);
        self.report.replies += 1;
        if self.report.last_reply != reply {
            self.report.last_reply.clear();
            self.report.last_reply.extend_from_slice(reply);
        }
    }

    pub(super) fn failed(&mut self, failure: Failure) {
        self.report.errors += 1;
        self.errors[failure.kind as usize] += 1;
        self.report.last_error = Some(failure.what);
    }
}

/// One thread's results: its clients', and one histogram for them all (a
/// histogram is ~200 KiB: one per client would cost 2 GB for 10,000).
pub struct ThreadResult {
    pub clients: Vec<ClientResult>,
    pub recorder: Recorder,
}

/// The histogram a thread's clients share; only that thread touches it, so
/// the lock is never contended.
type SharedHistogram = Arc<std::sync::Mutex<Recorder>>;

/// What one engine thread runs: thread `t` of `threads`, driving every
/// `threads`-th client.
pub type ThreadMain = fn(Arc<Plan>, usize, usize) -> anyhow::Result<ThreadResult>;

/// Runs every client to the end on `threads` threads, each running `main`.
pub fn run(plan: Arc<Plan>, threads: usize, main: ThreadMain) -> anyhow::Result<Vec<ThreadResult>> {
    let threads = threads.clamp(1, plan.clients.max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let plan = plan.clone();
                std::thread::Builder::new()
                    .name(format!("bench-{t}"))
                    .spawn_scoped(scope, move || main(plan, t, threads))
            })
            .collect::<Result<_, _>>()?;
        let mut all = Vec::new();
        for w in workers {
            all.push(
                w.join()
                    .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??,
            );
        }
        Ok(all)
    })
}

/// Thread `t` of `threads`: a current-thread runtime and every
/// `threads`-th client.
pub fn one_thread(plan: Arc<Plan>, t: usize, threads: usize) -> anyhow::Result<ThreadResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let histogram: SharedHistogram = Arc::new(std::sync::Mutex::new(Recorder::new(
        plan.per_second,
        plan.rate.is_some(),
    )));
    let clients = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for id in (t..plan.clients).step_by(threads) {
            tasks.spawn(client(plan.clone(), id, histogram.clone()));
        }
        let mut results = Vec::new();
        while let Some(result) = tasks.join_next().await {
            results.push(result?);
        }
        anyhow::Ok(results)
    })?;
    drop(runtime);
    let histogram = Arc::try_unwrap(histogram)
        .map_err(|_| anyhow::anyhow!("a client outlived its thread"))?
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    Ok(ThreadResult {
        clients,
        recorder: histogram,
    })
}

/// What went wrong with one request.
pub(super) struct Failure {
    pub kind: ErrorKind,
    pub what: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, what: impl Into<String>) -> Self {
        Failure {
            kind,
            what: what.into(),
        }
    }

    pub fn io(e: io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                ErrorKind::Reset
            }
            io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::ConnectionRefused => ErrorKind::Connect,
            _ => ErrorKind::Other,
        };
        Failure::new(kind, e.to_string())
    }
}

/// A connection (or a connected UDP socket) of one client.
///
/// Streams are registered with the runtime by hand (`AsyncFd`) so that the
/// engine can tell it what only a request/reply client knows: once a whole
/// reply is in, nothing more will arrive until the next request, so the
/// readiness can be cleared without the `read` that would return
/// `WouldBlock` to prove it. One system call saved per request.
enum Conn {
    Stream(AsyncFd<Stream>),
    Udp(tokio::net::UdpSocket),
}

impl Conn {
    async fn open(target: &Target) -> io::Result<Conn> {
        let stream = match target {
            Target::Tcp(sa) => {
                let socket = net::client_socket(*sa)?;
                socket.set_nonblocking(true)?;
                let s = tokio::net::TcpSocket::from_std_stream(socket.into())
                    .connect(*sa)
                    .await?;
                Stream::Tcp(s.into_std()?)
            }
            Target::Unix(path) => Stream::Unix(tokio::net::UnixStream::connect(path).await?.into_std()?),
            Target::Udp(sa) => {
                let s = net::udp_socket_for(*sa)?;
                s.set_nonblocking(true)?;
                let s = tokio::net::UdpSocket::from_std(s)?;
                s.connect(sa).await?;
                return Ok(Conn::Udp(s));
            }
        };
        stream.set_nonblocking(true)?;
        // SAFETY: the stream moves into the AsyncFd, its only owner from
        // here on, so its descriptor stays open and the same until dropped.
        let registered =
            unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE | Interest::WRITABLE) };
        registered
            .map(Conn::Stream)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let fd = match self {
            Conn::Udp(s) => return s.send(bytes).await.map(drop),
            Conn::Stream(fd) => fd,
        };
        while !bytes.is_empty() {
            // Optimistic: a small request fits the socket buffer at once.
            match fd.get_ref().write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut guard = fd.writable().await?;
                    guard.clear_ready();
                }
                Err(e) if net::interrupted(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads into `reply` until `complete` says it is whole (`Ok(false)`)
    /// or the peer closes (`Ok(true)`). A datagram is always whole.
    async fn read_reply(
        &mut self,
        buf: &mut [u8],
        reply: &mut Vec<u8>,
        mut complete: impl FnMut(&[u8], usize) -> bool,
    ) -> io::Result<bool> {
        let fd = match self {
            Conn::Udp(s) => {
                let n = s.recv(buf).await?;
                reply.extend_from_slice(&buf[..n]);
                return Ok(false);
            }
            Conn::Stream(fd) => fd,
        };
        loop {
            let mut guard = fd.readable().await?;
            match guard.try_io(|s| s.get_ref().read(buf)) {
                Ok(Ok(0)) => return Ok(true),
                Ok(Ok(n)) => {
                    reply.extend_from_slice(&buf[..n]);
                    if complete(reply, n) {
                        // Nothing more comes before the next request: no
                        // need for a read that returns WouldBlock to say so.
                        guard.clear_ready();
                        return Ok(false);
                    }
                }
                Ok(Err(e)) if net::interrupted(&e) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

async fn client(plan: Arc<Plan>, id: usize, histogram: SharedHistogram) -> ClientResult {
    let mut result = ClientResult::new(id);
    let deadline = match plan.load {
        Load::Duration(d) => Some(plan.start + d),
        Load::Requests(_) => None,
    };
    let mut conn: Option<Conn> = None;
    // A datagram must be read whole; a stream reply may take several reads.
    let mut buf = vec![
        0u8;
        if matches!(plan.target, Target::Udp(_)) {
            65_536
        } else {
            4096
        }
    ];
    let mut reply = Vec::with_capacity(plan.request.len());
    let mut k: u64 = 0;
    // Open loop: the sender's timer (microseconds, not tokio's milliseconds:
    // see `pace`), and when the connection was last free, for the lag.
    let mut timer = plan.rate.map(|_| pace::HiResTimer::new());
    let mut free = plan.start;
    loop {
        if let Load::Requests(n) = plan.load {
            if k >= n as u64 {
                break;
            }
        }
        // Open loop: each request has an intended start, spread evenly over
        // the clients; latency counts from it, so a stalled server shows as
        // latency, not as requests never sent (no coordinated omission).
        let mut lag = None;
        let began = match plan.rate {
            Some(rate) => {
                let Some(intended) = pace::intended(&plan, rate, id, k) else {
                    break;
                };
                let late = Instant::now().saturating_duration_since(intended);
                if late >= plan.timeout || deadline.is_some_and(|d| Instant::now() >= d) {
                    // Held up by earlier requests past its timeout, or past
                    // the end: it could not even be sent in time. It counts,
                    // as a timeout, rather than vanish from the results.
                    k += 1;
                    result.failed(Failure::new(
                        ErrorKind::Timeout,
                        "scheduled, but the server was still busy",
                    ));
                    plan.done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match &mut timer {
                    Some(Ok(timer)) => {
                        if timer.sleep_until(intended).await.is_err() {
                            // The timer broke (it cannot, short of a kernel
                            // bug): on time to tokio's millisecond, and the
                            // lag says so.
                            tokio::time::sleep_until(intended.into()).await;
                        }
                    }
                    // No descriptor for a timer (--clients near the limit):
                    // the same, measured the same way.
                    _ => tokio::time::sleep_until(intended.into()).await,
                }
                lag = Some(pace::send_lag(intended, free, Instant::now()));
                intended
            }
            None => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    break;
                }
                now
            }
        };
        k += 1;
        // In the open loop the timeout runs from the intended start, too.
        let allowed = plan.timeout.saturating_sub(began.elapsed());
        let exchange = one(&plan, &mut conn, &mut buf, &mut reply, &mut result.report);
        let outcome = match tokio::time::timeout(allowed, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::new(
                ErrorKind::Timeout,
                format!("no whole reply within {:?}", plan.timeout),
            )),
        };
        if let Some(lag) = lag {
            free = Instant::now();
            histogram
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_send(lag);
        }
        match outcome {
            Ok(()) => {
                let mut h = histogram.lock().unwrap_or_else(|e| e.into_inner());
                result.replied(&mut h, plan.start, began, &reply);
            }
            Err(failure) => {
                conn = None;
                let refused = failure.kind == ErrorKind::Connect;
                result.failed(failure);
                if refused && plan.rate.is_none() {
                    // A refused connection comes back at once: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        plan.done.fetch_add(1, Ordering::Relaxed);
        if plan.new_connection {
            conn = None;
        }
    }
    result.report.elapsed = plan.start.elapsed();
    result
}

/// Sends one request and reads one whole reply into `reply`.
async fn one(
    plan: &Plan,
    conn: &mut Option<Conn>,
    buf: &mut [u8],
    reply: &mut Vec<u8>,
    timeline: &mut ClientReport,
) -> Result<(), Failure> {
    let c = match conn {
        Some(c) => c,
        None => {
            let c = Conn::open(&plan.target)
                .await
                .map_err(|e| Failure::new(ErrorKind::Connect, format!("cannot connect: {e}")))?;
            timeline.mark_connected(plan.start);
            conn.insert(c)
        }
    };
    c.write_all(&plan.request).await.map_err(Failure::io)?;
    reply.clear();
    let closed = c
        .read_reply(buf, reply, |r, new| {
            timeline.mark_first_byte(plan.start);
            plan.expect.complete(&plan.request, r, new)
        })
        .await
        .map_err(Failure::io)?;
    if closed {
        *conn = None;
        return check_at_close(plan, reply);
    }
    check(plan, reply)
}

/// The server closed after sending `reply`: whether that is a whole reply,
/// and the right one.
pub(super) fn check_at_close(plan: &Plan, reply: &[u8]) -> Result<(), Failure> {
    if reply.is_empty() {
        return Err(Failure::new(
            ErrorKind::Closed,
            "the server closed without replying",
        ));
    }
    if !plan.expect.may_end_at_close(&plan.request, reply) {
        return Err(Failure::new(
            ErrorKind::Closed,
            format!("the server closed mid-reply after {} bytes", reply.len()),
        ));
    }
    check(plan, reply)
}

/// Whether a whole reply is the right one: for `echo`, the request's bytes.
pub(super) fn check(plan: &Plan, reply: &[u8]) -> Result<(), Failure> {
    if plan.expect == Expect::Echo && reply != plan.request.as_slice() {
        let at = reply
            .iter()
            .zip(&plan.request)
            .position(|(a, b)| a != b)
            .unwrap_or(reply.len());
        return Err(Failure::new(
            ErrorKind::Mismatch,
            format!("the echo differs from the request at byte {at}"),
        ));
    }
    Ok(())
}

/// Keeps the progress bar moving while the run lasts.
pub fn progress(plan: &Plan, expected: Option<u64>, stop: &std::sync::atomic::AtomicBool) {
    // A run of N requests fills with requests; a --duration run with time.
    let (length, by_time) = match (expected, plan.load) {
        (Some(n), _) => (n, false),
        (None, Load::Duration(d)) => (d.as_millis().max(1) as u64, true),
        (None, Load::Requests(_)) => (0, false),
    };
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{wide_bar}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !stop.load(Ordering::Relaxed) {
        let done = plan.done.load(Ordering::Relaxed);
        let elapsed = plan.start.elapsed();
        bar.set_position(if by_time {
            (elapsed.as_millis() as u64).min(length)
        } else {
            done
        });
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
        bar.set_message(format!("{done} requests, {rate:.0}/s"));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}
