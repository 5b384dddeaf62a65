//! `async`: a tokio runtime (`--workers` threads, default: the cores) and a
//! task per connection (seed 004's asyncio). Each task drives its session
//! with `.await` where the blocking models block: a read, a write, a
//! `sleep_until` for `--delay`. A task costs a few hundred bytes where a
//! thread costs a stack, and the runtime's few threads serve them all.
//!
//! `--max-conns` is a semaphore whose permit each task holds; shutdown stops
//! the accept loop and tells every task, which finish what they owe; the
//! last task to end closes a channel the accept loop waits on (mini-redis'
//! pattern).

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{self, Poll, Waker};
use std::time::Duration;

use anyhow::Context;
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, Semaphore};

use super::ServerConfig;
use crate::net::{out_of_descriptors, DescriptorShortage, Listener};
use crate::service::{Now, Service, CHUNK_SIZE};
use crate::shutdown::Shutdown;

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    // One worker: a current-thread runtime, on which the accept loop and
    // every connection share this thread. The multi-thread scheduler with
    // one worker would run the accept loop on this thread and the
    // connections on another, and pay for work stealing it cannot use.
    let runtime = if config.workers <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers)
            .thread_name("async-worker")
            .enable_all()
            .build()
    }
    .context("cannot start the tokio runtime")?;
    let shutdown_fd = shutdown.as_fd().try_clone_to_owned()?;
    runtime.block_on(accept_loop(listener, service, config.clone(), shutdown_fd))
}

async fn accept_loop(
    listener: Listener,
    service: Arc<Service>,
    config: ServerConfig,
    shutdown_fd: OwnedFd,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = AsyncListener::new(listener)?;
    let limit = Arc::new(Semaphore::new(config.max_conns.unwrap_or(Semaphore::MAX_PERMITS)));
    // Every task holds a sender; when the last one drops, `recv` says so.
    let (done_tx, mut all_done) = mpsc::channel::<()>(1);
    let stop = Arc::new(Stop::default());
    let shortage = DescriptorShortage::default();
    // SAFETY: the OwnedFd is moved into the AsyncFd, which is its only
    // owner from here on: it stays open, and the same, until dropped.
    let shutdown = unsafe { AsyncFd::register_with_interest(shutdown_fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot watch the shutdown signal: {e}"))?;

    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit?,
            _ = shutdown.readable() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.readable() => break,
        };
        // What the task holds until its connection ends: a --max-conns
        // slot, and a sender that says it has not ended yet.
        let (service, stop, held) = (service.clone(), stop.clone(), (permit, done_tx.clone()));
        if accepted.is_ok() {
            shortage.over();
        }
        match accepted {
            Ok(Accepted::Tcp(stream)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move { connection(stream, &service, stop, held).await });
            }
            Ok(Accepted::Unix(stream)) => {
                tokio::spawn(async move { connection(stream, &service, stop, held).await });
            }
            Err(e) if out_of_descriptors(&e) => {
                shortage.hit(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => tracing::debug!("accept: {e}"),
        }
    }

    stop.trigger();
    drop(done_tx);
    if tokio::time::timeout(config.grace, all_done.recv()).await.is_err() {
        tracing::warn!("grace period over with connections still open");
    }
    Ok(())
}

/// Drives one connection's session to the end; `_held` is let go then.
///
/// Per request this does what a C epoll server does (one read, one write)
/// and little more: the clocks are read once per wake-up, a reply goes out
/// with a plain non-blocking write when the socket takes it (the write
/// future and a fresh clock read only when it does not), and the shutdown
/// signal is waited on by one future for the connection's life instead of
/// one registered and dropped per request, whose waker is registered once
/// ([`Stop`]).
async fn connection<S: AsyncRead + AsyncWrite + TryWrite + Unpin>(
    mut stream: S,
    service: &Service,
    stop: Arc<Stop>,
    _held: impl Send,
) {
    let mut now = Now::system();
    let mut session = service.session(now);
    // For chat: other connections wake this task through a Notify.
    let wake = session.uses_wake().then(|| Arc::new(Notify::new()));
    if let Some(notify) = &wake {
        let notify = notify.clone();
        session.set_wake(Arc::new(move || notify.notify_one()));
        session.handle_wake(now);
    }
    let mut buf = [0u8; CHUNK_SIZE];
    let mut stopping = false;
    let stopped = stop.wait();
    tokio::pin!(stopped);
    loop {
        let pending = session.pending_output();
        if !pending.is_empty() {
            // The reply to what was just read usually fits the socket's
            // buffer: write it now, stamped with this wake-up's instant.
            match stream.try_write(pending) {
                Ok(0) => return tracing::debug!("connection ended: the peer takes no more"),
                Ok(n) => {
                    session.consume_output(n, now.instant);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return tracing::debug!("connection ended: {e}"),
            }
            // Write what is owed before reading more; the session's
            // deadlines (its write timeout among them) bound the wait.
            let deadline = session.poll_timeout();
            tokio::select! {
                biased;
                written = stream.write(pending) => match written {
                    Ok(0) => return tracing::debug!("connection ended: the peer takes no more"),
                    Ok(n) => {
                        now = Now::system();
                        session.consume_output(n, now.instant);
                    }
                    Err(e) => return tracing::debug!("connection ended: {e}"),
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    now = Now::system();
                    session.handle_timeout(now);
                }
                // A chat member stuck writing still hears the room, which
                // is how it learns that its inbox holds the room back.
                _ = notified(&wake), if wake.is_some() => {
                    now = Now::system();
                    session.handle_wake(now);
                }
            }
            continue;
        }
        if session.is_finished() {
            break;
        }
        let deadline = session.poll_timeout();
        // Unlike the blocking models, a held reply does not stop the reading.
        let reading = session.wants_read();
        if !reading && deadline.is_none() && !session.may_be_woken() {
            break; // Nothing can happen any more.
        }
        tokio::select! {
            // Input first: a request already sent when shutdown comes is in flight.
            biased;
            read = stream.read(&mut buf), if reading => {
                now = Now::system();
                match read {
                    Ok(0) => session.handle_eof(now),
                    Ok(n) => session.handle_read(&buf[..n], now),
                    Err(e) => return tracing::debug!("connection ended: {e}"),
                }
            },
            _ = sleep_until(deadline), if deadline.is_some() => {
                now = Now::system();
                session.handle_timeout(now);
            }
            _ = notified(&wake), if wake.is_some() => {
                now = Now::system();
                session.handle_wake(now);
            }
            _ = &mut stopped, if !stopping => {
                stopping = true;
                now = Now::system();
                session.handle_shutdown();
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Shutdown as the connection tasks hear it: a flag, and each waiting
/// task's waker, registered once. A task polls its stop future whenever
/// its read is pending, once per request; tokio's `watch` and `Notify`
/// take a lock on every such poll, this takes one atomic load.
#[derive(Default)]
struct Stop {
    stopped: AtomicBool,
    wakers: Mutex<Slab<Waker>>,
}

impl Stop {
    fn wakers(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells every task, waking those that wait.
    fn trigger(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for (_, waker) in self.wakers().iter() {
            waker.wake_by_ref();
        }
    }

    /// A future that is ready once [`trigger`](Stop::trigger) was called.
    fn wait(self: &Arc<Self>) -> Stopped {
        Stopped {
            stop: self.clone(),
            registered: None,
        }
    }
}

/// Waits for [`Stop::trigger`]; its waker stays registered until dropped.
struct Stopped {
    stop: Arc<Stop>,
    /// Where its waker is in the list, and a copy to compare with the
    /// next poll's: the same task's waker needs no new registration.
    registered: Option<(usize, Waker)>,
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        if self.stop.stopped.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &self.registered {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let this = &mut *self;
        {
            let mut wakers = this.stop.wakers();
            let key = match &this.registered {
                Some((key, _)) => {
                    wakers[*key] = cx.waker().clone();
                    *key
                }
                None => wakers.insert(cx.waker().clone()),
            };
            this.registered = Some((key, cx.waker().clone()));
        }
        // A trigger that came before the registration did not wake us.
        if this.stop.stopped.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            self.stop.wakers().try_remove(key);
        }
    }
}

/// A write that does not wait: what the socket takes now, or WouldBlock.
trait TryWrite {
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;
}

impl TryWrite for tokio::net::TcpStream {
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        tokio::net::TcpStream::try_write(self, buf)
    }
}

impl TryWrite for tokio::net::UnixStream {
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        tokio::net::UnixStream::try_write(self, buf)
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

async fn notified(wake: &Option<Arc<Notify>>) {
    if let Some(n) = wake {
        n.notified().await;
    }
}

/// The listener, registered with tokio.
enum AsyncListener {
    Tcp(tokio::net::TcpListener),
    /// The guard removes the socket's path when serving ends.
    Unix(
        tokio::net::UnixListener,
        #[allow(dead_code)] crate::net::UnlinkOnDrop,
    ),
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl AsyncListener {
    fn new(listener: Listener) -> std::io::Result<Self> {
        Ok(match listener {
            Listener::Tcp(l) => AsyncListener::Tcp(tokio::net::TcpListener::from_std(l)?),
            Listener::Unix(l, unlink) => AsyncListener::Unix(tokio::net::UnixListener::from_std(l)?, unlink),
        })
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            AsyncListener::Tcp(l) => Ok(Accepted::Tcp(l.accept().await?.0)),
            AsyncListener::Unix(l, _) => Ok(Accepted::Unix(l.accept().await?.0)),
        }
    }
}
