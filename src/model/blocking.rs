//! The blocking connection loop shared by iterative, thread, the pools, fork
//! and the preforks: read, answer, write, in plain blocking calls. The models differ
//! only in who calls [`Acceptor::accept`] and on which thread or process
//! [`serve_connection`] runs.
//!
//! `poll(2)` appears here only so that shutdown and the session's deadlines
//! (idle, write, chat stall) can interrupt a wait; the connection itself is
//! blocking, and a `--delay` is a real sleep of the serving thread, as in
//! the seeds. Writes do not block: a blocking `write` with `SO_SNDTIMEO`
//! restarts its clock on every partial write, so a peer that reads a byte
//! now and then could hold the thread for ever; the session's write
//! deadline, waited for in `poll`, counts the whole reply.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::event_loop::timeout_ms;
use crate::net::{interrupted, out_of_descriptors, would_block, DescriptorShortage, Listener, Stream};
use crate::service::{Now, Service, CHUNK_SIZE};
use crate::shutdown::Shutdown;

/// Accepts connections for a blocking model: waits for a connection or for
/// shutdown, and holds back at `--max-conns` until a connection ends.
#[derive(Debug)]
pub struct Acceptor {
    listener: Listener,
    shutdown: Shutdown,
    slots: Slots,
    shortage: DescriptorShortage,
}

impl Acceptor {
    pub fn new(listener: Listener, shutdown: Shutdown, slots: Slots) -> io::Result<Self> {
        // Non-blocking so that when several workers wake for one connection,
        // the losers go back to waiting instead of blocking in accept(2)
        // where shutdown could not reach them.
        listener.set_nonblocking(true)?;
        Ok(Acceptor {
            listener,
            shutdown,
            slots,
            shortage: DescriptorShortage::default(),
        })
    }

    /// The next connection and its slot, or `None` once shutdown begins.
    pub fn accept(&self) -> Option<(Stream, Slot)> {
        let slot = self.slots.acquire(&self.shutdown)?;
        loop {
            if self.shutdown.is_triggered() {
                return None;
            }
            match wait(
                &self.listener,
                PollFlags::POLLIN,
                Some(&self.shutdown),
                None,
                None,
            ) {
                Ok(Ready::Shutdown) => return None,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("waiting for connections failed: {e}");
                    return None;
                }
            }
            match self.listener.accept() {
                Ok(stream) => {
                    self.shortage.over();
                    match stream.set_nonblocking(false) {
                        Ok(()) => return Some((stream, slot)),
                        Err(e) => tracing::warn!("dropping a connection: {e}"),
                    }
                }
                Err(e) if would_block(&e) || interrupted(&e) => {}
                Err(e) if out_of_descriptors(&e) => {
                    // Out of descriptors: the connection waits in the backlog
                    // until one of ours closes. Back off instead of spinning.
                    self.shortage.hit(&e);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => tracing::debug!("accept: {e}"),
            }
        }
    }

    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}

/// Counts live connections against `--max-conns`, and lets the server wait
/// for the last one to finish at shutdown.
#[derive(Debug, Clone)]
pub struct Slots {
    inner: Arc<(Mutex<usize>, Condvar)>,
    max: usize,
}

/// One live connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<(Mutex<usize>, Condvar)>,
}

impl Slots {
    pub fn new(max_conns: Option<usize>) -> Self {
        Slots {
            inner: Arc::new((Mutex::new(0), Condvar::new())),
            max: max_conns.unwrap_or(usize::MAX).max(1),
        }
    }

    fn acquire(&self, shutdown: &Shutdown) -> Option<Slot> {
        let (count, freed) = &*self.inner;
        let mut live = count.lock().unwrap_or_else(|e| e.into_inner());
        let mut warned = false;
        while *live >= self.max {
            if !warned {
                tracing::info!(
                    max = self.max,
                    "at --max-conns: not accepting until a connection ends"
                );
                warned = true;
            }
            if shutdown.is_triggered() {
                return None;
            }
            // Woken by a freed slot; the timeout only re-checks shutdown.
            live = freed
                .wait_timeout(live, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *live += 1;
        Some(Slot {
            inner: self.inner.clone(),
        })
    }

    /// Waits until no connection is live, or `grace` has passed; returns how
    /// many were still live.
    pub fn wait_idle(&self, grace: Duration) -> usize {
        let (count, freed) = &*self.inner;
        let live = count.lock().unwrap_or_else(|e| e.into_inner());
        let (live, _) = freed
            .wait_timeout_while(live, grace, |live| *live > 0)
            .unwrap_or_else(|e| e.into_inner());
        *live
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &*self.inner;
        let mut live = count.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        freed.notify_all();
    }
}

/// Serves one connection to the end, on the calling thread.
pub fn serve_connection(mut stream: Stream, service: &Service, shutdown: &Shutdown) {
    if let Err(e) = drive(&mut stream, service, shutdown) {
        tracing::debug!("connection ended: {e}");
    }
    stream.close_gracefully();
}

fn drive(stream: &mut Stream, service: &Service, shutdown: &Shutdown) -> io::Result<()> {
    let mut session = service.session(Now::system());
    let wake = room_wake(&mut session)?;
    let mut buf = [0u8; CHUNK_SIZE];
    let mut shutdown_seen = false;
    loop {
        let pending = session.pending_output();
        if !pending.is_empty() {
            match stream.send_now(pending) {
                Ok(n) => {
                    session.consume_output(n, Instant::now());
                    continue;
                }
                Err(e) if would_block(&e) => {} // Wait for room below.
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        if session.is_finished() {
            return Ok(());
        }
        let writing = !session.pending_output().is_empty();
        if session.has_held_replies() && !writing {
            // The seeds' `time.sleep()`: this thread does nothing else meanwhile.
            if let Some(due) = session.poll_timeout() {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            session.handle_timeout(Now::system());
            continue;
        }
        let reading = session.wants_read();
        if !reading && !writing && session.poll_timeout().is_none() && !session.may_be_woken() {
            return Ok(()); // Nothing owed and nothing more can happen.
        }
        let mut interest = PollFlags::empty();
        interest.set(PollFlags::POLLIN, reading);
        interest.set(PollFlags::POLLOUT, writing);
        let watch = (!shutdown_seen).then_some(shutdown);
        match wait(stream, interest, watch, wake.as_deref(), session.poll_timeout())? {
            Ready::Io(flags)
                if reading
                    && flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) =>
            {
                match stream.read(&mut buf) {
                    Ok(0) => session.handle_eof(Now::system()),
                    Ok(n) => session.handle_read(&buf[..n], Now::system()),
                    Err(e) if interrupted(&e) || would_block(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ready::Io(flags) if !writing && flags.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) => {
                return Ok(()); // Gone, while we were not even reading.
            }
            Ready::Io(_) => {} // Writable: the loop writes.
            Ready::Timeout => session.handle_timeout(Now::system()),
            Ready::Wake => {
                if let Some(event) = &wake {
                    let _ = event.read(); // Reset it; the inbox holds the news.
                }
                session.handle_wake(Now::system());
            }
            // The eventfd is shared with forked children, so this is how a
            // child process learns of the parent's shutdown too.
            Ready::Shutdown if !shutdown_seen => {
                shutdown_seen = true;
                session.handle_shutdown();
            }
            Ready::Shutdown => {}
        }
    }
}

/// For a session other connections can give work to (chat): an eventfd that
/// they write to, which this thread waits on next to its socket.
fn room_wake(session: &mut crate::service::Session) -> io::Result<Option<Arc<EventFd>>> {
    if !session.uses_wake() {
        return Ok(None);
    }
    let event = Arc::new(EventFd::from_value_and_flags(
        0,
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?);
    let writer = event.clone();
    session.set_wake(Arc::new(move || {
        let _ = writer.write(1);
    }));
    // Anything said before the wake was registered is waiting already.
    session.handle_wake(Now::system());
    Ok(Some(event))
}

enum Ready {
    /// The descriptor's `revents`.
    Io(PollFlags),
    Timeout,
    Wake,
    Shutdown,
}

/// Blocks until `fd` has one of `events` (or a hang-up), another
/// connection wakes us, shutdown (if watched) is triggered, or `deadline`;
/// in that order of precedence.
fn wait(
    fd: &impl AsFd,
    events: PollFlags,
    shutdown: Option<&Shutdown>,
    wake: Option<&EventFd>,
    deadline: Option<Instant>,
) -> io::Result<Ready> {
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // Never below -1 (no limit), so the conversion cannot fail.
        let timeout = PollTimeout::try_from(timeout_ms(left)).unwrap_or(PollTimeout::NONE);
        // At most three descriptors: a fixed array, no allocation per wait.
        let unused = PollFd::new(fd.as_fd(), PollFlags::empty());
        let mut fds = [PollFd::new(fd.as_fd(), events), unused, unused];
        let mut n = 1;
        let mut wake_at = None;
        for (extra, is_wake) in [(wake.map(AsFd::as_fd), true), (shutdown.map(AsFd::as_fd), false)] {
            if let Some(extra) = extra {
                fds[n] = PollFd::new(extra, PollFlags::POLLIN);
                wake_at = if is_wake { Some(n) } else { wake_at };
                n += 1;
            }
        }
        let fds = &mut fds[..n];
        match poll(fds, timeout) {
            Ok(0) => return Ok(Ready::Timeout),
            Ok(_) => {
                let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
                return Ok(if ready(0) {
                    Ready::Io(fds[0].revents().unwrap_or(PollFlags::POLLERR))
                } else if wake_at.is_some_and(ready) {
                    Ready::Wake
                } else {
                    Ready::Shutdown
                });
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
