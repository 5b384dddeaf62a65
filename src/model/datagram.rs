//! UDP: each datagram is one request and gets one reply datagram, sent to
//! its sender and nobody else (seeds 001 and 003). No connections, so no
//! accept: the models that mean something here differ only in who calls
//! `recvfrom` and how a `--delay` is waited out.
//!
//! - iterative: the main thread receives, sleeps the delay, replies (the
//!   seed's UDP server), so five clients wait five delays.
//! - pool: N threads receive on the one socket, each sleeping its own delay.
//! - epoll: one loop; a delayed reply is a timer, the loop goes on.
//! - async: a tokio task receives; each delayed reply is a task of its own.
//!
//! A datagram may begin with a request ID, `#ID ` (DESIGN section 9): the
//! reply carries it back, and a repeated ID from the same peer is answered
//! from a cache instead of being applied twice (a retried `ADD` to the
//! contact book stays one `ADD`). A retry that arrives while its first copy
//! is still being answered (on another pool worker) is dropped: the client
//! retries again and meets the cached reply.
//!
//! Nothing a sender does grows the server without bound: the reply cache is
//! bounded in bytes ([`ServerConfig::reply_cache`]) and forgets a reply after
//! [`CACHE_TTL`] (a retry comes within seconds); replies held for `--delay`
//! are bounded like a socket's buffer ([`DELAY_QUEUE_BYTES`]), and past it a
//! request is dropped and counted, as the kernel drops a datagram that
//! finds the receive buffer full.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::epoll::Epoll;
use super::event_loop::{Interest, Poller};
use super::{ModelKind, ServerConfig};
use crate::net::{interrupted, would_block};
use crate::service::{Now, Service};
use crate::shutdown::Shutdown;

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// How long a reply is remembered for a retry of its request.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// `--reply-cache` unless the user says otherwise.
pub const DEFAULT_REPLY_CACHE: usize = 4 * 1024 * 1024;
/// Most bytes of replies waiting for `--delay` at once.
pub const DELAY_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// What one cache entry costs besides its ID and reply: the key's address,
/// the map's and the queue's slots.
const ENTRY_OVERHEAD: usize = 128;
/// The longest request ID.
const MAX_ID: usize = 64;

/// Serves `socket` under `model` until shutdown.
pub fn serve(
    model: ModelKind,
    socket: UdpSocket,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let answers = Answers::new(service, config.reply_cache);
    match model {
        ModelKind::Iterative => blocking(&socket, &answers, shutdown),
        // A worker that fails stops the others, or they would serve forever.
        ModelKind::Pool => shutdown.run_together(
            vec![(); config.workers.max(1)],
            "a UDP worker",
            |i| format!("udp-worker-{i}"),
            |_, ()| blocking(&socket, &answers, shutdown),
        ),
        ModelKind::Epoll => event_loop(&socket, &answers, shutdown),
        ModelKind::Async => tokio_loop(socket, answers, config, shutdown),
        other => anyhow::bail!(
            "{other} does not serve UDP; use {}",
            ModelKind::names_where(ModelKind::serves_datagrams)
        ),
    }
}

/// Turns a datagram into its reply: request IDs, the cache, and errors.
pub struct Answers {
    service: Arc<Service>,
    cache: Mutex<ReplyCache>,
    /// Bytes of replies now held for `--delay`, against DELAY_QUEUE_BYTES.
    delayed: AtomicUsize,
    /// Requests dropped because the delay queue was full, not yet logged.
    dropped: AtomicU64,
}

type Key = (SocketAddr, Vec<u8>);

struct ReplyCache {
    /// (peer, ID) to its reply; `None` while the first copy is still being
    /// answered, so a retry racing it on another pool worker is not applied.
    replies: HashMap<Key, Option<Vec<u8>>>,
    /// Keys oldest first with when they came, to forget the oldest beyond
    /// `max_bytes` and any older than CACHE_TTL.
    order: VecDeque<(Key, Instant)>,
    /// What the entries cost, against `max_bytes`.
    bytes: usize,
    max_bytes: usize,
}

fn cost(key: &Key, reply: &Option<Vec<u8>>) -> usize {
    ENTRY_OVERHEAD + key.1.len() + reply.as_ref().map_or(0, Vec::len)
}

impl ReplyCache {
    fn new(max_bytes: usize) -> Self {
        ReplyCache {
            replies: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    fn remember(&mut self, key: Key, reply: Option<Vec<u8>>, now: Instant) {
        self.bytes += cost(&key, &reply);
        match self.replies.insert(key.clone(), reply) {
            Some(old) => self.bytes -= cost(&key, &old),
            None => self.order.push_back((key, now)),
        }
        self.expire(now);
    }

    /// Forgets the oldest entries while over the budget or past their time.
    fn expire(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            let old = now.saturating_duration_since(*at) > CACHE_TTL;
            if !old && self.bytes <= self.max_bytes {
                break;
            }
            if let Some(reply) = self.replies.remove(key) {
                self.bytes -= cost(key, &reply);
            }
            self.order.pop_front();
        }
    }

    fn forget(&mut self, key: &Key) {
        if let Some(reply) = self.replies.remove(key) {
            self.bytes -= cost(key, &reply);
        }
        self.order.retain(|(k, _)| k != key);
    }
}

impl Answers {
    /// Answers for `service`, remembering at most `reply_cache` bytes of
    /// replies for retried IDs.
    pub fn new(service: Arc<Service>, reply_cache: usize) -> Self {
        Answers {
            service,
            cache: Mutex::new(ReplyCache::new(reply_cache)),
            delayed: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Takes `n` bytes of the delay queue for a held reply; `false` (and
    /// counted) when it is full, and the request is dropped.
    fn hold(&self, n: usize) -> bool {
        let held = self.delayed.fetch_add(n, Ordering::AcqRel);
        if held + n > DELAY_QUEUE_BYTES {
            self.delayed.fetch_sub(n, Ordering::AcqRel);
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!("the --delay queue is full ({DELAY_QUEUE_BYTES} bytes): dropping requests");
            }
            return false;
        }
        true
    }

    /// A held reply of `n` bytes went out.
    fn unhold(&self, n: usize) {
        if self.delayed.fetch_sub(n, Ordering::AcqRel) == n {
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(dropped, "the --delay queue drained; requests dropped meanwhile");
            }
        }
    }

    /// The reply to `datagram` from `peer`, or `None` to send nothing.
    pub fn answer(&self, peer: SocketAddr, datagram: &[u8], now: Now) -> Option<Vec<u8>> {
        let Some((id, request)) = split_id(datagram) else {
            return Some(
                b"ERR malformed request ID: `#ID ` is 1 to 64 printable ASCII bytes, then a space".to_vec(),
            );
        };
        let key = id.map(|id| (peer, id.to_vec()));
        if let Some(key) = &key {
            let mut cache = self.cache();
            cache.expire(now.instant);
            match cache.replies.get(key) {
                Some(Some(reply)) => {
                    tracing::debug!(%peer, "a retried request: answered from the cache");
                    return Some(reply.clone());
                }
                Some(None) => {
                    tracing::debug!(%peer, "a retried request still being answered: dropped");
                    return None;
                }
                None => cache.remember(key.clone(), None, now.instant),
            }
        }
        let body = if request.is_empty() {
            Some(b"ERR empty datagram".to_vec())
        } else {
            self.service.datagram(request, now)
        };
        let Some(body) = body else {
            if let Some(key) = &key {
                self.cache().forget(key);
            }
            return None;
        };
        let mut reply = Vec::with_capacity(body.len() + id.map_or(0, |i| i.len() + 2));
        if let Some(id) = id {
            reply.push(b'#');
            reply.extend_from_slice(id);
            reply.push(b' ');
        }
        reply.extend_from_slice(&body);
        if reply.len() > MAX_DATAGRAM {
            tracing::info!(%peer, len = reply.len(), "a reply too large for one datagram");
            reply.truncate(reply.len() - body.len());
            reply.extend_from_slice(b"ERR reply too large for a datagram");
        }
        if let Some(key) = key {
            self.cache().remember(key, Some(reply.clone()), now.instant);
        }
        Some(reply)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReplyCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delay(&self) -> Duration {
        self.service.config().delay
    }
}

/// `#ID rest` into (`ID`, `rest`); anything else has no ID. `None` for an
/// ID that is there but malformed: control or non-ASCII bytes in it, which
/// would come back in the reply and the server's log.
pub fn split_id(datagram: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    if let Some(rest) = datagram.strip_prefix(b"#") {
        if let Some(space) = rest.iter().position(|&b| b == b' ') {
            if (1..=MAX_ID).contains(&space) {
                let id = &rest[..space];
                if !id.iter().all(u8::is_ascii_graphic) {
                    return None;
                }
                return Some((Some(id), &rest[space + 1..]));
            }
        }
    }
    Some((None, datagram))
}

fn reply(socket: &UdpSocket, peer: SocketAddr, bytes: &[u8]) {
    if let Err(e) = socket.send_to(bytes, peer) {
        tracing::debug!(%peer, "reply not sent: {e}");
    }
}

/// iterative and pool: receive, sleep the delay (the seed's `time.sleep`),
/// reply, on the calling thread.
fn blocking(socket: &UdpSocket, answers: &Answers, shutdown: &Shutdown) -> anyhow::Result<()> {
    socket.set_nonblocking(true)?;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let mut fds = [
            PollFd::new(socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(shutdown.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(());
        }
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if would_block(&e) || interrupted(&e) => continue, // Another worker got it.
            Err(e) => {
                tracing::debug!("recvfrom: {e}");
                continue;
            }
        };
        let Some(bytes) = answers.answer(peer, &buf[..n], Now::system()) else {
            continue;
        };
        std::thread::sleep(answers.delay());
        reply(socket, peer, &bytes);
    }
}

/// epoll: one loop, a timer queue for delayed replies.
fn event_loop(socket: &UdpSocket, answers: &Answers, shutdown: &Shutdown) -> anyhow::Result<()> {
    const SOCKET: usize = 0;
    const SHUTDOWN: usize = 1;
    socket.set_nonblocking(true)?;
    let mut epoll = Epoll::new()?;
    epoll.register(socket.as_raw_fd(), SOCKET, Interest::READ)?;
    epoll.register(shutdown.as_fd().as_raw_fd(), SHUTDOWN, Interest::READ)?;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    // Replies waiting for their delay, in due order (every one waits the same).
    let mut held: VecDeque<(Instant, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut events = Vec::with_capacity(2);
    loop {
        let timeout = held
            .front()
            .map(|(due, _, _)| due.saturating_duration_since(Instant::now()));
        events.clear();
        match epoll.wait(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        if events.iter().any(|e| e.token == SHUTDOWN) {
            return Ok(()); // Datagrams have no in-flight requests to wait for.
        }
        loop {
            let (len, peer) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    tracing::debug!("recvfrom: {e}");
                    break;
                }
            };
            let now = Now::system();
            if let Some(bytes) = answers.answer(peer, &buf[..len], now) {
                if answers.delay().is_zero() {
                    reply(socket, peer, &bytes);
                } else if answers.hold(bytes.len()) {
                    held.push_back((now.instant + answers.delay(), peer, bytes));
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _, _)| *due <= now) {
            if let Some((_, peer, bytes)) = held.pop_front() {
                reply(socket, peer, &bytes);
                answers.unhold(bytes.len());
            }
        }
    }
}

/// async: a receiving task; a delayed reply is a task of its own.
fn tokio_loop(
    socket: UdpSocket,
    answers: Answers,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers.max(1))
        .enable_all()
        .build()?;
    let shutdown_fd = shutdown.as_fd().try_clone_to_owned()?;
    let answers = Arc::new(answers);
    runtime.block_on(async move {
        socket.set_nonblocking(true)?;
        let socket = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
        // SAFETY: the OwnedFd moves into the AsyncFd, its only owner.
        let stop = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(shutdown_fd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| anyhow::anyhow!("cannot watch the shutdown signal: {e}"))?;
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (n, peer) = tokio::select! {
                got = socket.recv_from(&mut buf) => match got {
                    Ok(got) => got,
                    Err(e) => {
                        tracing::debug!("recvfrom: {e}");
                        continue;
                    }
                },
                _ = stop.readable() => return Ok(()),
            };
            let Some(bytes) = answers.answer(peer, &buf[..n], Now::system()) else {
                continue;
            };
            let delay = answers.delay();
            if delay.is_zero() {
                let _ = socket.send_to(&bytes, peer).await;
            } else if answers.hold(bytes.len()) {
                let (socket, answers) = (socket.clone(), answers.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&bytes, peer).await;
                    answers.unhold(bytes.len());
                });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{ServiceConfig, ServiceKind};

    fn answers(kind: ServiceKind) -> Answers {
        Answers::new(
            Arc::new(Service::new(ServiceConfig::new(kind))),
            DEFAULT_REPLY_CACHE,
        )
    }

    #[test]
    fn ids_come_back_and_retries_hit_the_cache() {
        let a = answers(ServiceKind::Greet);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:10".parse().unwrap();
        let now = Now::system();
        assert_eq!(a.answer(peer, b"#7 bob", now), Some(b"#7 Hello, bob!".to_vec()));
        assert_eq!(
            a.answer(peer, b"#7 eve", now),
            Some(b"#7 Hello, bob!".to_vec()),
            "a retry"
        );
        assert_eq!(
            a.answer(other, b"#7 eve", now),
            Some(b"#7 Hello, eve!".to_vec()),
            "another peer"
        );
        assert_eq!(
            a.answer(peer, b"message1", now),
            Some(b"Hello, message1!".to_vec())
        );
        assert_eq!(
            a.answer(peer, b"#no-space", now),
            Some(b"Hello, #no-space!".to_vec())
        );
    }

    #[test]
    fn a_retry_racing_its_first_copy_is_dropped_not_applied() {
        let a = answers(ServiceKind::Greet);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // What a second pool worker sees while the first is still answering `#7`.
        let now = Instant::now();
        a.cache.lock().unwrap().remember((peer, b"7".to_vec()), None, now);
        assert_eq!(a.answer(peer, b"#7 bob", Now::system()), None);
        a.cache
            .lock()
            .unwrap()
            .remember((peer, b"7".to_vec()), Some(b"#7 Hello, bob!".to_vec()), now);
        assert_eq!(
            a.answer(peer, b"#7 bob", Now::system()),
            Some(b"#7 Hello, bob!".to_vec())
        );
        assert_eq!(a.cache.lock().unwrap().order.len(), 1);
    }

    #[test]
    fn a_malformed_id_gets_err() {
        let a = answers(ServiceKind::Greet);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let reply = a.answer(peer, b"#\x1b[2J hi", Now::system()).unwrap();
        assert!(reply.starts_with(b"ERR malformed request ID"), "{reply:?}");
    }

    #[test]
    fn empty_and_oversized() {
        let a = answers(ServiceKind::Greet);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let now = Now::system();
        assert_eq!(a.answer(peer, b"", now), Some(b"ERR empty datagram".to_vec()));
        assert_eq!(
            a.answer(peer, b"#1 ", now),
            Some(b"#1 ERR empty datagram".to_vec())
        );
        let big = vec![b'x'; MAX_DATAGRAM];
        assert_eq!(
            a.answer(peer, &big, now),
            Some(b"ERR reply too large for a datagram".to_vec())
        );
        let echo = answers(ServiceKind::Echo);
        assert_eq!(echo.answer(peer, &big, now).map(|r| r.len()), Some(MAX_DATAGRAM));
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_forgets_old_replies() {
        let a = Answers::new(
            Arc::new(Service::new(ServiceConfig::new(ServiceKind::Echo))),
            1 << 20,
        );
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let now = Now::system();
        let body = vec![b'x'; 60_000];
        for id in 0..100 {
            let datagram = [format!("#{id} ").into_bytes(), body.clone()].concat();
            assert!(a.answer(peer, &datagram, now).is_some());
        }
        let bytes = a.cache.lock().unwrap().bytes;
        assert!(bytes <= 1 << 20, "{bytes} bytes cached");
        assert!(a.cache.lock().unwrap().replies.len() < 20);
        // A recent one is still answered from the cache...
        assert_eq!(a.answer(peer, b"#99 other", now).map(|r| r.len()), Some(60_004));
        // ...but not after CACHE_TTL.
        let later = now.advanced(CACHE_TTL + Duration::from_secs(1));
        assert_eq!(a.answer(peer, b"#99 other", later), Some(b"#99 other".to_vec()));
        assert_eq!(a.cache.lock().unwrap().replies.len(), 1);
    }

    #[test]
    fn the_delay_queue_is_bounded() {
        let a = answers(ServiceKind::Echo);
        let n = DELAY_QUEUE_BYTES / 60_000;
        assert!((0..n).all(|_| a.hold(60_000)));
        assert!(!a.hold(60_000), "past the bound the request is dropped");
        a.unhold(60_000);
        assert!(a.hold(60_000));
    }
}
