//! `socklab relay A B`: the socat of seed 001, with socat's life cycle.
//!
//! 1. Open A, then B (a listening address waits for its first peer).
//! 2. Copy both ways, one thread per direction.
//! 3. When one direction reaches EOF, shut down writing on the other side
//!    and keep copying the other way until it ends too, or `--timeout`
//!    (default 0.5 s) passes.
//! 4. Close.
//!
//! With `--fork`, A must listen: every accepted peer gets its own B and its
//! own pair of copying threads, and the relay keeps listening. (socat forks
//! a process; a thread does the same job here with less ceremony, and the
//! flag keeps socat's name.) `--max-children` bounds the pairs relayed at
//! once (socat's `max-children`): past it, peers wait in the listen backlog.
//! Out of descriptors, the relay stops accepting until a pair closes, rather
//! than exiting and dropping every pair it carries. TCP to TCP moves data
//! with splice(2) through a pipe, never through user space, unless
//! `--verbose` or `--hexdump` need to see the bytes.
//!
//! SIGINT or SIGTERM stops a `--fork` relay as it stops `serve`: no new
//! peers, the listener closed (a Unix socket file removed), the pairs being
//! relayed given [`GRACE`] to end, then exit 0; a second signal exits at
//! once (status 1). A relay of one pair keeps the default action, as socat's.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::fcntl::{splice, OFlag, SpliceFFlags};

use crate::addr::{Addr, Endpoint, HostPort};
use crate::net::{self, BindOptions, Bound, Listener, Stream};
use crate::shutdown::Shutdown as Stop;

#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub a: Endpoint,
    pub b: Endpoint,
    /// Keep listening on A and relay every peer concurrently.
    pub fork: bool,
    /// Copy A to B only.
    pub unidirectional: bool,
    /// After one direction ends, how long the other may go on.
    pub timeout: Duration,
    /// Close a pair when neither direction has moved a byte for this long.
    pub idle_timeout: Option<Duration>,
    /// With `fork`: pairs relayed at once.
    pub max_children: usize,
    /// Log every transfer (direction and size) on stderr.
    pub verbose: bool,
    /// Show every transfer's bytes on stderr, as `hexdump -C` does.
    pub hexdump: bool,
}

/// One opened side of the relay.
enum Side {
    Stream(Stream),
    /// A connected UDP socket: each read is a datagram, each write one.
    Datagram(UdpSocket),
    Stdio,
}

/// socat users' usual bound on `fork` children; `--max-children` changes it.
pub const DEFAULT_MAX_CHILDREN: usize = 256;

/// `--fork`, after SIGINT or SIGTERM: how long the pairs being relayed may
/// go on before the relay exits anyway; serve's default `--grace`.
pub const GRACE: Duration = Duration::from_secs(5);

pub fn run(options: RelayOptions) -> anyhow::Result<()> {
    if options.fork {
        let Endpoint::Listen(addr) = &options.a else {
            bail!("--fork needs a listening first address, such as tcp-listen:PORT");
        };
        // Signals first: once `listening on` is out, a SIGTERM is ours.
        let stop = Stop::new()?;
        stop.on_signals(GRACE)?;
        let listener = listen_stream(addr)?;
        let pairs = Pairs::new(options.max_children);
        pairs.wake_on(&stop)?;
        relay_every_peer(&listener, Arc::new(options), &pairs, &stop)?;
        // Stopped by a signal: no new peers (the listener closes, and with
        // it a Unix socket file goes); the pairs relayed may finish.
        drop(listener);
        let left = pairs.wait_all_closed(GRACE);
        if left > 0 {
            tracing::info!("{left} pairs still open after {GRACE:?}: closing them");
        }
        return Ok(());
    }
    let a = open(&options.a)?;
    let b = open(&options.b)?;
    relay_pair(a, b, &options, None, None)
}

/// `--fork`: accept until `stop`, each peer relayed on its own thread, at
/// most `--max-children` at once.
fn relay_every_peer(
    listener: &Listener,
    options: Arc<RelayOptions>,
    pairs: &Pairs,
    stop: &Stop,
) -> anyhow::Result<()> {
    // Failed accepts in the current out-of-descriptors episode, if one is on.
    let mut starved: Option<u64> = None;
    // Wait for a peer in poll(2), then accept: a blocking accept(2) takes
    // its descriptor before it sleeps, so the peer that finally comes could
    // find none left for its other side.
    listener.set_nonblocking(true)?;
    loop {
        pairs.wait_below_max(stop);
        if !wait_for_a_peer(listener, stop)? {
            return Ok(());
        }
        let peer = match listener
            .accept()
            .and_then(|p| p.set_nonblocking(false).map(|()| p))
        {
            Ok(peer) => peer,
            Err(e) if net::would_block(&e) || net::interrupted(&e) => continue,
            Err(e) if net::out_of_descriptors(&e) || out_of_memory(&e) => {
                // The peer waits in the backlog; a closing pair frees what
                // accepting needs. Log the episode once, not every retry.
                let tries = starved.get_or_insert(0);
                if *tries == 0 {
                    tracing::warn!(
                        "accept: {e}; not accepting until a pair closes ({} relayed)",
                        pairs.live()
                    );
                }
                *tries += 1;
                pairs.wait_for_a_close(Duration::from_millis(250));
                continue;
            }
            Err(e) if listener_is_broken(&e) => return Err(e).context("accept failed"),
            Err(e) => {
                // The peer went away before we took it, or the like.
                tracing::debug!("accept: {e}");
                continue;
            }
        };
        let pair = Arc::new(pairs.start());
        let options = options.clone();
        let (set_up, setup) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new().name("relay".into()).spawn(move || {
            let result = open(&options.b)
                .and_then(|b| relay_pair(Side::Stream(peer), b, &options, Some(pair), Some(&set_up)));
            if let Err(e) = result {
                tracing::warn!("relay: {e:#}");
                let mut io_errors = e.chain().filter_map(|c| c.downcast_ref::<io::Error>());
                let _ = set_up.try_send(Setup::Failed {
                    out_of_descriptors: io_errors.any(net::out_of_descriptors),
                });
            }
        });
        // One pair's sockets at a time: a pair that finds no descriptors
        // for its other side ends this round of accepting before the next
        // peer is taken only to be dropped too. A slow connect to B does
        // not hold up the others for long.
        let outcome = match spawned {
            Ok(_) => setup.recv_timeout(SETUP_WAIT).unwrap_or(Setup::Ready),
            Err(e) => {
                // Out of threads: this peer is dropped, the others go on.
                tracing::warn!("cannot start a thread for a peer, closing it: {e}");
                Setup::Failed {
                    out_of_descriptors: false,
                }
            }
        };
        match outcome {
            Setup::Failed {
                out_of_descriptors: true,
            } => {
                let tries = starved.get_or_insert(0);
                if *tries == 0 {
                    tracing::warn!(
                        "out of descriptors for a pair; not accepting until a pair closes ({} relayed)",
                        pairs.live()
                    );
                }
                *tries += 1;
                pairs.wait_for_a_close(Duration::from_secs(1));
            }
            Setup::Ready => {
                if let Some(tries) = starved.take() {
                    tracing::info!("accepting again, after {tries} tries out of descriptors");
                }
            }
            Setup::Failed { .. } => {}
        }
    }
}

/// How long the accept loop waits for a new pair to open its other side.
const SETUP_WAIT: Duration = Duration::from_secs(1);

/// How a new pair's opening went, for the accept loop.
enum Setup {
    /// Both sides open, copying.
    Ready,
    Failed {
        out_of_descriptors: bool,
    },
}

/// Blocks until the listener has a peer waiting (true) or `stop` is
/// triggered (false).
fn wait_for_a_peer(listener: &Listener, stop: &Stop) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        if stop.is_triggered() {
            return Ok(false);
        }
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return Ok(!stop.is_triggered()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn out_of_memory(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM))
}

/// Errors that say the listening socket itself is unusable, so that retrying
/// would spin; anything else (a peer that reset before accept) is passing.
fn listener_is_broken(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

/// The pairs being relayed, counted against `--max-children`.
#[derive(Clone)]
struct Pairs {
    live: Arc<(Mutex<usize>, Condvar)>,
    max: usize,
}

/// One pair being relayed; dropping it frees its place.
struct Pair {
    live: Arc<(Mutex<usize>, Condvar)>,
}

impl Pairs {
    fn new(max: usize) -> Self {
        Pairs {
            live: Arc::default(),
            max: max.max(1),
        }
    }

    fn live(&self) -> usize {
        *self.live.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks while `max` pairs are relayed, unless `stop` is triggered;
    /// logs once each time it does.
    fn wait_below_max(&self, stop: &Stop) {
        let (count, changed) = &*self.live;
        let live = count.lock().unwrap_or_else(|e| e.into_inner());
        if *live >= self.max {
            tracing::info!(
                max = self.max,
                "at --max-children: not accepting until a pair closes"
            );
        }
        drop(
            changed
                .wait_while(live, |live| *live >= self.max && !stop.is_triggered())
                .unwrap_or_else(|e| e.into_inner()),
        );
    }

    /// Wakes [`wait_below_max`](Pairs::wait_below_max) when `stop` is
    /// triggered. The trigger comes from a signal handler, which may not
    /// touch a condition variable, so a thread waits on the stop's eventfd
    /// and notifies for it; notifying under the lock, after the trigger,
    /// means a waiter either sees the trigger or gets the notice.
    fn wake_on(&self, stop: &Stop) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let (stop, live) = (stop.clone(), self.live.clone());
        std::thread::Builder::new()
            .name("relay-stop".into())
            .spawn(move || {
                while !stop.is_triggered() {
                    let mut fds = [PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::NONE);
                }
                let (count, changed) = &*live;
                let _live = count.lock().unwrap_or_else(|e| e.into_inner());
                changed.notify_all();
            })?;
        Ok(())
    }

    /// After a stop: waits until every pair has closed, or `at_most`;
    /// returns how many are still open.
    fn wait_all_closed(&self, at_most: Duration) -> usize {
        let (count, changed) = &*self.live;
        let live = count.lock().unwrap_or_else(|e| e.into_inner());
        let (live, _) = changed
            .wait_timeout_while(live, at_most, |live| *live > 0)
            .unwrap_or_else(|e| e.into_inner());
        *live
    }

    /// Waits until a pair closes, or `at_most` (descriptors may free up
    /// elsewhere too).
    fn wait_for_a_close(&self, at_most: Duration) {
        let (count, changed) = &*self.live;
        let live = count.lock().unwrap_or_else(|e| e.into_inner());
        let before = *live;
        drop(
            changed
                .wait_timeout_while(live, at_most, |live| *live >= before)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }

    fn start(&self) -> Pair {
        *self.live.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Pair {
            live: self.live.clone(),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let (count, changed) = &*self.live;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        changed.notify_all();
    }
}

fn open(endpoint: &Endpoint) -> anyhow::Result<Side> {
    Ok(match endpoint {
        Endpoint::Stdio => Side::Stdio,
        Endpoint::Connect(Addr::Udp(hp)) => Side::Datagram(connect_udp(hp)?),
        Endpoint::Connect(addr) => Side::Stream(Stream::connect(addr, None)?),
        Endpoint::Listen(Addr::Udp(hp)) => Side::Datagram(listen_udp(hp)?),
        Endpoint::Listen(addr) => {
            let listener = listen_stream(addr)?;
            Side::Stream(listener.accept().context("accept failed")?)
        }
    })
}

fn listen_stream(addr: &Addr) -> anyhow::Result<Listener> {
    match net::bind(addr, BindOptions::default())? {
        Bound::Stream(listener) => {
            // stderr: stdout may be one side of the relay.
            eprintln!("listening on {}", listener.local_addr()?);
            Ok(listener)
        }
        Bound::Datagram(_) => {
            bail!("{addr}: a datagram socket has no connections to accept; use tcp-listen: or unix-listen:")
        }
    }
}

fn connect_udp(hp: &HostPort) -> anyhow::Result<UdpSocket> {
    let target = hp.resolve()?[0];
    let socket = net::udp_socket_for(target)?;
    socket
        .connect(target)
        .with_context(|| format!("cannot connect to udp:{hp}"))?;
    Ok(socket)
}

/// socat's `udp-listen`: bind, take the first datagram's sender as the peer.
fn listen_udp(hp: &HostPort) -> anyhow::Result<UdpSocket> {
    let Bound::Datagram(socket) = net::bind(&Addr::Udp(hp.clone()), BindOptions::default())? else {
        bail!("udp:{hp} did not bind a datagram socket");
    };
    eprintln!("listening on udp:{}", HostPort::from(socket.local_addr()?));
    let (_, peer) = socket.peek_from(&mut [0u8; 1])?;
    socket.connect(peer)?;
    Ok(socket)
}

/// Which way bytes move, for logs.
#[derive(Debug, Clone, Copy)]
enum Direction {
    AtoB,
    BtoA,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Direction::AtoB => ">",
            Direction::BtoA => "<",
        }
    }
}

/// Copies between two opened sides until both directions end. `place`, the
/// pair's place under `--max-children`, is held until every copying thread
/// that can be stopped has closed its sockets, so that a freed place comes
/// with the descriptors the next pair needs.
fn relay_pair(
    a: Side,
    b: Side,
    options: &RelayOptions,
    place: Option<Arc<Pair>>,
    set_up: Option<&mpsc::SyncSender<Setup>>,
) -> anyhow::Result<()> {
    let (a_read, a_write) = a.split()?;
    let (b_read, b_write) = b.split()?;
    let activity = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (done, finished) = mpsc::channel();

    let mut directions = vec![(Direction::AtoB, a_read, b_write)];
    if !options.unidirectional {
        directions.push((Direction::BtoA, b_read, a_write));
    }
    let mut stoppers = Vec::new();
    for (direction, from, to) in directions {
        let stopper = from.stopper();
        // A thread blocked on a datagram socket or stdin cannot be stopped:
        // it must not hold the place forever.
        let place = stopper.as_ref().and(place.clone());
        stoppers.push(stopper);
        let (done, activity) = (done.clone(), activity.clone());
        let copy = Copy {
            direction,
            verbose: options.verbose,
            hexdump: options.hexdump,
            activity,
            start,
        };
        std::thread::Builder::new().name("copy".into()).spawn(move || {
            let result = copy.run(from, to);
            drop(place); // After `run` has closed its two halves.
            let _ = done.send((direction, result));
        })?;
    }
    drop(done);
    if let Some(set_up) = set_up {
        let _ = set_up.try_send(Setup::Ready);
    }

    // Wait for the first direction to end, watching for silence.
    let total = stoppers.len();
    let mut ended = 0;
    let mut deadline: Option<Instant> = None;
    while ended < total {
        let wait = match (deadline, options.idle_timeout) {
            (Some(d), _) => d.saturating_duration_since(Instant::now()),
            (None, Some(idle)) => idle.min(Duration::from_millis(100)),
            (None, None) => Duration::from_secs(3600),
        };
        match finished.recv_timeout(wait) {
            Ok((direction, result)) => {
                ended += 1;
                if let Err(e) = result {
                    tracing::debug!("{} ended: {e}", direction.arrow());
                }
                // socat: after the first EOF the other way gets --timeout.
                deadline.get_or_insert(Instant::now() + options.timeout);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    // Whatever was still coming is cut: a user waiting for a
                    // late reply deserves to hear why it did not come.
                    let message = format!(
                        "--timeout {:?} ended the other direction while it was still open; anything later is cut (raise --timeout, socat's -t)",
                        options.timeout
                    );
                    if options.verbose {
                        eprintln!("{message}");
                    } else {
                        tracing::debug!("{message}");
                    }
                    break;
                }
                if let Some(idle) = options.idle_timeout {
                    let last = Duration::from_micros(activity.load(Ordering::Relaxed));
                    if start.elapsed().saturating_sub(last) >= idle {
                        tracing::info!("closing a pair silent for {idle:?}");
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Unblock whatever is still copying; its thread ends on its own.
    for stopper in stoppers.into_iter().flatten() {
        let _ = stopper.shutdown(Shutdown::Both);
    }
    Ok(())
}

/// The reading half of a side.
enum Reader {
    Stream(Stream),
    Datagram(Arc<UdpSocket>),
    Stdin,
}

/// The writing half of a side.
enum Writer {
    Stream(Stream),
    Datagram(Arc<UdpSocket>),
    Stdout,
}

impl Side {
    fn split(self) -> io::Result<(Reader, Writer)> {
        Ok(match self {
            Side::Stream(s) => (Reader::Stream(s.try_clone()?), Writer::Stream(s)),
            Side::Datagram(d) => {
                let d = Arc::new(d);
                (Reader::Datagram(d.clone()), Writer::Datagram(d))
            }
            Side::Stdio => (Reader::Stdin, Writer::Stdout),
        })
    }
}

impl Reader {
    /// A handle whose shutdown wakes this reader blocked on a socket, so its
    /// thread can end. A UDP socket cannot be shut down usefully; its thread
    /// is left to end with the process (or when the next datagram has nowhere
    /// to go).
    fn stopper(&self) -> Option<Stream> {
        match self {
            Reader::Stream(s) => s.try_clone().ok(),
            _ => None,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Stream(s) => s.read(buf),
            Reader::Datagram(d) => d.recv(buf),
            Reader::Stdin => io::stdin().lock().read(buf),
        }
    }
}

impl Writer {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Writer::Stream(s) => s.write_all(buf),
            Writer::Datagram(d) => d.send(buf).map(drop),
            Writer::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
        }
    }

    /// Passes the EOF on: the peer on this side sees our end of data.
    fn finish(&mut self) {
        if let Writer::Stream(s) = self {
            let _ = s.shutdown(Shutdown::Write);
        }
    }
}

/// One direction's copying loop.
struct Copy {
    direction: Direction,
    verbose: bool,
    hexdump: bool,
    /// Microseconds since `start` of the last byte moved, either way.
    activity: Arc<AtomicU64>,
    start: Instant,
}

impl Copy {
    fn run(&self, mut from: Reader, mut to: Writer) -> io::Result<u64> {
        let spliced = match (&from, &to) {
            (Reader::Stream(src @ Stream::Tcp(_)), Writer::Stream(dst @ Stream::Tcp(_)))
                if !self.verbose && !self.hexdump =>
            {
                // The pipe costs two descriptors: without them, copy
                // through user space rather than fail the pair.
                nix::unistd::pipe2(OFlag::O_CLOEXEC)
                    .ok()
                    .map(|pipe| self.splice(src, dst, pipe))
            }
            _ => None,
        };
        let result = match spliced {
            Some(result) => result,
            None => self.copy(&mut from, &mut to),
        };
        to.finish();
        result
    }

    fn copy(&self, from: &mut Reader, to: &mut Writer) -> io::Result<u64> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if net::interrupted(&e) => continue,
                Err(e) => return Err(e),
            };
            self.moved(&buf[..n], total);
            to.write_all(&buf[..n])?;
            total += n as u64;
        }
    }

    /// socket -> pipe -> socket, in the kernel.
    fn splice(&self, from: &Stream, to: &Stream, (pipe_r, pipe_w): (OwnedFd, OwnedFd)) -> io::Result<u64> {
        let flags = SpliceFFlags::SPLICE_F_MOVE;
        let mut total = 0u64;
        loop {
            let n = match splice(from.as_fd(), None, pipe_w.as_fd(), None, 64 * 1024, flags) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut left = n;
            while left > 0 {
                match splice(pipe_r.as_fd(), None, to.as_fd(), None, left, flags) {
                    Ok(m) => left -= m,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            self.touch();
            total += n as u64;
        }
    }

    /// Notes that bytes just moved, for `--idle-timeout`.
    fn touch(&self) {
        self.activity
            .store(self.start.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    fn moved(&self, bytes: &[u8], offset: u64) {
        self.touch();
        if self.verbose || self.hexdump {
            let mut text = format!(
                "{} {} bytes (offset {offset})\n",
                self.direction.arrow(),
                bytes.len()
            );
            if self.hexdump {
                text += &hexdump(bytes, offset);
            }
            eprint!("{text}");
        }
    }
}

/// `hexdump -C`: offset, 16 bytes in hex, the printable ones as text.
pub fn hexdump(bytes: &[u8], offset: u64) -> String {
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", offset + (i * 16) as u64);
        for j in 0..16 {
            match line.get(j) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
            if j == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        out.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::hexdump;

    #[test]
    fn hexdump_matches_hexdump_c() {
        assert_eq!(
            hexdump(b"hello world\n\x00\x01ABCDEFG", 16),
            "00000010  68 65 6c 6c 6f 20 77 6f  72 6c 64 0a 00 01 41 42  |hello world...AB|\n\
             00000020  43 44 45 46 47                                    |CDEFG|\n"
        );
    }
}
