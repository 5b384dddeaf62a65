//! `prefork-flock`: prefork where a worker takes an `fcntl` record lock
//! before accept and lets it go after (UNP row 3, `my_lock_wait` with
//! `F_SETLKW`). Only the holder waits in accept; the others sleep in
//! `fcntl`, so a connection wakes one process, as kernels of the book's day
//! did not do for accept itself.
//!
//! The lock is on a temporary file the parent makes and unlinks at once
//! (`mkstemp`, then `unlink`), whose descriptor every worker inherits.
//! `fcntl` record locks belong to a process, not to a descriptor, so the
//! inherited descriptor gives each worker a lock of its own; and a worker
//! that dies holding it, `kill -9` included, has it released by the kernel.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use super::prefork::{serve_with_lock, AcceptLock};
use super::ServerConfig;
use crate::net::Listener;
use crate::service::Service;
use crate::shutdown::Shutdown;

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let lock = FileLock::new()?;
    serve_with_lock(listener, service, config, shutdown, &lock)
}

/// A write lock on the whole of an unlinked temporary file.
struct FileLock {
    file: OwnedFd,
}

impl FileLock {
    fn new() -> std::io::Result<Self> {
        let template = std::env::temp_dir().join("socklab-accept-lock.XXXXXX");
        let (fd, path) = nix::unistd::mkstemp(&template)?;
        // SAFETY: mkstemp returned a fresh descriptor that nothing else owns.
        let file = unsafe { OwnedFd::from_raw_fd(fd) };
        // The name was only needed to open it; nothing is left behind.
        nix::unistd::unlink(&path)?;
        Ok(FileLock { file })
    }

    fn set(&self, kind: libc::c_short) -> nix::Result<()> {
        // SAFETY: a plain C struct of integers, all-zero is a valid value.
        let mut range: libc::flock = unsafe { std::mem::zeroed() };
        range.l_type = kind;
        range.l_whence = libc::SEEK_SET as libc::c_short;
        // l_start 0, l_len 0: from the start to the end of the file, however long.
        loop {
            match fcntl(self.file.as_raw_fd(), FcntlArg::F_SETLKW(&range)) {
                Err(Errno::EINTR) => continue,
                other => return other.map(drop),
            }
        }
    }
}

impl AcceptLock for FileLock {
    fn lock(&self) -> std::io::Result<()> {
        Ok(self.set(libc::F_WRLCK as libc::c_short)?)
    }

    fn unlock(&self) {
        if let Err(e) = self.set(libc::F_UNLCK as libc::c_short) {
            tracing::error!("cannot release the accept lock: {e}");
        }
    }
}
