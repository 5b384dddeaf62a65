//! `thread`: the main thread accepts; every connection gets a new thread
//! (seeds 000, 001, 002, 003: `threading.Thread(target=worker, ...)`).
//! Five clients of a 1 s `hello` all wait 1 s, at the price of a thread, and
//! its stack, per connection.

use std::sync::Arc;

use super::blocking::{serve_connection, Acceptor, Slots};
use super::ServerConfig;
use crate::net::Listener;
use crate::service::Service;
use crate::shutdown::Shutdown;

/// Connection threads do little; a small stack lets thousands coexist.
const STACK_SIZE: usize = 128 * 1024;

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let slots = Slots::new(config.max_conns);
    let acceptor = Acceptor::new(listener, shutdown.clone(), slots.clone())?;
    while let Some((stream, slot)) = acceptor.accept() {
        let service = service.clone();
        let shutdown = shutdown.clone();
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .stack_size(STACK_SIZE)
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &service, &shutdown);
            });
        if let Err(e) = spawned {
            // The closure, and with it the connection, is dropped: refused.
            tracing::warn!("cannot start a thread for a connection: {e}");
        }
    }
    let left = slots.wait_idle(config.grace);
    if left > 0 {
        tracing::warn!("grace period over with {left} connections still open");
    }
    Ok(())
}
