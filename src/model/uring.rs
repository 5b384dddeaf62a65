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
//! - `--uring FEATURE,...` switches on the later techniques one by one
//!   (see `uring_features.rs`); each lives in one place here: the buffer
//!   pool ([`Pool`]), the descriptor table ([`FileTable`]), the send
//!   ([`send_entry`]) and the wait ([`Ring::wait`]).
//!
//! The `io-uring` crate is the thin, maintained binding to the kernel
//! interface (what liburing is to C); the higher-level runtimes (tokio-uring,
//! glommio) would hide exactly what this model is here to show.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use super::event_loop::Mailbox;
use super::uring_features::UringFeatures;
use super::ServerConfig;
use crate::net::{out_of_descriptors, DescriptorShortage, Listener, Stream};
use crate::ring;
use crate::service::{Now, Service, Session, CHUNK_SIZE};
use crate::shutdown::Shutdown;

/// Submission queue size per ring; completions get twice as many slots.
/// Small on purpose: the kernel and we walk both rings round and round, so
/// their size is memory that cycles through the cache (4,096 entries were
/// 384 KiB; 256 are 24 KiB, and cost 1-2% less CPU per request at 60,000
/// requests/s). A full submission queue is submitted early (`push`), and
/// completions past the queue wait in the kernel's overflow list.
const RING_ENTRIES: u32 = 256;
/// The receive buffer pool: this many buffers of CHUNK_SIZE per ring (1
/// MiB, as liburing's echo server). The kernel takes them round the ring
/// in turn, so a larger pool is again more memory in the cache's way; a
/// burst that empties it waits for buffers (`Ring::starved`).
const BUFFERS: u16 = 256;
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

/// After the first completion, how long a batched wait (`batch=N`) may
/// wait for the rest.
const BATCH_WAIT_USEC: u32 = 50;

/// Checks that the kernel lets us make a ring and has every technique
/// asked for, with the error users see, before anything is announced.
pub fn check_available(features: UringFeatures) -> anyhow::Result<()> {
    IoUring::new(8).map(drop).map_err(unavailable)?;
    let ring = build_ring(8, features)?;
    let mut pool = Pool::new(&ring, features, 8)?;
    FileTable::new(&ring, features, 8)?;
    pool.abandon();
    Ok(())
}

/// An error naming the technique the kernel turned down.
fn refused(feature: &str, why: impl fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("io_uring feature {feature} is not available on this kernel: {why} (see `socklab models`; --uring none turns every technique off)")
}

/// Makes a ring with the features that are set up at creation (SQPOLL) and
/// checks the kernel for those that are probed (send-zc, bundle, batch).
fn build_ring(entries: u32, features: UringFeatures) -> anyhow::Result<IoUring> {
    let ring = if features.sqpoll {
        // A kernel thread polls the submission queue; it idles after 1 s
        // without work, and we wake it when it sleeps (the crate does).
        IoUring::builder()
            .setup_cqsize(entries * 2)
            .setup_sqpoll(1000)
            .build(entries)
            .map_err(|e| {
                let hint = match e.raw_os_error() {
                    Some(libc::EPERM) => " (before kernel 5.11 SQPOLL needs CAP_SYS_ADMIN)",
                    _ => "",
                };
                refused("sqpoll", format!("IORING_SETUP_SQPOLL: {e}{hint}"))
            })?
    } else {
        // One thread submits and reaps, so the kernel may defer its
        // completion work until we ask for completions (6.1+), saving the
        // interrupts it would otherwise take; older kernels get a plain ring.
        IoUring::builder()
            .setup_cqsize(entries * 2)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(entries * 2).build(entries))
            .map_err(unavailable)?
    };
    let params = ring.params();
    if features.batch > 1 && !params.is_feature_min_timeout() {
        return Err(refused(
            "batch",
            "waiting for several completions with a short minimum wait needs IORING_FEAT_MIN_TIMEOUT (kernel 6.12)",
        ));
    }
    if features.bundle && !params.is_feature_recvsend_bundle() {
        return Err(refused("bundle", "no IORING_FEAT_RECVSEND_BUNDLE (kernel 6.10)"));
    }
    if features.send_zc {
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| refused("send-zc", format!("cannot probe the opcodes: {e}")))?;
        if !probe.is_supported(opcode::SendZc::CODE) {
            return Err(refused("send-zc", "no IORING_OP_SEND_ZC (kernel 6.0)"));
        }
    }
    Ok(ring)
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
    check_available(config.uring)?;
    super::on_sibling_listeners(listener, config.workers, "uring", shutdown, |_, listener| {
        Ring::new(listener, config, shutdown)?.run(&service)
    })
}

/// One connection and what the ring is doing for it.
struct Conn {
    stream: Stream,
    session: Session,
    /// With fixed-files: the socket's slot in the ring's descriptor table.
    slot: Option<u32>,
    /// A receive is submitted and has not completed (for a multishot
    /// receive: it is still armed).
    receiving: bool,
    /// A cancel of the armed multishot receive is on its way: the session
    /// wants no more input for now.
    cancelling: bool,
    /// A send is in flight; the kernel reads from `send_buf` (a copy of the
    /// session's pending output) until it ends (for send-zc: until its
    /// notification says the kernel let go of the memory).
    sending: bool,
    send_buf: Vec<u8>,
    /// Input a multishot receive delivered after the session went over its
    /// budget: the kernel fills provided buffers
    /// until the cancel lands, up to the whole pool. Handed to the session
    /// in order as it frees up, not all at once, so a peer that never reads
    /// neither grows the session past its budget nor holds the loop while
    /// megabytes of its requests are answered into a full socket.
    held: std::collections::VecDeque<Vec<u8>>,
    /// The peer's close came after the held input: the session hears of it
    /// once that input has been handed over.
    eof_held: bool,
    /// We are done and sent FIN; waiting for the peer's close (or LINGER).
    closing: Option<Instant>,
    /// The earliest entry the timer queue holds for this connection (its
    /// deadline may have gone since: it then fires into nothing).
    timer: Option<Instant>,
}

impl Conn {
    /// Hands the held input to the session while it is under its budget (a
    /// send, a timer or a wake freed part of it), in order; then the peer's
    /// close, if it came after that input.
    fn hand_over_held(&mut self, now: Now) {
        if self.held.is_empty() && !self.eof_held {
            return; // The usual case, after every send.
        }
        while !self.session.over_budget() {
            let Some(data) = self.held.pop_front() else { break };
            self.session.handle_read(&data, now);
        }
        if self.held.is_empty() && std::mem::take(&mut self.eof_held) {
            self.session.handle_eof(now);
        }
    }
}

/// Other connections' wake-ups (chat), from any thread: the tokens to visit.
type Waker = Mailbox<usize>;

/// Where receives take their buffers from: `BUFFERS` buffers of CHUNK_SIZE,
/// lent to the kernel, given back as soon as the session has copied one.
/// A buffer is out of the pool only between the kernel filling it and our
/// reaping its completion, so an empty pool is a burst (more senders at
/// once than buffers), never a slow reader holding memory.
struct Pool {
    /// The buffers' memory; never moved or resized while the ring lives.
    memory: Vec<u8>,
    /// recv-multishot: the buffer ring shared with the kernel; giving a
    /// buffer back is a store to shared memory. Without it, each buffer
    /// goes back with an IORING_OP_PROVIDE_BUFFERS submission.
    ring: Option<BufRing>,
    /// Buffers given back since the starved connections were last re-armed.
    returned: usize,
}

/// A buffer ring (IORING_REGISTER_PBUF_RING): entries we add at the tail,
/// the kernel takes from the head.
struct BufRing {
    /// Page-aligned, registered with the ring, and never freed: the kernel
    /// may look at it until the ring is gone, which is the process's end.
    entries: *mut types::BufRingEntry,
    mask: u16,
    tail: u16,
    /// Where each buffer was last put in the ring: a bundle names its first
    /// buffer, the others are the ones that followed it.
    slot_of: Vec<u16>,
}

impl Pool {
    fn new(ring: &IoUring, features: UringFeatures, count: u16) -> anyhow::Result<Pool> {
        let mut pool = Pool {
            memory: vec![0; count as usize * CHUNK_SIZE],
            ring: None,
            returned: 0,
        };
        if !features.recv_multishot {
            return Ok(pool);
        }
        let size = count as usize * std::mem::size_of::<types::BufRingEntry>();
        let layout = std::alloc::Layout::from_size_align(size, 4096)?;
        // SAFETY: a non-zero size; zeroed memory is a valid (empty) ring.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
        if entries.is_null() {
            anyhow::bail!("cannot allocate a buffer ring of {count} entries");
        }
        // SAFETY: the memory stays allocated (it is never freed) and holds
        // `count` entries.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, BUFFER_GROUP, 0)
        }
        .map_err(|e| refused("recv-multishot", format!("IORING_REGISTER_PBUF_RING: {e}")))?;
        pool.ring = Some(BufRing {
            entries,
            mask: count - 1,
            tail: 0,
            slot_of: vec![0; count as usize],
        });
        for bid in 0..count {
            pool.give_back_to_ring(bid);
        }
        pool.publish();
        Ok(pool)
    }

    /// The first submission a ring needs: the legacy pool is provided with
    /// one IORING_OP_PROVIDE_BUFFERS; a buffer ring was filled in `new`.
    fn provide_all(&mut self) -> Option<squeue::Entry> {
        if self.ring.is_some() {
            return None;
        }
        let count = (self.memory.len() / CHUNK_SIZE) as u16;
        let entry = opcode::ProvideBuffers::new(
            self.memory.as_mut_ptr(),
            CHUNK_SIZE as i32,
            count,
            BUFFER_GROUP,
            0,
        )
        .build()
        .user_data(user_data(Op::Provide, 0));
        Some(entry)
    }

    /// The buffers a completion of `n` bytes filled, starting at `bid`: one,
    /// or for a bundle those that followed it in the ring.
    fn filled(&self, bid: u16, n: usize) -> impl Iterator<Item = (u16, usize)> + '_ {
        let count = n.div_ceil(CHUNK_SIZE).max(1);
        let first = self.ring.as_ref().map_or(0, |r| r.slot_of[bid as usize]);
        (0..count).map(move |i| {
            let id = match &self.ring {
                Some(r) if i > 0 => {
                    let slot = first.wrapping_add(i as u16) & r.mask;
                    // SAFETY: `slot` is within the ring's entries; the
                    // kernel only reads them.
                    unsafe { (*r.entries.add(slot as usize)).bid() }
                }
                _ => bid,
            };
            (id, (n - i * CHUNK_SIZE).min(CHUNK_SIZE))
        })
    }

    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * CHUNK_SIZE;
        &self.memory[start..start + len]
    }

    /// Returns a buffer to the kernel.
    fn give_back(&mut self, uring: &mut IoUring, bid: u16) -> io::Result<()> {
        self.returned += 1;
        if self.ring.is_some() {
            self.give_back_to_ring(bid);
            return Ok(());
        }
        let start = bid as usize * CHUNK_SIZE;
        let ptr = self.memory[start..].as_mut_ptr();
        let entry = opcode::ProvideBuffers::new(ptr, CHUNK_SIZE as i32, 1, BUFFER_GROUP, bid)
            .build()
            .user_data(user_data(Op::Provide, 0));
        push(uring, entry)
    }

    fn give_back_to_ring(&mut self, bid: u16) {
        let Some(r) = &mut self.ring else { return };
        let slot = r.tail & r.mask;
        // SAFETY: `slot` is within the ring, and the entry at the tail is
        // ours until the tail is published.
        let entry = unsafe { &mut *r.entries.add(slot as usize) };
        entry.set_addr(self.memory[bid as usize * CHUNK_SIZE..].as_ptr() as u64);
        entry.set_len(CHUNK_SIZE as u32);
        entry.set_bid(bid);
        r.slot_of[bid as usize] = slot;
        r.tail = r.tail.wrapping_add(1);
    }

    /// Lets the kernel see the buffers given back since the last time: one
    /// store per loop iteration, not one per buffer.
    fn publish(&mut self) {
        if let Some(r) = &self.ring {
            // SAFETY: the tail field lives in the ring's first entry, which
            // the kernel reads concurrently: hence an atomic store.
            let tail = unsafe { types::BufRingEntry::tail(r.entries) } as *mut u16;
            // SAFETY: aligned, valid for the process's life.
            unsafe { std::sync::atomic::AtomicU16::from_ptr(tail) }
                .store(r.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// Leaves the memory to the process's end (see `Ring::abandon_in_flight`).
    fn abandon(&mut self) {
        std::mem::forget(std::mem::take(&mut self.memory));
    }
}

/// fixed-files: each connection's socket registered in the ring's table,
/// in the slot of its token, so that operations on it name the slot
/// (IOSQE_FIXED_FILE) and the kernel skips looking the descriptor up.
struct FileTable {
    slots: u32,
}

impl FileTable {
    fn new(ring: &IoUring, features: UringFeatures, slots: u32) -> anyhow::Result<Option<FileTable>> {
        if !features.fixed_files {
            return Ok(None);
        }
        ring.submitter()
            .register_files_sparse(slots)
            .map_err(|e| refused("fixed-files", format!("IORING_REGISTER_FILES2 (sparse): {e}")))?;
        Ok(Some(FileTable { slots }))
    }

    /// Registers `fd` in `token`'s slot; `None` (plain descriptor) past the
    /// table's end or if the kernel says no.
    fn add(&self, ring: &IoUring, token: usize, fd: RawFd) -> Option<u32> {
        let slot = u32::try_from(token).ok().filter(|s| *s < self.slots)?;
        ring.submitter().register_files_update(slot, &[fd]).ok()?;
        Some(slot)
    }

    /// Empties a slot: the table holds its own reference to the socket,
    /// which closing our descriptor alone would not drop.
    fn remove(&self, ring: &IoUring, slot: u32) {
        let _ = ring.submitter().register_files_update(slot, &[-1]);
    }
}

/// How many slots the descriptor table gets: as many descriptors as the
/// process may open, up to 64 Ki.
fn table_slots() -> u32 {
    let mut limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes one rlimit, which `limit` is.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur.clamp(64, 65536) as u32
}

/// The descriptor an operation names, and the flag that says which kind.
fn target(conn: &Conn) -> (types::Fd, squeue::Flags) {
    match conn.slot {
        Some(slot) => (types::Fd(slot as i32), squeue::Flags::FIXED_FILE),
        None => (types::Fd(conn.stream.as_raw_fd()), squeue::Flags::empty()),
    }
}

/// A send of `buf`: plain, or send-zc (the kernel sends from our memory
/// and posts a second completion, the notification, when it lets go).
fn send_entry(fd: types::Fd, buf: &[u8], zero_copy: bool) -> squeue::Entry {
    if zero_copy {
        opcode::SendZc::new(fd, buf.as_ptr(), buf.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    } else {
        opcode::Send::new(fd, buf.as_ptr(), buf.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }
}

/// How a connection's receives are armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receive {
    /// One receive at a time, armed once the reply is out.
    OneShot,
    /// recv-multishot: one receive that stays armed, a completion per
    /// buffer filled (bundled: per run of buffers).
    Multishot { bundle: bool },
}

impl Receive {
    /// recv-multishot on TCP only. On a Unix socket the kernel can leave a
    /// multishot receive armed and silent after the peer's close (seen on
    /// Linux 6.18: a 1 MiB echo whose receive had been cancelled and re-armed
    /// got all its data and never the 0 that says the peer is done, so the
    /// connection stayed open; liburing issue 1549 reports the same race).
    /// A single receive sees the close every time, so Unix sockets get that.
    fn new(features: UringFeatures, tcp: bool) -> Receive {
        match features.recv_multishot && tcp {
            true => Receive::Multishot {
                bundle: features.bundle,
            },
            false => Receive::OneShot,
        }
    }

    /// The receive to arm; either kind takes its buffer from the pool's
    /// group (the buffer ring, or buffers provided one at a time).
    fn entry(self, fd: types::Fd) -> squeue::Entry {
        match self {
            Receive::Multishot { bundle: true } => opcode::RecvMultiBundle::new(fd, BUFFER_GROUP).build(),
            Receive::Multishot { bundle: false } => opcode::RecvMulti::new(fd, BUFFER_GROUP).build(),
            Receive::OneShot => opcode::Recv::new(fd, std::ptr::null_mut(), CHUNK_SIZE as u32)
                .buf_group(BUFFER_GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
        }
    }
}

struct Ring {
    ring: IoUring,
    features: UringFeatures,
    /// Multishot on TCP, single receives on a Unix socket (`Receive::new`).
    receive: Receive,
    listener: Listener,
    shutdown: Shutdown,
    grace: Duration,
    max_conns: usize,
    conns: Slab<Conn>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    pool: Pool,
    files: Option<FileTable>,
    /// send-zc, on TCP only: a Unix socket has no zero-copy send (the
    /// kernel answers EOPNOTSUPP), so there replies go out plainly.
    zero_copy: bool,
    /// Connections whose receive found the pool empty: re-armed once
    /// buffers came back, or at `starved_retry`, never in a loop.
    starved: Vec<usize>,
    starved_retry: Option<Instant>,
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
    /// The buffers one receive filled (more than one for a bundle).
    filled: Vec<(u16, usize)>,
}

/// How long a starved connection waits for buffers at most before its
/// receive is tried again.
const STARVED_RETRY: Duration = Duration::from_millis(1);

impl Ring {
    fn new(listener: Listener, config: &ServerConfig, shutdown: &Shutdown) -> anyhow::Result<Ring> {
        let features = config.uring;
        let ring = build_ring(RING_ENTRIES, features)?;
        let pool = Pool::new(&ring, features, BUFFERS)?;
        let files = FileTable::new(&ring, features, table_slots())?;
        // Two techniques the kernel has for TCP only (see each).
        let tcp = matches!(listener, Listener::Tcp(_));
        let zero_copy = features.send_zc && tcp;
        let receive = Receive::new(features, tcp);
        Ok(Ring {
            ring,
            features,
            receive,
            listener,
            shutdown: shutdown.clone(),
            grace: config.grace,
            max_conns: config.max_conns.unwrap_or(usize::MAX),
            conns: Slab::new(),
            timers: BinaryHeap::new(),
            pool,
            files,
            zero_copy,
            starved: Vec::new(),
            starved_retry: None,
            // A multishot accept cannot be paused: by the time a cancel
            // reaches the kernel, a burst of connections may all have been
            // accepted past the limit. Under --max-conns, one accept at a
            // time, armed only while a slot is free.
            multishot: config.max_conns.is_none(),
            accepting: false,
            paused_at: None,
            shortage: DescriptorShortage::default(),
            waker: Arc::new(Waker::new()?),
            completions: Vec::with_capacity(RING_ENTRIES as usize),
            filled: Vec::new(),
        })
    }

    fn run(mut self, service: &Service) -> anyhow::Result<()> {
        self.listener.set_nonblocking(false)?;
        if let Some(provide) = self.pool.provide_all() {
            self.push(provide)?;
        }
        self.arm_accept()?;
        let shutdown_fd = self.shutdown.as_fd().as_raw_fd();
        self.push(poll_readable(shutdown_fd, Op::Shutdown))?;
        self.push(poll_readable(self.waker.fd(), Op::Wake))?;

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
            self.pool.publish();
            self.fire_timers(now.instant)?;
            self.rearm_starved()?;
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
                self.cancel_everything();
                if !self.conns.is_empty() {
                    self.abandon_in_flight();
                }
                return Ok(());
            }
        }
    }

    /// Re-arms the receives that found the pool empty, once buffers came
    /// back (or STARVED_RETRY passed): waiting, not spinning on ENOBUFS.
    fn rearm_starved(&mut self) -> anyhow::Result<()> {
        if self.starved.is_empty() {
            self.pool.returned = 0;
            self.starved_retry = None;
            return Ok(());
        }
        let retry_due = self.starved_retry.is_some_and(|at| at <= Instant::now());
        if self.pool.returned == 0 && !retry_due {
            self.starved_retry
                .get_or_insert_with(|| Instant::now() + STARVED_RETRY);
            return Ok(());
        }
        self.pool.returned = 0;
        self.starved_retry = None;
        for token in std::mem::take(&mut self.starved) {
            self.settle(token)?;
        }
        Ok(())
    }

    /// Cancels every operation still in the ring and waits until the kernel
    /// has let go of them: `IORING_REGISTER_SYNC_CANCEL` (kernel 6.0; at
    /// most a second), then one zero-timeout wait, which runs the deferred
    /// completion work (`DEFER_TASKRUN`) that frees the cancelled requests
    /// and their files. The armed accept holds the listener, and a ring that
    /// is merely closed is cleaned up by a kernel worker after we return: the
    /// port stayed taken a moment past the exit, and a server restarted at
    /// once on it failed with EADDRINUSE (19 times in 30). On an older
    /// kernel the cancel fails and the worker does it, as before.
    fn cancel_everything(&mut self) {
        let second = types::Timespec::new().sec(1);
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(second), types::CancelBuilder::any());
        let _ = ring::submit_and_wait_until(&mut self.ring, Some(Instant::now()));
        self.ring.completion().for_each(drop);
    }

    /// Leaves to the process's end the memory that operations still in
    /// flight point to. Closing the ring makes the kernel cancel them, but
    /// only after we have returned, and until then a receive may still write
    /// into the pool or a send read from its buffer: freeing them now would
    /// break the promise `push` relies on.
    fn abandon_in_flight(&mut self) {
        self.pool.abandon();
        for (_, conn) in self.conns.iter_mut() {
            if conn.sending {
                std::mem::forget(std::mem::take(&mut conn.send_buf));
            }
        }
    }

    /// Submits what is queued and waits for completions (`batch=N`: up to
    /// N, briefly), or until the next deadline.
    fn wait(&mut self, grace: Option<Instant>) -> io::Result<()> {
        let next = self.timers.peek().map(|Reverse((at, _))| *at);
        let deadline = [next, grace, self.starved_retry].into_iter().flatten().min();
        ring::submit_and_wait_batch(
            &mut self.ring,
            self.features.batch as usize,
            BATCH_WAIT_USEC,
            deadline,
        )
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
            session.set_wake(Arc::new(move || waker.push(token)));
        }
        let slot = self.files.as_ref().and_then(|t| t.add(&self.ring, token, fd));
        entry.insert(Conn {
            stream,
            session,
            slot,
            receiving: false,
            cancelling: false,
            held: std::collections::VecDeque::new(),
            eof_held: false,
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
        let n = cqe.result();
        let buffer = cqueue::buffer_select(cqe.flags());
        let Some(conn) = self.conns.get_mut(token) else {
            if let Some(bid) = buffer {
                self.pool.give_back(&mut self.ring, bid)?;
            }
            return Ok(());
        };
        // A multishot receive stays armed while its completions say MORE.
        conn.receiving = cqueue::more(cqe.flags());
        if !conn.receiving {
            conn.cancelling = false;
        }
        match n {
            n if n > 0 => {
                if let Some(bid) = buffer {
                    // Which buffers first, then hand them over and back:
                    // giving back writes to the ring the bundle is read from.
                    let mut filled = std::mem::take(&mut self.filled);
                    filled.extend(self.pool.filled(bid, n as usize));
                    for &(id, len) in &filled {
                        if conn.closing.is_some() {
                            continue; // Read only to see the peer's close.
                        }
                        let data = self.pool.buffer(id, len);
                        if conn.held.is_empty() && !conn.session.over_budget() {
                            conn.session.handle_read(data, now);
                        } else {
                            conn.held.push_back(data.to_vec());
                        }
                    }
                    for (id, _) in filled.drain(..) {
                        self.pool.give_back(&mut self.ring, id)?;
                    }
                    self.filled = filled;
                }
            }
            0 => {
                if conn.closing.is_some() {
                    return self.release(token);
                }
                if conn.held.is_empty() {
                    conn.session.handle_eof(now);
                } else {
                    conn.eof_held = true;
                }
            }
            e if -e == libc::ENOBUFS => {
                // The pool ran dry: this connection waits for buffers to
                // come back (`rearm_starved`) instead of re-arming now,
                // which would only fail again.
                tracing::debug!("receive buffers ran out: a connection waits for some to come back");
                self.starved.push(token);
                return Ok(());
            }
            e if -e == libc::ECANCELED && !conn.receiving => {} // We asked.
            e => {
                tracing::debug!("recv: {}", io::Error::from_raw_os_error(-e));
                return self.release(token);
            }
        }
        self.settle(token)
    }

    fn sent(&mut self, token: usize, cqe: cqueue::Entry, now: Now) -> anyhow::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        if cqueue::notif(cqe.flags()) {
            // send-zc: the kernel is done with `send_buf`.
            conn.sending = false;
            return self.settle(token);
        }
        // A send-zc result with MORE: its notification is still to come.
        conn.sending = cqueue::more(cqe.flags());
        match cqe.result() {
            n if n >= 0 => {
                conn.session.consume_output(n as usize, now.instant);
                conn.hand_over_held(now);
            }
            e => {
                tracing::debug!("send: {}", io::Error::from_raw_os_error(-e));
                return self.release(token);
            }
        }
        self.settle(token)
    }

    fn woken(&mut self, now: Now) -> anyhow::Result<()> {
        self.push(poll_readable(self.waker.fd(), Op::Wake))?;
        for token in self.waker.take_all() {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.session.handle_wake(now);
                conn.hand_over_held(now);
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

    /// Runs every timer that is due, reading the clock afresh only when
    /// one was due by the time this turn began (as the event loop does):
    /// one that fell due since then is run next turn, whose wait ends at
    /// once.
    fn fire_timers(&mut self, turn: Instant) -> anyhow::Result<()> {
        if self.timers.peek().is_none_or(|Reverse((at, _))| *at > turn) {
            return Ok(());
        }
        let now = Now::system();
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
            conn.hand_over_held(now);
            self.settle(token)?;
        }
        Ok(())
    }

    /// After anything happened to a connection: send what it owes, arm a
    /// receive if it wants input, and keep its deadline in the timer queue.
    fn settle(&mut self, token: usize) -> anyhow::Result<()> {
        // Disjoint fields: the connection is borrowed while the ring is fed.
        let (ring, timers) = (&mut self.ring, &mut self.timers);
        let (zero_copy, receive) = (self.zero_copy, self.receive);
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        let (fd, fd_flags) = target(conn);
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
                let send = send_entry(fd, &conn.send_buf, zero_copy)
                    .flags(fd_flags)
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
        // Input is held while the session is over its budget: no receive
        // is armed until it has all been handed over.
        let wants_read = conn.closing.is_some() || (conn.session.wants_read() && conn.held.is_empty());
        // A one-shot receive is armed once the reply is out, as a
        // request/reply peer only speaks again after it has its answer: one
        // operation in flight per connection, not two. A multishot receive
        // stays armed across sends, until the session wants no more input.
        let multishot = matches!(receive, Receive::Multishot { .. });
        if wants_read && !conn.receiving && (multishot || !conn.sending) {
            let recv = receive
                .entry(fd)
                .flags(fd_flags)
                .user_data(user_data(Op::Recv, token));
            push(ring, recv)?;
            conn.receiving = true;
        } else if !wants_read && multishot && conn.receiving && !conn.cancelling {
            push(ring, opcode::AsyncCancel::new(user_data(Op::Recv, token)).build())?;
            conn.cancelling = true;
        }
        let deadline = match conn.closing {
            None => conn.session.poll_timeout(),
            Some(_) => None, // Only LINGER's entry counts now.
        };
        if let Some(at) = deadline {
            // Only an earlier deadline needs a new entry; a later one is
            // found when the current entry fires and finds nothing to do.
            // An entry whose deadline went away (a reply's write clock,
            // stopped when its send completed) stays until it fires: one
            // entry per connection per write timeout, not one per request.
            if conn.timer.is_none_or(|t| at < t) {
                conn.timer = Some(at);
                timers.push(Reverse((at, token)));
            }
        }
        if !conn.receiving
            && !conn.sending
            && deadline.is_none()
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
        let conn = self.conns.remove(token);
        if let (Some(files), Some(slot)) = (&self.files, conn.slot) {
            files.remove(&self.ring, slot);
        }
        Ok(())
    }
}

/// Queues one submission, submitting what is queued if the ring is full.
fn push(ring: &mut IoUring, entry: squeue::Entry) -> io::Result<()> {
    // SAFETY: every buffer an entry points to (the receive pool, a
    // connection's send_buf) stays allocated and untouched until the
    // entry's completion has been seen; see `Conn` and `Pool`.
    unsafe { ring::push(ring, &entry) }
}

fn poll_readable(fd: RawFd, op: Op) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
        .build()
        .user_data(user_data(op, 0))
}
