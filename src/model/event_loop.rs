//! The event loop shared by the readiness models (busy, select, poll,
//! epoll): one thread, non-blocking sockets, and a [`Poller`] that says which
//! of them are ready. The four models differ only in their `Poller`.
//!
//! The shape is mio's `tcp_server` example: a listener token, a table of
//! connections by token, accept until `WouldBlock`, a handler that reports
//! when a connection is done. Each connection is a sans-IO [`Session`]; what
//! the loop waits for is derived from it (`wants_read`, pending output), and
//! its deadlines (`--delay`, `--idle-timeout`) go into one timer queue, so a
//! delayed reply never stops the loop serving everyone else.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use slab::Slab;

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
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub token: usize,
    pub readable: bool,
    pub writable: bool,
    /// Hang-up or error: the peer is gone (reset, or closed both ways).
    pub closed: bool,
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

/// One connection: its socket, its session, and what the poller and the
/// timer queue currently hold for it.
struct Connection {
    stream: Stream,
    session: Session,
    /// What the poller watches for now (changed only when it must be).
    interest: Interest,
    /// The deadline the timer queue holds for this connection, if any.
    timer: Option<Instant>,
    /// Distinguishes this connection from a later one in the same slot, so
    /// stale timers and wake-ups are ignored.
    generation: u64,
}

/// Other connections' wake-ups (chat), from any thread: the token to visit
/// goes in the list, and the eventfd wakes the loop.
struct Waker {
    event: EventFd,
    pending: Mutex<Vec<(usize, u64)>>,
}

/// Runs the loop on the calling thread until shutdown and the grace period.
pub fn run(
    mut poller: impl Poller,
    listener: Listener,
    service: &Service,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let waker = Arc::new(Waker {
        event: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        pending: Mutex::new(Vec::new()),
    });
    poller.register(listener.as_raw_fd(), LISTENER, Interest::READ)?;
    poller.register(shutdown.as_fd().as_raw_fd(), SHUTDOWN, Interest::READ)?;
    poller.register(waker.event.as_fd().as_raw_fd(), WAKER, Interest::READ)?;

    let mut state = Loop {
        connections: Slab::new(),
        timers: BinaryHeap::new(),
        generation: 0,
        buf: vec![0; CHUNK_SIZE],
        paused_at: None,
        max_conns: config.max_conns.unwrap_or(usize::MAX),
        waker,
    };
    let mut events = Vec::with_capacity(1024);
    let mut grace_deadline: Option<Instant> = None;
    loop {
        let next_timer = state.timers.peek().map(|Reverse((at, _, _))| *at);
        let deadline = match (next_timer, grace_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        events.clear();
        match poller.wait(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        let now = Now::system();
        for event in &events {
            match event.token {
                LISTENER => state.accept(&listener, &mut poller, service, now),
                // A busy poller reports everything as ready: check the flag.
                SHUTDOWN if grace_deadline.is_none() && shutdown.is_triggered() => {
                    tracing::debug!("event loop: shutting down");
                    grace_deadline = Some(now.instant + config.grace);
                    // Level-triggered and never reset: stop watching it.
                    poller.deregister(shutdown.as_fd().as_raw_fd(), SHUTDOWN)?;
                    if state.paused_at.is_none() {
                        poller.deregister(listener.as_raw_fd(), LISTENER)?;
                    }
                    state.paused_at = Some(0);
                    let tokens: Vec<usize> = state.connections.iter().map(|(t, _)| t).collect();
                    for token in tokens {
                        // A request already in the socket is in flight: take
                        // it before saying no more (one non-blocking read).
                        let readable = Event {
                            token,
                            readable: true,
                            writable: false,
                            closed: false,
                        };
                        state.ready(token, readable, &mut poller, now);
                        if let Some(conn) = state.connections.get_mut(token) {
                            conn.session.handle_shutdown();
                            state.settle(token, &mut poller, now.instant);
                        }
                    }
                }
                SHUTDOWN => {}
                WAKER => state.wake(&mut poller, now),
                token => state.ready(token, *event, &mut poller, now),
            }
        }
        state.fire_timers(&mut poller, Now::system());
        if state.paused_at.is_some_and(|n| state.connections.len() < n) {
            // A connection closed since we stopped: try accepting again.
            poller.register(listener.as_raw_fd(), LISTENER, Interest::READ)?;
            state.paused_at = None;
        }
        if grace_deadline.is_some_and(|grace| super::wound_down(grace, state.connections.len())) {
            return Ok(());
        }
    }
}

struct Loop {
    connections: Slab<Connection>,
    /// Deadlines by instant; entries whose connection moved on are skipped.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    generation: u64,
    /// One read buffer for every connection: an idle connection holds none.
    buf: Vec<u8>,
    /// Set while the listener is not watched (at `--max-conns`, out of
    /// descriptors, shutting down): the number of connections then. Accepting
    /// resumes once fewer are open, since only a close can change things.
    paused_at: Option<usize>,
    max_conns: usize,
    waker: Arc<Waker>,
}

impl Loop {
    /// Accepts until `WouldBlock`, or until a limit says stop.
    fn accept(&mut self, listener: &Listener, poller: &mut impl Poller, service: &Service, now: Now) {
        loop {
            if self.connections.len() >= self.max_conns {
                self.pause_accepting(listener, poller, "--max-conns reached");
                return;
            }
            let stream = match listener.accept() {
                Ok(stream) => stream,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                Err(e) if out_of_descriptors(&e) => {
                    self.pause_accepting(listener, poller, "out of file descriptors");
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
                self.pause_accepting(listener, poller, "descriptor beyond what this poller can watch");
                return;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                tracing::debug!("dropping a connection: {e}");
                continue;
            }
            self.generation += 1;
            let mut session = service.session(now);
            let entry = self.connections.vacant_entry();
            let token = entry.key();
            if session.uses_wake() {
                let (waker, generation) = (self.waker.clone(), self.generation);
                session.set_wake(Arc::new(move || {
                    waker
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((token, generation));
                    let _ = waker.event.write(1);
                }));
            }
            if let Err(e) = poller.register(fd, token, Interest::READ) {
                tracing::warn!("cannot watch a new connection: {e}");
                continue;
            }
            entry.insert(Connection {
                stream,
                session,
                interest: Interest::READ,
                timer: None,
                generation: self.generation,
            });
            // The session may owe something already (a greeting, a timer).
            self.settle(token, poller, now.instant);
        }
    }

    fn pause_accepting(&mut self, listener: &Listener, poller: &mut impl Poller, why: &str) {
        if self.paused_at.is_none() {
            tracing::warn!(
                connections = self.connections.len(),
                "not accepting until a connection closes: {why}"
            );
            let _ = poller.deregister(listener.as_raw_fd(), LISTENER);
            self.paused_at = Some(self.connections.len());
        }
    }

    /// The poller says `token` is ready.
    fn ready(&mut self, token: usize, event: Event, poller: &mut impl Poller, now: Now) {
        let Some(conn) = self.connections.get_mut(token) else {
            return; // Closed earlier in this same batch of events.
        };
        if (event.readable || event.closed) && conn.session.wants_read() {
            match conn.stream.read(&mut self.buf) {
                Ok(0) => conn.session.handle_eof(now),
                Ok(n) => conn.session.handle_read(&self.buf[..n], now),
                Err(e) if would_block(&e) || interrupted(&e) => {}
                Err(e) => return self.close(token, poller, Some(e)),
            }
        } else if event.closed && conn.session.pending_output().is_empty() {
            // Gone, and we have nothing to read or say: close.
            return self.close(token, poller, None);
        }
        self.settle(token, poller, now.instant);
    }

    /// Other connections left messages (chat): deliver them.
    fn wake(&mut self, poller: &mut impl Poller, now: Now) {
        let _ = self.waker.event.read();
        let pending = std::mem::take(&mut *self.waker.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (token, generation) in pending {
            if let Some(conn) = self
                .connections
                .get_mut(token)
                .filter(|c| c.generation == generation)
            {
                conn.session.handle_wake(now);
                self.settle(token, poller, now.instant);
            }
        }
    }

    /// Runs every timer that is due.
    fn fire_timers(&mut self, poller: &mut impl Poller, now: Now) {
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
            conn.session.handle_timeout(now);
            self.settle(token, poller, now.instant);
        }
    }

    /// After anything happened to a connection: write what it owes, close it
    /// if it is finished, and bring the poller and the timer queue in line
    /// with what its session now wants.
    fn settle(&mut self, token: usize, poller: &mut impl Poller, now: Instant) {
        let Some(conn) = self.connections.get_mut(token) else {
            return;
        };
        while !conn.session.pending_output().is_empty() {
            match conn.stream.write(conn.session.pending_output()) {
                Ok(n) => conn.session.consume_output(n, now),
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) => return self.close(token, poller, Some(e)),
            }
        }
        if conn.session.is_finished() {
            return self.close(token, poller, None);
        }
        let wanted = Interest {
            read: conn.session.wants_read(),
            write: !conn.session.pending_output().is_empty(),
        };
        if wanted != conn.interest {
            if let Err(e) = poller.reregister(conn.stream.as_raw_fd(), token, wanted) {
                return self.close(token, poller, Some(e));
            }
            conn.interest = wanted;
        }
        match conn.session.poll_timeout() {
            // Only an earlier deadline needs a new entry; a later one is
            // found when the current entry fires and finds nothing to do.
            Some(at) if conn.timer.is_none_or(|t| at < t) => {
                conn.timer = Some(at);
                self.timers.push(Reverse((at, token, conn.generation)));
            }
            Some(_) => {}
            None => conn.timer = None,
        }
        if wanted == Interest::default() && conn.timer.is_none() && !conn.session.may_be_woken() {
            // Waiting for nothing at all: nothing will ever happen again.
            self.close(token, poller, None);
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
    }
}
