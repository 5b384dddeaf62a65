//! `epoll`: the kernel keeps the interest list (`epoll_ctl` once per change,
//! not once per wait) and `epoll_wait` returns only what is ready, so a wait
//! costs in proportion to the activity, not to the connections held: the
//! C10K answer. `--workers N` runs N loops, each with its own listener on
//! the same port (`SO_REUSEPORT`), so the kernel spreads connections across
//! them and they share nothing (each loop's accepts are counted, and
//! logged at shutdown, to show how evenly it did).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::event_loop::{self, Event, Hooks, Interest, Poller, Source};
use super::spread::AcceptSpread;
use super::ServerConfig;
use crate::net::Listener;
use crate::service::Service;
use crate::shutdown::Shutdown;

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let spread = AcceptSpread::new(config.workers)?;
    let result = super::on_sibling_listeners(listener, config.workers, "epoll", shutdown, |i, listener| {
        let hooks = Hooks {
            spread: Some((&spread, i)),
            ..Hooks::default()
        };
        let source = Source::Listener(listener);
        event_loop::run_with(
            Epoll::edge_triggered()?,
            source,
            &service,
            config,
            shutdown,
            hooks,
        )
    });
    spread.log();
    result
}

/// The epoll poller; the UDP driver (`datagram.rs`) waits with it too.
pub(super) struct Epoll {
    /// Shared by leader's threads, each with its own handle ([`Epoll::share`]).
    epfd: Arc<OwnedFd>,
    /// Where `epoll_wait` writes what is ready; sized for a busy batch.
    ready: Vec<libc::epoll_event>,
    /// How every descriptor is reported.
    trigger: Trigger,
}

/// When epoll reports a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// On every wait while it is ready (the UDP driver).
    Level,
    /// When it becomes ready, `EPOLLET` (the loops of epoll, reactors and
    /// half-async).
    Edge,
    /// Once, then disarmed until registered again, `EPOLLONESHOT` (leader).
    OneShot,
}

impl Epoll {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            epfd: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            ready: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
            trigger: Trigger::Level,
        })
    }

    /// An epoll that reports a descriptor when it becomes ready
    /// (`EPOLLET`), not on every wait while it is: what C servers use. A
    /// level-triggered epoll puts every socket it reported back on its
    /// ready list and asks the socket again at the next wait (a second
    /// `tcp_poll` per event, to learn that a socket we read dry has nothing
    /// more); edge-triggered, the kernel asks once. The price is the loop's:
    /// input left unread is never reported again, so the loop remembers it
    /// (see `event_loop`'s `Connection::unread`).
    pub(super) fn edge_triggered() -> io::Result<Self> {
        let mut epoll = Self::new()?;
        epoll.trigger = Trigger::Edge;
        Ok(epoll)
    }

    /// An epoll that reports each descriptor once, then disarms it until it
    /// is registered again, and takes `batch` events per wait: what lets
    /// several threads share it without two serving one socket (leader).
    pub(super) fn new_oneshot(batch: usize) -> io::Result<Self> {
        let mut epoll = Self::new()?;
        epoll.trigger = Trigger::OneShot;
        epoll.ready.truncate(batch.max(1));
        Ok(epoll)
    }

    /// Another handle on the same epoll, with its own event buffer, for
    /// another thread.
    pub(super) fn share(&self) -> Self {
        Epoll {
            epfd: self.epfd.clone(),
            ready: self.ready.clone(),
            trigger: self.trigger,
        }
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        let mut events = 0;
        if interest.read {
            events |= libc::EPOLLIN;
        }
        if interest.write {
            events |= libc::EPOLLOUT;
        }
        events |= match self.trigger {
            Trigger::Level => 0,
            Trigger::Edge => libc::EPOLLET | libc::EPOLLRDHUP,
            Trigger::OneShot => libc::EPOLLONESHOT,
        };
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token as u64,
        };
        // SAFETY: `event` lives across the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Poller for Epoll {
    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    fn reregister(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    fn deregister(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, token, Interest::default())
    }

    fn oneshot(&self) -> bool {
        self.trigger == Trigger::OneShot
    }

    fn edge_triggered(&self) -> bool {
        self.trigger == Trigger::Edge
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let ms = event_loop::timeout_ms(timeout);
        // SAFETY: the buffer and its length are our own `ready` array.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.ready.as_mut_ptr(),
                self.ready.len() as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for e in &self.ready[..n as usize] {
            let flags = e.events as libc::c_int;
            events.push(Event {
                token: e.u64 as usize,
                readable: flags & libc::EPOLLIN != 0,
                writable: flags & libc::EPOLLOUT != 0,
                closed: flags & (libc::EPOLLHUP | libc::EPOLLERR) != 0,
                peer_closed: flags & libc::EPOLLRDHUP != 0,
            });
        }
        Ok(())
    }
}
