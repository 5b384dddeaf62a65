//! The io_uring plumbing that the `uring` model and bench's io_uring engine
//! share: queueing a submission, and waiting for completions or a deadline.

use std::io;
use std::time::Instant;

use io_uring::{squeue, types, IoUring};

/// Queues one submission, submitting what is queued first if the
/// submission queue is full.
///
/// # Safety
///
/// Whatever `entry` points to (buffers, addresses) must stay allocated and
/// untouched by the caller until the entry's completion has been seen.
pub unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    // SAFETY: the caller's promise, passed on.
    while unsafe { ring.submission().push(entry) }.is_err() {
        ring.submit()?;
    }
    Ok(())
}

/// Submits what is queued and waits for one completion, or until
/// `deadline` (`None`: no limit). A deadline that passes, or a signal, is
/// a normal return: the caller looks at its completions and its timers.
pub fn submit_and_wait_until(ring: &mut IoUring, deadline: Option<Instant>) -> io::Result<()> {
    submit_and_wait_batch(ring, 1, 0, deadline)
}

/// As [`submit_and_wait_until`], but waits for `want` completions: once
/// the first is in, at most `min_wait_usec` more for the rest
/// (`IORING_FEAT_MIN_TIMEOUT`; the caller checks the kernel has it when
/// `want > 1`).
pub fn submit_and_wait_batch(
    ring: &mut IoUring,
    want: usize,
    min_wait_usec: u32,
    deadline: Option<Instant>,
) -> io::Result<()> {
    let outcome = match (deadline, want) {
        (None, 1) => ring.submit_and_wait(1),
        (None, _) => {
            let args = types::SubmitArgs::new().min_wait_usec(min_wait_usec);
            ring.submitter().submit_with_args(want, &args)
        }
        (Some(at), _) => {
            let ts = types::Timespec::from(at.saturating_duration_since(Instant::now()));
            let args = types::SubmitArgs::new().timespec(&ts);
            let args = if want > 1 {
                args.min_wait_usec(min_wait_usec)
            } else {
                args
            };
            ring.submitter().submit_with_args(want, &args)
        }
    };
    match outcome {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Err(e),
        _ => Ok(()),
    }
}
