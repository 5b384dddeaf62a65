//! `select`: one thread waits in `select(2)` for any of its sockets to be
//! ready (seed 001's event loop with read and write waiters). The fd_sets
//! are rebuilt for every call, and `select` scans them up to the highest
//! descriptor, so the cost of each wait grows with the number of
//! connections. An fd_set holds descriptors below FD_SETSIZE (1024) only:
//! beyond that the loop stops accepting, and says so, rather than write
//! past the end of the set.

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
    event_loop::run(Watched::new(Select), listener, &service, config, shutdown)
}

struct Select;

impl Scan for Select {
    fn scan(
        &mut self,
        watched: &[(RawFd, usize, Interest)],
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        // SAFETY: fd_set is plain data; FD_ZERO initialises it.
        let mut reads: libc::fd_set = unsafe { std::mem::zeroed() };
        let mut writes: libc::fd_set = unsafe { std::mem::zeroed() };
        let mut highest = -1;
        // SAFETY: every fd was checked against FD_SETSIZE (`can_watch`) at
        // register, so FD_SET stays inside the sets.
        unsafe {
            libc::FD_ZERO(&mut reads);
            libc::FD_ZERO(&mut writes);
            for &(fd, _, interest) in watched {
                if interest.read {
                    libc::FD_SET(fd, &mut reads);
                }
                if interest.write {
                    libc::FD_SET(fd, &mut writes);
                }
                highest = highest.max(fd);
            }
        }
        let mut tv = timeout.map(|t| libc::timeval {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        });
        let tv_ptr = tv
            .as_mut()
            .map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
        // SAFETY: the sets and the timeval outlive the call; nfds is one more
        // than the highest descriptor in the sets.
        let n = unsafe { libc::select(highest + 1, &mut reads, &mut writes, std::ptr::null_mut(), tv_ptr) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for &(fd, token, _) in watched {
            // SAFETY: fd < FD_SETSIZE, as above.
            let (readable, writable) = unsafe { (libc::FD_ISSET(fd, &reads), libc::FD_ISSET(fd, &writes)) };
            if readable || writable {
                events.push(Event {
                    token,
                    readable,
                    writable,
                    ..Event::default()
                });
            }
        }
        Ok(())
    }

    fn can_watch(&self, fd: RawFd) -> bool {
        (0..libc::FD_SETSIZE as RawFd).contains(&fd)
    }
}
