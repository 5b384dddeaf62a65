//! `--work DUR`: CPU spent on every request, so that a server has something
//! to compute, as real ones do (parsing, a database lookup, a template).
//!
//! It is a busy computation, not a sleep: a sleeping thread frees its core,
//! and the designs that spread work over threads (half-async, leader,
//! reactors) exist for the case where the core is what is short. This is
//! the one place in the services that reads a clock, and it is the
//! thread's CPU clock, not the wall clock: `--work 200us` is 200 µs of
//! computing however often the thread is preempted on a busy machine.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// CPU time this thread has used so far (`None` if the kernel cannot say).
fn thread_cpu_time() -> Option<Duration> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::from(ts))
}

/// Spends `work` of CPU time on this thread (nothing when it is zero), and
/// returns a value derived from the computation so that it cannot be
/// optimised away.
#[inline]
pub fn spend(work: Duration) -> u64 {
    if work.is_zero() {
        return 0; // The usual case, checked where it is called.
    }
    spend_some(work)
}

#[cold]
#[inline(never)]
fn spend_some(work: Duration) -> u64 {
    // Without a CPU clock, wall time: never a loop that cannot end.
    let wall = Instant::now();
    let cpu = thread_cpu_time();
    let spent = || match (cpu, thread_cpu_time()) {
        (Some(start), Some(now)) => now.saturating_sub(start),
        _ => wall.elapsed(),
    };
    let state = std::collections::hash_map::RandomState::new();
    let mut value = 0u64;
    loop {
        // A batch of hashing between clock reads, so that the clock is not
        // the work.
        for _ in 0..64 {
            let mut hasher = state.build_hasher();
            hasher.write_u64(value);
            value = hasher.finish();
        }
        if spent() >= work {
            return std::hint::black_box(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_at_least_the_cpu_time_asked() {
        let start = thread_cpu_time().expect("a thread CPU clock");
        spend(Duration::from_millis(2));
        let now = thread_cpu_time().expect("a thread CPU clock");
        assert!(now - start >= Duration::from_millis(2));
        assert_eq!(spend(Duration::ZERO), 0);
    }
}
