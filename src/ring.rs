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
    let outcome = match deadline {
        None => ring.submit_and_wait(1),
        Some(at) => {
            let ts = types::Timespec::from(at.saturating_duration_since(Instant::now()));
            let args = types::SubmitArgs::new().timespec(&ts);
            ring.submitter().submit_with_args(1, &args)
        }
    };
    match outcome {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Err(e),
        _ => Ok(()),
    }
}
