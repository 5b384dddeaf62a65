//! The server-wide "stop accepting" signal.
//!
//! A flag for code that checks, plus an eventfd that becomes readable once
//! and stays readable, for code that waits: a blocking model puts it next to
//! its listener in `poll(2)`, an event loop registers it like any socket.
//! SIGINT and SIGTERM trigger it (see [`Shutdown::on_signals`]).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    triggered: AtomicBool,
    /// Readable from the moment of the trigger on; never read, so it stays so.
    event: EventFd,
}

impl Shutdown {
    pub fn new() -> std::io::Result<Self> {
        let event = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                event,
            }),
        })
    }

    /// Asks everything watching to stop accepting and wind down.
    pub fn trigger(&self) {
        if !self.inner.triggered.swap(true, Ordering::SeqCst) {
            // Cannot fail short of a counter overflow, which one write cannot cause.
            let _ = self.inner.event.write(1);
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Triggers on the first SIGINT or SIGTERM; a second one ends the process
    /// at once, for a user who does not want to wait out the grace period.
    pub fn on_signals(&self, grace: Duration) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let shutdown = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut seen = 0;
                for signal in signals.forever() {
                    seen += 1;
                    if seen > 1 {
                        tracing::warn!("second signal: exiting now");
                        std::process::exit(1);
                    }
                    tracing::info!(
                        signal,
                        "shutting down: no new connections, {:?} for the ones in flight",
                        grace
                    );
                    shutdown.trigger();
                }
            })?;
        Ok(())
    }

    /// Joins a group of threads that stand or fall together: the first to
    /// fail triggers the shutdown, so the others wind down too, and its error
    /// is the result. A panic is a failure, reported as "`what` panicked".
    pub fn join_all<'scope>(
        &self,
        threads: impl IntoIterator<Item = std::thread::ScopedJoinHandle<'scope, anyhow::Result<()>>>,
        what: &str,
    ) -> anyhow::Result<()> {
        let mut result = Ok(());
        for thread in threads {
            let r = thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("{what} panicked")));
            if r.is_err() {
                self.trigger();
                result = result.and(r);
            }
        }
        result
    }
}

impl AsFd for Shutdown {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.event.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    #[test]
    fn becomes_and_stays_readable() {
        let s = Shutdown::new().unwrap();
        let readable = |s: &Shutdown| {
            let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        assert!(!readable(&s));
        assert!(!s.is_triggered());
        s.clone().trigger();
        assert!(s.is_triggered());
        assert!(readable(&s));
        assert!(readable(&s));
    }
}
