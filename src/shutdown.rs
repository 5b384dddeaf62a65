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

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// signal handler runs in the parent), so it asks the shared eventfd.
    in_a_child: AtomicBool,
}

impl Inner {
    /// Async-signal-safe: an atomic swap and a write(2).
    fn trigger(&self) {
        if !self.triggered.swap(true, Ordering::SeqCst) {
            // Cannot fail short of a counter overflow, which one write cannot cause.
            let _ = self.event.write(1);
        }
    }
}

/// A line on stderr from a signal handler, in the shape of `tracing`'s
/// (`2026-11-23T20:26:23.755608Z  INFO message`), without `tracing`: a
/// handler may not take the lock it writes under, nor allocate. So one
/// write(2) of a line formatted on the stack.
fn log_from_handler(level: &str, message: &str) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut buf = [0u8; 512];
    let line = handler_line(&mut buf, since_epoch, level, message);
    // SAFETY: descriptor 2 stays open for the process' life (nothing here
    // closes it); borrowing it touches no lock, as `std::io::stderr` might.
    let stderr = unsafe { BorrowedFd::borrow_raw(libc::STDERR_FILENO) };
    let _ = nix::unistd::write(stderr, line);
}

/// `buf` filled with `TIMESTAMP LEVEL MESSAGE\n` (cut to fit, the newline
/// kept), as `tracing_subscriber`'s default format writes it: UTC to the
/// microsecond, the level right-aligned in five columns.
fn handler_line<'a>(buf: &'a mut [u8], since_epoch: Duration, level: &str, message: &str) -> &'a [u8] {
    use std::io::Write;
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let room = buf.len() - 1;
    let mut out = std::io::Cursor::new(&mut buf[..room]);
    // core::fmt into a slice: no allocation, no lock. A line too long for
    // the buffer is cut where it ends.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z {level:>5} {message}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_micros(),
    );
    let end = out.position() as usize;
    buf[end] = b'\n';
    &buf[..=end]
}

/// The proleptic Gregorian date of a day counted from 1970-01-01: Howard
/// Hinnant's `civil_from_days` (chrono and time do the same sum; taking a
/// dependency for ten lines that a signal handler may run is not worth it).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of the 400-year era
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // from March 1st
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
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
        self.inner.trigger();
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
    ///
    /// A signal handler does it, not a thread that waits for signals, so that
    /// a model that runs one loop runs in a process of one thread, as its C
    /// counterpart does: once a process has a second thread, every `read` and
    /// `write` pays for a shared descriptor table, and libc for thread
    /// cancellation (4% of the epoll model's echo throughput on the machine
    /// of README's figures). A handler may only do what is async-signal-safe,
    /// so this one sets the flag, writes the eventfd (the self-pipe trick),
    /// and writes its log line with one write(2) (`log_from_handler`);
    /// the interrupted system call returns `EINTR`, which every loop takes
    /// as "look again".
    pub fn on_signals(&self, grace: Duration) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let seen = Arc::new(AtomicUsize::new(0));
        for (signal, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
            let (inner, seen) = (self.inner.clone(), seen.clone());
            let first =
                format!("{name}: shutting down: no new connections, {grace:?} for the ones in flight");
            let action = move || {
                if seen.fetch_add(1, Ordering::SeqCst) > 0 {
                    log_from_handler("WARN", "second signal: exiting now");
                    exit_now(1);
                }
                log_from_handler("INFO", &first);
                inner.trigger();
            };
            // SAFETY: the action is async-signal-safe: atomics, write(2) to
            // stderr and to the eventfd, and `exit_now`, which waits for no
            // lock and allocates nothing.
            unsafe { signal_hook::low_level::register(signal, action) }?;
        }
        Ok(())
    }

    /// Runs `job` on every item as a group that stands or falls together
    /// (see [`join_all`](Shutdown::join_all)): the first on this thread, each
    /// other one on a thread of its own, named by `name`. N loops are then N
    /// threads, and a model that runs one loop is a process of one thread
    /// (see [`on_signals`](Shutdown::on_signals)).
    pub fn run_together<T: Send>(
        &self,
        items: Vec<T>,
        what: &str,
        name: impl Fn(usize) -> String,
        job: impl Fn(usize, T) -> anyhow::Result<()> + Sync,
    ) -> anyhow::Result<()> {
        let mut items = items.into_iter().enumerate();
        let Some((_, first)) = items.next() else {
            return Ok(());
        };
        std::thread::scope(|scope| {
            let job = &job;
            let others: Vec<_> = items
                .map(|(i, item)| {
                    std::thread::Builder::new()
                        .name(name(i))
                        .spawn_scoped(scope, move || job(i, item))
                })
                .collect::<Result<_, _>>()
                .inspect_err(|_| self.trigger())?; // The ones started stop too.
            let here = std::panic::AssertUnwindSafe(|| job(0, first));
            let here =
                std::panic::catch_unwind(here).unwrap_or_else(|_| Err(anyhow::anyhow!("{what} panicked")));
            if here.is_err() {
                self.trigger();
            }
            here.and(self.join_all(others, what))
        })
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
    /// Unix socket files this process made, removed before the exit; kept
    /// as C strings, which unlink(2) takes without an allocation.
    socket_files: Vec<CString>,
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

/// A Unix socket file was made: [`exit_now`] removes it. (A path with a NUL
/// in it could not have been bound.)
pub fn track_socket_file(path: &Path) {
    if let Ok(path) = CString::new(path.as_os_str().as_bytes()) {
        leftovers().socket_files.push(path);
    }
}

/// The socket file was removed the ordinary way.
pub fn untrack_socket_file(path: &Path) {
    leftovers()
        .socket_files
        .retain(|p| p.as_bytes() != path.as_os_str().as_bytes());
}

/// Ends the process now (a second SIGINT or SIGTERM, from the signal
/// handler): kills the children, removes the socket files, and exits with
/// `code`, running no destructors. Async-signal-safe: if the interrupted code
/// holds the list at this instant, the cleanup is skipped rather than waited
/// for (the children still die of their parent-death signal).
pub fn exit_now(code: i32) -> ! {
    let left = match LEFTOVERS.try_lock() {
        Ok(left) => Some(left),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    };
    if let Some(left) = left {
        for pid in &left.children {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for path in &left.socket_files {
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::unlink(path.as_ptr()) };
        }
    }
    // SAFETY: `_exit` ends the process at once, which is what is asked.
    unsafe { libc::_exit(code) }
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
    fn a_handler_line_has_the_shape_of_tracings() {
        let mut buf = [0u8; 512];
        for (secs, micros, want) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
            (1_795_465_583, 755_608, "2026-11-23T20:26:23.755608Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
        ] {
            let at = Duration::new(secs, micros * 1000);
            let line = handler_line(&mut buf, at, "INFO", "SIGTERM: shutting down");
            let want = format!("{want}  INFO SIGTERM: shutting down\n");
            assert_eq!(std::str::from_utf8(line).unwrap(), want);
        }
        let mut small = [0u8; 40];
        let line = handler_line(&mut small, Duration::ZERO, "WARN", &"x".repeat(100));
        assert_eq!(line.len(), 40, "cut to the buffer");
        assert!(line.starts_with(b"1970-01-01T00:00:00.000000Z  WARN xxx") && line.ends_with(b"x\n"));
    }

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
