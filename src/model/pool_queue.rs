//! `pool-queue`: N worker threads made in advance; the main thread alone
//! accepts and puts each connection in a queue, from which the next free
//! worker takes it (UNP row 8, and the thread pool of most servers since).
//! Unlike `pool`, the workers never touch the listener: no herd to wake,
//! one accept loop, and the cost of a hand-over through a mutex and a
//! condition variable per connection.
//!
//! The queue is bounded (as many waiting as there are workers): when it is
//! full the main thread stops accepting, and further clients wait in the
//! kernel's backlog instead of in our memory. Five clients of a 1 s `hello`
//! with 3 workers: three wait 1 s, two wait 2 s, as with `pool`.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use super::blocking::{serve_connection, Acceptor, Slot, Slots};
use super::spread::AcceptSpread;
use super::ServerConfig;
use crate::net::{Listener, Stream};
use crate::service::Service;
use crate::shutdown::Shutdown;

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let workers = config.workers.max(1);
    let acceptor = Acceptor::new(listener, shutdown.clone(), Slots::new(config.max_conns))?;
    let queue = Handoff::new(workers);
    let spread = AcceptSpread::new(workers)?;
    std::thread::scope(|scope| {
        for i in 0..workers {
            let (queue, service, spread) = (&queue, &service, &spread);
            let worker = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn_scoped(scope, move || {
                    while let Some((stream, _slot)) = queue.take() {
                        spread.record(i);
                        serve_connection(stream, service, shutdown);
                    }
                });
            if let Err(e) = worker {
                tracing::warn!("cannot start worker {i}: {e}");
            }
        }
        // The slot travels with the connection: `--max-conns` counts the
        // queued ones as well as the ones being served.
        while let Some(accepted) = acceptor.accept() {
            if queue.put(accepted, shutdown).is_err() {
                break;
            }
        }
        let unserved = queue.close();
        if unserved > 0 {
            tracing::info!("closing {unserved} queued connections unserved");
        }
    });
    spread.log();
    Ok(())
}

type Accepted = (Stream, Slot);

/// A bounded queue of accepted connections between the main thread and the
/// workers: the book's `clifd` array with its mutex and condition variable.
struct Handoff {
    state: Mutex<Queue>,
    /// Signalled when a connection is queued, a place frees, or it closes.
    changed: Condvar,
    capacity: usize,
}

struct Queue {
    waiting: VecDeque<Accepted>,
    /// Set at shutdown: the workers leave once they see it.
    closed: bool,
}

impl Handoff {
    fn new(capacity: usize) -> Self {
        Handoff {
            state: Mutex::new(Queue {
                waiting: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a connection, waiting while the queue is full; gives it back
    /// if shutdown comes first.
    fn put(&self, accepted: Accepted, shutdown: &Shutdown) -> Result<(), Accepted> {
        let mut queue = self.lock();
        while queue.waiting.len() >= self.capacity {
            if shutdown.is_triggered() {
                return Err(accepted);
            }
            // Woken by a worker taking one; the timeout only re-checks shutdown.
            queue = self
                .changed
                .wait_timeout(queue, std::time::Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        queue.waiting.push_back(accepted);
        self.changed.notify_all();
        Ok(())
    }

    /// The next connection, waiting for one; `None` once closed.
    fn take(&self) -> Option<Accepted> {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return None;
            }
            if let Some(accepted) = queue.waiting.pop_front() {
                self.changed.notify_all();
                return Some(accepted);
            }
            queue = self.changed.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Closes the queue: the workers leave after what they serve, and the
    /// connections still waiting are closed. Returns how many there were.
    fn close(&self) -> usize {
        let mut queue = self.lock();
        queue.closed = true;
        let unserved: Vec<Accepted> = queue.waiting.drain(..).collect();
        self.changed.notify_all();
        drop(queue);
        unserved.len()
    }
}
