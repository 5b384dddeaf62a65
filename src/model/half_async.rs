//! `half-async`: half-sync/half-async, a reactor with a worker pool (Redis 6's
//! I/O thread with its command threads turned around, most RPC servers).
//! One event loop does all the socket I/O; when a read brings a connection
//! input, its session goes with that input through a queue to one of N
//! worker threads (`--workers`), which runs the service over it (framing
//! and the service's handler, `--work` included); the session comes back
//! through a second queue, an eventfd wakes the loop, and the loop writes
//! the replies.
//!
//! Lending the whole session, not just the request, keeps everything a
//! session guards (per-connection reply order, the memory budget, delays and
//! timeouts) with one owner at a time and no lock: a connection has at most
//! one job out, and its socket is not read until the job is back. What the
//! pool buys: the loop's thread only moves bytes, so when requests cost CPU
//! the workers spend it on every core at once. A worker that panics on a
//! request costs only that connection (see [`Job::run`]).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use super::epoll::Epoll;
use super::event_loop::{self, Finished, Hooks, Job, Lend, Mailbox, Offload, Source};
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
    let pool = Pool::new()?;
    let epoll = Epoll::edge_triggered()?;
    std::thread::scope(|scope| {
        for i in 0..config.workers.max(1) {
            let pool = &pool;
            let worker = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn_scoped(scope, move || {
                    while let Some(job) = pool.next_job() {
                        pool.finished.push(job.run());
                    }
                });
            if let Err(e) = worker {
                pool.close(); // Let the workers already started leave.
                return Err(anyhow::Error::new(e).context("cannot start a worker thread"));
            }
        }
        let hooks = Hooks {
            lend: Lend::To(&pool),
            ..Hooks::default()
        };
        let source = Source::Listener(listener);
        let result = event_loop::run_with(epoll, source, &service, config, shutdown, hooks);
        pool.close();
        result
    })
}

/// The two queues between the loop and the workers.
struct Pool {
    /// Jobs waiting for a worker; at most one per connection, so bounded by
    /// the connections the loop holds.
    jobs: Mutex<Jobs>,
    more: Condvar,
    /// Jobs done, waiting for the loop.
    finished: Mailbox<Finished>,
}

struct Jobs {
    queue: VecDeque<Job>,
    /// The loop has ended: workers leave once the queue is empty.
    closed: bool,
}

impl Pool {
    fn new() -> std::io::Result<Self> {
        Ok(Pool {
            jobs: Mutex::new(Jobs {
                queue: VecDeque::new(),
                closed: false,
            }),
            more: Condvar::new(),
            finished: Mailbox::new()?,
        })
    }

    /// A worker's next job, or `None` once the pool is closed.
    fn next_job(&self) -> Option<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = jobs.queue.pop_front() {
                return Some(job);
            }
            if jobs.closed {
                return None;
            }
            jobs = self.more.wait(jobs).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.more.notify_all();
    }
}

impl Offload for Pool {
    fn submit(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue
            .push_back(job);
        self.more.notify_one();
    }

    fn finished(&self) -> &Mailbox<Finished> {
        &self.finished
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use super::*;
    use crate::addr::Addr;
    use crate::model::event_loop::PANIC_REQUEST;
    use crate::net::{BindOptions, Bound};
    use crate::service::{ServiceConfig, ServiceKind};

    /// Stops the server however the test ends, so its thread can be joined.
    struct StopOnDrop(Shutdown);

    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.trigger();
        }
    }

    fn echo(conn: &mut TcpStream, text: &[u8]) -> Vec<u8> {
        conn.write_all(text).expect("write");
        let mut back = vec![0; text.len()];
        conn.read_exact(&mut back).expect("read");
        back
    }

    #[test]
    fn a_request_that_panics_drops_its_connection_and_the_pool_goes_on() {
        let addr: Addr = "tcp:127.0.0.1:0".parse().expect("address");
        let Ok(Bound::Stream(listener)) = crate::net::bind(&addr, BindOptions::default()) else {
            panic!("cannot bind");
        };
        let Ok(Addr::Tcp(hp)) = listener.local_addr() else {
            panic!("not a TCP listener");
        };
        let target = format!("{}:{}", hp.host, hp.port);
        let service = Arc::new(Service::new(ServiceConfig::new(ServiceKind::Echo)));
        let shutdown = Shutdown::new().expect("shutdown");
        // One worker: the one that panics must be the one that serves next.
        let config = ServerConfig {
            workers: 1,
            ..ServerConfig::default()
        };
        std::thread::scope(|scope| {
            let server = scope.spawn(|| serve(listener, service, &config, &shutdown));
            let _stop = StopOnDrop(shutdown.clone());
            let connect = || {
                let conn = TcpStream::connect(&target).expect("connect");
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                conn
            };
            let (mut bystander, mut culprit) = (connect(), connect());
            assert_eq!(echo(&mut bystander, b"before"), b"before");
            assert_eq!(echo(&mut culprit, b"fine"), b"fine");
            culprit.write_all(PANIC_REQUEST).expect("write");
            let mut rest = Vec::new();
            // Closed without a reply (a reset is as good as an EOF).
            let _ = culprit.read_to_end(&mut rest);
            assert!(rest.is_empty(), "a reply to the request that panicked: {rest:?}");
            assert_eq!(echo(&mut bystander, b"after"), b"after");
            assert_eq!(echo(&mut connect(), b"new"), b"new");
            shutdown.trigger();
            let result = server.join().expect("the server thread");
            assert!(result.is_ok(), "{result:?}");
        });
    }
}
