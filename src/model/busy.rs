//! `busy`: non-blocking sockets, tried one after another in an endless loop
//! (seed 001's busy loop: `try: accept() except BlockingIOError: continue`).
//! Nothing ever waits: the "poller" reports every socket as maybe-ready and
//! the loop finds out by trying, so the thread burns a whole core even with
//! nobody connected. That cost is the lesson; nothing here hides it.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use super::event_loop::{self, Event, Interest, Scan, Watched};
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
    event_loop::run(Watched::new(Busy), listener, &service, config, shutdown)
}

/// Reports every watched socket as maybe-ready; no system call.
struct Busy;

impl Scan for Busy {
    fn scan(
        &mut self,
        watched: &[(RawFd, usize, Interest)],
        events: &mut Vec<Event>,
        _timeout: Option<Duration>,
    ) -> io::Result<()> {
        // No waiting, whatever the timeout: try everything, again and again.
        events.extend(watched.iter().map(|&(_, token, interest)| Event {
            token,
            readable: interest.read,
            writable: interest.write,
            ..Event::default()
        }));
        Ok(())
    }
}
