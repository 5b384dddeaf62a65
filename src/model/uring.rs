//! `uring`: completion-based I/O with io_uring (seed 002's overlapped I/O,
//! IOCP and AIO, as Linux does them now). Where a readiness model asks "can
//! I read?" and then reads, this one says "read into a buffer and tell me
//! when it is done": accepts, receives and sends are submitted to a ring the
//! kernel shares with us, and their completions come back on another.
//!
//! - One multishot accept stays armed for the listener (kernel 5.19+; a
//!   single-shot accept re-armed after each connection where it is not,
//!   or under `--max-conns`).
//! - Receives take their buffer from a pool provided to the kernel, so an
//!   idle connection with a receive armed holds no buffer of its own.
//! - A send owns a copy of the session's output until it completes: the
//!   kernel reads from that memory after we hand it over. The session
//!   counts the bytes as written only when the completion says so, so its
//!   write deadline sees a send stuck on a peer that does not read.
//! - Session deadlines (`--delay`, `--idle-timeout`) bound the wait for
//!   completions (`io_uring_enter` with a timeout).
//! - `--workers N` rings, each on its own `SO_REUSEPORT` listener.
//!
//! The `io-uring` crate is the thin, maintained binding to the kernel
//! interface (what liburing is to C); the higher-level runtimes (tokio-uring,
//! glommio) would hide exactly what this model is here to show.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use nix::sys::eventfd::{EfdFlags, EventFd};
use slab::Slab;

use super::ServerConfig;
use crate::net::{out_of_descriptors, DescriptorShortage, Listener, Stream};
use crate::ring;
use crate::service::{Now, Service, Session, CHUNK_SIZE};
use crate::shutdown::Shutdown;

/// Submission queue size per ring; completions get twice as many slots.
const RING_ENTRIES: u32 = 4096;
/// The receive buffer pool: this many buffers of CHUNK_SIZE per ring.
const BUFFERS: u16 = 1024;
const BUFFER_GROUP: u16 = 0;
/// After we are done with a connection, how long the peer has to close
/// before its socket is closed anyway (see `Conn::closing`).
const LINGER: Duration = Duration::from_secs(1);

/// What a completion is about: the kind in the top byte of `user_data`, the
/// connection's token in the low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Shutdown = 4,
    Wake = 5,
    Provide = 6,
}

fn user_data(op: Op, token: usize) -> u64 {
    ((op as u64) << 56) | token as u64
}

fn decode(data: u64) -> (Option<Op>, usize) {
    let op = match data >> 56 {
        1 => Some(Op::Accept),
        2 => Some(Op::Recv),
        3 => Some(Op::Send),
        4 => Some(Op::Shutdown),
        5 => Some(Op::Wake),
        6 => Some(Op::Provide),
        _ => None,
    };
    (op, (data & 0xffff_ffff) as usize)
}

/// Checks that the kernel lets us make a ring, with the error users see.
pub fn check_available() -> anyhow::Result<()> {
    IoUring::new(8).map(drop).map_err(unavailable)
}

fn unavailable(e: io::Error) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSYS) => " (the kernel has none, or a seccomp filter hides it)",
        Some(libc::EPERM) => " (disabled: see /proc/sys/kernel/io_uring_disabled)",
        _ => "",
    };
    anyhow::anyhow!("io_uring is not available: {e}{hint}")
}

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    check_available()?;
    super::on_sibling_listeners(listener, config.workers, "uring", shutdown, |_, listener| {
        Ring::new(listener, config, shutdown)?.run(&service)
    })
}

/// One connection and what the ring is doing for it.
struct Conn {
    stream: Stream,
    session: Session,
    /// A receive is submitted and has not completed.
    receiving: bool,
    /// A send is in flight; the kernel reads from `send_buf` (a copy of the
    /// session's pending output) until it ends.
    sending: bool,
    send_buf: Vec<u8>,
    /// We are done and sent FIN; waiting for the peer's close (or LINGER).
    closing: Option<Instant>,
    /// The deadline the timer queue holds for this connection.
    timer: Option<Instant>,
}

/// Other connections' wake-ups (chat): tokens to visit, and an eventfd.
struct Waker {
    event: EventFd,
    pending: Mutex<Vec<usize>>,
}

struct Ring {
    ring: IoUring,
    listener: Listener,
    shutdown: Shutdown,
    grace: Duration,
    max_conns: usize,
    conns: Slab<Conn>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// The receive buffers provided to the kernel; never moved or resized.
    buffers: Vec<u8>,
    /// Connections whose receive found the pool empty, to re-arm later.
    starved: Vec<usize>,
    /// Whether accepts are multishot: not under --max-conns, nor once the
    /// kernel turns them down.
    multishot: bool,
    accepting: bool,
    /// Set while accepting is paused for want of descriptors: the number of
    /// connections then. Accepting resumes once fewer are open, as in the
    /// event loop: only a close can free a descriptor.
    paused_at: Option<usize>,
    shortage: DescriptorShortage,
    waker: Arc<Waker>,
    /// Completions taken off the ring, handled one by one.
    completions: Vec<cqueue::Entry>,
}

impl Ring {
    fn new(listener: Listener, config: &ServerConfig, shutdown: &Shutdown) -> anyhow::Result<Ring> {
        // One thread submits and reaps, so the kernel may defer its
        // completion work until we ask for completions (6.1+), saving the
        // interrupts it would otherwise take; older kernels get a plain ring.
        let ring = IoUring::builder()
            .setup_cqsize(RING_ENTRIES * 2)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(RING_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(RING_ENTRIES * 2)
                    .build(RING_ENTRIES)
            })
            .map_err(unavailable)?;
        Ok(Ring {
            ring,
            listener,
            shutdown: shutdown.clone(),
            grace: config.grace,
            max_conns: config.max_conns.unwrap_or(usize::MAX),
            conns: Slab::new(),
            timers: BinaryHeap::new(),
            buffers: vec![0; BUFFERS as usize * CHUNK_SIZE],
            starved: Vec::new(),
            // A multishot accept cannot be paused: by the time a cancel
            // reaches the kernel, a burst of connections may all have been
            // accepted past the limit. Under --max-conns, one accept at a
            // time, armed only while a slot is free.
            multishot: config.max_conns.is_none(),
            accepting: false,
            paused_at: None,
            shortage: DescriptorShortage::default(),
            waker: Arc::new(Waker {
                event: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
                pending: Mutex::new(Vec::new()),
            }),
            completions: Vec::with_capacity(RING_ENTRIES as usize),
        })
    }

    fn run(mut self, service: &Service) -> anyhow::Result<()> {
        self.listener.set_nonblocking(false)?;
        let provide = opcode::ProvideBuffers::new(
            self.buffers.as_mut_ptr(),
            CHUNK_SIZE as i32,
            BUFFERS,
            BUFFER_GROUP,
            0,
        )
        .build()
        .user_data(user_data(Op::Provide, 0));
        self.push(provide)?;
        self.arm_accept()?;
        let shutdown_fd = self.shutdown.as_fd().as_raw_fd();
        self.push(poll_readable(shutdown_fd, Op::Shutdown))?;
        self.push(poll_readable(self.waker.event.as_fd().as_raw_fd(), Op::Wake))?;

        let mut grace: Option<Instant> = None;
        loop {
            self.wait(grace)?;
            let now = Now::system();
            // Reused across iterations: no allocation per wake-up.
            let mut completions = std::mem::take(&mut self.completions);
            completions.extend(self.ring.completion());
            for cqe in completions.drain(..) {
                let (op, token) = decode(cqe.user_data());
                match op {
                    Some(Op::Accept) => self.accepted(cqe, service, now)?,
                    Some(Op::Recv) => self.received(token, cqe, now)?,
                    Some(Op::Send) => self.sent(token, cqe, now)?,
                    Some(Op::Shutdown) if grace.is_none() => {
                        grace = Some(now.instant + self.grace);
                        self.begin_shutdown()?;
                    }
                    Some(Op::Wake) => self.woken(now)?,
                    Some(Op::Provide) if cqe.result() < 0 => {
                        anyhow::bail!(
                            "cannot provide receive buffers: {}",
                            io::Error::from_raw_os_error(-cqe.result())
                        )
                    }
                    _ => {}
                }
            }
            self.completions = completions;
            self.fire_timers(Now::system())?;
            for token in std::mem::take(&mut self.starved) {
                self.settle(token)?;
            }
            if self.paused_at.is_some_and(|n| self.conns.len() < n) {
                self.paused_at = None;
            }
            if !self.accepting
                && grace.is_none()
                && self.paused_at.is_none()
                && self.conns.len() < self.max_conns
            {
                self.arm_accept()?;
            }
            if grace.is_some_and(|deadline| super::wound_down(deadline, self.conns.len())) {
                if !self.conns.is_empty() {
                    self.abandon_in_flight();
                }
                return Ok(());
            }
        }
    }

    /// Leaves to the process's end the memory that operations still in
    /// flight point to. Closing the ring makes the kernel cancel them, but
    /// only after we have returned, and until then a receive may still write
    /// into the pool or a send read from its buffer: freeing them now would
    /// break the promise `push` relies on.
    fn abandon_in_flight(&mut self) {
        std::mem::forget(std::mem::take(&mut self.buffers));
        for (_, conn) in self.conns.iter_mut() {
            if conn.sending {
                std::mem::forget(std::mem::take(&mut conn.send_buf));
            }
        }
    }

    /// Submits what is queued and waits for one completion, or until the
    /// next deadline.
    fn wait(&mut self, grace: Option<Instant>) -> io::Result<()> {
        let next = self.timers.peek().map(|Reverse((at, _))| *at);
        let deadline = match (next, grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ring::submit_and_wait_until(&mut self.ring, deadline)
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        push(&mut self.ring, entry)
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let fd = types::Fd(self.listener.as_raw_fd());
        let entry = if self.multishot {
            opcode::AcceptMulti::new(fd).flags(libc::SOCK_CLOEXEC).build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        self.accepting = true;
        self.push(entry.user_data(user_data(Op::Accept, 0)))
    }

    fn accepted(&mut self, cqe: cqueue::Entry, service: &Service, now: Now) -> anyhow::Result<()> {
        let more = cqueue::more(cqe.flags());
        if !more {
            self.accepting = false;
        }
        let fd = cqe.result();
        if fd < 0 {
            let err = io::Error::from_raw_os_error(-fd);
            if out_of_descriptors(&err) {
                // Re-arming now would fail again at once, for ever: wait
                // for a connection to close.
                self.shortage.hit(&err);
                self.paused_at = Some(self.conns.len());
                if more {
                    self.push(opcode::AsyncCancel::new(user_data(Op::Accept, 0)).build())?;
                }
            } else if self.multishot && fd == -libc::EINVAL {
                tracing::debug!("no multishot accept on this kernel: accepting one at a time");
                self.multishot = false;
            } else if err.raw_os_error() != Some(libc::ECANCELED) {
                tracing::debug!("accept: {err}");
            }
            return Ok(());
        }
        if self.paused_at.is_none() {
            // (An accept still in flight when the pause began is not the
            // end of the episode.)
            self.shortage.over();
        }
        let stream = self.adopt(fd);
        let mut session = service.session(now);
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        if session.uses_wake() {
            let waker = self.waker.clone();
            session.set_wake(Arc::new(move || {
                waker
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(token);
                let _ = waker.event.write(1);
            }));
        }
        entry.insert(Conn {
            stream,
            session,
            receiving: false,
            sending: false,
            send_buf: Vec::new(),
            closing: None,
            timer: None,
        });
        self.settle(token)
    }

    /// Wraps an accepted descriptor in the listener's kind of stream.
    fn adopt(&self, fd: RawFd) -> Stream {
        match &self.listener {
            Listener::Tcp(_) => {
                // SAFETY: the kernel just created this descriptor for us
                // alone; the stream becomes its only owner.
                let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
                let _ = stream.set_nodelay(true);
                Stream::Tcp(stream)
            }
            // SAFETY: as above.
            Listener::Unix(..) => Stream::Unix(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) }),
        }
    }

    fn received(&mut self, token: usize, cqe: cqueue::Entry, now: Now) -> anyhow::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        conn.receiving = false;
        let n = cqe.result();
        let buffer = cqueue::buffer_select(cqe.flags());
        match n {
            n if n > 0 => {
                if let Some(bid) = buffer {
                    let start = bid as usize * CHUNK_SIZE;
                    if conn.closing.is_none() {
                        conn.session
                            .handle_read(&self.buffers[start..start + n as usize], now);
                    }
                }
            }
            0 => {
                if conn.closing.is_some() {
                    return self.release(token);
                }
                conn.session.handle_eof(now);
            }
            e if -e == libc::ENOBUFS => self.starved.push(token),
            e => {
                tracing::debug!("recv: {}", io::Error::from_raw_os_error(-e));
                return self.release(token);
            }
        }
        if let Some(bid) = buffer {
            self.give_back(bid)?;
        }
        self.settle(token)
    }

    /// Returns a receive buffer to the kernel's pool.
    fn give_back(&mut self, bid: u16) -> io::Result<()> {
        let start = bid as usize * CHUNK_SIZE;
        // SAFETY (for push): the buffer is part of `self.buffers`, which
        // lives as long as the ring and is never resized.
        let ptr = self.buffers[start..].as_mut_ptr();
        let entry = opcode::ProvideBuffers::new(ptr, CHUNK_SIZE as i32, 1, BUFFER_GROUP, bid)
            .build()
            .user_data(user_data(Op::Provide, 0));
        self.push(entry)
    }

    fn sent(&mut self, token: usize, cqe: cqueue::Entry, now: Now) -> anyhow::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        conn.sending = false;
        match cqe.result() {
            n if n >= 0 => conn.session.consume_output(n as usize, now.instant),
            e => {
                tracing::debug!("send: {}", io::Error::from_raw_os_error(-e));
                return self.release(token);
            }
        }
        self.settle(token)
    }

    fn woken(&mut self, now: Now) -> anyhow::Result<()> {
        let _ = self.waker.event.read();
        let fd = self.waker.event.as_fd().as_raw_fd();
        self.push(poll_readable(fd, Op::Wake))?;
        let tokens = std::mem::take(&mut *self.waker.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for token in tokens {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.session.handle_wake(now);
                self.settle(token)?;
            }
        }
        Ok(())
    }

    fn begin_shutdown(&mut self) -> anyhow::Result<()> {
        if self.accepting {
            self.push(opcode::AsyncCancel::new(user_data(Op::Accept, 0)).build())?;
            self.accepting = false;
        }
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            self.conns[token].session.handle_shutdown();
            self.settle(token)?;
        }
        Ok(())
    }

    fn fire_timers(&mut self, now: Now) -> anyhow::Result<()> {
        while let Some(&Reverse((at, token))) = self.timers.peek() {
            if at > now.instant {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if conn.closing.is_some_and(|t| t <= now.instant) {
                // The peer never closed: stop waiting for it.
                let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                continue;
            }
            if conn.timer != Some(at) {
                continue;
            }
            conn.timer = None;
            conn.session.handle_timeout(now);
            self.settle(token)?;
        }
        Ok(())
    }

    /// After anything happened to a connection: send what it owes, arm a
    /// receive if it wants input, and keep its deadline in the timer queue.
    fn settle(&mut self, token: usize) -> anyhow::Result<()> {
        // Disjoint fields: the connection is borrowed while the ring is fed.
        let (ring, timers) = (&mut self.ring, &mut self.timers);
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        let fd = types::Fd(conn.stream.as_raw_fd());
        if conn.sending && conn.session.is_finished() {
            // The session gave up on output still being sent (a peer that
            // does not read): end the send, which completes with an error.
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        if !conn.sending {
            // What the last send did not take is still the session's
            // pending output: copy it afresh.
            conn.send_buf.clear();
            conn.send_buf.extend_from_slice(conn.session.pending_output());
            if !conn.send_buf.is_empty() {
                let rest = &conn.send_buf;
                let send = opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(user_data(Op::Send, token));
                push(ring, send)?;
                conn.sending = true;
            } else if conn.send_buf.capacity() > 4 * CHUNK_SIZE {
                conn.send_buf = Vec::new(); // An idle connection holds nothing.
            }
        }
        if conn.session.is_finished() && !conn.sending && conn.closing.is_none() {
            // Done: FIN now, then let the armed receive see the peer's
            // close (a close with unread input would send a reset).
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            let until = Instant::now() + LINGER;
            conn.closing = Some(until);
            timers.push(Reverse((until, token)));
        }
        // Receive once the reply is out, as a request/reply peer only
        // speaks again after it has its answer: one operation in flight
        // per connection, not two.
        let wants_read = conn.closing.is_some() || conn.session.wants_read();
        if wants_read && !conn.receiving && !conn.sending {
            let recv = opcode::Recv::new(fd, std::ptr::null_mut(), CHUNK_SIZE as u32)
                .buf_group(BUFFER_GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(user_data(Op::Recv, token));
            push(ring, recv)?;
            conn.receiving = true;
        }
        if conn.closing.is_none() {
            match conn.session.poll_timeout() {
                Some(at) if conn.timer.is_none_or(|t| at < t) => {
                    conn.timer = Some(at);
                    timers.push(Reverse((at, token)));
                }
                Some(_) => {}
                None => conn.timer = None,
            }
        }
        if !conn.receiving
            && !conn.sending
            && conn.timer.is_none()
            && conn.closing.is_none()
            && !conn.session.may_be_woken()
        {
            // Nothing in flight and nothing to wait for: it is over.
            return self.release(token);
        }
        Ok(())
    }

    /// Frees a connection once nothing of it is in flight any more.
    fn release(&mut self, token: usize) -> anyhow::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        if conn.receiving || conn.sending {
            // Make the pending operations complete; we come back then.
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            conn.closing.get_or_insert(Instant::now());
            return Ok(());
        }
        self.conns.remove(token);
        Ok(())
    }
}

/// Queues one submission, submitting what is queued if the ring is full.
fn push(ring: &mut IoUring, entry: squeue::Entry) -> io::Result<()> {
    // SAFETY: every buffer an entry points to (the provided pool, a
    // connection's send_buf) stays allocated and untouched until the
    // entry's completion has been seen; see `Conn` and `Ring::buffers`.
    unsafe { ring::push(ring, &entry) }
}

fn poll_readable(fd: RawFd, op: Op) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
        .build()
        .user_data(user_data(op, 0))
}
