//! `epoll`: the kernel keeps the interest list (`epoll_ctl` once per change,
//! not once per wait) and `epoll_wait` returns only what is ready, so a wait
//! costs in proportion to the activity, not to the connections held: the
//! C10K answer. `--workers N` runs N loops, each with its own listener on
//! the same port (`SO_REUSEPORT`), so the kernel spreads connections across
//! them and they share nothing.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::event_loop::{self, Event, Interest, Poller};
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
    super::on_sibling_listeners(listener, config.workers, "epoll", shutdown, |listener| {
        event_loop::run(Epoll::new()?, listener, &service, config, shutdown)
    })
}

/// The epoll poller; the UDP driver (`datagram.rs`) waits with it too.
pub(super) struct Epoll {
    epfd: OwnedFd,
    /// Where `epoll_wait` writes what is ready; sized for a busy batch.
    ready: Vec<libc::epoll_event>,
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
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            ready: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        let mut events = 0;
        if interest.read {
            events |= libc::EPOLLIN;
        }
        if interest.write {
            events |= libc::EPOLLOUT;
        }
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
            });
        }
        Ok(())
    }
}
