//! `busy`: non-blocking sockets, tried one after another in an endless loop
//! (seed 001's busy loop: `try: accept() except BlockingIOError: continue`).
//! Nothing ever waits: the "poller" reports every socket as maybe-ready and
//! the loop finds out by trying, so the thread burns a whole core even with
//! nobody connected. That cost is the lesson; nothing here hides it.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use super::event_loop::{self, Event, Interest, Poller, Watched};
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
    event_loop::run(Busy::default(), listener, &service, config, shutdown)
}

/// Every registered socket with what it is watched for; no system call.
#[derive(Default)]
struct Busy {
    watched: Watched,
}

impl Poller for Busy {
    fn register(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.watched.add(fd, token, interest);
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: usize, interest: Interest) -> io::Result<()> {
        self.watched.change(fd, token, interest);
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        self.watched.remove(fd, token);
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, _timeout: Option<Duration>) -> io::Result<()> {
        // No waiting, whatever the timeout: try everything, again and again.
        events.extend(self.watched.entries.iter().map(|&(_, token, interest)| Event {
            token,
            readable: interest.read,
            writable: interest.write,
            closed: false,
        }));
        Ok(())
    }
}
