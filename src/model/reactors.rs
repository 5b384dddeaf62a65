//! `reactors`: master/worker reactors (Netty's boss and worker event loop
//! groups, memcached's dispatcher thread and worker threads). One thread
//! accepts, and hands each connection round robin to one of N event loops
//! (`--workers`) through a queue and an eventfd; that loop serves it to the
//! end, sharing nothing with the others.
//!
//! Compare `epoll --workers N`, where every loop accepts on its own
//! `SO_REUSEPORT` listener and the kernel picks the loop by a hash of the
//! peer's address: here the spread is exactly even, whatever the peers'
//! ports. Both count their connections per loop and log it at shutdown
//! (`accepts per worker: ...`).

use std::sync::Arc;

use super::blocking::{Acceptor, Slots};
use super::epoll::Epoll;
use super::event_loop::{self, Handoff, Hooks, Source};
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
    let loops = config.workers.max(1);
    // The acceptor holds `--max-conns` for every loop: a slot goes with
    // each connection and frees when its loop closes it.
    let acceptor = Acceptor::new(listener, shutdown.clone(), Slots::new(config.max_conns))?;
    let handoffs = (0..loops)
        .map(|_| Handoff::new())
        .collect::<Result<Vec<_>, _>>()?;
    let spread = AcceptSpread::new(loops)?;
    let result = std::thread::scope(|scope| {
        let mut running = Vec::new();
        for (i, handoff) in handoffs.iter().enumerate() {
            let (service, shutdown) = (&service, shutdown);
            let worker = std::thread::Builder::new()
                .name(format!("reactor-{i}"))
                .spawn_scoped(scope, move || {
                    let result = Epoll::edge_triggered()
                        .map_err(anyhow::Error::from)
                        .and_then(|epoll| {
                            let source = Source::Handoff(handoff);
                            event_loop::run_with(epoll, source, service, config, shutdown, Hooks::default())
                        });
                    if result.is_err() {
                        shutdown.trigger(); // The acceptor stops too.
                    }
                    result
                });
            match worker {
                Ok(worker) => running.push(worker),
                Err(e) => {
                    shutdown.trigger();
                    tracing::error!("cannot start reactor {i}: {e}");
                }
            }
        }
        // The main reactor: accept, and deal round robin.
        let mut next = 0;
        while let Some((stream, slot)) = acceptor.accept() {
            handoffs[next].push((stream, slot));
            spread.record(next);
            next = (next + 1) % loops;
        }
        shutdown.join_all(running, "a reactor")
    });
    spread.log();
    result
}
