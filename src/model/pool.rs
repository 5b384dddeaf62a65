//! `pool`: N worker threads, made in advance, each calling accept on the
//! shared listener and serving what it gets (seed 001's thread pool, where
//! the main thread never accepts). Five clients of a 1 s `hello` with 3
//! workers: three wait 1 s, two wait 2 s.

use std::sync::Arc;

use super::blocking::{serve_connection, Acceptor, Slots};
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
    let acceptor = Acceptor::new(listener, shutdown.clone(), Slots::new(config.max_conns))?;
    let spread = AcceptSpread::new(config.workers)?;
    std::thread::scope(|scope| {
        for i in 0..config.workers.max(1) {
            let (acceptor, service, spread) = (&acceptor, &service, &spread);
            let worker = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn_scoped(scope, move || {
                    while let Some((stream, _slot)) = acceptor.accept() {
                        spread.record(i);
                        serve_connection(stream, service, acceptor.shutdown());
                    }
                });
            if let Err(e) = worker {
                tracing::warn!("cannot start worker {i}: {e}");
            }
        }
    });
    spread.log();
    Ok(())
}
