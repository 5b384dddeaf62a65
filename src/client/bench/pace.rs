//! The open loop's clock (`--rate`): when each request is due, a timer
//! that wakes its sender on time, and how late the send still left.
//!
//! wrk2's promise is the model: requests leave on a schedule fixed before
//! the run, and each latency counts from the request's intended start, so
//! a server that stalls shows as latency, not as requests never sent (no
//! coordinated omission). That only measures the server if the sender is on
//! time itself: whatever it oversleeps is counted as the server's latency.
//! tokio's timer wheel ticks in milliseconds (and its `epoll_wait` timeout
//! is rounded up to one), so a sender sleeping with `tokio::time::sleep`
//! left up to a millisecond late (issue 25: p50 748 µs at 1000/s against
//! a server that answers in 62 µs).
//!
//! A timerfd is a kernel hrtimer behind a descriptor: armed at the intended
//! instant (absolute, on CLOCK_MONOTONIC, the clock `Instant` reads) and
//! registered in the thread's epoll set, it wakes the thread when it
//! expires, with no millisecond rounding and no timer slack (that applies
//! to sleeps and poll timeouts, not to timerfds). The io_uring engine needs
//! none: its wait for completions (`io_uring_enter`) takes a timeout that
//! is an hrtimer too (a timer slack of 1 ns on its thread changed nothing
//! measurable).
//!
//! No spinning: the thread sleeps until the deadline and the kernel wakes
//! it. What is left is the machine's own wake-up time, which bench then
//! reports as its lag rather than hides. On the 2-vCPU VM this was built
//! on, a C loop sleeping on a timerfd to 1 ms deadlines woke 20-50 µs late
//! at p50, and bench's lag was the same; spinning the last 50 µs (only
//! while no request was out) took the lag p50 to 0-8 µs, but the latency
//! p50 moved less than the runs' noise, for up to 50 µs of CPU per
//! request. Not worth a core's time on a machine the server shares.
//!
//! Send lag is measured, not assumed: for each request, how long after it
//! could have left it did. "Could have" is the later of its intended start
//! and the moment its connection was free: a client carries one request at
//! a time, so a request due while the previous one is still out waits for
//! it. That wait is the server's doing (the request's latency includes it,
//! from the intended start, as it must); it is counted apart
//! (`sends_queued`),
//! and left out of the lag, which is then the load generator's own.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::engine::Plan;
use super::Load;

/// When request `k` (from 0) of client `id` is due, or `None` when the
/// schedule has no such request: past the end of a `--duration` run, or
/// later than an `Instant` can hold.
///
/// The rate is spread evenly over the clients, one slot every 1/R s, client
/// `id` taking slots `id`, `id + clients`, ...: with `--driver K/N`, `rate`
/// is this driver's share and `phase` puts its slots between the others'.
pub fn intended(plan: &Plan, rate: f64, id: usize, k: u64) -> Option<Instant> {
    let slot = k as f64 * plan.clients as f64 + id as f64;
    let at = Duration::try_from_secs_f64(slot / rate)
        .ok()
        .and_then(|offset| plan.start.checked_add(plan.phase + offset))?;
    match plan.load {
        Load::Duration(d) if at >= plan.start + d => None,
        _ => Some(at),
    }
}

/// One send's lag, in microseconds: how long after it could have left it
/// did (see the module's note), and whether it waited for its connection.
pub fn send_lag(intended: Instant, free: Instant, sent: Instant) -> (u64, bool) {
    let ready = intended.max(free);
    let lag = sent.saturating_duration_since(ready).as_micros() as u64;
    (lag, free > intended)
}

/// A one-shot timer on CLOCK_MONOTONIC with microsecond wake-ups, for a
/// tokio task: a timerfd in the runtime's epoll set.
pub struct HiResTimer {
    fd: AsyncFd<Descriptor>,
    /// One instant as both an `Instant` and CLOCK_MONOTONIC's value, read
    /// once: `Instant` reads that clock but does not say its value, and
    /// with this pair every deadline converts without another clock read.
    origin: (Instant, TimeSpec),
}

/// nix's `TimerFd` is `AsFd`; tokio's `AsyncFd` wants `AsRawFd`.
struct Descriptor(TimerFd);

impl AsRawFd for Descriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl HiResTimer {
    /// A timer registered with the current tokio runtime.
    pub fn new() -> io::Result<HiResTimer> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the timerfd moves into the AsyncFd, its only owner from
        // here on, so its descriptor stays open and the same until dropped.
        let fd = unsafe { AsyncFd::register_with_interest(Descriptor(timer), Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        let origin = (
            Instant::now(),
            nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?,
        );
        Ok(HiResTimer { fd, origin })
    }

    /// Sleeps until `at` (at once if it has passed).
    pub async fn sleep_until(&mut self, at: Instant) -> io::Result<()> {
        if at <= Instant::now() {
            return Ok(());
        }
        // Armed absolutely, so the syscall's own time does not push the
        // deadline back. (`at` is after the origin: timers are made before
        // the schedule starts.)
        let (origin, monotonic) = self.origin;
        let deadline = monotonic + TimeSpec::from_duration(at.saturating_duration_since(origin));
        self.fd.get_ref().0.set(
            Expiration::OneShot(deadline),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?;
        loop {
            let mut guard = self.fd.readable().await?;
            // Reading the expiry count disarms readiness; WouldBlock means
            // the readiness was stale (an earlier expiry already read).
            let mut count = [0u8; 8];
            match guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), &mut count).map_err(io::Error::from)) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_when_the_send_could_leave() {
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        // On time: due at 100, free since 0, left at 103.
        assert_eq!(send_lag(us(100), us(0), us(103)), (3, false));
        // Queued: due at 100, its connection free only at 250, left at 251.
        assert_eq!(send_lag(us(100), us(250), us(251)), (1, true));
        // A clock read before the deadline (never negative).
        assert_eq!(send_lag(us(100), us(0), us(99)), (0, false));
    }
}
