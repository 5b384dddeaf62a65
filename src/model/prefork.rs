//! `prefork`: the parent binds, then forks N workers (`--workers`, default
//! 3) that each block in accept on the shared listener and serve what they
//! get, as Apache's pre-fork MPM does (seed 002). The parent only keeps the
//! pool full: a worker that dies is replaced.
//!
//! UNP rows 2 to 4 are this one shape with a different lock around accept:
//! none (row 2, the kernel wakes the workers), a file lock
//! (`prefork_flock.rs`, row 3) or a mutex in shared memory
//! (`prefork_mutex.rs`, row 4). Each lock is an [`AcceptLock`]; the loop
//! below is the same for all three.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::blocking::{serve_connection, Acceptor, Slots};
use super::process::Children;
use super::spread::AcceptSpread;
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
    serve_with_lock(listener, service, config, shutdown, &NoLock)
}

/// What a worker holds while it waits in accept, so that only one worker at
/// a time waits there: the book's cure for the thundering herd of its day.
/// Made by the parent before the fork, so every worker shares the one lock.
pub trait AcceptLock: Sync {
    /// Blocks until this worker holds the lock.
    fn lock(&self) -> std::io::Result<()>;
    /// Lets the next worker in; called once after each `lock`.
    fn unlock(&self);
}

/// UNP row 2: no lock; every worker waits in accept and the kernel chooses.
struct NoLock;

impl AcceptLock for NoLock {
    fn lock(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn unlock(&self) {}
}

/// The lock while held: dropping it unlocks, panics and early returns included.
struct Held<'a>(&'a dyn AcceptLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// The prefork shape: N workers, each taking `lock` around its accept.
pub fn serve_with_lock(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
    lock: &dyn AcceptLock,
) -> anyhow::Result<()> {
    let children = Children::new(shutdown)?;
    let acceptor = Acceptor::new(listener, shutdown.clone(), Slots::new(config.max_conns))?;
    let spread = AcceptSpread::new(config.workers)?;
    let (acceptor, service, spread) = (&acceptor, &service, &spread);
    let worker = |i: usize| {
        move || loop {
            let next = match lock.lock() {
                Ok(()) => {
                    let _held = Held(lock);
                    acceptor.accept()
                }
                Err(e) => {
                    // The parent starts another worker in this one's place.
                    tracing::error!("worker {i} cannot take the accept lock: {e}");
                    return;
                }
            };
            let Some((stream, _slot)) = next else {
                return;
            };
            spread.record(i);
            serve_connection(stream, service, shutdown);
        }
    };
    // Which worker each child is, so a replacement counts where it left off.
    let mut workers = HashMap::new();
    for i in 0..config.workers.max(1) {
        workers.insert(children.spawn(worker(i))?, i);
    }
    while !shutdown.is_triggered() {
        // Woken by a worker's exit; the timeout only re-checks shutdown.
        let Some(pid) = children.next_exit(Duration::from_millis(100)) else {
            continue;
        };
        if shutdown.is_triggered() {
            break;
        }
        tracing::warn!(%pid, "a worker died; starting another");
        let i = workers.remove(&pid).unwrap_or_default();
        match children.spawn(worker(i)) {
            Ok(pid) => {
                workers.insert(pid, i);
            }
            Err(e) => tracing::error!("cannot replace the worker: {e}"),
        }
    }
    children.wind_down(config.grace);
    spread.log();
    Ok(())
}
