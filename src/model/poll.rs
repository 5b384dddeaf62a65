//! `poll`: one thread waits in `poll(2)` on an array of descriptors. No
//! FD_SETSIZE ceiling, but the kernel still walks the whole array on every
//! call, so each wait costs in proportion to the connections held.

use std::io;
use std::os::fd::RawFd;
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
    event_loop::run(Poll::default(), listener, &service, config, shutdown)
}

/// The pollfd array, and each entry's token at the same index.
#[derive(Default)]
struct Poll {
    fds: Vec<libc::pollfd>,
    tokens: Vec<usize>,
}

fn flags(interest: Interest) -> libc::c_short {
    let mut events = 0;
    if interest.read {
        events |= libc::POLLIN;
    }
    if interest.write {
        events |= libc::POLLOUT;
    }
    events
}

impl Poll {
    fn index(&self, fd: RawFd, token: usize) -> Option<usize> {
        (0..self.fds.len()).find(|&i| self.fds[i].fd == fd && self.tokens[i] == token)
    }
}

impl Poller for Poll {
    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.fds.push(libc::pollfd {
            fd,
            events: flags(interest),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        if let Some(i) = self.index(fd, token) {
            self.fds[i].events = flags(interest);
        }
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        if let Some(i) = self.index(fd, token) {
            self.fds.swap_remove(i);
            self.tokens.swap_remove(i);
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let ms = event_loop::timeout_ms(timeout);
        // SAFETY: the pointer and length describe our own pollfd array.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for (pfd, &token) in self.fds.iter().zip(&self.tokens) {
            let r = pfd.revents;
            if r != 0 {
                events.push(Event {
                    token,
                    readable: r & libc::POLLIN != 0,
                    writable: r & libc::POLLOUT != 0,
                    closed: r & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
                    ..Event::default()
                });
            }
        }
        Ok(())
    }
}
