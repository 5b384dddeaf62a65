//! Child processes for the process models (fork, the preforks): starting them,
//! reaping them the moment they exit (no zombies, ever), and taking them
//! down at shutdown.
//!
//! A reaper thread blocks in `waitpid(-1)` whenever there are children, so a
//! child is reaped as soon as it exits, without signal handlers; each exit
//! is reported on a channel for the parent that wants to react (prefork
//! restarts a worker).
//!
//! Children never outlive the server: each asks the kernel for SIGKILL when
//! its parent dies (`PR_SET_PDEATHSIG`), whatever kills the parent, `kill -9`
//! included. The kernel sends it when the *thread* that forked ends, so
//! children are forked only from the model's own thread, which outlives them
//! (it returns only after [`Children::wind_down`]).

use std::collections::HashSet;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

use crate::shutdown::{self, Shutdown};

/// The children of this process, as the reaper sees them.
pub struct Children {
    live: Arc<(Mutex<HashSet<Pid>>, Condvar)>,
    exits: Receiver<Pid>,
    /// Shared with the children: each watches it for the parent's shutdown.
    shutdown: Shutdown,
}

impl Children {
    /// Starts the reaper thread.
    pub fn new(shutdown: &Shutdown) -> std::io::Result<Self> {
        let live: Arc<(Mutex<HashSet<Pid>>, Condvar)> = Arc::default();
        // Bounded: a parent that never asks (fork) must not make it grow.
        let (tx, exits) = mpsc::sync_channel(1024);
        let reaper_live = live.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reap_forever(&reaper_live, &tx))?;
        Ok(Children {
            live,
            exits,
            shutdown: shutdown.clone(),
        })
    }

    /// Forks; the child runs `child` and exits with `_exit(0)`, never
    /// returning into the parent's code. Returns the child's pid.
    ///
    /// The parent is multi-threaded, so the child does only what `child`
    /// does and leaves through `_exit`: no destructors of the parent's state
    /// run twice, and no atexit handler flushes a copy of a parent's buffer.
    pub fn spawn(&self, child: impl FnOnce()) -> nix::Result<Pid> {
        // Hold the lock across fork so the reaper cannot see the child exit
        // before it is recorded as live.
        let (set, changed) = &*self.live;
        let mut live = set.lock().unwrap_or_else(|e| e.into_inner());
        let parent = getpid();
        // SAFETY: fork in a multi-threaded process is sound as long as the
        // child only uses what is fork-safe. Ours runs one connection loop:
        // glibc's malloc and stdio locks are reset across fork by its atfork
        // handlers, and the other threads' locks it could meet (the ones
        // guarding logs) are taken only for a single write each.
        let held = StopSignalsHeld::new();
        let forked = unsafe { fork() };
        match forked {
            Err(e) => {
                drop((held, child));
                Err(e)
            }
            Ok(ForkResult::Child) => {
                drop(live);
                as_a_child(parent);
                drop(held); // Pending ones now meet the child's dispositions.
                self.shutdown.in_a_forked_child();
                child();
                // SAFETY: `_exit` ends the process at once; nothing of ours
                // needs to run after the child's work.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { child: pid }) => {
                // What the closure owns (a connection) was for the child;
                // the parent's copy closes now.
                drop((held, child));
                live.insert(pid);
                shutdown::track_child(pid.as_raw());
                changed.notify_all();
                Ok(pid)
            }
        }
    }

    /// Blocks while `max` children are live (`--max-conns`); `false` if
    /// shutdown came first.
    pub fn wait_below(&self, max: usize, shutdown: &Shutdown) -> bool {
        let (set, changed) = &*self.live;
        let mut live = set.lock().unwrap_or_else(|e| e.into_inner());
        while live.len() >= max {
            if shutdown.is_triggered() {
                return false;
            }
            live = changed
                .wait_timeout(live, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// The next child to exit, if one does within `timeout`.
    pub fn next_exit(&self, timeout: Duration) -> Option<Pid> {
        self.exits.recv_timeout(timeout).ok()
    }

    /// Shutdown: the children already know (the shutdown eventfd is shared
    /// with them) and finish what they are doing; those still running after
    /// `grace` are killed. Returns when every child has been reaped.
    pub fn wind_down(&self, grace: Duration) {
        let (set, changed) = &*self.live;
        let deadline = Instant::now() + grace;
        let mut live = set.lock().unwrap_or_else(|e| e.into_inner());
        while !live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("grace period over: killing {} children", live.len());
                for pid in live.iter() {
                    let _ = signal::kill(*pid, Signal::SIGKILL);
                }
                // The reaper removes them as they die.
                drop(
                    changed
                        .wait_while(live, |l| !l.is_empty())
                        .unwrap_or_else(|e| e.into_inner()),
                );
                return;
            }
            live = changed
                .wait_timeout(live, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// SIGINT and SIGTERM blocked on this thread while it lives: held across
/// `fork` so that a new child meets them only once it has its own
/// dispositions (see [`as_a_child`]); until then the parent's handler,
/// inherited, would stop the whole server over one child's signal.
struct StopSignalsHeld {
    before: signal::SigSet,
}

impl StopSignalsHeld {
    fn new() -> Self {
        let mut stop = signal::SigSet::empty();
        stop.add(Signal::SIGINT);
        stop.add(Signal::SIGTERM);
        let mut before = signal::SigSet::empty();
        // Cannot fail with a valid `how`; if it did, nothing is held.
        let _ = signal::pthread_sigmask(signal::SigmaskHow::SIG_BLOCK, Some(&stop), Some(&mut before));
        StopSignalsHeld { before }
    }
}

impl Drop for StopSignalsHeld {
    fn drop(&mut self) {
        let _ = signal::pthread_sigmask(signal::SigmaskHow::SIG_SETMASK, Some(&self.before), None);
    }
}

/// In a new child: die with the parent, and leave signal handling to it.
///
/// `PR_SET_PDEATHSIG` makes the parent's death (its forking thread's, to be
/// exact) a SIGKILL for the child. A parent that died between `fork` and the
/// `prctl` would not send it, so the child then checks that its parent is
/// still the one that forked it (else it was reparented) and leaves.
///
/// SIGTERM ends the child at once if someone sends it one (the parent's
/// handler, inherited, would write the eventfd the two share and so stop the
/// whole server over one worker's signal); SIGINT, which a Ctrl-C sends to
/// the whole process group, is ignored so that the parent can wind the
/// children down gracefully. Both are blocked from before the fork until
/// this is done ([`StopSignalsHeld`]).
fn as_a_child(parent: Pid) {
    // SAFETY: prctl with an integer argument touches no memory of ours.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if set != 0 || getppid() != parent {
        // SAFETY: `_exit` ends the process at once; the child has done nothing yet.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: setting a signal's disposition to default or ignore installs
    // no handler code, so nothing can run in a signal context.
    unsafe {
        let _ = signal::signal(Signal::SIGTERM, SigHandler::SigDfl);
        let _ = signal::signal(Signal::SIGINT, SigHandler::SigIgn);
    }
}

fn reap_forever(live: &(Mutex<HashSet<Pid>>, Condvar), exits: &SyncSender<Pid>) {
    let (set, changed) = live;
    loop {
        {
            // Sleep while there is nobody to reap.
            let guard = set.lock().unwrap_or_else(|e| e.into_inner());
            drop(
                changed
                    .wait_while(guard, |l| l.is_empty())
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
        // Look without reaping first: the pid stays ours (no new process can
        // take it) until it is off the lists a second signal would kill from.
        let exited = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        let pid = match waitid(Id::All, exited) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => pid,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => {
                // Nobody left after all (an exit raced the bookkeeping).
                let mut l = set.lock().unwrap_or_else(|e| e.into_inner());
                for pid in l.drain() {
                    shutdown::untrack_child(pid.as_raw());
                }
                changed.notify_all();
                continue;
            }
            Err(e) => {
                tracing::error!("waitid: {e}");
                return;
            }
        };
        let mut l = set.lock().unwrap_or_else(|e| e.into_inner());
        l.remove(&pid);
        shutdown::untrack_child(pid.as_raw());
        // Now reap it.
        let _ = waitpid(pid, None);
        changed.notify_all();
        drop(l);
        let _ = exits.try_send(pid);
    }
}
