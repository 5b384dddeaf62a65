//! `prefork-pass`: the parent alone accepts, and passes each connection to
//! an idle child over a Unix socket pair, as a descriptor in an
//! `SCM_RIGHTS` message (UNP row 5). A child serves it, closes it, and
//! writes one byte back: "idle again". The parent waits in `poll(2)` on the
//! listener and on every child's socket, and stops watching the listener
//! while every child is busy, so connections then wait in the kernel's
//! backlog, as in the book.
//!
//! It costs the parent an accept, a `sendmsg` and a read per connection,
//! and the child a `recvmsg` and a write: dearer than letting the children
//! accept (rows 2 to 4), in exchange for a parent that chooses who serves.
//! Like the book's, it gives each connection to the first idle child, so the
//! spread across children (logged at shutdown) leans to the first ones.

use std::io::{IoSlice, IoSliceMut, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::Pid;

use super::blocking::serve_connection;
use super::process::Children;
use super::spread::AcceptSpread;
use super::ServerConfig;
use crate::net::{interrupted, out_of_descriptors, would_block, DescriptorShortage, Listener, Stream};
use crate::service::Service;
use crate::shutdown::Shutdown;

/// A child as the parent sees it.
struct Child {
    pid: Pid,
    /// The parent's end of the pair: connections go down it, "idle" bytes
    /// come up it, and its end of file means the child has died.
    channel: UnixStream,
    idle: bool,
}

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let children = Children::new(shutdown)?;
    listener.set_nonblocking(true)?;
    let spread = AcceptSpread::new(config.workers)?;
    let max_busy = config.max_conns.unwrap_or(usize::MAX).max(1);
    let mut pool = Pool {
        children: &children,
        listener: &listener,
        service: &service,
        shutdown,
        slots: Vec::new(),
    };
    for i in 0..config.workers.max(1) {
        let child = pool.start(i, None)?;
        pool.slots.push(Some(child));
    }
    let shortage = DescriptorShortage::default();
    // A connection accepted while every child was busy or dying: it goes to
    // the next child that says it is idle.
    let mut held: Option<Stream> = None;
    let mut retry_at = None;
    while !shutdown.is_triggered() {
        if let Some(stream) = held.take() {
            held = pool.pass(stream, &spread);
        }
        if retry_at.is_some_and(|at| Instant::now() >= at) {
            retry_at = pool.restart_missing(held.as_ref());
        }
        let accepting = held.is_none() && pool.idle() > 0 && pool.busy() < max_busy;
        match pool.wait(accepting, retry_at)? {
            Event::Shutdown | Event::Timeout => {}
            Event::Listener => match listener.accept() {
                Ok(stream) => {
                    shortage.over();
                    held = Some(stream);
                }
                Err(e) if would_block(&e) || interrupted(&e) => {}
                Err(e) if out_of_descriptors(&e) => {
                    // The connection waits in the backlog until one of ours closes.
                    shortage.hit(&e);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => tracing::debug!("accept: {e}"),
            },
            Event::Children(ready) => {
                let mut died = false;
                for i in ready {
                    if !pool.heard_from(i) {
                        tracing::warn!(worker = i, "a worker died; starting another");
                        pool.slots[i] = None;
                        died = true;
                    }
                }
                if died {
                    retry_at = pool.restart_missing(held.as_ref());
                }
            }
        }
    }
    // An accepted connection no child has taken is closed unserved, as the
    // backlog is; the children see the end of their channels and leave once
    // they have finished what they serve.
    drop(held);
    pool.slots.clear();
    children.wind_down(config.grace);
    spread.log();
    Ok(())
}

/// What woke the parent.
enum Event {
    Shutdown,
    Listener,
    /// The children whose channels have something: an idle byte or an end.
    Children(Vec<usize>),
    Timeout,
}

/// The parent's children, by worker index.
struct Pool<'a> {
    children: &'a Children,
    listener: &'a Listener,
    service: &'a Arc<Service>,
    shutdown: &'a Shutdown,
    /// `None` while a worker could not be replaced.
    slots: Vec<Option<Child>>,
}

impl Pool<'_> {
    fn live(&self) -> impl Iterator<Item = (usize, &Child)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
    }

    fn idle(&self) -> usize {
        self.live().filter(|(_, c)| c.idle).count()
    }

    fn busy(&self) -> usize {
        self.live().filter(|(_, c)| !c.idle).count()
    }

    /// Forks worker `i` with a new channel. The child closes what is the
    /// parent's: the listener, the other children's channels, and a
    /// connection the parent holds, which must close when the child it is
    /// passed to closes it.
    fn start(&self, i: usize, held: Option<&Stream>) -> std::io::Result<Child> {
        let (channel, theirs) = UnixStream::pair()?;
        let mut parents: Vec<RawFd> = self.live().map(|(_, c)| c.channel.as_raw_fd()).collect();
        parents.extend([self.listener.as_raw_fd(), channel.as_raw_fd()]);
        parents.extend(held.map(AsRawFd::as_raw_fd));
        let tcp = matches!(self.listener, Listener::Tcp(_));
        let (service, shutdown) = (self.service, self.shutdown);
        // `theirs` moves into the child; `spawn` closes the parent's copy.
        let pid = self.children.spawn(move || {
            for fd in parents {
                let _ = nix::unistd::close(fd);
            }
            child_serves(&theirs, tcp, service, shutdown);
        })?;
        channel.set_nonblocking(true)?;
        tracing::debug!(worker = i, %pid, "worker started");
        Ok(Child {
            pid,
            channel,
            idle: true,
        })
    }

    /// Starts the workers missing (dead, or not replaced before); when to
    /// try again if one cannot be started now.
    fn restart_missing(&mut self, held: Option<&Stream>) -> Option<Instant> {
        let mut again = None;
        for i in 0..self.slots.len() {
            if self.slots[i].is_none() {
                match self.start(i, held) {
                    Ok(child) => self.slots[i] = Some(child),
                    Err(e) => {
                        tracing::error!("cannot start worker {i}: {e}");
                        again = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        }
        again
    }

    /// Passes `stream` to the first idle child; gives it back if none
    /// takes it.
    fn pass(&mut self, stream: Stream, spread: &AcceptSpread) -> Option<Stream> {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(child) = slot.as_mut().filter(|c| c.idle) else {
                continue;
            };
            child.idle = false;
            match send_descriptor(&child.channel, stream.as_raw_fd()) {
                Ok(()) => {
                    spread.record(i);
                    tracing::debug!(worker = i, pid = %child.pid, "passed a connection");
                    // The child has its own copy now; ours closes here.
                    return None;
                }
                // Dying: its channel's end of file replaces it.
                Err(e) => tracing::debug!(worker = i, "cannot pass a connection: {e}"),
            }
        }
        Some(stream)
    }

    /// Reads what child `i` said; `false` if it is gone.
    fn heard_from(&mut self, i: usize) -> bool {
        let Some(child) = self.slots[i].as_mut() else {
            return true;
        };
        let mut said = [0u8; 16];
        match (&child.channel).read(&mut said) {
            Ok(0) => false,
            Ok(_) => {
                child.idle = true;
                true
            }
            Err(e) if would_block(&e) || interrupted(&e) => true,
            Err(e) => {
                tracing::debug!(worker = i, "channel: {e}");
                false
            }
        }
    }

    /// Waits for shutdown, a connection (when `accepting`), a child's word,
    /// or `until`.
    fn wait(&self, accepting: bool, until: Option<Instant>) -> std::io::Result<Event> {
        let mut fds = vec![PollFd::new(self.shutdown.as_fd(), PollFlags::POLLIN)];
        let listener_flags = if accepting {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        fds.push(PollFd::new(self.listener.as_fd(), listener_flags));
        let live: Vec<usize> = self.live().map(|(i, _)| i).collect();
        for (_, child) in self.live() {
            fds.push(PollFd::new(child.channel.as_fd(), PollFlags::POLLIN));
        }
        let left = until.map(|u| u.saturating_duration_since(Instant::now()));
        let timeout = left.map_or(PollTimeout::NONE, |l| {
            PollTimeout::try_from(l.as_millis().min(1000) as i32).unwrap_or(PollTimeout::NONE)
        });
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => return Ok(Event::Timeout),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[0]) {
            return Ok(Event::Shutdown);
        }
        let children: Vec<usize> = live
            .iter()
            .zip(&fds[2..])
            .filter(|(_, fd)| ready(fd))
            .map(|(i, _)| *i)
            .collect();
        if !children.is_empty() {
            // The children first: an idle child is what a connection needs.
            return Ok(Event::Children(children));
        }
        if accepting && ready(&fds[1]) {
            return Ok(Event::Listener);
        }
        Ok(Event::Timeout)
    }
}

/// One byte with the descriptor in an `SCM_RIGHTS` control message (a
/// stream socket carries no control message without data).
fn send_descriptor(channel: &UnixStream, fd: RawFd) -> nix::Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(
            channel.as_raw_fd(),
            &[IoSlice::new(b"c")],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            // The channel is non-blocking in the parent, but an idle child
            // has nothing queued, so a one-byte message always fits.
            other => return other.map(drop),
        }
    }
}

/// The next descriptor from the parent; `None` at the end of the channel
/// (the parent is shutting down, or gone).
fn receive_descriptor(channel: &UnixStream) -> nix::Result<Option<OwnedFd>> {
    loop {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = match recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => other?,
        };
        if msg.bytes == 0 {
            return Ok(None);
        }
        let mut received = None;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just installed this descriptor for us.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    // One is expected; any other closes on drop.
                    received = received.or(Some(fd));
                }
            }
        }
        if received.is_some() {
            return Ok(received);
        }
        tracing::warn!("a message from the parent without a descriptor");
    }
}

/// A child's life: receive a connection, serve it, say "idle", again.
fn child_serves(channel: &UnixStream, tcp: bool, service: &Service, shutdown: &Shutdown) {
    loop {
        let fd = match receive_descriptor(channel) {
            Ok(Some(fd)) => fd,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("cannot receive a connection: {e}");
                return;
            }
        };
        let stream = if tcp {
            Stream::Tcp(TcpStream::from(fd))
        } else {
            Stream::Unix(UnixStream::from(fd))
        };
        match stream.set_nonblocking(false) {
            Ok(()) => serve_connection(stream, service, shutdown),
            Err(e) => tracing::warn!("dropping a connection: {e}"),
        }
        if nix::sys::socket::send(channel.as_raw_fd(), b"i", MsgFlags::MSG_NOSIGNAL).is_err() {
            return; // The parent has gone.
        }
    }
}
