//! The concurrency models: one file each, one signature each.
//!
//! Every model is `fn serve(listener, service, config, shutdown) -> Result<()>`:
//! the caller binds (so tests can use port 0), the model accepts and serves
//! until `shutdown` is triggered, lets in-flight requests finish, and
//! returns. What differs is only who calls accept and where a connection is
//! served; see the table in DESIGN section 4, or `socklab models`.

pub mod blocking;
pub mod datagram;
pub mod event_loop;

mod async_tokio;
mod busy;
mod epoll;
mod fork;
mod half_async;
mod iterative;
mod leader;
mod poll;
mod pool;
mod pool_queue;
mod prefork;
mod prefork_flock;
mod prefork_mutex;
mod prefork_pass;
mod process;
mod reactors;
mod select;
mod shared_memory;
pub mod spread;
mod thread;
mod uring;
pub mod uring_features;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::net::Listener;
use crate::service::Service;
use crate::shutdown::Shutdown;

/// The models of DESIGN section 4 that exist so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "lower")]
pub enum ModelKind {
    Iterative,
    Thread,
    Pool,
    Fork,
    Prefork,
    Busy,
    Select,
    Poll,
    Epoll,
    Async,
    Uring,
    #[value(name = "prefork-flock")]
    PreforkFlock,
    #[value(name = "prefork-mutex")]
    PreforkMutex,
    #[value(name = "prefork-pass")]
    PreforkPass,
    #[value(name = "pool-queue")]
    PoolQueue,
    Reactors,
    #[value(name = "half-async")]
    HalfAsync,
    Leader,
}

impl ModelKind {
    /// Every model, in the order of DESIGN section 4.
    pub fn all() -> &'static [ModelKind] {
        <ModelKind as clap::ValueEnum>::value_variants()
    }

    /// The models that `can` something, for an error that says which to
    /// use instead: `epoll, async`.
    pub fn names_where(can: impl Fn(ModelKind) -> bool) -> String {
        let names: Vec<&str> = Self::all()
            .iter()
            .filter(|m| can(**m))
            .map(|m| m.name())
            .collect();
        names.join(", ")
    }

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Iterative => "iterative",
            ModelKind::Thread => "thread",
            ModelKind::Pool => "pool",
            ModelKind::Fork => "fork",
            ModelKind::Prefork => "prefork",
            ModelKind::PreforkFlock => "prefork-flock",
            ModelKind::PreforkMutex => "prefork-mutex",
            ModelKind::PreforkPass => "prefork-pass",
            ModelKind::PoolQueue => "pool-queue",
            ModelKind::Busy => "busy",
            ModelKind::Select => "select",
            ModelKind::Poll => "poll",
            ModelKind::Epoll => "epoll",
            ModelKind::Async => "async",
            ModelKind::Uring => "uring",
            ModelKind::Reactors => "reactors",
            ModelKind::HalfAsync => "half-async",
            ModelKind::Leader => "leader",
        }
    }

    /// One line for `socklab models`: who accepts, where a connection is served.
    pub fn summary(self) -> &'static str {
        match self {
            ModelKind::Iterative => "the main thread accepts and serves one connection at a time",
            ModelKind::Thread => "the main thread accepts; a new thread serves each connection",
            ModelKind::Pool => "N worker threads (--workers, default 3) each accept and serve",
            ModelKind::Fork => "the parent accepts; a new child process serves each connection",
            ModelKind::Prefork => "N worker processes (--workers, default 3) each accept and serve",
            ModelKind::PreforkFlock => {
                "N worker processes (--workers, default 3) accept under an fcntl file lock (UNP row 3)"
            }
            ModelKind::PreforkMutex => {
                "N worker processes (--workers, default 3) accept under a robust shared mutex (UNP row 4)"
            }
            ModelKind::PreforkPass => {
                "the parent accepts and passes each connection to an idle one of N worker processes (UNP row 5)"
            }
            ModelKind::PoolQueue => {
                "the main thread accepts and queues each connection to N worker threads (UNP row 8)"
            }
            ModelKind::Busy => "one thread tries every non-blocking socket in an endless loop",
            ModelKind::Select => "one thread waits for readiness with select(2)",
            ModelKind::Poll => "one thread waits for readiness with poll(2)",
            ModelKind::Epoll => "N loops (--workers, default 1) wait with epoll(7), SO_REUSEPORT",
            ModelKind::Async => {
                "a tokio runtime (--workers threads, default: the cores), a task per connection"
            }
            ModelKind::Uring => "N io_uring rings (--workers, default 1): accept, recv, send as completions",
            ModelKind::Reactors => {
                "one thread accepts, deals connections round robin to N epoll loops (--workers)"
            }
            ModelKind::HalfAsync => {
                "one epoll loop does all I/O; N worker threads (--workers) run the requests"
            }
            ModelKind::Leader => {
                "leader/followers: N threads (--workers) take turns waiting on one epoll, then serve"
            }
        }
    }

    /// The model's lesson in one line: what it is good and bad at, for the
    /// lab report's paragraph on it.
    pub fn takeaway(self) -> &'static str {
        match self {
            ModelKind::Iterative => "the simplest server: correct, and one client at a time",
            ModelKind::Thread => "a client per thread: simple code, a stack and a context switch per client",
            ModelKind::Pool => "threads made in advance: no creation cost, but only N clients at once",
            ModelKind::Fork => "a process per client: isolated, and the dearest to create",
            ModelKind::Prefork => {
                "processes made in advance: isolation without the fork per client, N at once"
            }
            ModelKind::PreforkFlock => {
                "prefork with a file lock around accept: a cost today's kernel does not need"
            }
            ModelKind::PreforkMutex => {
                "prefork with a shared mutex around accept: a cost today's kernel does not need"
            }
            ModelKind::PreforkPass => {
                "the parent hands each connection to a child: a descriptor passed per client"
            }
            ModelKind::PoolQueue => "one acceptor feeding a queue of threads: a hand-off per connection",
            ModelKind::Busy => "never sleeps: answers fast and burns its core when idle",
            ModelKind::Select => "one thread for every client, until FD_SETSIZE; every wait scans them all",
            ModelKind::Poll => "select without the descriptor limit; every wait still scans them all",
            ModelKind::Epoll => "readiness without the scan: the kernel says which sockets are ready",
            ModelKind::Async => "tasks on epoll: the event loop's cost with sequential code",
            ModelKind::Uring => "completions instead of readiness: fewer system calls per request",
            ModelKind::Reactors => "one acceptor and N loops: an event loop per core",
            ModelKind::HalfAsync => "one loop for I/O, a pool for the work: for requests that cost CPU",
            ModelKind::Leader => "threads take turns at one epoll: no hand-off between waiting and serving",
        }
    }

    /// Where the model's idea lives, for `socklab models` and the lab report.
    pub fn source_file(self) -> String {
        let stem = match self {
            ModelKind::Async => "async_tokio".to_string(),
            other => other.name().replace('-', "_"),
        };
        format!("src/model/{stem}.rs")
    }

    /// The model's row in UNP (Stevens, Unix Network Programming vol. 1, 3rd
    /// ed.) figure 30.1, the table of TCP server designs the `unp` lab
    /// scenario re-runs; `None` for designs the book does not measure.
    pub fn unp_row(self) -> Option<u8> {
        match self {
            ModelKind::Iterative => Some(0),
            ModelKind::Fork => Some(1),
            ModelKind::Prefork => Some(2),
            ModelKind::PreforkFlock => Some(3),
            ModelKind::PreforkMutex => Some(4),
            ModelKind::PreforkPass => Some(5),
            ModelKind::Thread => Some(6),
            ModelKind::Pool => Some(7),
            ModelKind::PoolQueue => Some(8),
            _ => None,
        }
    }

    /// Whether connections are served in separate processes, which share no
    /// memory (fork and the preforks): a service with shared state cannot
    /// run there.
    pub fn runs_in_processes(self) -> bool {
        matches!(
            self,
            ModelKind::Fork
                | ModelKind::Prefork
                | ModelKind::PreforkFlock
                | ModelKind::PreforkMutex
                | ModelKind::PreforkPass
        )
    }

    /// Whether the model can wake a connection's driver when another
    /// connection gives it work (a chat line), and serves connections at once
    /// in one process, so that a room means something.
    pub fn wakes_sessions(self) -> bool {
        !(self == ModelKind::Iterative || self.runs_in_processes())
    }

    /// Whether the model can serve a UDP socket (DESIGN: where it means
    /// something; see `datagram.rs`).
    pub fn serves_datagrams(self) -> bool {
        matches!(
            self,
            ModelKind::Iterative | ModelKind::Pool | ModelKind::Epoll | ModelKind::Async
        )
    }

    /// Whether the model runs several accept loops that each want their own
    /// listening socket on the same port (`SO_REUSEPORT`, so the kernel
    /// spreads connections across them); `serve` then binds the first
    /// listener with `SO_REUSEPORT` and the model makes the others with
    /// [`Listener::reuse_port_sibling`](crate::net::Listener::reuse_port_sibling).
    pub fn uses_reuse_port(self, workers: usize) -> bool {
        matches!(self, ModelKind::Epoll | ModelKind::Uring) && workers > 1
    }

    /// How many connections the model serves at the same time, when that
    /// is bounded: one for iterative, the workers for the pools and preforks.
    pub fn serves_at_once(self, workers: usize) -> Option<usize> {
        match self {
            ModelKind::Iterative => Some(1),
            ModelKind::Pool
            | ModelKind::PoolQueue
            | ModelKind::Prefork
            | ModelKind::PreforkFlock
            | ModelKind::PreforkMutex
            | ModelKind::PreforkPass => Some(workers.max(1)),
            _ => None,
        }
    }

    /// The seeds' experiment in theory: `clients` at once, each reply held
    /// `delay`; the time until the last reply is one delay per round of
    /// connections the model can serve at once.
    pub fn theory_makespan(self, clients: usize, delay: Duration, workers: usize) -> Duration {
        let rounds = match self.serves_at_once(workers) {
            Some(at_once) => clients.div_ceil(at_once),
            None => 1,
        };
        delay * rounds as u32
    }

    /// Whether `--workers` means anything to the model: threads, processes
    /// or loops it runs N of. The others run one (iterative, busy, select,
    /// poll) or one per connection (thread, fork).
    pub fn takes_workers(self) -> bool {
        !matches!(
            self,
            ModelKind::Iterative
                | ModelKind::Thread
                | ModelKind::Fork
                | ModelKind::Busy
                | ModelKind::Select
                | ModelKind::Poll
        )
    }

    /// Whether `--workers` means anything to the model serving UDP
    /// (datagram.rs): pool's threads and async's runtime; epoll's loop and
    /// iterative are one.
    pub fn takes_workers_over_udp(self) -> bool {
        matches!(self, ModelKind::Pool | ModelKind::Async)
    }

    /// `--workers` when the user gives none.
    pub fn default_workers(self) -> usize {
        match self {
            ModelKind::Pool
            | ModelKind::PoolQueue
            | ModelKind::Prefork
            | ModelKind::PreforkFlock
            | ModelKind::PreforkMutex
            | ModelKind::PreforkPass => 3,
            ModelKind::Async | ModelKind::Reactors | ModelKind::HalfAsync | ModelKind::Leader => {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            }
            _ => 1,
        }
    }

    /// Checks what the model needs from the kernel, before anything is bound
    /// or announced, so that a model that cannot run says so at once.
    pub fn check_available(self, config: &ServerConfig) -> anyhow::Result<()> {
        match self {
            ModelKind::Uring => uring::check_available(config.uring),
            _ => Ok(()),
        }
    }

    /// Runs this model until shutdown.
    pub fn serve(
        self,
        listener: Listener,
        service: Arc<Service>,
        config: &ServerConfig,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        match self {
            ModelKind::Iterative => iterative::serve(listener, service, config, shutdown),
            ModelKind::Thread => thread::serve(listener, service, config, shutdown),
            ModelKind::Pool => pool::serve(listener, service, config, shutdown),
            ModelKind::Fork => fork::serve(listener, service, config, shutdown),
            ModelKind::Prefork => prefork::serve(listener, service, config, shutdown),
            ModelKind::PreforkFlock => prefork_flock::serve(listener, service, config, shutdown),
            ModelKind::PreforkMutex => prefork_mutex::serve(listener, service, config, shutdown),
            ModelKind::PreforkPass => prefork_pass::serve(listener, service, config, shutdown),
            ModelKind::PoolQueue => pool_queue::serve(listener, service, config, shutdown),
            ModelKind::Busy => busy::serve(listener, service, config, shutdown),
            ModelKind::Select => select::serve(listener, service, config, shutdown),
            ModelKind::Poll => poll::serve(listener, service, config, shutdown),
            ModelKind::Epoll => epoll::serve(listener, service, config, shutdown),
            ModelKind::Async => async_tokio::serve(listener, service, config, shutdown),
            ModelKind::Uring => uring::serve(listener, service, config, shutdown),
            ModelKind::Reactors => reactors::serve(listener, service, config, shutdown),
            ModelKind::HalfAsync => half_async::serve(listener, service, config, shutdown),
            ModelKind::Leader => leader::serve(listener, service, config, shutdown),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs `run_loop` on `workers` threads, each with its own listener on the
/// same address (`SO_REUSEPORT` siblings of `listener`): the shape of the
/// epoll and uring models' `--workers`. If one loop fails, the others are
/// told to stop; the first error is returned.
pub fn on_sibling_listeners(
    listener: Listener,
    workers: usize,
    name: &str,
    shutdown: &Shutdown,
    run_loop: impl Fn(usize, Listener) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let mut listeners = vec![listener];
    for _ in 1..workers.max(1) {
        let sibling = listeners[0]
            .reuse_port_sibling()
            .map_err(|e| e.context(format!("cannot open another listener for a {name} loop")))?;
        listeners.push(sibling);
    }
    shutdown.run_together(
        listeners,
        &format!("a {name} loop"),
        |i| format!("{name}-{i}"),
        run_loop,
    )
}

/// Whether a loop winding down after shutdown may stop: every connection
/// has closed, or the grace period is over (which the log says).
pub fn wound_down(grace_deadline: std::time::Instant, open: usize) -> bool {
    if open == 0 {
        return true;
    }
    if std::time::Instant::now() < grace_deadline {
        return false;
    }
    tracing::warn!("grace period over with {open} connections still open");
    true
}

/// What every model is told besides the listener and the service.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `--workers`: threads or processes for pool and prefork, loops for
    /// epoll, uring and reactors, runtime threads for async, worker threads
    /// for half-async, threads taking turns for leader.
    pub workers: usize,
    /// `--max-conns`: at the limit, stop accepting until a slot frees.
    pub max_conns: Option<usize>,
    /// How long in-flight connections may take to finish after shutdown.
    pub grace: Duration,
    /// `--reply-cache`: most bytes of UDP replies remembered for retries.
    pub reply_cache: usize,
    /// `--uring`: the io_uring techniques the uring model uses.
    pub uring: uring_features::UringFeatures,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 1,
            max_conns: None,
            grace: Duration::from_secs(5),
            reply_cache: datagram::DEFAULT_REPLY_CACHE,
            uring: uring_features::UringFeatures::DEFAULT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_theory() {
        let second = Duration::from_secs(1);
        let theory = |m: ModelKind| m.theory_makespan(5, second, m.default_workers()).as_secs();
        assert_eq!(theory(ModelKind::Iterative), 5);
        assert_eq!(theory(ModelKind::Pool), 2);
        assert_eq!(theory(ModelKind::Prefork), 2);
        for m in [
            ModelKind::PreforkFlock,
            ModelKind::PreforkMutex,
            ModelKind::PreforkPass,
            ModelKind::PoolQueue,
        ] {
            assert_eq!(theory(m), 2, "{m}");
        }
        for m in [
            ModelKind::Thread,
            ModelKind::Fork,
            ModelKind::Epoll,
            ModelKind::Async,
            ModelKind::Busy,
        ] {
            assert_eq!(theory(m), 1, "{m}");
        }
    }
}
