//! How connections are spread across a model's workers: one counter per
//! worker, in memory that forked children share with their parent, so the
//! same counters serve threads (pool), processes (prefork) and loops (epoll
//! and uring with `SO_REUSEPORT`).
//!
//! The lesson behind it is UNP chapter 30's: when N workers block in accept
//! on one socket, who gets the next connection? The kernel's answer has
//! changed since the book (wake-one accept queues, `SO_REUSEPORT` hashing),
//! and the counts show today's. At shutdown the model logs them as one line,
//! `accepts per worker: 412 398 390`, which the lab reads from the server's
//! standard error ([`parse_line`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::shared_memory::SharedMapping;

/// The log line's words before the counts.
pub const LOG_PREFIX: &str = "accepts per worker:";

/// One accept counter per worker, in a `MAP_SHARED` anonymous mapping:
/// a child forked after [`AcceptSpread::new`] counts into the parent's page.
pub struct AcceptSpread {
    counts: SharedMapping,
    workers: usize,
}

// SAFETY: the mapping holds only atomics, and lives until drop.
unsafe impl Send for AcceptSpread {}
// SAFETY: as above; every access is an atomic operation.
unsafe impl Sync for AcceptSpread {}

impl AcceptSpread {
    pub fn new(workers: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        Ok(AcceptSpread {
            counts: SharedMapping::new(workers * std::mem::size_of::<AtomicU64>())?,
            workers,
        })
    }

    fn counter(&self, worker: usize) -> &AtomicU64 {
        // SAFETY: the index is reduced into the mapping's `workers` slots,
        // which start zeroed (a valid AtomicU64) and live as long as `self`.
        unsafe { &*self.counts.as_ptr::<AtomicU64>().add(worker % self.workers) }
    }

    /// Worker `worker` (0-based) accepted a connection.
    pub fn record(&self, worker: usize) {
        self.counter(worker).fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, worker by worker.
    pub fn counts(&self) -> Vec<u64> {
        (0..self.workers)
            .map(|w| self.counter(w).load(Ordering::Relaxed))
            .collect()
    }

    /// Logs the counts (at shutdown), in the form [`parse_line`] reads.
    pub fn log(&self) {
        tracing::info!("{}", format_line(&self.counts()));
    }
}

pub fn format_line(counts: &[u64]) -> String {
    let counts: Vec<String> = counts.iter().map(u64::to_string).collect();
    format!("{LOG_PREFIX} {}", counts.join(" "))
}

/// The counts in a log line that holds [`LOG_PREFIX`], whatever the log
/// put before it (time, level).
pub fn parse_line(line: &str) -> Option<Vec<u64>> {
    let (_, counts) = line.split_once(LOG_PREFIX)?;
    counts.split_whitespace().map(|c| c.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_fork() {
        let spread = AcceptSpread::new(3).expect("mmap");
        spread.record(0);
        // SAFETY: the child only touches the shared counter and _exits.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                spread.record(2);
                spread.record(2);
                // SAFETY: leaving the child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).expect("waitpid");
            }
        }
        assert_eq!(spread.counts(), vec![1, 0, 2]);
        let line = format!("2026-11-23T10:00:00Z INFO {}", format_line(&spread.counts()));
        assert_eq!(parse_line(&line), Some(vec![1, 0, 2]));
        assert_eq!(parse_line("accepts per worker: 1 x"), None);
    }
}
