//! The event loop shared by the readiness models (busy, select, poll,
//! epoll): one thread, non-blocking sockets, and a [`Poller`] that says which
//! of them are ready. The four models differ only in their `Poller`.
//!
//! The designs built on a loop add [`Hooks`] rather than loops of their own:
//! reactors feeds each loop connections accepted by another thread
//! ([`Source::Handoff`]); half-async and leader lend a connection's session
//! with its input to another thread ([`Job`]) and take it back to write the
//! replies ([`Loop::give_back`]); leader's threads share one [`Loop`] and
//! drive it with [`Loop::turn`].
//!
//! The shape is mio's `tcp_server` example: a listener token, a table of
//! connections by token, accept until `WouldBlock`, a handler that reports
//! when a connection is done. Each connection is a sans-IO [`Session`]; what
//! the loop waits for is derived from it (`wants_read`, pending output; an
//! edge-triggered poller, epoll's, is told once and the loop keeps track of
//! the input it has left unread instead), and
//! its deadlines (`--delay`, `--idle-timeout`) go into one timer queue, so a
//! delayed reply never stops the loop serving everyone else.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use slab::Slab;

use super::blocking::Slot;
use super::spread::AcceptSpread;
use super::ServerConfig;
use crate::net::{interrupted, out_of_descriptors, would_block, Listener, Stream};
use crate::service::{Now, Service, Session, CHUNK_SIZE};
use crate::shutdown::Shutdown;

/// What a connection wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
}

/// One ready descriptor, as the poller reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Event {
    pub token: usize,
    pub readable: bool,
    pub writable: bool,
    /// Hang-up or error: the peer is gone (reset, or closed both ways).
    pub closed: bool,
    /// The peer closed its side (`EPOLLRDHUP`): once its data is read, a
    /// read will see the end. Only an edge-triggered poller, which must
    /// not miss that end, says so.
    pub peer_closed: bool,
}

/// How a readiness model waits. Everything else is the loop's.
pub trait Poller {
    /// Starts watching `fd` under `token`.
    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()>;
    /// Changes what `fd` is watched for.
    fn reregister(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()>;
    /// Stops watching `fd` (before it is closed).
    fn deregister(&mut self, fd: RawFd, token: usize) -> io::Result<()>;
    /// Waits until something is ready or `timeout` passes (`None`: no
    /// limit), and fills `events`.
    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;
    /// Whether `fd` can be watched at all (select: below FD_SETSIZE).
    fn can_watch(&self, _fd: RawFd) -> bool {
        true
    }
    /// Whether a descriptor is reported once and then disarmed until it is
    /// registered again (`EPOLLONESHOT`, for leader's threads that share
    /// one epoll): the loop then re-arms everything it has handled.
    fn oneshot(&self) -> bool {
        false
    }
    /// Whether a descriptor is reported when it becomes ready, not while it
    /// is (`EPOLLET`): the loop then registers each connection once for
    /// both directions and remembers input it has not read.
    fn edge_triggered(&self) -> bool {
        false
    }
}

/// A wait's limit in the milliseconds of `poll(2)` and `epoll_wait(2)`:
/// rounded up, so a wait never ends just before its deadline; -1 for none.
pub fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    timeout.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int
    })
}

/// How a poller without kernel state (busy, select) waits: the watched
/// descriptors live in a plain list ([`Watched`]), and the model adds only
/// the waiting.
pub trait Scan {
    /// Fills `events` from `watched`, waiting at most `timeout`.
    fn scan(
        &mut self,
        watched: &[(RawFd, usize, Interest)],
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()>;
    /// Whether `fd` can be watched at all (select: below FD_SETSIZE).
    fn can_watch(&self, _fd: RawFd) -> bool {
        true
    }
}

/// A [`Poller`] made of a plain list of watched descriptors and a [`Scan`].
pub struct Watched<S> {
    entries: Vec<(RawFd, usize, Interest)>,
    scan: S,
}

impl<S: Scan> Watched<S> {
    pub fn new(scan: S) -> Self {
        Watched {
            entries: Vec::new(),
            scan,
        }
    }

    fn find(&mut self, fd: RawFd, token: usize) -> Option<&mut (RawFd, usize, Interest)> {
        self.entries.iter_mut().find(|(f, t, _)| *f == fd && *t == token)
    }
}

impl<S: Scan> Poller for Watched<S> {
    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        if !self.scan.can_watch(fd) {
            return Err(io::Error::other(format!(
                "descriptor {fd} is beyond what this poller can watch"
            )));
        }
        self.entries.push((fd, token, interest));
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        if let Some(entry) = self.find(fd, token) {
            entry.2 = interest;
        }
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        self.entries.retain(|(f, t, _)| !(*f == fd && *t == token));
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.scan.scan(&self.entries, events, timeout)
    }

    fn can_watch(&self, fd: RawFd) -> bool {
        self.scan.can_watch(fd)
    }
}

/// Tokens of the loop's own descriptors; connections use slab keys below.
const LISTENER: usize = usize::MAX;
const SHUTDOWN: usize = usize::MAX - 1;
const WAKER: usize = usize::MAX - 2;
const FINISHED: usize = usize::MAX - 3;

/// Where a loop's connections come from.
pub enum Source<'a> {
    /// Its own listening socket, on which it calls accept(2).
    Listener(Listener),
    /// Another thread accepts and hands connections over (reactors).
    Handoff(&'a Handoff),
}

impl Source<'_> {
    fn fd(&self) -> RawFd {
        match self {
            Source::Listener(listener) => listener.as_raw_fd(),
            Source::Handoff(handoff) => handoff.fd(),
        }
    }

    /// The next connection, or `WouldBlock` when none waits.
    fn next(&self) -> io::Result<(Stream, Option<Slot>)> {
        match self {
            Source::Listener(listener) => listener.accept().map(|s| (s, None)),
            Source::Handoff(handoff) => handoff.take().map(|(s, slot)| (s, Some(slot))),
        }
    }
}

/// A list other threads fill and the loop empties, with an eventfd that
/// wakes the loop when the list stops being empty: how connections accepted
/// by another thread (reactors), jobs a worker finished (half-async) and
/// other connections' wake-ups (chat) reach a loop.
pub struct Mailbox<T> {
    items: Mutex<VecDeque<T>>,
    event: EventFd,
}

/// Connections accepted by another thread for one loop (reactors), each
/// with its `--max-conns` slot, freed when the loop closes it.
pub type Handoff = Mailbox<(Stream, Slot)>;

impl<T> Mailbox<T> {
    pub fn new() -> io::Result<Self> {
        Ok(Mailbox {
            items: Mutex::new(VecDeque::new()),
            event: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        })
    }

    /// What the loop watches: readable while something waits.
    pub fn fd(&self) -> RawFd {
        self.event.as_fd().as_raw_fd()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves an item; wakes the loop if nothing was waiting (otherwise it
    /// has been woken already and not yet emptied the list).
    pub fn push(&self, item: T) {
        let mut items = self.lock();
        let was_empty = items.is_empty();
        items.push_back(item);
        drop(items);
        if was_empty {
            self.nudge();
        }
    }

    /// Wakes the loop with nothing to take (a waiting leader's timer).
    fn nudge(&self) {
        let _ = self.event.write(1);
    }

    /// Everything waiting. The wake-up is reset under the lock, so an item
    /// left after this call always brings a new one.
    pub fn take_all(&self) -> VecDeque<T> {
        let mut items = self.lock();
        let _ = self.event.read();
        std::mem::take(&mut *items)
    }

    /// The next item, or `WouldBlock` when none waits; the wake-up is reset
    /// when the list empties.
    fn take(&self) -> io::Result<T> {
        let mut items = self.lock();
        let next = items.pop_front();
        if items.is_empty() {
            let _ = self.event.read();
        }
        next.ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

/// A session lent out of the loop with the input it is to handle, so that
/// another thread runs the service (half-async's workers, leader's
/// threads) while the loop goes on; it comes back as a [`Finished`]. One
/// job per connection at a time keeps its replies in order.
pub struct Job {
    token: usize,
    generation: u64,
    session: Session,
    input: Input,
}

enum Input {
    Data(Vec<u8>),
    Eof,
}

/// A job done: the session back, or `None` if the service panicked on it.
pub struct Finished {
    token: usize,
    generation: u64,
    session: Option<Session>,
}

/// A request that makes [`Job::run`] panic, in test builds only: the panic
/// goes through the same `catch_unwind` as a real bug would.
#[cfg(test)]
pub const PANIC_REQUEST: &[u8] = b"socklab test: panic here";

impl Job {
    /// Runs the service over the input on this thread. A panic in the
    /// service is caught here: that connection is dropped, with a log line,
    /// and the thread goes on serving others.
    pub fn run(self) -> Finished {
        let Job {
            token,
            generation,
            mut session,
            input,
        } = self;
        let result = std::panic::catch_unwind(AssertUnwindSafe(move || {
            let now = Now::system();
            match &input {
                #[cfg(test)]
                Input::Data(data) if data.starts_with(PANIC_REQUEST) => panic!("test request"),
                Input::Data(data) => session.handle_read(data, now),
                Input::Eof => session.handle_eof(now),
            }
            session
        }));
        let session = match result {
            Ok(session) => Some(session),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::warn!("the service panicked on a request ({why}): dropping that connection");
                None
            }
        };
        Finished {
            token,
            generation,
            session,
        }
    }
}

/// Where lent sessions go and come back from (half-async's worker pool).
pub trait Offload: Sync {
    /// Hands a job to another thread.
    fn submit(&self, job: Job);
    /// Where the jobs done come back.
    fn finished(&self) -> &Mailbox<Finished>;
}

/// Where a loop runs its sessions' input.
#[derive(Clone, Copy, Default)]
pub enum Lend<'a> {
    /// On the loop's own thread (busy, select, poll, epoll, reactors).
    #[default]
    No,
    /// In a pool of other threads (half-async).
    To(&'a dyn Offload),
    /// Handed back to whichever thread called [`Loop::turn`], which runs
    /// them outside the loop's lock (leader).
    ToCaller,
}

/// What a model adds to the shared loop; the default is the plain loop.
#[derive(Clone, Copy, Default)]
pub struct Hooks<'a> {
    /// This loop is worker `.1` of a model that counts its accepts.
    pub spread: Option<(&'a AcceptSpread, usize)>,
    pub lend: Lend<'a>,
}

/// One connection: its socket, its session, and what the poller and the
/// timer queue currently hold for it.
struct Connection {
    stream: Stream,
    /// `None` while lent to another thread with a request ([`Job`]).
    session: Option<Session>,
    /// What the poller watches for now (changed only when it must be).
    interest: Interest,
    /// The earliest entry the timer queue holds for this connection, if
    /// any (its deadline may have gone since: it then fires into nothing).
    timer: Option<Instant>,
    /// Distinguishes this connection from a later one in the same slot, so
    /// stale timers and wake-ups are ignored.
    generation: u64,
    /// Its `--max-conns` slot when another thread accepted it (reactors).
    _slot: Option<Slot>,
    /// Woken (chat) or told to shut down while its session was lent: done
    /// when it comes back.
    woken: bool,
    shutdown_owed: bool,
    /// Edge-triggered only: the socket may hold input the loop has not
    /// read (it was reported while the session wanted none, or a read
    /// filled the whole buffer). No new edge will say so, so the loop reads
    /// it as soon as the session wants input ([`Loop::again`]).
    unread: bool,
    /// In [`Loop::again`] now.
    queued: bool,
    /// The poller said the peer closed its side: a read that took all the
    /// data has the end still to read.
    peer_closed: bool,
}

/// Other connections' wake-ups (chat), from any thread: the connection to
/// visit, by token and generation.
type Waker = Mailbox<(usize, u64)>;

/// Runs the loop on the calling thread until shutdown and the grace period.
pub fn run(
    poller: impl Poller,
    listener: Listener,
    service: &Service,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    run_with(
        poller,
        Source::Listener(listener),
        service,
        config,
        shutdown,
        Hooks::default(),
    )
}

/// [`run`], with connections from `source` and the model's `hooks`.
pub fn run_with(
    mut poller: impl Poller,
    source: Source<'_>,
    service: &Service,
    config: &ServerConfig,
    shutdown: &Shutdown,
    hooks: Hooks<'_>,
) -> anyhow::Result<()> {
    let mut state = Loop::new(source, service, config, shutdown, hooks)?;
    state.start(&mut poller)?;
    let mut events = Vec::with_capacity(1024);
    while !state.is_done() {
        let timeout = state
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        events.clear();
        match poller.wait(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        state.turn(&mut poller, &events)?;
    }
    Ok(())
}

/// The loop's state: its connections, their timers, and how it accepts.
/// One thread drives it with [`run_with`]; leader's threads share it behind
/// a mutex and drive it with the same [`turn`](Loop::turn).
pub struct Loop<'a> {
    source: Source<'a>,
    service: &'a Service,
    shutdown: &'a Shutdown,
    hooks: Hooks<'a>,
    grace: Duration,
    connections: Slab<Connection>,
    /// Deadlines by instant; entries whose connection moved on are skipped.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Edge-triggered: connections with input unread that want it, to be
    /// read at the end of this turn (by token and generation). One read
    /// each per turn, so a peer that sends without pause cannot hold the
    /// loop; the next wait does not sleep while this is not empty.
    again: Vec<(usize, u64)>,
    generation: u64,
    /// One read buffer for every connection: an idle connection holds none.
    buf: Vec<u8>,
    /// Set while the listener is not watched (at `--max-conns`, out of
    /// descriptors, shutting down): the number of connections then. Accepting
    /// resumes once fewer are open, since only a close can change things.
    paused_at: Option<usize>,
    max_conns: usize,
    waker: Arc<Waker>,
    /// Jobs for the caller of `turn` ([`Lend::ToCaller`]).
    lent: Vec<Job>,
    /// When the grace period ends, once shutdown began.
    grace_deadline: Option<Instant>,
    /// Wound down: whoever drives the loop may return.
    done: bool,
    /// A thread waits for readiness without holding the loop (leader), until
    /// this deadline (`None`: none): an earlier timer set meanwhile, or the
    /// end, must wake it.
    waiter: Option<Option<Instant>>,
}

impl<'a> Loop<'a> {
    pub fn new(
        source: Source<'a>,
        service: &'a Service,
        config: &ServerConfig,
        shutdown: &'a Shutdown,
        hooks: Hooks<'a>,
    ) -> anyhow::Result<Self> {
        let max_conns = match source {
            Source::Listener(ref listener) => {
                listener.set_nonblocking(true)?;
                config.max_conns.unwrap_or(usize::MAX)
            }
            // The accepting thread holds the limit for every loop.
            Source::Handoff(_) => usize::MAX,
        };
        let waker = Arc::new(Waker::new()?);
        Ok(Loop {
            source,
            service,
            shutdown,
            hooks,
            grace: config.grace,
            connections: Slab::new(),
            timers: BinaryHeap::new(),
            again: Vec::new(),
            generation: 0,
            buf: vec![0; CHUNK_SIZE],
            paused_at: None,
            max_conns,
            waker,
            lent: Vec::new(),
            grace_deadline: None,
            done: false,
            waiter: None,
        })
    }

    /// Registers the loop's own descriptors with `poller`.
    pub fn start(&mut self, poller: &mut impl Poller) -> io::Result<()> {
        poller.register(self.source.fd(), LISTENER, Interest::READ)?;
        poller.register(self.shutdown.as_fd().as_raw_fd(), SHUTDOWN, Interest::READ)?;
        poller.register(self.waker.fd(), WAKER, Interest::READ)?;
        if let Lend::To(offload) = self.hooks.lend {
            poller.register(offload.finished().fd(), FINISHED, Interest::READ)?;
        }
        Ok(())
    }

    /// Whether the loop has wound down after shutdown.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next instant the loop has something to do without an event.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.again.is_empty() {
            return Some(Instant::now()); // Input to read: no sleeping.
        }
        let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        match (next_timer, self.grace_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long a thread that waits without holding the loop may wait; it
    /// is woken if that changes (leader).
    pub fn wait_for_waiter(&mut self) -> Option<Duration> {
        let deadline = self.next_deadline();
        self.waiter = Some(deadline);
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn wake_waiter(&self) {
        if self.waiter.is_some() {
            self.waker.nudge();
        }
    }

    /// Handles one batch of events, then the timers that are due.
    pub fn turn(&mut self, poller: &mut impl Poller, events: &[Event]) -> anyhow::Result<()> {
        if self.done {
            return Ok(());
        }
        let now = Now::system();
        for event in events {
            match event.token {
                LISTENER => {
                    self.accept(poller, now);
                    if poller.oneshot() && self.paused_at.is_none() {
                        poller.reregister(self.source.fd(), LISTENER, Interest::READ)?;
                    }
                }
                // A busy poller reports everything as ready: check the flag.
                SHUTDOWN if self.grace_deadline.is_none() && self.shutdown.is_triggered() => {
                    self.begin_shutdown(poller, now)?;
                }
                SHUTDOWN => {}
                WAKER => {
                    self.wake(poller, now);
                    if poller.oneshot() {
                        poller.reregister(self.waker.fd(), WAKER, Interest::READ)?;
                    }
                }
                FINISHED => {
                    if let Lend::To(offload) = self.hooks.lend {
                        for finished in offload.finished().take_all() {
                            self.give_back(finished, poller);
                        }
                    }
                }
                token => self.ready(token, *event, poller, now),
            }
        }
        self.read_again(poller, now);
        self.fire_timers(poller, now.instant);
        if self.paused_at.is_some_and(|n| self.connections.len() < n) {
            // A connection closed since we stopped: try accepting again.
            poller.register(self.source.fd(), LISTENER, Interest::READ)?;
            self.paused_at = None;
        }
        if self
            .grace_deadline
            .is_some_and(|grace| super::wound_down(grace, self.connections.len()))
        {
            self.done = true;
            self.wake_waiter();
        }
        Ok(())
    }

    fn begin_shutdown(&mut self, poller: &mut impl Poller, now: Now) -> io::Result<()> {
        tracing::debug!("event loop: shutting down");
        self.grace_deadline = Some(now.instant + self.grace);
        // Level-triggered and never reset: stop watching it.
        poller.deregister(self.shutdown.as_fd().as_raw_fd(), SHUTDOWN)?;
        if self.paused_at.is_none() {
            poller.deregister(self.source.fd(), LISTENER)?;
        }
        self.paused_at = Some(0);
        let tokens: Vec<usize> = self.connections.iter().map(|(t, _)| t).collect();
        for token in tokens {
            // A request already in the socket is in flight: take it before
            // saying no more (one non-blocking read).
            let readable = Event {
                token,
                readable: true,
                ..Event::default()
            };
            self.ready(token, readable, poller, now);
            if let Some(conn) = self.connections.get_mut(token) {
                match conn.session.as_mut() {
                    Some(session) => {
                        session.handle_shutdown();
                        self.settle(token, poller, now.instant);
                    }
                    None => conn.shutdown_owed = true,
                }
            }
        }
        Ok(())
    }

    /// The jobs lent to the caller of `turn` ([`Lend::ToCaller`]).
    pub fn take_lent(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.lent)
    }

    /// Accepts until `WouldBlock`, or until a limit says stop.
    fn accept(&mut self, poller: &mut impl Poller, now: Now) {
        loop {
            if self.connections.len() >= self.max_conns {
                self.pause_accepting(poller, "--max-conns reached");
                return;
            }
            let (stream, slot) = match self.source.next() {
                Ok(next) => next,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                Err(e) if out_of_descriptors(&e) => {
                    self.pause_accepting(poller, "out of file descriptors");
                    return;
                }
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    continue;
                }
            };
            let fd = stream.as_raw_fd();
            if !poller.can_watch(fd) {
                // select(2) cannot see descriptors at or above FD_SETSIZE.
                drop(stream);
                self.pause_accepting(poller, "descriptor beyond what this poller can watch");
                return;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                tracing::debug!("dropping a connection: {e}");
                continue;
            }
            self.generation += 1;
            let mut session = self.service.session(now);
            let entry = self.connections.vacant_entry();
            let token = entry.key();
            if session.uses_wake() {
                let (waker, generation) = (self.waker.clone(), self.generation);
                session.set_wake(Arc::new(move || waker.push((token, generation))));
            }
            // Edge-triggered, a connection is registered once for both
            // directions: an edge the session does not care about costs a
            // look, where changing the registration costs a system call.
            let interest = match poller.edge_triggered() {
                true => Interest {
                    read: true,
                    write: true,
                },
                false => Interest::READ,
            };
            if let Err(e) = poller.register(fd, token, interest) {
                tracing::warn!("cannot watch a new connection: {e}");
                continue;
            }
            if let Some((spread, worker)) = self.hooks.spread {
                spread.record(worker);
            }
            entry.insert(Connection {
                stream,
                session: Some(session),
                interest,
                timer: None,
                generation: self.generation,
                _slot: slot,
                woken: false,
                shutdown_owed: false,
                unread: false,
                queued: false,
                peer_closed: false,
            });
            // The session may owe something already (a greeting, a timer).
            self.settle(token, poller, now.instant);
        }
    }

    fn pause_accepting(&mut self, poller: &mut impl Poller, why: &str) {
        if self.paused_at.is_none() {
            tracing::warn!(
                connections = self.connections.len(),
                "not accepting until a connection closes: {why}"
            );
            let _ = poller.deregister(self.source.fd(), LISTENER);
            self.paused_at = Some(self.connections.len());
        }
    }

    /// The poller says `token` is ready.
    fn ready(&mut self, token: usize, event: Event, poller: &mut impl Poller, now: Now) {
        let Some(conn) = self.connections.get_mut(token) else {
            return; // Closed earlier in this same batch of events.
        };
        let edge = poller.edge_triggered();
        conn.unread |= edge && (event.readable || event.closed);
        conn.peer_closed |= event.peer_closed;
        let Some(session) = conn.session.as_mut() else {
            if edge {
                return; // Read once the session is back (`unread`).
            }
            // Lent, and the socket has more to say: stop watching it until
            // the session is back (level-triggered, it would be reported
            // again on every wait meanwhile). Done only now, not on every
            // lend: a peer that waits for its reply costs no system call.
            if conn.interest != Interest::default() && !poller.oneshot() {
                if let Err(e) = poller.reregister(conn.stream.as_raw_fd(), token, Interest::default()) {
                    return self.close(token, poller, Some(e));
                }
                conn.interest = Interest::default();
            }
            return;
        };
        if (event.readable || event.closed || conn.unread) && session.wants_read() {
            // Lending, the input goes with the session to another thread.
            let lending = !matches!(self.hooks.lend, Lend::No);
            let read = conn.stream.read(&mut self.buf);
            // A read that did not fill the buffer took everything there
            // was (more input will be a new edge), but for the peer's close
            // if it came with the data.
            conn.unread = edge
                && match read {
                    Ok(0) => false,
                    Ok(n) => n == self.buf.len() || conn.peer_closed,
                    Err(ref e) => interrupted(e),
                };
            match read {
                Ok(0) if lending => return self.lend(token, Input::Eof, poller),
                Ok(0) => session.handle_eof(now),
                Ok(n) if lending => return self.lend(token, Input::Data(self.buf[..n].to_vec()), poller),
                Ok(n) => session.handle_read(&self.buf[..n], now),
                Err(e) if would_block(&e) || interrupted(&e) => {}
                Err(e) => return self.close(token, poller, Some(e)),
            }
        } else if event.closed && session.pending_output().is_empty() {
            // Gone, and we have nothing to read or say: close.
            return self.close(token, poller, None);
        }
        self.settle(token, poller, now.instant);
    }

    /// Sends a connection's input to another thread with its session; the
    /// socket stays here, and is not read until the session comes back.
    fn lend(&mut self, token: usize, input: Input, poller: &mut impl Poller) {
        let Some(conn) = self.connections.get_mut(token) else {
            return;
        };
        let Some(session) = conn.session.take() else {
            return;
        };
        if poller.oneshot() {
            conn.interest = Interest::default(); // Disarmed by the event.
        }
        let job = Job {
            token,
            generation: conn.generation,
            session,
            input,
        };
        match self.hooks.lend {
            Lend::To(offload) => offload.submit(job),
            Lend::ToCaller | Lend::No => self.lent.push(job),
        }
    }

    /// A lent session is back: catch up with what happened meanwhile, then
    /// write its replies.
    pub fn give_back(&mut self, finished: Finished, poller: &mut impl Poller) {
        let Finished {
            token,
            generation,
            session,
        } = finished;
        let Some(conn) = self
            .connections
            .get_mut(token)
            .filter(|c| c.generation == generation && c.session.is_none())
        else {
            return;
        };
        let Some(mut session) = session else {
            return self.close(token, poller, None); // The service panicked.
        };
        let now = Now::system();
        if conn.shutdown_owed {
            session.handle_shutdown();
        } else if conn.woken {
            session.handle_wake(now);
        }
        (conn.woken, conn.shutdown_owed) = (false, false);
        conn.session = Some(session);
        self.settle(token, poller, now.instant);
    }

    /// Other connections left messages (chat): deliver them.
    fn wake(&mut self, poller: &mut impl Poller, now: Now) {
        for (token, generation) in self.waker.take_all() {
            let Some(conn) = self
                .connections
                .get_mut(token)
                .filter(|c| c.generation == generation)
            else {
                continue;
            };
            match conn.session.as_mut() {
                Some(session) => {
                    session.handle_wake(now);
                    self.settle(token, poller, now.instant);
                }
                None => conn.woken = true,
            }
        }
    }

    /// Reads, once each, the connections that have input left unread and
    /// want it (edge-triggered only). One that still has more after this
    /// read is queued again for the next turn, after everyone else's.
    fn read_again(&mut self, poller: &mut impl Poller, now: Now) {
        if self.again.is_empty() {
            return;
        }
        let again = std::mem::take(&mut self.again);
        for &(token, generation) in &again {
            let Some(conn) = self.connections.get_mut(token) else {
                continue;
            };
            if conn.generation == generation {
                conn.queued = false;
                let nothing_new = Event {
                    token,
                    ..Event::default()
                };
                self.ready(token, nothing_new, poller, now);
            }
        }
        if self.again.is_empty() {
            self.again = again; // Keep the allocation.
            self.again.clear();
        }
    }

    /// Runs every timer that is due. The clock is read afresh (handling
    /// the events took time), but only when a timer was due by the time
    /// this turn began: a loop whose next deadline is later reads it once
    /// per turn, and a timer that fell due meanwhile runs next turn, whose
    /// wait ends at once.
    fn fire_timers(&mut self, poller: &mut impl Poller, turn: Instant) {
        if self.timers.peek().is_none_or(|Reverse((at, _, _))| *at > turn) {
            return;
        }
        let now = Now::system();
        while let Some(&Reverse((at, token, generation))) = self.timers.peek() {
            if at > now.instant {
                break;
            }
            self.timers.pop();
            let Some(conn) = self
                .connections
                .get_mut(token)
                .filter(|c| c.generation == generation)
            else {
                continue; // That connection is gone.
            };
            if conn.timer != Some(at) {
                continue; // Superseded by an earlier deadline.
            }
            conn.timer = None;
            // A lent session's timer is set again when it comes back.
            if let Some(session) = conn.session.as_mut() {
                session.handle_timeout(now);
                self.settle(token, poller, now.instant);
            }
        }
    }

    /// After anything happened to a connection: write what it owes, close it
    /// if it is finished, and bring the poller and the timer queue in line
    /// with what its session now wants.
    fn settle(&mut self, token: usize, poller: &mut impl Poller, now: Instant) {
        let Some(conn) = self.connections.get_mut(token) else {
            return;
        };
        let Some(session) = conn.session.as_mut() else {
            return; // Lent: settled when it comes back.
        };
        while !session.pending_output().is_empty() {
            match conn.stream.write(session.pending_output()) {
                Ok(n) => session.consume_output(n, now),
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) => return self.close(token, poller, Some(e)),
            }
        }
        if session.is_finished() {
            return self.close(token, poller, None);
        }
        let wanted = Interest {
            read: session.wants_read(),
            write: !session.pending_output().is_empty(),
        };
        let edge = poller.edge_triggered();
        if edge && conn.unread && wanted.read && !conn.queued {
            conn.queued = true;
            self.again.push((token, conn.generation));
        }
        // Edge-triggered, the registration never changes (see `accept`).
        if !edge && (wanted != conn.interest || poller.oneshot()) {
            if let Err(e) = poller.reregister(conn.stream.as_raw_fd(), token, wanted) {
                return self.close(token, poller, Some(e));
            }
            conn.interest = wanted;
        }
        let mut earlier_than_the_wait = false;
        let deadline = session.poll_timeout();
        match deadline {
            // Only an earlier deadline needs a new entry; a later one is
            // found when the current entry fires and finds nothing to do.
            // An entry whose deadline went away stays until it fires, so a
            // deadline that comes and goes with every request (a write
            // clock) costs one entry per timeout, not one per request.
            Some(at) if conn.timer.is_none_or(|t| at < t) => {
                conn.timer = Some(at);
                self.timers.push(Reverse((at, token, conn.generation)));
                earlier_than_the_wait = self.waiter.is_some_and(|w| w.is_none_or(|w| at < w));
            }
            _ => {}
        }
        if wanted == Interest::default() && deadline.is_none() && !session.may_be_woken() {
            // Waiting for nothing at all: nothing will ever happen again.
            return self.close(token, poller, None);
        }
        if earlier_than_the_wait {
            self.wake_waiter(); // It would sleep past this deadline.
        }
    }

    fn close(&mut self, token: usize, poller: &mut impl Poller, error: Option<io::Error>) {
        if let Some(e) = error {
            tracing::debug!("connection ended: {e}");
        }
        if let Some(conn) = self.connections.try_remove(token) {
            let _ = poller.deregister(conn.stream.as_raw_fd(), token);
            conn.stream.close_gracefully();
        }
        if self.grace_deadline.is_some() && self.connections.is_empty() {
            self.wake_waiter(); // The last one: the wait for it is over.
        }
    }
}
