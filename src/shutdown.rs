//! The server-wide "stop accepting" signal.
//!
//! A flag for code that checks, plus an eventfd that becomes readable once
//! and stays readable, for code that waits: a blocking model puts it next to
//! its listener in `poll(2)`, an event loop registers it like any socket.
//! SIGINT and SIGTERM trigger it (see [`Shutdown::on_signals`]).
//!
//! A second signal ends the process at once, without destructors; what must
//! not outlive it anyway (child processes, Unix socket files) is kept in a
//! process-wide list, [`exit_now`] cleans it up.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    triggered: AtomicBool,
    /// Readable from the moment of the trigger on; never read, so it stays so.
    event: EventFd,
    /// Set in a forked child: its copy of `triggered` is never set (the
    /// signal thread is the parent's), so it asks the shared eventfd.
    in_a_child: AtomicBool,
}

impl Shutdown {
    pub fn new() -> std::io::Result<Self> {
        let event = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                event,
                in_a_child: AtomicBool::new(false),
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
        if self.inner.triggered.load(Ordering::SeqCst) {
            return true;
        }
        if !self.inner.in_a_child.load(Ordering::Relaxed) {
            return false;
        }
        let mut fds = [PollFd::new(self.inner.event.as_fd(), PollFlags::POLLIN)];
        let readable = matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1));
        if readable {
            self.inner.triggered.store(true, Ordering::SeqCst);
        }
        readable
    }

    /// Called in a forked child (fork, prefork): from now on
    /// [`is_triggered`](Shutdown::is_triggered) sees the parent's trigger,
    /// through the eventfd the two share, so a prefork worker stops taking
    /// queued clients as soon as the parent is told to stop.
    pub fn in_a_forked_child(&self) {
        self.inner.in_a_child.store(true, Ordering::Relaxed);
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
                        exit_now(1);
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

/// What a sudden exit must still clean up, since no destructor runs then.
struct Leftovers {
    /// Live child processes (fork, prefork), killed before the exit; their
    /// parent-death signal would kill them too, this is belt and braces.
    children: Vec<i32>,
    /// Unix socket files this process made, removed before the exit.
    socket_files: Vec<PathBuf>,
}

static LEFTOVERS: Mutex<Leftovers> = Mutex::new(Leftovers {
    children: Vec::new(),
    socket_files: Vec::new(),
});

fn leftovers() -> std::sync::MutexGuard<'static, Leftovers> {
    LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child process was started: [`exit_now`] kills it.
pub fn track_child(pid: i32) {
    leftovers().children.push(pid);
}

/// A child process was reaped (before its pid can be reused).
pub fn untrack_child(pid: i32) {
    leftovers().children.retain(|p| *p != pid);
}

/// A Unix socket file was made: [`exit_now`] removes it.
pub fn track_socket_file(path: &Path) {
    leftovers().socket_files.push(path.to_path_buf());
}

/// The socket file was removed the ordinary way.
pub fn untrack_socket_file(path: &Path) {
    leftovers().socket_files.retain(|p| p != path);
}

/// Ends the process now (a second SIGINT or SIGTERM): kills the children,
/// removes the socket files, and exits with `code`, running no destructors.
pub fn exit_now(code: i32) -> ! {
    let left = leftovers();
    for pid in &left.children {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    for path in &left.socket_files {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(code)
}

impl AsFd for Shutdown {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.event.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
