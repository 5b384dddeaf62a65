//! The load generator's io_uring engine, for the closed loop over streams.
//!
//! Why a second engine: on loopback the sender's `send` also runs the
//! receiver's TCP input, so most of a load generator's CPU is kernel time it
//! cannot avoid. What it can avoid is everything around it: here a thread
//! puts every client's next send and receive in one submission queue and
//! reaps every reply that came in with one `io_uring_enter`, instead of a
//! `send`, a `recv` and a share of an `epoll_wait` per request. With
//! `DEFER_TASKRUN` the kernel finishes the receives only when the thread
//! asks for completions, in a batch, on its own time.
//!
//! Each client is a small state machine driven by its completions. It only
//! moves on once none of its operations is in flight, so a completion always
//! belongs to the client's current socket and buffer: no generation counts,
//! and no buffer is ever reused or freed under the kernel. Every request has
//! the same `--timeout`, so requests time out in the order they started: a
//! list of the busy clients in that order is the whole timer wheel, and the
//! same holds for the pause before a refused connection is tried again.
//!
//! The open loop (`--rate`): a client whose next request is not yet due
//! waits in a heap ordered by due time, and the thread's wait for
//! completions ends at the earliest (`io_uring_enter`'s timeout is an
//! hrtimer: no millisecond rounding, see [`super::pace`]). Its requests
//! still time out from their intended start, so one that had to wait for
//! its connection goes into the start order at its place, not at the end.
//!
//! UDP stays with the tokio engine ([`super::engine`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};
use socket2::{Domain, SockAddr, Socket, Type};

use super::engine::{check, check_at_close, ClientResult, Failure, Plan, Target, ThreadResult};
use super::{pace, ErrorKind, Load};
use crate::client::hdr::Recorder;
use crate::ring;

/// How long a client waits before connecting again after a refusal.
const RETRY: Duration = Duration::from_millis(10);
/// A client's receive buffer; a longer reply takes several receives.
const BUF: usize = 4096;
/// `IORING_RECVSEND_POLL_FIRST` (Linux 5.19; the crate keeps its constants
/// private): wait for readiness before trying the receive. Right after the
/// request went out the reply cannot be there yet, and the attempt that
/// would say so is a wasted trip through the TCP receive path.
const POLL_FIRST: u16 = 1;

/// Whether this kernel (and its seccomp policy) lets us use io_uring.
pub fn available() -> bool {
    new_ring(8).is_ok()
}

/// Whether this engine can run `plan`: a closed or open loop over a stream.
pub fn suits(plan: &Plan) -> bool {
    !matches!(plan.target, Target::Udp(_))
}

/// A ring for one thread: completions run when the thread asks for them
/// (`DEFER_TASKRUN`, Linux 6.1), or at least without interrupting it
/// (`COOP_TASKRUN`, 5.19). A kernel without either is older than what the
/// engine relies on (cancelling by descriptor, `POLL_FIRST`, 5.19), and
/// the tokio engine runs instead.
fn new_ring(clients: usize) -> io::Result<IoUring> {
    let cq = (clients * 2).next_power_of_two().clamp(256, 65_536) as u32;
    let mut deferred = IoUring::builder();
    deferred
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq);
    let mut coop = IoUring::builder();
    coop.setup_coop_taskrun().setup_cqsize(cq);
    deferred.build(256).or_else(|_| coop.build(256))
}

/// What a completion was for, in the low bits of its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Connect = 0,
    Send = 1,
    Recv = 2,
    Cancel = 3,
}

impl Op {
    fn tag(self, client: usize) -> u64 {
        (client as u64) << 2 | self as u64
    }

    fn untag(data: u64) -> (usize, Op) {
        let op = match data & 3 {
            0 => Op::Connect,
            1 => Op::Send,
            2 => Op::Recv,
            _ => Op::Cancel,
        };
        ((data >> 2) as usize, op)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests, waiting out `RETRY`, or finished.
    Idle,
    /// A request is out: connecting, sending, or reading the reply.
    Busy,
    /// The request is over; waiting for its operations to come back.
    Settling,
}

struct Client {
    state: State,
    socket: Option<Socket>,
    /// Operations submitted and not yet completed.
    in_flight: u32,
    /// Requests started (or, in the open loop, given up before they could
    /// be): the next one's number.
    started: u64,
    /// When the current request began: in the open loop, its intended start.
    began: Instant,
    /// Open loop: when the client was last free to send, for the lag.
    free: Instant,
    sent: usize,
    /// Set when the server closed: the socket goes once the client settles.
    closed: bool,
    /// After settling, pause before the next request (a refused connect).
    pause: bool,
    buf: Box<[u8]>,
    reply: Vec<u8>,
    result: ClientResult,
}

/// One thread's clients and its ring. Fields drop in order: the ring (and
/// with it every operation) goes before the buffers the kernel writes into.
struct Engine<'p> {
    ring: IoUring,
    plan: &'p Plan,
    peer: SockAddr,
    clients: Vec<Client>,
    /// Busy clients, oldest request first: its deadline is the next one.
    busy: StartOrder,
    /// Clients pausing after a refusal: (when to go on, client).
    retries: VecDeque<(Instant, usize)>,
    /// Open loop: clients whose next request is not yet due, earliest first.
    waiting: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Open loop: sends queued since the last submission, as (intended
    /// start, free since): their lag is read when the kernel gets them.
    unsent: Vec<(Instant, Instant)>,
    recorder: Recorder,
    done: usize,
}

/// Thread `t` of `threads`: one ring for every `threads`-th client.
pub fn one_thread(plan: Arc<Plan>, t: usize, threads: usize) -> anyhow::Result<ThreadResult> {
    let ids: Vec<usize> = (t..plan.clients).step_by(threads).collect();
    let peer = match &plan.target {
        Target::Tcp(sa) => SockAddr::from(*sa),
        Target::Unix(path) => SockAddr::unix(path)?,
        Target::Udp(_) => anyhow::bail!("the io_uring engine drives streams only"),
    };
    let n = ids.len();
    let mut engine = Engine {
        ring: new_ring(n)?,
        plan: &plan,
        peer,
        clients: ids
            .into_iter()
            .map(|id| Client {
                state: State::Idle,
                socket: None,
                in_flight: 0,
                started: 0,
                began: plan.start,
                free: plan.start,
                sent: 0,
                closed: false,
                pause: false,
                buf: vec![0; BUF].into_boxed_slice(),
                reply: Vec::with_capacity(plan.request.len()),
                result: ClientResult::new(id),
            })
            .collect(),
        busy: StartOrder::new(n),
        retries: VecDeque::new(),
        waiting: BinaryHeap::new(),
        unsent: Vec::new(),
        recorder: Recorder::new(plan.per_second, plan.rate.is_some()),
        done: 0,
    };
    if let Err(e) = engine.run() {
        // Operations may still be in flight: leave their buffers to the
        // kernel rather than free memory it may yet write into.
        std::mem::forget(engine.clients);
        return Err(e.into());
    }
    let Engine {
        clients, recorder, ..
    } = engine;
    Ok(ThreadResult {
        clients: clients.into_iter().map(|c| c.result).collect(),
        recorder,
    })
}

impl Engine<'_> {
    fn run(&mut self) -> io::Result<()> {
        for c in 0..self.clients.len() {
            self.next(c)?;
        }
        let mut completions: Vec<(u64, i32)> = Vec::with_capacity(1024);
        while self.done < self.clients.len() {
            self.wait()?;
            completions.clear();
            completions.extend(self.ring.completion().map(|e| (e.user_data(), e.result())));
            for &(data, result) in &completions {
                let (c, op) = Op::untag(data);
                self.complete(c, op, result)?;
            }
            self.expire()?;
        }
        Ok(())
    }

    /// Submits what is queued and waits for a completion or the next timer.
    fn wait(&mut self) -> io::Result<()> {
        let next_timer = [
            self.busy
                .front()
                .map(|c| self.clients[c].began + self.plan.timeout),
            self.retries.front().map(|r| r.0),
            self.waiting.peek().map(|w| w.0 .0),
        ]
        .into_iter()
        .flatten()
        .min();
        // The sends queued since the last call leave now, with this submit.
        if !self.unsent.is_empty() {
            let now = Instant::now();
            for (intended, free) in self.unsent.drain(..) {
                self.recorder.record_send(pace::send_lag(intended, free, now));
            }
        }
        ring::submit_and_wait_until(&mut self.ring, next_timer)
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer and address an entry points to (the plan's
        // request, a client's buffer, the peer address) outlives the ring,
        // and a client's buffer is not touched until its receive completes.
        unsafe { ring::push(&mut self.ring, &entry) }
    }

    /// Starts the client's next request, or finishes the client; in the
    /// open loop, waits for the request's time first.
    fn next(&mut self, c: usize) -> io::Result<()> {
        let now = Instant::now();
        let plan = self.plan;
        let due = match plan.rate {
            Some(rate) => match self.due(c, rate, now) {
                Some(at) => Some(at),
                None => return self.finish(c),
            },
            None => None,
        };
        let client = &mut self.clients[c];
        let finished = match plan.load {
            Load::Requests(n) => client.started >= n as u64,
            Load::Duration(d) => now >= plan.start + d,
        };
        if finished {
            return self.finish(c);
        }
        match due {
            Some(at) if at > now => {
                client.free = now;
                self.waiting.push(Reverse((at, c)));
                Ok(())
            }
            Some(at) => {
                // Due already: it waited for its connection.
                client.free = now;
                self.start(c, at, true)
            }
            None => self.start(c, now, false),
        }
    }

    /// Open loop: when the client's next request is due, or `None` when it
    /// has none left. Requests that can no longer be sent in time (past
    /// their timeout already, or past the end of the run) are counted as
    /// timeouts and skipped, as the tokio engine does.
    fn due(&mut self, c: usize, rate: f64, now: Instant) -> Option<Instant> {
        let plan = self.plan;
        let end = match plan.load {
            Load::Duration(d) => Some(plan.start + d),
            Load::Requests(_) => None,
        };
        let client = &mut self.clients[c];
        loop {
            if let Load::Requests(n) = plan.load {
                if client.started >= n as u64 {
                    return None;
                }
            }
            let at = pace::intended(plan, rate, client.result.report.id, client.started)?;
            let late = now.saturating_duration_since(at);
            if late < plan.timeout && end.is_none_or(|end| now < end) {
                return Some(at);
            }
            client.started += 1;
            client.result.failed(Failure::new(
                ErrorKind::Timeout,
                "scheduled, but the server was still busy",
            ));
            plan.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The client has no request left.
    fn finish(&mut self, c: usize) -> io::Result<()> {
        let client = &mut self.clients[c];
        client.state = State::Idle;
        client.socket = None;
        client.result.report.elapsed = self.plan.start.elapsed();
        self.done += 1;
        Ok(())
    }

    /// Starts a request that began at `began`; `scheduled`: in the open
    /// loop, where `began` is its intended start and its lag is measured.
    fn start(&mut self, c: usize, began: Instant, scheduled: bool) -> io::Result<()> {
        let client = &mut self.clients[c];
        client.started += 1;
        client.began = began;
        client.state = State::Busy;
        client.sent = 0;
        client.reply.clear();
        if scheduled {
            self.unsent.push((began, client.free));
        }
        let connected = client.socket.is_some();
        let clients = &self.clients;
        self.busy.insert(c, |x| clients[x].began);
        if connected {
            return self.send_and_receive(c);
        }
        let socket = match self.peer.as_socket() {
            Some(sa) => crate::net::client_socket(sa),
            None => Socket::new(Domain::UNIX, Type::STREAM, None),
        };
        let socket = match socket {
            Ok(socket) => socket,
            // Out of descriptors, say: this request fails, the run goes on.
            Err(e) => {
                return self.failed(
                    c,
                    Failure::new(ErrorKind::Connect, format!("cannot connect: {e}")),
                )
            }
        };
        let connect = opcode::Connect::new(
            types::Fd(socket.as_raw_fd()),
            self.peer.as_ptr().cast(),
            self.peer.len(),
        );
        let client = &mut self.clients[c];
        client.socket = Some(socket);
        client.in_flight += 1;
        self.push(connect.build().user_data(Op::Connect.tag(c)))
    }

    /// Sends the request and has a receive waiting for the reply, in one go.
    fn send_and_receive(&mut self, c: usize) -> io::Result<()> {
        self.send_rest(c)?;
        self.receive(c, POLL_FIRST)
    }

    fn send_rest(&mut self, c: usize) -> io::Result<()> {
        let request = &self.plan.request[self.clients[c].sent..];
        let fd = self.fd(c);
        // A request past 4 GiB goes in several sends, as a short send would.
        let len = request.len().min(u32::MAX as usize) as u32;
        let send = opcode::Send::new(fd, request.as_ptr(), len);
        self.clients[c].in_flight += 1;
        self.push(send.build().user_data(Op::Send.tag(c)))
    }

    fn receive(&mut self, c: usize, ioprio: u16) -> io::Result<()> {
        let fd = self.fd(c);
        let client = &mut self.clients[c];
        let recv = opcode::Recv::new(fd, client.buf.as_mut_ptr(), BUF as u32).ioprio(ioprio);
        client.in_flight += 1;
        self.push(recv.build().user_data(Op::Recv.tag(c)))
    }

    fn fd(&self, c: usize) -> types::Fd {
        types::Fd(self.clients[c].socket.as_ref().map_or(-1, |s| s.as_raw_fd()))
    }

    fn complete(&mut self, c: usize, op: Op, result: i32) -> io::Result<()> {
        let client = &mut self.clients[c];
        client.in_flight -= 1;
        if client.state != State::Busy {
            // What was in flight when the request ended, coming back.
            return self.settle(c);
        }
        let outcome = if result < 0 {
            let e = io::Error::from_raw_os_error(-result);
            Some(Err(match op {
                Op::Connect => Failure::new(ErrorKind::Connect, format!("cannot connect: {e}")),
                _ => Failure::io(e),
            }))
        } else {
            match op {
                Op::Connect => {
                    client.result.report.mark_connected(self.plan.start);
                    return self.send_and_receive(c);
                }
                Op::Send => {
                    client.sent += result as usize;
                    if client.sent < self.plan.request.len() {
                        return self.send_rest(c);
                    }
                    None
                }
                Op::Recv => self.received(c, result as usize),
                Op::Cancel => None,
            }
        };
        match outcome {
            None => Ok(()),
            Some(Ok(())) => {
                self.succeeded(c);
                self.settle(c)
            }
            Some(Err(failure)) => self.failed(c, failure),
        }
    }

    /// A receive brought `n` bytes (0: the server closed). `None` while the
    /// reply is not yet whole (another receive is then waiting).
    fn received(&mut self, c: usize, n: usize) -> Option<Result<(), Failure>> {
        let plan = self.plan;
        let client = &mut self.clients[c];
        if n == 0 {
            client.closed = true;
            return Some(check_at_close(plan, &client.reply));
        }
        client.result.report.mark_first_byte(plan.start);
        client.reply.extend_from_slice(&client.buf[..n]);
        if plan.expect.complete(&plan.request, &client.reply, n) {
            return Some(check(plan, &client.reply));
        }
        match self.receive(c, 0) {
            Ok(()) => None,
            Err(e) => Some(Err(Failure::io(e))),
        }
    }

    fn succeeded(&mut self, c: usize) {
        let plan = self.plan;
        let client = &mut self.clients[c];
        client
            .result
            .replied(&mut self.recorder, plan.start, client.began, &client.reply);
        plan.done.fetch_add(1, Ordering::Relaxed);
        client.state = State::Settling;
        if plan.new_connection {
            client.closed = true;
        }
        self.busy.remove(c);
    }

    /// Counts the failure and gives up the connection: whatever is still in
    /// flight on it is cancelled, and the client settles once it is back.
    fn failed(&mut self, c: usize, failure: Failure) -> io::Result<()> {
        let client = &mut self.clients[c];
        // The open loop's schedule paces its retries itself.
        client.pause = failure.kind == ErrorKind::Connect && self.plan.rate.is_none();
        client.result.failed(failure);
        client.state = State::Settling;
        client.closed = true;
        self.plan.done.fetch_add(1, Ordering::Relaxed);
        self.busy.remove(c);
        if client.in_flight > 0 {
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::fd(self.fd(c)).all());
            self.clients[c].in_flight += 1;
            self.push(cancel.build().user_data(Op::Cancel.tag(c)))?;
        }
        self.settle(c)
    }

    /// Once nothing of the last request is in flight, goes on to the next.
    fn settle(&mut self, c: usize) -> io::Result<()> {
        let client = &mut self.clients[c];
        if client.state != State::Settling || client.in_flight > 0 {
            return Ok(());
        }
        client.state = State::Idle;
        if std::mem::take(&mut client.closed) {
            client.socket = None;
        }
        if std::mem::take(&mut client.pause) {
            self.retries.push_back((Instant::now() + RETRY, c));
            return Ok(());
        }
        self.next(c)
    }

    /// Fails the requests whose time is up and restarts paused clients.
    fn expire(&mut self) -> io::Result<()> {
        let now = Instant::now();
        while let Some(c) = self.busy.front() {
            if self.clients[c].began + self.plan.timeout > now {
                break;
            }
            let what = format!("no whole reply within {:?}", self.plan.timeout);
            self.failed(c, Failure::new(ErrorKind::Timeout, what))?;
        }
        while let Some(&(at, c)) = self.retries.front() {
            if at > now {
                break;
            }
            self.retries.pop_front();
            self.next(c)?;
        }
        while let Some(&Reverse((at, c))) = self.waiting.peek() {
            if at > now {
                break;
            }
            self.waiting.pop();
            self.start(c, at, true)?;
        }
        Ok(())
    }
}

/// The busy clients in the order their requests started, as a doubly
/// linked list threaded through two arrays: every operation is O(1), and it
/// never holds more than one entry per client.
struct StartOrder {
    links: Vec<(usize, usize)>,
    head: usize,
    tail: usize,
}

impl StartOrder {
    const NONE: usize = usize::MAX;

    fn new(clients: usize) -> Self {
        StartOrder {
            links: vec![(Self::NONE, Self::NONE); clients],
            head: Self::NONE,
            tail: Self::NONE,
        }
    }

    fn front(&self) -> Option<usize> {
        (self.head != Self::NONE).then_some(self.head)
    }

    /// Puts `c` after the last entry that began no later than it. In the
    /// closed loop that is the end, at once; in the open loop, a request
    /// that waited for its connection began (was due) before requests
    /// already out, and goes in among them, searched from the end.
    fn insert(&mut self, c: usize, began: impl Fn(usize) -> Instant) {
        let mine = began(c);
        let mut prev = self.tail;
        while prev != Self::NONE && began(prev) > mine {
            prev = self.links[prev].0;
        }
        let next = match prev {
            Self::NONE => self.head,
            p => self.links[p].1,
        };
        self.links[c] = (prev, next);
        match prev {
            Self::NONE => self.head = c,
            p => self.links[p].1 = c,
        }
        match next {
            Self::NONE => self.tail = c,
            n => self.links[n].0 = c,
        }
    }

    /// Takes `c` out; it must be in the list.
    fn remove(&mut self, c: usize) {
        let (prev, next) = std::mem::replace(&mut self.links[c], (Self::NONE, Self::NONE));
        match prev {
            Self::NONE => self.head = next,
            p => self.links[p].1 = next,
        }
        match next {
            Self::NONE => self.tail = prev,
            n => self.links[n].0 = prev,
        }
    }
}
