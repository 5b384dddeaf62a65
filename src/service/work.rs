//! `--work DUR`: CPU spent on every request, so that a server has something
//! to compute, as real ones do (parsing, a database lookup, a template).
//!
//! It is a busy computation, not a sleep: a sleeping thread frees its core,
//! and the designs that spread work over threads (half-async, leader,
//! reactors) exist for the case where the core is what is short. This is
//! the one place in the services that reads a clock: the cost is measured
//! in time so that `--work 200us` means the same on every machine.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Spends `work` of CPU time on this thread (nothing when it is zero), and
/// returns a value derived from the computation so that it cannot be
/// optimised away.
pub fn spend(work: Duration) -> u64 {
    if work.is_zero() {
        return 0;
    }
    let start = Instant::now();
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
        if start.elapsed() >= work {
            return std::hint::black_box(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_at_least_the_time_asked() {
        let start = Instant::now();
        spend(Duration::from_millis(2));
        assert!(start.elapsed() >= Duration::from_millis(2));
        assert_eq!(spend(Duration::ZERO), 0);
    }
}
